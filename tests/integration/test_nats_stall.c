/* NATS stalls: a frozen server's PubAcks time out on the relay's own deadline; a leader cut off
 * from NATS gives the lock up, to a standby or to itself once NATS is back. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM   "IT_NATS_STALL"
#define ROWS     10000
#define LATER    500  /* rows inserted while the relay has no NATS */
#define LOST_MS  1500 /* OUTBOX_NATS_LOST_MS */
#define LOST_ENV "OUTBOX_NATS_LOST_MS=1500"

/* A mix of subjects, keyed and unkeyed rows: a timed-out head must hold its key. */
static void insert_rows(PGconn *conn, int from, int to)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.stall.' || (g %% 3), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 4 = 0 THEN 'key-' || (g %% 40) END"
               " FROM generate_series(%d, %d) g",
               from, to);
}

static bool drain_under_way(void *conn)
{
    return it_pg_published(conn) >= ROWS / 10;
}

#define TIMED_OUT "last_error LIKE 'no PubAck within 500 ms%%'"

/*
 * Rows failed by the relay's PubAck deadline, retried into the freeze and
 * timed out again, twice: by then nats.c holds more unacknowledged publishes
 * than its MaxPending allows, unless the relay reclaimed those it gave up on.
 * The freeze's failures are the connection's: no attempts, so count marks.
 */
static bool acks_timed_out_thrice(void *conn)
{
    return it_pg_int(conn, "SELECT count(*) FROM (SELECT id FROM mark_log WHERE status = 'failed'"
                           " AND " TIMED_OUT " GROUP BY id HAVING count(*) >= 3) AS t") > 0;
}

