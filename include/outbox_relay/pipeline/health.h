/*
 * What /readyz and /healthz (and systemd's READY/WATCHDOG) answer, decided
 * from the facts the pipeline gathers (relay_facts). Pure.
 *
 * Ready: both ends connected, so traffic may be sent this way. Healthy: the
 * relay is making progress, or has nothing to do; a standby also fails when
 * it sees the leader's session silent past its lease, so that the table's
 * stall shows whichever replica is asked.
 */
#ifndef OUTBOX_RELAY_HEALTH_H
#define OUTBOX_RELAY_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

struct relay_facts {
    bool stopped;
    const char *pg_not_ready; /* why PostgreSQL is not ready, NULL when it is */
    bool nats_up;
    bool leading;
    bool holder_stalled; /* a standby: the lock holder's session is silent past its lease */
    double holder_silent_s;
    double stalled_for_s; /* the leader: due work without progress this long (stall_watch), or 0 */
};

/* why gets a short reason when the answer is no. */
bool health_ready(const struct relay_facts *f, char *why, size_t len);
bool health_healthy(const struct relay_facts *f, char *why, size_t len);

#endif
