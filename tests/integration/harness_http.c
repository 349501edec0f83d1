/* Integration-test harness: an HTTP client for the relay's probes and metrics. */
#include "harness_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- HTTP client ---- */

/* No Check calls below: the client is used from the tests' own threads too. */
int it_http_raw(int port, const void *request, size_t len, int timeout_ms, struct it_http *out)
{
    memset(out, 0, sizeof *out);
    int64_t deadline = it_now_ms() + timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    /* A server that answers early (431) may close before taking every byte. */
    const char *p = request;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    /* Nothing more comes: a server waiting for the rest of a head sees the end at once. */
    shutdown(fd, SHUT_WR);
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap);
    bool timed_out = false;
    while (buf != NULL) {
        if (got + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
        }
        int left = (int)(deadline - it_now_ms());
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, left) == 0) {
            timed_out = true;
            break;
        }
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EOF, or a reset after the server closed */
        got += (size_t)n;
    }
    close(fd);
    if (buf == NULL)
        return -1;
    buf[got] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    int status = 0;
    if (got == 0 || end == NULL || sscanf(buf, "HTTP/1.1 %d ", &status) != 1) {
        free(buf);
        out->body = strdup("");
        out->status = timed_out ? -1 : (got == 0 ? 0 : -2);
        return out->status;
    }
    *end = '\0';
    out->head = buf;
    out->body_len = got - (size_t)(end + 4 - buf);
    out->body = malloc(out->body_len + 1);
    if (out->body != NULL) {
        memcpy(out->body, end + 4, out->body_len);
        out->body[out->body_len] = '\0';
    }
    /* A body shorter than its Content-Length is a cut-off answer. */
    const char *cl = strcasestr(out->head, "\r\nContent-Length:");
    if (cl == NULL || strtoul(cl + 17, NULL, 10) != out->body_len || out->body == NULL)
        status = -2;
    out->status = status;
    return status;
}

int it_http_get(int port, const char *path, int timeout_ms, struct it_http *out)
{
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    return it_http_raw(port, req, (size_t)n, timeout_ms, out);
}

int it_http_status(int port, const char *path)
{
    struct it_http r;
    int status = it_http_get(port, path, 5000, &r);
    it_http_free(&r);
    return status;
}

const char *it_http_header(const struct it_http *r, const char *name, char *buf, size_t len)
{
    if (r->head == NULL)
        return NULL;
    size_t n = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, name, n) == 0 && line[2 + n] == ':') {
            const char *v = line + 3 + n;
            while (*v == ' ')
                v++;
            snprintf(buf, len, "%.*s", (int)strcspn(v, "\r\n"), v);
            return buf;
        }
    }
    return NULL;
}

void it_http_free(struct it_http *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

double it_metric(int port, const char *name)
{
    struct it_http r;
    double v = -1;
    if (it_http_get(port, "/metrics", 2000, &r) == 200) {
        /* The unlabelled sample, or the sum of a family split by labels (e.g. reason). */
        size_t n = strlen(name);
        for (const char *p = r.body; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
            if (strncmp(p, name, n) != 0 || (p[n] != ' ' && p[n] != '{'))
                continue;
            const char *value = p[n] == ' ' ? p + n + 1 : strstr(p, "} ");
            if (value == NULL)
                continue;
            v = (v < 0 ? 0 : v) + strtod(value[0] == '}' ? value + 2 : value, NULL);
        }
    }
    it_http_free(&r);
    return v;
}

double it_metric_reason(int port, const char *family, const char *reason)
{
    char name[160];
    snprintf(name, sizeof name, "outbox_relay_%s{reason=\"%s\"}", family, reason);
    return it_metric(port, name);
}

struct it_metric_want {
    int port;
    const char *name;
    double want;
};

static bool it_metric_is(void *arg)
{
    struct it_metric_want *w = arg;
    return it_metric(w->port, w->name) == w->want;
}

bool it_wait_metric(int port, const char *name, double want, int timeout_ms)
{
    struct it_metric_want w = {port, name, want};
    return it_wait_until(it_metric_is, &w, timeout_ms);
}

int64_t it_http_slowest_ms(int port, const char *const *paths, int duration_ms, int *requests,
                           int *failed)
{
    int64_t slowest = 0, until = it_now_ms() + duration_ms;
    size_t npaths = 0;
    while (paths[npaths] != NULL)
        npaths++;
    *requests = *failed = 0;
    for (size_t i = 0; it_now_ms() < until; i++) {
        const char *path = paths[i % npaths];
        struct it_http r;
        int64_t t0 = it_now_ms();
        int status = it_http_get(port, path, 10000, &r);
        int64_t took = it_now_ms() - t0;
        it_http_free(&r);
        (*requests)++;
        if (status != 200)
            (*failed)++;
        if (took > slowest)
            slowest = took;
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000000};
        nanosleep(&pause, NULL);
    }
    return slowest;
}

void it_scrape_metrics(int port, struct it_scrape *s)
{
    struct it_http r;
    int status = it_http_get(port, "/metrics", 5000, &r);
    ck_assert_msg(status == 200, "GET /metrics: %d", status);
    prom_parse(r.body, r.body_len, &s->e);
    free(s->text);
    s->text = r.body;
    r.body = NULL;
    it_http_free(&r);
}

double it_scraped(const struct it_scrape *s, const char *family, const char *label,
                  const char *value)
{
    return prom_sample_get(&s->e, family, label, value)->value;
}
