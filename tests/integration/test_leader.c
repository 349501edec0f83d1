/* One active relay among three: one leader publishes; SIGKILL it and a standby takes over. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define STREAM      "IT_LEADER"
#define ROWS        20000
#define RELAYS      3
#define TAKEOVER_MS 10000

struct fleet {
    struct it_relay *relay[RELAYS];
    int port[RELAYS]; /* /metrics */
    bool killed[RELAYS];
};

/* A metric's value from the relay's /metrics, or -1 when it does not answer. */
static double metric(int port, const char *name)
{
    struct it_http r;
    int status = it_http_get(port, "/metrics", 2000, &r);
    double v = -1;
    char needle[128];
    snprintf(needle, sizeof needle, "\noutbox_relay_%s ", name);
    const char *at = status == 200 ? strstr(r.body, needle) : NULL;
    if (at)
        v = strtod(at + strlen(needle), NULL);
    it_http_free(&r);
    return v;
}

/* Index of the one live relay reporting itself leader; -1 if none, -2 if several. */
static int fleet_leader(struct fleet *f)
{
    int leader = -1;
    for (int i = 0; i < RELAYS; i++) {
        if (f->killed[i] || metric(f->port[i], "leader") != 1)
            continue;
        if (leader >= 0)
            return -2;
        leader = i;
    }
    return leader;
}

/* Every live relay is connected to both ends, and exactly one leads. */
static bool fleet_settled(void *arg)
{
    struct fleet *f = arg;
    for (int i = 0; i < RELAYS; i++)
        if (!f->killed[i] &&
            (metric(f->port[i], "pg_connected") != 1 || metric(f->port[i], "nats_connected") != 1))
            return false;
    return fleet_leader(f) >= 0;
}

struct watch {
    struct fleet *fleet;
    PGconn *conn;
    int leader;
};

/* Waits for the drain while checking, at every look, that leadership has not moved. */
static bool drain_under_way_same_leader(void *arg)
{
    struct watch *w = arg;
    int now = fleet_leader(w->fleet);
    ck_assert_msg(now == w->leader, "leader moved from relay %d to %d (-2: several)", w->leader,
                  now);
    return it_pg_int(w->conn, "SELECT count(*) FROM outbox WHERE status = 'published'") >= ROWS / 5;
}

/* The advisory locks held in the database: only the leader's session has one. */
static int64_t advisory_holders(PGconn *conn)
{
    return it_pg_int(conn, "SELECT count(DISTINCT l.pid) FROM pg_locks l"
                           " JOIN pg_stat_activity a USING (pid)"
                           " WHERE l.locktype = 'advisory' AND l.granted"
                           "   AND a.application_name = 'outbox-relay'");
}

