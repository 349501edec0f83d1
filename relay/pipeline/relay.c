/* The pipeline: claim due rows, publish them in key order, record each outcome. */
#include "outbox_relay/pipeline/relay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/nats/nats_bridge.h"
#include "outbox_relay/lib/backoff.h"
#include "outbox_relay/pipeline/claimer.h"
#include "outbox_relay/pipeline/dead_letter.h"
#include "outbox_relay/pipeline/fail_log.h"
#include "outbox_relay/pipeline/inflight.h"
#include "outbox_relay/pipeline/outcome.h"
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/pg/leader.h"
#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/pg/marks.h"
#include "outbox_relay/pg/migrate.h"
#include "outbox_relay/nats/nats_link.h"
#include "outbox_relay/lib/publish_reason.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pipeline/publisher.h"
#include "outbox_relay/pipeline/reconcile.h"
#include "outbox_relay/pg/pg_source.h"
#include "outbox_relay/pg/retention.h"
#include "outbox_relay/pipeline/retry_timer.h"
#include "outbox_relay/pipeline/stall_watch.h"
#include "outbox_relay/pg/statement_wal.h"
#include "outbox_relay/pg/table_sample.h"
#include "outbox_relay/lib/util.h"
#include "outbox_relay/pg/wakeup.h"

/*
 * The relay's life. RUNNING: claims and publishes while it leads. DRAINING
 * (SIGTERM): claims nothing more, waits for the acks of what it published
 * and their marks, bounded by OUTBOX_SHUTDOWN_TIMEOUT_MS. STOPPED: the loop
 * is told to end; nothing starts any more.
 */
enum relay_phase { RELAY_RUNNING, RELAY_DRAINING, RELAY_STOPPED };

struct relay {
    ev_prepare before_sleep; /* first member: flushes marks and claims once per loop turn */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct outbox_sql sql;
    struct pg_source *pg;
    struct js_sink *js;
    struct nats_bridge *bridge; /* nats.c threads -> the loop: PubAcks, connection events */
    struct inflight *rows;
    struct marks *marks;
    struct leader *leader;
    struct claimer *claimer; /* the scanner's pages into held rows */
    struct wakeup *wakeup;   /* NOTIFY while asleep, tail polls while awake */
    struct retry_timer retry;
    struct retry_policy retry_policy; /* outcome.h: retry or dead */
    struct table_sample *sample;      /* unfinished and dead rows, oldest age */
    struct statement_wal *wal;        /* the WAL of the relay's statements, where measurable */
    struct retention *retention;      /* the leader prunes old published rows */
    struct dead_letter *dead_letter;  /* the leader publishes dead rows to their subject */
    struct metrics metrics;
    struct fail_log *fail_log;   /* failed publishes, one warn line per reason per interval */
    struct publisher *publisher; /* rows to JetStream, PubAcks, the fence */
    struct nats_link *nats;      /* NATS up or down, reopening */
    struct reconcile *reconcile; /* a new term looks in the stream before it publishes */

    ev_timer shutdown; /* bound on the drain at SIGTERM */

    enum relay_phase phase;
    int exit_code;

    struct stall_watch stall; /* /healthz: due work but no progress */
};

static void relay_check_drained(struct relay *r);

/* The one way to STOPPED: the loop ends and main exits with exit_code. */
static void relay_stop(struct relay *r, int exit_code)
{
    if (exit_code != 0)
        r->exit_code = exit_code;
    r->phase = RELAY_STOPPED;
    ev_break(r->loop, EVBREAK_ALL);
}

/* ------------------------------------------------------------- outcomes */

/* The row could not be published (the publisher already holds its key):
 * schedule a retry, or give up (outcome.h decides). */
