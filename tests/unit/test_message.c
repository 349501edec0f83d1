/* Unit tests for subject, event_id and header validation, message building and error classes. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "outbox_relay/nats/message.h"
#include "outbox_relay/lib/subject_pattern.h"
#include "run_suite.h"

#define ARRAY_LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- subjects ---------------------------------------------------------- */

static const struct {
    const char *subject;
    bool valid;
    const char *err; /* exact text when given, else only "invalid subject" is required */
} subject_cases[] = {
    {"orders", true, NULL},
    {"orders.created", true, NULL},
    {"a.b.c.d.e", true, NULL},
    {"orders.eu-west_1.$v2", true, NULL},
    {"a*", true, NULL},   /* a star inside a token is a literal */
    {"a.b>", true, NULL}, /* likewise '>' */
    {"caf\xc3\xa9.created", true, NULL},
    {"a.*.b", false, "invalid subject \"a.*.b\": wildcard token \"*\""},
    {"a.>", false, "invalid subject \"a.>\": wildcard token \">\""},
    {">", false, "invalid subject \">\": wildcard token \">\""},
    {"*", false, "invalid subject \"*\": wildcard token \"*\""},
    {"*.a", false, NULL},
    {"a b", false, "invalid subject \"a b\": contains whitespace or a control character"},
    {"a\tb", false, "invalid subject \"a\\tb\": contains whitespace or a control character"},
    {"a\nb", false, "invalid subject \"a\\nb\": contains whitespace or a control character"},
    {"a.b\r", false, "invalid subject \"a.b\\r\": contains whitespace or a control character"},
    {" a", false, NULL},
    {"a ", false, NULL},
    {"a\x01"
     "b",
     false, "invalid subject \"a\\x01b\": contains whitespace or a control character"},
    {"a\x7f", false, NULL},
    {"", false, "invalid subject \"\": empty"},
    {".a", false, "invalid subject \".a\": empty token"},
    {"a.", false, "invalid subject \"a.\": empty token"},
    {"a..b", false, "invalid subject \"a..b\": empty token"},
    {".", false, "invalid subject \".\": empty token"},
};

START_TEST(test_subject_table)
{
    char err[512] = "untouched";
    bool got = subject_valid(subject_cases[_i].subject, err, sizeof(err));
    ck_assert_msg(got == subject_cases[_i].valid, "subject \"%s\": got %s",
                  subject_cases[_i].subject, got ? "valid" : err);
    if (!subject_cases[_i].valid) {
        if (subject_cases[_i].err != NULL)
            ck_assert_str_eq(err, subject_cases[_i].err);
        else
            ck_assert_msg(strncmp(err, "invalid subject \"", 17) == 0, "err: %s", err);
    }
}
END_TEST

START_TEST(test_subject_null_and_small_err_buffer)
{
    char err[64];
    ck_assert(!subject_valid(NULL, err, sizeof(err)));
    ck_assert_str_eq(err, "invalid subject \"\": empty");

    /* a short buffer truncates but stays terminated */
    char tiny[8];
    ck_assert(!subject_valid("a..b", tiny, sizeof(tiny)));
    ck_assert_uint_eq(strlen(tiny), sizeof(tiny) - 1);
    /* and no buffer at all is allowed */
    ck_assert(!subject_valid("a..b", NULL, 0));
    ck_assert(subject_valid("a.b", NULL, 0));
}
END_TEST

START_TEST(test_subject_too_long)
{
    /* A subject longer than the server's control line would close the connection. */
    size_t n = 8000;
    char *s = malloc(n + 1);
    memset(s, 'x', n);
    s[n] = '\0';
    char err[512];
    ck_assert(!subject_valid(s, err, sizeof(err)));
    ck_assert_msg(strstr(err, "longer than") != NULL, "err: %s", err);
    /* the error quotes a prefix, not 8000 bytes */
    ck_assert_uint_lt(strlen(err), 200);

    s[1000] = '\0';
    ck_assert(subject_valid(s, err, sizeof(err)));
    free(s);
}
END_TEST

START_TEST(test_subject_error_is_valid_utf8)
{
    /* last_error is a text column: a cut must never split a UTF-8 character. */
    char subject[512] = "a";
    for (int i = 0; i < 100; i++)
        strcat(subject, "\xc3\xa9"); /* é */
    strcat(subject, " x");
    char err[512];
    ck_assert(!subject_valid(subject, err, sizeof(err)));
    json_t *j = json_string(err); /* NULL unless valid UTF-8 */
    ck_assert_msg(j != NULL, "err: %s", err);
    json_decref(j);
    ck_assert_ptr_nonnull(strstr(err, "...\": contains whitespace"));

    /* a short buffer that cuts the é after its first byte */
    char tiny[19];
    ck_assert(!subject_valid("\xc3\xa9..", tiny, sizeof(tiny)));
    ck_assert_str_eq(tiny, "invalid subject \"?");
}
END_TEST

/* ---- headers ----------------------------------------------------------- */

/* "Name: value\r\n" */
#define LINE(name_len, value_len) ((name_len) + 2 + (value_len) + 2)
/* "NATS/1.0\r\n" ... "\r\n" */
#define BLOCK(lines) (10 + (lines) + 2)

