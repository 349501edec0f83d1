/*
 * The NATS JetStream side: connection (auth, TLS, endless reconnect),
 * stream creation, asynchronous publish.
 *
 * Threads. The loop thread calls every function below. Nothing here blocks
 * it on the network: publishing is asynchronous, and the two slow things —
 * opening a new connection (js_sink_reopen) and checking/creating the stream
 * (js_sink_ensure_stream, js_sink_stream_lost) — run on js_sink's own
 * connect worker thread. nats.c's threads and that worker reach the loop
 * only through the nats_bridge (see nats_bridge.h for the rule): PubAcks, and
 * NATS_EVENT_CONNECTED / _DISCONNECTED / _CLOSED. The stream's state is read
 * with js_sink_stream_state(). Only js_sink_create (start-up) waits on the
 * network. (Operator commands use nats_connect_once, not a sink.)
 *
 * Files: js_sink.c (connection, lifecycle), js_worker.c, js_stream.c,
 * js_publish.c; what they share is in js_sink_internal.h.
 */
#ifndef OUTBOX_RELAY_JS_SINK_H
#define OUTBOX_RELAY_JS_SINK_H

#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

#include "outbox_relay/nats/nats_bridge.h"
#include "outbox_relay/nats/stream_read.h"
#include "outbox_relay/lib/config.h"

struct js_sink;

/*
 * Connects (at start-up, before the loop runs: may block up to the connect
 * timeout). A server that is down now is retried in the background
 * (NATS_EVENT_CONNECTED arrives later); only configuration errors fail.
 * Events reach the loop through bridge. NULL with err on failure.
 */
struct js_sink *js_sink_create(const struct relay_config *cfg, struct nats_bridge *bridge,
                               char *err, size_t errlen);
/* Stops the worker (waits for a connect it is making), closes, releases. */
void js_sink_destroy(struct js_sink *sink);

bool js_sink_connected(const struct js_sink *sink);

/* Why the connection is not up, readable ("authorization failed (...): ..."); "" if unknown. */
void js_sink_last_error(struct js_sink *sink, char *buf, size_t len);

/*
 * nats.c closes a connection for good when a server refuses the same
 * credentials twice in a row; only a new connection tries again. Loop
 * thread, after NATS_EVENT_CLOSED: hands the worker the job and returns 0 at
 * once. The worker reports every publish the old connection still held as
 * failed (NATS_EVENT_PUBACK entries), then connects anew with the same options:
 * NATS_EVENT_CONNECTED follows when it is up, NATS_EVENT_CLOSED again (reason
 * in js_sink_last_error) when the new connection could not be made.
 * Publishes meanwhile fail with NATS_CONNECTION_CLOSED. Kept as int for
 * the callers: never returns 1 or -1 any more.
 */
int js_sink_reopen(struct js_sink *sink, char *err, size_t errlen);
/* The server's max_payload (0 before the first connect). */
int64_t js_sink_max_payload(const struct js_sink *sink);

/*
 * Makes sure OUTBOX_STREAM exists: creates it with OUTBOX_STREAM_SUBJECTS,
 * _REPLICAS, _STORAGE, _MAX_AGE and _DUPLICATE_WINDOW when missing. With
 * no stream configured, does nothing. Asks the worker and returns 0 at once
 * (outcome: js_sink_stream_state, and the log). Call on every (re)connect.
 */
int js_sink_ensure_stream(struct js_sink *sink, char *err, size_t errlen);

/*
 * The stream may be gone (a publish found no stream: "no responders" or
 * JetStream's stream-not-found): check and re-create it off the loop, at
 * most once a second. The PubAck handler calls this itself for those
 * errors; the pipeline may call it too. Any thread; never blocks.
 */
void js_sink_stream_lost(struct js_sink *sink);

enum js_stream_state {
    JS_STREAM_UNMANAGED, /* no OUTBOX_STREAM */
    JS_STREAM_CHECKING,  /* not yet checked on this connection, or being checked */
    JS_STREAM_READY,     /* exists (found or created) */
    JS_STREAM_ERROR,     /* the last check or creation failed: why */
};
/* Any thread. why (may be NULL) gets the last error for JS_STREAM_ERROR, else "". */
enum js_stream_state js_sink_stream_state(struct js_sink *sink, char *why, size_t len);

/*
 * Asks the worker to read OUTBOX_STREAM's messages after sequence `after`
 * (stream_read_tail: at most max_msgs and max_bytes, the newest). Loop
 * thread; returns at once. The answer, echoing tag, arrives as a
 * NATS_EVENT_STREAM_READ; take it with js_sink_stream_read_take. Asked
 * again before the worker started, only the last question is answered.
 */
void js_sink_read_stream(struct js_sink *sink, uint64_t tag, uint64_t after, size_t max_msgs,
                         int64_t max_bytes);
/* The worker's last answer into *out (the caller frees it with stream_read_free); false: none. */
bool js_sink_stream_read_take(struct js_sink *sink, struct stream_read *out);

/*
 * Publishes *msg asynchronously. On success nats.c owns the message and *msg
 * is NULL; its outcome arrives as exactly one NATS_EVENT_PUBACK entry carrying the
 * same pointer (its slot in the bridge is reserved here, so it cannot be
 * lost). On failure the caller still owns *msg.
 */
natsStatus js_sink_publish(struct js_sink *sink, natsMsg **msg);

/* The fence header: JetStream stores the message only after the one it names. */
#define JS_HEADER_EXPECT_LAST_MSG_ID "Nats-Expected-Last-Msg-Id"

/*
 * js_sink_publish with JetStream's Nats-Expected-Last-Msg-Id set to
 * expect_last_id (NULL: the header is removed, e.g. from a message sent
 * before and published again): the stream stores the message only if its
 * last message has that id, else the PubAck is JetStream error 10070.
 */
natsStatus js_sink_publish_after(struct js_sink *sink, natsMsg **msg, const char *expect_last_id);

/*
 * Has what was published since the last call written to the server now,
 * on the worker, rather than after nats.c's flusher pause (1 ms). Loop
 * only; call once per loop turn, after the turn's publishes: a relay at its
 * tail then delivers in a round trip, and a burst still goes in large writes.
 */
void js_sink_flush(struct js_sink *sink);

/*
 * Replaces *msg (a message published before, back from its PubAck) with a
 * copy that has no Nats-Expected-Last-Msg-Id: subject, payload and every
 * other header as they were. A fence names the message that had to precede
 * it in one chain; kept, it would be refused again (10070) once the chain
 * it belonged to is gone. On failure *msg is left as it was.
 */
natsStatus js_sink_msg_unfenced(natsMsg **msg);

/* The message's Nats-Msg-Id (its row's event_id), or NULL; valid while msg lives. */
const char *js_sink_msg_id(natsMsg *msg);

/*
 * Takes back every message nats.c still waits an ack for and reports each as
 * a failed NATS_EVENT_PUBACK with reason why (after a reconnect: those acks died
 * with the old connection). Returns how many.
 */
int js_sink_reclaim_pending(struct js_sink *sink, const char *why);

#endif
