/* NATS connection, JetStream stream management and asynchronous publishing. */
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
#include "outbox_relay/nats/nats_creds.h"
#include "outbox_relay/nats/nats_options.h"
#include "outbox_relay/lib/stream_spec.h"

/* Jobs for the connect worker, as bits: asking twice before it runs is asking once. */
enum js_work {
    JS_WORK_REOPEN = 1 << 0, /* a new connection in place of one nats.c closed */
    JS_WORK_ENSURE = 1 << 1, /* check the stream, create it when missing */
    JS_WORK_FLUSH = 1 << 2,  /* write what nats.c buffered now (js_sink_flush) */
};

#define JS_ENSURE_MIN_GAP_MS                                                                       \
    1000 /* stream checks asked for by failing publishes: once a second                            \
          */

struct js_sink {
    const struct relay_config *cfg;
    struct stream_spec spec; /* the stream to create, from the settings */
    natsOptions *opts;
    jsOptions jo; /* kept for reopening */
    jsPubOptions pub;

    /*
     * The connection. Replaced only by the worker (reopen), which holds
     * conn_mu just to swap the pointers; the loop holds it while it uses
     * them (publish, reclaim, status). Never held across a connect.
     */
    pthread_mutex_t conn_mu;
    natsConnection *nc;
    jsCtx *js;
    bool published; /* js has had a publish: nats.c's pending list exists (it crashes on none) */
    bool unflushed; /* loop only: published since the last js_sink_flush */

    /* Where nats.c's callbacks and the worker report; NULL once closing. */
    pthread_mutex_t bridge_mu;
    struct nats_bridge *bridge;

    /* The connect worker (only with a bridge) and its mailbox. */
    pthread_t worker;
    bool worker_running;
    pthread_mutex_t work_mu;
    pthread_cond_t work_cv; /* CLOCK_MONOTONIC */
    unsigned work;          /* enum js_work bits */
    bool stopping;
    int64_t last_ensure_ms; /* worker only */

    _Atomic int stream_state; /* enum js_stream_state */
    pthread_mutex_t stream_mu;
    char stream_error[512];

    /* Reconnect thread only: when the current outage began, when it was last logged. */
    int64_t outage_since_ms, outage_logged_ms;
    /* The last specific reason a connect failed, described; nats.c's own last
     * error turns into "No server available" once it gives up. Any thread. */
    pthread_mutex_t failure_mu;
    char failure[640];
};

/*
 * The wait for a stream API answer (lookup, create): at least this, however
 * short OUTBOX_PUBLISH_TIMEOUT_MS. Creating a replicated stream waits for an
 * election; a short wait times out on a 3-node cluster although the server
 * goes on to create the stream, and rows would be published into no stream
 * meanwhile.
 */
#define JS_STREAM_API_MIN_WAIT_MS 5000

static int64_t js_stream_api_wait_ms(const struct relay_config *cfg)
{
    return cfg->publish_timeout_ms > JS_STREAM_API_MIN_WAIT_MS ? cfg->publish_timeout_ms
                                                               : JS_STREAM_API_MIN_WAIT_MS;
}

#define JS_OUTAGE_FIRST_LOG_MS 5000  /* a quick restart of the server is not worth a line */
#define JS_OUTAGE_LOG_EVERY_MS 30000 /* then a reminder, not a flood */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Any thread: hands an event to the loop, unless the sink is closing (then a message is freed). */
static void js_report(struct js_sink *sink, const struct nats_event *e)
{
    pthread_mutex_lock(&sink->bridge_mu);
    if (sink->bridge != NULL)
        nats_bridge_push(sink->bridge, e);
    else
        natsMsg_Destroy(e->msg); /* teardown: no row waits for it any more */
    pthread_mutex_unlock(&sink->bridge_mu);
}

/* nats.c thread: the outcome of one publish. */
static void js_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct js_sink *sink = closure;
    struct nats_event e = {.kind = NATS_EVENT_PUBACK, .msg = msg, .at = wall_now()};
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
    js_report(sink, &e); /* its slot was reserved at publish: cannot fail */
}

