/* Integration-test harness: throw-away PostgreSQL and nats-server, the relay binary, a reader. */
/* _GNU_SOURCE comes from the build. */
#include "harness.h"
#include "outbox_relay/pg/outbox_table.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef RELAY_BINARY
#error "RELAY_BINARY must be defined (tests/CMakeLists.txt does)"
#endif
#ifndef SOURCE_DIR
#error "SOURCE_DIR must be defined (tests/CMakeLists.txt does)"
#endif

#define PG_BIN        "/usr/lib/postgresql/15/bin"
#define IT_DB         "outbox_it"
#define IT_MAX_RELAYS 64
#define IT_MAX_LIVE   128

extern char **environ;

/* Processes to stop in an emergency (signal handler): pid + the signal that stops it cleanly. */
static volatile pid_t live_pid[IT_MAX_LIVE];
static volatile int live_sig[IT_MAX_LIVE];

static struct {
    pid_t owner;          /* the process that ran it_setup(); 0 = not set up */
    char dir[128];        /* short: it holds the PostgreSQL unix socket (108-byte limit) */
    bool drop_privileges; /* running as root: servers run as server_uid/gid */
    uid_t server_uid;
    gid_t server_gid;
    int janitor_fd; /* socket to the janitor process, -1 if none */
    pid_t janitor_pid;

    bool pg_initialized;
    int pg_port;
    pid_t pg_pid;
    char pg_url[256];

    bool nats_initialized;
    int nats_port;
    pid_t nats_pid;
    char nats_url[256];        /* a cluster's: every node's URL, comma-separated */
    char nats_conf[PATH_MAX];  /* config file passed with -c, "" = none */
    char nats_creds[PATH_MAX]; /* .creds file the reader connects with, "" = none */

    struct it_relay *relays[IT_MAX_RELAYS];
    int nrelays;

    natsConnection *nc;
    jsCtx *js;
} it = {.janitor_fd = -1};

/* ---- small utilities ---- */

int64_t it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void it_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void it_check_relays_alive(void);
static void it_pg_replica_teardown(void);
static void it_nats_cluster_teardown(void);

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
static char *it_slurp(const char *path)
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

static char *it_read_file(const char *path)
{
    char *text = it_slurp(path);
    if (!text)
        text = strdup("");
    ck_assert_ptr_nonnull(text);
    return text;
}

/* Writes the last `lines` lines of a file to stderr, framed with its name. */
static void it_dump_tail(const char *title, const char *path, int lines)
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

static void it_track(pid_t pid, int stop_sig)
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

static void it_untrack(pid_t pid)
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
static pid_t it_spawn(const char *const *argv, char *const *envp, const char *log_path,
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
static bool it_reap(pid_t pid, int timeout_ms, int *wstatus)
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
static void it_stop_process(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    if (!it_reap(pid, timeout_ms, NULL)) {
        kill(pid, SIGKILL);
        it_reap(pid, 60000, NULL);
    }
}

static const char *it_describe_status(int st, char *buf, size_t len)
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
static void it_run_tool(const char *const *argv, const char *log_path, bool as_server_user,
                        int timeout_ms)
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

static void it_janitor_send(const char *line)
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

/* ---- PostgreSQL ---- */

/* Outside `it`: it_setup() clears that, and the choice is made before it. */
static bool it_pg_durable;
#define IT_PG_MAX_SETTINGS 4
static const char *it_pg_settings[IT_PG_MAX_SETTINGS];
static int it_pg_nsettings;
static bool it_pg_skip_migrations; /* it_pg_set_migrations(false) */

static bool it_pg_ready(void *arg)
{
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2", it.pg_port);
    return PQping(conninfo) == PQPING_OK;
}

static int it_sql_file_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int it_sql_file_filter(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0;
}

static void it_pg_migrate(void)
{
    char port[16], log_path[PATH_MAX];
    snprintf(port, sizeof port, "%d", it.pg_port);
    snprintf(log_path, sizeof log_path, "%s/migrate.log", it.dir);
    struct dirent **files;
    int n = scandir(SOURCE_DIR "/sql", &files, it_sql_file_filter, it_sql_file_cmp);
    ck_assert_msg(n > 0, "no migrations in %s/sql", SOURCE_DIR);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/sql/%s", SOURCE_DIR, files[i]->d_name);
        const char *argv[] = {PG_BIN "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
                              "127.0.0.1",    "-p", port, "-U", "postgres",        "-d",
                              IT_DB,          "-f", path, NULL};
        it_run_tool(argv, log_path, false, 60000);
        free(files[i]);
    }
    free(files);
}

void it_pg_start(void)
{
    it_setup();
    if (it.pg_pid > 0)
        return;
    char data[PATH_MAX], log_path[PATH_MAX], port[16];
    snprintf(data, sizeof data, "%s/pgdata", it.dir);
    snprintf(log_path, sizeof log_path, "%s/postgres.log", it.dir);
    if (!it.pg_initialized) {
        char initdb_log[PATH_MAX];
        snprintf(initdb_log, sizeof initdb_log, "%s/initdb.log", it.dir);
        const char *argv[] = {PG_BIN "/initdb",
                              "-D",
                              data,
                              "-A",
                              "trust",
                              "-U",
                              "postgres",
                              "-E",
                              "UTF8",
                              "--locale=C",
                              "--no-sync",
                              "--no-instructions",
                              NULL};
        it_run_tool(argv, initdb_log, true, 120000);
        it.pg_port = it_free_port();
        snprintf(it.pg_url, sizeof it.pg_url, "postgresql://postgres@127.0.0.1:%d/%s", it.pg_port,
                 IT_DB);
    }
    snprintf(port, sizeof port, "%d", it.pg_port);
    char sockdir[PATH_MAX + 32];
    snprintf(sockdir, sizeof sockdir, "unix_socket_directories=%s", it.dir);
    /*
     * fsync=off and full_page_writes=off for speed: the tests crash the
     * relay and restart PostgreSQL cleanly, never the operating system, so
     * durability against power loss is not what they measure.
     */
    const char *argv[] = {PG_BIN "/postgres",
                          "-D",
                          data,
                          "-p",
                          port,
                          "-c",
                          "listen_addresses=127.0.0.1",
                          "-c",
                          sockdir,
                          "-c",
                          it_pg_durable ? "fsync=on" : "fsync=off",
                          "-c",
                          it_pg_durable ? "full_page_writes=on" : "full_page_writes=off",
                          "-c",
                          "max_connections=50",
                          "-c",
                          "max_wal_size=1GB",
                          NULL,
                          NULL,
                          NULL,
                          NULL,
                          NULL,
                          NULL,
                          NULL,
                          NULL,
                          NULL};
    size_t argc = 0;
    while (argv[argc] != NULL)
        argc++;
    for (int k = 0; k < it_pg_nsettings; k++) {
        argv[argc++] = "-c";
        argv[argc++] = it_pg_settings[k];
    }
    it.pg_pid = it_spawn(argv, NULL, log_path, true, SIGQUIT);
    int64_t deadline = it_now_ms() + 30000;
    while (!it_pg_ready(NULL)) {
        int st;
        if (waitpid(it.pg_pid, &st, WNOHANG) == it.pg_pid) {
            char why[64];
            it_untrack(it.pg_pid);
            it.pg_pid = 0;
            it_dump_tail("postgres log", log_path, 40);
            ck_abort_msg("postgres exited at start: %s", it_describe_status(st, why, sizeof why));
        }
        if (it_now_ms() >= deadline) {
            it_dump_tail("postgres log", log_path, 40);
            ck_abort_msg("postgres not ready on port %d within 30 s", it.pg_port);
        }
        it_sleep_ms(20);
    }
    if (!it.pg_initialized) {
        char conninfo[256];
        snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres",
                 it.pg_port);
        PGconn *c = PQconnectdb(conninfo);
        ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
        it_pg_exec(c, "CREATE DATABASE " IT_DB);
        PQfinish(c);
        if (!it_pg_skip_migrations)
            it_pg_migrate();
        it.pg_initialized = true;
    }
}

