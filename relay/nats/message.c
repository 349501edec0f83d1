/* Turning an outbox row into a NATS message, and judging publish errors. */
#include "outbox_relay/nats/message.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "outbox_relay/lib/error_text.h"
#include "outbox_relay/lib/subject_pattern.h"

/*
 * nats-server 2.9 refuses a header block longer than this (its length is a
 * uint16 in the stream's store; stream.go: "header size exceeds maximum
 * allowed of 64k", JetStream error 10097), whatever max_payload allows.
 */
#define HEADER_BLOCK_MAX 65535

#define HEADER_STATUS_LINE "NATS/1.0\r\n"

static bool header_name_valid(const char *name)
{
    for (const char *p = name; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || c == ':')
            return false;
    }
    return true;
}

static enum message_result header_value_check(const char *name, json_t *v, size_t *line_bytes,
                                              size_t *values, char *err, size_t errlen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];

    if (!json_is_string(v)) {
        error_text_set(err, errlen, "headers: value of %s is not a string or array of strings",
                       error_text_quote(name, q, sizeof(q)));
        return MESSAGE_INVALID;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    /* jansson refuses \u0000 when parsing, so strlen(s) == n: nats.c stores C strings. */
    /* Sent, it is stored; but nats.c (the relay's own client) then cannot read the headers of
     * the message back: natsMsgHeader_Keys fails with a protocol error for the whole message. */
    if (n == 0) {
        error_text_set(err, errlen, "headers: value of %s is empty",
                       error_text_quote(name, q, sizeof(q)));
        return MESSAGE_INVALID;
    }
    if (memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL) {
        error_text_set(err, errlen, "headers: value of %s contains CR or LF",
                       error_text_quote(name, q, sizeof(q)));
        return MESSAGE_INVALID;
    }
    /* Consumers read header values trimmed: " a " would arrive as "a". */
    if (strchr(" \t", s[0]) != NULL || strchr(" \t", s[n - 1]) != NULL) {
        error_text_set(
            err, errlen,
            "headers: value of %s has leading or trailing whitespace (consumers would read it "
            "trimmed)",
            error_text_quote(name, q, sizeof(q)));
        return MESSAGE_INVALID;
    }
    /* "Name: value\r\n" */
    *line_bytes += strlen(name) + 2 + n + 2;
    (*values)++;
    return MESSAGE_OK;
}

/*
 * Parses and validates the headers text. *obj is NULL when there are none.
 * line_bytes sums the "Name: value\r\n" lines, values counts them.
 */
static enum message_result headers_parse(const char *headers_json, json_t **obj, size_t *line_bytes,
                                         size_t *values, char *err, size_t errlen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];

    *obj = NULL;
    *line_bytes = 0;
    *values = 0;
    if (headers_json == NULL || headers_json[0] == '\0')
        return MESSAGE_OK;

    json_error_t jerr;
    json_t *root = json_loads(headers_json, JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory) {
            error_text_set(err, errlen, "headers: out of memory");
            return MESSAGE_NOMEM;
        }
        error_text_set(err, errlen, "headers: not valid JSON: %s (line %d, column %d)", jerr.text,
                       jerr.line, jerr.column);
        return MESSAGE_INVALID;
    }
    if (!json_is_object(root)) {
        error_text_set(err, errlen, "headers: not a JSON object");
        json_decref(root);
        return MESSAGE_INVALID;
    }

    const char *name;
    json_t *value;
    json_object_foreach(root, name, value)
    {
        if (name[0] == '\0') {
            error_text_set(err, errlen, "headers: empty header name");
            goto invalid;
        }
        if (!header_name_valid(name)) {
            error_text_set(err, errlen,
                           "headers: name %s must be printable ASCII without spaces or ':'",
                           error_text_quote(name, q, sizeof(q)));
            goto invalid;
        }
        if (strncasecmp(name, "Nats-", 5) == 0) {
            error_text_set(err, errlen,
                           "headers: name %s is reserved (the \"Nats-\" prefix is interpreted by "
                           "JetStream)",
                           error_text_quote(name, q, sizeof(q)));
            goto invalid;
        }
        enum message_result r = MESSAGE_OK;
        if (json_is_array(value)) {
            size_t i;
            json_t *elem;
            json_array_foreach(value, i, elem)
            {
                r = header_value_check(name, elem, line_bytes, values, err, errlen);
                if (r != MESSAGE_OK)
                    break;
            }
        } else {
            r = header_value_check(name, value, line_bytes, values, err, errlen);
        }
        if (r != MESSAGE_OK)
            goto invalid;
    }
    *obj = root;
    return MESSAGE_OK;

