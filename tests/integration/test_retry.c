/* Retries: a subject without a stream fails with backoff (jitter bounds checked), then goes dead.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define BASE_MS 200
/* Never: a retry found by the fallback poll would hide a retry timer that fires too early. */
#define POLL_MS 600000

/* On a failure: what the relay wrote, mark by mark. */
static void dump_marks(PGconn *conn)
{
    PGresult *res = it_pg_query(conn, "SELECT id, status, attempts, next_attempt_at, at, last_error"
                                      " FROM mark_log ORDER BY at");
    for (int i = 0; i < PQntuples(res); i++)
        fprintf(stderr, "mark_log: id %s %s attempts %s next %s at %s: %s\n", PQgetvalue(res, i, 0),
                PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
    PQclear(res);
}

/* The backoff bound d for the retry after `attempt` failures: base * 2^(attempt-1). */
static double backoff_d(int attempt)
{
    return (double)BASE_MS * (double)(1 << (attempt - 1));
}

START_TEST(test_no_stream_backs_off_then_dead)
{
    PGconn *conn = it_pg_connect();
    /* The spacing of attempts is measured where it is decided, not by polling with its slack. */
    it_pg_record_marks(conn);
    /* No stream listens on it.retry.*: every publish gets "no responders". */
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key)"
                     " SELECT 'it.retry.nostream', convert_to(g::text, 'UTF8'),"
                     "        CASE WHEN g = 1 THEN 'key-a' END"
                     " FROM generate_series(1, 5) g");
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=200",       "OUTBOX_RETRY_MAX_MS=60000",
                         "OUTBOX_MAX_ATTEMPTS=4",          "OUTBOX_POLL_INTERVAL_MS=600000",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=2000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* Worst case 200 + 400 + 800 ms of backoff, plus start-up. */
    int64_t dead =
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'", 5, 20000);
    if (dead != 5) {
        it_relay_dump_log(relay);
        dump_marks(conn);
    }
    ck_assert_msg(dead == 5,
                  "%lld of 5 rows dead (poll interval %d ms: retries must come from "
                  "the retry timer)",
                  (long long)dead, POLL_MS);

    /* Final state: the limit, a readable reason, no retry scheduled, nothing in any stream. */
    PGresult *rows = it_pg_query(conn, "SELECT id, attempts, last_error, next_attempt_at IS NULL,"
                                       " published_at IS NULL AND stream_seq IS NULL"
                                       " FROM outbox ORDER BY id");
    for (int i = 0; i < PQntuples(rows); i++) {
        const char *id = PQgetvalue(rows, i, 0), *error = PQgetvalue(rows, i, 2);
        ck_assert_msg(atoi(PQgetvalue(rows, i, 1)) == 4, "row %s: %s attempts, want 4", id,
                      PQgetvalue(rows, i, 1));
        ck_assert_msg(strstr(error, "no stream") != NULL && strstr(error, "no responders") != NULL,
                      "row %s: last_error \"%s\" does not say that no stream took the subject", id,
                      error);
        ck_assert_str_eq(PQgetvalue(rows, i, 3), "t");
        ck_assert_str_eq(PQgetvalue(rows, i, 4), "t");
    }
    PQclear(rows);

    /*
     * Each row's marks in order: failed with attempts 1, 2, 3, then dead
     * with 4. A failed mark's next_attempt_at lies d/2..d after the clock
     * the mark read (equal jitter). That clock read lies between the
     * UPDATE's arrival (statement_at) and the trigger's clock (at), however
     * long a loaded machine takes in between: next_attempt_at - statement_at
     * is at least the delay chosen, next_attempt_at - at at most. The next
     * attempt is claimed once that time has passed, never before; that it
     * comes from the retry timer, not the poll, the deadline above shows.
     */
    PGresult *marks = it_pg_query(
        conn, "SELECT id, status, attempts,"
              " extract(epoch FROM next_attempt_at - statement_at) * 1000,"
              " extract(epoch FROM next_attempt_at - at) * 1000,"
              " extract(epoch FROM at - lag(next_attempt_at) OVER w) * 1000"
              " FROM mark_log WINDOW w AS (PARTITION BY id ORDER BY at) ORDER BY id, at");
    ck_assert_int_eq(PQntuples(marks), 5 * 4);
    double min_ratio = 1, max_ratio = 0;
    for (int i = 0; i < PQntuples(marks); i++) {
        const char *id = PQgetvalue(marks, i, 0), *status = PQgetvalue(marks, i, 1);
        int attempts = atoi(PQgetvalue(marks, i, 2));
        ck_assert_msg(attempts == i % 4 + 1, "row %s: mark #%d has attempts %d", id, i % 4 + 1,
                      attempts);
        ck_assert_str_eq(status, attempts < 4 ? "failed" : "dead");
        if (attempts < 4) {
            double at_most = strtod(PQgetvalue(marks, i, 3), NULL);
            double at_least = strtod(PQgetvalue(marks, i, 4), NULL), d = backoff_d(attempts);
            fprintf(stderr,
                    "retry: row %s attempt %d: next try %.1f..%.1f ms later (bounds %.0f..%.0f)\n",
                    id, attempts, at_least, at_most, d / 2, d);
            ck_assert_msg(at_most >= d / 2,
                          "row %s attempt %d: retry at most %.1f ms later, under d/2 = %.0f", id,
                          attempts, at_most, d / 2);
            ck_assert_msg(at_least <= d,
                          "row %s attempt %d: retry at least %.1f ms later, over d = %.0f", id,
                          attempts, at_least, d);
            min_ratio = at_least / d < min_ratio ? at_least / d : min_ratio;
            max_ratio = at_least / d > max_ratio ? at_least / d : max_ratio;
        }
        if (attempts > 1) {
            double late = strtod(PQgetvalue(marks, i, 5), NULL);
            fprintf(stderr, "retry: row %s attempt %d: tried %.1f ms after it was due\n", id,
                    attempts, late);
            ck_assert_msg(late >= 0, "row %s attempt %d: tried %.1f ms before it was due", id,
                          attempts, -late);
        }
    }
    /* 15 draws of the jitter are not all the same point of the range. */
    ck_assert_msg(max_ratio - min_ratio > 0.01, "no jitter: every delay at %.3f of d", min_ratio);
    PQclear(marks);

    ck_assert_msg(!it_js_stream_exists("IT_RETRY"), "a stream appeared from nowhere");
    ck_assert_msg(it_relay_logged(relay, LOG_MSG_ROW_DEAD), "the dead rows were not logged");
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* Rows that failed at least twice: a retry happened, with more to come before the limit. */
static bool failed_twice(void *conn)
{
    return it_pg_int(conn, "SELECT count(DISTINCT id) FROM mark_log"
                           " WHERE status = 'failed' AND attempts >= 2") == 2;
}