void it_pg_stop(void)
{
    if (it.pg_pid <= 0)
        return;
    /* SIGINT = fast shutdown: clients are disconnected, a checkpoint is written. */
    it_stop_process(it.pg_pid, SIGINT, 60000);
    it.pg_pid = 0;
}

void it_pg_restart(void)
{
    it_pg_stop();
    it_pg_start();
}

int it_pg_port(void)
{
    return it.pg_port;
}

pid_t it_pg_pid(void)
{
    return it.pg_pid;
}

void it_pg_set_durable(bool durable)
{
    it_pg_durable = durable;
}

void it_pg_add_setting(const char *setting)
{
    ck_assert_msg(it_pg_nsettings < IT_PG_MAX_SETTINGS, "too many PostgreSQL settings");
    it_pg_settings[it_pg_nsettings++] = setting;
}

const char *it_pg_url(void)
{
    return it.pg_url;
}

PGconn *it_pg_connect(void)
{
    ck_assert_msg(it.pg_initialized, "PostgreSQL not started");
    PGconn *c = PQconnectdb(it.pg_url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", it.pg_url, PQerrorMessage(c));
    return c;
}

static PGresult *it_pg_vquery(PGconn *conn, const char *fmt, va_list ap)
{
    char *sql = NULL;
    ck_assert_msg(vasprintf(&sql, fmt, ap) >= 0, "out of memory");
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_COPY_IN)
        ck_abort_msg("SQL failed: %s  in: %.300s", PQresultErrorMessage(res), sql);
    free(sql);
    return res;
}

void it_pg_exec(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = it_pg_vquery(conn, fmt, ap);
    va_end(ap);
    PQclear(res);
}

PGresult *it_pg_query(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = it_pg_vquery(conn, fmt, ap);
    va_end(ap);
    return res;
}

int64_t it_pg_int(PGconn *conn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PGresult *res = it_pg_vquery(conn, fmt, ap);
    va_end(ap);
    ck_assert_msg(PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0),
                  "expected one non-NULL value from: %s", fmt);
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

struct it_pg_wait {
    PGconn *conn;
    const char *sql;
    int64_t want;
    int64_t last;
};

static bool it_pg_wait_cond(void *arg)
{
    struct it_pg_wait *w = arg;
    w->last = it_pg_int(w->conn, "%s", w->sql);
    return w->last == w->want;
}

int64_t it_pg_wait_int(PGconn *conn, const char *sql, int64_t want, int timeout_ms)
{
    struct it_pg_wait w = {.conn = conn, .sql = sql, .want = want, .last = -1};
    it_wait_until(it_pg_wait_cond, &w, timeout_ms);
    return w.last;
}

/* ---- nats-server ---- */

static const char *it_nats_binary(void)
{
    static char found[PATH_MAX];
    const char *path = getenv("PATH");
    char dirs[8192];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/bin:/usr/local/bin:/usr/local/sbin",
             path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/nats-server", d);
        if (access(found, X_OK) == 0)
            return found;
    }
    ck_abort_msg("nats-server not found (install the nats-server package)");
    return NULL;
}

/* True once a server on 127.0.0.1:port accepts a connection and sends its INFO line. */
static bool it_nats_port_ready(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char buf[8] = {0};
        if (poll(&p, 1, 2000) == 1 && recv(fd, buf, 5, MSG_WAITALL) == 5)
            ok = memcmp(buf, "INFO ", 5) == 0;
    }
    close(fd);
    return ok;
}

/* True once the harness's server accepts a connection and sends its INFO line. */
static bool it_nats_ready(void)
{
    return it_nats_port_ready(it.nats_port);
}

void it_nats_start(void)
{
    it_setup();
    if (it.nats_pid > 0)
        return;
    char store[PATH_MAX], log_path[PATH_MAX], port[16];
    snprintf(store, sizeof store, "%s/nats", it.dir);
    snprintf(log_path, sizeof log_path, "%s/nats.log", it.dir);
    if (!it.nats_initialized) {
        it.nats_port = it_free_port();
        snprintf(it.nats_url, sizeof it.nats_url, "nats://127.0.0.1:%d", it.nats_port);
        it.nats_initialized = true;
    }
    snprintf(port, sizeof port, "%d", it.nats_port);
    const char *argv[] = {
        it_nats_binary(), "-js", "-sd", store, "-a", "127.0.0.1", "-p", port, NULL, NULL, NULL};
    if (it.nats_conf[0]) {
        /* Flags win over the file: port, store dir and address stay the harness's. */
        argv[8] = "-c";
        argv[9] = it.nats_conf;
    }
    it.nats_pid = it_spawn(argv, NULL, log_path, false, SIGKILL);
    int64_t deadline = it_now_ms() + 20000;
    while (!it_nats_ready()) {
        int st;
        if (waitpid(it.nats_pid, &st, WNOHANG) == it.nats_pid) {
            char why[64];
            it_untrack(it.nats_pid);
            it.nats_pid = 0;
            it_dump_tail("nats-server log", log_path, 40);
            ck_abort_msg("nats-server exited at start: %s",
                         it_describe_status(st, why, sizeof why));
        }
        if (it_now_ms() >= deadline) {
            it_dump_tail("nats-server log", log_path, 40);
            ck_abort_msg("nats-server not ready on port %d within 20 s", it.nats_port);
        }
        it_sleep_ms(20);
    }
}

