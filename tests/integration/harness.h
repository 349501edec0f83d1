/* Integration-test harness: throw-away PostgreSQL and nats-server, the relay binary, a reader. */
#ifndef OUTBOX_RELAY_IT_HARNESS_H
#define OUTBOX_RELAY_IT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <nats/nats.h>

#include "outbox_relay/lib/config.h"

/*
 * Lifecycle. Every process the harness starts is a child of the calling
 * process (with Check's fork mode: of the test's own process), tracked by
 * pid and stopped by it_teardown(). A failed check ends the test process
 * with _exit(): no teardown, no atexit. So every child also dies with its
 * parent (PR_SET_PDEATHSIG; SIGQUIT for PostgreSQL, an immediate shutdown),
 * and a janitor process, outside the test's process group, notices the test
 * process is gone, prints the relay logs, stops what is left and removes the
 * temp dir. SIGTERM/SIGINT/SIGHUP stop the children too. IT_KEEP=1 in the
 * environment keeps the temp dir for debugging.
 *
 * State belongs to the process that called it_setup(): use checked fixtures
 * (they run in the test's process), never unchecked ones.
 * Typical use: tcase_add_checked_fixture(tc, it_start_servers, it_teardown).
 */
void it_setup(void);         /* temp dir and cleanup hooks only, no servers */
void it_start_servers(void); /* it_setup + PostgreSQL (migrated) + nats-server -js */
void it_teardown(void);      /* stop everything, remove the temp dir */
const char *it_dir(void);    /* the test's temp dir */

/* A free loopback TCP port (bound to 127.0.0.1:0, read, closed). */
int it_free_port(void);

/* Milliseconds on the monotonic clock. */
int64_t it_now_ms(void);

/*
 * Calls cond(arg) every 25 ms until it returns true (→ true) or timeout_ms
 * passes (→ false, after one last call). Fails the test at once if a relay
 * ends on its own meanwhile (one that was neither signalled with
 * it_relay_signal nor waited for with it_relay_wait).
 */
bool it_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);

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

/* ---- nats-server 2.9 with JetStream ---- */

/* First call: a store dir and a free port; later calls: the same store dir and port. */
void it_nats_start(void);
void it_nats_stop(void); /* graceful (SIGTERM), waits for exit */
void it_nats_restart(void);
void it_nats_kill(void); /* SIGKILL, reaped */

/*
 * nats-server configuration text (e.g. "max_payload: 65536\n") written to a
 * file in the temp dir and passed with -c from the next it_nats_start() on;
 * the harness's own flags (port, store dir, address, -js) still win. NULL:
 * no config file.
 */
void it_nats_set_config(const char *text);

/* A .creds file (user JWT and seed) the test's reader, it_js(), connects with from its first
 * connection on, e.g. to a server in operator mode. NULL: none. */
void it_nats_set_credentials(const char *creds_path);
int it_nats_port(void);
pid_t it_nats_pid(void);       /* 0 if stopped */
const char *it_nats_url(void); /* nats://127.0.0.1:port, for OUTBOX_NATS_URL */

/* One row in a transaction of its own, from any thread (no Check calls): true, or false
 * with PostgreSQL's error in err. */
bool it_pg_insert_row(PGconn *conn, const char *subject, const char *key, const char *payload,
                      char *err, size_t errlen);

/* The relay's settings for the test servers (no NATS server needed: a
 * closed port stands in when none runs), plus `args`: "--flag", "value"
 * pairs, NULL-terminated, or NULL. For tests of a module's SQL. */
void it_relay_config(struct relay_config *cfg, const char *const *args);

/* SIGSTOP / SIGCONT nats-server: its connections stay open but nothing is answered. */
void it_nats_pause(void);
void it_nats_resume(void);

/* ---- HTTP client for the relay's probes and metrics (127.0.0.1 only) ---- */

struct it_http {
    int status; /* as returned below */
    char *head; /* status line and headers, without the empty line; NULL without an answer */
    char *body; /* NUL-terminated, never NULL after a call */
    size_t body_len;
};

