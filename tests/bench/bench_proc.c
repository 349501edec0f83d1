/* The benchmark's clocks and /proc readings: CPU, memory and scheduling of the processes. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- clocks and /proc ---- */

double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t wall_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The harness keeps its own sleep to itself: tests wait for conditions; the bench paces. */
void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void sleep_until(double mono)
{
    struct timespec ts = {.tv_sec = (time_t)mono,
                          .tv_nsec = (long)((mono - (double)(time_t)mono) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static double clock_tick(void)
{
    return (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of a process (all its threads); with_children adds its reaped children. */
double proc_cpu_s(pid_t pid, bool with_children, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    char state;
    int parent;
    unsigned long long utime, stime;
    long long cutime, cstime;
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &state,
               &parent, &utime, &stime, &cutime, &cstime) != 6)
        return -1;
    if (ppid)
        *ppid = parent;
    double ticks = (double)(utime + stime);
    if (with_children)
        ticks += (double)(cutime + cstime);
    return ticks / clock_tick();
}

/*
 * The relay's loop thread (tid = pid) from /proc/<pid>/task/<pid>/schedstat:
 * ns on a CPU, ns runnable but waiting for one, and the times it was
 * scheduled in. What the scheduler, not the relay, adds to latency.
 */
void sched_take(pid_t pid, struct sched_take *t)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long long run = 0, wait = 0, slices = 0;
    if (f) {
        if (fscanf(f, "%llu %llu %llu", &run, &wait, &slices) != 3)
            run = wait = slices = 0;
        fclose(f);
    }
    t->wait_s = (double)wait / 1e9;
    t->slices = (double)slices;
}

/* A "Name:   N kB" line of /proc/<pid>/status in MB, or -1. */
static double proc_status_mb(pid_t pid, const char *name)
{
    long kb = it_proc_status_kb(pid, name);
    return kb < 0 ? -1 : kb / 1024.0;
}

/* Peak resident set (VmHWM) in MB: shared library pages included. */
double proc_peak_rss_mb(pid_t pid)
{
    return proc_status_mb(pid, "VmHWM");
}

/*
 * The kernel keeps no peak of the anonymous part (the relay's own memory,
 * without the ~9 MB of shared libraries VmHWM counts): a thread samples
 * RssAnon every 10 ms.
 */
static void *anon_sampler_main(void *arg)
{
    struct anon_sampler *a = arg;
    while (!atomic_load(&a->stop)) {
        double mb = proc_status_mb(a->pid, "RssAnon");
        if (mb > a->peak_mb)
            a->peak_mb = mb;
        sleep_ms(10);
    }
    return NULL;
}

void anon_sampler_start(struct anon_sampler *a, pid_t pid)
{
    a->pid = pid;
    a->peak_mb = -1;
    atomic_store(&a->stop, false);
    ck_assert_int_eq(pthread_create(&a->thread, NULL, anon_sampler_main, a), 0);
}

double anon_sampler_stop(struct anon_sampler *a)
{
    atomic_store(&a->stop, true);
    pthread_join(a->thread, NULL);
    return a->peak_mb;
}

/* PostgreSQL as a whole: the postmaster, its reaped children, its live backends. */
static double postgres_cpu_s(void)
{
    pid_t pm = it_pg_pid();
    double total = proc_cpu_s(pm, true, NULL);
    DIR *d = opendir("/proc");
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid = atoi(e->d_name);
        pid_t parent = 0;
        if (pid <= 0 || pid == pm)
            continue;
        double cpu = proc_cpu_s(pid, false, &parent);
        if (cpu >= 0 && parent == pm)
            total += cpu;
    }
    closedir(d);
    return total;
}

/* Busy CPU seconds of the whole machine (every process, ours and other people's). */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1;
    /* user nice system idle iowait irq softirq steal: idle and iowait are not busy. */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clock_tick();
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Where the CPU went during a phase: the relay, PostgreSQL, nats-server, us, everyone else. */
void cpu_split_take(struct cpu_split *s, pid_t relay)
{
    s->relay = relay > 0 ? proc_cpu_s(relay, false, NULL) : 0;
    s->postgres = postgres_cpu_s();
    s->nats = proc_cpu_s(it_nats_pid(), false, NULL);
    s->bench = self_cpu_s();
    s->machine = machine_busy_s();
}

void cpu_split_record(const char *section, const struct cpu_split *a, const struct cpu_split *b,
                      double seconds)
{
    double relay = b->relay - a->relay, pg = b->postgres - a->postgres, nats = b->nats - a->nats;
    double bench = b->bench - a->bench, machine = b->machine - a->machine;
    bench_record(section, "relay_cpu_s", "s", relay);
    bench_record(section, "postgres_cpu_s", "s", pg);
    bench_record(section, "nats_server_cpu_s", "s", nats);
    bench_record(section, "bench_cpu_s", "s", bench);
    /* The machine is shared: what every other process (and interrupt work) took. */
    bench_record(section, "others_cpu_s", "s", fmax(0, machine - relay - pg - nats - bench));
    bench_record(section, "machine_busy_pct", "%",
                 100.0 * machine / (seconds * sysconf(_SC_NPROCESSORS_ONLN)));
}

void text_of_file_line(const char *path, const char *prefix, char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    size_t plen = strlen(prefix);
    while (fgets(line, sizeof line, f)) {
        char *at = strstr(line, prefix);
        if (at == NULL)
            continue;
        char *v = at + plen;
        while (*v == ' ' || *v == '\t' || *v == ':')
            v++;
        v[strcspn(v, "\n")] = '\0';
        snprintf(out, len, "%s", v);
        break;
    }
    fclose(f);
}