void it_nats_set_config(const char *text)
{
    it_setup();
    if (text == NULL) {
        it.nats_conf[0] = '\0';
        return;
    }
    snprintf(it.nats_conf, sizeof it.nats_conf, "%s/nats.conf", it.dir);
    FILE *f = fopen(it.nats_conf, "w");
    ck_assert_msg(f != NULL, "create %s: %s", it.nats_conf, strerror(errno));
    fputs(text, f);
    ck_assert_msg(fclose(f) == 0, "write %s: %s", it.nats_conf, strerror(errno));
}

void it_nats_set_credentials(const char *creds_path)
{
    it_setup();
    snprintf(it.nats_creds, sizeof it.nats_creds, "%s", creds_path ? creds_path : "");
}

void it_nats_stop(void)
{
    if (it.nats_pid <= 0)
        return;
    it_stop_process(it.nats_pid, SIGTERM, 30000);
    it.nats_pid = 0;
}

void it_nats_restart(void)
{
    it_nats_stop();
    it_nats_start();
}

void it_nats_kill(void)
{
    if (it.nats_pid <= 0)
        return;
    it_stop_process(it.nats_pid, SIGKILL, 0);
    it.nats_pid = 0;
}

int it_nats_port(void)
{
    return it.nats_port;
}

pid_t it_nats_pid(void)
{
    return it.nats_pid;
}

const char *it_nats_url(void)
{
    return it.nats_url;
}

bool it_pg_insert_row(PGconn *conn, const char *subject, const char *key, const char *payload,
                      char *err, size_t errlen)
{
    const char *values[3] = {subject, key, payload};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO outbox (subject, ordering_key, payload)"
                                 " VALUES ($1, $2, convert_to($3, 'UTF8'))",
                                 3, NULL, values, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

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

static void it_check_relays_alive(void)
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

/* ---- JetStream reader ---- */

/* nats.c's SetURL takes one URL: a cluster's comma-separated list goes through SetServers. */
static natsStatus it_nats_set_servers(natsOptions *opts, const char *list)
{
    char copy[sizeof it.nats_url];
    const char *servers[8];
    int n = 0;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *save = NULL, *u = strtok_r(copy, ",", &save); u && n < 8;
         u = strtok_r(NULL, ",", &save))
        servers[n++] = u;
    return natsOptions_SetServers(opts, servers, n);
}

jsCtx *it_js(void)
{
    if (it.js)
        return it.js;
    ck_assert_msg(it.nats_initialized, "nats-server not started");
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = it_nats_set_servers(opts, it.nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 5000);
    /* Tests restart nats-server under the reader: keep reconnecting, quickly. */
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 100);
    if (s == NATS_OK && it.nats_creds[0])
        s = natsOptions_SetUserCredentialsFromFiles(opts, it.nats_creds, NULL);
    if (s == NATS_OK)
        s = natsConnection_Connect(&it.nc, opts);
    natsOptions_Destroy(opts);
    ck_assert_msg(s == NATS_OK, "connect %s: %s", it.nats_url, natsStatus_GetText(s));
    s = natsConnection_JetStream(&it.js, it.nc, NULL);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));
    return it.js;
}

/* A file stream on subjects (NULL-terminated) with `replicas` copies. */
static void it_stream_config(jsStreamConfig *cfg, const char *name, const char *const *subjects,
                             int replicas)
{
    jsStreamConfig_Init(cfg);
    int n = 0;
    while (subjects[n])
        n++;
    cfg->Name = name;
    cfg->Subjects = (const char **)subjects;
    cfg->SubjectsLen = n;
    cfg->Storage = js_FileStorage;
    cfg->Replicas = replicas;
}

void it_js_add_stream(const char *name, const char *const *subjects)
{
    jsStreamConfig cfg;
    it_stream_config(&cfg, name, subjects, 1);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, it_js(), &cfg, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "add stream %s: %s (%d: %s)", name, natsStatus_GetText(s),
                  (int)jerr, nats_GetLastError(NULL));
    jsStreamInfo_Destroy(si);
}

static jsStreamInfo *it_js_stream_info(const char *name, natsStatus *status)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *status = js_GetStreamInfo(&si, it_js(), name, NULL, &jerr);
    return si;
}

bool it_js_stream_exists(const char *name)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK || s == NATS_NOT_FOUND, "stream info %s: %s", name,
                  natsStatus_GetText(s));
    jsStreamInfo_Destroy(si);
    return s == NATS_OK;
}

uint64_t it_js_stream_msgs(const char *name)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK, "stream info %s: %s", name, natsStatus_GetText(s));
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

static char *it_strdup(const char *s)
{
    char *d = strdup(s ? s : "");
    ck_assert_ptr_nonnull(d);
    return d;
}

