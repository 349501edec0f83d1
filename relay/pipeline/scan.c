/* The scanner's state machine: which page the next claim reads. */
#include "outbox_relay/pipeline/scan.h"

void scan_init(struct scan *s)
{
    *s = (struct scan){.state = SCAN_IDLE, .rewind = INT64_MAX, .last_sweep = -1e9};
}

void scan_want(struct scan *s, enum scan_reason why)
{
    if (why == SCAN_SWEEP)
        s->want_sweep = true;
    if (why == SCAN_NOTIFY)
        s->notified = true;
    switch (s->state) {
    case SCAN_IDLE:
        s->state = SCAN_WANTED;
        break;
    case SCAN_IN_PASS:
    case SCAN_CLAIMING:
        /* The pass may have read past what this reason is about: one more. */
        s->wanted_again = true;
        break;
    case SCAN_WANTED:
        break;
    }
}

bool scan_next_page(struct scan *s, double now, int64_t *from)
{
    switch (s->state) {
    case SCAN_IDLE:
    case SCAN_CLAIMING:
        return false;
    case SCAN_WANTED:
        s->pass_is_sweep = s->want_sweep;
        s->pass_notified = s->notified;
        s->cursor = s->want_sweep ? 0 : s->high_water;
        if (s->pass_is_sweep)
            s->last_sweep = now;
        s->want_sweep = s->notified = s->wanted_again = false;
        break;
    case SCAN_IN_PASS:
        break;
    }
    if (s->rewind < s->cursor)
        s->cursor = s->rewind;
    s->rewind = INT64_MAX;
    s->page_from = s->page_last = s->cursor;
    s->state = SCAN_CLAIMING;
    *from = s->cursor;
    return true;
}

void scan_row_seen(struct scan *s, int64_t id)
{
    s->page_last = id;
    if (id > s->high_water)
        s->high_water = id;
}

void scan_row_blocked(struct scan *s, int64_t prev)
{
    /* Above the page's start, prev was not due when the page was read (it
     * is held back or not yet retried): whatever frees it wants a scan. */
    if (prev <= s->page_from && prev - 1 < s->rewind)
        s->rewind = prev - 1;
}

static void scan_end_pass(struct scan *s)
{
    s->state = s->wanted_again || s->want_sweep || s->rewind != INT64_MAX ? SCAN_WANTED : SCAN_IDLE;
    s->wanted_again = false;
}

void scan_page_done(struct scan *s, int n, bool full)
{
    if (s->state != SCAN_CLAIMING)
        return;
    s->cursor = s->page_last;
    if (full || s->rewind != INT64_MAX) {
        s->state = SCAN_IN_PASS;
        return;
    }
    /* A tail pass that found nothing was woken for a row it cannot see
     * above the high water: one committed late, below it. Sweep once. */
    if (!s->pass_is_sweep && s->pass_notified && n == 0 && s->high_water > 0)
        s->want_sweep = true;
    scan_end_pass(s);
}

void scan_page_failed(struct scan *s)
{
    if (s->state != SCAN_CLAIMING && s->state != SCAN_IN_PASS)
        return;
    /* The poll tick (or the next reason) starts another pass; retrying at
     * once would spin on a query that keeps failing. */
    s->state = s->wanted_again ? SCAN_WANTED : SCAN_IDLE;
    s->wanted_again = false;
}

void scan_key_released(struct scan *s, int64_t id)
{
    if (id < s->rewind)
        s->rewind = id;
    if (s->state == SCAN_IDLE)
        s->state = SCAN_WANTED;
}

void scan_restart(struct scan *s)
{
    double last_sweep = s->last_sweep;
    scan_init(s);
    s->last_sweep = last_sweep;
    s->want_sweep = true;
    s->state = SCAN_WANTED;
}

void scan_stop(struct scan *s)
{
    s->state = SCAN_IDLE;
    s->want_sweep = s->wanted_again = s->notified = false;
    s->rewind = INT64_MAX;
}

const char *scan_state_name(enum scan_state state)
{
    switch (state) {
    case SCAN_IDLE:
        return "idle";
    case SCAN_WANTED:
        return "wanted";
    case SCAN_IN_PASS:
        return "in_pass";
    case SCAN_CLAIMING:
        return "claiming";
    }
    return "?";
}
