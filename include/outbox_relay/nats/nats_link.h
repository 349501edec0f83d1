/*
 * The relay's view of its NATS connection: up or down, reconnects counted,
 * a connection nats.c gave up on opened anew with backoff, and a deadline
 * past which a leader without NATS should stand aside. Fed with the
 * connection events of the ack bridge. Loop thread only.
 */
#ifndef OUTBOX_RELAY_NATS_LINK_H
#define OUTBOX_RELAY_NATS_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/nats/nats_bridge.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/nats/js_sink.h"

struct nats_link_events {
    /* Connected (first time or again): the stream check is under way. */
    void (*up)(void *arg);
    /* Down for longer than OUTBOX_NATS_LOST_MS. */
    void (*lost_too_long)(void *arg);
    void *arg;
};

struct nats_link;

struct nats_link *nats_link_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct js_sink *js, struct nats_link_events events, char *err,
                                   size_t errlen);
void nats_link_destroy(struct nats_link *l);

/* nats.c reports only background connects: an immediate one is seen here. */
void nats_link_start(struct nats_link *l);
/* A connection event from the ack bridge (ACK_NATS_*). */
void nats_link_event(struct nats_link *l, enum nats_event_kind kind);
/* Shutting down: no more reopening. */
void nats_link_stop(struct nats_link *l);

bool nats_link_up(const struct nats_link *l);
uint64_t nats_link_reconnects(const struct nats_link *l);

#endif
