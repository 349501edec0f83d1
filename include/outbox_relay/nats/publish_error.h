/*
 * Why a publish failed, in one table: permanent or transient, and a reason
 * class from a small fixed set (the `reason` label of the failed/dead
 * counters). Pure.
 */
#ifndef OUTBOX_RELAY_PUBLISH_ERROR_H
#define OUTBOX_RELAY_PUBLISH_ERROR_H

#include <stdbool.h>
#include <stddef.h>

#include <nats/nats.h>

#include "outbox_relay/lib/publish_reason.h"

/*
 * JetStream's "header size exceeds maximum allowed of 64k" (nats-server
 * errors.json); nats.c 3.4's jsErrCode enum skips it.
 */
#define PUBLISH_JS_HEADER_TOO_LARGE 10097

struct publish_verdict {
    bool permanent; /* retrying can never succeed: the row goes dead at once */
    enum publish_reason reason;
};

/*
 * Classifies a failed publish: status from js_PublishMsgAsync or the
 * PubAck error (pae->Err), js_err_code from the PubAck error (pae->ErrCode,
 * 0 if none). A JetStream code decides when it is known; otherwise the
 * status. Anything unknown is transient (PUBLISH_NATS_ERROR): the attempt
 * limit still ends a row that can never succeed.
 */
struct publish_verdict publish_error_classify(natsStatus status, int js_err_code);

/* One row of the table, for tests and documentation. */
struct publish_error_rule {
    natsStatus status; /* matched when js_code is 0 */
    int js_code;       /* a JetStream API error code, or 0 */
    bool permanent;
    enum publish_reason reason;
    const char *what; /* the server's or client's text for it */
};

/* The whole table, in match order. */
const struct publish_error_rule *publish_error_rules(size_t *n);

#endif
