/* The tail of a stream by message id: what an earlier term may have published. */
#include "outbox_relay/nats/stream_read.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/nats/message.h"

static bool stream_read_fail(struct stream_read *out, const char *what, natsStatus s, jsErrCode e)
{
    out->ok = false;
    snprintf(out->error, sizeof(out->error), "%s: %s (JetStream error %d)", what,
             natsStatus_GetText(s), (int)e);
    return false;
}

bool stream_read_tail(jsCtx *js, const char *stream, uint64_t after, size_t max_msgs,
                      int64_t max_bytes, int64_t wait_ms, struct stream_read *out)
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
    /* Newest first: a cut by bytes leaves out the oldest. */
    for (uint64_t seq = last; seq >= from; seq--) {
        natsMsg *m = NULL;
        jerr = 0;
        s = js_GetMsg(&m, js, stream, seq, &jo, &jerr);
        if (s == NATS_NOT_FOUND)
            continue; /* deleted */
        if (s != NATS_OK) {
            stream_read_free(out);
            return stream_read_fail(out, "stream read", s, jerr);
        }
        out->bytes += (uint64_t)natsMsg_GetDataLength(m);
        const char *id = NULL;
        if (natsMsgHeader_Get(m, MESSAGE_HEADER_MSG_ID, &id) == NATS_OK && id != NULL) {
            out->bytes += strlen(id);
            char *copy = strdup(id);
            if (copy == NULL) {
                natsMsg_Destroy(m);
                stream_read_free(out);
                return stream_read_fail(out, "stream read", NATS_NO_MEMORY, 0);
            }
            out->msgs[out->n++] = (struct stream_msg){.seq = seq, .msg_id = copy};
        }
        natsMsg_Destroy(m);
        if (max_bytes > 0 && out->bytes > (uint64_t)max_bytes && seq > from) {
            out->unchecked += seq - from;
            break;
        }
    }
    for (size_t i = 0; i < out->n / 2; i++) {
        struct stream_msg t = out->msgs[i];
        out->msgs[i] = out->msgs[out->n - 1 - i];
        out->msgs[out->n - 1 - i] = t;
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
