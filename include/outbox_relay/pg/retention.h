/*
 * Retention: the leader deletes published rows older than OUTBOX_RETENTION in
 * small batches on its own connection, between the relay's queries.
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
 * The statement (for a prepared statement it lives as long as r): $1 = age
 * in seconds, $2 = batch size. Returns the rows deleted as its command tag.
 */
const char *retention_sql(const struct retention *r);

/* The statement for cfg's table, malloc'ed (tests and the bench run it directly); NULL when out
 * of memory. */
char *retention_build_sql(const struct relay_config *cfg);

#endif
