/* The publish path: rows to JetStream in key order, PubAcks and their deadline, the fence. */
#include "outbox_relay/pipeline/publisher.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/metrics.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/nats/message.h"
#include "outbox_relay/nats/pub_chain.h"
#include "outbox_relay/lib/util.h"

struct publisher {
    ev_timer deadline; /* fails rows whose PubAck is overdue */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct inflight *rows;
    struct js_sink *js;
    struct publisher_events ev;
    struct pub_chain chain; /* the fence that lets one key's publishes be pipelined */
    /* Messages nats.c still waits an ack for whose rows the relay gave up on
     * (overdue, or dropped with leadership). They count against nats.c's
     * MaxPending, past which every publish would block the loop: reclaimed
     * before that. */
    size_t orphans;
    uint64_t duplicate_acks;        /* PubAcks saying the stream already held the message */
    struct metrics_latency latency; /* created_at → PubAck */
    double answered_sent_at;        /* the latest send time of a publish the server answered */
    bool draining;
};

/* The row failed on its own account: the pipeline records it (an attempt). */
static void publisher_failed(struct publisher *p, struct outbox_row *row, const char *error,
                             bool permanent, enum publish_reason reason)
{
    inflight_failed(p->rows, row);
    p->ev.failed(p->ev.arg, row, error, permanent, reason);
}

static void publisher_publish_row(struct publisher *p, struct outbox_row *row);

/* Publishes row and, pipelined, the waiting rows behind it in its key, in order. */
void publisher_send(struct publisher *p, struct outbox_row *row)
{
    while (row != NULL && row->state == ROW_WAITING) {
        publisher_publish_row(p, row);
        if (row->state != ROW_PUBLISHING || !inflight_pipelined(p->rows))
            return; /* failed (it holds its key), or waits for the chain */
        row = row->key_next;
    }
}

/*
 * A broken chain with nothing left in flight starts anew: every row that
 * waits for it goes, each key's rows in order.
 */
static void publisher_chain_resume(struct publisher *p)
{
    if (!p->chain.broken || p->draining || inflight_publishing(p->rows) > 0)
        return;
    pub_chain_may_publish(&p->chain, 0);
    size_t n = 0;
    struct outbox_row **ready = inflight_ready(p->rows, &n);
    for (size_t i = 0; i < n && !p->chain.broken; i++)
        publisher_send(p, ready[i]);
    free(ready);
}

struct fence_room {
    natsMsg *msg;
    int64_t max_payload;
};

/* Whether the message still fits max_payload and the header limit with its fence. */
static bool publisher_fence_fits(void *arg, const char *expect)
{
    struct fence_room *room = arg;
    return message_fits_with_header(room->msg, JS_HEADER_EXPECT_LAST_MSG_ID, expect,
                                    room->max_payload);
}

static void publisher_publish_row(struct publisher *p, struct outbox_row *row)
{
    if (row->msg == NULL) {
        /* The row was refused when claimed; the reason was kept. */
        publisher_failed(p, row, row->invalid ? row->invalid : "invalid row", true,
                         row->invalid_reason);
        return;
    }
    if (p->chain.broken) {
        /* Nothing goes until every publish of the broken chain resolved;
         * then the chain starts anew with every waiting row, this one too. */
        if (inflight_publishing(p->rows) == 0)
            publisher_chain_resume(p);
        return;
    }
    natsMsg *msg = row->msg;
    const natsMsg *identity = msg;
    struct chain_pos pos = {0, 0};
    const char *expect = NULL;
    char *event_id = NULL;
    if (p->chain.enabled) {
        /* Copied now: once published, nats.c owns msg and may free it at any time. */
        const char *id = js_sink_msg_id(msg);
        event_id = id != NULL ? strdup(id) : NULL;
        if (event_id == NULL) {
            /* Unchained, it could overtake an earlier row of its key. */
            publisher_failed(p, row, "publish failed: out of memory", false, PUBLISH_NATS_ERROR);
            return;
        }
        /* The row's size was judged without the fence; a row that fits only
         * without it is never refused for it: it opens a new epoch, whose
         * first publish carries none, once it is the first of its key. */
        struct fence_room room = {msg, js_sink_max_payload(p->js)};
        if (pub_chain_expect(&p->chain, inflight_publishing(p->rows), natsMsg_GetSubject(msg),
                             inflight_first_of_key(row), publisher_fence_fits, &room, &pos,
                             &expect) == CHAIN_WAIT) {
            free(event_id);
            return; /* sent once the earlier rows of its key resolved */
        }
    }
    natsStatus s =
        pos.epoch != 0 ? js_sink_publish_after(p->js, &msg, expect) : js_sink_publish(p->js, &msg);
    if (s == NATS_OK) {
        row->msg = NULL;
        row->chain = pos;
        inflight_sent(p->rows, row, identity, ev_now(p->loop));
        pub_chain_sent(&p->chain, &pos, event_id);
        return;
    }
    free(event_id);
    row->msg = NULL;
    natsMsg_Destroy(msg);
    row->chain.epoch = row->chain.seq = 0;
    char why[160];
    snprintf(why, sizeof(why), "publish failed: %s", natsStatus_GetText(s));
    struct publish_verdict v = publish_error_classify(s, 0);
    publisher_failed(p, row, why, v.permanent, v.reason);
}

