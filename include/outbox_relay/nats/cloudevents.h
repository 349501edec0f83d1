/* CloudEvents binary content mode: the ce- headers a row's message carries. Pure. */
#ifndef OUTBOX_RELAY_CLOUDEVENTS_H
#define OUTBOX_RELAY_CLOUDEVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outbox_relay/nats/message.h"

/* "2026-12-07T13:10:00.123456Z" and its NUL. */
#define CLOUDEVENTS_TIME_LEN 28

/*
 * created_at (epoch seconds, as the claim decodes it) as an RFC 3339 UTC
 * timestamp with microseconds, PostgreSQL's resolution. The double holds a
 * timestamptz's microseconds exactly enough to round back to them for
 * centuries either side of 1970. False if buf is too small or the time is
 * out of range.
 */
bool cloudevents_time(double created_at, char *buf, size_t len);

/*
 * A header value as the NATS binding wants it (percent-encoding of space,
 * '"', '%' and every byte outside printable ASCII, upper-case hex).
 * Malloc'ed; NULL when out of memory.
 */
char *cloudevents_header_value(const char *s);

/*
 * The row's headers text (NULL or "" = none) with the binary-mode
 * attributes added: ce-specversion 1.0, ce-id = event_id, ce-source =
 * source, ce-type = subject, ce-time = created_at, and ce-datacontenttype
 * = the row's Content-Type header when it has one. A header the row sets
 * itself (names compared case-insensitively, as NATS header names are) is
 * kept and not added. *out is the new JSON text (malloc'ed), or NULL when
 * the row's headers are no JSON object: message_build then refuses the row
 * for its own headers. Goes before message_build, so that the size checks
 * count the added headers.
 */
enum message_result cloudevents_headers(const char *headers_json, const char *subject,
                                        const char *event_id, double created_at, const char *source,
                                        char **out);

#endif
