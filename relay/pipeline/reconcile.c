/* A new term finds the rows an earlier term published but never marked, before it publishes. */
#include "outbox_relay/pipeline/reconcile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/lib/util.h"

/* Unfinished rows read per term, in multiples of OUTBOX_MAX_INFLIGHT: an earlier term's rows in
 * flight are among the first unfinished ones, after those that wait (retries, held keys). */
#define RECONCILE_ROWS_PER_INFLIGHT 4
/* Latest marks looked at for the highest sequence marked, in multiples of OUTBOX_MAX_INFLIGHT:
 * rows marked after it with lower sequences (duplicate acks, reconciled rows) are at most a
 * term's in flight. */
#define RECONCILE_MARKS_PER_INFLIGHT 2
#define RECONCILE_RETRY_S            0.5
/* A safety net: an answer that never came (the bridge can fold connection events). */
#define RECONCILE_READ_DEADLINE_S 30.0

enum reconcile_state {
    RECONCILE_IDLE,    /* not leading */
    RECONCILE_LISTING, /* reading the unfinished rows and the highest marked sequence */
    RECONCILE_READING, /* js_sink's worker reads the stream */
    RECONCILE_DONE,    /* the term may publish */
};

struct pending_row {
    int64_t id;
    char *event_id;
};

struct reconcile {
    ev_timer timer; /* retry, or the read's deadline */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source *pg;
    struct js_sink *js;
    const struct outbox_sql *sql;
    struct reconcile_events ev;
    enum reconcile_state state;
    uint64_t term; /* tags stream reads: an answer for an earlier term is dropped */
    double started;
    uint64_t marked_max;
    bool listed;              /* the unfinished rows of this attempt were read */
    struct pending_row *rows; /* the first unfinished rows, sorted by event_id */
    size_t nrows;
    size_t found, unknown;
    uint64_t unchecked, last_seq;
    uint64_t unchecked_total;
    bool said_failure; /* a failed read logged at warn once per term */
};

static void reconcile_free_rows(struct reconcile *rc)
{
    for (size_t i = 0; i < rc->nrows; i++)
        free(rc->rows[i].event_id);
    free(rc->rows);
    rc->rows = NULL;
    rc->nrows = 0;
}

static void reconcile_finish(struct reconcile *rc)
{
    ev_timer_stop(rc->loop, &rc->timer);
    rc->state = RECONCILE_DONE;
    if (rc->nrows > 0)
        log_info("reconciled with the stream before publishing",
                 "{s:s, s:I, s:I, s:i, s:i, s:I, s:f}", "stream", rc->cfg->stream, "marked_max",
                 (json_int_t)rc->marked_max, "last_seq", (json_int_t)rc->last_seq, "found",
                 (int)rc->found, "unknown", (int)rc->unknown, "unchecked",
                 (json_int_t)rc->unchecked, "ms", (ev_now(rc->loop) - rc->started) * 1000.0);
    reconcile_free_rows(rc);
    rc->ev.done(rc->ev.arg);
}

static void reconcile_ask_read(struct reconcile *rc)
{
    rc->state = RECONCILE_READING;
    js_sink_read_stream(rc->js, rc->term, rc->marked_max, (size_t)rc->cfg->max_inflight,
                        (int64_t)rc->cfg->max_inflight_bytes);
    ev_timer_stop(rc->loop, &rc->timer);
    ev_timer_set(&rc->timer, RECONCILE_READ_DEADLINE_S, 0.);
    ev_timer_start(rc->loop, &rc->timer);
}

static void reconcile_retry_later(struct reconcile *rc)
{
    ev_timer_stop(rc->loop, &rc->timer);
    ev_timer_set(&rc->timer, RECONCILE_RETRY_S, 0.);
    ev_timer_start(rc->loop, &rc->timer);
}

static void reconcile_list(struct reconcile *rc);

/* Retry, or a read that was never answered: ask again. */
static void reconcile_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct reconcile *rc = container_of(w, struct reconcile, timer);
    if (rc->state == RECONCILE_LISTING)
        reconcile_list(rc);
    else if (rc->state == RECONCILE_READING) {
        rc->term++; /* whatever the worker answers to the last question is stale now */
        reconcile_ask_read(rc);
    }
}

static int pending_row_cmp(const void *a, const void *b)
{
    const struct pending_row *x = a, *y = b;
    int c = strcmp(x->event_id, y->event_id);
    return c != 0 ? c : (x->id > y->id) - (x->id < y->id);
}

