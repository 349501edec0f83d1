/* NATS connection, JetStream stream management and asynchronous publishing. */
#include "outbox_relay/js_sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outbox_relay/log.h"

struct js_sink {
    const struct relay_config *cfg;
    struct ack_queue *queue;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    jsPubOptions pub;
    char *secret; /* password or token, kept for reconnects; never logged */
};

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* nats.c thread: the outcome of one publish. */
static void js_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct js_sink *sink = closure;
    struct ack_entry e = {.kind = ACK_PUBACK, .msg = msg, .at = wall_now()};
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
    if (!ack_queue_push(sink->queue, &e))
        natsMsg_Destroy(msg); /* the row times out of nothing: it is re-claimed later */
}

static void js_push_event(struct js_sink *sink, enum ack_kind kind)
{
    if (sink->queue == NULL)
        return;
    struct ack_entry e = {.kind = kind, .at = wall_now()};
    ack_queue_push(sink->queue, &e);
}

static void js_on_disconnected(natsConnection *nc, void *closure)
{
    js_push_event(closure, ACK_NATS_DISCONNECTED);
}

static void js_on_connected(natsConnection *nc, void *closure)
{
    js_push_event(closure, ACK_NATS_CONNECTED);
}

static void js_on_closed(natsConnection *nc, void *closure)
{
    js_push_event(closure, ACK_NATS_CLOSED);
}

static void js_on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    log_warn("nats asynchronous error", "{s:s}", "error", natsStatus_GetText(err));
}

/* Splits the comma-separated server list into nats.c's array form. */
static natsStatus js_set_servers(natsOptions *opts, const char *list)
{
    char *copy = strdup(list);
    const char *servers[64];
    int n = 0;
    char *save = NULL;
    if (copy == NULL)
        return NATS_NO_MEMORY;
    for (char *s = strtok_r(copy, ",", &save); s != NULL && n < 64;
         s = strtok_r(NULL, ",", &save)) {
        while (*s == ' ')
            s++;
        servers[n++] = s;
    }
    natsStatus st = natsOptions_SetServers(opts, servers, n);
    free(copy);
    return st;
}

static int js_fail(char *err, size_t errlen, const char *what, natsStatus s)
{
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, errlen, "%s: %s%s%s", what, natsStatus_GetText(s), detail && *detail ? ": " : "",
             detail && *detail ? detail : "");
    return -1;
}

static int js_build_options(struct js_sink *sink, bool keep_trying, char *err, size_t errlen)
{
    const struct relay_config *cfg = sink->cfg;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    sink->opts = o;
    if (s != NATS_OK)
        return js_fail(err, errlen, "OUTBOX_NATS_URL", s);
    s = js_set_servers(o, cfg->nats_url);
    if (s != NATS_OK)
        return js_fail(err, errlen, "OUTBOX_NATS_URL", s);
    natsOptions_SetName(o, "outbox-relay");
    natsOptions_SetTimeout(o, cfg->pg_timeout_ms < 5000 ? cfg->pg_timeout_ms : 5000);
    natsOptions_SetMaxReconnect(o, keep_trying ? -1 : 0);
    natsOptions_SetReconnectWait(o, 250);
    natsOptions_SetReconnectJitter(o, 100, 1000);
    natsOptions_SetPingInterval(o, 5000);
    natsOptions_SetMaxPingsOut(o, 3);
    /* Publishes made while reconnecting are buffered by nats.c and sent on
     * reconnect; the relay stops claiming while disconnected, so this only
     * holds what was already in flight. */
    natsOptions_SetReconnectBufSize(o, 32 * 1024 * 1024);
    if (keep_trying) {
        natsOptions_SetRetryOnFailedConnect(o, true, js_on_connected, sink);
        natsOptions_SetDisconnectedCB(o, js_on_disconnected, sink);
        natsOptions_SetReconnectedCB(o, js_on_connected, sink);
        natsOptions_SetClosedCB(o, js_on_closed, sink);
        natsOptions_SetErrorHandler(o, js_on_error, sink);
    }

    char why[256];
    if (cfg->nats_creds[0] != '\0') {
        s = natsOptions_SetUserCredentialsFromFiles(o, cfg->nats_creds, NULL);
        if (s != NATS_OK)
            return js_fail(err, errlen, "OUTBOX_NATS_CREDS", s);
    } else if (cfg->nats_nkey_seed[0] != '\0') {
        s = natsOptions_SetNKeyFromSeed(o, NULL, cfg->nats_nkey_seed);
        if (s != NATS_OK)
            return js_fail(err, errlen, "OUTBOX_NATS_NKEY_SEED", s);
    } else if (cfg->nats_user[0] != '\0') {
        sink->secret = config_read_secret(cfg->nats_password_file, why, sizeof(why));
        if (sink->secret == NULL) {
            snprintf(err, errlen, "OUTBOX_NATS_PASSWORD_FILE: %s", why);
            return -1;
        }
        natsOptions_SetUserInfo(o, cfg->nats_user, sink->secret);
    } else if (cfg->nats_token_file[0] != '\0') {
        sink->secret = config_read_secret(cfg->nats_token_file, why, sizeof(why));
        if (sink->secret == NULL) {
            snprintf(err, errlen, "OUTBOX_NATS_TOKEN_FILE: %s", why);
            return -1;
        }
        natsOptions_SetToken(o, sink->secret);
    }
    bool tls = cfg->nats_tls_ca[0] || cfg->nats_tls_cert[0] || cfg->nats_tls_server_name[0] ||
               strstr(cfg->nats_url, "tls://") != NULL;
    if (tls) {
        s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && cfg->nats_tls_ca[0])
            s = natsOptions_LoadCATrustedCertificates(o, cfg->nats_tls_ca);
        if (s != NATS_OK)
            return js_fail(err, errlen, "OUTBOX_NATS_TLS_CA", s);
        if (cfg->nats_tls_cert[0]) {
            s = natsOptions_LoadCertificatesChain(o, cfg->nats_tls_cert, cfg->nats_tls_key);
            if (s != NATS_OK)
                return js_fail(err, errlen, "OUTBOX_NATS_TLS_CERT", s);
        }
        if (cfg->nats_tls_server_name[0]) {
            s = natsOptions_SetExpectedHostname(o, cfg->nats_tls_server_name);
            if (s != NATS_OK)
                return js_fail(err, errlen, "OUTBOX_NATS_TLS_SERVER_NAME", s);
        }
    }
    return 0;
}

