/* The HTTP listener under abuse: 1,000 concurrent scrapes, malformed and oversized requests,
 * slow-loris clients, random bytes and a connection flood, while the relay drains 20,000 rows. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM          "IT_HTTP"
#define ROWS            20000
#define SCRAPERS        4
#define SCRAPES_EACH    250 /* at least: 1,000 in all, and on until the drain ends */
#define WAVE            40  /* connections a scraper holds open at once */
#define LORIS           40
#define LORIS_TRICKLING 10
#define MAX_CONNECTIONS 256 /* HTTP_MAX_CONNECTIONS */
#define FLOOD           300
#define SERVER_TIMEOUT  5000 /* the listener's per-connection deadline, ms */

static int http_port;
static atomic_bool drain_over;
static atomic_int mid_drain_seen; /* scrapes, across scrapers, that saw a partial drain */

/* A blocking loopback connection with receive/send timeouts, or -1. */
static int connect_to(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads until EOF (or an error/timeout, then *clean = false). Returns the bytes, malloc'd. */
static char *read_all(int fd, size_t *len, bool *clean)
{
    size_t cap = 8192, got = 0;
    char *buf = malloc(cap);
    *clean = true;
    for (;;) {
        if (got + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            /* A reset after nothing was sent is a clean refusal; a timeout is not. */
            *clean = errno == ECONNRESET && got == 0;
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* ---- scrapers: many concurrent complete scrapes ---- */

struct scraper {
    pthread_t thread;
    int attempted;
    int ok;            /* complete 200 answers with a whole exposition */
    int refused;       /* closed without a byte */
    int broken;        /* anything else: cut off, garbage, timeout */
    int mid_drain;     /* answers that saw 0 < published_total < ROWS */
    char example[200]; /* the first broken answer */
};

/* A whole /metrics answer: status, length, and the exposition's last line. */
static bool complete_metrics(const char *buf, size_t len, double *published)
{
    const char *end = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) != 0 || end == NULL)
        return false;
    const char *cl = strstr(buf, "\r\nContent-Length: ");
    if (cl == NULL || cl > end)
        return false;
    size_t body = len - (size_t)(end + 4 - buf);
    if (strtoul(cl + 18, NULL, 10) != body)
        return false;
    const char *p = strstr(end, "\noutbox_relay_published_total ");
    if (p == NULL)
        return false;
    *published = strtod(p + 30, NULL);
    const char *last = "outbox_relay_build_info{version=\"" OUTBOX_RELAY_VERSION "\"} 1\n";
    /* Whole: the build_info line came, and the body ends with a full line
     * (the process_* families follow it). */
    return strstr(end, last) != NULL && buf[len - 1] == '\n';
}

static void *scraper_main(void *arg)
{
    struct scraper *s = arg;
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n";
    for (int done = 0;; done += WAVE) {
        if (done >= SCRAPES_EACH && (atomic_load(&drain_over) || done >= 40 * SCRAPES_EACH))
            break;
        int n = WAVE;
        s->attempted += n;
        int fds[WAVE];
        for (int i = 0; i < n; i++) {
            fds[i] = connect_to(http_port, 10000);
            if (fds[i] >= 0 && !send_all(fds[i], req, sizeof req - 1)) {
                /* Refused before the request went out. */
                close(fds[i]);
                fds[i] = -2;
            }
        }
        for (int i = 0; i < n; i++) {
            if (fds[i] == -1) {
                s->broken++;
                continue;
            }
            if (fds[i] == -2) {
                s->refused++;
                continue;
            }
            size_t len;
            bool clean;
            char *buf = read_all(fds[i], &len, &clean);
            close(fds[i]);
            double published = -1;
            if (complete_metrics(buf, len, &published)) {
                s->ok++;
                if (published > 0 && published < ROWS) {
                    s->mid_drain++;
                    atomic_fetch_add(&mid_drain_seen, 1);
                }
            } else if (len == 0 && clean) {
                s->refused++;
            } else {
                if (s->broken++ == 0)
                    snprintf(s->example, sizeof s->example, "%zu bytes: %.150s", len, buf);
            }
            free(buf);
        }
    }
    return NULL;
}

/* ---- slow loris: partial heads that never finish ---- */

struct loris {
    pthread_t thread;
    int opened;
    int closed_in_time; /* closed by the server between 0.8x and 2x its deadline */
    int64_t min_ms, max_ms;
    int64_t healthz_ms; /* a normal probe's latency while every loris is held */
    int healthz_status;
};

static void *loris_main(void *arg)
{
    struct loris *l = arg;
    int fds[LORIS];
    int64_t opened_at[LORIS], closed_at[LORIS];
    static const char partial[] = "GET /metrics HTTP/1.1\r\nHost: relay\r\nX-Slow: ";
    for (int i = 0; i < LORIS; i++) {
        fds[i] = connect_to(http_port, 10000);
        opened_at[i] = it_now_ms();
        closed_at[i] = 0;
        if (fds[i] >= 0 && send_all(fds[i], partial, sizeof partial - 1))
            l->opened++;
    }
    int64_t t0 = it_now_ms();
    struct it_http r;
    l->healthz_status = it_http_get(http_port, "/healthz", 5000, &r);
    l->healthz_ms = it_now_ms() - t0;
    it_http_free(&r);

    /* Wait for the server to close each one; some keep trickling a byte now and then. */
    int open = LORIS;
    int64_t give_up = it_now_ms() + 4 * SERVER_TIMEOUT;
    while (open > 0 && it_now_ms() < give_up) {
        struct pollfd pfd[LORIS];
        for (int i = 0; i < LORIS; i++)
            pfd[i] =
                (struct pollfd){.fd = closed_at[i] || fds[i] < 0 ? -1 : fds[i], .events = POLLIN};
        poll(pfd, LORIS, 300);
        for (int i = 0; i < LORIS; i++) {
            if (pfd[i].fd < 0)
                continue;
            if (pfd[i].revents) {
                char b[256];
                ssize_t n = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
                if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
                    closed_at[i] = it_now_ms();
                    open--;
                }
            } else if (i < LORIS_TRICKLING) {
                send(fds[i], "a", 1, MSG_NOSIGNAL);
            }
        }
    }
    l->min_ms = INT64_MAX;
    for (int i = 0; i < LORIS; i++) {
        if (fds[i] < 0)
            continue;
        close(fds[i]);
        if (!closed_at[i])
            continue;
        int64_t held = closed_at[i] - opened_at[i];
        l->min_ms = held < l->min_ms ? held : l->min_ms;
        l->max_ms = held > l->max_ms ? held : l->max_ms;
        if (held >= SERVER_TIMEOUT * 8 / 10 && held <= SERVER_TIMEOUT * 2)
            l->closed_in_time++;
    }
    return NULL;
}

/* ---- malformed, oversized and random requests ---- */

struct abuse {
    pthread_t thread;
    int checked;
    int wrong;
    char first_wrong[300];
    int random_sent;
    int random_answered; /* 400 or 431 */
    int random_closed;   /* closed without an answer */
};

static void abuse_expect(struct abuse *a, const char *what, const char *req, size_t len, int want)
{
    struct it_http r;
    int got = it_http_raw(http_port, req, len, 3 * SERVER_TIMEOUT, &r);
    a->checked++;
    if (got != want && a->wrong++ == 0)
        snprintf(a->first_wrong, sizeof a->first_wrong, "%s: got %d, want %d (%.100s)", what, got,
                 want, r.head ? r.head : "");
    it_http_free(&r);
}

static void *abuse_main(void *arg)
{
    struct abuse *a = arg;
    static const struct {
        const char *what, *req;
        int want;
    } cases[] = {
        {"no slash", "GET metrics HTTP/1.1\r\n\r\n", 400},
        {"one word", "GARBAGE\r\n\r\n", 400},
        {"HTTP/2", "GET /metrics HTTP/2.0\r\n\r\n", 400},
        {"no version", "GET /metrics\r\n\r\n", 400},
        {"space in header name", "GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n", 400},
        {"empty header name", "GET /metrics HTTP/1.1\r\n: x\r\n\r\n", 400},
        {"folded header", "GET /metrics HTTP/1.1\r\nA: b\r\n  c\r\n\r\n", 400},
        {"bare CR", "GET /metrics HTTP/1.1\r\nHost: x\rY\r\n\r\n", 400},
        {"control byte", "GET /metrics HTTP/1.1\r\nX: \x01\r\n\r\n", 400},
        {"fragment", "GET /metrics#x HTTP/1.1\r\n\r\n", 400},
        {"TLS hello", "\x16\x03\x01\x02\x31\x01\x02\x2d\xfc\x03\x03", 400},
        {"POST", "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405},
        {"DELETE", "DELETE /healthz HTTP/1.1\r\n\r\n", 405},
        {"unknown path", "GET /admin HTTP/1.1\r\n\r\n", 404},
        {"query string", "GET /healthz?verbose=1 HTTP/1.1\r\n\r\n", 200},
        {"HTTP/1.0, bare LF", "GET /readyz HTTP/1.0\n\n", 200},
        {"unfinished head", "GET /metrics HTTP/1.1\r\nHost: x\r\n", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        abuse_expect(a, cases[k].what, cases[k].req, strlen(cases[k].req), cases[k].want);

    /* HEAD: the head of a 200 with the full Content-Length, and no body. */
    struct it_http r;
    static const char head[] = "HEAD /metrics HTTP/1.1\r\n\r\n";
    it_http_raw(http_port, head, sizeof head - 1, 3 * SERVER_TIMEOUT, &r);
    a->checked++;
    if ((r.head == NULL || strncmp(r.head, "HTTP/1.1 200 ", 13) != 0 || r.body_len != 0) &&
        a->wrong++ == 0)
        snprintf(a->first_wrong, sizeof a->first_wrong, "HEAD: %.100s", r.head ? r.head : "-");
    it_http_free(&r);

    /* Oversized: one 9 KB header, many small ones, and 64 KB of header; just below fits. */
    char *big = malloc(70000);
    int n = snprintf(big, 70000, "GET /metrics HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', 9000);
    strcpy(big + n + 9000, "\r\n\r\n");
    abuse_expect(a, "9 KB header", big, strlen(big), 431);
    n = snprintf(big, 70000, "GET /metrics HTTP/1.1\r\n");
    for (int i = 0; i < 400; i++)
        n += snprintf(big + n, 70000 - (size_t)n, "X-Header-%d: vvvvvvvvvvvvvvvv\r\n", i);
    strcpy(big + n, "\r\n");
    abuse_expect(a, "400 headers", big, strlen(big), 431);
    n = snprintf(big, 70000, "GET /metrics HTTP/1.1\r\nX-Huge: ");
    memset(big + n, 'b', 65536);
    strcpy(big + n + 65536, "\r\n\r\n");
    abuse_expect(a, "64 KB header", big, strlen(big), 431);
    n = snprintf(big, 70000, "GET /healthz HTTP/1.1\r\nX-Fits: ");
    memset(big + n, 'c', 8000);
    strcpy(big + n + 8000, "\r\n\r\n");
    abuse_expect(a, "8 KB head", big, strlen(big), 200);
    free(big);

    /* Random bytes: raw, printable, and behind a plausible start. */
    unsigned seed = 0x7f3a;
    char blob[2048];
    for (int i = 0; i < 300; i++) {
        size_t len = (size_t)(rand_r(&seed) % 2000) + 1;
        size_t start = 0;
        if (i % 3 == 2) {
            start = (size_t)snprintf(blob, sizeof blob, "GET /");
            len += start;
        }
        for (size_t k = start; k < len; k++)
            blob[k] = i % 3 == 1 ? (char)(' ' + rand_r(&seed) % 95) : (char)rand_r(&seed);
        int got = it_http_raw(http_port, blob, len, 3 * SERVER_TIMEOUT, &r);
        it_http_free(&r);
        a->random_sent++;
        if (got == 400 || got == 431)
            a->random_answered++;
        else if (got == 0)
            a->random_closed++;
        else if (a->wrong++ == 0)
            snprintf(a->first_wrong, sizeof a->first_wrong, "random blob %d (%zu bytes): got %d", i,
                     len, got);
    }
    return NULL;
}

static bool all_published(void *conn)
{
    return it_pg_published(conn) == ROWS;
}

static bool half_published(void *conn)
{
    return it_pg_published(conn) == ROWS / 2;
}

static bool scrape_saw_partial_drain(void *arg)
{
    (void)arg;
    return atomic_load(&mid_drain_seen) > 0;
}

static void insert_rows(PGconn *conn, int from, int to)
{
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, ordering_key)"
               " SELECT 'it.http.' || (g %% 8), convert_to(g::text, 'UTF8'),"
               "        CASE WHEN g %% 5 = 0 THEN 'key-' || (g %% 13) END"
               " FROM generate_series(%d, %d) g",
               from, to);
}

static bool healthz_ok(void *arg)
{
    return it_http_status(http_port, "/healthz") == 200;
}

START_TEST(test_listener_survives_abuse_while_relaying)
{
    const char *subjects[] = {"it.http.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();

    http_port = it_free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "OUTBOX_HTTP_ADDR=127.0.0.1:%d", http_port);
    const char *env[] = {addr, "OUTBOX_METRICS_INTERVAL_MS=100", NULL};
    struct it_relay *relay = it_relay_start(env, NULL);
    ck_assert_msg(it_wait_until(healthz_ok, NULL, 10000), "the listener never answered");

    struct scraper scrapers[SCRAPERS] = {0};
    struct loris loris = {0};
    struct abuse abuse = {0};
    int64_t t0 = it_now_ms();
    for (int i = 0; i < SCRAPERS; i++)
        ck_assert_int_eq(pthread_create(&scrapers[i].thread, NULL, scraper_main, &scrapers[i]), 0);
    ck_assert_int_eq(pthread_create(&loris.thread, NULL, loris_main, &loris), 0);
    ck_assert_int_eq(pthread_create(&abuse.thread, NULL, abuse_main, &abuse), 0);

    /* The rows arrive in two halves while the listener is busy; scrapers go on until they
     * are all out. A whole drain can take less time than a wave of scrapes, so the test
     * does not rely on a scrape landing inside it: after the first half is out, a scrape
     * must see the relay part-way (a live counter between 0 and ROWS) before the second
     * half goes in. */
    insert_rows(conn, 1, ROWS / 2);
    ck_assert_msg(it_wait_until(half_published, conn, 60000), "the first half was not relayed");
    ck_assert_msg(it_wait_until(scrape_saw_partial_drain, NULL, 30000),
                  "no scrape saw the relay part-way through the rows");
    insert_rows(conn, ROWS / 2 + 1, ROWS);
    bool drained = it_wait_until(all_published, conn, 120000);
    atomic_store(&drain_over, true);
    int64_t drained_ms = it_now_ms() - t0;
    int attempted = 0, ok = 0, refused = 0, broken = 0, mid_drain = 0;
    for (int i = 0; i < SCRAPERS; i++) {
        pthread_join(scrapers[i].thread, NULL);
        attempted += scrapers[i].attempted;
        ok += scrapers[i].ok;
        refused += scrapers[i].refused;
        broken += scrapers[i].broken;
        mid_drain += scrapers[i].mid_drain;
        ck_assert_msg(scrapers[i].broken == 0, "scraper %d: %s", i, scrapers[i].example);
    }
    int64_t scraped_ms = it_now_ms() - t0;
    pthread_join(abuse.thread, NULL);
    pthread_join(loris.thread, NULL);
    fprintf(stderr,
            "http: drain of %d rows took %lld ms; %d scrapes ok, %d refused, %d broken "
            "(%d mid-drain) within %lld ms; loris held %lld..%lld ms; healthz under loris "
            "%lld ms; %d malformed checked; random: %d answered, %d closed\n",
            ROWS, (long long)drained_ms, ok, refused, broken, mid_drain, (long long)scraped_ms,
            (long long)loris.min_ms, (long long)loris.max_ms, (long long)loris.healthz_ms,
            abuse.checked, abuse.random_answered, abuse.random_closed);

    /* The drain completed under the load; each scrape got a whole answer (the concurrent
     * connections stay below the cap, so none is refused); some saw it in progress. */
    ck_assert_msg(drained, "the drain did not complete under load");
    ck_assert_int_ge(attempted, SCRAPERS * SCRAPES_EACH);
    ck_assert_int_eq(ok, attempted);
    ck_assert_int_eq(refused, 0);
    ck_assert_msg(mid_drain > 0, "no scrape overlapped the drain");

    ck_assert_msg(abuse.wrong == 0, "%d wrong answers; first: %s", abuse.wrong, abuse.first_wrong);
    ck_assert_int_eq(abuse.random_sent, 300);

    /* Slow loris: every one closed at the server's deadline; a normal probe meanwhile was quick. */
    ck_assert_int_eq(loris.opened, LORIS);
    ck_assert_msg(loris.closed_in_time == LORIS,
                  "%d of %d slow connections closed in %lld..%lld ms", loris.closed_in_time, LORIS,
                  (long long)loris.min_ms, (long long)loris.max_ms);
    ck_assert_int_eq(loris.healthz_status, 200);
    /* A server that served the lorises first would answer at their deadline (SERVER_TIMEOUT);
     * load stretches an answer by far less than half of it. */
    ck_assert_msg(loris.healthz_ms < SERVER_TIMEOUT / 2,
                  "healthz took %lld ms behind %d slow connections", (long long)loris.healthz_ms,
                  LORIS);

    /* A flood past the cap: the surplus is closed at once, never held or half-answered. */
    int fds[FLOOD];
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = connect_to(http_port, 10000);
        ck_assert_msg(fds[i] >= 0, "flood connection %d: %s", i, strerror(errno));
    }
    int closed = 0, open = FLOOD;
    int64_t deadline = it_now_ms() + 3000;
    bool gone[FLOOD] = {false};
    while (closed < FLOOD - MAX_CONNECTIONS && it_now_ms() < deadline) {
        struct pollfd pfd[FLOOD];
        for (int i = 0; i < FLOOD; i++)
            pfd[i] = (struct pollfd){.fd = gone[i] ? -1 : fds[i], .events = POLLIN};
        poll(pfd, FLOOD, 100);
        for (int i = 0; i < FLOOD; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents)
                continue;
            char b[16];
            ssize_t n = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
            ck_assert_msg(n <= 0, "the server sent %zd bytes to an idle connection", n);
            if (n == 0 || errno != EAGAIN) {
                gone[i] = true;
                closed++;
                open--;
            }
        }
    }
    ck_assert_msg(closed >= FLOOD - MAX_CONNECTIONS && open <= MAX_CONNECTIONS,
                  "%d of %d flood connections closed at once, %d held", closed, FLOOD, open);
    for (int i = 0; i < FLOOD; i++)
        close(fds[i]);
    /* Freed slots serve again at once. */
    ck_assert_msg(it_wait_until(healthz_ok, NULL, 5000), "healthz did not recover after the flood");

    /* And it kept relaying: more rows go through, probes are green. */
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload) SELECT 'it.http.after', 'x'"
                     " FROM generate_series(1, 100)");
    ck_assert_int_eq(it_pg_wait_published(conn, ROWS + 100, 30000), ROWS + 100);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), ROWS + 100);
    ck_assert_int_eq(it_http_status(http_port, "/readyz"), 200);
    ck_assert_int_eq(it_http_status(http_port, "/healthz"), 200);

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("http_robustness");
    TCase *tc = it_tcase(suite, "http_robustness", it_start_servers, 240);
    tcase_add_test(tc, test_listener_survives_abuse_while_relaying);
    return run_suite(suite);
}
