/* Rate-limited "publish failed" warnings: per reason, per interval, with count and first ids. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox_relay/pipeline/fail_log.h"
#include "outbox_relay/lib/log.h"
#include "run_suite.h"

struct emitted {
    struct fail_log_report reports[16];
    size_t n;
};

static void collect(void *arg, const struct fail_log_report *report)
{
    struct emitted *e = arg;
    ck_assert_uint_lt(e->n, 16);
    e->reports[e->n++] = *report;
}

START_TEST(test_one_line_per_reason_per_interval)
{
    struct emitted e = {.n = 0};
    struct fail_log *fl = fail_log_create(10, collect, &e, NULL, 0);
    ck_assert_uint_eq(fail_log_flush(fl, 0), 0); /* nothing recorded */

    /* A stream missing for 7 rows, a timeout for one. */
    for (int64_t id = 101; id <= 107; id++)
        fail_log_record(fl, PUBLISH_NO_STREAM, id,
                        id == 101 ? "no responders: no stream takes subject a.b" : "later");
    fail_log_record(fl, PUBLISH_TIMEOUT, 200, "timeout");

    /* The first flush reports both at once: a quiet reason is not held back. */
    ck_assert_uint_eq(fail_log_flush(fl, 1.0), 2);
    ck_assert_uint_eq(e.n, 2);
    const struct fail_log_report *r = &e.reports[0];
    ck_assert_str_eq(publish_reason_name(r->reason), "no_stream");
    ck_assert_uint_eq(r->count, 7);
    ck_assert_uint_eq(r->nids, FAIL_LOG_IDS);
    for (size_t i = 0; i < FAIL_LOG_IDS; i++)
        ck_assert_int_eq(r->ids[i], 101 + (int64_t)i);
    ck_assert_str_eq(r->error, "no responders: no stream takes subject a.b");
    ck_assert_str_eq(publish_reason_name(e.reports[1].reason), "timeout");
    ck_assert_uint_eq(e.reports[1].count, 1);

    /* More failures within the interval: held, then one line with their count. */
    fail_log_record(fl, PUBLISH_NO_STREAM, 108, "again");
    fail_log_record(fl, PUBLISH_NO_STREAM, 109, "again");
    ck_assert_uint_eq(fail_log_flush(fl, 5.0), 0);
    ck_assert_uint_eq(fail_log_flush(fl, 10.9), 0);
    ck_assert_uint_eq(fail_log_flush(fl, 11.0), 1);
    r = &e.reports[2];
    ck_assert_uint_eq(r->count, 2);
    ck_assert_uint_eq(r->nids, 2);
    ck_assert_int_eq(r->ids[0], 108);
    ck_assert_str_eq(r->error, "again");

    /* Quiet reasons stay quiet; a new reason goes out at the next flush. */
    ck_assert_uint_eq(fail_log_flush(fl, 30), 0);
    fail_log_record(fl, PUBLISH_REASONS, 5, "out of range"); /* → other */
    ck_assert_uint_eq(fail_log_flush(fl, 30.5), 1);
    ck_assert_str_eq(publish_reason_name(e.reports[3].reason), "other");
    fail_log_destroy(fl);
    fail_log_destroy(NULL);
    fail_log_record(NULL, PUBLISH_TIMEOUT, 1, "x");
    ck_assert_uint_eq(fail_log_flush(NULL, 0), 0);
}
END_TEST

/* The default emitter writes one warn line with reason, count, first_ids and error. */
START_TEST(test_warn_line)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct fail_log *fl = fail_log_create(10, NULL, NULL, NULL, 0);
    fail_log_record(fl, PUBLISH_REJECTED, 42, "maximum messages exceeded");
    fail_log_record(fl, PUBLISH_REJECTED, 43, "maximum messages exceeded");
    ck_assert_uint_eq(fail_log_flush(fl, 0), 1);
    log_setup(LOG_ERROR, LOG_FORMAT_JSON);
    fail_log_record(fl, PUBLISH_REJECTED, 44, "x");
    ck_assert_uint_eq(fail_log_flush(fl, 20), 1); /* below the level: nothing written */
    fail_log_destroy(fl);
    dup2(saved, STDERR_FILENO);
    close(fds[1]);
    char buf[4096];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_msg(strstr(buf,
                         "\"level\":\"warn\",\"msg\":\"publish failed\",\"reason\":\"rejected\","
                         "\"count\":2,\"first_ids\":[42,43],"
                         "\"error\":\"maximum messages exceeded\",\"interval_s\":10") != NULL,
                  "%s", buf);
    ck_assert_ptr_null(strchr(strchr(buf, '\n') + 1, '\n')); /* one line */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fail_log");
    TCase *tc = tcase_create("fail_log");
    tcase_add_test(tc, test_one_line_per_reason_per_interval);
    tcase_add_test(tc, test_warn_line);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
