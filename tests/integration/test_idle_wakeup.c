/* Wake-up after idling (issue 11 §1): with the poll a minute away, a single row inserted after a
 * burst and an idle spell is published on the wake-up path alone. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "outbox_relay/pg/wakeup.h"
#include "run_suite.h"

#define STREAM "IT_IDLE"
/* Only a wake-up (NOTIFY, or whatever replaces it) can publish a row before this. */
#define POLL_MS "60000"
/* Far below the poll interval: proves the wake-up path, not a latency goal (the bench has that). */
#define WAKE_DEADLINE_MS 5000
#define IDLE_SECONDS     "3"
#define ROUNDS           3

/*
 * The relay is asleep: it holds its sleep lock (class 1869574266, key the
 * table's oid), so producers notify, and it polls nothing but the fallback
 * poll a minute away. Its session (the leader heartbeat aside) is idle. A
 * relay that polls adaptively after work has had time to fall back to
 * sleep; only a NOTIFY can find the next row in time.
 */
static bool relay_asleep(void *arg)
{
    return it_pg_int(arg, "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a"
                          " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                          " AND l.classid = 1869574266 AND l.objid = 'outbox'::regclass::oid"
                          " AND a.application_name = 'outbox-relay' AND a.state = 'idle'"
                          " AND a.state_change < clock_timestamp() - interval '0.5 s'") == 1;
}

/* The relay holds its sleep lock: from now on, producers notify. */
static bool relay_holds_sleep_lock(void *arg)
{
    return it_pg_int(arg, "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a"
                          " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                          " AND l.classid = 1869574266 AND l.objid = 'outbox'::regclass::oid"
                          " AND a.application_name = 'outbox-relay'") == 1;
}

/* Inserts one row and returns how long it took to be published (fails past the deadline). */
static int64_t one_row(PGconn *conn, int64_t want_published)
{
    ck_assert_msg(it_wait_until(relay_asleep, conn, 30000), "the relay never went idle");
    int64_t start = it_now_ms();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.idle.one', 'x')");
    int64_t got = it_pg_wait_published(conn, want_published, WAKE_DEADLINE_MS);
    int64_t took = it_now_ms() - start;
    ck_assert_msg(got == want_published,
                  "a single row after an idle spell was not published within %d ms"
                  " (poll interval " POLL_MS " ms): the wake-up path is broken",
                  WAKE_DEADLINE_MS);
    return took;
}

/* The stream, a connection, and a relay polling every poll_ms that leads. */
static struct it_relay *start_leader(const char *poll_ms, PGconn **conn)
{
    const char *subjects[] = {"it.idle.>", NULL};
    it_js_add_stream(STREAM, subjects);
    *conn = it_pg_connect();
    char poll[64];
    snprintf(poll, sizeof poll, "OUTBOX_POLL_INTERVAL_MS=%s", poll_ms);
    const char *env[] = {poll, NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert(it_relay_wait_logged(relay, LOG_MSG_BECAME_LEADER, 1, 20000));
    return relay;
}

START_TEST(test_single_row_after_idle_is_woken_up)
{
    PGconn *conn;
    struct it_relay *relay = start_leader(POLL_MS, &conn);

    int64_t published = 0, worst = 0;
    for (int round = 0; round < ROUNDS; round++) {
        /* A busy spell first (a relay may stop asking for wake-ups while it sees work)... */
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload)"
                         " SELECT 'it.idle.burst', convert_to(g::text, 'UTF8')"
                         " FROM generate_series(1, 2000) g");
        published += 2000;
        ck_assert_int_eq(it_pg_wait_published(conn, published, 30000), published);
        /* ...then idle, then one row. */
        int64_t took = one_row(conn, ++published);
        fprintf(stderr, "idle wakeup: round %d: one row after %s s idle published in %lld ms\n",
                round + 1, IDLE_SECONDS, (long long)took);
        if (took > worst)
            worst = took;
    }
    fprintf(stderr, "idle wakeup: worst %lld ms (poll interval " POLL_MS " ms)\n",
            (long long)worst);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), published);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * A sparse flow (a row now and then: the commonest outbox there is) is
 * woken by NOTIFY, not found by polling: once its rows are recorded, the
 * relay hands the wake-ups back to the producers at its next empty look
 * (WAKEUP_EAGER_MS after the last row found). It used to poll on for a
 * second, its pauses growing to 50 ms: a dozen claims and more after every
 * row. Counted in claims, not milliseconds, so that a loaded machine,
 * which only spaces the claims further apart, cannot fail it. The bound is
 * every look the eager window holds (the hot polls, then one a
 * millisecond), with the sleep lock's own pass: what the relay may still
 * spend when the row is recorded at once.
 */
