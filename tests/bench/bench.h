/* What the benchmark's sources share: its flags, its result table, clocks and /proc readings,
 * connections to the servers and the relay. */
#ifndef OUTBOX_RELAY_BENCH_H
#define OUTBOX_RELAY_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"

#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE "unknown"
#endif

#define STREAM      "BENCH"
#define RAW_STREAM  "BENCH_RAW"
#define RAW_SUBJECT "raw.bench"
#define STAMP_DIGITS                                                                               \
    16 /* created_at in microseconds since the epoch, zero-padded, leads each payload */
#define MAX_RELAY_ENV 32
#define MAX_RESULTS   256
#define MAX_COST_RUNS 4

/* ---- parameters (flags, parsed in bench.c) ---- */

struct bench_opt {
    const char *csv;
    const char *latency_out;
    int payload_bytes;
    int raw_js_msgs;
    int js_window;
    int raw_pg_rows;
    int mark_batch;
    int drain_rows;
    int steady_rate;
    int steady_seconds;
    int producers;
    int notify_seconds;
    bool notify_relay;
    int idle_seconds;
    bool fsync;
    const char *relay_env[MAX_RELAY_ENV + 1];
    int nrelay_env;
    const char *perf_drain;
    const char *perf_args;
    /* The workload shapes of issues 10 and 11; 0 rows (or seconds) skips a shape. */
    int cold_rows;      /* backlog drained with no VACUUM/ANALYZE since it was inserted */
    int key_rows;       /* one-key vs no-key drain */
    int big64k_rows;    /* 64 KiB rows */
    int big1m_rows;     /* 1 MB rows */
    int fast_rate;      /* second latency run: rows/s */
    int fast_producers; /* ... from this many connections */
    int fast_seconds;   /* ... for this long */
    int sparse_rate;    /* third latency run: a sparse flow, rows/s */
    int sparse_seconds; /* ... for this long (2 producers) */
    int retention_rows; /* old published rows pruned while a backlog of half as many drains */
    int cost_producers[MAX_COST_RUNS]; /* producer cost: connection counts */
    int ncost;
    int db_cost_seconds;    /* db_cost: each steady run (inserts alone, relayed); 0 skips */
    int db_cost_drain_rows; /* db_cost: the drain */
    bool db_cost_only;      /* only the db_cost section */
    bool pg_stat_statements;
};
extern struct bench_opt opt;

/* ---- results: one CSV row each, printed as the table (bench_report.c) ---- */

