/* The benchmark of issue 6: raw JetStream and PostgreSQL limits, then the relay measured against
 * them. */
/* _GNU_SOURCE comes from the build. */
#include <check.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "harness.h"
#include "outbox_relay/lib/config.h"
#include "outbox_relay/pg/outbox_table.h"
#include "outbox_relay/pipeline/claimer.h"

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

/* ---- parameters (flags) ---- */

static struct {
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
} opt = {
    .csv = "bench.csv",
    .payload_bytes = 256,
    .raw_js_msgs = 200000,
    .js_window = 8000,
    .raw_pg_rows = 200000,
    .mark_batch = 1000,
    .drain_rows = 200000,
    .steady_rate = 2000,
    .steady_seconds = 30,
    .producers = 8,
    .notify_seconds = 10,
    .notify_relay = true,
    .idle_seconds = 10,
    .fsync = true,
    .perf_args = "-a -g -F 999",
    .cold_rows = 100000,
    .key_rows = 20000,
    .retention_rows = 100000,
    .big64k_rows = 2000,
    .big1m_rows = 300,
    .fast_rate = 10000,
    .fast_producers = 32,
    .fast_seconds = 30,
    .sparse_rate = 20,
    .sparse_seconds = 20,
    .cost_producers = {8, 32},
    .ncost = 2,
    .db_cost_seconds = 15,
    .db_cost_drain_rows = 100000,
};

/* ---- results: one CSV row each, printed as the table ---- */

struct result {
    char section[16];
    char metric[40];
    char value[160]; /* formatted number, or text for conditions */
    char unit[16];
};

static struct result results[MAX_RESULTS];
static int nresults;

static void bench_record_text(const char *section, const char *metric, const char *unit,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void bench_record_text(const char *section, const char *metric, const char *unit,
                              const char *fmt, ...)
{
    ck_assert_int_lt(nresults, MAX_RESULTS);
    struct result *r = &results[nresults++];
    snprintf(r->section, sizeof r->section, "%s", section);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->value, sizeof r->value, fmt, ap);
    va_end(ap);
    /* CSV without quoting: keep text free of separators. */
    for (char *p = r->value; *p; p++)
        if (*p == ',' || *p == '\n' || *p == '"')
            *p = ';';
}

static void bench_record(const char *section, const char *metric, const char *unit, double value)
{
    int decimals = fabs(value) >= 100 || value == floor(value) ? 0 : fabs(value) >= 1 ? 2 : 4;
    bench_record_text(section, metric, unit, "%.*f", decimals, value);
}

/* ---- clocks and /proc ---- */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void sleep_until(double mono)
{
    struct timespec ts = {.tv_sec = (time_t)mono,
                          .tv_nsec = (long)((mono - (double)(time_t)mono) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static double clock_tick(void)
{
    return (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of a process (all its threads); with_children adds its reaped children. */
static double proc_cpu_s(pid_t pid, bool with_children, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    char state;
    int parent;
    unsigned long long utime, stime;
    long long cutime, cstime;
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &state,
               &parent, &utime, &stime, &cutime, &cstime) != 6)
        return -1;
    if (ppid)
        *ppid = parent;
    double ticks = (double)(utime + stime);
    if (with_children)
        ticks += (double)(cutime + cstime);
    return ticks / clock_tick();
}

/*
 * The relay's loop thread (tid = pid) from /proc/<pid>/task/<pid>/schedstat:
 * ns on a CPU, ns runnable but waiting for one, and the times it was
 * scheduled in. What the scheduler, not the relay, adds to latency.
 */
struct sched_take {
    double wait_s, slices;
};

static void sched_take(pid_t pid, struct sched_take *t)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/schedstat", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long long run = 0, wait = 0, slices = 0;
    if (f) {
        if (fscanf(f, "%llu %llu %llu", &run, &wait, &slices) != 3)
            run = wait = slices = 0;
        fclose(f);
    }
    t->wait_s = (double)wait / 1e9;
    t->slices = (double)slices;
}

/* A "Name:   N kB" line of /proc/<pid>/status in MB, or -1. */
static double proc_status_mb(pid_t pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    double mb = -1;
    size_t len = strlen(name);
    while (fgets(line, sizeof line, f)) {
        long kb;
        if (strncmp(line, name, len) == 0 && line[len] == ':' &&
            sscanf(line + len + 1, "%ld kB", &kb) == 1)
            mb = kb / 1024.0;
    }
    fclose(f);
    return mb;
}

/* Peak resident set (VmHWM) in MB: shared library pages included. */
static double proc_peak_rss_mb(pid_t pid)
{
    return proc_status_mb(pid, "VmHWM");
}

/*
 * The kernel keeps no peak of the anonymous part (the relay's own memory,
 * without the ~9 MB of shared libraries VmHWM counts): a thread samples
 * RssAnon every 10 ms.
 */
struct anon_sampler {
    pthread_t thread;
    pid_t pid;
    atomic_bool stop;
    double peak_mb;
};

static void *anon_sampler_main(void *arg)
{
    struct anon_sampler *a = arg;
    while (!atomic_load(&a->stop)) {
        double mb = proc_status_mb(a->pid, "RssAnon");
        if (mb > a->peak_mb)
            a->peak_mb = mb;
        sleep_ms(10);
    }
    return NULL;
}

static void anon_sampler_start(struct anon_sampler *a, pid_t pid)
{
    a->pid = pid;
    a->peak_mb = -1;
    atomic_store(&a->stop, false);
    ck_assert_int_eq(pthread_create(&a->thread, NULL, anon_sampler_main, a), 0);
}

static double anon_sampler_stop(struct anon_sampler *a)
{
    atomic_store(&a->stop, true);
    pthread_join(a->thread, NULL);
    return a->peak_mb;
}

/* PostgreSQL as a whole: the postmaster, its reaped children, its live backends. */
static double postgres_cpu_s(void)
{
    pid_t pm = it_pg_pid();
    double total = proc_cpu_s(pm, true, NULL);
    DIR *d = opendir("/proc");
    if (!d)
        return total;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid = atoi(e->d_name);
        pid_t parent = 0;
        if (pid <= 0 || pid == pm)
            continue;
        double cpu = proc_cpu_s(pid, false, &parent);
        if (cpu >= 0 && parent == pm)
            total += cpu;
    }
    closedir(d);
    return total;
}

/* Busy CPU seconds of the whole machine (every process, ours and other people's). */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1;
    /* user nice system idle iowait irq softirq steal: idle and iowait are not busy. */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clock_tick();
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Where the CPU went during a phase: the relay, PostgreSQL, nats-server, us, everyone else. */
struct cpu_split {
    double relay, postgres, nats, bench, machine;
};

static void cpu_split_take(struct cpu_split *s, pid_t relay)
{
    s->relay = relay > 0 ? proc_cpu_s(relay, false, NULL) : 0;
    s->postgres = postgres_cpu_s();
    s->nats = proc_cpu_s(it_nats_pid(), false, NULL);
    s->bench = self_cpu_s();
    s->machine = machine_busy_s();
}

static void cpu_split_record(const char *section, const struct cpu_split *a,
                             const struct cpu_split *b, double seconds)
{
    double relay = b->relay - a->relay, pg = b->postgres - a->postgres, nats = b->nats - a->nats;
    double bench = b->bench - a->bench, machine = b->machine - a->machine;
    bench_record(section, "relay_cpu_s", "s", relay);
    bench_record(section, "postgres_cpu_s", "s", pg);
    bench_record(section, "nats_server_cpu_s", "s", nats);
    bench_record(section, "bench_cpu_s", "s", bench);
    /* The machine is shared: what every other process (and interrupt work) took. */
    bench_record(section, "others_cpu_s", "s", fmax(0, machine - relay - pg - nats - bench));
    bench_record(section, "machine_busy_pct", "%",
                 100.0 * machine / (seconds * sysconf(_SC_NPROCESSORS_ONLN)));
}

static void text_of_file_line(const char *path, const char *prefix, char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    size_t plen = strlen(prefix);
    while (fgets(line, sizeof line, f)) {
        char *at = strstr(line, prefix);
        if (at == NULL)
            continue;
        char *v = at + plen;
        while (*v == ' ' || *v == '\t' || *v == ':')
            v++;
        v[strcspn(v, "\n")] = '\0';
        snprintf(out, len, "%s", v);
        break;
    }
    fclose(f);
}

/* ---- PostgreSQL helpers ---- */

static const char *pg_show(PGconn *conn, const char *setting, char *buf, size_t len)
{
    PGresult *res = it_pg_query(conn, "SHOW %s", setting);
    snprintf(buf, len, "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "?");
    PQclear(res);
    return buf;
}

/* A payload expression of `bytes` distinct bytes per row g (generate_series). */
static void sql_payload_expr_of(int bytes, char *buf, size_t len)
{
    snprintf(buf, len, "substring(decode(repeat(md5(g::text), %d), 'hex') FROM 1 FOR %d)",
             bytes / 16 + 1, bytes);
}

static void sql_payload_expr(char *buf, size_t len)
{
    sql_payload_expr_of(opt.payload_bytes, buf, len);
}

/*
 * The producers' statement: created_at is clock_timestamp() (what the column
 * default would give) and the payload starts with the same instant in
 * microseconds, so a consumer can subtract it from its receipt time. The
 * rest of the payload ($2) pads it to opt.payload_bytes; $3 is the event id.
 */
#define PRODUCER_INSERT_SQL                                                                        \
    "INSERT INTO outbox (event_id, subject, payload, created_at) "                                 \
    "SELECT $3::text, $1::text, convert_to(lpad(((extract(epoch FROM t) * "                        \
    "1000000)::bigint)::text, 16, "                                                                \
    "'0'), 'UTF8') || $2::bytea, t FROM (SELECT clock_timestamp() AS t) AS now"

/*
 * Committed transactions in the database so far (the relay runs each query as
 * one). Backends report at commit with a short delay and at exit: read it
 * once the relay has exited.
 */
static int64_t pg_xact_commits(PGconn *conn)
{
    return it_pg_int(conn, "SELECT xact_commit FROM pg_stat_database"
                           " WHERE datname = current_database()");
}

static void pg_checkpoint(PGconn *conn)
{
    it_pg_exec(conn, "CHECKPOINT");
}

/* ---- JetStream helpers ---- */

static natsConnection *nats_connect_asap(bool send_asap)
{
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, it_nats_url());
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(o, send_asap);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, 5000);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    ck_assert_msg(s == NATS_OK, "connect %s: %s", it_nats_url(), natsStatus_GetText(s));
    return nc;
}

