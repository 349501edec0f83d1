/* Unit tests for the CloudEvents binary-mode headers: time format, encoding, precedence, size. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "outbox_relay/nats/cloudevents.h"
#include "outbox_relay/nats/message.h"
#include "run_suite.h"

#define ARRAY_LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- ce-time ----------------------------------------------------------- */

static const struct {
    double at;
    const char *want;
} time_cases[] = {
    {0, "1970-01-01T00:00:00.000000Z"},
    {1796649000.123456, "2026-12-07T13:10:00.123456Z"},
    {1796649000.999999, "2026-12-07T13:10:00.999999Z"},
    {1796649000.000001, "2026-12-07T13:10:00.000001Z"},
    {951782400, "2000-02-29T00:00:00.000000Z"},
    {-0.5, "1969-12-31T23:59:59.500000Z"},
    {-1e-6, "1969-12-31T23:59:59.999999Z"},
    {4102444799.999999, "2099-12-31T23:59:59.999999Z"},
};

START_TEST(test_time_table)
{
    char buf[CLOUDEVENTS_TIME_LEN];
    ck_assert(cloudevents_time(time_cases[_i].at, buf, sizeof(buf)));
    ck_assert_str_eq(buf, time_cases[_i].want);
}
END_TEST

/* Back to microseconds, as a consumer parses it. */
static long long parse_us(const char *s)
{
    struct tm tm = {0};
    int us;
    ck_assert_int_eq(sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us),
                     7);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000000LL + us;
}

/* What the claim hands over is extract(epoch)::float8, the double nearest the exact
 * microseconds: every such value must come back as those microseconds. */
START_TEST(test_time_round_trips_every_microsecond)
{
    char buf[CLOUDEVENTS_TIME_LEN];
    const long long bases[] = {0LL, 1796649000000000LL, 4102444799000000LL, -86400000000LL};
    for (int b = 0; b < ARRAY_LEN(bases); b++) {
        /* 2,000 instants a base, spread over ~16 minutes of fractions (few enough for the
         * sanitized build on a loaded machine within Check's 4 s). */
        for (long long d = 0; d < 200000; d += 97) {
            long long us = bases[b] + d * 4999;
            if (!cloudevents_time((double)us / 1e6, buf, sizeof(buf)) || parse_us(buf) != us)
                ck_abort_msg("%lld us formatted as %s", us, buf);
        }
    }
}
END_TEST

START_TEST(test_time_refuses_small_buffer_and_nonsense)
{
    char buf[CLOUDEVENTS_TIME_LEN];
    ck_assert(!cloudevents_time(0, buf, CLOUDEVENTS_TIME_LEN - 1));
    ck_assert(!cloudevents_time(1e300, buf, sizeof(buf)));
    ck_assert(!cloudevents_time(0.0 / 0.0, buf, sizeof(buf)));
}
END_TEST

/* ---- header values ------------------------------------------------------ */

START_TEST(test_header_value_percent_encoding)
{
    char *v = cloudevents_header_value("order 42 \"x\" 100% caf\xc3\xa9\t/a:b");
    ck_assert_str_eq(v, "order%2042%20%22x%22%20100%25%20caf%C3%A9%09/a:b");
    free(v);
    v = cloudevents_header_value("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66");
    ck_assert_str_eq(v, "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66");
    free(v);
}
END_TEST

/* ---- headers ------------------------------------------------------------ */

#define AT 1796649000.123456

/* The headers cloudevents_headers gives for a row of orders.paid, event e-1. */
static json_t *ce_of(const char *row_headers)
{
    char *out = NULL;
    ck_assert_int_eq(cloudevents_headers(row_headers, "orders.paid", "e-1", AT, "/shop", &out),
                     MESSAGE_OK);
    ck_assert_ptr_nonnull(out);
    json_error_t jerr;
    json_t *obj = json_loads(out, 0, &jerr);
    ck_assert_ptr_nonnull(obj);
    free(out);
    return obj;
}

