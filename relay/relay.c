/* The pipeline: leadership, scanning and claiming, publishing in key order, batched marks. */
#include "outbox_relay/relay.h"

#include <endian.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outbox_relay/ack_queue.h"
#include "outbox_relay/backoff.h"
#include "outbox_relay/inflight.h"
#include "outbox_relay/js_sink.h"
#include "outbox_relay/log.h"
#include "outbox_relay/message.h"
#include "outbox_relay/pg_source.h"

/* One row's outcome, waiting to be written to the table. */
struct mark {
    struct outbox_row *row;
    uint64_t stream_seq; /* published */
    double acked_at;     /* published: wall-clock seconds */
    bool dead;           /* failed: give up (else retry after delay_ms) */
    int64_t delay_ms;
    char *error;
};

struct mark_list {
    struct mark *items;
    size_t n, cap;
};

struct relay;

/* A mark query in flight: the outcomes it writes, to retire or retry. */
struct mark_query {
    struct relay *relay;
    bool published;
    struct mark_list marks;
};

struct relay {
    ev_prepare before_sleep; /* first member: flushes marks and claims once per loop turn */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source *pg;
    struct js_sink *js;
    struct ack_queue *acks;
    struct inflight *rows;
    struct metrics metrics;

    ev_timer poll;         /* fallback sweep */
    ev_timer retry;        /* the earliest scheduled retry is due */
    ev_timer leader_retry; /* a standby tries the lock again */
    ev_timer sample;       /* pending count and oldest age */
    ev_timer nats_lost;    /* a leader cut off from NATS gives up leadership */
    ev_timer nats_reopen;  /* a new NATS connection after nats.c gave up on one */
    ev_timer shutdown;     /* bound on the drain at SIGTERM */
    ev_timer ack_deadline; /* fails rows whose PubAck is overdue */
    /* Messages nats.c still waits an ack for whose rows the relay gave up on
     * (overdue). They count against nats.c's MaxPending, past which every
     * publish would block the loop: reclaimed before that. */
    size_t orphans;

    bool leader;
    bool lock_running;
    bool nats_up;
    bool draining;
    bool stopped;
    int exit_code;

    /* Scanning. A pass walks due rows in id order from a cursor, a page per
     * claim query, until a short page. Tail passes start at high_water (new
     * rows); sweeps start at 0 and also find retries that became due and rows
     * whose transaction committed after higher ids were claimed. */
    bool claim_running;
    bool scan_wanted;
    bool sweep_wanted;
    bool in_pass;
    bool pass_is_sweep;
    bool notified;      /* a NOTIFY arrived since the current pass began */
    bool pass_notified; /* the current pass was started by a NOTIFY */
    double last_sweep;  /* ev_now when the last sweep began */
    int64_t cursor;
    int64_t high_water;
    /* A key's hold ended (its failed row was published, or went dead and dead
     * rows do not hold): its later rows may lie anywhere above that row, also
     * below the cursor. The pass goes back to `rewind`, and keyed rows of a
     * claim sent before (`claim_epoch` moved on) are left for it, lest a row
     * above the cursor overtake earlier rows of its key. */
    int64_t rewind; /* INT64_MAX: none */
    uint64_t claim_epoch, claim_sent_epoch;

    struct mark_list to_publish; /* acked rows, to mark published */
    struct mark_list to_fail;    /* failed rows, to mark failed or dead */
    bool publish_mark_running;
    bool fail_mark_running;
    double *retry_due; /* ev_now times at which failed rows become due, unordered */
    size_t nretry_due, retry_due_cap;
    bool sample_running;

    double last_progress; /* ev_now of the last committed outcome, or of idleness */
    int64_t sampled_due;  /* 1 if the last sample found a row a claim may take now */
    bool nats_seen;       /* connected at least once: later connects are reconnects */
    int nats_reopens;     /* NATS connections closed by nats.c in a row, for the backoff */

    char claim_sql[1024];
    char mark_published_sql[512];
    char mark_failed_sql[640];
    char lock_sql[160];
    char unlock_sql[160];
    char sample_sql[1536];
};

#define RELAY_FROM(ptr, member) ((struct relay *)((char *)(ptr)-offsetof(struct relay, member)))

static void relay_publish_row(struct relay *r, struct outbox_row *row);
static void relay_check_drained(struct relay *r);

/* ---------------------------------------------------------------- helpers */

