/* Dead letters: the leader publishes dead rows to OUTBOX_DEAD_LETTER_SUBJECT and records it. */
#include "outbox_relay/pipeline/dead_letter.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/backoff.h"
#include "outbox_relay/lib/log.h"
#include "outbox_relay/nats/message.h"
#include "outbox_relay/lib/util.h"

/* Rows per round: dead rows are exceptional, and a round holds their payloads. */
#define DL_BATCH 100
/* Payload bytes one round fetches at most (a larger row still comes, alone). */
#define DL_MAX_BYTES (8 * 1024 * 1024)
/* Between rounds when nothing failed: the marks of dead rows also wake it. */
#define DL_INTERVAL_S 10.0
/* A dead letter's error header: the row's last_error, cut to this many bytes. */
#define DL_ERROR_MAX 1024
/* The server's max_payload before it is known (nats-server's default). */
#define DL_DEFAULT_MAX_PAYLOAD 1048576
/* Room left for the Outbox-Dead-* headers when judging whether a payload fits. */
#define DL_HEADER_ROOM 4096

enum { Q_ID, Q_EVENT_ID, Q_SUBJECT, Q_PAYLOAD, Q_SIZE, Q_HEADERS, Q_ATTEMPTS, Q_ERROR, Q_LETTERS };

struct letter {
    natsMsg *msg; /* with nats.c until its PubAck */
    int64_t id;
    int letters; /* the row's dead_letters when selected */
    bool acked;
    bool abandoned; /* its round gave up waiting: the ack only frees it */
};

struct dead_letter {
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct pg_source *pg;
    struct js_sink *js;
    ev_timer timer;    /* the next round */
    ev_timer deadline; /* a round's PubAcks */
    bool leader;
    bool running;       /* a round is under way: query, publishes or mark */
    int failing_rounds; /* rounds in a row with a failure: the backoff */
    bool round_failed;
    bool again; /* more may be due at once: a full round, or a row died meanwhile */
    struct letter *letters;
    size_t n, cap;
    size_t waiting; /* this round's publishes without an answer */
    uint64_t published_total, failures_total;
    char *select_sql, *mark_sql;
};

static void dl_arm(struct dead_letter *d, double after)
{
    ev_timer_stop(d->loop, &d->timer);
    if (!d->leader)
        return;
    ev_timer_set(&d->timer, after, 0.);
    ev_timer_start(d->loop, &d->timer);
}

static void dl_round_ended(struct dead_letter *d)
{
    d->running = false;
    ev_timer_stop(d->loop, &d->deadline);
    if (d->round_failed) {
        d->failing_rounds++;
        dl_arm(d, backoff_delay_ms(d->failing_rounds, d->cfg->retry_base_ms, d->cfg->retry_max_ms,
                                   backoff_random()) /
                      1000.0);
        return;
    }
    d->failing_rounds = 0;
    dl_arm(d, d->again ? 0. : DL_INTERVAL_S);
}

static void dl_failed(struct dead_letter *d, int64_t id, const char *error)
{
    bool first = !d->round_failed;
    d->failures_total++;
    d->round_failed = true;
    /* One line for the first failing round and every tenth after, not one
     * per row: a subject no stream takes fails every row alike. */
    if (first && d->failing_rounds % 10 == 0)
        log_warn("dead letter not published: retrying with backoff", "{s:I, s:s, s:s}", "id",
                 (json_int_t)id, "subject", d->cfg->dead_letter_subject, "error", error);
}

/* Drops this round's answered letters; keeps abandoned ones until their ack. */
static void dl_forget_round(struct dead_letter *d)
{
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++)
        if (d->letters[i].abandoned)
            d->letters[k++] = d->letters[i];
    d->n = k;
}

static void dl_on_marked(void *arg, PGresult *res)
{
    struct dead_letter *d = arg;
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        dl_failed(d, 0, res ? PQresultErrorMessage(res) : "connection lost");
    } else {
        long n = atol(PQcmdTuples(res));
        d->published_total += (uint64_t)n;
    }
    dl_round_ended(d);
}

