/* Unit tests for the held rows: per-key hold decisions, lookups by id and by message, drops. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/pipeline/inflight.h"
#include "run_suite.h"

/* Distinct addresses standing in for the natsMsg pointers nats.c hands back with acks. */
static char msg_token[4096];
#define MSG(i) ((const natsMsg *)(void *)&msg_token[i])

static struct outbox_row *row_new(int64_t id, const char *key)
{
    struct outbox_row *row = calloc(1, sizeof(*row));
    ck_assert_ptr_nonnull(row);
    row->id = id;
    if (key != NULL) {
        row->ordering_key = strdup(key);
        ck_assert_ptr_nonnull(row->ordering_key);
    }
    return row;
}

/* Sends the row as the relay does: message handed over, identity kept. */
static void send_row(struct inflight *t, struct outbox_row *row, int token)
{
    ck_assert_int_eq(row->state, ROW_WAITING);
    inflight_sent(t, row, MSG(token), 0.0);
    ck_assert_int_eq(row->state, ROW_PUBLISHING);
}

START_TEST(test_rows_without_key_are_independent)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    ck_assert_ptr_nonnull(t);
    for (int i = 1; i <= 5; i++)
        ck_assert_msg(inflight_add(t, row_new(i, NULL)), "row %d without key must go at once", i);
    ck_assert_uint_eq(inflight_count(t), 5);
    ck_assert_uint_eq(inflight_publishing(t), 0);
    for (int i = 1; i <= 5; i++)
        send_row(t, inflight_find(t, i), i);
    ck_assert_uint_eq(inflight_publishing(t), 5);
    /* An ack of a row without a key releases nothing. */
    struct outbox_row *r3 = inflight_by_msg(t, MSG(3));
    ck_assert_ptr_nonnull(r3);
    ck_assert_ptr_null(inflight_acked(t, r3));
    ck_assert_int_eq(r3->state, ROW_MARKING);
    ck_assert_uint_eq(inflight_recorded(t, r3), 0);
    ck_assert_ptr_null(inflight_find(t, 3));
    ck_assert_uint_eq(inflight_count(t), 4);
    inflight_destroy(t);
}
END_TEST

START_TEST(test_only_head_of_key_publishes)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    ck_assert(inflight_add(t, row_new(10, "K")));
    ck_assert(!inflight_add(t, row_new(11, "K")));
    ck_assert(!inflight_add(t, row_new(12, "K")));
    /* Other keys do not wait for K. */
    ck_assert(inflight_add(t, row_new(13, "L")));
    ck_assert(!inflight_add(t, row_new(14, "L")));
    ck_assert(inflight_add(t, row_new(15, NULL)));
    ck_assert_uint_eq(inflight_count(t), 6);
    for (int64_t id = 10; id <= 15; id++)
        ck_assert_int_eq(inflight_find(t, id)->state, ROW_WAITING);
    inflight_destroy(t);
}
END_TEST

START_TEST(test_ack_advances_key_in_id_order)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *a = row_new(1, "K"), *b = row_new(2, "K"), *c = row_new(3, "K");
    ck_assert(inflight_add(t, a));
    ck_assert(!inflight_add(t, b));
    send_row(t, a, 1);

    ck_assert_ptr_eq(inflight_by_msg(t, MSG(1)), a);
    ck_assert_ptr_eq(inflight_acked(t, a), b); /* b is now first, and still waiting */
    ck_assert_int_eq(a->state, ROW_MARKING);
    ck_assert_int_eq(b->state, ROW_WAITING);
    /* A row claimed now queues behind b, not beside it. */
    ck_assert(!inflight_add(t, c));
    send_row(t, b, 2);
    /* a's mark commits while b is out: nothing is dropped, b keeps the key. */
    ck_assert_uint_eq(inflight_recorded(t, a), 0);
    ck_assert(!inflight_add(t, row_new(4, "K")));

    ck_assert_ptr_eq(inflight_by_msg(t, MSG(2)), b);
    ck_assert_ptr_eq(inflight_acked(t, b), c);
    send_row(t, c, 3);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(3)), c);
    struct outbox_row *d = inflight_find(t, 4);
    ck_assert_ptr_eq(inflight_acked(t, c), d);
    send_row(t, d, 4);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(4)), d);
    ck_assert_ptr_null(inflight_acked(t, d)); /* the queue is empty */
    ck_assert_uint_eq(inflight_recorded(t, b), 0);
    ck_assert_uint_eq(inflight_recorded(t, c), 0);
    ck_assert_uint_eq(inflight_recorded(t, d), 0);
    ck_assert_uint_eq(inflight_count(t), 0);
    /* The key is free again: a new row of it goes at once. */
    ck_assert(inflight_add(t, row_new(5, "K")));
    inflight_destroy(t);
}
END_TEST

