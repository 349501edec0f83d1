/* The relay's view of its NATS connection: up/down, reopening, the leader's NATS deadline. */
#include "outbox_relay/nats/nats_link.h"

#include <stdlib.h>

#include "outbox_relay/lib/backoff.h"
#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/lib/util.h"

struct nats_link {
    ev_timer lost;   /* down past OUTBOX_NATS_LOST_MS */
    ev_timer reopen; /* a new connection after nats.c gave up on one */
    struct ev_loop *loop;
    const struct relay_config *cfg;
    struct js_sink *js;
    struct nats_link_events ev;
    bool up;
    bool seen;   /* connected at least once: later connects are reconnects */
    int reopens; /* connections closed by nats.c in a row, for the backoff */
    bool stopped;
    uint64_t reconnects;
};

static void nats_link_on_lost(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct nats_link *l = container_of(w, struct nats_link, lost);
    if (!l->up)
        l->ev.lost_too_long(l->ev.arg);
}

/* The reopen runs on js_sink's worker: its outcome comes back as a
 * CONNECTED or CLOSED event. */
static void nats_link_on_reopen(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct nats_link *l = container_of(w, struct nats_link, reopen);
    char err[512];
    js_sink_reopen(l->js, err, sizeof(err));
}

static void nats_link_connected(struct nats_link *l)
{
    if (!l->up && l->seen) {
        l->reconnects++;
        /* Acks for what was in flight died with the old connection. */
        js_sink_reclaim_pending(l->js, "nats connection lost before the PubAck");
    }
    l->up = l->seen = true;
    l->reopens = 0;
    ev_timer_stop(l->loop, &l->lost);
    log_info("nats connected", "{s:I}", "max_payload", (json_int_t)js_sink_max_payload(l->js));
    /* Checked (or created) on js_sink's worker; it logs the outcome. */
    char err[512];
    js_sink_ensure_stream(l->js, err, sizeof(err));
    l->ev.up(l->ev.arg);
}

/*
 * nats.c stops reconnecting for good when a server refuses the same
 * credentials twice (wrong password, revoked user). Staying up, not ready,
 * and saying why beats both silence and a crash loop: the server side may
 * be fixed without touching the relay.
 */
static void nats_link_closed(struct nats_link *l)
{
    if (l->stopped || ev_is_active(&l->reopen))
        return;
    char why[640];
    js_sink_last_error(l->js, why, sizeof(why));
    int64_t delay_ms =
        backoff_delay_ms(++l->reopens, 1000, l->cfg->reconnect_max_ms, backoff_random());
    log_error(LOG_MSG_NATS_REOPENING, "{s:s, s:f}", "error",
              why[0] ? why : "closed by the client library", "retry_in_s", delay_ms / 1000.0);
    ev_timer_set(&l->reopen, delay_ms / 1000.0, 0.);
    ev_timer_start(l->loop, &l->reopen);
}

struct nats_link *nats_link_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct js_sink *js, struct nats_link_events events, char *err,
                                   size_t errlen)
{
    struct nats_link *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "nats_link: out of memory");
        return NULL;
    }
    *l = (struct nats_link){.loop = loop, .cfg = cfg, .js = js, .ev = events};
    ev_timer_init(&l->lost, nats_link_on_lost, 0., 0.);
    ev_timer_init(&l->reopen, nats_link_on_reopen, 0., 0.);
    return l;
}

void nats_link_destroy(struct nats_link *l)
{
    if (l == NULL)
        return;
    ev_timer_stop(l->loop, &l->lost);
    ev_timer_stop(l->loop, &l->reopen);
    free(l);
}

void nats_link_start(struct nats_link *l)
{
    if (js_sink_connected(l->js))
        nats_link_connected(l);
}

void nats_link_event(struct nats_link *l, enum nats_event_kind kind)
{
    switch (kind) {
    case NATS_EVENT_CONNECTED:
        nats_link_connected(l);
        break;
    case NATS_EVENT_DISCONNECTED:
        if (l->up)
            log_warn(LOG_MSG_NATS_DISCONNECTED, NULL);
        l->up = false;
        if (!ev_is_active(&l->lost)) {
            ev_timer_set(&l->lost, l->cfg->nats_lost_ms / 1000.0, 0.);
            ev_timer_start(l->loop, &l->lost);
        }
        break;
    case NATS_EVENT_CLOSED:
        l->up = false;
        nats_link_closed(l);
        break;
    case NATS_EVENT_PUBACK:
    case NATS_EVENT_STREAM_READ:
        break;
    }
}

void nats_link_stop(struct nats_link *l)
{
    l->stopped = true;
    ev_timer_stop(l->loop, &l->reopen);
}

bool nats_link_up(const struct nats_link *l)
{
    return l->up;
}

uint64_t nats_link_reconnects(const struct nats_link *l)
{
    return l->reconnects;
}