static void it_msg_copy(struct it_msg *out, natsMsg *m, uint64_t seq)
{
    memset(out, 0, sizeof *out);
    out->seq = natsMsg_GetSequence(m) ? natsMsg_GetSequence(m) : seq;
    out->subject = it_strdup(natsMsg_GetSubject(m));
    out->len = natsMsg_GetDataLength(m);
    out->data = malloc((size_t)out->len + 1);
    ck_assert_ptr_nonnull(out->data);
    if (out->len > 0)
        memcpy(out->data, natsMsg_GetData(m), (size_t)out->len);

    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(m, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return;
    ck_assert_msg(s == NATS_OK, "header keys of seq %llu: %s", (unsigned long long)seq,
                  natsStatus_GetText(s));
    out->headers = calloc((size_t)nkeys, sizeof *out->headers);
    ck_assert_ptr_nonnull(out->headers);
    out->nheaders = nkeys;
    for (int i = 0; i < nkeys; i++) {
        struct it_header *h = &out->headers[i];
        h->key = it_strdup(keys[i]);
        const char **values = NULL;
        int nvalues = 0;
        s = natsMsgHeader_Values(m, keys[i], &values, &nvalues);
        ck_assert_msg(s == NATS_OK, "header %s of seq %llu: %s", keys[i], (unsigned long long)seq,
                      natsStatus_GetText(s));
        h->values = calloc((size_t)nvalues + 1, sizeof *h->values);
        ck_assert_ptr_nonnull(h->values);
        h->nvalues = nvalues;
        for (int j = 0; j < nvalues; j++)
            h->values[j] = it_strdup(values[j]);
        free((void *)values);
        if (strcmp(h->key, "Nats-Msg-Id") == 0 && nvalues > 0)
            out->msg_id = h->values[0];
    }
    free((void *)keys);
}

void it_js_read_stream(const char *name, struct it_msgs *out)
{
    memset(out, 0, sizeof *out);
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK, "stream info %s: %s", name, natsStatus_GetText(s));
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (msgs == 0)
        return;
    out->msgs = calloc(last - first + 1, sizeof *out->msgs);
    ck_assert_ptr_nonnull(out->msgs);
    for (uint64_t seq = first; seq <= last; seq++) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        s = js_GetMsg(&m, it_js(), name, seq, NULL, &jerr);
        if (s == NATS_NOT_FOUND)
            continue; /* deleted */
        ck_assert_msg(s == NATS_OK, "get %s seq %llu: %s (%d)", name, (unsigned long long)seq,
                      natsStatus_GetText(s), (int)jerr);
        it_msg_copy(&out->msgs[out->count++], m, seq);
        natsMsg_Destroy(m);
    }
}

void it_msgs_free(struct it_msgs *msgs)
{
    for (size_t i = 0; i < msgs->count; i++) {
        struct it_msg *m = &msgs->msgs[i];
        for (int h = 0; h < m->nheaders; h++) {
            for (int v = 0; v < m->headers[h].nvalues; v++)
                free(m->headers[h].values[v]);
            free(m->headers[h].values);
            free(m->headers[h].key);
        }
        free(m->headers);
        free(m->subject);
        free(m->data);
    }
    free(msgs->msgs);
    free(msgs->by_id);
    memset(msgs, 0, sizeof *msgs);
}

