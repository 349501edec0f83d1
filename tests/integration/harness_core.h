/* Integration-test harness, core: a test's temp dir and lifecycle, waiting on conditions. */
#ifndef OUTBOX_RELAY_IT_HARNESS_CORE_H
#define OUTBOX_RELAY_IT_HARNESS_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <check.h>

/*
 * Lifecycle. Every process the harness starts is a child of the calling
 * process (with Check's fork mode: of the test's own process), tracked by
 * pid and stopped by it_teardown(). A failed check ends the test process
 * with _exit(): no teardown, no atexit. So every child also dies with its
 * parent (PR_SET_PDEATHSIG; SIGQUIT for PostgreSQL, an immediate shutdown),
 * and a janitor process, outside the test's process group, notices the test
 * process is gone, prints the relay logs, stops what is left and removes the
 * temp dir. SIGTERM/SIGINT/SIGHUP stop the children too. IT_KEEP=1 in the
 * environment keeps the temp dir for debugging.
 *
 * State belongs to the process that called it_setup(): use checked fixtures
 * (they run in the test's process), never unchecked ones.
 * Typical use: tcase_add_checked_fixture(tc, it_start_servers, it_teardown).
 */
void it_setup(void);         /* temp dir and cleanup hooks only, no servers */
void it_start_servers(void); /* it_setup + PostgreSQL (migrated) + nats-server -js */
void it_teardown(void);      /* stop everything, remove the temp dir */
const char *it_dir(void);    /* the test's temp dir */

/* A free loopback TCP port (bound to 127.0.0.1:0, read, closed). */
int it_free_port(void);

/* Milliseconds on the monotonic clock. */
int64_t it_now_ms(void);

/*
 * Calls cond(arg) every 25 ms until it returns true (→ true) or timeout_ms
 * passes (→ false, after one last call). Fails the test at once if a relay
 * ends on its own meanwhile (one that was neither signalled with
 * it_relay_signal nor waited for with it_relay_wait).
 */
bool it_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);

/*
 * A test case added to `suite` whose tests each run between setup (e.g.
 * it_start_servers) and it_teardown, as a checked fixture, with a timeout.
 */
TCase *it_tcase(Suite *suite, const char *name, void (*setup)(void), double timeout_s);

#endif