START_TEST(test_stream_created_before_limit_publishes)
{
    PGconn *conn = it_pg_connect();
    it_pg_record_marks(conn);
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key)"
                     " VALUES ('it.retry.late.a', 'one', NULL), ('it.retry.late.b', 'two', 'k'),"
                     "        ('it.retry.late.b', 'three', 'k')");
    /* Six attempts: 200 + 400 + 800 + 1600 + 3200 ms at most before dead. */
    const char *env[] = {"OUTBOX_RETRY_BASE_MS=200", "OUTBOX_RETRY_MAX_MS=60000",
                         "OUTBOX_MAX_ATTEMPTS=6", "OUTBOX_POLL_INTERVAL_MS=600000", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    /* Row 3 waits behind row 2 (same key) and is never tried while row 2 fails. */
    if (!it_wait_until(failed_twice, conn, 15000)) {
        dump_marks(conn);
        ck_abort_msg("rows did not fail twice in 15 s");
    }
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'pending'"), 1);
    int64_t attempts_before = it_pg_int(conn, "SELECT max(attempts) FROM outbox");
    ck_assert_int_lt(attempts_before, 6);

    const char *subjects[] = {"it.retry.late.>", NULL};
    it_js_add_stream("IT_RETRY_LATE", subjects);

    int64_t published = it_pg_wait_published(conn, 3, 15000);
    if (published != 3)
        it_relay_dump_log(relay);
    ck_assert_msg(published == 3, "%lld of 3 rows published after the stream appeared",
                  (long long)published);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM mark_log WHERE status = 'dead'"), 0);
    /* Retried, not dead: attempts count the failures plus the publish. */
    ck_assert_int_ge(it_pg_int(conn, "SELECT min(attempts) FROM outbox WHERE id < 3"), 3);
    ck_assert_int_le(it_pg_int(conn, "SELECT max(attempts) FROM outbox"), 6);
    ck_assert_int_eq(it_pg_int(conn, "SELECT attempts FROM outbox WHERE id = 3"), 1);

    struct it_msgs msgs;
    it_js_read_stream_once("IT_RETRY_LATE", 3, &msgs);
    PGresult *rows = it_pg_query(conn, "SELECT event_id, stream_seq, encode(payload, 'escape')"
                                       " FROM outbox ORDER BY id");
    uint64_t key_seq[2] = {0};
    for (int i = 0; i < 3; i++) {
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 0));
        ck_assert_msg(m != NULL, "row %d has no message", i + 1);
        ck_assert_uint_eq(m->seq, strtoull(PQgetvalue(rows, i, 1), NULL, 10));
        ck_assert_int_eq(m->len, (int)strlen(PQgetvalue(rows, i, 2)));
        ck_assert(memcmp(m->data, PQgetvalue(rows, i, 2), (size_t)m->len) == 0);
        if (i > 0)
            key_seq[i - 1] = m->seq;
    }
    ck_assert_msg(key_seq[0] < key_seq[1], "key k: row 3 (seq %llu) before row 2 (seq %llu)",
                  (unsigned long long)key_seq[1], (unsigned long long)key_seq[0]);
    PQclear(rows);
    it_msgs_free(&msgs);

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("retry");
    TCase *tc = it_tcase(suite, "retry", it_start_servers, 120);
    tcase_add_test(tc, test_no_stream_backs_off_then_dead);
    tcase_add_test(tc, test_stream_created_before_limit_publishes);
    return run_suite(suite);
}
