/* A new leader reconciles with the stream before it publishes again: once per row, past the
 * duplicate window, through kills, a kill during the reconciliation and a stream leader change;
 * with another writer, every re-publish is counted and nothing is lost. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_RECONCILE"
/* Short, so that a restart lands past it: JetStream's deduplication can no longer help. */
#define WINDOW_S 2

static const char *const relay_env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.rec.>",
                                        "OUTBOX_STREAM_DUPLICATE_WINDOW=2s", NULL};

/* Keyed rows over three subjects, with some unkeyed ones between them. */
static void insert_rows(PGconn *conn, int rows)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.rec.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 7 <> 0 THEN 'key-' || (g %% 16) END"
               " FROM generate_series(1, %d) g",
               rows);
}

/* The stream's message count, or false while it cannot say (being created, electing a leader). */
static bool stream_msgs(uint64_t *msgs)
{
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, it_js(), STREAM, NULL, NULL) != NATS_OK)
        return false;
    *msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return true;
}

struct drain {
    PGconn *conn;
    int64_t at_least; /* rows published before the kill */
    int64_t marked;
    uint64_t in_stream;
};

/* The drain is past at_least rows, and the stream holds messages whose rows are not marked. */
static bool acked_unmarked(void *arg)
{
    struct drain *d = arg;
    d->marked = it_pg_published(d->conn);
    if (!stream_msgs(&d->in_stream))
        return false; /* the relay creates it */
    return d->marked >= d->at_least && d->in_stream > (uint64_t)d->marked;
}

/* Ends the relay's PostgreSQL sessions, so that nothing it queued commits after its death. */
static void end_relay_sessions(PGconn *conn)
{
    it_pg_exec(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'outbox-relay'");
    it_pg_wait_int(conn,
                   "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-relay'",
                   0, 10000);
}

/*
 * SIGKILL once the stream holds acked rows whose marks are not written; returns how many. A mark
 * in flight may still commit as the relay dies: then *relay is started again (nothing to
 * reconcile yet) and killed later in the drain.
 */
static int64_t kill_mid_drain(struct it_relay **relay, const char *const *env, PGconn *conn,
                              int64_t at_least)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        struct drain d = {.conn = conn, .at_least = at_least};
        bool caught = it_wait_until(acked_unmarked, &d, 60000);
        it_relay_signal(*relay, SIGKILL);
        ck_assert(it_relay_wait(*relay, 10000));
        ck_assert_msg(caught, "never caught the drain with acked rows unmarked (%lld marked)",
                      (long long)d.marked);
        end_relay_sessions(conn);
        int64_t unmarked = (int64_t)it_js_stream_msgs(STREAM) - it_pg_published(conn);
        fprintf(stderr, "killed at %lld rows marked, %lld messages in the stream without a mark\n",
                (long long)it_pg_published(conn), (long long)unmarked);
        if (unmarked > 0)
            return unmarked;
        *relay = it_relay_start(env, NULL);
    }
    ck_abort_msg("five kills found every acked row marked");
    return 0;
}

static double wall_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The stream's last message is older than the duplicate window (and a margin). */
static bool window_passed(void *arg)
{
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, it_js(), STREAM, NULL, NULL) != NATS_OK)
        return false;
    double last = (double)si->State.LastTime / 1e9;
    jsStreamInfo_Destroy(si);
    return wall_now_s() - last > WINDOW_S + 0.5;
}

static void wait_window_passed(void)
{
    ck_assert_msg(it_wait_until(window_passed, NULL, 30000), "the stream kept being written");
}

static void drain_and_audit(PGconn *conn, struct it_relay *relay, int64_t rows)
{
    int64_t got = it_pg_wait_published(conn, rows, 90000);
    if (got != rows)
        it_relay_dump_log(relay);
    ck_assert_msg(got == rows, "%lld of %lld rows published", (long long)got, (long long)rows);
    struct it_key_audit a;
    it_audit_key_order(conn, STREAM, 5, &a);
    fprintf(stderr,
            "audit: %zu rows, %zu messages, %zu duplicates, %zu missing, %zu order violations\n",
            a.rows, a.messages, a.duplicates, a.missing, a.inversions);
    if (a.duplicates || a.missing || a.inversions || a.unknown)
        it_relay_dump_log(relay);
    it_assert_keys_in_order_once(conn, STREAM);
    it_assert_each_row_once(conn, STREAM, rows);
}

/* The relay, only writer of a stream with a 2 s window, killed three times mid-drain and
 * restarted past the window each time: every row once, in key order. */