static natsConnection *nats_connect(void)
{
    return nats_connect_asap(false);
}

static jsCtx *js_context(natsConnection *nc)
{
    jsCtx *js = NULL;
    natsStatus s = natsConnection_JetStream(&js, nc, NULL);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));
    return js;
}

/* A push consumer of what the stream stores from now on, without acks. */
static void new_messages_of(jsSubOptions *so, const char *stream)
{
    jsSubOptions_Init(so);
    so->Stream = stream;
    so->Config.DeliverPolicy = js_DeliverNew;
    so->Config.AckPolicy = js_AckNone;
}

/* ---- relay processes ---- */

static bool relay_is_leader(void *arg)
{
    return it_relay_log_contains(arg, "became leader");
}

static struct it_relay *relay_start_leader(void)
{
    struct it_relay *relay = it_relay_start(opt.relay_env, NULL);
    if (!it_wait_until(relay_is_leader, relay, 30000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay did not become leader within 30 s");
    }
    return relay;
}

static void relay_stop(struct it_relay *relay)
{
    it_relay_signal(relay, SIGTERM);
    if (!it_relay_wait(relay, 30000)) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay did not exit within 30 s of SIGTERM");
    }
    if (it_relay_exit_code(relay) != 0) {
        it_relay_dump_log(relay);
        ck_abort_msg("the relay exited with %d after SIGTERM", it_relay_exit_code(relay));
    }
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* ---- 1a. raw JetStream publish rate (J) ---- */

struct raw_acks {
    atomic_long ok;
    atomic_long failed;
};

static void raw_on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    struct raw_acks *acks = closure;
    if (pa != NULL)
        atomic_fetch_add(&acks->ok, 1);
    else
        atomic_fetch_add(&acks->failed, 1);
    natsMsg_Destroy(msg);
}

/* Async-publishes `msgs` messages of `bytes` each with a window of `window`; msgs/s. */
static double raw_js_rate(int msgs, int bytes, int window)
{
    const char *subjects[] = {"raw.>", NULL};
    it_js_add_stream(RAW_STREAM, subjects);

    natsConnection *nc = nats_connect();
    struct raw_acks acks = {0};
    jsOptions jo;
    jsOptions_Init(&jo);
    /* A full window: past MaxPending a publish waits (StallWait) for room rather than fail. */
    jo.PublishAsync.MaxPending = window;
    jo.PublishAsync.StallWait = 60000;
    jo.PublishAsync.AckHandler = raw_on_ack;
    jo.PublishAsync.AckHandlerClosure = &acks;
    jsCtx *js = NULL;
    natsStatus s = natsConnection_JetStream(&js, nc, &jo);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));

    unsigned char *payload = malloc((size_t)bytes);
    ck_assert_ptr_nonnull(payload);
    for (int i = 0; i < bytes; i++)
        payload[i] = (unsigned char)(i * 31 + 7);
    unsigned run = (unsigned)wall_now_us();

    progress("raw JetStream: %d async publishes of %d B, window %d", msgs, bytes, window);
    double t0 = mono_now();
    for (int i = 0; i < msgs; i++) {
        /* The relay's ids are UUID text: the same length here. */
        char id[40];
        snprintf(id, sizeof id, "%08x-0000-4000-8000-%012x", run, (unsigned)i);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        /* No MaxWait, like the relay: it keeps the PubAck deadline itself (nats.c would keep a
         * timeout record per publish until the deadline, acked or not). */
        po.MsgId = id;
        s = js_PublishAsync(js, RAW_SUBJECT, payload, bytes, &po);
        ck_assert_msg(s == NATS_OK, "publish %d: %s", i, natsStatus_GetText(s));
    }
    jsPubOptions done;
    jsPubOptions_Init(&done);
    done.MaxWait = 120000;
    s = js_PublishAsyncComplete(js, &done);
    double seconds = mono_now() - t0;
    ck_assert_msg(s == NATS_OK, "waiting for PubAcks: %s", natsStatus_GetText(s));
    ck_assert_int_eq(atomic_load(&acks.failed), 0);
    ck_assert_int_eq(atomic_load(&acks.ok), msgs);
    ck_assert_int_eq(it_js_stream_msgs(RAW_STREAM), msgs);

    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(payload);
    jsErrCode jerr = 0;
    s = js_DeleteStream(it_js(), RAW_STREAM, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "delete stream: %s", natsStatus_GetText(s));
    return msgs / seconds;
}

static int cmp_double(const void *a, const void *b);

/*
 * The floor under the relay's delivery latency: a message published on its
 * own (written at once) into a file stream, to a push consumer's receipt.
 * One every millisecond, as a relay at its tail sends them.
 */
static void raw_js_latency(int msgs)
{
    const char *subjects[] = {"raw.>", NULL};
    it_js_add_stream(RAW_STREAM, subjects);
    natsConnection *pub = nats_connect_asap(true), *nc = nats_connect();
    jsCtx *js = js_context(nc);
    jsSubOptions so;
    new_messages_of(&so, RAW_STREAM);
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(&sub, js, RAW_SUBJECT, NULL, &so, &jerr);
    ck_assert_msg(s == NATS_OK, "subscribe: %s (%d)", natsStatus_GetText(s), (int)jerr);
    double *ms = calloc((size_t)msgs, sizeof *ms);
    ck_assert_ptr_nonnull(ms);
    progress("raw JetStream delivery latency: %d messages", msgs);
    for (int i = 0; i < msgs; i++) {
        double t0 = mono_now();
        s = natsConnection_PublishString(pub, RAW_SUBJECT, "latency");
        ck_assert_msg(s == NATS_OK, "publish: %s", natsStatus_GetText(s));
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sub, 5000);
        ck_assert_msg(s == NATS_OK, "receipt: %s", natsStatus_GetText(s));
        ms[i] = (mono_now() - t0) * 1000.0;
        natsMsg_Destroy(m);
        sleep_ms(1);
    }
    qsort(ms, (size_t)msgs, sizeof *ms, cmp_double);
    bench_record("raw", "js_delivery_p50_ms", "ms", ms[msgs / 2]);
    bench_record("raw", "js_delivery_p99_ms", "ms", ms[msgs * 99 / 100]);
    free(ms);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsConnection_Destroy(pub);
    s = js_DeleteStream(it_js(), RAW_STREAM, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "delete stream: %s", natsStatus_GetText(s));
}

static double bench_raw_js(void)
{
    raw_js_latency(1000);
    double rate = raw_js_rate(opt.raw_js_msgs, opt.payload_bytes, opt.js_window);
    bench_record("raw", "js_msgs", "msgs", opt.raw_js_msgs);
    bench_record("raw", "js_window", "msgs", opt.js_window);
    bench_record("raw", "J_js_publish_rate", "msgs/s", rate);
    return rate;
}

/* ---- 1b. raw PostgreSQL marking rate (M) ---- */

struct strbuf {
    char *s;
    size_t n, cap;
};

static void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct strbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)len + 1 > b->cap) {
        b->cap = (b->cap + (size_t)len + 1) * 2;
        b->s = realloc(b->s, b->cap);
        ck_assert_ptr_nonnull(b->s);
    }
    memcpy(b->s + b->n, tmp, (size_t)len + 1);
    b->n += (size_t)len;
}

static double bench_raw_pg(PGconn *conn)
{
    char payload[160];
    sql_payload_expr(payload, sizeof payload);
    it_pg_exec(conn, "DROP TABLE IF EXISTS bench_copy");
    it_pg_exec(conn, "CREATE TABLE bench_copy (LIKE outbox INCLUDING ALL)");
    it_pg_exec(conn,
               "INSERT INTO bench_copy (subject, payload) SELECT 'bench.raw', %s"
               " FROM generate_series(1, %d) AS g",
               payload, opt.raw_pg_rows);
    /* The same preparation as the drain's backlog: none but a clean start. */
    pg_checkpoint(conn);
    int64_t first = it_pg_int(conn, "SELECT min(id) FROM bench_copy");
    ck_assert_int_eq(it_pg_int(conn, "SELECT max(id) FROM bench_copy") - first + 1,
                     opt.raw_pg_rows);

    /* The relay's own mark statement on the copy, on a session set up as the relay sets its own
     * (plans fixed whatever the statistics say, asynchronous commit): what PostgreSQL can do for
     * the relay's marks, not for a statement the relay does not run. */
    struct relay_config cfg;
    it_relay_config(&cfg, (const char *[]){"--table", "bench_copy", NULL});
    struct outbox_sql statements;
    outbox_sql_build(&statements, &cfg, &claimer_message_limits);
    config_free(&cfg);
    const char *sql = statements.mark_published;
    PGconn *marker = it_pg_connect();
    PGresult *set = PQexec(marker, outbox_session_sql);
    ck_assert_msg(PQresultStatus(set) == PGRES_TUPLES_OK, "session: %s", PQresultErrorMessage(set));
    PQclear(set);

    /* The array literals are built before the clock starts: M is PostgreSQL's part. */
    int nbatches = (opt.raw_pg_rows + opt.mark_batch - 1) / opt.mark_batch;
    struct strbuf(*params)[3] = calloc((size_t)nbatches, sizeof *params);
    ck_assert_ptr_nonnull(params);
    double at = (double)wall_now_us() / 1e6;
    for (int b = 0; b < nbatches; b++) {
        for (int k = 0; k < 3; k++)
            sb_printf(&params[b][k], "{");
        for (int i = b * opt.mark_batch; i < (b + 1) * opt.mark_batch && i < opt.raw_pg_rows; i++) {
            const char *sep = i > b * opt.mark_batch ? "," : "";
            sb_printf(&params[b][0], "%s%" PRId64, sep, first + i);
            sb_printf(&params[b][1], "%s%d", sep, i + 1);
            sb_printf(&params[b][2], "%s%lld", sep, (long long)(at * 1e6) + i * 10);
        }
        for (int k = 0; k < 3; k++)
            sb_printf(&params[b][k], "}");
    }

    progress("raw PostgreSQL: marking %d rows, %d per UPDATE", opt.raw_pg_rows, opt.mark_batch);
    int64_t marked = 0;
    double t0 = mono_now();
    for (int b = 0; b < nbatches; b++) {
        const char *values[3] = {params[b][0].s, params[b][1].s, params[b][2].s};
        PGresult *res = PQexecParams(marker, sql, 3, NULL, values, NULL, NULL, 0);
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "mark: %s",
                      PQresultErrorMessage(res));
        marked += strtoll(PQcmdTuples(res), NULL, 10);
        PQclear(res);
    }
    double seconds = mono_now() - t0;
    PQfinish(marker);
    ck_assert_int_eq(marked, opt.raw_pg_rows);
    for (int b = 0; b < nbatches; b++)
        for (int k = 0; k < 3; k++)
            free(params[b][k].s);
    free(params);
    it_pg_exec(conn, "DROP TABLE bench_copy");

    double rate = opt.raw_pg_rows / seconds;
    bench_record("raw", "pg_rows", "rows", opt.raw_pg_rows);
    bench_record("raw", "mark_batch", "rows", opt.mark_batch);
    bench_record("raw", "M_pg_mark_rate", "rows/s", rate);
    return rate;
}

