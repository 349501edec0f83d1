/* Retention: deletes old published rows window by window of ids when the relay leads. */
#include "outbox_relay/pg/retention.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/util.h"

/* Between two windows of a pass: other queries of the relay (marks, claims) get
 * the connection and the table's locks in between. */
#define RETENTION_PAUSE_S 0.2
/* The first round after gaining leadership. */
#define RETENTION_FIRST_S 5.0
/* A failure that lasts is logged again this often. */
#define RETENTION_REMIND_S 3600.0

/* Below every id: where a pass starts. */
#define RETENTION_FIRST_ID INT64_MIN

struct retention {
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source *pg;
    ev_timer timer;
    bool leader;
    bool running;   /* a statement is queued or running */
    int64_t cursor; /* the pass goes on above this id */
    uint64_t pruned_total;
    uint64_t failures_total;
    bool failing;          /* the last round failed */
    double failing_logged; /* ev_now of the last RETENTION_FAILING_MSG */
    char *failing_error;   /* its error */
    char *sql;
    char *probe_sql;
};

/*
 * A window: the next $2 rows above the cursor $3, by the primary key (ids
 * follow inserts). Its summary: its last id, its rows (fewer than $2: the
 * end of the table), and whether it holds a row created after the cutoff
 * ($1 seconds ago). Rows above such a row were created later still, and a
 * row is published after it is created: none of them is old enough, so the
 * pass ends there. Published rows that are merely young (a row retried
 * late) do not end it, nor do dead and unfinished rows.
 */
#define WINDOW_SQL                                                                                 \
    "SELECT id, status, published_at, created_at >= now() - $1::bigint * interval '1 second' "     \
    "AS fresh FROM %s WHERE id > $3::bigint ORDER BY id LIMIT $2::int"
#define SUMMARY_SQL "SELECT max(id) AS last, count(*) AS n, bool_or(fresh) AS fresh FROM w"

char *retention_build_sql(const struct relay_config *cfg)
{
    char *t = config_table_sql(cfg);
    if (t == NULL)
        return NULL;
    /*
     * Deletes the old published rows of the window, one result row each,
     * with the window's summary. The ids go to the delete as an array, so it
     * finds them by the primary key (a join here was planned as a hash join
     * over a sequential scan of the whole table). The summary is a CTE of
     * its own: computed once, not again for each row deleted. The outer
     * tests are rechecked on rows changed meanwhile. Nothing but the primary
     * key is read: an index on published_at would cost every published mark
     * an index entry (its status change is never a HOT update).
     */
    char *sql = str_printf(
        "WITH w AS MATERIALIZED (" WINDOW_SQL "), "
        "d AS (DELETE FROM %s AS o WHERE o.id = ANY (ARRAY(SELECT id FROM w "
        "WHERE status = 'published' AND published_at < now() - $1::bigint * interval '1 second')) "
        "AND o.status = 'published' AND o.published_at < now() - $1::bigint * interval '1 second' "
        "RETURNING o.id), "
        "s AS MATERIALIZED (" SUMMARY_SQL ") "
        "SELECT d.id, s.last, s.n, s.fresh FROM d, s",
        t, t);
    free(t);
    return sql;
}

char *retention_build_probe_sql(const struct relay_config *cfg)
{
    char *t = config_table_sql(cfg);
    if (t == NULL)
        return NULL;
    char *sql = str_printf("WITH w AS MATERIALIZED (" WINDOW_SQL ") " SUMMARY_SQL, t);
    free(t);
    return sql;
}

static void retention_arm(struct retention *r, double after)
{
    ev_timer_stop(r->loop, &r->timer);
    if (!r->leader || r->cfg->retention_s <= 0)
        return;
    ev_timer_set(&r->timer, after, 0.);
    ev_timer_start(r->loop, &r->timer);
}

/*
 * Every round fails alike until the cause is fixed (typically a role
 * without DELETE, which --check reports): one error line, not one a round.
 */
static void retention_failed(struct retention *r, PGresult *res)
{
    const char *error = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    error = error ? error : "unknown error";
    double now = ev_now(r->loop);
    bool same = r->failing && r->failing_error && !strcmp(r->failing_error, error);
    r->failures_total++;
    r->failing = true;
    if (same && now - r->failing_logged < RETENTION_REMIND_S)
        return;
    free(r->failing_error);
    r->failing_error = strdup(error);
    r->failing_logged = now;
    log_error(RETENTION_FAILING_MSG, "{s:s, s:s, s:s, s:s}", "table", r->cfg->table, "error", error,
              "sqlstate", state ? state : "", "hint",
              state && !strcmp(state, "42501")
                  ? "GRANT DELETE on the table to the relay's role, or set OUTBOX_RETENTION=0"
                  : "see outbox_relay_retention_failing; set OUTBOX_RETENTION=0 to turn it off");
}

static void retention_query(struct retention *r, const char *sql, pg_result_fn fn);

