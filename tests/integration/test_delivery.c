/* Delivery: every row reaches the stream byte for byte, with its headers and Nats-Msg-Id, and is
 * marked. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define ROWS   10000
#define CHUNKS 4
#define STREAM "IT_DELIVERY"

/*
 * Rows g in [from, to]: three subjects; app-chosen and generated event ids;
 * payloads empty, all 256 byte values, small to 68 KB, all with zero bytes;
 * headers none, one, several (mixed case, UTF-8) or with array values.
 */
static void insert_rows(PGconn *conn, int from, int to)
{
    it_pg_exec(
        conn,
        "INSERT INTO outbox (event_id, subject, payload, headers)"
        " SELECT CASE WHEN g %% 10 = 0 THEN 'app-key-' || g ELSE gen_random_uuid()::text END,"
        "   (ARRAY['it.delivery.orders', 'it.delivery.payments',"
        "          'it.delivery.audit.log'])[g %% 3 + 1],"
        "   CASE WHEN g %% 101 = 0 THEN '\\x'::bytea"
        "        WHEN g %% 101 = 1 THEN (SELECT string_agg(set_byte('\\x00'::bytea, 0, b),"
        "                                  ''::bytea ORDER BY b) FROM generate_series(0, 255) b)"
        "        WHEN g %% 997 = 0 THEN decode(repeat(md5(g::text) || '00', 4000), 'hex')"
        "        ELSE decode(repeat(md5(g::text) || '00', g %% 60 + 1), 'hex') END,"
        "   CASE g %% 4"
        "     WHEN 0 THEN '{}'::jsonb"
        "     WHEN 1 THEN jsonb_build_object('Content-Type', 'application/octet-stream')"
        "     WHEN 2 THEN jsonb_build_object('Content-Type', 'application/json',"
        "                   'X-Trace-Id', md5(g::text), 'x-lower-case', 'v ' || g,"
        "                   'X-Unicode', 'grüße ' || g)"
        "     ELSE jsonb_build_object('X-Tags', jsonb_build_array('a', 'b', 'c' || g),"
        "                   'X-Single', 'one')"
        "   END"
        " FROM generate_series(%d, %d) g",
        from, to);
}

/* One difference between a row and its message, described into buf; 0 if they match. */
static int compare_row(struct it_msgs *msgs, PGresult *rows, int i, char *buf, size_t len)
{
    const char *id = PQgetvalue(rows, i, 0), *event_id = PQgetvalue(rows, i, 1);
    const char *subject = PQgetvalue(rows, i, 2), *payload = PQgetvalue(rows, i, 3);
    int payload_len = PQgetlength(rows, i, 3);
    const char *headers = PQgetvalue(rows, i, 4), *status = PQgetvalue(rows, i, 5);
    const char *seq = PQgetvalue(rows, i, 6), *has_published_at = PQgetvalue(rows, i, 7);

    if (strcmp(status, "published") != 0 || strcmp(has_published_at, "true") != 0) {
        snprintf(buf, len, "row %s: status %s, published_at set: %s", id, status, has_published_at);
        return 1;
    }
    const struct it_msg *m = it_msgs_find(msgs, event_id);
    if (!m) {
        snprintf(buf, len, "row %s: no message with Nats-Msg-Id %s", id, event_id);
        return 1;
    }
    if (strtoull(seq, NULL, 10) != m->seq) {
        snprintf(buf, len, "row %s: stream_seq %s, message at %llu", id, seq,
                 (unsigned long long)m->seq);
        return 1;
    }
    if (strcmp(m->subject, subject) != 0) {
        snprintf(buf, len, "row %s: subject %s, message on %s", id, subject, m->subject);
        return 1;
    }
    if (m->len != payload_len || memcmp(m->data, payload, (size_t)payload_len) != 0) {
        snprintf(buf, len, "row %s: payload of %d bytes differs from message's %d bytes", id,
                 payload_len, m->len);
        return 1;
    }
    json_error_t jerr;
    json_t *obj = json_loads(headers, 0, &jerr);
    ck_assert_msg(json_is_object(obj), "row %s: headers %s", id, headers);
    /* Pipelined (OUTBOX_STREAM set), a publish carries the fence of the chain: the id of the
     * message the stream stored just before it. */
    const struct it_header *fence = it_msg_header(m, "Nats-Expected-Last-Msg-Id");
    if (fence != NULL) {
        size_t at = (size_t)(m - msgs->msgs);
        if (at == 0 || fence->nvalues != 1 || msgs->msgs[at - 1].msg_id == NULL ||
            strcmp(fence->values[0], msgs->msgs[at - 1].msg_id) != 0) {
            snprintf(buf, len, "row %s: fence %s does not name the message before it", id,
                     fence->nvalues > 0 ? fence->values[0] : "(empty)");
            json_decref(obj);
            return 1;
        }
    }
    /* Every row header, plus Nats-Msg-Id (and the fence): nothing more, nothing less. */
    if ((size_t)m->nheaders != json_object_size(obj) + 1 + (fence != NULL)) {
        snprintf(buf, len, "row %s: %zu headers in the row, %d in the message (with Nats-Msg-Id)",
                 id, json_object_size(obj), m->nheaders);
        json_decref(obj);
        return 1;
    }
    const char *key;
    json_t *value;
    int diff = 0;
    json_object_foreach(obj, key, value)
    {
        const struct it_header *h = it_msg_header(m, key);
        size_t want = json_is_array(value) ? json_array_size(value) : 1;
        if (!h || (size_t)h->nvalues != want) {
            snprintf(buf, len, "row %s: header %s: %zu values in the row, %d in the message", id,
                     key, want, h ? h->nvalues : 0);
            diff = 1;
            break;
        }
        for (size_t v = 0; v < want && !diff; v++) {
            json_t *item = json_is_array(value) ? json_array_get(value, v) : value;
            if (strcmp(json_string_value(item), h->values[v]) != 0) {
                snprintf(buf, len, "row %s: header %s value %zu: \"%s\" vs \"%s\"", id, key, v,
                         json_string_value(item), h->values[v]);
                diff = 1;
            }
        }
        if (diff)
            break;
    }
    json_decref(obj);
    return diff;
}