/* ---- producers (3 and 4) ---- */

/*
 * Per-row timing of a paced run, slot = producer * per_producer + row: when
 * the producer sent the INSERT, when its commit came back, and when the
 * consumer received the message (0: not yet). Event ids carry the slot.
 */
struct row_times {
    int nproducers;
    size_t per_producer;
    int64_t *sent_us;
    int64_t *commit_us;
    int64_t *receipt_us;
};

struct producer {
    pthread_t thread;
    PGconn *conn;
    int index;
    const char *subject;
    const char *tag;    /* event ids: tag-producer-row, unique in the stream's dedup window */
    double start, end;  /* monotonic seconds */
    double interval;    /* paced: seconds between this producer's rows; 0: as fast as it can */
    double offset;      /* paced: this producer's phase within the common schedule */
    unsigned char *pad; /* the payload after the timestamp */
    int pad_len;
    struct row_times *times; /* NULL: not recorded */
    int64_t commits;
    char error[256];
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    char event_id[64];
    const char *values[3] = {p->subject, (const char *)p->pad, event_id};
    int lengths[3] = {0, p->pad_len, 0};
    int formats[3] = {0, 1, 0};
    for (int64_t k = 0;; k++) {
        if (p->interval > 0) {
            /* An absolute schedule: a late row does not push back the ones after it. */
            double due = p->start + p->offset + (double)k * p->interval;
            if (due >= p->end)
                break;
            sleep_until(due);
        } else if (mono_now() >= p->end) {
            break;
        }
        snprintf(event_id, sizeof event_id, "%s-%d-%" PRId64, p->tag, p->index, k);
        int64_t sent = wall_now_us();
        PGresult *res = PQexecPrepared(p->conn, "bench_insert", 3, values, lengths, formats, 0);
        int64_t committed = wall_now_us();
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            snprintf(p->error, sizeof p->error, "%s", PQresultErrorMessage(res));
            PQclear(res);
            break;
        }
        PQclear(res);
        if (p->times && (size_t)k < p->times->per_producer) {
            size_t slot = (size_t)p->index * p->times->per_producer + (size_t)k;
            p->times->sent_us[slot] = sent;
            p->times->commit_us[slot] = committed;
        }
        p->commits++;
    }
    return NULL;
}

/* The producers' PostgreSQL backends' CPU seconds during the last producers_run. */
static double producers_pg_cpu_s;

/* Runs n producers for `seconds`, at `rate` rows/s in total (0: unpaced). */
static int64_t producers_run(int n, const char *tag, const char *subject, double rate,
                             double seconds, struct row_times *times, double *elapsed)
{
    struct producer *ps = calloc((size_t)n, sizeof *ps);
    ck_assert_ptr_nonnull(ps);
    int pad_len = opt.payload_bytes - STAMP_DIGITS;
    unsigned char *pad = malloc((size_t)pad_len + 1);
    ck_assert_ptr_nonnull(pad);
    for (int i = 0; i < pad_len; i++)
        pad[i] = (unsigned char)('a' + i % 26);
    for (int i = 0; i < n; i++) {
        ps[i].conn = it_pg_connect();
        PGresult *res = PQprepare(ps[i].conn, "bench_insert", PRODUCER_INSERT_SQL, 3, NULL);
        ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "prepare: %s",
                      PQresultErrorMessage(res));
        PQclear(res);
    }
    double backends0 = 0;
    for (int i = 0; i < n; i++)
        backends0 += proc_cpu_s(PQbackendPID(ps[i].conn), false, NULL);
    double start = mono_now() + 0.05;
    for (int i = 0; i < n; i++) {
        struct producer *p = &ps[i];
        p->index = i;
        p->tag = tag;
        p->subject = subject;
        p->start = start;
        p->end = start + seconds;
        p->pad = pad;
        p->pad_len = pad_len;
        p->times = times;
        if (rate > 0) {
            p->interval = n / rate;
            p->offset = i / rate;
        }
        ck_assert_int_eq(pthread_create(&p->thread, NULL, producer_main, p), 0);
    }
    int64_t commits = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(ps[i].thread, NULL);
        commits += ps[i].commits;
    }
    *elapsed = mono_now() - start;
    producers_pg_cpu_s = -backends0;
    for (int i = 0; i < n; i++)
        producers_pg_cpu_s += proc_cpu_s(PQbackendPID(ps[i].conn), false, NULL);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(ps[i].error[0] == '\0', "producer %d: %s", i, ps[i].error);
        PQfinish(ps[i].conn);
    }
    free(pad);
    free(ps);
    return commits;
}

/* ---- 2. drain ---- */

static pid_t perf_start(pid_t relay)
{
    /* System-wide (-a) records until SIGINT; otherwise it follows the relay alone. */
    char cmd[1024], target[32] = "";
    if (!strstr(opt.perf_args, "-a"))
        snprintf(target, sizeof target, "-p %d", (int)relay);
    snprintf(cmd, sizeof cmd, "exec perf record %s %s -o '%s' > '%s.log' 2>&1", opt.perf_args,
             target, opt.perf_drain, opt.perf_drain);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void perf_stop(pid_t pid)
{
    /* perf record finishes its file on SIGINT. */
    kill(pid, SIGINT);
    waitpid(pid, NULL, 0);
}

struct stream_wait {
    uint64_t want, seen;
};

static bool stream_reached(void *arg)
{
    struct stream_wait *w = arg;
    w->seen = it_js_stream_msgs(STREAM);
    return w->seen >= w->want;
}

/* 5. CPU of the relay over opt.idle_seconds with no rows to relay. */
static void idle_window(struct it_relay *relay, const char *prefix)
{
    char metric[40];
    double cpu0 = proc_cpu_s(relay->pid, false, NULL);
    double t0 = mono_now();
    sleep_ms(opt.idle_seconds * 1000); /* the measurement window itself */
    double cpu = proc_cpu_s(relay->pid, false, NULL) - cpu0;
    double seconds = mono_now() - t0;
    snprintf(metric, sizeof metric, "%sseconds", prefix);
    bench_record("idle", metric, "s", seconds);
    snprintf(metric, sizeof metric, "%srelay_cpu_s", prefix);
    bench_record("idle", metric, "s", cpu);
    snprintf(metric, sizeof metric, "%srelay_cpu_pct", prefix);
    bench_record("idle", metric, "%", 100.0 * cpu / seconds);
}

static void bench_drain(PGconn *conn, double limit)
{
    char payload[160];
    sql_payload_expr(payload, sizeof payload);
    it_pg_exec(conn, "TRUNCATE outbox");
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload) SELECT 'bench.drain', %s"
               " FROM generate_series(1, %d) AS g",
               payload, opt.drain_rows);
    /* No ANALYZE: a backlog is drained as the application left it. */
    pg_checkpoint(conn);
    uint64_t before = it_js_stream_msgs(STREAM);

    progress("drain: %d rows", opt.drain_rows);
    struct cpu_split c0, c1;
    cpu_split_take(&c0, 0);
    double t0 = mono_now();
    int64_t xacts0 = pg_xact_commits(conn);
    struct it_relay *relay = it_relay_start(opt.relay_env, NULL);
    pid_t perf = opt.perf_drain ? perf_start(relay->pid) : 0;
    struct anon_sampler anon;
    anon_sampler_start(&anon, relay->pid);
    int timeout_ms = 120000 + opt.drain_rows / 100;
    /* Cheap polling first (the stream's message count), then the table: done = all published. */
    struct stream_wait w = {.want = before + (uint64_t)opt.drain_rows};
    if (!it_wait_until(stream_reached, &w, timeout_ms))
        ck_abort_msg("drain: %llu of %d rows reached the stream within %d ms",
                     (unsigned long long)(w.seen - before), opt.drain_rows, timeout_ms);
    int64_t published = it_pg_wait_int(
        conn, "SELECT count(*) FROM outbox WHERE status = 'published'", opt.drain_rows, timeout_ms);
    double seconds = mono_now() - t0;
    cpu_split_take(&c1, relay->pid);
    double peak_anon = anon_sampler_stop(&anon);
    if (perf)
        perf_stop(perf);
    ck_assert_int_eq(published, opt.drain_rows);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'"), 0);

    double rate = opt.drain_rows / seconds;
    bench_record("drain", "rows", "rows", opt.drain_rows);
    bench_record("drain", "seconds", "s", seconds);
    bench_record("drain", "drain_rate", "rows/s", rate);
    bench_record("drain", "ratio_to_L", "x", rate / limit);
    bench_record("drain", "relay_peak_rss_mb", "MB", proc_peak_rss_mb(relay->pid));
    bench_record("drain", "relay_peak_anon_mb", "MB", peak_anon);
    cpu_split_record("drain", &c0, &c1, seconds);

    /* The same relay right after the drain: nothing left to do in the table; whatever it still
     * spends is cleanup after the burst. */
    progress("after the drain: %d s", opt.idle_seconds);
    idle_window(relay, "after_drain_");
    relay_stop(relay);
    /* Includes the relay's few queries while idle and the bench's own polls: approximate. */
    double xacts = (double)(pg_xact_commits(conn) - xacts0);
    bench_record("drain", "relay_pg_xacts", "xacts", xacts);
    bench_record("drain", "rows_per_relay_xact", "rows", opt.drain_rows / xacts);
}

