/* /readyz and /healthz decided from the pipeline's facts. */
#include "outbox_relay/pipeline/health.h"

#include <stdio.h>

bool health_ready(const struct relay_facts *f, char *why, size_t len)
{
    if (f->pg_not_ready != NULL) {
        snprintf(why, len, "%s", f->pg_not_ready);
        return false;
    }
    if (!f->nats_up) {
        snprintf(why, len, "nats not connected");
        return false;
    }
    return true;
}

bool health_healthy(const struct relay_facts *f, char *why, size_t len)
{
    if (f->stopped) {
        snprintf(why, len, "stopped");
        return false;
    }
    if (!f->leading && f->holder_stalled) {
        snprintf(why, len, "leader stalled: its session has been silent for %.0f s",
                 f->holder_silent_s);
        return false;
    }
    if (f->leading && f->stalled_for_s > 0) {
        snprintf(why, len, "stalled: due rows but no progress for %.0f s", f->stalled_for_s);
        return false;
    }
    return true;
}
