/* The Nats-Expected-Last-Msg-Id chain over the relay's publishes: epochs, breaks, repairs. */
#include "outbox_relay/nats/pub_chain.h"

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

/* A new epoch, whatever is in flight of older ones: its first publish has no fence. */
static void pub_chain_open(struct pub_chain *c, const char *subject)
{
    c->epoch++;
    c->seq = c->stored_seq = 0;
    c->in_flight = 0;
    free(c->last_id);
    c->last_id = NULL;
    free(c->subject);
    c->subject = strdup(subject); /* NULL (out of memory): the epoch takes no second */
}

enum chain_step pub_chain_expect(struct pub_chain *c, size_t publishing, const char *subject,
                                 bool first_of_key, bool fence_fits(void *, const char *),
                                 void *arg, struct chain_pos *pos, const char **expect)
{
    *expect = NULL;
    pos->epoch = pos->seq = 0;
    if (!c->enabled)
        return CHAIN_GO;
    bool follows = publishing > 0 && c->epoch != 0 && c->subject != NULL && c->last_id != NULL &&
                   strcmp(c->subject, subject) == 0;
    /* A row behind its key's publishes in flight is kept in order by the
     * fence only if the chain links it to them: every one of them in this
     * epoch. */
    if (follows && !first_of_key && publishing != c->in_flight)
        return CHAIN_WAIT;
    if (follows && fence_fits != NULL && !fence_fits(arg, c->last_id))
        follows = false;
    if (!follows) {
        /* Unfenced, it needs nothing in flight ahead of it in its key. */
        if (!first_of_key && publishing > 0)
            return CHAIN_WAIT;
        pub_chain_open(c, subject);
    }
    pos->epoch = c->epoch;
    pos->seq = c->seq + 1;
    *expect = c->last_id;
    return CHAIN_GO;
}

void pub_chain_sent(struct pub_chain *c, const struct chain_pos *pos, char *event_id)
{
    if (pos->epoch == 0 || pos->epoch != c->epoch) {
        free(event_id);
        return;
    }
    c->in_flight++;
    if (event_id == NULL) {
        /* The next publish cannot name this one: end the epoch instead. */
        c->broken = true;
        return;
    }
    free(c->last_id);
    c->last_id = event_id;
    c->seq = pos->seq;
}

/* A publish of the current epoch has resolved (stored, refused or failed). */
static void pub_chain_resolved(struct pub_chain *c, const struct chain_pos *pos)
{
    if (pos->epoch == c->epoch && c->in_flight > 0)
        c->in_flight--;
}

void pub_chain_acked(struct pub_chain *c, const struct chain_pos *pos, bool duplicate)
{
    pub_chain_resolved(c, pos);
    if (pos->epoch == c->epoch && !duplicate && pos->seq > c->stored_seq)
        c->stored_seq = pos->seq;
}

void pub_chain_failed(struct pub_chain *c, const struct chain_pos *pos)
{
    pub_chain_resolved(c, pos);
    if (pos->epoch != 0)
        c->broken = true;
}

enum chain_verdict pub_chain_rejected(struct pub_chain *c, const struct chain_pos *pos)
{
    pub_chain_resolved(c, pos);
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