static void relay_on_failed(void *arg, struct outbox_row *row, const char *error, bool permanent,
                            enum publish_reason reason)
{
    struct relay *r = arg;
    struct failure_facts facts = {
        .permanent = permanent,
        .reason = reason,
        .attempts = row->attempts,
        .unanswered = publisher_unanswered_since(r->publisher, row->sent_at),
        .nats_up = nats_link_up(r->nats),
    };
    struct failure_verdict v = outcome_of_failure(&facts, &r->retry_policy, backoff_random());
    /* Every failure at debug; at warn, one line per reason per interval. */
    log_debug("publish failed", "{s:I, s:s, s:b, s:i}", "id", (json_int_t)row->id, "error", error,
              "dead", v.dead, "attempt", row->attempts + 1);
    fail_log_record(r->fail_log, reason, row->id, error);
    /* Out of memory: forget the row; it is still unfinished in the table
     * and a later scan claims it again. */
    if (!marks_add_failed(r->marks, row->id, row, v.dead, v.delay_ms, v.not_an_attempt, error,
                          reason))
        inflight_recorded(r->rows, row);
}

static void relay_on_acked(void *arg, struct outbox_row *row, uint64_t stream_seq, double at,
                           bool duplicate)
{
    struct relay *r = arg;
    if (!marks_add_published(r->marks, row->id, row, stream_seq, at, row->held_key))
        inflight_recorded(r->rows, row); /* published again later; JetStream drops it */
}

static void relay_on_released(void *arg, struct outbox_row *row)
{
    struct relay *r = arg;
    claimer_want(r->claimer, SCAN_SWEEP);
}

/* ----------------------------------------------------------------- marks */

static void relay_on_recorded(void *arg, const struct mark *m, bool published)
{
    struct relay *r = arg;
    struct outbox_row *row = m->row;
    if (outcome_releases_key(row->ordering_key != NULL, row->held_key, published, m->dead,
                             r->cfg->dead_holds_key))
        claimer_key_released(r->claimer, row->id);
    if (published) {
        if (row->held_key)
            claimer_want(r->claimer, SCAN_SWEEP);
    } else if (m->dead) {
        log_warn(LOG_MSG_ROW_DEAD, "{s:I, s:i, s:s}", "id", (json_int_t)row->id, "attempts",
                 row->attempts + 1, "error", m->error);
        dead_letter_due(r->dead_letter);
    } else {
        retry_timer_schedule(&r->retry, m->delay_ms);
    }
    inflight_recorded(r->rows, row);
}

static void relay_on_batch_recorded(void *arg, bool published)
{
    struct relay *r = arg;
    /* Rows dropped behind a failed row come back by a sweep; the table's
     * per-key hold decides which may go. */
    if (!published)
        claimer_want(r->claimer, SCAN_SWEEP);
    stall_watch_progress(&r->stall, ev_now(r->loop));
    relay_check_drained(r);
}

static void relay_on_mark_forgotten(void *arg, struct outbox_row *row)
{
    struct relay *r = arg;
    inflight_recorded(r->rows, row);
}

/* ---------------------------------------------------------------- claims */

static bool relay_may_claim(void *arg)
{
    struct relay *r = arg;
    return leader_is(r->leader) && nats_link_up(r->nats) && r->phase == RELAY_RUNNING &&
           reconcile_done(r->reconcile);
}

static void relay_on_claimed(void *arg, struct outbox_row *row)
{
    struct relay *r = arg;
    publisher_send(r->publisher, row);
}

static void relay_on_pass_ended(void *arg, bool found)
{
    struct relay *r = arg;
    bool holding = inflight_count(r->rows) > 0;
    wakeup_pass_ended(r->wakeup, found, holding);
    if (!found && !holding)
        stall_watch_progress(&r->stall, ev_now(r->loop)); /* idle is not a stall */
}

static void relay_on_pass_failed(void *arg)
{
    struct relay *r = arg;
    wakeup_pass_failed(r->wakeup);
}

/* Once per loop turn, after every event of the turn: the natural place to
 * batch — one UPDATE for all acks that arrived, then the next claim. */
static void relay_on_before_sleep(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct relay *r = (struct relay *)w;
    fail_log_flush(r->fail_log, ev_now(loop));
    publisher_turn_done(r->publisher);
    if (pg_source_state(r->pg) != PG_READY)
        return;
    /* Only a leader writes outcomes: a deposed one's die with it. Gathered
     * outcomes go at once when the claims wait for the room they hold. */
    bool draining = r->phase == RELAY_DRAINING;
    if (leader_is(r->leader) || draining)
        marks_flush(r->marks, draining || claimer_needs_room(r->claimer));
    claimer_run(r->claimer, ev_now(loop));
}

