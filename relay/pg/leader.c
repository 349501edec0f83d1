/* Leadership by advisory lock, kept as a lease: standbys end a silent leader's session. */
#include "outbox_relay/pg/leader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/util.h"

struct leader {
    ev_timer tick; /* standby: try the lock and watch the holder; leader: heartbeat */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source *pg;
    struct leader_events ev;
    enum leader_state state;
    bool query_running; /* a lock, watch or heartbeat query is in flight */
    bool said_standby;  /* "standing by" logged for this standby period */
    struct leader_view view;
    uint64_t takeovers;
    char *table; /* the quoted table: $1 of the lock statements */
    char *keepalive_sql;
};

/*
 * The lock key: a fixed class id and the table's oid, so relays of other
 * tables in the same database do not exclude each other, and every spelling
 * of one table ("outbox", "public.outbox") names the same lock.
 */
#define LOCK_CLASS OUTBOX_CLASS_SQL(OUTBOX_LOCK_CLASS)
static const char lock_sql[] =
    "SELECT pg_try_advisory_lock(" LOCK_CLASS ", $1::regclass::oid::int4)";
static const char unlock_sql[] =
    "SELECT pg_advisory_unlock(" LOCK_CLASS ", $1::regclass::oid::int4)";
/*
 * The holder of the lock, how long its session has been silent, and,
 * past the lease, its end. Silent = in one state longer than the lease:
 * idle (a live leader sends a heartbeat every lease/5), or one statement
 * still running (a live leader ends every statement at its deadline, at
 * most half the lease: config_statement_deadline_ms). Neither happens to
 * a leader that works, however slow its statements or its reading of a
 * result (ClientWrite); both happen to one that froze or vanished, whether
 * its backend waits idle, on a lock, or writes to a client that never
 * reads. The silence is measured from the state's start.
 */
static const char watch_sql[] =
    "SELECT a.pid, extract(epoch FROM now() - a.state_change)::float8, "
    "CASE WHEN now() - a.state_change > $1::int * interval '1 millisecond' AND $2::bool "
    "THEN pg_terminate_backend(a.pid) ELSE false END "
    "FROM pg_locks AS k JOIN pg_stat_activity AS a ON a.pid = k.pid "
    "WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2 "
    "AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND k.classid = " LOCK_CLASS "::oid AND k.objid = $3::regclass::oid "
    "AND a.pid <> pg_backend_pid() LIMIT 1";

/* A statement's parameter: pg_source frees it. */
static char *leader_table_param(const struct leader *l)
{
    return strdup(l->table);
}

static void leader_arm(struct leader *l)
{
    /* Heartbeats come five times per lease so one slow query cannot cost it. */
    double every = l->state == LEADER_LEADING ? l->cfg->leader_lease_ms / 5000.0
                                              : l->cfg->leader_retry_ms / 1000.0;
    ev_timer_stop(l->loop, &l->tick);
    if (l->state == LEADER_STOPPED)
        return;
    ev_timer_set(&l->tick, every, 0.);
    ev_timer_start(l->loop, &l->tick);
}

static void leader_set_state(struct leader *l, enum leader_state state)
{
    l->state = state;
    leader_arm(l);
}

/* Results nobody needs: the heartbeat and the keepalive settings. */
static void leader_on_ignored(void *arg, PGresult *res)
{
}

static void leader_on_released(void *arg, PGresult *res)
{
    struct leader *l = arg;
    l->query_running = false;
    if (l->state == LEADER_RELEASING)
        leader_set_state(l, LEADER_STANDBY);
}

static void leader_release(struct leader *l)
{
    char *params[1] = {leader_table_param(l)};
    if (params[0] != NULL &&
        pg_source_query(l->pg, unlock_sql, 1, params, false, leader_on_released, l)) {
        l->query_running = true;
        l->state = l->state == LEADER_STOPPED ? LEADER_STOPPED : LEADER_RELEASING;
    }
}