/*
 * The queue borrows its name from its head row. After the first head is
 * acked and freed, lookups of the key must still find the queue (under ASan,
 * a dangling name is a use after free).
 */
START_TEST(test_key_name_survives_its_first_row)
{
    struct inflight *t = inflight_create(4, NULL, 0);
    struct outbox_row *a = row_new(1, "shared-key"), *b = row_new(2, "shared-key");
    ck_assert(inflight_add(t, a));
    ck_assert(!inflight_add(t, b));
    send_row(t, a, 1);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(1)), a);
    ck_assert_ptr_eq(inflight_acked(t, a), b);
    ck_assert_uint_eq(inflight_recorded(t, a), 0); /* frees a's copy of the key */
    ck_assert(!inflight_add(t, row_new(3, "shared-key")));
    send_row(t, b, 2);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(2)), b);
    ck_assert_ptr_eq(inflight_acked(t, b), inflight_find(t, 3));
    inflight_destroy(t);
}
END_TEST

START_TEST(test_failure_holds_key_until_recorded)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *head = row_new(1, "K"), *w1 = row_new(2, "K"), *w2 = row_new(3, "K");
    ck_assert(inflight_add(t, head));
    ck_assert(!inflight_add(t, w1));
    ck_assert(inflight_add(t, row_new(9, "L")));
    send_row(t, head, 1);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(1)), head);

    inflight_failed(t, head);
    ck_assert_int_eq(head->state, ROW_MARKING);
    ck_assert(head->holds_key);
    ck_assert_int_eq(w1->state, ROW_WAITING);
    /* Until the failure is recorded, rows of K claimed meanwhile wait too. */
    ck_assert(!inflight_add(t, w2));
    /* L is not affected. */
    ck_assert(!inflight_add(t, row_new(10, "L")));
    ck_assert(inflight_add(t, row_new(11, "M")));

    /* Recorded: the rows behind the failed head leave with it (the table holds them now). */
    ck_assert_uint_eq(inflight_recorded(t, head), 2);
    ck_assert_ptr_null(inflight_find(t, 1));
    ck_assert_ptr_null(inflight_find(t, 2));
    ck_assert_ptr_null(inflight_find(t, 3));
    ck_assert_ptr_nonnull(inflight_find(t, 9));
    ck_assert_ptr_nonnull(inflight_find(t, 10));
    ck_assert_uint_eq(inflight_count(t), 3);
    /* A later claim of K (after a retry succeeded) starts a fresh queue. */
    ck_assert(inflight_add(t, row_new(2, "K")));
    inflight_destroy(t);
}
END_TEST

/* A row refused at claim time fails before it was ever sent: it holds its key the same way. */
START_TEST(test_invalid_head_holds_key_without_publish)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *bad = row_new(1, "K");
    ck_assert(inflight_add(t, bad));
    ck_assert(!inflight_add(t, row_new(2, "K")));
    inflight_failed(t, bad);
    ck_assert_uint_eq(inflight_publishing(t), 0);
    ck_assert(bad->holds_key);
    ck_assert_uint_eq(inflight_recorded(t, bad), 1);
    ck_assert_uint_eq(inflight_count(t), 0);
    inflight_destroy(t);
}
END_TEST

