/* `outbox-relay requeue`: each filter, --dry-run, permanent reasons, while a relay runs. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"
#include "run_suite.h"

#define STREAM "IT_REQUEUE"

/* Runs requeue with args (NULL-terminated after "requeue", "--json"); returns the ids it names. */
static json_t *requeue(int want_rc, const char *const *extra)
{
    const char *args[16] = {"requeue", "--json"};
    int n = 2;
    for (int i = 0; extra[i] != NULL; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    json_t *doc = NULL;
    ck_assert_int_eq(it_relay_cmd(NULL, args, &doc, NULL), want_rc);
    return doc;
}

/* "1,2,3": the ids of doc[key], in order. */
static void ids_of(json_t *doc, const char *key, char *buf, size_t len)
{
    json_t *rows = json_object_get(doc, key);
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < json_array_size(rows) && o < len; i++)
        o += (size_t)snprintf(
            buf + o, len - o, "%s%lld", i ? "," : "",
            (long long)json_integer_value(json_object_get(json_array_get(rows, i), "id")));
}

static void expect(json_t *doc, const char *requeued, const char *skipped)
{
    char got[256];
    ids_of(doc, "rows", got, sizeof(got));
    ck_assert_str_eq(got, requeued);
    ids_of(doc, "skipped", got, sizeof(got));
    ck_assert_str_eq(got, skipped);
    json_decref(doc);
}

START_TEST(test_requeue_filters_dry_run_and_permanent_reasons)
{
    const char *subjects[] = {"it.rq.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    /* ids 1-4: transient reason; 5: no stream; 6, 7: permanent; 8: failed, waiting; 9: pending. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, attempts, last_error)"
                     " SELECT 'it.rq.a.' || g, 'dead', 10, 'no PubAck within 5000 ms'"
                     " FROM generate_series(1, 4) g");
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, status, attempts, last_error) VALUES"
               " ('it.rq.b.x', 'dead', 10, 'no stream is bound to the subject (no responders)'),"
               " ('it.rq.a.*', 'dead', 1, 'invalid subject \"it.rq.a.*\": wildcard token \"*\"'),"
               " ('it.rq.c', 'dead', 1,"
               "  'headers: value of \"X-Count\" is not a string or array of strings')");
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, attempts, next_attempt_at, last_error)"
                     " VALUES ('it.rq.f', 'failed', 3, now() + interval '1 hour',"
                     " 'no PubAck within 5000 ms')");
    it_pg_exec(conn, "INSERT INTO outbox (subject) VALUES ('it.rq.p')");
    it_pg_exec(conn, "UPDATE outbox SET created_at = '2020-01-01' WHERE id = 4");
    it_pg_record_marks(conn);
    /* The relay runs throughout: requeue must be safe next to it. */
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=200", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE id = 9"
                                    " AND status = 'published'",
                                    1, 30000),
                     1);

    /* A filter or --all is required. */
    const char *none[] = {NULL};
    json_decref(requeue(2, none));

    /* --dry-run --all: every dead row but the permanent ones; nothing changes. */
    const char *dry_all[] = {"--dry-run", "--all", NULL};
    json_t *doc = requeue(0, dry_all);
    ck_assert(json_is_true(json_object_get(doc, "dry_run")));
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "would_requeue")), 5);
    expect(doc, "1,2,3,4,5", "6,7");
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"), 7);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM mark_log WHERE id <> 9"), 0);

    char *text = NULL;
    const char *text_args[] = {"requeue", "--dry-run", "--all", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, text_args, NULL, &text), 0);
    ck_assert_ptr_nonnull(strstr(text, "skipped row 6 (permanent, --force to include)"));
    ck_assert_ptr_nonnull(
        strstr(text, "dry run: would requeue 5 rows of outbox; 2 skipped as permanent"));
    free(text);

    /* --created-to, dry: only row 4 is that old. */
    const char *dry_old[] = {"--dry-run", "--created-to", "2021-01-01", NULL};
    expect(requeue(0, dry_old), "4", "");
    /* --error-match, dry, case-insensitive. */
    const char *dry_match[] = {"--dry-run", "--error-match=NO RESPONDERS", NULL};
    expect(requeue(0, dry_match), "5", "");

    /* --ids. */
    const char *by_ids[] = {"--ids", "1,2", NULL};
    expect(requeue(0, by_ids), "1,2", "");
    /* --subject, NATS wildcard: it.rq.a.* is one token; row 6's reason is permanent. */
    const char *by_subject[] = {"--subject", "it.rq.a.*", NULL};
    expect(requeue(0, by_subject), "3,4", "6");
    /* --subject with % is SQL LIKE. */
    const char *by_like[] = {"--subject=it.rq.b%", NULL};
    expect(requeue(0, by_like), "5", "");
    /* A failed row only with --include-failed. */
    const char *failed_no[] = {"--subject", "it.rq.f", NULL};
    expect(requeue(0, failed_no), "", "");
    const char *failed_yes[] = {"--subject", "it.rq.f", "--include-failed", NULL};
    expect(requeue(0, failed_yes), "8", "");
    /* --id-range over a permanent row: skipped; --force takes it. */
    const char *range[] = {"--id-range", "6-7", NULL};
    expect(requeue(0, range), "", "6,7");
    const char *forced[] = {"--id-range", "6-6", "--force", NULL};
    expect(requeue(0, forced), "6", "");
    const char *bad_range[] = {"--id-range", "9-2", NULL};
    json_decref(requeue(2, bad_range));

    /* The relay woke up and published every requeued row; row 6 (still invalid) died again
     * at once, row 7 was never touched. */
    ck_assert_int_eq(
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'", 7, 30000),
        7);
    ck_assert_int_eq(
        it_pg_wait_int(conn, "SELECT count(*) FROM mark_log WHERE id = 6 AND status = 'dead'", 1,
                       30000),
        1);
    PGresult *status6 = it_pg_query(conn, "SELECT status FROM outbox WHERE id = 6");
    ck_assert_str_eq(PQgetvalue(status6, 0, 0), "dead");
    PQclear(status6);
    ck_assert_int_eq(it_pg_int(conn, "SELECT attempts FROM outbox WHERE id = 6"), 1);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM mark_log WHERE id = 7"), 0);
    ck_assert_int_eq(it_pg_int(conn, "SELECT attempts FROM outbox WHERE id = 7"), 1);
    struct it_msgs msgs;
    it_js_read_stream_once(STREAM, 7, &msgs);
    it_msgs_free(&msgs);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * The old flag still works, as requeue --all: every dead row but a permanent
 * one, which would only die again.
 */
