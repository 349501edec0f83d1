/*
 * Every JetStream error code of publish_error.c's table, answered to a real
 * publish of the relay by a scripted server speaking the NATS client
 * protocol on a loopback port: most of those codes (cluster, RAFT, stream
 * offline, expectations the relay never sets) no single nats-server 2.9 can
 * be made to answer (see test_nats_outcomes.c for the ones it can).
 *
 * The server answers the first publish of subject it.s.<code> with that
 * JetStream error and acknowledges every other publish. So a row whose code
 * the table calls permanent must be dead at its first attempt, counted
 * under the table's reason, and a transient one retried once and published,
 * each followed by a row of its key that is published after it.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "outbox_relay/nats/publish_error.h"
#include "run_suite.h"

struct script {
    int listen_fd;
    int port;
    pthread_mutex_t lock;
    char answered[64][32]; /* subjects whose first publish got its error */
    int nanswered;
    uint64_t seq;
};

static struct script script;

struct conn {
    int fd;
    char buf[1 << 16];
    size_t len;
    char inbox[128]; /* the prefix of the wildcard reply subscription */
    char sid[32];
};

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads until buf holds `need` bytes; false on EOF. */
static bool fill(struct conn *c, size_t need)
{
    while (c->len < need) {
        if (need > sizeof c->buf)
            return false;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r <= 0)
            return false;
        c->len += (size_t)r;
    }
    return true;
}

static void consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* The error for this publish, or 0 to acknowledge it. */
static int answer_for(const char *subject)
{
    int code = 0;
    if (strncmp(subject, "it.s.", 5) != 0 || strcmp(subject, "it.s.follow") == 0)
        return 0;
    pthread_mutex_lock(&script.lock);
    bool seen = false;
    for (int i = 0; i < script.nanswered; i++)
        seen |= strcmp(script.answered[i], subject) == 0;
    if (!seen && script.nanswered < 64) {
        snprintf(script.answered[script.nanswered++], sizeof script.answered[0], "%s", subject);
        code = atoi(subject + 5);
    }
    pthread_mutex_unlock(&script.lock);
    return code;
}

static void reply(struct conn *c, const char *subject, const char *reply_to)
{
    if (reply_to == NULL || c->sid[0] == '\0' || strncmp(reply_to, c->inbox, strlen(c->inbox)))
        return;
    char body[256], out[512];
    int code = answer_for(subject);
    if (code != 0) {
        snprintf(body, sizeof body,
                 "{\"error\":{\"code\":503,\"err_code\":%d,\"description\":\"scripted %d\"}}", code,
                 code);
    } else {
        pthread_mutex_lock(&script.lock);
        uint64_t seq = ++script.seq;
        pthread_mutex_unlock(&script.lock);
        snprintf(body, sizeof body, "{\"stream\":\"SCRIPTED\",\"seq\":%llu}",
                 (unsigned long long)seq);
    }
    int n =
        snprintf(out, sizeof out, "MSG %s %s %zu\r\n%s\r\n", reply_to, c->sid, strlen(body), body);
    send_all(c->fd, out, (size_t)n);
}

static void *serve(void *arg)
{
    struct conn *c = arg;
    char info[512];
    int n = snprintf(info, sizeof info,
                     "INFO {\"server_id\":\"SCRIPTED\",\"server_name\":\"scripted\","
                     "\"version\":\"2.9.10\",\"proto\":1,\"host\":\"127.0.0.1\",\"port\":%d,"
                     "\"headers\":true,\"max_payload\":1048576,\"jetstream\":true}\r\n",
                     script.port);
    send_all(c->fd, info, (size_t)n);
    for (;;) {
        char *eol;
        while ((eol = memmem(c->buf, c->len, "\r\n", 2)) == NULL)
            if (!fill(c, c->len + 1))
                goto done;
        size_t line_len = (size_t)(eol - c->buf);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)line_len, c->buf);
        consume(c, line_len + 2);
        char *tok[6] = {0};
        int nt = 0;
        for (char *save = NULL, *t = strtok_r(line, " \t", &save); t && nt < 6;
             t = strtok_r(NULL, " \t", &save))
            tok[nt++] = t;
        if (nt == 0)
            continue;
        if (strcmp(tok[0], "PING") == 0) {
            send_all(c->fd, "PONG\r\n", 6);
        } else if (strcmp(tok[0], "SUB") == 0 && nt >= 3) {
            size_t sl = strlen(tok[1]);
            if (sl > 1 && tok[1][sl - 1] == '*') {
                snprintf(c->inbox, sizeof c->inbox, "%.*s", (int)(sl - 1), tok[1]);
                snprintf(c->sid, sizeof c->sid, "%s", tok[nt - 1]);
            }
        } else if ((strcmp(tok[0], "PUB") == 0 || strcmp(tok[0], "HPUB") == 0) && nt >= 3) {
            size_t total = (size_t)atol(tok[nt - 1]);
            const char *reply_to = nt >= (tok[0][0] == 'H' ? 5 : 4) ? tok[2] : NULL;
            if (!fill(c, total + 2))
                goto done;
            consume(c, total + 2);
            reply(c, tok[1], reply_to);
        }
    }
