/*
 * Batched marks: each row's outcome written to the table, one UPDATE per
 * outcome kind. Published outcomes are gathered for up to
 * OUTBOX_MARK_GATHER_MS (see marks_flush); failures go at the next turn.
 *
 * Owns the outcomes from the moment the pipeline knows them until their
 * UPDATE commits; then hands each back through `recorded`. A mark query
 * that fails resets the connection. For a leader that ends the term: the
 * fence drops the outcomes with their rows, and the next term publishes
 * those rows again. Otherwise the outcomes are kept (they are facts) and
 * written after the reconnect. Loop thread only.
 */
#ifndef OUTBOX_RELAY_MARKS_H
#define OUTBOX_RELAY_MARKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbox_relay/lib/publish_reason.h"
#include "outbox_relay/pg/pg_source.h"

/* The pipeline's row: marks hold it for the caller and hand it back, never look inside. */
struct outbox_row;

/* One row's outcome. */
struct mark {
    int64_t id;
    struct outbox_row *row;
    uint64_t stream_seq; /* published */
    double acked_at;     /* published: wall-clock seconds */
    bool dead;           /* failed: give up (else retry after delay_ms) */
    int64_t delay_ms;
    bool not_an_attempt;        /* failed: the connection's failure, not the row's: attempts stay */
    char *error;                /* failed: the readable reason (owned) */
    enum publish_reason reason; /* failed: its class, for metrics */
};

struct marks_events {
    /* The outcome is committed. The mark (and its error) is freed after. */
    void (*recorded)(void *arg, const struct mark *m, bool published);
    /* A batch committed (after its rows' `recorded`). */
    void (*batch_done)(void *arg, bool published);
    /* Out of memory: the outcome is forgotten; the row is still unfinished
     * in the table and a later scan claims it again. */
    void (*forgotten)(void *arg, struct outbox_row *row);
    void *arg;
};

struct marks;

struct marks *marks_create(struct ev_loop *loop, struct pg_source *pg, const char *published_sql,
                           const char *failed_sql, int gather_ms, struct marks_events events,
                           char *err, size_t errlen);
void marks_destroy(struct marks *mk);

/* Queue an outcome (false: out of memory, nothing queued). `awaited`: the
 * table holds later rows of its key until this one is recorded, so its
 * batch goes at the next flush instead of gathering. */
bool marks_add_published(struct marks *mk, int64_t id, struct outbox_row *row, uint64_t stream_seq,
                         double acked_at, bool awaited);
bool marks_add_failed(struct marks *mk, int64_t id, struct outbox_row *row, bool dead,
                      int64_t delay_ms, bool not_an_attempt, const char *error,
                      enum publish_reason reason);

/* Sends each kind's queued outcomes that are due, unless that kind's UPDATE
 * is running; `now`: the published ones too, gathered or not (draining, a
 * resignation, or a pipeline that waits for room). */
void marks_flush(struct marks *mk, bool now);

/*
 * Leadership ended: forget every outcome not yet sent, and report nothing
 * of an UPDATE in flight (its rows are being dropped). The next leader
 * publishes those rows again; JetStream drops the duplicates.
 */
void marks_fence(struct marks *mk);

/* Outcomes committed so far: the published, failed and dead counters and their reasons. */
struct mark_counts {
    uint64_t published;
    uint64_t failed_by_reason[PUBLISH_REASONS];
    uint64_t dead_by_reason[PUBLISH_REASONS];
};
const struct mark_counts *marks_counts(const struct marks *mk);

/* Outcomes not yet committed: queued or in a running UPDATE. */
size_t marks_unrecorded(const struct marks *mk);

#endif