/*
 * Connects to 127.0.0.1:port, sends the request bytes as they are, shuts
 * down its sending side (so an incomplete head ends there), reads
 * until the server closes or timeout_ms passes. Returns the HTTP status of a
 * complete answer (a head and exactly Content-Length bytes of body); 0 if the
 * server closed without sending a byte; -1 if the connect failed or the
 * deadline passed; -2 for bytes that are not a complete answer. Uses no
 * Check calls, so threads may use it. Free with it_http_free().
 */
int it_http_raw(int port, const void *request, size_t len, int timeout_ms, struct it_http *out);
int it_http_get(int port, const char *path, int timeout_ms, struct it_http *out);
int it_http_status(int port, const char *path); /* GET, 5 s timeout, status as above */
/* A response header's value (first match, case-insensitive name) copied into buf, or NULL. */
const char *it_http_header(const struct it_http *r, const char *name, char *buf, size_t len);
void it_http_free(struct it_http *r);

/* ---- the relay (RELAY_BINARY) ---- */

struct it_relay {
    pid_t pid;
    char log_path[4096]; /* stdout + stderr */
    bool exited;
    int wstatus;   /* waitpid() status once exited */
    bool stopping; /* signalled or waited for: its exit is expected */
    int http_port; /* /healthz, /readyz, /metrics on 127.0.0.1; 0 if not started with it */
};

/*
 * Spawns the relay. The environment is the test's, without any OUTBOX_*
 * variable, plus OUTBOX_PG_URL and OUTBOX_NATS_URL of the running servers,
 * OUTBOX_HTTP_ADDR="", then `env` ("KEY=VALUE", NULL-terminated, may be
 * NULL; a later entry replaces an earlier one with the same key). `args`
 * (NULL-terminated, may be NULL) follow the program name. The harness owns
 * the result; it is killed (if running) and freed at teardown.
 */
/* The relay binary tests start: $IT_RELAY_BINARY (e.g. another build, for an A/B bench), else
 * this build's. */
const char *it_relay_binary(void);
struct it_relay *it_relay_start(const char *const *env, const char *const *args);

/* it_relay_start with OUTBOX_HTTP_ADDR on a free loopback port (first: `env` may replace it). */
struct it_relay *it_relay_start_http(const char *const *env, const char *const *args);

void it_relay_signal(struct it_relay *relay, int sig);

/* Waits up to timeout_ms for the relay to exit; true once it has (see wstatus). */
bool it_relay_wait(struct it_relay *relay, int timeout_ms);

/* Exit code if it exited normally, -signal if a signal ended it, -1000 if still running. */
int it_relay_exit_code(const struct it_relay *relay);

char *it_relay_log(const struct it_relay *relay); /* whole log, malloc'd, never NULL */
bool it_relay_log_contains(const struct it_relay *relay, const char *needle);
void it_relay_dump_log(const struct it_relay *relay); /* to stderr */

/*
 * Runs the relay to completion (e.g. --check, or a bad setting) and returns
 * its exit code; fails the test if it is still running after timeout_ms or
 * dies of a signal. *output (if not NULL) receives its stdout + stderr.
 */
int it_relay_run(const char *const *env, const char *const *args, int timeout_ms, char **output);

/* ---- JetStream reader (nats.c) ---- */

/* The test's JetStream context, connected on first use. */
jsCtx *it_js(void);

/* Creates a file-storage stream over `subjects` (NULL-terminated). */
void it_js_add_stream(const char *name, const char *const *subjects);

/* Messages currently in the stream (stream info State.Msgs); fails the test if it is missing. */
uint64_t it_js_stream_msgs(const char *name);
bool it_js_stream_exists(const char *name);

struct it_header {
    char *key;
    char **values; /* in the order they were sent */
    int nvalues;
};

struct it_msg {
    uint64_t seq; /* stream sequence */
    char *subject;
    char *msg_id; /* Nats-Msg-Id, NULL if absent */
    unsigned char *data;
    int len;
    struct it_header *headers; /* every header, Nats-Msg-Id included */
    int nheaders;
};

