/* Head-of-line per key: a failing row holds its key's later rows, other keys flow; dead rows. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_HOLD"
#define K_ROWS 101 /* K's head (id 1) and its 100 later rows */
#define L_ROWS 110
#define MARKER 500 /* an id between the rows and the highest id: only a sweep finds it */

/*
 * Key K's first row (id 1) goes to a subject no stream takes yet; its later
 * rows (even ids 2..200) and key L's rows (odd ids, then 1001..1010) go to
 * subjects the stream takes. The gap 202..1000 leaves room for a marker.
 */
static void insert_rows(PGconn *conn)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (id, subject, payload, ordering_key)"
               " VALUES (1, 'it.hold.late.k', 'K-1', 'K');"
               "INSERT INTO outbox (id, subject, payload, ordering_key)"
               " SELECT g, CASE WHEN g %% 2 = 0 THEN 'it.hold.flow.k' ELSE 'it.hold.flow.l'"
               "   END, convert_to(CASE WHEN g %% 2 = 0 THEN 'K-' ELSE 'L-' END || g, 'UTF8'),"
               "   CASE WHEN g %% 2 = 0 THEN 'K' ELSE 'L' END"
               " FROM generate_series(2, 201) g;"
               "INSERT INTO outbox (id, subject, payload, ordering_key)"
               " SELECT g, 'it.hold.flow.l', convert_to('L-' || g, 'UTF8'), 'L'"
               " FROM generate_series(1001, 1010) g");
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"),
                     K_ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'L'"),
                     L_ROWS);
}

static void stream_flow_only(void)
{
    const char *subjects[] = {"it.hold.flow.>", NULL};
    it_js_add_stream(STREAM, subjects);
}

static void stream_add_late(void)
{
    /* How "the stream appears" for K's head. */
    const char *subjects[] = {"it.hold.flow.>", "it.hold.late.>", NULL};
    it_js_update_stream_subjects(STREAM, subjects);
}

/* All of `key`'s published rows in the stream once, at their stream_seq, in id order. */
static void assert_key_in_order(PGconn *conn, const char *key, int want)
{
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 0);
    PGresult *rows = it_pg_query(conn,
                                 "SELECT id, event_id, stream_seq FROM outbox"
                                 " WHERE ordering_key = '%s' AND status = 'published' ORDER BY id",
                                 key);
    ck_assert_int_eq(PQntuples(rows), want);
    uint64_t prev = 0;
    for (int i = 0; i < PQntuples(rows); i++) {
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 1));
        ck_assert_msg(m != NULL, "key %s: row %s has no message", key, PQgetvalue(rows, i, 0));
        ck_assert_uint_eq(m->seq, strtoull(PQgetvalue(rows, i, 2), NULL, 10));
        ck_assert_msg(m->seq > prev, "key %s: row %s at seq %llu, after an earlier row's %llu", key,
                      PQgetvalue(rows, i, 0), (unsigned long long)m->seq, (unsigned long long)prev);
        prev = m->seq;
    }
    PQclear(rows);
    it_msgs_free(&msgs);
}

/* L has flowed and K's head has been retried at least twice (and is not dead). */
static bool l_done_k_retried(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'L'"
                           " AND status = 'published'") == L_ROWS &&
           it_pg_int(conn, "SELECT count(*) FROM outbox WHERE id = 1 AND attempts >= 3") == 1;
}

START_TEST(test_failing_head_holds_key_until_stream_appears)
{
    stream_flow_only();
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=100", "OUTBOX_RETRY_MAX_MS=300",
                         "OUTBOX_MAX_ATTEMPTS=1000", "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_BATCH_SIZE=50",     NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    ck_assert_msg(it_wait_until(l_done_k_retried, conn, 20000),
                  "L did not flow, or K's head was not retried, within 20 s");
    /* K waits behind its head: nothing of K is published, nothing of it in the stream. */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE id = 1"
                                     " AND status = 'failed'"),
                     1);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                                     " AND id > 1 AND status = 'pending' AND attempts = 0"),
                     K_ROWS - 1);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), L_ROWS);
    assert_key_in_order(conn, "L", L_ROWS);

    stream_add_late();
    int64_t k = it_pg_wait_int(conn,
                               "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                               " AND status = 'published'",
                               K_ROWS, 15000);
    if (k != K_ROWS)
        it_relay_dump_log(relay);
    ck_assert_msg(k == K_ROWS, "%lld of %d rows of K published after the stream appeared",
                  (long long)k, K_ROWS);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), K_ROWS + L_ROWS);
    assert_key_in_order(conn, "K", K_ROWS);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * The head is published in the middle of a long pass: rows of K above the
 * pass's cursor become claimable while K's rows below it are not claimed
 * yet. A relay started over a backlog with K's head failed (and due) sweeps
 * from id 0 in small pages, so the head goes out in the first page and its
 * mark commits while the pass is still walking the backlog.
 */
