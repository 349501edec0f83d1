/* When failed rows become due again: one timer for the earliest due time. */
#include "outbox_relay/pipeline/retry_timer.h"

#include <stdbool.h>
#include <stdlib.h>

/* Arms the timer for the earliest due time still ahead; drops those passed. */
static void retry_timer_arm(struct retry_timer *t)
{
    double now = ev_now(t->loop), next = 0;
    size_t kept = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->due[i] <= now)
            continue;
        if (kept == 0 || t->due[i] < next)
            next = t->due[i];
        t->due[kept++] = t->due[i];
    }
    t->n = kept;
    ev_timer_stop(t->loop, &t->timer);
    if (kept > 0) {
        ev_timer_set(&t->timer, next - now, 0.);
        ev_timer_start(t->loop, &t->timer);
    }
}

static void retry_timer_on_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct retry_timer *t = (struct retry_timer *)w;
    retry_timer_arm(t);
    t->fire(t->arg);
}

void retry_timer_init(struct retry_timer *t, struct ev_loop *loop, void (*fire)(void *arg),
                      void *arg)
{
    *t = (struct retry_timer){.loop = loop, .fire = fire, .arg = arg};
    ev_timer_init(&t->timer, retry_timer_on_fire, 0., 0.);
}

void retry_timer_schedule(struct retry_timer *t, int64_t delay_ms)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        double *due = realloc(t->due, cap * sizeof(*due));
        if (due == NULL)
            return; /* the fallback poll finds the row */
        t->due = due;
        t->cap = cap;
    }
    ev_now_update(t->loop);
    /* 2 ms: the database's clock may run a hair ahead of ours. */
    double at = ev_now(t->loop) + delay_ms / 1000.0 + 0.002;
    t->due[t->n++] = at;
    if (!ev_is_active(&t->timer) || ev_now(t->loop) + ev_timer_remaining(t->loop, &t->timer) > at)
        retry_timer_arm(t);
}

void retry_timer_stop(struct retry_timer *t)
{
    ev_timer_stop(t->loop, &t->timer);
}

void retry_timer_free(struct retry_timer *t)
{
    retry_timer_stop(t);
    free(t->due);
    t->due = NULL;
    t->n = t->cap = 0;
}
