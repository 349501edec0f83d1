/* The tail of a stream by message id: what an earlier term may have published. */
#include "outbox_relay/nats/stream_read.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "outbox_relay/nats/message.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool stream_read_fail(struct stream_read *out, const char *what, natsStatus s, jsErrCode e)
{
    out->ok = false;
    snprintf(out->error, sizeof(out->error), "%s: %s (JetStream error %d)", what,
             natsStatus_GetText(s), (int)e);
    return false;
}

/* Requests in flight at once: one round trip per window, not per message. */
#define STREAM_READ_WINDOW 512

/* Decodes standard base64 (the API's "hdrs") into a new NUL-terminated string; NULL if invalid. */
static char *base64_decode(const char *in)
{
    size_t n = strlen(in);
    char *out = malloc(n / 4 * 3 + 4);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        const char *p = strchr(B64, in[i]);
        if (p == NULL) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)(p - B64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    out[o] = '\0';
    return out;
}

/* The Nats-Msg-Id of a header block ("NATS/1.0\r\nName: value\r\n..."), copied; NULL if none. */
static char *header_msg_id(const char *block)
{
    size_t len = strlen(MESSAGE_HEADER_MSG_ID);
    for (const char *line = strstr(block, "\r\n"); line != NULL; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, MESSAGE_HEADER_MSG_ID, len) == 0 && line[len] == ':') {
            const char *v = line + len + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            return end != NULL ? strndup(v, (size_t)(end - v)) : strdup(v);
        }
    }
    return NULL;
}

/*
 * One answer of $JS.API.STREAM.MSG.GET: the message's id into slot (NULL
 * when it has none), or deleted. False with out->error when the answer is an
 * error other than "no message".
 */
static bool stream_read_answer(natsMsg *m, char **slot, bool *deleted, uint64_t *bytes,
                               struct stream_read *out)
{
    json_error_t jerr;
    json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &jerr);
    *bytes += (uint64_t)natsMsg_GetDataLength(m);
    json_t *error = json_object_get(doc, "error");
    json_t *msg = json_object_get(doc, "message");
    bool ok = true;
    if (error != NULL) {
        json_int_t code = json_integer_value(json_object_get(error, "code"));
        if (code == 404) {
            *deleted = true;
        } else {
            snprintf(out->error, sizeof(out->error), "stream read: %s (%lld)",
                     json_string_value(json_object_get(error, "description")) ?: "error",
                     (long long)code);
            ok = false;
        }
    } else if (json_is_object(msg)) {
        const char *hdrs = json_string_value(json_object_get(msg, "hdrs"));
        char *block = hdrs != NULL ? base64_decode(hdrs) : NULL;
        *slot = block != NULL ? header_msg_id(block) : NULL;
        free(block);
    } else {
        snprintf(out->error, sizeof(out->error), "stream read: an answer that is no message");
        ok = false;
    }
    json_decref(doc);
    return ok;
}

/*
 * Messages from..last by sequence, STREAM_READ_WINDOW requests in flight on
 * one inbox: the answers come in any order, each to its own reply subject.
 * Fills out->msgs in sequence order (newest kept when max_bytes cuts).
 */
