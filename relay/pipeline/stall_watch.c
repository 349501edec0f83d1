/* Stall detection: a leader with due work that makes no progress for longer than the timeout. */
#include "outbox_relay/pipeline/stall_watch.h"

void stall_watch_init(struct stall_watch *w, double timeout_s, double now)
{
    w->timeout_s = timeout_s;
    w->last_progress = now;
    w->sampled_due = false;
}

void stall_watch_progress(struct stall_watch *w, double now)
{
    w->last_progress = now;
}

void stall_watch_sampled(struct stall_watch *w, bool any_due, bool holding, double now)
{
    w->sampled_due = any_due;
    if (!any_due && !holding)
        w->last_progress = now; /* idle is not a stall */
}

double stall_watch_stalled_for(const struct stall_watch *w, bool leading, bool holding, double now)
{
    double idle_for = now - w->last_progress;
    bool due_work = leading && (holding || w->sampled_due);
    return due_work && idle_for > w->timeout_s ? idle_for : 0;
}