static int it_msg_id_cmp(const void *a, const void *b)
{
    const struct it_msg *x = *(struct it_msg *const *)a, *y = *(struct it_msg *const *)b;
    int c = strcmp(x->msg_id ? x->msg_id : "", y->msg_id ? y->msg_id : "");
    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void it_msgs_index(struct it_msgs *msgs)
{
    if (msgs->by_id || msgs->count == 0)
        return;
    msgs->by_id = malloc(msgs->count * sizeof *msgs->by_id);
    ck_assert_ptr_nonnull(msgs->by_id);
    for (size_t i = 0; i < msgs->count; i++)
        msgs->by_id[i] = &msgs->msgs[i];
    qsort(msgs->by_id, msgs->count, sizeof *msgs->by_id, it_msg_id_cmp);
}

const struct it_msg *it_msgs_find(struct it_msgs *msgs, const char *msg_id)
{
    it_msgs_index(msgs);
    size_t lo = 0, hi = msgs->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *id = msgs->by_id[mid]->msg_id ? msgs->by_id[mid]->msg_id : "";
        int c = strcmp(id, msg_id);
        if (c == 0)
            return msgs->by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t it_msgs_duplicate_ids(struct it_msgs *msgs)
{
    it_msgs_index(msgs);
    size_t dups = 0;
    for (size_t i = 1; i < msgs->count; i++) {
        const char *a = msgs->by_id[i - 1]->msg_id, *b = msgs->by_id[i]->msg_id;
        if (strcmp(a ? a : "", b ? b : "") == 0)
            dups++;
    }
    return dups;
}

const struct it_header *it_msg_header(const struct it_msg *msg, const char *key)
{
    for (int i = 0; i < msg->nheaders; i++)
        if (strcmp(msg->headers[i].key, key) == 0)
            return &msg->headers[i];
    return NULL;
}

/* ---- nats-server freeze ---- */

void it_nats_pause(void)
{
    ck_assert_msg(it.nats_pid > 0, "nats-server is not running");
    ck_assert_msg(kill(it.nats_pid, SIGSTOP) == 0, "SIGSTOP nats-server: %s", strerror(errno));
}

void it_nats_resume(void)
{
    ck_assert_msg(it.nats_pid > 0, "nats-server is not running");
    ck_assert_msg(kill(it.nats_pid, SIGCONT) == 0, "SIGCONT nats-server: %s", strerror(errno));
}

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

/* ---- shared checks of the tests ---- */

TCase *it_tcase(Suite *suite, const char *name, void (*setup)(void), double timeout_s)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, setup, it_teardown);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(suite, tc);
    return tc;
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

void it_pg_dump_row_states(PGconn *conn)
{
    PGresult *res = it_pg_query(conn, "SELECT status, attempts, last_error, count(*) FROM outbox"
                                      " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    for (int i = 0; i < PQntuples(res); i++)
        fprintf(stderr, "rows: %s, %s attempts, \"%s\": %s\n", PQgetvalue(res, i, 0),
                PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    PQclear(res);
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

#define IT_PUBLISHED_SQL "SELECT count(*) FROM outbox WHERE status = 'published'"

int64_t it_pg_published(PGconn *conn)
{
    return it_pg_int(conn, IT_PUBLISHED_SQL);
}

int64_t it_pg_wait_published(PGconn *conn, int64_t want, int timeout_ms)
{
    return it_pg_wait_int(conn, IT_PUBLISHED_SQL, want, timeout_ms);
}

static bool it_pg_published_reached(void *arg)
{
    struct it_pg_wait *w = arg;
    w->last = it_pg_published(w->conn);
    return w->last >= w->want;
}

void it_pg_wait_progress(PGconn *conn, int64_t more, int timeout_ms, const char *what)
{
    struct it_pg_wait w = {.conn = conn, .want = it_pg_published(conn) + more, .last = -1};
    ck_assert_msg(it_wait_until(it_pg_published_reached, &w, timeout_ms),
                  "no progress %s: %lld rows published, waited for %lld", what, (long long)w.last,
                  (long long)w.want);
}

void it_pg_record_marks(PGconn *conn)
{
    it_pg_exec(conn,
               "CREATE TABLE mark_log (id bigint, status text, attempts int,"
               " next_attempt_at timestamptz, last_error text, at timestamptz);"
               "CREATE FUNCTION mark_log_row() RETURNS trigger LANGUAGE plpgsql AS $$"
               " BEGIN INSERT INTO mark_log VALUES (NEW.id, NEW.status, NEW.attempts,"
               "   NEW.next_attempt_at, NEW.last_error, clock_timestamp()); RETURN NEW; END $$;"
               /* BEFORE: `at` is read as each row is updated. An AFTER trigger fires only at
                  the end of the statement, milliseconds later for a batch on a loaded machine. */
               "CREATE TRIGGER mark_log BEFORE UPDATE ON outbox"
               " FOR EACH ROW EXECUTE FUNCTION mark_log_row()");
}

int64_t it_pg_relay_lock_holders(PGconn *conn)
{
    return it_pg_int(conn, "SELECT count(DISTINCT l.pid) FROM pg_locks l"
                           " JOIN pg_stat_activity a USING (pid)"
                           " WHERE l.locktype = 'advisory' AND l.granted"
                           "   AND l.classid = " OUTBOX_CLASS_SQL(
                               OUTBOX_LOCK_CLASS) "   AND a.application_name = 'outbox-relay'");
}

void it_js_read_stream_once(const char *name, size_t want, struct it_msgs *out)
{
    ck_assert_int_eq(it_js_stream_msgs(name), want);
    it_js_read_stream(name, out);
    ck_assert_int_eq(out->count, want);
    ck_assert_int_eq(it_msgs_duplicate_ids(out), 0);
}

void it_assert_each_row_once(PGconn *conn, const char *stream, int64_t rows)
{
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox"), rows);
    struct it_msgs msgs;
    it_js_read_stream_once(stream, (size_t)rows, &msgs);
    /* Binary results: payloads come back as raw bytes, text columns as text. */
    PGresult *res = PQexecParams(conn,
                                 "SELECT id::text, event_id, coalesce(stream_seq::text, ''),"
                                 " subject, payload FROM outbox ORDER BY id",
                                 0, NULL, NULL, NULL, NULL, 1);
    ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "reading the outbox: %s",
                  PQresultErrorMessage(res));
    int missing = 0, wrong_seq = 0, wrong_content = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0), *seq = PQgetvalue(res, i, 2);
        const struct it_msg *m = it_msgs_find(&msgs, PQgetvalue(res, i, 1));
        if (m == NULL) {
            if (++missing <= 5)
                fprintf(stderr, "row %s: no message with Nats-Msg-Id %s\n", id,
                        PQgetvalue(res, i, 1));
            continue;
        }
        if (strtoull(seq, NULL, 10) != m->seq && ++wrong_seq <= 5)
            fprintf(stderr, "row %s: stream_seq '%s', its message is at %llu\n", id, seq,
                    (unsigned long long)m->seq);
        int len = PQgetlength(res, i, 4);
        if ((strcmp(m->subject, PQgetvalue(res, i, 3)) != 0 || m->len != len ||
             memcmp(m->data, PQgetvalue(res, i, 4), (size_t)len) != 0) &&
            ++wrong_content <= 5)
            fprintf(stderr, "row %s: its message on %s differs from the row\n", id, m->subject);
    }
    PQclear(res);
    it_msgs_free(&msgs);
    ck_assert_msg(missing == 0, "%d rows without a message in %s", missing, stream);
    ck_assert_msg(wrong_seq == 0, "%d rows whose stream_seq holds another message", wrong_seq);
    ck_assert_msg(wrong_content == 0, "%d rows whose message has another subject or payload",
                  wrong_content);
}

/* ---- PostgreSQL without the outbox schema, and a streaming replica ---- */

void it_pg_set_migrations(bool migrate)
{
    it_pg_skip_migrations = !migrate;
}

void it_pg_apply_migrations(void)
{
    ck_assert_msg(it.pg_pid > 0, "PostgreSQL not running");
    it_pg_migrate();
}

void it_pg_stop_immediate(void)
{
    if (it.pg_pid <= 0)
        return;
    /* SIGQUIT = immediate shutdown: backends are killed, no checkpoint. */
    it_stop_process(it.pg_pid, SIGQUIT, 30000);
    it.pg_pid = 0;
}

/* Outside `it` as well: it_teardown() stops it before the primary. */
static struct {
    pid_t owner; /* the process that started it */
    pid_t pid;
    int port;
    char url[256];
} it_replica;

static bool it_replica_ready(void *arg)
{
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2",
             it_replica.port);
    return PQping(conninfo) == PQPING_OK;
}

/* Returns true when the one-row, one-column query `sql` on conn answers `want`. */
static bool it_pg_answers(PGconn *conn, const char *sql, const char *want)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
              strcmp(PQgetvalue(res, 0, 0), want) == 0;
    PQclear(res);
    return ok;
}

struct it_pg_answer {
    PGconn *conn;
    const char *sql, *want;
};

static bool it_pg_answer_cond(void *arg)
{
    struct it_pg_answer *a = arg;
    return it_pg_answers(a->conn, a->sql, a->want);
}

