/* The Nats-Expected-Last-Msg-Id chain over the relay's publishes: epochs, breaks, repairs. */
#include "outbox_relay/pub_chain.h"

#include <stdlib.h>
#include <string.h>

void pub_chain_init(struct pub_chain *c, bool enabled)
{
    memset(c, 0, sizeof(*c));
    c->enabled = enabled;
}

void pub_chain_free(struct pub_chain *c)
{
    free(c->last_id);
    c->last_id = NULL;
    free(c->subject);
    c->subject = NULL;
}

bool pub_chain_may_publish(struct pub_chain *c, size_t publishing)
{
    if (!c->broken)
        return true;
    if (publishing > 0)
        return false;
    c->broken = false; /* every publish resolved: the next one starts a new epoch */
    return true;
}

bool pub_chain_expect(struct pub_chain *c, size_t publishing, const char *subject,
                      struct chain_pos *pos, const char **expect)
{
    *expect = NULL;
    pos->epoch = pos->seq = 0;
    if (!c->enabled)
        return true;
    if (publishing == 0 || c->epoch == 0) {
        /* Nothing in flight: whatever went before has resolved, and what the
         * server still holds of it (a frozen server) it handles first. */
        c->epoch++;
        c->seq = c->stored_seq = 0;
        free(c->last_id);
        c->last_id = NULL;
        free(c->subject);
        c->subject = strdup(subject); /* NULL (out of memory): the epoch takes no second */
    } else if (c->subject == NULL || strcmp(c->subject, subject) != 0) {
        /* Its fence would carry another subject's event_id to the consumers
         * of this one: it opens the next epoch instead. */
        c->broken = true;
        return false;
    }
    pos->epoch = c->epoch;
    pos->seq = c->seq + 1;
    *expect = c->last_id;
    return true;
}

void pub_chain_sent(struct pub_chain *c, const struct chain_pos *pos, char *event_id)
{
    if (pos->epoch == 0 || pos->epoch != c->epoch) {
        free(event_id);
        return;
    }
    if (event_id == NULL) {
        /* The next publish cannot name this one: end the epoch instead. */
        c->broken = true;
        return;
    }
    free(c->last_id);
    c->last_id = event_id;
    c->seq = pos->seq;
}

void pub_chain_pause(struct pub_chain *c)
{
    c->broken = true;
}

void pub_chain_acked(struct pub_chain *c, const struct chain_pos *pos, bool duplicate)
{
    if (pos->epoch == c->epoch && !duplicate && pos->seq > c->stored_seq)
        c->stored_seq = pos->seq;
}

void pub_chain_failed(struct pub_chain *c, const struct chain_pos *pos)
{
    if (pos->epoch != 0)
        c->broken = true;
}

enum chain_verdict pub_chain_rejected(struct pub_chain *c, const struct chain_pos *pos)
{
    c->broken = true;
    /* The server stored the previous publish as new, so it was the stream's
     * last; refusing this one means another message came in between. */
    if (c->enabled && pos->epoch == c->epoch && pos->seq > 1 && pos->seq == c->stored_seq + 1) {
        c->enabled = false;
        c->other_writer = true;
        return CHAIN_OTHER_WRITER;
    }
    return CHAIN_RETRY;
}
