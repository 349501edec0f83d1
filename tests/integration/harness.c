/* Integration-test harness, core: the temp dir, child processes and their janitor, setup and
 * teardown. */
#include "harness_internal.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Processes to stop in an emergency (signal handler): pid + the signal that stops it cleanly. */
static volatile pid_t live_pid[IT_MAX_LIVE];
static volatile int live_sig[IT_MAX_LIVE];

struct it_state it = {.janitor_fd = -1};

/* ---- small utilities ---- */

int64_t it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void it_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

bool it_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (it_now_ms() >= deadline)
            return false;
        /* A relay that died on its own would make the test wait for nothing. */
        it_check_relays_alive();
        it_sleep_ms(25);
    }
}

int it_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "bind: %s",
                  strerror(errno));
    socklen_t len = sizeof addr;
    ck_assert_msg(getsockname(fd, (struct sockaddr *)&addr, &len) == 0, "getsockname: %s",
                  strerror(errno));
    close(fd);
    return ntohs(addr.sin_port);
}

/* The whole file, NUL-terminated (malloc'd), or NULL. No Check calls: the janitor uses it. */
char *it_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 65536, len = 0, n;
    char *buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

char *it_read_file(const char *path)
{
    char *text = it_slurp(path);
    if (!text)
        text = strdup("");
    ck_assert_ptr_nonnull(text);
    return text;
}

/* Writes the last `lines` lines of a file to stderr, framed with its name. */
void it_dump_tail(const char *title, const char *path, int lines)
{
    char *text = it_slurp(path);
    if (!text) {
        fprintf(stderr, "---- %s: %s (missing) ----\n", title, path);
        return;
    }
    size_t n = strlen(text);
    const char *p = text + n;
    if (p > text && p[-1] == '\n')
        p--;
    int count = 0;
    while (p > text && !(p[-1] == '\n' && ++count == lines))
        p--;
    fprintf(stderr, "---- %s: %s (last %d lines) ----\n%s%s---- end of %s ----\n", title, path,
            lines, p, n > 0 && text[n - 1] != '\n' ? "\n" : "", title);
    free(text);
}

static int it_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void it_rm_tree(const char *path)
{
    nftw(path, it_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- process tracking ---- */

void it_track(pid_t pid, int stop_sig)
{
    for (int i = 0; i < IT_MAX_LIVE; i++)
        if (live_pid[i] == 0) {
            live_sig[i] = stop_sig;
            live_pid[i] = pid;
            break;
        }
    if (it.janitor_fd >= 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "P %d %d\n", (int)pid, stop_sig);
        send(it.janitor_fd, line, (size_t)n, MSG_NOSIGNAL);
    }
}

void it_untrack(pid_t pid)
{
    for (int i = 0; i < IT_MAX_LIVE; i++)
        if (live_pid[i] == pid)
            live_pid[i] = 0;
    if (it.janitor_fd >= 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "R %d\n", (int)pid);
        send(it.janitor_fd, line, (size_t)n, MSG_NOSIGNAL);
    }
}

static void it_kill_live(void)
{
    for (int i = 0; i < IT_MAX_LIVE; i++)
        if (live_pid[i] > 0)
            kill(live_pid[i], live_sig[i]);
}

static void it_on_fatal_signal(int sig)
{
    it_kill_live();
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
 * Starts argv[0] with stdout+stderr appended to log_path. Servers run as the
 * unprivileged server user when we are root (PostgreSQL refuses root). The
 * child dies with us (PR_SET_PDEATHSIG): Check ends a failed test with
 * _exit(), which skips both the teardown and atexit handlers.
 */
pid_t it_spawn(const char *const *argv, char *const *envp, const char *log_path,
               bool as_server_user, int death_sig)
{
    pid_t parent = getpid();
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_msg(logfd >= 0, "open %s: %s", log_path, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        close_range(3, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int defaults[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGALRM};
        for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
            signal(defaults[i], SIG_DFL);
        if (as_server_user && it.drop_privileges) {
            if (setgroups(0, NULL) < 0 || setgid(it.server_gid) < 0 || setuid(it.server_uid) < 0) {
                dprintf(2, "harness: dropping privileges: %s\n", strerror(errno));
                _exit(126);
            }
        }
        /* After setuid: a credential change clears the death signal. */
        prctl(PR_SET_PDEATHSIG, death_sig);
        if (getppid() != parent)
            _exit(125);
        execve(argv[0], (char *const *)argv, envp ? envp : environ);
        dprintf(2, "harness: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    it_track(pid, death_sig);
    return pid;
}

/* Waits up to timeout_ms for pid to exit; true (and *wstatus) once reaped. */
bool it_reap(pid_t pid, int timeout_ms, int *wstatus)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) {
            if (wstatus)
                *wstatus = r == pid ? st : 0;
            it_untrack(pid);
            return true;
        }
        if (it_now_ms() >= deadline)
            return false;
        it_sleep_ms(10);
    }
}

/* Sends sig, waits up to timeout_ms, then SIGKILLs. */
void it_stop_process(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    if (!it_reap(pid, timeout_ms, NULL)) {
        kill(pid, SIGKILL);
        it_reap(pid, 60000, NULL);
    }
}

const char *it_describe_status(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exit code %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, len, "status 0x%x", st);
    return buf;
}

