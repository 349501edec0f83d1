/* Wake-ups: NOTIFY only while the relay sleeps; an awake relay polls its tail. */
#include "outbox_relay/pg/wakeup.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/util.h"

#define WAKEUP_POLL_MIN_MS 1

struct wakeup {
    ev_timer poll; /* the next look at the tail while awake */
    /* The same while rows flow, to the microsecond: libev's epoll backend
     * waits whole milliseconds for a timer (a 1 ms pause came out near
     * 2 ms), so the tail polls are a timerfd. Only they pay its system
     * calls. */
    ev_io hot_poll;
    int hot_fd;
    bool hot_armed;
    ev_timer fallback; /* OUTBOX_POLL_INTERVAL_MS, asleep or awake: NOTIFY is only a hint */
    struct ev_loop *loop;
    struct pg_source *pg;
    struct wakeup_events ev;
    enum wakeup_state state;
    bool notified_while_dozing;
    bool sleepless;     /* the server allows two-phase commit: stay awake, producers never notify */
    double idle_since;  /* ev_now of the last pass that found rows */
    int backoff_ms;     /* the pause while the relay cannot sleep (doubles) */
    int tail_poll_us;   /* OUTBOX_TAIL_POLL_US: while rows flow, look this often; 0: adaptive */
    double sweep_every; /* the fallback poll sweeps from id 0 at most this often (s) */
    double last_sweep;  /* ev_now of the fallback poll's last sweep */
    char *table;        /* the quoted table, the parameter of both statements */
};

/*
 * The table's oid is the key: the trigger knows it as TG_RELID. NULL: the
 * server allows PREPARE TRANSACTION, which PostgreSQL refuses to a
 * transaction that has notified, so the relay never asks producers to.
 */
static const char sleep_sql[] =
    "SELECT CASE WHEN current_setting('max_prepared_transactions')::int > 0 THEN NULL ELSE"
    " pg_try_advisory_lock(" OUTBOX_CLASS_SQL(OUTBOX_SLEEP_CLASS) ", $1::regclass::oid::int4) END";
static const char wake_sql[] =
    "SELECT pg_advisory_unlock(" OUTBOX_CLASS_SQL(OUTBOX_SLEEP_CLASS) ", $1::regclass::oid::int4)";

static void wakeup_disarm_hot(struct wakeup *w)
{
    static const struct itimerspec never = {{0, 0}, {0, 0}};
    if (w->hot_armed)
        timerfd_settime(w->hot_fd, 0, &never, NULL);
    w->hot_armed = false;
}

static void wakeup_disarm(struct wakeup *w)
{
    ev_timer_stop(w->loop, &w->poll);
    wakeup_disarm_hot(w);
}

static void wakeup_arm(struct wakeup *w, int ms)
{
    wakeup_disarm(w);
    ev_timer_set(&w->poll, ms / 1000.0, 0.);
    ev_timer_start(w->loop, &w->poll);
}

/* The next look after backoff_ms, which doubles (to WAKEUP_POLL_MAX_MS) for the one after. */
static void wakeup_back_off(struct wakeup *w)
{
    wakeup_arm(w, w->backoff_ms);
    w->backoff_ms = w->backoff_ms * 2 > WAKEUP_POLL_MAX_MS ? WAKEUP_POLL_MAX_MS : w->backoff_ms * 2;
}

/* The next look in `us` microseconds (a timerfd: see hot_poll). */
static void wakeup_arm_us(struct wakeup *w, long us)
{
    struct itimerspec when = {
        .it_value = {.tv_sec = us / 1000000, .tv_nsec = us % 1000000 * 1000L}};
    ev_timer_stop(w->loop, &w->poll);
    timerfd_settime(w->hot_fd, 0, &when, NULL);
    w->hot_armed = true;
}

static void wakeup_on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct wakeup *w = container_of(t, struct wakeup, poll);
    if (w->state == WAKEUP_AWAKE)
        w->ev.scan(w->ev.arg, false);
}

static void wakeup_on_hot_poll(struct ev_loop *loop, ev_io *io, int revents)
{
    struct wakeup *w = container_of(io, struct wakeup, hot_poll);
    uint64_t expirations;
    if (read(w->hot_fd, &expirations, sizeof expirations) != sizeof expirations)
        return; /* disarmed since it became readable */
    w->hot_armed = false;
    if (w->state == WAKEUP_AWAKE)
        w->ev.scan(w->ev.arg, false);
}

