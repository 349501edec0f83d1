/*
 * The claim stage: runs the scanner's pages (scan.h) as claim queries
 * within the row and byte budgets, and turns each row the relay may publish
 * into a held row (inflight.h, ROW_WAITING) for the pipeline to publish.
 *
 * Per-key order at claim time: a keyed row whose nearest earlier
 * unfinished row of its key the relay does not hold (it committed late,
 * below the cursor) is not taken; the scanner goes back for that row.
 * Rows the relay already holds come back in sweeps until their mark
 * commits: they are skipped.
 *
 * Loop thread only. One claim query at a time.
 */
#ifndef OUTBOX_RELAY_CLAIMER_H
#define OUTBOX_RELAY_CLAIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pipeline/inflight.h"
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_source.h"
#include "outbox_relay/pipeline/scan.h"

struct claimer_events {
    /* Whether a claim may start, and its rows be taken (leader, NATS up, not draining). */
    bool (*may_claim)(void *arg);
    /* A new held row, ROW_WAITING: publish it. */
    void (*claimed)(void *arg, struct outbox_row *row);
    /* A pass ended with a short page; found: it took at least one row. */
    void (*pass_ended)(void *arg, bool found);
    /* A claim failed (an error, or out of memory): the pass ended without a result. */
    void (*pass_failed)(void *arg);
    void *arg;
};

/* claim_sql lives as long as the claimer (pg_source prepares it by address). */
/* The message limits the claim judges rows by (nats/message.h). */
extern const struct outbox_claim_limits claimer_message_limits;

struct claimer *claimer_create(const struct relay_config *cfg, struct pg_source *pg,
                               struct inflight *rows, struct js_sink *js, const char *claim_sql,
                               struct claimer_events ev, char *err, size_t errlen);
void claimer_destroy(struct claimer *c);

/* A reason to look at the table (scan_want). */
void claimer_want(struct claimer *c, enum scan_reason why);
/* Claims the next page if one is wanted, none is running and both budgets have room. */
void claimer_run(struct claimer *c, double now);
/* Backpressure: the rows or bytes held leave less room than a claim needs. */
bool claimer_needs_room(const struct claimer *c);
/* A poll tick (wakeup_events.scan): a tail pass, or a sweep while few rows are held. */
void claimer_on_poll(void *arg, bool sweep);
/* Due rows may lie below the cursor (a retry came due): a sweep. arg: the claimer. */
void claimer_on_sweep_due(void *arg);
/* A key's hold ended at row id: its later rows may lie below the cursor. */
void claimer_key_released(struct claimer *c, int64_t id);
/* A new term as leader: sweep from id 0. */
void claimer_restart(struct claimer *c);
/* Claim nothing until a reason comes (leadership lost, shutting down). */
void claimer_stop(struct claimer *c);

int64_t claimer_claimed_total(const struct claimer *c);

#endif
