/* Relay counters, gauges and the delivery latency histogram, in Prometheus text format 0.0.4. */
#include "outbox_relay/lib/metrics.h"

#include "outbox_relay/lib/util.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60,
};

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof(*m));
}

void metrics_failed(struct metrics *m, enum publish_reason reason)
{
    m->failed_total++;
    m->failed_by_reason[(unsigned)reason < PUBLISH_REASONS ? reason : PUBLISH_OTHER]++;
}

void metrics_dead(struct metrics *m, enum publish_reason reason)
{
    m->dead_total++;
    m->dead_by_reason[(unsigned)reason < PUBLISH_REASONS ? reason : PUBLISH_OTHER]++;
}

/*
 * created_at comes from the database clock and the ack time from ours, so a
 * small skew can make a latency negative: count it as 0 rather than lose it.
 * A non-finite value would poison _sum for good, so it is dropped.
 */
void metrics_latency_observe(struct metrics_latency *l, double seconds)
{
    if (!isfinite(seconds))
        return;
    if (seconds < 0)
        seconds = 0;
    /* Prometheus buckets are "less than or equal": a value on a bound belongs to it. */
    for (size_t k = 0; k < METRICS_LATENCY_BUCKETS; k++) {
        if (seconds <= metrics_latency_bounds[k]) {
            l->buckets[k]++;
            break;
        }
    }
    l->count++; /* past the last bound: only +Inf, which is the count */
    l->sum += seconds;
}

void metrics_observe_latency(struct metrics *m, double seconds)
{
    metrics_latency_observe(&m->latency, seconds);
}

/* The shortest %g form that reads back as the same double: "0.001", not "0.00100000000000000002".
 */
static void format_double(char *out, size_t outlen, double v)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* %g would write 10 as "1e+01"; le labels are matched as strings, so keep integers plain. */
    if (fabs(v) >= 1 && fabs(v) < 1e15 && v == trunc(v)) {
        snprintf(out, outlen, "%.0f", v);
        return;
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(out, outlen, "%.*g", precision, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void family(struct strbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP outbox_relay_%s %s\n# TYPE outbox_relay_%s %s\n", name, help, name, type);
}

/*
 * A counter split by reason, every class rendered. A total counted without
 * metrics_failed()/metrics_dead() (so beyond the per-reason sum) shows as
 * "other": the labelled series always add up to the total.
 */
static void counter_by_reason(struct strbuf *b, const char *name, uint64_t total,
                              const uint64_t by_reason[PUBLISH_REASONS], const char *help)
{
    uint64_t sum = 0;
    for (int r = 0; r < PUBLISH_REASONS; r++)
        sum += by_reason[r];
    family(b, name, "counter", help);
    for (int r = 0; r < PUBLISH_REASONS; r++) {
        uint64_t v = by_reason[r];
        if (r == PUBLISH_OTHER && total > sum)
            v += total - sum;
        sb_printf(b, "outbox_relay_%s{reason=\"%s\"} %" PRIu64 "\n", name,
                  publish_reason_name((enum publish_reason)r), v);
    }
}

/* process_* families: the names every Prometheus client library uses, without our prefix. */
static void process_gauge(struct strbuf *b, const char *name, const char *type, double value,
                          const char *help)
{
    char num[32];
    format_double(num, sizeof(num), value);
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, type, name, num);
}

static void render_process(struct strbuf *b, const struct metrics_process *p)
{
    process_gauge(b, "process_cpu_seconds_total", "counter", p->cpu_seconds_total,
                  "Total user and system CPU time spent in seconds.");
    process_gauge(b, "process_start_time_seconds", "gauge", p->start_time_seconds,
                  "Start time of the process since unix epoch in seconds.");
    process_gauge(b, "process_resident_memory_bytes", "gauge", p->resident_memory_bytes,
                  "Resident memory size in bytes.");
    process_gauge(b, "process_virtual_memory_bytes", "gauge", p->virtual_memory_bytes,
                  "Virtual memory size in bytes.");
    process_gauge(b, "process_open_fds", "gauge", p->open_fds, "Number of open file descriptors.");
    process_gauge(b, "process_max_fds", "gauge", p->max_fds,
                  "Maximum number of open file descriptors.");
}

static void counter(struct strbuf *b, const char *name, uint64_t value, const char *help)
{
    family(b, name, "counter", help);
    sb_printf(b, "outbox_relay_%s %" PRIu64 "\n", name, value);
}

static void gauge_int(struct strbuf *b, const char *name, int64_t value, const char *help)
{
    family(b, name, "gauge", help);
    sb_printf(b, "outbox_relay_%s %" PRId64 "\n", name, value);
}

static void gauge_double(struct strbuf *b, const char *name, double value, const char *help)
{
    char num[32];
    format_double(num, sizeof(num), value);
    family(b, name, "gauge", help);
    sb_printf(b, "outbox_relay_%s %s\n", name, num);
}

/* Label values escape backslash, double quote and newline (text format 0.0.4). */
static void label_value(struct strbuf *b, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            sb_printf(b, "\\\\");
        else if (*p == '"')
            sb_printf(b, "\\\"");
        else if (*p == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *p);
    }
}

