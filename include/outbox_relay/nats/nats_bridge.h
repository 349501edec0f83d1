/*
 * The one threading crossing: nats.c threads (and js_sink's connect worker)
 * → the relay's libev loop.
 *
 * The rule. Code that runs off the loop thread — nats.c's PubAck handler and
 * connection callbacks, js_sink's connect worker — may:
 *   - call nats_bridge_push() (copies the event under the bridge's mutex and
 *     wakes the loop with ev_async; it never allocates and never fails),
 *   - log (log_event() is one write(2)),
 *   - take js_sink's own small locks (its failure text, its connection
 *     pointers, its worker's mailbox), never one the loop holds while waiting.
 * Everything else — rows, metrics, timers, PostgreSQL — is touched by the
 * loop thread alone, in the bridge's callback.
 *
 * Why a push cannot fail: a PubAck's slot is reserved on the loop thread
 * before the publish (nats_bridge_reserve(); a publish without room is refused
 * there, its message still the caller's), so the handler never allocates and
 * never has to drop a message whose address still keys a row. Connection
 * events live in a small fixed array; when it is full, the newest event
 * replaces the last one (the loop still learns the current state, and each
 * event keeps its place among the PubAcks).
 */
#ifndef OUTBOX_RELAY_NATS_BRIDGE_H
#define OUTBOX_RELAY_NATS_BRIDGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <nats/nats.h>

enum nats_event_kind {
    NATS_EVENT_PUBACK,       /* a publish finished: msg set, ok or status/js_code/error */
    NATS_EVENT_DISCONNECTED, /* the NATS connection dropped; nats.c reconnects */
    NATS_EVENT_CONNECTED,    /* (re)connected */
    NATS_EVENT_CLOSED,       /* for good: at shutdown, or nats.c gave up (credentials refused) */
    NATS_EVENT_STREAM_READ,  /* js_sink's worker answered a stream read (js_sink_read_stream) */
};

struct nats_event {
    enum nats_event_kind kind;
    natsMsg *msg;        /* the published message, owned by the receiver */
    bool ok;             /* PubAck received (a duplicate counts) */
    bool duplicate;      /* JetStream had it already (deduplicated by Nats-Msg-Id) */
    uint64_t stream_seq; /* sequence in the stream */
    natsStatus status;   /* on failure */
    int js_code;         /* JetStream error code on failure, 0 if none */
    double at;           /* wall-clock seconds when the ack arrived */
    char error[160];     /* readable reason on failure */
};

struct nats_bridge;
/* Runs on the loop with entries in arrival order (possibly in several calls per wake-up). */
typedef void (*nats_bridge_fn)(void *arg, struct nats_event *entries, size_t n);

/* Creates the bridge and starts its ev_async watcher on loop; fn runs on the loop. */
struct nats_bridge *nats_bridge_create(struct ev_loop *loop, nats_bridge_fn fn, void *arg,
                                       char *err, size_t errlen);
/*
 * Loop thread, before each publish: room for its PubAck. False when out of
 * memory (do not publish). nats_bridge_unreserve() gives it back when the
 * publish was refused after all.
 */
bool nats_bridge_reserve(struct nats_bridge *q);
void nats_bridge_unreserve(struct nats_bridge *q);
/*
 * Any thread. An NATS_EVENT_PUBACK takes one reserved slot (one per published
 * message: from its ack handler or its reclaim, never both); a connection
 * event takes a fixed slot. Never allocates, never fails.
 */
void nats_bridge_push(struct nats_bridge *q, const struct nats_event *e);
/* Loop thread: delivers everything queued so far to fn now. */
void nats_bridge_drain(struct nats_bridge *q);
void nats_bridge_destroy(struct nats_bridge *q);

#endif
