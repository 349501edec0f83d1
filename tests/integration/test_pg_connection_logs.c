/* What the log says about the PostgreSQL connection: a refused first connect, a clean stop. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

/* Nothing listens there: the first connect is refused. It was never "lost". */
START_TEST(test_refused_first_connection_is_not_lost)
{
    char pg[128];
    snprintf(pg, sizeof pg, "OUTBOX_PG_URL=postgresql://postgres@127.0.0.1:%d/x", it_free_port());
    const char *env[] = {pg, "OUTBOX_RECONNECT_MAX_MS=200", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_msg(it_relay_wait_logged(relay, LOG_MSG_PG_CONNECT_FAILED, 2, 15000),
                  "no \"" LOG_MSG_PG_CONNECT_FAILED "\" for two refused connects");
    it_relay_stop(relay);
    if (it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST))
        it_relay_dump_log(relay);
    ck_assert_msg(!it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST),
                  "a refused connect called lost (log above)");
}
END_TEST

/* A connected relay stopped by SIGTERM: no warning about its own closing. */
START_TEST(test_clean_stop_logs_no_loss)
{
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert(it_relay_wait_logged(relay, LOG_MSG_PG_CONNECTED, 1, 15000));
    it_relay_stop(relay);
    char *log = it_relay_log(relay);
    ck_assert_msg(!it_relay_logged(relay, LOG_MSG_PG_CONNECTION_LOST),
                  "a clean stop logged a lost connection:\n%s", log);
    ck_assert_msg(strstr(log, "\"level\":\"warn\"") == NULL, "a clean stop warned:\n%s", log);
    free(log);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("pg_connection_logs");
    TCase *tc = it_tcase(suite, "pg_connection_logs", it_start_servers, 60);
    tcase_add_test(tc, test_refused_first_connection_is_not_lost);
    tcase_add_test(tc, test_clean_stop_logs_no_loss);
    return run_suite(suite);
}