/* ---- 6. workload shapes of issues 10 and 11: cold backlog, hot key, big payloads ---- */

/* What the planner knows of a backlog when the relay starts on it. */
enum backlog_stats {
    STATS_NONE,     /* no ANALYZE since the table was emptied: what every shape drains */
    STATS_STALE,    /* analyzed when it held only published rows, as a live outbox is */
    STATS_ANALYZED, /* VACUUM ANALYZE after the inserts: the cold shape's reference only */
};

/* `rows` pending rows of `bytes` each, in statements of at most ~64 MB. */
static void backlog_insert(PGconn *conn, int rows, int bytes, const char *key_sql)
{
    char payload[160];
    sql_payload_expr_of(bytes, payload, sizeof payload);
    int chunk = bytes > 0 ? (64 << 20) / bytes : rows;
    if (chunk < 1)
        chunk = 1;
    for (int from = 1; from <= rows; from += chunk) {
        int to = from + chunk - 1 < rows ? from + chunk - 1 : rows;
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, ordering_key, payload)"
                   " SELECT 'bench.shape', %s, %s FROM generate_series(%d, %d) AS g",
                   key_sql, payload, from, to);
    }
}

/*
 * A backlog built while no relay runs: `rows` pending rows of `bytes` each,
 * ordering_key = key_sql (an SQL expression of g, or NULL). Autovacuum is
 * off for the table until the next build, so nothing analyzes it behind
 * the bench's back.
 */
/* An empty table nothing analyzes behind the bench's back until the next drain ends. */
static void backlog_reset(PGconn *conn)
{
    it_pg_exec(conn, "TRUNCATE outbox");
    it_pg_exec(conn, "ALTER TABLE outbox SET (autovacuum_enabled = false)");
}

static void backlog_build(PGconn *conn, int rows, int bytes, const char *key_sql,
                          enum backlog_stats stats)
{
    backlog_reset(conn);
    if (stats == STATS_STALE) {
        it_pg_exec(conn, "INSERT INTO outbox (subject, status, published_at, stream_seq)"
                         " SELECT 'bench.history', 'published', now(), 0"
                         " FROM generate_series(1, 1000)");
        it_pg_exec(conn, "VACUUM ANALYZE outbox");
    }
    backlog_insert(conn, rows, bytes, key_sql);
    if (stats == STATS_ANALYZED)
        it_pg_exec(conn, "VACUUM ANALYZE outbox");
    pg_checkpoint(conn);
}

struct shape_drain {
    double seconds, rate, peak_rss_mb;
};

/* A relay started on the backlog (the clock starts before its spawn) until every row is published.
 */
static void shape_drain_env(PGconn *conn, const char *what, int rows, const char *const *extra,
                            struct shape_drain *out)
{
    const char *env[MAX_RELAY_ENV + 8];
    int n = 0;
    for (int i = 0; i < opt.nrelay_env; i++)
        env[n++] = opt.relay_env[i];
    for (; extra != NULL && *extra != NULL && n < MAX_RELAY_ENV + 7; extra++)
        env[n++] = *extra;
    env[n] = NULL;
    uint64_t before = it_js_stream_msgs(STREAM);
    progress("%s: %d rows", what, rows);
    double t0 = mono_now();
    struct it_relay *relay = it_relay_start(env, NULL);
    int timeout_ms = 300000 + rows / 10;
    struct stream_wait w = {.want = before + (uint64_t)rows};
    if (!it_wait_until(stream_reached, &w, timeout_ms))
        ck_abort_msg("%s: %llu of %d rows reached the stream within %d ms", what,
                     (unsigned long long)(w.seen - before), rows, timeout_ms);
    int64_t left = it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'",
                                  0, timeout_ms);
    out->seconds = mono_now() - t0;
    out->rate = rows / out->seconds;
    out->peak_rss_mb = proc_peak_rss_mb(relay->pid);
    relay_stop(relay);
    it_pg_exec(conn, "ALTER TABLE outbox RESET (autovacuum_enabled)");
    ck_assert_msg(left == 0, "%s: %lld rows not published", what, (long long)left);
}

static void shape_drain(PGconn *conn, const char *what, int rows, struct shape_drain *out)
{
    shape_drain_env(conn, what, rows, NULL, out);
}

/*
 * Issue 12: what retention costs a drain running at the same time. The same
 * backlog drains twice next to `retention_rows` published rows a week old:
 * once with retention off, once with the leader pruning them (batches every
 * 100 ms, the default batch size).
 */
static void bench_retention(PGconn *conn, double limit)
{
    int backlog = opt.retention_rows / 2;
    struct shape_drain off, on;
    const char *env_off[] = {"OUTBOX_RETENTION=0", NULL};
    const char *env_on[] = {"OUTBOX_RETENTION=7d", "OUTBOX_RETENTION_INTERVAL_MS=100", NULL};
    struct shape_drain *runs[] = {&off, &on};
    const char *const *envs[] = {env_off, env_on};
    int64_t pruned = 0;
    for (int i = 0; i < 2; i++) {
        /* A week of history autovacuum has long since analyzed, then a backlog it has not. */
        backlog_reset(conn);
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, status, published_at, stream_seq, created_at)"
                   " SELECT 'bench.old', 'published', now() - interval '8 days', g,"
                   " now() - interval '8 days' FROM generate_series(1, %d) AS g",
                   opt.retention_rows);
        it_pg_exec(conn, "VACUUM ANALYZE outbox");
        backlog_insert(conn, backlog, opt.payload_bytes, "NULL");
        pg_checkpoint(conn);
        shape_drain_env(conn, i ? "drain while pruning" : "drain, retention off", backlog, envs[i],
                        runs[i]);
        pruned = opt.retention_rows -
                 it_pg_int(conn, "SELECT count(*) FROM outbox WHERE subject = 'bench.old'");
    }
    bench_record("retention", "old_rows", "rows", opt.retention_rows);
    bench_record("retention", "backlog_rows", "rows", backlog);
    bench_record("retention", "drain_rate_off", "rows/s", off.rate);
    bench_record("retention", "drain_rate_pruning", "rows/s", on.rate);
    bench_record("retention", "pruned_during_drain", "rows", (double)pruned);
    bench_record("retention", "ratio_pruning_to_off", "x", on.rate / off.rate);
    bench_record("retention", "ratio_to_L", "x", on.rate / limit);
}

/*
 * Issue 11 §0: a backlog the planner has no statistics for (runs first, on a
 * table never analyzed), one it has stale statistics for (analyzed while
 * only published rows were in it), and the same after ANALYZE.
 */
static void bench_cold(PGconn *conn, double limit)
{
    struct shape_drain cold, stale, analyzed;
    backlog_build(conn, opt.cold_rows, opt.payload_bytes, "NULL", STATS_NONE);
    shape_drain(conn, "cold backlog (table never analyzed)", opt.cold_rows, &cold);
    backlog_build(conn, opt.cold_rows, opt.payload_bytes, "NULL", STATS_STALE);
    shape_drain(conn, "backlog on stale statistics (analyzed when all published)", opt.cold_rows,
                &stale);
    backlog_build(conn, opt.cold_rows, opt.payload_bytes, "NULL", STATS_ANALYZED);
    shape_drain(conn, "the same backlog after VACUUM ANALYZE", opt.cold_rows, &analyzed);
    bench_record("cold", "rows", "rows", opt.cold_rows);
    bench_record("cold", "drain_rate", "rows/s", cold.rate);
    bench_record("cold", "drain_rate_stale", "rows/s", stale.rate);
    bench_record("cold", "drain_rate_analyzed", "rows/s", analyzed.rate);
    /* Goals: >= 0.9. */
    bench_record("cold", "ratio_to_analyzed", "x", cold.rate / analyzed.rate);
    bench_record("cold", "stale_ratio_to_analyzed", "x", stale.rate / analyzed.rate);
    bench_record("cold", "ratio_to_L", "x", cold.rate / limit);
}

/* Issue 11 §3: every row on one ordering_key vs no key. */
static void bench_keyed(PGconn *conn, double limit)
{
    struct shape_drain one, none;
    backlog_build(conn, opt.key_rows, opt.payload_bytes, "'hot'", STATS_NONE);
    shape_drain(conn, "one-key drain", opt.key_rows, &one);
    backlog_build(conn, opt.key_rows, opt.payload_bytes, "NULL", STATS_NONE);
    shape_drain(conn, "no-key drain", opt.key_rows, &none);
    bench_record("keyed", "rows", "rows", opt.key_rows);
    bench_record("keyed", "one_key_rate", "rows/s", one.rate);
    bench_record("keyed", "no_key_rate", "rows/s", none.rate);
    /* Goal: >= 0.5. */
    bench_record("keyed", "ratio_one_to_no_key", "x", one.rate / none.rate);
    bench_record("keyed", "no_key_ratio_to_L", "x", none.rate / limit);
}

/*
 * Issues 10 §1 and 11 §4: rows of `bytes`: the drain in bytes/s next to raw
 * JetStream async publishing of the same count and size (its window capped
 * at ~64 MB in flight), and the relay's peak RSS.
 */
