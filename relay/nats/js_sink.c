/* The sink's NATS connection: options, connect, nats.c's connection callbacks, lifecycle. */
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
#include "outbox_relay/nats/nats_options.h"
#include "outbox_relay/lib/stream_spec.h"

#define JS_OUTAGE_FIRST_LOG_MS 5000  /* a quick restart of the server is not worth a line */
#define JS_OUTAGE_LOG_EVERY_MS 30000 /* then a reminder, not a flood */
/* The longest a write to the server may wait for room in the socket (the loop's longest stall). */
#define JS_WRITE_DEADLINE_MS 500

double js_sink_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Any thread: hands an event to the loop, unless the sink is closing (then a message is freed). */
void js_sink_report(struct js_sink *sink, const struct nats_event *e)
{
    pthread_mutex_lock(&sink->bridge_mu);
    if (sink->bridge != NULL)
        nats_bridge_push(sink->bridge, e);
    else
        natsMsg_Destroy(e->msg); /* teardown: no row waits for it any more */
    pthread_mutex_unlock(&sink->bridge_mu);
}

void js_sink_push_event(struct js_sink *sink, enum nats_event_kind kind)
{
    struct nats_event e = {.kind = kind, .at = js_sink_wall_now()};
    js_sink_report(sink, &e);
}

static void js_on_disconnected(natsConnection *nc, void *closure)
{
    js_sink_push_event(closure, NATS_EVENT_DISCONNECTED);
}

static void js_on_connected(natsConnection *nc, void *closure)
{
    js_sink_push_event(closure, NATS_EVENT_CONNECTED);
}

static void js_on_closed(natsConnection *nc, void *closure)
{
    js_sink_push_event(closure, NATS_EVENT_CLOSED);
}

void js_sink_note_failure(struct js_sink *sink, const char *why)
{
    pthread_mutex_lock(&sink->failure_mu);
    snprintf(sink->failure, sizeof(sink->failure), "%s", why);
    pthread_mutex_unlock(&sink->failure_mu);
}

static void js_on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    struct js_sink *sink = closure;
    char why[640];
    nats_conn_describe(sink->cfg, err, NULL, why, sizeof(why));
    if (err == NATS_CONNECTION_AUTH_FAILED)
        js_sink_note_failure(sink, why);
    log_warn("nats asynchronous error", "{s:s}", "error", why);
}

int64_t js_sink_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    int64_t now = js_sink_mono_ms();
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
        nats_conn_describe(sink->cfg, st, detail, why, sizeof(why));
        if (st != NATS_OK)
            js_sink_note_failure(sink, why);
        log_warn("nats not connected; retrying", "{s:s, s:i, s:I}", "error", why, "attempts",
                 attempts, "for_s", (json_int_t)((now - sink->outage_since_ms) / 1000));
        sink->outage_logged_ms = now;
    }
    bool tls = sink->cfg->nats_tls_ca[0] || sink->cfg->nats_tls_cert[0] ||
               strstr(sink->cfg->nats_url, "tls://") != NULL;
    return 250 + rand() % (tls ? 1000 : 100);
}

static int js_build_options(struct js_sink *sink, char *err, size_t errlen)
{
    const struct relay_config *cfg = sink->cfg;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    sink->opts = o;
    if (s != NATS_OK)
        return nats_conn_fail(err, errlen, "OUTBOX_NATS_URL", s);
    if (nats_options_apply(o, cfg, err, errlen) < 0)
        return -1;
    natsOptions_SetName(o, "outbox-relay");
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 250);
    natsOptions_SetReconnectJitter(o, 100, 1000);
    natsOptions_SetCustomReconnectDelay(o, js_on_reconnect_delay, sink);
    /* Not natsOptions_SetSendAsap: it speeds up a lone publish but slows bulk
     * asynchronous publishing. The relay flushes itself when it keeps up with its
     * producers, and gets both (docs/performance.md). */
    /* Without a write deadline nats.c's socket blocks, and a publish into
     * a server that stopped reading (frozen, partitioned with TCP still up)
     * waits in send() on the loop thread once nats.c's 32 KiB buffer is
     * full: no probe answered, no lease renewed until the pings give up
     * (15 s). With one, the write fails after JS_WRITE_DEADLINE_MS and
     * nats.c closes the socket and reconnects; the rows in flight are
     * failed by the connection, without an attempt (publish_error.c). */
    natsOptions_SetWriteDeadline(o, JS_WRITE_DEADLINE_MS);
    natsOptions_SetPingInterval(o, 5000);
    natsOptions_SetMaxPingsOut(o, 3);
    /* Publishes made while reconnecting are buffered by nats.c and sent on
     * reconnect; the relay stops claiming while disconnected, so this only
     * holds what was already in flight. */
    natsOptions_SetReconnectBufSize(o, 32 * 1024 * 1024);
    natsOptions_SetDisconnectedCB(o, js_on_disconnected, sink);
    natsOptions_SetReconnectedCB(o, js_on_connected, sink);
    natsOptions_SetClosedCB(o, js_on_closed, sink);
    natsOptions_SetErrorHandler(o, js_on_error, sink);

    return 0;
}