static bool mark_list_push(struct mark_list *l, const struct mark *m)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct mark *items = realloc(l->items, cap * sizeof(*items));
        if (items == NULL)
            return false;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = *m;
    return true;
}

static void mark_list_free(struct mark_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].error);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* A growable string for array literals sent as query parameters. */
struct strbuf {
    char *s;
    size_t n, cap;
    bool oom;
};

static void sb_reserve(struct strbuf *b, size_t more)
{
    if (b->oom || b->n + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (s == NULL) {
        b->oom = true;
        return;
    }
    b->s = s;
    b->cap = cap;
}

static void sb_putc(struct strbuf *b, char c)
{
    sb_reserve(b, 1);
    if (!b->oom) {
        b->s[b->n++] = c;
        b->s[b->n] = '\0';
    }
}

static void sb_printf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[64];
    int len = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    sb_reserve(b, (size_t)len);
    if (!b->oom) {
        memcpy(b->s + b->n, tmp, (size_t)len + 1);
        b->n += (size_t)len;
    }
}

/* An element of a text[] literal: always quoted, with " and \ escaped. */
static void sb_put_array_text(struct strbuf *b, const char *s)
{
    sb_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_putc(b, '\\');
        sb_putc(b, *s);
    }
    sb_putc(b, '"');
}

static char *sb_take(struct strbuf *b)
{
    if (b->oom) {
        free(b->s);
        return NULL;
    }
    return b->s;
}

/* ------------------------------------------------------------- outcomes */

/* The row could not be published: schedule a retry, or give up. */
static void relay_row_failed(struct relay *r, struct outbox_row *row, const char *error,
                             bool permanent)
{
    struct mark m = {.row = row};
    inflight_failed(r->rows, row);
    m.dead = permanent || row->attempts + 1 >= r->cfg->max_attempts;
    if (!m.dead)
        m.delay_ms = backoff_delay_ms(row->attempts + 1, r->cfg->retry_base_ms,
                                      r->cfg->retry_max_ms, backoff_random());
    m.error = strdup(error);
    log_debug("publish failed", "{s:I, s:s, s:b, s:i}", "id", (json_int_t)row->id, "error", error,
              "dead", m.dead, "attempt", row->attempts + 1);
    if (!mark_list_push(&r->to_fail, &m)) {
        /* Out of memory: forget the row; it is still pending in the table and
         * a later scan re-claims it. */
        free(m.error);
        inflight_recorded(r->rows, row);
    }
}

/* Arms the retry timer for the earliest due time still ahead; drops those passed. */
static void relay_arm_retry(struct relay *r)
{
    double now = ev_now(r->loop), next = 0;
    size_t kept = 0;
    for (size_t i = 0; i < r->nretry_due; i++) {
        if (r->retry_due[i] <= now)
            continue;
        if (kept == 0 || r->retry_due[i] < next)
            next = r->retry_due[i];
        r->retry_due[kept++] = r->retry_due[i];
    }
    r->nretry_due = kept;
    ev_timer_stop(r->loop, &r->retry);
    if (kept > 0) {
        ev_timer_set(&r->retry, next - now, 0.);
        ev_timer_start(r->loop, &r->retry);
    }
}

/*
 * A failure is recorded: the row becomes due delay_ms after the UPDATE, by
 * the database's clock. Counting from now (after the commit) the timer
 * cannot fire before the row is due; a timer armed at the failure itself
 * did, its sweep found nothing, and the row waited for the fallback poll.
 * Every row keeps its own due time: one timer for the earliest alone left
 * the later ones to the poll as well.
 */
static void relay_schedule_retry(struct relay *r, int64_t delay_ms)
{
    if (r->nretry_due == r->retry_due_cap) {
        size_t cap = r->retry_due_cap ? r->retry_due_cap * 2 : 64;
        double *due = realloc(r->retry_due, cap * sizeof(*due));
        if (due == NULL)
            return; /* the fallback poll finds the row */
        r->retry_due = due;
        r->retry_due_cap = cap;
    }
    ev_now_update(r->loop);
    /* 2 ms: the database's clock may run a hair ahead of ours. */
    double at = ev_now(r->loop) + delay_ms / 1000.0 + 0.002;
    r->retry_due[r->nretry_due++] = at;
    if (!ev_is_active(&r->retry) || ev_now(r->loop) + ev_timer_remaining(r->loop, &r->retry) > at)
        relay_arm_retry(r);
}

