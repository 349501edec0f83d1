/* Passwords never reach the relay's output: the start line and --check show OUTBOX_PG_URL and
 * OUTBOX_NATS_URL with every password masked, whatever characters the password holds. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

/* Characters that once ended a redaction early; the harness servers ignore passwords. */
#define PG_SECRET   "Pgsecret,Xa1?Xb2#Xc3 Xd4"
#define NATS_SECRET "Natssecret?Xe5#Xf6 Xg7"

static char pg_env[512], nats_env[512];

/* The harness URLs with a password added to their user. */
static void secret_urls(void)
{
    const char *pg = it_pg_url(); /* postgresql://postgres@127.0.0.1:port/db */
    const char *at = strchr(pg, '@');
    ck_assert_ptr_nonnull(at);
    snprintf(pg_env, sizeof pg_env, "OUTBOX_PG_URL=%.*s:" PG_SECRET "%s", (int)(at - pg), pg, at);
    snprintf(nats_env, sizeof nats_env, "OUTBOX_NATS_URL=nats://relay:" NATS_SECRET "@127.0.0.1:%d",
             it_nats_port());
}

/* Neither secret, nor a word of either, appears in the text. */
static void assert_no_secret(const char *what, const char *text)
{
    static const char *const pieces[] = {"Pgsecret",   "Xa1", "Xb2", "Xc3", "Xd4",
                                         "Natssecret", "Xe5", "Xf6", "Xg7"};
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++)
        ck_assert_msg(strstr(text, pieces[k]) == NULL, "%s shows \"%s\" of a password:\n%s", what,
                      pieces[k], text);
}

START_TEST(test_start_line_masks_passwords)
{
    secret_urls();
    const char *env[] = {pg_env, nats_env, NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    /* Up and relaying: both connections were made with the passwords it was given. */
    ck_assert_msg(it_relay_wait_log(relay, "\"pg_url\"", 1, 10000), "no start line");
    ck_assert_msg(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 10000),
                  "the relay did not lead");
    it_relay_stop(relay);
    char *log = it_relay_log(relay);
    ck_assert_msg(strstr(log, "password=***") != NULL, "the start line shows no masked password");
    assert_no_secret("the relay's log", log);
    free(log);
}
END_TEST

START_TEST(test_check_masks_passwords)
{
    secret_urls();
    const char *env[] = {pg_env, nats_env, NULL};
    const char *args[] = {"--check", NULL};
    char *out = NULL;
    it_relay_run(env, args, 30000, &out);
    ck_assert_ptr_nonnull(out);
    ck_assert_msg(strstr(out, "postgresql") != NULL, "--check said nothing of postgresql:\n%s",
                  out);
    assert_no_secret("--check", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("secret_redaction");
    TCase *tc = it_tcase(suite, "secret_redaction", it_start_servers, 60);
    tcase_add_test(tc, test_start_line_masks_passwords);
    tcase_add_test(tc, test_check_masks_passwords);
    return run_suite(suite);
}
