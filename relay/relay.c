/* The pipeline: claim due rows, publish them in key order, record each outcome. */
#include "outbox_relay/relay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/ack_queue.h"
#include "outbox_relay/backoff.h"
#include "outbox_relay/fail_log.h"
#include "outbox_relay/inflight.h"
#include "outbox_relay/js_sink.h"
#include "outbox_relay/leader.h"
#include "outbox_relay/log.h"
#include "outbox_relay/marks.h"
#include "outbox_relay/migrate.h"
#include "outbox_relay/publish_error.h"
#include "outbox_relay/outbox_table.h"
#include "outbox_relay/pub_chain.h"
#include "outbox_relay/pg_source.h"
#include "outbox_relay/retention.h"
#include "outbox_relay/retry_timer.h"
#include "outbox_relay/scan.h"
#include "outbox_relay/table_sample.h"
#include "outbox_relay/util.h"
#include "outbox_relay/wakeup.h"

struct relay {
    ev_prepare before_sleep; /* first member: flushes marks and claims once per loop turn */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct outbox_sql sql;
    struct pg_source *pg;
    struct js_sink *js;
    struct ack_queue *acks;
    struct inflight *rows;
    struct marks *marks;
    struct leader *leader;
    struct scan scan;
    struct wakeup *wakeup;   /* NOTIFY while asleep, tail polls while awake */
    int64_t claimed_in_pass; /* rows the current scan pass claimed */
    struct retry_timer retry;
    struct table_sample *sample; /* unfinished and dead rows, oldest age */
    struct retention *retention; /* the leader prunes old published rows */
    struct metrics metrics;
    struct fail_log *fail_log; /* failed publishes, one warn line per reason per interval */
    struct pub_chain chain;    /* the fence that lets one key's publishes be pipelined */

    ev_timer poll;         /* a tail pass; a sweep at most once a second */
    ev_timer nats_lost;    /* a leader cut off from NATS gives up leadership */
    ev_timer nats_reopen;  /* a new NATS connection after nats.c gave up on one */
    ev_timer shutdown;     /* bound on the drain at SIGTERM */
    ev_timer ack_deadline; /* fails rows whose PubAck is overdue */
    /* Messages nats.c still waits an ack for whose rows the relay gave up on
     * (overdue, or dropped with leadership). They count against nats.c's
     * MaxPending, past which every publish would block the loop: reclaimed
     * before that. */
    size_t orphans;

    bool claim_running;
    bool nats_up;
    bool nats_seen; /* connected at least once: later connects are reconnects */
    int nats_reopens;
    bool draining;
    bool stopped;
    int exit_code;

    double last_progress; /* ev_now of the last committed outcome, or of idleness */
    int64_t sampled_due;  /* 1 if the last sample found a row a claim may take now */
};

static void relay_check_drained(struct relay *r);

/* ------------------------------------------------------------- outcomes */

/* The row could not be published: schedule a retry, or give up. */
static void relay_row_failed(struct relay *r, struct outbox_row *row, const char *error,
                             bool permanent, enum publish_reason reason)
{
    inflight_failed(r->rows, row);
    bool dead = permanent || row->attempts + 1 >= r->cfg->max_attempts;
    int64_t delay_ms = dead ? 0
                            : backoff_delay_ms(row->attempts + 1, r->cfg->retry_base_ms,
                                               r->cfg->retry_max_ms, backoff_random());
    /* Every failure at debug; at warn, one line per reason per interval. */
    log_debug("publish failed", "{s:I, s:s, s:b, s:i}", "id", (json_int_t)row->id, "error", error,
              "dead", dead, "attempt", row->attempts + 1);
    fail_log_record(r->fail_log, reason, row->id, error);
    /* Out of memory: forget the row; it is still unfinished in the table
     * and a later scan claims it again. */
    if (!marks_add_failed(r->marks, row, dead, delay_ms, error, reason))
        inflight_recorded(r->rows, row);
}

static void relay_publish_row(struct relay *r, struct outbox_row *row);

/* Publishes row and, pipelined, the waiting rows behind it in its key, in order. */
static void relay_publish_run(struct relay *r, struct outbox_row *row)
{
    while (row != NULL && row->state == ROW_WAITING) {
        relay_publish_row(r, row);
        if (row->state != ROW_PUBLISHING || !inflight_pipelined(r->rows))
            return; /* failed (it holds its key), or waits for the chain */
        row = row->key_next;
    }
}