static const char *str(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

START_TEST(test_headers_without_row_headers)
{
    const char *none[] = {NULL, "", "{}"};
    for (int i = 0; i < ARRAY_LEN(none); i++) {
        json_t *h = ce_of(none[i]);
        ck_assert_int_eq(json_object_size(h), 5);
        ck_assert_str_eq(str(h, "ce-specversion"), "1.0");
        ck_assert_str_eq(str(h, "ce-id"), "e-1");
        ck_assert_str_eq(str(h, "ce-source"), "/shop");
        ck_assert_str_eq(str(h, "ce-type"), "orders.paid");
        ck_assert_str_eq(str(h, "ce-time"), "2026-12-07T13:10:00.123456Z");
        ck_assert_ptr_null(json_object_get(h, "ce-datacontenttype"));
        json_decref(h);
    }
}
END_TEST

START_TEST(test_headers_row_wins_any_case)
{
    json_t *h = ce_of("{\"ce-source\": \"/billing\", \"CE-Type\": \"com.example.paid\", "
                      "\"Ce-Time\": \"2020-01-01T00:00:00Z\", \"X-Trace\": \"t\"}");
    ck_assert_str_eq(str(h, "ce-source"), "/billing");
    ck_assert_str_eq(str(h, "CE-Type"), "com.example.paid");
    ck_assert_ptr_null(json_object_get(h, "ce-type"));
    ck_assert_str_eq(str(h, "Ce-Time"), "2020-01-01T00:00:00Z");
    ck_assert_ptr_null(json_object_get(h, "ce-time"));
    ck_assert_str_eq(str(h, "X-Trace"), "t");
    ck_assert_str_eq(str(h, "ce-id"), "e-1");
    ck_assert_int_eq(json_object_size(h), 6);
    json_decref(h);

    /* A repeated header of the row is the row's too. */
    h = ce_of("{\"ce-id\": [\"a\", \"b\"]}");
    ck_assert_int_eq(json_array_size(json_object_get(h, "ce-id")), 2);
    json_decref(h);
}
END_TEST

static const struct {
    const char *row;
    const char *want; /* ce-datacontenttype, NULL: none */
} content_type_cases[] = {
    {"{\"content-type\": \"application/json\"}", "application/json"},
    {"{\"Content-Type\": \"application/json; charset=utf-8\"}",
     "application/json;%20charset=utf-8"},
    {"{\"CONTENT-TYPE\": [\"text/plain\", \"text/html\"]}", "text/plain"},
    {"{\"Content-Type\": \"\"}", NULL},
    {"{\"Content-Type\": \"text/plain\", \"ce-datacontenttype\": \"application/xml\"}",
     "application/xml"},
    {"{\"X-Content-Type\": \"text/plain\"}", NULL},
};

START_TEST(test_headers_content_type_table)
{
    json_t *h = ce_of(content_type_cases[_i].row);
    const char *got = str(h, "ce-datacontenttype");
    if (content_type_cases[_i].want == NULL)
        ck_assert_ptr_null(got);
    else
        ck_assert_str_eq(got, content_type_cases[_i].want);
    json_decref(h);
}
END_TEST

START_TEST(test_headers_attribute_values_encoded)
{
    char *out = NULL;
    ck_assert_int_eq(cloudevents_headers(NULL, "caf\xc3\xa9.paid", "order 42", AT,
                                         "https://example.com/a b", &out),
                     MESSAGE_OK);
    json_t *h = json_loads(out, 0, NULL);
    ck_assert_str_eq(str(h, "ce-id"), "order%2042");
    ck_assert_str_eq(str(h, "ce-type"), "caf%C3%A9.paid");
    ck_assert_str_eq(str(h, "ce-source"), "https://example.com/a%20b");
    json_decref(h);
    free(out);
}
END_TEST

/* Headers that are no JSON object are the row's fault: message_build names it. */
START_TEST(test_headers_invalid_left_to_message_build)
{
    const char *bad[] = {"{", "[1]", "\"x\"", "42"};
    for (int i = 0; i < ARRAY_LEN(bad); i++) {
        char *out = (char *)"unset";
        ck_assert_int_eq(cloudevents_headers(bad[i], "a.b", "e", AT, "/s", &out), MESSAGE_OK);
        ck_assert_ptr_null(out);
    }
}
END_TEST

/* ---- size -------------------------------------------------------------- */

static void nats_setup(void)
{
    ck_assert_int_eq(nats_Open(-1), NATS_OK);
}

static void nats_teardown(void)
{
    nats_CloseAndWait(5000);
}

/* A row that fits max_payload only without the ce- headers is refused as too large. */
START_TEST(test_size_check_counts_added_headers)
{
    const char *row = "{\"Content-Type\": \"application/json\"}";
    char payload[200];
    memset(payload, 'x', sizeof(payload));
    char err[512];
    natsMsg *msg = NULL;
    size_t plain = 0;
    ck_assert_int_eq(message_headers_apply(NULL, row, &plain, err, sizeof(err)), MESSAGE_OK);
    /* payload + row headers + Nats-Msg-Id: e-1 */
    int64_t fits_plain = (int64_t)(sizeof(payload) + plain + strlen("Nats-Msg-Id: e-1\r\n"));
    ck_assert_int_eq(message_build(&msg, "orders.paid", "e-1", row, payload, sizeof(payload),
                                   fits_plain, err, sizeof(err)),
                     MESSAGE_OK);
    natsMsg_Destroy(msg);

    char *with_ce = NULL;
    ck_assert_int_eq(cloudevents_headers(row, "orders.paid", "e-1", AT, "/shop", &with_ce),
                     MESSAGE_OK);
    enum publish_reason reason;
    ck_assert_int_eq(message_build_classified(&msg, "orders.paid", "e-1", with_ce, payload,
                                              sizeof(payload), fits_plain, &reason, err,
                                              sizeof(err)),
                     MESSAGE_INVALID);
    ck_assert_int_eq(reason, PUBLISH_TOO_LARGE);
    ck_assert_ptr_null(msg);

    /* With room for them, the message carries them. */
    size_t ce_block = 0;
    ck_assert_int_eq(message_headers_apply(NULL, with_ce, &ce_block, err, sizeof(err)), MESSAGE_OK);
    int64_t fits_ce = (int64_t)(sizeof(payload) + ce_block + strlen("Nats-Msg-Id: e-1\r\n"));
    ck_assert_int_eq(message_build(&msg, "orders.paid", "e-1", with_ce, payload, sizeof(payload),
                                   fits_ce, err, sizeof(err)),
                     MESSAGE_OK);
    const char *v = NULL;
    ck_assert_int_eq(natsMsgHeader_Get(msg, "ce-datacontenttype", &v), NATS_OK);
    ck_assert_str_eq(v, "application/json");
    ck_assert_int_eq(natsMsgHeader_Get(msg, "ce-time", &v), NATS_OK);
    ck_assert_str_eq(v, "2026-12-07T13:10:00.123456Z");
    ck_assert_uint_eq(message_header_block(msg), ce_block + strlen("Nats-Msg-Id: e-1\r\n"));
    natsMsg_Destroy(msg);
    free(with_ce);
}
END_TEST

static Suite *cloudevents_suite(void)
{
    Suite *s = suite_create("cloudevents");

    TCase *tc = tcase_create("time");
    tcase_add_loop_test(tc, test_time_table, 0, ARRAY_LEN(time_cases));
    tcase_add_test(tc, test_time_round_trips_every_microsecond);
    tcase_add_test(tc, test_time_refuses_small_buffer_and_nonsense);
    suite_add_tcase(s, tc);

    tc = tcase_create("headers");
    tcase_add_test(tc, test_header_value_percent_encoding);
    tcase_add_test(tc, test_headers_without_row_headers);
    tcase_add_test(tc, test_headers_row_wins_any_case);
    tcase_add_loop_test(tc, test_headers_content_type_table, 0, ARRAY_LEN(content_type_cases));
    tcase_add_test(tc, test_headers_attribute_values_encoded);
    tcase_add_test(tc, test_headers_invalid_left_to_message_build);
    suite_add_tcase(s, tc);

    tc = tcase_create("size");
    tcase_add_checked_fixture(tc, nats_setup, nats_teardown);
    tcase_add_test(tc, test_size_check_counts_added_headers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(cloudevents_suite());
}