void it_pg_replica_start(bool synchronous)
{
    ck_assert_msg(it.pg_pid > 0, "start the primary before its replica");
    ck_assert_msg(it_replica.pid == 0, "one replica per test");
    char data[PATH_MAX], log_path[PATH_MAX], port[16], primary_port[16];
    snprintf(data, sizeof data, "%s/pgreplica", it.dir);
    snprintf(log_path, sizeof log_path, "%s/replica.log", it.dir);
    snprintf(primary_port, sizeof primary_port, "%d", it.pg_port);
    /* -R writes standby.signal and primary_conninfo; -c fast: no wait for a checkpoint. */
    const char *backup[] = {PG_BIN "/pg_basebackup",
                            "-h",
                            "127.0.0.1",
                            "-p",
                            primary_port,
                            "-U",
                            "postgres",
                            "-D",
                            data,
                            "-R",
                            "-X",
                            "stream",
                            "-c",
                            "fast",
                            "--no-sync",
                            NULL};
    char backup_log[PATH_MAX];
    snprintf(backup_log, sizeof backup_log, "%s/basebackup.log", it.dir);
    it_run_tool(backup, backup_log, true, 120000);

    it_replica.port = it_free_port();
    it_replica.owner = getpid();
    snprintf(it_replica.url, sizeof it_replica.url, "postgresql://postgres@127.0.0.1:%d/%s",
             it_replica.port, IT_DB);
    snprintf(port, sizeof port, "%d", it_replica.port);
    char sockdir[PATH_MAX + 32];
    snprintf(sockdir, sizeof sockdir, "unix_socket_directories=%s", it.dir);
    /* The replica never waits for a standby of its own, promoted or not. */
    const char *argv[] = {PG_BIN "/postgres",
                          "-D",
                          data,
                          "-p",
                          port,
                          "-c",
                          "listen_addresses=127.0.0.1",
                          "-c",
                          sockdir,
                          "-c",
                          "fsync=off",
                          "-c",
                          "full_page_writes=off",
                          "-c",
                          "max_connections=50",
                          "-c",
                          "synchronous_standby_names=",
                          NULL};
    it_replica.pid = it_spawn(argv, NULL, log_path, true, SIGQUIT);
    if (!it_wait_until(it_replica_ready, NULL, 30000)) {
        it_dump_tail("replica log", log_path, 40);
        ck_abort_msg("replica not ready on port %d within 30 s", it_replica.port);
    }

    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             it.pg_port);
    PGconn *c = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    struct it_pg_answer streaming = {
        c, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", "1"};
    if (!it_wait_until(it_pg_answer_cond, &streaming, 30000)) {
        it_dump_tail("replica log", log_path, 40);
        ck_abort_msg("the replica does not stream from the primary within 30 s");
    }
    if (synchronous) {
        it_pg_exec(c, "ALTER SYSTEM SET synchronous_standby_names = '*'");
        it_pg_exec(c, "SELECT pg_reload_conf()");
        struct it_pg_answer sync = {
            c, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", "1"};
        ck_assert_msg(it_wait_until(it_pg_answer_cond, &sync, 30000),
                      "the replica did not become synchronous within 30 s");
    }
    PQfinish(c);
}

int it_pg_replica_port(void)
{
    return it_replica.port;
}

PGconn *it_pg_replica_connect(void)
{
    ck_assert_msg(it_replica.pid > 0, "no replica running");
    PGconn *c = PQconnectdb(it_replica.url);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", it_replica.url,
                  PQerrorMessage(c));
    return c;
}

void it_pg_replica_promote(void)
{
    PGconn *c = it_pg_replica_connect();
    /* wait => true: returns once the promotion is complete (or 60 s passed). */
    ck_assert_msg(it_pg_answers(c, "SELECT pg_promote(true, 60)", "t"), "pg_promote failed: %s",
                  PQerrorMessage(c));
    struct it_pg_answer writable = {c, "SELECT pg_is_in_recovery()", "f"};
    ck_assert_msg(it_wait_until(it_pg_answer_cond, &writable, 30000),
                  "the replica still in recovery 30 s after pg_promote");
    PQfinish(c);
}

static void it_pg_replica_teardown(void)
{
    if (it_replica.owner == getpid() && it_replica.pid > 0)
        it_stop_process(it_replica.pid, SIGQUIT, 10000);
    memset(&it_replica, 0, sizeof it_replica);
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

/* ==== fault injection, memory and per-key order audit (issues 9-11) ==== */

long it_proc_status_kb(pid_t pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t len = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, len) == 0 && line[len] == ':' &&
            sscanf(line + len + 1, "%ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int it_proc_tcp_local_ports(pid_t pid, int remote_port, int *ports, int max)
{
    /* The process's socket inodes, then the sockets of its network namespace that match them. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    unsigned long inodes[256];
    int ninodes = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && ninodes < 256) {
        char link[PATH_MAX], target[128];
        snprintf(link, sizeof link, "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        unsigned long ino;
        if (sscanf(target, "socket:[%lu]", &ino) == 1)
            inodes[ninodes++] = ino;
    }
    closedir(d);
    snprintf(path, sizeof path, "/proc/%d/net/tcp", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f) && found < max) {
        unsigned local_port, rem_port;
        unsigned long ino;
        if (sscanf(line, " %*d: %*8s:%x %*8s:%x %*x %*s %*s %*s %*d %*d %lu", &local_port,
                   &rem_port, &ino) != 3 ||
            (int)rem_port != remote_port)
            continue;
        for (int i = 0; i < ninodes; i++)
            if (inodes[i] == ino)
                ports[found++] = (int)local_port;
    }
    fclose(f);
    return found;
}

static struct {
    pid_t owner;   /* test process whose rules these are */
    pid_t watcher; /* deletes them when owner ends */
    int pipe_fd;   /* write end: its EOF tells the watcher the owner ended */
} it_net = {.pipe_fd = -1};

/* Runs a shell command line, no Check calls (the watcher uses it); its exit status. */
static int it_net_sh(const char *cmd)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Deletes every INPUT rule tagged outbox-test-<owner>. */
static void it_net_delete_rules(pid_t owner)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "iptables -w -S INPUT | grep -- '--comment outbox-test-%d ' | sed 's/^-A /-D /' |"
             " while read -r rule; do iptables -w $rule; done",
             (int)owner);
    it_net_sh(cmd);
}

bool it_net_available(void)
{
    if (geteuid() != 0)
        return false;
    /* The rules can be listed (the nf_tables/xtables backend works in this namespace). */
    return it_net_sh("command -v iptables && iptables -w -S INPUT") == 0;
}

void it_net_drop(int port_a, int port_b)
{
    ck_assert_msg(it_net_available(), "iptables is not usable here (root and iptables needed)");
    pid_t self = getpid();
    if (it_net.owner != self) {
        int fds[2];
        ck_assert_msg(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            /* The watcher: outlives a failed test (its own session), heals when the pipe ends. */
            setsid();
            signal(SIGINT, SIG_IGN);
            signal(SIGHUP, SIG_IGN);
            signal(SIGTERM, SIG_IGN);
            for (int fd = 3; fd < 1024; fd++)
                if (fd != fds[0])
                    close(fd); /* the janitor's socket too: it waits for that to close */
            char c;
            while (read(fds[0], &c, 1) != 0 && errno == EINTR)
                ;
            it_net_delete_rules(self);
            _exit(0);
        }
        close(fds[0]);
        it_net.owner = self;
        it_net.watcher = pid;
        it_net.pipe_fd = fds[1];
    }
    char cmd[512];
    for (int dir = 0; dir < 2; dir++) {
        int sport = dir ? port_b : port_a, dport = dir ? port_a : port_b;
        snprintf(cmd, sizeof cmd,
                 "iptables -w -I INPUT -p tcp -s 127.0.0.1 -d 127.0.0.1 --sport %d --dport %d"
                 " -m comment --comment outbox-test-%d -j DROP",
                 sport, dport, (int)self);
        ck_assert_msg(it_net_sh(cmd) == 0, "failed: %s", cmd);
    }
}

