/* Integration-test harness: a throw-away PostgreSQL 15 with the outbox schema, a replica, SQL
 * helpers. */
#ifndef OUTBOX_RELAY_IT_HARNESS_PG_H
#define OUTBOX_RELAY_IT_HARNESS_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <libpq-fe.h>

/* ---- PostgreSQL 15 ---- */

/*
 * First call: initdb, start on 127.0.0.1 and a free port, create the
 * database, apply the migrations of SOURCE_DIR/sql in lexical order. Later
 * calls (after it_pg_stop) start the same cluster on the same port.
 */
void it_pg_start(void);
void it_pg_stop(void); /* fast shutdown (SIGINT), waits for the postmaster */
void it_pg_restart(void);
int it_pg_port(void);
pid_t it_pg_pid(void); /* the postmaster, 0 if stopped */

/*
 * Before it_pg_start: true runs PostgreSQL with its durable defaults (fsync,
 * full_page_writes) instead of the fast test settings; for benchmarks.
 */
void it_pg_set_durable(bool durable);
/* Before it_pg_start: one more server setting ("name=value", passed as -c) for this test's
 * PostgreSQL, kept across restarts; e.g. "max_prepared_transactions=10". */
void it_pg_add_setting(const char *setting);
const char *it_pg_url(void); /* URI of the test database, for OUTBOX_PG_URL */

PGconn *it_pg_connect(void); /* to the test database; fails the test on error */

/* Runs SQL (printf-style); fails the test unless it succeeds. */
void it_pg_exec(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs a query and returns its result (caller PQclear()s); fails the test on error. */
PGresult *it_pg_query(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A query returning one non-NULL integer (e.g. a count); fails the test otherwise. */
int64_t it_pg_int(PGconn *conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Waits until the one-integer query `sql` returns `want`; returns the last
 * value seen (== want unless the deadline passed).
 */
int64_t it_pg_wait_int(PGconn *conn, const char *sql, int64_t want, int timeout_ms);

/* One row in a transaction of its own, from any thread (no Check calls): true, or false
 * with PostgreSQL's error in err. */
bool it_pg_insert_row(PGconn *conn, const char *subject, const char *key, const char *payload,
                      char *err, size_t errlen);

/* On a failure: where the rows stand (status, attempts, last_error: count), on stderr. */
void it_pg_dump_row_states(PGconn *conn);

/* Rows of the outbox whose status is 'published'. */
int64_t it_pg_published(PGconn *conn);

/* Waits until `want` rows are published; returns the last count seen. */
int64_t it_pg_wait_published(PGconn *conn, int64_t want, int timeout_ms);
/* Waits until `more` rows beyond those published now are published; fails the test (naming
 * `what`) past the deadline. */
void it_pg_wait_progress(PGconn *conn, int64_t more, int timeout_ms, const char *what);

/*
 * From now on every UPDATE of an outbox row, as the relay committed it, is
 * copied into the table mark_log (id, status, attempts, next_attempt_at,
 * last_error, at = clock_timestamp() as the row is updated, statement_at =
 * statement_timestamp(), when the UPDATE reached the server): what each mark
 * said, even once a later mark has overwritten it. Whatever the relay's UPDATE
 * computes from the clock lies between statement_at and at.
 */
void it_pg_record_marks(PGconn *conn);

/* Sessions of relays (application_name 'outbox-relay') holding the leader lock. */
int64_t it_pg_relay_lock_holders(PGconn *conn);

/* ---- PostgreSQL without the outbox schema, and a streaming replica ---- */

/*
 * Before it_pg_start: false skips the migrations of SOURCE_DIR/sql (the
 * database exists but has no outbox table), e.g. for a relay started before
 * the application's migrations. it_pg_apply_migrations() applies them later.
 */
void it_pg_set_migrations(bool migrate);
void it_pg_apply_migrations(void);

/* Stops the primary in immediate mode (SIGQUIT): no checkpoint, sessions cut. */
void it_pg_stop_immediate(void);

/*
 * A streaming replica of the running primary: pg_basebackup -R into the temp
 * dir, started on its own free loopback port. synchronous: the primary then
 * waits for the replica's flush at every commit (synchronous_standby_names),
 * so a failover loses no acknowledged commit. Stopped by it_teardown and by
 * the janitor like the primary.
 */
void it_pg_replica_start(bool synchronous);
int it_pg_replica_port(void);
PGconn *it_pg_replica_connect(void); /* to the test database on the replica */

/* Promotes the replica (pg_promote) and waits until it accepts writes. */
void it_pg_replica_promote(void);

#endif