static void relay_publish_row(struct relay *r, struct outbox_row *row)
{
    if (row->msg == NULL) {
        /* message_build refused the row at claim time; the reason was kept. */
        relay_row_failed(r, row, row->invalid ? row->invalid : "invalid row", true);
        return;
    }
    natsMsg *msg = row->msg;
    const natsMsg *identity = msg;
    row->msg = NULL;
    natsStatus s = js_sink_publish(r->js, &msg);
    if (s == NATS_OK) {
        inflight_sent(r->rows, row, identity, ev_now(r->loop));
        return;
    }
    natsMsg_Destroy(msg);
    char why[160];
    snprintf(why, sizeof(why), "publish failed: %s", natsStatus_GetText(s));
    relay_row_failed(r, row, why, message_error_is_permanent(s, 0));
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
    relay_row_failed(r, row, why, false);
}

static void relay_on_ack_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, ack_deadline);
    if (inflight_publishing(r->rows) == 0)
        return;
    size_t n = inflight_expire(r->rows, ev_now(loop) - r->cfg->publish_timeout_ms / 1000.0,
                               relay_on_ack_overdue, r);
    if (n > 0)
        log_warn("publishes timed out", "{s:i, s:i}", "rows", (int)n, "timeout_ms",
                 r->cfg->publish_timeout_ms);
    if (r->orphans + inflight_publishing(r->rows) >= (size_t)r->cfg->max_inflight)
        js_sink_reclaim_pending(r->js, "no PubAck: nats.c's pending publishes were reclaimed");
    relay_check_drained(r);
}

static void relay_on_puback(struct relay *r, struct ack_entry *e)
{
    struct outbox_row *row = inflight_by_msg(r->rows, e->msg);
    natsMsg_Destroy(e->msg);
    e->msg = NULL;
    if (row == NULL) {
        /* The ack of a row given up on (overdue), now matched. */
        if (r->orphans > 0)
            r->orphans--;
        return;
    }
    if (!e->ok) {
        relay_row_failed(r, row, e->error, message_error_is_permanent(e->status, e->js_code));
        return;
    }
    struct mark m = {.row = row, .stream_seq = e->stream_seq, .acked_at = e->at};
    if (row->created_at > 0 && e->at >= row->created_at)
        metrics_observe_latency(&r->metrics, e->at - row->created_at);
    struct outbox_row *next = inflight_acked(r->rows, row);
    if (!mark_list_push(&r->to_publish, &m))
        inflight_recorded(r->rows, row); /* re-published later; JetStream dedups it */
    if (next != NULL && !r->draining)
        relay_publish_row(r, next);
}

static void relay_on_nats_lost_timeout(struct ev_loop *loop, ev_timer *w, int revents);
static void relay_try_lead(struct relay *r);

static void relay_on_nats_connected(struct relay *r)
{
    char err[512];
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
    if (js_sink_ensure_stream(r->js, err, sizeof(err)) < 0)
        log_error("stream not ready", "{s:s}", "error", err);
    r->scan_wanted = r->sweep_wanted = true;
    relay_try_lead(r);
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

static void relay_on_nats_reopen(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, nats_reopen);
    char err[512];
    int rc = js_sink_reopen(r->js, err, sizeof(err));
    if (rc < 0) {
        log_error("nats connection not reopened", "{s:s}", "error", err);
        relay_on_nats_closed(r);
    } else if (rc > 0) {
        relay_on_nats_connected(r);
    }
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
            r->nats_up = false;
            r->metrics.nats_connected = false;
            if (r->leader && !ev_is_active(&r->nats_lost)) {
                ev_timer_set(&r->nats_lost, r->cfg->nats_lost_ms / 1000.0, 0.);
                ev_timer_start(r->loop, &r->nats_lost);
            }
            break;
        case ACK_NATS_CONNECTED:
            relay_on_nats_connected(r);
            break;
        case ACK_NATS_CLOSED:
            r->nats_up = false;
            r->metrics.nats_connected = false;
            relay_on_nats_closed(r);
            break;
        }
    }
    relay_check_drained(r);
}

/* ----------------------------------------------------------------- marks */

