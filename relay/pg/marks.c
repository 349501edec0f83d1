/* Batched marks: outcomes gathered and written with one UPDATE per kind. */
#include "outbox_relay/pg/marks.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/util.h"

struct mark_list {
    struct mark *items;
    size_t n, cap;
};

/* One outcome kind: what waits for the next UPDATE, and what is in it. */
struct mark_batch {
    struct marks *owner;
    bool published;
    const char *sql;
    struct mark_list queued;
    struct mark_list running; /* empty unless the UPDATE is in flight */
    bool in_flight;
    bool fenced; /* the running UPDATE's rows were dropped: report nothing of it */
};

/* A gathered published batch goes at once from this many rows: well under
 * the 256 held rows a claim can be told to skip, so rows waiting only for
 * their mark do not by themselves make claims read held rows again. */
#define MARKS_GATHER_ROWS 128

struct marks {
    struct ev_loop *loop;
    struct pg_source *pg;
    struct marks_events events;
    struct mark_batch published, failed;
    struct mark_counts counts; /* committed outcomes, for the metrics */
    double gather_s;           /* how long published outcomes may wait for company */
    double published_due;      /* ev_now by which the queued published batch goes */
    ev_timer gather;           /* wakes the loop when that time comes */
};

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

static void marks_count(struct mark_counts *c, const struct mark *m, bool published)
{
    unsigned reason = (unsigned)m->reason < PUBLISH_REASONS ? m->reason : PUBLISH_OTHER;
    if (published)
        c->published++;
    else if (m->dead)
        c->dead_by_reason[reason]++;
    else
        c->failed_by_reason[reason]++;
}

/* Nothing to do here: the loop turn it causes flushes (marks_flush, from
 * the caller's once-a-turn hook, which knows whether writing is allowed). */
