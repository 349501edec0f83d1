/* `outbox-relay status`: its figures against the table, the leader and standby it names. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"
#include "run_suite.h"

#define STREAM    "IT_STATUS"
#define PUBLISHED 300

static int64_t jint(json_t *obj, const char *path1, const char *path2)
{
    json_t *v = json_object_get(obj, path1);
    if (path2 != NULL)
        v = json_object_get(v, path2);
    ck_assert_msg(json_is_integer(v), "%s.%s is not an integer", path1, path2 ? path2 : "");
    return json_integer_value(v);
}

static bool two_relay_sessions(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM pg_stat_activity"
                           " WHERE application_name = 'outbox-relay'") == 2 &&
           it_pg_relay_lock_holders(conn) == 1;
}

START_TEST(test_status_reports_the_table_and_the_relays)
{
    const char *subjects[] = {"it.status.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    /* Dead rows of two reasons, a failed row holding key k1 with three rows behind it. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, attempts, last_error)"
                     " SELECT 'it.status.dead.' || g, 'dead', 1,"
                     "        CASE WHEN g <= 3 THEN 'invalid subject \"x.*\": wildcard token \"*\"'"
                     "             ELSE 'no PubAck within 5000 ms' END"
                     " FROM generate_series(1, 5) g");
    it_pg_exec(conn, "INSERT INTO outbox (subject, ordering_key, status, attempts,"
                     " next_attempt_at, last_error) VALUES ('it.status.held', 'k1', 'failed', 2,"
                     " now() + interval '1 hour', 'no stream is bound to the subject')");
    it_pg_exec(conn, "INSERT INTO outbox (subject, ordering_key)"
                     " SELECT 'it.status.k1', 'k1' FROM generate_series(1, 3)");
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.status.ok',"
               " convert_to(g::text, 'UTF8') FROM generate_series(1, %d) g",
               PUBLISHED);
    struct it_relay *a = it_relay_start(NULL, NULL);
    ck_assert_int_eq(it_pg_wait_published(conn, PUBLISHED, 30000), PUBLISHED);
    struct it_relay *b = it_relay_start(NULL, NULL);
    ck_assert_msg(it_wait_until(two_relay_sessions, conn, 15000), "no leader and standby");

    json_t *doc = NULL;
    const char *args[] = {"status", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, &doc, NULL), 0);
    ck_assert_ptr_nonnull(doc);

    /* Counts, against the table. */
    static const char *const statuses[] = {"pending", "failed", "dead", "published"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(
            jint(doc, "counts", statuses[i]),
            it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = '%s'", statuses[i]));
    ck_assert_int_eq(jint(doc, "counts", "dead"), 5);
    ck_assert_int_eq(jint(doc, "counts", "pending"), 3);
    ck_assert_int_eq(jint(doc, "counts", "total"), it_pg_int(conn, "SELECT count(*) FROM outbox"));

    /* The oldest unfinished row is the failed one (lowest unfinished id). */
    ck_assert_int_eq(jint(doc, "oldest_unfinished", "id"),
                     it_pg_int(conn, "SELECT id FROM outbox WHERE status = 'failed'"));
    ck_assert(
        json_real_value(json_object_get(json_object_get(doc, "oldest_unfinished"), "age_s")) >= 0);

    /* Dead rows by reason: 3 + 2, with their id ranges and a sample subject. */
    json_t *dead = json_object_get(doc, "dead_by_reason");
    ck_assert_int_eq(json_array_size(dead), 2);
    json_t *first = json_array_get(dead, 0);
    ck_assert_int_eq(jint(first, "count", NULL), 3);
    ck_assert_int_eq(
        jint(first, "first_id", NULL),
        it_pg_int(conn, "SELECT min(id) FROM outbox WHERE last_error LIKE 'invalid%%'"));
    ck_assert_int_eq(
        jint(first, "last_id", NULL),
        it_pg_int(conn, "SELECT max(id) FROM outbox WHERE last_error LIKE 'invalid%%'"));
    ck_assert_str_eq(json_string_value(json_object_get(first, "sample_subject")),
                     "it.status.dead.1");
    ck_assert_int_eq(jint(json_array_get(dead, 1), "count", NULL), 2);

    /* Key k1 is held by the failed row, three rows behind it. */
    json_t *held = json_object_get(doc, "held_keys");
    ck_assert_int_eq(json_array_size(held), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(held, 0), "ordering_key")),
                     "k1");
    ck_assert_int_eq(jint(json_array_get(held, 0), "waiting", NULL), 3);

    /* The leader is the session holding the lock; the other relay is the standby. */
    int64_t leader_pid =
        it_pg_int(conn, "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a"
                        " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                        " AND l.classid = " OUTBOX_CLASS_SQL(
                            OUTBOX_LOCK_CLASS) " AND a.application_name = 'outbox-relay'");
    ck_assert_int_eq(jint(doc, "leader", "pid"), leader_pid);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(doc, "leader"), "client_addr")),
        "127.0.0.1");
    json_t *standbys = json_object_get(doc, "standbys");
    ck_assert_int_eq(json_array_size(standbys), 1);
    ck_assert_int_ne(jint(json_array_get(standbys, 0), "pid", NULL), leader_pid);
    json_decref(doc);

    /* The text form says the same in words. */
    char *text = NULL;
    const char *text_args[] = {"status", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, text_args, NULL, &text), 0);
    ck_assert_ptr_nonnull(strstr(text, "rows: 3 pending, 1 failed, 5 dead, 300 published"));
    ck_assert_ptr_nonnull(strstr(text, "key k1: row"));
    ck_assert_ptr_nonnull(strstr(text, "leader:  pid"));
    ck_assert_ptr_nonnull(strstr(text, "standby: pid"));
    free(text);

    it_relay_stop(b);
    it_relay_stop(a);
    PQfinish(conn);
}
END_TEST

START_TEST(test_status_exit_codes)
{
    /* 3: PostgreSQL unreachable (a closed port). */
    char url[128];
    snprintf(url, sizeof(url),
             "OUTBOX_PG_URL=postgresql://postgres@127.0.0.1:%d/x?connect_timeout=2",
             it_free_port());
    const char *env[] = {url, NULL};
    const char *args[] = {"status", NULL};
    ck_assert_int_eq(it_relay_cmd(env, args, NULL, NULL), 3);
    /* 2: a bad setting or flag. */
    const char *bad_setting[] = {"status", "--batch-size=x", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, bad_setting, NULL, NULL), 2);
    const char *bad_flag[] = {"status", "--limit=0", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, bad_flag, NULL, NULL), 2);
    /* An empty table: all zero, no leader. */
    json_t *doc = NULL;
    const char *json_args[] = {"status", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, json_args, &doc, NULL), 0);
    ck_assert_int_eq(jint(doc, "counts", "total"), 0);
    ck_assert(json_is_null(json_object_get(doc, "leader")));
    ck_assert(json_is_null(json_object_get(doc, "oldest_unfinished")));
    json_decref(doc);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cmd_status");
    TCase *tc = it_tcase(suite, "cmd_status", it_start_servers, 120);
    tcase_add_test(tc, test_status_reports_the_table_and_the_relays);
    tcase_add_test(tc, test_status_exit_codes);
    return run_suite(suite);
}
