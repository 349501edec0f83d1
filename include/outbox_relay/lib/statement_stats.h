/*
 * What the relay's statements cost the database, by kind: how many ran,
 * how many failed, the time each took from send to its last result (the
 * server's work and the round trip), and the rows they returned or
 * changed. Counted where the statements are issued (pg_source.c), rendered
 * by metrics.c. Loop thread only.
 */
#ifndef OUTBOX_RELAY_LIB_STATEMENT_STATS_H
#define OUTBOX_RELAY_LIB_STATEMENT_STATS_H

#include <stdbool.h>
#include <stdint.h>

enum statement_kind {
    STATEMENT_OTHER,       /* setup, keepalives, anything not named below */
    STATEMENT_CLAIM,       /* the claim: a page of due rows */
    STATEMENT_MARK,        /* outcomes: published, failed, dead */
    STATEMENT_LOCK,        /* leadership: the lock, its watch, its release */
    STATEMENT_WAKEUP,      /* the sleep lock's try and release */
    STATEMENT_SAMPLE,      /* the health sample of unfinished and dead rows, and the read
                              of the relay's own figures in pg_stat_statements */
    STATEMENT_RETENTION,   /* pruning old published rows */
    STATEMENT_DEAD_LETTER, /* dead letters: the rows to send, their record */
    STATEMENT_KINDS
};

struct statement_stats {
    uint64_t calls[STATEMENT_KINDS];
    uint64_t errors[STATEMENT_KINDS];
    double seconds[STATEMENT_KINDS];
    uint64_t rows[STATEMENT_KINDS]; /* returned (SELECT) or changed (UPDATE, DELETE) */
};

/*
 * The WAL the relay's statements wrote and how often they ran, by kind, as
 * pg_stat_statements counts them on the server (statement_wal.c). Server
 * figures: pg_stat_statements_reset(), or an entry evicted to make room,
 * lowers them, and every relay session on the database adds to them.
 */
struct wal_figures {
    bool known; /* the last read of pg_stat_statements succeeded */
    uint64_t calls[STATEMENT_KINDS];
    uint64_t bytes[STATEMENT_KINDS];
};

/* The `kind` label: "claim", "mark", ... */
const char *statement_kind_name(enum statement_kind kind);

#endif