void it_net_heal(void)
{
    if (it_net.owner != getpid())
        return;
    it_net_delete_rules(it_net.owner);
    close(it_net.pipe_fd);
    waitpid(it_net.watcher, NULL, 0);
    it_net.owner = 0;
    it_net.watcher = 0;
    it_net.pipe_fd = -1;
}

void it_net_teardown(void)
{
    it_net_heal();
    it_teardown();
}

struct it_audit_row {
    char *event_id;
    int64_t id;
    int key; /* index of its ordering_key; -1: none */
    bool seen;
};

static int it_audit_row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct it_audit_row *)a)->event_id,
                  ((const struct it_audit_row *)b)->event_id);
}

void it_audit_key_order(PGconn *conn, const char *stream, int show, struct it_key_audit *out)
{
    memset(out, 0, sizeof *out);
    PGresult *res = it_pg_query(conn, "SELECT event_id, id,"
                                      " CASE WHEN ordering_key IS NULL THEN -1"
                                      "      ELSE dense_rank() OVER (ORDER BY ordering_key) END"
                                      " FROM outbox");
    size_t n = (size_t)PQntuples(res);
    struct it_audit_row *rows = calloc(n + 1, sizeof *rows);
    ck_assert_ptr_nonnull(rows);
    int nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        rows[i].event_id = it_strdup(PQgetvalue(res, (int)i, 0));
        rows[i].id = strtoll(PQgetvalue(res, (int)i, 1), NULL, 10);
        rows[i].key = atoi(PQgetvalue(res, (int)i, 2));
        if (rows[i].key > nkeys)
            nkeys = rows[i].key;
    }
    PQclear(res);
    qsort(rows, n, sizeof *rows, it_audit_row_cmp);
    out->rows = n;
    out->keys = (size_t)nkeys;
    /* Highest row id (and its sequence) published so far per key; ranks start at 1. */
    int64_t *last_id = calloc((size_t)nkeys + 1, sizeof *last_id);
    uint64_t *last_seq = calloc((size_t)nkeys + 1, sizeof *last_seq);
    ck_assert(last_id && last_seq);

    struct it_msgs msgs;
    it_js_read_stream(stream, &msgs);
    out->messages = msgs.count;
    for (size_t i = 0; i < msgs.count; i++) {
        const struct it_msg *m = &msgs.msgs[i];
        struct it_audit_row probe = {.event_id = m->msg_id ? m->msg_id : ""};
        struct it_audit_row *r = bsearch(&probe, rows, n, sizeof *rows, it_audit_row_cmp);
        if (r == NULL) {
            out->unknown++;
            continue;
        }
        if (r->seen) {
            out->duplicates++;
            continue;
        }
        r->seen = true;
        out->distinct++;
        if (r->key < 0)
            continue;
        if (r->id < last_id[r->key]) {
            if ((int)out->inversions < show)
                fprintf(stderr,
                        "key order: row %lld (key #%d) at stream seq %llu, after its key's"
                        " row %lld at seq %llu\n",
                        (long long)r->id, r->key, (unsigned long long)m->seq,
                        (long long)last_id[r->key], (unsigned long long)last_seq[r->key]);
            out->inversions++;
        } else {
            last_id[r->key] = r->id;
            last_seq[r->key] = m->seq;
        }
    }
    out->missing = out->rows - out->distinct;
    it_msgs_free(&msgs);
    for (size_t i = 0; i < n; i++)
        free(rows[i].event_id);
    free(rows);
    free(last_id);
    free(last_seq);
}

void it_assert_keys_in_order_once(PGconn *conn, const char *stream)
{
    struct it_key_audit a;
    it_audit_key_order(conn, stream, 10, &a);
    fprintf(stderr,
            "audit %s: %zu rows, %zu keys, %zu messages, %zu distinct, %zu duplicates,"
            " %zu unknown, %zu missing, %zu key-order inversions\n",
            stream, a.rows, a.keys, a.messages, a.distinct, a.duplicates, a.unknown, a.missing,
            a.inversions);
    ck_assert_msg(a.inversions == 0, "%zu rows reached the stream after a later row of their key",
                  a.inversions);
    ck_assert_msg(a.missing == 0, "%zu rows have no message", a.missing);
    ck_assert_msg(a.duplicates == 0, "%zu messages duplicate an earlier one", a.duplicates);
    ck_assert_msg(a.unknown == 0, "%zu messages match no row", a.unknown);
    ck_assert_int_eq(a.messages, a.rows);
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

/* ==== a 3-node nats-server cluster (issue 11 §3) ==== */

/* Outside `it`, like the replica: it_teardown() stops the nodes before PostgreSQL. */
static struct {
    pid_t owner; /* the process that started them */
    pid_t pid[IT_CLUSTER_NODES];
    int port[IT_CLUSTER_NODES];  /* client */
    int route[IT_CLUSTER_NODES]; /* cluster (route) listener */
    char log_path[IT_CLUSTER_NODES][PATH_MAX];
} it_cluster;

/* A free port none of the first `n` of `taken` holds (two binds to port 0 may agree). */
static int it_free_port_except(const int *taken, int n)
{
    for (;;) {
        int port = it_free_port(), i = 0;
        while (i < n && taken[i] != port)
            i++;
        if (i == n)
            return port;
    }
}

static void it_nats_cluster_write_config(int node, const char *path)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "create %s: %s", path, strerror(errno));
    fprintf(f,
            "server_name: it-n%d\n"
            "listen: 127.0.0.1:%d\n"
            "jetstream { store_dir: \"%s/nats-n%d\" }\n"
            "cluster {\n  name: it-cluster\n  listen: 127.0.0.1:%d\n  routes: [\n",
            node + 1, it_cluster.port[node], it.dir, node + 1, it_cluster.route[node]);
    for (int i = 0; i < IT_CLUSTER_NODES; i++)
        if (i != node)
            fprintf(f, "    nats-route://127.0.0.1:%d\n", it_cluster.route[i]);
    fprintf(f, "  ]\n}\n");
    ck_assert_msg(fclose(f) == 0, "write %s: %s", path, strerror(errno));
}

