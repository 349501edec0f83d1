/* process_* figures: /proc/<pid>/stat and /proc/stat parsing, and a real read of this process. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "outbox_relay/ops/process_stats.h"
#include "run_suite.h"

/* A stat line of a process whose name holds a space and a ')'. */
static const char stat_line[] =
    "4242 (outbox) relay) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 130 0 0 20 0 3 0 "
    "150000 73400320 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

START_TEST(test_stat_fields)
{
    struct metrics_process p = {0};
    ck_assert_int_eq(process_stats_parse_stat(stat_line, 100, 4096, 1764000000, &p), 0);
    ck_assert_double_eq_tol(p.cpu_seconds_total, 3.8, 1e-9); /* (250 + 130) / 100 */
    ck_assert_double_eq(p.start_time_seconds, 1764000000 + 1500);
    ck_assert_double_eq(p.virtual_memory_bytes, 73400320);
    ck_assert_double_eq(p.resident_memory_bytes, 2048.0 * 4096);
}
END_TEST

START_TEST(test_stat_malformed)
{
    struct metrics_process p = {0};
    ck_assert_int_eq(process_stats_parse_stat("", 100, 4096, 0, &p), -1);
    ck_assert_int_eq(process_stats_parse_stat("1 (x S 1 2 3", 100, 4096, 0, &p), -1);
    ck_assert_int_eq(process_stats_parse_stat("1 (x) S 1 2 3 4 5\n", 100, 4096, 0, &p), -1);
    ck_assert_int_eq(process_stats_parse_stat("1 (x) S 1 2 x 4 5 6 7 8 9 10 11 12 13 14 15 16 17 "
                                              "18 19 20 21 22 23",
                                              100, 4096, 0, &p),
                     -1);
    ck_assert_int_eq(process_stats_parse_stat(stat_line, 0, 4096, 0, &p), -1);
}
END_TEST

START_TEST(test_btime)
{
    ck_assert_double_eq(process_stats_parse_btime("cpu  1 2 3\nintr 5\nbtime 1764000000\n"),
                        1764000000);
    ck_assert_double_eq(process_stats_parse_btime("btime 7\n"), 7);
    ck_assert_double_eq(process_stats_parse_btime("cpu 1\nxbtime 5\n"), -1);
    ck_assert_double_eq(process_stats_parse_btime(""), -1);
}
END_TEST

/* This very process: started in the last hour, some memory, the descriptors it holds. */
START_TEST(test_read_self)
{
    struct metrics_process p;
    process_stats_read(&p);
    ck_assert(p.valid);
    double now = (double)time(NULL);
    ck_assert_msg(p.start_time_seconds <= now + 2 && p.start_time_seconds > now - 3600,
                  "start %f, now %f", p.start_time_seconds, now);
    ck_assert(p.resident_memory_bytes > 0);
    ck_assert(p.virtual_memory_bytes >= p.resident_memory_bytes);
    ck_assert(p.cpu_seconds_total >= 0);

    double before = p.open_fds;
    int fds[3];
    ck_assert_int_eq(pipe(fds), 0);
    fds[2] = dup(fds[0]);
    process_stats_read(&p);
    ck_assert_double_eq(p.open_fds, before + 3);
    for (int i = 0; i < 3; i++)
        close(fds[i]);

    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_double_eq(p.max_fds, (double)rl.rlim_cur);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("process_stats");
    TCase *tc = tcase_create("process_stats");
    tcase_add_test(tc, test_stat_fields);
    tcase_add_test(tc, test_stat_malformed);
    tcase_add_test(tc, test_btime);
    tcase_add_test(tc, test_read_self);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
