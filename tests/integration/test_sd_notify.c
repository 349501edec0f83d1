/* systemd notifications through a fake NOTIFY_SOCKET: READY=1, STATUS=, WATCHDOG=1 only while
 * healthy, RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM; unknown OUTBOX_* variables warned. */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_SD"

static int notify_fd = -1;
static char notify_env[300];

static void setup(void)
{
    it_start_servers();
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int n = snprintf(a.sun_path, sizeof a.sun_path, "%s/notify.sock", it_dir());
    ck_assert_int_lt(n, (int)sizeof a.sun_path);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(notify_fd, 0);
    ck_assert_int_eq(bind(notify_fd, (struct sockaddr *)&a, sizeof a), 0);
    snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s", a.sun_path);
}

/*
 * Reads datagrams for up to timeout_ms; returns as soon as one holds the
 * line `want` (true). Every datagram read is appended to `seen` when given.
 */
static bool receive(const char *want, int timeout_ms, char *seen, size_t seen_len)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - it_now_ms());
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = notify_fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        char msg[1024];
        ssize_t r = recv(notify_fd, msg, sizeof msg - 1, 0);
        ck_assert_int_gt(r, 0);
        msg[r] = '\0';
        if (seen != NULL) {
            size_t used = strlen(seen);
            snprintf(seen + used, seen_len - used, "%s\n--\n", msg);
        }
        /* A line of the datagram, not a substring of one. */
        for (char *line = strtok(msg, "\n"); line != NULL; line = strtok(NULL, "\n"))
            if (strcmp(line, want) == 0 ||
                (want[strlen(want) - 1] == '*' && !strncmp(line, want, strlen(want) - 1)))
                return true;
    }
}

static int healthz_port;
static bool healthz_failing(void *arg)
{
    return it_http_status(healthz_port, "/healthz") == 503;
}

START_TEST(test_notifications)
{
    const char *subjects[] = {"it.sd.>", NULL};
    it_js_add_stream(STREAM, subjects);
    const char *env[] = {notify_env,
                         "WATCHDOG_USEC=1000000",
                         "OUTBOX_STALL_TIMEOUT_MS=1000",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=60000",
                         "OUTBOX_TYPO_SETTING=1",
                         "OUTBOX_POLL_INTERVALL_MS=50",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    healthz_port = relay->http_port;
    static char seen[65536];

    ck_assert_msg(receive("READY=1", 15000, seen, sizeof seen), "no READY=1; got:\n%s", seen);
    ck_assert_msg(strstr(seen, "STATUS=") != NULL, "no STATUS= before READY=1:\n%s", seen);
    ck_assert_msg(receive("STATUS=leader: relaying", 10000, seen, sizeof seen) ||
                      strstr(seen, "STATUS=leader: relaying") != NULL,
                  "never leader:\n%s", seen);
    /* Pings at half the watchdog interval: several within 3 s. */
    for (int k = 0; k < 3; k++)
        ck_assert_msg(receive("WATCHDOG=1", 2000, seen, sizeof seen), "no WATCHDOG=1:\n%s", seen);

    /* Unknown variables, one warn line each, with a suggestion for a typo. */
    ck_assert(it_relay_wait_log(relay, "\"variable\":\"OUTBOX_TYPO_SETTING\"", 1, 5000));
    ck_assert(it_relay_wait_log(relay,
                                "\"variable\":\"OUTBOX_POLL_INTERVALL_MS\","
                                "\"did_you_mean\":\"OUTBOX_POLL_INTERVAL_MS\"",
                                1, 5000));
    char *log = it_relay_log(relay);
    ck_assert_msg(strstr(log, "\"level\":\"warn\",\"msg\":\"" LOG_MSG_UNKNOWN_SETTING "\"") != NULL,
                  "%s", log);
    free(log);

    /* A stalled leader: NATS frozen with rows in flight, so no outcome arrives. /healthz fails,
     * the status says stalled and the pings stop, so systemd's watchdog would restart it. */
    it_nats_pause();
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.sd.' || g, 'p'"
                     " FROM generate_series(1, 10) g");
    ck_assert(it_wait_until(healthz_failing, NULL, 15000));
    seen[0] = '\0';
    ck_assert_msg(receive("STATUS=leader: stalled*", 3000, seen, sizeof seen), "%s", seen);
    seen[0] = '\0';
    /* Three watchdog intervals of silence. */
    ck_assert_msg(!receive("WATCHDOG=1", 1500, seen, sizeof seen), "pinged while stalled:\n%s",
                  seen);

    /* NATS back: the acks arrive, the pings resume. */
    it_nats_resume();
    ck_assert_msg(receive("WATCHDOG=1", 15000, seen, sizeof seen), "no ping after recovery:\n%s",
                  seen);
    it_pg_wait_published(conn, 10, 15000);

    /* systemctl reload: RELOADING=1 then READY=1. */
    seen[0] = '\0';
    it_relay_signal(relay, SIGHUP);
    ck_assert_msg(receive("RELOADING=1", 5000, seen, sizeof seen), "%s", seen);
    ck_assert_msg(strstr(seen, "MONOTONIC_USEC=") != NULL, "%s", seen);
    ck_assert_msg(receive("READY=1", 5000, seen, sizeof seen), "%s", seen);

    /* SIGTERM: STOPPING=1 (the datagram waits in the socket after the relay exits). */
    it_relay_stop(relay);
    seen[0] = '\0';
    ck_assert_msg(receive("STOPPING=1", 5000, seen, sizeof seen), "%s", seen);
    PQfinish(conn);
}
END_TEST

/* Without NOTIFY_SOCKET nothing is sent and nothing is said about systemd. */
START_TEST(test_no_socket)
{
    const char *env[] = {"WATCHDOG_USEC=1000000", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    ck_assert(it_wait_metric(relay->http_port, "outbox_relay_leader", 1, 15000));
    ck_assert(!it_relay_log_contains(relay, "systemd"));
    ck_assert(!it_relay_logged(relay, LOG_MSG_UNKNOWN_SETTING));
    it_relay_stop(relay);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("sd_notify");
    TCase *tc = it_tcase(suite, "sd_notify", setup, 120);
    tcase_add_test(tc, test_notifications);
    tcase_add_test(tc, test_no_socket);
    return run_suite(suite);
}