static void leader_on_lock(void *arg, PGresult *res)
{
    struct leader *l = arg;
    l->query_running = false;
    if (res == NULL || l->state != LEADER_ACQUIRING) {
        if (l->state == LEADER_ACQUIRING)
            leader_set_state(l, LEADER_STANDBY);
        else if (l->state == LEADER_STOPPED && res != NULL && PQntuples(res) == 1 &&
                 PQgetvalue(res, 0, 0)[0] == 't')
            leader_release(l); /* won the lock while stopping: hand it straight back */
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("leader lock query failed", "{s:s}", "error", PQresultErrorMessage(res));
        leader_set_state(l, LEADER_STANDBY);
        return;
    }
    if (PQgetvalue(res, 0, 0)[0] != 't' || !l->ev.may_lead(l->ev.arg)) {
        if (PQgetvalue(res, 0, 0)[0] == 't') {
            leader_release(l);
        } else {
            if (!l->said_standby)
                log_info("standing by: another relay holds the leader lock", "{s:s}", "table",
                         l->cfg->table);
            l->said_standby = true;
            leader_set_state(l, LEADER_STANDBY);
        }
        return;
    }
    if (l->said_standby)
        log_info("taking over as leader", "{s:s}", "table", l->cfg->table);
    l->said_standby = false;
    memset(&l->view, 0, sizeof(l->view));
    leader_set_state(l, LEADER_LEADING);
    /* Our own session, too, should not outlive a vanished peer by hours. */
    pg_source_query(l->pg, l->keepalive_sql, 0, NULL, false, leader_on_ignored, NULL);
    l->ev.elected(l->ev.arg);
}

static void leader_on_watch(void *arg, PGresult *res)
{
    struct leader *l = arg;
    l->query_running = false;
    if (res == NULL || l->state != LEADER_STANDBY)
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("leader watch query failed", "{s:s}", "error", PQresultErrorMessage(res));
        return;
    }
    bool seen = PQntuples(res) == 1;
    double silent = seen ? strtod(PQgetvalue(res, 0, 1), NULL) : 0;
    bool ended = seen && PQgetvalue(res, 0, 2)[0] == 't';
    l->view.holder_seen = seen;
    l->view.holder_silent_s = silent;
    l->view.holder_stalled = seen && silent * 1000.0 > l->cfg->leader_lease_ms;
    if (ended) {
        l->takeovers++;
        log_warn("leader session silent past its lease: ended it to take over", "{s:s, s:f, s:i}",
                 "pid", PQgetvalue(res, 0, 0), "silent_s", silent, "lease_ms",
                 l->cfg->leader_lease_ms);
    } else if (l->view.holder_stalled) {
        log_error("leader session silent past its lease and could not be ended (needs the "
                  "same role or pg_signal_backend)",
                  "{s:s, s:f}", "pid", PQgetvalue(res, 0, 0), "silent_s", silent);
    }
    if (!seen || ended)
        leader_try(l);
}

/* A standby's turn: the lock if free, else a look at its holder. */
static void leader_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct leader *l = container_of(w, struct leader, tick);
    leader_arm(l);
    if (l->query_running || pg_source_state(l->pg) != PG_READY)
        return;
    if (l->state == LEADER_LEADING) {
        /* Any statement moves the session's state_change: the lease's clock. */
        pg_source_query(l->pg, "SELECT 1", 0, NULL, false, leader_on_ignored, NULL);
        return;
    }
    if (l->state != LEADER_STANDBY)
        return;
    char *params[3];
    params[0] = str_printf("%d", l->cfg->leader_lease_ms);
    /* Only a standby that could lead ends a silent leader. */
    params[1] = strdup(l->ev.may_lead(l->ev.arg) ? "true" : "false");
    params[2] = leader_table_param(l);
    if (params[0] == NULL || params[1] == NULL || params[2] == NULL) {
        for (int i = 0; i < 3; i++)
            free(params[i]);
        return;
    }
    if (pg_source_query(l->pg, watch_sql, 3, params, false, leader_on_watch, l))
        l->query_running = true;
}