static const struct {
    const char *json;
    enum message_result want;
    size_t wire;     /* when MESSAGE_OK */
    const char *err; /* MESSAGE_INVALID: exact text, or a prefix ending in '*' */
} header_cases[] = {
    /* no headers */
    {NULL, MESSAGE_OK, 0, NULL},
    {"", MESSAGE_OK, 0, NULL},
    {"{}", MESSAGE_OK, 0, NULL},
    {" { } ", MESSAGE_OK, 0, NULL},
    {"{\"a\":[]}", MESSAGE_OK, 0, NULL},
    /* strings and arrays of strings */
    {"{\"a\":\"b\"}", MESSAGE_OK, BLOCK(LINE(1, 1)), NULL},
    {"{\"x-trace\":\"abc\",\"Tenant\":\"t1\"}", MESSAGE_OK, BLOCK(LINE(7, 3) + LINE(6, 2)), NULL},
    {"{\"x-trace\":[\"1\",\"22\"]}", MESSAGE_OK, BLOCK(LINE(7, 1) + LINE(7, 2)), NULL},
    /* empty: nats.c cannot read the headers of such a message back (test_hostile_rows) */
    {"{\"a\":\"\"}", MESSAGE_INVALID, 0, "headers: value of \"a\" is empty"},
    {"{\"a\":[\"x\",\"\"]}", MESSAGE_INVALID, 0, "headers: value of \"a\" is empty"},
    /* edge whitespace: consumers read values trimmed */
    {"{\"a\":\" v\"}", MESSAGE_INVALID, 0, "headers: value of \"a\" has leading or trailing*"},
    {"{\"a\":\"v\\t\"}", MESSAGE_INVALID, 0, "headers: value of \"a\" has leading or trailing*"},
    {"{\"a\":\"v w\"}", MESSAGE_OK, BLOCK(LINE(1, 3)), NULL},
    {"{\"a\":\"caf\\u00e9\"}", MESSAGE_OK, BLOCK(LINE(1, 5)), NULL}, /* bytes, not characters */
    {"{\"a\":\"tab\\there\"}", MESSAGE_OK, BLOCK(LINE(1, 8)), NULL},
    {"{\"a\":[],\"b\":\"c\"}", MESSAGE_OK, BLOCK(LINE(1, 1)), NULL},
    {"{\"Nat\":\"x\",\"NATS\":\"y\"}", MESSAGE_OK, BLOCK(LINE(3, 1) + LINE(4, 1)), NULL},
    /* values of the wrong type */
    {"{\"a\":{\"b\":\"c\"}}", MESSAGE_INVALID, 0,
     "headers: value of \"a\" is not a string or array of strings"},
    {"{\"x-trace\":1}", MESSAGE_INVALID, 0,
     "headers: value of \"x-trace\" is not a string or array of strings"},
    {"{\"a\":1.5}", MESSAGE_INVALID, 0, "headers: value of \"a\" is not a string*"},
    {"{\"a\":true}", MESSAGE_INVALID, 0, "headers: value of \"a\" is not a string*"},
    {"{\"a\":null}", MESSAGE_INVALID, 0, "headers: value of \"a\" is not a string*"},
    {"{\"a\":[\"x\",1]}", MESSAGE_INVALID, 0, "headers: value of \"a\" is not a string*"},
    {"{\"a\":[[\"x\"]]}", MESSAGE_INVALID, 0, "headers: value of \"a\" is not a string*"},
    {"{\"a\":[{}]}", MESSAGE_INVALID, 0, "headers: value of \"a\" is not a string*"},
    /* not an object */
    {"[]", MESSAGE_INVALID, 0, "headers: not a JSON object"},
    {"[\"a\",\"b\"]", MESSAGE_INVALID, 0, "headers: not a JSON object"},
    {"\"a\"", MESSAGE_INVALID, 0, "headers: not a JSON object"},
    {"42", MESSAGE_INVALID, 0, "headers: not a JSON object"},
    {"null", MESSAGE_INVALID, 0, "headers: not a JSON object"},
    {"true", MESSAGE_INVALID, 0, "headers: not a JSON object"},
    /* malformed */
    {"{", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    {"{\"a\":\"b\",}", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    {"{'a':'b'}", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    {"not json", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    {"   ", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    {"{} {}", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    {"{\"a\":\"x\\u0000y\"}", MESSAGE_INVALID, 0, "headers: not valid JSON*"},
    /* reserved names */
    {"{\"Nats-Msg-Id\":\"x\"}", MESSAGE_INVALID, 0,
     "headers: name \"Nats-Msg-Id\" is reserved (the \"Nats-\" prefix is interpreted by "
     "JetStream)"},
    {"{\"nats-expected-stream\":\"s\"}", MESSAGE_INVALID, 0,
     "headers: name \"nats-expected-stream\" is reserved*"},
    {"{\"NATS-ROLLUP\":\"all\"}", MESSAGE_INVALID, 0, "headers: name \"NATS-ROLLUP\" is reserved*"},
    {"{\"ok\":\"1\",\"nAtS-TTL\":\"1s\"}", MESSAGE_INVALID, 0, "headers: name \"nAtS-TTL\"*"},
    /* CR / LF in values */
    {"{\"a\":\"x\\r\\ny\"}", MESSAGE_INVALID, 0, "headers: value of \"a\" contains CR or LF"},
    {"{\"a\":\"x\\ny\"}", MESSAGE_INVALID, 0, "headers: value of \"a\" contains CR or LF"},
    {"{\"a\":\"x\\r\"}", MESSAGE_INVALID, 0, "headers: value of \"a\" contains CR or LF"},
    {"{\"a\":[\"ok\",\"x\\ny\"]}", MESSAGE_INVALID, 0, "headers: value of \"a\" contains CR or LF"},
    /* bad names */
    {"{\"a:b\":\"x\"}", MESSAGE_INVALID, 0,
     "headers: name \"a:b\" must be printable ASCII without spaces or ':'"},
    {"{\"a b\":\"x\"}", MESSAGE_INVALID, 0, "headers: name \"a b\" must be printable*"},
    {"{\"a\\tb\":\"x\"}", MESSAGE_INVALID, 0, "headers: name \"a\\tb\" must be printable*"},
    {"{\"a\\nb\":\"x\"}", MESSAGE_INVALID, 0, "headers: name \"a\\nb\" must be printable*"},
    {"{\"caf\\u00e9\":\"x\"}", MESSAGE_INVALID, 0, "headers: name*must be printable*"},
    {"{\"\":\"x\"}", MESSAGE_INVALID, 0, "headers: empty header name"},
};

/* err matches want exactly, or, when want ends in '*', each '*'-separated piece in order. */
static bool err_matches(const char *err, const char *want)
{
    size_t wl = strlen(want);
    if (wl == 0 || want[wl - 1] != '*')
        return strcmp(err, want) == 0;
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", want);
    const char *at = err;
    bool first = true;
    for (char *piece = strtok(buf, "*"); piece != NULL; piece = strtok(NULL, "*")) {
        const char *hit = strstr(at, piece);
        if (hit == NULL || (first && hit != err))
            return false;
        at = hit + strlen(piece);
        first = false;
    }
    return true;
}

START_TEST(test_headers_table)
{
    char err[512] = "";
    size_t wire = 12345;
    enum message_result got =
        message_headers_apply(NULL, header_cases[_i].json, &wire, err, sizeof(err));
    ck_assert_msg(got == header_cases[_i].want, "headers %s: got %d (%s), want %d",
                  header_cases[_i].json ? header_cases[_i].json : "NULL", got, err,
                  header_cases[_i].want);
    if (got == MESSAGE_OK) {
        ck_assert_msg(wire == header_cases[_i].wire, "headers %s: wire %zu, want %zu",
                      header_cases[_i].json ? header_cases[_i].json : "NULL", wire,
                      header_cases[_i].wire);
    } else {
        ck_assert_msg(err_matches(err, header_cases[_i].err), "headers %s: err \"%s\", want \"%s\"",
                      header_cases[_i].json, err, header_cases[_i].err);
    }
}
END_TEST

START_TEST(test_headers_added_to_message)
{
    natsMsg *msg = NULL;
    ck_assert_int_eq(natsMsg_Create(&msg, "a.b", NULL, "x", 1), NATS_OK);
    char err[256];
    size_t wire = 0;
    ck_assert_int_eq(message_headers_apply(msg, "{\"x-trace\":[\"1\",\"2\"],\"Tenant\":\"t1\"}",
                                           &wire, err, sizeof(err)),
                     MESSAGE_OK);
    ck_assert_uint_eq(wire, BLOCK(LINE(7, 1) + LINE(7, 1) + LINE(6, 2)));

    const char **values = NULL;
    int count = 0;
    ck_assert_int_eq(natsMsgHeader_Values(msg, "x-trace", &values, &count), NATS_OK);
    ck_assert_int_eq(count, 2);
    ck_assert_str_eq(values[0], "1");
    ck_assert_str_eq(values[1], "2");
    free((void *)values);
    ck_assert_int_eq(natsMsgHeader_Values(msg, "Tenant", &values, &count), NATS_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_str_eq(values[0], "t1");
    free((void *)values);
    natsMsg_Destroy(msg);
}
END_TEST

START_TEST(test_headers_all_or_nothing)
{
    /* A bad header after good ones must not leave the good ones on the message. */
    natsMsg *msg = NULL;
    ck_assert_int_eq(natsMsg_Create(&msg, "a.b", NULL, NULL, 0), NATS_OK);
    char err[256];
    ck_assert_int_eq(message_headers_apply(msg, "{\"good\":\"1\",\"also\":[\"2\"],\"bad\":3}", NULL,
                                           err, sizeof(err)),
                     MESSAGE_INVALID);
    const char **keys = NULL;
    int count = 0;
    ck_assert_int_eq(natsMsgHeader_Keys(msg, &keys, &count), NATS_NOT_FOUND);
    ck_assert_int_eq(count, 0);
    natsMsg_Destroy(msg);
}
END_TEST

/* ---- message_build ----------------------------------------------------- */

/*
 * The header block as nats.c will put it on the wire, rebuilt from what the
 * message actually holds: "NATS/1.0\r\n", "Name: value\r\n" per value, "\r\n".
 */
static size_t wire_header_bytes(natsMsg *msg)
{
    const char **keys = NULL;
    int nkeys = 0;
    if (natsMsgHeader_Keys(msg, &keys, &nkeys) != NATS_OK)
        return 0;
    size_t total = 10 + 2;
    for (int k = 0; k < nkeys; k++) {
        const char **values = NULL;
        int nvalues = 0;
        ck_assert_int_eq(natsMsgHeader_Values(msg, keys[k], &values, &nvalues), NATS_OK);
        for (int v = 0; v < nvalues; v++)
            total += strlen(keys[k]) + 2 + strlen(values[v]) + 2;
        free((void *)values);
    }
    free((void *)keys);
    return total;
}

static void assert_header(natsMsg *msg, const char *name, int count, const char *first)
{
    const char **values = NULL;
    int n = 0;
    ck_assert_int_eq(natsMsgHeader_Values(msg, name, &values, &n), NATS_OK);
    ck_assert_int_eq(n, count);
    ck_assert_str_eq(values[0], first);
    free((void *)values);
}

START_TEST(test_build_payload_exact_with_nul_bytes)
{
    static const char payload[] = {'a', '\0', 'b', '\0', '\0', 'c', '\xff', '\0'};
    natsMsg *msg = NULL;
    char err[256];
    ck_assert_int_eq(message_build(&msg, "orders.created", "evt-1", NULL, payload, sizeof(payload),
                                   1024 * 1024, err, sizeof(err)),
                     MESSAGE_OK);
    ck_assert_ptr_nonnull(msg);
    ck_assert_str_eq(natsMsg_GetSubject(msg), "orders.created");
    ck_assert_ptr_null(natsMsg_GetReply(msg));
    ck_assert_int_eq(natsMsg_GetDataLength(msg), (int)sizeof(payload));
    ck_assert_mem_eq(natsMsg_GetData(msg), payload, sizeof(payload));
    assert_header(msg, "Nats-Msg-Id", 1, "evt-1");
    natsMsg_Destroy(msg);
}
END_TEST

START_TEST(test_build_empty_payload)
{
    char err[256];
    natsMsg *msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", "e", "{}", "", 0, 100, err, sizeof(err)),
                     MESSAGE_OK);
    ck_assert_int_eq(natsMsg_GetDataLength(msg), 0);
    natsMsg_Destroy(msg);

    msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", "e", NULL, NULL, 0, 0, err, sizeof(err)),
                     MESSAGE_OK);
    ck_assert_int_eq(natsMsg_GetDataLength(msg), 0);
    assert_header(msg, "Nats-Msg-Id", 1, "e");
    natsMsg_Destroy(msg);

    /* a length without data is a caller bug, never a crash */
    msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", "e", NULL, NULL, 5, 0, err, sizeof(err)),
                     MESSAGE_INVALID);
    ck_assert_ptr_null(msg);
}
END_TEST

START_TEST(test_build_headers_present)
{
    char err[256];
    natsMsg *msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", "0b7e2a1c-9f7d-4a1e-8c55-3d0f1e2a4b6c",
                                   "{\"x-trace\":[\"t1\",\"t2\"],\"Tenant\":\"acme\",\"empty\":[]}",
                                   "{}", 2, 0, err, sizeof(err)),
                     MESSAGE_OK);
    assert_header(msg, "Nats-Msg-Id", 1, "0b7e2a1c-9f7d-4a1e-8c55-3d0f1e2a4b6c");
    assert_header(msg, "Tenant", 1, "acme");
    const char **values = NULL;
    int n = 0;
    ck_assert_int_eq(natsMsgHeader_Values(msg, "x-trace", &values, &n), NATS_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(values[0], "t1");
    ck_assert_str_eq(values[1], "t2");
    free((void *)values);
    ck_assert_int_eq(natsMsgHeader_Values(msg, "empty", &values, &n), NATS_NOT_FOUND);

    const char **keys = NULL;
    ck_assert_int_eq(natsMsgHeader_Keys(msg, &keys, &n), NATS_OK);
    ck_assert_int_eq(n, 3);
    free((void *)keys);
    natsMsg_Destroy(msg);
}
END_TEST

START_TEST(test_build_rejects_bad_rows)
{
    static const struct {
        const char *subject, *event_id, *headers, *err;
    } bad[] = {
        {"a..b", "e", NULL, "invalid subject \"a..b\": empty token"},
        {"a.>", "e", NULL, "invalid subject \"a.>\": wildcard token \">\""},
        {"", "e", NULL, "invalid subject \"\": empty"},
        {NULL, "e", NULL, "invalid subject \"\": empty"},
        {"a.b", "", NULL, "invalid event_id: empty"},
        {"a.b", NULL, NULL, "invalid event_id: empty"},
        {"a.b", "x\r\ny", NULL, "invalid event_id \"x\\r\\ny\": contains CR or LF"},
        {"a.b", " evt-1", NULL,
         "invalid event_id \" evt-1\": leading or trailing whitespace (JetStream would see, and "
         "deduplicate on, the trimmed id)"},
        {"a.b", "evt-1 ", NULL,
         "invalid event_id \"evt-1 \": leading or trailing whitespace (JetStream would see, and "
         "deduplicate on, the trimmed id)"},
        {"a.b", "\tevt", NULL,
         "invalid event_id \"\\tevt\": leading or trailing whitespace (JetStream would see, and "
         "deduplicate on, the trimmed id)"},
        {"a.b", " ", NULL,
         "invalid event_id \" \": leading or trailing whitespace (JetStream would see, and "
         "deduplicate on, the trimmed id)"},
        {"a.b", "ev\tt", NULL, "invalid event_id \"ev\\tt\": contains a control character"},
        {"a.b", "ev\x01t", NULL, "invalid event_id \"ev\\x01t\": contains a control character"},
        {"a.b", "ev\x7f", NULL, "invalid event_id \"ev\\x7f\": contains a control character"},
        {"a.b", "e", "{\"bad name\":\"v\"}",
         "headers: name \"bad name\" must be printable ASCII without spaces or ':'"},
        {"a.b", "e", "{\"Nats-Msg-Id\":\"other\"}",
         "headers: name \"Nats-Msg-Id\" is reserved (the \"Nats-\" prefix is interpreted by "
         "JetStream)"},
        {"a.b", "e", "{\"x-trace\":{\"a\":1}}",
         "headers: value of \"x-trace\" is not a string or array of strings"},
        {"a.b", "e", "[1]", "headers: not a JSON object"},
    };
    for (int i = 0; i < ARRAY_LEN(bad); i++) {
        natsMsg *msg = (natsMsg *)&bad; /* must be reset to NULL */
        char err[512] = "";
        enum publish_reason reason = PUBLISH_NATS_ERROR;
        ck_assert_int_eq(message_build_classified(&msg, bad[i].subject, bad[i].event_id,
                                                  bad[i].headers, "p", 1, 0, &reason, err,
                                                  sizeof(err)),
                         MESSAGE_INVALID);
        ck_assert_ptr_null(msg);
        ck_assert_str_eq(err, bad[i].err);
        ck_assert_str_eq(publish_reason_label(reason), "invalid_row");
    }
}
END_TEST

START_TEST(test_build_event_id_inner_space_kept)
{
    /* Only the edges are trimmed on the way: an inner space is part of the id. */
    natsMsg *msg = NULL;
    char err[256];
    ck_assert_int_eq(message_build(&msg, "a.b", "order 42", NULL, "p", 1, 0, err, sizeof(err)),
                     MESSAGE_OK);
    assert_header(msg, "Nats-Msg-Id", 1, "order 42");
    natsMsg_Destroy(msg);
}
END_TEST

/*
 * nats.c's header map takes some names for a longer name they start: the
 * message would carry the values under the wrong name. Such a row is
 * refused; names that only look alike go.
 */
START_TEST(test_build_header_names_nats_confuses)
{
    static const char *const refused[] = {
        "{\"Trace\":\"a\",\"Traceparent\":\"b\"}",
        "{\"X-H10\":\"a\",\"X-H1000\":\"b\"}",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        natsMsg *msg = NULL;
        char err[256] = "";
        ck_assert_int_eq(message_build(&msg, "a.b", "e", refused[i], "p", 1, 0, err, sizeof(err)),
                         MESSAGE_INVALID);
        ck_assert_msg(strstr(err, "confused") != NULL, "%s: %s", refused[i], err);
        ck_assert_ptr_null(msg);
    }
    natsMsg *msg = NULL;
    char err[256];
    ck_assert_int_eq(message_build(&msg, "a.b", "e", "{\"X-A\":\"a\",\"X-AB\":[\"b\",\"c\"]}", "p",
                                   1, 0, err, sizeof(err)),
                     MESSAGE_OK);
    assert_header(msg, "X-A", 1, "a");
    assert_header(msg, "X-AB", 2, "b");
    natsMsg_Destroy(msg);
}
END_TEST

/*
 * JetStream refuses a header block over 65535 bytes (error 10097) whatever
 * max_payload allows; the row is refused before it is sent, like a payload
 * over max_payload, with the same arithmetic nats.c's wire format has.
 */
START_TEST(test_build_header_block_limit)
{
    const char *event_id = "evt-1";
    /* "NATS/1.0\r\n" + "X-Big: v\r\n" + "Nats-Msg-Id: evt-1\r\n" + "\r\n" */
    const size_t fixed = 10 + (5 + 2 + 2) + (11 + 2 + 5 + 2) + 2;
    const size_t value_len = 65535 - fixed;
    char *headers = malloc(value_len + 32);
    char err[512];
    for (int extra = 0; extra <= 1; extra++) {
        int n = snprintf(headers, value_len + 32, "{\"X-Big\":\"");
        memset(headers + n, 'h', value_len + (size_t)extra);
        strcpy(headers + n + value_len + (size_t)extra, "\"}");
        natsMsg *msg = NULL;
        enum publish_reason reason = PUBLISH_NATS_ERROR;
        enum message_result r = message_build_classified(&msg, "a.b", event_id, headers, "p", 1,
                                                         1024 * 1024, &reason, err, sizeof(err));
        if (extra == 0) {
            ck_assert_msg(r == MESSAGE_OK, "exactly 65535 bytes refused: %s", err);
            ck_assert_uint_eq(wire_header_bytes(msg), 65535);
            natsMsg_Destroy(msg);
        } else {
            ck_assert_int_eq(r, MESSAGE_INVALID);
            ck_assert_ptr_null(msg);
            ck_assert_str_eq(err, "headers too large: the header block is 65536 bytes, JetStream "
                                  "takes at most 65535 (64 KiB)");
            ck_assert_str_eq(publish_reason_label(reason), "too_large");
        }
    }
    /* max_payload 0 (unchecked) does not lift JetStream's header limit */
    natsMsg *msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", event_id, headers, "p", 1, 0, err, sizeof(err)),
                     MESSAGE_INVALID);
    free(headers);
}
END_TEST

/* The fence the relay adds at publish counts: a row exactly at a limit fits only without it. */
START_TEST(test_fits_with_header_counts_the_added_header)
{
    const char *fence = "Nats-Expected-Last-Msg-Id", *prev = "evt-0";
    size_t line = strlen(fence) + 2 + strlen(prev) + 2;
    char *payload = calloc(1, 4096);
    char err[512];
    natsMsg *msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", "evt-1", NULL, payload, 100, 0, err, sizeof(err)),
                     MESSAGE_OK);
    size_t block = message_header_block(msg);
    ck_assert_uint_eq(block, wire_header_bytes(msg));
    int64_t exact = (int64_t)(block + 100 + line);
    ck_assert(message_fits_with_header(msg, fence, prev, exact));
    ck_assert(!message_fits_with_header(msg, fence, prev, exact - 1));
    ck_assert(message_fits_with_header(msg, fence, prev, 0));
    natsMsg_Destroy(msg);

    /* The header block: 65535 with the added header fits, one byte more does not. */
    char headers[70000];
    int value = (int)(65535 - block - line - strlen("X-Big: \r\n"));
    snprintf(headers, sizeof(headers), "{\"X-Big\":\"%0*d\"}", value, 0);
    msg = NULL;
    ck_assert_int_eq(message_build(&msg, "a.b", "evt-1", headers, payload, 1, 0, err, sizeof(err)),
                     MESSAGE_OK);
    ck_assert_uint_eq(message_header_block(msg) + line, 65535);
    ck_assert(message_fits_with_header(msg, fence, prev, 0));
    ck_assert(!message_fits_with_header(msg, fence, "evt-00", 0));
    natsMsg_Destroy(msg);
    free(payload);
}
END_TEST

START_TEST(test_build_max_payload_boundary)
{
    static const struct {
        const char *event_id, *headers;
    } rows[] = {
        {"evt-1", NULL},
        {"evt-1", "{}"},
        {"0b7e2a1c-9f7d-4a1e-8c55-3d0f1e2a4b6c", "{\"a\":\"b\"}"},
        {"k", "{\"x-trace\":[\"1\",\"22\",\"333\"],\"Tenant\":\"acme\"}"},
    };
    const int64_t max_payload = 4096;
    char *payload = calloc(1, (size_t)max_payload + 1);

    for (int i = 0; i < ARRAY_LEN(rows); i++) {
        /* Find the header size from a build without a limit, as nats.c will count it. */
        natsMsg *msg = NULL;
        char err[512];
        ck_assert_int_eq(message_build(&msg, "a.b", rows[i].event_id, rows[i].headers, payload, 1,
                                       0, err, sizeof(err)),
                         MESSAGE_OK);
        size_t hdr = wire_header_bytes(msg);
        natsMsg_Destroy(msg);
        ck_assert_uint_gt(hdr, 12);

        /* exactly at the limit: fine */
        size_t fit = (size_t)max_payload - hdr;
        msg = NULL;
        ck_assert_int_eq(message_build(&msg, "a.b", rows[i].event_id, rows[i].headers, payload, fit,
                                       max_payload, err, sizeof(err)),
                         MESSAGE_OK);
        ck_assert_int_eq(natsMsg_GetDataLength(msg), (int)fit);
        natsMsg_Destroy(msg);

        /* one byte over: permanent, with the arithmetic spelled out */
        msg = NULL;
        ck_assert_int_eq(message_build(&msg, "a.b", rows[i].event_id, rows[i].headers, payload,
                                       fit + 1, max_payload, err, sizeof(err)),
                         MESSAGE_INVALID);
        ck_assert_ptr_null(msg);
        enum publish_reason reason = PUBLISH_NATS_ERROR;
        ck_assert_int_eq(message_build_classified(&msg, "a.b", rows[i].event_id, rows[i].headers,
                                                  payload, fit + 1, max_payload, &reason, err,
                                                  sizeof(err)),
                         MESSAGE_INVALID);
        ck_assert_str_eq(publish_reason_label(reason), "too_large");
        char want[512];
        snprintf(want, sizeof(want),
                 "message too large: %zu bytes (payload %zu + headers %zu) exceeds the server's "
                 "max_payload 4096",
                 (size_t)max_payload + 1, fit + 1, hdr);
        ck_assert_str_eq(err, want);
    }
    free(payload);
}
END_TEST

START_TEST(test_build_too_large_message_text)
{
    /* 12 + Nats-Msg-Id line (51) + one 61-byte header line = 124 bytes of headers */
    const size_t payload_len = 1048576;
    char *payload = calloc(1, payload_len);
    char headers[128];
    snprintf(headers, sizeof(headers), "{\"x-trace\":\"%050d\"}", 0);
    natsMsg *msg = NULL;
    char err[512];
    ck_assert_int_eq(message_build(&msg, "a.b", "0b7e2a1c-9f7d-4a1e-8c55-3d0f1e2a4b6c", headers,
                                   payload, payload_len, 1048576, err, sizeof(err)),
                     MESSAGE_INVALID);
    ck_assert_str_eq(err, "message too large: 1048700 bytes (payload 1048576 + headers 124) "
                          "exceeds the server's max_payload 1048576");
    ck_assert_ptr_null(msg);

    /* 0 = unchecked */
    ck_assert_int_eq(message_build(&msg, "a.b", "0b7e2a1c-9f7d-4a1e-8c55-3d0f1e2a4b6c", headers,
                                   payload, payload_len, 0, err, sizeof(err)),
                     MESSAGE_OK);
    ck_assert_int_eq(natsMsg_GetDataLength(msg), (int)payload_len);
    natsMsg_Destroy(msg);
    free(payload);
}
END_TEST

/* ---- error classification --------------------------------------------- */

/*
 * Written from nats-server 2.9's errors.json / stream.go and nats.c 3.4's
 * status.h, independently of the module's table: every rule of the table
 * must appear here with the same verdict (test_every_rule_has_a_case).
 */
static const struct {
    natsStatus status;
    int js_err_code;
    bool permanent;
    const char *reason;
} error_cases[] = {
    /* the message itself can never be accepted */
    {NATS_MAX_PAYLOAD, 0, true, "too_large"},
    {NATS_INVALID_SUBJECT, 0, true, "invalid_row"},
    {NATS_INVALID_ARG, 0, true, "invalid_row"},
    {NATS_ERR, 10054, true, "too_large"}, /* message size exceeds maximum allowed */
    {NATS_OK, 10054, true, "too_large"},  /* the code decides, whatever the status */
    {NATS_ERR, 10097, true, "too_large"}, /* header size exceeds maximum allowed of 64k */
    {NATS_ERR, 10060, true, "rejected"},  /* expected stream does not match */
    {NATS_ERR, 10070, false, "rejected"}, /* wrong last msg ID: the relay's own fence */
    {NATS_ERR, 10071, true, "rejected"},  /* wrong last sequence */
    {NATS_ERR, 10111, true, "rejected"},  /* rollup not permitted */
    {NATS_ERR, 10109, true, "rejected"},  /* invalid operation on sealed stream */
    /* the network, the server or the stream may come back */
    {NATS_ERR, 10059, false, "no_stream"}, /* stream not found */
    {NATS_NO_RESPONDERS, 0, false, "no_stream"},
    {NATS_TIMEOUT, 0, false, "timeout"},
    {NATS_ERR, 10076, false, "unavailable"}, /* JetStream not enabled */
    {NATS_ERR, 10039, false, "unavailable"}, /* JetStream not enabled for account */
    {NATS_ERR, 10008, false, "unavailable"}, /* JetStream system temporarily unavailable */
    {NATS_ERR, 10009, false, "unavailable"}, /* JetStream cluster can not handle request */
    {NATS_ERR, 10004, false, "unavailable"}, /* incomplete results */
    {NATS_ERR, 10041, false, "unavailable"}, /* RAFT error */
    {NATS_ERR, 10118, false, "unavailable"}, /* stream is offline */
    {NATS_ERR, 10063, false, "unavailable"}, /* expected stream sequence does not match */
    {NATS_ERR, 10023, false, "limits"},      /* insufficient resources */
    {NATS_ERR, 10002, false, "limits"},      /* resource limits exceeded for account */
    {NATS_ERR, 10047, false, "limits"},      /* insufficient storage resources */
    {NATS_ERR, 10028, false, "limits"},      /* insufficient memory resources */
    {NATS_ERR, 10053, false, "limits"},      /* stream limits exceeded */
    {NATS_ERR, 10077, false, "limits"},      /* store failed: max msgs/bytes (discard new) */
    {NATS_CONNECTION_CLOSED, 0, false, "connection"},
    {NATS_CONNECTION_DISCONNECTED, 0, false, "connection"},
    {NATS_NOT_YET_CONNECTED, 0, false, "connection"},
    {NATS_STALE_CONNECTION, 0, false, "connection"},
    {NATS_IO_ERROR, 0, false, "connection"},
    {NATS_NO_SERVER, 0, false, "connection"},
    {NATS_PROTOCOL_ERROR, 0, false, "connection"},
    {NATS_SSL_ERROR, 0, false, "connection"},
    {NATS_CONNECTION_AUTH_FAILED, 0, false, "connection"},
    {NATS_DRAINING, 0, false, "connection"},
    {NATS_INSUFFICIENT_BUFFER, 0, false, "connection"},
    {NATS_NOT_PERMITTED, 0, false, "rejected"},
    {NATS_NO_MEMORY, 0, false, "nats_error"},
    /* unknown: retry, the attempt limit ends it */
    {NATS_ERR, 0, false, "nats_error"},
    {NATS_ERR, 99999, false, "nats_error"},
    {NATS_TIMEOUT, 10014, false, "nats_error"}, /* a code not of a publish: unknown */
    {(natsStatus)9999, 0, false, "nats_error"},
    {NATS_OK, 0, false, "nats_error"},
};

START_TEST(test_error_classification_table)
{
    struct publish_verdict v =
        publish_error_classify(error_cases[_i].status, error_cases[_i].js_err_code);
    ck_assert_msg(v.permanent == error_cases[_i].permanent &&
                      strcmp(publish_reason_label(v.reason), error_cases[_i].reason) == 0,
                  "status %d (%s), js %d: got %s/%s, want %s/%s", error_cases[_i].status,
                  natsStatus_GetText(error_cases[_i].status), error_cases[_i].js_err_code,
                  v.permanent ? "permanent" : "transient", publish_reason_label(v.reason),
                  error_cases[_i].permanent ? "permanent" : "transient", error_cases[_i].reason);
    /* the compatible entry point agrees */
    ck_assert(message_error_is_permanent(error_cases[_i].status, error_cases[_i].js_err_code) ==
              error_cases[_i].permanent);
}
END_TEST

START_TEST(test_every_rule_has_a_case)
{
    size_t n = 0;
    const struct publish_error_rule *rules = publish_error_rules(&n);
    ck_assert_uint_gt(n, 30);
    for (size_t r = 0; r < n; r++) {
        bool found = false;
        for (int c = 0; c < ARRAY_LEN(error_cases) && !found; c++) {
            bool same = rules[r].js_code != 0 ? error_cases[c].js_err_code == rules[r].js_code
                                              : error_cases[c].js_err_code == 0 &&
                                                    error_cases[c].status == rules[r].status;
            if (same) {
                found = true;
                ck_assert_msg(
                    error_cases[c].permanent == rules[r].permanent &&
                        strcmp(error_cases[c].reason, publish_reason_label(rules[r].reason)) == 0,
                    "rule \"%s\" disagrees with its case", rules[r].what);
            }
        }
        ck_assert_msg(found, "rule \"%s\" (status %d, js %d) has no test case", rules[r].what,
                      rules[r].status, rules[r].js_code);
    }
}
END_TEST

START_TEST(test_reason_labels)
{
    /* The fixed label set of the reason= label: snake_case, distinct, never NULL. */
    static const char *const want[PUBLISH_REASONS] = {
        "invalid_row", "too_large", "no_stream", "timeout",    "connection",
        "unavailable", "limits",    "rejected",  "nats_error", "other"};
    for (int i = 0; i < PUBLISH_REASONS; i++)
        ck_assert_str_eq(publish_reason_label((enum publish_reason)i), want[i]);
    ck_assert_str_eq(publish_reason_label((enum publish_reason)PUBLISH_REASONS), "nats_error");
    ck_assert_str_eq(publish_reason_label((enum publish_reason) - 1), "nats_error");
}
END_TEST

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/*
 * Building a row is pure: it does not open the NATS library (nats_Open took
 * a global lock per row, and after a shutdown's nats_CloseAndWait it
 * silently started the library's threads again). The caller opens it once.
 */
START_TEST(test_build_does_not_open_the_library)
{
    const char *fork = getenv("CK_FORK");
    if (fork != NULL && strcmp(fork, "no") == 0)
        return; /* closing the library would disturb the tests that follow */
    ck_assert_int_eq(nats_Open(-1), NATS_OK);
    ck_assert_int_eq(nats_CloseAndWait(5000), NATS_OK);
    int before = thread_count();
    natsMsg *msg = NULL;
    char err[256] = "";
    ck_assert_msg(message_build(&msg, "a.b", "e", NULL, "p", 1, 0, err, sizeof(err)) == MESSAGE_OK,
                  "err: %s", err);
    ck_assert_int_eq(thread_count(), before);
    /* natsMsg_Destroy needs the library: open it again (the count is taken). */
    ck_assert_int_eq(nats_Open(-1), NATS_OK);
    natsMsg_Destroy(msg);
}
END_TEST

/* natsMsg_Destroy needs the library open; per test so it works with and without fork. */
static void nats_setup(void)
{
    ck_assert_int_eq(nats_Open(-1), NATS_OK);
}

static void nats_teardown(void)
{
    nats_CloseAndWait(5000);
}

static Suite *message_suite(void)
{
    Suite *s = suite_create("message");

    TCase *tc = tcase_create("subject");
    tcase_add_loop_test(tc, test_subject_table, 0, ARRAY_LEN(subject_cases));
    tcase_add_test(tc, test_subject_null_and_small_err_buffer);
    tcase_add_test(tc, test_subject_too_long);
    tcase_add_test(tc, test_subject_error_is_valid_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("headers");
    tcase_add_checked_fixture(tc, nats_setup, nats_teardown);
    tcase_add_loop_test(tc, test_headers_table, 0, ARRAY_LEN(header_cases));
    tcase_add_test(tc, test_headers_added_to_message);
    tcase_add_test(tc, test_headers_all_or_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("build");
    tcase_add_checked_fixture(tc, nats_setup, nats_teardown);
    tcase_add_test(tc, test_build_payload_exact_with_nul_bytes);
    tcase_add_test(tc, test_build_empty_payload);
    tcase_add_test(tc, test_build_headers_present);
    tcase_add_test(tc, test_build_rejects_bad_rows);
    tcase_add_test(tc, test_build_event_id_inner_space_kept);
    tcase_add_test(tc, test_build_header_names_nats_confuses);
    tcase_add_test(tc, test_build_header_block_limit);
    tcase_add_test(tc, test_build_max_payload_boundary);
    tcase_add_test(tc, test_fits_with_header_counts_the_added_header);
    tcase_add_test(tc, test_build_too_large_message_text);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_error_classification_table, 0, ARRAY_LEN(error_cases));
    tcase_add_test(tc, test_every_rule_has_a_case);
    tcase_add_test(tc, test_reason_labels);
    suite_add_tcase(s, tc);

    tc = tcase_create("library");
    tcase_add_test(tc, test_build_does_not_open_the_library);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(message_suite());
}