struct it_msgs {
    struct it_msg *msgs; /* stream sequence order */
    size_t count;
    struct it_msg **by_id; /* index sorted by msg_id, built by it_msgs_find/duplicates */
};

/* Reads every message of the stream, in sequence order. Free with it_msgs_free(). */
void it_js_read_stream(const char *name, struct it_msgs *out);
void it_msgs_free(struct it_msgs *msgs);

/* The message whose Nats-Msg-Id is msg_id (any one, if duplicated), or NULL. */
const struct it_msg *it_msgs_find(struct it_msgs *msgs, const char *msg_id);

/* How many messages share their Nats-Msg-Id with an earlier one (0 = all unique). */
size_t it_msgs_duplicate_ids(struct it_msgs *msgs);

/* The header `key` of a message (exact, case-sensitive), or NULL. */
const struct it_header *it_msg_header(const struct it_msg *msg, const char *key);

/* ---- shared checks of the tests ---- */

/*
 * A test case added to `suite` whose tests each run between setup (e.g.
 * it_start_servers) and it_teardown, as a checked fixture, with a timeout.
 */
TCase *it_tcase(Suite *suite, const char *name, void (*setup)(void), double timeout_s);

/* SIGTERM, then the relay must exit 0 within 15 s. */
void it_relay_stop(struct it_relay *relay);

/* Waits until the relay's log holds `needle` at least `times` times; true if it does. */
bool it_relay_wait_log(struct it_relay *relay, const char *needle, int times, int timeout_ms);

/*
 * The value of the unlabelled sample `name` (e.g. "outbox_relay_leader") of
 * GET /metrics on 127.0.0.1:port; -1 when the relay does not answer 200 or
 * the sample is missing.
 */
double it_metric(int port, const char *name);

/* outbox_relay_<family>{reason="<reason>"} (e.g. "failed_total", "timeout"); -1 if missing. */
double it_metric_reason(int port, const char *family, const char *reason);

/* Waits until it_metric(port, name) == want; true if it does. */
bool it_wait_metric(int port, const char *name, double want, int timeout_ms);

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
 * last_error, at = clock_timestamp() as the row is updated): what each mark said,
 * even once a later mark has overwritten it.
 */
void it_pg_record_marks(PGconn *conn);

/* Sessions of relays (application_name 'outbox-relay') holding the leader lock. */
int64_t it_pg_relay_lock_holders(PGconn *conn);

/*
 * Reads the stream and checks it holds exactly `want` messages, no two with
 * the same Nats-Msg-Id. Free with it_msgs_free().
 */
void it_js_read_stream_once(const char *name, size_t want, struct it_msgs *out);

/*
 * The end state of an at-least-once drain, deduplicated: the outbox table
 * holds `rows` rows and the stream one message per row (as
 * it_js_read_stream_once checks); each row's message, found by its
 * event_id, sits at the row's stream_seq with the row's subject and
 * payload. Prints the first differences before it fails the test.
 */
void it_assert_each_row_once(PGconn *conn, const char *stream, int64_t rows);

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

/*
 * GETs each of `paths` (NULL-terminated) from 127.0.0.1:port in turn, a
 * request every ~10 ms, for duration_ms; each request may take up to 10 s.
 * Returns the slowest answer in ms; *requests receives how many were made,
 * *failed how many did not answer 200. For "the loop never blocks" checks.
 */
int64_t it_http_slowest_ms(int port, const char *const *paths, int duration_ms, int *requests,
                           int *failed);

/*
 * Runs an operator command (`outbox-relay <args>`, with the environment of
 * it_relay_start) to completion within 60 s; returns its exit code. *doc (if
 * not NULL) receives the JSON object of the last output line that is one (or
 * NULL), *output (if not NULL) the whole output (stdout + stderr), which is
 * also printed to stderr for the test log.
 */
int it_relay_cmd(const char *const *env, const char *const *args, json_t **doc, char **output);

#endif

/* ==== fault injection, memory and per-key order audit (issues 9-11) ==== */

