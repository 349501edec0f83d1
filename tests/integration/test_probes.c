/* /healthz and /readyz in every state: unconnected, connected, NATS or PostgreSQL down, stalled
 * with a backlog, idle, rows held back, standby. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_PROBES"

struct relay_http {
    struct it_relay *relay;
    int port;
};

/* The relay with its HTTP listener on a free loopback port, plus `extra` settings. */
static struct relay_http start_relay(const char *const *extra)
{
    struct it_relay *relay = it_relay_start_http(extra, NULL);
    return (struct relay_http){.relay = relay, .port = relay->http_port};
}

struct probe_want {
    int port;
    const char *path;
    int status;
    int last;
    char body[256]; /* the last answer's body */
};

static bool probe_is(void *arg)
{
    struct probe_want *w = arg;
    struct it_http r;
    w->last = it_http_get(w->port, w->path, 2000, &r);
    snprintf(w->body, sizeof w->body, "%s", r.body ? r.body : "");
    it_http_free(&r);
    return w->last == w->status;
}

/* Waits until GET path answers `status` (and a body containing `body`, if set). */
static void wait_probe(int port, const char *path, int status, int timeout_ms, const char *body)
{
    struct probe_want w = {.port = port, .path = path, .status = status};
    ck_assert_msg(it_wait_until(probe_is, &w, timeout_ms),
                  "%s did not answer %d within %d ms; last %d: %s", path, status, timeout_ms,
                  w.last, w.body);
    if (body != NULL)
        ck_assert_msg(strstr(w.body, body) != NULL, "%s answered %d with \"%s\", want \"%s\"", path,
                      status, w.body, body);
}

/* GET path answers `status` on every call for duration_ms: a property held over time. */
static void probe_stays(int port, const char *path, int status, int duration_ms)
{
    int64_t end = it_now_ms() + duration_ms;
    int calls = 0;
    do {
        struct probe_want w = {.port = port, .path = path, .status = status};
        ck_assert_msg(probe_is(&w), "%s answered %d (%s) after %d calls, want %d all along", path,
                      w.last, w.body, calls, status);
        calls++;
        usleep(50 * 1000);
    } while (it_now_ms() < end);
}

struct metric_want {
    int port;
    const char *name;
    double at_least;
};

static bool metric_reaches(void *arg)
{
    struct metric_want *w = arg;
    return it_metric(w->port, w->name) >= w->at_least;
}

static void wait_metric(int port, const char *name, double at_least, int timeout_ms)
{
    struct metric_want w = {port, name, at_least};
    ck_assert_msg(it_wait_until(metric_reaches, &w, timeout_ms), "%s did not reach %g: %g", name,
                  at_least, it_metric(port, name));
}

START_TEST(test_probes_follow_the_connections)
{
    const char *subjects[] = {"it.probes.>", NULL};
    it_js_add_stream(STREAM, subjects);

    /* Nothing listens on the PostgreSQL port yet. */
    char nowhere[200];
    snprintf(nowhere, sizeof nowhere, "OUTBOX_PG_URL=postgresql://postgres@127.0.0.1:%d/outbox_it",
             it_free_port());
    const char *unconnected_env[] = {nowhere, "OUTBOX_RECONNECT_MAX_MS=200", NULL};
    struct relay_http early = start_relay(unconnected_env);
    wait_probe(early.port, "/readyz", 503, 10000, "postgresql not connected");
    probe_stays(early.port, "/readyz", 503, 500);
    wait_probe(early.port, "/healthz", 200, 1000, "ok");
    ck_assert_int_eq(it_metric(early.port, "outbox_relay_pg_connected"), 0);
    ck_assert_int_eq(it_metric(early.port, "outbox_relay_leader"), 0);
    it_relay_stop(early.relay);

    const char *env[] = {"OUTBOX_RECONNECT_MAX_MS=200", "OUTBOX_STALL_TIMEOUT_MS=1000",
                         "OUTBOX_METRICS_INTERVAL_MS=100", NULL};
    struct relay_http rh = start_relay(env);
    wait_probe(rh.port, "/readyz", 200, 10000, "ok");
    wait_probe(rh.port, "/healthz", 200, 1000, "ok");
    wait_metric(rh.port, "outbox_relay_leader", 1, 10000);

    /* NATS down: not ready; an idle relay is still alive. */
    it_nats_stop();
    wait_probe(rh.port, "/readyz", 503, 10000, "nats not connected");
    ck_assert_int_eq(it_metric(rh.port, "outbox_relay_nats_connected"), 0);
    wait_probe(rh.port, "/healthz", 200, 1000, NULL);
    it_nats_start();
    wait_probe(rh.port, "/readyz", 200, 15000, "ok");

    /* PostgreSQL down: not ready, and no longer the leader, so not a stall either. */
    it_pg_stop();
    wait_probe(rh.port, "/readyz", 503, 10000, "postgresql not connected");
    ck_assert_int_eq(it_metric(rh.port, "outbox_relay_pg_connected"), 0);
    probe_stays(rh.port, "/healthz", 200, 1500);
    it_pg_start();
    wait_probe(rh.port, "/readyz", 200, 15000, "ok");
    wait_metric(rh.port, "outbox_relay_leader", 1, 10000);

    /* And it relays again. */
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload)"
                     " SELECT 'it.probes.after', 'x' FROM generate_series(1, 10)");
    ck_assert_int_eq(it_pg_wait_published(conn, 10, 15000), 10);
    wait_probe(rh.port, "/healthz", 200, 1000, "ok");
    PQfinish(conn);
    it_relay_stop(rh.relay);
}
END_TEST

