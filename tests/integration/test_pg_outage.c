/* PostgreSQL trouble mid-drain: a restart, a terminated backend, a silent (stopped) backend. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_PG_OUTAGE"
#define ROWS   15000

/* Short deadlines and backoffs: each disruption is noticed and mended within a second or two. */
static const char *const relay_env[] = {"OUTBOX_PG_TIMEOUT_MS=2000",  "OUTBOX_RECONNECT_MAX_MS=500",
                                        "OUTBOX_LEADER_RETRY_MS=500", "OUTBOX_POLL_INTERVAL_MS=500",
                                        "OUTBOX_RETRY_BASE_MS=100",   "OUTBOX_RETRY_MAX_MS=1000",
                                        "OUTBOX_MAX_ATTEMPTS=1000",   "OUTBOX_BATCH_SIZE=200",
                                        "OUTBOX_MAX_INFLIGHT=1000",   NULL};

static struct it_relay *start_drain(PGconn *conn)
{
    const char *subjects[] = {"it.pgout.>", NULL};
    it_js_add_stream(STREAM, subjects);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.pgout.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 2 = 0 THEN 'key-' || (g %% 40) END"
               " FROM generate_series(1, %d) g",
               ROWS);
    return it_relay_start((const char *const *)relay_env, NULL);
}

static bool drain_under_way(void *conn)
{
    return it_pg_published(conn) >= ROWS / 5;
}

/* The relay's own session, by the application_name it sets; 0 if it has none. */
static int relay_backend(PGconn *conn)
{
    PGresult *res = it_pg_query(conn, "SELECT pid FROM pg_stat_activity"
                                      " WHERE application_name = 'outbox-relay'");
    int pid = PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return pid;
}

/* Every row published, once in the stream, each stream_seq holding that row's message. */
static void finish_and_audit(PGconn *conn, struct it_relay *relay, const char *what)
{
    int64_t got = it_pg_wait_published(conn, ROWS, 60000);
    if (got != ROWS)
        it_relay_dump_log(relay);
    ck_assert_msg(got == ROWS, "%s: %lld of %d rows published", what, (long long)got, ROWS);
    it_assert_each_row_once(conn, STREAM, ROWS);

    it_relay_stop(relay);
}

START_TEST(test_pg_restart_mid_drain)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_drain(conn);
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");
    it_pg_restart(); /* fast shutdown: every session ends; same port and data dir */
    PQreset(conn);
    ck_assert_int_eq(PQstatus(conn), CONNECTION_OK);
    int64_t after = it_pg_published(conn);
    fprintf(stderr, "pg outage: restarted with %lld of %d rows marked\n", (long long)after, ROWS);
    ck_assert_msg(after < ROWS, "the drain finished before the restart");
    finish_and_audit(conn, relay, "after a restart");
    ck_assert(it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST));
    PQfinish(conn);
}
END_TEST

START_TEST(test_backend_terminated_mid_drain)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_drain(conn);
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");
    int64_t terminated = it_pg_int(
        conn, "SELECT count(*) FILTER (WHERE t) FROM (SELECT pg_terminate_backend(pid) AS t"
              " FROM pg_stat_activity WHERE application_name = 'outbox-relay') s");
    ck_assert_int_eq(terminated, 1);
    ck_assert_msg(it_pg_published(conn) < ROWS, "the drain finished before the termination");
    finish_and_audit(conn, relay, "after pg_terminate_backend");
    ck_assert(it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST));
    PQfinish(conn);
}
END_TEST

static bool relay_gave_up_on_session(void *relay)
{
    /* OUTBOX_PG_TIMEOUT_MS=2000: the statement deadline, and half as long again. */
    char reason[128];
    snprintf(reason, sizeof reason, LOG_REASON_PG_DEADLINE_FMT, "query", 3000);
    return it_relay_log_contains(relay, reason);
}

/*
 * The "hangs after failover" bug: a peer that stops answering without
 * closing anything. A stopped backend keeps its socket open and the kernel
 * keeps acknowledging, so only the relay's query deadline can notice. The
 * stopped backend still holds the leader lock: the relay gets it back once
 * the backend, continued, finds its client gone and exits.
 */
START_TEST(test_silent_backend_dropped_after_deadline)
{
    PGconn *conn = it_pg_connect();
    struct it_relay *relay = start_drain(conn);
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");
    int pid = relay_backend(conn);
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(kill((pid_t)pid, SIGSTOP), 0);
    int64_t stopped_at = it_now_ms();
    bool dropped = it_wait_until(relay_gave_up_on_session, relay, 10000);
    int64_t waited = it_now_ms() - stopped_at;
    kill((pid_t)pid, SIGCONT); /* before any check: a stopped backend stalls the teardown */
    fprintf(stderr, "pg outage: relay dropped the silent session after %lld ms\n",
            (long long)waited);
    ck_assert_msg(dropped, "the relay still waits on a stopped backend after 10 s");
    ck_assert_msg(waited >= 1500, "dropped after %lld ms, before the 2 s deadline",
                  (long long)waited);
    ck_assert_msg(it_pg_published(conn) < ROWS, "the drain finished before the backend stopped");
    finish_and_audit(conn, relay, "after a silent backend");
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("pg_outage");
    TCase *tc = it_tcase(suite, "pg_outage", it_start_servers, 180);
    tcase_add_test(tc, test_pg_restart_mid_drain);
    tcase_add_test(tc, test_backend_terminated_mid_drain);
    tcase_add_test(tc, test_silent_backend_dropped_after_deadline);
    return run_suite(suite);
}
