/* outbox-relay --probe: the binary asks its own /healthz (HEALTHCHECK without curl or a shell). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

START_TEST(test_probe_exit_codes)
{
    struct it_relay *relay = it_relay_start_http(NULL, NULL);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 15000));
    char addr[64], wildcard[64];
    snprintf(addr, sizeof addr, "OUTBOX_HTTP_ADDR=127.0.0.1:%d", relay->http_port);
    snprintf(wildcard, sizeof wildcard, "OUTBOX_HTTP_ADDR=:%d", relay->http_port);
    const char *env[] = {addr, NULL};
    const char *env_wildcard[] = {wildcard, NULL};
    const char *probe[] = {"--probe", NULL};
    const char *readyz[] = {"--probe", "/readyz", NULL};
    const char *missing[] = {"--probe", "/nope", NULL};
    char *out = NULL;

    ck_assert_int_eq(it_relay_run(env, probe, 10000, NULL), 0);
    ck_assert_int_eq(it_relay_run(env_wildcard, probe, 10000, NULL), 0); /* ":port" = loopback */
    ck_assert_int_eq(it_relay_run(env, readyz, 10000, NULL), 0);
    ck_assert_int_eq(it_relay_run(env, missing, 10000, &out), 1);
    ck_assert_msg(strstr(out, "GET /nope: 404") != NULL, "%s", out);
    free(out);

    /* The relay gone: refused, exit 1 with the reason. */
    it_relay_stop(relay);
    ck_assert_int_eq(it_relay_run(env, probe, 10000, &out), 1);
    ck_assert_msg(strstr(out, "Connection refused") != NULL, "%s", out);
    free(out);
    /* No address to probe: a configuration error. */
    ck_assert_int_eq(it_relay_run(NULL, probe, 10000, &out), 2);
    free(out);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("probe_cli");
    TCase *tc = it_tcase(suite, "probe_cli", it_start_servers, 60);
    tcase_add_test(tc, test_probe_exit_codes);
    return run_suite(suite);
}