/*
 * Each tick looks for new rows (cheap: the index from the high water on). A
 * sweep from id 0 re-reads every unfinished row the relay holds or must
 * skip, so it runs at most once a second however short the poll: a
 * poll-only setup (NOTIFY trigger disabled, poll at 20-50 ms) stays cheap,
 * and rows that committed late are still found within a second.
 */
static void wakeup_on_fallback(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct wakeup *w = container_of(t, struct wakeup, fallback);
    bool sweep = ev_now(loop) - w->last_sweep >= w->sweep_every - 0.001;
    if (sweep)
        w->last_sweep = ev_now(loop);
    w->ev.scan(w->ev.arg, sweep);
}

static bool wakeup_query(struct wakeup *w, const char *sql, pg_result_fn fn)
{
    char *params[1] = {strdup(w->table)};
    return params[0] != NULL && pg_source_query(w->pg, sql, 1, params, false, fn, w);
}

static void wakeup_on_unlocked(void *arg, PGresult *res)
{
}

static void wakeup_wake(struct wakeup *w)
{
    wakeup_query(w, wake_sql, wakeup_on_unlocked);
    w->state = WAKEUP_AWAKE;
    w->backoff_ms = WAKEUP_POLL_MIN_MS;
    w->idle_since = ev_now(w->loop);
}

static void wakeup_on_sleep_lock(void *arg, PGresult *res)
{
    struct wakeup *w = arg;
    if (w->state != WAKEUP_DOZING)
        return; /* leadership or the session ended meanwhile */
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        PQgetisnull(res, 0, 0)) {
        /* A two-phase producer would fail at PREPARE after the trigger's
         * NOTIFY: poll the tail every WAKEUP_POLL_MAX_MS instead. */
        log_info(WAKEUP_MSG_SLEEPLESS, "{s:i}", "poll_ms", WAKEUP_POLL_MAX_MS);
        w->sleepless = true;
        w->state = WAKEUP_AWAKE;
        wakeup_back_off(w);
        return;
    }
    bool got = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
               PQgetvalue(res, 0, 0)[0] == 't';
    if (!got) {
        /* A producer that skipped its NOTIFY is still in its transaction:
         * its row is likely a moment away, so stay awake and look again
         * soon; a long transaction makes the tries back off. */
        w->state = WAKEUP_AWAKE;
        wakeup_back_off(w);
        return;
    }
    w->state = WAKEUP_ASLEEP;
    wakeup_disarm(w);
    if (w->notified_while_dozing) {
        wakeup_wake(w);
        w->ev.scan(w->ev.arg, false);
        return;
    }
    /* Every row whose producer skipped the NOTIFY is committed by now. */
    w->ev.scan(w->ev.arg, true);
}

struct wakeup *wakeup_create(struct ev_loop *loop, const struct relay_config *cfg,
                             struct pg_source *pg, struct wakeup_events events, char *err,
                             size_t errlen)
{
    struct wakeup *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "wakeup: out of memory");
        return NULL;
    }
    w->loop = loop;
    w->pg = pg;
    w->ev = events;
    w->state = WAKEUP_OFF;
    w->table = config_table_sql(cfg);
    if (w->table == NULL) {
        snprintf(err, errlen, "wakeup: out of memory");
        free(w);
        return NULL;
    }
    w->hot_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->hot_fd < 0) {
        snprintf(err, errlen, "wakeup: cannot create its timer (timerfd_create): %s",
                 strerror(errno));
        free(w->table);
        free(w);
        return NULL;
    }
    w->tail_poll_us = cfg->tail_poll_us;
    ev_timer_init(&w->poll, wakeup_on_poll, 0., 0.);
    ev_io_init(&w->hot_poll, wakeup_on_hot_poll, w->hot_fd, EV_READ);
    ev_io_start(loop, &w->hot_poll);
    double every = cfg->poll_interval_ms / 1000.0;
    ev_timer_init(&w->fallback, wakeup_on_fallback, every, every);
    w->sweep_every = every < 1.0 ? 1.0 : every;
    pg_source_statement_kind(pg, sleep_sql, STATEMENT_WAKEUP);
    pg_source_statement_kind(pg, wake_sql, STATEMENT_WAKEUP);
    return w;
}

void wakeup_destroy(struct wakeup *w)
{
    if (w == NULL)
        return;
    ev_timer_stop(w->loop, &w->poll);
    ev_io_stop(w->loop, &w->hot_poll);
    close(w->hot_fd);
    ev_timer_stop(w->loop, &w->fallback);
    free(w->table);
    free(w);
}

