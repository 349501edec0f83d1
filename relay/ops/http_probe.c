/* A one-shot HTTP/1.0 GET over a plain socket: the binary probes itself (--probe). */
#include "outbox_relay/ops/http_probe.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "outbox_relay/ops/http.h"

static long long probe_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for `events` until the deadline; false on timeout or error. */
static bool probe_wait(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - probe_now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

int http_probe(const char *addr, const char *path, int timeout_ms, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (http_parse_addr(addr, host, sizeof(host), &port) < 0 || port == 0) {
        snprintf(err, errlen, "OUTBOX_HTTP_ADDR \"%s\" is not host:port", addr);
        return -1;
    }
    /* The listener's wildcard address is reached on loopback. */
    if (host[0] == '\0' || !strcmp(host, "0.0.0.0"))
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (!strcmp(host, "::"))
        snprintf(host, sizeof(host), "::1");
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, service, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "%s: %s", host, gai_strerror(gai));
        return -1;
    }
    long long deadline = probe_now_ms() + timeout_ms;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int status = -1;
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        goto out;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s:%d: %s", host, port, strerror(errno));
        goto out;
    }
    int soerr = 0;
    socklen_t slen = sizeof(soerr);
    if (!probe_wait(fd, POLLOUT, deadline) ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) < 0 || soerr != 0) {
        snprintf(err, errlen, "connect %s:%d: %s", host, port,
                 soerr ? strerror(soerr) : "timed out");
        goto out;
    }
    char request[600];
    int n = snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    if (n < 0 || (size_t)n >= sizeof(request) || send(fd, request, (size_t)n, MSG_NOSIGNAL) != n) {
        snprintf(err, errlen, "cannot send the request");
        goto out;
    }
    /* Only the status line matters: "HTTP/1.x NNN ...". */
    char head[64] = {0};
    size_t got = 0;
    while (got < sizeof(head) - 1 && memchr(head, '\n', got) == NULL) {
        if (!probe_wait(fd, POLLIN, deadline)) {
            snprintf(err, errlen, "no answer within %d ms", timeout_ms);
            goto out;
        }
        ssize_t r = recv(fd, head + got, sizeof(head) - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    head[got] = '\0';
    int code;
    if (sscanf(head, "HTTP/1.%*1[01] %3d", &code) != 1) {
        snprintf(err, errlen, "not an HTTP answer");
        goto out;
    }
    status = code;
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return status;
}