/*
 * A broken chain with nothing left in flight starts anew: every row that
 * waits for it goes, each key's rows in order.
 */
static void relay_chain_resume(struct relay *r)
{
    if (!r->chain.broken || r->draining || inflight_publishing(r->rows) > 0)
        return;
    pub_chain_may_publish(&r->chain, 0);
    size_t n = 0;
    struct outbox_row **ready = inflight_ready(r->rows, &n);
    for (size_t i = 0; i < n && !r->chain.broken; i++)
        relay_publish_run(r, ready[i]);
    free(ready);
}

static void relay_publish_row(struct relay *r, struct outbox_row *row)
{
    if (row->msg == NULL) {
        /* The row was refused when claimed; the reason was kept. */
        relay_row_failed(r, row, row->invalid ? row->invalid : "invalid row", true,
                         row->invalid_reason);
        return;
    }
    if (r->chain.broken) {
        /* Nothing goes until every publish of the broken chain resolved;
         * then the chain starts anew with every waiting row, this one too. */
        if (inflight_publishing(r->rows) == 0)
            relay_chain_resume(r);
        return;
    }
    natsMsg *msg = row->msg;
    const natsMsg *identity = msg;
    struct chain_pos pos = {0, 0};
    const char *expect = NULL;
    char *event_id = NULL;
    if (r->chain.enabled) {
        /* Copied now: once published, nats.c owns msg and may free it at any time. */
        const char *id = js_sink_msg_id(msg);
        event_id = id != NULL ? strdup(id) : NULL;
        if (event_id == NULL) {
            /* Unchained, it could overtake an earlier row of its key. */
            relay_row_failed(r, row, "publish failed: out of memory", false, PUBLISH_NATS_ERROR);
            return;
        }
        expect = pub_chain_expect(&r->chain, inflight_publishing(r->rows), &pos);
    }
    natsStatus s =
        pos.epoch != 0 ? js_sink_publish_after(r->js, &msg, expect) : js_sink_publish(r->js, &msg);
    if (s == NATS_OK) {
        row->msg = NULL;
        row->chain = pos;
        inflight_sent(r->rows, row, identity, ev_now(r->loop));
        pub_chain_sent(&r->chain, &pos, event_id);
        return;
    }
    free(event_id);
    row->msg = NULL;
    natsMsg_Destroy(msg);
    row->chain.epoch = row->chain.seq = 0;
    char why[160];
    snprintf(why, sizeof(why), "publish failed: %s", natsStatus_GetText(s));
    struct publish_verdict v = publish_error_classify(s, 0);
    relay_row_failed(r, row, why, v.permanent, v.reason);
}

/*
 * A chained row whose publish failed after an earlier row of its key failed
 * goes back to the table untouched: one key at a time it would not have
 * been tried, so this is no attempt of its own; the table holds it until
 * the earlier row is published or dead.
 */
static void relay_release_behind_failure(struct relay *r, struct outbox_row *row)
{
    inflight_release(r->rows, row);
    scan_want(&r->scan, SCAN_SWEEP);
}

/*
 * A chained publish refused with 10070: the stream's last message was not
 * the one it named, because an earlier publish was not stored (it failed,
 * or was a duplicate). The row was not stored either; it is no attempt of
 * its own and waits in its place for the chain to start anew. Unless the
 * previous publish was stored: then another writer came in between, and
 * the relay falls back to one publish per key.
 */
static void relay_on_chain_refused(struct relay *r, struct outbox_row *row, natsMsg *msg)
{
    if (pub_chain_rejected(&r->chain, &row->chain) == CHAIN_OTHER_WRITER) {
        inflight_set_pipelined(r->rows, false);
        log_warn("another writer stores messages in OUTBOX_STREAM: publishing one row per "
                 "ordering_key at a time from now on (OUTBOX_PIPELINE needs the relay to be the "
                 "stream's only writer)",
                 "{s:s}", "stream", r->cfg->stream);
    }
    row->chain.epoch = row->chain.seq = 0;
    if (r->draining || inflight_behind_failure(row)) {
        /* An earlier row of its key failed: the table decides when it goes. */
        natsMsg_Destroy(msg);
        relay_release_behind_failure(r, row);
        return;
    }
    inflight_requeue(r->rows, row, msg);
}

