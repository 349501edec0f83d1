/*
 * The outcomes of relay/nats/publish_error.c's table, each produced for real by a
 * nats-server 2.9 configured to produce it, and the fate of the row it meets:
 * permanent -> dead at its first attempt, counted under its reason class,
 * later rows of its key published; transient -> failed under its class,
 * retried, and published once (in key order) when the cause is removed.
 *
 * Entries no publish of the relay can meet on a real 2.9 server, and why:
 * - 10097 header too large: the relay refuses the row before it is sent
 *   (test_permanent_errors also checks the server's answer directly).
 * - 10060 expected stream, 10071 wrong last sequence, 10111 rollup: only a
 *   Nats-Expected-Stream / -Last-Sequence / Nats-Rollup header draws them,
 *   and the relay refuses rows whose headers start with "Nats-".
 * - 10059 stream not found, 10076 / 10039 JetStream not enabled: a publish to
 *   a subject no stream takes is answered 503 no responders (covered).
 * - 10008, 10009, 10004, 10041, 10118 (cluster, leader, RAFT, offline) and
 *   10063 (replica sequence): states of a clustered stream mid-election that
 *   a single server never has; 10047, 10028, 10053 (storage, memory, stream
 *   limits): answers to stream creation, not to a publish.
 * - nats.c statuses a publish cannot be made to return on demand: INVALID_ARG,
 *   NO_MEMORY, INSUFFICIENT_BUFFER, SSL_ERROR, CONNECTION_AUTH_FAILED,
 *   DRAINING, STALE_CONNECTION, PROTOCOL_ERROR, NOT_YET_CONNECTED.
 * Every JetStream code of the table is also answered to a real publish of the
 * relay by the scripted server of test_nats_scripted.c; the nats.c statuses
 * are classified by the unit test.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_NATS"
#define GOOD   10 /* rows of the target's key around it, half before, half after */

struct outcome {
    const char *name;
    const char *rule;    /* the table entry it produces */
    const char *config;  /* nats-server configuration, or NULL */
    const char *subject; /* the target row's */
    int payload;         /* the target row's payload bytes */
    bool permanent;
    const char *reason; /* the class it is counted under */
    void (*arrange)(void);
    void (*cause)(void);  /* after the rows are inserted, or NULL */
    void (*remove)(void); /* transient: the cause goes away */
    const char *nats_url; /* "nats://user:password@" to prefix the server's address, or NULL */
};

static void add_stream(const char *name, const char *subject, int64_t max_msgs, int32_t max_size,
                       bool sealed)
{
    const char *subjects[] = {subject};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    if (max_msgs > 0) {
        cfg.MaxMsgs = max_msgs;
        cfg.Discard = js_DiscardNew;
    }
    if (max_size > 0)
        cfg.MaxMsgSize = max_size;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, it_js(), &cfg, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "add stream %s: %s (%d)", name, natsStatus_GetText(s), (int)jerr);
    jsStreamInfo_Destroy(si);
    if (sealed) {
        cfg.Sealed = true;
        s = js_UpdateStream(&si, it_js(), &cfg, NULL, &jerr);
        ck_assert_msg(s == NATS_OK, "seal %s: %s (%d)", name, natsStatus_GetText(s), (int)jerr);
        jsStreamInfo_Destroy(si);
    }
}

static void publish_direct(const char *subject, const char *msg_id)
{
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MsgId = msg_id;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(NULL, it_js(), subject, "x", 1, &o, &jerr);
    ck_assert_msg(s == NATS_OK, "publish %s: %s (%d)", subject, natsStatus_GetText(s), (int)jerr);
}

static void purge(const char *name)
{
    jsErrCode jerr = 0;
    ck_assert_int_eq(js_PurgeStream(it_js(), name, NULL, &jerr), NATS_OK);
}

/* ---- the causes ---- */

static void arrange_max_msg_size(void)
{
    add_stream("IT_SMALL", "it.small.>", 0, 512, false);
}

static void arrange_sealed(void)
{
    add_stream("IT_SEALED", "it.sealed.>", 0, 0, true);
}

/* Full, discarding new messages: 10077 maximum messages exceeded. */
static void arrange_full(void)
{
    add_stream("IT_FULL", "it.full.>", 1, 0, false);
    publish_direct("it.full.before", "full-before");
}

static void remove_full(void)
{
    purge("IT_FULL");
}

static void remove_no_stream(void)
{
    add_stream("IT_LATE", "it.late.>", 0, 0, false);
}

