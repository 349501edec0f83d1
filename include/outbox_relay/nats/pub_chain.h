/*
 * The publish chain that lets many publishes of one ordering_key be in
 * flight at once. Pure; loop thread only.
 *
 * JetStream stores a retried message after the ones that followed it, so a
 * key may only be pipelined behind a fence: each publish carries
 * Nats-Expected-Last-Msg-Id = the event_id of the relay's previous publish
 * to the stream, and the server refuses it (JetStream error 10070, "wrong
 * last msg ID") unless that message is the stream's last. Once publish N is
 * not stored, no publish after it in the chain can be: a later row of N's
 * key can never overtake N. The fence holds only while the relay alone
 * writes the stream (OUTBOX_STREAM, OUTBOX_PIPELINE).
 *
 * The stream stores the fence with the message, so every consumer of its
 * subject reads it. An epoch therefore holds publishes of one subject only:
 * the fence names the message just before it in the stream, of the same
 * subject, whose id that consumer reads anyway. A publish of another
 * subject opens a new epoch, unfenced, at once if its row is the first of
 * its key in flight (nothing of its key can fail ahead of it); a row
 * behind rows of its key waits until the chain links it to them: they are
 * all of the current epoch, and of its subject. A message id is the only
 * fence that tells the relay's message from another writer's; a sequence
 * fence (Nats-Expected-Last-Sequence, or -Subject-Sequence) would let a
 * publish through after another writer's message took the sequence of the
 * relay's refused one, and the key would be out of order before the relay
 * could notice.
 *
 * Life of a chain. An epoch starts with nothing in flight, or with a row
 * first of its key: its first publish expects nothing (nothing of its key
 * is in flight; on one connection the server handles whatever is before
 * it). Any failure of a chained
 * publish breaks the chain: nothing is published until every publish in
 * flight has resolved; then a new epoch starts with the rows still waiting,
 * in key order. A 10070 is no failure of its row (it was not stored; it is
 * published again in the new epoch), except that a 10070 right after a
 * publish the server stored as new means someone else wrote the stream in
 * between: the chain is switched off for good (one publish per key).
 */
#ifndef OUTBOX_RELAY_PUB_CHAIN_H
#define OUTBOX_RELAY_PUB_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where a publish sits in the chain; epoch 0 = not chained. */
struct chain_pos {
    uint64_t epoch, seq;
};

struct pub_chain {
    bool enabled;        /* publishes are chained (and keys pipelined) */
    bool broken;         /* a chained publish failed: wait for the rest to resolve */
    bool other_writer;   /* switched off after seeing another writer */
    uint64_t epoch, seq; /* the current epoch and the seq of its last publish */
    uint64_t stored_seq; /* the highest seq of this epoch the server stored as new */
    char *last_id;       /* event_id of the last publish of this epoch; NULL: none yet */
    char *subject;       /* the subject of every publish of this epoch */
    size_t in_flight;    /* publishes of this epoch not yet resolved */
};

enum chain_verdict {
    CHAIN_RETRY,        /* not stored because an earlier publish was not: publish it again */
    CHAIN_OTHER_WRITER, /* someone else writes the stream: the chain is now off */
};

void pub_chain_init(struct pub_chain *c, bool enabled);
void pub_chain_free(struct pub_chain *c);

/*
 * Whether a publish may go now. A broken chain with nothing left in flight
 * (publishing == 0) is repaired here: the caller then publishes every
 * waiting row, in key order.
 */
bool pub_chain_may_publish(struct pub_chain *c, size_t publishing);

enum chain_step {
    CHAIN_GO,   /* publish now, at *pos, with the fence *expect (NULL: none) */
    CHAIN_WAIT, /* not before the earlier rows of its key in flight resolved */
};

/*
 * A publish on subject is about to go with `publishing` others in flight;
 * first_of_key: no earlier row of its key is held (nothing in flight ahead
 * of it). CHAIN_GO: it goes at *pos carrying Nats-Expected-Last-Msg-Id =
 * *expect (NULL: none; valid until pub_chain_sent); call pub_chain_sent
 * once it went. It follows the epoch's last publish when that one has its
 * subject and the fence fits (fence_fits(arg, id); NULL: always);
 * otherwise it opens a new epoch, unfenced, which only a row first of its
 * key may. CHAIN_WAIT: it is behind rows of its key that the chain no
 * longer links it to, or cannot carry the fence: it goes once they
 * resolved. With the chain off: CHAIN_GO, no expectation, epoch 0.
 */
enum chain_step pub_chain_expect(struct pub_chain *c, size_t publishing, const char *subject,
                                 bool first_of_key, bool fence_fits(void *, const char *),
                                 void *arg, struct chain_pos *pos, const char **expect);
/*
 * The publish went: event_id (ownership taken; NULL when out of memory,
 * then the chain breaks) is now the chain's last. Not chained: only frees it.
 */
void pub_chain_sent(struct pub_chain *c, const struct chain_pos *pos, char *event_id);

/* A chained publish was acknowledged; duplicate: the stream had it already (nothing stored). */
void pub_chain_acked(struct pub_chain *c, const struct chain_pos *pos, bool duplicate);
/* A chained publish failed for its own reason (error, timeout, connection lost). */
void pub_chain_failed(struct pub_chain *c, const struct chain_pos *pos);
/* A chained publish was refused with 10070 (wrong last msg ID). */
enum chain_verdict pub_chain_rejected(struct pub_chain *c, const struct chain_pos *pos);

#endif
