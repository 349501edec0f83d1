/*
 * The outcome policy in one place: what a failed publish means for its row
 * (retry when, or dead; an attempt of the row's or the connection's fault)
 * and when a recorded outcome lets the rest of the row's key go. Pure: the
 * pipeline gathers the facts, this decides.
 */
#ifndef OUTBOX_RELAY_OUTCOME_H
#define OUTBOX_RELAY_OUTCOME_H

#include <stdbool.h>
#include <stdint.h>

#include "outbox_relay/lib/publish_reason.h"

/* What the pipeline knows of a failed publish. */
struct failure_facts {
    bool permanent; /* publish_error's verdict: retrying can never succeed */
    enum publish_reason reason;
    int attempts;    /* the row's attempts before this one */
    bool unanswered; /* the server answered nothing sent since the row was */
    bool nats_up;    /* the NATS link is up */
};

/* The retry policy's settings (OUTBOX_MAX_ATTEMPTS, OUTBOX_RETRY_*). */
struct retry_policy {
    int max_attempts;
    int64_t base_ms, max_ms;
};

struct failure_verdict {
    bool dead;           /* give up: the row goes dead */
    bool not_an_attempt; /* the connection failed, not the row: attempts stay */
    int64_t delay_ms;    /* retry after this long (0 when dead or not an attempt) */
};

/*
 * Whether the connection, not the row, failed the publish: it broke, or the
 * server answered nothing sent since the row (frozen, stalled), or no
 * stream answered while the link is down.
 */
bool outcome_connection_failed(enum publish_reason reason, bool unanswered, bool nats_up);

/*
 * A permanent error is dead at once. A failure of the connection is no
 * attempt of the row's and earns no backoff: the row is due again at once
 * and goes when the relay may claim again. Anything else is an attempt:
 * dead at max_attempts, else retried after the backoff for that attempt
 * (rnd in [0, 1): its jitter).
 */
struct failure_verdict outcome_of_failure(const struct failure_facts *f,
                                          const struct retry_policy *p, double rnd);

/*
 * Whether a recorded outcome ends the hold on its key: later rows of the
 * key may lie anywhere above it, also below the scan's cursor. A published
 * row ends it when it was claimed as failed (it held the key); a dead row
 * ends it unless dead rows hold their key (OUTBOX_DEAD_HOLDS_KEY). A retry
 * keeps holding it. Not the row's attempts: a requeue resets them and
 * leaves the row holding its key.
 */
bool outcome_releases_key(bool keyed, bool held_key, bool published, bool dead,
                          bool dead_holds_key);

#endif
