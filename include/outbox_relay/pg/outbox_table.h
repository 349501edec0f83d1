/*
 * The table contract in one place: every statement the relay runs against
 * the outbox table, the columns a claim returns, and their binary decoding.
 *
 * Statement texts live as long as the relay (pg_source prepares each text
 * once per connection, keyed by its address).
 */
#ifndef OUTBOX_RELAY_OUTBOX_TABLE_H
#define OUTBOX_RELAY_OUTBOX_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/subject_pattern.h"

/*
 * Advisory lock classes (the first key; the second names the table):
 * leadership (the table's oid), a running `migrate` (hashtext of the
 * table's schema-qualified name: the table may not exist yet), and the
 * relay asleep (the table's oid, which the NOTIFY trigger in sql/003 tests
 * as TG_RELID). Keyed by what the name resolves to, never by the
 * configured spelling: "outbox" and "public.outbox" are one table.
 */
#define OUTBOX_LOCK_CLASS    1869574264
#define OUTBOX_MIGRATE_CLASS 1869574265
#define OUTBOX_SLEEP_CLASS   1869574266
/* A class as an SQL literal, for statements built at compile time. */
#define OUTBOX_CLASS_SQL(c)  OUTBOX_CLASS_SQL_(c)
#define OUTBOX_CLASS_SQL_(c) #c

/*
 * The relay's session settings, sent once per connection before anything
 * else: they fix the plans of the statements below (see outbox_table.c).
 * One row back (PGRES_TUPLES_OK).
 */
extern const char outbox_session_sql[];

/* The sample counts unfinished rows exactly up to this many; past it, it estimates. */
#define OUTBOX_SAMPLE_EXACT 100000

struct outbox_sql {
    /* $1 cursor (id), $2 rows, $3 bytes, $4 max_payload, $5 ids to skip
     * (rows the relay holds): due rows above the cursor in id order, at
     * most $2 of them, cut where their payload and header bytes pass $3
     * (the first row always comes). A row that can never be published
     * under $4 comes without payload and headers (withheld: struct
     * claimed_row). The session's planner settings (outbox_session_sql)
     * keep its plan one ordered index scan. */
    char *claim;
    /* $1 ids, $2 stream sequences, $3 ack times (epoch microseconds). */
    char *mark_published;
    /* $1 ids, $2 'failed'|'dead', $3 retry delays (ms), $4 reasons. */
    char *mark_failed;
    /* One row: unfinished count (exact up to OUTBOX_SAMPLE_EXACT, then
     * estimated), any due row (0/1), oldest unfinished age (s), dead count. */
    char *sample;
    /* Reconciliation (reconcile.h). $1 rows: the first unfinished rows, id and event_id. */
    char *reconcile_unfinished;
    /* $1 rows: the highest stream_seq among the $1 latest marked published (0: none). */
    char *reconcile_marked_max;
    /* $1 ids, $2 stream sequences: rows found in the stream, marked if still unfinished. */
    char *reconcile_mark;
};

/*
 * What the claim must know of the messages rows become, to judge a row that
 * can never be published without reading it (the NATS side's limits:
 * claimer_message_limits).
 */
struct outbox_claim_limits {
    int header_overhead;        /* header bytes every message adds, its event id not counted */
    int64_t headers_stored_max; /* the largest stored headers the relay reads */
};

/* Builds every statement for cfg's table; false when out of memory (nothing to free then). */
bool outbox_sql_build(struct outbox_sql *sql, const struct relay_config *cfg,
                      const struct outbox_claim_limits *limits);
void outbox_sql_free(struct outbox_sql *sql);

/*
 * "SELECT <every column the relay reads and writes> FROM <table> LIMIT 0":
 * fails when the table, a column or the privilege to read them is missing
 * (the daemon waits for the table; check reports it). NULL when out of memory.
 */
char *outbox_table_check_sql(const struct relay_config *cfg);

/* What a claim returned about row i, beyond the row itself. */
int64_t outbox_claim_id(const PGresult *res, int i);
bool outbox_claim_keyed(const PGresult *res, int i);
/* The nearest earlier unfinished row of the row's key, or 0 (none, or no key). */
int64_t outbox_claim_prev(const PGresult *res, int i);
/* The row's payload and header bytes as stored. */
int64_t outbox_claim_bytes(const PGresult *res, int i);
/* The byte budget cut the page: more due rows follow its last row. */
bool outbox_claim_cut(const PGresult *res);

/*
 * Row i of a claim, as views into res (valid while res lives). A row the
 * claim withheld (it can never be published under the claim's max_payload)
 * carries only its lengths, to say why; the pipeline builds the message.
 */
struct claimed_row {
    int64_t id;
    int attempts;
    bool held_key; /* claimed as failed: its key's later rows wait for it */
    double created_at;
    int64_t bytes;            /* payload + header bytes as stored */
    const char *ordering_key; /* NULL: none */
    size_t ordering_key_len;
    bool withheld;
    int64_t payload_bytes, headers_bytes, event_id_bytes; /* withheld rows only */
    const char *subject, *event_id, *headers;             /* headers NULL: none */
    const char *payload;
    size_t payload_len;
};
void outbox_claimed_row(const PGresult *res, int i, struct claimed_row *out);

#endif
