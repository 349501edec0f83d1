/* Tells the service manager (systemd, via sd_notify) whether the relay is ready, what it does, and
 * that its loop is alive. */
#ifndef OUTBOX_RELAY_SERVICE_STATUS_H
#define OUTBOX_RELAY_SERVICE_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include "outbox_relay/pipeline/relay.h"

struct service_status;

/*
 * Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; without NOTIFY_SOCKET
 * it returns NULL and every call below is a no-op (they accept NULL). When
 * set, a timer on loop polls health_ready()/health_healthy() every second (or
 * every half watchdog interval, if shorter) and sends READY=1 once ready,
 * STATUS= on every change of state, WATCHDOG=1 while healthy (the /healthz
 * rule: a stalled leader stops pinging and WatchdogSec= restarts it).
 */
struct service_status *service_status_start(struct ev_loop *loop, struct relay *relay);
/* SIGTERM: STOPPING=1 and a stopping STATUS=. */
void service_status_stopping(struct service_status *ss);
/* SIGHUP: RELOADING=1 before (done = false) and READY=1 after (done = true) a reload. */
void service_status_reloading(struct service_status *ss, bool done);
void service_status_stop(struct service_status *ss);

/*
 * The one-line state for STATUS= (and logs): "leader: relaying",
 * "standby: another relay holds the leader lock", "waiting: postgresql not
 * connected", "leader: stalled: ...", "stopping: ...". why strings as
 * health_ready()/health_healthy() give them. Pure.
 */
void service_status_text(bool ready, const char *ready_why, bool healthy, const char *healthy_why,
                         bool leader, bool stopping, char *buf, size_t len);

#endif