#define CLAIMS_AFTER_RECORDED_MAX (WAKEUP_HOT_MS * 1000 / WAKEUP_HOT_POLL_US + WAKEUP_EAGER_MS + 2)
#define CLAIMS                    "outbox_relay_pg_statements_total{kind=\"claim\"}"

START_TEST(test_relay_sleeps_soon_after_rows_stop)
{
    PGconn *conn;
    struct it_relay *relay = start_leader(POLL_MS, &conn);

    double worst = 0;
    for (int round = 1; round <= 5; round++) {
        ck_assert_msg(it_wait_until(relay_holds_sleep_lock, conn, 30000),
                      "the relay never went to sleep");
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.idle.sparse', 'x')");
        ck_assert_int_eq(it_pg_wait_published(conn, round, WAKE_DEADLINE_MS), round);
        double recorded = it_metric(relay->http_port, CLAIMS);
        ck_assert_msg(it_wait_until(relay_holds_sleep_lock, conn, 30000),
                      "the relay never went back to sleep");
        double claims = it_metric(relay->http_port, CLAIMS) - recorded;
        ck_assert_msg(recorded >= round, "the claim counter is missing (%.0f)", recorded);
        fprintf(stderr, "sparse: row %d recorded; %.0f claims before the relay slept again\n",
                round, claims);
        if (claims > worst)
            worst = claims;
    }
    ck_assert_msg(worst <= CLAIMS_AFTER_RECORDED_MAX,
                  "the relay went on polling: %.0f claims after the last row was recorded "
                  "(at most %d)",
                  worst, CLAIMS_AFTER_RECORDED_MAX);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), 5);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/*
 * Rows that come without a NOTIFY (the trigger disabled for a poll-only
 * setup, or a notification lost) and that the fallback poll finds wake the
 * relay: it is awake while they flow, instead of sleeping between polls and
 * leaving every row to wait for the next one.
 */
START_TEST(test_rows_found_by_the_poll_wake_the_relay)
{
    PGconn *conn;
    struct it_relay *relay = start_leader("200", &conn);
    ck_assert_msg(it_wait_until(relay_holds_sleep_lock, conn, 30000),
                  "the relay never went to sleep");
    it_pg_exec(conn, "ALTER TABLE outbox DISABLE TRIGGER USER");

    /* One row per transaction, back to back, until the relay is seen awake
     * (or 20 s: five seconds' worth of fallback polls many times over). */
    int rows = 0;
    bool woke = false;
    for (int64_t until = it_now_ms() + 20000; !woke && it_now_ms() < until; rows++) {
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('it.idle.poll', 'x')");
        woke = !relay_holds_sleep_lock(conn);
    }
    it_pg_exec(conn, "ALTER TABLE outbox ENABLE TRIGGER USER");
    fprintf(stderr, "poll-only: the relay woke after %d rows\n", rows);
    ck_assert_msg(woke, "the relay slept through %d rows its polls found", rows);
    ck_assert_int_eq(it_pg_wait_published(conn, rows, 30000), rows);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), rows);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("idle_wakeup");
    TCase *tc = it_tcase(suite, "idle_wakeup", it_start_servers, 120);
    tcase_add_test(tc, test_single_row_after_idle_is_woken_up);
    tcase_add_test(tc, test_relay_sleeps_soon_after_rows_stop);
    tcase_add_test(tc, test_rows_found_by_the_poll_wake_the_relay);
    return run_suite(suite);
}
