/* The claim stage: the scanner's pages as claim queries, within both budgets, into held rows. */
#include "outbox_relay/pipeline/claimer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/util.h"
#include "outbox_relay/nats/cloudevents.h"
#include "outbox_relay/nats/message.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/lib/subject_pattern.h"

/* The most held rows a claim is told to skip. */
#define CLAIM_SKIP_MAX 256

struct claimer {
    const struct relay_config *cfg;
    struct pg_source *pg;
    struct inflight *rows;
    struct js_sink *js;
    const char *sql;
    struct claimer_events ev;
    struct scan scan;
    struct subject_policy subjects; /* where rows may publish */
    bool running;                   /* a claim query is in flight */
    int64_t claimed_in_pass;        /* rows the current pass took */
    int64_t claimed_total;
};

const struct outbox_claim_limits claimer_message_limits = {
    .header_overhead = MESSAGE_HEADER_OVERHEAD,
    .headers_stored_max = MESSAGE_HEADERS_STORED_MAX,
};

/*
 * The held row for a claimed one, with its message built (max_payload: the
 * server's limit, 0 = unchecked; subjects: where rows may publish). A row
 * that can never be published comes back with msg NULL and `invalid` saying
 * why. NULL: out of memory. ce_source: the message carries the CloudEvents
 * binary-mode headers with this ce-source; NULL: none.
 */
static struct outbox_row *held_row(const struct claimed_row *c, int64_t max_payload,
                                   const struct subject_policy *subjects, const char *ce_source)
{
    struct outbox_row *row = calloc(1, sizeof(*row));
    if (row == NULL)
        return NULL;
    row->id = c->id;
    row->attempts = c->attempts;
    row->created_at = c->created_at;
    row->bytes = c->bytes;
    row->held_key = c->held_key;
    if (c->ordering_key != NULL) {
        row->ordering_key = strndup(c->ordering_key, c->ordering_key_len);
        if (row->ordering_key == NULL) {
            free(row);
            return NULL;
        }
    }
    char err[512];
    if (c->withheld) {
        /* Judged by the claim from its lengths, never read. */
        if (message_size_possible(c->payload_bytes, c->headers_bytes, c->event_id_bytes,
                                  max_payload, err, sizeof(err)))
            snprintf(err, sizeof(err), "message too large: the claim withheld the row");
        row->invalid_reason = PUBLISH_TOO_LARGE;
        row->invalid = strdup(err);
        if (row->invalid == NULL) {
            outbox_row_free(row);
            return NULL;
        }
        return row;
    }
    char *with_ce = NULL;
    if (ce_source != NULL && cloudevents_headers(c->headers, c->subject, c->event_id, c->created_at,
                                                 ce_source, &with_ce) == MESSAGE_NOMEM) {
        outbox_row_free(row);
        return NULL;
    }
    enum message_result mr = message_build_classified(
        &row->msg, c->subject, c->event_id, with_ce != NULL ? with_ce : c->headers, c->payload,
        c->payload_len, max_payload, &row->invalid_reason, err, sizeof(err));
    free(with_ce);
    if (mr == MESSAGE_NOMEM) {
        outbox_row_free(row);
        return NULL;
    }
    if (mr == MESSAGE_OK && subjects != NULL &&
        !subject_policy_allows(subjects, c->subject, err, sizeof(err))) {
        natsMsg_Destroy(row->msg);
        row->invalid_reason = PUBLISH_INVALID_ROW;
        mr = MESSAGE_INVALID;
    }
    if (mr == MESSAGE_INVALID) {
        row->msg = NULL;
        row->invalid = strdup(err);
    }
    return row;
}

struct claimer *claimer_create(const struct relay_config *cfg, struct pg_source *pg,
                               struct inflight *rows, struct js_sink *js, const char *claim_sql,
                               struct claimer_events ev, char *err, size_t errlen)
{
    struct claimer *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "claimer: out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->pg = pg;
    c->rows = rows;
    c->js = js;
    c->sql = claim_sql;
    c->ev = ev;
    pg_source_statement_kind(pg, claim_sql, STATEMENT_CLAIM);
    scan_init(&c->scan);
    char why[256];
    if (subject_policy_init(&c->subjects, cfg->stream[0] ? cfg->stream_subjects : NULL,
                            cfg->allow_subjects, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "claimer: subject policy: %s", why);
        free(c);
        return NULL;
    }
    return c;
}

void claimer_destroy(struct claimer *c)
{
    if (c == NULL)
        return;
    subject_policy_free(&c->subjects);
    free(c);
}

/* The pass ends; whatever wakes the relay next must be armed again. */
static void claimer_pass_failed(struct claimer *c)
{
    scan_page_failed(&c->scan);
    c->claimed_in_pass = 0;
    c->ev.pass_failed(c->ev.arg);
}