/* A file store of 1 MiB (the server's or the account's), filled to the last few bytes. */
static void arrange_store_full(void)
{
    add_stream("IT_STORE", "it.store.>", 0, 0, false);
    char *blob = calloc(1, 100000);
    jsErrCode jerr = 0;
    for (int size = 100000; size >= 10; size /= 10) {
        while (js_Publish(NULL, it_js(), "it.store.fill", blob, size, NULL, &jerr) == NATS_OK)
            ;
        fprintf(stderr, "nats outcome: no room for %d bytes: JetStream error %d\n", size,
                (int)jerr);
    }
    free(blob);
}

static void remove_store_full(void)
{
    purge("IT_STORE");
}

static void pause_server(void)
{
    it_nats_pause();
}

static void resume_server(void)
{
    it_nats_resume();
}

static void stop_server(void)
{
    it_nats_kill();
}

static void start_server(void)
{
    it_nats_start();
    /* Back, as a client sees it: the test's own connection reaches the stream. */
    ck_assert(it_js_stream_exists(STREAM));
}

static const char perm_config[] = "authorization {\n"
                                  "  users = [\n"
                                  "    {user: relay, password: relaypw,\n"
                                  "     permissions: {publish: {deny: [\"it.denied.>\"]}}}\n"
                                  "    {user: test, password: testpw}\n"
                                  "  ]\n"
                                  "}\n"
                                  "no_auth_user: test\n";

static void grant_publish(void)
{
    it_nats_set_config("authorization {\n"
                       "  users = [ {user: relay, password: relaypw}, {user: test, password: "
                       "testpw} ]\n"
                       "}\n"
                       "no_auth_user: test\n");
    /* A restart with it (a reload, SIGHUP, of a file without a jetstream block left the
     * server with no stream answering: no responders). */
    it_nats_kill();
    it_nats_start();
}

static void arrange_denied(void)
{
    add_stream("IT_DENIED", "it.denied.>", 0, 0, false);
}

static void arrange_duplicate(void)
{
    /* The row's event_id is already in the stream: the relay's publish is acked as a duplicate. */
    publish_direct("it.nats.dup", "dup-event");
}

static const struct outcome outcomes[] = {
    {"stream max_msg_size", "10054 message size exceeds maximum", NULL, "it.small.x", 1000, true,
     "too_large", arrange_max_msg_size, NULL, NULL, NULL},
    {"sealed stream", "10109 invalid operation on sealed stream", NULL, "it.sealed.x", 1, true,
     "rejected", arrange_sealed, NULL, NULL, NULL},
    {"server max_payload", "NATS_MAX_PAYLOAD", "max_payload: 4096\n", "it.nats.big", 8000, true,
     "too_large", NULL, NULL, NULL, NULL},
    {"invalid subject", "NATS_INVALID_SUBJECT", NULL, "it.nats.bad subject", 1, true, "invalid_row",
     NULL, NULL, NULL, NULL},
    {"max_msgs with discard new", "10077 maximum messages exceeded", NULL, "it.full.x", 1, false,
     "limits", arrange_full, NULL, remove_full, NULL},
    {"server file store full", "10023 insufficient resources",
     "jetstream {max_file_store: 1048576}\n", "it.store.x", 1, false, "limits", arrange_store_full,
     NULL, remove_store_full, NULL},
    {"account file store full", "10002 resource limits exceeded for account",
     "accounts {A: {jetstream: {max_file: 1048576}, users: [{user: a, password: a}]}}\n"
     "no_auth_user: a\n",
     "it.store.x", 1, false, "limits", arrange_store_full, NULL, remove_store_full, NULL},
    {"no stream takes the subject", "NATS_NO_RESPONDERS", NULL, "it.late.x", 1, false, "no_stream",
     NULL, NULL, remove_no_stream, NULL},
    {"no PubAck: server stopped (SIGSTOP)", "NATS_TIMEOUT / the relay's deadline", NULL,
     "it.nats.t", 1, false, "timeout", NULL, pause_server, resume_server, NULL},
    {"server down", "NATS_CONNECTION_*", NULL, "it.nats.t", 1, false, NULL, NULL, stop_server,
     start_server, NULL},
    {"publish permission denied", "NATS_NOT_PERMITTED", perm_config, "it.denied.x", 1, false, NULL,
     arrange_denied, NULL, grant_publish, "nats://relay:relaypw@"},
    {"duplicate ack", "PubAck duplicate", NULL, "it.nats.dup", 1, false, NULL, arrange_duplicate,
     NULL, NULL, NULL},
};
#define OUTCOMES ((int)(sizeof outcomes / sizeof outcomes[0]))