/* ------------------------------------------------------------ leadership */

static bool relay_may_lead(void *arg)
{
    struct relay *r = arg;
    return nats_link_up(r->nats) && r->phase == RELAY_RUNNING;
}

static void relay_on_elected(void *arg)
{
    struct relay *r = arg;
    claimer_restart(r->claimer);
    retention_set_leader(r->retention, true);
    dead_letter_set_leader(r->dead_letter, true);
    wakeup_set_leader(r->wakeup, true);
    stall_watch_progress(&r->stall, ev_now(r->loop));
    log_info(LOG_MSG_BECAME_LEADER, "{s:s}", "table", r->cfg->table);
    /* Nothing is claimed until the stream says what earlier terms left unmarked. */
    reconcile_start(r->reconcile);
}

static void relay_on_reconciled(void *arg)
{
    struct relay *r = arg;
    claimer_want(r->claimer, SCAN_SWEEP);
}

/*
 * Fencing: a deposed leader keeps nothing. Outcomes not yet written and
 * rows it holds are dropped; the new leader claims them again and
 * JetStream drops the re-published duplicates by Nats-Msg-Id. Acks still
 * due for dropped publishes match no row (orphans).
 */
static void relay_on_deposed(void *arg, const char *why)
{
    struct relay *r = arg;
    claimer_stop(r->claimer);
    reconcile_stop(r->reconcile);
    retention_set_leader(r->retention, false);
    dead_letter_set_leader(r->dead_letter, false);
    wakeup_set_leader(r->wakeup, false);
    marks_fence(r->marks);
    size_t dropped = publisher_drop_all(r->publisher);
    log_warn(LOG_MSG_LEADERSHIP_RELEASED, "{s:s, s:i}", "reason", why, "rows_dropped",
             (int)dropped);
    relay_check_drained(r);
}

/* A leader that cannot publish only blocks a healthy standby. Outcomes
 * already known are sent first: queries run in order, so they commit under
 * the lock. */
static void relay_on_nats_lost(void *arg)
{
    struct relay *r = arg;
    if (!leader_is(r->leader))
        return;
    marks_flush(r->marks, true);
    leader_resign(r->leader, LOG_REASON_NATS_LOST);
}

static void relay_on_nats_up(void *arg)
{
    struct relay *r = arg;
    claimer_want(r->claimer, SCAN_SWEEP);
    leader_try(r->leader);
}

static void relay_on_nats_events(void *arg, struct nats_event *entries, size_t n)
{
    struct relay *r = arg;
    if (r->js == NULL) {
        /* Tearing down: only release what nats.c handed over. */
        for (size_t i = 0; i < n; i++)
            natsMsg_Destroy(entries[i].msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct nats_event *e = &entries[i];
        switch (e->kind) {
        case NATS_EVENT_PUBACK:
            if (!dead_letter_on_puback(r->dead_letter, e))
                publisher_on_puback(r->publisher, e);
            break;
        case NATS_EVENT_DISCONNECTED:
        case NATS_EVENT_CONNECTED:
        case NATS_EVENT_CLOSED:
            nats_link_event(r->nats, e->kind);
            break;
        case NATS_EVENT_STREAM_READ:
            reconcile_on_stream_read(r->reconcile);
            break;
        }
    }
    relay_check_drained(r);
}

/* ------------------------------------------------------------ postgresql */

static void relay_on_pg_connected(void *arg)
{
    struct relay *r = arg;
    log_info(LOG_MSG_PG_CONNECTED, "{s:s}", "table", r->cfg->table);
    migrate_check_queued(r->pg, r->cfg);
    leader_connected(r->leader);
}

static void relay_on_pg_disconnected(void *arg, const char *why)
{
    struct relay *r = arg;
    /* The session, and with it the advisory locks, is gone. */
    wakeup_disconnected(r->wakeup);
    leader_disconnected(r->leader);
    relay_check_drained(r);
}

static void relay_on_pg_notified(void *arg)
{
    struct relay *r = arg;
    wakeup_notified(r->wakeup);
    claimer_want(r->claimer, SCAN_NOTIFY);
}

static void relay_on_pg_fatal(void *arg, const char *why)
{
    struct relay *r = arg;
    log_error("cannot relay", "{s:s}", "error", why);
    relay_stop(r, 1);
}

/* ---------------------------------------------------------------- timers */

static void relay_on_sampled(void *arg, const struct table_figures *f)
{
    struct relay *r = arg;
    r->metrics.pending = f->unfinished;
    r->metrics.oldest_pending_age_seconds = f->oldest_age_s;
    r->metrics.dead_rows = f->dead;
    stall_watch_sampled(&r->stall, f->any_due, inflight_count(r->rows) > 0, ev_now(r->loop));
}

static void relay_on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = container_of(w, struct relay, shutdown);
    log_warn("shutdown timeout: exiting with rows unresolved; they stay pending and are "
             "re-published (deduplicated) by the next relay",
             "{s:i}", "rows", (int)inflight_count(r->rows));
    relay_stop(r, 0);
}