void bench_record_text(const char *section, const char *metric, const char *unit, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
void bench_record(const char *section, const char *metric, const char *unit, double value);
/* The machine, the servers' settings and the build, as "conditions" rows of `section_suffix`. */
void bench_conditions(PGconn *conn, const char *section_suffix);
/* The table on stdout, the CSV to opt.csv. */
void bench_write_outputs(void);
/* qsort order of doubles, and the nearest-rank p-th percentile (0..100) of a sorted array. */
int cmp_double(const void *a, const void *b);
double percentile(const double *sorted, size_t n, double p);

/* ---- clocks and /proc (bench_proc.c) ---- */

double mono_now(void);     /* seconds, monotonic */
int64_t wall_now_us(void); /* microseconds since the epoch */
void sleep_ms(int ms);
void sleep_until(double mono);
/* CPU seconds of a process (all its threads); with_children adds its reaped children. */
double proc_cpu_s(pid_t pid, bool with_children, pid_t *ppid);
struct sched_take {
    double wait_s, slices;
};

struct anon_sampler {
    pthread_t thread;
    pid_t pid;
    atomic_bool stop;
    double peak_mb;
};

struct cpu_split {
    double relay, postgres, nats, bench, machine;
};
void sched_take(pid_t pid, struct sched_take *t);
/* Peak resident set (VmHWM) in MB: shared library pages included. */
double proc_peak_rss_mb(pid_t pid);
void anon_sampler_start(struct anon_sampler *a, pid_t pid);
double anon_sampler_stop(struct anon_sampler *a); /* the peak RssAnon in MB */
void cpu_split_take(struct cpu_split *s, pid_t relay);
void cpu_split_record(const char *section, const struct cpu_split *a, const struct cpu_split *b,
                      double seconds);
/* The rest of the first line of `path` that starts with `prefix` into out ("" if none). */
void text_of_file_line(const char *path, const char *prefix, char *out, size_t len);

/* ---- the servers and the relay (bench_env.c) ---- */

const char *pg_show(PGconn *conn, const char *setting, char *buf, size_t len);
/* A payload expression of `bytes` distinct bytes per row g (generate_series). */
void sql_payload_expr_of(int bytes, char *buf, size_t len);
void sql_payload_expr(char *buf, size_t len); /* of opt.payload_bytes */
/* Committed transactions in the database so far. */
int64_t pg_xact_commits(PGconn *conn);
void pg_checkpoint(PGconn *conn);
natsConnection *nats_connect_asap(bool send_asap);
natsConnection *nats_connect(void);
jsCtx *js_context(natsConnection *nc);
/* A push consumer of what the stream stores from now on, without acks. */
void new_messages_of(jsSubOptions *so, const char *stream);
struct it_relay *relay_start_leader(void);
void relay_stop(struct it_relay *relay);
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An it_wait_until condition: STREAM holds at least `want` messages. */
struct stream_wait {
    uint64_t want, seen;
};
bool stream_reached(void *arg);
/*
 * The relay's PostgreSQL sessions (application_name outbox-relay): their
 * backends' pids, so that their CPU can be read from /proc before and after.
 */
struct relay_sessions {
    int n;
    pid_t pid[8];
};
void relay_sessions_find(PGconn *conn, struct relay_sessions *rs);
double relay_sessions_cpu_s(const struct relay_sessions *rs);
/* Bytes of WAL written so far (the insert position). */
int64_t wal_bytes(PGconn *conn);

/* ---- the sections ---- */

/* bench_raw.c: the ceilings the relay is measured against. */
double raw_js_rate(int msgs, int bytes, int window); /* async publishing, msgs/s */
double bench_raw_js(void);
double bench_raw_pg(PGconn *conn);

/* bench_load.c: drain, latency under steady load, NOTIFY and producer cost. */
struct row_times;
/* Runs n producers for `seconds`, at `rate` rows/s in total (0: unpaced); times may be NULL. */
int64_t producers_run(int n, const char *tag, const char *subject, double rate, double seconds,
                      struct row_times *times, double *elapsed);
/* The producers' PostgreSQL backends' CPU seconds during the last producers_run. */
extern double producers_pg_cpu_s;
/* What a steady run cost, for db_cost: totals over the run. */
struct steady_cost {
    int64_t rows;
    double producers_pg_s, relay_pg_s, relay_s, nats_s, wal_b, p50_ms, p99_ms, achieved;
};
void bench_drain(PGconn *conn, double limit);
/* With `cost`: its totals filled in, and nothing recorded. */
void bench_steady(PGconn *conn, const char *section, int rate, int producers, int seconds,
                  double p99_goal_ms, const char *latency_out, bool with_idle,
                  struct steady_cost *cost);
void bench_notify(PGconn *conn);

/* bench_shapes.c: workload shapes: retention, cold backlog, one hot key, big rows. */
void bench_retention(PGconn *conn, double limit);
void bench_cold(PGconn *conn, double limit);
void bench_keyed(PGconn *conn, double limit);
void bench_big(PGconn *conn, const char *section, int rows, int bytes);
/* What the planner knows of a backlog when the relay starts on it. */
enum backlog_stats {
    STATS_NONE,     /* no ANALYZE since the table was emptied: what every shape drains */
    STATS_STALE,    /* analyzed when it held only published rows, as a live outbox is */
    STATS_ANALYZED, /* VACUUM ANALYZE after the inserts: the cold shape's reference only */
};
/* A backlog of `rows` pending rows of `bytes` each built while no relay runs (autovacuum off). */
void backlog_build(PGconn *conn, int rows, int bytes, const char *key_sql,
                   enum backlog_stats stats);

/* bench_db_cost.c: what relaying costs the database (issue 21). */
void bench_db_cost(PGconn *conn);

#endif
