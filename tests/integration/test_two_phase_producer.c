/* Producers using two-phase commit (XA: Java EE, Narayana, Atomikos): PostgreSQL refuses
 * PREPARE TRANSACTION to a transaction that has notified, so the outbox must never make a
 * producer notify where transactions may be prepared, and still publish their rows promptly. */
#include <check.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"
#include "outbox_relay/pg/wakeup.h"

#define STREAM "IT_TWO_PHASE"
/* Only a wake-up or a tail poll can publish a row before this. */
#define POLL_MS "600000"
/* Far below the poll interval: proves the path, not a latency goal. */
#define PROMPT_MS 5000
#define ROUNDS    3

static void start_servers_with_2pc(void)
{
    it_pg_add_setting("max_prepared_transactions=10");
    it_start_servers();
}

/* The relay is idle the way it stays when nothing comes: asleep on its sleep lock (producers
 * notify), or awake for good because the server allows two-phase commit. */
static bool relay_settled(void *arg)
{
    struct it_relay *relay = arg;
    PGconn *conn = it_pg_connect();
    bool asleep = it_pg_int(conn, "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a"
                                  " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                                  " AND l.classid = 1869574266"
                                  " AND l.objid = 'outbox'::regclass::oid"
                                  " AND a.application_name = 'outbox-relay'") == 1;
    PQfinish(conn);
    return asleep || it_relay_log_contains(relay, WAKEUP_MSG_SLEEPLESS);
}

/* Runs one statement; true if it succeeded, else the error goes to *why. */
static bool run(PGconn *conn, const char *sql, char *why, size_t whylen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(why, whylen, "%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

/* BEGIN; enqueue; PREPARE TRANSACTION: every step must succeed. */
static void prepare_one(PGconn *conn, const char *gid)
{
    char why[512] = "", sql[128];
    ck_assert_msg(run(conn, "BEGIN", why, sizeof why), "%s", why);
    ck_assert_msg(run(conn, "SELECT outbox_enqueue('it.twophase.row', '{}')", why, sizeof why),
                  "%s", why);
    snprintf(sql, sizeof sql, "PREPARE TRANSACTION '%s'", gid);
    bool prepared = run(conn, sql, why, sizeof why);
    if (!prepared)
        run(conn, "ROLLBACK", sql, sizeof sql);
    ck_assert_msg(prepared, "a two-phase producer failed because of the outbox: %s", why);
}

static void commit_prepared(PGconn *conn, const char *gid)
{
    char why[512] = "", sql[128];
    snprintf(sql, sizeof sql, "COMMIT PREPARED '%s'", gid);
    ck_assert_msg(run(conn, sql, why, sizeof why), "%s", why);
}

static void assert_published_promptly(PGconn *conn, int64_t want, const char *what)
{
    ck_assert_msg(it_pg_wait_published(conn, want, PROMPT_MS) == want,
                  "%s was not published within %d ms (poll interval " POLL_MS " ms)", what,
                  PROMPT_MS);
}

START_TEST(test_two_phase_producer_while_relay_idle)
{
    const char *subjects[] = {"it.twophase.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_POLL_INTERVAL_MS=" POLL_MS, NULL};
    struct it_relay *relay = it_relay_start(env, NULL);

    int64_t published = 0;
    for (int round = 0; round < ROUNDS; round++) {
        char gid[32];
        /* Prepared and committed at once, the relay idle. */
        ck_assert_msg(it_wait_until(relay_settled, relay, 30000), "the relay never went idle");
        snprintf(gid, sizeof gid, "it-2pc-a%d", round);
        prepare_one(conn, gid);
        commit_prepared(conn, gid);
        assert_published_promptly(conn, ++published, "a two-phase row");

        /* Prepared while the relay is busy, committed once it is idle again. */
        it_pg_exec(conn, "SELECT outbox_enqueue('it.twophase.row', '{}')");
        snprintf(gid, sizeof gid, "it-2pc-b%d", round);
        prepare_one(conn, gid);
        assert_published_promptly(conn, ++published, "an ordinary row");
        ck_assert_msg(it_wait_until(relay_settled, relay, 30000), "the relay never went idle");
        commit_prepared(conn, gid);
        assert_published_promptly(conn, ++published, "a row committed by COMMIT PREPARED");

        /* An ordinary producer, the relay idle. */
        ck_assert_msg(it_wait_until(relay_settled, relay, 30000), "the relay never went idle");
        it_pg_exec(conn, "SELECT outbox_enqueue('it.twophase.row', '{}')");
        assert_published_promptly(conn, ++published, "an ordinary row after an idle spell");
    }
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM pg_prepared_xacts"), 0);
    it_assert_each_row_once(conn, STREAM, published);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* A relay of an earlier version sleeps on any server: while its sleep lock is held, the
 * trigger itself must not notify where transactions may be prepared. */
START_TEST(test_two_phase_producer_while_sleep_lock_held)
{
    PGconn *sleeper = it_pg_connect();
    ck_assert_int_eq(
        it_pg_int(sleeper, "SELECT pg_try_advisory_lock(1869574266, 'outbox'::regclass::oid::int4)"
                           "::int"),
        1);
    PGconn *conn = it_pg_connect();
    prepare_one(conn, "it-2pc-held");
    commit_prepared(conn, "it-2pc-held");
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), 1);
    PQfinish(conn);
    PQfinish(sleeper);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("two_phase_producer");
    TCase *tc = it_tcase(suite, "two_phase_producer", start_servers_with_2pc, 120);
    tcase_add_test(tc, test_two_phase_producer_while_relay_idle);
    tcase_add_test(tc, test_two_phase_producer_while_sleep_lock_held);
    return run_suite(suite);
}
