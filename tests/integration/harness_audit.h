/* Integration-test harness: a stream read back, and audited against the outbox. */
#ifndef OUTBOX_RELAY_IT_HARNESS_AUDIT_H
#define OUTBOX_RELAY_IT_HARNESS_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

struct it_header {
    char *key;
    char **values; /* in the order they were sent */
    int nvalues;
};

struct it_msg {
    uint64_t seq; /* stream sequence */
    char *subject;
    char *msg_id; /* Nats-Msg-Id, NULL if absent */
    unsigned char *data;
    int len;
    struct it_header *headers; /* every header, Nats-Msg-Id included */
    int nheaders;
};

struct it_msgs {
    struct it_msg *msgs; /* stream sequence order */
    size_t count;
    struct it_msg **by_id; /* index sorted by msg_id, built by it_msgs_find/duplicates */
};

/* Reads every message of the stream, in sequence order. Free with it_msgs_free(). */
void it_js_read_stream(const char *name, struct it_msgs *out);
void it_msgs_free(struct it_msgs *msgs);

/* The message whose Nats-Msg-Id is msg_id (any one, if duplicated), or NULL. */
const struct it_msg *it_msgs_find(struct it_msgs *msgs, const char *msg_id);

/* How many messages share their Nats-Msg-Id with an earlier one (0 = all unique). */
size_t it_msgs_duplicate_ids(struct it_msgs *msgs);

/* The header `key` of a message (exact, case-sensitive), or NULL. */
const struct it_header *it_msg_header(const struct it_msg *msg, const char *key);

/*
 * Reads the stream and checks it holds exactly `want` messages, no two with
 * the same Nats-Msg-Id. Free with it_msgs_free().
 */
void it_js_read_stream_once(const char *name, size_t want, struct it_msgs *out);

/*
 * The end state of an at-least-once drain, deduplicated: the outbox table
 * holds `rows` rows and the stream one message per row (as
 * it_js_read_stream_once checks); each row's message, found by its
 * event_id, sits at the row's stream_seq with the row's subject and
 * payload. Prints the first differences before it fails the test.
 */
void it_assert_each_row_once(PGconn *conn, const char *stream, int64_t rows);

/*
 * Per-key order and exactly-once audit of a stream against the outbox.
 * Walks the stream in sequence order and maps each message to its row by
 * Nats-Msg-Id = event_id.
 */
struct it_key_audit {
    size_t rows;       /* rows in the outbox */
    size_t messages;   /* messages in the stream */
    size_t distinct;   /* rows with at least one message */
    size_t duplicates; /* messages of a row that already had one earlier in the stream */
    size_t unknown;    /* messages whose Nats-Msg-Id is no row's event_id */
    size_t missing;    /* rows without a message */
    size_t keys;       /* distinct non-NULL ordering keys */
    size_t inversions; /* keyed messages whose row id is below an earlier message's of its key */
};

/* Fills *out; prints the first `show` inversions (key, ids, sequences) to stderr. */
void it_audit_key_order(PGconn *conn, const char *stream, int show, struct it_key_audit *out);

/* it_audit_key_order, then: 0 inversions, 0 duplicates, 0 unknown, 0 missing, messages == rows. */
void it_assert_keys_in_order_once(PGconn *conn, const char *stream);

#endif
