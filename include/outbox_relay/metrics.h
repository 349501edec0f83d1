/* Relay counters and gauges, rendered as Prometheus text format 0.0.4. */
#ifndef OUTBOX_RELAY_METRICS_H
#define OUTBOX_RELAY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds (seconds) of the delivery latency histogram, 1 ms .. 60 s. */
#define METRICS_LATENCY_BUCKETS 16
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];

/* Owned and updated by the loop thread only; rendered on the loop too. */
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

    /* delivery latency: created_at → PubAck, seconds */
    uint64_t latency_buckets[METRICS_LATENCY_BUCKETS]; /* non-cumulative counts */
    uint64_t latency_count;
    double latency_sum;
};

void metrics_init(struct metrics *m);
void metrics_observe_latency(struct metrics *m, double seconds);

/*
 * Renders every metric (with # HELP and # TYPE lines, cumulative histogram
 * buckets and +Inf, outbox_relay_build_info{version="..."} 1) into a
 * malloc'ed NUL-terminated buffer. Returns NULL on allocation failure.
 */
char *metrics_render(const struct metrics *m, const char *version, size_t *len);

#endif
