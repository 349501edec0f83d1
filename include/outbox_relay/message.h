/* Turning an outbox row into a NATS message, and judging publish errors. Pure. */
#ifndef OUTBOX_RELAY_MESSAGE_H
#define OUTBOX_RELAY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

enum message_result {
    MESSAGE_OK,      /* *out holds the message */
    MESSAGE_INVALID, /* permanent: the row can never be published; err says why */
    MESSAGE_NOMEM,   /* transient: allocation failed */
};

/*
 * A subject is publishable when it is non-empty, has no empty token
 * (leading, trailing or double '.'), no whitespace or control character, and
 * no wildcard token ("*" or ">"), and at most 3840 bytes (a longer HPUB line
 * exceeds nats-server's default max_control_line, and the server would close
 * the connection). On false, err says which rule failed.
 */
bool message_subject_valid(const char *subject, char *err, size_t errlen);

/*
 * Validates the text of the row's `headers` jsonb (NULL or "" = none):
 * a JSON object whose values are strings or arrays of strings; names are
 * printable ASCII without ':' and not reserved ("Nats-" prefix, any case:
 * those drive JetStream and would change what the relay does); values hold
 * no CR or LF. On success, adds each to msg (if msg != NULL) and stores the
 * wire size of the header block in *wire_bytes (if not NULL).
 */
enum message_result message_headers_apply(natsMsg *msg, const char *headers_json,
                                          size_t *wire_bytes, char *err, size_t errlen);

/*
 * Builds the message for one row: subject, payload byte for byte, each
 * header, and Nats-Msg-Id = event_id. max_payload is the server's limit
 * (0 = unchecked): payload plus header block over it is MESSAGE_INVALID.
 */
enum message_result message_build(natsMsg **out, const char *subject, const char *event_id,
                                  const char *headers_json, const char *payload, size_t payload_len,
                                  int64_t max_payload, char *err, size_t errlen);

/*
 * True when a failed publish will fail the same way every time, so retrying
 * is pointless and the row goes dead at once (e.g. the server rejects the
 * message as too large, or the subject is invalid). Timeouts, no responders
 * (no stream yet), stream-unavailable and connection errors are transient.
 */
bool message_error_is_permanent(natsStatus status, int js_err_code);

#endif