static void js_push_event(struct js_sink *sink, enum nats_event_kind kind)
{
    struct nats_event e = {.kind = kind, .at = wall_now()};
    js_report(sink, &e);
}

static void js_on_disconnected(natsConnection *nc, void *closure)
{
    js_push_event(closure, NATS_EVENT_DISCONNECTED);
}

static void js_on_connected(natsConnection *nc, void *closure)
{
    js_push_event(closure, NATS_EVENT_CONNECTED);
}

static void js_on_closed(natsConnection *nc, void *closure)
{
    js_push_event(closure, NATS_EVENT_CLOSED);
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
        strstr(shown, "Authentication") != NULL) {
        /* The server says the same for every refused JWT; the JWT itself tells more. */
        char why[320] = "";
        if (sink->cfg->nats_creds[0] != '\0')
            nats_creds_explain_refusal(sink->cfg->nats_creds, time(NULL), why, sizeof(why));
        snprintf(buf, len, "authorization failed (%s): %s%s%s", js_auth_setting(sink->cfg), shown,
                 why[0] ? ": " : "", why);
    } else if (s == NATS_SSL_ERROR || strstr(shown, "SSL") != NULL)
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
 * next pass: the same 250 ms + jitter as natsOptions_SetReconnectWait.
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
    if (nats_options_apply(o, cfg, err, errlen) < 0)
        return -1;
    natsOptions_SetName(o, "outbox-relay");
    natsOptions_SetMaxReconnect(o, keep_trying ? -1 : 0);
    natsOptions_SetReconnectWait(o, 250);
    natsOptions_SetReconnectJitter(o, 100, 1000);
    if (keep_trying)
        natsOptions_SetCustomReconnectDelay(o, js_on_reconnect_delay, sink);
    /* Not natsOptions_SetSendAsap: it speeds up a lone publish but slows bulk
     * asynchronous publishing. The relay flushes itself when it keeps up with its
     * producers, and gets both (docs/performance.md). */
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
static int js_connect(struct js_sink *sink, bool keep_trying, natsConnection **nc, jsCtx **js,
                      char *err, size_t errlen)
{
    *nc = NULL;
    *js = NULL;
    natsOptions_SetRetryOnFailedConnect(sink->opts, false, NULL, NULL);
    natsStatus s = natsConnection_Connect(nc, sink->opts);
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
        s = natsConnection_Connect(nc, sink->opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
            return js_fail(err, errlen, "cannot connect to NATS (OUTBOX_NATS_URL)", s);
    }
    s = natsConnection_JetStream(js, *nc, &sink->jo);
    if (s != NATS_OK)
        return js_fail(err, errlen, "JetStream context", s);
    return 0;
}

static void js_set_stream_state(struct js_sink *sink, enum js_stream_state st, const char *why)
{
    pthread_mutex_lock(&sink->stream_mu);
    snprintf(sink->stream_error, sizeof(sink->stream_error), "%s", why ? why : "");
    atomic_store(&sink->stream_state, (int)st);
    pthread_mutex_unlock(&sink->stream_mu);
}

static int js_ensure_on(struct js_sink *sink, jsCtx *js, char *err, size_t errlen);
static int js_reclaim_from(struct js_sink *sink, jsCtx *js, const char *why);

