/* The table contract: the relay's SQL, the claim's columns and their binary decoding. */
#include "outbox_relay/pg/outbox_table.h"

#include <endian.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/util.h"

/* Column order of the claim. */
enum claim_column {
    C_ID,
    C_EVENT_ID,
    C_SUBJECT,
    C_PAYLOAD,
    C_HEADERS,
    C_KEY,
    C_ATTEMPTS,
    C_CREATED,
    C_PREV,           /* nearest earlier unfinished row of the key, NULL if none */
    C_BYTES,          /* payload + header bytes read: 0 when withheld */
    C_NEXT,           /* the id of the due row after this one, NULL if none */
    C_PAYLOAD_BYTES,  /* octet_length(payload) */
    C_HEADERS_BYTES,  /* the headers' uncompressed size */
    C_EVENT_ID_BYTES, /* octet_length(event_id) */
    C_FITS,           /* false: payload and headers withheld, the row can never be published */
    C_HELD,           /* failed: it holds its key's later rows in the table */
};

/*
 * Plans that depend neither on statistics nor on the parameters, made once
 * per session. The only join method left is the nested loop, and the only
 * way to read the table is an index, so each statement has one plan shape
 * whatever the planner believes about the table: the claim an ordered scan
 * of outbox_unfinished_idx with index probes per row, the marks a nested
 * loop over the pkey (a hash join over a sequential scan, planned while the
 * table was small, went on hashing the whole table as it grew). With the
 * shape fixed, a generic plan is as good as a custom one, and planning the
 * claim on every page would cost more than running it.
 * No JIT: a claim whose estimate passes jit_above_cost (on a table missing
 * its per-key index, say) would be compiled on every page.
 *
 * Marks commit without waiting for their WAL flush (synchronous_commit off,
 * this session only). A mark is a record of what JetStream already holds:
 * one lost to a PostgreSQL crash or failover (at most ~3 x
 * wal_writer_delay of them) leaves its row unfinished, the row is published
 * again, and JetStream drops it by Nats-Msg-Id, as after a relay crash.
 * Waiting for the flush would put every claim queued behind a mark behind
 * an fsync.
 */
const char outbox_session_sql[] =
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', false), "
    "set_config('enable_seqscan', 'off', false), "
    "set_config('enable_sort', 'off', false), "
    "set_config('enable_bitmapscan', 'off', false), "
    "set_config('enable_hashjoin', 'off', false), "
    "set_config('enable_mergejoin', 'off', false), "
    "set_config('jit', 'off', false), "
    "set_config('synchronous_commit', 'off', false)";

/* A statement of any length into *out (NULL when out of memory). */
static void sql_text(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sql_text(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(out, fmt, ap) < 0)
        *out = NULL;
    va_end(ap);
}