static void it_nats_cluster_dump_logs(void)
{
    for (int i = 0; i < IT_CLUSTER_NODES; i++)
        it_dump_tail("nats-server node log", it_cluster.log_path[i], 30);
}

/* Creates an R3 stream on a JetStream API that may not be placing streams yet; false: retry. */
static bool it_js_try_add_stream(const char *name, const char *const *subjects, int replicas,
                                 natsStatus *s, jsErrCode *jerr)
{
    jsStreamConfig cfg;
    it_stream_config(&cfg, name, subjects, replicas);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    jsStreamInfo *si = NULL;
    *jerr = 0;
    *s = js_AddStream(&si, it_js(), &cfg, &jo, jerr);
    jsStreamInfo_Destroy(si);
    return *s == NATS_OK;
}

struct it_stream_create {
    const char *name;
    const char *const *subjects;
    int replicas;
    natsStatus s;
    jsErrCode jerr;
};

static bool it_stream_created(void *arg)
{
    struct it_stream_create *c = arg;
    return it_js_try_add_stream(c->name, c->subjects, c->replicas, &c->s, &c->jerr);
}

void it_js_add_stream_replicas(const char *name, const char *const *subjects, int replicas)
{
    /* A fresh cluster answers "no suitable peers" / times out until every node has joined. */
    struct it_stream_create c = {name, subjects, replicas, NATS_OK, 0};
    ck_assert_msg(it_wait_until(it_stream_created, &c, 30000),
                  "add stream %s with %d replicas: %s (%d: %s)", name, replicas,
                  natsStatus_GetText(c.s), (int)c.jerr, nats_GetLastError(NULL));
}

void it_nats_cluster_start(void)
{
    it_setup();
    ck_assert_msg(!it.nats_initialized, "a cluster replaces it_nats_start, not both");
    int taken[2 * IT_CLUSTER_NODES], ntaken = 0;
    for (int i = 0; i < IT_CLUSTER_NODES; i++) {
        it_cluster.port[i] = taken[ntaken] = it_free_port_except(taken, ntaken);
        ntaken++;
        it_cluster.route[i] = taken[ntaken] = it_free_port_except(taken, ntaken);
        ntaken++;
    }
    it_cluster.owner = getpid();
    size_t used = 0;
    for (int i = 0; i < IT_CLUSTER_NODES; i++) {
        char conf[PATH_MAX];
        snprintf(conf, sizeof conf, "%s/nats-n%d.conf", it.dir, i + 1);
        snprintf(it_cluster.log_path[i], sizeof it_cluster.log_path[i], "%s/nats-n%d.log", it.dir,
                 i + 1);
        it_nats_cluster_write_config(i, conf);
        const char *argv[] = {it_nats_binary(), "-c", conf, NULL};
        it_cluster.pid[i] = it_spawn(argv, NULL, it_cluster.log_path[i], false, SIGKILL);
        used += (size_t)snprintf(it.nats_url + used, sizeof it.nats_url - used,
                                 "%snats://127.0.0.1:%d", i ? "," : "", it_cluster.port[i]);
    }
    /* it_js() and it_relay_start() now talk to the cluster. */
    it.nats_port = it_cluster.port[0];
    it.nats_initialized = true;

    int64_t deadline = it_now_ms() + 20000;
    for (int i = 0; i < IT_CLUSTER_NODES; i++)
        while (!it_nats_port_ready(it_cluster.port[i])) {
            int st;
            if (waitpid(it_cluster.pid[i], &st, WNOHANG) == it_cluster.pid[i]) {
                char why[64];
                it_untrack(it_cluster.pid[i]);
                it_cluster.pid[i] = 0;
                it_nats_cluster_dump_logs();
                ck_abort_msg("nats-server node %d exited at start: %s", i + 1,
                             it_describe_status(st, why, sizeof why));
            }
            if (it_now_ms() >= deadline) {
                it_nats_cluster_dump_logs();
                ck_abort_msg("nats-server node %d not ready on port %d within 20 s", i + 1,
                             it_cluster.port[i]);
            }
            it_sleep_ms(20);
        }
    /* JetStream is usable once a meta leader places a stream on every node. */
    const char *subjects[] = {"it.cluster.probe", NULL};
    struct it_stream_create c = {"IT_CLUSTER_PROBE", subjects, IT_CLUSTER_NODES, NATS_OK, 0};
    if (!it_wait_until(it_stream_created, &c, 30000)) {
        it_nats_cluster_dump_logs();
        ck_abort_msg("the cluster places no R%d stream within 30 s: %s (%d)", IT_CLUSTER_NODES,
                     natsStatus_GetText(c.s), (int)c.jerr);
    }
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(it_js(), "IT_CLUSTER_PROBE", NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "delete the probe stream: %s (%d)", natsStatus_GetText(s),
                  (int)jerr);
}

const char *it_nats_cluster_url(void)
{
    ck_assert_msg(it_cluster.owner == getpid(), "no cluster running");
    return it.nats_url;
}

int it_nats_cluster_port(int node)
{
    return it_cluster.port[node];
}

pid_t it_nats_cluster_pid(int node)
{
    return it_cluster.pid[node];
}

static void it_nats_cluster_teardown(void)
{
    if (it_cluster.owner == getpid())
        for (int i = 0; i < IT_CLUSTER_NODES; i++)
            it_stop_process(it_cluster.pid[i], SIGKILL, 0);
    memset(&it_cluster, 0, sizeof it_cluster);
}

void it_start_servers_cluster(void)
{
    it_setup();
    it_pg_start();
    it_nats_cluster_start();
}

natsConnection *it_nats_conn(void)
{
    it_js();
    return it.nc;
}

/* Stream info with a short deadline: during an election nobody answers for a while. */
static jsStreamInfo *it_js_stream_info_quick(const char *name, natsStatus *status)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *status = js_GetStreamInfo(&si, it_js(), name, &jo, &jerr);
    return si;
}

bool it_js_stream_leader(const char *name, char *buf, size_t len)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info_quick(name, &s);
    bool found = s == NATS_OK && si->Cluster != NULL && si->Cluster->Leader != NULL &&
                 si->Cluster->Leader[0] != '\0';
    if (found)
        snprintf(buf, len, "%s", si->Cluster->Leader);
    jsStreamInfo_Destroy(si);
    return found;
}

int it_js_stream_replicas(const char *name)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK, "stream info %s: %s", name, natsStatus_GetText(s));
    int replicas = si->Config->Replicas;
    jsStreamInfo_Destroy(si);
    return replicas;
}
