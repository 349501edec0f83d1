/* Rows exactly at a size limit in a pipelined key: the fence the relay adds must not push them
 * over. One row's message is exactly the server's max_payload, another's header block exactly
 * JetStream's 65535 bytes; both are published, and their key stays in order. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_FENCE_SIZE"
/* Small rows of the key around each edge row: publishes of the key are in flight when it goes. */
#define AROUND 300

/* "NATS/1.0\r\n" + "Nats-Msg-Id: <id>\r\n" + "\r\n", the block of a row without headers. */
static int id_block(const char *event_id)
{
    return 10 + 13 + (int)strlen(event_id) + 2 + 2;
}

static void insert_small(PGconn *conn, int n)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload)"
               " SELECT 'it.size.k', 'k', convert_to(g::text, 'UTF8')"
               " FROM generate_series(1, %d) g",
               n);
}

START_TEST(test_rows_at_the_size_limits_are_published_in_a_pipelined_key)
{
    const char *subjects[] = {"it.size.>", NULL};
    it_js_add_stream(STREAM, subjects);
    int64_t max_payload = natsConnection_GetMaxPayload(it_nats_conn());
    ck_assert_int_gt(max_payload, 65535 + 100);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "BEGIN");
    insert_small(conn, AROUND);
    /* payload + header block == max_payload */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, event_id, ordering_key, payload)"
               " VALUES ('it.size.k', 'edge-payload', 'k', convert_to(repeat('p', %lld), 'UTF8'))",
               (long long)(max_payload - id_block("edge-payload")));
    insert_small(conn, AROUND);
    /* header block == 65535: "X-Big: <v>\r\n" + the id block */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, event_id, ordering_key, payload, headers)"
               " VALUES ('it.size.k', 'edge-headers', 'k', 'x',"
               " jsonb_build_object('X-Big', repeat('h', %d)))",
               65535 - id_block("edge-headers") - 7 - 2);
    insert_small(conn, AROUND);
    it_pg_exec(conn, "COMMIT");
    int64_t rows = 3 * AROUND + 2;

    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.size.>", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    int64_t got = it_pg_wait_int(
        conn, "SELECT count(*) FROM outbox WHERE status IN ('published', 'dead')", rows, 60000);
    PGresult *r = it_pg_query(conn, "SELECT event_id, last_error FROM outbox"
                                    " WHERE status = 'dead' ORDER BY id");
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(stderr, "dead: %s: %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    int dead = PQntuples(r);
    PQclear(r);
    ck_assert_msg(dead == 0, "%d rows dead", dead);
    ck_assert_int_eq(got, rows);
    ck_assert_int_eq(it_pg_published(conn), rows);
    it_assert_keys_in_order_once(conn, STREAM);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("fence_size");
    TCase *tc = it_tcase(suite, "fence_size", it_start_servers, 120);
    tcase_add_test(tc, test_rows_at_the_size_limits_are_published_in_a_pipelined_key);
    return run_suite(suite);
}