static void relay_on_mark_done(void *arg, PGresult *res)
{
    struct mark_query *mq = arg;
    struct relay *r = mq->relay;
    struct mark_list *pending = mq->published ? &r->to_publish : &r->to_fail;
    if (mq->published)
        r->publish_mark_running = false;
    else
        r->fail_mark_running = false;

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        /* Not recorded: the outcomes stay known, so queue them again; they
         * are written after the reconnect. */
        if (res != NULL) {
            log_error("marking rows failed", "{s:s}", "error", PQresultErrorMessage(res));
            pg_source_reset(r->pg, "mark query failed");
        }
        for (size_t i = 0; i < mq->marks.n; i++) {
            if (!mark_list_push(pending, &mq->marks.items[i])) {
                free(mq->marks.items[i].error);
                inflight_recorded(r->rows, mq->marks.items[i].row);
            }
        }
        free(mq->marks.items);
        free(mq);
        return;
    }

    /* Rows dropped behind a failed row come back by a sweep (the table's
     * per-key hold decides which may go); a published row that had failed
     * before releases its key's hold in the table. Either way: sweep. */
    bool sweep = !mq->published;
    for (size_t i = 0; i < mq->marks.n; i++) {
        struct mark *m = &mq->marks.items[i];
        bool released = m->row->ordering_key != NULL &&
                        (mq->published ? m->row->attempts > 0 : m->dead && !r->cfg->dead_holds_key);
        if (released) {
            r->claim_epoch++;
            if (m->row->id < r->rewind)
                r->rewind = m->row->id;
        }
        if (mq->published) {
            r->metrics.published_total++;
            sweep = sweep || m->row->attempts > 0;
        } else if (m->dead) {
            r->metrics.dead_total++;
            log_warn("row is dead", "{s:I, s:i, s:s}", "id", (json_int_t)m->row->id, "attempts",
                     m->row->attempts + 1, "error", m->error);
        } else {
            r->metrics.failed_total++;
            relay_schedule_retry(r, m->delay_ms);
        }
        inflight_recorded(r->rows, m->row);
    }
    if (sweep)
        r->scan_wanted = r->sweep_wanted = true;
    r->last_progress = ev_now(r->loop);
    mark_list_free(&mq->marks);
    free(mq);
    relay_check_drained(r);
}

static void relay_send_marks(struct relay *r, bool published)
{
    struct mark_list *pending = published ? &r->to_publish : &r->to_fail;
    bool *running = published ? &r->publish_mark_running : &r->fail_mark_running;
    if (pending->n == 0 || *running)
        return;

    struct strbuf ids = {0}, a = {0}, b = {0}, c = {0};
    sb_putc(&ids, '{');
    sb_putc(&a, '{');
    sb_putc(&b, '{');
    sb_putc(&c, '{');
    for (size_t i = 0; i < pending->n; i++) {
        struct mark *m = &pending->items[i];
        const char *sep = i ? "," : "";
        sb_printf(&ids, "%s%" PRId64, sep, m->row->id);
        if (published) {
            sb_printf(&a, "%s%" PRIu64, sep, m->stream_seq);
            sb_printf(&b, "%s%.6f", sep, m->acked_at);
        } else {
            sb_printf(&a, "%s%s", sep, m->dead ? "dead" : "failed");
            sb_printf(&b, "%s%" PRId64, sep, m->delay_ms);
            if (i)
                sb_putc(&c, ',');
            sb_put_array_text(&c, m->error ? m->error : "");
        }
    }
    sb_putc(&ids, '}');
    sb_putc(&a, '}');
    sb_putc(&b, '}');
    sb_putc(&c, '}');

    struct mark_query *mq = calloc(1, sizeof(*mq));
    char *params[4] = {sb_take(&ids), sb_take(&a), sb_take(&b), sb_take(&c)};
    int nparams = published ? 3 : 4;
    if (published) {
        free(params[3]);
        params[3] = NULL;
    }
    bool oom = mq == NULL;
    for (int i = 0; i < nparams; i++)
        oom = oom || params[i] == NULL;
    if (oom) {
        for (int i = 0; i < 4; i++)
            free(params[i]);
        free(mq);
        return; /* try again next loop turn */
    }
    mq->relay = r;
    mq->published = published;
    mq->marks = *pending;
    memset(pending, 0, sizeof(*pending));
    if (!pg_source_query(r->pg, published ? r->mark_published_sql : r->mark_failed_sql, nparams,
                         params, false, relay_on_mark_done, mq)) {
        *pending = mq->marks; /* not connected: keep them for later */
        free(mq);
        return;
    }
    *running = true;
}

/* ---------------------------------------------------------------- claims */

static int64_t be64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)be64toh(v);
}

