/* A mark statement that fails: the relay stays up, writes nothing of the lost term, and every
 * row is published once, in key order, when the fault is gone. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_MARK_ERRORS"
#define ROWS   40

static void insert_rows(PGconn *conn)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.marks.' || (g %% 2), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 3 <> 0 THEN 'key-' || (g %% 4) END"
               " FROM generate_series(1, %d) g",
               ROWS);
}

static const char *const relay_env[] = {"OUTBOX_RECONNECT_MAX_MS=200", "OUTBOX_LEADER_RETRY_MS=200",
                                        "OUTBOX_POLL_INTERVAL_MS=200", "OUTBOX_RETRY_BASE_MS=50",
                                        "OUTBOX_RETRY_MAX_MS=200",     NULL};

/*
 * The mark failed, the session was reset and the relay led again (and marked
 * again, which failed again): a second reset. it_wait_until fails the test if
 * the relay ends meanwhile.
 */
static bool marks_failed_twice(void *relay)
{
    return it_metric(((struct it_relay *)relay)->http_port, "outbox_relay_pg_reconnects_total") >=
           2;
}

/* Runs the relay into a mark fault that `remove_sql` then removes; asserts the promises. */
static void run_through_mark_fault(PGconn *conn, const char *remove_sql, const char *extra_env)
{
    const char *env[8];
    size_t n = 0;
    for (; relay_env[n] != NULL; n++)
        env[n] = relay_env[n];
    env[n++] = extra_env;
    env[n] = NULL;
    struct it_relay *relay = it_relay_start_http(env, NULL);
    bool failed = it_wait_until(marks_failed_twice, relay, 30000);
    if (!failed)
        it_relay_dump_log(relay);
    ck_assert_msg(failed, "the marks did not fail (or the relay did not lead again)");
    /* Published (maybe more than once), never recorded while the fault lasts. */
    ck_assert_int_eq(it_pg_published(conn), 0);
    ck_assert_int_gt(it_js_stream_msgs(STREAM), 0);

    it_pg_exec(conn, "%s", remove_sql);
    int64_t got = it_pg_wait_published(conn, ROWS, 30000);
    if (got != ROWS)
        it_relay_dump_log(relay);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the fault was removed",
                  (long long)got, ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"), 0);
    it_assert_each_row_once(conn, STREAM, ROWS);
    it_assert_keys_in_order_once(conn, STREAM);
    /* Still running, and no sanitizer found anything (an ASan build). */
    ck_assert_msg(!it_relay_wait(relay, 0), "the relay exited");
    ck_assert_msg(!it_relay_log_contains(relay, "Sanitizer"), "a sanitizer report");
    it_relay_stop(relay);
}

START_TEST(test_mark_refused_by_constraint)
{
    const char *subjects[] = {"it.marks.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "ALTER TABLE outbox ADD CONSTRAINT no_pub CHECK (status <> 'published')"
                     " NOT VALID");
    insert_rows(conn);
    run_through_mark_fault(conn, "ALTER TABLE outbox DROP CONSTRAINT no_pub", NULL);
    PQfinish(conn);
}
END_TEST

/*
 * The mark outlives the session's statement_timeout: a trigger holds the
 * UPDATE of a row to published longer than the relay's statement deadline
 * (OUTBOX_PG_TIMEOUT_MS, which the relay also sets as its sessions'
 * statement_timeout).
 */
START_TEST(test_mark_cancelled_by_statement_timeout)
{
    const char *subjects[] = {"it.marks.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE FUNCTION slow_mark() RETURNS trigger LANGUAGE plpgsql AS $$"
                     " BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;"
                     "CREATE TRIGGER slow_mark BEFORE UPDATE ON outbox FOR EACH ROW"
                     " WHEN (NEW.status = 'published') EXECUTE FUNCTION slow_mark()");
    insert_rows(conn);
    run_through_mark_fault(conn, "DROP TRIGGER slow_mark ON outbox", "OUTBOX_PG_TIMEOUT_MS=300");
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("mark_errors");
    TCase *tc = it_tcase(suite, "mark_errors", it_start_servers, 120);
    tcase_add_test(tc, test_mark_refused_by_constraint);
    tcase_add_test(tc, test_mark_cancelled_by_statement_timeout);
    return run_suite(suite);
}
