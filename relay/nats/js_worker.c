/* The sink's connect worker: the slow jobs (reopen, stream check, flush) off the loop thread. */
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
        js_sink_reclaim_from(sink, old_js, "nats connection closed before the PubAck");
    jsCtx_Destroy(old_js);
    natsConnection_Destroy(old_nc);

    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char err[512];
    int rc = js_sink_connect(sink, &nc, &js, err, sizeof(err));
    pthread_mutex_lock(&sink->conn_mu);
    sink->nc = nc;
    sink->js = js;
    pthread_mutex_unlock(&sink->conn_mu);
    if (rc < 0) {
        js_sink_note_failure(sink, err);
        log_error("nats connection not reopened", "{s:s}", "error", err);
        js_sink_push_event(sink, NATS_EVENT_CLOSED); /* the loop schedules the next attempt */
    } else if (natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED) {
        js_sink_push_event(sink, NATS_EVENT_CONNECTED);
    } /* else nats.c goes on in the background and calls js_on_connected */
}

/* Worker: the stream check, no more often than once a second. */
static void js_worker_ensure(struct js_sink *sink)
{
    char err[512];
    int64_t now = js_sink_mono_ms();
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
    sink->last_ensure_ms = js_sink_mono_ms();
    /* Only this thread replaces js: no lock needed to use it here. */
    if (sink->js == NULL || natsConnection_Status(sink->nc) != NATS_CONN_STATUS_CONNECTED) {
        js_sink_set_stream_state(sink, JS_STREAM_CHECKING, NULL); /* checked again at connect */
        return;
    }
    js_sink_set_stream_state(sink, JS_STREAM_CHECKING, NULL);
    if (js_sink_ensure_on(sink, sink->js, err, sizeof(err)) < 0) {
        js_sink_set_stream_state(sink, JS_STREAM_ERROR, err);
        log_error("stream not ready", "{s:s}", "error", err);
    } else {
        js_sink_set_stream_state(sink, JS_STREAM_READY, NULL);
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

/* Worker: the stream's tail, answered to the loop (NATS_EVENT_STREAM_READ). */
static void js_worker_read(struct js_sink *sink)
{
    pthread_mutex_lock(&sink->work_mu);
    struct stream_read r = {.tag = sink->read_ask.tag};
    uint64_t after = sink->read_ask.after;
    size_t max_msgs = sink->read_ask.max_msgs;
    int64_t max_bytes = sink->read_ask.max_bytes;
    pthread_mutex_unlock(&sink->work_mu);
    /* Only this thread replaces js: no lock needed to use it here. */
    if (sink->js == NULL || natsConnection_Status(sink->nc) != NATS_CONN_STATUS_CONNECTED)
        snprintf(r.error, sizeof(r.error), "stream read: not connected");
    else
        stream_read_tail(sink->nc, sink->js, sink->cfg->stream, after, max_msgs, max_bytes,
                         sink->cfg->publish_timeout_ms, &r);
    pthread_mutex_lock(&sink->read_mu);
    stream_read_free(&sink->read_answer);
    sink->read_answer = r;
    sink->read_answered = true;
    pthread_mutex_unlock(&sink->read_mu);
    js_sink_push_event(sink, NATS_EVENT_STREAM_READ);
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
        if (work & JS_WORK_READ)
            js_worker_read(sink);
        pthread_mutex_lock(&sink->work_mu);
    }
    pthread_mutex_unlock(&sink->work_mu);
    return NULL;
}

void js_sink_ask_worker(struct js_sink *sink, unsigned work)
{
    pthread_mutex_lock(&sink->work_mu);
    sink->work |= work;
    pthread_cond_signal(&sink->work_cv);
    pthread_mutex_unlock(&sink->work_mu);
}

int js_sink_start_worker(struct js_sink *sink, char *err, size_t errlen)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sink->work_cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&sink->worker, NULL, js_worker_main, sink);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the NATS connect thread: %s", strerror(rc));
        return -1;
    }
    sink->worker_running = true;
    return 0;
}

void js_sink_stop_worker(struct js_sink *sink)
{
    if (!sink->worker_running)
        return;
    /* It may be inside a connect: that ends within the connect timeout. */
    pthread_mutex_lock(&sink->work_mu);
    sink->stopping = true;
    pthread_cond_signal(&sink->work_cv);
    pthread_mutex_unlock(&sink->work_mu);
    pthread_join(sink->worker, NULL);
    pthread_cond_destroy(&sink->work_cv);
}

void js_sink_read_stream(struct js_sink *sink, uint64_t tag, uint64_t after, size_t max_msgs,
                         int64_t max_bytes)
{
    if (!sink->worker_running)
        return;
    pthread_mutex_lock(&sink->work_mu);
    sink->read_ask.tag = tag;
    sink->read_ask.after = after;
    sink->read_ask.max_msgs = max_msgs;
    sink->read_ask.max_bytes = max_bytes;
    pthread_mutex_unlock(&sink->work_mu);
    js_sink_ask_worker(sink, JS_WORK_READ);
}

bool js_sink_stream_read_take(struct js_sink *sink, struct stream_read *out)
{
    pthread_mutex_lock(&sink->read_mu);
    bool answered = sink->read_answered;
    if (answered) {
        *out = sink->read_answer;
        memset(&sink->read_answer, 0, sizeof(sink->read_answer));
        sink->read_answered = false;
    }
    pthread_mutex_unlock(&sink->read_mu);
    return answered;
}