static double befloat8(const char *p)
{
    uint64_t v;
    double d;
    memcpy(&v, p, 8);
    v = be64toh(v);
    memcpy(&d, &v, 8);
    return d;
}

static int32_t be32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)be32toh(v);
}

/* Column order of claim_sql. */
enum { C_ID, C_EVENT_ID, C_SUBJECT, C_PAYLOAD, C_HEADERS, C_KEY, C_ATTEMPTS, C_CREATED };

static struct outbox_row *relay_row_from_result(struct relay *r, PGresult *res, int i)
{
    struct outbox_row *row = calloc(1, sizeof(*row));
    if (row == NULL)
        return NULL;
    row->id = be64(PQgetvalue(res, i, C_ID));
    row->attempts = be32(PQgetvalue(res, i, C_ATTEMPTS));
    row->created_at = befloat8(PQgetvalue(res, i, C_CREATED));
    if (!PQgetisnull(res, i, C_KEY)) {
        row->ordering_key = strndup(PQgetvalue(res, i, C_KEY), (size_t)PQgetlength(res, i, C_KEY));
        if (row->ordering_key == NULL) {
            free(row);
            return NULL;
        }
    }
    /* Binary text columns are not NUL-terminated in spirit; libpq adds one. */
    char err[512];
    enum message_result mr =
        message_build(&row->msg, PQgetvalue(res, i, C_SUBJECT), PQgetvalue(res, i, C_EVENT_ID),
                      PQgetisnull(res, i, C_HEADERS) ? NULL : PQgetvalue(res, i, C_HEADERS),
                      PQgetvalue(res, i, C_PAYLOAD), (size_t)PQgetlength(res, i, C_PAYLOAD),
                      js_sink_max_payload(r->js), err, sizeof(err));
    if (mr == MESSAGE_NOMEM) {
        outbox_row_free(row);
        return NULL;
    }
    if (mr == MESSAGE_INVALID) {
        row->msg = NULL;
        row->invalid = strdup(err);
    }
    return row;
}

static void relay_on_claim(void *arg, PGresult *res)
{
    struct relay *r = arg;
    r->claim_running = false;
    if (res == NULL) {
        r->in_pass = false;
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("claim query failed", "{s:s}", "error", PQresultErrorMessage(res));
        r->in_pass = false;
        return;
    }
    int n = PQntuples(res);
    int64_t last = r->cursor;
    bool stale = r->claim_sent_epoch != r->claim_epoch;
    for (int i = 0; i < n; i++) {
        int64_t id = be64(PQgetvalue(res, i, C_ID));
        last = id;
        if (id > r->high_water)
            r->high_water = id;
        /* Held rows come back in sweeps until their mark commits: skip them. */
        if (!r->leader || r->draining || inflight_find(r->rows, id) != NULL)
            continue;
        if (stale && !PQgetisnull(res, i, C_KEY))
            continue; /* the rewound pass reads it again, in order */
        struct outbox_row *row = relay_row_from_result(r, res, i);
        if (row == NULL)
            continue; /* out of memory: a later pass re-claims it */
        r->metrics.claimed_total++;
        if (inflight_add(r->rows, row))
            relay_publish_row(r, row);
    }
    if (stale) {
        /* Redo this page (from the rewind point, if lower): it skipped rows. */
        if (n == 0 && inflight_count(r->rows) == 0)
            r->last_progress = ev_now(r->loop);
        return;
    }
    r->cursor = last;
    if (n < r->cfg->batch_size) {
        /* A tail pass that found nothing was woken for a row it cannot see
         * beyond high_water: one committed late, below it. Sweep once. */
        if (!r->pass_is_sweep && r->pass_notified && n == 0 && r->high_water > 0)
            r->scan_wanted = r->sweep_wanted = true;
        r->in_pass = false;
    }
    if (n == 0 && inflight_count(r->rows) == 0)
        r->last_progress = ev_now(r->loop); /* idle is not a stall */
}

