/* Late commit: a row whose transaction commits after higher ids were published is still published.
 */
#include <check.h>
#include <stdlib.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_LATE"

START_TEST(test_late_commit_is_not_skipped)
{
    const char *subjects[] = {"it.late.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *a = it_pg_connect(), *b = it_pg_connect(), *c = it_pg_connect(), *q = it_pg_connect();
    /*
     * The poll is ten minutes away: the late rows must be found by the scan
     * their own commit's notification triggers, which therefore cannot be
     * "ids above the last one published".
     */
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=600000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* A takes the lower ids and stays open; C takes some and will roll back. */
    it_pg_exec(a, "BEGIN");
    it_pg_exec(a, "INSERT INTO outbox (subject, event_id)"
                  " SELECT 'it.late.a', 'late-a-' || g FROM generate_series(1, 3) g");
    it_pg_exec(c, "BEGIN");
    it_pg_exec(c, "INSERT INTO outbox (subject, event_id) VALUES ('it.late.c', 'late-c-1')");
    /* B commits rows with higher ids. */
    it_pg_exec(b, "INSERT INTO outbox (subject, event_id)"
                  " SELECT 'it.late.b', 'late-b-' || g FROM generate_series(1, 50) g");
    ck_assert_int_gt(it_pg_int(q, "SELECT min(id) FROM outbox WHERE subject = 'it.late.b'"),
                     it_pg_int(a, "SELECT max(id) FROM outbox WHERE subject = 'it.late.a'"));

    int64_t got = it_pg_wait_int(
        q, "SELECT count(*) FROM outbox WHERE status = 'published' AND subject = 'it.late.b'", 50,
        10000);
    ck_assert_msg(got == 50, "B: %lld of 50 rows published", (long long)got);

    it_pg_exec(c, "ROLLBACK");
    it_pg_exec(a, "COMMIT");
    got = it_pg_wait_int(
        q, "SELECT count(*) FROM outbox WHERE status = 'published' AND subject = 'it.late.a'", 3,
        10000);
    ck_assert_msg(got == 3, "A (committed late): %lld of 3 rows published", (long long)got);

    ck_assert_int_eq(it_pg_int(q, "SELECT count(*) FROM outbox"), 53);
    ck_assert_int_eq(it_pg_int(q, "SELECT count(*) FROM outbox WHERE status <> 'published'"), 0);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, 53, &msgs);
    ck_assert_ptr_nonnull(it_msgs_find(&msgs, "late-a-1"));
    ck_assert_ptr_nonnull(it_msgs_find(&msgs, "late-a-3"));
    ck_assert_ptr_null(it_msgs_find(&msgs, "late-c-1"));
    it_msgs_free(&msgs);

    it_relay_stop(relay);
    PQfinish(a);
    PQfinish(b);
    PQfinish(c);
    PQfinish(q);
}
END_TEST

/*
 * Poll-only: with the NOTIFY trigger disabled (it serializes commits; see
 * docs/guarantees.md) and a short poll, new rows and late commits are still published.
 */
START_TEST(test_poll_only_without_trigger)
{
    const char *subjects[] = {"it.late.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *a = it_pg_connect(), *q = it_pg_connect();
    it_pg_exec(q, "ALTER TABLE outbox DISABLE TRIGGER outbox_notify_insert");
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=50", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    it_pg_exec(a, "BEGIN");
    it_pg_exec(a, "INSERT INTO outbox (subject, event_id) VALUES ('it.late.a', 'poll-a')");
    it_pg_exec(q, "INSERT INTO outbox (subject, event_id)"
                  " SELECT 'it.late.b', 'poll-b-' || g FROM generate_series(1, 20) g");
    int64_t got = it_pg_wait_int(
        q, "SELECT count(*) FROM outbox WHERE status = 'published' AND subject = 'it.late.b'", 20,
        10000);
    ck_assert_msg(got == 20, "poll-only: %lld of 20 rows published", (long long)got);
    it_pg_exec(a, "COMMIT");
    got = it_pg_wait_published(q, 21, 10000);
    ck_assert_msg(got == 21, "poll-only late commit: %lld of 21 rows published", (long long)got);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), 21);

    it_relay_stop(relay);
    PQfinish(a);
    PQfinish(q);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("late_commit");
    TCase *tc = it_tcase(suite, "late_commit", it_start_servers, 120);
    tcase_add_test(tc, test_late_commit_is_not_skipped);
    tcase_add_test(tc, test_poll_only_without_trigger);
    return run_suite(suite);
}
