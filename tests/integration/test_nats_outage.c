/* NATS outage: nats-server SIGKILLed for 5 s mid-drain and restarted on its store; each row once.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM    "IT_NATS_OUTAGE"
#define ROWS      50000
#define OUTAGE_MS 5000

static bool drain_under_way(void *conn)
{
    return it_pg_published(conn) >= ROWS / 5;
}

START_TEST(test_nats_killed_mid_drain_each_row_once)
{
    const char *subjects[] = {"it.outage.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.outage.' || (g %% 5), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 4 = 0 THEN 'key-' || (g %% 50) END"
               " FROM generate_series(1, %d) g",
               ROWS);
    /* In-flight publishes time out quickly; retries never run out; leadership is kept. */
    const char *env[] = {"OUTBOX_PUBLISH_TIMEOUT_MS=1000",
                         "OUTBOX_RETRY_BASE_MS=100",
                         "OUTBOX_RETRY_MAX_MS=1000",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=500",
                         "OUTBOX_NATS_LOST_MS=60000",
                         NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");
    it_nats_kill();
    int64_t killed_at = it_now_ms();
    int64_t marked_at_kill = it_pg_published(conn);
    /* The outage itself: a deliberate 5 s without a server. */
    struct timespec outage = {.tv_sec = OUTAGE_MS / 1000, .tv_nsec = 0};
    while (nanosleep(&outage, &outage) != 0)
        ;
    int64_t marked_in_outage = it_pg_published(conn);
    it_nats_start(); /* same store dir, same port */
    fprintf(stderr, "nats outage: killed with %lld rows marked, %lld after %lld ms without NATS\n",
            (long long)marked_at_kill, (long long)marked_in_outage,
            (long long)(it_now_ms() - killed_at));
    ck_assert_msg(marked_at_kill < ROWS, "the drain finished before the kill");

    int64_t got = it_pg_wait_published(conn, ROWS, 90000);
    if (got != ROWS)
        it_relay_dump_log(relay);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the restart", (long long)got, ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'"), 0);
    /* Rows in flight at the kill: their acks never came, they timed out and went again. */
    fprintf(stderr, "nats outage: %lld rows needed more than one attempt\n",
            (long long)it_pg_int(conn, "SELECT count(*) FROM outbox WHERE attempts > 1"));
    ck_assert_msg(it_relay_logged(relay, LOG_MSG_NATS_DISCONNECTED),
                  "the relay never noticed the outage");
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);

    /* Audit: each row once, and each row's stream_seq holds that row's message. */
    it_assert_each_row_once(conn, STREAM, ROWS);

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_outage");
    TCase *tc = it_tcase(suite, "nats_outage", it_start_servers, 240);
    tcase_add_test(tc, test_nats_killed_mid_drain_each_row_once);
    return run_suite(suite);
}