static void relay_claim(struct relay *r)
{
    if (r->claim_running || !r->leader || !r->nats_up || r->draining)
        return;
    if (!r->in_pass && !r->scan_wanted)
        return;
    size_t room = (size_t)r->cfg->max_inflight - inflight_count(r->rows);
    if (room < (size_t)r->cfg->batch_size)
        return; /* backpressure: wait for acks and marks to free room */
    if (!r->in_pass) {
        r->pass_is_sweep = r->sweep_wanted;
        r->pass_notified = r->notified;
        r->cursor = r->sweep_wanted ? 0 : r->high_water;
        if (r->pass_is_sweep)
            r->last_sweep = ev_now(r->loop);
        r->sweep_wanted = r->scan_wanted = r->notified = false;
        r->in_pass = true;
    }
    if (r->rewind < r->cursor)
        r->cursor = r->rewind;
    r->rewind = INT64_MAX;
    r->claim_sent_epoch = r->claim_epoch;
    char *params[2];
    if (asprintf(&params[0], "%" PRId64, r->cursor) < 0)
        return;
    if (asprintf(&params[1], "%d", r->cfg->batch_size) < 0) {
        free(params[0]);
        return;
    }
    if (pg_source_query(r->pg, r->claim_sql, 2, params, true, relay_on_claim, r))
        r->claim_running = true;
}

/* Once per loop turn, after every event of the turn: the natural place to
 * batch — one UPDATE for all acks that arrived, then the next claim. */
static void relay_on_before_sleep(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct relay *r = (struct relay *)w;
    if (pg_source_state(r->pg) != PG_READY)
        return;
    relay_send_marks(r, true);
    relay_send_marks(r, false);
    relay_claim(r);
}

/* ------------------------------------------------------------ leadership */

static void relay_become_standby(struct relay *r, const char *why)
{
    if (r->leader)
        log_warn("leadership released", "{s:s}", "reason", why);
    r->leader = false;
    r->metrics.leader = false;
    r->in_pass = false;
    inflight_drop_waiting(r->rows);
    if (!r->draining && !ev_is_active(&r->leader_retry)) {
        ev_timer_set(&r->leader_retry, r->cfg->leader_retry_ms / 1000.0, 0.);
        ev_timer_start(r->loop, &r->leader_retry);
    }
}

static void relay_on_lock(void *arg, PGresult *res)
{
    struct relay *r = arg;
    r->lock_running = false;
    if (res == NULL)
        return;
    bool got = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
               PQgetvalue(res, 0, 0)[0] == 't';
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        log_error("leader lock query failed", "{s:s}", "error", PQresultErrorMessage(res));
    if (got && !r->draining) {
        r->leader = true;
        r->metrics.leader = true;
        r->scan_wanted = r->sweep_wanted = true;
        r->high_water = 0;
        r->last_progress = ev_now(r->loop);
        log_info("became leader", "{s:s}", "table", r->cfg->table);
        return;
    }
    if (got) {
        /* Shutting down: hand the lock straight back. */
        pg_source_query(r->pg, r->unlock_sql, 0, NULL, false, relay_on_lock, r);
        r->lock_running = true;
        return;
    }
    if (!r->leader)
        relay_become_standby(r, "another relay holds the lock");
}

static void relay_try_lead(struct relay *r)
{
    if (r->leader || r->lock_running || r->draining || !r->nats_up ||
        pg_source_state(r->pg) != PG_READY)
        return;
    if (pg_source_query(r->pg, r->lock_sql, 0, NULL, false, relay_on_lock, r))
        r->lock_running = true;
}

static void relay_on_leader_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, leader_retry);
    relay_try_lead(r);
    if (!r->leader && !r->draining) {
        ev_timer_set(w, r->cfg->leader_retry_ms / 1000.0, 0.);
        ev_timer_start(loop, w);
    }
}

static void relay_on_unlocked(void *arg, PGresult *res)
{
    struct relay *r = arg;
    r->lock_running = false;
}

static void relay_on_nats_lost_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, nats_lost);
    if (!r->leader || r->nats_up)
        return;
    /* A leader that cannot publish only blocks a healthy standby. */
    relay_become_standby(r, "nats unreachable for longer than OUTBOX_NATS_LOST_MS");
    if (pg_source_query(r->pg, r->unlock_sql, 0, NULL, false, relay_on_unlocked, r))
        r->lock_running = true;
}

/* ------------------------------------------------------------ postgresql */

static void relay_on_pg_connected(void *arg)
{
    struct relay *r = arg;
    r->metrics.pg_connected = true;
    log_info("postgresql connected", "{s:s}", "table", r->cfg->table);
    relay_try_lead(r);
    if (!r->leader && !ev_is_active(&r->leader_retry) && !r->draining) {
        ev_timer_set(&r->leader_retry, r->cfg->leader_retry_ms / 1000.0, 0.);
        ev_timer_start(r->loop, &r->leader_retry);
    }
}