START_TEST(test_frozen_server_acks_time_out_then_each_row_once)
{
    const char *subjects[] = {"it.stall.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_record_marks(conn);
    insert_rows(conn, 1, ROWS);
    /*
     * nats.c keeps a frozen connection for 15-20 s (a ping every 5 s, three
     * may go unanswered): within that, only the relay's own deadline fails
     * what it has in flight. Leadership stays put.
     */
    const char *env[] = {"OUTBOX_PUBLISH_TIMEOUT_MS=500",
                         "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=400",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=200",
                         "OUTBOX_NATS_LOST_MS=60000",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");

    it_nats_pause();
    int64_t frozen_at = it_now_ms();
    int64_t marked_at_freeze = it_pg_published(conn);
    bool timed_out = it_wait_until(acks_timed_out_thrice, conn, 10000);
    int64_t failed_in_freeze = it_pg_int(conn, "SELECT count(*) FROM outbox WHERE " TIMED_OUT);
    it_nats_resume();
    fprintf(stderr,
            "nats stall: frozen with %lld rows marked; after %lld ms, %lld rows had timed out\n",
            (long long)marked_at_freeze, (long long)(it_now_ms() - frozen_at),
            (long long)failed_in_freeze);
    ck_assert_msg(marked_at_freeze < ROWS, "the drain finished before the freeze");
    if (!timed_out) {
        it_relay_dump_log(relay);
        it_pg_dump_row_states(conn);
    }
    ck_assert_msg(timed_out, "no row failed 3 times with \"no PubAck within 500 ms\" while frozen");

    int64_t got = it_pg_wait_published(conn, ROWS, 60000);
    if (got != ROWS) {
        it_relay_dump_log(relay);
        it_pg_dump_row_states(conn);
    }
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the thaw", (long long)got, ROWS);
    /* The timed-out rows went again (test_nats_stall_backoff: at no cost of attempts). */
    ck_assert_int_gt(it_pg_int(conn, "SELECT count(*) FROM outbox AS o WHERE EXISTS (SELECT 1"
                                     " FROM mark_log AS m WHERE m.id = o.id"
                                     " AND m.status = 'failed')"),
                     0);
    /* Late PubAcks of the first attempts and the retries' duplicates: one message per row. */
    it_assert_each_row_once(conn, STREAM, ROWS);
    /* Past nats.c's MaxPending a publish blocks the loop, then fails ("publish failed: Timeout").
     */
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM mark_log"
                                     " WHERE last_error LIKE 'publish failed%%'"),
                     0);

    int port = relay->http_port;
    ck_assert_msg(it_metric(port, "outbox_relay_failed_total") > 0, "failed_total: %g",
                  it_metric(port, "outbox_relay_failed_total"));
    /* The same connection throughout: the deadline did it, not a reconnect. */
    ck_assert_int_eq(it_metric(port, "outbox_relay_nats_reconnects_total"), 0);
    ck_assert_int_eq(it_metric(port, "outbox_relay_leader"), 1);
    ck_assert(it_relay_logged(relay, LOG_MSG_PUBLISHES_TIMED_OUT));
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

static bool no_relay_holds_lock(void *conn)
{
    return it_pg_relay_lock_holders(conn) == 0;
}

static bool relay_has_inflight(void *relay)
{
    return it_metric(((struct it_relay *)relay)->http_port, "outbox_relay_inflight") > 0;
}

/* A failure mark from the reclaim of nats.c's pending list at a reconnect. A
 * leader that resigned dropped its rows (fencing), so it writes none: the
 * next term claims those rows again and JetStream drops the duplicates. */
#define RECLAIMED "status = 'failed' AND last_error = 'nats connection lost before the PubAck'"

START_TEST(test_leader_without_nats_releases_lock_until_it_returns)
{
    const char *subjects[] = {"it.stall.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    it_pg_record_marks(conn);
    insert_rows(conn, 1, ROWS);
    /*
     * A PubAck deadline far beyond the test: rows in flight when NATS dies
     * come back only through the reclaim of nats.c's pending list at the
     * reconnect.
     */
    const char *env[] = {LOST_ENV,
                         "OUTBOX_LEADER_RETRY_MS=300",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=60000",
                         "OUTBOX_RETRY_BASE_MS=100",
                         "OUTBOX_RETRY_MAX_MS=500",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_RECONNECT_MAX_MS=300",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    int port = relay->http_port;
    ck_assert_msg(it_wait_metric(port, "outbox_relay_leader", 1, 10000), "the relay never led");
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");

    /* Frozen first, so that publishes are surely unacknowledged when the server dies. */
    it_nats_pause();
    ck_assert_msg(it_wait_until(relay_has_inflight, relay, 5000), "nothing in flight");
    int64_t killed_at = it_now_ms();
    it_nats_kill();
    ck_assert_msg(it_pg_published(conn) < ROWS, "the drain finished before the kill");

    ck_assert_msg(it_wait_metric(port, "outbox_relay_leader", 0, LOST_MS + 10000),
                  "still leader without NATS");
    int64_t released_after = it_now_ms() - killed_at;
    ck_assert_msg(it_wait_until(no_relay_holds_lock, conn, 5000),
                  "the relay's session still holds the advisory lock");
    ck_assert(it_relay_logged(relay, LOG_MSG_LEADERSHIP_RELEASED));
    ck_assert(it_relay_log_contains(relay, "\"reason\":\"" LOG_REASON_NATS_LOST "\""));
    /* Not before its time (less a timer's slack): a dropped connection alone is no reason. */
    ck_assert_msg(released_after >= LOST_MS - 100, "leadership released %lld ms after the kill",
                  (long long)released_after);
    ck_assert_int_eq(it_metric(port, "outbox_relay_nats_connected"), 0);
    /* Still alive, still connected to PostgreSQL: a standby. */
    ck_assert_int_eq(it_metric(port, "outbox_relay_pg_connected"), 1);
    insert_rows(conn, ROWS + 1, ROWS + LATER);

    it_nats_start(); /* same store dir, same port */
    ck_assert_msg(it_wait_metric(port, "outbox_relay_leader", 1, 15000),
                  "no leadership again after NATS came back");
    fprintf(stderr, "nats stall: leadership released %lld ms after the kill, back after %lld ms\n",
            (long long)released_after, (long long)(it_now_ms() - killed_at));
    int64_t got = it_pg_wait_published(conn, ROWS + LATER, 30000);
    if (got != ROWS + LATER)
        it_relay_dump_log(relay);
    ck_assert_msg(got == ROWS + LATER, "%lld of %d rows published after NATS came back",
                  (long long)got, ROWS + LATER);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM mark_log WHERE " RECLAIMED), 0);
    ck_assert(it_relay_log_contains(relay, "rows_dropped"));
    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);
    it_assert_each_row_once(conn, STREAM, ROWS + LATER);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

/* ---- a TCP proxy in front of nats-server, to cut one relay off ---- */

#define PROXY_MAX 32

struct proxy {
    int listen_fd, port, target_port;
    int fds[PROXY_MAX][2]; /* client side, server side; -1 when free */
    atomic_bool cut;       /* closes what is open and refuses what comes */
    atomic_bool stop;
    pthread_t thread;
};

static void proxy_close_pair(struct proxy *p, int i)
{
    close(p->fds[i][0]);
    close(p->fds[i][1]);
    p->fds[i][0] = p->fds[i][1] = -1;
}

static int proxy_connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* No Check calls: a failed check here would end only this thread's view of the test. */
static void *proxy_main(void *arg)
{
    struct proxy *p = arg;
    static char buf[65536];
    while (!atomic_load(&p->stop)) {
        bool cut = atomic_load(&p->cut);
        struct pollfd pfd[1 + 2 * PROXY_MAX];
        int map[1 + 2 * PROXY_MAX];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        for (int i = 0; i < PROXY_MAX; i++) {
            if (p->fds[i][0] < 0)
                continue;
            if (cut) {
                proxy_close_pair(p, i);
                continue;
            }
            for (int side = 0; side < 2; side++) {
                map[n] = 2 * i + side;
                pfd[n++] = (struct pollfd){.fd = p->fds[i][side], .events = POLLIN};
            }
        }
        if (poll(pfd, (nfds_t)n, 20) <= 0)
            continue;
        if (pfd[0].revents & POLLIN) {
            int client = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            int server = client >= 0 && !cut ? proxy_connect_target(p->target_port) : -1;
            int slot = -1;
            for (int i = 0; i < PROXY_MAX && slot < 0; i++)
                if (p->fds[i][0] < 0)
                    slot = i;
            if (client >= 0 && server >= 0 && slot >= 0) {
                p->fds[slot][0] = client;
                p->fds[slot][1] = server;
            } else {
                if (client >= 0)
                    close(client);
                if (server >= 0)
                    close(server);
            }
        }
        for (int k = 1; k < n; k++) {
            int i = map[k] / 2, side = map[k] % 2;
            if (pfd[k].revents == 0 || p->fds[i][0] < 0)
                continue;
            ssize_t got = recv(p->fds[i][side], buf, sizeof buf, 0);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0 || !send_all(p->fds[i][1 - side], buf, (size_t)got))
                proxy_close_pair(p, i);
        }
    }
    for (int i = 0; i < PROXY_MAX; i++)
        if (p->fds[i][0] >= 0)
            proxy_close_pair(p, i);
    close(p->listen_fd);
    return NULL;
}

static void proxy_start(struct proxy *p, int target_port)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < PROXY_MAX; i++)
        p->fds[i][0] = p->fds[i][1] = -1;
    p->target_port = target_port;
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p->listen_fd, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ck_assert_int_eq(bind(p->listen_fd, (struct sockaddr *)&addr, sizeof addr), 0);
    ck_assert_int_eq(listen(p->listen_fd, 16), 0);
    ck_assert_int_eq(getsockname(p->listen_fd, (struct sockaddr *)&addr, &len), 0);
    p->port = ntohs(addr.sin_port);
    ck_assert_int_eq(pthread_create(&p->thread, NULL, proxy_main, p), 0);
}