/* Whether the statement answered; if not (an error, or the connection lost), the next round
 * comes at the interval. */
static bool retention_answered(struct retention *r, PGresult *res)
{
    r->running = false;
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (r->failing)
            log_info("retention works again", "{s:s, s:I}", "table", r->cfg->table, "failed_rounds",
                     (json_int_t)r->failures_total);
        r->failing = false;
        free(r->failing_error);
        r->failing_error = NULL;
        return true;
    }
    if (res != NULL) /* NULL: connection lost; the relay reconnects, we try later */
        retention_failed(r, res);
    retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
    return false;
}

/*
 * Where the pass goes from a window with this summary (its last id, its
 * rows, whether it holds a row created after the cutoff): on to the next
 * window soon, or back to the lowest id at the next interval.
 */
static void retention_advance(struct retention *r, PGresult *res, int col)
{
    bool empty = PQgetisnull(res, 0, col);
    long rows = atol(PQgetvalue(res, 0, col + 1));
    bool fresh = !strcmp(PQgetvalue(res, 0, col + 2), "t");
    if (empty || rows < r->cfg->retention_batch || fresh) {
        r->cursor = RETENTION_FIRST_ID;
        retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
        return;
    }
    r->cursor = strtoll(PQgetvalue(res, 0, col), NULL, 10);
    retention_arm(r, RETENTION_PAUSE_S);
}

/* A window that deleted nothing: its summary alone. */
static void retention_on_probe(void *arg, PGresult *res)
{
    struct retention *r = arg;
    if (!retention_answered(r, res))
        return;
    if (PQntuples(res) != 1) {
        retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
        return;
    }
    retention_advance(r, res, 0);
}

static void retention_on_result(void *arg, PGresult *res)
{
    struct retention *r = arg;
    if (!retention_answered(r, res))
        return;
    int n = PQntuples(res);
    if (n == 0) {
        /*
         * Nothing deleted, so no summary came with the rows: asked apart,
         * in a statement not named as retention's (it counts as "other"),
         * so that retention's statement rows stay the rows it deleted.
         */
        retention_query(r, r->probe_sql, retention_on_probe);
        return;
    }
    r->pruned_total += (uint64_t)n;
    log_debug("retention: pruned", "{s:i}", "rows", n);
    retention_advance(r, res, 1); /* the summary follows each deleted id */
}

static void retention_query(struct retention *r, const char *sql, pg_result_fn fn)
{
    char *params[3] = {str_printf("%lld", (long long)r->cfg->retention_s),
                       str_printf("%d", r->cfg->retention_batch),
                       str_printf("%lld", (long long)r->cursor)};
    if (params[0] == NULL || params[1] == NULL || params[2] == NULL) {
        for (int i = 0; i < 3; i++) /* out of memory: the next round */
            free(params[i]);
        retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
        return;
    }
    r->running = true;
    if (!pg_source_query(r->pg, sql, 3, params, false, fn, r)) {
        r->running = false;
        retention_arm(r, r->cfg->retention_interval_ms / 1000.0);
    }
}

static void retention_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct retention *r = w->data;
    if (!r->leader || r->running)
        return;
    retention_query(r, r->sql, retention_on_result);
}

struct retention *retention_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source *pg, char *err, size_t errlen)
{
    struct retention *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "retention: out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cfg = cfg;
    r->pg = pg;
    r->sql = retention_build_sql(cfg);
    r->probe_sql = retention_build_probe_sql(cfg);
    r->cursor = RETENTION_FIRST_ID;
    if (r->sql == NULL || r->probe_sql == NULL) {
        free(r->sql);
        free(r->probe_sql);
        free(r);
        snprintf(err, errlen, "retention: out of memory");
        return NULL;
    }
    ev_timer_init(&r->timer, retention_on_timer, 0., 0.);
    r->timer.data = r;
    pg_source_statement_kind(pg, r->sql, STATEMENT_RETENTION);
    return r;
}

void retention_destroy(struct retention *r)
{
    if (r == NULL)
        return;
    ev_timer_stop(r->loop, &r->timer);
    free(r->sql);
    free(r->probe_sql);
    free(r->failing_error);
    free(r);
}

void retention_set_leader(struct retention *r, bool leader)
{
    if (r->leader == leader)
        return;
    r->leader = leader;
    if (leader) {
        r->cursor = RETENTION_FIRST_ID;
        double first = r->cfg->retention_interval_ms / 1000.0;
        retention_arm(r, first < RETENTION_FIRST_S ? first : RETENTION_FIRST_S);
    } else {
        ev_timer_stop(r->loop, &r->timer);
    }
}

uint64_t retention_pruned_total(const struct retention *r)
{
    return r->pruned_total;
}

uint64_t retention_failures_total(const struct retention *r)
{
    return r->failures_total;
}

bool retention_failing(const struct retention *r)
{
    return r->failing;
}

const char *retention_sql(const struct retention *r)
{
    return r->sql;
}