START_TEST(test_requeue_dead_flag_is_requeue_all)
{
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, status, last_error) VALUES"
                     " ('a.b', 'dead', 'x'), ('a.c', 'dead', 'invalid subject')");
    json_t *doc = NULL;
    const char *args[] = {"--requeue-dead", "--json", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, &doc, NULL), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "requeued")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "skipped_permanent")), 1);
    json_decref(doc);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'"
                                     " AND subject = 'a.b'"),
                     1);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"
                                     " AND subject = 'a.c'"),
                     1);
    PQfinish(conn);
}
END_TEST

/*
 * With OUTBOX_DEAD_HOLDS_KEY=true the rows behind a dead row wait; once it is
 * requeued they must still follow it, never overtake it.
 */
START_TEST(test_requeued_row_keeps_its_place_in_its_key)
{
    const char *subjects[] = {"it.rk.>", NULL};
    it_js_add_stream("IT_REQUEUE_KEY", subjects);
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_DEAD_HOLDS_KEY=true", "OUTBOX_POLL_INTERVAL_MS=5000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert(it_pg_wait_int(conn,
                             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                             " AND granted AND classid = " OUTBOX_CLASS_SQL(OUTBOX_LOCK_CLASS),
                             1, 15000) == 1);
    /* The dead row first, then rows that move the relay's scan past it, then its key's rows. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, ordering_key, status, attempts, last_error)"
                     " VALUES ('it.rk.k', 'kk', 'dead', 10, 'no PubAck within 5000 ms')");
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.rk.other',"
                     " convert_to(g::text, 'UTF8') FROM generate_series(1, 20) g");
    ck_assert_int_eq(it_pg_wait_published(conn, 20, 30000), 20);
    it_pg_exec(conn, "INSERT INTO outbox (subject, ordering_key, payload) SELECT 'it.rk.k', 'kk',"
                     " convert_to(g::text, 'UTF8') FROM generate_series(1, 5) g");
    /* Held: nothing of kk goes out while its first row is dead. */
    int64_t moved = it_pg_wait_int(conn,
                                   "SELECT count(*) FROM outbox WHERE ordering_key = 'kk'"
                                   " AND status = 'published'",
                                   1, 1500);
    ck_assert_int_eq(moved, 0);
    const char *args[] = {"requeue", "--ids", "1", NULL};
    ck_assert_int_eq(it_relay_cmd(NULL, args, NULL, NULL), 0);
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE ordering_key = 'kk'"
                                    " AND status = 'published'",
                                    6, 30000),
                     6);
    /* Stream order of key kk = id order. */
    int64_t disorder =
        it_pg_int(conn, "SELECT count(*) FROM (SELECT id, stream_seq, lag(stream_seq)"
                        " OVER (ORDER BY id) AS prev FROM outbox WHERE ordering_key"
                        " = 'kk') s WHERE stream_seq < prev");
    ck_assert_int_eq(
        it_pg_int(conn, "SELECT min(stream_seq) FROM outbox WHERE ordering_key = 'kk'"),
        it_pg_int(conn, "SELECT stream_seq FROM outbox WHERE id = 1"));
    ck_assert_int_eq(disorder, 0);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("cmd_requeue");
    TCase *tc = it_tcase(suite, "cmd_requeue", it_start_servers, 120);
    tcase_add_test(tc, test_requeue_filters_dry_run_and_permanent_reasons);
    tcase_add_test(tc, test_requeue_dead_flag_is_requeue_all);
    tcase_add_test(tc, test_requeued_row_keeps_its_place_in_its_key);
    return run_suite(suite);
}
