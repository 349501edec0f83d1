/* The process_* metrics read from /proc/self on each scrape, as Prometheus client libraries do. */
#include "outbox_relay/ops/process_stats.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int process_stats_parse_stat(const char *line, double ticks_per_second, double page_size,
                             double boot_time, struct metrics_process *out)
{
    /* The command name (field 2) is in parentheses and may hold spaces or
     * ')' itself: the fields proper start after the last ')'. */
    const char *p = strrchr(line, ')');
    if (p == NULL || ticks_per_second <= 0)
        return -1;
    p++;
    /* Fields 3.. : state ppid pgrp session tty_nr tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) cutime cstime priority nice
     * num_threads itrealvalue starttime(22) vsize(23) rss(24). */
    unsigned long long v[22];
    int field = 3;
    char *end;
    while (field <= 24) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == '\n')
            return -1;
        if (field == 3) {
            p += strcspn(p, " "); /* the state letter */
        } else {
            /* priority and nice may be negative: strtoull takes the sign; unused here. */
            v[field - 3] = strtoull(p, &end, 10);
            if (end == p)
                return -1;
            p = end;
        }
        field++;
    }
    out->cpu_seconds_total = (double)(v[14 - 3] + v[15 - 3]) / ticks_per_second;
    out->start_time_seconds = boot_time + (double)v[22 - 3] / ticks_per_second;
    out->virtual_memory_bytes = (double)v[23 - 3];
    out->resident_memory_bytes = (double)v[24 - 3] * page_size;
    return 0;
}

double process_stats_parse_btime(const char *proc_stat)
{
    for (const char *p = proc_stat; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, "btime ", 6) == 0)
            return strtod(p + 6, NULL);
    }
    return -1;
}

/* The whole of a small /proc file (they report a size of 0, so read until EOF). */
static char *read_small_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

static double count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

void process_stats_read(struct metrics_process *out)
{
    memset(out, 0, sizeof(*out));
    char *stat = read_small_file("/proc/self/stat");
    char *proc_stat = read_small_file("/proc/stat");
    double btime = proc_stat ? process_stats_parse_btime(proc_stat) : -1;
    bool ok = stat != NULL && btime >= 0 &&
              process_stats_parse_stat(stat, (double)sysconf(_SC_CLK_TCK),
                                       (double)sysconf(_SC_PAGESIZE), btime, out) == 0;
    free(stat);
    free(proc_stat);
    out->open_fds = count_open_fds();
    struct rlimit rl;
    ok = ok && out->open_fds >= 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0;
    out->max_fds = ok && rl.rlim_cur != RLIM_INFINITY ? (double)rl.rlim_cur : 0;
    out->valid = ok;
}
