/* Rows JetStream can never take go dead at the first attempt; other rows, even of their key, flow.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/nats/publish_error.h"
#include "run_suite.h"

#define STREAM "IT_PERM"
#define GOOD   200
#define KEYS   5

/* Header block = "NATS/1.0\r\n" + "X-Big: <v>\r\n" + "Nats-Msg-Id: <id>\r\n" + "\r\n". */
static int big_value_len(const char *event_id, int block)
{
    return block - (10 + 7 + 2 + 13 + (int)strlen(event_id) + 2 + 2);
}

static const struct {
    const char *event_id; /* SQL expression */
    int header_block;     /* > 0: an X-Big header making the block this size */
    const char *reason;   /* what last_error must say */
} poison[] = {
    {"'hdr-70k'", 70000, "headers too large"},
    {"'edge-over'", 65536, "headers too large: the header block is 65536 bytes"},
    {"' lead'", 0, "leading or trailing whitespace"},
    {"'trail '", 0, "leading or trailing whitespace"},
    {"''", 0, "invalid event_id: empty"},
    {"E'ev\\x01t'", 0, "contains a control character"},
    {"E'ev\\tt'", 0, "contains a control character"},
};
#define POISON ((int)(sizeof poison / sizeof poison[0]))

static void insert_good(PGconn *conn, int from, int to)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.perm.good', convert_to(g::text, 'UTF8'), 'k' || (g %% %d)"
               " FROM generate_series(%d, %d) g",
               KEYS, from, to);
}

START_TEST(test_permanent_rows_dead_after_one_attempt)
{
    const char *subjects[] = {"it.perm.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "CREATE TABLE poison (id bigint, reason text)");
    /* Fast retries: the old code reached dead too, but only after OUTBOX_MAX_ATTEMPTS. */
    const char *env[] = {"OUTBOX_MAX_ATTEMPTS=4", "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=100", "OUTBOX_POLL_INTERVAL_MS=100", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    insert_good(conn, 1, GOOD / 2);
    for (int i = 0; i < POISON; i++) {
        char headers[160] = "'{}'";
        if (poison[i].header_block)
            snprintf(headers, sizeof headers,
                     "jsonb_build_object('X-Big', repeat('h', %d - (10 + 7 + 2 + 13 + "
                     "octet_length(%s) + 2 + 2)))",
                     poison[i].header_block, poison[i].event_id);
        it_pg_exec(conn,
                   "WITH p AS (INSERT INTO outbox (subject, event_id, payload, headers, "
                   "ordering_key) VALUES ('it.perm.poison', %s, 'x', %s, 'k%d') RETURNING id)"
                   " INSERT INTO poison SELECT id, $r$%s$r$ FROM p",
                   poison[i].event_id, headers, i % KEYS, poison[i].reason);
    }
    /* Exactly at JetStream's limit: published. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, event_id, payload, headers, ordering_key)"
               " VALUES ('it.perm.edge', 'edge-ok', 'x', jsonb_build_object('X-Big', "
               "repeat('h', %d)), 'k0')",
               big_value_len("edge-ok", 65535));
    insert_good(conn, GOOD / 2 + 1, GOOD);

    int64_t settled = it_pg_wait_int(conn,
                                     "SELECT count(*) FROM outbox WHERE status = 'published'"
                                     " OR (status = 'dead' AND id IN (SELECT id FROM poison))"
                                     " OR (status IN ('failed', 'dead') AND attempts > 1)",
                                     GOOD + 1 + POISON, 30000);
    if (settled != GOOD + 1 + POISON)
        it_relay_dump_log(relay);
    ck_assert_int_eq(settled, GOOD + 1 + POISON);

    PGresult *rows = it_pg_query(conn, "SELECT o.id, o.status, o.attempts,"
                                       " coalesce(o.last_error, ''), p.reason, o.event_id"
                                       " FROM outbox o JOIN poison p USING (id) ORDER BY o.id");
    ck_assert_int_eq(PQntuples(rows), POISON);
    for (int i = 0; i < POISON; i++) {
        const char *error = PQgetvalue(rows, i, 3);
        fprintf(stderr, "permanent: row %s (event_id \"%s\"): %s, %s attempts: %s\n",
                PQgetvalue(rows, i, 0), PQgetvalue(rows, i, 5), PQgetvalue(rows, i, 1),
                PQgetvalue(rows, i, 2), error);
        ck_assert_msg(strcmp(PQgetvalue(rows, i, 1), "dead") == 0 &&
                          atoi(PQgetvalue(rows, i, 2)) == 1,
                      "row %s (event_id \"%s\"): %s after %s attempts, want dead after 1",
                      PQgetvalue(rows, i, 0), PQgetvalue(rows, i, 5), PQgetvalue(rows, i, 1),
                      PQgetvalue(rows, i, 2));
        ck_assert_msg(strstr(error, PQgetvalue(rows, i, 4)) != NULL,
                      "row %s: last_error \"%s\" does not say \"%s\"", PQgetvalue(rows, i, 0),
                      error, PQgetvalue(rows, i, 4));
    }
    PQclear(rows);

    /* Every other row, later rows of the poison rows' keys included, once in the stream. */
    ck_assert_int_eq(it_pg_published(conn), GOOD + 1);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, GOOD + 1, &msgs);
    ck_assert_ptr_nonnull(it_msgs_find(&msgs, "edge-ok"));
    ck_assert_ptr_null(it_msgs_find(&msgs, "lead"));
    it_msgs_free(&msgs);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* What the relay checks before sending is what this nats-server enforces, and how it answers. */
START_TEST(test_server_header_limit_as_observed)
{
    const char *subjects[] = {"it.perm.>", NULL};
    it_js_add_stream(STREAM, subjects);
    for (int block = 65535; block <= 65536; block++) {
        int v = big_value_len("pb535", block);
        char *value = malloc((size_t)v + 1);
        memset(value, 'h', (size_t)v);
        value[v] = '\0';
        natsMsg *msg = NULL;
        ck_assert_int_eq(natsMsg_Create(&msg, "it.perm.probe", NULL, "x", 1), NATS_OK);
        ck_assert_int_eq(natsMsgHeader_Set(msg, "X-Big", value), NATS_OK);
        /* a new id each time: a duplicate id is acked before the size is looked at */
        char id[8];
        snprintf(id, sizeof id, "pb%03d", block % 1000);
        ck_assert_int_eq(natsMsgHeader_Set(msg, "Nats-Msg-Id", id), NATS_OK);
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_PublishMsg(&pa, it_js(), msg, NULL, &jerr);
        fprintf(stderr, "permanent: header block %d bytes: status %d (%s), JetStream error %d\n",
                block, s, natsStatus_GetText(s), (int)jerr);
        if (block == 65535) {
            ck_assert_int_eq(s, NATS_OK);
        } else {
            ck_assert_int_eq(s, NATS_ERR);
            ck_assert_int_eq(jerr, PUBLISH_JS_HEADER_TOO_LARGE);
            struct publish_verdict verdict = publish_error_classify(s, (int)jerr);
            ck_assert(verdict.permanent);
            ck_assert_str_eq(publish_reason_label(verdict.reason), "too_large");
        }
        jsPubAck_Destroy(pa);
        natsMsg_Destroy(msg);
        free(value);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("permanent_errors");
    TCase *tc = it_tcase(suite, "permanent", it_start_servers, 120);
    tcase_add_test(tc, test_permanent_rows_dead_after_one_attempt);
    tcase_add_test(tc, test_server_header_limit_as_observed);
    return run_suite(suite);
}