/* Every publish of the round answered (or given up on): record the stored ones. */
static void dl_publishes_done(struct dead_letter *d)
{
    ev_timer_stop(d->loop, &d->deadline);
    struct strbuf ids = {0}, letters = {0};
    size_t acked = 0;
    for (size_t i = 0; i < d->n; i++) {
        struct letter *l = &d->letters[i];
        if (l->abandoned || !l->acked)
            continue;
        sb_printf(&ids, "%s%" PRId64, acked ? "," : "{", l->id);
        sb_printf(&letters, "%s%d", acked ? "," : "{", l->letters);
        acked++;
    }
    dl_forget_round(d);
    /* Only a leader writes to the table: a deposed one's letters are sent
     * again by the next leader, and JetStream drops them by Nats-Msg-Id. */
    if (acked == 0 || !d->leader) {
        sb_free(&ids);
        sb_free(&letters);
        dl_round_ended(d);
        return;
    }
    sb_printf(&ids, "}");
    sb_printf(&letters, "}");
    char *params[2] = {sb_take(&ids), sb_take(&letters)};
    bool queued = params[0] && params[1] &&
                  pg_source_query(d->pg, d->mark_sql, 2, params, false, dl_on_marked, d);
    if (!queued && (params[0] == NULL || params[1] == NULL)) {
        free(params[0]);
        free(params[1]);
    }
    if (!queued) {
        d->round_failed = true;
        dl_round_ended(d);
        return;
    }
}

static void dl_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dead_letter *d = container_of(w, struct dead_letter, deadline);
    for (size_t i = 0; i < d->n; i++) {
        struct letter *l = &d->letters[i];
        if (l->msg != NULL && !l->acked && !l->abandoned) {
            l->abandoned = true;
            dl_failed(d, l->id, "no PubAck within OUTBOX_PUBLISH_TIMEOUT_MS");
        }
    }
    d->waiting = 0;
    dl_publishes_done(d);
}

bool dead_letter_on_puback(struct dead_letter *d, struct nats_event *e)
{
    if (d == NULL || d->n == 0)
        return false;
    size_t i = 0;
    while (i < d->n && d->letters[i].msg != e->msg)
        i++;
    if (i == d->n)
        return false;
    struct letter *l = &d->letters[i];
    natsMsg_Destroy(e->msg);
    e->msg = NULL;
    l->msg = NULL;
    if (l->abandoned) {
        d->letters[i] = d->letters[--d->n];
        return true;
    }
    if (e->ok)
        l->acked = true;
    else
        dl_failed(d, l->id, e->error);
    if (d->waiting > 0 && --d->waiting == 0)
        dl_publishes_done(d);
    return true;
}

/*
 * The reason class of a death (the reason label of outbox_relay_dead_total),
 * read back from the stable start of the last_error the relay wrote: the
 * table keeps the text, and any leader may send the letter.
 */
static const struct {
    const char *prefix, *reason;
} dl_reasons[] = {
    {"invalid subject", "invalid_row"}, {"invalid event_id", "invalid_row"},
    {"headers:", "invalid_row"},        {"invalid row", "invalid_row"},
    {"message too large", "too_large"}, {"message size exceeds", "too_large"},
    {"headers too large", "too_large"}, {"no stream", "no_stream"},
    {"no PubAck", "timeout"},
};

static const char *dl_reason(const char *last_error)
{
    for (size_t i = 0; i < sizeof(dl_reasons) / sizeof(dl_reasons[0]); i++)
        if (!strncmp(last_error, dl_reasons[i].prefix, strlen(dl_reasons[i].prefix)))
            return dl_reasons[i].reason;
    return "other";
}

