/* Integration-test harness: the relay (RELAY_BINARY) as a child process. */
#ifndef OUTBOX_RELAY_IT_HARNESS_RELAY_H
#define OUTBOX_RELAY_IT_HARNESS_RELAY_H

#include <stdbool.h>
#include <sys/types.h>
#include <jansson.h>
#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/log_events.h"

/* The relay's settings for the test servers (no NATS server needed: a
 * closed port stands in when none runs), plus `args`: "--flag", "value"
 * pairs, NULL-terminated, or NULL. For tests of a module's SQL. */
void it_relay_config(struct relay_config *cfg, const char *const *args);

/* ---- the relay (RELAY_BINARY) ---- */

struct it_relay {
    pid_t pid;
    char log_path[4096]; /* stdout + stderr */
    bool exited;
    int wstatus;   /* waitpid() status once exited */
    bool stopping; /* signalled or waited for: its exit is expected */
    int http_port; /* /healthz, /readyz, /metrics on 127.0.0.1; 0 if not started with it */
};

/*
 * Spawns the relay. The environment is the test's, without any OUTBOX_*
 * variable, plus OUTBOX_PG_URL and OUTBOX_NATS_URL of the running servers,
 * OUTBOX_HTTP_ADDR="", then `env` ("KEY=VALUE", NULL-terminated, may be
 * NULL; a later entry replaces an earlier one with the same key). `args`
 * (NULL-terminated, may be NULL) follow the program name. The harness owns
 * the result; it is killed (if running) and freed at teardown.
 */
/* The relay binary tests start: $IT_RELAY_BINARY (e.g. another build, for an A/B bench), else
 * this build's. */
const char *it_relay_binary(void);
struct it_relay *it_relay_start(const char *const *env, const char *const *args);

/* it_relay_start with OUTBOX_HTTP_ADDR on a free loopback port (first: `env` may replace it). */
struct it_relay *it_relay_start_http(const char *const *env, const char *const *args);

void it_relay_signal(struct it_relay *relay, int sig);

/* Waits up to timeout_ms for the relay to exit; true once it has (see wstatus). */
bool it_relay_wait(struct it_relay *relay, int timeout_ms);

/* Exit code if it exited normally, -signal if a signal ended it, -1000 if still running. */
int it_relay_exit_code(const struct it_relay *relay);

char *it_relay_log(const struct it_relay *relay); /* whole log, malloc'd, never NULL */
bool it_relay_log_contains(const struct it_relay *relay, const char *needle);
void it_relay_dump_log(const struct it_relay *relay); /* to stderr */

/*
 * Runs the relay to completion (e.g. --check, or a bad setting) and returns
 * its exit code; fails the test if it is still running after timeout_ms or
 * dies of a signal. *output (if not NULL) receives its stdout + stderr.
 */
int it_relay_run(const char *const *env, const char *const *args, int timeout_ms, char **output);

/* SIGTERM, then the relay must exit 0 within 15 s. */
void it_relay_stop(struct it_relay *relay);

/* Waits until the relay's log holds `needle` at least `times` times; true if it does. */
bool it_relay_wait_log(struct it_relay *relay, const char *needle, int times, int timeout_ms);

/*
 * Whether a log line's "msg" is exactly `msg`, one of the LOG_MSG_* of
 * outbox_relay/lib/log_events.h (the relay logs JSON lines in the tests):
 * the event, not a phrase that happens to occur in some other line.
 */
bool it_relay_logged(const struct it_relay *relay, const char *msg);
/* Waits until `times` lines have the "msg" `msg`; true if they do. */
bool it_relay_wait_logged(struct it_relay *relay, const char *msg, int times, int timeout_ms);

/*
 * Runs an operator command (`outbox-relay <args>`, with the environment of
 * it_relay_start) to completion within 60 s; returns its exit code. *doc (if
 * not NULL) receives the JSON object of the last output line that is one (or
 * NULL), *output (if not NULL) the whole output (stdout + stderr), which is
 * also printed to stderr for the test log.
 */
int it_relay_cmd(const char *const *env, const char *const *args, json_t **doc, char **output);

#endif