/* Worker: a new connection in place of the one nats.c closed. */
static void js_worker_reopen(struct js_sink *sink)
{
    pthread_mutex_lock(&sink->conn_mu);
    natsConnection *old_nc = sink->nc;
    jsCtx *old_js = sink->js;
    bool published = sink->published;
    sink->nc = NULL;
    sink->js = NULL;
    sink->published = false;
    pthread_mutex_unlock(&sink->conn_mu);

    if (published)
        js_reclaim_from(sink, old_js, "nats connection closed before the PubAck");
    jsCtx_Destroy(old_js);
    natsConnection_Destroy(old_nc);

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char err[512];
    int rc = js_connect(sink, true, &nc, &js, err, sizeof(err));
    pthread_mutex_lock(&sink->conn_mu);
    sink->nc = nc;
    sink->js = js;
    pthread_mutex_unlock(&sink->conn_mu);
    if (rc < 0) {
        js_note_failure(sink, err);
        log_error("nats connection not reopened", "{s:s}", "error", err);
        js_push_event(sink, NATS_EVENT_CLOSED); /* the loop schedules the next attempt */
    } else if (natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED) {
        js_push_event(sink, NATS_EVENT_CONNECTED);
    } /* else nats.c goes on in the background and calls js_on_connected */
}

/* Worker: the stream check, no more often than once a second. */
static void js_worker_ensure(struct js_sink *sink)
{
    char err[512];
    int64_t now = mono_ms();
    if (sink->last_ensure_ms != 0 && now - sink->last_ensure_ms < JS_ENSURE_MIN_GAP_MS) {
        /* Wait out the gap, unless asked to stop. */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        int64_t wait_ms = JS_ENSURE_MIN_GAP_MS - (now - sink->last_ensure_ms);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (wait_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&sink->work_mu);
        while (!sink->stopping &&
               pthread_cond_timedwait(&sink->work_cv, &sink->work_mu, &until) == 0)
            ;
        bool stop = sink->stopping;
        pthread_mutex_unlock(&sink->work_mu);
        if (stop)
            return;
    }
    sink->last_ensure_ms = mono_ms();
    /* Only this thread replaces js: no lock needed to use it here. */
    if (sink->js == NULL || natsConnection_Status(sink->nc) != NATS_CONN_STATUS_CONNECTED) {
        js_set_stream_state(sink, JS_STREAM_CHECKING, NULL); /* checked again at connect */
        return;
    }
    js_set_stream_state(sink, JS_STREAM_CHECKING, NULL);
    if (js_ensure_on(sink, sink->js, err, sizeof(err)) < 0) {
        js_set_stream_state(sink, JS_STREAM_ERROR, err);
        log_error("stream not ready", "{s:s}", "error", err);
    } else {
        js_set_stream_state(sink, JS_STREAM_READY, NULL);
    }
}

/*
 * Worker: writes the connection's buffer now. nats.c's flusher thread,
 * woken by the first publish, waits 1 ms for more before it writes: right
 * for a burst, but it is most of the delivery latency of a relay that keeps
 * up with its producers. A flush writes the buffer at once, then a PING; its
 * PONG is not needed (the wait is the shortest nats.c allows, and a missed
 * PONG costs nothing: each is matched to its own PING).
 */
static void js_worker_flush(struct js_sink *sink)
{
    /* Only this thread replaces nc: no lock needed to use it here. */
    if (sink->nc != NULL && natsConnection_Status(sink->nc) == NATS_CONN_STATUS_CONNECTED)
        (void)natsConnection_FlushTimeout(sink->nc, 1);
}

static void *js_worker_main(void *arg)
{
    struct js_sink *sink = arg;
    pthread_mutex_lock(&sink->work_mu);
    while (!sink->stopping) {
        if (sink->work == 0) {
            pthread_cond_wait(&sink->work_cv, &sink->work_mu);
            continue;
        }
        unsigned work = sink->work;
        sink->work = 0;
        pthread_mutex_unlock(&sink->work_mu);
        if (work & JS_WORK_FLUSH)
            js_worker_flush(sink);
        if (work & JS_WORK_REOPEN)
            js_worker_reopen(sink);
        if (work & JS_WORK_ENSURE)
            js_worker_ensure(sink);
        pthread_mutex_lock(&sink->work_mu);
    }
    pthread_mutex_unlock(&sink->work_mu);
    return NULL;
}

static void js_ask_worker(struct js_sink *sink, unsigned work)
{
    pthread_mutex_lock(&sink->work_mu);
    sink->work |= work;
    pthread_cond_signal(&sink->work_cv);
    pthread_mutex_unlock(&sink->work_mu);
}

