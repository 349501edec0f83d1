/* The benchmark: the relay under load (producers, the drain, latency, NOTIFY cost). */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
double producers_pg_cpu_s;

/* Runs n producers for `seconds`, at `rate` rows/s in total (0: unpaced). */
int64_t producers_run(int n, const char *tag, const char *subject, double rate, double seconds,
                      struct row_times *times, double *elapsed)
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

void bench_drain(PGconn *conn, double limit)
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

void bench_steady(PGconn *conn, const char *section, int rate, int producers, int seconds,
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

void bench_notify(PGconn *conn)
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