static void relay_on_puback(struct relay *r, struct ack_entry *e)
{
    struct outbox_row *row = inflight_by_msg(r->rows, e->msg);
    if (row == NULL) {
        natsMsg_Destroy(e->msg);
        e->msg = NULL;
        /* The ack of a row given up on (overdue, or dropped with leadership). */
        if (r->orphans > 0)
            r->orphans--;
        return;
    }
    if (!e->ok && row->chain.epoch != 0 && e->js_code == JSStreamWrongLastMsgIDErr) {
        relay_on_chain_refused(r, row, e->msg);
        e->msg = NULL;
        relay_chain_resume(r);
        return;
    }
    natsMsg_Destroy(e->msg);
    e->msg = NULL;
    if (!e->ok) {
        pub_chain_failed(&r->chain, &row->chain);
        if (row->chain.epoch != 0 && inflight_behind_failure(row)) {
            relay_release_behind_failure(r, row);
            relay_chain_resume(r);
            return;
        }
        struct publish_verdict v = publish_error_classify(e->status, e->js_code);
        relay_row_failed(r, row, e->error, v.permanent, v.reason);
        relay_chain_resume(r);
        return;
    }
    if (row->chain.epoch != 0)
        pub_chain_acked(&r->chain, &row->chain, e->duplicate);
    if (e->duplicate) {
        /* A re-publish after a crash, or an event_id the application reused:
         * inside the duplicate window JetStream kept the first message. */
        r->metrics.duplicate_acks_total++;
        log_info("duplicate ack: the stream already held this event_id", "{s:I, s:I}", "id",
                 (json_int_t)row->id, "stream_seq", (json_int_t)e->stream_seq);
    }
    if (row->created_at > 0 && e->at >= row->created_at)
        metrics_observe_latency(&r->metrics, e->at - row->created_at);
    struct outbox_row *next = inflight_acked(r->rows, row);
    if (!marks_add_published(r->marks, row, e->stream_seq, e->at))
        inflight_recorded(r->rows, row); /* published again later; JetStream drops it */
    if (next != NULL && !r->draining)
        relay_publish_run(r, next);
    relay_chain_resume(r);
}

/*
 * The PubAck deadline is the relay's, not nats.c's: nats.c keeps a timeout
 * record per publish until its deadline even after the ack came, so its
 * MaxWait costs memory in proportion to rate x timeout (about 20 MB at
 * 45k msgs/s and 5 s). A late ack for an expired row matches no row and is
 * dropped; the row was retried and JetStream deduplicates it.
 */
static void relay_on_ack_overdue(void *arg, struct outbox_row *row)
{
    struct relay *r = arg;
    char why[96];
    snprintf(why, sizeof(why), "no PubAck within %d ms (OUTBOX_PUBLISH_TIMEOUT_MS)",
             r->cfg->publish_timeout_ms);
    r->orphans++;
    pub_chain_failed(&r->chain, &row->chain);
    if (row->chain.epoch != 0 && inflight_behind_failure(row)) {
        relay_release_behind_failure(r, row);
        return;
    }
    relay_row_failed(r, row, why, false, PUBLISH_TIMEOUT);
}

static void relay_on_ack_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = container_of(w, struct relay, ack_deadline);
    relay_chain_resume(r); /* a safety net: a chain left broken with nothing in flight */
    if (inflight_publishing(r->rows) == 0)
        return;
    size_t n = inflight_expire(r->rows, ev_now(loop) - r->cfg->publish_timeout_ms / 1000.0,
                               relay_on_ack_overdue, r);
    if (n > 0)
        log_warn("publishes timed out", "{s:i, s:i}", "rows", (int)n, "timeout_ms",
                 r->cfg->publish_timeout_ms);
    if (r->orphans + inflight_publishing(r->rows) >= (size_t)r->cfg->max_inflight)
        js_sink_reclaim_pending(r->js, "no PubAck: nats.c's pending publishes were reclaimed");
    relay_chain_resume(r);
    relay_check_drained(r);
}

/* ----------------------------------------------------------------- marks */