invalid:
    json_decref(root);
    *line_bytes = 0;
    *values = 0;
    return MESSAGE_INVALID;
}

static enum message_result header_add(natsMsg *msg, const char *name, const char *value, char *err,
                                      size_t errlen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];
    natsStatus s = natsMsgHeader_Add(msg, name, value);
    if (s == NATS_OK)
        return MESSAGE_OK;
    if (s == NATS_NO_MEMORY) {
        error_text_set(err, errlen, "headers: out of memory");
        return MESSAGE_NOMEM;
    }
    error_text_set(err, errlen, "headers: cannot add %s: %s", error_text_quote(name, q, sizeof(q)),
                   natsStatus_GetText(s));
    return MESSAGE_INVALID;
}

/* Only called on an object headers_parse() accepted. */
static enum message_result headers_add_all(natsMsg *msg, json_t *obj, char *err, size_t errlen)
{
    const char *name;
    json_t *value;
    json_object_foreach(obj, name, value)
    {
        enum message_result r = MESSAGE_OK;
        if (json_is_array(value)) {
            size_t i;
            json_t *elem;
            json_array_foreach(value, i, elem)
            {
                r = header_add(msg, name, json_string_value(elem), err, errlen);
                if (r != MESSAGE_OK)
                    return r;
            }
        } else {
            r = header_add(msg, name, json_string_value(value), err, errlen);
        }
        if (r != MESSAGE_OK)
            return r;
    }
    return MESSAGE_OK;
}

/* Whether msg holds exactly the values `name` has in the row (v: a string or an array). */
static bool header_kept(natsMsg *msg, const char *name, json_t *v)
{
    const char **got = NULL;
    int n = 0;
    if (natsMsgHeader_Values(msg, name, &got, &n) != NATS_OK)
        n = 0;
    size_t want = json_is_array(v) ? json_array_size(v) : 1;
    bool same = (size_t)n == want;
    for (size_t i = 0; same && i < want; i++)
        same = strcmp(got[i], json_string_value(json_is_array(v) ? json_array_get(v, i) : v)) == 0;
    free((void *)got);
    return same || (want == 0 && n == 0);
}

/*
 * nats.c 3.4's header map can take one name for another that it starts
 * ("Trace" for "Traceparent", "X-H10" for "X-H1000", "Nats" for
 * "Nats-Msg-Id"), and then sends, and consumers read, the values under the
 * wrong name. What the message holds is checked against the row.
 */
static enum message_result headers_verify(natsMsg *msg, json_t *obj, const char *event_id,
                                          char *err, size_t errlen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];
    json_t *id = json_string(event_id);
    if (id == NULL) {
        error_text_set(err, errlen, "headers: out of memory");
        return MESSAGE_NOMEM;
    }
    bool id_kept = header_kept(msg, MESSAGE_HEADER_MSG_ID, id);
    json_decref(id);
    const char *name;
    json_t *value;
    json_object_foreach(obj, name, value)
    {
        if (!id_kept || !header_kept(msg, name, value)) {
            error_text_set(
                err, errlen,
                "headers: name %s is confused with another name it starts or that starts it "
                "(a limit of the NATS C client); rename one",
                error_text_quote(id_kept ? name : MESSAGE_HEADER_MSG_ID, q, sizeof(q)));
            return MESSAGE_INVALID;
        }
    }
    if (!id_kept) {
        error_text_set(err, errlen,
                       "headers: %s is confused with another header name (a limit of the "
                       "NATS C client)",
                       MESSAGE_HEADER_MSG_ID);
        return MESSAGE_INVALID;
    }
    return MESSAGE_OK;
}

enum message_result message_headers_apply(natsMsg *msg, const char *headers_json,
                                          size_t *wire_bytes, char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    json_t *obj;
    size_t line_bytes, values;
    enum message_result r = headers_parse(headers_json, &obj, &line_bytes, &values, err, errlen);
    if (r != MESSAGE_OK)
        return r;

    /* Validate everything before adding anything: msg never holds half the headers. */
    if (msg != NULL && obj != NULL)
        r = headers_add_all(msg, obj, err, errlen);
    json_decref(obj);
    if (r != MESSAGE_OK)
        return r;

    /* Without a single value nats.c sends a plain PUB: no header block at all. */
    if (wire_bytes != NULL)
        *wire_bytes = values ? strlen(HEADER_STATUS_LINE) + line_bytes + 2 : 0;
    return MESSAGE_OK;
}

