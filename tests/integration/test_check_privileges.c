/* --check verifies every privilege the settings in force need; retention without one says so. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/retention.h"
#include "run_suite.h"

#define DEADLINE_MS 30000

static const char *const check_args[] = {"--check", NULL};

/* The FAIL line of the output that holds every needle, or NULL (malloc'd). */
static char *fail_line(const char *output, const char *needle1, const char *needle2)
{
    for (const char *line = output; line != NULL && *line;) {
        const char *end = strchr(line, '\n');
        char *copy = strndup(line, end ? (size_t)(end - line) : strlen(line));
        if (!strncmp(copy, "FAIL ", 5) && strstr(copy, needle1) && strstr(copy, needle2))
            return copy;
        free(copy);
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/* OUTBOX_PG_URL for a login role of the test database. */
static void role_url(PGconn *conn, const char *role, char *url, size_t len)
{
    PGresult *db = it_pg_query(conn, "SELECT current_database()");
    snprintf(url, len, "OUTBOX_PG_URL=host=127.0.0.1 port=%d dbname=%s user=%s", it_pg_port(),
             PQgetvalue(db, 0, 0), role);
    PQclear(db);
}

/* Reads and marks rows, but may not delete them. */
static void create_role_without_delete(PGconn *conn)
{
    it_pg_exec(conn, "CREATE ROLE relay_nodelete LOGIN");
    it_pg_exec(conn, "GRANT SELECT, UPDATE (status, attempts, next_attempt_at, last_error,"
                     " published_at, stream_seq) ON outbox TO relay_nodelete");
}

START_TEST(test_check_names_delete_for_retention)
{
    PGconn *conn = it_pg_connect();
    create_role_without_delete(conn);
    char url[256];
    role_url(conn, "relay_nodelete", url, sizeof(url));

    /* Retention is on by default: it deletes. */
    const char *env[] = {url, NULL};
    char *out = NULL;
    int code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code != 0, "--check passed for a role that may not DELETE:\n%s", out);
    char *line = fail_line(out, "DELETE", "OUTBOX_RETENTION");
    ck_assert_msg(line != NULL, "no FAIL line naming DELETE and OUTBOX_RETENTION:\n%s", out);
    free(line);
    free(out);

    /* Without retention, the same role has all the relay needs. */
    const char *no_retention[] = {url, "OUTBOX_RETENTION=0", NULL};
    code = it_relay_run(no_retention, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code == 0, "--check exited %d with retention off:\n%s", code, out);
    free(out);

    /* Without SELECT, nothing works: said as such. */
    it_pg_exec(conn, "REVOKE SELECT ON outbox FROM relay_nodelete");
    code = it_relay_run(no_retention, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code != 0, "--check passed for a role that may not SELECT:\n%s", out);
    line = fail_line(out, "privileges", "SELECT");
    ck_assert_msg(line != NULL, "no FAIL line naming SELECT:\n%s", out);
    free(line);
    free(out);
    PQfinish(conn);
}
END_TEST

START_TEST(test_example_role_passes_check)
{
    /* sql/005_roles_example.sql is applied with the schema (see the harness). */
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE ROLE relay_login LOGIN IN ROLE outbox_relay");
    char url[256];
    role_url(conn, "relay_login", url, sizeof(url));
    const char *env[] = {url, NULL};
    char *out = NULL;
    int code = it_relay_run(env, check_args, DEADLINE_MS, &out);
    ck_assert_msg(code == 0, "--check exited %d for the example role:\n%s", code, out);
    free(out);
    PQfinish(conn);
}
END_TEST

struct failing {
    struct it_relay *relay;
};

static bool retention_failed_rounds(void *arg)
{
    struct failing *f = arg;
    return it_metric(f->relay->http_port, "outbox_relay_retention_failures_total") >= 5;
}

START_TEST(test_failing_retention_is_reported_once)
{
    const char *subjects[] = {"it.priv.>", NULL};
    it_js_add_stream("IT_PRIV", subjects);
    PGconn *conn = it_pg_connect();
    create_role_without_delete(conn);
    char url[256];
    role_url(conn, "relay_nodelete", url, sizeof(url));
    const char *env[] = {url, "OUTBOX_RETENTION_INTERVAL_MS=100", "OUTBOX_METRICS_INTERVAL_MS=100",
                         NULL};
    struct failing f = {it_relay_start_http(env, NULL)};
    ck_assert_msg(it_wait_until(retention_failed_rounds, &f, 30000),
                  "no retention failures counted");
    ck_assert_int_eq(it_metric(f.relay->http_port, "outbox_relay_retention_failing"), 1);
    /* One report for a failure that lasts, not one per round. */
    char *log = it_relay_log(f.relay);
    int reports = 0;
    for (const char *p = log; (p = strstr(p, RETENTION_FAILING_MSG)) != NULL; p++)
        reports++;
    free(log);
    ck_assert_int_eq(reports, 1);
    /* The relay goes on relaying meanwhile. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.priv.a', 'x')");
    ck_assert_int_eq(it_pg_wait_published(conn, 1, 30000), 1);

    /* Granted: the next round succeeds and the gauge clears. */
    it_pg_exec(conn, "GRANT DELETE ON outbox TO relay_nodelete");
    ck_assert_msg(it_wait_metric(f.relay->http_port, "outbox_relay_retention_failing", 0, 30000),
                  "retention still failing after the grant");
    it_relay_stop(f.relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("check_privileges");
    TCase *tc = it_tcase(suite, "check_privileges", it_start_servers, 120);
    tcase_add_test(tc, test_check_names_delete_for_retention);
    tcase_add_test(tc, test_example_role_passes_check);
    tcase_add_test(tc, test_failing_retention_is_reported_once);
    return run_suite(suite);
}
