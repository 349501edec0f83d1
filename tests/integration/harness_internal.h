/* What the harness's sources share and the tests do not see: the one state of a test's servers
 * and relays, and the process helpers every server start goes through. */
#ifndef OUTBOX_RELAY_IT_HARNESS_INTERNAL_H
#define OUTBOX_RELAY_IT_HARNESS_INTERNAL_H

#include "harness.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

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

/* Reset by it_setup(); belongs to the process that called it. */
struct it_state {
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
};
extern struct it_state it;

void it_sleep_ms(int ms);

/* The whole file, NUL-terminated (malloc'd), or NULL. No Check calls: the janitor uses it. */
char *it_slurp(const char *path);
/* it_slurp, "" for a missing file; fails the test when out of memory. */
char *it_read_file(const char *path);
/* Writes the last `lines` lines of a file to stderr, framed with its name. */
void it_dump_tail(const char *title, const char *path, int lines);

/* Tells the janitor (and the fatal-signal handler) about a child to stop, or one reaped. */
void it_track(pid_t pid, int stop_sig);
void it_untrack(pid_t pid);
/* A line of the janitor's protocol ("L <relay log path>\n", ...). */
void it_janitor_send(const char *line);

/*
 * Starts argv[0] with stdout+stderr appended to log_path; as the server user when we are root;
 * it dies with the test process (death_sig). Tracked until reaped.
 */
pid_t it_spawn(const char *const *argv, char *const *envp, const char *log_path,
               bool as_server_user, int death_sig);
/* Waits up to timeout_ms for pid to exit; true (and *wstatus) once reaped. */
bool it_reap(pid_t pid, int timeout_ms, int *wstatus);
/* Sends sig, waits up to timeout_ms, then SIGKILLs. */
void it_stop_process(pid_t pid, int sig, int timeout_ms);
const char *it_describe_status(int st, char *buf, size_t len);
/* Runs a short-lived tool to completion; fails the test (showing its log) unless it exits 0. */
void it_run_tool(const char *const *argv, const char *log_path, bool as_server_user,
                 int timeout_ms);

/* Fails the test if a relay ended on its own (neither signalled nor waited for). */
void it_check_relays_alive(void);

/* Teardown of the servers that live outside `it`: stops them if this process started them. */
void it_pg_replica_teardown(void);
void it_nats_cluster_teardown(void);

/* Stream info of `name` (caller destroys it); *status says whether there is one. */
jsStreamInfo *it_js_stream_info(const char *name, natsStatus *status);

#endif
