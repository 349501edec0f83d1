/* Wake-ups the relay must not miss: a NOTIFY read together with a query's result, and rows
 * committed after a claim failed. The fallback poll is ten minutes away in both. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#include "outbox_relay/pg/outbox_table.h"

#define STREAM "IT_WAKEUP_GAPS"

#define RELAY_BACKEND "a.application_name = 'outbox-relay' AND a.backend_type = 'client backend'"

#define HOLDS_SLEEP_LOCK                                                                           \
    "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"                    \
    " WHERE l.locktype = 'advisory' AND l.granted"                                                 \
    " AND l.classid = " OUTBOX_CLASS_SQL(                                                          \
        OUTBOX_SLEEP_CLASS) " AND l.objid = 'outbox'::regclass::oid"                               \
                            " AND " RELAY_BACKEND

/* The relay holds its sleep lock: producers notify. */
static bool relay_holds_sleep_lock(void *conn)
{
    return it_pg_int(conn, HOLDS_SLEEP_LOCK) == 1;
}

/* The relay sleeps: it holds its sleep lock and has been idle half a second. */
static bool relay_asleep(void *conn)
{
    return it_pg_int(conn, HOLDS_SLEEP_LOCK
                     " AND a.state = 'idle'"
                     " AND a.state_change < clock_timestamp() - interval '0.5 s'") == 1;
}

/* A statement of the relay waits for a lock. */
static bool relay_blocked(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a"
                           " USING (pid) WHERE NOT l.granted AND " RELAY_BACKEND) == 1;
}

/* The relay's session is idle, and has been for a moment (its last result is sent). */
static bool relay_idle(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM pg_stat_activity AS a WHERE " RELAY_BACKEND
                           " AND a.state = 'idle'"
                           " AND a.state_change < clock_timestamp() - interval '0.2 s'") == 1;
}

/* The test's row is published (retention has deleted the old one). */
static bool one_published(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'"
                           " AND subject <> 'it.gaps.old'") == 1;
}

static const char *const quiet_env[] = {
    "OUTBOX_POLL_INTERVAL_MS=600000", "OUTBOX_METRICS_INTERVAL_MS=600000",
    "OUTBOX_RETENTION_INTERVAL_MS=600000", "OUTBOX_LEADER_LEASE_MS=600000", NULL};

static void assert_published_once(PGconn *conn, struct it_relay *relay)
{
    bool published = it_wait_until(one_published, conn, 10000);
    if (!published)
        it_relay_dump_log(relay);
    ck_assert_msg(published, "the row was not published");
    it_assert_each_row_once(conn, STREAM, 1);
}

/*
 * The NOTIFY comes right after a result, in the same read: the relay is
 * frozen while its retention statement (5 s after it leads, the only
 * statement for minutes) waits for the lock on an old published row; the
 * lock goes, the result is sent, then a producer's row notifies the
 * sleeping relay. Thawed, the relay reads both at once.
 */
START_TEST(test_notify_read_with_a_result_wakes_the_relay)
{
    const char *subjects[] = {"it.gaps.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect(), *locker = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, status, published_at)"
                     " VALUES ('it.gaps.old', 'old', 'published', now() - interval '30 days')");
    struct it_relay *relay = it_relay_start(quiet_env, NULL);
    ck_assert_msg(it_wait_until(relay_asleep, conn, 30000), "the relay never slept");

    it_pg_exec(locker, "BEGIN; SELECT id FROM outbox FOR UPDATE");
    ck_assert_msg(it_wait_until(relay_blocked, conn, 15000), "retention never ran");
    it_relay_signal(relay, SIGSTOP);
    it_pg_exec(locker, "COMMIT");
    ck_assert_msg(it_wait_until(relay_idle, conn, 5000), "the retention statement did not end");
    ck_assert(relay_holds_sleep_lock(conn)); /* the producer's trigger notifies */
    char err[256];
    ck_assert_msg(it_pg_insert_row(conn, "it.gaps.a", NULL, "a", err, sizeof err), "%s", err);
    ck_assert(it_wait_until(relay_idle, conn, 5000)); /* the NOTIFY is sent meanwhile */
    it_relay_signal(relay, SIGCONT);

    assert_published_once(conn, relay);
    it_relay_stop(relay);
    PQfinish(locker);
    PQfinish(conn);
}
END_TEST

/* The relay's waiting statement was cancelled: no wait, or a later statement waits. */
struct cancel_wait {
    PGconn *conn;
    int64_t started_us; /* the blocked statement's start */
};

static bool relay_wait_cancelled(void *arg)
{
    struct cancel_wait *w = arg;
    return it_pg_int(w->conn,
                     "SELECT count(*) FROM pg_stat_activity AS a WHERE " RELAY_BACKEND
                     " AND (a.wait_event_type IS DISTINCT FROM 'Lock'"
                     " OR (extract(epoch FROM a.query_start) * 1e6)::bigint > %lld)",
                     (long long)w->started_us) == 1;
}

/*
 * A claim fails (its statement_timeout passes while a lock holds the
 * table); meanwhile the relay has woken, so producers no longer notify: a
 * row committed after the failure is found only if the failed claim
 * re-armed the relay's polls.
 */
START_TEST(test_rows_after_a_failed_claim_are_found)
{
    const char *subjects[] = {"it.gaps.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect(), *locker = it_pg_connect();
    /* The relay's statement deadline, which its sessions also set as statement_timeout. */
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=600000",
                         "OUTBOX_METRICS_INTERVAL_MS=600000",
                         "OUTBOX_RETENTION_INTERVAL_MS=600000",
                         "OUTBOX_LEADER_LEASE_MS=600000",
                         "OUTBOX_PG_TIMEOUT_MS=500",
                         NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_msg(it_wait_until(relay_asleep, conn, 30000), "the relay never slept");

    it_pg_exec(locker, "BEGIN; LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE");
    it_pg_exec(conn, "NOTIFY outbox"); /* wakes the relay: it claims */
    ck_assert_msg(it_wait_until(relay_blocked, conn, 5000), "the claim did not wait on the lock");
    struct cancel_wait w = {.conn = conn};
    w.started_us = it_pg_int(conn, "SELECT (extract(epoch FROM a.query_start) * 1e6)::bigint"
                                   " FROM pg_stat_activity AS a WHERE " RELAY_BACKEND);
    ck_assert_msg(it_wait_until(relay_wait_cancelled, &w, 5000), "the claim was not cancelled");
    it_pg_exec(locker, "INSERT INTO outbox (subject, payload) VALUES ('it.gaps.b', 'b'); COMMIT");

    assert_published_once(conn, relay);
    it_relay_stop(relay);
    PQfinish(locker);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("wakeup_gaps");
    TCase *tc = it_tcase(suite, "wakeup_gaps", it_start_servers, 90);
    tcase_add_test(tc, test_notify_read_with_a_result_wakes_the_relay);
    tcase_add_test(tc, test_rows_after_a_failed_claim_are_found);
    return run_suite(suite);
}