static void relay_on_pg_disconnected(void *arg, const char *why)
{
    struct relay *r = arg;
    r->metrics.pg_connected = false;
    r->metrics.pg_reconnects_total++;
    r->lock_running = false;
    r->claim_running = false;
    r->sample_running = false;
    /* The session, and with it the advisory lock, is gone. Rows in flight
     * keep their acks; their marks wait for the next connection. */
    relay_become_standby(r, "postgresql connection lost");
    relay_check_drained(r);
}

static void relay_on_pg_notified(void *arg)
{
    struct relay *r = arg;
    r->scan_wanted = r->notified = true;
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
    struct relay *r = RELAY_FROM(w, poll);
    /* Each tick looks for new rows (cheap: the index from high_water on). A
     * sweep from id 0 re-reads every unfinished row the relay holds or must
     * skip, so it runs at most once a second however short the poll: a
     * poll-only setup (NOTIFY trigger disabled, poll at 20-50 ms) stays cheap,
     * and rows that committed late are still found within a second. */
    double sweep_every = r->cfg->poll_interval_ms < 1000 ? 1.0 : r->cfg->poll_interval_ms / 1000.0;
    r->scan_wanted = true;
    if (ev_now(loop) - r->last_sweep >= sweep_every - 0.001)
        r->sweep_wanted = true;
}

static void relay_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, retry);
    r->scan_wanted = r->sweep_wanted = true;
    relay_arm_retry(r);
}

static void relay_on_sample_result(void *arg, PGresult *res)
{
    struct relay *r = arg;
    r->sample_running = false;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        return;
    r->metrics.pending = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    r->sampled_due = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    r->metrics.oldest_pending_age_seconds = strtod(PQgetvalue(res, 0, 2), NULL);
    if (r->sampled_due == 0 && inflight_count(r->rows) == 0)
        r->last_progress = ev_now(r->loop);
}

static void relay_on_sample(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, sample);
    if (r->sample_running || pg_source_state(r->pg) != PG_READY)
        return;
    if (pg_source_query(r->pg, r->sample_sql, 0, NULL, false, relay_on_sample_result, r))
        r->sample_running = true;
}

static void relay_on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct relay *r = RELAY_FROM(w, shutdown);
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
    if (inflight_count(r->rows) > 0 || r->to_publish.n > 0 || r->to_fail.n > 0 ||
        r->publish_mark_running || r->fail_mark_running)
        return;
    log_info("drained: every acknowledged row is recorded", NULL);
    r->stopped = true;
    ev_break(r->loop, EVBREAK_ALL);
}

/* ---------------------------------------------------------------- public */

