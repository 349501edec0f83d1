/*
 * Takeover bench: the time from a leader's end to its successor's first
 * publish, with 4,000 rows in flight at the end (published, acknowledged,
 * not marked: the successor's reconciliation finds them in the stream).
 *
 *   build/tests/bench/outbox_takeover_bench [runs]     (default 5)
 *
 * IT_RELAY_BINARY runs another relay build (e.g. one without reconciliation)
 * for an A/B comparison. Each run starts its own PostgreSQL and nats-server.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM    "BENCH_TAKEOVER"
#define IN_FLIGHT 4000
#define ROWS      12000

static const char *const leader_env[] = {
    "OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=bench.to.>",
    /* One claim takes every row in flight, so all 4,000 are published before the first mark. */
    "OUTBOX_BATCH_SIZE=4000", "OUTBOX_MAX_INFLIGHT=4000", "OUTBOX_LEADER_RETRY_MS=100", NULL};
static const char *const standby_env[] = {
    "OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=bench.to.>", "OUTBOX_MAX_INFLIGHT=4000",
    "OUTBOX_LEADER_RETRY_MS=100", NULL};

struct stuck {
    PGconn *conn;
};

/* Every row of the first claim is in the stream, and their mark waits on the bench's row lock. */
static bool in_flight_unmarked(void *arg)
{
    struct stuck *s = arg;
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, it_js(), STREAM, NULL, NULL) != NATS_OK)
        return false;
    uint64_t msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return msgs == IN_FLIGHT &&
           it_pg_int(s->conn,
                     "SELECT count(*) FROM pg_stat_activity"
                     " WHERE application_name = 'outbox-relay' AND wait_event_type = 'Lock'"
                     "   AND query LIKE '/* outbox-relay %% */ UPDATE%%'") == 1;
}

static bool standing_by(void *arg)
{
    return it_relay_log_contains(arg, "standing by");
}

/* The "ms" of the successor's reconciliation log line, or -1. */
static double reconcile_ms(const struct it_relay *relay)
{
    char *log = it_relay_log(relay);
    const char *line = strstr(log, "reconciled with the stream");
    const char *ms = line ? strstr(line, "\"ms\":") : NULL;
    double v = ms ? strtod(ms + 5, NULL) : -1;
    free(log);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void one_run(double *takeover_ms, double *rec_ms, bool *first_is_new)
{
    it_start_servers();
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'bench.to.' || (g %% 3), convert_to(repeat('x', 200) || g, 'UTF8'),"
               "        'key-' || (g %% 16) FROM generate_series(1, %d) g",
               ROWS);
    PGconn *blocker = it_pg_connect();
    it_pg_exec(blocker, "BEGIN; SELECT id FROM outbox WHERE id = 1 FOR UPDATE");
    struct it_relay *leader = it_relay_start(leader_env, NULL);
    struct stuck s = {.conn = conn};
    ck_assert_msg(it_wait_until(in_flight_unmarked, &s, 60000),
                  "the leader never had 4,000 rows acked and unmarked");
    struct it_relay *standby = it_relay_start(standby_env, NULL);
    ck_assert(it_wait_until(standing_by, standby, 30000));

    natsSubscription *sub = NULL;
    ck_assert(natsConnection_SubscribeSync(&sub, it_nats_conn(), "bench.to.>") == NATS_OK);
    ck_assert(natsConnection_Flush(it_nats_conn()) == NATS_OK);
    it_relay_signal(leader, SIGKILL);
    ck_assert(it_relay_wait(leader, 10000));
    /* The leader's session ends now: the lock is free for the standby (it tries every 100 ms). */
    int64_t t0 = it_now_ms();
    it_pg_exec(conn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'outbox-relay' AND wait_event_type = 'Lock'");
    it_pg_exec(blocker, "ROLLBACK");
    natsMsg *first = NULL;
    ck_assert(natsSubscription_NextMsg(&first, sub, 30000) == NATS_OK);
    *takeover_ms = (double)(it_now_ms() - t0);
    const char *id = NULL;
    natsMsgHeader_Get(first, "Nats-Msg-Id", &id);
    *first_is_new = id != NULL && it_pg_int(conn,
                                            "SELECT count(*) FROM outbox WHERE event_id = '%s'"
                                            " AND id > %d",
                                            id, IN_FLIGHT) == 1;
    natsMsg_Destroy(first);
    natsSubscription_Destroy(sub);
    *rec_ms = reconcile_ms(standby);
    PQfinish(blocker);
    PQfinish(conn);
    it_teardown();
}

static int runs = 5;

START_TEST(bench_takeover)
{
    double take[50], rec[50];
    for (int i = 0; i < runs; i++) {
        bool fresh = false;
        one_run(&take[i], &rec[i], &fresh);
        printf("run %d: takeover to first publish %.0f ms, reconciliation %.1f ms, first publish "
               "is %s\n",
               i + 1, take[i], rec[i], fresh ? "a new row" : "a re-publish");
        fflush(stdout);
    }
    qsort(take, (size_t)runs, sizeof(double), cmp_double);
    qsort(rec, (size_t)runs, sizeof(double), cmp_double);
    printf("relay %s, %d rows in flight, %d runs: takeover_to_first_publish_ms median %.0f "
           "(min %.0f, max %.0f); reconcile_ms median %.1f\n",
           it_relay_binary(), IN_FLIGHT, runs, take[runs / 2], take[0], take[runs - 1],
           rec[runs / 2]);
    fflush(stdout);
}
END_TEST

int main(int argc, char **argv)
{
    runs = argc > 1 ? atoi(argv[1]) : 5;
    if (runs < 1 || runs > 50)
        runs = 5;
    Suite *suite = suite_create("takeover");
    TCase *tc = tcase_create("takeover");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, bench_takeover);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
