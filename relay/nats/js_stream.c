/* The sink's JetStream stream: lookup, creation from the settings, its state. */
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/nats/js_stream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "outbox_relay/lib/log.h"
#include "outbox_relay/lib/log_events.h"
#include "outbox_relay/nats/nats_conn.h"
#include "outbox_relay/nats/js_sink_internal.h"
#include "outbox_relay/lib/stream_spec.h"

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

void js_sink_set_stream_state(struct js_sink *sink, enum js_stream_state st, const char *why)
{
    pthread_mutex_lock(&sink->stream_mu);
    snprintf(sink->stream_error, sizeof(sink->stream_error), "%s", why ? why : "");
    atomic_store(&sink->stream_state, (int)st);
    pthread_mutex_unlock(&sink->stream_mu);
}

void js_sink_stream_lost(struct js_sink *sink)
{
    if (sink->cfg->stream[0] == '\0')
        return;
    js_sink_ask_worker(sink, JS_WORK_ENSURE);
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

int js_stream_lookup(jsCtx *js, const struct relay_config *cfg, const char *stream,
                     jsStreamInfo **si, char *err, size_t errlen)
{
    jsErrCode jerr = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = js_stream_api_wait_ms(cfg);
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
    return nats_conn_fail(err, errlen, "JetStream stream lookup", s);
}

/* Checks the stream on js and creates it from the spec when missing. Blocking. */
int js_sink_ensure_on(struct js_sink *sink, jsCtx *js, char *err, size_t errlen)
{
    const struct relay_config *cfg = sink->cfg;
    const struct stream_spec *spec = &sink->spec;
    jsStreamInfo *found = NULL;
    int exists = js_stream_lookup(js, cfg, cfg->stream, &found, err, errlen);
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
        return nats_conn_fail(err, errlen, what, s);
    }
    if (s == NATS_OK) {
        char age[32], dup[32];
        stream_spec_format_duration(spec->max_age_ns, age, sizeof(age));
        stream_spec_format_duration(spec->duplicate_window_ns, dup, sizeof(dup));
        log_info(LOG_MSG_STREAM_CREATED, "{s:s, s:s, s:i, s:s, s:s, s:s}", "stream", cfg->stream,
                 "subjects", cfg->stream_subjects, "replicas", spec->replicas, "storage",
                 spec->memory ? "memory" : "file", "max_age", age, "duplicate_window", dup);
    }
    return 0;
}

int js_sink_ensure_stream(struct js_sink *sink, char *err, size_t errlen)
{
    if (sink->cfg->stream[0] == '\0')
        return 0;
    /* A (re)connect: check now, whatever the last check found. */
    js_sink_set_stream_state(sink, JS_STREAM_CHECKING, NULL);
    js_sink_ask_worker(sink, JS_WORK_ENSURE);
    return 0;
}
