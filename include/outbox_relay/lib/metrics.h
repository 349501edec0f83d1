/* Relay counters and gauges, rendered as Prometheus text format 0.0.4. */
#ifndef OUTBOX_RELAY_METRICS_H
#define OUTBOX_RELAY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbox_relay/lib/publish_reason.h"
#include "outbox_relay/lib/statement_stats.h"

/* Upper bounds (seconds) of the delivery latency histogram, 1 ms .. 60 s. */
#define METRICS_LATENCY_BUCKETS 16
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];

/*
 * Why a publish failed or a row went dead: the `reason` label of
 * outbox_relay_failed_total and outbox_relay_dead_total. A small fixed set,
 * so every class is rendered (0 included) and rate() works from the start.
 */
/* Failed and dead counters carry the publish error class as their reason label
 * (publish_reason.h): one set of classes for the table, the metrics and the logs. */

/*
 * The process_* families every Prometheus client exports, read from
 * /proc/self on each scrape (see process_stats.h). valid = false leaves
 * them out.
 */
struct metrics_process {
    bool valid;
    double cpu_seconds_total;     /* user + system */
    double start_time_seconds;    /* since the Unix epoch */
    double resident_memory_bytes; /* RSS */
    double virtual_memory_bytes;
    double open_fds;
    double max_fds; /* the soft RLIMIT_NOFILE */
};

/* Owned and updated by the loop thread only; rendered on the loop too. */
/* Delivery latency, created_at → PubAck, in seconds: a histogram. */
struct metrics_latency {
    uint64_t buckets[METRICS_LATENCY_BUCKETS]; /* non-cumulative counts */
    uint64_t count;
    double sum;
};

/* Counts one latency (negative, NaN: 0; past the last bound: only +Inf). */
void metrics_latency_observe(struct metrics_latency *l, double seconds);

struct metrics {
    uint64_t published_total; /* rows marked published (a duplicate ack counts) */
    uint64_t failed_total;    /* publish attempts that failed and were scheduled for retry */
    uint64_t dead_total;      /* rows marked dead */
    uint64_t claimed_total;   /* rows taken from the table into the relay */
    uint64_t pg_reconnects_total;
    uint64_t nats_reconnects_total;
    int64_t inflight;                  /* rows held by the relay now */
    int64_t pending;                   /* pending + failed rows in the table, sampled */
    double oldest_pending_age_seconds; /* age of the oldest such row, sampled; 0 when none */
    bool leader;
    bool pg_connected;
    bool nats_connected;

    int64_t dead_rows;             /* rows with status 'dead' in the table, sampled */
    uint64_t duplicate_acks_total; /* PubAcks with duplicate=true (already in the stream) */
    /* Re-publishes of rows an earlier term may have published: duplicate PubAcks, and the
     * messages a new term's reconciliation could not check (their rows go out again) */
    uint64_t republished_total;
    uint64_t pruned_total;        /* published rows deleted by retention */
    uint64_t takeovers_total;     /* silent leaders whose session this relay ended */
    bool leader_stalled;          /* standby: the lock holder's session is silent past its lease */
    double leader_silent_seconds; /* standby: how long the lock holder's session has been silent */

    uint64_t retention_failures_total;   /* retention rounds that failed */
    bool retention_failing;              /* the last retention round failed */
    uint64_t dead_letters_total;         /* dead rows published to OUTBOX_DEAD_LETTER_SUBJECT */
    uint64_t dead_letter_failures_total; /* dead letters whose publish or record failed */
    /* Per-reason shares of failed_total and dead_total, counted by
     * metrics_failed() / metrics_dead(). What the totals hold beyond their
     * sum is rendered as reason="other". */
    uint64_t failed_by_reason[PUBLISH_REASONS];
    uint64_t dead_by_reason[PUBLISH_REASONS];
    struct metrics_process process;
    struct statement_stats statements; /* the relay's statements by kind (pg_source.c) */
    struct wal_figures wal;            /* their WAL in pg_stat_statements; rendered when .known */

    struct metrics_latency latency; /* the publisher's (publisher_latency) */
};

void metrics_init(struct metrics *m);
void metrics_observe_latency(struct metrics *m, double seconds);
/* One failed attempt (failed_total) or one dead row (dead_total), with its reason. */
void metrics_failed(struct metrics *m, enum publish_reason reason);
void metrics_dead(struct metrics *m, enum publish_reason reason);

/*
 * Renders every metric (with # HELP and # TYPE lines, cumulative histogram
 * buckets and +Inf, outbox_relay_build_info{version="..."} 1, and the
 * process_* families when m->process.valid) into a
 * malloc'ed NUL-terminated buffer. Returns NULL on allocation failure.
 */
char *metrics_render(const struct metrics *m, const char *version, size_t *len);

#endif
