/* NATS connection, JetStream stream management and asynchronous publishing. */
#include "outbox_relay/js_sink.h"

#include <pthread.h>
#include <stdint.h>
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
    jsOptions jo; /* kept for js_sink_reopen() */
    jsPubOptions pub;
    bool published; /* js has had a publish: nats.c's pending list exists (it crashes on none) */
    char *secret;   /* password or token, kept for reconnects; never logged */
    /* Reconnect thread only: when the current outage began, when it was last logged. */
    int64_t outage_since_ms, outage_logged_ms;
    /* The last specific reason a connect failed, described; nats.c's own last
     * error turns into "No server available" once it gives up. Any thread. */
    pthread_mutex_t failure_mu;
    char failure[640];
};

#define JS_OUTAGE_FIRST_LOG_MS 5000  /* a quick restart of the server is not worth a line */
#define JS_OUTAGE_LOG_EVERY_MS 30000 /* then a reminder, not a flood */

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

static void js_describe(const struct js_sink *sink, natsStatus s, const char *detail, char *buf,
                        size_t len);

static void js_note_failure(struct js_sink *sink, const char *why)
{
    pthread_mutex_lock(&sink->failure_mu);
    snprintf(sink->failure, sizeof(sink->failure), "%s", why);
    pthread_mutex_unlock(&sink->failure_mu);
}

static void js_on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    struct js_sink *sink = closure;
    char why[640];
    js_describe(sink, err, NULL, why, sizeof(why));
    if (err == NATS_CONNECTION_AUTH_FAILED)
        js_note_failure(sink, why);
    log_warn("nats asynchronous error", "{s:s}", "error", why);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The auth setting in use, for a hint when the server refuses us. */
static const char *js_auth_setting(const struct relay_config *cfg)
{
    if (cfg->nats_creds[0] != '\0')
        return "OUTBOX_NATS_CREDS";
    if (cfg->nats_nkey_seed[0] != '\0')
        return "OUTBOX_NATS_NKEY_SEED";
    if (cfg->nats_user[0] != '\0')
        return "OUTBOX_NATS_USER / OUTBOX_NATS_PASSWORD_FILE";
    if (cfg->nats_token_file[0] != '\0')
        return "OUTBOX_NATS_TOKEN_FILE";
    return "no NATS credentials are configured";
}

/*
 * A readable reason for a failed connect: nats.c's text, with a hint when
 * the server refused the credentials, and any URL password masked (nats.c
 * may quote a server URL).
 */
static void js_describe(const struct js_sink *sink, natsStatus s, const char *detail, char *buf,
                        size_t len)
{
    char shown[512];
    config_redact(detail && *detail ? detail : natsStatus_GetText(s), shown, sizeof(shown));
    /* nats.c prefixes its source location, "(conn.c:1905): ": noise to an operator. */
    for (size_t i = 0; shown[i] != '\0';) {
        char *p = shown + i, *end = p[0] == '(' ? strstr(p, "): ") : NULL;
        if (end != NULL && end - p < 24 && memchr(p, '.', (size_t)(end - p)) != NULL &&
            memchr(p, ':', (size_t)(end - p)) != NULL)
            memmove(p, end + 3, strlen(end + 3) + 1);
        else
            i++;
    }
    if (s == NATS_CONNECTION_AUTH_FAILED || strstr(shown, "Authorization Violation") != NULL ||
        strstr(shown, "Authentication") != NULL)
        snprintf(buf, len, "authorization failed (%s): %s", js_auth_setting(sink->cfg), shown);
    else if (s == NATS_SSL_ERROR || strstr(shown, "SSL") != NULL)
        snprintf(buf, len, "TLS failed (OUTBOX_NATS_TLS_*): %s", shown);
    else if (strstr(shown, "Expected 'PONG', got ''") != NULL)
        /* With TLS 1.3 a server that wants a client certificate hangs up only now. */
        snprintf(buf, len,
                 "the server closed the connection at CONNECT (TLS client certificate missing or "
                 "refused? OUTBOX_NATS_TLS_CERT, OUTBOX_NATS_TLS_KEY): %s",
                 shown);
    else
        snprintf(buf, len, "%s", shown);
}