bool outbox_sql_build(struct outbox_sql *sql, const struct relay_config *cfg,
                      const struct outbox_claim_limits *limits)
{
    memset(sql, 0, sizeof(*sql));
    char *t = config_table_sql(cfg), *due = NULL;
    if (t == NULL)
        return false;
    /*
     * Rows a claim may take now: the claim and the health sample share it, so
     * rows held behind their key never read as a stall.
     *
     * Both per-key probes (the hold here, `prev` in the claim) look for the
     * nearest earlier row of the same key as "the row before (key, id) in
     * (ordering_key, id) order, if it has the key", ordered by both columns.
     * Only a (ordering_key, id) index yields that order without a sort, and
     * the session has sorts off: so the probe is one backward step in a key
     * index. Written as key = key AND id < id, ORDER BY id, the primary key
     * qualifies too, and with statistics that make matches look dense (a
     * small table, a hot key) the planner walked the primary key backwards
     * filtering on the key: through the whole table below the row whenever
     * the key had no earlier match, as in steady flow.
     *
     * The hold probe names 'dead' in its status list even when dead rows do
     * not hold their key, and then drops dead rows through a CASE the
     * planner cannot reason about: so only outbox_held_keys_idx matches the
     * probe's predicate. With a plain status = 'failed' (or <> 'dead'), the
     * index of unfinished keyed rows matches too, and with statistics from
     * before the backlog (or none: an empty table) it looks as good, yet it
     * walks every unfinished row of the key below each keyed row, so a claim
     * costs more the deeper it is into a keyed backlog.
     */
    sql_text(&due,
             "o.status IN ('pending', 'failed') "
             "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()) "
             "AND (o.ordering_key IS NULL OR (SELECT h.id FROM %s AS h "
             "WHERE (h.ordering_key, h.id) < (o.ordering_key, o.id) "
             "AND h.ordering_key >= o.ordering_key AND h.status IN ('failed', 'dead')%s "
             "ORDER BY h.ordering_key DESC, h.id DESC LIMIT 1) IS NULL)",
             t,
             cfg->dead_holds_key ? "" : " AND CASE h.status WHEN 'dead' THEN false ELSE true END");
    /*
     * One ordered scan of outbox_unfinished_idx from the cursor, LIMIT $2.
     * Left to the estimates, a backlog the planner has no statistics for
     * (built while the relay was down, never analyzed) looks empty, and the
     * planner reads every due row above the cursor through a bitmap and
     * sorts them, at a cost per page that grows with the backlog. The
     * relay's session settings (above) leave the ordered index scan as the
     * only plan, whose cost per row does not depend on the backlog or the
     * statistics.
     *
     * The byte cut: the running total of the stored lengths (octet_length of
     * a TOASTed bytea reads its header, not the value) stops the page where
     * it passes $3, before any payload past the cut is read or sent; the
     * first row always comes. `next` is the id of the due row after each
     * one: on the last row returned, non-NULL means the page was cut by
     * bytes and more rows follow.
     *
     * A row that can never be published is judged on the same lengths
     * (message_size_possible: payload plus the relay's own headers over $4,
     * the server's max_payload, or headers over limits->headers_stored_max)
     * and comes without its payload and headers: it counts nothing against
     * the budget and the relay marks it dead by id, so one huge row costs
     * the relay no memory and holds back no other row.
     *
     * The headers' length is their uncompressed size: pg_column_size of the
     * stored value is its compressed size, far smaller for repetitive
     * headers; `|| '{}'` hands it the value decompressed. Their text's
     * octet_length would be as true, but converts every header of the
     * page's rows to text, past the cut too: slow for large headers.
     *
     * `prev` is what keeps per-key order under concurrent producers: a row
     * that committed late below the scan's cursor is still unfinished, and
     * the relay does not publish a later row of its key until it holds it.
     * One backward step in the unfinished-keys index per keyed row (the
     * probe's form: see the hold probe above); its status test is that
     * index's predicate word for word (see
     * sql/002_outbox_indexes.sql for why it is not IN ('pending', 'failed')).
     *
     * $5 lists rows above the cursor that the relay already holds (in
     * flight, not yet marked): skipped in the index walk, they are neither
     * read nor sent again. In steady flow every poll reads from id 0 (a row
     * that committed late must not wait for the sweep), and without the
     * list it fetched each row again until its mark committed.
     */
    sql_text(&sql->claim,
             "SELECT c.id, c.event_id, c.subject, CASE WHEN c.fits THEN c.payload END, "
             "CASE WHEN c.fits THEN c.headers::text END, c.ordering_key, "
             "c.attempts, extract(epoch FROM c.created_at)::float8, "
             "CASE WHEN c.ordering_key IS NOT NULL THEN (SELECT p.id FROM %s AS p "
             "WHERE (p.ordering_key, p.id) < (c.ordering_key, c.id) "
             "AND p.ordering_key >= c.ordering_key AND p.status NOT IN ('published', 'dead') "
             "ORDER BY p.ordering_key DESC, p.id DESC LIMIT 1) END, "
             "c.bytes, c.next, c.pbytes, c.hbytes, c.ibytes, c.fits, c.status = 'failed' FROM ("
             "SELECT b.*, sum(b.bytes) OVER w AS run, "
             "row_number() OVER w AS rn, lead(b.id) OVER w AS next FROM ("
             "SELECT f.*, CASE WHEN f.fits THEN f.pbytes + f.hbytes ELSE 0 END AS bytes FROM ("
             "SELECT l.*, l.pbytes + %d + l.ibytes <= $4::bigint AND l.hbytes <= %" PRId64
             " AS fits FROM ("
             "SELECT o.*, coalesce(octet_length(o.payload), 0)::int8 AS pbytes, "
             "coalesce(pg_column_size(o.headers || '{}'::jsonb), 0)::int8 AS hbytes, "
             "coalesce(octet_length(o.event_id), 0)::int8 AS ibytes FROM ("
             "SELECT * FROM %s AS o WHERE o.id > $1::bigint AND o.id <> ALL ($5::bigint[]) "
             "AND %s ORDER BY o.id LIMIT $2::int) AS o) AS l) AS f) AS b "
             "WINDOW w AS (ORDER BY b.id)) AS c "
             "WHERE c.rn = 1 OR c.run <= $3::bigint ORDER BY c.id",
             t, limits->header_overhead, limits->headers_stored_max, t, due);
    /* Marks join through the primary key only. A filter on status here
     * would let the planner drive the join from the partial index of
     * unfinished rows and hash the whole backlog on every mark, once its
     * statistics went stale as the backlog grew.
     * A PubAck is a fact: the published mark needs no guard; a failure must
     * only never undo a publish. */
    sql_text(&sql->mark_published,
             "UPDATE %s AS o SET status = 'published', published_at = to_timestamp(v.at_us::float8 "
             "/ 1000000), "
             "stream_seq = v.seq, attempts = o.attempts + 1, next_attempt_at = NULL "
             "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, seq, at_us) "
             "WHERE o.id = v.id",
             t);
    sql_text(&sql->mark_failed,
             "UPDATE %s AS o SET status = v.status, attempts = o.attempts + v.attempt, "
             "next_attempt_at = CASE WHEN v.status = 'failed' "
             "THEN clock_timestamp() + v.delay_ms * interval '1 millisecond' END, "
             "last_error = v.err "
             "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::int[]) "
             "AS v(id, status, delay_ms, err, attempt) "
             "WHERE o.id = v.id AND o.status <> 'published'",
             t);
    /*
     * Bounded, whatever the backlog: counting every unfinished row grows with
     * the backlog, every sample, on the connection the claims and marks
     * wait behind. The count is exact up to
     * OUTBOX_SAMPLE_EXACT rows; past that, the rows above the last one counted
     * are estimated from the id range (a backlog is the newest ids: dense).
     * The oldest age is the lowest unfinished id's (ids follow inserts).
     * "Is anything claimable" stops at the first such row; dead rows have
     * their own partial index and are exceptional.
     */
    sql_text(&sql->sample,
             "SELECT CASE WHEN u.n < %d THEN u.n ELSE u.n + (SELECT max(id) FROM %s) - u.last END, "
             "EXISTS (SELECT 1 FROM %s AS o WHERE %s)::int, "
             "COALESCE(extract(epoch FROM now() - (SELECT created_at FROM %s "
             "WHERE status IN ('pending', 'failed') ORDER BY id LIMIT 1)), 0)::float8, "
             "(SELECT count(*) FROM %s WHERE status = 'dead') FROM ("
             "SELECT count(*) AS n, max(id) AS last FROM (SELECT id FROM %s "
             "WHERE status IN ('pending', 'failed') ORDER BY id LIMIT %d) AS b) AS u",
             OUTBOX_SAMPLE_EXACT, t, t, due, t, t, t, OUTBOX_SAMPLE_EXACT);
    /*
     * A new term's reconciliation (reconcile.h). The unfinished rows an
     * earlier term may have published, lowest ids first: claims walk them in
     * id order, so its rows in flight are among the first of them. The
     * highest stream sequence marked, read where the latest marks are, by
     * the primary key backwards: the top $1 rows of the table (the latest
     * marks when nothing waits), and the 2 x $1 rows up to the last of the
     * first $1 unfinished rows (the latest marks when a backlog waits above
     * them: they sit among and below the rows a term had in flight, and at
     * most $1 of those rows are unfinished). A maximum over published rows
     * is never above the true highest, so the stream range read from it
     * holds every message an earlier term stored but did not mark. It may
     * come out lower (a row retried late, at a low id; more than $1 rows
     * waiting for their retries below a backlog): the range read is then
     * longer, within the read's budgets, its excess counted unchecked. No
     * index on published_at: it would cost every published mark an index
     * entry. The rows found in the stream,
     * marked by id, only while still unfinished: a test the planner cannot
     * match to a partial index, so the join goes through the primary key
     * (as the marks do, for the same reason), whatever the statistics.
     */
    sql_text(&sql->reconcile_unfinished,
             "SELECT id, event_id FROM %s WHERE status IN ('pending', 'failed') ORDER BY id "
             "LIMIT $1::int",
             t);
    sql_text(&sql->reconcile_marked_max,
             "SELECT coalesce(max(s.stream_seq), 0) FROM ("
             "(SELECT status, stream_seq FROM %s ORDER BY id DESC LIMIT $1::int) UNION ALL "
             "(SELECT status, stream_seq FROM %s WHERE id <= (SELECT max(u.id) FROM (SELECT id "
             "FROM %s WHERE status IN ('pending', 'failed') ORDER BY id LIMIT $1::int) AS u) "
             "ORDER BY id DESC LIMIT 2 * $1::int)) AS s WHERE s.status = 'published'",
             t, t, t);
    sql_text(&sql->reconcile_mark,
             "UPDATE %s AS o SET status = 'published', published_at = clock_timestamp(), "
             "stream_seq = v.seq, attempts = o.attempts + 1, next_attempt_at = NULL "
             "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seq) "
             "WHERE o.id = v.id "
             "AND CASE WHEN o.status IN ('pending', 'failed') THEN true ELSE false END",
             t);
    bool built = due && sql->claim && sql->mark_published && sql->mark_failed && sql->sample &&
                 sql->reconcile_unfinished && sql->reconcile_marked_max && sql->reconcile_mark;
    free(t);
    free(due);
    if (!built)
        outbox_sql_free(sql);
    return built;
}

