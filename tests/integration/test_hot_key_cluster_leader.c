/* A hot key through stream leader changes: every row on one ordering_key, an R3
 * stream on a 3-node cluster whose leader steps down mid-drain, each time with a backlog in
 * flight; the stream holds each row once, in id order. Run twice like test_hot_key_order_faults:
 * one publish per key (no OUTBOX_STREAM), and pipelined (OUTBOX_STREAM set: the publishes of the
 * key chained with Nats-Expected-Last-Msg-Id). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_HOT_R3"
/* Rows added before each leader change, so that a backlog is in flight when it strikes: one
 * publish at a time drains a few hundred rows a second on R3, the pipelined relay tens of
 * thousands. */
#define WAVE_ONE_AT_A_TIME 1500
#define WAVE_PIPELINED     4000
/* Rows each wave adds that commit only after the new leader is elected. */
#define WAVE_TAIL 200
/* Leader changes during the drain. */
#define STEPDOWNS 3

static void insert_wave(PGconn *conn, int rows)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload)"
               " SELECT 'it.hot.' || (g %% 3), 'hot', convert_to(g::text, 'UTF8')"
               " FROM generate_series(1, %d) g",
               rows);
}

START_TEST(test_hot_key_order_survives_stream_leader_changes)
{
    bool pipelined = _i == 1;
    const char *subjects[] = {"it.hot.>", NULL};
    PGconn *conn = it_pg_connect();
    /* Short PubAck deadline and retries that never run out: an election costs retries, not
     * dead rows. */
    const char *env[] = {"OUTBOX_PUBLISH_TIMEOUT_MS=300",
                         "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=500",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_NATS_LOST_MS=60000",
                         NULL, /* pipelined: the stream, which turns the chain on */
                         NULL,
                         NULL,
                         NULL,
                         NULL,
                         NULL};
    if (pipelined) {
        /* The relay creates the stream it alone writes, with 3 replicas. */
        env[6] = "OUTBOX_STREAM=" STREAM;
        env[7] = "OUTBOX_STREAM_SUBJECTS=it.hot.>";
        env[8] = "OUTBOX_STREAM_REPLICAS=3";
        /* Smaller claims and fewer rows held: still hundreds of the key's publishes in flight,
         * but a wave drains over a second, not in the instant a stepdown takes. */
        env[9] = "OUTBOX_BATCH_SIZE=100";
        env[10] = "OUTBOX_MAX_INFLIGHT=300";
    } else {
        it_js_add_stream_replicas(STREAM, subjects, 3);
    }
    int wave = pipelined ? WAVE_PIPELINED : WAVE_ONE_AT_A_TIME;
    insert_wave(conn, wave);
    int64_t total = wave;
    struct it_relay *relay = it_relay_start(env, NULL);
    it_pg_wait_progress(conn, 50, 30000, "before the first leader change");
    ck_assert_msg(
        it_relay_logged(relay, pipelined ? LOG_MSG_PIPELINING_ON : LOG_MSG_PIPELINING_OFF),
        "the relay runs in the wrong mode");
    ck_assert_int_eq(it_js_stream_replicas(STREAM), 3);
    ck_assert_int_eq(it_pg_wait_published(conn, total, 30000), total);

    /* A tail of each wave stays in an open transaction until the new leader is elected: the
     * relay drains a wave faster than a stepdown takes, so without it the change could come
     * after the drain (it did once, one at a time). */
    PGconn *tail = it_pg_connect();
    int64_t at[STEPDOWNS];
    for (int k = 0; k < STEPDOWNS; k++) {
        /* A fresh wave whose drain has begun: the rest is queued or in flight at the change. */
        insert_wave(conn, wave);
        it_pg_exec(tail, "BEGIN");
        insert_wave(tail, WAVE_TAIL);
        total += wave + WAVE_TAIL;
        it_pg_wait_progress(conn, 50, 30000, "before a leader change");
        char old[128];
        it_js_stream_step_down(STREAM, old, sizeof old);
        at[k] = it_pg_published(conn);
        int64_t changed_ms = it_now_ms();
        it_js_stream_wait_new_leader(STREAM, old);
        it_pg_exec(tail, "COMMIT");
        /* The drain goes on under the new leader. */
        ck_assert_int_eq(it_pg_wait_published(conn, total, 30000), total);
        fprintf(stderr,
                "leader change %d: %lld of %lld rows published at the stepdown, the rest"
                " %lld ms after it\n",
                k + 1, (long long)at[k], (long long)total, (long long)(it_now_ms() - changed_ms));
    }

    PQfinish(tail);
    int64_t got = it_pg_wait_published(conn, total, 60000);
    if (got != total)
        it_relay_dump_log(relay);
    ck_assert_msg(got == total, "%lld of %lld rows published", (long long)got, (long long)total);
    int64_t retried = it_pg_int(conn, "SELECT count(*) FROM outbox WHERE attempts > 1");
    fprintf(stderr,
            "hot key on R3 (%s): leader changes at %lld, %lld, %lld published of %lld;"
            " %lld rows needed more than one attempt\n",
            pipelined ? "pipelined" : "one at a time", (long long)at[0], (long long)at[1],
            (long long)at[2], (long long)total, (long long)retried);

    struct it_key_audit a;
    it_audit_key_order(conn, STREAM, 0, &a);
    if (a.inversions || a.duplicates || a.missing || a.unknown)
        it_relay_dump_log(relay);
    /* A retried publish whose first copy the old leader stored must be dropped by dedup, and no
     * row may sit after a later row of the key. */
    it_assert_keys_in_order_once(conn, STREAM);
    it_assert_each_row_once(conn, STREAM, total);
    /* A leader change costs an attempt to the row at the head of the key's publishes (and to a
     * retry of it while the election lasts); the rows behind it were not at fault and go back to
     * the table without one. Charged to every row in flight, they would each be retried alone
     * (a held key), a hot key would crawl for seconds after every change, and
     * OUTBOX_MAX_ATTEMPTS (10 by default) changes would kill rows nothing was wrong with. */
    if (retried > 5 * (STEPDOWNS + 1)) {
        PGresult *res = it_pg_query(conn, "SELECT id, attempts, last_error FROM outbox"
                                          " WHERE attempts > 1 ORDER BY id LIMIT 40");
        for (int i = 0; i < PQntuples(res); i++)
            fprintf(stderr, "row %s: %s attempts, last error: %s\n", PQgetvalue(res, i, 0),
                    PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
        PQclear(res);
        it_relay_dump_log(relay);
    }
    ck_assert_msg(retried <= 5 * (STEPDOWNS + 1),
                  "%lld rows were charged an attempt for %d leader changes", (long long)retried,
                  STEPDOWNS);
    if (pipelined)
        ck_assert_msg(!it_relay_logged(relay, LOG_MSG_ANOTHER_WRITER),
                      "the relay took its own retries for another writer");
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("hot_key_cluster_leader");
    TCase *tc = it_tcase(suite, "hot_key_cluster_leader", it_start_servers_cluster, 300);
    tcase_add_loop_test(tc, test_hot_key_order_survives_stream_leader_changes, 0, 2);
    return run_suite(suite);
}
