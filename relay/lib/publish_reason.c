/* The classes of why a row failed: one set for the table, the metrics and the logs. */
#include "outbox_relay/lib/publish_reason.h"

#include <string.h>

static const char *const labels[PUBLISH_REASONS] = {
    [PUBLISH_INVALID_ROW] = "invalid_row", [PUBLISH_TOO_LARGE] = "too_large",
    [PUBLISH_NO_STREAM] = "no_stream",     [PUBLISH_TIMEOUT] = "timeout",
    [PUBLISH_CONNECTION] = "connection",   [PUBLISH_UNAVAILABLE] = "unavailable",
    [PUBLISH_LIMITS] = "limits",           [PUBLISH_REJECTED] = "rejected",
    [PUBLISH_NATS_ERROR] = "nats_error",   [PUBLISH_OTHER] = "other",
};

const char *publish_reason_label(enum publish_reason reason)
{
    if ((unsigned)reason >= PUBLISH_REASONS)
        return labels[PUBLISH_NATS_ERROR];
    return labels[reason];
}

const char *publish_reason_name(enum publish_reason reason)
{
    return (unsigned)reason < PUBLISH_REASONS ? labels[reason] : NULL;
}

bool publish_reason_parse(const char *name, enum publish_reason *out)
{
    for (int r = 0; r < PUBLISH_REASONS; r++) {
        if (strcmp(labels[r], name) == 0) {
            *out = (enum publish_reason)r;
            return true;
        }
    }
    return false;
}
