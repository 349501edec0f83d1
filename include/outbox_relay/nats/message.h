/* Turning an outbox row into a NATS message, and judging publish errors. Pure. */
#ifndef OUTBOX_RELAY_MESSAGE_H
#define OUTBOX_RELAY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "outbox_relay/nats/publish_error.h"

enum message_result {
    MESSAGE_OK,      /* *out holds the message */
    MESSAGE_INVALID, /* permanent: the row can never be published; err says why */
    MESSAGE_NOMEM,   /* transient: allocation failed */
};

/*
 * Validates the text of the row's `headers` jsonb (NULL or "" = none):
 * a JSON object whose values are strings or arrays of strings; names are
 * printable ASCII without ':' and not reserved ("Nats-" prefix, any case:
 * those drive JetStream and would change what the relay does); values hold
 * no CR or LF, are not empty (nats.c consumers cannot read a message with
 * an empty header value) and neither start nor end with a space or tab
 * (consumers read them trimmed). On success, adds each to msg (if msg != NULL) and stores the
 * wire size of the header block in *wire_bytes (if not NULL).
 */
enum message_result message_headers_apply(natsMsg *msg, const char *headers_json,
                                          size_t *wire_bytes, char *err, size_t errlen);

/*
 * Builds the message for one row: subject, payload byte for byte, each
 * header, and Nats-Msg-Id = event_id. Refused (MESSAGE_INVALID, err says
 * why, *reason = PUBLISH_INVALID_ROW or PUBLISH_TOO_LARGE):
 * - an invalid subject (subject_valid) or headers (message_headers_apply);
 * - an event_id that is empty, holds a control character (CR, LF, tab, ...)
 *   or starts or ends with whitespace (JetStream would dedup on the trimmed id);
 * - payload plus header block over max_payload, the server's limit (0 = unchecked);
 * - a header block over 65535 bytes, JetStream's header limit.
 * MESSAGE_NOMEM sets *reason = PUBLISH_NATS_ERROR. reason may be NULL.
 *
 * The NATS library must be open (nats_Open; natsOptions_Create and
 * natsConnection_Connect open it): natsMsg_Destroy() needs its collector.
 * The relay's NATS connection is made before any row is claimed.
 */
enum message_result message_build_classified(natsMsg **out, const char *subject,
                                             const char *event_id, const char *headers_json,
                                             const char *payload, size_t payload_len,
                                             int64_t max_payload, enum publish_reason *reason,
                                             char *err, size_t errlen);

/*
 * The header block nats.c sends with msg ("NATS/1.0\r\n", "Name: value\r\n"
 * per value, "\r\n"); 0 for a message without headers.
 */
size_t message_header_block(natsMsg *msg);

/*
 * Whether msg, with one more header name: value added, still fits the
 * server's max_payload (header block + payload; 0 = unchecked) and
 * JetStream's 65535-byte header block. For a header the relay adds at
 * publish (the fence), after message_build judged the row's own.
 */
bool message_fits_with_header(natsMsg *msg, const char *name, const char *value,
                              int64_t max_payload);

/*
 * The header block every message carries whatever the row's headers:
 * "NATS/1.0\r\n", "Nats-Msg-Id: " + event_id + "\r\n" and the blank line,
 * event_id's bytes not counted. A row whose payload plus this is over
 * max_payload can never be published.
 */
#define MESSAGE_HEADER_OVERHEAD 27
/* JetStream's deduplication header: every message the relay sends carries it. */
#define MESSAGE_HEADER_MSG_ID "Nats-Msg-Id"
/*
 * The largest headers (jsonb, uncompressed) the relay reads. jsonb stores a
 * header in at most its wire line plus a few bytes, so headers stored this
 * large make a header block far over JetStream's 64 KiB (only empty arrays,
 * which send nothing, could be stored larger).
 */
#define MESSAGE_HEADERS_STORED_MAX (8 * 65536)
/* nats-server refuses a max_payload above 64 MiB: no message is ever larger. */
#define MESSAGE_NATS_PAYLOAD_LIMIT (64 * 1024 * 1024)

/* max_payload as a limit: the server's, or the largest any server takes when not known (0). */
int64_t message_payload_limit(int64_t max_payload);

/*
 * Judges a row from its stored lengths alone, before any of it is read:
 * false, with err and the reason class PUBLISH_TOO_LARGE, when it can never
 * be published (payload plus the relay's own headers over max_payload, or
 * headers over MESSAGE_HEADERS_STORED_MAX); true when only the whole
 * message can tell (message_build_classified).
 */
bool message_size_possible(int64_t payload_len, int64_t headers_stored_len, int64_t event_id_len,
                           int64_t max_payload, char *err, size_t errlen);

/* message_build_classified for callers that need no reason class (tests, tools). */
enum message_result message_build(natsMsg **out, const char *subject, const char *event_id,
                                  const char *headers_json, const char *payload, size_t payload_len,
                                  int64_t max_payload, char *err, size_t errlen);

/*
 * publish_error_classify(status, js_err_code).permanent, for callers that need only that;
 * new callers use publish_error_classify, which also gives the reason class.
 */
bool message_error_is_permanent(natsStatus status, int js_err_code);

#endif
