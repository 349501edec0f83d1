/* The loop never blocks on NATS: /healthz and /metrics answer fast while nats-server is frozen
 * (SIGSTOP) at a reconnect or mid-drain, and while it refuses connections (killed). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM   "IT_NONBLOCKING"
#define PASSWORD "NATSPASS-NB-71c0"
#define WRONG    "NATSPASS-NB-WRONG-2d9e"
/*
 * A loop turn that takes this long is a blocked loop, not a slow one. A loop
 * that waits on NATS waits the whole block: nats.c's connect timeout (5 s)
 * for a server that never says hello, the freeze itself (MEASURE_MS) for a
 * publish into a full socket. A loaded machine stretches an answer by tens
 * or a few hundred ms, never by seconds: the bound sits between the two.
 */
#define FAST_MS 2000
/* Long enough to span a reconnect attempt (the relay retries within about a second). */
#define MEASURE_MS 4000

static const char *const probe_paths[] = {"/healthz", "/metrics", NULL};

/* Every probe answered 200 within FAST_MS over MEASURE_MS; `when` names the situation. */
static void probes_stay_fast(struct it_relay *relay, const char *when)
{
    int requests = 0, failed = 0;
    int64_t slowest =
        it_http_slowest_ms(relay->http_port, probe_paths, MEASURE_MS, &requests, &failed);
    fprintf(stderr, "%s: %d requests, slowest %lld ms, %d not 200\n", when, requests,
            (long long)slowest, failed);
    if (slowest >= FAST_MS || failed > 0)
        it_relay_dump_log(relay);
    ck_assert_msg(requests >= 20, "%s: only %d requests in %d ms", when, requests, MEASURE_MS);
    ck_assert_msg(slowest < FAST_MS, "%s: a probe took %lld ms (loop blocked?)", when,
                  (long long)slowest);
    ck_assert_msg(failed == 0, "%s: %d of %d probes did not answer 200", when, failed, requests);
}

static bool nats_ready(void *arg)
{
    return it_metric(((struct it_relay *)arg)->http_port, "outbox_relay_nats_connected") == 1;
}

/*
 * nats.c gave the connection up (credentials refused twice), so the relay
 * opens a new one; the server is frozen by then: its port accepts the TCP
 * connection but never says hello. The new connection must not be made on
 * the loop (nats.c waits up to its connect timeout for the server's INFO).
 */
START_TEST(test_probes_fast_while_reopening_against_frozen_server)
{
    it_pg_start();
    it_nats_set_config("authorization {\n  user: relay\n  password: \"" PASSWORD "\"\n}\n");
    it_nats_start();
    char path[512], pw[600], url[128];
    snprintf(path, sizeof path, "%s/wrong.password", it_dir());
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(WRONG "\n", f);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(pw, sizeof pw, "OUTBOX_NATS_PASSWORD_FILE=%s", path);
    snprintf(url, sizeof url, "OUTBOX_NATS_URL=nats://127.0.0.1:%d", it_nats_port());
    const char *env[] = {url,
                         "OUTBOX_NATS_USER=relay",
                         pw,
                         "OUTBOX_STREAM=" STREAM,
                         "OUTBOX_STREAM_SUBJECTS=it.nb.>",
                         "OUTBOX_RECONNECT_MAX_MS=1000",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert_msg(it_relay_wait_logged(relay, LOG_MSG_NATS_REOPENING, 1, 15000),
                  "nats.c never gave the refused connection up");
    it_nats_pause();
    probes_stay_fast(relay, "frozen server at a reopen");
    it_nats_resume();
    /* The relay went on trying: each new connection is refused again and said so. */
    ck_assert_msg(it_relay_wait_logged(relay, LOG_MSG_NATS_REOPENING, 3, 30000),
                  "the relay stopped opening new connections");
    ck_assert_int_eq(it_http_status(relay->http_port, "/readyz"), 503);
    it_relay_stop(relay);
}
END_TEST

/* The server dies and its port refuses connections: nats.c reconnects, the loop goes on. */
START_TEST(test_probes_fast_while_server_refuses)
{
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.nb.>",
                         "OUTBOX_RECONNECT_MAX_MS=1000", "OUTBOX_NATS_LOST_MS=60000", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert_msg(it_wait_until(nats_ready, relay, 15000), "the relay never connected");
    it_nats_kill();
    ck_assert_msg(it_relay_wait_logged(relay, LOG_MSG_NATS_DISCONNECTED, 1, 15000),
                  "the relay did not notice the server's death");
    probes_stay_fast(relay, "server killed");
    it_nats_start();
    ck_assert_msg(it_wait_until(nats_ready, relay, 15000), "the relay did not reconnect");
    it_relay_stop(relay);
}
END_TEST

/*
 * Frozen mid-drain: the connection stays up (nats.c notices only after
 * three unanswered pings), publishes pile up in nats.c and the socket.
 */
START_TEST(test_probes_fast_while_server_frozen_mid_drain)
{
    PGconn *conn = it_pg_connect();
    const char *env[] = {"OUTBOX_STREAM=" STREAM, "OUTBOX_STREAM_SUBJECTS=it.nb.>",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=1000", "OUTBOX_NATS_LOST_MS=60000", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert_msg(it_wait_until(nats_ready, relay, 15000), "the relay never connected");
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload)"
                     " SELECT 'it.nb.' || (g %% 4), convert_to(repeat('x', 2000), 'UTF8')"
                     " FROM generate_series(1, 20000) g");
    it_pg_wait_published_reach(conn, 100, 15000, "before the freeze: the drain did not get going");
    it_nats_pause();
    ck_assert_msg(it_pg_published(conn) < 20000, "the drain finished before the freeze");
    probes_stay_fast(relay, "frozen server mid-drain");
    it_nats_resume();
    int64_t got = it_pg_wait_published(conn, 20000, 60000);
    ck_assert_msg(got == 20000, "%lld of 20000 rows published after the freeze", (long long)got);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("loop_nonblocking");
    TCase *alone = it_tcase(suite, "own_servers", it_setup, 120);
    tcase_add_test(alone, test_probes_fast_while_reopening_against_frozen_server);
    TCase *tc = it_tcase(suite, "servers", it_start_servers, 120);
    tcase_add_test(tc, test_probes_fast_while_server_refuses);
    tcase_add_test(tc, test_probes_fast_while_server_frozen_mid_drain);
    return run_suite(suite);
}
