/* SIGTERM with thousands in flight: exit 0 within the bound, and every acked message is marked. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM        "IT_SHUTDOWN"
#define ROWS          20000
#define SHUTDOWN_MS   5000
#define EXIT_SLACK_MS 5000

/*
 * A tenth of the backlog is in the stream: the relay is in full flow, with
 * up to OUTBOX_MAX_INFLIGHT rows claimed and unacknowledged.
 */
static bool in_full_flow(void *arg)
{
    return it_js_stream_msgs(STREAM) >= ROWS / 10;
}

/* Every message's row is published with that sequence; every published row has its message. */
static void assert_stream_matches_rows(PGconn *conn, int64_t *published_out)
{
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 0);
    PGresult *rows = it_pg_query(conn, "SELECT event_id, status, coalesce(stream_seq, 0)"
                                       " FROM outbox ORDER BY event_id");
    ck_assert_int_eq(PQntuples(rows), ROWS);
    int64_t published = 0;
    int unmarked = 0, marked_without_message = 0, wrong_seq = 0;
    for (int i = 0; i < ROWS; i++) {
        const char *event_id = PQgetvalue(rows, i, 0);
        bool is_published = strcmp(PQgetvalue(rows, i, 1), "published") == 0;
        const struct it_msg *m = it_msgs_find(&msgs, event_id);
        published += is_published;
        if (m && !is_published && ++unmarked <= 5)
            fprintf(stderr, "shutdown: %s is in the stream at %llu but its row is %s\n", event_id,
                    (unsigned long long)m->seq, PQgetvalue(rows, i, 1));
        if (!m && is_published)
            marked_without_message++;
        if (m && is_published && strtoull(PQgetvalue(rows, i, 2), NULL, 10) != m->seq)
            wrong_seq++;
    }
    ck_assert_msg(unmarked == 0, "%d messages in the stream whose rows are not published",
                  unmarked);
    ck_assert_msg(marked_without_message == 0, "%d rows published without a message",
                  marked_without_message);
    ck_assert_msg(wrong_seq == 0, "%d rows with a stream_seq that is not their message's",
                  wrong_seq);
    ck_assert_int_eq(published, (int64_t)msgs.count);
    *published_out = published;
    PQclear(rows);
    it_msgs_free(&msgs);
}

START_TEST(test_sigterm_drains_inflight_and_exits_zero)
{
    const char *subjects[] = {"it.shutdown.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload)"
               " SELECT 'it.shutdown.' || (g %% 3), convert_to(repeat('x', g %% 200), 'UTF8')"
               " FROM generate_series(1, %d) g",
               ROWS);

    const char *env[] = {"OUTBOX_MAX_INFLIGHT=5000", "OUTBOX_BATCH_SIZE=1000",
                         "OUTBOX_SHUTDOWN_TIMEOUT_MS=5000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_msg(it_wait_until(in_full_flow, NULL, 60000),
                  "not even %d rows reached the stream within 60 s", ROWS / 10);
    int64_t start = it_now_ms();
    it_relay_signal(relay, SIGTERM);
    bool exited = it_relay_wait(relay, SHUTDOWN_MS + EXIT_SLACK_MS);
    int64_t took = it_now_ms() - start;
    ck_assert_msg(exited, "relay still running %d ms after SIGTERM (bound %d ms)",
                  SHUTDOWN_MS + EXIT_SLACK_MS, SHUTDOWN_MS);
    ck_assert_int_eq(it_relay_exit_code(relay), 0);

    int64_t published;
    assert_stream_matches_rows(conn, &published);
    fprintf(stderr, "shutdown: exited after %lld ms with %lld of %d rows published\n",
            (long long)took, (long long)published, ROWS);
    /* SIGTERM stops claiming: the backlog is far from drained. */
    ck_assert_msg(published < ROWS, "all %d rows published: SIGTERM did not stop claiming", ROWS);

    /* What was left is published by the next run, once. */
    struct it_relay *next = it_relay_start(env, NULL);
    int64_t got = it_pg_wait_published(conn, ROWS, 120000);
    ck_assert_msg(got == ROWS, "%lld of %d rows published by the next run", (long long)got, ROWS);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), ROWS);
    assert_stream_matches_rows(conn, &published);
    it_relay_signal(next, SIGTERM);
    ck_assert_msg(it_relay_wait(next, SHUTDOWN_MS + EXIT_SLACK_MS), "relay did not stop");
    ck_assert_int_eq(it_relay_exit_code(next), 0);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("shutdown");
    TCase *tc = it_tcase(suite, "shutdown", it_start_servers, 300);
    tcase_add_test(tc, test_sigterm_drains_inflight_and_exits_zero);
    return run_suite(suite);
}
