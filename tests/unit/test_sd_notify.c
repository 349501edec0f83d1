/* systemd notifications: what each tick says, the watchdog interval, a real datagram. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "outbox_relay/ops/sd_notify.h"
#include "outbox_relay/ops/service_status.h"
#include "run_suite.h"

START_TEST(test_compose_sequence)
{
    struct sd_told told = {.last_watchdog = -1};
    char buf[512];

    /* Not ready, healthy: the status and the first ping. */
    sd_notify_compose(&told, false, true, "waiting: postgresql not connected", 0.0, 0.5, buf,
                      sizeof buf);
    ck_assert_str_eq(buf, "STATUS=waiting: postgresql not connected\nWATCHDOG=1");
    /* Nothing changed and the interval has not passed: nothing to say. */
    sd_notify_compose(&told, false, true, "waiting: postgresql not connected", 0.3, 0.5, buf,
                      sizeof buf);
    ck_assert_str_eq(buf, "");
    /* Connected: READY=1 once, with the new status, and the ping that is due. */
    sd_notify_compose(&told, true, true, "leader: relaying", 0.5, 0.5, buf, sizeof buf);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=leader: relaying\nWATCHDOG=1");
    sd_notify_compose(&told, true, true, "leader: relaying", 1.0, 0.5, buf, sizeof buf);
    ck_assert_str_eq(buf, "WATCHDOG=1");
    /* Stalled: the status says so and the pings stop, however long it lasts. */
    sd_notify_compose(&told, true, false, "leader: stalled", 1.5, 0.5, buf, sizeof buf);
    ck_assert_str_eq(buf, "STATUS=leader: stalled");
    sd_notify_compose(&told, true, false, "leader: stalled", 9.0, 0.5, buf, sizeof buf);
    ck_assert_str_eq(buf, "");
    /* Progress again: pings resume at once; READY=1 is not repeated. */
    sd_notify_compose(&told, true, true, "leader: relaying", 9.5, 0.5, buf, sizeof buf);
    ck_assert_str_eq(buf, "STATUS=leader: relaying\nWATCHDOG=1");
    /* Lost PostgreSQL after being ready: only the status changes. */
    sd_notify_compose(&told, false, true, "waiting: postgresql not connected", 9.6, 0.5, buf,
                      sizeof buf);
    ck_assert_str_eq(buf, "STATUS=waiting: postgresql not connected");
}
END_TEST

START_TEST(test_compose_without_watchdog)
{
    struct sd_told told = {.last_watchdog = -1};
    char buf[512];
    sd_notify_compose(&told, true, true, "standby: x", 0, 0, buf, sizeof buf);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=standby: x");
    sd_notify_compose(&told, true, true, "standby: x", 100, 0, buf, sizeof buf);
    ck_assert_str_eq(buf, "");
    /* A newline in a status must not smuggle in another assignment. */
    sd_notify_compose(&told, true, true, "leader: a\nREADY=1", 101, 0, buf, sizeof buf);
    ck_assert_str_eq(buf, "STATUS=leader: a");
}
END_TEST

START_TEST(test_watchdog_interval)
{
    ck_assert_double_eq(sd_watchdog_interval("30000000", NULL, 42), 15.0);
    ck_assert_double_eq(sd_watchdog_interval("1000000", "42", 42), 0.5);
    ck_assert_double_eq(sd_watchdog_interval("1000000", "43", 42), 0); /* another process's */
    ck_assert_double_eq(sd_watchdog_interval("1000000", "x", 42), 0);
    ck_assert_double_eq(sd_watchdog_interval(NULL, NULL, 42), 0);
    ck_assert_double_eq(sd_watchdog_interval("", NULL, 42), 0);
    ck_assert_double_eq(sd_watchdog_interval("0", NULL, 42), 0);
    ck_assert_double_eq(sd_watchdog_interval("-5", NULL, 42), 0);
    ck_assert_double_eq(sd_watchdog_interval("10s", NULL, 42), 0);
}
END_TEST

START_TEST(test_status_text)
{
    char buf[256];
    service_status_text(false, "postgresql not connected", true, "", false, false, buf, sizeof buf);
    ck_assert_str_eq(buf, "waiting: postgresql not connected");
    service_status_text(true, "", true, "", false, false, buf, sizeof buf);
    ck_assert_str_eq(buf, "standby: another relay holds the leader lock");
    service_status_text(true, "", true, "", true, false, buf, sizeof buf);
    ck_assert_str_eq(buf, "leader: relaying");
    service_status_text(true, "", false, "stalled: due rows but no progress for 61 s", true, false,
                        buf, sizeof buf);
    ck_assert_str_eq(buf, "leader: stalled: due rows but no progress for 61 s");
    service_status_text(true, "", true, "", true, true, buf, sizeof buf);
    ck_assert_str_eq(buf, "stopping: draining in-flight publishes");
}
END_TEST

/* A datagram reaches a socket bound at a path, and one in the abstract namespace. */
START_TEST(test_send_datagram)
{
    char err[256];
    ck_assert_ptr_null(sd_notifier_open(NULL, err, sizeof err));
    ck_assert_ptr_null(sd_notifier_open("", err, sizeof err));
    ck_assert_ptr_null(sd_notifier_open("relative/path", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "NOTIFY_SOCKET"));
    ck_assert_int_eq(sd_notifier_send(NULL, "READY=1"), 0);

    char dir[] = "/tmp/sd-notify-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char paths[2][200];
    snprintf(paths[0], sizeof paths[0], "%s/notify", dir);
    snprintf(paths[1], sizeof paths[1], "@outbox-relay-test-%d", (int)getpid());
    for (int k = 0; k < 2; k++) {
        int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        size_t n = strlen(paths[k]);
        memcpy(a.sun_path, paths[k], n);
        if (k == 1)
            a.sun_path[0] = '\0';
        ck_assert_int_eq(
            bind(fd, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + n), 0);
        struct sd_notifier *sn = sd_notifier_open(paths[k], err, sizeof err);
        ck_assert_ptr_nonnull(sn);
        ck_assert_int_eq(sd_notifier_send(sn, "READY=1\nSTATUS=leader: relaying"), 0);
        char got[256];
        ssize_t r = recv(fd, got, sizeof got - 1, 0);
        ck_assert_int_gt(r, 0);
        got[r] = '\0';
        ck_assert_str_eq(got, "READY=1\nSTATUS=leader: relaying");
        sd_notifier_close(sn);
        close(fd);
    }
    unlink(paths[0]);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sd_notify");
    TCase *tc = tcase_create("sd_notify");
    tcase_add_test(tc, test_compose_sequence);
    tcase_add_test(tc, test_compose_without_watchdog);
    tcase_add_test(tc, test_watchdog_interval);
    tcase_add_test(tc, test_status_text);
    tcase_add_test(tc, test_send_datagram);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
