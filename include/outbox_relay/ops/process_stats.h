/* The process_* metrics (CPU, memory, start time, file descriptors) read from /proc/self. */
#ifndef OUTBOX_RELAY_PROCESS_STATS_H
#define OUTBOX_RELAY_PROCESS_STATS_H

#include "outbox_relay/lib/metrics.h"

/*
 * Parses one /proc/<pid>/stat line into CPU seconds, start time, virtual and
 * resident memory. ticks_per_second is sysconf(_SC_CLK_TCK), page_size
 * sysconf(_SC_PAGESIZE), boot_time the "btime" of /proc/stat (seconds since
 * the epoch). Returns -1 on a malformed line. Pure.
 */
int process_stats_parse_stat(const char *line, double ticks_per_second, double page_size,
                             double boot_time, struct metrics_process *out);

/* "btime N" of a /proc/stat text, or -1. Pure. */
double process_stats_parse_btime(const char *proc_stat);

/*
 * Fills out from /proc/self (stat, fd) and getrlimit(RLIMIT_NOFILE);
 * out->valid is false when /proc is not readable. Cheap enough per scrape.
 */
void process_stats_read(struct metrics_process *out);

#endif