/*
 * A chained row whose publish failed after an earlier row of its key failed
 * goes back to the table untouched: one key at a time it would not have
 * been tried, so this is no attempt of its own; the table holds it until
 * the earlier row is published or dead.
 */
static void publisher_release_behind_failure(struct publisher *p, struct outbox_row *row)
{
    inflight_release(p->rows, row);
    p->ev.released(p->ev.arg, row);
}

/*
 * A chained publish refused with 10070: the stream's last message was not
 * the one it named, because an earlier publish was not stored (it failed,
 * or was a duplicate). The row was not stored either; it is no attempt of
 * its own and waits in its place for the chain to start anew. Unless the
 * previous publish was stored: then another writer came in between, and
 * the relay falls back to one publish per key.
 */
static void publisher_on_chain_refused(struct publisher *p, struct outbox_row *row, natsMsg *msg)
{
    if (pub_chain_rejected(&p->chain, &row->chain) == CHAIN_OTHER_WRITER) {
        inflight_set_pipelined(p->rows, false);
        log_warn(LOG_MSG_ANOTHER_WRITER, "{s:s}", "stream", p->cfg->stream);
    }
    row->chain.epoch = row->chain.seq = 0;
    /* Its fence belonged to the chain that broke: without it the row goes as
     * any other, chained anew or (pipelining off) unfenced. Cannot copy it
     * (out of memory): the table keeps the row, untried, like the rows
     * behind a failure. */
    if (p->draining || inflight_behind_failure(row) || js_sink_msg_unfenced(&msg) != NATS_OK) {
        /* An earlier row of its key failed: the table decides when it goes. */
        natsMsg_Destroy(msg);
        publisher_release_behind_failure(p, row);
        return;
    }
    inflight_requeue(p->rows, row, msg);
}

void publisher_on_puback(struct publisher *p, struct nats_event *e)
{
    struct outbox_row *row = inflight_by_msg(p->rows, e->msg);
    if (row == NULL) {
        natsMsg_Destroy(e->msg);
        e->msg = NULL;
        /* The ack of a row given up on (overdue, or dropped with leadership). */
        if (p->orphans > 0)
            p->orphans--;
        return;
    }
    if (!e->ok && row->chain.epoch != 0 && e->js_code == JSStreamWrongLastMsgIDErr) {
        publisher_on_chain_refused(p, row, e->msg);
        e->msg = NULL;
        publisher_chain_resume(p);
        return;
    }
    /* A PubAck or a JetStream error is the server's answer; a failure nats.c
     * reports for a lost connection is not. */
    if ((e->ok || e->js_code != 0) && row->sent_at > p->answered_sent_at)
        p->answered_sent_at = row->sent_at;
    natsMsg_Destroy(e->msg);
    e->msg = NULL;
    if (!e->ok) {
        pub_chain_failed(&p->chain, &row->chain);
        if (row->chain.epoch != 0 && inflight_behind_failure(row)) {
            publisher_release_behind_failure(p, row);
            publisher_chain_resume(p);
            return;
        }
        struct publish_verdict v = publish_error_classify(e->status, e->js_code);
        publisher_failed(p, row, e->error, v.permanent, v.reason);
        publisher_chain_resume(p);
        return;
    }
    if (row->chain.epoch != 0)
        pub_chain_acked(&p->chain, &row->chain, e->duplicate);
    if (e->duplicate) {
        /* A re-publish after a crash, or an event_id the application reused:
         * inside the duplicate window JetStream kept the first message. */
        p->duplicate_acks++;
        log_info("duplicate ack: the stream already held this event_id", "{s:I, s:I}", "id",
                 (json_int_t)row->id, "stream_seq", (json_int_t)e->stream_seq);
    }
    if (row->created_at > 0 && e->at >= row->created_at)
        metrics_latency_observe(&p->latency, e->at - row->created_at);
    struct outbox_row *next = inflight_acked(p->rows, row);
    p->ev.acked(p->ev.arg, row, e->stream_seq, e->at, e->duplicate);
    if (next != NULL && !p->draining)
        publisher_send(p, next);
    publisher_chain_resume(p);
}

/*
 * The PubAck deadline is the relay's, not nats.c's: nats.c keeps a timeout
 * record per publish until its deadline even after the ack came, so its
 * MaxWait costs memory in proportion to rate x timeout. A late ack for an expired row matches no
 * row and is dropped; the row was retried and JetStream deduplicates it.
 */