START_TEST(test_every_row_delivered_exactly)
{
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_STREAM=" STREAM,
                         "OUTBOX_STREAM_SUBJECTS=it.delivery.orders,it.delivery.payments,"
                         "it.delivery.audit.>",
                         NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* Several statements while the relay runs: it must follow the notifications. */
    for (int c = 0; c < CHUNKS; c++)
        insert_rows(conn, c * (ROWS / CHUNKS) + 1, (c + 1) * (ROWS / CHUNKS));
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), ROWS);

    int64_t published = it_pg_wait_published(conn, ROWS, 120000);
    ck_assert_int_eq(published, ROWS);
    ck_assert_int_eq(it_relay_exit_code(relay), -1000); /* still running */

    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, ROWS, &msgs);

    /* Binary results: payloads come back as raw bytes, text columns as text. */
    PGresult *rows =
        PQexecParams(conn,
                     "SELECT id::text, event_id, subject, payload, headers::text, status,"
                     " coalesce(stream_seq::text, ''), (published_at IS NOT NULL)::text"
                     " FROM outbox ORDER BY outbox.id",
                     0, NULL, NULL, NULL, NULL, 1);
    ck_assert_int_eq(PQresultStatus(rows), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(rows), ROWS);

    int mismatches = 0, empty = 0, zero_bytes = 0, multi_value = 0;
    for (int i = 0; i < ROWS; i++) {
        char why[512];
        if (compare_row(&msgs, rows, i, why, sizeof why) != 0 && ++mismatches <= 10)
            fprintf(stderr, "mismatch: %s\n", why);
        int len = PQgetlength(rows, i, 3);
        empty += len == 0;
        zero_bytes += len > 0 && memchr(PQgetvalue(rows, i, 3), 0, (size_t)len) != NULL;
        multi_value += strstr(PQgetvalue(rows, i, 4), "[") != NULL;
    }
    /* The data covers what it claims to. */
    ck_assert_int_gt(empty, 0);
    ck_assert_int_gt(zero_bytes, ROWS / 2);
    ck_assert_int_gt(multi_value, 0);
    ck_assert_msg(mismatches == 0, "%d of %d rows differ from their messages", mismatches, ROWS);

    PQclear(rows);
    it_msgs_free(&msgs);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("delivery");
    TCase *tc = it_tcase(suite, "delivery", it_start_servers, 240);
    tcase_add_test(tc, test_every_row_delivered_exactly);
    return run_suite(suite);
}