START_TEST(test_failure_without_key_drops_nothing)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *r = row_new(1, NULL);
    ck_assert(inflight_add(t, r));
    ck_assert(inflight_add(t, row_new(2, NULL)));
    send_row(t, r, 1);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(1)), r);
    inflight_failed(t, r);
    ck_assert(!r->holds_key);
    ck_assert_uint_eq(inflight_recorded(t, r), 0);
    ck_assert_ptr_nonnull(inflight_find(t, 2));
    inflight_destroy(t);
}
END_TEST

START_TEST(test_drop_waiting_keeps_publishing_and_marking)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *head = row_new(1, "K"), *acked = row_new(5, NULL);
    ck_assert(inflight_add(t, head));
    ck_assert(!inflight_add(t, row_new(2, "K")));
    ck_assert(!inflight_add(t, row_new(3, "K")));
    ck_assert(inflight_add(t, row_new(4, NULL))); /* claimed, not sent yet */
    ck_assert(inflight_add(t, acked));
    send_row(t, head, 1);
    send_row(t, acked, 5);
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(5)), acked);
    ck_assert_ptr_null(inflight_acked(t, acked));

    ck_assert_uint_eq(inflight_drop_waiting(t), 3);
    ck_assert_uint_eq(inflight_count(t), 2);
    ck_assert_ptr_eq(inflight_find(t, 1), head);
    ck_assert_ptr_eq(inflight_find(t, 5), acked);
    ck_assert_ptr_null(inflight_find(t, 2));
    ck_assert_ptr_null(inflight_find(t, 4));
    ck_assert_uint_eq(inflight_publishing(t), 1);
    /* The head's ack finds nothing left behind it. */
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(1)), head);
    ck_assert_ptr_null(inflight_acked(t, head));
    ck_assert_uint_eq(inflight_drop_waiting(t), 0);
    inflight_destroy(t);
}
END_TEST

START_TEST(test_lookup_by_message_once)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *r = row_new(7, NULL);
    ck_assert(inflight_add(t, r));
    ck_assert_ptr_null(inflight_by_msg(t, MSG(7))); /* not sent yet */
    send_row(t, r, 7);
    ck_assert_ptr_eq(r->sent, MSG(7));
    ck_assert_ptr_null(inflight_by_msg(t, MSG(8)));
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(7)), r);
    ck_assert_ptr_null(r->sent);
    ck_assert_uint_eq(inflight_publishing(t), 0);
    /* A second ack for the same message (or one for a row no longer held): nothing. */
    ck_assert_ptr_null(inflight_by_msg(t, MSG(7)));
    inflight_destroy(t);
}
END_TEST

/* A row recorded while still published (e.g. marked by a failure path) leaves the message index. */
START_TEST(test_recorded_while_publishing_leaves_index)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    struct outbox_row *r = row_new(1, NULL);
    ck_assert(inflight_add(t, r));
    send_row(t, r, 1);
    ck_assert_uint_eq(inflight_recorded(t, r), 0);
    ck_assert_uint_eq(inflight_publishing(t), 0);
    ck_assert_ptr_null(inflight_by_msg(t, MSG(1)));
    inflight_destroy(t);
}
END_TEST

/* Far more rows than buckets (chains), with real nats.c messages as identities. */
/* Overdue publishes: only PUBLISHING rows sent before the deadline, detached from their message. */
static void expire_fail(void *arg, struct outbox_row *row)
{
    struct inflight *t = arg;
    inflight_failed(t, row);
}