static void proxy_stop(struct proxy *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
}

/* The old leader has let go and the standby leads: exactly one lock, the standby's. */
struct handover {
    struct it_relay *from, *to;
    PGconn *conn;
};

static bool handed_over(void *arg)
{
    struct handover *h = arg;
    return it_metric(h->from->http_port, "outbox_relay_leader") == 0 &&
           it_metric(h->to->http_port, "outbox_relay_leader") == 1 &&
           it_pg_relay_lock_holders(h->conn) == 1;
}

START_TEST(test_standby_takes_over_from_leader_cut_off_from_nats)
{
    const char *subjects[] = {"it.stall.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    struct proxy proxy;
    proxy_start(&proxy, it_nats_port());

    char via_proxy[64];
    snprintf(via_proxy, sizeof via_proxy, "OUTBOX_NATS_URL=nats://127.0.0.1:%d", proxy.port);
    const char *cut_env[] = {via_proxy,
                             LOST_ENV,
                             "OUTBOX_LEADER_RETRY_MS=300",
                             "OUTBOX_RECONNECT_MAX_MS=300",
                             "OUTBOX_RETRY_BASE_MS=100",
                             "OUTBOX_RETRY_MAX_MS=500",
                             "OUTBOX_MAX_ATTEMPTS=1000",
                             NULL};
    struct it_relay *old = it_relay_start_http(cut_env, NULL);
    ck_assert_msg(it_wait_metric(old->http_port, "outbox_relay_leader", 1, 10000),
                  "the first relay never led");
    /* cut_env without the proxy: the standby talks to nats-server directly. */
    struct it_relay *standby = it_relay_start_http(cut_env + 1, NULL);
    ck_assert(it_wait_metric(standby->http_port, "outbox_relay_nats_connected", 1, 10000));
    ck_assert(it_wait_metric(standby->http_port, "outbox_relay_pg_connected", 1, 10000));
    ck_assert_int_eq(it_metric(standby->http_port, "outbox_relay_leader"), 0);

    insert_rows(conn, 1, ROWS);
    ck_assert_msg(it_wait_until(drain_under_way, conn, 60000), "the drain did not get going");
    atomic_store(&proxy.cut, true);
    int64_t cut_at = it_now_ms();
    ck_assert_msg(it_pg_published(conn) < ROWS, "the drain finished before the cut");

    struct handover h = {.from = old, .to = standby, .conn = conn};
    bool taken_over = it_wait_until(handed_over, &h, LOST_MS + 10000);
    int64_t took = it_now_ms() - cut_at;
    if (!taken_over) {
        it_relay_dump_log(old);
        it_relay_dump_log(standby);
    }
    ck_assert_msg(taken_over, "the standby did not take over within %d ms", LOST_MS + 10000);
    fprintf(stderr, "nats stall: the standby led %lld ms after the leader was cut off\n",
            (long long)took);
    ck_assert(it_relay_logged(old, LOG_MSG_LEADERSHIP_RELEASED));

    int64_t got = it_pg_wait_published(conn, ROWS, 30000);
    if (got != ROWS)
        it_relay_dump_log(standby);
    ck_assert_msg(got == ROWS, "%lld of %d rows published after the takeover", (long long)got,
                  ROWS);
    ck_assert(it_metric(standby->http_port, "outbox_relay_published_total") > 0);

    /* Back in touch, the old leader stays a standby: the lock has an owner. */
    atomic_store(&proxy.cut, false);
    ck_assert_msg(it_wait_metric(old->http_port, "outbox_relay_nats_connected", 1, 10000),
                  "the old leader did not reconnect through the proxy");
    ck_assert_int_eq(it_metric(old->http_port, "outbox_relay_leader"), 0);
    ck_assert_int_eq(it_metric(standby->http_port, "outbox_relay_leader"), 1);
    ck_assert_int_eq(it_pg_relay_lock_holders(conn), 1);
    /* Its stale in-flight rows, failed by now (deadline or reclaim), undid no publish. */
    ck_assert_msg(it_wait_metric(old->http_port, "outbox_relay_inflight", 0, 10000),
                  "the old leader still holds rows");
    ck_assert_int_eq(it_pg_published(conn), ROWS);
    it_assert_each_row_once(conn, STREAM, ROWS);

    it_relay_stop(old);
    it_relay_stop(standby);
    proxy_stop(&proxy);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_stall");
    TCase *tc = it_tcase(suite, "nats_stall", it_start_servers, 120);
    tcase_add_test(tc, test_frozen_server_acks_time_out_then_each_row_once);
    tcase_add_test(tc, test_leader_without_nats_releases_lock_until_it_returns);
    tcase_add_test(tc, test_standby_takes_over_from_leader_cut_off_from_nats);
    return run_suite(suite);
}