static void relay_build_sql(struct relay *r)
{
    char t[160], due[512];
    config_table_sql(r->cfg, t, sizeof(t));
    /* Rows a claim may take now: the claim and the health sample share it, so
     * rows held behind their key never read as a stall. */
    snprintf(due, sizeof(due),
             "o.status IN ('pending', 'failed') "
             "AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()) "
             "AND (o.ordering_key IS NULL OR NOT EXISTS ("
             "SELECT 1 FROM %s AS h WHERE h.ordering_key = o.ordering_key AND h.id < o.id "
             "AND h.status IN ('failed'%s)))",
             t, r->cfg->dead_holds_key ? ", 'dead'" : "");
    snprintf(r->claim_sql, sizeof(r->claim_sql),
             "SELECT o.id, o.event_id, o.subject, o.payload, o.headers::text, o.ordering_key, "
             "o.attempts, extract(epoch FROM o.created_at)::float8 "
             "FROM %s AS o WHERE o.id > $1::bigint AND %s ORDER BY o.id LIMIT $2::int",
             t, due);
    /* Marks join through the primary key only. A filter on status here
     * would let the planner drive the join from the partial index of
     * unfinished rows and hash the whole backlog on every mark (it did, at
     * 20-40 ms per 500 rows, with statistics gone stale as the backlog grew).
     * A PubAck is a fact: the published mark needs no guard; a failure must
     * only never undo a publish. */
    snprintf(r->mark_published_sql, sizeof(r->mark_published_sql),
             "UPDATE %s AS o SET status = 'published', published_at = to_timestamp(v.at), "
             "stream_seq = v.seq, attempts = o.attempts + 1, next_attempt_at = NULL "
             "FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS v(id, seq, at) "
             "WHERE o.id = v.id",
             t);
    snprintf(r->mark_failed_sql, sizeof(r->mark_failed_sql),
             "UPDATE %s AS o SET status = v.status, attempts = o.attempts + 1, "
             "next_attempt_at = CASE WHEN v.status = 'failed' "
             "THEN clock_timestamp() + v.delay_ms * interval '1 millisecond' END, "
             "last_error = v.err "
             "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) "
             "AS v(id, status, delay_ms, err) "
             "WHERE o.id = v.id AND o.status <> 'published'",
             t);
    /* The lock key: a fixed class id and the table name, so relays of other
     * tables in the same database do not exclude each other. */
    snprintf(r->lock_sql, sizeof(r->lock_sql),
             "SELECT pg_try_advisory_lock(1869574264, hashtext('%s'))", r->cfg->table);
    snprintf(r->unlock_sql, sizeof(r->unlock_sql),
             "SELECT pg_advisory_unlock(1869574264, hashtext('%s'))", r->cfg->table);
    /* Cheap: the count and age walk the partial index of unfinished rows;
     * "is anything claimable" stops at the first such row. */
    snprintf(r->sample_sql, sizeof(r->sample_sql),
             "SELECT s.n, EXISTS (SELECT 1 FROM %s AS o WHERE %s)::int, s.age FROM ("
             "SELECT count(*) AS n, "
             "COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age "
             "FROM %s WHERE status IN ('pending', 'failed')) AS s",
             t, due, t);
}

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
    r->rewind = INT64_MAX;
    metrics_init(&r->metrics);
    relay_build_sql(r);
    r->rows = inflight_create((size_t)cfg->max_inflight);
    r->acks = ack_queue_create(loop, relay_on_acks, r);
    struct pg_source_events events = {
        .connected = relay_on_pg_connected,
        .disconnected = relay_on_pg_disconnected,
        .notified = relay_on_pg_notified,
        .fatal = relay_on_pg_fatal,
        .arg = r,
    };
    r->pg = pg_source_create(loop, cfg, events);
    if (r->rows == NULL || r->acks == NULL || r->pg == NULL) {
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
    ev_timer_init(&r->retry, relay_on_retry, 0., 0.);
    ev_timer_init(&r->leader_retry, relay_on_leader_retry, 0., 0.);
    ev_timer_init(&r->sample, relay_on_sample, 0.05, cfg->metrics_interval_ms / 1000.0);
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
    ev_timer_start(r->loop, &r->sample);
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
    size_t dropped = inflight_drop_waiting(r->rows);
    log_info("shutting down: claiming stopped, waiting for in-flight acks", "{s:i, s:i, s:i}",
             "publishing", (int)inflight_publishing(r->rows), "released", (int)dropped,
             "timeout_ms", r->cfg->shutdown_timeout_ms);
    ev_timer_stop(r->loop, &r->poll);
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_stop(r->loop, &r->leader_retry);
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
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_stop(r->loop, &r->leader_retry);
    ev_timer_stop(r->loop, &r->sample);
    ev_timer_stop(r->loop, &r->nats_lost);
    ev_timer_stop(r->loop, &r->nats_reopen);
    ev_timer_stop(r->loop, &r->ack_deadline);
    ev_timer_stop(r->loop, &r->shutdown);
    /* NATS first: its threads stop calling back before the queue goes. */
    js_sink_destroy(r->js);
    r->js = NULL;
    if (r->acks != NULL)
        ack_queue_drain(r->acks);
    pg_source_destroy(r->pg);
    r->pg = NULL;
    ack_queue_destroy(r->acks);
    mark_list_free(&r->to_publish);
    mark_list_free(&r->to_fail);
    free(r->retry_due);
    inflight_destroy(r->rows);
    free(r);
}

int relay_exit_code(const struct relay *r)
{
    return r->exit_code;
}

bool relay_ready(const struct relay *r, char *why, size_t len)
{
    if (pg_source_state(r->pg) != PG_READY) {
        snprintf(why, len, "postgresql not connected");
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
    /* Only the leader moves rows: a standby (or a relay that lost PostgreSQL,
     * and with it the lock) has nothing to stall on, and restarting it would
     * not help the table. Progress = a published, failed or dead outcome
     * recorded; or finding nothing to do. */
    bool due_work = r->leader && (inflight_count(r->rows) > 0 || r->sampled_due > 0 ||
                                  r->to_publish.n > 0 || r->to_fail.n > 0);
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
    r->metrics.leader = r->leader;
    return &r->metrics;
}
