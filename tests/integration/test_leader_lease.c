/* Leadership a frozen or vanished leader cannot keep (issue 10 §2): a standby publishes within
 * the bound, the woken old leader marks nothing, every row once and in key order. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_LEASE"
#define RELAYS 3
/* The test's bound for a takeover; the documented goal is 30 s. */
#define TAKEOVER_BOUND_MS 45000
#define MAX_PORTS         8

struct fleet {
    struct it_relay *relay[RELAYS];
    bool gone[RELAYS]; /* killed, or frozen: not asked anything */
};

static void fleet_start(struct fleet *f)
{
    const char *env[] = {"OUTBOX_LEADER_RETRY_MS=500", "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_METRICS_INTERVAL_MS=200", "OUTBOX_BATCH_SIZE=100", NULL};
    memset(f, 0, sizeof *f);
    for (int i = 0; i < RELAYS; i++)
        f->relay[i] = it_relay_start_http(env, NULL);
}

/* Index of the one live relay reporting itself leader; -1 if none, -2 if several. */
static int fleet_leader(struct fleet *f)
{
    int leader = -1;
    for (int i = 0; i < RELAYS; i++) {
        if (f->gone[i] || it_metric(f->relay[i]->http_port, "outbox_relay_leader") != 1)
            continue;
        if (leader >= 0)
            return -2;
        leader = i;
    }
    return leader;
}

static bool fleet_has_one_leader(void *arg)
{
    return fleet_leader(arg) >= 0;
}

/* Who marked each row published: the marking session's client port and the time. */
static void record_marks_by_port(PGconn *conn)
{
    it_pg_exec(conn,
               "CREATE TABLE mark_by (id bigint, port int, at timestamptz);"
               "CREATE FUNCTION mark_by_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.status = 'published' AND OLD.status <> 'published' THEN"
               "   INSERT INTO mark_by VALUES (NEW.id, inet_client_port(), clock_timestamp());"
               " END IF; RETURN NULL; END $$;"
               "CREATE TRIGGER mark_by AFTER UPDATE ON outbox"
               " FOR EACH ROW EXECUTE FUNCTION mark_by_row()");
}

static int64_t seq_rows; /* rows inserted so far */

/* A trickle of application writes: 20 rows over 8 keys. */
static void insert_some(PGconn *conn)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, ordering_key, payload)"
               " SELECT 'it.lease.' || (g %% 2), 'k' || (g %% 8), convert_to(g::text, 'UTF8')"
               " FROM generate_series(%lld, %lld) g",
               (long long)seq_rows + 1, (long long)seq_rows + 20);
    seq_rows += 20;
}

/* "{p1,p2,...}": the ports as a PostgreSQL array literal. */
static void ports_literal(const int *ports, int n, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "{");
    for (int i = 0; i < n && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%d", i ? "," : "", ports[i]);
    snprintf(buf + at, len - at, "}");
}

struct takeover {
    PGconn *conn;
    char since[64];      /* the fault's instant, PostgreSQL clock */
    char old_ports[256]; /* the old leader's sessions */
    int polls;
};

/* While rows keep coming: has a session other than the old leader's marked one since the fault? */
static bool standby_published(void *arg)
{
    struct takeover *t = arg;
    /* A trickle, not a flood: the backlog after the takeover stays small. */
    if (t->polls++ % 8 == 0)
        insert_some(t->conn);
    return it_pg_int(t->conn,
                     "SELECT count(*) FROM mark_by WHERE at > '%s'"
                     " AND port <> ALL('%s'::int[])",
                     t->since, t->old_ports) > 0;
}

