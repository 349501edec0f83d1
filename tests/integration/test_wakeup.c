/* Wake-up: rows inserted while the relay idles arrive on NOTIFY, long before the poll interval. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_WAKEUP"
/* Ten minutes: a row that waits for the poll would blow every deadline below. */
#define POLL_MS     600000
#define DEADLINE_MS 10000

/*
 * The relay's sessions have all been idle for 300 ms: it finished its last
 * claim and is waiting, so a row inserted now can only be found through
 * the notification (or the poll ten minutes away).
 */
static bool relay_idle(void *arg)
{
    return it_pg_int(arg, "SELECT (count(*) > 0 AND bool_and(state = 'idle'"
                          "        AND state_change < clock_timestamp() - interval '300 ms'))::int"
                          " FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                          "   AND backend_type = 'client backend'") == 1;
}

static void wait_published(PGconn *conn, int64_t want, const char *what)
{
    int64_t start = it_now_ms();
    int64_t got = it_pg_wait_published(conn, want, DEADLINE_MS);
    ck_assert_msg(got == want, "%s: %lld of %lld rows published after %d ms (poll interval %d ms)",
                  what, (long long)got, (long long)want, DEADLINE_MS, POLL_MS);
    fprintf(stderr, "wakeup: %s published within %lld ms\n", what,
            (long long)(it_now_ms() - start));
}

START_TEST(test_insert_while_idle_wakes_relay)
{
    const char *subjects[] = {"it.wakeup.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=600000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* Published means the relay is up, listening and past its first scan. */
    it_pg_exec(conn, "SELECT outbox_enqueue('it.wakeup.first', '{\"n\": 0}')");
    wait_published(conn, 1, "the first row");

    /* One row through the helper function. */
    ck_assert_msg(it_wait_until(relay_idle, conn, 10000), "relay never went idle");
    it_pg_exec(conn, "SELECT outbox_enqueue('it.wakeup.one', '{\"n\": 1}')");
    wait_published(conn, 2, "one row");

    /* A multi-row statement: one notification for 200 rows. */
    ck_assert_msg(it_wait_until(relay_idle, conn, 10000), "relay never went idle");
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload)"
                     " SELECT 'it.wakeup.many', convert_to(g::text, 'UTF8')"
                     " FROM generate_series(1, 200) g");
    wait_published(conn, 202, "a 200-row statement");

    /* Several transactions in a row, each with its own notification. */
    ck_assert_msg(it_wait_until(relay_idle, conn, 10000), "relay never went idle");
    for (int i = 0; i < 3; i++)
        it_pg_exec(conn, "BEGIN; INSERT INTO outbox (subject) VALUES ('it.wakeup.tx'), "
                         "('it.wakeup.tx'); COMMIT");
    wait_published(conn, 208, "three transactions");

    ck_assert_int_eq(it_js_stream_msgs(STREAM), 208);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("wakeup");
    TCase *tc = it_tcase(suite, "wakeup", it_start_servers, 120);
    tcase_add_test(tc, test_insert_while_idle_wakes_relay);
    return run_suite(suite);
}
