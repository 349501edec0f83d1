/* A relay started before its outbox table exists waits, not ready, and relays once it appears. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM  "IT_TABLE_WAIT"
#define WAITING "\"msg\":\"" LOG_MSG_TABLE_WAITING "\""

/* The database exists, the migrations (sql/) have not run: the application's job, later. */
static void setup_unmigrated(void)
{
    it_pg_set_migrations(false);
    it_start_servers();
}

struct recheck {
    PGconn *conn;
    double first; /* the relay session's first query_start seen, epoch seconds */
};

/* The relay's session started a query at least a second after the first one seen. */
static bool rechecked(void *arg)
{
    struct recheck *w = arg;
    PGresult *res = it_pg_query(w->conn, "SELECT extract(epoch FROM query_start)"
                                         " FROM pg_stat_activity"
                                         " WHERE application_name = 'outbox-relay'"
                                         "   AND query_start IS NOT NULL");
    double at = PQntuples(res) == 1 ? strtod(PQgetvalue(res, 0, 0), NULL) : 0;
    PQclear(res);
    if (at == 0)
        return false;
    if (w->first == 0)
        w->first = at;
    return at >= w->first + 1.0;
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

START_TEST(test_relay_waits_for_its_table)
{
    const char *subjects[] = {"it.tablewait.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM pg_class WHERE relname = 'outbox'"), 0);

    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=200", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert_msg(it_relay_wait_log(relay, WAITING, 1, 15000), "no warning about the table");

    /* It keeps checking (every 200 ms here) and stays up, warning once, not ready. */
    struct recheck w = {.conn = conn};
    ck_assert_msg(it_wait_until(rechecked, &w, 10000), "the relay does not re-check the table");
    char *log = it_relay_log(relay);
    ck_assert_msg(count_of(log, WAITING) == 1, "the warning is not rate-limited:\n%s", log);
    const char *line = strstr(log, WAITING);
    ck_assert_msg(strstr(line, "\"table\":\"outbox\"") != NULL &&
                      strstr(line, "outbox table outbox does not exist") != NULL,
                  "the warning does not name the table:\n%s", log);
    ck_assert_msg(strstr(log, "\"level\":\"error\"") == NULL, "an error was logged:\n%s", log);
    free(log);
    struct it_http r;
    int status = it_http_get(relay->http_port, "/readyz", 5000, &r);
    fprintf(stderr, "table wait: /readyz %d \"%s\"\n", status, r.body);
    bool names_table = r.body != NULL && strstr(r.body, "outbox table outbox does not exist");
    it_http_free(&r);
    ck_assert_int_eq(status, 503);
    ck_assert_msg(names_table, "/readyz does not say the table is missing");
    ck_assert_int_eq(it_http_status(relay->http_port, "/healthz"), 200);

    /* The application migrates and writes: the relay picks the table up and relays. */
    it_pg_apply_migrations();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.tablewait.a', 'first')");
    ck_assert_int_eq(it_pg_wait_published(conn, 1, 15000), 1);
    it_assert_each_row_once(conn, STREAM, 1);
    ck_assert_int_eq(it_http_status(relay->http_port, "/readyz"), 200);
    ck_assert(it_relay_logged(relay, LOG_MSG_TABLE_FOUND));

    /* A clean stop is no lost connection. */
    it_relay_stop(relay);
    ck_assert_msg(!it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST),
                  "a clean stop logged a lost connection");
    PQfinish(conn);
}
END_TEST

/* SIGTERM while waiting: a clean stop, exit 0, no lost connection. */
START_TEST(test_stop_while_waiting)
{
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert_msg(it_relay_wait_log(relay, WAITING, 1, 15000), "no warning about the table");
    it_relay_stop(relay);
    ck_assert(!it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST));
}
END_TEST

/* --check stays strict: one line naming the missing table, a non-zero exit. */
START_TEST(test_check_names_missing_table)
{
    const char *args[] = {"--check", NULL};
    char *output = NULL;
    int code = it_relay_run(NULL, args, 30000, &output);
    ck_assert_msg(code != 0, "--check passed without the table:\n%s", output);
    ck_assert_msg(strstr(output, "FAIL table") != NULL && strstr(output, "outbox") != NULL,
                  "--check does not name the table:\n%s", output);
    free(output);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("table_wait");
    TCase *tc = it_tcase(suite, "table_wait", setup_unmigrated, 120);
    tcase_add_test(tc, test_relay_waits_for_its_table);
    tcase_add_test(tc, test_stop_while_waiting);
    tcase_add_test(tc, test_check_names_missing_table);
    return run_suite(suite);
}
