/*
 * The WAL the relay's statements write, by kind, read from pg_stat_statements
 * every OUTBOX_METRICS_INTERVAL_MS where the extension is installed in the
 * relay's database and readable. pg_source labels every statement text with
 * its kind; pg_stat_statements keeps that label, so the relay finds its own
 * entries by it. Without the extension, or while the read fails, the figures
 * are unknown (one log line says why) and nothing else changes: the read is a
 * statement of its own, never part of a claim or a mark. Loop thread only.
 */
#ifndef OUTBOX_RELAY_STATEMENT_WAL_H
#define OUTBOX_RELAY_STATEMENT_WAL_H

#include <stddef.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/statement_stats.h"
#include "outbox_relay/pg/pg_source.h"

struct statement_wal;

struct statement_wal *statement_wal_create(struct ev_loop *loop, const struct relay_config *cfg,
                                           struct pg_source *pg, char *err, size_t errlen);
void statement_wal_start(struct statement_wal *sw);
void statement_wal_destroy(struct statement_wal *sw);

/* The last figures read; .known is false until a read succeeds and while reads fail. */
const struct wal_figures *statement_wal_figures(const struct statement_wal *sw);

#endif