static void marks_on_gathered(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

struct marks *marks_create(struct ev_loop *loop, struct pg_source *pg, const char *published_sql,
                           const char *failed_sql, int gather_ms, struct marks_events events,
                           char *err, size_t errlen)
{
    struct marks *mk = calloc(1, sizeof(*mk));
    if (mk == NULL) {
        snprintf(err, errlen, "marks: out of memory");
        return NULL;
    }
    mk->loop = loop;
    mk->pg = pg;
    mk->events = events;
    mk->gather_s = gather_ms / 1000.0;
    ev_init(&mk->gather, marks_on_gathered);
    mk->published = (struct mark_batch){.owner = mk, .published = true, .sql = published_sql};
    mk->failed = (struct mark_batch){.owner = mk, .published = false, .sql = failed_sql};
    pg_source_statement_kind(pg, published_sql, STATEMENT_MARK);
    pg_source_statement_kind(pg, failed_sql, STATEMENT_MARK);
    return mk;
}

void marks_destroy(struct marks *mk)
{
    if (mk == NULL)
        return;
    ev_timer_stop(mk->loop, &mk->gather);
    struct mark_batch *batches[] = {&mk->published, &mk->failed};
    for (int i = 0; i < 2; i++) {
        mark_list_free(&batches[i]->queued);
        mark_list_free(&batches[i]->running);
    }
    free(mk);
}

bool marks_add_published(struct marks *mk, int64_t id, struct outbox_row *row, uint64_t stream_seq,
                         double acked_at, bool awaited)
{
    struct mark m = {.id = id, .row = row, .stream_seq = stream_seq, .acked_at = acked_at};
    double now = ev_now(mk->loop);
    if (mk->published.queued.n == 0)
        mk->published_due = now + mk->gather_s;
    if (awaited)
        mk->published_due = now;
    return mark_list_push(&mk->published.queued, &m);
}

bool marks_add_failed(struct marks *mk, int64_t id, struct outbox_row *row, bool dead,
                      int64_t delay_ms, bool not_an_attempt, const char *error,
                      enum publish_reason reason)
{
    struct mark m = {.id = id,
                     .row = row,
                     .dead = dead,
                     .delay_ms = delay_ms,
                     .not_an_attempt = not_an_attempt,
                     .error = strdup(error),
                     .reason = reason};
    if (m.error == NULL || !mark_list_push(&mk->failed.queued, &m)) {
        free(m.error);
        return false;
    }
    return true;
}

size_t marks_unrecorded(const struct marks *mk)
{
    return mk->published.queued.n + mk->published.running.n + mk->failed.queued.n +
           mk->failed.running.n;
}

static void marks_on_done(void *arg, PGresult *res)
{
    struct mark_batch *b = arg;
    struct marks *mk = b->owner;
    bool failed = res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK;
    if (failed && res != NULL && !b->fenced) {
        log_error("marking rows failed", "{s:s}", "error", PQresultErrorMessage(res));
        /* The batch is still in flight here: resetting ends the session,
         * and with a leader's session its term, whose fence then marks this
         * batch, as its rows are dropped. */
        pg_source_reset(mk->pg, "mark query failed");
    }
    struct mark_list done = b->running;
    memset(&b->running, 0, sizeof(b->running));
    b->in_flight = false;
    if (b->fenced) {
        /* Its rows are gone: an outcome of a lost term is never written. */
        b->fenced = false;
        mark_list_free(&done);
        return;
    }

    if (failed) {
        /* Not recorded, and the rows are still held: the outcomes stay
         * known, so queue them again for the next connection, due at once. */
        if (b->published)
            mk->published_due = 0;
        for (size_t i = 0; i < done.n; i++) {
            if (!mark_list_push(&b->queued, &done.items[i])) {
                free(done.items[i].error);
                mk->events.forgotten(mk->events.arg, done.items[i].row);
            }
        }
        free(done.items);
        return;
    }
    for (size_t i = 0; i < done.n; i++) {
        marks_count(&mk->counts, &done.items[i], b->published);
        mk->events.recorded(mk->events.arg, &done.items[i], b->published);
    }
    mark_list_free(&done);
    mk->events.batch_done(mk->events.arg, b->published);
}

#define MARKS_MAX_PARAMS 5

/* The batch's outcomes as array literals: $1 ids, then per kind. */
static bool marks_params(const struct mark_batch *b, char **params)
{
    struct strbuf p[MARKS_MAX_PARAMS] = {{0}};
    for (int k = 0; k < MARKS_MAX_PARAMS; k++)
        sb_putc(&p[k], '{');
    for (size_t i = 0; i < b->queued.n; i++) {
        const struct mark *m = &b->queued.items[i];
        const char *sep = i ? "," : "";
        sb_printf(&p[0], "%s%" PRId64, sep, m->id);
        if (b->published) {
            sb_printf(&p[1], "%s%" PRIu64, sep, m->stream_seq);
            /* Microseconds as an integer: formatting a double per row
             * showed in the drain's profile. */
            sb_printf(&p[2], "%s%lld", sep, (long long)(m->acked_at * 1e6));
        } else {
            sb_printf(&p[1], "%s%s", sep, m->dead ? "dead" : "failed");
            sb_printf(&p[2], "%s%" PRId64, sep, m->delay_ms);
            sb_puts(&p[3], sep);
            sb_put_array_text(&p[3], m->error ? m->error : "");
            sb_printf(&p[4], "%s%d", sep, m->not_an_attempt ? 0 : 1);
        }
    }
    bool ok = true;
    int nparams = b->published ? 3 : 5;
    for (int k = 0; k < MARKS_MAX_PARAMS; k++) {
        sb_putc(&p[k], '}');
        params[k] = k < nparams ? sb_take(&p[k]) : NULL;
        if (k >= nparams)
            sb_free(&p[k]);
        else if (params[k] == NULL)
            ok = false;
    }
    if (!ok)
        for (int k = 0; k < MARKS_MAX_PARAMS; k++)
            free(params[k]);
    return ok;
}

static void marks_send(struct mark_batch *b)
{
    if (b->queued.n == 0 || b->in_flight)
        return;
    char *params[MARKS_MAX_PARAMS];
    if (!marks_params(b, params))
        return; /* out of memory: try again next loop turn */
    if (!pg_source_query(b->owner->pg, b->sql, b->published ? 3 : 5, params, false, marks_on_done,
                         b))
        return; /* not connected: keep them for later */
    b->running = b->queued;
    memset(&b->queued, 0, sizeof(b->queued));
    b->in_flight = true;
}

/*
 * Published outcomes wait for company: the rows are already on the stream
 * (consumers have them), so recording them a little later costs no
 * latency, and one UPDATE for many rows costs the database far less per row
 * than one per PubAck. They go at once when they are many, when someone
 * waits on one of them (`awaited`, `now`), or after the gathering time.
 * Failures go at once: they are rare and schedule retries.
 */
void marks_flush(struct marks *mk, bool now)
{
    struct mark_batch *p = &mk->published;
    double wait = mk->published_due - ev_now(mk->loop);
    if (now || p->queued.n >= MARKS_GATHER_ROWS || wait <= 0) {
        ev_timer_stop(mk->loop, &mk->gather);
        marks_send(p);
    } else if (p->queued.n > 0 && !p->in_flight && !ev_is_active(&mk->gather)) {
        ev_timer_set(&mk->gather, wait, 0.);
        ev_timer_start(mk->loop, &mk->gather);
    }
    marks_send(&mk->failed);
}

void marks_fence(struct marks *mk)
{
    ev_timer_stop(mk->loop, &mk->gather);
    struct mark_batch *batches[] = {&mk->published, &mk->failed};
    for (int i = 0; i < 2; i++) {
        mark_list_free(&batches[i]->queued);
        if (batches[i]->in_flight)
            batches[i]->fenced = true;
    }
}

const struct mark_counts *marks_counts(const struct marks *mk)
{
    return &mk->counts;
}