/*
 * nats.c reconnect thread, after each pass over the server list failed. It
 * retries silently on its own, so this is where an outage (or a server that
 * refuses our TLS) becomes visible in the log. Returns the pause before the
 * next pass: the 250 ms + jitter the relay always used.
 */
static int64_t js_on_reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    struct js_sink *sink = closure;
    int64_t now = mono_ms();
    if (attempts <= 1) {
        sink->outage_since_ms = now;
        sink->outage_logged_ms = 0;
    } else if (now - sink->outage_since_ms >= JS_OUTAGE_FIRST_LOG_MS &&
               (sink->outage_logged_ms == 0 ||
                now - sink->outage_logged_ms >= JS_OUTAGE_LOG_EVERY_MS)) {
        /* This thread made the failed attempts: its last error says why. */
        natsStatus st = NATS_OK;
        const char *detail = nats_GetLastError(&st);
        char why[640];
        js_describe(sink, st, detail, why, sizeof(why));
        if (st != NATS_OK)
            js_note_failure(sink, why);
        log_warn("nats not connected; retrying", "{s:s, s:i, s:I}", "error", why, "attempts",
                 attempts, "for_s", (json_int_t)((now - sink->outage_since_ms) / 1000));
        sink->outage_logged_ms = now;
    }
    bool tls = sink->cfg->nats_tls_ca[0] || sink->cfg->nats_tls_cert[0] ||
               strstr(sink->cfg->nats_url, "tls://") != NULL;
    return 250 + rand() % (tls ? 1000 : 100);
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

/*
 * The user's public key, which nats.c needs next to the seed (the server
 * matches it; without it CONNECT carries an empty nkey) but cannot derive
 * from it: it is the line "U..." that `nk -gen user -pubout` writes after the
 * seed. Only the public key is copied; the seed stays in the file.
 */
