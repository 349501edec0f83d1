/*
 * The one threading crossing: nats.c threads → the relay's libev loop.
 *
 * Rule: nats.c callbacks (PubAck handler, connection events) run on nats.c's
 * threads. They may only call ack_queue_push(), which copies the event under
 * a mutex and wakes the loop with ev_async. Everything else — rows, metrics,
 * PostgreSQL — is touched by the loop thread alone, in ack_queue_take().
 */
#ifndef OUTBOX_RELAY_ACK_QUEUE_H
#define OUTBOX_RELAY_ACK_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <nats/nats.h>

enum ack_kind {
    ACK_PUBACK,            /* a publish finished: msg set, ok or status/js_code/error */
    ACK_NATS_DISCONNECTED, /* the NATS connection dropped; nats.c reconnects */
    ACK_NATS_CONNECTED,    /* (re)connected */
    ACK_NATS_CLOSED,       /* for good: at shutdown, or nats.c gave up (credentials refused) */
};

struct ack_entry {
    enum ack_kind kind;
    natsMsg *msg;        /* the published message, owned by the receiver */
    bool ok;             /* PubAck received (a duplicate counts) */
    bool duplicate;      /* JetStream had it already (deduplicated by Nats-Msg-Id) */
    uint64_t stream_seq; /* sequence in the stream */
    natsStatus status;   /* on failure */
    int js_code;         /* JetStream error code on failure, 0 if none */
    double at;           /* wall-clock seconds when the ack arrived */
    char error[160];     /* readable reason on failure */
};

struct ack_queue;
typedef void (*ack_queue_fn)(void *arg, struct ack_entry *entries, size_t n);

/* Creates the queue and starts its ev_async watcher on loop; fn runs on the loop. */
struct ack_queue *ack_queue_create(struct ev_loop *loop, ack_queue_fn fn, void *arg);
/* Any thread. Returns false only when out of memory (the event is dropped). */
bool ack_queue_push(struct ack_queue *q, const struct ack_entry *e);
/* Loop thread: delivers everything queued so far to fn now. */
void ack_queue_drain(struct ack_queue *q);
void ack_queue_destroy(struct ack_queue *q);

#endif
