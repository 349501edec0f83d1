/*
 * The pipeline: claim due rows, publish them, record each outcome.
 *
 * Owns the loop-side state: leadership, the scan cursor, the held rows and
 * the outcome batches. Everything runs on the libev loop; nats.c results
 * reach it through the nats_bridge.
 */
#ifndef OUTBOX_RELAY_RELAY_H
#define OUTBOX_RELAY_RELAY_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pipeline/health.h"
#include "outbox_relay/lib/metrics.h"

struct relay;

struct relay *relay_create(struct ev_loop *loop, const struct relay_config *cfg, char *err,
                           size_t errlen);
/* Connects both ends and starts relaying (as leader or standby). */
void relay_start(struct relay *r);
/*
 * Stops claiming, waits (bounded by OUTBOX_SHUTDOWN_TIMEOUT_MS) for in-flight
 * acks and their marks, then breaks the loop. A second call breaks it now.
 */
void relay_shutdown(struct relay *r);
void relay_destroy(struct relay *r);

/* 0 after a clean shutdown; non-zero after a fatal error (e.g. unusable table). */
int relay_exit_code(const struct relay *r);

/* What the probes decide from (health.h). */
void relay_facts(const struct relay *r, struct relay_facts *f);
/* A snapshot of the metrics with the gauges brought up to date. */
const struct metrics *relay_metrics(struct relay *r);

#endif
