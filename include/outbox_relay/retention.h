/*
 * Retention: the leader deletes published rows older than OUTBOX_RETENTION in
 * small batches on its own connection, between the relay's queries.
 */
#ifndef OUTBOX_RELAY_RETENTION_H
#define OUTBOX_RELAY_RETENTION_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/config.h"
#include "outbox_relay/pg_source.h"

struct retention;

/*
 * How retention runs a statement: the relay passes a function that queues it
 * on its pg_source (pg_source_query(pg, sql, nparams, params, false, fn,
 * fn_arg)); it takes params like pg_source_query does and returns false when
 * the connection is not ready (retention then waits for its next round).
 */
struct retention_hooks {
    bool (*query)(void *arg, const char *sql, int nparams, char **params, pg_result_fn fn,
                  void *fn_arg);
    void *arg;
};

/*
 * Does nothing until retention_set_leader(r, true). With OUTBOX_RETENTION=0
 * it never runs. Destroy it after the pg_source it queries through (a queued
 * statement's callback may still arrive while pg_source is destroyed).
 */
struct retention *retention_create(struct ev_loop *loop, const struct relay_config *cfg,
                                   struct retention_hooks hooks);
void retention_destroy(struct retention *r);

/* On gaining leadership: a first round shortly after; on losing it: stop. */
void retention_set_leader(struct retention *r, bool leader);

/* Rows deleted since start: outbox_relay_pruned_total. */
uint64_t retention_pruned_total(const struct retention *r);

/*
 * The statement (for a prepared statement it lives as long as r): $1 = age
 * in seconds, $2 = batch size. Returns the rows deleted as its command tag.
 */
const char *retention_sql(const struct retention *r);

/* Builds the statement for cfg's table into buf (tests and the bench run it directly). */
void retention_build_sql(const struct relay_config *cfg, char *buf, size_t len);

#endif