done:
    close(c->fd);
    free(c);
    return NULL;
}

static void *accept_loop(void *arg)
{
    for (;;) {
        int fd = accept(script.listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        struct conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        pthread_t t;
        pthread_create(&t, NULL, serve, c);
        pthread_detach(t);
    }
}

static void script_start(void)
{
    pthread_mutex_init(&script.lock, NULL);
    script.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(script.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(script.listen_fd, 16), 0);
    socklen_t len = sizeof a;
    getsockname(script.listen_fd, (struct sockaddr *)&a, &len);
    script.port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, accept_loop, NULL);
    pthread_detach(t);
}

struct fates {
    PGconn *conn;
    int64_t want;
};

static bool settled(void *arg)
{
    struct fates *f = arg;
    return it_pg_int(f->conn, "SELECT count(*) FILTER (WHERE status IN ('published', 'dead'))"
                              " FROM outbox") == f->want;
}

START_TEST(test_every_jetstream_code_of_the_table)
{
    script_start();
    it_pg_start();
    size_t n = 0;
    const struct publish_error_rule *rules = publish_error_rules(&n);
    PGconn *conn = it_pg_connect();
    int rows = 0;
    for (size_t i = 0; i < n; i++) {
        if (rules[i].js_code == 0)
            continue;
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, payload, ordering_key)"
                   " VALUES ('it.s.%d', 'x', 'k%d'), ('it.s.follow', 'y', 'k%d')",
                   rules[i].js_code, rules[i].js_code, rules[i].js_code);
        rows += 2;
    }
    char url[64];
    snprintf(url, sizeof url, "OUTBOX_NATS_URL=nats://127.0.0.1:%d", script.port);
    const char *env[] = {url,
                         "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=100",
                         "OUTBOX_MAX_ATTEMPTS=1000",
                         "OUTBOX_POLL_INTERVAL_MS=100",
                         NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    struct fates f = {.conn = conn, .want = rows};
    bool done = it_wait_until(settled, &f, 30000);
    if (!done)
        it_relay_dump_log(relay);
    ck_assert_msg(done, "rows did not reach their fate");

    double dead[PUBLISH_REASONS] = {0}, failed[PUBLISH_REASONS] = {0};
    for (size_t i = 0; i < n; i++) {
        if (rules[i].js_code == 0)
            continue;
        PGresult *r = it_pg_query(conn,
                                  "SELECT status, attempts, coalesce(last_error, ''),"
                                  " (SELECT f.published_at >= o.published_at OR o.status = 'dead'"
                                  "  FROM outbox f WHERE f.ordering_key = o.ordering_key"
                                  "  AND f.subject = 'it.s.follow' AND f.status = 'published')"
                                  " FROM outbox o WHERE subject = 'it.s.%d'",
                                  rules[i].js_code);
        fprintf(stderr, "scripted %d (%s): %s after %s attempts: %s\n", rules[i].js_code,
                rules[i].what, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
        ck_assert_str_eq(PQgetvalue(r, 0, 0), rules[i].permanent ? "dead" : "published");
        ck_assert_str_eq(PQgetvalue(r, 0, 1), rules[i].permanent ? "1" : "2");
        ck_assert_msg(strcmp(PQgetvalue(r, 0, 3), "t") == 0,
                      "%d: the next row of the key was not published after it", rules[i].js_code);
        if (rules[i].permanent) {
            char code[32];
            snprintf(code, sizeof code, "JetStream error %d", rules[i].js_code);
            ck_assert_ptr_nonnull(strstr(PQgetvalue(r, 0, 2), code));
            dead[rules[i].reason]++;
        } else {
            failed[rules[i].reason]++;
        }
        PQclear(r);
    }
    for (int reason = 0; reason < PUBLISH_REASONS; reason++) {
        const char *label = publish_reason_label((enum publish_reason)reason);
        ck_assert_msg(it_metric_reason(relay->http_port, "dead_total", label) == dead[reason],
                      "dead_total{reason=\"%s\"}", label);
        ck_assert_msg(it_metric_reason(relay->http_port, "failed_total", label) == failed[reason],
                      "failed_total{reason=\"%s\"}", label);
    }
    ck_assert_int_eq(it_relay_exit_code(relay), -1000);
    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("nats_scripted");
    TCase *tc = it_tcase(suite, "scripted", it_setup, 120);
    tcase_add_test(tc, test_every_jetstream_code_of_the_table);
    return run_suite(suite);
}