/* Control characters would break the header line: spaces instead. */
static void dl_header_text(char *out, size_t len, const char *in)
{
    snprintf(out, len, "%s", in);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

/*
 * The dead letter of one row: its payload unless it was too large to fetch
 * or to send, its own headers when they are valid, and the Outbox-Dead-*
 * headers. NULL when out of memory.
 */
static natsMsg *dl_build(struct dead_letter *d, PGresult *res, int row, int64_t max_payload)
{
    const char *headers = PQgetvalue(res, row, Q_HEADERS);
    bool headers_ok = message_headers_apply(NULL, headers, NULL, NULL, 0) == MESSAGE_OK;
    size_t payload_len = 0;
    unsigned char *payload = NULL;
    if (!PQgetisnull(res, row, Q_PAYLOAD)) {
        payload =
            PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, Q_PAYLOAD), &payload_len);
        if (payload == NULL)
            return NULL;
    }
    int attempts = atoi(PQgetvalue(res, row, Q_ATTEMPTS));
    char msg_id[512], error[DL_ERROR_MAX];
    /* One id per death of the row: a retried dead letter is deduplicated,
     * the letter of a row that dies again after a requeue is not. An
     * event_id that could not be an id (it may be why the row died) gives
     * way to the row id. */
    const char *event_id = PQgetvalue(res, row, Q_EVENT_ID);
    int letters = atoi(PQgetvalue(res, row, Q_LETTERS)) + 1;
    bool plain = event_id[0] != '\0' && strlen(event_id) < sizeof(msg_id) - 32;
    for (const char *p = event_id; plain && *p; p++)
        plain = (unsigned char)*p > ' ' && *p != 0x7f;
    if (plain)
        snprintf(msg_id, sizeof(msg_id), "dead-%s-%d", event_id, letters);
    else
        snprintf(msg_id, sizeof(msg_id), "dead-row-%s-%d", PQgetvalue(res, row, Q_ID), letters);
    dl_header_text(error, sizeof(error), PQgetvalue(res, row, Q_ERROR));
    natsMsg *msg = NULL;
    for (int with_payload = payload != NULL; with_payload >= 0; with_payload--) {
        natsMsg_Destroy(msg);
        msg = NULL;
        char attempts_s[16];
        snprintf(attempts_s, sizeof(attempts_s), "%d", attempts);
        const char *subject = PQgetvalue(res, row, Q_SUBJECT);
        char subject_h[DL_ERROR_MAX], event_id_h[DL_ERROR_MAX];
        dl_header_text(subject_h, sizeof(subject_h), subject);
        dl_header_text(event_id_h, sizeof(event_id_h), event_id);
        if (natsMsg_Create(&msg, d->cfg->dead_letter_subject, NULL,
                           with_payload ? (const char *)payload : NULL,
                           with_payload ? (int)payload_len : 0) != NATS_OK) {
            msg = NULL;
            break;
        }
        if (headers_ok && message_headers_apply(msg, headers, NULL, NULL, 0) != MESSAGE_OK)
            break;
        natsStatus s = natsMsgHeader_Set(msg, MESSAGE_HEADER_MSG_ID, msg_id);
        s = s ? s : natsMsgHeader_Set(msg, DEAD_HEADER_ID, PQgetvalue(res, row, Q_ID));
        /* An empty value would not read back (nats.c: a protocol error). */
        if (s == NATS_OK && event_id_h[0] != '\0')
            s = natsMsgHeader_Set(msg, DEAD_HEADER_EVENT_ID, event_id_h);
        s = s ? s : natsMsgHeader_Set(msg, DEAD_HEADER_SUBJECT, subject_h);
        s = s ? s
              : natsMsgHeader_Set(msg, DEAD_HEADER_REASON,
                                  dl_reason(PQgetvalue(res, row, Q_ERROR)));
        if (s == NATS_OK && error[0] != '\0')
            s = natsMsgHeader_Set(msg, DEAD_HEADER_ERROR, error);
        s = s ? s : natsMsgHeader_Set(msg, DEAD_HEADER_ATTEMPTS, attempts_s);
        if (s == NATS_OK && !headers_ok)
            s = natsMsgHeader_Set(msg, DEAD_HEADER_HEADERS_OMITTED, "invalid");
        if (s == NATS_OK && !with_payload)
            s = natsMsgHeader_Set(msg, DEAD_HEADER_PAYLOAD_OMITTED, PQgetvalue(res, row, Q_SIZE));
        if (s != NATS_OK)
            break;
        if (!with_payload || (int64_t)(message_header_block(msg) + payload_len) <= max_payload) {
            PQfreemem(payload);
            return msg;
        }
    }
    PQfreemem(payload);
    natsMsg_Destroy(msg);
    return NULL;
}