static void relay_on_recorded(void *arg, const struct mark *m, bool published)
{
    struct relay *r = arg;
    struct outbox_row *row = m->row;
    /* A published row that had failed before, or a dead row that does not
     * hold its key, ends its key's hold: later rows of the key may lie
     * anywhere above it, also below the scan's cursor. */
    bool released = row->ordering_key != NULL &&
                    (published ? row->attempts > 0 : m->dead && !r->cfg->dead_holds_key);
    if (released)
        scan_key_released(&r->scan, row->id);
    if (published) {
        r->metrics.published_total++;
        if (row->attempts > 0)
            scan_want(&r->scan, SCAN_SWEEP);
    } else if (m->dead) {
        metrics_dead(&r->metrics, m->reason);
        log_warn("row is dead", "{s:I, s:i, s:s}", "id", (json_int_t)row->id, "attempts",
                 row->attempts + 1, "error", m->error);
    } else {
        metrics_failed(&r->metrics, m->reason);
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
        scan_want(&r->scan, SCAN_SWEEP);
    r->last_progress = ev_now(r->loop);
    relay_check_drained(r);
}

static void relay_on_mark_forgotten(void *arg, struct outbox_row *row)
{
    struct relay *r = arg;
    inflight_recorded(r->rows, row);
}

/* ---------------------------------------------------------------- claims */

static void relay_on_claim(void *arg, PGresult *res)
{
    struct relay *r = arg;
    r->claim_running = false;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res != NULL)
            log_error("claim query failed", "{s:s}", "error", PQresultErrorMessage(res));
        scan_page_failed(&r->scan);
        return;
    }
    bool leading = leader_is(r->leader) && !r->draining;
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        int64_t id = outbox_claim_id(res, i);
        scan_row_seen(&r->scan, id);
        /* Held rows come back in sweeps until their mark commits: skip them. */
        if (!leading || inflight_find(r->rows, id) != NULL)
            continue;
        /* Per-key order: an earlier unfinished row of the key that the
         * relay does not hold (it committed late, below the cursor) goes
         * first; this row waits for the pass to come back. */
        int64_t prev = outbox_claim_prev(res, i);
        if (prev != 0 && inflight_find(r->rows, prev) == NULL) {
            scan_row_blocked(&r->scan, prev);
            continue;
        }
        struct outbox_row *row = outbox_row_decode(res, i, js_sink_max_payload(r->js));
        if (row == NULL)
            continue; /* out of memory: a later pass claims it again */
        r->metrics.claimed_total++;
        r->claimed_in_pass++;
        if (inflight_add(r->rows, row))
            relay_publish_row(r, row);
    }
    int64_t candidates = outbox_claim_candidates(res);
    scan_page_done(&r->scan, n, candidates >= r->cfg->batch_size || n < candidates);
    if (r->scan.state != SCAN_IN_PASS) {
        wakeup_pass_ended(r->wakeup, r->claimed_in_pass > 0);
        r->claimed_in_pass = 0;
    }
    if (n == 0 && inflight_count(r->rows) == 0)
        r->last_progress = ev_now(r->loop); /* idle is not a stall */
}

/* Claims the scanner's next page when the relay may, within both budgets. */
static void relay_claim(struct relay *r)
{
    if (r->claim_running || !leader_is(r->leader) || !r->nats_up || r->draining)
        return;
    size_t room = (size_t)r->cfg->max_inflight - inflight_count(r->rows);
    int64_t room_bytes = (int64_t)r->cfg->max_inflight_bytes - inflight_bytes(r->rows);
    if (room < (size_t)r->cfg->batch_size || room_bytes <= 0)
        return; /* backpressure: wait for acks and marks to free room */
    int64_t from;
    if (!scan_next_page(&r->scan, ev_now(r->loop), &from))
        return;
    char *params[3] = {NULL, NULL, NULL};
    if (asprintf(&params[0], "%" PRId64, from) < 0 ||
        asprintf(&params[1], "%d", r->cfg->batch_size) < 0 ||
        asprintf(&params[2], "%" PRId64, room_bytes) < 0) {
        /* Out of memory: the pass ends; the poll starts another. */
        for (int i = 0; i < 3; i++)
            free(params[i]);
        scan_page_failed(&r->scan);
        return;
    }
    if (pg_source_query(r->pg, r->sql.claim, 3, params, true, relay_on_claim, r))
        r->claim_running = true;
    else
        scan_page_failed(&r->scan);
}

/* Once per loop turn, after every event of the turn: the natural place to
 * batch — one UPDATE for all acks that arrived, then the next claim. */
static void relay_on_before_sleep(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct relay *r = (struct relay *)w;
    fail_log_flush(r->fail_log, ev_now(loop));
    if (pg_source_state(r->pg) != PG_READY)
        return;
    /* Only a leader writes outcomes: a deposed one's die with it. */
    if (leader_is(r->leader) || r->draining)
        marks_flush(r->marks);
    relay_claim(r);
}

