/* The scanner's state machine, walked step by step from tables of events. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "outbox_relay/pipeline/scan.h"
#include "run_suite.h"

enum op {
    END,
    WANT,    /* arg: enum scan_reason */
    NEXT,    /* a page is claimed: expect from == arg */
    NO_PAGE, /* scan_next_page answers false */
    SEEN,    /* arg: id */
    BLOCKED, /* arg: prev */
    DONE,    /* arg: rows; full: the page hit a limit */
    DONE_FULL,
    FAILED,
    RELEASED, /* arg: id */
    RESTART,
    STOP,
};

struct step {
    enum op op;
    int64_t arg;
    enum scan_state want; /* the state after the step */
};

struct walk {
    const char *name;
    struct step steps[24];
};

static const struct walk walks[] = {
    {"a tail pass reads pages until a short one",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 1, SCAN_CLAIMING},
      {SEEN, 2, SCAN_CLAIMING},
      {DONE_FULL, 2, SCAN_IN_PASS},
      {NEXT, 2, SCAN_CLAIMING},
      {SEEN, 3, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {NO_PAGE, 0, SCAN_IDLE},
      {WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 3, SCAN_CLAIMING}, /* the next tail pass starts at the high water */
      {DONE, 0, SCAN_IDLE},
      {END, 0, 0}}},
    {"a sweep starts from id 0, a tail from the high water",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 10, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {WANT, SCAN_SWEEP, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {DONE, 0, SCAN_IDLE},
      {WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 10, SCAN_CLAIMING},
      {END, 0, 0}}},
    {"a NOTIFY during a pass asks for another pass",
     {{WANT, SCAN_NOTIFY, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {WANT, SCAN_NOTIFY, SCAN_CLAIMING},
      {SEEN, 5, SCAN_CLAIMING},
      {DONE, 1, SCAN_WANTED},
      {NEXT, 5, SCAN_CLAIMING},
      {DONE, 0, SCAN_WANTED}, /* notified, found nothing: the row may lie below */
      {NEXT, 0, SCAN_CLAIMING},
      {DONE, 0, SCAN_IDLE},
      {END, 0, 0}}},
    {"a notified tail pass that finds nothing sweeps once (a late commit below the high water)",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 7, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {WANT, SCAN_NOTIFY, SCAN_WANTED},
      {NEXT, 7, SCAN_CLAIMING},
      {DONE, 0, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING}, /* the sweep */
      {DONE, 0, SCAN_IDLE},     /* a sweep that finds nothing does not sweep again */
      {END, 0, 0}}},
    {"a row blocked by a late commit below the page rewinds the pass to it",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 50, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {WANT, SCAN_NOTIFY, SCAN_WANTED},
      {NEXT, 50, SCAN_CLAIMING},
      {SEEN, 60, SCAN_CLAIMING},
      {BLOCKED, 7, SCAN_CLAIMING}, /* row 7 of its key committed late */
      {SEEN, 61, SCAN_CLAIMING},
      {DONE, 2, SCAN_IN_PASS}, /* short, but the rewind keeps the pass going */
      {NEXT, 6, SCAN_CLAIMING},
      {SEEN, 7, SCAN_CLAIMING},
      {SEEN, 60, SCAN_CLAIMING},
      {DONE, 2, SCAN_IDLE},
      {END, 0, 0}}},
    {"a row blocked by a row above the page start does not rewind (that row is not due)",
     {{WANT, SCAN_SWEEP, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 9, SCAN_CLAIMING},
      {BLOCKED, 4, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {END, 0, 0}}},
    {"a rewind never loops: the rewound page starts below the blocker",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 20, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 20, SCAN_CLAIMING},
      {SEEN, 30, SCAN_CLAIMING},
      {BLOCKED, 10, SCAN_CLAIMING},
      {DONE, 1, SCAN_IN_PASS},
      {NEXT, 9, SCAN_CLAIMING},
      {SEEN, 30, SCAN_CLAIMING}, /* row 10 is not due after all: still blocked */
      {BLOCKED, 10, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE}, /* 10 lies above this page's start: no second rewind */
      {END, 0, 0}}},
    {"a released key rewinds a pass under way",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 100, SCAN_CLAIMING},
      {RELEASED, 40, SCAN_CLAIMING},
      {DONE_FULL, 1, SCAN_IN_PASS},
      {NEXT, 40, SCAN_CLAIMING},
      {DONE, 0, SCAN_IDLE},
      {END, 0, 0}}},
    {"a released key wakes an idle scanner below the high water",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 100, SCAN_CLAIMING},
      {DONE, 1, SCAN_IDLE},
      {RELEASED, 40, SCAN_WANTED},
      {NEXT, 40, SCAN_CLAIMING},
      {DONE, 0, SCAN_IDLE},
      {END, 0, 0}}},
    {"a failed claim ends the pass without spinning",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {FAILED, 0, SCAN_IDLE},
      {NO_PAGE, 0, SCAN_IDLE},
      {WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {WANT, SCAN_NOTIFY, SCAN_CLAIMING},
      {FAILED, 0, SCAN_WANTED}, /* a reason came meanwhile: it is kept */
      {END, 0, 0}}},
    {"a lost connection or leadership stops the scanner; a new term sweeps from 0",
     {{WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {SEEN, 80, SCAN_CLAIMING},
      {STOP, 0, SCAN_IDLE},
      {DONE, 1, SCAN_IDLE}, /* the old claim's result changes nothing */
      {NO_PAGE, 0, SCAN_IDLE},
      {RESTART, 0, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING},
      {DONE, 0, SCAN_IDLE},
      {WANT, SCAN_TAIL, SCAN_WANTED},
      {NEXT, 0, SCAN_CLAIMING}, /* the high water was forgotten with the term */
      {END, 0, 0}}},
};

