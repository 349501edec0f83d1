/* relay_create: a part that cannot be made says why, in the error the caller logs. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>
#include <nats/nats.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pipeline/relay.h"
#include "run_suite.h"

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
}

/*
 * No descriptor left: the wakeup's timer cannot be made. The cause is the
 * descriptor limit, not memory.
 */
START_TEST(test_no_descriptor_left_is_not_out_of_memory)
{
    char *argv[] = {"outbox-relay", "--pg-url=postgresql://127.0.0.1:1/none",
                    "--nats-url=nats://127.0.0.1:1", "--http-addr=", NULL};
    struct relay_config cfg;
    char err[512] = "";
    ck_assert_msg(config_load(&cfg, 4, argv, err, sizeof(err)) == 0, "%s", err);
    /* What the loop and nats.c open once, opened before the limit: libev aborts without its
     * wakeup pipe, and that is not what this test is about. */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_async warm;
    ev_async_init(&warm, on_async);
    ev_async_start(loop, &warm);
    ck_assert_int_eq(nats_Open(-1), NATS_OK);

    int lowest_free = dup(0);
    ck_assert_int_ge(lowest_free, 0);
    close(lowest_free);
    struct rlimit was, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &was), 0);
    lim = was;
    lim.rlim_cur = (rlim_t)lowest_free;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);

    struct relay *relay = relay_create(loop, &cfg, err, sizeof(err));
    /* Back to the old limit: the sanitizers read /proc at exit. */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &was), 0);
    ck_assert_ptr_null(relay);
    ck_assert_msg(strstr(err, "out of memory") == NULL, "err: %s", err);
    ck_assert_msg(strstr(err, "Too many open files") != NULL, "err: %s", err);
    ev_async_stop(loop, &warm);
    ev_loop_destroy(loop);
    config_free(&cfg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("relay_create");
    TCase *tc = tcase_create("relay_create");
    tcase_add_test(tc, test_no_descriptor_left_is_not_out_of_memory);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