START_TEST(test_killed_three_times_past_the_window)
{
    const int rows = 15000;
    PGconn *conn = it_pg_connect();
    insert_rows(conn, rows);
    struct it_relay *relay = it_relay_start(relay_env, NULL);
    for (int k = 1; k <= 3; k++) {
        int64_t unmarked = kill_mid_drain(&relay, relay_env, conn, (int64_t)rows * k / 5);
        ck_assert_msg(unmarked > 0, "kill %d: no message was without its mark", k);
        wait_window_passed();
        relay = it_relay_start(relay_env, NULL);
    }
    drain_and_audit(conn, relay, rows);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

struct stuck {
    PGconn *conn;
    const char *query; /* a LIKE pattern of the relay's statement */
};

/* One of the relay's statements (s->query) waits on a lock the test holds. */
static bool relay_waits_on_lock(void *arg)
{
    struct stuck *s = arg;
    return it_pg_int(s->conn,
                     "SELECT count(*) FROM pg_stat_activity"
                     " WHERE application_name = 'outbox-relay' AND wait_event_type = 'Lock'"
                     "   AND query LIKE '%s'",
                     s->query) == 1;
}

/* The lowest unfinished row whose message is in the stream: the next term finds it there. */
static int64_t first_row_in_stream_unmarked(PGconn *conn)
{
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    PGresult *res =
        it_pg_query(conn, "SELECT id, event_id FROM outbox WHERE status = 'pending' ORDER BY id");
    int64_t id = 0;
    for (int i = 0; i < PQntuples(res) && id == 0; i++)
        if (it_msgs_find(&msgs, PQgetvalue(res, i, 1)) != NULL)
            id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
    PQclear(res);
    it_msgs_free(&msgs);
    return id;
}

/* Killed while it reconciles (its UPDATE of the rows found in the stream held on a row lock):
 * it published nothing, and the next term reconciles again. */
START_TEST(test_killed_during_reconciliation)
{
    const int rows = 8000;
    PGconn *conn = it_pg_connect();
    insert_rows(conn, rows);
    struct it_relay *relay = it_relay_start(relay_env, NULL);
    ck_assert(kill_mid_drain(&relay, relay_env, conn, rows / 4) > 0);
    wait_window_passed();

    int64_t locked = first_row_in_stream_unmarked(conn);
    ck_assert(locked > 0);
    PGconn *blocker = it_pg_connect();
    it_pg_exec(blocker, "BEGIN; SELECT id FROM outbox WHERE id = %lld FOR UPDATE",
               (long long)locked);
    uint64_t before = it_js_stream_msgs(STREAM);
    relay = it_relay_start(relay_env, NULL);
    struct stuck s = {.conn = conn, .query = "/* outbox-relay % */ UPDATE%"};
    ck_assert_msg(it_wait_until(relay_waits_on_lock, &s, 30000),
                  "the new leader never wrote to the locked row");
    uint64_t during = it_js_stream_msgs(STREAM);
    it_relay_signal(relay, SIGKILL);
    ck_assert(it_relay_wait(relay, 10000));
    end_relay_sessions(conn);
    it_pg_exec(blocker, "ROLLBACK");
    PQfinish(blocker);
    ck_assert_msg(during == before,
                  "the new leader published %llu messages before its reconciliation committed",
                  (unsigned long long)(during - before));

    wait_window_passed();
    relay = it_relay_start(relay_env, NULL);
    drain_and_audit(conn, relay, rows);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

static bool read_failed(void *arg)
{
    return it_relay_logged(arg, LOG_MSG_RECONCILE_READ_FAILED);
}

/* NATS stops answering while the new leader reconciles: it publishes nothing until it has read
 * the stream, and then every row once. */
START_TEST(test_nats_lost_during_reconciliation)
{
    const int rows = 6000;
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.rec.>",
                         "OUTBOX_STREAM_DUPLICATE_WINDOW=2s", "OUTBOX_PUBLISH_TIMEOUT_MS=500",
                         NULL};
    PGconn *conn = it_pg_connect();
    insert_rows(conn, rows);
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert(kill_mid_drain(&relay, env, conn, rows / 4) > 0);
    wait_window_passed();
    uint64_t before = it_js_stream_msgs(STREAM);

    /* Held at its first step, then NATS frozen before it reads the stream. */
    PGconn *blocker = it_pg_connect();
    it_pg_exec(blocker, "BEGIN; LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE");
    relay = it_relay_start(env, NULL);
    struct stuck s = {.conn = conn, .query = "/* outbox-relay % */ SELECT id, event_id%"};
    ck_assert_msg(it_wait_until(relay_waits_on_lock, &s, 30000),
                  "the new leader never read the unfinished rows");
    it_nats_pause();
    it_pg_exec(blocker, "COMMIT");
    PQfinish(blocker);
    bool failed = it_wait_until(read_failed, relay, 10000);
    it_nats_resume();
    ck_assert_msg(failed, "the stream read did not fail with NATS frozen");
    ck_assert_int_eq(it_js_stream_msgs(STREAM), before);
    drain_and_audit(conn, relay, rows);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

static void step_down(void)
{
    char old[128];
    it_js_stream_step_down(STREAM, old, sizeof old);
    it_js_stream_wait_new_leader(STREAM, old);
}

/* An R3 stream whose leader steps down as the new relay reconciles: once per row, in order. */
START_TEST(test_stream_leader_change_during_reconciliation)
{
    const int wave = 5000;
    int64_t rows = 0;
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.rec.>",
                         "OUTBOX_STREAM_DUPLICATE_WINDOW=2s", "OUTBOX_STREAM_REPLICAS=3",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=1000", "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=500", "OUTBOX_MAX_ATTEMPTS=1000",
                         /* Smaller claims: a wave drains over seconds, not between two looks. */
                         "OUTBOX_BATCH_SIZE=100", "OUTBOX_MAX_INFLIGHT=500", NULL};
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = NULL;
    for (int k = 1; k <= 2; k++) {
        /* A wave per round, so that a drain is under way at each kill however fast the last. */
        /* The previous round's rows all published: the new leader reconciled and drained. */
        ck_assert_int_eq(it_pg_wait_published(conn, rows, 60000), rows);
        insert_rows(conn, wave);
        rows += wave;
        /* A row of the wave locked: the mark that records it waits, with every mark and claim
         * behind it, so the stream holds acked rows without their marks at the kill. */
        PGconn *blocker = it_pg_connect();
        it_pg_exec(blocker,
                   "BEGIN; SELECT id FROM outbox WHERE id = (SELECT max(id) - %d"
                   " FROM outbox) FOR UPDATE",
                   wave - 100);
        if (relay == NULL)
            relay = it_relay_start(env, NULL);
        ck_assert(kill_mid_drain(&relay, env, conn, it_pg_published(conn)) > 0);
        it_pg_exec(blocker, "ROLLBACK");
        PQfinish(blocker);
        wait_window_passed();
        relay = it_relay_start(env, NULL);
        step_down();
    }
    drain_and_audit(conn, relay, rows);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* Another writer fills the stream past what the new leader reads: it re-publishes, counts every
 * re-publish, and loses nothing. */
START_TEST(test_other_writer_republishes_counted)
{
    const int rows = 5000, others = 1500;
    const char *env[] = {"OUTBOX_STREAM=" STREAM,
                         "OUTBOX_STREAM_SUBJECTS=it.rec.>",
                         "OUTBOX_STREAM_DUPLICATE_WINDOW=2s",
                         "OUTBOX_MAX_INFLIGHT=500",
                         "OUTBOX_BATCH_SIZE=100",
                         NULL};
    PGconn *conn = it_pg_connect();
    insert_rows(conn, rows);
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert(kill_mid_drain(&relay, env, conn, rows / 4) > 0);
    for (int i = 0; i < others; i++) {
        char id[64];
        snprintf(id, sizeof id, "other-writer-%d", i);
        natsMsg *m = NULL;
        ck_assert(natsMsg_Create(&m, "it.rec.other", NULL, "x", 1) == NATS_OK);
        natsMsgHeader_Set(m, "Nats-Msg-Id", id);
        jsPubAck *pa = NULL;
        ck_assert(js_PublishMsg(&pa, it_js(), m, NULL, NULL) == NATS_OK);
        jsPubAck_Destroy(pa);
        natsMsg_Destroy(m);
    }
    wait_window_passed();
    relay = it_relay_start_http(env, NULL);
    int64_t got = it_pg_wait_published(conn, rows, 60000);
    ck_assert_msg(got == rows, "%lld of %d rows published", (long long)got, rows);
    struct it_key_audit a;
    it_audit_key_order(conn, STREAM, 0, &a);
    double republished = it_metric(relay->http_port, "outbox_relay_republished_total");
    fprintf(stderr, "other writer: %zu duplicates in the stream, republished_total %.0f\n",
            a.duplicates, republished);
    ck_assert_int_eq(a.missing, 0);
    ck_assert_int_eq(a.unknown, others);
    ck_assert_msg(republished >= (double)a.duplicates,
                  "%zu duplicates in the stream, %.0f re-publishes counted", a.duplicates,
                  republished);
    ck_assert_msg(republished > 0, "the fallback counted no re-publish");
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("reconcile");
    TCase *tc = it_tcase(suite, "reconcile", it_start_servers, 240);
    tcase_add_test(tc, test_killed_three_times_past_the_window);
    tcase_add_test(tc, test_killed_during_reconciliation);
    tcase_add_test(tc, test_other_writer_republishes_counted);
    tcase_add_test(tc, test_nats_lost_during_reconciliation);
    TCase *cluster = it_tcase(suite, "reconcile_cluster", it_start_servers_cluster, 240);
    tcase_add_test(cluster, test_stream_leader_change_during_reconciliation);
    return run_suite(suite);
}