static void relay_check_drained(struct relay *r)
{
    if (r->phase != RELAY_DRAINING)
        return;
    if (inflight_count(r->rows) > 0 || marks_unrecorded(r->marks) > 0)
        return;
    log_info("drained: every acknowledged row is recorded", NULL);
    leader_stop(r->leader);
    relay_stop(r, 0);
}

/* ---------------------------------------------------------------- public */

struct relay *relay_create(struct ev_loop *loop, const struct relay_config *cfg, char *err,
                           size_t errlen)
{
    struct relay *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "relay: out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cfg = cfg;
    r->retry_policy = (struct retry_policy){
        .max_attempts = cfg->max_attempts,
        .base_ms = cfg->retry_base_ms,
        .max_ms = cfg->retry_max_ms,
    };
    metrics_init(&r->metrics);
    if (!outbox_sql_build(&r->sql, cfg, &claimer_message_limits)) {
        snprintf(err, errlen, "the statements for OUTBOX_TABLE: out of memory");
        goto fail;
    }
    struct pg_source_events pg_events = {
        .connected = relay_on_pg_connected,
        .disconnected = relay_on_pg_disconnected,
        .notified = relay_on_pg_notified,
        .fatal = relay_on_pg_fatal,
        .arg = r,
    };
    struct marks_events mark_events = {
        .recorded = relay_on_recorded,
        .batch_done = relay_on_batch_recorded,
        .forgotten = relay_on_mark_forgotten,
        .arg = r,
    };
    struct leader_events leader_events = {
        .elected = relay_on_elected,
        .deposed = relay_on_deposed,
        .may_lead = relay_may_lead,
        .arg = r,
    };
    /* Each part says what it could not get; the first failure is the cause. */
    if ((r->fail_log = fail_log_create(10.0, NULL, NULL, err, errlen)) == NULL ||
        (r->rows = inflight_create((size_t)cfg->max_inflight, err, errlen)) == NULL ||
        (r->bridge = nats_bridge_create(loop, relay_on_nats_events, r, err, errlen)) == NULL ||
        (r->pg = pg_source_create(loop, cfg, pg_events, err, errlen)) == NULL ||
        (r->marks = marks_create(loop, r->pg, r->sql.mark_published, r->sql.mark_failed,
                                 cfg->mark_gather_ms, mark_events, err, errlen)) == NULL ||
        (r->leader = leader_create(loop, cfg, r->pg, leader_events, err, errlen)) == NULL ||
        (r->sample = table_sample_create(loop, cfg, r->pg, r->sql.sample, relay_on_sampled, r, err,
                                         errlen)) == NULL ||
        (r->wal = statement_wal_create(loop, cfg, r->pg, err, errlen)) == NULL ||
        (r->retention = retention_create(loop, cfg, r->pg, err, errlen)) == NULL ||
        (r->js = js_sink_create(cfg, r->bridge, err, errlen)) == NULL)
        goto fail;
    struct publisher_events publisher_events = {
        .acked = relay_on_acked,
        .failed = relay_on_failed,
        .released = relay_on_released,
        .arg = r,
    };
    struct claimer_events claimer_events = {
        .may_claim = relay_may_claim,
        .claimed = relay_on_claimed,
        .pass_ended = relay_on_pass_ended,
        .pass_failed = relay_on_pass_failed,
        .arg = r,
    };
    struct nats_link_events link_events = {
        .up = relay_on_nats_up,
        .lost_too_long = relay_on_nats_lost,
        .arg = r,
    };
    if ((r->dead_letter = dead_letter_create(loop, cfg, r->pg, r->js, err, errlen)) == NULL ||
        (r->publisher =
             publisher_create(loop, cfg, r->rows, r->js, publisher_events, err, errlen)) == NULL ||
        (r->claimer = claimer_create(cfg, r->pg, r->rows, r->js, r->sql.claim, claimer_events, err,
                                     errlen)) == NULL)
        goto fail;
    retry_timer_init(&r->retry, loop, claimer_on_sweep_due, r->claimer);
    if ((r->wakeup = wakeup_create(
             loop, cfg, r->pg, (struct wakeup_events){.scan = claimer_on_poll, .arg = r->claimer},
             err, errlen)) == NULL ||
        (r->nats = nats_link_create(loop, cfg, r->js, link_events, err, errlen)) == NULL ||
        (r->reconcile =
             reconcile_create(loop, cfg, r->pg, r->js, &r->sql,
                              (struct reconcile_events){.done = relay_on_reconciled, .arg = r}, err,
                              errlen)) == NULL)
        goto fail;
    ev_prepare_init(&r->before_sleep, relay_on_before_sleep);
    ev_timer_init(&r->shutdown, relay_on_shutdown_timeout, 0., 0.);
    stall_watch_init(&r->stall, cfg->stall_timeout_ms / 1000.0, ev_now(loop));
    return r;

fail:
    relay_destroy(r);
    return NULL;
}

