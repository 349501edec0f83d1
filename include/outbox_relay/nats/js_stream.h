/* A JetStream stream looked up by name: the relay's own stream and the ones check inspects. */
#ifndef OUTBOX_RELAY_JS_STREAM_H
#define OUTBOX_RELAY_JS_STREAM_H

#include <stddef.h>

#include <nats/nats.h>

#include "outbox_relay/lib/config.h"

/*
 * Looks stream up on js (blocking; the wait is OUTBOX_PUBLISH_TIMEOUT_MS,
 * at least 5 s). 1 with *si (the caller destroys it), 0 when the stream does
 * not exist, -1 with err when the lookup failed.
 */
int js_stream_lookup(jsCtx *js, const struct relay_config *cfg, const char *stream,
                     jsStreamInfo **si, char *err, size_t errlen);

#endif