static int js_nkey_public(const char *path, char *pub, size_t publen, char *why, size_t whylen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, whylen, "cannot read \"%s\"", path);
        return -1;
    }
    char line[256];
    int found = -1;
    while (found < 0 && fgets(line, sizeof(line), f) != NULL) {
        char *t = line + strspn(line, " \t");
        size_t n = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        if (t[0] == 'U' && n == 56 && strchr(" \t\r\n", t[n]) != NULL && n < publen) {
            memcpy(pub, t, n);
            pub[n] = '\0';
            found = 0;
        }
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    if (found < 0)
        snprintf(why, whylen,
                 "\"%s\" holds no user public key: put it (the \"U...\" line that "
                 "`nk -gen user -pubout` prints) on the line after the seed",
                 path);
    return found;
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
    if (keep_trying)
        natsOptions_SetCustomReconnectDelay(o, js_on_reconnect_delay, sink);
    natsOptions_SetPingInterval(o, 5000);
    natsOptions_SetMaxPingsOut(o, 3);
    /* Publishes made while reconnecting are buffered by nats.c and sent on
     * reconnect; the relay stops claiming while disconnected, so this only
     * holds what was already in flight. */
    natsOptions_SetReconnectBufSize(o, 32 * 1024 * 1024);
    if (keep_trying) {
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
        char pub[64];
        if (js_nkey_public(cfg->nats_nkey_seed, pub, sizeof(pub), why, sizeof(why)) < 0) {
            snprintf(err, errlen, "OUTBOX_NATS_NKEY_SEED: %s", why);
            return -1;
        }
        s = natsOptions_SetNKeyFromSeed(o, pub, cfg->nats_nkey_seed);
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

/*
 * Connects (or, keep_trying, goes on retrying in the background) and makes
 * the JetStream context. The first attempt is made without nats.c's retry:
 * only then does nats.c say why it failed (with retry it answers "not yet
 * connected", and for refused credentials or a failed TLS handshake it
 * closes the connection at once, reason lost). Like any first attempt it
 * blocks for up to the connect timeout.
 */
static int js_connect(struct js_sink *sink, bool keep_trying, char *err, size_t errlen)
{
    natsOptions_SetRetryOnFailedConnect(sink->opts, false, NULL, NULL);
    natsStatus s = natsConnection_Connect(&sink->nc, sink->opts);
    if (s != NATS_OK) {
        natsStatus st = s;
        const char *detail = nats_GetLastError(&st);
        char why[640];
        js_describe(sink, st != NATS_OK ? st : s, detail, why, sizeof(why));
        if (!keep_trying) {
            snprintf(err, errlen, "cannot connect to NATS (OUTBOX_NATS_URL): %s", why);
            return -1;
        }
        js_note_failure(sink, why);
        log_warn("nats not connected; retrying in the background", "{s:s}", "error", why);
        natsOptions_SetRetryOnFailedConnect(sink->opts, true, js_on_connected, sink);
        s = natsConnection_Connect(&sink->nc, sink->opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
            return js_fail(err, errlen, "cannot connect to NATS (OUTBOX_NATS_URL)", s);
    }
    s = natsConnection_JetStream(&sink->js, sink->nc, &sink->jo);
    if (s != NATS_OK)
        return js_fail(err, errlen, "JetStream context", s);
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
    pthread_mutex_init(&sink->failure_mu, NULL);
    if (js_build_options(sink, keep_trying, err, errlen) < 0) {
        js_sink_destroy(sink);
        return -1;
    }
    jsOptions *jo = &sink->jo;
    jsOptions_Init(jo);
    jo->Wait = cfg->publish_timeout_ms;
    if (queue != NULL) {
        jo->PublishAsync.AckHandler = js_on_ack;
        jo->PublishAsync.AckHandlerClosure = sink;
        /* The relay bounds its own in-flight count well below this, so a
         * publish never stalls the loop waiting for room. */
        jo->PublishAsync.MaxPending = (int64_t)cfg->max_inflight * 2 + 1024;
        jo->PublishAsync.StallWait = 1;
    }
    if (js_connect(sink, keep_trying, err, errlen) < 0) {
        js_sink_destroy(sink);
        return -1;
    }
    jsPubOptions_Init(&sink->pub);
    /* No MaxWait: the relay keeps the PubAck deadline itself (see relay.c). */
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
    pthread_mutex_destroy(&sink->failure_mu);
    free(sink);
}

void js_sink_last_error(struct js_sink *sink, char *buf, size_t len)
{
    const char *detail = NULL;
    natsStatus s = sink->nc ? natsConnection_GetLastError(sink->nc, &detail) : NATS_OK;
    if (s != NATS_OK && s != NATS_NO_SERVER && s != NATS_NOT_YET_CONNECTED &&
        s != NATS_CONNECTION_CLOSED) {
        js_describe(sink, s, detail, buf, len);
        return;
    }
    pthread_mutex_lock(&sink->failure_mu);
    snprintf(buf, len, "%s", sink->failure[0] ? sink->failure : natsStatus_GetText(s));
    pthread_mutex_unlock(&sink->failure_mu);
}

int js_sink_reclaim_pending(struct js_sink *sink, const char *why)
{
    /* nats.c will never acknowledge these: report each as a failed publish,
     * so its row is retried. The messages are ours now and stay valid until
     * the loop has matched them. */
    natsMsgList pending = {0};
    int n = 0;
    if (sink->js == NULL || !sink->published ||
        js_PublishAsyncGetPendingList(&pending, sink->js) != NATS_OK)
        return 0;
    for (int i = 0; i < pending.Count; i++) {
        struct ack_entry e = {.kind = ACK_PUBACK,
                              .msg = pending.Msgs[i],
                              .at = wall_now(),
                              .status = NATS_CONNECTION_CLOSED};
        snprintf(e.error, sizeof(e.error), "%s", why);
        if (sink->queue == NULL || !ack_queue_push(sink->queue, &e))
            natsMsg_Destroy(pending.Msgs[i]);
        pending.Msgs[i] = NULL;
        n++;
    }
    natsMsgList_Destroy(&pending);
    return n;
}

int js_sink_reopen(struct js_sink *sink, char *err, size_t errlen)
{
    js_sink_reclaim_pending(sink, "nats connection closed before the PubAck");
    jsCtx_Destroy(sink->js);
    sink->js = NULL;
    sink->published = false;
    natsConnection_Destroy(sink->nc);
    sink->nc = NULL;
    if (js_connect(sink, true, err, errlen) < 0)
        return -1;
    return js_sink_connected(sink) ? 1 : 0;
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
    sink->published = true;
    return js_PublishMsgAsync(sink->js, msg, &sink->pub);
}
