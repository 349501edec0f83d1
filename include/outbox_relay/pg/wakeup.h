/*
 * Wake-ups: how the leader learns of new rows without making every
 * producer pay for a NOTIFY.
 *
 * NOTIFY takes a database-wide lock at commit and holds it through the
 * commit's flush, so notifying transactions commit one at a time. So the
 * trigger notifies only while the relay sleeps: the relay holds a session
 * advisory lock (class OUTBOX_SLEEP_CLASS, key the table's oid) while it
 * sleeps, and the trigger tests it with pg_try_advisory_xact_lock_shared.
 * An awake relay polls its tail instead: WAKEUP_HOT_POLL_US after a pass
 * that found rows (a page that came full is followed at once, in the pass),
 * every WAKEUP_HOT_POLL_US for WAKEUP_HOT_MS after that (a timerfd:
 * libev's epoll timers wait whole milliseconds), every 1 ms until
 * WAKEUP_EAGER_MS, and then, if it holds no rows, it goes to sleep again.
 * While rows are still in flight, or a producer's open transaction keeps it
 * from sleeping, it looks again after pauses that double up to
 * WAKEUP_POLL_MAX_MS. With OUTBOX_TAIL_POLL_US set, it looks every that
 * many microseconds instead, after rows and until WAKEUP_EAGER_MS without
 * any: fewer, fuller claims and marks for a little latency. Asleep or
 * awake, the leader also
 * looks every OUTBOX_POLL_INTERVAL_MS (sweeping from id 0 at most once a
 * second): a lost notification delays a row, never loses it.
 *
 * No row is missed by the race between a producer and the relay falling
 * asleep: a producer whose trigger saw the relay awake (and so did not
 * notify) holds the shared lock until its transaction ends, so the relay's
 * try for the sleep lock fails until that row is committed (or rolled
 * back); once the relay holds the lock it sweeps once, and every later
 * trigger notifies. Loop thread only.
 *
 * A server that allows PREPARE TRANSACTION (max_prepared_transactions > 0)
 * keeps the relay awake: PostgreSQL refuses to prepare a transaction that
 * has notified, and a trigger cannot know whether its transaction will be
 * prepared, so there no producer may be asked to notify. The relay then
 * looks at its tail every WAKEUP_POLL_MAX_MS when idle.
 */
#ifndef OUTBOX_RELAY_WAKEUP_H
#define OUTBOX_RELAY_WAKEUP_H

#include <stdbool.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pg/pg_source.h"

#define WAKEUP_HOT_MS      2   /* after rows, passes repeat every ... */
#define WAKEUP_HOT_POLL_US 500 /* ... 500 us this long, */
#define WAKEUP_EAGER_MS    10  /* then every 1 ms this long, then sleep if idle */
#define WAKEUP_POLL_MAX_MS 50  /* a relay that cannot sleep looks at its tail this often */

/* Logged once a session when the server allows two-phase commit (poll_ms: the idle poll). */
#define WAKEUP_MSG_SLEEPLESS "the server allows PREPARE TRANSACTION: the relay stays awake"

enum wakeup_state {
    WAKEUP_OFF,    /* not leading: nothing to wake */
    WAKEUP_AWAKE,  /* relaying: producers do not notify; the relay polls its tail */
    WAKEUP_DOZING, /* the sleep lock's try is in flight */
    WAKEUP_ASLEEP, /* holds the sleep lock: producers notify; the relay waits for one */
};

struct wakeup_events {
    /* Look at the tail now (sweep: from id 0, after falling asleep). */
    void (*scan)(void *arg, bool sweep);
    void *arg;
};

struct wakeup;

struct wakeup *wakeup_create(struct ev_loop *loop, const struct relay_config *cfg,
                             struct pg_source *pg, struct wakeup_events events, char *err,
                             size_t errlen);
void wakeup_destroy(struct wakeup *w);

/* Leadership began (awake) or ended (off; the sleep lock is handed back). */
void wakeup_set_leader(struct wakeup *w, bool leader);
/* The session is gone, and with it the sleep lock. */
void wakeup_disconnected(struct wakeup *w);
/* A NOTIFY arrived. */
void wakeup_notified(struct wakeup *w);
/* A scan pass ended; found: it claimed rows; holding: rows are still in
 * flight (published, not yet marked), so the relay is not idle. */
void wakeup_pass_ended(struct wakeup *w, bool found, bool holding);
/* A claim failed: awake, look again after a pause that doubles while claims keep failing. */
void wakeup_pass_failed(struct wakeup *w);

enum wakeup_state wakeup_state(const struct wakeup *w);

#endif