/*
 * The id JetStream deduplicates on must reach it unchanged. Header values
 * lose leading and trailing whitespace on the way (nats-server and the
 * clients trim them), so " a" and "a" would be one id, and a control
 * character has no business in a header line.
 */
static bool event_id_valid(const char *event_id, char *err, size_t errlen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];

    if (event_id == NULL || event_id[0] == '\0') {
        error_text_set(err, errlen, "invalid event_id: empty");
        return false;
    }
    if (strpbrk(event_id, "\r\n") != NULL) {
        error_text_set(err, errlen, "invalid event_id %s: contains CR or LF",
                       error_text_quote(event_id, q, sizeof(q)));
        return false;
    }
    size_t len = strlen(event_id);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)event_id[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            error_text_set(err, errlen, "invalid event_id %s: contains a control character",
                           error_text_quote(event_id, q, sizeof(q)));
            return false;
        }
    }
    if (strchr(" \t", event_id[0]) != NULL || strchr(" \t", event_id[len - 1]) != NULL) {
        error_text_set(
            err, errlen,
            "invalid event_id %s: leading or trailing whitespace (JetStream would see, and "
            "deduplicate on, the trimmed id)",
            error_text_quote(event_id, q, sizeof(q)));
        return false;
    }
    if (strchr(event_id, '\t') != NULL) {
        error_text_set(err, errlen, "invalid event_id %s: contains a control character",
                       error_text_quote(event_id, q, sizeof(q)));
        return false;
    }
    return true;
}

enum message_result message_build_classified(natsMsg **out, const char *subject,
                                             const char *event_id, const char *headers_json,
                                             const char *payload, size_t payload_len,
                                             int64_t max_payload, enum publish_reason *reason,
                                             char *err, size_t errlen)
{
    enum publish_reason why = PUBLISH_INVALID_ROW;
    if (reason == NULL)
        reason = &why;
    *reason = PUBLISH_INVALID_ROW;
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    if (!subject_valid(subject, err, errlen) || !event_id_valid(event_id, err, errlen))
        return MESSAGE_INVALID;
    if (payload == NULL && payload_len > 0) {
        error_text_set(err, errlen, "payload: %zu bytes announced but no data", payload_len);
        return MESSAGE_INVALID;
    }

    json_t *obj;
    size_t line_bytes, values;
    enum message_result r = headers_parse(headers_json, &obj, &line_bytes, &values, err, errlen);
    if (r == MESSAGE_NOMEM)
        *reason = PUBLISH_NATS_ERROR;
    if (r != MESSAGE_OK)
        return r;

    /* What nats.c puts on the wire and compares with max_payload: header block + payload. */
    size_t header_bytes = strlen(HEADER_STATUS_LINE) + line_bytes + strlen(MESSAGE_HEADER_MSG_ID) +
                          2 + strlen(event_id) + 2 + 2;
    size_t total = payload_len + header_bytes;
    *reason = PUBLISH_TOO_LARGE;
    if (max_payload > 0 && (total < payload_len || total > (uint64_t)max_payload)) {
        error_text_set(
            err, errlen,
            "message too large: %zu bytes (payload %zu + headers %zu) exceeds the server's "
            "max_payload %" PRId64,
            total, payload_len, header_bytes, max_payload);
        json_decref(obj);
        return MESSAGE_INVALID;
    }
    if (header_bytes > HEADER_BLOCK_MAX) {
        error_text_set(
            err, errlen,
            "headers too large: the header block is %zu bytes, JetStream takes at most %d "
            "(64 KiB)",
            header_bytes, HEADER_BLOCK_MAX);
        json_decref(obj);
        return MESSAGE_INVALID;
    }
    if (payload_len > INT_MAX) {
        error_text_set(err, errlen,
                       "message too large: payload %zu bytes exceeds the client's limit %d",
                       payload_len, INT_MAX);
        json_decref(obj);
        return MESSAGE_INVALID;
    }
    *reason = PUBLISH_INVALID_ROW;

    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, subject, NULL, payload, (int)payload_len);
    if (s != NATS_OK) {
        json_decref(obj);
        error_text_set(err, errlen, "creating the message: %s", natsStatus_GetText(s));
        if (s == NATS_NO_MEMORY)
            *reason = PUBLISH_NATS_ERROR;
        return s == NATS_NO_MEMORY ? MESSAGE_NOMEM : MESSAGE_INVALID;
    }

    if (obj != NULL)
        r = headers_add_all(msg, obj, err, errlen);
    if (r == MESSAGE_OK) {
        /* Set, not Add: exactly one id, the one JetStream deduplicates on. */
        s = natsMsgHeader_Set(msg, MESSAGE_HEADER_MSG_ID, event_id);
        if (s != NATS_OK) {
            error_text_set(err, errlen, "setting %s: %s", MESSAGE_HEADER_MSG_ID,
                           natsStatus_GetText(s));
            r = s == NATS_NO_MEMORY ? MESSAGE_NOMEM : MESSAGE_INVALID;
        }
    }
    if (r == MESSAGE_OK)
        r = headers_verify(msg, obj, event_id, err, errlen);
    json_decref(obj);
    if (r != MESSAGE_OK) {
        if (r == MESSAGE_NOMEM)
            *reason = PUBLISH_NATS_ERROR;
        natsMsg_Destroy(msg);
        return r;
    }
    *out = msg;
    return MESSAGE_OK;
}