/* One sample per statement kind (every kind, 0 included, so rate() works from the start). */
static void by_kind(struct strbuf *b, const char *name, const uint64_t *counts, const double *sums)
{
    for (int k = 0; k < STATEMENT_KINDS; k++) {
        char num[32];
        if (sums != NULL)
            format_double(num, sizeof(num), sums[k]);
        else
            snprintf(num, sizeof(num), "%" PRIu64, counts[k]);
        sb_printf(b, "outbox_relay_%s{kind=\"%s\"} %s\n", name,
                  statement_kind_name((enum statement_kind)k), num);
    }
}

char *metrics_render(const struct metrics *m, const char *version, size_t *len)
{
    struct strbuf b = {0};

    counter(&b, "published_total", m->published_total,
            "Rows marked published after their PubAck (a duplicate ack counts).");
    counter_by_reason(&b, "failed_total", m->failed_total, m->failed_by_reason,
                      "Publish attempts that failed and were scheduled for a retry, by reason.");
    counter_by_reason(&b, "dead_total", m->dead_total, m->dead_by_reason,
                      "Rows marked dead, by reason.");
    counter(&b, "pruned_total", m->pruned_total,
            "published rows deleted by retention (OUTBOX_RETENTION)");
    counter(&b, "retention_failures_total", m->retention_failures_total,
            "Retention rounds whose DELETE failed (e.g. a role without DELETE).");
    gauge_int(&b, "retention_failing", m->retention_failing ? 1 : 0,
              "1 while retention's last round failed: old published rows are not deleted.");
    counter(&b, "dead_letters_total", m->dead_letters_total,
            "Dead rows published to OUTBOX_DEAD_LETTER_SUBJECT and recorded in the row.");
    counter(&b, "dead_letter_failures_total", m->dead_letter_failures_total,
            "Dead letters not published or not recorded (retried with backoff).");
    counter(&b, "duplicate_acks_total", m->duplicate_acks_total,
            "PubAcks that said duplicate: the message was already in the stream.");
    counter(&b, "republished_total", m->republished_total,
            "Rows published again that an earlier term may have published: duplicate PubAcks, and "
            "messages a new leader's reconciliation could not check (at-least-once).");
    counter(&b, "claimed_total", m->claimed_total, "Rows claimed from the outbox table.");
    counter(&b, "pg_reconnects_total", m->pg_reconnects_total,
            "Reconnections to PostgreSQL after a lost session.");
    counter(&b, "nats_reconnects_total", m->nats_reconnects_total,
            "Reconnections to NATS after a lost connection.");
    gauge_int(&b, "inflight", m->inflight, "Rows held by the relay and not yet marked.");
    gauge_int(&b, "pending", m->pending, "Pending and failed rows in the outbox table (sampled).");
    gauge_int(&b, "dead_rows", m->dead_rows,
              "Rows with status dead in the outbox table (sampled); they wait for a requeue.");
    gauge_double(&b, "oldest_pending_age_seconds", m->oldest_pending_age_seconds,
                 "Age of the oldest pending or failed row (sampled); 0 when there is none.");
    gauge_int(&b, "leader", m->leader ? 1 : 0, "1 when this relay holds the table's leader lock.");
    gauge_int(&b, "leader_stalled", m->leader_stalled ? 1 : 0,
              "1 on a standby that finds the leader's session silent past OUTBOX_LEADER_LEASE_MS.");
    gauge_double(&b, "leader_silent_seconds", m->leader_silent_seconds,
                 "On a standby: how long the leader's session has been silent (sampled).");
    counter(&b, "takeovers_total", m->takeovers_total,
            "Leaders whose session this relay ended after it stayed silent past its lease.");
    family(&b, "pg_statements_total", "counter",
           "Statements the relay ran on PostgreSQL, by kind (claim, mark, lock, wakeup, sample, "
           "retention, dead_letter, other).");
    by_kind(&b, "pg_statements_total", m->statements.calls, NULL);
    family(&b, "pg_statement_errors_total", "counter",
           "Statements that failed (an error, or the session lost while it ran), by kind.");
    by_kind(&b, "pg_statement_errors_total", m->statements.errors, NULL);
    family(&b, "pg_statement_seconds_total", "counter",
           "Time from sending each statement to its result (server time and round trip), by kind.");
    by_kind(&b, "pg_statement_seconds_total", NULL, m->statements.seconds);
    family(&b, "pg_statement_rows_total", "counter",
           "Rows the statements returned (claim, sample) or changed (mark, retention), by kind.");
    by_kind(&b, "pg_statement_rows_total", m->statements.rows, NULL);
    if (m->wal.known) {
        /* Server figures, counters as pg_stat_statements keeps them: its reset (or an entry
         * evicted) lowers them, which rate() reads as a counter reset. */
        family(&b, "pg_wal_bytes_total", "counter",
               "WAL bytes the relay's statements wrote, by kind, from pg_stat_statements on the "
               "server (every relay session on the database; pg_stat_statements_reset() lowers "
               "it). Absent without pg_stat_statements.");
        by_kind(&b, "pg_wal_bytes_total", m->wal.bytes, NULL);
        family(&b, "pg_wal_statements_total", "counter",
               "Executions pg_stat_statements counted with those WAL bytes, by kind (the same "
               "entries, the same resets).");
        by_kind(&b, "pg_wal_statements_total", m->wal.calls, NULL);
    }
    gauge_int(&b, "pg_connected", m->pg_connected ? 1 : 0, "1 when PostgreSQL is connected.");
    gauge_int(&b, "nats_connected", m->nats_connected ? 1 : 0, "1 when NATS is connected.");

    family(&b, "delivery_latency_seconds", "histogram",
           "Time from a row's created_at to its PubAck.");
    uint64_t cumulative = 0;
    for (size_t k = 0; k < METRICS_LATENCY_BUCKETS; k++) {
        char le[32];
        format_double(le, sizeof(le), metrics_latency_bounds[k]);
        cumulative += m->latency.buckets[k];
        sb_printf(&b, "outbox_relay_delivery_latency_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", le,
                  cumulative);
    }
    char sum[32];
    format_double(sum, sizeof(sum), m->latency.sum);
    sb_printf(&b,
              "outbox_relay_delivery_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
              "outbox_relay_delivery_latency_seconds_sum %s\n"
              "outbox_relay_delivery_latency_seconds_count %" PRIu64 "\n",
              m->latency.count, sum, m->latency.count);

    family(&b, "build_info", "gauge", "Build information; the value is always 1.");
    sb_printf(&b, "outbox_relay_build_info{version=\"");
    label_value(&b, version ? version : "unknown");
    sb_printf(&b, "\"} 1\n");

    if (m->process.valid)
        render_process(&b, &m->process);

    size_t n = b.n;
    char *text = sb_take(&b);
    if (text != NULL && len)
        *len = n;
    return text;
}
