/*
 * The NATS JetStream side: connection (auth, TLS, endless reconnect),
 * stream creation, asynchronous publish. PubAcks and connection events
 * arrive on nats.c threads and go through the ack_queue to the loop.
 */
#ifndef OUTBOX_RELAY_JS_SINK_H
#define OUTBOX_RELAY_JS_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

#include "outbox_relay/ack_queue.h"
#include "outbox_relay/config.h"

struct js_sink;

/*
 * Connects. With keep_trying, a server that is down now is retried in the
 * background (ACK_NATS_CONNECTED arrives later) and only configuration
 * errors fail; without it, the first failure is returned (for --check).
 * queue may be NULL when no publishing is done.
 */
int js_sink_create(struct js_sink **out, const struct relay_config *cfg, struct ack_queue *queue,
                   bool keep_trying, char *err, size_t errlen);
void js_sink_destroy(struct js_sink *sink);

bool js_sink_connected(const struct js_sink *sink);

/* Why the connection is not up, readable ("authorization failed (...): ..."); "" if unknown. */
void js_sink_last_error(struct js_sink *sink, char *buf, size_t len);

/*
 * nats.c closes a connection for good when a server refuses the same
 * credentials twice in a row; only a new connection tries again. Loop thread,
 * after ACK_NATS_CLOSED: reports every publish the old connection still held
 * as failed (ACK_PUBACK entries), then connects anew with the same options.
 * 1 = connected now, 0 = retrying in the background (ACK_NATS_CONNECTED
 * follows), -1 with err on failure.
 */
int js_sink_reopen(struct js_sink *sink, char *err, size_t errlen);
/* The server's max_payload (0 before the first connect). */
int64_t js_sink_max_payload(const struct js_sink *sink);

/*
 * Creates OUTBOX_STREAM with OUTBOX_STREAM_SUBJECTS when it does not exist
 * (blocking, bounded by the publish timeout). With no stream configured,
 * does nothing. -1 with err on failure.
 */
int js_sink_ensure_stream(struct js_sink *sink, char *err, size_t errlen);
/* Whether the stream exists (for --check); -1 with err when the lookup failed. */
int js_sink_stream_exists(struct js_sink *sink, const char *stream, char *err, size_t errlen);

/*
 * Publishes *msg asynchronously. On success nats.c owns the message and *msg
 * is NULL; its outcome arrives as an ACK_PUBACK entry carrying the same
 * pointer. On failure the caller still owns *msg.
 */
natsStatus js_sink_publish(struct js_sink *sink, natsMsg **msg);

/*
 * Takes back every message nats.c still waits an ack for and reports each as
 * a failed ACK_PUBACK with reason why (after a reconnect: those acks died
 * with the old connection). Returns how many.
 */
int js_sink_reclaim_pending(struct js_sink *sink, const char *why);

#endif
