/* Integration-test harness: the relay binary as a child process, its log and its commands. */
#include "harness_internal.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void it_relay_config(struct relay_config *cfg, const char *const *args)
{
    const char *argv[32] = {"relay", "--pg-url", it_pg_url(), "--nats-url",
                            it.nats_url[0] ? it.nats_url : "nats://127.0.0.1:1"};
    int argc = 5;
    for (; args != NULL && *args != NULL; args++) {
        ck_assert_msg(argc < 31, "it_relay_config: too many arguments");
        argv[argc++] = *args;
    }
    argv[argc] = NULL;
    char err[256];
    ck_assert_msg(config_load(cfg, argc, (char **)argv, err, sizeof err) == 0, "config: %s", err);
}

/* ---- the relay ---- */

/* Sets "KEY=VALUE" in a NULL-terminated env array, replacing an entry with the same key. */
static void it_env_put(char **env, int *n, const char *entry)
{
    const char *eq = strchr(entry, '=');
    size_t keylen = eq ? (size_t)(eq - entry) + 1 : strlen(entry);
    for (int i = 0; i < *n; i++)
        if (strncmp(env[i], entry, keylen) == 0) {
            env[i] = (char *)entry;
            return;
        }
    env[(*n)++] = (char *)entry;
    env[*n] = NULL;
}

const char *it_relay_binary(void)
{
    const char *path = getenv("IT_RELAY_BINARY");
    return path != NULL && *path ? path : RELAY_BINARY;
}

struct it_relay *it_relay_start(const char *const *env, const char *const *args)
{
    it_setup();
    ck_assert_msg(access(it_relay_binary(), X_OK) == 0,
                  "relay binary %s is missing (build the outbox-relay target)", it_relay_binary());
    ck_assert_msg(it.nrelays < IT_MAX_RELAYS, "too many relays in one test");

    size_t nenv = 0, nextra = 0, nargs = 0;
    while (environ[nenv])
        nenv++;
    while (env && env[nextra])
        nextra++;
    while (args && args[nargs])
        nargs++;
    char **envp = calloc(nenv + nextra + 8, sizeof *envp);
    ck_assert_ptr_nonnull(envp);
    int n = 0;
    /* The test's own OUTBOX_* variables must not leak into the relay under test. */
    for (size_t i = 0; i < nenv; i++)
        if (strncmp(environ[i], "OUTBOX_", 7) != 0)
            envp[n++] = environ[i];
    char pg[300], nats[300];
    if (it.pg_initialized) {
        snprintf(pg, sizeof pg, "OUTBOX_PG_URL=%s", it.pg_url);
        it_env_put(envp, &n, pg);
    }
    if (it.nats_initialized) {
        snprintf(nats, sizeof nats, "OUTBOX_NATS_URL=%s", it.nats_url);
        it_env_put(envp, &n, nats);
    }
    it_env_put(envp, &n, "OUTBOX_HTTP_ADDR=");
    /* Only a sanitized relay reads these: reports go to its log, whole, and end it. */
    if (!getenv("ASAN_OPTIONS"))
        it_env_put(envp, &n, "ASAN_OPTIONS=detect_leaks=1:halt_on_error=1");
    if (!getenv("UBSAN_OPTIONS"))
        it_env_put(envp, &n, "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1");
    for (size_t i = 0; i < nextra; i++)
        it_env_put(envp, &n, env[i]);

    const char **argv = calloc(nargs + 2, sizeof *argv);
    ck_assert_ptr_nonnull(argv);
    argv[0] = it_relay_binary();
    for (size_t i = 0; i < nargs; i++)
        argv[i + 1] = args[i];

    struct it_relay *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    snprintf(r->log_path, sizeof r->log_path, "%s/relay-%d.log", it.dir, it.nrelays + 1);
    char line[sizeof r->log_path + 4];
    snprintf(line, sizeof line, "L %s\n", r->log_path);
    it_janitor_send(line);
    r->pid = it_spawn(argv, envp, r->log_path, false, SIGKILL);
    it.relays[it.nrelays++] = r;
    free(argv);
    free(envp);
    return r;
}

struct it_relay *it_relay_start_http(const char *const *env, const char *const *args)
{
    int port = it_free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "OUTBOX_HTTP_ADDR=127.0.0.1:%d", port);
    size_t n = 0;
    while (env && env[n])
        n++;
    const char **all = calloc(n + 2, sizeof *all);
    ck_assert_ptr_nonnull(all);
    all[0] = addr;
    for (size_t i = 0; i < n; i++)
        all[i + 1] = env[i];
    struct it_relay *r = it_relay_start(all, args);
    free(all);
    r->http_port = port;
    return r;
}

void it_relay_signal(struct it_relay *relay, int sig)
{
    ck_assert_msg(!relay->exited, "relay %d already exited", (int)relay->pid);
    relay->stopping = true;
    kill(relay->pid, sig);
}

