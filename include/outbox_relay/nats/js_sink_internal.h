/*
 * Inside js_sink: the state its files share (js_sink.c the connection and
 * lifecycle, js_worker.c the connect worker, js_stream.c the stream,
 * js_publish.c publishing). Only relay/nats/js_*.c include this; everyone
 * else uses js_sink.h.
 */
#ifndef OUTBOX_RELAY_JS_SINK_INTERNAL_H
#define OUTBOX_RELAY_JS_SINK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nats/nats.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/lib/stream_spec.h"
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/nats/nats_bridge.h"
#include "outbox_relay/nats/stream_read.h"

/* Jobs for the connect worker, as bits: asking twice before it runs is asking once. */
enum js_work {
    JS_WORK_REOPEN = 1 << 0, /* a new connection in place of one nats.c closed */
    JS_WORK_ENSURE = 1 << 1, /* check the stream, create it when missing */
    JS_WORK_FLUSH = 1 << 2,  /* write what nats.c buffered now (js_sink_flush) */
    JS_WORK_READ = 1 << 3,   /* read the stream's tail (js_sink_read_stream) */
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
    /* The stream read asked for (under work_mu) and its answer (under read_mu). */
    struct {
        uint64_t tag, after;
        size_t max_msgs;
        int64_t max_bytes;
    } read_ask;
    pthread_mutex_t read_mu;
    struct stream_read read_answer;
    bool read_answered;

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
/* Clocks: wall time for events, monotonic for pacing. */
double js_sink_wall_now(void);
int64_t js_sink_mono_ms(void);

/* Any thread: hands an event to the loop, unless the sink is closing (then a message is freed). */
void js_sink_report(struct js_sink *sink, const struct nats_event *e);
void js_sink_push_event(struct js_sink *sink, enum nats_event_kind kind);
/* Keeps why as the last specific reason a connect failed (js_sink_last_error). */
void js_sink_note_failure(struct js_sink *sink, const char *why);

/* Connects (or goes on trying in the background) and makes the JetStream context. */
int js_sink_connect(struct js_sink *sink, natsConnection **nc, jsCtx **js, char *err,
                    size_t errlen);

/* The worker: started at create (with a bridge), given jobs as enum js_work bits, stopped at
 * destroy (waits for a connect it is making). */
int js_sink_start_worker(struct js_sink *sink, char *err, size_t errlen);
void js_sink_ask_worker(struct js_sink *sink, unsigned work);
void js_sink_stop_worker(struct js_sink *sink);

/* The stream: checked (created when missing) on js; blocking. Its state for any thread. */
int js_sink_ensure_on(struct js_sink *sink, jsCtx *js, char *err, size_t errlen);
void js_sink_set_stream_state(struct js_sink *sink, enum js_stream_state st, const char *why);

/* nats.c thread: the outcome of one publish. */
void js_sink_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);
/* Reports each message js still waits an ack for as failed; returns how many. */
int js_sink_reclaim_from(struct js_sink *sink, jsCtx *js, const char *why);

#endif
