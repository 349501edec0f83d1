/* A row that can never be published goes dead from its stored lengths: its payload never leaves
 * PostgreSQL, so one 100 MB row neither blows the relay's memory nor holds back any other row. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pipeline/claimer.h"
#include "run_suite.h"

#define STREAM "IT_BIG"
#define SMALL  100
#define KEYS   4
#define BIG_MB 100
#define MIB    (1024L * 1024L)
/* Far below the big row: the relay may hold its small rows, never the 100 MB. */
#define PEAK_LIMIT_KB (48 * 1024L)

struct big_watch {
    PGconn *conn;
};

static bool settled(void *arg)
{
    struct big_watch *w = arg;
    return it_pg_int(w->conn, "SELECT count(*) FROM outbox WHERE status = 'published'") == SMALL &&
           it_pg_int(w->conn, "SELECT count(*) FROM outbox WHERE status = 'dead'") == 1;
}

static void insert_small(PGconn *conn, int from, int to)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, event_id, payload, ordering_key)"
               " SELECT 'it.big.small', 'small-' || g, convert_to(g::text, 'UTF8'),"
               " CASE WHEN g %% 2 = 0 THEN 'k' || (g %% %d) END FROM generate_series(%d, %d) g",
               KEYS, from, to);
}

START_TEST(test_hundred_mb_row_dead_without_leaving_postgres)
{
    const char *subjects[] = {"it.big.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    insert_small(conn, 1, SMALL / 2);
    /* Built server-side; compressible, so TOAST stores it small while octet_length says 100 MB. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, event_id, payload, ordering_key)"
               " VALUES ('it.big.huge', 'huge', convert_to(repeat('x', %ld), 'UTF8'), 'k0')",
               BIG_MB * 1000L * 1000L);
    insert_small(conn, SMALL / 2 + 1, SMALL);

    struct it_relay *relay = it_relay_start(NULL, NULL);
    struct big_watch w = {conn};
    bool done = it_wait_until(settled, &w, 60000);
    long peak_kb = it_proc_status_kb(relay->pid, "VmHWM");
    PGresult *res = it_pg_query(conn, "SELECT last_error FROM outbox WHERE event_id = 'huge'"
                                      " AND status = 'dead'");
    char *why = PQntuples(res) == 1 ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    fprintf(stderr, "oversized: settled %d, relay VmHWM %.1f MiB, big row: \"%s\"\n", done,
            peak_kb / 1024.0, why ? why : "(not dead)");
    if (!done)
        it_relay_dump_log(relay);
    ck_assert_msg(done, "%lld of %d small rows published, %lld dead",
                  (long long)it_pg_published(conn), SMALL,
                  (long long)it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"));
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strncmp(why, "message too large", 17) == 0, "last_error \"%s\"", why);
    ck_assert_msg(strstr(why, "max_payload") != NULL, "last_error \"%s\"", why);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, SMALL, &msgs);
    ck_assert_ptr_null(it_msgs_find(&msgs, "huge"));
    ck_assert_ptr_nonnull(it_msgs_find(&msgs, "small-100"));
    it_msgs_free(&msgs);
#ifndef __SANITIZE_ADDRESS__
    /* The payload never reached the relay: its peak RSS says so (the sanitizer's does not). */
    ck_assert_msg(peak_kb > 0 && peak_kb < PEAK_LIMIT_KB,
                  "relay peak RSS %.1f MiB: the %d MB payload left PostgreSQL", peak_kb / 1024.0,
                  BIG_MB);
#endif
    free(why);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * Headers that compress well: pg_column_size says a few hundred bytes, the relay reads 60 KB each.
 * The claim's byte budget must count what the relay reads.
 */
#define CMP_ROWS   10
#define CMP_HEADER 60000

START_TEST(test_compressible_headers_count_at_full_length)
{
    struct relay_config cfg;
    struct outbox_sql sql;
    it_relay_config(&cfg, NULL);
    outbox_sql_build(&sql, &cfg, &claimer_message_limits);
    PGconn *conn = it_pg_connect();
    PQclear(it_pg_query(conn, "%s", outbox_session_sql));
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, headers)"
               " SELECT 'it.big.hdr', 'x', jsonb_build_object('X-C', repeat('c', %d))"
               " FROM generate_series(1, %d)",
               CMP_HEADER, CMP_ROWS);
    ck_assert_int_lt(it_pg_int(conn, "SELECT max(pg_column_size(headers)) FROM outbox"),
                     CMP_HEADER / 10);
    /* From id 0, up to 500 rows, a 64 KiB budget, max_payload 1 MiB, no rows held. */
    const char *params[] = {"0", "500", "65536", "1048576", "{}"};
    PGresult *res = PQexecParams(conn, sql.claim, 5, NULL, params, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "claim: %s", PQresultErrorMessage(res));
    int n = PQntuples(res);
    int64_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += outbox_claim_bytes(res, i);
    fprintf(stderr,
            "oversized: a 64 KiB claim over %d rows of %d-byte headers took %d rows, %lld"
            " bytes by its count\n",
            CMP_ROWS, CMP_HEADER, n, (long long)bytes);
    /* The first row always comes; a second would pass the budget. */
    ck_assert_int_eq(n, 1);
    ck_assert_int_ge(bytes, CMP_HEADER);
    ck_assert(outbox_claim_cut(res));
    PQclear(res);
    PQfinish(conn);
    outbox_sql_free(&sql);
    config_free(&cfg);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("oversized_row");
    TCase *tc = it_tcase(suite, "oversized", it_start_servers, 120);
    tcase_add_test(tc, test_hundred_mb_row_dead_without_leaving_postgres);
    tcase_add_test(tc, test_compressible_headers_count_at_full_length);
    return run_suite(suite);
}