/* Runs a short-lived tool to completion; fails the test (showing its log) unless it exits 0. */
void it_run_tool(const char *const *argv, const char *log_path, bool as_server_user, int timeout_ms)
{
    pid_t pid = it_spawn(argv, NULL, log_path, as_server_user, SIGKILL);
    int st = 0;
    if (!it_reap(pid, timeout_ms, &st)) {
        it_stop_process(pid, SIGKILL, 0);
        it_dump_tail(argv[0], log_path, 60);
        ck_abort_msg("%s did not finish within %d ms", argv[0], timeout_ms);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char why[64];
        it_dump_tail(argv[0], log_path, 60);
        ck_abort_msg("%s failed: %s", argv[0], it_describe_status(st, why, sizeof why));
    }
}

/* ---- the janitor ---- */

/*
 * A process outside the test's process group that outlives it. The test
 * reports every process it starts and reaps; when the test process ends
 * without a clean teardown (a failed check: Check calls _exit()), the
 * janitor shows the relay logs, stops what is left and removes the temp dir.
 */
static void it_janitor_main(int fd, pid_t test_pid)
{
    pid_t pids[IT_MAX_LIVE] = {0};
    int sigs[IT_MAX_LIVE] = {0};
    char *logs[IT_MAX_RELAYS] = {0};
    int nlogs = 0;
    bool clean = false, keep = false;
    char buf[8192];
    size_t used = 0;

    setsid();
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(2, 1);
    for (int i = 3; i < 1024; i++)
        if (i != fd)
            close(i);

    for (;;) {
        ssize_t n = read(fd, buf + used, sizeof buf - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
        buf[used] = '\0';
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            int pid, sig;
            if (sscanf(line, "P %d %d", &pid, &sig) == 2) {
                for (int i = 0; i < IT_MAX_LIVE; i++)
                    if (pids[i] == 0) {
                        pids[i] = pid;
                        sigs[i] = sig;
                        break;
                    }
            } else if (sscanf(line, "R %d", &pid) == 1) {
                for (int i = 0; i < IT_MAX_LIVE; i++)
                    if (pids[i] == pid)
                        pids[i] = 0;
            } else if (strncmp(line, "L ", 2) == 0 && nlogs < IT_MAX_RELAYS) {
                logs[nlogs++] = strdup(line + 2);
            } else if (strcmp(line, "D") == 0) {
                clean = true;
            } else if (strcmp(line, "K") == 0) {
                keep = true;
            }
            line = nl + 1;
        }
        used = strlen(line);
        memmove(buf, line, used);
    }
    if (clean)
        _exit(0);

    fprintf(stderr,
            "harness: test process %d ended before its teardown (a failed check?); "
            "stopping its servers\n",
            (int)test_pid);
    for (int i = 0; i < nlogs; i++)
        it_dump_tail("relay log", logs[i], 100);
    for (int i = 0; i < IT_MAX_LIVE; i++)
        if (pids[i] > 0)
            kill(pids[i], sigs[i]);
    /* Wait until they are gone (or zombies nobody reaps), then SIGKILL the rest. */
    int64_t deadline = it_now_ms() + 10000;
    for (int i = 0; i < IT_MAX_LIVE; i++) {
        while (pids[i] > 0 && kill(pids[i], 0) == 0) {
            char path[64], stat[256] = {0};
            snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
            FILE *f = fopen(path, "r");
            if (f) {
                size_t n = fread(stat, 1, sizeof stat - 1, f);
                stat[n] = '\0';
                fclose(f);
            }
            char *paren = strrchr(stat, ')');
            if (paren && paren[1] == ' ' && paren[2] == 'Z')
                break;
            if (it_now_ms() >= deadline) {
                kill(pids[i], SIGKILL);
                break;
            }
            it_sleep_ms(20);
        }
    }
    if (keep)
        fprintf(stderr, "harness: IT_KEEP set, keeping %s\n", it.dir);
    else
        it_rm_tree(it.dir);
    _exit(0);
}

static void it_janitor_start(void)
{
    int sv[2];
    ck_assert_msg(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
                  strerror(errno));
    pid_t test_pid = getpid();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(sv[0]);
        it_janitor_main(sv[1], test_pid);
    }
    close(sv[1]);
    it.janitor_fd = sv[0];
    it.janitor_pid = pid;
}

void it_janitor_send(const char *line)
{
    if (it.janitor_fd >= 0)
        send(it.janitor_fd, line, strlen(line), MSG_NOSIGNAL);
}

/* ---- lifecycle ---- */

static void it_at_exit(void)
{
    if (it.owner == getpid())
        it_teardown();
}

