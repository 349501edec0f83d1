/*
 * Dead letters: with OUTBOX_DEAD_LETTER_SUBJECT set, the leader publishes
 * every dead row to that subject (its payload and headers, plus Outbox-Dead-*
 * headers saying which row died, where it was going and why) and records it
 * in the row (dead_lettered_at). A side path of its own: a small batch at a
 * time, found by the partial index of dead rows not yet dead-lettered, on the
 * relay's connections between the pipeline's queries and publishes; a failing
 * dead-letter subject is retried with backoff and never holds a live row.
 */
#ifndef OUTBOX_RELAY_DEAD_LETTER_H
#define OUTBOX_RELAY_DEAD_LETTER_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "outbox_relay/lib/config.h"
#include "outbox_relay/nats/js_sink.h"
#include "outbox_relay/nats/nats_bridge.h"
#include "outbox_relay/pg/pg_source.h"

/* The headers a dead letter carries besides the row's own. */
#define DEAD_HEADER_ID       "Outbox-Dead-Id"
#define DEAD_HEADER_EVENT_ID "Outbox-Dead-Event-Id"
#define DEAD_HEADER_SUBJECT  "Outbox-Dead-Subject"
#define DEAD_HEADER_REASON                                                                         \
    "Outbox-Dead-Reason" /* its class: invalid_row, too_large, no_stream, ... */
#define DEAD_HEADER_ERROR           "Outbox-Dead-Error" /* the row's last_error */
#define DEAD_HEADER_ATTEMPTS        "Outbox-Dead-Attempts"
#define DEAD_HEADER_PAYLOAD_OMITTED "Outbox-Dead-Payload-Omitted" /* its size in bytes */
#define DEAD_HEADER_HEADERS_OMITTED "Outbox-Dead-Headers-Omitted" /* "invalid" */

struct dead_letter;

/* NULL when out of memory. Does nothing while the subject is empty or until set_leader(true). */
struct dead_letter *dead_letter_create(struct ev_loop *loop, const struct relay_config *cfg,
                                       struct pg_source *pg, struct js_sink *js, char *err,
                                       size_t errlen);
void dead_letter_destroy(struct dead_letter *d);

void dead_letter_set_leader(struct dead_letter *d, bool leader);
/* A row went dead (its mark committed): look for dead letters to send soon. */
void dead_letter_due(struct dead_letter *d);
/* Whether the PubAck is a dead letter's; then it is consumed (e->msg freed). */
bool dead_letter_on_puback(struct dead_letter *d, struct nats_event *e);

uint64_t dead_letter_published_total(const struct dead_letter *d);
uint64_t dead_letter_failures_total(const struct dead_letter *d);

#endif