static void reconcile_on_unfinished(void *arg, PGresult *res)
{
    struct reconcile *rc = arg;
    if (rc->state != RECONCILE_LISTING || res == NULL)
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("reconciliation: reading the unfinished rows failed", "{s:s}", "error",
                  PQresultErrorMessage(res));
        reconcile_retry_later(rc);
        return;
    }
    reconcile_free_rows(rc);
    int n = PQntuples(res);
    rc->rows = n > 0 ? calloc((size_t)n, sizeof(*rc->rows)) : NULL;
    if (n > 0 && rc->rows == NULL) {
        reconcile_retry_later(rc);
        return;
    }
    for (int i = 0; i < n; i++) {
        char *event_id = strdup(PQgetvalue(res, i, 1));
        if (event_id == NULL) {
            reconcile_free_rows(rc);
            reconcile_retry_later(rc);
            return;
        }
        rc->rows[rc->nrows++] = (struct pending_row){.id = strtoll(PQgetvalue(res, i, 0), NULL, 10),
                                                     .event_id = event_id};
    }
    if (rc->nrows > 1) /* qsort's array may not be NULL, even empty */
        qsort(rc->rows, rc->nrows, sizeof(*rc->rows), pending_row_cmp);
    rc->listed = true;
}

static void reconcile_on_marked_max(void *arg, PGresult *res)
{
    struct reconcile *rc = arg;
    if (rc->state != RECONCILE_LISTING || res == NULL || !rc->listed)
        return; /* not leading, or the list failed: a retry is on its way */
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        log_error("reconciliation: reading the highest marked sequence failed", "{s:s}", "error",
                  PQresultErrorMessage(res));
        reconcile_retry_later(rc);
        return;
    }
    if (rc->nrows == 0) {
        /* Nothing unfinished: nothing an earlier term could have left unmarked. */
        reconcile_finish(rc);
        return;
    }
    rc->marked_max = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    log_debug("reconciliation: unfinished rows read", "{s:i, s:I, s:f}", "rows", (int)rc->nrows,
              "marked_max", (json_int_t)rc->marked_max, "ms",
              (ev_now(rc->loop) - rc->started) * 1000.0);
    reconcile_ask_read(rc);
}

static void reconcile_list(struct reconcile *rc)
{
    rc->state = RECONCILE_LISTING;
    rc->listed = false;
    char *rows[1] = {str_printf("%d", rc->cfg->max_inflight * RECONCILE_ROWS_PER_INFLIGHT)};
    char *marks[1] = {str_printf("%d", rc->cfg->max_inflight * RECONCILE_MARKS_PER_INFLIGHT)};
    if (rows[0] == NULL || marks[0] == NULL) {
        free(rows[0]);
        free(marks[0]);
        reconcile_retry_later(rc);
        return;
    }
    /* Queries run in order: both answers come before anything queued after them. */
    if (!pg_source_query(rc->pg, rc->sql->reconcile_unfinished, 1, rows, false,
                         reconcile_on_unfinished, rc)) {
        free(marks[0]);
        reconcile_retry_later(rc);
        return;
    }
    if (!pg_source_query(rc->pg, rc->sql->reconcile_marked_max, 1, marks, false,
                         reconcile_on_marked_max, rc))
        reconcile_retry_later(rc);
}

/* The mark's result: the term already publishes (its claims queued behind the mark). */
static void reconcile_on_marked(void *arg, PGresult *res)
{
    struct reconcile *rc = arg;
    if (res == NULL || PQresultStatus(res) == PGRES_COMMAND_OK)
        return; /* done, or the session (and the term) ended: the next term starts over */
    log_error("reconciliation: marking the rows found in the stream failed", "{s:s}", "error",
              PQresultErrorMessage(res));
    /* As for any mark: the term ends with the session, and with it the claims queued behind
     * the mark; the next term starts over. */
    pg_source_reset(rc->pg, "reconciliation mark failed");
}

static const struct pending_row *reconcile_find(const struct reconcile *rc, const char *event_id)
{
    size_t lo = 0, hi = rc->nrows;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(rc->rows[mid].event_id, event_id);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < rc->nrows && strcmp(rc->rows[lo].event_id, event_id) == 0 ? &rc->rows[lo] : NULL;
}

