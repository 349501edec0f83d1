/*
 * Stall detection for /healthz: the leader, while it has due work, must
 * keep making progress. Progress is an outcome committed (published,
 * failed or dead), or finding nothing to do; due work is a row held, an
 * outcome not yet written, or a due row the table sample saw. Without this
 * a relay whose claims or marks silently stopped would look healthy.
 *
 * Pure: the caller passes its clock (ev_now) and what it holds.
 */
#ifndef OUTBOX_RELAY_STALL_WATCH_H
#define OUTBOX_RELAY_STALL_WATCH_H

#include <stdbool.h>

struct stall_watch {
    double timeout_s;     /* OUTBOX_STALL_TIMEOUT_MS */
    double last_progress; /* the clock at the last progress */
    bool sampled_due;     /* the last table sample saw a row a claim may take now */
};

void stall_watch_init(struct stall_watch *w, double timeout_s, double now);
/* An outcome committed, a new term, or a look at the table that found nothing. */
void stall_watch_progress(struct stall_watch *w, double now);
/* The table sample: any_due, and whether the relay holds any row (none + nothing due = idle). */
void stall_watch_sampled(struct stall_watch *w, bool any_due, bool holding, double now);
/*
 * Seconds without progress if the relay is stalled (leading, with due work
 * — holding: rows held or outcomes unwritten — for longer than the
 * timeout), else 0.
 */
double stall_watch_stalled_for(const struct stall_watch *w, bool leading, bool holding, double now);

#endif