START_TEST(test_walk)
{
    const struct walk *w = &walks[_i];
    struct scan s;
    scan_init(&s);
    ck_assert_int_eq(s.state, SCAN_IDLE);
    for (int k = 0; w->steps[k].op != END; k++) {
        const struct step *st = &w->steps[k];
        int64_t from = -1;
        switch (st->op) {
        case WANT:
            scan_want(&s, (enum scan_reason)st->arg);
            break;
        case NEXT:
            ck_assert_msg(scan_next_page(&s, 1.0, &from), "%s: step %d: no page", w->name, k);
            ck_assert_msg(from == st->arg, "%s: step %d: page from %lld, want %lld", w->name, k,
                          (long long)from, (long long)st->arg);
            break;
        case NO_PAGE:
            ck_assert_msg(!scan_next_page(&s, 1.0, &from), "%s: step %d: a page", w->name, k);
            break;
        case SEEN:
            scan_row_seen(&s, st->arg);
            break;
        case BLOCKED:
            scan_row_blocked(&s, st->arg);
            break;
        case DONE:
            scan_page_done(&s, (int)st->arg, false);
            break;
        case DONE_FULL:
            scan_page_done(&s, (int)st->arg, true);
            break;
        case FAILED:
            scan_page_failed(&s);
            break;
        case RELEASED:
            scan_key_released(&s, st->arg);
            break;
        case RESTART:
            scan_restart(&s);
            break;
        case STOP:
            scan_stop(&s);
            break;
        case END:
            break;
        }
        ck_assert_msg(s.state == st->want, "%s: step %d: state %s, want %s", w->name, k,
                      scan_state_name(s.state), scan_state_name(st->want));
    }
}
END_TEST

START_TEST(test_sweep_time_is_recorded)
{
    struct scan s;
    scan_init(&s);
    int64_t from;
    scan_want(&s, SCAN_SWEEP);
    ck_assert(scan_next_page(&s, 42.5, &from));
    ck_assert(s.last_sweep == 42.5);
    scan_page_done(&s, 0, false);
    scan_want(&s, SCAN_TAIL);
    ck_assert(scan_next_page(&s, 50.0, &from));
    ck_assert(s.last_sweep == 42.5); /* a tail pass is not a sweep */
}
END_TEST

static Suite *scan_suite(void)
{
    Suite *s = suite_create("scan");
    TCase *tc = tcase_create("walks");
    tcase_add_loop_test(tc, test_walk, 0, (int)(sizeof(walks) / sizeof(walks[0])));
    tcase_add_test(tc, test_sweep_time_is_recorded);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(scan_suite());
}