/* The rows whose messages the stream holds, marked with their (first) sequence. */
static void reconcile_mark(struct reconcile *rc, const struct stream_read *r)
{
    struct strbuf ids = {0}, seqs = {0};
    sb_putc(&ids, '{');
    sb_putc(&seqs, '{');
    bool *taken = calloc(rc->nrows, sizeof(*taken));
    if (taken == NULL) {
        sb_free(&ids);
        sb_free(&seqs);
        reconcile_retry_later(rc);
        return;
    }
    rc->found = rc->unknown = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct pending_row *row = reconcile_find(rc, r->msgs[i].msg_id);
        if (row == NULL) {
            rc->unknown++; /* a marked row, another writer's message, or a row not listed */
            continue;
        }
        size_t at = (size_t)(row - rc->rows);
        if (taken[at])
            continue; /* published twice already: the first message is the row's */
        taken[at] = true;
        const char *sep = rc->found++ ? "," : "";
        sb_printf(&ids, "%s%" PRId64, sep, row->id);
        sb_printf(&seqs, "%s%" PRIu64, sep, r->msgs[i].seq);
    }
    free(taken);
    sb_putc(&ids, '}');
    sb_putc(&seqs, '}');
    char *params[2] = {sb_take(&ids), sb_take(&seqs)};
    if (rc->found == 0) {
        free(params[0]);
        free(params[1]);
        reconcile_finish(rc);
        return;
    }
    if (params[0] == NULL || params[1] == NULL) {
        free(params[0]);
        free(params[1]);
        reconcile_retry_later(rc);
        return;
    }
    /* Statements run in order on the one session: every claim of this term is queued behind
     * the mark and sees its rows published, so the term may claim now. */
    if (!pg_source_query(rc->pg, rc->sql->reconcile_mark, 2, params, false, reconcile_on_marked,
                         rc)) {
        reconcile_retry_later(rc); /* not connected: the term is ending */
        return;
    }
    reconcile_finish(rc);
}

void reconcile_on_stream_read(struct reconcile *rc)
{
    struct stream_read r;
    if (!js_sink_stream_read_take(rc->js, &r))
        return;
    if (rc->state != RECONCILE_READING || r.tag != rc->term) {
        stream_read_free(&r);
        return;
    }
    ev_timer_stop(rc->loop, &rc->timer);
    if (!r.ok) {
        /* NATS lost, or the stream's leader changing: nothing is published until it reads. */
        if (!rc->said_failure)
            log_warn(LOG_MSG_RECONCILE_READ_FAILED, "{s:s, s:s}", "stream", rc->cfg->stream,
                     "error", r.error);
        rc->said_failure = true;
        stream_read_free(&r);
        rc->term++;
        rc->state = RECONCILE_READING;
        ev_timer_set(&rc->timer, RECONCILE_RETRY_S, 0.);
        ev_timer_start(rc->loop, &rc->timer);
        return;
    }
    rc->last_seq = r.last_seq;
    rc->unchecked = r.unchecked;
    log_debug("reconciliation: stream read", "{s:i, s:I, s:f}", "messages", (int)r.n, "bytes",
              (json_int_t)r.bytes, "ms", (ev_now(rc->loop) - rc->started) * 1000.0);
    if (r.unchecked > 0) {
        rc->unchecked_total += r.unchecked;
        log_warn("reconciliation could not check every message after the highest marked "
                 "sequence (gone, or past OUTBOX_MAX_INFLIGHT / _BYTES): rows among them are "
                 "published again, at least once",
                 "{s:s, s:I, s:I, s:I}", "stream", rc->cfg->stream, "marked_max",
                 (json_int_t)rc->marked_max, "last_seq", (json_int_t)r.last_seq, "unchecked",
                 (json_int_t)r.unchecked);
    }
    reconcile_mark(rc, &r);
    stream_read_free(&r);
}

struct reconcile *reconcile_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source *pg, struct js_sink *js,
                                   const struct outbox_sql *sql, struct reconcile_events ev,
                                   char *err, size_t errlen)
{
    struct reconcile *rc = calloc(1, sizeof(*rc));
    if (rc == NULL) {
        snprintf(err, errlen, "reconcile: out of memory");
        return NULL;
    }
    *rc = (struct reconcile){.loop = loop, .cfg = cfg, .pg = pg, .js = js, .sql = sql, .ev = ev};
    ev_timer_init(&rc->timer, reconcile_on_timer, 0., 0.);
    return rc;
}

void reconcile_destroy(struct reconcile *rc)
{
    if (rc == NULL)
        return;
    ev_timer_stop(rc->loop, &rc->timer);
    reconcile_free_rows(rc);
    free(rc);
}

void reconcile_start(struct reconcile *rc)
{
    reconcile_stop(rc);
    rc->started = ev_now(rc->loop);
    rc->said_failure = false;
    rc->marked_max = rc->last_seq = rc->unchecked = 0;
    rc->found = rc->unknown = 0;
    if (rc->cfg->stream[0] == '\0') {
        /* No stream to look in: re-publishes rely on the duplicate window alone. */
        reconcile_finish(rc);
        return;
    }
    reconcile_list(rc);
}

void reconcile_stop(struct reconcile *rc)
{
    ev_timer_stop(rc->loop, &rc->timer);
    rc->state = RECONCILE_IDLE;
    rc->term++;
    reconcile_free_rows(rc);
}

bool reconcile_done(const struct reconcile *rc)
{
    return rc->state == RECONCILE_DONE;
}

uint64_t reconcile_unchecked_total(const struct reconcile *rc)
{
    return rc->unchecked_total;
}
