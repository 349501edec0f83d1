/* Crash between PubAck and mark: the next relay's re-publish is deduplicated; each row once. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_CRASH_DEDUP"
#define ROWS   3000

struct frozen {
    PGconn *conn;
    int64_t marked;
    uint64_t in_stream;
};

/*
 * The relay's session waits on the test's row lock (its mark UPDATE is
 * stuck), and the stream already holds messages whose rows are unmarked:
 * acked, not recorded.
 */
static bool stuck_between_ack_and_mark(void *arg)
{
    struct frozen *f = arg;
    if (it_pg_int(f->conn, "SELECT count(*) FROM pg_stat_activity"
                           " WHERE application_name = 'outbox-relay' AND wait_event_type = 'Lock'"
                           "   AND query LIKE '/* outbox-relay %% */ UPDATE%%'") != 1)
        return false;
    f->marked = it_pg_int(f->conn, "SELECT count(*) FROM outbox WHERE status = 'published'");
    f->in_stream = it_js_stream_msgs(STREAM);
    return f->in_stream > (uint64_t)f->marked;
}

START_TEST(test_sigkill_between_ack_and_mark_dedups)
{
    const char *subjects[] = {"it.dedup.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.dedup.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 5 = 0 THEN 'key-' || (g %% 10) END"
               " FROM generate_series(1, %d) g",
               ROWS);
    /* The first row locked: the mark that records its PubAck waits, and all behind it. */
    PGconn *blocker = it_pg_connect();
    it_pg_exec(blocker, "BEGIN; SELECT id FROM outbox WHERE id = 1 FOR UPDATE");

    struct it_relay *first = it_relay_start(NULL, NULL);
    struct frozen f = {.conn = conn};
    ck_assert_msg(it_wait_until(stuck_between_ack_and_mark, &f, 30000),
                  "the relay never had acked rows waiting for their mark");
    it_relay_signal(first, SIGKILL);
    ck_assert(it_relay_wait(first, 10000));
    /* Its session would still commit the waiting UPDATE once the lock goes: end it first. */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FILTER (WHERE t) FROM"
                                     " (SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity"
                                     "  WHERE application_name = 'outbox-relay') s"),
                     1);
    it_pg_exec(blocker, "ROLLBACK");
    PQfinish(blocker);

    /* Which rows have a message but no mark: the crash window. */
    struct it_msgs before;
    it_js_read_stream(STREAM, &before);
    int64_t marked = it_pg_published(conn);
    PGresult *unmarked = it_pg_query(conn, "SELECT event_id FROM outbox WHERE status = 'pending'");
    int window = 0;
    for (int i = 0; i < PQntuples(unmarked); i++)
        window += it_msgs_find(&before, PQgetvalue(unmarked, i, 0)) != NULL;
    PQclear(unmarked);
    fprintf(stderr,
            "crash dedup: killed with %llu messages in the stream, %lld rows marked, %d rows "
            "acked but unmarked\n",
            (unsigned long long)before.count, (long long)marked, window);
    ck_assert_int_eq((int64_t)before.count, marked + window);
    ck_assert_msg(window > 0, "no row was acked and unmarked at the kill");

    struct it_relay *second = it_relay_start(NULL, NULL);
    int64_t got = it_pg_wait_published(conn, ROWS, 60000);
    if (got != ROWS)
        it_relay_dump_log(second);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the restart", (long long)got, ROWS);

    /* One message per row: the re-publishes were acked as duplicates of the first messages. */
    struct it_msgs after;
    it_js_read_stream_once(STREAM, ROWS, &after);
    PGresult *rows = it_pg_query(conn, "SELECT event_id, stream_seq FROM outbox");
    int moved = 0, missing = 0;
    for (int i = 0; i < PQntuples(rows); i++) {
        const char *event_id = PQgetvalue(rows, i, 0);
        uint64_t seq = strtoull(PQgetvalue(rows, i, 1), NULL, 10);
        const struct it_msg *m = it_msgs_find(&after, event_id);
        const struct it_msg *first_msg = it_msgs_find(&before, event_id);
        if (m == NULL || m->seq != seq)
            missing++;
        /* A duplicate PubAck carries the sequence of the message JetStream kept. */
        else if (first_msg != NULL && first_msg->seq != seq)
            moved++;
    }
    ck_assert_msg(missing == 0, "%d rows without their message at stream_seq", missing);
    ck_assert_msg(moved == 0, "%d rows acked before the crash got a new message", moved);
    PQclear(rows);
    it_msgs_free(&before);
    it_msgs_free(&after);

    it_relay_stop(second);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("crash_dedup");
    TCase *tc = it_tcase(suite, "crash_dedup", it_start_servers, 120);
    tcase_add_test(tc, test_sigkill_between_ack_and_mark_dedups);
    return run_suite(suite);
}
