/* The relay's state for systemd: READY=1, STATUS= and WATCHDOG=1 from the probes' own answers. */
#include "outbox_relay/ops/service_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/ops/sd_notify.h"

struct service_status {
    ev_timer tick; /* first: the callback casts back */
    struct ev_loop *loop;
    struct relay *relay;
    struct sd_notifier *notifier;
    struct sd_told told;
    double watchdog_interval;
    bool stopping;
    bool send_failed_logged;
};

void service_status_text(bool ready, const char *ready_why, bool healthy, const char *healthy_why,
                         bool leader, bool stopping, char *buf, size_t len)
{
    if (stopping)
        snprintf(buf, len, "stopping: draining in-flight publishes");
    else if (!ready)
        snprintf(buf, len, "waiting: %s", ready_why);
    else if (!leader)
        snprintf(buf, len, "standby: another relay holds the leader lock");
    else if (!healthy)
        snprintf(buf, len, "leader: %s", healthy_why);
    else
        snprintf(buf, len, "leader: relaying");
}

static void service_status_send(struct service_status *ss, const char *message)
{
    if (sd_notifier_send(ss->notifier, message) < 0 && !ss->send_failed_logged) {
        ss->send_failed_logged = true; /* once: the loop must not flood the log every second */
        log_warn("cannot notify systemd", "{s:s}", "socket", getenv("NOTIFY_SOCKET"));
    }
}

static void service_status_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct service_status *ss = (struct service_status *)w;
    char ready_why[200] = "", healthy_why[200] = "", status[256], message[512];
    struct relay_facts f;
    relay_facts(ss->relay, &f);
    bool ready = health_ready(&f, ready_why, sizeof(ready_why));
    bool healthy = health_healthy(&f, healthy_why, sizeof(healthy_why));
    bool leader = f.leading;
    service_status_text(ready, ready_why, healthy, healthy_why, leader, ss->stopping, status,
                        sizeof(status));
    sd_notify_compose(&ss->told, ready && !ss->stopping, healthy, status, ev_now(loop),
                      ss->watchdog_interval, message, sizeof(message));
    service_status_send(ss, message);
}

struct service_status *service_status_start(struct ev_loop *loop, struct relay *relay)
{
    char err[256];
    const char *path = getenv("NOTIFY_SOCKET");
    struct sd_notifier *notifier = sd_notifier_open(path, err, sizeof(err));
    if (notifier == NULL) {
        if (path != NULL && path[0] != '\0')
            log_warn("systemd notifications off", "{s:s}", "error", err);
        return NULL;
    }
    struct service_status *ss = calloc(1, sizeof(*ss));
    if (ss == NULL) {
        sd_notifier_close(notifier);
        return NULL;
    }
    ss->loop = loop;
    ss->relay = relay;
    ss->notifier = notifier;
    ss->told.last_watchdog = -1;
    ss->watchdog_interval =
        sd_watchdog_interval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid());
    double every = 1.0;
    if (ss->watchdog_interval > 0 && ss->watchdog_interval < every)
        every = ss->watchdog_interval;
    ev_timer_init(&ss->tick, service_status_on_tick, 0.0, every);
    ev_timer_start(loop, &ss->tick);
    log_info("systemd notifications on", "{s:s, s:f}", "socket", path, "watchdog_interval_s",
             ss->watchdog_interval);
    return ss;
}

void service_status_stopping(struct service_status *ss)
{
    if (ss == NULL || ss->stopping)
        return;
    ss->stopping = true;
    char status[256], message[512];
    service_status_text(false, "", false, "", false, true, status, sizeof(status));
    snprintf(message, sizeof(message), "STOPPING=1\nSTATUS=%s", status);
    snprintf(ss->told.status, sizeof(ss->told.status), "%s", status);
    service_status_send(ss, message);
}

void service_status_reloading(struct service_status *ss, bool done)
{
    if (ss == NULL || ss->stopping)
        return;
    if (!done) {
        /* MONOTONIC_USEC lets systemd (Type=notify-reload) tell this reload from an older one. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        char message[128];
        snprintf(message, sizeof(message), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ULL +
                     (unsigned long long)ts.tv_nsec / 1000);
        service_status_send(ss, message);
    } else if (ss->told.ready) {
        /* Not ready before the reload: READY=1 comes with the connection, from the tick. */
        service_status_send(ss, "READY=1");
    }
}

void service_status_stop(struct service_status *ss)
{
    if (ss == NULL)
        return;
    ev_timer_stop(ss->loop, &ss->tick);
    sd_notifier_close(ss->notifier);
    free(ss);
}
