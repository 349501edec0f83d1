/* systemd's service notification protocol (sd_notify(3)): datagrams to $NOTIFY_SOCKET. */
#ifndef OUTBOX_RELAY_SD_NOTIFY_H
#define OUTBOX_RELAY_SD_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct sd_notifier;

/*
 * Opens a datagram socket towards socket_path (the value of NOTIFY_SOCKET:
 * a file path, or "@name" for the abstract namespace). NULL or "" (not run
 * by systemd) returns NULL without an error; every function accepts NULL.
 * Returns NULL with err on a path that cannot be used.
 */
struct sd_notifier *sd_notifier_open(const char *socket_path, char *err, size_t errlen);
/* Sends one datagram of "KEY=VALUE" lines; -1 on failure (the caller logs once, not per tick). */
int sd_notifier_send(struct sd_notifier *n, const char *message);
void sd_notifier_close(struct sd_notifier *n);

/*
 * The watchdog ping interval in seconds (half of WATCHDOG_USEC, as
 * sd_watchdog_enabled(3) advises), from the WATCHDOG_USEC and WATCHDOG_PID
 * values (either may be NULL); 0 when the watchdog is off or meant for
 * another process. Pure.
 */
double sd_watchdog_interval(const char *watchdog_usec, const char *watchdog_pid, pid_t self);

/* What has been told to systemd so far. */
struct sd_told {
    bool ready;           /* READY=1 sent */
    char status[256];     /* the last STATUS= sent */
    double last_watchdog; /* when WATCHDOG=1 was last sent; < 0 = never */
};

/*
 * The next message for the state now: READY=1 the first time ready is
 * true, STATUS= when status differs from the last one sent, WATCHDOG=1 when
 * healthy and at least watchdog_interval (> 0) has passed since the last
 * one. Writes "" when there is nothing to say. Updates told. Pure.
 */
void sd_notify_compose(struct sd_told *told, bool ready, bool healthy, const char *status,
                       double now, double watchdog_interval, char *buf, size_t len);

#endif
