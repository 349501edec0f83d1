/*
 * Leadership: one relay per table relays; the others stand by.
 *
 * The leader holds a session advisory lock and keeps its session busy with
 * a heartbeat. The lock alone is not enough: PostgreSQL keeps a session
 * whose client froze or whose node vanished (no FIN ever arrives) until
 * its own TCP keepalive gives up, hours by default. So leadership is a
 * lease: a standby that finds the lock holder's session silent (idle, or
 * in one statement, for longer than OUTBOX_LEADER_LEASE_MS; a working
 * leader heartbeats and ends every statement within half the lease) ends
 * that session with pg_terminate_backend, which releases the lock, and
 * takes the lock itself. A replaced leader finds its session gone and
 * cannot mark anything: its marks die with the session (fencing).
 * Loop thread only.
 */
#ifndef OUTBOX_RELAY_LEADER_H
#define OUTBOX_RELAY_LEADER_H

#include <stdbool.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_source.h"

enum leader_state {
    LEADER_STANDBY,   /* not leading; tries the lock every OUTBOX_LEADER_RETRY_MS */
    LEADER_ACQUIRING, /* the lock query is in flight */
    LEADER_LEADING,   /* holds the lock; heartbeats keep the lease */
    LEADER_RELEASING, /* handing the lock back (NATS lost, shutdown) */
    LEADER_STOPPED,   /* shutting down: never leads again */
};

struct leader_events {
    void (*elected)(void *arg);
    /* Leadership ended: the session went, or this relay released it. */
    void (*deposed)(void *arg, const char *why);
    /* May this relay lead now (NATS connected, not shutting down)? */
    bool (*may_lead)(void *arg);
    void *arg;
};

/* What a standby last saw of the leader (for probes and metrics). */
struct leader_view {
    bool holder_seen;       /* some session holds the lock */
    double holder_silent_s; /* how long that session has been silent */
    bool holder_stalled;    /* silent past the lease */
};

struct leader;

struct leader *leader_create(struct ev_loop *loop, const struct relay_config *cfg,
                             struct pg_source *pg, struct leader_events events, char *err,
                             size_t errlen);
void leader_destroy(struct leader *l);

/* PostgreSQL is connected: try the lock now. */
void leader_connected(struct leader *l);
/* The session is gone, and with it the lock. */
void leader_disconnected(struct leader *l);
/* Conditions changed (e.g. NATS came back): try now if may_lead. */
void leader_try(struct leader *l);
/* Give leadership up and hand the lock back. */
void leader_resign(struct leader *l, const char *why);
/* Shutting down: release the lock when held, never take it again. */
void leader_stop(struct leader *l);

bool leader_is(const struct leader *l);
enum leader_state leader_state(const struct leader *l);
const struct leader_view *leader_view(const struct leader *l);
/* Silent leaders whose session this relay ended. */
uint64_t leader_takeovers(const struct leader *l);

#endif
