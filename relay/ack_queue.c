/* The nats.c-thread → loop-thread crossing: a mutex-protected vector plus ev_async. */
#include "outbox_relay/ack_queue.h"

#include <stdlib.h>
#include <string.h>

struct ack_queue {
    ev_async wake; /* first member: the callback casts back */
    struct ev_loop *loop;
    ack_queue_fn fn;
    void *arg;
    pthread_mutex_t lock;
    struct ack_entry *items; /* filled by producers */
    size_t n, cap;
    struct ack_entry *spare; /* swapped in while the loop consumes */
    size_t spare_cap;
};

static void ack_queue_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    ack_queue_drain((struct ack_queue *)w);
}

void ack_queue_drain(struct ack_queue *q)
{
    /* Swap the buffers under the lock and consume outside it, so nats.c's
     * threads are never blocked while the loop marks rows. */
    pthread_mutex_lock(&q->lock);
    struct ack_entry *batch = q->items;
    size_t n = q->n, cap = q->cap;
    q->items = q->spare;
    q->cap = q->spare_cap;
    q->n = 0;
    q->spare = NULL;
    q->spare_cap = 0;
    pthread_mutex_unlock(&q->lock);

    if (n > 0)
        q->fn(q->arg, batch, n);

    pthread_mutex_lock(&q->lock);
    if (q->spare == NULL) {
        q->spare = batch;
        q->spare_cap = cap;
    } else {
        free(batch);
    }
    pthread_mutex_unlock(&q->lock);
}

struct ack_queue *ack_queue_create(struct ev_loop *loop, ack_queue_fn fn, void *arg)
{
    struct ack_queue *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->loop = loop;
    q->fn = fn;
    q->arg = arg;
    pthread_mutex_init(&q->lock, NULL);
    ev_async_init(&q->wake, ack_queue_on_wake);
    ev_async_start(loop, &q->wake);
    return q;
}

bool ack_queue_push(struct ack_queue *q, const struct ack_entry *e)
{
    pthread_mutex_lock(&q->lock);
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 1024;
        struct ack_entry *items = realloc(q->items, cap * sizeof(*items));
        if (items == NULL) {
            pthread_mutex_unlock(&q->lock);
            return false;
        }
        q->items = items;
        q->cap = cap;
    }
    q->items[q->n++] = *e;
    pthread_mutex_unlock(&q->lock);
    ev_async_send(q->loop, &q->wake);
    return true;
}

void ack_queue_destroy(struct ack_queue *q)
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