/*
 * Connects (or goes on retrying in the background) and makes
 * the JetStream context. The first attempt is made without nats.c's retry:
 * only then does nats.c say why it failed (with retry it answers "not yet
 * connected", and for refused credentials or a failed TLS handshake it
 * closes the connection at once, reason lost). Like any first attempt it
 * blocks for up to the connect timeout.
 */
int js_sink_connect(struct js_sink *sink, natsConnection **nc, jsCtx **js, char *err, size_t errlen)
{
    *nc = NULL;
    *js = NULL;
    natsOptions_SetRetryOnFailedConnect(sink->opts, false, NULL, NULL);
    natsStatus s = natsConnection_Connect(nc, sink->opts);
    if (s != NATS_OK) {
        natsStatus st = s;
        const char *detail = nats_GetLastError(&st);
        char why[640];
        nats_conn_describe(sink->cfg, st != NATS_OK ? st : s, detail, why, sizeof(why));
        js_sink_note_failure(sink, why);
        log_warn("nats not connected; retrying in the background", "{s:s}", "error", why);
        natsOptions_SetRetryOnFailedConnect(sink->opts, true, js_on_connected, sink);
        s = natsConnection_Connect(nc, sink->opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED)
            return nats_conn_fail(err, errlen, "cannot connect to NATS (OUTBOX_NATS_URL)", s);
    }
    s = natsConnection_JetStream(js, *nc, &sink->jo);
    if (s != NATS_OK)
        return nats_conn_fail(err, errlen, "JetStream context", s);
    return 0;
}

struct js_sink *js_sink_create(const struct relay_config *cfg, struct nats_bridge *bridge,
                               char *err, size_t errlen)
{
    struct js_sink *sink = calloc(1, sizeof(*sink));
    if (sink == NULL) {
        snprintf(err, errlen, "NATS sink: out of memory");
        return NULL;
    }
    sink->cfg = cfg;
    sink->bridge = bridge;
    pthread_mutex_init(&sink->failure_mu, NULL);
    pthread_mutex_init(&sink->conn_mu, NULL);
    pthread_mutex_init(&sink->bridge_mu, NULL);
    pthread_mutex_init(&sink->work_mu, NULL);
    pthread_mutex_init(&sink->stream_mu, NULL);
    pthread_mutex_init(&sink->read_mu, NULL);
    atomic_init(&sink->stream_state,
                cfg->stream[0] ? (int)JS_STREAM_CHECKING : (int)JS_STREAM_UNMANAGED);
    if (stream_spec_from_config(cfg, &sink->spec, err, errlen) < 0 ||
        js_build_options(sink, err, errlen) < 0) {
        js_sink_destroy(sink);
        return NULL;
    }
    jsOptions *jo = &sink->jo;
    jsOptions_Init(jo);
    jo->Wait = cfg->publish_timeout_ms;
    jo->PublishAsync.AckHandler = js_sink_on_ack;
    jo->PublishAsync.AckHandlerClosure = sink;
    /* The relay bounds its own in-flight count well below this, so a
     * publish never stalls the loop waiting for room. */
    jo->PublishAsync.MaxPending = (int64_t)cfg->max_inflight * 2 + 1024;
    jo->PublishAsync.StallWait = 1;
    if (js_sink_connect(sink, &sink->nc, &sink->js, err, errlen) < 0 ||
        js_sink_start_worker(sink, err, errlen) < 0) {
        js_sink_destroy(sink);
        return NULL;
    }
    jsPubOptions_Init(&sink->pub);
    /* No MaxWait: the publisher keeps the PubAck deadline itself (publisher.c). */
    return sink;
}

void js_sink_destroy(struct js_sink *sink)
{
    if (sink == NULL)
        return;
    js_sink_stop_worker(sink);
    jsCtx_Destroy(sink->js);
    if (sink->nc != NULL) {
        natsConnection_Close(sink->nc);
        natsConnection_Destroy(sink->nc);
    }
    natsOptions_Destroy(sink->opts);
    /* nats.c runs callbacks on its own threads, which can still fire after
     * the close; wait for them before the closure goes away. */
    natsStatus closed = nats_CloseAndWait(2000);
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
    stream_read_free(&sink->read_answer);
    pthread_mutex_destroy(&sink->read_mu);
    free(sink);
}

void js_sink_last_error(struct js_sink *sink, char *buf, size_t len)
{
    const char *detail = NULL;
    pthread_mutex_lock(&sink->conn_mu);
    natsStatus s = sink->nc ? natsConnection_GetLastError(sink->nc, &detail) : NATS_OK;
    if (s != NATS_OK && s != NATS_NO_SERVER && s != NATS_NOT_YET_CONNECTED &&
        s != NATS_CONNECTION_CLOSED) {
        nats_conn_describe(sink->cfg, s, detail, buf, len);
        pthread_mutex_unlock(&sink->conn_mu);
        return;
    }
    pthread_mutex_unlock(&sink->conn_mu);
    pthread_mutex_lock(&sink->failure_mu);
    snprintf(buf, len, "%s", sink->failure[0] ? sink->failure : natsStatus_GetText(s));
    pthread_mutex_unlock(&sink->failure_mu);
}

int js_sink_reopen(struct js_sink *sink, char *err, size_t errlen)
{
    js_sink_ask_worker(sink, JS_WORK_REOPEN);
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