static void claimer_on_page(void *arg, PGresult *res)
{
    struct claimer *c = arg;
    c->running = false;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res != NULL)
            log_error("claim query failed", "{s:s}", "error", PQresultErrorMessage(res));
        claimer_pass_failed(c);
        return;
    }
    bool taking = c->ev.may_claim(c->ev.arg);
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        int64_t id = outbox_claim_id(res, i);
        scan_row_seen(&c->scan, id);
        if (!taking || inflight_find(c->rows, id) != NULL)
            continue;
        /* An earlier unfinished row of the key that the relay does not hold
         * goes first; this row waits for the pass to come back. */
        int64_t prev = outbox_claim_prev(res, i);
        if (prev != 0 && inflight_find(c->rows, prev) == NULL) {
            scan_row_blocked(&c->scan, prev);
            continue;
        }
        struct claimed_row claimed;
        outbox_claimed_row(res, i, &claimed);
        struct outbox_row *row = held_row(&claimed, js_sink_max_payload(c->js), &c->subjects,
                                          config_cloudevents_source(c->cfg));
        if (row == NULL)
            continue; /* out of memory: a later pass claims it again */
        c->claimed_total++;
        c->claimed_in_pass++;
        if (inflight_add(c->rows, row))
            c->ev.claimed(c->ev.arg, row);
    }
    scan_page_done(&c->scan, n, n >= c->cfg->batch_size || outbox_claim_cut(res));
    if (c->scan.state != SCAN_IN_PASS) {
        bool found = c->claimed_in_pass > 0;
        c->claimed_in_pass = 0;
        c->ev.pass_ended(c->ev.arg, found);
    }
}

/*
 * The held rows above the cursor as an array literal, for the claim to skip
 * ("{}" past CLAIM_SKIP_MAX of them: a backlog in flight, which the pass
 * reads above anyway).
 */
static char *claimer_held_above(const struct claimer *c, int64_t from)
{
    int64_t ids[CLAIM_SKIP_MAX];
    size_t n = inflight_ids_above(c->rows, from, ids, CLAIM_SKIP_MAX);
    if (n > CLAIM_SKIP_MAX)
        n = 0;
    struct strbuf b = {0};
    sb_putc(&b, '{');
    for (size_t i = 0; i < n; i++)
        sb_printf(&b, i ? ",%" PRId64 : "%" PRId64, ids[i]);
    sb_putc(&b, '}');
    return sb_take(&b);
}

bool claimer_needs_room(const struct claimer *c)
{
    size_t room = (size_t)c->cfg->max_inflight - inflight_count(c->rows);
    int64_t room_bytes = (int64_t)c->cfg->max_inflight_bytes - inflight_bytes(c->rows);
    return room < (size_t)c->cfg->batch_size || room_bytes <= 0;
}

void claimer_run(struct claimer *c, double now)
{
    if (c->running || !c->ev.may_claim(c->ev.arg))
        return;
    if (claimer_needs_room(c))
        return; /* backpressure: wait for acks and marks to free room */
    int64_t room_bytes = (int64_t)c->cfg->max_inflight_bytes - inflight_bytes(c->rows);
    int64_t from;
    if (!scan_next_page(&c->scan, now, &from))
        return;
    char *params[5] = {NULL, NULL, NULL, NULL, claimer_held_above(c, from)};
    if (asprintf(&params[0], "%" PRId64, from) < 0 ||
        asprintf(&params[1], "%d", c->cfg->batch_size) < 0 ||
        asprintf(&params[2], "%" PRId64, room_bytes) < 0 ||
        asprintf(&params[3], "%" PRId64, message_payload_limit(js_sink_max_payload(c->js))) < 0 ||
        params[4] == NULL) {
        /* Out of memory: the pass ends; the poll starts another. */
        for (int i = 0; i < 5; i++)
            free(params[i]);
        claimer_pass_failed(c);
        return;
    }
    if (pg_source_query(c->pg, c->sql, 5, params, true, claimer_on_page, c))
        c->running = true;
    else
        claimer_pass_failed(c);
}

void claimer_want(struct claimer *c, enum scan_reason why)
{
    scan_want(&c->scan, why);
}

/*
 * The leader's polls (wakeup.c). No NOTIFY comes while it is awake, so nothing
 * says "a row committed late below the high water" (ids are taken at
 * insert, commits land in another order): with few rows held, as in steady
 * flow, the poll reads from id 0 and finds such a row at once, for about
 * the cost of a tail pass; with a backlog it reads above the high water and
 * late rows wait for the once-a-second sweep.
 */
void claimer_on_poll(void *arg, bool sweep)
{
    struct claimer *c = arg;
    if (inflight_count(c->rows) < (size_t)c->cfg->batch_size)
        sweep = true;
    scan_want(&c->scan, sweep ? SCAN_SWEEP : SCAN_TAIL);
}

void claimer_on_sweep_due(void *arg)
{
    struct claimer *c = arg;
    scan_want(&c->scan, SCAN_SWEEP);
}

void claimer_key_released(struct claimer *c, int64_t id)
{
    scan_key_released(&c->scan, id);
}

void claimer_restart(struct claimer *c)
{
    scan_restart(&c->scan);
}

void claimer_stop(struct claimer *c)
{
    scan_stop(&c->scan);
}

int64_t claimer_claimed_total(const struct claimer *c)
{
    return c->claimed_total;
}