static void bench_big(PGconn *conn, const char *section, int rows, int bytes)
{
    int window = (64 << 20) / bytes;
    if (window > opt.js_window)
        window = opt.js_window;
    if (window < 1)
        window = 1;
    double raw = raw_js_rate(rows, bytes, window) * bytes;
    struct shape_drain d;
    backlog_build(conn, rows, bytes, "NULL", STATS_NONE);
    char what[64];
    snprintf(what, sizeof what, "drain of %d-byte rows", bytes);
    shape_drain(conn, what, rows, &d);
    double mb = 1024.0 * 1024.0;
    bench_record(section, "rows", "rows", rows);
    bench_record(section, "payload_bytes", "B", bytes);
    bench_record(section, "raw_js_window", "msgs", window);
    bench_record(section, "raw_js_mb_s", "MB/s", raw / mb);
    bench_record(section, "drain_mb_s", "MB/s", d.rate * bytes / mb);
    bench_record(section, "drain_rate", "rows/s", d.rate);
    /* Goal: >= 0.5. */
    bench_record(section, "ratio_to_raw", "x", d.rate * bytes / raw);
    bench_record(section, "relay_peak_rss_mb", "MB", d.peak_rss_mb);
}

/* ---- 3. latency under steady load ---- */

struct consumer {
    pthread_mutex_t mu;
    double *latency_ms; /* created_at -> receipt */
    size_t n, cap;
    int64_t malformed;
    struct row_times *times;
    const char *tag; /* event ids: tag-producer-row */
};

/* nats.c's delivery thread: receipt time minus the created_at the payload carries. */
static void consumer_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    int64_t now = wall_now_us();
    struct consumer *c = closure;
    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    char stamp[STAMP_DIGITS + 1];
    bool ok = len >= STAMP_DIGITS;
    if (ok) {
        memcpy(stamp, data, STAMP_DIGITS);
        stamp[STAMP_DIGITS] = '\0';
        ok = strspn(stamp, "0123456789") == STAMP_DIGITS;
    }
    const char *id = NULL;
    int producer = -1;
    long long row = -1;
    size_t tag_len = strlen(c->tag);
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) != NATS_OK ||
        strncmp(id, c->tag, tag_len) != 0 || id[tag_len] != '-' ||
        sscanf(id + tag_len + 1, "%d-%lld", &producer, &row) != 2 || producer < 0 ||
        producer >= c->times->nproducers || row < 0)
        ok = false;
    pthread_mutex_lock(&c->mu);
    if (!ok)
        c->malformed++;
    else if (c->n < c->cap)
        c->latency_ms[c->n++] = (double)(now - strtoll(stamp, NULL, 10)) / 1000.0;
    if (ok && (size_t)row < c->times->per_producer)
        c->times->receipt_us[(size_t)producer * c->times->per_producer + (size_t)row] = now;
    pthread_mutex_unlock(&c->mu);
    natsMsg_Destroy(msg);
}

