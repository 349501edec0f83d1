/* The sink's asynchronous publishing: publish, PubAcks, fences, reclaiming unacked messages. */
#include "outbox_relay/nats/js_sink.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/nats/nats_conn.h"
#include "outbox_relay/nats/js_sink_internal.h"

/* nats.c thread: the outcome of one publish. */
void js_sink_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct js_sink *sink = closure;
    struct nats_event e = {.kind = NATS_EVENT_PUBACK, .msg = msg, .at = js_sink_wall_now()};
    if (pa != NULL) {
        e.ok = true;
        e.duplicate = pa->Duplicate;
        e.stream_seq = pa->Sequence;
    } else if (pae != NULL) {
        e.status = pae->Err;
        e.js_code = (int)pae->ErrCode;
        if (pae->Err == NATS_TIMEOUT)
            snprintf(e.error, sizeof(e.error), "no PubAck within %d ms",
                     sink->cfg->publish_timeout_ms);
        else if (pae->Err == NATS_NO_RESPONDERS)
            snprintf(e.error, sizeof(e.error), "no stream is bound to the subject (no responders)");
        else
            snprintf(e.error, sizeof(e.error), "%s (JetStream error %d)",
                     pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err), pae->ErrCode);
    } else {
        e.status = NATS_ERR;
        snprintf(e.error, sizeof(e.error), "publish failed without a reason");
    }
    /* No stream took the subject: a managed stream may have been deleted. */
    if (pae != NULL && (pae->Err == NATS_NO_RESPONDERS || pae->ErrCode == JSStreamNotFoundErr))
        js_sink_stream_lost(sink);
    js_sink_report(sink, &e); /* its slot was reserved at publish: cannot fail */
}

/* Reports each message js still waits an ack for as failed (ours now, valid until matched). */
int js_sink_reclaim_from(struct js_sink *sink, jsCtx *js, const char *why)
{
    natsMsgList pending = {0};
    int n = 0;
    if (js == NULL || js_PublishAsyncGetPendingList(&pending, js) != NATS_OK)
        return 0;
    for (int i = 0; i < pending.Count; i++) {
        struct nats_event e = {.kind = NATS_EVENT_PUBACK,
                               .msg = pending.Msgs[i],
                               .at = js_sink_wall_now(),
                               .status = NATS_CONNECTION_CLOSED};
        snprintf(e.error, sizeof(e.error), "%s", why);
        js_sink_report(sink, &e); /* reserved at publish; nats.c will never ack it now */
        pending.Msgs[i] = NULL;
        n++;
    }
    natsMsgList_Destroy(&pending);
    return n;
}

int js_sink_reclaim_pending(struct js_sink *sink, const char *why)
{
    /* nats.c will never acknowledge these: report each as a failed publish,
     * so its row is retried. */
    pthread_mutex_lock(&sink->conn_mu);
    int n = sink->published ? js_sink_reclaim_from(sink, sink->js, why) : 0;
    pthread_mutex_unlock(&sink->conn_mu);
    return n;
}

natsStatus js_sink_publish_after(struct js_sink *sink, natsMsg **msg, const char *expect_last_id)
{
    natsStatus s = expect_last_id != NULL
                       ? natsMsgHeader_Set(*msg, JS_HEADER_EXPECT_LAST_MSG_ID, expect_last_id)
                       : natsMsgHeader_Delete(*msg, JS_HEADER_EXPECT_LAST_MSG_ID);
    if (s != NATS_OK && s != NATS_NOT_FOUND)
        return s;
    return js_sink_publish(sink, msg);
}

/* Copies every value of header key from one message to another. */
static natsStatus js_copy_header(natsMsg *to, natsMsg *from, const char *key)
{
    const char **values = NULL;
    int n = 0;
    natsStatus s = natsMsgHeader_Values(from, key, &values, &n);
    for (int i = 0; s == NATS_OK && i < n; i++)
        s = natsMsgHeader_Add(to, key, values[i]);
    free((void *)values);
    return s;
}

natsStatus js_sink_msg_unfenced(natsMsg **msg)
{
    natsMsg *from = *msg, *to = NULL;
    natsStatus s = natsMsg_Create(&to, natsMsg_GetSubject(from), NULL, natsMsg_GetData(from),
                                  natsMsg_GetDataLength(from));
    const char **keys = NULL;
    int n = 0;
    if (s == NATS_OK) {
        s = natsMsgHeader_Keys(from, &keys, &n);
        if (s == NATS_NOT_FOUND)
            s = NATS_OK; /* no header at all */
    }
    for (int i = 0; s == NATS_OK && i < n; i++)
        if (strcasecmp(keys[i], JS_HEADER_EXPECT_LAST_MSG_ID) != 0)
            s = js_copy_header(to, from, keys[i]);
    free((void *)keys);
    if (s != NATS_OK) {
        natsMsg_Destroy(to);
        return s;
    }
    natsMsg_Destroy(from);
    *msg = to;
    return NATS_OK;
}

const char *js_sink_msg_id(natsMsg *msg)
{
    const char *id = NULL;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) != NATS_OK)
        return NULL;
    return id;
}

natsStatus js_sink_publish(struct js_sink *sink, natsMsg **msg)
{
    pthread_mutex_lock(&sink->conn_mu);
    if (sink->js == NULL) {
        /* Between two connections (a reopen is under way). */
        pthread_mutex_unlock(&sink->conn_mu);
        return NATS_CONNECTION_CLOSED;
    }
    if (sink->bridge != NULL && !nats_bridge_reserve(sink->bridge)) {
        pthread_mutex_unlock(&sink->conn_mu);
        return NATS_NO_MEMORY;
    }
    sink->published = true;
    natsStatus s = js_PublishMsgAsync(sink->js, msg, &sink->pub);
    if (s != NATS_OK && sink->bridge != NULL)
        nats_bridge_unreserve(sink->bridge);
    sink->unflushed |= s == NATS_OK;
    pthread_mutex_unlock(&sink->conn_mu);
    return s;
}

void js_sink_flush(struct js_sink *sink)
{
    if (!sink->unflushed)
        return;
    sink->unflushed = false;
    js_sink_ask_worker(sink, JS_WORK_FLUSH);
}
