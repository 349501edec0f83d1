/* `outbox-relay audit`: published rows against the stream: ok, missing, mismatch, retention. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM       "IT_AUDIT"
#define SMALL_STREAM "IT_AUDIT_SMALL" /* max_msgs 5: the oldest go by the stream's retention */
#define ROWS         20
#define SMALL_ROWS   10

static int64_t count(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);
    ck_assert_msg(json_is_integer(v), "%s missing", key);
    return json_integer_value(v);
}

/* The verdict audit gave row id, or NULL when it reported none (ok). */
static const char *verdict_of(json_t *doc, int64_t id)
{
    json_t *p = json_object_get(doc, "problems");
    for (size_t i = 0; i < json_array_size(p); i++)
        if (json_integer_value(json_object_get(json_array_get(p, i), "id")) == id)
            return json_string_value(json_object_get(json_array_get(p, i), "verdict"));
    return NULL;
}

START_TEST(test_audit_finds_missing_mismatched_and_retention)
{
    const char *subjects[] = {"it.audit.>", NULL};
    it_js_add_stream(STREAM, subjects);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *small_subjects[] = {"it.small.>"};
    sc.Name = SMALL_STREAM;
    sc.Subjects = small_subjects;
    sc.SubjectsLen = 1;
    sc.MaxMsgs = 5; /* discard old */
    ck_assert_int_eq(js_AddStream(NULL, it_js(), &sc, NULL, NULL), NATS_OK);

    PGconn *conn = it_pg_connect();
    it_pg_exec(
        conn,
        "INSERT INTO outbox (subject, payload, headers) SELECT 'it.audit.' || g,"
        " convert_to(repeat('p', g), 'UTF8'), '{\"X-N\": \"1\"}' FROM generate_series(1, %d) g",
        ROWS);
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.small.' || g,"
               " convert_to(g::text, 'UTF8') FROM generate_series(1, %d) g",
               SMALL_ROWS);
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, ROWS + SMALL_ROWS, 30000), ROWS + SMALL_ROWS);
    it_relay_stop(relay);

    /* Everything as published: all ok except the 5 oldest of the small stream, which its
     * max_msgs removed: reported as such, and not a failure. */
    json_t *doc = NULL;
    const char *all[] = {"audit", "--json", "--id-range", "1-1000", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, all, &doc, NULL), 0);
    ck_assert_int_eq(count(doc, "checked"), ROWS + SMALL_ROWS);
    ck_assert_int_eq(count(doc, "ok"), ROWS + SMALL_ROWS - 5);
    ck_assert_int_eq(count(doc, "removed_by_retention"), 5);
    ck_assert_int_eq(count(doc, "missing") + count(doc, "mismatch"), 0);
    ck_assert_str_eq(verdict_of(doc, ROWS + 1), "removed_by_retention");
    ck_assert_ptr_null(verdict_of(doc, ROWS + 6));
    json_decref(doc);

    /* A message deleted from the stream (not the first: that would move the first seq),
     * a row whose payload and one whose event_id no longer match their message. */
    int64_t seq10 = it_pg_int(conn, "SELECT stream_seq FROM outbox WHERE id = 10");
    ck_assert_int_eq(js_DeleteMsg(it_js(), STREAM, (uint64_t)seq10, NULL, NULL), NATS_OK);
    it_pg_exec(conn, "UPDATE outbox SET payload = 'changed' WHERE id = 5");
    it_pg_exec(conn, "UPDATE outbox SET event_id = 'other' WHERE id = 7");
    ck_assert_int_eq(it_relay_cmd(NULL, all, &doc, NULL), 1);
    ck_assert_int_eq(count(doc, "missing"), 1);
    ck_assert_int_eq(count(doc, "mismatch"), 2);
    ck_assert_int_eq(count(doc, "removed_by_retention"), 5);
    ck_assert_str_eq(verdict_of(doc, 10), "missing");
    ck_assert_str_eq(verdict_of(doc, 5), "mismatch");
    ck_assert_str_eq(verdict_of(doc, 7), "mismatch");
    json_decref(doc);

    /*
     * Text form, and OUTBOX_STREAM naming the stream instead of the lookup by
     * subject; audit creates no stream, so it needs no OUTBOX_STREAM_SUBJECTS.
     */
    char *text = NULL;
    const char *env[] = {"OUTBOX_STREAM=" STREAM, NULL};
    const char *some[] = {"audit", "--ids", "4,5,10,11", NULL};
    ck_assert_int_eq(it_relay_cmd(env, some, NULL, &text), 1);
    ck_assert_ptr_nonnull(strstr(text, "audited 4 published rows: 2 ok, 1 missing, 1 mismatch"));
    ck_assert_ptr_nonnull(strstr(text, "payload differs"));
    free(text);

    /* A random sample of the clean rows. */
    const char *sample[] = {"audit", "--json", "--sample", "6", "--id-range", "11-20", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, sample, &doc, NULL), 0);
    ck_assert_int_eq(count(doc, "checked"), 6);
    ck_assert_int_eq(count(doc, "ok"), 6);
    json_decref(doc);

    /* Usage: no selection. */
    const char *none[] = {"audit", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, none, NULL, NULL), 2);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cmd_audit");
    TCase *tc = it_tcase(suite, "cmd_audit", it_start_servers, 120);
    tcase_add_test(tc, test_audit_finds_missing_mismatched_and_retention);
    return run_suite(suite);
}
