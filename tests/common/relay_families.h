/* What the relay's /metrics must hold: its families with their types, the histogram's bounds. */
#ifndef OUTBOX_RELAY_TEST_RELAY_FAMILIES_H
#define OUTBOX_RELAY_TEST_RELAY_FAMILIES_H

#include <stddef.h>

#define RELAY_LATENCY "outbox_relay_delivery_latency_seconds"

struct relay_family {
    const char *name, *type;
};

/* Every family, and no other: the unit test renders them, the integration test scrapes them. */
static const struct relay_family relay_families[] = {
    {"outbox_relay_published_total", "counter"},
    {"outbox_relay_failed_total", "counter"},
    {"outbox_relay_dead_total", "counter"},
    {"outbox_relay_duplicate_acks_total", "counter"},
    {"outbox_relay_republished_total", "counter"},
    {"outbox_relay_pruned_total", "counter"},
    {"outbox_relay_retention_failures_total", "counter"},
    {"outbox_relay_retention_failing", "gauge"},
    {"outbox_relay_dead_letters_total", "counter"},
    {"outbox_relay_dead_letter_failures_total", "counter"},
    {"outbox_relay_takeovers_total", "counter"},
    {"outbox_relay_claimed_total", "counter"},
    {"outbox_relay_pg_reconnects_total", "counter"},
    {"outbox_relay_pg_statements_total", "counter"},
    {"outbox_relay_pg_statement_errors_total", "counter"},
    {"outbox_relay_pg_statement_seconds_total", "counter"},
    {"outbox_relay_pg_statement_rows_total", "counter"},
    {"outbox_relay_nats_reconnects_total", "counter"},
    {"outbox_relay_inflight", "gauge"},
    {"outbox_relay_pending", "gauge"},
    {"outbox_relay_dead_rows", "gauge"},
    {"outbox_relay_leader_stalled", "gauge"},
    {"outbox_relay_leader_silent_seconds", "gauge"},
    {"outbox_relay_oldest_pending_age_seconds", "gauge"},
    {"outbox_relay_leader", "gauge"},
    {"outbox_relay_pg_connected", "gauge"},
    {"outbox_relay_nats_connected", "gauge"},
    {RELAY_LATENCY, "histogram"},
    {"outbox_relay_build_info", "gauge"},
};
#define RELAY_FAMILIES (sizeof relay_families / sizeof relay_families[0])

/* The families split by reason="...", and the reasons in the order they are rendered. */
static const char *const relay_reason_families[] = {"outbox_relay_failed_total",
                                                    "outbox_relay_dead_total"};
static const char *const relay_reasons[] = {"invalid_row", "too_large",   "no_stream", "timeout",
                                            "connection",  "unavailable", "limits",    "rejected",
                                            "nats_error",  "other"};
#define RELAY_REASONS (sizeof relay_reasons / sizeof relay_reasons[0])

/* The families split by kind="...", and the kinds in the order they are rendered. */
static const char *const relay_statement_families[] = {
    "outbox_relay_pg_statements_total", "outbox_relay_pg_statement_errors_total",
    "outbox_relay_pg_statement_seconds_total", "outbox_relay_pg_statement_rows_total"};
#define RELAY_STATEMENT_FAMILIES                                                                   \
    (sizeof relay_statement_families / sizeof relay_statement_families[0])
static const char *const relay_statement_kinds[] = {"other",  "claim",  "mark",      "lock",
                                                    "wakeup", "sample", "retention", "dead_letter"};
#define RELAY_STATEMENT_KINDS (sizeof relay_statement_kinds / sizeof relay_statement_kinds[0])

/* The WAL of the relay's statements by kind: only where pg_stat_statements can be read. */
static const char *const relay_wal_families[] = {"outbox_relay_pg_wal_bytes_total",
                                                 "outbox_relay_pg_wal_statements_total"};
#define RELAY_WAL_FAMILIES (sizeof relay_wal_families / sizeof relay_wal_families[0])

/* The process_* families a scrape adds (read from /proc/self; not in a bare render). */
static const struct relay_family process_families[] = {
    {"process_cpu_seconds_total", "counter"},
    {"process_start_time_seconds", "gauge"},
    {"process_resident_memory_bytes", "gauge"},
    {"process_virtual_memory_bytes", "gauge"},
    {"process_open_fds", "gauge"},
    {"process_max_fds", "gauge"},
};
#define PROCESS_FAMILIES (sizeof process_families / sizeof process_families[0])

/* The latency histogram's `le` labels in order: 16 bounds (1 ms .. 60 s), then +Inf. */
static const char *const relay_latency_le[] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
    "1",     "2.5",    "5",     "10",   "20",    "30",   "60",  "+Inf",
};
#define RELAY_LATENCY_LE (sizeof relay_latency_le / sizeof relay_latency_le[0])

#endif
