/* A row publishes only to subjects the relay may write: never a system subject ($JS.API...,
 * _INBOX.), and with OUTBOX_STREAM only subjects that stream captures or OUTBOX_ALLOW_SUBJECTS
 * names. Refused rows go dead with the reason; later rows of their key still go. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

static const struct {
    const char *subject;
    const char *fate; /* "published", or the start of last_error of a dead row */
} rows[] = {
    {"$JS.API.STREAM.PURGE.ORDERS", "invalid subject"},
    {"$SYS.REQ.SERVER.PING", "invalid subject"},
    {"_INBOX.x", "invalid subject"},
    {"audit.x.blocked", "subject not allowed"},
    {"audit.y.ok", "published"},
    {"orders.created", "published"},
};
#define NROWS ((int)(sizeof rows / sizeof rows[0]))

static bool settled(void *arg)
{
    PGconn *conn = arg;
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status IN ('published', 'dead')") ==
           2 * NROWS;
}

START_TEST(test_rows_publish_only_to_allowed_subjects)
{
    const char *orders[] = {"orders.>", NULL};
    const char *audit[] = {"audit.>", NULL};
    it_js_add_stream("ORDERS", orders);
    it_js_add_stream("AUDIT", audit);
    for (int i = 0; i < 2; i++) {
        jsPubAck *pa = NULL;
        ck_assert_int_eq(js_Publish(&pa, it_js(), "orders.before", "x", 1, NULL, NULL), NATS_OK);
        jsPubAck_Destroy(pa);
    }
    PGconn *conn = it_pg_connect();
    /* Each hostile row heads its key; a good row of the key follows it. */
    for (int i = 0; i < NROWS; i++)
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, event_id, payload, ordering_key) VALUES"
                   " ($s$%s$s$, 'row-%d', '{}', 'k%d'), ('orders.after', 'after-%d', 'a', 'k%d')",
                   rows[i].subject, i, i, i, i);

    const char *env[] = {"OUTBOX_STREAM=ORDERS", "OUTBOX_STREAM_SUBJECTS=orders.>",
                         "OUTBOX_ALLOW_SUBJECTS=audit.*.ok,billing.>", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    bool done = it_wait_until(settled, conn, 30000);
    if (!done)
        it_relay_dump_log(relay);
    ck_assert_msg(done, "rows not settled");

    PGresult *res = it_pg_query(conn, "SELECT event_id, status, coalesce(last_error, '')"
                                      " FROM outbox WHERE event_id LIKE 'row-%%' ORDER BY id");
    ck_assert_int_eq(PQntuples(res), NROWS);
    for (int i = 0; i < NROWS; i++) {
        const char *status = PQgetvalue(res, i, 1), *error = PQgetvalue(res, i, 2);
        fprintf(stderr, "subjects: %s: %s %s\n", rows[i].subject, status, error);
        if (strcmp(rows[i].fate, "published") == 0)
            ck_assert_msg(strcmp(status, "published") == 0, "%s: %s (%s)", rows[i].subject, status,
                          error);
        else
            ck_assert_msg(strcmp(status, "dead") == 0 &&
                              strncmp(error, rows[i].fate, strlen(rows[i].fate)) == 0,
                          "%s: %s \"%s\", want dead \"%s...\"", rows[i].subject, status, error,
                          rows[i].fate);
    }
    PQclear(res);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE event_id LIKE 'after-%%'"
                                     " AND status = 'published'"),
                     NROWS);
    /* The purge never ran: the two earlier messages, every after-row and orders.created. */
    ck_assert_int_eq(it_js_stream_msgs("ORDERS"), 2 + NROWS + 1);
    ck_assert_int_eq(it_js_stream_msgs("AUDIT"), 1);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

START_TEST(test_bad_allow_pattern_exits_naming_the_setting)
{
    const char *patterns[] = {"a..b", "a.>.b", "a b", "a,,b", "$JS.API.>", "a.b*"};
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
        char setting[128];
        snprintf(setting, sizeof setting, "OUTBOX_ALLOW_SUBJECTS=%s", patterns[i]);
        const char *env[] = {setting, NULL};
        char *output = NULL;
        int code = it_relay_run(env, NULL, 30000, &output);
        ck_assert_msg(code == 2, "\"%s\": exit code %d, want 2:\n%s", patterns[i], code, output);
        ck_assert_msg(strstr(output, "OUTBOX_ALLOW_SUBJECTS") != NULL, "\"%s\":\n%s", patterns[i],
                      output);
        free(output);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("subject_policy");
    TCase *tc = it_tcase(suite, "subjects", it_start_servers, 120);
    tcase_add_test(tc, test_rows_publish_only_to_allowed_subjects);
    tcase_add_test(tc, test_bad_allow_pattern_exits_naming_the_setting);
    return run_suite(suite);
}
