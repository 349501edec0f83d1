/*
 * Why a row failed, as a class from a small fixed set: the `reason` label of
 * the failed and dead counters, the dead letters' reason, the logs. Which
 * publish error falls in which class is nats/publish_error.c's table. Pure.
 */
#ifndef OUTBOX_RELAY_PUBLISH_REASON_H
#define OUTBOX_RELAY_PUBLISH_REASON_H

#include <stdbool.h>

/* The reason classes; each value's label is its name without the prefix. */
enum publish_reason {
    PUBLISH_INVALID_ROW, /* the row itself is malformed: subject, event_id, headers */
    PUBLISH_TOO_LARGE,   /* message or header block over a server or stream limit */
    PUBLISH_NO_STREAM,   /* no stream takes the subject (yet): no responders, stream not found */
    PUBLISH_TIMEOUT,     /* no PubAck in time */
    PUBLISH_CONNECTION,  /* the NATS connection is down, closed or draining */
    PUBLISH_UNAVAILABLE, /* JetStream, its cluster or the stream is unavailable for now */
    PUBLISH_LIMITS,      /* a stream or account limit is full (discard new, resources) */
    PUBLISH_REJECTED,    /* the stream refuses the message by rule (sealed, expected-* failed) */
    PUBLISH_NATS_ERROR,  /* anything else: unknown errors count as transient */
    PUBLISH_OTHER,       /* counted without a class (metrics only) */
};
#define PUBLISH_REASONS 10

/* "invalid_row", "too_large", ...: a Prometheus label value. */
const char *publish_reason_label(enum publish_reason reason);
/* The label, or NULL for a value out of range. */
const char *publish_reason_name(enum publish_reason reason);
/* The reverse of publish_reason_name; false for an unknown name. */
bool publish_reason_parse(const char *name, enum publish_reason *out);

#endif