void relay_start(struct relay *r)
{
    ev_prepare_start(r->loop, &r->before_sleep);
    table_sample_start(r->sample);
    statement_wal_start(r->wal);
    publisher_start(r->publisher);
    pg_source_start(r->pg);
    nats_link_start(r->nats);
}

void relay_shutdown(struct relay *r)
{
    if (r->phase != RELAY_RUNNING) {
        log_warn("second signal: exiting without waiting for in-flight acks", NULL);
        relay_stop(r, 1);
        return;
    }
    r->phase = RELAY_DRAINING;
    publisher_drain(r->publisher);
    claimer_stop(r->claimer);
    reconcile_stop(r->reconcile);
    retention_set_leader(r->retention, false);
    dead_letter_set_leader(r->dead_letter, false);
    wakeup_set_leader(r->wakeup, false);
    size_t dropped = inflight_drop_waiting(r->rows);
    log_info("shutting down: claiming stopped, waiting for in-flight acks", "{s:i, s:i, s:i}",
             "publishing", (int)inflight_publishing(r->rows), "released", (int)dropped,
             "timeout_ms", r->cfg->shutdown_timeout_ms);
    retry_timer_stop(&r->retry);
    nats_link_stop(r->nats);
    ev_timer_set(&r->shutdown, r->cfg->shutdown_timeout_ms / 1000.0, 0.);
    ev_timer_start(r->loop, &r->shutdown);
    relay_check_drained(r);
}