void outbox_sql_free(struct outbox_sql *sql)
{
    free(sql->claim);
    free(sql->mark_published);
    free(sql->mark_failed);
    free(sql->sample);
    free(sql->reconcile_unfinished);
    free(sql->reconcile_marked_max);
    free(sql->reconcile_mark);
    memset(sql, 0, sizeof(*sql));
}

static int64_t be64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)be64toh(v);
}

static double befloat8(const char *p)
{
    uint64_t v;
    double d;
    memcpy(&v, p, 8);
    v = be64toh(v);
    memcpy(&d, &v, 8);
    return d;
}

static int32_t be32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)be32toh(v);
}

int64_t outbox_claim_id(const PGresult *res, int i)
{
    return be64(PQgetvalue(res, i, C_ID));
}

bool outbox_claim_keyed(const PGresult *res, int i)
{
    return !PQgetisnull(res, i, C_KEY);
}

int64_t outbox_claim_prev(const PGresult *res, int i)
{
    return PQgetisnull(res, i, C_PREV) ? 0 : be64(PQgetvalue(res, i, C_PREV));
}

int64_t outbox_claim_bytes(const PGresult *res, int i)
{
    return PQgetisnull(res, i, C_BYTES) ? 0 : be64(PQgetvalue(res, i, C_BYTES));
}