/* ------------------------------------------------------------ leadership */

static bool relay_may_lead(void *arg)
{
    struct relay *r = arg;
    return r->nats_up && !r->draining;
}

static void relay_on_elected(void *arg)
{
    struct relay *r = arg;
    r->metrics.leader = true;
    scan_restart(&r->scan);
    retention_set_leader(r->retention, true);
    wakeup_set_leader(r->wakeup, true);
    r->last_progress = ev_now(r->loop);
    log_info("became leader", "{s:s}", "table", r->cfg->table);
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
    r->metrics.leader = false;
    scan_stop(&r->scan);
    retention_set_leader(r->retention, false);
    wakeup_set_leader(r->wakeup, false);
    marks_fence(r->marks);
    r->orphans += inflight_publishing(r->rows);
    size_t dropped = inflight_drop_all(r->rows);
    log_warn("leadership released: standing by", "{s:s, s:i}", "reason", why, "rows_dropped",
             (int)dropped);
    relay_check_drained(r);
}

static void relay_on_nats_lost_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = container_of(w, struct relay, nats_lost);
    if (!leader_is(r->leader) || r->nats_up)
        return;
    /* A leader that cannot publish only blocks a healthy standby. Outcomes
     * already known are sent first: queries run in order, so they commit
     * under the lock. */
    marks_flush(r->marks);
    leader_resign(r->leader, "nats unreachable for longer than OUTBOX_NATS_LOST_MS");
}

/* ------------------------------------------------------------------ nats */

static void relay_on_nats_connected(struct relay *r)
{
    if (!r->nats_up && r->nats_seen) {
        r->metrics.nats_reconnects_total++;
        /* Acks for what was in flight died with the old connection. */
        js_sink_reclaim_pending(r->js, "nats connection lost before the PubAck");
    }
    r->nats_up = r->nats_seen = true;
    r->metrics.nats_connected = true;
    r->nats_reopens = 0;
    ev_timer_stop(r->loop, &r->nats_lost);
    log_info("nats connected", "{s:I}", "max_payload", (json_int_t)js_sink_max_payload(r->js));
    /* Checked (or created) on js_sink's worker; it logs the outcome. */
    char err[512];
    js_sink_ensure_stream(r->js, err, sizeof(err));
    scan_want(&r->scan, SCAN_SWEEP);
    leader_try(r->leader);
}

/*
 * nats.c stops reconnecting for good when a server refuses the same
 * credentials twice (wrong password, revoked user). Staying up, not ready,
 * and saying why beats both silence and a crash loop: the server side may
 * be fixed without touching the relay.
 */
static void relay_on_nats_closed(struct relay *r)
{
    if (r->draining || r->stopped || ev_is_active(&r->nats_reopen))
        return;
    char why[640];
    js_sink_last_error(r->js, why, sizeof(why));
    int64_t delay_ms =
        backoff_delay_ms(++r->nats_reopens, 1000, r->cfg->reconnect_max_ms, backoff_random());
    log_error("nats connection closed; connecting anew", "{s:s, s:f}", "error",
              why[0] ? why : "closed by the client library", "retry_in_s", delay_ms / 1000.0);
    ev_timer_set(&r->nats_reopen, delay_ms / 1000.0, 0.);
    ev_timer_start(r->loop, &r->nats_reopen);
}

/* The reopen runs on js_sink's worker: its outcome comes back as a
 * CONNECTED or CLOSED event. */
static void relay_on_nats_reopen(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = container_of(w, struct relay, nats_reopen);
    char err[512];
    js_sink_reopen(r->js, err, sizeof(err));
}

static void relay_on_nats_down(struct relay *r)
{
    r->nats_up = false;
    r->metrics.nats_connected = false;
}

