/*
 * The table as a whole, sampled every OUTBOX_METRICS_INTERVAL_MS: how many
 * rows are unfinished, how old the oldest is, how many are dead, and whether
 * any row is due now (so rows held behind their key never read as a stall).
 * Loop thread only.
 */
#ifndef OUTBOX_RELAY_TABLE_SAMPLE_H
#define OUTBOX_RELAY_TABLE_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/pg_source.h"

struct table_figures {
    int64_t unfinished;  /* pending + failed */
    bool any_due;        /* a claim could take a row now */
    double oldest_age_s; /* of the oldest unfinished row; 0 when none */
    int64_t dead;
};

struct table_sample;

/* sql: outbox_sql.sample (lives as long as the sampler). */
struct table_sample *table_sample_create(struct ev_loop *loop, const struct relay_config *cfg,
                                         struct pg_source *pg, const char *sql,
                                         void (*sampled)(void *arg, const struct table_figures *f),
                                         void *arg, char *err, size_t errlen);
void table_sample_start(struct table_sample *ts);
void table_sample_destroy(struct table_sample *ts);

#endif
