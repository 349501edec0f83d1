/*
 * The "msg" of the log lines an operator (or an alert, or a test) keys on:
 * one spelling, used by the code that logs the event and by the tests that
 * check it happened. Changing a text here changes it for both; a message
 * not listed here is free text.
 */
#ifndef OUTBOX_RELAY_LOG_EVENTS_H
#define OUTBOX_RELAY_LOG_EVENTS_H

/* PostgreSQL session */
#define LOG_MSG_PG_CONNECTED       "postgresql connected"
#define LOG_MSG_PG_CONNECT_FAILED  "postgresql connection failed"
#define LOG_MSG_PG_CONNECTION_LOST "postgresql connection lost"
#define LOG_MSG_TABLE_WAITING      "waiting for the outbox table"
#define LOG_MSG_TABLE_FOUND        "outbox table found"

/* WAL per statement kind, read from pg_stat_statements (statement_wal.c) */
#define LOG_MSG_STATEMENT_WAL_UNAVAILABLE "WAL per statement unavailable"
#define LOG_MSG_STATEMENT_WAL_FAILED      "reading WAL per statement from pg_stat_statements failed"

/* The "reason" of a lost PostgreSQL session whose connect or query outran its deadline:
 * "connect" or "query", then the deadline in ms. */
#define LOG_REASON_PG_DEADLINE_FMT "%s did not finish within %d ms"

/* Leadership; LOG_REASON_NATS_LOST is the "reason" of a release for lack of NATS. */
#define LOG_MSG_BECAME_LEADER       "became leader"
#define LOG_MSG_LEADERSHIP_RELEASED "leadership released: standing by"
#define LOG_REASON_NATS_LOST        "nats unreachable for longer than OUTBOX_NATS_LOST_MS"

/* NATS connection and stream */
#define LOG_MSG_NATS_DISCONNECTED "nats disconnected; claiming paused"
#define LOG_MSG_NATS_REOPENING    "nats connection closed; connecting anew"
#define LOG_MSG_STREAM_CREATED    "created stream"

/* Publishing */
#define LOG_MSG_PUBLISHES_TIMED_OUT "publishes timed out"
#define LOG_MSG_ROW_DEAD            "row is dead"
#define LOG_MSG_PIPELINING_ON                                                                      \
    "pipelining: many publishes per ordering_key in flight, fenced by Nats-Expected-Last-Msg-Id"
#define LOG_MSG_PIPELINING_OFF "pipelining off: one publish per ordering_key at a time"
#define LOG_MSG_ANOTHER_WRITER                                                                     \
    "another writer stores messages in OUTBOX_STREAM: publishing one row per ordering_key at a "   \
    "time from now on (OUTBOX_PIPELINE needs the relay to be the stream's only writer)"

/* Reconciliation on a new term */
#define LOG_MSG_RECONCILE_READ_FAILED "reconciliation: reading the stream failed; trying again"

/* Settings */
#define LOG_MSG_UNKNOWN_SETTING "unknown setting ignored"

#endif
