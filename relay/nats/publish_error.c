/* The one table that says which publish errors are permanent, and why each failed. */
#include "outbox_relay/nats/publish_error.h"

#define JS(code, perm, reason, what)                                                               \
    {                                                                                              \
        NATS_ERR, (code), (perm), (reason), (what)                                                 \
    }
#define ST(status, perm, reason)                                                                   \
    {                                                                                              \
        (status), 0, (perm), (reason), #status                                                     \
    }

/*
 * JetStream codes are those nats-server 2.9's processJetStreamMsg answers a
 * publish with (server/stream.go), and the API-level ones a publish can meet
 * while a stream or cluster changes. A rule of the stream that the message
 * breaks breaks it on every retry: permanent. A state that can change (a
 * stream created, a leader elected, space freed as old messages age out) is
 * transient. Rows cannot set Nats-Expected-* or Nats-Rollup headers (the
 * "Nats-" prefix is refused in `headers`); the one the relay sets itself,
 * its fence, is refused with 10070, which is transient.
 */
static const struct publish_error_rule rules[] = {
    /* the message itself can never be stored */
    JS(JSStreamMessageExceedsMaximumErr, true, PUBLISH_TOO_LARGE,
       "message size exceeds maximum allowed (the stream's max_msg_size)"),
    JS(PUBLISH_JS_HEADER_TOO_LARGE, true, PUBLISH_TOO_LARGE,
       "header size exceeds maximum allowed of 64k"),
    JS(JSStreamNotMatchErr, true, PUBLISH_REJECTED, "expected stream does not match"),
    JS(JSStreamWrongLastSequenceErr, true, PUBLISH_REJECTED, "wrong last sequence"),
    JS(JSStreamRollupFailedErr, true, PUBLISH_REJECTED, "rollup not permitted"),
    /* A sealed stream is never unsealed: only a new stream would take the row. */
    JS(JSStreamSealedErr, true, PUBLISH_REJECTED, "invalid operation on sealed stream"),

    /* a stream may be created */
    JS(JSStreamNotFoundErr, false, PUBLISH_NO_STREAM, "stream not found"),
    /* JetStream, its cluster or the stream come back */
    JS(JSNotEnabledErr, false, PUBLISH_UNAVAILABLE, "JetStream not enabled"),
    JS(JSNotEnabledForAccountErr, false, PUBLISH_UNAVAILABLE, "JetStream not enabled for account"),
    JS(JSClusterNotAvailErr, false, PUBLISH_UNAVAILABLE,
       "JetStream system temporarily unavailable"),
    JS(JSClusterNotLeaderErr, false, PUBLISH_UNAVAILABLE,
       "JetStream cluster can not handle request"),
    JS(JSClusterIncompleteErr, false, PUBLISH_UNAVAILABLE, "incomplete results"),
    JS(JSRaftGeneralErr, false, PUBLISH_UNAVAILABLE, "general RAFT error"),
    JS(JSStreamOfflineErr, false, PUBLISH_UNAVAILABLE, "stream is offline"),
    /* The relay's own fence (rows cannot set Nats- headers): the row was not
     * stored because the message the fence named was not the stream's last;
     * it goes again without that fence. */
    JS(JSStreamWrongLastMsgIDErr, false, PUBLISH_REJECTED, "wrong last msg ID"),
    /* a clustered stream's replica behind its leader's sequence: it catches up */
    JS(JSStreamSequenceNotMatchErr, false, PUBLISH_UNAVAILABLE,
       "expected stream sequence does not match"),
    /* limits: old messages age out, discard-new streams drain, operators add room */
    JS(JSInsufficientResourcesErr, false, PUBLISH_LIMITS, "insufficient resources"),
    JS(JSAccountResourcesExceededErr, false, PUBLISH_LIMITS,
       "resource limits exceeded for account"),
    JS(JSStorageResourcesExceededErr, false, PUBLISH_LIMITS,
       "insufficient storage resources available"),
    JS(JSMemoryResourcesExceededErr, false, PUBLISH_LIMITS,
       "insufficient memory resources available"),
    JS(JSStreamLimitsErr, false, PUBLISH_LIMITS, "general stream limits exceeded"),
    /* maximum messages / bytes / messages per subject exceeded (discard new), store closed */
    JS(JSStreamStoreFailedErr, false, PUBLISH_LIMITS, "storing the message failed"),

    /* client side: the message is refused before it leaves */
    ST(NATS_MAX_PAYLOAD, true, PUBLISH_TOO_LARGE),
    ST(NATS_INVALID_SUBJECT, true, PUBLISH_INVALID_ROW),
    ST(NATS_INVALID_ARG, true, PUBLISH_INVALID_ROW),
    /* no PubAck: no stream takes the subject, or none answered in time */
    ST(NATS_NO_RESPONDERS, false, PUBLISH_NO_STREAM),
    ST(NATS_TIMEOUT, false, PUBLISH_TIMEOUT),
    /* the connection: nats.c reconnects */
    ST(NATS_CONNECTION_CLOSED, false, PUBLISH_CONNECTION),
    ST(NATS_CONNECTION_DISCONNECTED, false, PUBLISH_CONNECTION),
    ST(NATS_NOT_YET_CONNECTED, false, PUBLISH_CONNECTION),
    ST(NATS_STALE_CONNECTION, false, PUBLISH_CONNECTION),
    ST(NATS_IO_ERROR, false, PUBLISH_CONNECTION),
    ST(NATS_NO_SERVER, false, PUBLISH_CONNECTION),
    ST(NATS_PROTOCOL_ERROR, false, PUBLISH_CONNECTION),
    ST(NATS_SSL_ERROR, false, PUBLISH_CONNECTION),
    ST(NATS_CONNECTION_AUTH_FAILED, false, PUBLISH_CONNECTION),
    ST(NATS_DRAINING, false, PUBLISH_CONNECTION),
    /* nats.c's reconnect buffer is full while disconnected */
    ST(NATS_INSUFFICIENT_BUFFER, false, PUBLISH_CONNECTION),
    /* an operator may grant the permission; the row waits for it */
    ST(NATS_NOT_PERMITTED, false, PUBLISH_REJECTED),
    ST(NATS_NO_MEMORY, false, PUBLISH_NATS_ERROR),
};

struct publish_verdict publish_error_classify(natsStatus status, int js_err_code)
{
    const size_t n = sizeof(rules) / sizeof(rules[0]);
    for (size_t i = 0; i < n; i++) {
        if (js_err_code != 0 ? rules[i].js_code == js_err_code
                             : rules[i].js_code == 0 && rules[i].status == status)
            return (struct publish_verdict){rules[i].permanent, rules[i].reason};
    }
    return (struct publish_verdict){false, PUBLISH_NATS_ERROR};
}

const struct publish_error_rule *publish_error_rules(size_t *n)
{
    *n = sizeof(rules) / sizeof(rules[0]);
    return rules;
}