static size_t consumer_count(struct consumer *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/*
 * 5b. One row after an idle spell, insert -> receipt: the wake-up path of a
 * relay asleep (NOTIFY). Three rounds, 2 s apart; the relay falls asleep
 * again ~10 ms after the last rows.
 */
static void idle_wakeups(natsConnection *nc, PGconn *conn)
{
    enum { ROUNDS = 3 };
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_SubscribeSync(&sub, nc, "bench.wake");
    ck_assert_msg(s == NATS_OK, "subscribe: %s", natsStatus_GetText(s));
    ck_assert(natsConnection_Flush(nc) == NATS_OK);
    double ms[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        if (i > 0)
            sleep_ms(2000); /* idle again */
        double t0 = mono_now();
        it_pg_exec(conn, "INSERT INTO outbox (subject, payload) VALUES ('bench.wake', 'x')");
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sub, 5000);
        ck_assert_msg(s == NATS_OK, "a row after idling did not arrive within 5 s: %s",
                      natsStatus_GetText(s));
        ms[i] = (mono_now() - t0) * 1000.0;
        natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
    qsort(ms, ROUNDS, sizeof ms[0], cmp_double);
    bench_record("idle", "wakeup_p50_ms", "ms", ms[ROUNDS / 2]);
    bench_record("idle", "wakeup_max_ms", "ms", ms[ROUNDS - 1]);
}

/* Nearest-rank percentile of sorted values. */
static double percentile(const double *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return sorted[rank > 0 ? rank - 1 : 0];
}

/*
 * Latency under a steady load of `rate` rows/s from `producers` connections
 * for `seconds`, reported in `section` (also the event id tag and the
 * subject's last token), with the ratio of its p99 to issue 11's goal for
 * that load. `with_idle`: measure the idle window first.
 */
/*
 * The relay's PostgreSQL sessions (application_name outbox-relay): their
 * backends' pids, so that their CPU can be read from /proc before and after.
 */
struct relay_sessions {
    int n;
    pid_t pid[8];
};

static void relay_sessions_find(PGconn *conn, struct relay_sessions *rs)
{
    PGresult *res = it_pg_query(conn, "SELECT pid FROM pg_stat_activity"
                                      " WHERE application_name = 'outbox-relay'");
    rs->n = 0;
    for (int i = 0; i < PQntuples(res) && rs->n < 8; i++)
        rs->pid[rs->n++] = (pid_t)atoi(PQgetvalue(res, i, 0));
    PQclear(res);
}

static double relay_sessions_cpu_s(const struct relay_sessions *rs)
{
    double total = 0;
    for (int i = 0; i < rs->n; i++) {
        double cpu = proc_cpu_s(rs->pid[i], false, NULL);
        if (cpu > 0)
            total += cpu;
    }
    return total;
}

/* Bytes of WAL written so far (the insert position). */
static int64_t wal_bytes(PGconn *conn)
{
    return it_pg_int(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint");
}

/* What a steady run cost, for db_cost: totals over the run. */
struct steady_cost {
    int64_t rows;
    double producers_pg_s, relay_pg_s, relay_s, nats_s, wal_b, p50_ms, p99_ms, achieved;
};

static void bench_steady(PGconn *conn, const char *section, int rate, int producers, int seconds,
                         double p99_goal_ms, const char *latency_out, bool with_idle,
                         struct steady_cost *cost)
{
    char subject[48];
    snprintf(subject, sizeof subject, "bench.%s", section);
    it_pg_exec(conn, "TRUNCATE outbox");
    pg_checkpoint(conn);
    int64_t xacts0 = pg_xact_commits(conn);
    struct it_relay *relay = relay_start_leader();

    struct row_times times = {.nproducers = producers};
    times.per_producer = (size_t)rate * (size_t)seconds / (size_t)producers + 2;
    size_t slots = times.per_producer * (size_t)producers;
    times.sent_us = calloc(slots, sizeof(int64_t));
    times.commit_us = calloc(slots, sizeof(int64_t));
    times.receipt_us = calloc(slots, sizeof(int64_t));
    ck_assert(times.sent_us && times.commit_us && times.receipt_us);
    struct consumer c = {.mu = PTHREAD_MUTEX_INITIALIZER, .times = &times, .tag = section};
    c.cap = slots + 1000;
    c.latency_ms = malloc(c.cap * sizeof *c.latency_ms);
    ck_assert_ptr_nonnull(c.latency_ms);
    natsConnection *nc = nats_connect();
    jsCtx *js = js_context(nc);
    jsSubOptions so;
    new_messages_of(&so, STREAM);
    natsSubscription *sub = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Subscribe(&sub, js, subject, consumer_on_msg, &c, NULL, &so, &jerr);
    ck_assert_msg(s == NATS_OK, "subscribe: %s (%d)", natsStatus_GetText(s), (int)jerr);
    s = natsSubscription_SetPendingLimits(sub, -1, -1);
    ck_assert_msg(s == NATS_OK, "pending limits: %s", natsStatus_GetText(s));

    /* A leader with an empty table, LISTENing, its timers running: true idle. */
    if (with_idle) {
        progress("idle: %d s", opt.idle_seconds);
        idle_window(relay, "");
        idle_wakeups(nc, conn);
    }

    progress("%s: %d rows/s from %d producers for %d s", section, rate, producers, seconds);
    struct cpu_split c0, c1;
    cpu_split_take(&c0, relay->pid);
    struct sched_take s0, s1;
    sched_take(relay->pid, &s0);
    struct anon_sampler anon;
    anon_sampler_start(&anon, relay->pid);
    struct relay_sessions rs;
    relay_sessions_find(conn, &rs);
    double relay_pg0 = relay_sessions_cpu_s(&rs);
    int64_t wal0 = wal_bytes(conn);
    double elapsed;
    int64_t rows = producers_run(producers, section, subject, rate, seconds, &times, &elapsed);
    double producers_pg = producers_pg_cpu_s;
    int64_t deadline = it_now_ms() + 60000;
    while ((int64_t)consumer_count(&c) < rows && it_now_ms() < deadline)
        sleep_ms(20);
    if (cost) {
        /* Every mark written (they commit asynchronously), then the WAL position. */
        it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'", 0, 60000);
        cost->wal_b = (double)(wal_bytes(conn) - wal0);
        cost->relay_pg_s = relay_sessions_cpu_s(&rs) - relay_pg0;
        cost->producers_pg_s = producers_pg;
    }
    cpu_split_take(&c1, relay->pid);
    sched_take(relay->pid, &s1);
    double peak_rss = proc_peak_rss_mb(relay->pid);
    double peak_anon = anon_sampler_stop(&anon);
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    relay_stop(relay);
    /* Less the producers' own commits: what the relay ran (approximately: autovacuum too). */
    double relay_xacts = (double)(pg_xact_commits(conn) - xacts0 - rows);

    size_t n = consumer_count(&c);
    ck_assert_int_eq(c.malformed, 0);
    ck_assert_msg((int64_t)n == rows, "%s: %zu of %lld rows received", section, n, (long long)rows);
    ck_assert_int_gt(n, 0);
    /* The stamp in the payload is the row's created_at to the microsecond. */
    ck_assert_int_eq(it_pg_int(conn,
                               "SELECT count(*) FROM outbox WHERE subject = '%s' AND "
                               "convert_from(substring(payload FROM 1 FOR 16), 'UTF8')::bigint <> "
                               "(extract(epoch FROM created_at) * 1000000)::bigint",
                               subject),
                     0);

    qsort(c.latency_ms, n, sizeof *c.latency_ms, cmp_double);
    if (cost) {
        cost->rows = rows;
        cost->relay_s = c1.relay - c0.relay;
        cost->nats_s = c1.nats - c0.nats;
        cost->p50_ms = percentile(c.latency_ms, n, 50);
        cost->p99_ms = percentile(c.latency_ms, n, 99);
        cost->achieved = (double)rows / elapsed;
        free(times.sent_us);
        free(times.commit_us);
        free(times.receipt_us);
        free(c.latency_ms);
        return;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += c.latency_ms[i];
    if (latency_out) {
        FILE *f = fopen(latency_out, "w");
        ck_assert_msg(f != NULL, "%s: %s", latency_out, strerror(errno));
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%.3f\n", c.latency_ms[i]);
        fclose(f);
    }
    bench_record(section, "target_rate", "rows/s", rate);
    bench_record(section, "producers", "conns", producers);
    bench_record(section, "seconds", "s", elapsed);
    bench_record(section, "rows", "rows", (double)rows);
    bench_record(section, "achieved_rate", "rows/s", (double)rows / elapsed);
    bench_record(section, "received", "msgs", (double)n);
    bench_record(section, "p50_ms", "ms", percentile(c.latency_ms, n, 50));
    bench_record(section, "p90_ms", "ms", percentile(c.latency_ms, n, 90));
    bench_record(section, "p99_ms", "ms", percentile(c.latency_ms, n, 99));
    bench_record(section, "max_ms", "ms", c.latency_ms[n - 1]);
    bench_record(section, "mean_ms", "ms", sum / (double)n);
    /* Issue 11's goals for this load: the ratio is <= 1 when met. */
    bench_record(section, "p99_goal_ms", "ms", p99_goal_ms);
    bench_record(section, "p99_to_goal", "x", percentile(c.latency_ms, n, 99) / p99_goal_ms);

    /* Where the time goes: the producer's INSERT + commit, then commit -> receipt (the relay's
     * part, with NATS and the consumer). */
    double *insert_ms = malloc(slots * sizeof(double)), *after_ms = malloc(slots * sizeof(double));
    ck_assert(insert_ms && after_ms);
    size_t ni = 0, na = 0;
    for (size_t i = 0; i < slots; i++) {
        if (times.commit_us[i] == 0)
            continue;
        insert_ms[ni++] = (double)(times.commit_us[i] - times.sent_us[i]) / 1000.0;
        if (times.receipt_us[i] != 0)
            after_ms[na++] = (double)(times.receipt_us[i] - times.commit_us[i]) / 1000.0;
    }
    ck_assert_int_gt(ni, 0);
    ck_assert_int_gt(na, 0);
    qsort(insert_ms, ni, sizeof *insert_ms, cmp_double);
    qsort(after_ms, na, sizeof *after_ms, cmp_double);
    bench_record(section, "insert_commit_p50_ms", "ms", percentile(insert_ms, ni, 50));
    bench_record(section, "insert_commit_p99_ms", "ms", percentile(insert_ms, ni, 99));
    bench_record(section, "commit_to_recv_p50_ms", "ms", percentile(after_ms, na, 50));
    bench_record(section, "commit_to_recv_p90_ms", "ms", percentile(after_ms, na, 90));
    bench_record(section, "commit_to_recv_p99_ms", "ms", percentile(after_ms, na, 99));
    bench_record(section, "commit_to_recv_max_ms", "ms", after_ms[na - 1]);
    free(insert_ms);
    free(after_ms);
    free(times.sent_us);
    free(times.commit_us);
    free(times.receipt_us);
    bench_record(section, "relay_pg_xacts_per_row", "xacts", relay_xacts / (double)rows);
    bench_record(section, "relay_peak_rss_mb", "MB", peak_rss);
    bench_record(section, "relay_peak_anon_mb", "MB", peak_anon);
    cpu_split_record(section, &c0, &c1, elapsed);
    /* Each time the loop thread became runnable (a socket readable, a timer due) it waited this
     * long on average for a CPU before it ran. */
    double slices = s1.slices - s0.slices;
    bench_record(section, "relay_loop_runq_wait_s", "s", s1.wait_s - s0.wait_s);
    bench_record(section, "relay_loop_runq_wait_avg_ms", "ms",
                 slices > 0 ? 1000.0 * (s1.wait_s - s0.wait_s) / slices : 0);
    free(c.latency_ms);
}

/* ---- 4. NOTIFY cost, and the producers' cost at several connection counts (issue 11 §1) ---- */

/*
 * Unpaced single-row producer transactions on n connections: with the
 * shipped sql/ (`trigger`), or the same table and indexes with every user
 * trigger disabled (no wake-up mechanism at all, whatever sql/ ships).
 * Commits/s.
 */
/* Longer than the relay's default fallback poll (1 s). */
#define NOTIFY_WARMUP_SECONDS 2

static double notify_mode(PGconn *conn, bool trigger, struct it_relay *relay, int n)
{
    it_pg_exec(conn, "ALTER TABLE outbox %s TRIGGER USER", trigger ? "ENABLE" : "DISABLE");
    pg_checkpoint(conn);
    progress("producer cost: triggers %s, %d producers unpaced for %d s", trigger ? "on" : "off", n,
             opt.notify_seconds);
    /* A warm-up, not counted: in both modes the relay is awake and relaying when the measured
     * window starts (without the trigger, a sleeping relay finds the first rows only at its
     * fallback poll, and sleeps meanwhile: a cheaper relay, a faster baseline). */
    double elapsed;
    producers_run(n, trigger ? "warm-on" : "warm-off", "bench.notify", 0, NOTIFY_WARMUP_SECONDS,
                  NULL, &elapsed);
    int64_t commits = producers_run(n, trigger ? "notify-on" : "notify-off", "bench.notify", 0,
                                    opt.notify_seconds, NULL, &elapsed);
    if (relay) {
        /* Each mode starts from an empty backlog; poll-only catches up within its interval. */
        int64_t left = it_pg_wait_int(
            conn, "SELECT count(*) FROM outbox WHERE status <> 'published'", 0, 120000);
        ck_assert_msg(left == 0, "notify cost: %lld rows still pending", (long long)left);
    }
    ck_assert_int_gt(commits, 0);
    return (double)commits / elapsed;
}

static void bench_notify(PGconn *conn)
{
    it_pg_exec(conn, "TRUNCATE outbox");
    struct it_relay *relay = opt.notify_relay ? relay_start_leader() : NULL;
    double with = notify_mode(conn, true, relay, opt.producers);
    double without = notify_mode(conn, false, relay, opt.producers);
    /* The same at each connection count of issue 11 (the one above is reused). */
    double cost_with[MAX_COST_RUNS], cost_without[MAX_COST_RUNS];
    for (int i = 0; i < opt.ncost; i++) {
        int n = opt.cost_producers[i];
        if (n == opt.producers) {
            cost_with[i] = with;
            cost_without[i] = without;
            continue;
        }
        it_pg_exec(conn, "TRUNCATE outbox");
        cost_with[i] = notify_mode(conn, true, relay, n);
        cost_without[i] = notify_mode(conn, false, relay, n);
    }
    it_pg_exec(conn, "ALTER TABLE outbox ENABLE TRIGGER USER");
    if (relay)
        relay_stop(relay);
    it_pg_exec(conn, "TRUNCATE outbox");
    bench_record_text("notify", "relay_running", "", "%s", opt.notify_relay ? "yes" : "no");
    bench_record("notify", "producers", "conns", opt.producers);
    bench_record("notify", "seconds_each", "s", opt.notify_seconds);
    bench_record("notify", "commit_rate_trigger", "commits/s", with);
    bench_record("notify", "commit_rate_no_trigger", "commits/s", without);
    bench_record("notify", "trigger_cost_pct", "%", 100.0 * (without - with) / without);
    for (int i = 0; i < opt.ncost; i++) {
        char metric[40];
        int n = opt.cost_producers[i];
        snprintf(metric, sizeof metric, "shipped_rate_%dc", n);
        bench_record("prodcost", metric, "commits/s", cost_with[i]);
        snprintf(metric, sizeof metric, "no_trigger_rate_%dc", n);
        bench_record("prodcost", metric, "commits/s", cost_without[i]);
        /* Goal (issue 11): >= 0.9. */
        snprintf(metric, sizeof metric, "ratio_%dc", n);
        bench_record("prodcost", metric, "x", cost_with[i] / cost_without[i]);
    }
}

/* ---- 7. what relaying costs the database (issue 21) ---- */

/* With --pg-stat-statements: every statement's calls, rows and time since the last reset. */
static void statements_dump(PGconn *conn, const char *what)
{
    if (!opt.pg_stat_statements)
        return;
    PGresult *res =
        it_pg_query(conn, "SELECT calls, rows, round(total_exec_time::numeric, 1),"
                          " round((1000 * total_exec_time / calls)::numeric, 1), wal_bytes,"
                          " left(regexp_replace(query, '\\s+', ' ', 'g'), 110)"
                          " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12");
    fprintf(stderr, "bench: %s: pg_stat_statements (calls, rows, total ms, us/call, WAL B)\n",
            what);
    for (int i = 0; i < PQntuples(res); i++)
        fprintf(stderr, "  %8s %8s %9s %7s %10s  %s\n", PQgetvalue(res, i, 0),
                PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
    PQclear(res);
    it_pg_exec(conn, "SELECT pg_stat_statements_reset()");
}

/* The producers alone (no relay): their backends' CPU and the WAL their inserts wrote. */
static void inserts_alone(PGconn *conn, int rate, int producers, int seconds, double *pg_s,
                          double *wal_b, int64_t *rows)
{
    it_pg_exec(conn, "TRUNCATE outbox");
    pg_checkpoint(conn);
    progress("db_cost: inserts alone, %d rows/s from %d producers for %d s", rate, producers,
             seconds);
    int64_t wal0 = wal_bytes(conn);
    double elapsed;
    *rows = producers_run(producers, "alone", "bench.alone", rate, seconds, NULL, &elapsed);
    *wal_b = (double)(wal_bytes(conn) - wal0);
    *pg_s = producers_pg_cpu_s;
    it_pg_exec(conn, "TRUNCATE outbox");
}

/*
 * Per row at a steady rate: the producers' inserts alone (no relay), then
 * the same load relayed. Returns the producers' PostgreSQL CPU (s) and WAL
 * (B) per row of the run alone, the reference for the drain.
 */
static void db_cost_steady(PGconn *conn, const char *name, int rate, int producers,
                           double *insert_pg_s, double *insert_wal_b)
{
    char section[16], metric[40];
    snprintf(section, sizeof section, "db_cost");
    double alone_pg, alone_wal;
    int64_t alone_rows;
    inserts_alone(conn, rate, producers, opt.db_cost_seconds, &alone_pg, &alone_wal, &alone_rows);
    statements_dump(conn, "inserts alone");
    struct steady_cost c = {0};
    char tag[24];
    snprintf(tag, sizeof tag, "dbc%s", name);
    bench_steady(conn, tag, rate, producers, opt.db_cost_seconds, 0, NULL, false, &c);
    statements_dump(conn, "relayed");
    double rows = (double)c.rows, ins_pg = alone_pg / (double)alone_rows,
           ins_wal = alone_wal / (double)alone_rows;
    double relay_pg = c.relay_pg_s / rows, added_wal = c.wal_b / rows - ins_wal;
#define DBC(suffix, unit, value)                                                                   \
    do {                                                                                           \
        snprintf(metric, sizeof metric, "%s_%s", name, suffix);                                    \
        bench_record(section, metric, unit, value);                                                \
    } while (0)
    DBC("achieved_rate", "rows/s", c.achieved);
    DBC("insert_pg_us_row", "us", 1e6 * ins_pg);
    DBC("insert_pg_relayed_us_row", "us", 1e6 * c.producers_pg_s / rows);
    DBC("insert_wal_b_row", "B", ins_wal);
    DBC("relay_pg_us_row", "us", 1e6 * relay_pg);
    DBC("relay_pg_to_insert", "x", relay_pg / ins_pg);
    DBC("wal_added_b_row", "B", added_wal);
    DBC("wal_added_to_insert", "x", added_wal / ins_wal);
    DBC("relay_us_row", "us", 1e6 * c.relay_s / rows);
    DBC("nats_us_row", "us", 1e6 * c.nats_s / rows);
    DBC("p50_ms", "ms", c.p50_ms);
    DBC("p99_ms", "ms", c.p99_ms);
    if (insert_pg_s) {
        *insert_pg_s = ins_pg;
        *insert_wal_b = ins_wal;
    }
}

/* A backlog drained: the relay's sessions (their whole life), the relay, nats-server, WAL. */
static void db_cost_drain(PGconn *conn, double insert_pg_s, double insert_wal_b)
{
    char metric[40];
    const char *name = "drain";
    const char *section = "db_cost";
    int rows = opt.db_cost_drain_rows;
    backlog_build(conn, rows, opt.payload_bytes, "NULL", STATS_NONE);
    statements_dump(conn, "backlog built");
    uint64_t before = it_js_stream_msgs(STREAM);
    progress("db_cost: drain of %d rows", rows);
    double nats0 = proc_cpu_s(it_nats_pid(), false, NULL);
    int64_t wal0 = wal_bytes(conn);
    double t0 = mono_now();
    struct it_relay *relay = it_relay_start(opt.relay_env, NULL);
    struct relay_sessions rs = {0};
    struct stream_wait w = {.want = before + (uint64_t)rows};
    int timeout_ms = 300000;
    /* The relay's sessions start with it: their CPU since they began is the drain's. */
    while (rs.n == 0 && mono_now() - t0 < 30)
        relay_sessions_find(conn, &rs);
    if (!it_wait_until(stream_reached, &w, timeout_ms))
        ck_abort_msg("db_cost drain: %llu of %d rows reached the stream",
                     (unsigned long long)w.seen, rows);
    int64_t left = it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'",
                                  0, timeout_ms);
    double seconds = mono_now() - t0;
    ck_assert_int_eq(left, 0);
    double wal = (double)(wal_bytes(conn) - wal0);
    double relay_pg = relay_sessions_cpu_s(&rs), relay_cpu = proc_cpu_s(relay->pid, false, NULL);
    double nats = proc_cpu_s(it_nats_pid(), false, NULL) - nats0;
    relay_stop(relay);
    it_pg_exec(conn, "ALTER TABLE outbox RESET (autovacuum_enabled)");
    statements_dump(conn, "drain");
    DBC("rows", "rows", rows);
    DBC("rate", "rows/s", rows / seconds);
    DBC("relay_pg_us_row", "us", 1e6 * relay_pg / rows);
    DBC("relay_pg_to_insert", "x", relay_pg / rows / insert_pg_s);
    DBC("wal_added_b_row", "B", wal / rows);
    DBC("wal_added_to_insert", "x", wal / rows / insert_wal_b);
    DBC("relay_us_row", "us", 1e6 * relay_cpu / rows);
    DBC("nats_us_row", "us", 1e6 * nats / rows);
#undef DBC
}

static void bench_db_cost(PGconn *conn)
{
    double insert_pg = 0, insert_wal = 0;
    db_cost_steady(conn, "2k", opt.steady_rate, opt.producers, &insert_pg, &insert_wal);
    if (opt.fast_seconds > 0)
        db_cost_steady(conn, "10k", opt.fast_rate, opt.fast_producers, NULL, NULL);
    if (opt.db_cost_drain_rows > 0)
        db_cost_drain(conn, insert_pg, insert_wal);
}

/* ---- conditions, table, CSV ---- */

static void bench_conditions(PGconn *conn, const char *section_suffix)
{
    char buf[256], line[512];
    if (section_suffix) {
        FILE *f = fopen("/proc/loadavg", "r");
        if (f && fgets(line, sizeof line, f))
            line[strcspn(line, "\n")] = '\0';
        if (f)
            fclose(f);
        bench_record_text("conditions", section_suffix, "", "%s", f ? line : "?");
        return;
    }
    bench_record_text("conditions", "cores", "", "%ld", sysconf(_SC_NPROCESSORS_ONLN));
    text_of_file_line("/proc/cpuinfo", "model name", buf, sizeof buf);
    bench_record_text("conditions", "cpu", "", "%s", buf);
    struct utsname u;
    uname(&u);
    bench_record_text("conditions", "kernel", "", "%s %s", u.sysname, u.release);
    bench_record_text("conditions", "postgresql", "", "%s",
                      pg_show(conn, "server_version", buf, sizeof buf));
    snprintf(line, sizeof line, "%s/nats.log", it_dir());
    text_of_file_line(line, "Version:", buf, sizeof buf);
    bench_record_text("conditions", "nats_server", "", "%s", buf);
    bench_record_text("conditions", "nats_c", "", "%s", nats_GetVersion());
    bench_record_text("conditions", "payload_bytes", "B", "%d", opt.payload_bytes);
    bench_record_text("conditions", "fsync", "", "%s", pg_show(conn, "fsync", buf, sizeof buf));
    bench_record_text("conditions", "synchronous_commit", "", "%s",
                      pg_show(conn, "synchronous_commit", buf, sizeof buf));
    bench_record_text("conditions", "full_page_writes", "", "%s",
                      pg_show(conn, "full_page_writes", buf, sizeof buf));
    bench_record_text("conditions", "nats_storage", "", "file");
    bench_record_text("conditions", "build", "", "%s", BENCH_BUILD_TYPE);
    line[0] = '\0';
    for (int i = 0; i < opt.nrelay_env; i++)
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s", i ? " " : "",
                 opt.relay_env[i]);
    bench_record_text("conditions", "relay_env", "", "%s", line[0] ? line : "defaults");
    bench_record_text("conditions", "perf_during_drain", "", "%s", opt.perf_drain ? "yes" : "no");
}

static void bench_write_outputs(void)
{
    FILE *f = fopen(opt.csv, "w");
    ck_assert_msg(f != NULL, "%s: %s", opt.csv, strerror(errno));
    fprintf(f, "section,metric,value,unit\n");
    printf("\n%-11s %-24s %16s  %s\n", "section", "metric", "value", "unit");
    /* Grouped by section, sections in the order they first appear. */
    for (int i = 0; i < nresults; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(results[j].section, results[i].section) == 0;
        if (seen)
            continue;
        for (int k = i; k < nresults; k++) {
            const struct result *r = &results[k];
            if (strcmp(r->section, results[i].section) != 0)
                continue;
            fprintf(f, "%s,%s,%s,%s\n", r->section, r->metric, r->value, r->unit);
            printf("%-11s %-24s %16s  %s\n", r->section, r->metric, r->value, r->unit);
        }
    }
    ck_assert_int_eq(fclose(f), 0);
    printf("\nCSV: %s\n", opt.csv);
    fflush(stdout);
}

START_TEST(bench_all)
{
    it_pg_set_durable(opt.fsync);
    if (opt.pg_stat_statements)
        it_pg_add_setting("shared_preload_libraries=pg_stat_statements");
    it_start_servers();
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "SET client_min_messages = warning");
    bench_conditions(conn, NULL);
    bench_conditions(conn, "loadavg_start");
    const char *subjects[] = {"bench.>", NULL};
    it_js_add_stream(STREAM, subjects);

    if (opt.pg_stat_statements)
        it_pg_exec(conn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    if (opt.db_cost_only) {
        bench_db_cost(conn);
        bench_conditions(conn, "loadavg_end");
        PQfinish(conn);
        bench_write_outputs();
        it_teardown();
        return;
    }
    double j = bench_raw_js();
    double m = bench_raw_pg(conn);
    double limit = 1.0 / (1.0 / j + 1.0 / m);
    bench_record("raw", "L_limit", "rows/s", limit);

    /* First: the table has never been analyzed yet. */
    if (opt.cold_rows > 0)
        bench_cold(conn, limit);
    bench_drain(conn, limit);
    if (opt.key_rows > 0)
        bench_keyed(conn, limit);
    if (opt.big64k_rows > 0)
        bench_big(conn, "big64k", opt.big64k_rows, 65536);
    if (opt.big1m_rows > 0)
        bench_big(conn, "big1m", opt.big1m_rows, 1000000);
    if (opt.retention_rows > 0)
        bench_retention(conn, limit);
    /* Issue 11 §2: p99 <= 5 ms at 2,000 rows/s, <= 10 ms at 10,000 rows/s. */
    bench_steady(conn, "steady", opt.steady_rate, opt.producers, opt.steady_seconds, 5.0,
                 opt.latency_out, true, NULL);
    if (opt.fast_seconds > 0)
        bench_steady(conn, "steady_hi", opt.fast_rate, opt.fast_producers, opt.fast_seconds, 10.0,
                     NULL, false, NULL);
    /* The commonest outbox: a row now and then, each found through a wake-up or a poll. */
    if (opt.sparse_seconds > 0)
        bench_steady(conn, "steady_sparse", opt.sparse_rate, 2, opt.sparse_seconds, 5.0, NULL,
                     false, NULL);
    if (opt.db_cost_seconds > 0)
        bench_db_cost(conn);
    bench_notify(conn);
    bench_conditions(conn, "loadavg_end");
    PQfinish(conn);
    bench_write_outputs();
    it_teardown();
}
END_TEST

/* ---- flags ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: outbox_bench [flags]\n"
            "Starts its own PostgreSQL and nats-server, measures raw limits, then the relay.\n"
            "  --csv PATH              results (default bench.csv)\n"
            "  --latency-out PATH      every steady-load latency in ms, sorted, one a line\n"
            "  --payload-bytes N       payload size (256; at least 32)\n"
            "  --raw-js-msgs N         J: async publishes (200000)\n"
            "  --js-window N           J: nats.c PublishAsync.MaxPending (8000)\n"
            "  --raw-pg-rows N         M: rows marked (200000)\n"
            "  --mark-batch N          M: rows per UPDATE (1000)\n"
            "  --drain-rows N          backlog drained by the relay (200000)\n"
            "  --steady-rate N         rows/s in total during the latency run (2000)\n"
            "  --steady-seconds N      length of the latency run (30)\n"
            "  --producers N           producer connections (8)\n"
            "  --notify-seconds N      length of each NOTIFY-cost run (10)\n"
            "  --notify-relay on|off   relay running during the NOTIFY-cost runs (on)\n"
            "  --idle-seconds N        idle CPU window (10)\n"
            "  --fsync on|off          PostgreSQL fsync/full_page_writes (on: the defaults)\n"
            "  --relay-env KEY=VALUE   extra relay setting (repeatable)\n"
            "  --perf-drain FILE       perf record during the drain into FILE\n"
            "  --perf-args ARGS        perf record options (\"-a -g -F 999\"; without -a: the "
            "relay only)\n"
            "Workload shapes (issues 10 and 11; 0 skips one):\n"
            "  --cold-rows N           backlog drained without ANALYZE, and after (100000)\n"
            "  --key-rows N            one-key vs no-key drain (20000)\n"
            "  --retention-rows N      old published rows pruned during a drain (100000)\n"
            "  --big64k-rows N         64 KiB rows: drain vs raw JetStream (2000)\n"
            "  --big1m-rows N          1 MB rows: drain vs raw JetStream (300)\n"
            "  --fast-rate N           second latency run: rows/s (10000)\n"
            "  --fast-producers N      ... producer connections (32)\n"
            "  --fast-seconds N        ... length, 0 skips it (30)\n"
            "  --sparse-rate N         third latency run, 2 producers: rows/s (20)\n"
            "  --sparse-seconds N      ... length, 0 skips it (20)\n"
            "  --cost-producers N,M    producer cost at these connection counts (8,32)\n"
            "What relaying costs the database (db_cost; the rates and producers of steady\n"
            "and steady_hi, 0 --fast-seconds skips 10k):\n"
            "  --db-cost-seconds N     each steady run, inserts alone and relayed (15; 0 skips)\n"
            "  --db-cost-drain-rows N  the drain (100000; 0 skips)\n"
            "  --db-cost-only          run only the db_cost section\n"
            "  --pg-stat-statements    load pg_stat_statements; print statements per run\n");
}

static int parse_int(const char *name, const char *value, int min)
{
    char *end;
    long v = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || v < min || v > 100000000) {
        fprintf(stderr, "outbox_bench: --%s: expected an integer >= %d, got \"%s\"\n", name, min,
                value);
        exit(2);
    }
    return (int)v;
}

static bool parse_on_off(const char *name, const char *value)
{
    if (strcmp(value, "on") == 0)
        return true;
    if (strcmp(value, "off") == 0)
        return false;
    fprintf(stderr, "outbox_bench: --%s: expected on or off, got \"%s\"\n", name, value);
    exit(2);
}

static void parse_flags(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"csv", required_argument, NULL, 'c'},
        {"latency-out", required_argument, NULL, 'l'},
        {"payload-bytes", required_argument, NULL, 'b'},
        {"raw-js-msgs", required_argument, NULL, 'j'},
        {"js-window", required_argument, NULL, 'w'},
        {"raw-pg-rows", required_argument, NULL, 'm'},
        {"mark-batch", required_argument, NULL, 'B'},
        {"drain-rows", required_argument, NULL, 'd'},
        {"steady-rate", required_argument, NULL, 'r'},
        {"steady-seconds", required_argument, NULL, 's'},
        {"producers", required_argument, NULL, 'p'},
        {"notify-seconds", required_argument, NULL, 'n'},
        {"notify-relay", required_argument, NULL, 'N'},
        {"idle-seconds", required_argument, NULL, 'i'},
        {"fsync", required_argument, NULL, 'f'},
        {"relay-env", required_argument, NULL, 'e'},
        {"perf-drain", required_argument, NULL, 'P'},
        {"perf-args", required_argument, NULL, 'A'},
        {"cold-rows", required_argument, NULL, 'C'},
        {"key-rows", required_argument, NULL, 'K'},
        {"retention-rows", required_argument, NULL, 'T'},
        {"big64k-rows", required_argument, NULL, 'G'},
        {"big1m-rows", required_argument, NULL, 'M'},
        {"fast-rate", required_argument, NULL, 'R'},
        {"fast-producers", required_argument, NULL, 'Q'},
        {"fast-seconds", required_argument, NULL, 'S'},
        {"sparse-rate", required_argument, NULL, 'Y'},
        {"sparse-seconds", required_argument, NULL, 'Z'},
        {"cost-producers", required_argument, NULL, 'X'},
        {"db-cost-seconds", required_argument, NULL, 'D'},
        {"db-cost-drain-rows", required_argument, NULL, 'E'},
        {"db-cost-only", no_argument, NULL, 'O'},
        {"pg-stat-statements", no_argument, NULL, 'U'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        const char *name = NULL;
        for (const struct option *o = longopts; o->name; o++)
            if (o->val == c)
                name = o->name;
        switch (c) {
        case 'c':
            opt.csv = optarg;
            break;
        case 'l':
            opt.latency_out = optarg;
            break;
        case 'b':
            opt.payload_bytes = parse_int(name, optarg, 32);
            break;
        case 'j':
            opt.raw_js_msgs = parse_int(name, optarg, 1);
            break;
        case 'w':
            opt.js_window = parse_int(name, optarg, 1);
            break;
        case 'm':
            opt.raw_pg_rows = parse_int(name, optarg, 1);
            break;
        case 'B':
            opt.mark_batch = parse_int(name, optarg, 1);
            break;
        case 'd':
            opt.drain_rows = parse_int(name, optarg, 1);
            break;
        case 'r':
            opt.steady_rate = parse_int(name, optarg, 1);
            break;
        case 's':
            opt.steady_seconds = parse_int(name, optarg, 1);
            break;
        case 'p':
            opt.producers = parse_int(name, optarg, 1);
            break;
        case 'n':
            opt.notify_seconds = parse_int(name, optarg, 1);
            break;
        case 'N':
            opt.notify_relay = parse_on_off(name, optarg);
            break;
        case 'i':
            opt.idle_seconds = parse_int(name, optarg, 1);
            break;
        case 'f':
            opt.fsync = parse_on_off(name, optarg);
            break;
        case 'e':
            if (opt.nrelay_env == MAX_RELAY_ENV || !strchr(optarg, '=')) {
                fprintf(stderr, "outbox_bench: --relay-env: KEY=VALUE, at most %d\n",
                        MAX_RELAY_ENV);
                exit(2);
            }
            opt.relay_env[opt.nrelay_env++] = optarg;
            break;
        case 'P':
            opt.perf_drain = optarg;
            break;
        case 'A':
            opt.perf_args = optarg;
            break;
        case 'C':
            opt.cold_rows = parse_int(name, optarg, 0);
            break;
        case 'K':
            opt.key_rows = parse_int(name, optarg, 0);
            break;
        case 'T':
            opt.retention_rows = parse_int(name, optarg, 0);
            break;
        case 'G':
            opt.big64k_rows = parse_int(name, optarg, 0);
            break;
        case 'M':
            opt.big1m_rows = parse_int(name, optarg, 0);
            break;
        case 'R':
            opt.fast_rate = parse_int(name, optarg, 1);
            break;
        case 'Q':
            opt.fast_producers = parse_int(name, optarg, 1);
            break;
        case 'S':
            opt.fast_seconds = parse_int(name, optarg, 0);
            break;
        case 'Y':
            opt.sparse_rate = parse_int(name, optarg, 1);
            break;
        case 'Z':
            opt.sparse_seconds = parse_int(name, optarg, 0);
            break;
        case 'X': {
            opt.ncost = 0;
            char *list = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (opt.ncost == MAX_COST_RUNS) {
                    fprintf(stderr, "outbox_bench: --cost-producers: at most %d\n", MAX_COST_RUNS);
                    exit(2);
                }
                opt.cost_producers[opt.ncost++] = parse_int(name, t, 1);
            }
            free(list);
            break;
        }
        case 'D':
            opt.db_cost_seconds = parse_int(name, optarg, 0);
            break;
        case 'E':
            opt.db_cost_drain_rows = parse_int(name, optarg, 0);
            break;
        case 'O':
            opt.db_cost_only = true;
            break;
        case 'U':
            opt.pg_stat_statements = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "outbox_bench: unexpected argument \"%s\"\n", argv[optind]);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse_flags(argc, argv);
    /* The harness reports failures through Check: the whole run is one Check test, forked. */
    Suite *suite = suite_create("bench");
    TCase *tc = tcase_create("bench");
    tcase_set_timeout(tc, 4 * 3600);
    tcase_add_test(tc, bench_all);
    suite_add_tcase(suite, tc);
    SRunner *sr = srunner_create(suite);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
