/*
 * The PostgreSQL connection: asynchronous libpq on the loop.
 *
 * One connection carries LISTEN, the leader lock, claims and marks. It is an
 * explicit state machine (DISCONNECTED → CONNECTING → SETUP → READY); any
 * failure, or a connect/query past its deadline, drops the connection,
 * fails the queued queries and reconnects with backoff. Queries run one at
 * a time in the order they were queued, so a mark queued before a claim is
 * committed before the claim reads the table.
 */
#ifndef OUTBOX_RELAY_PG_SOURCE_H
#define OUTBOX_RELAY_PG_SOURCE_H

#include <stdbool.h>

#include <ev.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/statement_stats.h"

enum pg_state {
    PG_DISCONNECTED,  /* waiting for the reconnect timer */
    PG_CONNECTING,    /* PQconnectPoll in progress */
    PG_SETUP,         /* LISTEN and table check running */
    PG_WAITING_TABLE, /* connected, but the outbox table is missing or lacks a column:
                         re-checked until it appears (the application migrates it) */
    PG_READY,         /* queries flow */
};

struct pg_source;

struct pg_source_events {
    void (*connected)(void *arg);                     /* READY after (re)connect */
    void (*disconnected)(void *arg, const char *why); /* was connected (not READY yet, maybe) */
    void (*notified)(void *arg);                      /* a NOTIFY on the channel */
    void (*fatal)(void *arg, const char *why);        /* no privilege on the table: stop */
    void *arg;
};

/*
 * Called with the query's result, or res == NULL when the connection was
 * lost before it completed. res is cleared by pg_source after the callback.
 */
typedef void (*pg_result_fn)(void *arg, PGresult *res);

struct pg_source *pg_source_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source_events events, char *err, size_t errlen);
void pg_source_start(struct pg_source *src);
void pg_source_destroy(struct pg_source *src);

enum pg_state pg_source_state(const struct pg_source *src);

/* Sessions lost after they were up: outbox_relay_pg_reconnects_total. */
uint64_t pg_source_lost_total(const struct pg_source *src);

/*
 * Why queries cannot flow, for /readyz: NULL when READY; otherwise e.g.
 * "postgresql not connected" or "outbox table outbox does not exist". Copy
 * it: the text may change once the loop runs pg_source again.
 */
const char *pg_source_not_ready_reason(const struct pg_source *src);

/*
 * Queues a query. pg_source takes ownership of params[0..nparams) (malloc'ed
 * strings, NULL for SQL NULL) and frees them. sql must live as long as the
 * pg_source: each distinct text (by address) is prepared once per connection
 * and executed by name after that. binary: results in binary format.
 * Returns false when not READY (params are freed, fn is not called).
 */
bool pg_source_query(struct pg_source *src, const char *sql, int nparams, char **params,
                     bool binary, pg_result_fn fn, void *arg);

/*
 * The SQL comment in front of every statement text the relay sends, naming
 * its kind (statement_kind_name), so a mark reads "outbox-relay mark" in a
 * comment before its UPDATE. It shows in pg_stat_activity and in the text
 * pg_stat_statements keeps.
 */
#define PG_STATEMENT_LABEL_FMT "/* outbox-relay %s */ "
#define PG_STATEMENT_LABEL     "/* outbox-relay "

/*
 * Names the kind of a statement text (by address, as pg_source_query
 * takes it), for its counts and times; unnamed texts count as "other".
 */
void pg_source_statement_kind(struct pg_source *src, const char *sql, enum statement_kind kind);
/* Every statement answered since the relay started, by kind (across reconnects). */
const struct statement_stats *pg_source_statement_stats(const struct pg_source *src);

/* Drops the connection now and reconnects later (e.g. after a bad result). */
void pg_source_reset(struct pg_source *src, const char *why);

#endif
