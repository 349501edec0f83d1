/*
 * The publish path: held rows to JetStream in key order, their PubAcks and
 * the relay's own PubAck deadline, and the fence (pub_chain) that lets one
 * key's publishes be pipelined. Outcomes go back to the pipeline through
 * publisher_events; the pipeline records them (marks). Loop thread only.
 */
#ifndef OUTBOX_RELAY_PUBLISHER_H
#define OUTBOX_RELAY_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/nats/nats_bridge.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/metrics.h"
#include "outbox_relay/pipeline/inflight.h"
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/lib/publish_reason.h"

struct publisher_events {
    /* Stored (duplicate: JetStream had it already); the row is MARKING. */
    void (*acked)(void *arg, struct outbox_row *row, uint64_t stream_seq, double at,
                  bool duplicate);
    /* Failed on its own account (an attempt); the row is MARKING and holds its key. */
    void (*failed)(void *arg, struct outbox_row *row, const char *error, bool permanent,
                   enum publish_reason reason);
    /* Given back to the table untried (an earlier row of its key failed):
     * a sweep finds it when the table lets it go. */
    void (*released)(void *arg, struct outbox_row *row);
    void *arg;
};

struct publisher;

struct publisher *publisher_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct inflight *rows, struct js_sink *js,
                                   struct publisher_events events, char *err, size_t errlen);
void publisher_start(struct publisher *p);
void publisher_destroy(struct publisher *p);

/* Publishes a held row that may go now and, pipelined, the rows behind it in its key. */
void publisher_send(struct publisher *p, struct outbox_row *row);
/* A PubAck (or its error) from the ack bridge. */
void publisher_on_puback(struct publisher *p, struct nats_event *e);
/* Shutting down: acks are still taken, nothing new is sent. */
void publisher_drain(struct publisher *p);
/* Leadership lost: every held row is dropped; acks still due match nothing. */
size_t publisher_drop_all(struct publisher *p);
/*
 * Whether the server answered no publish sent after sent_at (loop time):
 * then a PubAck overdue since is the connection's (a stalled or frozen
 * server), not the row's.
 */
/* The loop turn is over: send this turn's publishes now when few are in flight. */
void publisher_turn_done(struct publisher *p);

/* PubAcks that said duplicate, and the delivery latency of every PubAck: the publisher's metrics.
 */
uint64_t publisher_duplicate_acks(const struct publisher *p);
const struct metrics_latency *publisher_latency(const struct publisher *p);

bool publisher_unanswered_since(const struct publisher *p, double sent_at);

#endif
