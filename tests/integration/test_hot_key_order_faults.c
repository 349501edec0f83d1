/* A hot key under faults (issue 11 §3): four rows in five on one ordering_key (the fifth without a
 * key, so the chain starts and stops around them), nats-server killed and restarted mid-drain,
 * then PubAck timeouts; the stream holds each row once, the key's rows in id order.
 * Run twice: one publish per key (no OUTBOX_STREAM), and pipelined (OUTBOX_STREAM set: many
 * publishes of the key in flight, fenced by Nats-Expected-Last-Msg-Id). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_HOT"
/* Rows added before each fault, so that a backlog is in flight when it strikes. */
#define WAVE 3000
/* nats-server frozen this long: several PubAck deadlines pass with publishes outstanding. */
#define FREEZE_MS 1500

static void insert_wave(PGconn *conn)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload)"
               " SELECT 'it.hot.' || (g %% 3), CASE WHEN g %% 5 <> 0 THEN 'hot' END,"
               " convert_to(g::text, 'UTF8')"
               " FROM generate_series(1, %d) g",
               WAVE);
}

START_TEST(test_hot_key_order_survives_restart_and_ack_timeouts)
{
    bool pipelined = _i == 1;
    const char *subjects[] = {"it.hot.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    /* Short PubAck deadline and retries that never run out: the faults cause retries, not dead
     * rows. */
    const char *env[] = {"OUTBOX_PUBLISH_TIMEOUT_MS=300",
                         "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=500",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_NATS_LOST_MS=60000",
                         NULL, /* pipelined: the stream, which turns the chain on */
                         NULL,
                         NULL};
    if (pipelined) {
        env[6] = "OUTBOX_STREAM=" STREAM;
        env[7] = "OUTBOX_STREAM_SUBJECTS=it.hot.>";
    }
    insert_wave(conn);
    struct it_relay *relay = it_relay_start(env, NULL);
    it_pg_wait_progress(conn, 300, 60000, "before the first fault");
    ck_assert_msg(
        it_relay_logged(relay, pipelined ? LOG_MSG_PIPELINING_ON : LOG_MSG_PIPELINING_OFF),
        "the relay runs in the wrong mode");

    /* Fault 1: nats-server killed (no goodbye) with a backlog in flight, restarted at once. */
    insert_wave(conn);
    int64_t total = 2 * WAVE;
    int64_t at_kill = it_pg_published(conn);
    it_nats_kill();
    it_nats_start(); /* same store dir, same port */
    ck_assert_msg(at_kill < total, "the drain finished before the kill");
    it_pg_wait_progress(conn, 300, 60000, "after the restart");

    /* Fault 2: nats-server frozen: the connection stays up, PubAcks time out, the relay retries.
     */
    insert_wave(conn);
    total += WAVE;
    int64_t at_freeze = it_pg_published(conn);
    it_nats_pause();
    struct timespec freeze = {.tv_sec = FREEZE_MS / 1000,
                              .tv_nsec = (long)(FREEZE_MS % 1000) * 1000000L};
    while (nanosleep(&freeze, &freeze) != 0)
        ;
    it_nats_resume();
    ck_assert_msg(at_freeze < total, "the drain finished before the freeze");

    int64_t got = it_pg_wait_published(conn, total, 120000);
    if (got != total)
        it_relay_dump_log(relay);
    ck_assert_msg(got == total, "%lld of %lld rows published", (long long)got, (long long)total);
    fprintf(stderr,
            "hot key (%s): killed nats at %lld of %lld published, froze it at %lld;"
            " %lld rows needed more than one attempt\n",
            pipelined ? "pipelined" : "one at a time", (long long)at_kill, (long long)(2 * WAVE),
            (long long)at_freeze,
            (long long)it_pg_int(conn, "SELECT count(*) FROM outbox WHERE attempts > 1"));

    /* Retried publishes whose first copy was stored must have been dropped by dedup, and no
     * retried row may sit after a later row of the key. */
    it_assert_keys_in_order_once(conn, STREAM);
    it_assert_each_row_once(conn, STREAM, total);
    if (pipelined)
        ck_assert_msg(!it_relay_logged(relay, LOG_MSG_ANOTHER_WRITER),
                      "the relay took its own retries for another writer");
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("hot_key_order_faults");
    TCase *tc = it_tcase(suite, "hot_key_order_faults", it_start_servers, 240);
    tcase_add_loop_test(tc, test_hot_key_order_survives_restart_and_ack_timeouts, 0, 2);
    return run_suite(suite);
}
