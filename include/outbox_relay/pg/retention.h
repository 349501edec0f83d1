/*
 * Retention: the leader deletes published rows older than OUTBOX_RETENTION in
 * small windows of ids on its own connection, between the relay's queries.
 */
#ifndef OUTBOX_RELAY_RETENTION_H
#define OUTBOX_RELAY_RETENTION_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/pg_source.h"

struct retention;

/*
 * Does nothing until retention_set_leader(r, true). With OUTBOX_RETENTION=0
 * it never runs. Its statements queue on pg between the relay's; when pg is
 * not ready a round waits for the next. Destroy it after pg (a queued
 * statement's callback may still arrive while pg_source is destroyed).
 */
struct retention *retention_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct pg_source *pg, char *err, size_t errlen);
void retention_destroy(struct retention *r);

/* On gaining leadership: a first round shortly after; on losing it: stop. */
void retention_set_leader(struct retention *r, bool leader);

/* Rows deleted since start: outbox_relay_pruned_total. */
uint64_t retention_pruned_total(const struct retention *r);

/*
 * Rounds that failed (outbox_relay_retention_failures_total), and whether
 * the last one did (outbox_relay_retention_failing). A failure that lasts
 * is logged once as RETENTION_FAILING_MSG (again when its error changes,
 * and hourly), its end once.
 */
#define RETENTION_FAILING_MSG "retention failing: published rows are not deleted"
uint64_t retention_failures_total(const struct retention *r);
bool retention_failing(const struct retention *r);

/*
 * Rounds walk the table by the primary key in windows of
 * OUTBOX_RETENTION_BATCH rows from a cursor, deleting the published rows of
 * each window older than OUTBOX_RETENTION. A pass goes on (a window every
 * 200 ms) to the end of the table or to a window holding a row created
 * after the cutoff; the next pass starts from the lowest id at the next
 * interval, so rows below the cursor published meanwhile go then. Dead and
 * unfinished rows are never deleted and do not end a pass.
 *
 * The statement (for a prepared statement it lives as long as r): $1 = age
 * in seconds, $2 = window rows, $3 = the cursor (the window's ids are above
 * it). One result row per row deleted: its id, then the window's summary
 * (its last id, its rows, whether a row in it was created after the
 * cutoff). A window that deleted nothing returns no row; the probe (same
 * parameters) returns its summary alone, in one row.
 */
const char *retention_sql(const struct retention *r);

/* The statements for cfg's table, malloc'ed (tests and the bench run them directly); NULL when
 * out of memory. */
char *retention_build_sql(const struct relay_config *cfg);
char *retention_build_probe_sql(const struct relay_config *cfg);

#endif