static bool dl_room(struct dead_letter *d)
{
    if (d->n < d->cap)
        return true;
    size_t cap = d->cap ? d->cap * 2 : DL_BATCH;
    struct letter *p = realloc(d->letters, cap * sizeof(*p));
    if (p == NULL)
        return false;
    d->letters = p;
    d->cap = cap;
    return true;
}

static void dl_on_selected(void *arg, PGresult *res)
{
    struct dead_letter *d = arg;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        dl_failed(d, 0, res ? PQresultErrorMessage(res) : "connection lost");
        dl_round_ended(d);
        return;
    }
    int rows = PQntuples(res);
    if (rows == 0 || !d->leader) {
        dl_round_ended(d);
        return;
    }
    int64_t max_payload = js_sink_max_payload(d->js);
    if (max_payload <= 0)
        max_payload = DL_DEFAULT_MAX_PAYLOAD;
    d->again = true; /* a batch cut by rows or bytes: more may be due */
    for (int i = 0; i < rows; i++) {
        int64_t id = strtoll(PQgetvalue(res, i, Q_ID), NULL, 10);
        natsMsg *msg = dl_room(d) ? dl_build(d, res, i, max_payload) : NULL;
        if (msg == NULL) {
            dl_failed(d, id, "out of memory");
            continue;
        }
        natsMsg *sent = msg;
        natsStatus s = js_sink_publish(d->js, &msg);
        if (s != NATS_OK) {
            natsMsg_Destroy(msg);
            dl_failed(d, id, natsStatus_GetText(s));
            continue;
        }
        d->letters[d->n++] =
            (struct letter){.msg = sent, .id = id, .letters = atoi(PQgetvalue(res, i, Q_LETTERS))};
        d->waiting++;
    }
    if (d->waiting == 0) {
        dl_publishes_done(d);
        return;
    }
    js_sink_flush(d->js);
    ev_timer_set(&d->deadline, d->cfg->publish_timeout_ms / 1000.0, 0.);
    ev_timer_start(d->loop, &d->deadline);
}

static void dl_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dead_letter *d = container_of(w, struct dead_letter, timer);
    if (!d->leader || d->running)
        return;
    if (!js_sink_connected(d->js)) {
        dl_arm(d, DL_INTERVAL_S / 10);
        return;
    }
    int64_t max_payload = js_sink_max_payload(d->js);
    if (max_payload <= 0)
        max_payload = DL_DEFAULT_MAX_PAYLOAD;
    /* Owned by pg_source once queued. */
    char *params[2] = {
        str_printf("%d", DL_BATCH),
        str_printf("%" PRId64, max_payload > DL_HEADER_ROOM ? max_payload - DL_HEADER_ROOM : 0)};
    if (params[0] == NULL || params[1] == NULL) {
        free(params[0]);
        free(params[1]);
        dl_arm(d, DL_INTERVAL_S / 10);
        return;
    }
    d->running = true;
    d->round_failed = false;
    d->again = false;
    if (!pg_source_query(d->pg, d->select_sql, 2, params, false, dl_on_selected, d)) {
        d->running = false;
        dl_arm(d, DL_INTERVAL_S / 10);
    }
}

