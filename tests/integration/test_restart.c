/* Crash mid-stream: SIGKILL the relay while it drains, restart it; every row is in the stream once.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define STREAM "IT_RESTART"
#define ROWS   20000

/*
 * Some rows are marked: the moment to pull the plug. The relay is then
 * usually also holding published but unmarked rows, which the next run
 * publishes again and JetStream must drop as duplicates.
 */
static bool some_rows_marked(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'") > 0;
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

    int64_t marked = it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'");
    uint64_t in_stream = it_js_stream_msgs(STREAM);
    fprintf(stderr, "restart: killed with %lld rows marked, %llu messages in the stream\n",
            (long long)marked, (unsigned long long)in_stream);
    ck_assert_msg(marked < ROWS, "the relay drained all %d rows before the kill landed", ROWS);
    /* Nothing is marked without its message. */
    ck_assert_int_le(marked, (int64_t)in_stream);

    struct it_relay *second = it_relay_start(NULL, NULL);
    int64_t got = it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'",
                                 ROWS, 120000);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the restart", (long long)got, ROWS);

    /* Re-publishes of rows that were in flight at the kill were deduplicated. */
    ck_assert_int_eq(it_js_stream_msgs(STREAM), ROWS);
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    ck_assert_int_eq(msgs.count, ROWS);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 0);
    PGresult *rows = it_pg_query(conn, "SELECT event_id, stream_seq FROM outbox");
    int missing = 0, wrong_seq = 0;
    for (int i = 0; i < PQntuples(rows); i++) {
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 0));
        if (!m)
            missing++;
        else if (strtoull(PQgetvalue(rows, i, 1), NULL, 10) != m->seq)
            wrong_seq++;
    }
    ck_assert_msg(missing == 0, "%d rows have no message", missing);
    ck_assert_msg(wrong_seq == 0, "%d rows with a stream_seq that is not their message's",
                  wrong_seq);
    PQclear(rows);
    it_msgs_free(&msgs);

    it_relay_signal(second, SIGTERM);
    ck_assert_msg(it_relay_wait(second, 15000), "relay did not stop on SIGTERM");
    ck_assert_int_eq(it_relay_exit_code(second), 0);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("restart");
    TCase *tc = tcase_create("restart");
    tcase_add_checked_fixture(tc, it_start_servers, it_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_sigkill_then_restart_publishes_each_row_once);
    suite_add_tcase(suite, tc);
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
