/* Another client writes the stream while a pipelined key drains: the relay falls back to one
 * publish per key at a time, and the rows its fence had refused go out again, none dead, each
 * once, the key's rows in id order. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM  "IT_FENCE_OW"
#define ROWS    20000
#define FOREIGN 20

/* One message of another writer, with an id no row has. */
static void publish_foreign(int i)
{
    char id[32], subject[32];
    snprintf(id, sizeof(id), "foreign-%d", i);
    snprintf(subject, sizeof(subject), "it.fence.%s", i % 2 ? "order" : "other");
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MsgId = id;
    jsErrCode code = 0;
    jsPubAck *pa = NULL;
    natsStatus s = js_Publish(&pa, it_js(), subject, id, (int)strlen(id), &o, &code);
    ck_assert_msg(s == NATS_OK, "foreign publish %d: %s (%d)", i, natsStatus_GetText(s), code);
    jsPubAck_Destroy(pa);
}

START_TEST(test_other_writer_sends_no_row_dead)
{
    const char *subjects[] = {"it.fence.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload)"
               " SELECT 'it.fence.order', 'one', convert_to(g::text, 'UTF8')"
               " FROM generate_series(1, %d) g",
               ROWS);
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.fence.>",
                         "OUTBOX_RETRY_BASE_MS=50", "OUTBOX_RETRY_MAX_MS=200", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    it_pg_wait_progress(conn, 100, 60000, "before the other writer");
    /*
     * Spread over the drain, while publishes of the key are in flight. The
     * first lands mid-drain, and the relay's fallback is what this test is
     * about; how many more do depends on how fast the key drains once
     * unpipelined (and how fast this loop polls): on a quick run the drain
     * ends first, and the rest are written after it, which the audit counts
     * the same.
     */
    int during = 0;
    for (int i = 0; i < FOREIGN; i++) {
        int64_t at = it_pg_published(conn);
        if (i == 0)
            ck_assert_msg(at < ROWS, "the drain ended before the other writer began");
        if (i > 0 && at < ROWS) {
            int64_t want = at + ROWS / 4 / FOREIGN < ROWS ? at + ROWS / 4 / FOREIGN : ROWS;
            it_pg_wait_published_reach(conn, want, 60000, "between foreign messages");
        }
        during += it_pg_published(conn) < ROWS;
        publish_foreign(i);
    }
    fprintf(stderr, "fence_other_writer: %d of %d foreign messages written during the drain\n",
            during, FOREIGN);
    int64_t got = it_pg_wait_published(conn, ROWS, 120000);
    int64_t dead = it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'");
    if (got != ROWS || dead != 0) {
        PGresult *r = it_pg_query(conn, "SELECT id, last_error FROM outbox WHERE status = 'dead'"
                                        " ORDER BY id LIMIT 3");
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "dead row %s: %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
        PQclear(r);
    }
    ck_assert_msg(dead == 0, "%lld rows dead", (long long)dead);
    ck_assert_msg(got == ROWS, "%lld of %d rows published", (long long)got, ROWS);

    struct it_key_audit a;
    it_audit_key_order(conn, STREAM, 5, &a);
    ck_assert_uint_eq(a.missing, 0);
    ck_assert_uint_eq(a.duplicates, 0);
    ck_assert_uint_eq(a.inversions, 0);
    ck_assert_uint_eq(a.unknown, FOREIGN);
    ck_assert_uint_eq(a.messages, ROWS + FOREIGN);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("fence_other_writer");
    TCase *tc = it_tcase(suite, "fence_other_writer", it_start_servers, 180);
    tcase_add_test(tc, test_other_writer_sends_no_row_dead);
    return run_suite(suite);
}
