/* A requeued row that holds its key: once it is published, its key's later rows go at once. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_REQUEUE_KEY"
#define K_ROWS 20 /* the dead head (id 1) and its later rows */
#define BATCH  10 /* OUTBOX_BATCH_SIZE, and the rows kept publishing */

/*
 * Key K's head (id 1) goes to a subject nothing takes: it dies after two
 * attempts and, dead rows holding their key, keeps K's later rows (2..20)
 * in the table. BATCH unkeyed rows (101..) go to a subject a silent
 * subscriber takes: their PubAcks never come, so the relay keeps holding a
 * batch, and its polls read only above the high water, as with a backlog.
 */
static void insert_rows(PGconn *conn)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (id, subject, payload, ordering_key)"
               " VALUES (1, 'it.rq.late.k', 'K-1', 'K');"
               "INSERT INTO outbox (id, subject, payload, ordering_key)"
               " SELECT g, 'it.rq.ok.k', convert_to('K-' || g, 'UTF8'), 'K'"
               " FROM generate_series(2, %d) g;"
               "INSERT INTO outbox (id, subject, payload)"
               " SELECT g, 'it.rq.slow', 'S' FROM generate_series(101, %d) g",
               K_ROWS, 100 + BATCH);
}

static const char *const relay_env[] = {"OUTBOX_DEAD_HOLDS_KEY=true",
                                        "OUTBOX_MAX_ATTEMPTS=2",
                                        "OUTBOX_RETRY_BASE_MS=20",
                                        "OUTBOX_RETRY_MAX_MS=50",
                                        "OUTBOX_BATCH_SIZE=10",
                                        "OUTBOX_POLL_INTERVAL_MS=600000",
                                        "OUTBOX_PUBLISH_TIMEOUT_MS=600000",
                                        "OUTBOX_SHUTDOWN_TIMEOUT_MS=100",
                                        NULL};

struct setup {
    PGconn *conn;
    struct it_relay *relay;
};

/* K's head is dead, its later rows wait untouched, and the slow batch is in flight. */
static bool head_dead_batch_held(void *arg)
{
    struct setup *s = arg;
    return it_pg_int(s->conn, "SELECT count(*) FROM outbox WHERE id = 1 AND status = 'dead'") ==
               1 &&
           it_metric(s->relay->http_port, "outbox_relay_inflight") >= BATCH;
}

static bool k_published(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                           " AND status = 'published'") == K_ROWS;
}

/* Each of K's rows in the stream once, in id order. */
static void assert_k_in_order(PGconn *conn)
{
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 0);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), K_ROWS);
    PGresult *rows = it_pg_query(conn, "SELECT id, event_id, stream_seq FROM outbox"
                                       " WHERE ordering_key = 'K' ORDER BY id");
    uint64_t prev = 0;
    for (int i = 0; i < PQntuples(rows); i++) {
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 1));
        ck_assert_msg(m != NULL, "row %s has no message", PQgetvalue(rows, i, 0));
        ck_assert_uint_eq(m->seq, strtoull(PQgetvalue(rows, i, 2), NULL, 10));
        ck_assert_msg(m->seq > prev, "row %s at seq %llu, after an earlier row's %llu",
                      PQgetvalue(rows, i, 0), (unsigned long long)m->seq, (unsigned long long)prev);
        prev = m->seq;
    }
    PQclear(rows);
    it_msgs_free(&msgs);
}

/* Runs K's head dead with the batch held, requeues it by `requeue`, checks K goes out. */
static void run_requeue(void (*requeue)(PGconn *conn))
{
    const char *subjects[] = {"it.rq.ok.>", NULL};
    it_js_add_stream(STREAM, subjects);
    natsSubscription *silent = NULL;
    ck_assert_int_eq(natsConnection_SubscribeSync(&silent, it_nats_conn(), "it.rq.slow"), NATS_OK);
    ck_assert_int_eq(natsConnection_Flush(it_nats_conn()), NATS_OK);
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    struct setup s = {.conn = conn, .relay = it_relay_start_http(relay_env, NULL)};
    ck_assert_msg(it_wait_until(head_dead_batch_held, &s, 20000),
                  "K's head did not die, or the slow batch was not held");
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                                     " AND id > 1 AND status = 'pending' AND attempts = 0"),
                     K_ROWS - 1);

    const char *subjects_now[] = {"it.rq.ok.>", "it.rq.late.>", NULL};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = STREAM;
    cfg.Subjects = (const char **)subjects_now;
    cfg.SubjectsLen = 2;
    cfg.Storage = js_FileStorage;
    ck_assert_int_eq(js_UpdateStream(NULL, it_js(), &cfg, NULL, NULL), NATS_OK);
    requeue(conn);

    /* The fallback poll is ten minutes away: only the key's release finds the rows. */
    bool all = it_wait_until(k_published, conn, 15000);
    if (!all)
        it_relay_dump_log(s.relay);
    ck_assert_msg(all, "%lld of K's %d rows published after the requeue",
                  (long long)it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                                             " AND status = 'published'"),
                  K_ROWS);
    assert_k_in_order(conn);
    it_relay_stop(s.relay);
    natsSubscription_Destroy(silent);
    PQfinish(conn);
}

static void requeue_by_command(PGconn *conn)
{
    const char *args[] = {"requeue", "--ids", "1", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, NULL, NULL), 0);
    /* Keyed: back as failed, due now, attempts reset. */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE id = 1"
                                     " AND status IN ('failed', 'published')"),
                     1);
}

static void requeue_by_sql(PGconn *conn)
{
    ck_assert_int_eq(it_pg_int(conn, "SELECT outbox_requeue_dead(ARRAY[1]::bigint[])"), 1);
}

START_TEST(test_requeued_head_by_command_releases_key)
{
    run_requeue(requeue_by_command);
}
END_TEST

START_TEST(test_requeued_head_by_sql_releases_key)
{
    run_requeue(requeue_by_sql);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("requeue_key");
    TCase *tc = it_tcase(suite, "requeue_key", it_start_servers, 90);
    tcase_add_test(tc, test_requeued_head_by_command_releases_key);
    tcase_add_test(tc, test_requeued_head_by_sql_releases_key);
    return run_suite(suite);
}