struct waiting {
    PGconn *conn;
    struct it_relay *relay;
    const struct outcome *o;
    int64_t want;
};

/* A row retried under the cause (the target, or the row ahead of it in its key's queue when
 * the cause is server-wide). */
/*
 * The row failed and waits to be tried again, not dead. Whether the failure
 * counted as an attempt depends on whom the relay blames: one the connection
 * caused (the server answered nothing sent since the row: frozen, or
 * dropping the publish) is recorded without counting one.
 */
static bool retried(void *arg)
{
    struct waiting *w = arg;
    return it_pg_int(w->conn, "SELECT count(*) FROM outbox WHERE status = 'failed'"
                              " AND last_error IS NOT NULL AND ordering_key = 'k'") > 0;
}

static bool ready(void *arg)
{
    struct it_relay *relay = arg;
    return it_http_status(relay->http_port, "/readyz") == 200;
}

static bool settled(void *arg)
{
    struct waiting *w = arg;
    return it_pg_int(w->conn,
                     "SELECT count(*) FILTER (WHERE status = 'published')"
                     " + 1000 * count(*) FILTER (WHERE status = 'dead') FROM outbox") == w->want;
}

START_TEST(test_nats_outcome)
{
    const struct outcome *o = &outcomes[_i];
    fprintf(stderr, "nats outcome: %s (%s)\n", o->name, o->rule);
    it_nats_set_config(o->config);
    it_pg_start();
    it_nats_start();
    const char *subjects[] = {"it.nats.>", NULL};
    it_js_add_stream(STREAM, subjects);
    if (o->arrange != NULL)
        o->arrange();

    char url[256] = "";
    if (o->nats_url != NULL)
        snprintf(url, sizeof url, "OUTBOX_NATS_URL=%s%s", o->nats_url,
                 it_nats_url() + strlen("nats://"));
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=300",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=100",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=1000",
                         "OUTBOX_RECONNECT_MAX_MS=500",
                         url[0] ? url : NULL,
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    PGconn *conn = it_pg_connect();
    ck_assert_msg(it_wait_until(ready, relay, 20000), "relay not ready");
    if (o->cause != NULL)
        o->cause();
    /* The target amid rows of its key, and rows of other keys. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.nats.g', convert_to(g::text, 'UTF8'), 'k' FROM generate_series(1, "
               "%d) g",
               GOOD / 2);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, event_id, payload, ordering_key)"
               " VALUES ($s$%s$s$, %s, convert_to(repeat('p', %d), 'UTF8'), 'k')",
               o->subject, o->arrange == arrange_duplicate ? "'dup-event'" : "'target'",
               o->payload);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.nats.g', convert_to(g::text, 'UTF8'),"
               " CASE WHEN g %% 2 = 0 THEN 'k' ELSE 'o' || g END"
               " FROM generate_series(1, %d) g",
               GOOD);

    struct waiting w = {.conn = conn, .relay = relay, .o = o, .want = GOOD / 2 + GOOD + 1};
    if (o->permanent) {
        w.want = GOOD / 2 + GOOD + 1000;
    } else if (o->remove != NULL) {
        /* Retried while the cause lasts, never dead (a stopped server: no publish to retry). */
        bool failed = o->cause == stop_server || it_wait_until(retried, &w, 20000);
        if (!failed)
            it_relay_dump_log(relay);
        ck_assert_msg(failed, "%s: the row was not retried", o->name);
        o->remove();
    }
    if (!it_wait_until(settled, &w, 60000)) {
        it_relay_dump_log(relay);
        PGresult *r = it_pg_query(conn, "SELECT id, event_id, status, attempts,"
                                        " coalesce(last_error, '') FROM outbox ORDER BY id");
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "  row %s %s: %s after %s attempts: %s\n", PQgetvalue(r, i, 0),
                    PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                    PQgetvalue(r, i, 4));
        PQclear(r);
        ck_abort_msg("%s: rows did not reach their fate", o->name);
    }
    PGresult *t = it_pg_query(conn,
                              "SELECT status, attempts, coalesce(last_error, '')"
                              " FROM outbox WHERE ordering_key = 'k'"
                              " AND subject = $s$%s$s$",
                              o->subject);
    fprintf(stderr, "nats outcome: %s: the row is %s after %s attempts: %s\n", o->name,
            PQgetvalue(t, 0, 0), PQgetvalue(t, 0, 1), PQgetvalue(t, 0, 2));
    if (o->permanent) {
        ck_assert_str_eq(PQgetvalue(t, 0, 0), "dead");
        ck_assert_str_eq(PQgetvalue(t, 0, 1), "1");
        ck_assert_int_eq(it_metric_reason(relay->http_port, "dead_total", o->reason), 1);
    } else {
        ck_assert_str_eq(PQgetvalue(t, 0, 0), "published");
        if (o->reason != NULL)
            ck_assert_int_ge(it_metric_reason(relay->http_port, "failed_total", o->reason), 1);
    }
    PQclear(t);
    if (o->arrange == arrange_duplicate) /* the copy already stored is the row's */
        ck_assert_int_eq(
            it_pg_int(conn, "SELECT stream_seq FROM outbox WHERE event_id = 'dup-event'"), 1);
    /* Per key, each row's PubAck came after the previous row's. */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM (SELECT published_at < lag(published_at)"
                                     " OVER (PARTITION BY ordering_key ORDER BY id) AS inv"
                                     " FROM outbox WHERE status = 'published') x WHERE inv"),
                     0);
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 0);
    it_msgs_free(&msgs);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