START_TEST(test_expire_overdue_publishes)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    ck_assert(inflight_add(t, row_new(1, NULL)));
    ck_assert(inflight_add(t, row_new(2, "K")));
    ck_assert(!inflight_add(t, row_new(3, "K")));
    ck_assert(inflight_add(t, row_new(4, NULL)));
    inflight_sent(t, inflight_find(t, 1), MSG(1), 10.0);
    inflight_sent(t, inflight_find(t, 2), MSG(2), 11.0);
    inflight_sent(t, inflight_find(t, 4), MSG(4), 20.0);
    /* Rows 1 and 2 were sent before 15; row 3 waits, row 4 is recent. */
    ck_assert_uint_eq(inflight_expire(t, 15.0, expire_fail, t), 2);
    ck_assert_int_eq(inflight_find(t, 1)->state, ROW_MARKING);
    ck_assert_int_eq(inflight_find(t, 2)->state, ROW_MARKING);
    ck_assert_int_eq(inflight_find(t, 3)->state, ROW_WAITING);
    ck_assert_int_eq(inflight_find(t, 4)->state, ROW_PUBLISHING);
    ck_assert_uint_eq(inflight_publishing(t), 1);
    /* A late ack for an expired row matches nothing. */
    ck_assert_ptr_null(inflight_by_msg(t, MSG(1)));
    ck_assert_ptr_nonnull(inflight_by_msg(t, MSG(4)));
    /* The failed head still holds K: recording it drops row 3. */
    ck_assert_uint_eq(inflight_recorded(t, inflight_find(t, 2)), 1);
    ck_assert_ptr_null(inflight_find(t, 3));
    ck_assert_uint_eq(inflight_expire(t, 100.0, expire_fail, t), 0);
    inflight_destroy(t);
}
END_TEST

START_TEST(test_many_rows_and_real_messages)
{
    enum { N = 3000 };
    ck_assert_int_eq(nats_Open(-1), NATS_OK);
    struct inflight *t = inflight_create(8, NULL, 0);
    natsMsg **msgs = calloc(N, sizeof(*msgs));
    ck_assert_ptr_nonnull(msgs);
    char key[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i % 7);
        bool first = inflight_add(t, row_new(i + 1, i % 3 == 0 ? NULL : key));
        /* Keys k0..k6 among rows with i % 3 != 0: the first row of each key goes at once. */
        bool want = i % 3 == 0;
        if (!want) {
            want = true;
            for (int j = 0; j < i; j++)
                if (j % 3 != 0 && j % 7 == i % 7)
                    want = false;
        }
        ck_assert_msg(first == want, "row %d: add said %d", i + 1, first);
        ck_assert_int_eq(natsMsg_Create(&msgs[i], "a.b", NULL, "x", 1), NATS_OK);
    }
    ck_assert_uint_eq(inflight_count(t), N);
    for (int i = 0; i < N; i++) {
        struct outbox_row *r = inflight_find(t, i + 1);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(r->id, i + 1);
    }
    ck_assert_ptr_null(inflight_find(t, N + 1));
    /* Send every row without a key and look each up by its message. */
    int sent = 0;
    for (int i = 0; i < N; i += 3, sent++)
        inflight_sent(t, inflight_find(t, i + 1), msgs[i], 0.0);
    ck_assert_uint_eq(inflight_publishing(t), (size_t)sent);
    for (int i = N - 3; i >= 0; i -= 3) {
        struct outbox_row *r = inflight_by_msg(t, msgs[i]);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(r->id, i + 1);
    }
    ck_assert_uint_eq(inflight_publishing(t), 0);
    for (int i = 0; i < N; i++)
        natsMsg_Destroy(msgs[i]);
    free(msgs);
    inflight_destroy(t);
    nats_CloseAndWait(5000);
}
END_TEST

/* Pipelined: every row of a key goes while the ones before it are publishing. */
START_TEST(test_pipelined_key_publishes_behind_publishing_rows)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    inflight_set_pipelined(t, true);
    ck_assert(inflight_add(t, row_new(1, "k")));
    /* Row 1 not sent yet: row 2 waits behind it. */
    ck_assert(!inflight_add(t, row_new(2, "k")));
    send_row(t, inflight_find(t, 1), 1);
    send_row(t, inflight_find(t, 2), 2);
    ck_assert(inflight_add(t, row_new(3, "k")));
    send_row(t, inflight_find(t, 3), 3);
    ck_assert_uint_eq(inflight_publishing(t), 3);
    /* In-order acks: each leaves the queue, nothing waits to be released. */
    ck_assert_ptr_null(inflight_acked(t, inflight_by_msg(t, MSG(1))));
    ck_assert_ptr_null(inflight_acked(t, inflight_by_msg(t, MSG(2))));
    ck_assert(inflight_add(t, row_new(4, "k")));
    inflight_destroy(t);
}
END_TEST