void it_check_relays_alive(void)
{
    for (int i = 0; i < it.nrelays; i++) {
        struct it_relay *r = it.relays[i];
        if (r->exited || r->stopping)
            continue;
        int st;
        if (waitpid(r->pid, &st, WNOHANG) != r->pid)
            continue;
        r->exited = true;
        r->wstatus = st;
        it_untrack(r->pid);
        char why[64];
        ck_abort_msg("the relay (pid %d) ended on its own while the test waited: %s", (int)r->pid,
                     it_describe_status(st, why, sizeof why));
    }
}

bool it_relay_wait(struct it_relay *relay, int timeout_ms)
{
    relay->stopping = true;
    if (relay->exited)
        return true;
    if (it_reap(relay->pid, timeout_ms, &relay->wstatus))
        relay->exited = true;
    return relay->exited;
}

int it_relay_exit_code(const struct it_relay *relay)
{
    if (!relay->exited)
        return -1000;
    if (WIFEXITED(relay->wstatus))
        return WEXITSTATUS(relay->wstatus);
    if (WIFSIGNALED(relay->wstatus))
        return -WTERMSIG(relay->wstatus);
    return -999;
}

char *it_relay_log(const struct it_relay *relay)
{
    return it_read_file(relay->log_path);
}

bool it_relay_log_contains(const struct it_relay *relay, const char *needle)
{
    char *log = it_relay_log(relay);
    bool found = strstr(log, needle) != NULL;
    free(log);
    return found;
}

void it_relay_dump_log(const struct it_relay *relay)
{
    it_dump_tail("relay log", relay->log_path, 200);
}

int it_relay_run(const char *const *env, const char *const *args, int timeout_ms, char **output)
{
    struct it_relay *r = it_relay_start(env, args);
    if (!it_relay_wait(r, timeout_ms)) {
        kill(r->pid, SIGKILL);
        it_relay_wait(r, 60000);
        ck_abort_msg("relay still running after %d ms", timeout_ms);
    }
    if (output)
        *output = it_relay_log(r);
    if (!WIFEXITED(r->wstatus)) {
        char why[64];
        ck_abort_msg("relay ended abnormally: %s", it_describe_status(r->wstatus, why, sizeof why));
    }
    return WEXITSTATUS(r->wstatus);
}

void it_relay_stop(struct it_relay *relay)
{
    it_relay_signal(relay, SIGTERM);
    ck_assert_msg(it_relay_wait(relay, 15000), "relay did not stop on SIGTERM");
    ck_assert_int_eq(it_relay_exit_code(relay), 0);
}

struct it_log_want {
    struct it_relay *relay;
    const char *needle;
    int times;
};

static bool it_log_has(void *arg)
{
    struct it_log_want *w = arg;
    char *log = it_relay_log(w->relay);
    int n = 0;
    for (const char *p = log; n < w->times && (p = strstr(p, w->needle)) != NULL; p++)
        n++;
    free(log);
    return n >= w->times;
}

bool it_relay_wait_log(struct it_relay *relay, const char *needle, int times, int timeout_ms)
{
    struct it_log_want w = {relay, needle, times};
    return it_wait_until(it_log_has, &w, timeout_ms);
}

int it_relay_cmd(const char *const *env, const char *const *args, json_t **doc, char **output)
{
    char *out = NULL;
    int rc = it_relay_run(env, args, 60000, &out);
    fprintf(stderr, "$ outbox-relay");
    for (int i = 0; args && args[i]; i++)
        fprintf(stderr, " %s", args[i]);
    fprintf(stderr, "  (exit %d)\n%s", rc, out);
    if (doc != NULL) {
        *doc = NULL;
        char *save = NULL;
        char *copy = strdup(out);
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            json_t *j = line[0] == '{' ? json_loads(line, 0, NULL) : NULL;
            if (j != NULL && json_is_object(j) && json_object_get(j, "level") == NULL) {
                json_decref(*doc);
                *doc = j;
            } else {
                json_decref(j);
            }
        }
        free(copy);
    }
    if (output != NULL)
        *output = out;
    else
        free(out);
    return rc;
}

/* `"msg":"<msg>"`: how the JSON log writes the field (the messages need no escaping). */
static void it_msg_field(const char *msg, char *buf, size_t len)
{
    int n = snprintf(buf, len, "\"msg\":\"%s\"", msg);
    ck_assert_msg(n > 0 && (size_t)n < len, "log message too long: %s", msg);
}

bool it_relay_logged(const struct it_relay *relay, const char *msg)
{
    char field[512];
    it_msg_field(msg, field, sizeof field);
    return it_relay_log_contains(relay, field);
}

bool it_relay_wait_logged(struct it_relay *relay, const char *msg, int times, int timeout_ms)
{
    char field[512];
    it_msg_field(msg, field, sizeof field);
    return it_relay_wait_log(relay, field, times, timeout_ms);
}