static void relay_on_acks(void *arg, struct ack_entry *entries, size_t n)
{
    struct relay *r = arg;
    if (r->js == NULL) {
        /* Tearing down: only release what nats.c handed over. */
        for (size_t i = 0; i < n; i++)
            natsMsg_Destroy(entries[i].msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct ack_entry *e = &entries[i];
        switch (e->kind) {
        case ACK_PUBACK:
            relay_on_puback(r, e);
            break;
        case ACK_NATS_DISCONNECTED:
            if (r->nats_up)
                log_warn("nats disconnected; claiming paused", NULL);
            relay_on_nats_down(r);
            if (leader_is(r->leader) && !ev_is_active(&r->nats_lost)) {
                ev_timer_set(&r->nats_lost, r->cfg->nats_lost_ms / 1000.0, 0.);
                ev_timer_start(r->loop, &r->nats_lost);
            }
            break;
        case ACK_NATS_CONNECTED:
            relay_on_nats_connected(r);
            break;
        case ACK_NATS_CLOSED:
            relay_on_nats_down(r);
            relay_on_nats_closed(r);
            break;
        }
    }
    relay_check_drained(r);
}

/* ------------------------------------------------------------ postgresql */

static bool relay_retention_query(void *arg, const char *sql, int nparams, char **params,
                                  pg_result_fn fn, void *fn_arg)
{
    struct relay *r = arg;
    return pg_source_query(r->pg, sql, nparams, params, false, fn, fn_arg);
}

static void relay_on_pg_connected(void *arg)
{
    struct relay *r = arg;
    r->metrics.pg_connected = true;
    log_info("postgresql connected", "{s:s}", "table", r->cfg->table);
    migrate_check_queued(r->pg, r->cfg);
    leader_connected(r->leader);
}

static void relay_on_pg_disconnected(void *arg, const char *why)
{
    struct relay *r = arg;
    r->metrics.pg_connected = false;
    r->metrics.pg_reconnects_total++;
    r->claim_running = false;
    /* The session, and with it the advisory locks, is gone. */
    wakeup_disconnected(r->wakeup);
    leader_disconnected(r->leader);
    relay_check_drained(r);
}

static void relay_on_pg_notified(void *arg)
{
    struct relay *r = arg;
    wakeup_notified(r->wakeup);
    scan_want(&r->scan, SCAN_NOTIFY);
}

static void relay_on_pg_fatal(void *arg, const char *why)
{
    struct relay *r = arg;
    log_error("cannot relay", "{s:s}", "error", why);
    r->exit_code = 1;
    r->stopped = true;
    ev_break(r->loop, EVBREAK_ALL);
}

/* ---------------------------------------------------------------- timers */

static void relay_on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = container_of(w, struct relay, poll);
    /* Each tick looks for new rows (cheap: the index from high_water on). A
     * sweep from id 0 re-reads every unfinished row the relay holds or must
     * skip, so it runs at most once a second however short the poll: a
     * poll-only setup (NOTIFY trigger disabled, poll at 20-50 ms) stays cheap,
     * and rows that committed late are still found within a second. */
    double sweep_every = r->cfg->poll_interval_ms < 1000 ? 1.0 : r->cfg->poll_interval_ms / 1000.0;
    bool sweep = ev_now(loop) - r->scan.last_sweep >= sweep_every - 0.001;
    scan_want(&r->scan, sweep ? SCAN_SWEEP : SCAN_TAIL);
}

/*
 * An awake relay's tail poll. No NOTIFY comes while it is awake, so nothing
 * says "a row committed late below the high water" (ids are taken at
 * insert, commits land in another order): with few rows held, as in steady
 * flow, the poll reads from id 0 and finds such a row at once, for about
 * the cost of a tail pass; with a backlog it reads above the high water and
 * late rows wait for the once-a-second sweep.
 */
static void relay_on_wakeup_scan(void *arg, bool sweep)
{
    struct relay *r = arg;
    if (inflight_count(r->rows) < (size_t)r->cfg->batch_size)
        sweep = true;
    scan_want(&r->scan, sweep ? SCAN_SWEEP : SCAN_TAIL);
}

static void relay_on_retry_due(void *arg)
{
    struct relay *r = arg;
    scan_want(&r->scan, SCAN_SWEEP);
}

static void relay_on_sampled(void *arg, const struct table_figures *f)
{
    struct relay *r = arg;
    r->metrics.pending = f->unfinished;
    r->metrics.oldest_pending_age_seconds = f->oldest_age_s;
    r->metrics.dead_rows = f->dead;
    r->sampled_due = f->any_due;
    if (!f->any_due && inflight_count(r->rows) == 0)
        r->last_progress = ev_now(r->loop); /* idle is not a stall */
}

static void relay_on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = container_of(w, struct relay, shutdown);
    log_warn("shutdown timeout: exiting with rows unresolved; they stay pending and are "
             "re-published (deduplicated) by the next relay",
             "{s:i}", "rows", (int)inflight_count(r->rows));
    r->stopped = true;
    ev_break(loop, EVBREAK_ALL);
}