/* A publish the relay stopped waiting for: its ack, if any, will match no row (an orphan). */
static void publisher_give_up(struct publisher *p, struct outbox_row *row, const char *why)
{
    p->orphans++;
    pub_chain_failed(&p->chain, &row->chain);
    if (row->chain.epoch != 0 && inflight_behind_failure(row)) {
        publisher_release_behind_failure(p, row);
        return;
    }
    publisher_failed(p, row, why, false, PUBLISH_TIMEOUT);
}

static void publisher_on_ack_overdue(void *arg, struct outbox_row *row)
{
    struct publisher *p = arg;
    char why[96];
    snprintf(why, sizeof(why), "no PubAck within %d ms (OUTBOX_PUBLISH_TIMEOUT_MS)",
             p->cfg->publish_timeout_ms);
    publisher_give_up(p, row, why);
}

static void publisher_on_reclaimed(void *arg, struct outbox_row *row)
{
    publisher_give_up(arg, row, "no PubAck: nats.c's pending publishes were reclaimed");
}

static void publisher_on_ack_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct publisher *p = container_of(w, struct publisher, deadline);
    publisher_chain_resume(p); /* a safety net: a chain left broken with nothing in flight */
    if (inflight_publishing(p->rows) == 0)
        return;
    size_t n = inflight_expire(p->rows, ev_now(loop) - p->cfg->publish_timeout_ms / 1000.0,
                               publisher_on_ack_overdue, p);
    if (n > 0)
        log_warn(LOG_MSG_PUBLISHES_TIMED_OUT, "{s:i, s:i}", "rows", (int)n, "timeout_ms",
                 p->cfg->publish_timeout_ms);
    /* nats.c blocks a publish past MaxPending, 2 x OUTBOX_MAX_INFLIGHT + 1024
     * (js_sink.c); held rows never pass OUTBOX_MAX_INFLIGHT, so orphans may
     * reach as many before a publish could block the loop. Then the rows
     * still publishing are given up first, oldest first (one failure per
     * key, the rest of each key released untouched), and nats.c's whole
     * pending list goes; the acks it reports match no row. */
    if (p->orphans >= (size_t)p->cfg->max_inflight) {
        inflight_expire(p->rows, ev_now(loop) + 1.0, publisher_on_reclaimed, p);
        js_sink_reclaim_pending(p->js, "no PubAck: nats.c's pending publishes were reclaimed");
    }
    publisher_chain_resume(p);
}

struct publisher *publisher_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct inflight *rows, struct js_sink *js,
                                   struct publisher_events events, char *err, size_t errlen)
{
    struct publisher *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "publisher: out of memory");
        return NULL;
    }
    *p = (struct publisher){.loop = loop, .cfg = cfg, .rows = rows, .js = js, .ev = events};
    pub_chain_init(&p->chain, config_pipelined(cfg));
    inflight_set_pipelined(rows, p->chain.enabled);
    log_info(p->chain.enabled ? LOG_MSG_PIPELINING_ON : LOG_MSG_PIPELINING_OFF, "{s:s, s:s}",
             "pipeline", cfg->pipeline, "stream", cfg->stream);
    /* Check deadlines ten times per timeout: a row fails at most 10% late. */
    double tick = cfg->publish_timeout_ms / 10000.0;
    tick = tick < 0.01 ? 0.01 : tick > 1.0 ? 1.0 : tick;
    ev_timer_init(&p->deadline, publisher_on_ack_deadline, tick, tick);
    return p;
}

void publisher_start(struct publisher *p)
{
    ev_timer_start(p->loop, &p->deadline);
}

void publisher_destroy(struct publisher *p)
{
    if (p == NULL)
        return;
    ev_timer_stop(p->loop, &p->deadline);
    pub_chain_free(&p->chain);
    free(p);
}

void publisher_drain(struct publisher *p)
{
    p->draining = true;
}

void publisher_turn_done(struct publisher *p)
{
    /* A relay keeping up with its producers has few publishes in flight:
     * this turn's go to the server now rather than after nats.c's 1 ms
     * pause. Working through a backlog, the pause gathers larger writes,
     * and a flush per turn (a PING each) would slow a hot key's drain. */
    if (inflight_publishing(p->rows) < (size_t)p->cfg->batch_size)
        js_sink_flush(p->js);
}

bool publisher_unanswered_since(const struct publisher *p, double sent_at)
{
    /* Publishes of one loop turn share their send time: one of them
     * answered says nothing about the others (a slow turn can even expire
     * its own rows before their PubAcks are read). */
    return sent_at >= p->answered_sent_at;
}

size_t publisher_drop_all(struct publisher *p)
{
    p->orphans += inflight_publishing(p->rows);
    return inflight_drop_all(p->rows);
}

uint64_t publisher_duplicate_acks(const struct publisher *p)
{
    return p->duplicate_acks;
}

const struct metrics_latency *publisher_latency(const struct publisher *p)
{
    return &p->latency;
}