struct dead_letter *dead_letter_create(struct ev_loop *loop, const struct relay_config *cfg,
                                       struct pg_source *pg, struct js_sink *js, char *err,
                                       size_t errlen)
{
    struct dead_letter *d = calloc(1, sizeof(*d));
    char *t = config_table_sql(cfg);
    if (d == NULL || t == NULL) {
        free(d);
        free(t);
        snprintf(err, errlen, "dead_letter: out of memory");
        return NULL;
    }
    *d = (struct dead_letter){.loop = loop, .cfg = cfg, .pg = pg, .js = js};
    /* Through the partial index of dead rows not yet dead-lettered (sql/007).
     * A payload too large to send ($2) is not read: its size says why it is
     * missing. The payloads fetched stop at DL_MAX_BYTES, summed from the
     * stored lengths as the claim does (the first row always comes). */
    d->select_sql = str_printf(
        "SELECT c.id, c.event_id, c.subject, CASE WHEN c.fits THEN c.payload END, c.size, "
        "c.headers::text, c.attempts, COALESCE(c.last_error, ''), c.dead_letters FROM ("
        "SELECT o.*, octet_length(o.payload) AS size, "
        "octet_length(o.payload) + octet_length(o.headers::text) <= $2::bigint AS fits, "
        "sum(CASE WHEN octet_length(o.payload) + octet_length(o.headers::text) <= $2::bigint "
        "THEN octet_length(o.payload) ELSE 0 END) OVER w AS run, row_number() OVER w AS rn "
        "FROM (SELECT * FROM %s WHERE status = 'dead' AND dead_lettered_at IS NULL "
        "ORDER BY id LIMIT $1::int) AS o WINDOW w AS (ORDER BY o.id)) AS c "
        "WHERE c.rn = 1 OR c.run <= %d ORDER BY c.id",
        t, DL_MAX_BYTES);
    /* Only the death it was selected for: a row requeued meanwhile is left
     * for its next death. */
    d->mark_sql = str_printf(
        "UPDATE %s AS o SET dead_lettered_at = now(), dead_letters = o.dead_letters + 1 "
        "FROM unnest($1::bigint[], $2::int[]) AS v(id, letters) WHERE o.id = v.id "
        "AND o.status = 'dead' AND o.dead_lettered_at IS NULL AND o.dead_letters = v.letters",
        t);
    free(t);
    if (d->select_sql == NULL || d->mark_sql == NULL) {
        dead_letter_destroy(d);
        snprintf(err, errlen, "dead_letter: out of memory");
        return NULL;
    }
    pg_source_statement_kind(pg, d->select_sql, STATEMENT_DEAD_LETTER);
    pg_source_statement_kind(pg, d->mark_sql, STATEMENT_DEAD_LETTER);
    ev_timer_init(&d->timer, dl_on_timer, 0., 0.);
    ev_timer_init(&d->deadline, dl_on_deadline, 0., 0.);
    return d;
}

void dead_letter_destroy(struct dead_letter *d)
{
    if (d == NULL)
        return;
    ev_timer_stop(d->loop, &d->timer);
    ev_timer_stop(d->loop, &d->deadline);
    /* Messages still with nats.c are its to free (js_sink_destroy ran first). */
    free(d->letters);
    free(d->select_sql);
    free(d->mark_sql);
    free(d);
}

void dead_letter_set_leader(struct dead_letter *d, bool leader)
{
    if (d->cfg->dead_letter_subject[0] == '\0' || d->leader == leader)
        return;
    d->leader = leader;
    if (leader)
        dl_arm(d, 0.);
    else
        ev_timer_stop(d->loop, &d->timer);
}

void dead_letter_due(struct dead_letter *d)
{
    if (!d->leader || d->failing_rounds > 0)
        return; /* failing: the backoff's round takes it */
    if (d->running)
        d->again = true;
    else
        dl_arm(d, 0.);
}

uint64_t dead_letter_published_total(const struct dead_letter *d)
{
    return d->published_total;
}

uint64_t dead_letter_failures_total(const struct dead_letter *d)
{
    return d->failures_total;
}
