/*
 * When failed rows become due again: one libev timer for the earliest of
 * many due times. Loop thread only.
 *
 * A failure is recorded and the row becomes due delay_ms after the UPDATE,
 * by the database's clock. Counting from the commit, the timer cannot fire
 * before the row is due (a timer armed at the failure itself did; its
 * sweep found nothing and the row waited for the fallback poll). Every row
 * keeps its own due time: one timer for the earliest alone left the later
 * ones to the poll as well.
 */
#ifndef OUTBOX_RELAY_RETRY_TIMER_H
#define OUTBOX_RELAY_RETRY_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

struct retry_timer {
    ev_timer timer; /* first member */
    struct ev_loop *loop;
    double *due; /* ev_now times, unordered */
    size_t n, cap;
    void (*fire)(void *arg); /* a row became due */
    void *arg;
};

void retry_timer_init(struct retry_timer *t, struct ev_loop *loop, void (*fire)(void *arg),
                      void *arg);
/* A failure was just recorded: a row becomes due delay_ms from now. */
void retry_timer_schedule(struct retry_timer *t, int64_t delay_ms);
void retry_timer_stop(struct retry_timer *t);
void retry_timer_free(struct retry_timer *t);

#endif
