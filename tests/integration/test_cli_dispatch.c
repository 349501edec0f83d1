/*
 * One command surface: `check`, `probe` and `requeue` are commands; the old
 * flags (--check, --probe, --requeue-dead) are aliases that give the same
 * result. check opens one NATS connection.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

/* nats-server's monitoring port (connz), for the connection count. */
static int monitor_port;

static void start_servers_with_monitoring(void)
{
    it_setup();
    monitor_port = it_free_port();
    char conf[128];
    snprintf(conf, sizeof conf, "http: \"127.0.0.1:%d\"\n", monitor_port);
    it_nats_set_config(conf);
    it_pg_start();
    it_nats_start();
}

/* A number field of a connz answer (state=open or closed). */
static json_int_t connz(const char *state, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/connz?state=%s", state);
    struct it_http r;
    ck_assert_int_eq(it_http_get(monitor_port, path, 5000, &r), 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    json_int_t n = json_integer_value(json_object_get(doc, field));
    json_decref(doc);
    it_http_free(&r);
    return n;
}

struct open_count {
    json_int_t want;
};

static bool open_connections_are(void *arg)
{
    const struct open_count *c = arg;
    return connz("open", "num_connections") == c->want;
}

START_TEST(test_check_connects_to_nats_once)
{
    /* The harness's own JetStream reader is open throughout; count what check adds. */
    const char *subjects[] = {"it.dispatch.>", NULL};
    it_js_add_stream("IT_DISPATCH", subjects);
    struct open_count open = {connz("open", "num_connections")};
    json_int_t closed_before = connz("closed", "total");
    const char *env[] = {"OUTBOX_STREAM=IT_DISPATCH", "OUTBOX_STREAM_SUBJECTS=it.dispatch.>", NULL};
    const char *args[] = {"check", NULL};
    char *out = NULL;
    int rc = it_relay_run(env, args, 30000, &out);
    ck_assert_msg(rc == 0, "check exited %d: %s", rc, out);
    free(out);
    /* The process is gone: once the server has seen its sockets close, they are all in closed. */
    ck_assert(it_wait_until(open_connections_are, &open, 10000));
    ck_assert_int_eq(connz("closed", "total") - closed_before, 1);
}
END_TEST

START_TEST(test_check_alias_gives_the_same_result)
{
    const char *subjects[] = {"it.dispatch.>", NULL};
    it_js_add_stream("IT_DISPATCH", subjects);
    const char *env[] = {"OUTBOX_STREAM=IT_DISPATCH", "OUTBOX_STREAM_SUBJECTS=it.dispatch.>", NULL};
    const char *command[] = {"check", NULL};
    const char *alias[] = {"--check", NULL};
    const char *alias_after_a_setting[] = {"--batch-size=10", "--check", NULL};
    char *by_command = NULL, *by_alias = NULL, *by_late_alias = NULL;
    ck_assert_int_eq(it_relay_run(env, command, 30000, &by_command), 0);
    ck_assert_int_eq(it_relay_run(env, alias, 30000, &by_alias), 0);
    ck_assert_int_eq(it_relay_run(env, alias_after_a_setting, 30000, &by_late_alias), 0);
    ck_assert_str_eq(by_alias, by_command);
    ck_assert_str_eq(by_late_alias, by_command);
    free(by_command);
    free(by_alias);
    free(by_late_alias);

    /* A finding: both exit 1. */
    const char *missing[] = {"OUTBOX_STREAM=IT_NO_SUCH_STREAM",
                             "OUTBOX_STREAM_SUBJECTS=it.nosuch.>", NULL};
    ck_assert_int_eq(it_relay_run(missing, command, 30000, NULL), 1);
    ck_assert_int_eq(it_relay_run(missing, alias, 30000, NULL), 1);
}
END_TEST

START_TEST(test_probe_alias_gives_the_same_result)
{
    struct it_relay *relay = it_relay_start_http(NULL, NULL);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 15000));
    char addr[64];
    snprintf(addr, sizeof addr, "OUTBOX_HTTP_ADDR=127.0.0.1:%d", relay->http_port);
    const char *env[] = {addr, NULL};
    static const struct {
        const char *path; /* NULL: the default, /healthz */
        int rc;
    } cases[] = {{NULL, 0}, {"/readyz", 0}, {"/nope", 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *command[] = {"probe", cases[i].path, NULL};
        const char *alias[] = {"--probe", cases[i].path, NULL};
        ck_assert_int_eq(it_relay_run(env, command, 10000, NULL), cases[i].rc);
        ck_assert_int_eq(it_relay_run(env, alias, 10000, NULL), cases[i].rc);
    }
    it_relay_stop(relay);
    const char *command[] = {"probe", NULL};
    const char *alias[] = {"--probe", NULL};
    ck_assert_int_eq(it_relay_run(env, command, 10000, NULL), 1); /* refused */
    ck_assert_int_eq(it_relay_run(env, alias, 10000, NULL), 1);
    ck_assert_int_eq(it_relay_run(NULL, command, 10000, NULL), 2); /* nothing to probe */
    ck_assert_int_eq(it_relay_run(NULL, alias, 10000, NULL), 2);
}
END_TEST

/* Rows 1, 2 die of a transient reason, row 3 of a permanent one (it would die again at once). */
static void insert_dead_rows(PGconn *conn)
{
    it_pg_exec(conn, "TRUNCATE outbox RESTART IDENTITY");
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, attempts, last_error) VALUES"
                     " ('it.dispatch.a', 'dead', 10, 'no PubAck within 5000 ms'),"
                     " ('it.dispatch.b', 'dead', 10, 'no stream is bound to the subject'),"
                     " ('it.dispatch.*', 'dead', 1, 'invalid subject \"it.dispatch.*\"')");
}

static char *row_states(PGconn *conn)
{
    PGresult *res =
        it_pg_query(conn, "SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM outbox");
    char *states = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return states;
}

START_TEST(test_requeue_dead_alias_is_requeue_all)
{
    PGconn *conn = it_pg_connect();
    insert_dead_rows(conn);
    const char *command[] = {"requeue", "--all", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, command, NULL, NULL), 0);
    char *by_command = row_states(conn);
    ck_assert_str_eq(by_command, "1:pending,2:pending,3:dead");

    insert_dead_rows(conn);
    const char *alias[] = {"--requeue-dead", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, alias, NULL, NULL), 0);
    char *by_alias = row_states(conn);
    ck_assert_str_eq(by_alias, by_command);
    free(by_command);
    free(by_alias);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cli_dispatch");
    TCase *tc = it_tcase(suite, "cli_dispatch", it_start_servers, 120);
    tcase_add_test(tc, test_check_alias_gives_the_same_result);
    tcase_add_test(tc, test_probe_alias_gives_the_same_result);
    tcase_add_test(tc, test_requeue_dead_alias_is_requeue_all);
    TCase *monitored = it_tcase(suite, "check_connections", start_servers_with_monitoring, 60);
    tcase_add_test(monitored, test_check_connects_to_nats_once);
    return run_suite(suite);
}
