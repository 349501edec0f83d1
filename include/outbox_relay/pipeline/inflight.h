/*
 * The rows the relay holds, and the per-key ordering decisions. Loop thread only.
 *
 * A row enters when claimed and leaves when its outcome is committed to the
 * table. Rows sharing an ordering_key form a queue in claim (id) order; only
 * the head of a queue is published, so one key has at most one publish in
 * flight and a failure can never let a later row of the key overtake it.
 * Rows without a key are independent.
 *
 * Pipelined (see pub_chain.h): a row is published as soon as every row ahead
 * of it in its key is publishing; the chain, not the queue, keeps a failed
 * row from being overtaken, and a row refused by the chain goes back to
 * waiting in its place.
 */
#ifndef OUTBOX_RELAY_INFLIGHT_H
#define OUTBOX_RELAY_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "outbox_relay/nats/pub_chain.h"
#include "outbox_relay/lib/publish_reason.h"

enum row_state {
    ROW_WAITING,    /* claimed; not yet sent (behind its key's head, or about to be sent) */
    ROW_PUBLISHING, /* handed to nats.c; waiting for the PubAck or its timeout */
    ROW_MARKING,    /* outcome known; waiting for the UPDATE that records it */
};

struct key_queue;

struct outbox_row {
    int64_t id;
    char *ordering_key; /* NULL: no ordering constraint */
    int attempts;       /* publish attempts before this one */
    bool held_key;      /* claimed as failed: its key's later rows wait in the table for it,
                           whatever its attempts (a requeue resets them) */
    double created_at;  /* epoch seconds, for the delivery latency */
    int64_t bytes;      /* payload + header bytes as stored: the memory budget's unit */
    natsMsg *msg;       /* the built message while WAITING; NULL once sent, or if invalid */
    char *invalid;      /* why the row can never be published (then msg is NULL) */
    enum publish_reason invalid_reason; /* its class */
    const natsMsg *sent;                /* identity of the message nats.c holds, to match its ack */
    double sent_at;                     /* loop time of the publish, for the PubAck deadline */
    enum row_state state;
    bool holds_key; /* MARKING a failure: later rows of the key stay held until it is recorded */
    bool behind_failed;     /* pipelined: an earlier row of its key failed and left while this
                               one was publishing; if the chain refuses it, it goes back to the
                               table instead of waiting in its place */
    struct chain_pos chain; /* its place in the publish chain (epoch 0: not chained) */

    struct outbox_row *key_next; /* next row of the same key */
    struct key_queue *key;
    struct outbox_row *id_next, *msg_next;  /* hash chains */
    struct outbox_row *all_prev, *all_next; /* every row, for drops */
};

struct inflight;

struct inflight *inflight_create(size_t max_rows, char *err, size_t errlen);
void inflight_destroy(struct inflight *t);

size_t inflight_count(const struct inflight *t);
size_t inflight_publishing(const struct inflight *t);
/* Payload and header bytes of every held row, whatever its state. */
int64_t inflight_bytes(const struct inflight *t);
struct outbox_row *inflight_find(const struct inflight *t, int64_t id);
/* Up to max ids of held rows above `above`, in no order; returns how many,
 * or max + 1 when there are more (the walk stops there). */
size_t inflight_ids_above(const struct inflight *t, int64_t above, int64_t *ids, size_t max);

/* True unless an earlier row of its key is held (publishing, or failed and holding the key). */
bool inflight_first_of_key(const struct outbox_row *row);

/* Pipelined: a key's rows may be published while earlier ones are (default: off). */
void inflight_set_pipelined(struct inflight *t, bool pipelined);
bool inflight_pipelined(const struct inflight *t);

/*
 * Takes ownership of row (id not yet held). Returns true when the row may be
 * published now (no key, or first of its key, or pipelined and every earlier
 * row of its key is publishing), false when it waits behind an earlier row
 * of its key.
 */
bool inflight_add(struct inflight *t, struct outbox_row *row);

/* The row's message was handed to nats.c at loop time now (row->msg is now NULL). */
void inflight_sent(struct inflight *t, struct outbox_row *row, const natsMsg *sent, double now);

/*
 * Detaches from their messages the PUBLISHING rows sent before `before` and
 * passes each to fn (a late ack for them then matches no row). Returns how many.
 */
size_t inflight_expire(struct inflight *t, double before,
                       void (*fn)(void *arg, struct outbox_row *row), void *arg);

/* The row whose message is msg, or NULL (an ack for a row no longer held). */
struct outbox_row *inflight_by_msg(struct inflight *t, const natsMsg *msg);

/*
 * The row was acknowledged: it moves to MARKING and leaves its key queue.
 * Returns the next row of the key, now first and WAITING, to publish; or NULL.
 */
struct outbox_row *inflight_acked(struct inflight *t, struct outbox_row *row);

/*
 * A publishing row the chain refused (already detached by inflight_by_msg)
 * waits again in its place, with msg (ownership taken) to publish again.
 */
void inflight_requeue(struct inflight *t, struct outbox_row *row, natsMsg *msg);

/*
 * The row goes back to the table untouched (a later scan claims it again):
 * it is freed with the waiting rows behind it in its key; rows behind it
 * still publishing are marked behind_failed. Returns how many rows were freed.
 */
size_t inflight_release(struct inflight *t, struct outbox_row *row);

/*
 * Whether an earlier row of row's key failed (it is marking that failure,
 * or left with it while row was publishing): row's own outcome then is no
 * attempt of its own, as it would not have been tried one key at a time.
 */
bool inflight_behind_failure(const struct outbox_row *row);

/*
 * The waiting rows that may be published now, each the start of a run: a
 * row without a key, or the first row of its key. Pipelined, the WAITING
 * rows that follow a run's start in its key (key_next) may be published
 * after it, in that order, as long as each one before went out. Returns a
 * malloc'd array (NULL when there are none or out of memory) and its length.
 */
struct outbox_row **inflight_ready(struct inflight *t, size_t *n);

/*
 * The row failed: it moves to MARKING and keeps heading its key queue, so
 * later rows of the key (already held or claimed before the failure is
 * recorded) wait.
 */
void inflight_failed(struct inflight *t, struct outbox_row *row);

/*
 * The row's outcome is committed: it leaves the table and is freed. If it
 * held its key, the rows waiting behind it are dropped too (the table now
 * holds them back, or a later scan re-claims them); returns how many. Rows
 * behind it still publishing (pipelined) stay, marked behind_failed.
 */
size_t inflight_recorded(struct inflight *t, struct outbox_row *row);

/* Drops every WAITING row that heads no publish (shutdown, lost leadership). */
size_t inflight_drop_waiting(struct inflight *t);

/* Drops every row, whatever its state (leadership lost: fencing). Returns how many. */
size_t inflight_drop_all(struct inflight *t);

/* Frees a row that was never added. */
void outbox_row_free(struct outbox_row *row);

#endif
