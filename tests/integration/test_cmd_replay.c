/* `outbox-relay replay`: inside the duplicate window (dropped, or stored with --fresh-id) and past
 * it. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define LONG_STREAM  "IT_REPLAY_LONG"  /* duplicate window 2 min */
#define SHORT_STREAM "IT_REPLAY_SHORT" /* duplicate window 1 s */

static void add_stream(const char *name, const char *subject, int64_t window_ns)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Duplicates = window_ns;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(NULL, it_js(), &sc, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "add stream %s: %s (%d)", name, natsStatus_GetText(s), (int)jerr);
}

static int64_t count(json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(doc, key));
}

static bool short_window_passed(void *conn)
{
    return it_pg_int(conn, "SELECT (now() > max(published_at) + interval '1.5 seconds')::int"
                           " FROM outbox WHERE subject LIKE 'it.replay.short.%%'") == 1;
}

static const char *header(const struct it_msg *m, const char *key)
{
    const struct it_header *h = it_msg_header(m, key);
    return h && h->nvalues > 0 ? h->values[0] : NULL;
}

START_TEST(test_replay_inside_and_past_the_duplicate_window)
{
    add_stream(LONG_STREAM, "it.replay.long.>", 120LL * 1000000000);
    add_stream(SHORT_STREAM, "it.replay.short.>", 1000000000LL);
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, headers, ordering_key)"
                     " SELECT 'it.replay.long.' || g, convert_to('long ' || g, 'UTF8'),"
                     " '{\"X-N\": \"n\"}', 'k' FROM generate_series(1, 3) g");
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.replay.short.' || g,"
                     " convert_to('short ' || g, 'UTF8') FROM generate_series(1, 3) g");
    struct it_relay *relay = it_relay_start(NULL, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, 6, 30000), 6);
    it_relay_stop(relay);
    PGresult *before_res = it_pg_query(conn, "SELECT string_agg(id || status || stream_seq, ','"
                                             " ORDER BY id) FROM outbox");
    char *before = strdup(PQgetvalue(before_res, 0, 0));
    PQclear(before_res);

    /* Inside the window, same Nats-Msg-Id: JetStream acks each as a duplicate, stores nothing. */
    json_t *doc = NULL;
    const char *same[] = {"replay", "--json", "--ids", "1,2,3", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, same, &doc, NULL), 0);
    ck_assert_int_eq(count(doc, "duplicates"), 3);
    ck_assert_int_eq(count(doc, "stored"), 0);
    json_decref(doc);
    ck_assert_int_eq(it_js_stream_msgs(LONG_STREAM), 3);

    /* --fresh-id: stored as new messages, the original id in a header. */
    const char *fresh[] = {"replay", "--json", "--fresh-id", "--id-range", "1-3", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, fresh, &doc, NULL), 0);
    ck_assert_int_eq(count(doc, "stored"), 3);
    ck_assert_int_eq(count(doc, "duplicates"), 0);
    json_decref(doc);
    struct it_msgs msgs;
    it_js_read_stream(LONG_STREAM, &msgs);
    ck_assert_int_eq(msgs.count, 6);
    PGresult *rows = it_pg_query(conn, "SELECT event_id, subject, convert_from(payload, 'UTF8')"
                                       " FROM outbox WHERE id <= 3 ORDER BY id");
    for (int i = 0; i < 3; i++) {
        const struct it_msg *orig = &msgs.msgs[i], *copy = &msgs.msgs[3 + i];
        ck_assert_str_eq(orig->msg_id, PQgetvalue(rows, i, 0));
        ck_assert_ptr_null(header(orig, "Outbox-Replay"));
        ck_assert_str_ne(copy->msg_id, PQgetvalue(rows, i, 0));
        ck_assert_str_eq(header(copy, "Outbox-Original-Msg-Id"), PQgetvalue(rows, i, 0));
        ck_assert_str_eq(header(copy, "Outbox-Replay"), "true");
        ck_assert_str_eq(header(copy, "X-N"), "n");
        ck_assert_str_eq(copy->subject, PQgetvalue(rows, i, 1));
        ck_assert_int_eq(copy->len, (int)strlen(PQgetvalue(rows, i, 2)));
        ck_assert(memcmp(copy->data, PQgetvalue(rows, i, 2), (size_t)copy->len) == 0);
    }
    PQclear(rows);
    it_msgs_free(&msgs);

    /* Past the window the same Nats-Msg-Id is stored again: a consumer sees it twice. */
    ck_assert(it_wait_until(short_window_passed, conn, 10000));
    char *text = NULL;
    const char *past[] = {"replay", "--id-range", "4-6", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, past, NULL, &text), 0);
    ck_assert_ptr_nonnull(strstr(text, "3 stored as new messages, 0 dropped as duplicates"));
    free(text);
    it_js_read_stream(SHORT_STREAM, &msgs);
    ck_assert_int_eq(msgs.count, 6);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 3);
    ck_assert_str_eq(header(&msgs.msgs[5], "Outbox-Replay"), "true");
    it_msgs_free(&msgs);

    /* The rows were not changed: status and stream_seq still name the originals. */
    PGresult *after_res = it_pg_query(conn, "SELECT string_agg(id || status || stream_seq, ','"
                                            " ORDER BY id) FROM outbox");
    char *after = strdup(PQgetvalue(after_res, 0, 0));
    PQclear(after_res);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);

    /*
     * Only published rows are replayed: a selected row that is not is listed
     * as skipped, and the command exits 1 (it did not do what was asked); so
     * does a selection that matches no row.
     */
    it_pg_exec(conn, "INSERT INTO outbox (subject, status) VALUES ('it.replay.long.x', 'dead')");
    const char *dead[] = {"replay", "--json", "--ids", "7", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, dead, &doc, NULL), 1);
    ck_assert_int_eq(count(doc, "rows"), 0);
    ck_assert_int_eq(count(doc, "skipped"), 1);
    json_t *skip = json_array_get(json_object_get(doc, "outcomes"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(skip, "outcome")), "skipped");
    json_decref(doc);
    const char *missing[] = {"replay", "--ids", "999", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, missing, NULL, NULL), 1);
    /* A timestamp PostgreSQL cannot read is a usage error (2), not a lost connection (3). */
    const char *bad_from[] = {"replay", "--created-from", "yesterday-ish", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, bad_from, NULL, NULL), 2);
    const char *dry[] = {"replay", "--dry-run", "--ids", "1", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, dry, NULL, NULL), 0);
    ck_assert_int_eq(it_js_stream_msgs(LONG_STREAM), 6);
    const char *none[] = {"replay", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, none, NULL, NULL), 2);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cmd_replay");
    TCase *tc = it_tcase(suite, "cmd_replay", it_start_servers, 120);
    tcase_add_test(tc, test_replay_inside_and_past_the_duplicate_window);
    return run_suite(suite);
}
