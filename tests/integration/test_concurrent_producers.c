/* Per-key order under many concurrent producers (issue 9 §1): each key's rows reach the stream in
 * id order, each row exactly once. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM     "IT_CONC"
#define PRODUCERS  32
#define PRODUCE_MS 4000

/*
 * One application connection: one single-row INSERT per transaction, its
 * own ordering_key, so each key's rows commit strictly one after another
 * while the other 31 connections commit in between. No Check calls here
 * (threads): errors go to `error`.
 */
struct producer {
    pthread_t thread;
    PGconn *conn;
    int index;
    int64_t deadline_ms;
    int64_t commits;
    char error[256];
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    char key[16], subject[32], payload[32];
    snprintf(key, sizeof key, "p%02d", p->index);
    snprintf(subject, sizeof subject, "it.conc.%d", p->index % 4);
    while (it_now_ms() < p->deadline_ms) {
        snprintf(payload, sizeof payload, "%s-%lld", key, (long long)p->commits);
        if (!it_pg_insert_row(p->conn, subject, key, payload, p->error, sizeof p->error))
            break;
        p->commits++;
    }
    return NULL;
}

START_TEST(test_each_key_in_order_under_concurrent_producers)
{
    const char *subjects[] = {"it.conc.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    /*
     * Small claims and a short poll: many passes over the tail while the
     * producers commit out of id order, the window in which a late commit
     * lands below the pass's cursor.
     */
    const char *env[] = {"OUTBOX_BATCH_SIZE=50", "OUTBOX_POLL_INTERVAL_MS=50", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    struct producer ps[PRODUCERS];
    memset(ps, 0, sizeof ps);
    for (int i = 0; i < PRODUCERS; i++) {
        ps[i].index = i;
        ps[i].conn = it_pg_connect();
    }
    int64_t deadline = it_now_ms() + PRODUCE_MS;
    for (int i = 0; i < PRODUCERS; i++) {
        ps[i].deadline_ms = deadline;
        ck_assert_int_eq(pthread_create(&ps[i].thread, NULL, producer_main, &ps[i]), 0);
    }
    int64_t commits = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(ps[i].thread, NULL);
        ck_assert_msg(ps[i].error[0] == '\0', "producer %d: %s", i, ps[i].error);
        ck_assert_int_gt(ps[i].commits, 0);
        commits += ps[i].commits;
        PQfinish(ps[i].conn);
    }
    fprintf(stderr, "concurrent producers: %d connections committed %lld rows in %d ms\n",
            PRODUCERS, (long long)commits, PRODUCE_MS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), commits);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(DISTINCT ordering_key) FROM outbox"), PRODUCERS);

    int64_t left =
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'", 0, 60000);
    ck_assert_msg(left == 0, "%lld of %lld rows not published", (long long)left,
                  (long long)commits);
    /* A real consumer's view: every row once, and per key in id order (= commit order here). */
    it_assert_keys_in_order_once(conn, STREAM);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("concurrent_producers");
    TCase *tc = it_tcase(suite, "concurrent_producers", it_start_servers, 180);
    tcase_add_test(tc, test_each_key_in_order_under_concurrent_producers);
    return run_suite(suite);
}