START_TEST(test_head_published_mid_pass_keeps_key_order)
{
    stream_flow_only();
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=100",
                         "OUTBOX_RETRY_MAX_MS=100",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_BATCH_SIZE=20",
                         "OUTBOX_MAX_INFLIGHT=200",
                         NULL};
    struct it_relay *first = it_relay_start(env, NULL);
    ck_assert_msg(it_wait_until(l_done_k_retried, conn, 20000),
                  "L did not flow, or K's head was not retried, within 20 s");
    it_relay_stop(first);

    /* A backlog: K's rows held behind the failed head, between rows of other keys. */
    it_pg_exec(conn, "INSERT INTO outbox (id, subject, payload, ordering_key)"
                     " SELECT g, CASE WHEN g %% 10 = 0 THEN 'it.hold.flow.k' ELSE 'it.hold.flow.m'"
                     "   END, convert_to(g::text, 'UTF8'),"
                     "   CASE WHEN g %% 10 = 0 THEN 'K' ELSE 'M' || (g %% 10) END"
                     " FROM generate_series(2001, 6000) g");
    stream_add_late();
    struct it_relay *second = it_relay_start(env, NULL);
    int64_t all = it_pg_wait_published(conn, K_ROWS + L_ROWS + 4000, 30000);
    if (all != K_ROWS + L_ROWS + 4000)
        it_relay_dump_log(second);
    ck_assert_int_eq(all, K_ROWS + L_ROWS + 4000);
    assert_key_in_order(conn, "K", K_ROWS + 400);
    assert_key_in_order(conn, "M1", 400);
    assert_key_in_order(conn, "M9", 400);
    it_relay_stop(second);
    PQfinish(conn);
}
END_TEST

START_TEST(test_dead_head_releases_key_by_default)
{
    stream_flow_only();
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=100", "OUTBOX_MAX_ATTEMPTS=3",
                         "OUTBOX_POLL_INTERVAL_MS=200", "OUTBOX_BATCH_SIZE=50", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* K's head dies after three attempts; then K resumes without it. */
    int64_t done = it_pg_wait_int(conn,
                                  "SELECT count(*) FROM outbox WHERE status = 'published'"
                                  " OR (id = 1 AND status = 'dead')",
                                  K_ROWS + L_ROWS, 20000);
    if (done != K_ROWS + L_ROWS)
        it_relay_dump_log(relay);
    ck_assert_int_eq(done, K_ROWS + L_ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT attempts FROM outbox WHERE id = 1"), 3);
    PGresult *res = it_pg_query(conn, "SELECT last_error FROM outbox WHERE id = 1");
    ck_assert_msg(strstr(PQgetvalue(res, 0, 0), "no stream") != NULL, "last_error: %s",
                  PQgetvalue(res, 0, 0));
    PQclear(res);
    assert_key_in_order(conn, "K", K_ROWS - 1);
    assert_key_in_order(conn, "L", L_ROWS);

    /* The operator's SQL requeue: the head goes out now that a stream takes it. */
    stream_add_late();
    ck_assert_int_eq(it_pg_int(conn, "SELECT outbox_requeue_dead()"), 1);
    ck_assert_int_eq(it_pg_int(conn, "SELECT outbox_requeue_dead()"), 0);
    ck_assert_int_eq(it_pg_wait_published(conn, K_ROWS + L_ROWS, 10000), K_ROWS + L_ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT attempts FROM outbox WHERE id = 1"), 1);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), K_ROWS + L_ROWS);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* The marker is in the stream: a sweep that postdates K's dead head has run. */
static bool marker_published(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE id = %d AND status = 'published'",
                     MARKER) == 1;
}

START_TEST(test_dead_head_holds_key_until_requeued)
{
    stream_flow_only();
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=100", "OUTBOX_MAX_ATTEMPTS=3",
                         "OUTBOX_POLL_INTERVAL_MS=200", "OUTBOX_DEAD_HOLDS_KEY=true", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    int64_t done = it_pg_wait_int(conn,
                                  "SELECT count(*) FROM outbox WHERE (ordering_key = 'L'"
                                  " AND status = 'published') OR (id = 1 AND status = 'dead')",
                                  L_ROWS + 1, 20000);
    ck_assert_int_eq(done, L_ROWS + 1);

    /*
     * A row between K's rows and the highest id, inserted after the head
     * died: only a sweep from the start finds it, and that sweep reads K's
     * rows first. Had they been claimable, their messages would precede it.
     */
    it_pg_exec(conn,
               "INSERT INTO outbox (id, subject, payload, ordering_key)"
               " VALUES (%d, 'it.hold.flow.l', 'marker', 'L')",
               MARKER);
    ck_assert_msg(it_wait_until(marker_published, conn, 10000), "the marker was not published");
    ck_assert_int_eq(it_js_stream_msgs(STREAM), L_ROWS + 1);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                                     " AND id > 1 AND status = 'pending' AND attempts = 0"),
                     K_ROWS - 1);

    /* The operator's flag: requeue, and K's rows all go, head first. */
    stream_add_late();
    json_t *doc = NULL;
    const char *args[] = {"--requeue-dead", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, &doc, NULL), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "requeued")), 1);
    json_decref(doc);
    int64_t k = it_pg_wait_int(conn,
                               "SELECT count(*) FROM outbox WHERE ordering_key = 'K'"
                               " AND status = 'published'",
                               K_ROWS, 15000);
    if (k != K_ROWS)
        it_relay_dump_log(relay);
    ck_assert_int_eq(k, K_ROWS);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), K_ROWS + L_ROWS + 1);
    assert_key_in_order(conn, "K", K_ROWS);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("key_hold");
    TCase *tc = it_tcase(suite, "key_hold", it_start_servers, 120);
    tcase_add_test(tc, test_failing_head_holds_key_until_stream_appears);
    tcase_add_test(tc, test_head_published_mid_pass_keeps_key_order);
    tcase_add_test(tc, test_dead_head_releases_key_by_default);
    tcase_add_test(tc, test_dead_head_holds_key_until_requeued);
    return run_suite(suite);
}