static bool stream_read_range(natsConnection *nc, const char *stream, uint64_t from, uint64_t last,
                              int64_t max_bytes, int64_t wait_ms, struct stream_read *out)
{
    size_t count = (size_t)(last - from + 1);
    char **ids = calloc(count, sizeof(*ids));
    bool *answered = calloc(count, sizeof(*answered));
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    char subject[300], wildcard[300], reply[340];
    snprintf(subject, sizeof(subject), "$JS.API.STREAM.MSG.GET.%s", stream);
    natsStatus s = ids && answered ? natsInbox_Create(&inbox) : NATS_NO_MEMORY;
    if (s == NATS_OK) {
        snprintf(wildcard, sizeof(wildcard), "%s.*", (const char *)inbox);
        s = natsConnection_SubscribeSync(&sub, nc, wildcard);
    }
    /* Newest first: a cut by bytes leaves out the oldest. */
    size_t sent = 0, done = 0;
    uint64_t bytes = 0;
    bool ok = s == NATS_OK;
    if (!ok)
        snprintf(out->error, sizeof(out->error), "stream read: %s", natsStatus_GetText(s));
    while (ok && done < count) {
        while (sent < count && sent - done < STREAM_READ_WINDOW) {
            uint64_t seq = last - sent;
            char body[48];
            snprintf(reply, sizeof(reply), "%s.%llu", (const char *)inbox, (unsigned long long)seq);
            int n = snprintf(body, sizeof(body), "{\"seq\":%llu}", (unsigned long long)seq);
            s = natsConnection_PublishRequest(nc, subject, reply, body, n);
            if (s != NATS_OK)
                break;
            sent++;
        }
        natsMsg *m = NULL;
        if (s == NATS_OK)
            s = natsSubscription_NextMsg(&m, sub, wait_ms);
        if (s != NATS_OK) {
            snprintf(out->error, sizeof(out->error), "stream read: %s", natsStatus_GetText(s));
            ok = false;
            break;
        }
        const char *dot = strrchr(natsMsg_GetSubject(m), '.');
        uint64_t seq = dot != NULL ? strtoull(dot + 1, NULL, 10) : 0;
        if (seq >= from && seq <= last && !answered[seq - from]) {
            bool deleted = false;
            answered[seq - from] = true;
            done++;
            ok = stream_read_answer(m, &ids[seq - from], &deleted, &bytes, out);
        }
        natsMsg_Destroy(m);
        if (ok && max_bytes > 0 && bytes > (uint64_t)max_bytes && sent < count) {
            /* The oldest not asked for yet are left out; the answers on their way still count. */
            out->unchecked += count - sent;
            count = sent;
        }
    }
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
    out->bytes = bytes;
    size_t first = (size_t)(last - from + 1) - count; /* the oldest left out */
    for (size_t i = first; ok && i < (size_t)(last - from + 1); i++)
        if (ids[i] != NULL) {
            out->msgs[out->n++] = (struct stream_msg){.seq = from + i, .msg_id = ids[i]};
            ids[i] = NULL;
        }
    for (size_t i = 0; ids != NULL && i < (size_t)(last - from + 1); i++)
        free(ids[i]);
    free(ids);
    free(answered);
    return ok;
}

bool stream_read_tail(natsConnection *nc, jsCtx *js, const char *stream, uint64_t after,
                      size_t max_msgs, int64_t max_bytes, int64_t wait_ms, struct stream_read *out)
{
    uint64_t tag = out->tag;
    memset(out, 0, sizeof(*out));
    out->tag = tag;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = wait_ms;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, stream, &jo, &jerr);
    if (s != NATS_OK)
        return stream_read_fail(out, "stream info", s, jerr);
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    out->last_seq = last;
    out->ok = true;
    if (last <= after)
        return true;
    uint64_t from = after + 1;
    if (first > from) {
        /* Gone before anyone read them: purged, or past the stream's max age. */
        out->unchecked += (first > last ? last + 1 : first) - from;
        from = first;
    }
    if (from > last)
        return true;
    if (last - from + 1 > max_msgs) {
        /* The newest are the likeliest to be an earlier term's unmarked rows. */
        out->unchecked += last - from + 1 - max_msgs;
        from = last - max_msgs + 1;
    }
    out->msgs = calloc((size_t)(last - from + 1), sizeof(*out->msgs));
    if (out->msgs == NULL)
        return stream_read_fail(out, "stream read", NATS_NO_MEMORY, 0);
    if (!stream_read_range(nc, stream, from, last, max_bytes, wait_ms, out)) {
        stream_read_free(out);
        out->ok = false;
        return false;
    }
    return true;
}

void stream_read_free(struct stream_read *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->msgs[i].msg_id);
    free(r->msgs);
    r->msgs = NULL;
    r->n = 0;
}
