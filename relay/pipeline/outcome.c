/* The outcome policy: retry, dead, and when a key's later rows may go. */
#include "outbox_relay/pipeline/outcome.h"

#include "outbox_relay/lib/backoff.h"

bool outcome_connection_failed(enum publish_reason reason, bool unanswered, bool nats_up)
{
    switch (reason) {
    case PUBLISH_CONNECTION:
        return true;
    case PUBLISH_TIMEOUT:
        return unanswered;
    case PUBLISH_NO_STREAM:
        return !nats_up;
    default:
        return false;
    }
}

struct failure_verdict outcome_of_failure(const struct failure_facts *f,
                                          const struct retry_policy *p, double rnd)
{
    struct failure_verdict v = {0};
    v.not_an_attempt =
        !f->permanent && outcome_connection_failed(f->reason, f->unanswered, f->nats_up);
    v.dead = f->permanent || (!v.not_an_attempt && f->attempts + 1 >= p->max_attempts);
    if (!v.dead && !v.not_an_attempt)
        v.delay_ms = backoff_delay_ms(f->attempts + 1, p->base_ms, p->max_ms, rnd);
    return v;
}

bool outcome_releases_key(bool keyed, bool held_key, bool published, bool dead, bool dead_holds_key)
{
    if (!keyed)
        return false;
    return published ? held_key : dead && !dead_holds_key;
}
