/*
 * Published rows are marked together (OUTBOX_MARK_GATHER_MS): fewer marks
 * than rows in a steady flow, and never a wait for anyone who needs a mark
 * now — a key held behind a retried row, claims out of room, a drain.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "prom_text.h"
#include "run_suite.h"

#define STREAM "IT_GATHER"
#define ROWS   60
/* Longer than any wait below: a row that waited for the gathering time would fail the test. */
#define GATHER_LONG "OUTBOX_MARK_GATHER_MS=60000"

static void add_stream(const char *subject)
{
    const char *subjects[] = {subject, NULL};
    it_js_add_stream(STREAM, subjects);
}

static struct it_relay *start_relay(const char *const *env)
{
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 10000));
    return relay;
}

static double mark_statements(int port)
{
    struct it_scrape s = {0};
    it_scrape_metrics(port, &s);
    double v = it_scraped(&s, "outbox_relay_pg_statements_total", "kind", "mark");
    free(s.text);
    return v;
}

static void insert_one_by_one(PGconn *conn, const char *subject, const char *key, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert(it_pg_insert_row(conn, subject, key, "row", NULL, 0));
}

struct stream_wait {
    uint64_t want;
};

static bool stream_holds(void *arg)
{
    struct stream_wait *w = arg;
    return it_js_stream_msgs(STREAM) >= w->want;
}

/* Consumers have `want` messages (whether or not their marks are written yet). */
static void wait_stream(uint64_t want)
{
    struct stream_wait w = {want};
    ck_assert_msg(it_wait_until(stream_holds, &w, 20000), "the stream holds %llu of %llu",
                  (unsigned long long)it_js_stream_msgs(STREAM), (unsigned long long)want);
}

static int64_t published(PGconn *conn, int64_t want)
{
    return it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'", want,
                          20000);
}

/* Rows committed one at a time, each acknowledged on its own: one mark for many of them. */
START_TEST(test_steady_rows_marked_together)
{
    add_stream("it.gather.>");
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_MARK_GATHER_MS=1000", NULL};
    struct it_relay *relay = start_relay(env);
    insert_one_by_one(conn, "it.gather.row", NULL, ROWS);
    ck_assert_int_eq(published(conn, ROWS), ROWS);
    double marks = mark_statements(relay->http_port);
    fprintf(stderr, "%d rows, one INSERT each: %g mark statements\n", ROWS, marks);
    ck_assert_msg(marks >= 1 && marks <= ROWS / 6, "%g marks for %d rows", marks, ROWS);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * A retried row holds its key's later rows in the table until its published
 * mark commits: that mark does not gather, and the later row is published
 * at once (its own mark may gather).
 */
START_TEST(test_retried_row_of_a_key_marked_at_once)
{
    add_stream("it.gather.flow.>");
    PGconn *conn = it_pg_connect();
    const char *env[] = {GATHER_LONG, "OUTBOX_RETRY_BASE_MS=200", "OUTBOX_RETRY_MAX_MS=200", NULL};
    struct it_relay *relay = start_relay(env);
    /* No stream takes the head's subject yet: it fails and is retried. */
    ck_assert(it_pg_insert_row(conn, "it.gather.late.k", "K", "K-1", NULL, 0));
    ck_assert(it_pg_insert_row(conn, "it.gather.flow.k", "K", "K-2", NULL, 0));
    ck_assert_int_eq(
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'failed'", 1, 20000), 1);
    const char *both[] = {"it.gather.flow.>", "it.gather.late.>", NULL};
    it_js_update_stream_subjects(STREAM, both);
    wait_stream(2);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* Held rows that leave no room for a claim are marked now, not after the gathering time. */
START_TEST(test_marked_at_once_when_claims_need_room)
{
    add_stream("it.gather.>");
    PGconn *conn = it_pg_connect();
    const char *env[] = {GATHER_LONG, "OUTBOX_MAX_INFLIGHT=60", "OUTBOX_BATCH_SIZE=50", NULL};
    struct it_relay *relay = start_relay(env);
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.gather.bulk', 'r'"
                     " FROM generate_series(1, 300)");
    wait_stream(300);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* A drain records every acknowledged row without waiting for the gathering time. */
START_TEST(test_drain_marks_at_once)
{
    add_stream("it.gather.>");
    PGconn *conn = it_pg_connect();
    const char *env[] = {GATHER_LONG, NULL};
    struct it_relay *relay = start_relay(env);
    insert_one_by_one(conn, "it.gather.row", NULL, 5);
    wait_stream(5);
    it_relay_signal(relay, SIGTERM);
    ck_assert_msg(it_relay_wait(relay, 20000), "the drain waited for the gathering time");
    ck_assert_int_eq(it_relay_exit_code(relay), 0);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'"), 5);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("mark_gather");
    TCase *tc = it_tcase(suite, "mark_gather", it_start_servers, 120);
    tcase_add_test(tc, test_steady_rows_marked_together);
    tcase_add_test(tc, test_retried_row_of_a_key_marked_at_once);
    tcase_add_test(tc, test_marked_at_once_when_claims_need_room);
    tcase_add_test(tc, test_drain_marks_at_once);
    return run_suite(suite);
}