START_TEST(test_stall_with_backlog_is_unhealthy_idle_and_standby_are_not)
{
    const char *subjects[] = {"it.probes.>", NULL};
    it_js_add_stream(STREAM, subjects);
    /* A publish into a frozen server waits for its ack far longer than the stall timeout. The
     * fallback poll is slower than the stall timeout: only the sample tells idle from stuck. */
    const char *env[] = {"OUTBOX_STALL_TIMEOUT_MS=1000",   "OUTBOX_PUBLISH_TIMEOUT_MS=60000",
                         "OUTBOX_METRICS_INTERVAL_MS=100", "OUTBOX_POLL_INTERVAL_MS=5000",
                         "OUTBOX_LEADER_RETRY_MS=200",     NULL};
    struct relay_http leader = start_relay(env);
    wait_probe(leader.port, "/readyz", 200, 10000, "ok");
    wait_metric(leader.port, "outbox_relay_leader", 1, 10000);
    struct relay_http standby = start_relay(env);
    /* Another relay holds the lock: this one is ready, and alive, as a standby. */
    wait_probe(standby.port, "/readyz", 200, 10000, "ok");
    ck_assert_int_eq(it_metric(standby.port, "outbox_relay_leader"), 0);

    /* Idle, well past the stall timeout: healthy. */
    probe_stays(leader.port, "/healthz", 200, 1500);

    /* A backlog that may not move yet is not a stall: a failed row retried in an hour holds
     * its key's later row, and another failed row waits for its retry time. */
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key, status, attempts,"
                     "                    next_attempt_at, last_error)"
                     " VALUES ('it.probes.held', 'a', 'held', 'failed', 1,"
                     "         now() + interval '1 hour', 'test'),"
                     "        ('it.probes.later', 'b', NULL, 'failed', 1,"
                     "         now() + interval '1 hour', 'test')");
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, ordering_key)"
                     " VALUES ('it.probes.held', 'c', 'held')");
    wait_metric(leader.port, "outbox_relay_pending", 3, 5000);
    ck_assert_int_eq(it_metric(leader.port, "outbox_relay_pending"), 3);
    ck_assert(it_metric(leader.port, "outbox_relay_oldest_pending_age_seconds") >= 0);
    probe_stays(leader.port, "/healthz", 200, 1500);
    ck_assert_int_eq(it_pg_published(conn), 0);

    /* Frozen NATS: the TCP connection stays up, publishes go out, no ack comes back. */
    it_nats_pause();
    int64_t paused_at = it_now_ms();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload)"
                     " SELECT 'it.probes.stall', 'x' FROM generate_series(1, 5)");
    wait_metric(leader.port, "outbox_relay_inflight", 5, 5000);
    wait_probe(leader.port, "/healthz", 503, 5000, "stalled");
    int64_t stalled_after = it_now_ms() - paused_at;
    /* The clock starts at the last sign of progress: a sample finding nothing to do, up to one
     * sample interval (100 ms) before the rows came. */
    ck_assert_msg(stalled_after >= 1000 - 150, "unhealthy after %lld ms, before the stall timeout",
                  (long long)stalled_after);
    /* Still connected as far as anyone can tell: ready, but not making progress. */
    wait_probe(leader.port, "/readyz", 200, 1000, NULL);
    /* The standby sees the same due rows, well past the stall timeout, but has nothing to
     * stall on; the leader stays stalled meanwhile. */
    probe_stays(standby.port, "/healthz", 200, 1500);
    wait_probe(leader.port, "/healthz", 503, 1000, "stalled");
    ck_assert(it_metric(standby.port, "outbox_relay_pending") >= 5);

    it_nats_resume();
    wait_probe(leader.port, "/healthz", 200, 15000, "ok");
    ck_assert_int_eq(it_pg_wait_int(conn,
                                    "SELECT count(*) FROM outbox WHERE subject = 'it.probes.stall'"
                                    " AND status = 'published'",
                                    5, 15000),
                     5);
    /* Drained again, past the stall timeout: healthy. */
    probe_stays(leader.port, "/healthz", 200, 1500);
    fprintf(stderr, "probes: stall reported %lld ms after NATS froze (timeout 1000 ms)\n",
            (long long)stalled_after);
    PQfinish(conn);
    it_relay_stop(standby.relay);
    it_relay_stop(leader.relay);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("probes");
    TCase *tc = it_tcase(suite, "probes", it_start_servers, 180);
    tcase_add_test(tc, test_probes_follow_the_connections);
    tcase_add_test(tc, test_stall_with_backlog_is_unhealthy_idle_and_standby_are_not);
    return run_suite(suite);
}
