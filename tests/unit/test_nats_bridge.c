/* Unit tests for the ack bridge: reserved PubAcks are never lost, events keep their place. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/nats/nats_bridge.h"
#include "run_suite.h"

struct seen {
    struct nats_event *items;
    size_t n, cap;
    struct nats_bridge *q;
    int republish; /* PubAcks to reserve and push from inside the callback */
};

static void record(void *arg, struct nats_event *entries, size_t n)
{
    struct seen *s = arg;
    for (size_t i = 0; i < n; i++) {
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 256;
            s->items = realloc(s->items, s->cap * sizeof(*s->items));
            ck_assert_ptr_nonnull(s->items);
        }
        s->items[s->n++] = entries[i];
        /* The pipeline publishes the next row of a key from inside the callback. */
        if (entries[i].kind == NATS_EVENT_PUBACK && s->republish > 0) {
            s->republish--;
            ck_assert(nats_bridge_reserve(s->q));
            struct nats_event e = {.kind = NATS_EVENT_PUBACK, .stream_seq = 1000000 + s->republish};
            nats_bridge_push(s->q, &e);
        }
    }
}

static void push_ack(struct nats_bridge *q, uint64_t id)
{
    struct nats_event e = {.kind = NATS_EVENT_PUBACK, .ok = true, .stream_seq = id};
    nats_bridge_push(q, &e);
}

static void push_event(struct nats_bridge *q, enum nats_event_kind kind)
{
    struct nats_event e = {.kind = kind};
    nats_bridge_push(q, &e);
}

START_TEST(test_events_keep_their_place_among_pubacks)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct seen s = {0};
    struct nats_bridge *q = nats_bridge_create(loop, record, &s, NULL, 0);
    for (int i = 0; i < 3; i++)
        ck_assert(nats_bridge_reserve(q));
    push_ack(q, 1);
    push_event(q, NATS_EVENT_DISCONNECTED);
    push_event(q, NATS_EVENT_CONNECTED);
    push_ack(q, 2);
    push_ack(q, 3);
    push_event(q, NATS_EVENT_CLOSED);
    nats_bridge_drain(q);
    ck_assert_uint_eq(s.n, 6);
    enum nats_event_kind want[] = {NATS_EVENT_PUBACK, NATS_EVENT_DISCONNECTED, NATS_EVENT_CONNECTED,
                                   NATS_EVENT_PUBACK, NATS_EVENT_PUBACK,       NATS_EVENT_CLOSED};
    for (size_t i = 0; i < 6; i++)
        ck_assert_int_eq(s.items[i].kind, want[i]);
    ck_assert(s.items[0].stream_seq == 1 && s.items[3].stream_seq == 2 &&
              s.items[4].stream_seq == 3);
    nats_bridge_destroy(q);
    ev_loop_destroy(loop);
    free(s.items);
}
END_TEST

START_TEST(test_many_events_collapse_into_the_last)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct seen s = {0};
    struct nats_bridge *q = nats_bridge_create(loop, record, &s, NULL, 0);
    for (int i = 0; i < 50; i++)
        push_event(q, i % 2 ? NATS_EVENT_CONNECTED : NATS_EVENT_DISCONNECTED);
    push_event(q, NATS_EVENT_CLOSED);
    nats_bridge_drain(q);
    ck_assert_uint_ge(s.n, 2);
    ck_assert_uint_le(s.n, 8);
    ck_assert_int_eq(s.items[0].kind, NATS_EVENT_DISCONNECTED);
    ck_assert_int_eq(s.items[s.n - 1].kind, NATS_EVENT_CLOSED);
    /* The fixed slots are free again. */
    s.n = 0;
    push_event(q, NATS_EVENT_CONNECTED);
    nats_bridge_drain(q);
    ck_assert_uint_eq(s.n, 1);
    ck_assert_int_eq(s.items[0].kind, NATS_EVENT_CONNECTED);
    nats_bridge_destroy(q);
    ev_loop_destroy(loop);
    free(s.items);
}
END_TEST

#define THREADS    4
#define PER_THREAD 20000

struct pusher {
    struct nats_bridge *q;
    int thread;
};

static void *push_many(void *arg)
{
    struct pusher *p = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        push_ack(p->q, (uint64_t)p->thread * PER_THREAD + (uint64_t)i);
        if (i % 1000 == 0)
            push_event(p->q, NATS_EVENT_CONNECTED);
    }
    return NULL;
}

/*
 * Every reserved PubAck pushed from other threads arrives exactly once,
 * while the loop drains concurrently and reserves more from its callback
 * (the buffer it consumes is then in use, and must not be the one that
 * receives the new pushes).
 */
START_TEST(test_reserved_pubacks_from_threads_all_arrive_once)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct seen s = {0};
    struct nats_bridge *q = nats_bridge_create(loop, record, &s, NULL, 0);
    s.q = q;
    s.republish = 5000;
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        ck_assert(nats_bridge_reserve(q));
    pthread_t t[THREADS];
    struct pusher p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct pusher){q, i};
        ck_assert_int_eq(pthread_create(&t[i], NULL, push_many, &p[i]), 0);
    }
    for (int round = 0; round < 200; round++) {
        ev_run(loop, EVRUN_NOWAIT);
        nats_bridge_drain(q);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    while (s.republish > 0 || s.n == 0)
        nats_bridge_drain(q);
    nats_bridge_drain(q);
    nats_bridge_drain(q);

    size_t total = THREADS * PER_THREAD + 5000;
    char *got = calloc(total, 1);
    size_t acks = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.items[i].kind != NATS_EVENT_PUBACK)
            continue;
        uint64_t id = s.items[i].stream_seq;
        size_t slot = id >= 1000000 ? THREADS * PER_THREAD + (size_t)(id - 1000000) : (size_t)id;
        ck_assert_uint_lt(slot, total);
        ck_assert_msg(!got[slot], "PubAck %llu delivered twice", (unsigned long long)id);
        got[slot] = 1;
        acks++;
    }
    ck_assert_uint_eq(acks, total);
    free(got);
    nats_bridge_destroy(q);
    ev_loop_destroy(loop);
    free(s.items);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_bridge");
    TCase *tc = tcase_create("nats_bridge");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_events_keep_their_place_among_pubacks);
    tcase_add_test(tc, test_many_events_collapse_into_the_last);
    tcase_add_test(tc, test_reserved_pubacks_from_threads_all_arrive_once);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