/* A failed row's record drops the rows waiting behind it, never those still publishing. */
START_TEST(test_pipelined_failure_drops_waiting_and_flags_publishing)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    inflight_set_pipelined(t, true);
    for (int i = 1; i <= 3; i++) {
        inflight_add(t, row_new(i, "k"));
        send_row(t, inflight_find(t, i), i);
    }
    /* Row 1 fails; 2 and 3 are still publishing; row 4 arrives behind. */
    struct outbox_row *r1 = inflight_by_msg(t, MSG(1));
    inflight_failed(t, r1);
    ck_assert(r1->holds_key);
    ck_assert_msg(!inflight_add(t, row_new(4, "k")), "a row behind a failure must wait");
    ck_assert_uint_eq(inflight_recorded(t, r1), 1); /* row 4 */
    ck_assert_ptr_null(inflight_find(t, 4));
    struct outbox_row *r2 = inflight_find(t, 2), *r3 = inflight_find(t, 3);
    ck_assert(r2->behind_failed && r3->behind_failed);
    ck_assert_int_eq(r2->state, ROW_PUBLISHING);
    ck_assert_uint_eq(inflight_publishing(t), 2);
    /* Row 2 refused by the chain: back to the table with the rows behind it that wait. */
    ck_assert_ptr_eq(inflight_by_msg(t, MSG(2)), r2);
    ck_assert(!inflight_add(t, row_new(5, "k")));
    ck_assert_uint_eq(inflight_release(t, r2), 2); /* rows 2 and 5 */
    ck_assert_ptr_null(inflight_find(t, 5));
    ck_assert_ptr_nonnull(inflight_find(t, 3));
    ck_assert_uint_eq(inflight_count(t), 1);
    inflight_destroy(t);
}
END_TEST

/* What the publisher does with an overdue row: behind a failed row of its key it goes back to
 * the table untouched (no attempt of its own), else it fails (an attempt, it holds the key). */
struct expire_outcome {
    struct inflight *t;
    int failed, released;
};

static void expire_like_publisher(void *arg, struct outbox_row *row)
{
    struct expire_outcome *o = arg;
    if (inflight_behind_failure(row)) {
        inflight_release(o->t, row);
        o->released++;
    } else {
        inflight_failed(o->t, row);
        o->failed++;
    }
}

/* A key's pipelined publishes all overdue at once (a stream leader change): only the first
 * fails; the rows behind it were not at fault and go back to the table without an attempt. */
START_TEST(test_pipelined_expiry_fails_the_key_head_only)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    inflight_set_pipelined(t, true);
    for (int i = 1; i <= 4; i++) {
        inflight_add(t, row_new(i, "k"));
        send_row(t, inflight_find(t, i), i);
    }
    struct expire_outcome o = {t, 0, 0};
    ck_assert_uint_eq(inflight_expire(t, 1e9, expire_like_publisher, &o), 4);
    ck_assert_int_eq(o.failed, 1);
    ck_assert_int_eq(o.released, 3);
    struct outbox_row *r1 = inflight_find(t, 1);
    ck_assert_ptr_nonnull(r1);
    ck_assert(r1->holds_key);
    ck_assert_uint_eq(inflight_count(t), 1);
    inflight_destroy(t);
}
END_TEST