static void relay_check_drained(struct relay *r)
{
    if (!r->draining || r->stopped)
        return;
    if (inflight_count(r->rows) > 0 || marks_unrecorded(r->marks) > 0)
        return;
    log_info("drained: every acknowledged row is recorded", NULL);
    leader_stop(r->leader);
    r->stopped = true;
    ev_break(r->loop, EVBREAK_ALL);
}

/* ---------------------------------------------------------------- public */

struct relay *relay_create(struct ev_loop *loop, const struct relay_config *cfg, char *err,
                           size_t errlen)
{
    struct relay *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->cfg = cfg;
    metrics_init(&r->metrics);
    outbox_sql_build(&r->sql, cfg);
    scan_init(&r->scan);
    retry_timer_init(&r->retry, loop, relay_on_retry_due, r);
    r->fail_log = fail_log_create(10.0, NULL, NULL);
    r->retention = retention_create(loop, cfg, (struct retention_hooks){relay_retention_query, r});
    r->rows = inflight_create((size_t)cfg->max_inflight);
    pub_chain_init(&r->chain, config_pipelined(cfg));
    if (r->rows != NULL)
        inflight_set_pipelined(r->rows, r->chain.enabled);
    log_info(r->chain.enabled ? "pipelining: many publishes per ordering_key in flight, fenced by "
                                "Nats-Expected-Last-Msg-Id"
                              : "pipelining off: one publish per ordering_key at a time",
             "{s:s, s:s}", "pipeline", cfg->pipeline, "stream", cfg->stream);
    r->acks = ack_queue_create(loop, relay_on_acks, r);
    struct pg_source_events pg_events = {
        .connected = relay_on_pg_connected,
        .disconnected = relay_on_pg_disconnected,
        .notified = relay_on_pg_notified,
        .fatal = relay_on_pg_fatal,
        .arg = r,
    };
    r->pg = pg_source_create(loop, cfg, pg_events);
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
    if (r->pg != NULL) {
        r->marks = marks_create(r->pg, r->sql.mark_published, r->sql.mark_failed, mark_events);
        r->leader = leader_create(loop, cfg, r->pg, leader_events);
        r->sample = table_sample_create(loop, cfg, r->pg, r->sql.sample, relay_on_sampled, r);
        r->wakeup = wakeup_create(loop, cfg, r->pg,
                                  (struct wakeup_events){.scan = relay_on_wakeup_scan, .arg = r});
    }
    if (r->rows == NULL || r->acks == NULL || r->pg == NULL || r->marks == NULL ||
        r->leader == NULL || r->fail_log == NULL || r->retention == NULL || r->wakeup == NULL ||
        r->sample == NULL) {
        snprintf(err, errlen, "out of memory");
        relay_destroy(r);
        return NULL;
    }
    if (js_sink_create(&r->js, cfg, r->acks, true, err, errlen) < 0) {
        relay_destroy(r);
        return NULL;
    }
    ev_prepare_init(&r->before_sleep, relay_on_before_sleep);
    ev_timer_init(&r->poll, relay_on_poll, cfg->poll_interval_ms / 1000.0,
                  cfg->poll_interval_ms / 1000.0);
    ev_timer_init(&r->nats_lost, relay_on_nats_lost_timeout, 0., 0.);
    ev_timer_init(&r->nats_reopen, relay_on_nats_reopen, 0., 0.);
    ev_timer_init(&r->shutdown, relay_on_shutdown_timeout, 0., 0.);
    /* Check deadlines ten times per timeout: a row fails at most 10% late. */
    double tick = cfg->publish_timeout_ms / 10000.0;
    tick = tick < 0.01 ? 0.01 : tick > 1.0 ? 1.0 : tick;
    ev_timer_init(&r->ack_deadline, relay_on_ack_deadline, tick, tick);
    r->last_progress = ev_now(loop);
    return r;
}

void relay_start(struct relay *r)
{
    ev_prepare_start(r->loop, &r->before_sleep);
    ev_timer_start(r->loop, &r->poll);
    table_sample_start(r->sample);
    ev_timer_start(r->loop, &r->ack_deadline);
    pg_source_start(r->pg);
    /* nats.c reports only background connects; an immediate one is ours to see. */
    if (js_sink_connected(r->js))
        relay_on_nats_connected(r);
}