int64_t message_payload_limit(int64_t max_payload)
{
    return max_payload > 0 ? max_payload : MESSAGE_NATS_PAYLOAD_LIMIT;
}

bool message_size_possible(int64_t payload_len, int64_t headers_stored_len, int64_t event_id_len,
                           int64_t max_payload, char *err, size_t errlen)
{
    int64_t limit = message_payload_limit(max_payload);
    int64_t least = payload_len + MESSAGE_HEADER_OVERHEAD + event_id_len;
    if (least > limit) {
        error_text_set(err, errlen,
                       "message too large: payload %" PRId64 " bytes + at least %" PRId64
                       " bytes of headers exceeds the server's max_payload %" PRId64
                       " (the row was not read)",
                       payload_len, least - payload_len, limit);
        return false;
    }
    if (headers_stored_len > MESSAGE_HEADERS_STORED_MAX) {
        error_text_set(err, errlen,
                       "headers too large: %" PRId64 " bytes stored, the relay reads at most %d (a "
                       "header block JetStream takes is at most 64 KiB; the row was not read)",
                       headers_stored_len, MESSAGE_HEADERS_STORED_MAX);
        return false;
    }
    return true;
}

enum message_result message_build(natsMsg **out, const char *subject, const char *event_id,
                                  const char *headers_json, const char *payload, size_t payload_len,
                                  int64_t max_payload, char *err, size_t errlen)
{
    return message_build_classified(out, subject, event_id, headers_json, payload, payload_len,
                                    max_payload, NULL, err, errlen);
}

size_t message_header_block(natsMsg *msg)
{
    const char **keys = NULL;
    int n = 0;
    if (natsMsgHeader_Keys(msg, &keys, &n) != NATS_OK)
        return 0;
    size_t bytes = strlen(HEADER_STATUS_LINE) + 2;
    for (int i = 0; i < n; i++) {
        const char **values = NULL;
        int k = 0;
        if (natsMsgHeader_Values(msg, keys[i], &values, &k) != NATS_OK)
            continue;
        for (int j = 0; j < k; j++)
            bytes += strlen(keys[i]) + 2 + strlen(values[j]) + 2;
        free((void *)values);
    }
    free((void *)keys);
    return bytes;
}

bool message_fits_with_header(natsMsg *msg, const char *name, const char *value,
                              int64_t max_payload)
{
    size_t block = message_header_block(msg);
    if (block == 0)
        block = strlen(HEADER_STATUS_LINE) + 2;
    block += strlen(name) + 2 + strlen(value) + 2;
    if (block > HEADER_BLOCK_MAX)
        return false;
    size_t total = block + (size_t)natsMsg_GetDataLength(msg);
    return max_payload <= 0 || total <= (uint64_t)max_payload;
}

bool message_error_is_permanent(natsStatus status, int js_err_code)
{
    return publish_error_classify(status, js_err_code).permanent;
}