int js_sink_create(struct js_sink **out, const struct relay_config *cfg, struct ack_queue *queue,
                   bool keep_trying, char *err, size_t errlen)
{
    struct js_sink *sink = calloc(1, sizeof(*sink));
    *out = NULL;
    if (sink == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sink->cfg = cfg;
    sink->queue = queue;
    if (js_build_options(sink, keep_trying, err, errlen) < 0) {
        js_sink_destroy(sink);
        return -1;
    }
    natsStatus s = natsConnection_Connect(&sink->nc, sink->opts);
    if (s != NATS_OK && !(keep_trying && s == NATS_NOT_YET_CONNECTED)) {
        js_fail(err, errlen, "cannot connect to NATS (OUTBOX_NATS_URL)", s);
        js_sink_destroy(sink);
        return -1;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = cfg->publish_timeout_ms;
    if (queue != NULL) {
        jo.PublishAsync.AckHandler = js_on_ack;
        jo.PublishAsync.AckHandlerClosure = sink;
        /* The relay bounds its own in-flight count well below this, so a
         * publish never stalls the loop waiting for room. */
        jo.PublishAsync.MaxPending = (int64_t)cfg->max_inflight * 2 + 1024;
        jo.PublishAsync.StallWait = 1;
    }
    s = natsConnection_JetStream(&sink->js, sink->nc, &jo);
    if (s != NATS_OK) {
        js_fail(err, errlen, "JetStream context", s);
        js_sink_destroy(sink);
        return -1;
    }
    jsPubOptions_Init(&sink->pub);
    sink->pub.MaxWait = cfg->publish_timeout_ms;
    *out = sink;
    return 0;
}

void js_sink_destroy(struct js_sink *sink)
{
    if (sink == NULL)
        return;
    jsCtx_Destroy(sink->js);
    if (sink->nc != NULL) {
        natsConnection_Close(sink->nc);
        natsConnection_Destroy(sink->nc);
    }
    natsOptions_Destroy(sink->opts);
    /* nats.c runs connection callbacks on a shared thread that can still
     * fire after the close; wait for it before the closure goes away. */
    if (sink->queue != NULL)
        nats_CloseAndWait(2000);
    if (sink->secret != NULL) {
        memset(sink->secret, 0, strlen(sink->secret));
        free(sink->secret);
    }
    free(sink);
}

bool js_sink_connected(const struct js_sink *sink)
{
    return sink->nc != NULL && natsConnection_Status(sink->nc) == NATS_CONN_STATUS_CONNECTED;
}

int64_t js_sink_max_payload(const struct js_sink *sink)
{
    return sink->nc ? natsConnection_GetMaxPayload(sink->nc) : 0;
}

int js_sink_stream_exists(struct js_sink *sink, const char *stream, char *err, size_t errlen)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = sink->cfg->publish_timeout_ms;
    natsStatus s = js_GetStreamInfo(&si, sink->js, stream, &jo, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return 1;
    }
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
        return 0;
    return js_fail(err, errlen, "JetStream stream lookup", s);
}

int js_sink_ensure_stream(struct js_sink *sink, char *err, size_t errlen)
{
    const struct relay_config *cfg = sink->cfg;
    if (cfg->stream[0] == '\0')
        return 0;
    int exists = js_sink_stream_exists(sink, cfg->stream, err, errlen);
    if (exists != 0)
        return exists > 0 ? 0 : -1;

    char *copy = strdup(cfg->stream_subjects);
    const char *subjects[64];
    int n = 0;
    char *save = NULL;
    if (copy == NULL)
        return js_fail(err, errlen, "OUTBOX_STREAM", NATS_NO_MEMORY);
    for (char *t = strtok_r(copy, ",", &save); t != NULL && n < 64;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        subjects[n++] = t;
    }
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = cfg->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = n;
    sc.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = cfg->publish_timeout_ms;
    natsStatus s = js_AddStream(&si, sink->js, &sc, &jo, &jerr);
    free(copy);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK && jerr != JSStreamNameExistErr) {
        char what[200];
        snprintf(what, sizeof(what),
                 "OUTBOX_STREAM: cannot create stream \"%s\" (JetStream error %d)", cfg->stream,
                 (int)jerr);
        return js_fail(err, errlen, what, s);
    }
    if (s == NATS_OK)
        log_info("created stream", "{s:s, s:s}", "stream", cfg->stream, "subjects",
                 cfg->stream_subjects);
    return 0;
}

natsStatus js_sink_publish(struct js_sink *sink, natsMsg **msg)
{
    return js_PublishMsgAsync(sink->js, msg, &sink->pub);
}

int js_sink_pending(struct js_sink *sink)
{
    natsMsgList list = {0};
    if (js_PublishAsyncGetPendingList(&list, sink->js) != NATS_OK)
        return 0;
    int n = list.Count;
    natsMsgList_Destroy(&list);
    return n;
}