void relay_shutdown(struct relay *r)
{
    if (r->draining) {
        log_warn("second signal: exiting without waiting for in-flight acks", NULL);
        r->exit_code = 1;
        r->stopped = true;
        ev_break(r->loop, EVBREAK_ALL);
        return;
    }
    r->draining = true;
    scan_stop(&r->scan);
    retention_set_leader(r->retention, false);
    wakeup_set_leader(r->wakeup, false);
    size_t dropped = inflight_drop_waiting(r->rows);
    log_info("shutting down: claiming stopped, waiting for in-flight acks", "{s:i, s:i, s:i}",
             "publishing", (int)inflight_publishing(r->rows), "released", (int)dropped,
             "timeout_ms", r->cfg->shutdown_timeout_ms);
    ev_timer_stop(r->loop, &r->poll);
    retry_timer_stop(&r->retry);
    ev_timer_stop(r->loop, &r->nats_reopen);
    ev_timer_set(&r->shutdown, r->cfg->shutdown_timeout_ms / 1000.0, 0.);
    ev_timer_start(r->loop, &r->shutdown);
    relay_check_drained(r);
}

void relay_destroy(struct relay *r)
{
    if (r == NULL)
        return;
    r->draining = r->stopped = true;
    ev_prepare_stop(r->loop, &r->before_sleep);
    ev_timer_stop(r->loop, &r->poll);
    retry_timer_free(&r->retry);
    ev_timer_stop(r->loop, &r->nats_lost);
    ev_timer_stop(r->loop, &r->nats_reopen);
    ev_timer_stop(r->loop, &r->ack_deadline);
    ev_timer_stop(r->loop, &r->shutdown);
    /* NATS first: its threads stop calling back before the queue goes. */
    js_sink_destroy(r->js);
    r->js = NULL;
    if (r->acks != NULL)
        ack_queue_drain(r->acks);
    /* The connection before the modules that queued queries on it: each
     * query still calls back (with no result) as it is dropped. */
    pg_source_destroy(r->pg);
    r->pg = NULL;
    leader_destroy(r->leader);
    wakeup_destroy(r->wakeup);
    table_sample_destroy(r->sample);
    retention_destroy(r->retention);
    ack_queue_destroy(r->acks);
    marks_destroy(r->marks);
    inflight_destroy(r->rows);
    pub_chain_free(&r->chain);
    fail_log_destroy(r->fail_log);
    free(r);
}

int relay_exit_code(const struct relay *r)
{
    return r->exit_code;
}

bool relay_ready(const struct relay *r, char *why, size_t len)
{
    const char *pg_why = pg_source_not_ready_reason(r->pg);
    if (pg_why != NULL) {
        snprintf(why, len, "%s", pg_why);
        return false;
    }
    if (!r->nats_up) {
        snprintf(why, len, "nats not connected");
        return false;
    }
    return true;
}

bool relay_healthy(const struct relay *r, char *why, size_t len)
{
    if (r->stopped) {
        snprintf(why, len, "stopped");
        return false;
    }
    /* A standby that sees the leader's session silent past its lease says
     * so: the table is stalled, whichever replica is asked. */
    const struct leader_view *v = leader_view(r->leader);
    if (!leader_is(r->leader) && v->holder_stalled) {
        snprintf(why, len, "leader stalled: its session has been silent for %.0f s",
                 v->holder_silent_s);
        return false;
    }
    /* Only the leader moves rows. Progress = a published, failed or dead
     * outcome recorded; or finding nothing to do. */
    bool due_work = leader_is(r->leader) && (inflight_count(r->rows) > 0 || r->sampled_due > 0 ||
                                             marks_unrecorded(r->marks) > 0);
    double idle_for = ev_now(r->loop) - r->last_progress;
    if (due_work && idle_for * 1000.0 > r->cfg->stall_timeout_ms) {
        snprintf(why, len, "stalled: due rows but no progress for %.0f s", idle_for);
        return false;
    }
    return true;
}

const struct metrics *relay_metrics(struct relay *r)
{
    r->metrics.inflight = (int64_t)inflight_count(r->rows);
    r->metrics.pg_connected = pg_source_state(r->pg) == PG_READY;
    r->metrics.nats_connected = r->nats_up;
    r->metrics.leader = leader_is(r->leader);
    r->metrics.pruned_total = r->retention != NULL ? retention_pruned_total(r->retention) : 0;
    return &r->metrics;
}
