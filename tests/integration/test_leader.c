/* One active relay among three: one leader publishes; SIGKILL it and a standby takes over. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM      "IT_LEADER"
#define ROWS        20000
#define RELAYS      3
#define TAKEOVER_MS 10000

struct fleet {
    struct it_relay *relay[RELAYS];
    int port[RELAYS]; /* /metrics */
    bool killed[RELAYS];
};

/* Index of the one live relay reporting itself leader; -1 if none, -2 if several. */
static int fleet_leader(struct fleet *f)
{
    int leader = -1;
    for (int i = 0; i < RELAYS; i++) {
        if (f->killed[i] || it_metric(f->port[i], "outbox_relay_leader") != 1)
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
        if (!f->killed[i] && (it_metric(f->port[i], "outbox_relay_pg_connected") != 1 ||
                              it_metric(f->port[i], "outbox_relay_nats_connected") != 1))
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
    return it_pg_published(w->conn) >= ROWS / 5;
}

START_TEST(test_one_leader_and_takeover_after_sigkill)
{
    const char *subjects[] = {"it.leader.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    struct fleet f = {0};
    const char *env[] = {"OUTBOX_LEADER_RETRY_MS=500",     "OUTBOX_POLL_INTERVAL_MS=500",
                         "OUTBOX_METRICS_INTERVAL_MS=200", "OUTBOX_BATCH_SIZE=200",
                         "OUTBOX_MAX_INFLIGHT=1000",       NULL};
    for (int i = 0; i < RELAYS; i++) {
        f.relay[i] = it_relay_start_http(env, NULL);
        f.port[i] = f.relay[i]->http_port;
    }
    ck_assert_msg(it_wait_until(fleet_settled, &f, 20000), "no single leader among 3 relays");
    int leader = fleet_leader(&f);
    ck_assert_int_ge(leader, 0);
    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);

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
    ck_assert_msg(it_metric(f.port[leader], "outbox_relay_published_total") > 0,
                  "the leader published nothing");
    for (int i = 0; i < RELAYS; i++)
        if (i != leader) {
            ck_assert_msg(it_metric(f.port[i], "outbox_relay_claimed_total") == 0,
                          "standby %d claimed rows", i);
            ck_assert_msg(it_metric(f.port[i], "outbox_relay_published_total") == 0,
                          "standby %d published", i);
        }

    it_relay_signal(f.relay[leader], SIGKILL);
    ck_assert(it_relay_wait(f.relay[leader], 10000));
    f.killed[leader] = true;
    int64_t killed_at = it_now_ms();
    int64_t marked_at_kill = it_pg_published(conn);
    ck_assert_msg(marked_at_kill < ROWS, "the drain finished before the kill");
    bool taken_over = it_wait_until(fleet_settled, &f, TAKEOVER_MS);
    int64_t took = it_now_ms() - killed_at;
    ck_assert_msg(taken_over, "no standby took over within %d ms", TAKEOVER_MS);
    int next = fleet_leader(&f);
    fprintf(stderr, "leader: relay %d killed with %lld rows marked; relay %d led after %lld ms\n",
            leader, (long long)marked_at_kill, next, (long long)took);
    ck_assert_int_ne(next, leader);

    int64_t got = it_pg_wait_published(conn, ROWS, 60000);
    if (got != ROWS)
        it_relay_dump_log(f.relay[next]);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the takeover", (long long)got,
                  ROWS);
    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);
    ck_assert_int_eq(fleet_leader(&f), next);
    for (int i = 0; i < RELAYS; i++)
        if (i != leader && i != next)
            ck_assert_msg(it_metric(f.port[i], "outbox_relay_published_total") == 0,
                          "standby %d published", i);

    /* The stream holds each row once; what the killed leader had in flight was deduplicated. */
    it_assert_each_row_once(conn, STREAM, ROWS);

    /* In the logs too: one leader at a time, the first and then its successor. */
    int led = 0;
    for (int i = 0; i < RELAYS; i++)
        led += it_relay_logged(f.relay[i], LOG_MSG_BECAME_LEADER);
    ck_assert_int_eq(led, 2);
    for (int i = 0; i < RELAYS; i++)
        if (!f.killed[i])
            it_relay_stop(f.relay[i]);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("leader");
    TCase *tc = it_tcase(suite, "leader", it_start_servers, 180);
    tcase_add_test(tc, test_one_leader_and_takeover_after_sigkill);
    return run_suite(suite);
}
