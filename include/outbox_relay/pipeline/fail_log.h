/* "publish failed" warnings, rate-limited per reason: one line per reason per interval. */
#ifndef OUTBOX_RELAY_FAIL_LOG_H
#define OUTBOX_RELAY_FAIL_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "outbox_relay/lib/metrics.h"

#define FAIL_LOG_IDS 5 /* row ids named per line */

/* One reason's failures since its last line. */
struct fail_log_report {
    enum publish_reason reason;
    uint64_t count;            /* failures in this report */
    int64_t ids[FAIL_LOG_IDS]; /* the first row ids, in order */
    size_t nids;
    char error[200]; /* the first failure's error text */
};

/* Called once per report by fail_log_flush; NULL logs it as a warn line. */
typedef void (*fail_log_emit_fn)(void *arg, const struct fail_log_report *report);

struct fail_log;

/* interval_s: at most one line per reason this often (e.g. 10). */
struct fail_log *fail_log_create(double interval_s, fail_log_emit_fn emit, void *arg, char *err,
                                 size_t errlen);
void fail_log_destroy(struct fail_log *fl);

/* Records one failed publish of row id. Cheap; never logs by itself. */
void fail_log_record(struct fail_log *fl, enum publish_reason reason, int64_t id,
                     const char *error);

/*
 * Emits a report for each reason with failures recorded whose last line is
 * at least interval_s old (the first failure of a quiet reason goes out at
 * the next flush). now: seconds on any monotonic clock (ev_now). Returns
 * how many reports were emitted.
 */
size_t fail_log_flush(struct fail_log *fl, double now);

/* The default emitter: {"msg":"publish failed","reason":..,"count":..,"first_ids":[..],
 * "error":..,"interval_s":..} at warn. */
void fail_log_warn(void *arg, const struct fail_log_report *report);

#endif