/* A refused row waits in its place; the restart finds each run's first row. */
START_TEST(test_requeued_rows_restart_in_key_order)
{
    ck_assert_int_eq(nats_Open(-1), NATS_OK);
    natsMsg *m = NULL;
    ck_assert_int_eq(natsMsg_Create(&m, "s", NULL, "x", 1), NATS_OK);
    struct inflight *t = inflight_create(16, NULL, 0);
    inflight_set_pipelined(t, true);
    for (int i = 1; i <= 3; i++) {
        inflight_add(t, row_new(i, "k"));
        send_row(t, inflight_find(t, i), i);
    }
    inflight_add(t, row_new(10, NULL));
    send_row(t, inflight_find(t, 10), 10);
    inflight_add(t, row_new(11, "other"));
    /* 1 and 10 acked, 2, 3 refused (2 keeps the message nats.c handed back). */
    inflight_acked(t, inflight_by_msg(t, MSG(1)));
    inflight_acked(t, inflight_by_msg(t, MSG(10)));
    struct outbox_row *r2 = inflight_by_msg(t, MSG(2));
    inflight_requeue(t, r2, m);
    ck_assert_int_eq(r2->state, ROW_WAITING);
    ck_assert_ptr_eq(r2->msg, m);
    struct outbox_row *r3 = inflight_by_msg(t, MSG(3));
    inflight_requeue(t, r3, NULL);
    ck_assert_uint_eq(inflight_publishing(t), 0);
    size_t n = 0;
    struct outbox_row **ready = inflight_ready(t, &n);
    ck_assert_uint_eq(n, 2);
    bool saw2 = false, saw11 = false;
    for (size_t i = 0; i < n; i++) {
        saw2 |= ready[i] == r2;
        saw11 |= ready[i]->id == 11;
    }
    ck_assert(saw2 && saw11);
    ck_assert_ptr_eq(r2->key_next, r3); /* the run goes on behind row 2, in id order */
    free(ready);
    inflight_destroy(t); /* frees m with row 2 */
    nats_CloseAndWait(5000);
}
END_TEST

/* A failed row heading its key starts no run; nothing behind it is ready. */
START_TEST(test_ready_skips_keys_held_by_a_failure)
{
    struct inflight *t = inflight_create(16, NULL, 0);
    inflight_set_pipelined(t, true);
    inflight_add(t, row_new(1, "k"));
    send_row(t, inflight_find(t, 1), 1);
    inflight_add(t, row_new(2, "k"));
    send_row(t, inflight_find(t, 2), 2);
    inflight_failed(t, inflight_by_msg(t, MSG(1)));
    inflight_requeue(t, inflight_by_msg(t, MSG(2)), NULL);
    size_t n = 9;
    struct outbox_row **ready = inflight_ready(t, &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(ready);
    inflight_destroy(t);
}
END_TEST

static Suite *inflight_suite(void)
{
    Suite *s = suite_create("inflight");
    TCase *tc = tcase_create("keys");
    tcase_add_test(tc, test_rows_without_key_are_independent);
    tcase_add_test(tc, test_only_head_of_key_publishes);
    tcase_add_test(tc, test_ack_advances_key_in_id_order);
    tcase_add_test(tc, test_key_name_survives_its_first_row);
    tcase_add_test(tc, test_failure_holds_key_until_recorded);
    tcase_add_test(tc, test_invalid_head_holds_key_without_publish);
    tcase_add_test(tc, test_failure_without_key_drops_nothing);
    tcase_add_test(tc, test_drop_waiting_keeps_publishing_and_marking);
    suite_add_tcase(s, tc);

    tc = tcase_create("lookups");
    tcase_add_test(tc, test_lookup_by_message_once);
    tcase_add_test(tc, test_recorded_while_publishing_leaves_index);
    tcase_add_test(tc, test_many_rows_and_real_messages);
    tcase_add_test(tc, test_expire_overdue_publishes);
    suite_add_tcase(s, tc);

    tc = tcase_create("pipelined");
    tcase_add_test(tc, test_pipelined_key_publishes_behind_publishing_rows);
    tcase_add_test(tc, test_pipelined_failure_drops_waiting_and_flags_publishing);
    tcase_add_test(tc, test_requeued_rows_restart_in_key_order);
    tcase_add_test(tc, test_ready_skips_keys_held_by_a_failure);
    tcase_add_test(tc, test_pipelined_expiry_fails_the_key_head_only);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(inflight_suite());
}
