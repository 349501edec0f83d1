/* The off-loop → loop-thread crossing: reserved PubAck slots, fixed event slots, ev_async. */
#include "outbox_relay/nats/nats_bridge.h"

#include <stdlib.h>
#include <string.h>

/* Connection events between two loop wake-ups; more collapse into the last. */
#define ACK_EVENT_SLOTS 8

struct ack_event {
    enum nats_event_kind kind;
    double at;
    size_t before; /* PubAcks queued ahead of it */
};

struct nats_bridge {
    ev_async wake; /* first member: the callback casts back */
    struct ev_loop *loop;
    nats_bridge_fn fn;
    void *arg;
    pthread_mutex_t lock;
    /*
     * Invariants under lock: cap >= n + reserved, so a PubAck push never
     * grows items; spare (when not NULL) has spare_cap >= reserved, so
     * swapping it in keeps the first. spare is NULL while fn consumes the
     * other buffer, whose capacity busy_cap then stands in for spare_cap.
     */
    struct nats_event *items; /* filled by pushes */
    size_t n, cap;
    size_t reserved; /* PubAcks published but not yet pushed */
    struct nats_event *spare;
    size_t spare_cap;
    size_t busy_cap;
    struct ack_event events[ACK_EVENT_SLOTS];
    size_t nevents;
    size_t lost; /* PubAcks pushed without a reservation that found no room (a bug) */
};

static void nats_bridge_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    nats_bridge_drain((struct nats_bridge *)w);
}

void nats_bridge_drain(struct nats_bridge *q)
{
    /* Swap the buffers under the lock and consume outside it, so no other
     * thread is ever blocked while the loop marks rows. */
    pthread_mutex_lock(&q->lock);
    struct nats_event *batch = q->items;
    size_t n = q->n, cap = q->cap, nevents = q->nevents;
    struct ack_event events[ACK_EVENT_SLOTS];
    memcpy(events, q->events, nevents * sizeof(events[0]));
    q->nevents = 0;
    q->items = q->spare;
    q->cap = q->spare_cap;
    q->n = 0;
    q->spare = NULL;
    q->spare_cap = 0;
    q->busy_cap = cap;
    pthread_mutex_unlock(&q->lock);

    /* Each event in its place among the PubAcks. */
    size_t done = 0;
    for (size_t i = 0; i < nevents; i++) {
        if (events[i].before > done) {
            q->fn(q->arg, batch + done, events[i].before - done);
            done = events[i].before;
        }
        struct nats_event e = {.kind = events[i].kind, .at = events[i].at};
        q->fn(q->arg, &e, 1);
    }
    if (n > done)
        q->fn(q->arg, batch + done, n - done);

    pthread_mutex_lock(&q->lock);
    if (q->spare == NULL) {
        /* Reservations made meanwhile stayed within cap (else they installed
         * a new spare): the batch's buffer holds every reserved PubAck. */
        q->spare = batch;
        q->spare_cap = cap;
    } else {
        free(batch);
    }
    pthread_mutex_unlock(&q->lock);
}

struct nats_bridge *nats_bridge_create(struct ev_loop *loop, nats_bridge_fn fn, void *arg,
                                       char *err, size_t errlen)
{
    struct nats_bridge *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        snprintf(err, errlen, "nats_bridge: out of memory");
        return NULL;
    }
    q->loop = loop;
    q->fn = fn;
    q->arg = arg;
    pthread_mutex_init(&q->lock, NULL);
    ev_async_init(&q->wake, nats_bridge_on_wake);
    ev_async_start(loop, &q->wake);
    return q;
}

/* Grows *buf to hold at least want entries (doubling, from 1024). */
static bool ack_grow(struct nats_event **buf, size_t *cap, size_t want)
{
    if (*cap >= want && *buf != NULL)
        return true;
    size_t c = *cap ? *cap : 1024;
    while (c < want)
        c *= 2;
    struct nats_event *b = realloc(*buf, c * sizeof(*b));
    if (b == NULL)
        return false;
    *buf = b;
    *cap = c;
    return true;
}

bool nats_bridge_reserve(struct nats_bridge *q)
{
    pthread_mutex_lock(&q->lock);
    size_t want = q->reserved + 1;
    bool ok = ack_grow(&q->items, &q->cap, q->n + want);
    /* While fn consumes, the buffer it holds comes back as the spare: only
     * outgrowing it needs a new one (and that one replaces it). */
    if (ok && (q->spare != NULL ? q->spare_cap < want : q->busy_cap < want))
        ok = ack_grow(&q->spare, &q->spare_cap, want);
    if (ok)
        q->reserved = want;
    pthread_mutex_unlock(&q->lock);
    return ok;
}

void nats_bridge_unreserve(struct nats_bridge *q)
{
    pthread_mutex_lock(&q->lock);
    if (q->reserved > 0)
        q->reserved--;
    pthread_mutex_unlock(&q->lock);
}

void nats_bridge_push(struct nats_bridge *q, const struct nats_event *e)
{
    pthread_mutex_lock(&q->lock);
    if (e->kind == NATS_EVENT_PUBACK) {
        if (q->reserved > 0)
            q->reserved--;
        if (q->n < q->cap || ack_grow(&q->items, &q->cap, q->n + 1))
            q->items[q->n++] = *e;
        else
            q->lost++; /* unreachable with a reservation; the message is kept, not freed,
                        * so its address can never match another row */
    } else {
        size_t slot = q->nevents < ACK_EVENT_SLOTS ? q->nevents++ : ACK_EVENT_SLOTS - 1;
        q->events[slot] = (struct ack_event){.kind = e->kind, .at = e->at, .before = q->n};
    }
    pthread_mutex_unlock(&q->lock);
    ev_async_send(q->loop, &q->wake);
}

void nats_bridge_destroy(struct nats_bridge *q)
{
    if (q == NULL)
        return;
    ev_async_stop(q->loop, &q->wake);
    for (size_t i = 0; i < q->n; i++)
        natsMsg_Destroy(q->items[i].msg);
    free(q->items);
    free(q->spare);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
