/* The container image, built with podman, relays 1,000 rows and exits 0 on SIGTERM. */
/* _GNU_SOURCE (open_memstream, SOCK_CLOEXEC) comes from the build. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "run_suite.h"

/* Runs podman with the private, offline setup (cached base image, runc, cgroupfs). */
#define CONTAINER_ENV      SOURCE_DIR "/tests/deploy/container-env.sh"
#define ROWS               1000
#define IMAGE_BUDGET_BYTES (150LL * 1000 * 1000)

static char image[128];
static char container[128];

/*
 * Starts `bash container-env.sh podman args...` with stdout+stderr to
 * log_path. If the test process dies, the child gets SIGTERM: `podman run`
 * forwards it to the container, which then drains and is removed (--rm).
 */
static pid_t podman_spawn(const char *const *args, const char *log_path)
{
    const char *argv[64] = {"/bin/bash", CONTAINER_ENV, "podman"};
    int n = 3;
    for (int i = 0; args[i] != NULL; i++) {
        ck_assert_int_lt(n, 63);
        argv[n++] = args[i];
    }
    argv[n] = NULL;

    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_msg(logfd >= 0, "open %s: %s", log_path, strerror(errno));
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(125);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(logfd);
    return pid;
}

/* Waits up to timeout_ms; the exit code, -signal, or -1000 if still running. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
        ck_assert_msg(r == 0, "waitpid: %s", strerror(errno));
        if (it_now_ms() >= deadline)
            return -1000;
        usleep(20 * 1000);
    }
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, got, mem);
    fclose(mem);
    fclose(f);
    return buf;
}

static void dump_tail(const char *path)
{
    char *text = read_text(path);
    size_t len = strlen(text);
    fprintf(stderr, "---- %s (tail) ----\n%s\n----\n", path, len > 6000 ? text + len - 6000 : text);
    free(text);
}

/* A podman command run to completion; its exit code; *output gets what it printed. */
static int podman_run_cmd(const char *name, const char *const *args, int timeout_ms, char **output)
{
    char log_path[4200];
    snprintf(log_path, sizeof log_path, "%s/podman-%s.log", it_dir(), name);
    unlink(log_path);
    pid_t pid = podman_spawn(args, log_path);
    int code = wait_exit(pid, timeout_ms);
    if (code == -1000) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        dump_tail(log_path);
        ck_abort_msg("podman %s still running after %d ms", name, timeout_ms);
    }
    if (code != 0)
        dump_tail(log_path);
    if (output)
        *output = read_text(log_path);
    return code;
}

/* One HTTP/1.0 GET on 127.0.0.1; the status code (0 if no answer) and the body. */
static int http_get(int port, const char *path, char **body)
{
    if (body)
        *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return 0;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return 0;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[4096];
    ssize_t got;
    while ((got = recv(fd, chunk, sizeof chunk, 0)) > 0)
        fwrite(chunk, 1, (size_t)got, mem);
    fclose(mem);
    close(fd);
    int status = 0;
    sscanf(buf, "HTTP/%*d.%*d %d", &status);
    if (body) {
        char *sep = strstr(buf, "\r\n\r\n");
        *body = strdup(sep ? sep + 4 : "");
    }
    free(buf);
    return status;
}

struct http_probe {
    int port;
    const char *path;
    const char *needle; /* NULL: status 200 is enough */
};

static bool http_ok(void *arg)
{
    struct http_probe *p = arg;
    char *body = NULL;
    bool ok = http_get(p->port, p->path, &body) == 200 &&
              (p->needle == NULL || (body && strstr(body, p->needle) != NULL));
    free(body);
    return ok;
}

static void insert_rows(PGconn *pg, int first, int last)
{
    it_pg_exec(pg,
               "INSERT INTO outbox (subject, payload, headers) "
               "SELECT 'container.' || (i %% 7), convert_to('event ' || i, 'UTF8'), "
               "       jsonb_build_object('n', i::text) "
               "FROM generate_series(%d, %d) AS i",
               first, last);
}