void relay_destroy(struct relay *r)
{
    if (r == NULL)
        return;
    r->phase = RELAY_STOPPED;
    ev_prepare_stop(r->loop, &r->before_sleep);
    retry_timer_free(&r->retry);
    ev_timer_stop(r->loop, &r->shutdown);
    /* NATS first: its threads stop calling back before the bridge goes. */
    js_sink_destroy(r->js);
    r->js = NULL;
    if (r->bridge != NULL)
        nats_bridge_drain(r->bridge);
    /* The connection before the modules that queued queries on it: each
     * query still calls back (with no result) as it is dropped. */
    pg_source_destroy(r->pg);
    r->pg = NULL;
    leader_destroy(r->leader);
    wakeup_destroy(r->wakeup);
    table_sample_destroy(r->sample);
    statement_wal_destroy(r->wal);
    retention_destroy(r->retention);
    dead_letter_destroy(r->dead_letter);
    nats_bridge_destroy(r->bridge);
    marks_destroy(r->marks);
    inflight_destroy(r->rows);
    publisher_destroy(r->publisher);
    claimer_destroy(r->claimer);
    reconcile_destroy(r->reconcile);
    nats_link_destroy(r->nats);
    fail_log_destroy(r->fail_log);
    outbox_sql_free(&r->sql);
    free(r);
}

int relay_exit_code(const struct relay *r)
{
    return r->exit_code;
}

void relay_facts(const struct relay *r, struct relay_facts *f)
{
    const struct leader_view *v = leader_view(r->leader);
    bool holding = inflight_count(r->rows) > 0 || marks_unrecorded(r->marks) > 0;
    *f = (struct relay_facts){
        .stopped = r->phase == RELAY_STOPPED,
        .pg_not_ready = pg_source_not_ready_reason(r->pg),
        .nats_up = nats_link_up(r->nats),
        .leading = leader_is(r->leader),
        .holder_stalled = v->holder_stalled,
        .holder_silent_s = v->holder_silent_s,
        .stalled_for_s =
            stall_watch_stalled_for(&r->stall, leader_is(r->leader), holding, ev_now(r->loop)),
    };
}

const struct metrics *relay_metrics(struct relay *r)
{
    r->metrics.claimed_total = (uint64_t)claimer_claimed_total(r->claimer);
    r->metrics.inflight = (int64_t)inflight_count(r->rows);
    r->metrics.pg_connected = pg_source_state(r->pg) == PG_READY;
    r->metrics.pg_reconnects_total = pg_source_lost_total(r->pg);
    r->metrics.statements = *pg_source_statement_stats(r->pg);
    r->metrics.wal = *statement_wal_figures(r->wal);
    const struct mark_counts *marked = marks_counts(r->marks);
    r->metrics.published_total = marked->published;
    r->metrics.failed_total = r->metrics.dead_total = 0;
    for (int k = 0; k < PUBLISH_REASONS; k++) {
        r->metrics.failed_by_reason[k] = marked->failed_by_reason[k];
        r->metrics.dead_by_reason[k] = marked->dead_by_reason[k];
        r->metrics.failed_total += marked->failed_by_reason[k];
        r->metrics.dead_total += marked->dead_by_reason[k];
    }
    r->metrics.duplicate_acks_total = publisher_duplicate_acks(r->publisher);
    r->metrics.latency = *publisher_latency(r->publisher);
    r->metrics.nats_connected = nats_link_up(r->nats);
    r->metrics.nats_reconnects_total = nats_link_reconnects(r->nats);
    r->metrics.leader = leader_is(r->leader);
    r->metrics.leader_stalled = leader_view(r->leader)->holder_stalled;
    r->metrics.leader_silent_seconds = leader_view(r->leader)->holder_silent_s;
    r->metrics.takeovers_total = leader_takeovers(r->leader);
    r->metrics.pruned_total = r->retention != NULL ? retention_pruned_total(r->retention) : 0;
    r->metrics.retention_failures_total =
        r->retention != NULL ? retention_failures_total(r->retention) : 0;
    r->metrics.dead_letters_total =
        r->dead_letter != NULL ? dead_letter_published_total(r->dead_letter) : 0;
    r->metrics.dead_letter_failures_total =
        r->dead_letter != NULL ? dead_letter_failures_total(r->dead_letter) : 0;
    r->metrics.retention_failing = r->retention != NULL && retention_failing(r->retention);
    r->metrics.republished_total =
        r->metrics.duplicate_acks_total +
        (r->reconcile != NULL ? reconcile_unchecked_total(r->reconcile) : 0);
    return &r->metrics;
}