static int js_start_worker(struct js_sink *sink, char *err, size_t errlen)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sink->work_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&sink->worker, NULL, js_worker_main, sink) != 0) {
        snprintf(err, errlen, "cannot start the NATS connect thread");
        return -1;
    }
    sink->worker_running = true;
    return 0;
}

int js_sink_create(struct js_sink **out, const struct relay_config *cfg, struct nats_bridge *bridge,
                   bool keep_trying, char *err, size_t errlen)
{
    struct js_sink *sink = calloc(1, sizeof(*sink));
    *out = NULL;
    if (sink == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sink->cfg = cfg;
    sink->bridge = bridge;
    pthread_mutex_init(&sink->failure_mu, NULL);
    pthread_mutex_init(&sink->conn_mu, NULL);
    pthread_mutex_init(&sink->bridge_mu, NULL);
    pthread_mutex_init(&sink->work_mu, NULL);
    pthread_mutex_init(&sink->stream_mu, NULL);
    atomic_init(&sink->stream_state,
                cfg->stream[0] ? (int)JS_STREAM_CHECKING : (int)JS_STREAM_UNMANAGED);
    if (stream_spec_from_config(cfg, &sink->spec, err, errlen) < 0 ||
        js_build_options(sink, keep_trying, err, errlen) < 0) {
        js_sink_destroy(sink);
        return -1;
    }
    jsOptions *jo = &sink->jo;
    jsOptions_Init(jo);
    jo->Wait = cfg->publish_timeout_ms;
    if (bridge != NULL) {
        jo->PublishAsync.AckHandler = js_on_ack;
        jo->PublishAsync.AckHandlerClosure = sink;
        /* The relay bounds its own in-flight count well below this, so a
         * publish never stalls the loop waiting for room. */
        jo->PublishAsync.MaxPending = (int64_t)cfg->max_inflight * 2 + 1024;
        jo->PublishAsync.StallWait = 1;
    }
    if (js_connect(sink, keep_trying, &sink->nc, &sink->js, err, errlen) < 0 ||
        (bridge != NULL && js_start_worker(sink, err, errlen) < 0)) {
        js_sink_destroy(sink);
        return -1;
    }
    jsPubOptions_Init(&sink->pub);
    /* No MaxWait: the publisher keeps the PubAck deadline itself (publisher.c). */
    *out = sink;
    return 0;
}

void js_sink_destroy(struct js_sink *sink)
{
    if (sink == NULL)
        return;
    if (sink->worker_running) {
        /* It may be inside a connect: that ends within the connect timeout. */
        pthread_mutex_lock(&sink->work_mu);
        sink->stopping = true;
        pthread_cond_signal(&sink->work_cv);
        pthread_mutex_unlock(&sink->work_mu);
        pthread_join(sink->worker, NULL);
        pthread_cond_destroy(&sink->work_cv);
    }
    bool had_bridge = sink->bridge != NULL;
    jsCtx_Destroy(sink->js);
    if (sink->nc != NULL) {
        natsConnection_Close(sink->nc);
        natsConnection_Destroy(sink->nc);
    }
    natsOptions_Destroy(sink->opts);
    /* nats.c runs callbacks on its own threads, which can still fire after
     * the close; wait for them before the closure goes away. */
    natsStatus closed = had_bridge ? nats_CloseAndWait(2000) : NATS_OK;
    /* Whatever still runs must not reach the bridge, which goes next. */
    pthread_mutex_lock(&sink->bridge_mu);
    sink->bridge = NULL;
    pthread_mutex_unlock(&sink->bridge_mu);
    if (closed != NATS_OK) {
        /* A nats.c thread may still call back into the sink: leave it
         * allocated (the process is ending) rather than free it under them. */
        log_warn("nats.c threads did not stop in time; leaving their state in place", "{s:s}",
                 "error", natsStatus_GetText(closed));
        return;
    }
    pthread_mutex_destroy(&sink->failure_mu);
    pthread_mutex_destroy(&sink->conn_mu);
    pthread_mutex_destroy(&sink->bridge_mu);
    pthread_mutex_destroy(&sink->work_mu);
    pthread_mutex_destroy(&sink->stream_mu);
    free(sink);
}

void js_sink_last_error(struct js_sink *sink, char *buf, size_t len)
{
    const char *detail = NULL;
    pthread_mutex_lock(&sink->conn_mu);
    natsStatus s = sink->nc ? natsConnection_GetLastError(sink->nc, &detail) : NATS_OK;
    if (s != NATS_OK && s != NATS_NO_SERVER && s != NATS_NOT_YET_CONNECTED &&
        s != NATS_CONNECTION_CLOSED) {
        js_describe(sink, s, detail, buf, len);
        pthread_mutex_unlock(&sink->conn_mu);
        return;
    }
    pthread_mutex_unlock(&sink->conn_mu);
    pthread_mutex_lock(&sink->failure_mu);
    snprintf(buf, len, "%s", sink->failure[0] ? sink->failure : natsStatus_GetText(s));
    pthread_mutex_unlock(&sink->failure_mu);
}

/* Reports each message js still waits an ack for as failed (ours now, valid until matched). */
static int js_reclaim_from(struct js_sink *sink, jsCtx *js, const char *why)
{
    natsMsgList pending = {0};
    int n = 0;
    if (js == NULL || js_PublishAsyncGetPendingList(&pending, js) != NATS_OK)
        return 0;
    for (int i = 0; i < pending.Count; i++) {
        struct nats_event e = {.kind = NATS_EVENT_PUBACK,
                               .msg = pending.Msgs[i],
                               .at = wall_now(),
                               .status = NATS_CONNECTION_CLOSED};
        snprintf(e.error, sizeof(e.error), "%s", why);
        js_report(sink, &e); /* reserved at publish; nats.c will never ack it now */
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
    int n = sink->published ? js_reclaim_from(sink, sink->js, why) : 0;
    pthread_mutex_unlock(&sink->conn_mu);
    return n;
}

int js_sink_reopen(struct js_sink *sink, char *err, size_t errlen)
{
    if (!sink->worker_running) {
        snprintf(err, errlen, "no connect worker (a sink without a bridge cannot reopen)");
        return -1;
    }
    js_ask_worker(sink, JS_WORK_REOPEN);
    return 0;
}

bool js_sink_connected(const struct js_sink *sink)
{
    struct js_sink *s = (struct js_sink *)sink; /* the lock, not the state, changes */
    pthread_mutex_lock(&s->conn_mu);
    bool up = s->nc != NULL && natsConnection_Status(s->nc) == NATS_CONN_STATUS_CONNECTED;
    pthread_mutex_unlock(&s->conn_mu);
    return up;
}

int64_t js_sink_max_payload(const struct js_sink *sink)
{
    struct js_sink *s = (struct js_sink *)sink;
    pthread_mutex_lock(&s->conn_mu);
    int64_t max = s->nc ? natsConnection_GetMaxPayload(s->nc) : 0;
    pthread_mutex_unlock(&s->conn_mu);
    return max;
}

void js_sink_stream_lost(struct js_sink *sink)
{
    if (sink->cfg->stream[0] == '\0' || !sink->worker_running)
        return;
    js_ask_worker(sink, JS_WORK_ENSURE);
}

enum js_stream_state js_sink_stream_state(struct js_sink *sink, char *why, size_t len)
{
    pthread_mutex_lock(&sink->stream_mu);
    enum js_stream_state st = (enum js_stream_state)atomic_load(&sink->stream_state);
    if (why != NULL)
        snprintf(why, len, "%s", st == JS_STREAM_ERROR ? sink->stream_error : "");
    pthread_mutex_unlock(&sink->stream_mu);
    return st;
}

/* Looks the stream up on js: 1 with *si (caller destroys), 0 when missing, -1 with err. */
static int js_stream_info(struct js_sink *sink, jsCtx *js, const char *stream, jsStreamInfo **si,
                          char *err, size_t errlen)
{
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = js_stream_api_wait_ms(sink->cfg);
    *si = NULL;
    if (js == NULL) {
        snprintf(err, errlen, "JetStream stream lookup: not connected");
        return -1;
    }
    natsStatus s = js_GetStreamInfo(si, js, stream, &jo, &jerr);
    if (s == NATS_OK)
        return 1;
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
        return 0;
    return js_fail(err, errlen, "JetStream stream lookup", s);
}

int js_sink_stream_exists(struct js_sink *sink, const char *stream, char *err, size_t errlen)
{
    jsStreamInfo *si = NULL;
    int found = js_stream_info(sink, sink->js, stream, &si, err, errlen);
    jsStreamInfo_Destroy(si);
    return found;
}

/* Checks the stream on js and creates it from the spec when missing. Blocking. */
static int js_ensure_on(struct js_sink *sink, jsCtx *js, char *err, size_t errlen)
{
    const struct relay_config *cfg = sink->cfg;
    const struct stream_spec *spec = &sink->spec;
    jsStreamInfo *found = NULL;
    int exists = js_stream_info(sink, js, cfg->stream, &found, err, errlen);
    jsStreamInfo_Destroy(found);
    if (exists != 0)
        return exists > 0 ? 0 : -1;

    const char *subjects[STREAM_SPEC_MAX_SUBJECTS];
    for (int i = 0; i < spec->nsubjects; i++)
        subjects[i] = spec->subjects[i];
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = cfg->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = spec->nsubjects;
    sc.Storage = spec->memory ? js_MemoryStorage : js_FileStorage;
    sc.Replicas = spec->replicas;
    sc.MaxAge = spec->max_age_ns;
    sc.Duplicates = spec->duplicate_window_ns;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = js_stream_api_wait_ms(cfg);
    natsStatus s = js_AddStream(&si, js, &sc, &jo, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK && jerr != JSStreamNameExistErr) {
        char what[300];
        if (jerr == JSStreamReplicasNotSupportedErr || jerr == JSClusterNoPeersErr ||
            jerr == JSInsufficientResourcesErr)
            snprintf(what, sizeof(what),
                     "OUTBOX_STREAM_REPLICAS=%d: the server cannot place stream \"%s\" "
                     "(JetStream error %d; a single server takes 1 replica, a cluster at most "
                     "its node count)",
                     spec->replicas, cfg->stream, (int)jerr);
        else
            snprintf(what, sizeof(what),
                     "OUTBOX_STREAM: cannot create stream \"%s\" (JetStream error %d)", cfg->stream,
                     (int)jerr);
        return js_fail(err, errlen, what, s);
    }
    if (s == NATS_OK) {
        char age[32], dup[32];
        stream_spec_format_duration(spec->max_age_ns, age, sizeof(age));
        stream_spec_format_duration(spec->duplicate_window_ns, dup, sizeof(dup));
        log_info("created stream", "{s:s, s:s, s:i, s:s, s:s, s:s}", "stream", cfg->stream,
                 "subjects", cfg->stream_subjects, "replicas", spec->replicas, "storage",
                 spec->memory ? "memory" : "file", "max_age", age, "duplicate_window", dup);
    }
    return 0;
}

int js_sink_ensure_stream(struct js_sink *sink, char *err, size_t errlen)
{
    if (sink->cfg->stream[0] == '\0')
        return 0;
    if (sink->worker_running) {
        /* A (re)connect: check now, whatever the last check found. */
        js_set_stream_state(sink, JS_STREAM_CHECKING, NULL);
        js_ask_worker(sink, JS_WORK_ENSURE);
        return 0;
    }
    return js_ensure_on(sink, sink->js, err, errlen);
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
    if (!sink->unflushed || !sink->worker_running)
        return;
    sink->unflushed = false;
    js_ask_worker(sink, JS_WORK_FLUSH);
}