static int64_t claim_int8(const PGresult *res, int i, int col)
{
    return PQgetisnull(res, i, col) ? 0 : be64(PQgetvalue(res, i, col));
}

bool outbox_claim_cut(const PGresult *res)
{
    int n = PQntuples(res);
    return n > 0 && !PQgetisnull(res, n - 1, C_NEXT);
}

void outbox_claimed_row(const PGresult *res, int i, struct claimed_row *out)
{
    *out = (struct claimed_row){
        .id = be64(PQgetvalue(res, i, C_ID)),
        .attempts = be32(PQgetvalue(res, i, C_ATTEMPTS)),
        .created_at = befloat8(PQgetvalue(res, i, C_CREATED)),
        .bytes = outbox_claim_bytes(res, i),
        .held_key = PQgetvalue(res, i, C_HELD)[0] != 0,
    };
    if (!PQgetisnull(res, i, C_KEY)) {
        out->ordering_key = PQgetvalue(res, i, C_KEY);
        out->ordering_key_len = (size_t)PQgetlength(res, i, C_KEY);
    }
    if (PQgetisnull(res, i, C_FITS) || PQgetvalue(res, i, C_FITS)[0] == 0) {
        out->withheld = true;
        out->payload_bytes = claim_int8(res, i, C_PAYLOAD_BYTES);
        out->headers_bytes = claim_int8(res, i, C_HEADERS_BYTES);
        out->event_id_bytes = claim_int8(res, i, C_EVENT_ID_BYTES);
        return;
    }
    /* Binary text columns are not NUL-terminated in spirit; libpq adds one. */
    out->subject = PQgetvalue(res, i, C_SUBJECT);
    out->event_id = PQgetvalue(res, i, C_EVENT_ID);
    out->headers = PQgetisnull(res, i, C_HEADERS) ? NULL : PQgetvalue(res, i, C_HEADERS);
    out->payload = PQgetvalue(res, i, C_PAYLOAD);
    out->payload_len = (size_t)PQgetlength(res, i, C_PAYLOAD);
}

char *outbox_table_check_sql(const struct relay_config *cfg)
{
    char *table = config_table_sql(cfg);
    char *sql = table == NULL ? NULL
                              : str_printf("SELECT id, event_id, subject, payload, headers, "
                                           "ordering_key, created_at, status, attempts, "
                                           "next_attempt_at, last_error, published_at, "
                                           "stream_seq FROM %s LIMIT 0",
                                           table);
    free(table);
    return sql;
}