/* A "Name:   N kB" line of /proc/<pid>/status (e.g. "VmHWM", "VmRSS") in kB; -1 if unreadable. */
long it_proc_status_kb(pid_t pid, const char *name);

/*
 * Local ports of pid's TCP sockets connected to 127.0.0.1:remote_port (e.g.
 * a relay's PostgreSQL sessions: remote_port = it_pg_port()), read from
 * /proc (works on a stopped process too). Returns how many (at most max).
 */
int it_proc_tcp_local_ports(pid_t pid, int remote_port, int *ports, int max);

/* True when this process may drop loopback packets: root and iptables with the comment match. */
bool it_net_available(void);

/*
 * Drops every TCP packet between 127.0.0.1:port_a and 127.0.0.1:port_b,
 * both directions (iptables INPUT rules, -w, tagged with the comment
 * "outbox-test-<pid of the test process>"). Neither side sees a FIN or RST:
 * a lost node or a partition. The rules go with it_net_heal(); if the test
 * process ends first (a failed check), a watcher process it started deletes
 * them.
 */
void it_net_drop(int port_a, int port_b);
void it_net_heal(void); /* deletes this test's rules; safe to call at any time */

/* Checked-fixture teardown for tests that use it_net_drop: heal, then it_teardown. */
void it_net_teardown(void);

/*
 * Per-key order and exactly-once audit of a stream against the outbox.
 * Walks the stream in sequence order and maps each message to its row by
 * Nats-Msg-Id = event_id.
 */
struct it_key_audit {
    size_t rows;       /* rows in the outbox */
    size_t messages;   /* messages in the stream */
    size_t distinct;   /* rows with at least one message */
    size_t duplicates; /* messages of a row that already had one earlier in the stream */
    size_t unknown;    /* messages whose Nats-Msg-Id is no row's event_id */
    size_t missing;    /* rows without a message */
    size_t keys;       /* distinct non-NULL ordering keys */
    size_t inversions; /* keyed messages whose row id is below an earlier message's of its key */
};

/* Fills *out; prints the first `show` inversions (key, ids, sequences) to stderr. */
void it_audit_key_order(PGconn *conn, const char *stream, int show, struct it_key_audit *out);

/* it_audit_key_order, then: 0 inversions, 0 duplicates, 0 unknown, 0 missing, messages == rows. */
void it_assert_keys_in_order_once(PGconn *conn, const char *stream);

/* ==== a 3-node nats-server cluster (issue 11 §3) ==== */

#define IT_CLUSTER_NODES 3

/*
 * Instead of it_nats_start: three nats-server -js processes on 127.0.0.1,
 * each with a generated config (server_name it-n1..3, cluster it-cluster,
 * free client and route ports, routes to the other two, its own store dir
 * under it_dir()). Returns once JetStream places a stream with 3 replicas
 * (a meta leader and every peer). From then on it_nats_url() is the
 * comma-separated URL of the three client ports, which it_js() and
 * it_relay_start() use. The nodes are stopped by it_teardown, and with the
 * test process like every child.
 */
void it_nats_cluster_start(void);
const char *it_nats_cluster_url(void);
int it_nats_cluster_port(int node); /* node 0..IT_CLUSTER_NODES-1, client port */
pid_t it_nats_cluster_pid(int node);

/* Checked-fixture setup: it_setup + PostgreSQL (migrated) + it_nats_cluster_start. */
void it_start_servers_cluster(void);

/* The connection under it_js(), e.g. for JetStream API requests nats.c has no call for. */
natsConnection *it_nats_conn(void);

/* it_js_add_stream with `replicas`, retried for up to 30 s while the cluster cannot place it. */
void it_js_add_stream_replicas(const char *name, const char *const *subjects, int replicas);

/* The server_name of the stream's cluster leader into buf; false if no leader answers (1 s). */
bool it_js_stream_leader(const char *name, char *buf, size_t len);

/* The stream's configured replicas; fails the test if it is missing. */
int it_js_stream_replicas(const char *name);