static void db_now(PGconn *conn, char *buf, size_t len)
{
    PGresult *res = it_pg_query(conn, "SELECT clock_timestamp()::text");
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* A settled fleet whose leader has published the first rows; returns the leader's index. */
static int fleet_leading(struct fleet *f, PGconn *conn)
{
    const char *subjects[] = {"it.lease.>", NULL};
    it_js_add_stream(STREAM, subjects);
    record_marks_by_port(conn);
    seq_rows = 0;
    fleet_start(f);
    ck_assert_msg(it_wait_until(fleet_has_one_leader, f, 20000), "no single leader among %d",
                  RELAYS);
    for (int i = 0; i < 10; i++)
        insert_some(conn);
    ck_assert_int_eq(it_pg_wait_published(conn, seq_rows, 30000), seq_rows);
    int leader = fleet_leader(f);
    ck_assert_int_ge(leader, 0);
    return leader;
}

static void report_standbys(struct fleet *f, int64_t waited_ms)
{
    for (int i = 0; i < RELAYS; i++)
        if (!f->gone[i])
            fprintf(stderr, "lease: standby %d after %lld ms: leader=%g /healthz %d /readyz %d\n",
                    i, (long long)waited_ms,
                    it_metric(f->relay[i]->http_port, "outbox_relay_leader"),
                    it_http_status(f->relay[i]->http_port, "/healthz"),
                    it_http_status(f->relay[i]->http_port, "/readyz"));
}

/* After the takeover: the rest drains, each row once, every key in id order. */
static void drain_and_audit(PGconn *conn)
{
    int64_t left =
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'", 0, 60000);
    ck_assert_msg(left == 0, "%lld rows not published after the takeover", (long long)left);
    it_assert_keys_in_order_once(conn, STREAM);
    it_assert_each_row_once(conn, STREAM, seq_rows);
}

START_TEST(test_frozen_leader_is_replaced_and_steps_down)
{
    PGconn *conn = it_pg_connect();
    struct fleet f;
    int leader = fleet_leading(&f, conn);
    struct it_relay *old = f.relay[leader];
    int ports[MAX_PORTS];
    int nports = it_proc_tcp_local_ports(old->pid, it_pg_port(), ports, MAX_PORTS);
    ck_assert_int_gt(nports, 0);
    struct takeover t = {.conn = conn};
    ports_literal(ports, nports, t.old_ports, sizeof t.old_ports);

    /* A stuck process or a paused VM: its sessions stay open, it answers nothing. */
    it_relay_signal(old, SIGSTOP);
    f.gone[leader] = true;
    db_now(conn, t.since, sizeof t.since);
    int64_t stopped_at = it_now_ms();
    bool taken = it_wait_until(standby_published, &t, TAKEOVER_BOUND_MS);
    int64_t took = it_now_ms() - stopped_at;
    if (!taken) {
        report_standbys(&f, took);
        fprintf(stderr, "lease: %lld rows pending behind the frozen leader\n",
                (long long)it_pg_int(conn, "SELECT count(*) FROM outbox"
                                           " WHERE status <> 'published'"));
    }
    ck_assert_msg(taken, "leader frozen (SIGSTOP): no standby published within %d ms",
                  TAKEOVER_BOUND_MS);
    fprintf(stderr, "lease: frozen leader replaced, a standby published after %lld ms\n",
            (long long)took);

    /* It wakes up: it must find it lost the lease and mark nothing from now on. */
    char woke[64];
    db_now(conn, woke, sizeof woke);
    kill(old->pid, SIGCONT);
    f.gone[leader] = false;
    for (int i = 0; i < 20; i++)
        insert_some(conn);
    int next = -1;
    for (int i = 0; i < RELAYS; i++)
        if (i != leader && it_metric(f.relay[i]->http_port, "outbox_relay_leader") == 1)
            next = i;
    ck_assert_msg(next >= 0, "no standby reports itself leader");
    /* A standby said so: it ended the silent leader's session, and counted it. */
    double takeovers = 0;
    for (int i = 0; i < RELAYS; i++)
        if (i != leader)
            takeovers += it_metric(f.relay[i]->http_port, "outbox_relay_takeovers_total");
    ck_assert_msg(takeovers >= 1, "no standby counted a takeover of the silent leader");
    ck_assert_msg(it_wait_metric(old->http_port, "outbox_relay_leader", 0, 15000),
                  "the woken old leader still reports itself leader");
    drain_and_audit(conn);
    ck_assert_int_eq(fleet_leader(&f), next);

    int now_ports[MAX_PORTS];
    int nnow = it_proc_tcp_local_ports(old->pid, it_pg_port(), now_ports, MAX_PORTS);
    char now_literal[256];
    ports_literal(now_ports, nnow, now_literal, sizeof now_literal);
    int64_t marked_by_old = it_pg_int(conn,
                                      "SELECT count(*) FROM mark_by WHERE at >= '%s'"
                                      " AND (port = ANY('%s'::int[]) OR port = ANY('%s'::int[]))",
                                      woke, t.old_ports, now_literal);
    ck_assert_msg(marked_by_old == 0,
                  "the woken old leader marked %lld rows after it lost the lease",
                  (long long)marked_by_old);
    for (int i = 0; i < RELAYS; i++)
        it_relay_stop(f.relay[i]);
    PQfinish(conn);
}
END_TEST

START_TEST(test_lost_leader_node_is_replaced)
{
    PGconn *conn = it_pg_connect();
    struct fleet f;
    int leader = fleet_leading(&f, conn);
    struct it_relay *old = f.relay[leader];
    int ports[MAX_PORTS];
    int nports = it_proc_tcp_local_ports(old->pid, it_pg_port(), ports, MAX_PORTS);
    ck_assert_int_gt(nports, 0);
    /* The session holding the lock is among them. */
    int lock_port = (int)it_pg_int(conn, "SELECT coalesce(max(a.client_port), -1)"
                                         " FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                                         " WHERE l.locktype = 'advisory' AND l.classid = 1869574264"
                                         "   AND l.granted");
    bool lock_port_found = false;
    for (int i = 0; i < nports; i++)
        lock_port_found |= ports[i] == lock_port;
    ck_assert_msg(lock_port_found, "the lock holder (port %d) is not the leader's session",
                  lock_port);
    struct takeover t = {.conn = conn};
    ports_literal(ports, nports, t.old_ports, sizeof t.old_ports);

    /* Power loss, kernel panic, partition: the node's packets vanish, no FIN or RST ever. */
    for (int i = 0; i < nports; i++)
        it_net_drop(it_pg_port(), ports[i]);
    it_relay_signal(old, SIGKILL);
    ck_assert(it_relay_wait(old, 10000));
    f.gone[leader] = true;
    db_now(conn, t.since, sizeof t.since);
    int64_t lost_at = it_now_ms();
    bool taken = it_wait_until(standby_published, &t, TAKEOVER_BOUND_MS);
    int64_t took = it_now_ms() - lost_at;
    if (!taken) {
        report_standbys(&f, took);
        fprintf(stderr, "lease: lock still held by a session on port %lld\n",
                (long long)it_pg_int(conn,
                                     "SELECT coalesce(max(a.client_port), -1) FROM pg_locks l"
                                     " JOIN pg_stat_activity a USING (pid)"
                                     " WHERE l.locktype = 'advisory' AND l.classid = 1869574264"
                                     "   AND l.granted"));
    }
    ck_assert_msg(taken,
                  "leader's node lost (packets dropped, relay killed): no standby published"
                  " within %d ms",
                  TAKEOVER_BOUND_MS);
    fprintf(stderr, "lease: lost leader node replaced, a standby published after %lld ms\n",
            (long long)took);

    it_net_heal();
    drain_and_audit(conn);
    ck_assert_int_ge(fleet_leader(&f), 0);
    for (int i = 0; i < RELAYS; i++)
        if (!f.gone[i])
            it_relay_stop(f.relay[i]);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("leader_lease");
    TCase *frozen = it_tcase(suite, "frozen_leader", it_start_servers, 150);
    tcase_add_test(frozen, test_frozen_leader_is_replaced_and_steps_down);
    /* The lost node needs iptables on loopback (root): without it, that half is skipped (77). */
    bool net = it_net_available();
    if (net) {
        TCase *lost = tcase_create("lost_node");
        tcase_add_checked_fixture(lost, it_start_servers, it_net_teardown);
        tcase_set_timeout(lost, 150);
        tcase_add_test(lost, test_lost_leader_node_is_replaced);
        suite_add_tcase(suite, lost);
    }
    int rc = run_suite(suite);
    if (rc == EXIT_SUCCESS && !net) {
        fprintf(stderr, "leader_lease: lost-node case skipped: needs root and iptables\n");
        return 77;
    }
    return rc;
}
