/*
 * The stream the relay creates (OUTBOX_STREAM and its settings), as plain
 * values: parsed and checked from the settings, compared with a stream that
 * exists. No NATS calls here; js_sink turns it into a jsStreamConfig.
 */
#ifndef OUTBOX_RELAY_STREAM_SPEC_H
#define OUTBOX_RELAY_STREAM_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "outbox_relay/lib/config.h"

#define STREAM_SPEC_MAX_SUBJECTS 64

struct stream_spec {
    int replicas;
    bool memory;                 /* memory storage; else file */
    int64_t max_age_ns;          /* 0 = unlimited */
    int64_t duplicate_window_ns; /* JetStream's default is 2 minutes */
    int nsubjects;
    char subjects[STREAM_SPEC_MAX_SUBJECTS][256];
};

/*
 * A duration as JetStream tools write them: "0", or whole numbers with units
 * ns, us, ms, s, m, h, d, concatenated ("1h30m", "90s", "500ms"). -1 with
 * why on anything else or on overflow.
 */
int stream_spec_parse_duration(const char *text, int64_t *ns, char *why, size_t whylen);

/* Formats ns as the shortest of "0", "2m", "1h30m", "1.5s"..., for messages. */
void stream_spec_format_duration(int64_t ns, char *buf, size_t len);

/*
 * The spec the settings ask for (OUTBOX_STREAM_SUBJECTS, _REPLICAS, _STORAGE,
 * _MAX_AGE, _DUPLICATE_WINDOW). -1 with err naming the setting when one is
 * malformed or they contradict each other (a duplicate window longer than the
 * max age).
 */
int stream_spec_from_config(const struct relay_config *cfg, struct stream_spec *out, char *err,
                            size_t errlen);

/*
 * What differs between the stream that exists (`have`) and the settings
 * (`want`): "" when nothing does, else "; "-separated items such as
 * "replicas 1, settings ask 3". Subjects: those of want missing from have.
 * Returns how many items differ.
 */
/* What an existing stream is configured with, in the same terms. */
void stream_spec_from_stream(const jsStreamConfig *c, struct stream_spec *out);

int stream_spec_diff(const struct stream_spec *want, const struct stream_spec *have, char *out,
                     size_t len);

#endif
