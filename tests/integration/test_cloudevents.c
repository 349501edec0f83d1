/* CloudEvents binary content mode, read back by a JetStream consumer: the ce- headers of each
 * message against its row, the payload byte for byte; with the mode off, no ce- header. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_CE"
#define SOURCE "/it/shop"

static const char *const subjects[] = {"it.ce.>", NULL};

/* Rows with a fixed created_at, and one with the table's default (clock_timestamp()). */
static void insert_rows(PGconn *conn)
{
    it_pg_exec(conn, "INSERT INTO outbox (event_id, subject, payload, headers, created_at) VALUES"
                     " ('ev-1', 'it.ce.order.paid', '\\x00ff0d0a'::bytea, '{}',"
                     "  '2026-12-07 13:10:00.123456+00'),"
                     " ('ev-2', 'it.ce.order.paid', convert_to('{\"a\":1}', 'UTF8'),"
                     "  '{\"Content-Type\": \"application/json\", \"X-Trace\": \"t2\"}',"
                     "  '1999-12-31 23:59:59.999999+00'),"
                     " ('ev-3', 'it.ce.order.shipped', convert_to('ship', 'UTF8'),"
                     "  '{\"content-type\": \"text/plain\", \"ce-type\": \"com.example.shipped\","
                     "    \"ce-source\": \"/own\"}',"
                     "  '2026-12-07 13:10:00.000001+00')");
    it_pg_exec(conn, "INSERT INTO outbox (event_id, subject, payload) VALUES"
                     " ('ev-4', 'it.ce.order.paid', convert_to('now', 'UTF8'))");
}

/* The one value of header `key` of msg, or NULL when it has none. */
static const char *header(const struct it_msg *msg, const char *key)
{
    const struct it_header *h = it_msg_header(msg, key);
    if (h == NULL)
        return NULL;
    ck_assert_int_eq(h->nvalues, 1);
    return h->values[0];
}

static void assert_header(const struct it_msg *msg, const char *key, const char *want)
{
    const char *got = header(msg, key);
    ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s: %s is %s, want %s", msg->msg_id, key,
                  got ? got : "(absent)", want);
}

/* An RFC 3339 UTC time with microseconds, as the consumer parses it, in microseconds. */
static long long rfc3339_us(const char *s)
{
    struct tm tm = {0};
    int us, n = 0;
    ck_assert_msg(sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                         &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us, &n) == 7 &&
                      s[n] == '\0',
                  "ce-time %s is not YYYY-MM-DDTHH:MM:SS.ffffffZ", s);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000000LL + us;
}

START_TEST(test_binary_mode_headers_read_back)
{
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    insert_rows(conn);
    const char *env[] = {"OUTBOX_CLOUDEVENTS=binary", "OUTBOX_CLOUDEVENTS_SOURCE=" SOURCE, NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, 4, 30000), 4);

    struct it_msgs m;
    it_js_read_stream_once(STREAM, 4, &m);
    PGresult *rows = PQexec(conn, "SELECT event_id, subject, encode(payload, 'hex'),"
                                  " (extract(epoch FROM created_at) * 1000000)::int8"
                                  " FROM outbox ORDER BY id");
    ck_assert_int_eq(PQresultStatus(rows), PGRES_TUPLES_OK);
    ck_assert_int_eq(PQntuples(rows), 4);
    for (int i = 0; i < PQntuples(rows); i++) {
        const char *event_id = PQgetvalue(rows, i, 0), *subject = PQgetvalue(rows, i, 1);
        const struct it_msg *msg = it_msgs_find(&m, event_id);
        ck_assert_msg(msg != NULL, "no message for %s", event_id);

        char hex[256] = "";
        for (int b = 0; b < msg->len && b < 120; b++)
            snprintf(hex + 2 * b, 3, "%02x", msg->data[b]);
        ck_assert_str_eq(hex, PQgetvalue(rows, i, 2));

        assert_header(msg, "ce-specversion", "1.0");
        assert_header(msg, "ce-id", event_id);
        const char *ce_time = header(msg, "ce-time");
        ck_assert_ptr_nonnull(ce_time);
        ck_assert_msg(rfc3339_us(ce_time) == atoll(PQgetvalue(rows, i, 3)),
                      "%s: ce-time %s is not created_at (%s us)", event_id, ce_time,
                      PQgetvalue(rows, i, 3));
        if (strcmp(event_id, "ev-3") == 0) {
            /* The row's own attributes win, and are not doubled. */
            assert_header(msg, "ce-type", "com.example.shipped");
            assert_header(msg, "ce-source", "/own");
            assert_header(msg, "ce-datacontenttype", "text/plain");
        } else {
            assert_header(msg, "ce-type", subject);
            assert_header(msg, "ce-source", SOURCE);
        }
        if (strcmp(event_id, "ev-2") == 0) {
            assert_header(msg, "ce-datacontenttype", "application/json");
            assert_header(msg, "Content-Type", "application/json");
            assert_header(msg, "X-Trace", "t2");
        }
        if (strcmp(event_id, "ev-1") == 0 || strcmp(event_id, "ev-4") == 0)
            ck_assert_ptr_null(header(msg, "ce-datacontenttype"));
    }
    /* The fixed times exactly, not only as the database sees them. */
    assert_header(it_msgs_find(&m, "ev-1"), "ce-time", "2026-12-07T13:10:00.123456Z");
    assert_header(it_msgs_find(&m, "ev-2"), "ce-time", "1999-12-31T23:59:59.999999Z");
    assert_header(it_msgs_find(&m, "ev-3"), "ce-time", "2026-12-07T13:10:00.000001Z");
    PQclear(rows);
    it_msgs_free(&m);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