START_TEST(test_one_leader_and_takeover_after_sigkill)
{
    const char *subjects[] = {"it.leader.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    struct fleet f = {0};
    char addr[RELAYS][64];
    for (int i = 0; i < RELAYS; i++) {
        f.port[i] = it_free_port();
        snprintf(addr[i], sizeof addr[i], "OUTBOX_HTTP_ADDR=127.0.0.1:%d", f.port[i]);
        const char *env[] = {addr[i],
                             "OUTBOX_LEADER_RETRY_MS=500",
                             "OUTBOX_POLL_INTERVAL_MS=500",
                             "OUTBOX_METRICS_INTERVAL_MS=200",
                             "OUTBOX_BATCH_SIZE=200",
                             "OUTBOX_MAX_INFLIGHT=1000",
                             NULL};
        f.relay[i] = it_relay_start(env, NULL);
    }
    ck_assert_msg(it_wait_until(fleet_settled, &f, 20000), "no single leader among 3 relays");
    int leader = fleet_leader(&f);
    ck_assert_int_ge(leader, 0);
    ck_assert_int_eq(advisory_holders(conn), 1);

    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.leader.' || (g %% 4), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 3 = 0 THEN 'key-' || (g %% 30) END"
               " FROM generate_series(1, %d) g",
               ROWS);
    struct watch w = {.fleet = &f, .conn = conn, .leader = leader};
    ck_assert_msg(it_wait_until(drain_under_way_same_leader, &w, 60000),
                  "the drain did not get going");
    /* Only the leader claims and publishes. */
    ck_assert_int_eq(fleet_leader(&f), leader);
    ck_assert_msg(metric(f.port[leader], "published_total") > 0, "the leader published nothing");
    for (int i = 0; i < RELAYS; i++)
        if (i != leader) {
            ck_assert_msg(metric(f.port[i], "claimed_total") == 0, "standby %d claimed rows", i);
            ck_assert_msg(metric(f.port[i], "published_total") == 0, "standby %d published", i);
        }

    it_relay_signal(f.relay[leader], SIGKILL);
    ck_assert(it_relay_wait(f.relay[leader], 10000));
    f.killed[leader] = true;
    int64_t killed_at = it_now_ms();
    int64_t marked_at_kill =
        it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'");
    ck_assert_msg(marked_at_kill < ROWS, "the drain finished before the kill");
    bool taken_over = it_wait_until(fleet_settled, &f, TAKEOVER_MS);
    int64_t took = it_now_ms() - killed_at;
    ck_assert_msg(taken_over, "no standby took over within %d ms", TAKEOVER_MS);
    int next = fleet_leader(&f);
    fprintf(stderr, "leader: relay %d killed with %lld rows marked; relay %d led after %lld ms\n",
            leader, (long long)marked_at_kill, next, (long long)took);
    ck_assert_int_ne(next, leader);

    int64_t got =
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status = 'published'", ROWS, 60000);
    if (got != ROWS)
        it_relay_dump_log(f.relay[next]);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the takeover", (long long)got,
                  ROWS);
    ck_assert_int_eq(advisory_holders(conn), 1);
    ck_assert_int_eq(fleet_leader(&f), next);
    for (int i = 0; i < RELAYS; i++)
        if (i != leader && i != next)
            ck_assert_msg(metric(f.port[i], "published_total") == 0, "standby %d published", i);

    /* The stream holds each row once; what the killed leader had in flight was deduplicated. */
    ck_assert_int_eq(it_js_stream_msgs(STREAM), ROWS);
    struct it_msgs msgs;
    it_js_read_stream(STREAM, &msgs);
    ck_assert_int_eq(msgs.count, ROWS);
    ck_assert_int_eq(it_msgs_duplicate_ids(&msgs), 0);
    PGresult *rows = it_pg_query(conn, "SELECT event_id, stream_seq FROM outbox");
    int missing = 0, wrong_seq = 0;
    for (int i = 0; i < PQntuples(rows); i++) {
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 0));
        if (m == NULL)
            missing++;
        else if (strtoull(PQgetvalue(rows, i, 1), NULL, 10) != m->seq)
            wrong_seq++;
    }
    ck_assert_int_eq(missing, 0);
    ck_assert_int_eq(wrong_seq, 0);
    PQclear(rows);
    it_msgs_free(&msgs);

    /* In the logs too: one leader at a time, the first and then its successor. */
    int led = 0;
    for (int i = 0; i < RELAYS; i++)
        led += it_relay_log_contains(f.relay[i], "became leader");
    ck_assert_int_eq(led, 2);
    for (int i = 0; i < RELAYS; i++) {
        if (f.killed[i])
            continue;
        it_relay_signal(f.relay[i], SIGTERM);
        ck_assert_msg(it_relay_wait(f.relay[i], 15000), "relay %d did not stop on SIGTERM", i);
        ck_assert_int_eq(it_relay_exit_code(f.relay[i]), 0);
    }
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("leader");
    TCase *tc = tcase_create("leader");
    tcase_add_checked_fixture(tc, it_start_servers, it_teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_one_leader_and_takeover_after_sigkill);
    suite_add_tcase(suite, tc);
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
