/* No statement of the leader outlives the lease, and a standby never ends a leader that works. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"
#include "run_suite.h"

#define ROWS 100

/* The leader's session: the holder of the leader lock. */
#define LEADER_PID                                                                                 \
    "(SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"                            \
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = " OUTBOX_CLASS_SQL(              \
        OUTBOX_LOCK_CLASS) " AND a.application_name = 'outbox-relay')"

struct watch {
    PGconn *conn;
    int64_t pid;          /* the leader's backend */
    char query_start[64]; /* its statement blocked on the test's lock */
};

/* The leader's session waits for the table lock the test holds. */
static bool leader_blocked(void *arg)
{
    struct watch *w = arg;
    PGresult *res =
        it_pg_query(w->conn, "SELECT pid, query_start::text FROM pg_stat_activity"
                             " WHERE pid = " LEADER_PID " AND wait_event_type = 'Lock'");
    bool blocked = PQntuples(res) == 1;
    if (blocked) {
        w->pid = atoll(PQgetvalue(res, 0, 0));
        snprintf(w->query_start, sizeof(w->query_start), "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return blocked;
}

/* That statement is over (cancelled by its deadline), the test still holding the lock. */
static bool blocked_statement_ended(void *arg)
{
    struct watch *w = arg;
    return it_pg_int(w->conn,
                     "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld"
                     " AND wait_event_type = 'Lock' AND query_start = '%s'::timestamptz",
                     (long long)w->pid, w->query_start) == 0;
}

START_TEST(test_leader_statement_ends_before_the_lease)
{
    const char *subjects[] = {"it.deadline.>", NULL};
    it_js_add_stream("IT_DEADLINE", subjects);
    PGconn *conn = it_pg_connect(), *locker = it_pg_connect();
    /* The statement deadline the operator asks for is far longer than the lease. */
    const char *env[] = {"OUTBOX_LEADER_LEASE_MS=6000",    "OUTBOX_PG_TIMEOUT_MS=120000",
                         "OUTBOX_LEADER_RETRY_MS=200",     "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_METRICS_INTERVAL_MS=100", NULL};
    struct it_relay *leader = it_relay_start_http(env, NULL);
    ck_assert(it_wait_metric(leader->http_port, "outbox_relay_leader", 1, 20000));
    struct it_relay *standby = it_relay_start_http(env, NULL);
    ck_assert(it_wait_metric(standby->http_port, "outbox_relay_nats_connected", 1, 20000));
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.deadline.' || g,"
               " convert_to(g::text, 'UTF8') FROM generate_series(1, %d) g",
               ROWS);
    ck_assert_int_eq(it_pg_wait_published(conn, ROWS, 30000), ROWS);

    /* Every statement on the table now waits for the test's lock. */
    it_pg_exec(locker, "BEGIN");
    it_pg_exec(locker, "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE");
    struct watch w = {.conn = conn};
    ck_assert_msg(it_wait_until(leader_blocked, &w, 30000), "the leader never waited for the lock");
    /* Its own deadline ends it long before OUTBOX_PG_TIMEOUT_MS, while the lock is still held. */
    ck_assert_msg(it_wait_until(blocked_statement_ended, &w, 30000),
                  "the leader's statement ran on past its lease (pid %lld, since %s)",
                  (long long)w.pid, w.query_start);
    it_pg_exec(locker, "COMMIT");

    /* The leader, which was working all along, was never ended, and goes on. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'it.deadline.b' || g,"
               " convert_to(g::text, 'UTF8') FROM generate_series(1, %d) g",
               ROWS);
    ck_assert_int_eq(it_pg_wait_published(conn, 2 * ROWS, 30000), 2 * ROWS);
    ck_assert_int_eq(it_metric(standby->http_port, "outbox_relay_takeovers_total"), 0);
    ck_assert_int_eq(it_metric(leader->http_port, "outbox_relay_takeovers_total"), 0);
    it_assert_each_row_once(conn, "IT_DEADLINE", 2 * ROWS);
    it_relay_stop(standby);
    it_relay_stop(leader);
    PQfinish(locker);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("leader_deadline");
    TCase *tc = it_tcase(suite, "leader_deadline", it_start_servers, 180);
    tcase_add_test(tc, test_leader_statement_ends_before_the_lease);
    return run_suite(suite);
}