START_TEST(test_off_by_default_no_ce_header)
{
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (event_id, subject, payload, headers) VALUES"
                     " ('ev-1', 'it.ce.a', convert_to('x', 'UTF8'), '{}'),"
                     " ('ev-2', 'it.ce.a', convert_to('y', 'UTF8'),"
                     "  '{\"Content-Type\": \"application/json\"}')");
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, 2, 30000), 2);

    struct it_msgs m;
    it_js_read_stream_once(STREAM, 2, &m);
    for (size_t i = 0; i < m.count; i++) {
        for (int h = 0; h < m.msgs[i].nheaders; h++)
            ck_assert_msg(strncasecmp(m.msgs[i].headers[h].key, "ce-", 3) != 0,
                          "%s carries %s with CloudEvents off", m.msgs[i].msg_id,
                          m.msgs[i].headers[h].key);
    }
    it_msgs_free(&m);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* A replayed message is the same CloudEvent: the same ce- headers as the relay's publish. */
START_TEST(test_replay_carries_the_same_ce_headers)
{
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (event_id, subject, payload, headers) VALUES"
                     " ('ev-r', 'it.ce.order.paid', convert_to('{}', 'UTF8'),"
                     "  '{\"Content-Type\": \"application/json\"}')");
    const char *env[] = {"OUTBOX_CLOUDEVENTS=binary", "OUTBOX_CLOUDEVENTS_SOURCE=" SOURCE, NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, 1, 30000), 1);
    it_relay_stop(relay);

    const char *args[] = {"replay", "--fresh-id", "--ids", "1", NULL};
    char *output = NULL;
    ck_assert_msg(it_relay_run(env, args, 30000, &output) == 0, "replay failed:\n%s", output);
    free(output);

    struct it_msgs m;
    it_js_read_stream(STREAM, &m);
    ck_assert_uint_eq(m.count, 2);
    const char *names[] = {"ce-specversion", "ce-id",   "ce-source",
                           "ce-type",        "ce-time", "ce-datacontenttype"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *original = header(&m.msgs[0], names[i]);
        ck_assert_msg(original != NULL, "the relay's message has no %s", names[i]);
        assert_header(&m.msgs[1], names[i], original);
    }
    assert_header(&m.msgs[1], "ce-id", "ev-r");
    it_msgs_free(&m);
    PQfinish(conn);
}
END_TEST

/* A bad setting exits 2 at start, naming it. */
START_TEST(test_bad_settings_exit_2)
{
    static const struct {
        const char *mode, *source, *named;
    } cases[] = {
        {"OUTBOX_CLOUDEVENTS=binary", NULL, "OUTBOX_CLOUDEVENTS_SOURCE"},
        {"OUTBOX_CLOUDEVENTS=binary", "OUTBOX_CLOUDEVENTS_SOURCE=", "OUTBOX_CLOUDEVENTS_SOURCE"},
        {"OUTBOX_CLOUDEVENTS=structured", "OUTBOX_CLOUDEVENTS_SOURCE=/s", "OUTBOX_CLOUDEVENTS"},
        {"OUTBOX_CLOUDEVENTS=binary", "OUTBOX_CLOUDEVENTS_SOURCE=/a\tb",
         "OUTBOX_CLOUDEVENTS_SOURCE"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].mode, cases[i].source, NULL};
        char *output = NULL;
        int code = it_relay_run(env, NULL, 30000, &output);
        ck_assert_msg(code == 2, "%s %s: exit %d, want 2:\n%s", cases[i].mode,
                      cases[i].source ? cases[i].source : "", code, output);
        ck_assert_msg(strstr(output, cases[i].named) != NULL, "output does not name %s:\n%s",
                      cases[i].named, output);
        free(output);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cloudevents");
    TCase *tc = it_tcase(suite, "cloudevents", it_start_servers, 120);
    tcase_add_test(tc, test_binary_mode_headers_read_back);
    tcase_add_test(tc, test_off_by_default_no_ce_header);
    tcase_add_test(tc, test_replay_carries_the_same_ce_headers);
    tcase_add_test(tc, test_bad_settings_exit_2);
    return run_suite(suite);
}
