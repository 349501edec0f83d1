/* Integration-test harness: fault injection (dropped loopback packets) and /proc readings. */
#include "harness_internal.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- memory, sockets, lost packets ---- */

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
