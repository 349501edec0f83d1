/* Failures a frozen nats-server caused are not the rows': they earn no backoff and no attempt. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM       "IT_STALL_BACKOFF"
#define ROWS         3000
#define MAX_INFLIGHT 200

static void insert_rows(PGconn *conn)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.sb.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 4 = 0 THEN 'key-' || (g %% 40) END"
               " FROM generate_series(1, %d) g",
               ROWS);
}

static bool drain_under_way(void *conn)
{
    return it_pg_published(conn) >= ROWS / 10;
}

/* Publishes timed out, round after round: several times what the relay holds. */
static bool stalled_rounds(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM mark_log WHERE status IN ('failed', 'dead')") >=
           3 * MAX_INFLIGHT;
}

/* A row's publish timed out twice while nats-server was frozen. */
static bool failed_twice(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM (SELECT id FROM mark_log"
                           " WHERE status IN ('failed', 'dead') GROUP BY id"
                           " HAVING count(*) >= 2) AS t") > 0;
}

/* Freezes nats-server mid-drain for several PubAck deadlines, thaws it, checks every row. */
static void run_stall(const char *const *env, bool (*stalled_enough)(void *conn))
{
    const char *subjects[] = {"it.sb.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_record_marks(conn);
    insert_rows(conn);
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");

    it_nats_pause();
    bool stalled = it_wait_until(stalled_enough, conn, 20000);
    it_nats_resume();
    if (!stalled)
        it_pg_dump_row_states(conn);
    ck_assert_msg(stalled, "publishes did not time out while nats-server was frozen");
    ck_assert_msg(it_pg_published(conn) < ROWS, "the drain finished before the freeze");

    /* Far below the backoff the failed rows would otherwise wait. */
    int64_t got = it_pg_wait_published(conn, ROWS, 30000);
    if (got != ROWS) {
        it_relay_dump_log(relay);
        it_pg_dump_row_states(conn);
    }
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the thaw", (long long)got, ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM mark_log WHERE status = 'dead'"), 0);
    it_assert_each_row_once(conn, STREAM, ROWS);
    it_assert_keys_in_order_once(conn, STREAM);
    it_relay_stop(relay);
    PQfinish(conn);
}

/* A backoff of minutes: rows failed by the freeze must not wait for it. */
START_TEST(test_stall_failures_earn_no_backoff)
{
    const char *env[] = {"OUTBOX_PUBLISH_TIMEOUT_MS=300",
                         "OUTBOX_RETRY_BASE_MS=120000",
                         "OUTBOX_RETRY_MAX_MS=300000",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_NATS_LOST_MS=60000",
                         "OUTBOX_MAX_INFLIGHT=200",
                         "OUTBOX_BATCH_SIZE=100",
                         "OUTBOX_POLL_INTERVAL_MS=200",
                         NULL};
    run_stall(env, stalled_rounds);
}
END_TEST

/* Two attempts allowed: rows failed by the freeze, again and again, must not die of it. */
START_TEST(test_stall_failures_are_no_attempts)
{
    const char *env[] = {
        "OUTBOX_PUBLISH_TIMEOUT_MS=300", "OUTBOX_RETRY_BASE_MS=20",     "OUTBOX_RETRY_MAX_MS=50",
        "OUTBOX_MAX_ATTEMPTS=2",         "OUTBOX_NATS_LOST_MS=60000",   "OUTBOX_MAX_INFLIGHT=200",
        "OUTBOX_BATCH_SIZE=100",         "OUTBOX_POLL_INTERVAL_MS=200", NULL};
    run_stall(env, failed_twice);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_stall_backoff");
    TCase *tc = it_tcase(suite, "nats_stall_backoff", it_start_servers, 120);
    tcase_add_test(tc, test_stall_failures_earn_no_backoff);
    tcase_add_test(tc, test_stall_failures_are_no_attempts);
    return run_suite(suite);
}