void wakeup_set_leader(struct wakeup *w, bool leader)
{
    if (leader && w->state == WAKEUP_OFF) {
        ev_timer_start(w->loop, &w->fallback);
        w->state = WAKEUP_AWAKE;
        w->backoff_ms = WAKEUP_POLL_MIN_MS;
        w->idle_since = ev_now(w->loop);
        return;
    }
    if (!leader && w->state != WAKEUP_OFF) {
        if (w->state == WAKEUP_ASLEEP || w->state == WAKEUP_DOZING)
            wakeup_query(w, wake_sql, wakeup_on_unlocked);
        wakeup_disarm(w);
        ev_timer_stop(w->loop, &w->fallback);
        w->state = WAKEUP_OFF;
    }
}

void wakeup_disconnected(struct wakeup *w)
{
    w->sleepless = false; /* the next server may not allow two-phase commit */
    wakeup_disarm(w);
    ev_timer_stop(w->loop, &w->fallback);
    w->state = WAKEUP_OFF;
}

void wakeup_notified(struct wakeup *w)
{
    if (w->state == WAKEUP_ASLEEP)
        wakeup_wake(w);
    else if (w->state == WAKEUP_DOZING)
        w->notified_while_dozing = true;
}

void wakeup_pass_ended(struct wakeup *w, bool found, bool holding)
{
    if (found && w->state == WAKEUP_ASLEEP) {
        /* Rows came without a NOTIFY: the fallback poll found them (the
         * trigger disabled for a poll-only setup, a notification lost).
         * Be awake while they flow rather than wait for the next poll. */
        wakeup_wake(w);
    }
    if (w->state != WAKEUP_AWAKE)
        return;
    double now = ev_now(w->loop);
    if (found) {
        /* Rows are coming: look again after the tail pause (500 us by
         * default). Looking at once mostly found nothing: at 2,000 rows/s
         * it cost the relay's sessions 122 instead of 96 us of PostgreSQL
         * CPU per row, for the same p50 (1.08 against 1.12 ms). A page
         * that came full is followed at once, in the pass (scan.c). */
        w->idle_since = now;
        w->backoff_ms = WAKEUP_POLL_MIN_MS;
        wakeup_arm_us(w, w->tail_poll_us > 0 ? w->tail_poll_us : WAKEUP_HOT_POLL_US);
        return;
    }
    double idle_ms = (now - w->idle_since) * 1000.0;
    if (w->tail_poll_us > 0 && idle_ms < WAKEUP_EAGER_MS) {
        /* A fixed pause while rows flow: each claim finds the rows of one
         * pause, and their marks go together, for about half the pause in
         * latency. */
        wakeup_arm_us(w, w->tail_poll_us);
        return;
    }
    if (idle_ms < WAKEUP_HOT_MS) {
        /* Rows came a moment ago: in a dense flow the next one is likely
         * committing now, and a row that commits during a pause waits half
         * of it on average. Shorter pauses trade CPU, in the relay and in
         * PostgreSQL, for latency; docs/performance.md has the figures. */
        wakeup_arm_us(w, WAKEUP_HOT_POLL_US);
        return;
    }
    if (idle_ms < WAKEUP_EAGER_MS) {
        /* Between two rows of a steady flow: the next is likely a
         * millisecond away, and waiting for a doubled pause delayed it. */
        wakeup_arm(w, WAKEUP_POLL_MIN_MS);
        return;
    }
    if (holding) {
        /* Nothing new, but rows in flight: not idle (a flood the budget
         * holds back, or PubAcks slow to come). Sleeping now would make
         * every producer notify while the relay is still busy. */
        wakeup_back_off(w);
        return;
    }
    if (w->sleepless) {
        wakeup_back_off(w);
        return;
    }
    /*
     * No rows for WAKEUP_EAGER_MS and none in flight: hand the wake-ups back
     * to the producers.
     * A NOTIFY costs a producer nothing measurable at the rates that leave
     * such gaps, and it wakes the relay within milliseconds, where polling
     * on with growing pauses would make each row of a sparse flow wait for
     * the next pause.
     */
    if (wakeup_query(w, sleep_sql, wakeup_on_sleep_lock)) {
        w->state = WAKEUP_DOZING;
        w->notified_while_dozing = false;
    } else {
        wakeup_arm(w, w->backoff_ms);
    }
}

void wakeup_pass_failed(struct wakeup *w)
{
    /* Awake, producers do not notify: unless a poll is armed, nothing looks
     * at the table until the fallback poll. Asleep or dozing, a NOTIFY or
     * the sleep lock's answer starts the next pass. */
    if (w->state == WAKEUP_AWAKE)
        wakeup_back_off(w);
}

enum wakeup_state wakeup_state(const struct wakeup *w)
{
    return w->state;
}
