/* Crash mid-stream: SIGKILL the relay while it drains, restart it; every row is in the stream once.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_RESTART"
#define ROWS   20000

/*
 * Some rows are marked: the moment to pull the plug. The relay is then
 * usually also holding published but unmarked rows, which the next run
 * publishes again and JetStream must drop as duplicates.
 */
static bool some_rows_marked(void *conn)
{
    return it_pg_published(conn) > 0;
}

START_TEST(test_sigkill_then_restart_publishes_each_row_once)
{
    const char *subjects[] = {"it.restart.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key)"
                     " SELECT 'it.restart.' || (g %% 4), convert_to(g::text, 'UTF8'),"
                     "        CASE WHEN g %% 3 = 0 THEN 'key-' || (g %% 7) END"
                     " FROM generate_series(1, 20000) g");

    struct it_relay *first = it_relay_start(NULL, NULL);
    ck_assert_msg(it_wait_until(some_rows_marked, conn, 60000), "no row was published within 60 s");
    it_relay_signal(first, SIGKILL);
    ck_assert(it_relay_wait(first, 10000));
    ck_assert_int_eq(it_relay_exit_code(first), -SIGKILL);

    int64_t marked = it_pg_published(conn);
    uint64_t in_stream = it_js_stream_msgs(STREAM);
    fprintf(stderr, "restart: killed with %lld rows marked, %llu messages in the stream\n",
            (long long)marked, (unsigned long long)in_stream);
    ck_assert_msg(marked < ROWS, "the relay drained all %d rows before the kill landed", ROWS);
    /* Nothing is marked without its message. */
    ck_assert_int_le(marked, (int64_t)in_stream);

    struct it_relay *second = it_relay_start(NULL, NULL);
    int64_t got = it_pg_wait_published(conn, ROWS, 120000);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the restart", (long long)got, ROWS);

    /* Re-publishes of rows that were in flight at the kill were deduplicated. */
    it_assert_each_row_once(conn, STREAM, ROWS);

    it_relay_stop(second);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("restart");
    TCase *tc = it_tcase(suite, "restart", it_start_servers, 300);
    tcase_add_test(tc, test_sigkill_then_restart_publishes_each_row_once);
    return run_suite(suite);
}