/* Removes temp dirs of earlier runs whose test process no longer exists. */
static void it_remove_stale_dirs(const char *base)
{
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid;
        if (sscanf(e->d_name, "outbox-it-%d-", &pid) != 1 || pid <= 0)
            continue;
        if (kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", base, e->d_name);
        it_rm_tree(path);
    }
    closedir(d);
}

void it_setup(void)
{
    if (it.owner == getpid())
        return;
    static bool hooks_installed;
    memset(&it, 0, sizeof it);
    it.janitor_fd = -1;
    it.owner = getpid();
    if (!hooks_installed) {
        atexit(it_at_exit);
        hooks_installed = true;
    }
    struct sigaction sa = {.sa_handler = it_on_fatal_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* The relay and servers are our children; their deaths are reaped explicitly. */
    signal(SIGPIPE, SIG_IGN);

    const char *base = getenv("TMPDIR");
    if (!base || !*base || strlen(base) > 60)
        base = "/tmp";
    it_remove_stale_dirs(base);
    snprintf(it.dir, sizeof it.dir, "%s/outbox-it-%d-XXXXXX", base, (int)getpid());
    ck_assert_msg(mkdtemp(it.dir) != NULL, "mkdtemp %s: %s", it.dir, strerror(errno));

    if (geteuid() == 0) {
        /* PostgreSQL refuses to run as root: servers run as `postgres` (or `nobody`). */
        struct passwd *pw = getpwnam("postgres");
        if (!pw)
            pw = getpwnam("nobody");
        ck_assert_msg(pw != NULL, "running as root and neither postgres nor nobody exists");
        it.drop_privileges = true;
        it.server_uid = pw->pw_uid;
        it.server_gid = pw->pw_gid;
        ck_assert_msg(chown(it.dir, it.server_uid, it.server_gid) == 0, "chown %s: %s", it.dir,
                      strerror(errno));
    }
    it_janitor_start();
    const char *keep = getenv("IT_KEEP");
    if (keep && *keep && strcmp(keep, "0") != 0)
        it_janitor_send("K\n");
}

void it_start_servers(void)
{
    it_setup();
    it_pg_start();
    it_nats_start();
}

const char *it_dir(void)
{
    return it.dir;
}

/*
 * Whether a relay's log holds a sanitizer report. Under the Asan build every
 * relay a test starts is sanitized; a report fails the test even when the
 * relay kept running or exited as the test expected.
 */
static bool it_log_has_sanitizer_report(const char *path)
{
    static const char *const marks[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                        "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer"};
    char *log = it_read_file(path);
    bool found = false;
    for (size_t i = 0; log && !found && i < sizeof marks / sizeof marks[0]; i++)
        found = strstr(log, marks[i]) != NULL;
    free(log);
    return found;
}

void it_teardown(void)
{
    if (it.owner != getpid())
        return;
    int sanitized_relay = 0;
    for (int i = 0; i < it.nrelays; i++) {
        struct it_relay *r = it.relays[i];
        if (!r->exited)
            it_stop_process(r->pid, SIGKILL, 0);
        if (!sanitized_relay && it_log_has_sanitizer_report(r->log_path)) {
            it_dump_tail("relay log with a sanitizer report", r->log_path, 120);
            sanitized_relay = (int)r->pid;
        }
        free(r);
    }
    it.nrelays = 0;
    if (it.js)
        jsCtx_Destroy(it.js);
    if (it.nc)
        natsConnection_Destroy(it.nc);
    it.js = NULL;
    it.nc = NULL;
    /* The data is thrown away: no need for graceful shutdowns. */
    it_stop_process(it.nats_pid, SIGKILL, 0);
    it.nats_pid = 0;
    it_nats_cluster_teardown();
    it_pg_replica_teardown();
    /* Immediate shutdown: the postmaster stops its backends and releases shared memory. */
    it_stop_process(it.pg_pid, SIGQUIT, 10000);
    it.pg_pid = 0;

    const char *keep = getenv("IT_KEEP");
    if (keep && *keep && strcmp(keep, "0") != 0)
        fprintf(stderr, "harness: IT_KEEP set, keeping %s\n", it.dir);
    else if (it.dir[0])
        it_rm_tree(it.dir);
    it_janitor_send("D\n");
    if (it.janitor_fd >= 0) {
        close(it.janitor_fd);
        /* After "D" and the end of its input it exits at once. */
        waitpid(it.janitor_pid, NULL, 0);
    }
    it.janitor_fd = -1;
    it.janitor_pid = 0;
    it.owner = 0;
    it.dir[0] = '\0';
    ck_assert_msg(sanitized_relay == 0, "relay %d: sanitizer report in its log (above)",
                  sanitized_relay);
}

/* ---- test cases ---- */

TCase *it_tcase(Suite *suite, const char *name, void (*setup)(void), double timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, setup, it_teardown);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(suite, tc);
    return tc;
}
