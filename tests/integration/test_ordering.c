/* Per-key order: across many small batches, each ordering_key's rows reach the stream in id order.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM    "IT_ORDER"
#define KEYS      20
#define PER_KEY   250
#define NULL_ROWS 1000
#define ROWS      (KEYS * PER_KEY + NULL_ROWS)

/*
 * Rows g in [from, to] of one interleaved sequence: every 6th row has no
 * key, the others cycle through the keys; two subjects so that a key's rows
 * are not all on one subject.
 */
static void insert_rows(PGconn *conn, int from, int to)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload)"
               " SELECT CASE WHEN g %% 2 = 0 THEN 'it.order.even' ELSE 'it.order.odd' END,"
               "        CASE WHEN g %% 6 = 0 THEN NULL"
               "             ELSE 'key-' || ((g - g / 6 - 1) %% %d) END,"
               "        convert_to(g::text, 'UTF8')"
               " FROM generate_series(%d, %d) g",
               KEYS, from, to);
}

START_TEST(test_each_key_in_id_order)
{
    const char *subjects[] = {"it.order.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();

    /* Half as a backlog, half while the relay works: small batches, many in flight. */
    insert_rows(conn, 1, ROWS / 2);
    const char *env[] = {"OUTBOX_BATCH_SIZE=50", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    for (int from = ROWS / 2 + 1; from <= ROWS; from += ROWS / 8)
        insert_rows(conn, from, from + ROWS / 8 - 1 < ROWS ? from + ROWS / 8 - 1 : ROWS);

    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(DISTINCT ordering_key) FROM outbox"), KEYS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE ordering_key IS NULL"),
                     NULL_ROWS);
    int64_t got = it_pg_wait_published(conn, ROWS, 120000);
    ck_assert_msg(got == ROWS, "%lld of %d rows published", (long long)got, ROWS);

    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, ROWS, &msgs);

    /*
     * Walk each key's rows in id order; the stream sequences of their
     * messages must rise. The row's stream_seq must be its message's.
     */
    PGresult *rows = it_pg_query(conn, "SELECT coalesce(ordering_key, ''), event_id, stream_seq"
                                       " FROM outbox ORDER BY ordering_key, id");
    ck_assert_int_eq(PQntuples(rows), ROWS);
    int inversions = 0, wrong_seq = 0, nth = 0;
    uint64_t prev_seq = 0;
    const char *prev_key = NULL;
    for (int i = 0; i < ROWS; i++) {
        const char *key = PQgetvalue(rows, i, 0);
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 1));
        ck_assert_msg(m != NULL, "no message for event %s", PQgetvalue(rows, i, 1));
        if (strtoull(PQgetvalue(rows, i, 2), NULL, 10) != m->seq)
            wrong_seq++;
        nth = prev_key && strcmp(prev_key, key) == 0 ? nth + 1 : 0;
        if (*key && nth > 0 && m->seq < prev_seq && ++inversions <= 10)
            fprintf(stderr, "ordering: %s: its row #%d published at %llu, before #%d at %llu\n",
                    key, nth, (unsigned long long)m->seq, nth - 1, (unsigned long long)prev_seq);
        prev_key = key;
        prev_seq = m->seq;
    }
    ck_assert_msg(inversions == 0, "%d rows published before an earlier row of their key",
                  inversions);
    ck_assert_msg(wrong_seq == 0, "%d rows with a stream_seq that is not their message's",
                  wrong_seq);
    PQclear(rows);
    it_msgs_free(&msgs);

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("ordering");
    TCase *tc = it_tcase(suite, "ordering", it_start_servers, 240);
    tcase_add_test(tc, test_each_key_in_id_order);
    return run_suite(suite);
}
