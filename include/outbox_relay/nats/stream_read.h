/*
 * Reading the tail of a stream: which messages, by Nats-Msg-Id, the stream
 * holds after a given sequence. A new leader asks this of the stream before
 * it publishes, to find the rows an earlier term published but never marked
 * (reconcile.h). Blocking: js_sink's worker thread runs it, never the loop.
 */
#ifndef OUTBOX_RELAY_NATS_STREAM_READ_H
#define OUTBOX_RELAY_NATS_STREAM_READ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

/* One message of the tail: its sequence and its Nats-Msg-Id (owned). */
struct stream_msg {
    uint64_t seq;
    char *msg_id;
};

struct stream_read {
    uint64_t tag; /* the asker's, echoed: tells an answer for an earlier question apart */
    bool ok;      /* false: the read failed (error says why), the rest means nothing */
    char error[256];
    uint64_t last_seq;       /* the stream's last sequence when it was read */
    uint64_t unchecked;      /* messages after `after` not read: gone (purged, max age) or past the
                                budgets */
    uint64_t bytes;          /* header and payload bytes read */
    struct stream_msg *msgs; /* in sequence order; messages without a Nats-Msg-Id left out */
    size_t n;
};

/*
 * Reads the messages of `stream` after sequence `after`, at most max_msgs
 * and max_bytes of them: the newest, when there are more (those before are
 * counted as unchecked). js answers the stream's state; the messages are
 * asked of the stream API on nc, many requests in flight at once. Each
 * answer is waited for up to wait_ms. Fills *out
 * (release with stream_read_free); false with out->error on failure.
 */
bool stream_read_tail(natsConnection *nc, jsCtx *js, const char *stream, uint64_t after,
                      size_t max_msgs, int64_t max_bytes, int64_t wait_ms, struct stream_read *out);
void stream_read_free(struct stream_read *r);

#endif