START_TEST(image_relays_rows_and_drains_on_sigterm)
{
    int64_t t_start = it_now_ms();
    snprintf(image, sizeof image, "localhost/outbox-relay:it-%d", (int)getpid());
    snprintf(container, sizeof container, "outbox-relay-it-%d", (int)getpid());

    /* Build. The base image and the build stage's packages are cached. */
    const char *build[] = {
        "build",    "--network", "host", "--tag", image, "--file", SOURCE_DIR "/Dockerfile",
        SOURCE_DIR, NULL};
    ck_assert_msg(podman_run_cmd("build", build, 540000, NULL) == 0, "podman build failed");
    int64_t t_built = it_now_ms();

    char *out = NULL;
    const char *inspect[] = {
        "image",    "inspect",
        "--format", "{{.Size}} {{.Config.User}} {{.Config.StopSignal}} {{json .Config.Entrypoint}}",
        image,      NULL};
    ck_assert_int_eq(podman_run_cmd("inspect", inspect, 60000, &out), 0);
    long long size = 0;
    char user[64] = "", stopsig[64] = "", entry[256] = "";
    ck_assert_msg(sscanf(out, "%lld %63s %63s %255s", &size, user, stopsig, entry) == 4,
                  "podman image inspect: %s", out);
    free(out);
    ck_assert_str_eq(user, "10001:10001");
    ck_assert_str_eq(stopsig, "SIGTERM");
    ck_assert_str_eq(entry, "[\"/usr/local/bin/outbox-relay\"]");
    ck_assert_msg(size > 0 && size < IMAGE_BUDGET_BYTES, "image is %lld bytes, budget %lld", size,
                  IMAGE_BUDGET_BYTES);

    /* The migrations ship in the image for operators to apply. */
    const char *ls[] = {"run",
                        "--rm",
                        "--network",
                        "host",
                        "--entrypoint",
                        "/bin/ls",
                        image,
                        "/usr/share/outbox-relay/sql",
                        NULL};
    ck_assert_int_eq(podman_run_cmd("ls-sql", ls, 60000, &out), 0);
    ck_assert_msg(strstr(out, "001_outbox_table.sql") != NULL, "sql/ missing in the image: %s",
                  out);
    free(out);

    /* Half the rows wait before the relay starts (found by its first scan), half come after. */
    const char *subjects[] = {"container.>", NULL};
    it_js_add_stream("CONTAINER", subjects);
    PGconn *pg = it_pg_connect();
    insert_rows(pg, 1, ROWS / 2);

    int http_port = it_free_port();
    char env_pg[600], env_nats[300], env_http[64];
    snprintf(env_pg, sizeof env_pg, "OUTBOX_PG_URL=%s", it_pg_url());
    snprintf(env_nats, sizeof env_nats, "OUTBOX_NATS_URL=%s", it_nats_url());
    snprintf(env_http, sizeof env_http, "OUTBOX_HTTP_ADDR=127.0.0.1:%d", http_port);
    /* Locked down as the chart runs it: read-only, no capabilities, no privilege gain. */
    const char *run[] = {"run", "--rm", "--name", container, "--network", "host", "--read-only",
                         "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                         /* a safety net: a container left behind by a crash dies on its own */
                         "--timeout", "300", "--env", env_pg, "--env", env_nats, "--env", env_http,
                         "--env", "OUTBOX_LOG_FORMAT=text", image, NULL};
    char relay_log[4200];
    snprintf(relay_log, sizeof relay_log, "%s/container-relay.log", it_dir());
    pid_t relay = podman_spawn(run, relay_log);
    int64_t t_run = it_now_ms();

    struct http_probe ready = {http_port, "/readyz", NULL};
    if (!it_wait_until(http_ok, &ready, 60000)) {
        dump_tail(relay_log);
        ck_abort_msg("/readyz of the container never answered 200");
    }
    insert_rows(pg, ROWS / 2 + 1, ROWS);

    int64_t published = it_pg_wait_published(pg, ROWS, 120000);
    if (published != ROWS)
        dump_tail(relay_log);
    ck_assert_int_eq(published, ROWS);
    int64_t t_relayed = it_now_ms();

    /* Every row arrived once, byte for byte, under its event_id. */
    ck_assert_uint_eq(it_js_stream_msgs("CONTAINER"), ROWS);
    struct it_msgs msgs;
    it_js_read_stream("CONTAINER", &msgs);
    ck_assert_uint_eq(msgs.count, ROWS);
    ck_assert_uint_eq(it_msgs_duplicate_ids(&msgs), 0);
    PGresult *rows = it_pg_query(pg, "SELECT event_id, subject, convert_from(payload, 'UTF8'), "
                                     "headers->>'n', stream_seq FROM outbox ORDER BY id");
    ck_assert_int_eq(PQntuples(rows), ROWS);
    for (int i = 0; i < ROWS; i++) {
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(rows, i, 0));
        ck_assert_msg(m != NULL, "row %d (event_id %s) not in the stream", i + 1,
                      PQgetvalue(rows, i, 0));
        ck_assert_str_eq(m->subject, PQgetvalue(rows, i, 1));
        const char *payload = PQgetvalue(rows, i, 2);
        ck_assert_int_eq(m->len, (int)strlen(payload));
        ck_assert(memcmp(m->data, payload, (size_t)m->len) == 0);
        const struct it_header *h = it_msg_header(m, "n");
        ck_assert_msg(h != NULL && h->nvalues == 1, "row %d lost its header", i + 1);
        ck_assert_str_eq(h->values[0], PQgetvalue(rows, i, 3));
        ck_assert_uint_eq(m->seq, strtoull(PQgetvalue(rows, i, 4), NULL, 10));
    }
    PQclear(rows);
    it_msgs_free(&msgs);

    struct http_probe counted = {http_port, "/metrics", "outbox_relay_published_total 1000\n"};
    if (!it_wait_until(http_ok, &counted, 10000)) {
        char *body = NULL;
        http_get(http_port, "/metrics", &body);
        ck_abort_msg("/metrics does not count 1000 published rows:\n%s",
                     body ? body : "(no answer)");
    }

    /* `podman stop` sends the image's STOPSIGNAL; the relay drains and exits 0. */
    int64_t t_stop = it_now_ms();
    const char *stop[] = {"stop", "--time", "30", container, NULL};
    ck_assert_int_eq(podman_run_cmd("stop", stop, 60000, NULL), 0);
    int code = wait_exit(relay, 60000);
    if (code != 0)
        dump_tail(relay_log);
    ck_assert_msg(code == 0, "the container exited with %d after SIGTERM, want 0", code);
    int64_t t_end = it_now_ms();

    ck_assert_int_eq(it_pg_int(pg, "SELECT count(*) FROM outbox WHERE status <> 'published'"), 0);
    PQfinish(pg);

    const char *untag[] = {"untag", image, image, NULL};
    podman_run_cmd("untag", untag, 60000, NULL);

    fprintf(stderr,
            "container: image %.1f MB; build %.1f s, start to %d rows published %.1f s, "
            "SIGTERM to exit %.1f s, whole test %.1f s\n",
            size / 1e6, (t_built - t_start) / 1e3, ROWS, (t_relayed - t_run) / 1e3,
            (t_end - t_stop) / 1e3, (t_end - t_start) / 1e3);
}
END_TEST

int main(void)
{
    /* No podman (or not root): say so and skip, as CTest's SKIP_RETURN_CODE 77. */
    if (system("/bin/bash " CONTAINER_ENV " check") != 0) {
        printf("SKIP: container tooling unavailable (see above); .ci/run installs it\n");
        return 77;
    }

    Suite *s = suite_create("container");
    /* A cold run debootstraps the base image and installs the build stage's packages. */
    TCase *tc = it_tcase(s, "image", it_start_servers, 580);
    tcase_add_test(tc, image_relays_rows_and_drains_on_sigterm);

    return run_suite(s);
}
