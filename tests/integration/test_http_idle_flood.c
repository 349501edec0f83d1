/* Probes under a flood of idle connections: a peer holding more silent connections than the
 * listener serves, reopening each one the relay closes, must not keep /healthz from answering. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

#define IDLE_CONNS     400 /* more than HTTP_MAX_CONNECTIONS */
#define PROBES         20
#define PROBE_TIMEOUT  2000 /* ms: a kubelet probe's timeoutSeconds */
#define FLOOD_PAUSE_MS 20   /* the flood's poll tick */

static int http_port;
static atomic_bool flood_over;
static atomic_int flood_opened; /* connections opened, reopenings included */

/* A non-blocking connect to the listener; -1 if the socket could not even be made. */
static int open_idle(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    atomic_fetch_add(&flood_opened, 1);
    return fd;
}

/* Holds IDLE_CONNS connections that never send a byte; each one the relay closes (or that
 * fails to connect) is opened again at once. */
static void *flood_main(void *arg)
{
    (void)arg;
    int fds[IDLE_CONNS];
    for (int i = 0; i < IDLE_CONNS; i++)
        fds[i] = open_idle();
    while (!atomic_load(&flood_over)) {
        struct pollfd pfd[IDLE_CONNS];
        for (int i = 0; i < IDLE_CONNS; i++)
            pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        poll(pfd, IDLE_CONNS, FLOOD_PAUSE_MS);
        for (int i = 0; i < IDLE_CONNS; i++) {
            if (fds[i] >= 0 && pfd[i].revents == 0)
                continue;
            if (fds[i] >= 0) {
                char b[64];
                ssize_t n = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    continue;
                close(fds[i]);
            }
            fds[i] = open_idle();
        }
    }
    for (int i = 0; i < IDLE_CONNS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

static bool healthz_ok(void *arg)
{
    (void)arg;
    return it_http_status(http_port, "/healthz") == 200;
}

static bool readyz_ok(void *arg)
{
    (void)arg;
    return it_http_status(http_port, "/readyz") == 200;
}

static bool flood_reopening(void *arg)
{
    /* Every connection opened, and the relay has closed (and the flood reopened) as many. */
    (void)arg;
    return atomic_load(&flood_opened) >= 2 * IDLE_CONNS;
}

START_TEST(test_probes_answer_under_idle_flood)
{
    struct it_relay *relay = it_relay_start_http(NULL, NULL);
    http_port = relay->http_port;
    ck_assert_msg(it_wait_until(healthz_ok, NULL, 10000), "the listener never answered");

    pthread_t flood;
    ck_assert_int_eq(pthread_create(&flood, NULL, flood_main, NULL), 0);
    ck_assert_msg(it_wait_until(flood_reopening, NULL, 30000),
                  "the flood never filled the listener (%d opened)", atomic_load(&flood_opened));

    int answered = 0, first_failure = 200;
    for (int i = 0; i < PROBES; i++) {
        struct it_http r;
        int status = it_http_get(http_port, "/healthz", PROBE_TIMEOUT, &r);
        it_http_free(&r);
        if (status == 200)
            answered++;
        else if (first_failure == 200)
            first_failure = status;
    }
    int opened = atomic_load(&flood_opened);
    atomic_store(&flood_over, true);
    pthread_join(flood, NULL);
    fprintf(stderr, "idle flood: %d connections opened; %d of %d probes answered\n", opened,
            answered, PROBES);

    ck_assert_msg(answered == PROBES,
                  "%d of %d /healthz probes answered within %d ms behind %d idle connections "
                  "(first failure: status %d)",
                  answered, PROBES, PROBE_TIMEOUT, IDLE_CONNS, first_failure);
    /* Still serving, and connected to both servers (it may still be connecting under load). */
    ck_assert_msg(it_wait_until(readyz_ok, NULL, 15000), "/readyz never answered 200");
    it_relay_stop(relay);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("http_idle_flood");
    TCase *tc = it_tcase(suite, "http_idle_flood", it_start_servers, 120);
    tcase_add_test(tc, test_probes_answer_under_idle_flood);
    return run_suite(suite);
}
