/*
 * The scanner: where the next claim reads from. Pure: no I/O, no clock of
 * its own; the pipeline feeds it events and asks it for the next page.
 *
 * A pass walks due rows in id order from a cursor, one page per claim
 * query, until a page comes back short. A tail pass starts at the high
 * water mark (new rows); a sweep starts at id 0 and also finds retries that
 * became due and rows whose transaction committed after higher ids were
 * claimed. A rewind sends the pass back below its cursor: to the row whose
 * key was released, or to a row that committed late below the cursor while
 * a later row of its key waits for it.
 */
#ifndef OUTBOX_RELAY_SCAN_H
#define OUTBOX_RELAY_SCAN_H

#include <stdbool.h>
#include <stdint.h>

enum scan_state {
    SCAN_IDLE,     /* no pass under way, none wanted: waiting for a NOTIFY, poll tick or retry */
    SCAN_WANTED,   /* a pass is wanted; it starts when the relay may claim (leader, NATS, room) */
    SCAN_IN_PASS,  /* a pass is under way between pages; the next page goes when there is room */
    SCAN_CLAIMING, /* a page's claim query is in flight */
};

enum scan_reason {
    SCAN_TAIL,   /* look above the high water mark (poll tick) */
    SCAN_NOTIFY, /* a producer committed rows (NOTIFY) */
    SCAN_SWEEP,  /* from id 0: retries due, late commits, a new leader, a reconnect */
};

struct scan {
    enum scan_state state;
    bool want_sweep;    /* the next pass starts from id 0 */
    bool wanted_again;  /* a reason came during the pass: another pass follows it */
    bool notified;      /* a NOTIFY came since the current pass began */
    bool pass_is_sweep; /* the current pass started from id 0 */
    bool pass_notified; /* the current pass was started by a NOTIFY */
    int64_t cursor;     /* the pass reads ids above this */
    int64_t page_from;  /* the cursor the page in flight was claimed from */
    int64_t page_last;  /* the last id the page in flight returned */
    int64_t high_water; /* the highest id any claim returned: tail passes start here */
    int64_t rewind;     /* INT64_MAX: none; else the next page reads from at most this */
    double last_sweep;  /* the caller's clock when the last sweep began */
};

void scan_init(struct scan *s);
/* A reason to look at the table. */
void scan_want(struct scan *s, enum scan_reason why);
/*
 * The relay may claim now: true (state CLAIMING) with *from set to the
 * cursor of the page to claim, or false when no page is wanted.
 */
bool scan_next_page(struct scan *s, double now, int64_t *from);
/* A row of the page in flight, in id order, whatever the relay does with it. */
void scan_row_seen(struct scan *s, int64_t id);
/*
 * A keyed row of the page waits: `prev`, the nearest earlier unfinished row
 * of its key, is not held. When prev lies at or below the page's start the
 * pass walked past it (it committed late): the pass goes back for it.
 */
void scan_row_blocked(struct scan *s, int64_t prev);
/*
 * The page in flight is read: n rows; full when more due rows may follow
 * (the page hit its row or byte limit). A short page ends the pass.
 */
void scan_page_done(struct scan *s, int n, bool full);
/* The claim failed or its connection went: the pass ends. */
void scan_page_failed(struct scan *s);
/* A key's hold ended at row id: its later rows may lie anywhere above id. */
void scan_key_released(struct scan *s, int64_t id);
/* A new term as leader (or a lost one): forget the pass, sweep from 0. */
void scan_restart(struct scan *s);
/* Claim nothing until a reason comes (leadership lost, shutting down). */
void scan_stop(struct scan *s);

const char *scan_state_name(enum scan_state state);

#endif
