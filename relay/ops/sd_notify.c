/* systemd notifications over the documented datagram protocol, without libsystemd. */
#include "outbox_relay/ops/sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct sd_notifier {
    int fd;
    struct sockaddr_un addr;
    socklen_t addr_len;
};

struct sd_notifier *sd_notifier_open(const char *socket_path, char *err, size_t errlen)
{
    if (socket_path == NULL || socket_path[0] == '\0')
        return NULL;
    size_t n = strlen(socket_path);
    struct sd_notifier *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) {
        snprintf(err, errlen, "NOTIFY_SOCKET: out of memory");
        return NULL;
    }
    if ((socket_path[0] != '/' && socket_path[0] != '@') || n >= sizeof(sn->addr.sun_path)) {
        snprintf(err, errlen, "NOTIFY_SOCKET: \"%s\" is not a socket path or @abstract name",
                 socket_path);
        free(sn);
        return NULL;
    }
    sn->addr.sun_family = AF_UNIX;
    memcpy(sn->addr.sun_path, socket_path, n);
    if (socket_path[0] == '@')
        sn->addr.sun_path[0] = '\0'; /* abstract: the length, not a NUL, ends the name */
    sn->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    sn->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sn->fd < 0) {
        snprintf(err, errlen, "NOTIFY_SOCKET: socket: %s", strerror(errno));
        free(sn);
        return NULL;
    }
    return sn;
}

int sd_notifier_send(struct sd_notifier *sn, const char *message)
{
    if (sn == NULL || message[0] == '\0')
        return 0;
    ssize_t sent = sendto(sn->fd, message, strlen(message), MSG_NOSIGNAL,
                          (const struct sockaddr *)&sn->addr, sn->addr_len);
    return sent == (ssize_t)strlen(message) ? 0 : -1;
}

void sd_notifier_close(struct sd_notifier *sn)
{
    if (sn == NULL)
        return;
    close(sn->fd);
    free(sn);
}

double sd_watchdog_interval(const char *watchdog_usec, const char *watchdog_pid, pid_t self)
{
    if (watchdog_usec == NULL || watchdog_usec[0] == '\0')
        return 0;
    char *end;
    /* WATCHDOG_PID names the process the watchdog is for; a child that
     * inherited the variables must not ping for its parent. */
    if (watchdog_pid != NULL && watchdog_pid[0] != '\0') {
        errno = 0;
        long long pid = strtoll(watchdog_pid, &end, 10);
        if (*end != '\0' || errno != 0 || pid != (long long)self)
            return 0;
    }
    errno = 0;
    unsigned long long usec = strtoull(watchdog_usec, &end, 10);
    if (*end != '\0' || errno != 0 || usec == 0 || watchdog_usec[0] == '-')
        return 0;
    return (double)usec / 2e6;
}

/* Appends "line\n" if it fits; the datagram is small, so it always does in practice. */
static void append_line(char *buf, size_t len, const char *key, const char *value)
{
    size_t used = strlen(buf);
    if (used < len)
        snprintf(buf + used, len - used, "%s%s=%s", used ? "\n" : "", key, value);
}

void sd_notify_compose(struct sd_told *told, bool ready, bool healthy, const char *status,
                       double now, double watchdog_interval, char *buf, size_t len)
{
    if (len == 0)
        return;
    buf[0] = '\0';
    if (ready && !told->ready) {
        append_line(buf, len, "READY", "1");
        told->ready = true;
    }
    if (status != NULL && strcmp(status, told->status) != 0) {
        /* STATUS= is one line: a newline would start a new assignment. */
        char line[sizeof(told->status)];
        snprintf(line, sizeof(line), "%s", status);
        line[strcspn(line, "\n")] = '\0';
        append_line(buf, len, "STATUS", line);
        snprintf(told->status, sizeof(told->status), "%s", status);
    }
    /* A little slack: ticks drift by a few milliseconds against the interval. */
    if (watchdog_interval > 0 && healthy &&
        (told->last_watchdog < 0 || now - told->last_watchdog >= watchdog_interval * 0.95)) {
        append_line(buf, len, "WATCHDOG", "1");
        told->last_watchdog = now;
    }
}