struct drain {
    PGconn *conn;
    int64_t want;
};

static bool drain_started(void *arg)
{
    return it_pg_published(((struct drain *)arg)->conn) > 0;
}

static bool drained(void *arg)
{
    struct drain *d = arg;
    return it_pg_int(d->conn,
                     "SELECT count(*) FROM outbox WHERE status IN ('published', 'dead')") ==
           d->want;
}

#define CHAIN_ROWS 6000

/* 10070 wrong last msg ID: a fence the relay set refused because another client wrote to the
 * stream. Such refusals are resent, in order; no row is dead. */
START_TEST(test_fence_refused_by_another_writer)
{
    it_pg_start();
    it_nats_start();
    const char *subjects[] = {"it.nats.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.nats.chain', convert_to(g::text, 'UTF8'), 'one'"
               " FROM generate_series(1, %d) g",
               CHAIN_ROWS);
    const char *env[] = {"OUTBOX_STREAM=" STREAM,   "OUTBOX_STREAM_SUBJECTS=it.nats.>",
                         "OUTBOX_PIPELINE=auto",    "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=300", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    struct drain d = {.conn = conn, .want = CHAIN_ROWS};
    ck_assert(it_wait_until(drain_started, &d, 30000));
    /* Spread over the drain: one message each 100 rows, while pipelined and after. */
    int sent = 0;
    for (int64_t at = 0, n;
         sent < 20 && (n = it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status IN"
                                           " ('published', 'dead')")) < CHAIN_ROWS;) {
        if (n - at < 100)
            continue;
        at = n;
        char id[32];
        snprintf(id, sizeof id, "other-%d", sent++);
        publish_direct("it.nats.other", id);
    }
    bool done = it_wait_until(drained, &d, 60000);
    if (!done)
        it_relay_dump_log(relay);
    ck_assert(done);
    PGresult *r = it_pg_query(conn, "SELECT id, last_error FROM outbox WHERE status = 'dead'");
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(stderr, "nats outcome: fence: row %s dead: %s\n", PQgetvalue(r, i, 0),
                PQgetvalue(r, i, 1));
    ck_assert_msg(PQntuples(r) == 0, "%d rows dead after a fence refusal", PQntuples(r));
    PQclear(r);
    struct it_key_audit a;
    it_audit_key_order(conn, STREAM, 5, &a);
    ck_assert_int_eq(a.inversions, 0);
    ck_assert_int_eq(a.duplicates, 0);
    ck_assert_int_eq(a.missing, 0);
    ck_assert_int_eq(a.unknown, sent); /* the other writer's */
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_outcomes");
    TCase *tc = it_tcase(suite, "outcomes", it_setup, 120);
    const char *only = getenv("IT_OUTCOME_ONLY");
    for (int i = 0; i < OUTCOMES; i++)
        if (only == NULL || !*only || strstr(outcomes[i].name, only) != NULL)
            tcase_add_loop_test(tc, test_nats_outcome, i, i + 1);
    if (only == NULL || !*only || strstr("fence refused by another writer", only) != NULL)
        tcase_add_test(tc, test_fence_refused_by_another_writer);
    return run_suite(suite);
}
