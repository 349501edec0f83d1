/*
 * A new term's reconciliation with the stream: before a new leader
 * publishes anything, it finds the rows an earlier term published but never
 * marked, and marks them published with the stream sequence the stream gave
 * them, instead of publishing them again past JetStream's duplicate window.
 *
 * Every term (first start, restart, takeover, leadership regained):
 *   1. the first unfinished rows (id, event_id; 4 x OUTBOX_MAX_INFLIGHT at
 *      most) and the highest stream sequence marked; no unfinished row: done;
 *   2. the stream's messages after that sequence, by Nats-Msg-Id, read by
 *      js_sink's worker (at most OUTBOX_MAX_INFLIGHT messages and
 *      OUTBOX_MAX_INFLIGHT_BYTES, the newest): when the relay is the
 *      stream's only writer, these are exactly the messages earlier terms
 *      stored and did not mark;
 *   3. the rows whose event_id one of them carries, marked published with
 *      its sequence (the first, if several), if still unfinished.
 * Then the term may publish: its claims run on the same session after the
 * mark, so they see those rows published (a failed mark ends the session,
 * the term, and the claims queued behind it). A read that fails (NATS lost, a stream leader
 * election) is asked again; a term that ends meanwhile leaves the work to
 * the next, which starts over: marking is idempotent and nothing was
 * published. Messages of the range the relay could not read (gone: purged,
 * past max age; or past the budgets) are counted as re-publishes: rows among
 * them go out again (at-least-once; JetStream drops them inside its window).
 *
 * Per-key order: a key's rows in the stream are a prefix of its unfinished
 * rows (one publish per key, or the fence, never store a row after one of
 * its key that was not stored), so marking them leaves the rest of each key
 * to go after them, in order. Loop thread only.
 */
#ifndef OUTBOX_RELAY_PIPELINE_RECONCILE_H
#define OUTBOX_RELAY_PIPELINE_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_source.h"

struct reconcile_events {
    /* The term may publish now. */
    void (*done)(void *arg);
    void *arg;
};

struct reconcile;

/* sql lives as long as the reconcile (its statements are prepared by address). NULL with err
 * when out of memory. */
struct reconcile *reconcile_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source *pg, struct js_sink *js,
                                   const struct outbox_sql *sql, struct reconcile_events ev,
                                   char *err, size_t errlen);
void reconcile_destroy(struct reconcile *rc);

/* A new term: reconcile, then `done`. Without OUTBOX_STREAM, done at once. */
void reconcile_start(struct reconcile *rc);
/* The term ended (deposed, shutting down): drop the work; the next term starts over. */
void reconcile_stop(struct reconcile *rc);
/* Whether this term may publish (it reconciled). */
bool reconcile_done(const struct reconcile *rc);
/* NATS_EVENT_STREAM_READ: js_sink's worker answered. */
void reconcile_on_stream_read(struct reconcile *rc);

/* Messages reconciliation could not check, whose rows may be published again. */
uint64_t reconcile_unchecked_total(const struct reconcile *rc);

#endif