struct leader *leader_create(struct ev_loop *loop, const struct relay_config *cfg,
                             struct pg_source *pg, struct leader_events events, char *err,
                             size_t errlen)
{
    struct leader *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "leader: out of memory");
        return NULL;
    }
    l->loop = loop;
    l->cfg = cfg;
    l->pg = pg;
    l->ev = events;
    l->state = LEADER_STANDBY;
    l->table = config_table_sql(cfg);
    /* Server-side keepalive for the leader's own session (all per-session
     * settings): the server drops it soon after the peer vanishes. */
    l->keepalive_sql = str_printf("SELECT set_config('tcp_keepalives_idle', '5', false), "
                                  "set_config('tcp_keepalives_interval', '2', false), "
                                  "set_config('tcp_keepalives_count', '3', false), "
                                  "set_config('tcp_user_timeout', '%d', false)",
                                  cfg->leader_lease_ms);
    if (l->table == NULL || l->keepalive_sql == NULL) {
        leader_destroy(l);
        snprintf(err, errlen, "leader: out of memory");
        return NULL;
    }
    pg_source_statement_kind(pg, lock_sql, STATEMENT_LOCK);
    pg_source_statement_kind(pg, unlock_sql, STATEMENT_LOCK);
    pg_source_statement_kind(pg, watch_sql, STATEMENT_LOCK);
    pg_source_statement_kind(pg, l->keepalive_sql, STATEMENT_LOCK);
    ev_timer_init(&l->tick, leader_on_tick, 0., 0.);
    return l;
}

void leader_destroy(struct leader *l)
{
    if (l == NULL)
        return;
    ev_timer_stop(l->loop, &l->tick);
    free(l->table);
    free(l->keepalive_sql);
    free(l);
}

void leader_connected(struct leader *l)
{
    l->query_running = false;
    leader_try(l);
    if (l->state == LEADER_STANDBY)
        leader_arm(l);
}

void leader_disconnected(struct leader *l)
{
    bool was = l->state == LEADER_LEADING;
    l->query_running = false;
    if (l->state != LEADER_STOPPED)
        leader_set_state(l, LEADER_STANDBY);
    memset(&l->view, 0, sizeof(l->view));
    if (was)
        l->ev.deposed(l->ev.arg, "postgresql session lost (and with it the lock)");
}

void leader_try(struct leader *l)
{
    if (l->state != LEADER_STANDBY || l->query_running || pg_source_state(l->pg) != PG_READY ||
        !l->ev.may_lead(l->ev.arg))
        return;
    char *params[1] = {leader_table_param(l)};
    if (params[0] != NULL &&
        pg_source_query(l->pg, lock_sql, 1, params, false, leader_on_lock, l)) {
        l->query_running = true;
        l->state = LEADER_ACQUIRING;
    }
}

void leader_resign(struct leader *l, const char *why)
{
    if (l->state != LEADER_LEADING)
        return;
    l->state = LEADER_RELEASING;
    l->ev.deposed(l->ev.arg, why);
    leader_release(l);
    if (l->state == LEADER_RELEASING && !l->query_running)
        leader_set_state(l, LEADER_STANDBY);
}

void leader_stop(struct leader *l)
{
    bool was = l->state == LEADER_LEADING;
    l->state = LEADER_STOPPED;
    ev_timer_stop(l->loop, &l->tick);
    if (was)
        leader_release(l);
}

bool leader_is(const struct leader *l)
{
    return l->state == LEADER_LEADING;
}

enum leader_state leader_state(const struct leader *l)
{
    return l->state;
}

const struct leader_view *leader_view(const struct leader *l)
{
    return &l->view;
}

uint64_t leader_takeovers(const struct leader *l)
{
    return l->takeovers;
}
