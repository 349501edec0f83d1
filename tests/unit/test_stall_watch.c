/* Stall detection: when a relay reads as stalled, and when idleness or progress clears it. */
#include <check.h>

#include "outbox_relay/pipeline/stall_watch.h"
#include "run_suite.h"

#define TIMEOUT 30.0

START_TEST(test_leader_holding_rows_without_progress_stalls)
{
    struct stall_watch w;
    stall_watch_init(&w, TIMEOUT, 100.0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 100.0 + TIMEOUT) == 0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 101.0 + TIMEOUT) == 1.0 + TIMEOUT);
    /* An outcome committed: the clock starts again. */
    stall_watch_progress(&w, 120.0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 101.0 + TIMEOUT) == 0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 121.0 + TIMEOUT) == 1.0 + TIMEOUT);
}
END_TEST

START_TEST(test_a_standby_never_stalls)
{
    struct stall_watch w;
    stall_watch_init(&w, TIMEOUT, 0.0);
    stall_watch_sampled(&w, true, true, 0.0);
    ck_assert(stall_watch_stalled_for(&w, false, true, 1000.0) == 0);
}
END_TEST

START_TEST(test_due_rows_in_the_table_stall_a_leader_holding_nothing)
{
    struct stall_watch w;
    stall_watch_init(&w, TIMEOUT, 0.0);
    /* The sample saw a due row, but the relay holds nothing: claims are not happening. */
    stall_watch_sampled(&w, true, false, 5.0);
    ck_assert(stall_watch_stalled_for(&w, true, false, 31.0) == 31.0);
    /* The next sample sees none: idle, not stalled, and the clock restarts. */
    stall_watch_sampled(&w, false, false, 40.0);
    ck_assert(stall_watch_stalled_for(&w, true, false, 100.0) == 0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 60.0) == 0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 71.0) == 31.0);
}
END_TEST

START_TEST(test_nothing_due_while_holding_rows_is_not_idle)
{
    struct stall_watch w;
    stall_watch_init(&w, TIMEOUT, 0.0);
    /* Rows in flight: a sample with nothing else due does not count as progress. */
    stall_watch_sampled(&w, false, true, 20.0);
    ck_assert(stall_watch_stalled_for(&w, true, true, 35.0) == 35.0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stall_watch");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_leader_holding_rows_without_progress_stalls);
    tcase_add_test(tc, test_a_standby_never_stalls);
    tcase_add_test(tc, test_due_rows_in_the_table_stall_a_leader_holding_nothing);
    tcase_add_test(tc, test_nothing_due_while_holding_rows_is_not_idle);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(suite());
}
