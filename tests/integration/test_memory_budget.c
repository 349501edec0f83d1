/* A memory budget in bytes: ~1 MB rows drain completely, and the relay's peak RSS stays under
 * the formula of docs/configuration.md, 2 x budget + 2 x max_payload + 24 MiB (with the default
 * budget: also under the shipped 128 MiB limit). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_MEM"
/* The sanitizer build checks only that both drains complete (its RSS means nothing, see below):
 * a tenth of the rows, six times the default budget, does that. */
#ifdef __SANITIZE_ADDRESS__
#define ROWS 200
#else
#define ROWS 2000
#endif
/* ~1 MB: with the relay's headers it stays under nats-server's max_payload of 1 MiB. */
#define PAYLOAD_BYTES 1000000
#define MAX_PAYLOAD   "1048576"
#define MIB           (1024L * 1024L)
/* The formula docs/configuration.md documents: peak RSS <= budget x BUDGET_FACTOR + OVERHEAD, where
 * OVERHEAD = 2 x max_payload (one row past the budget, and its copy) + 24 MiB (code, libraries,
 * buffers). */
#define BUDGET_FACTOR  2
#define OVERHEAD       (2 * 1048576L + 24 * MIB)
#define DEFAULT_BUDGET 33554432L
/* With the default budget the relay fits the memory limit the chart and manifests ship. */
#define SHIPPED_LIMIT (128 * MIB)
#define SMALL_BUDGET  8388608L
#define DRAIN_MS      180000

static void start_servers_big_payloads(void)
{
    it_setup();
    it_nats_set_config("max_payload: " MAX_PAYLOAD "\n");
    it_pg_start();
    it_nats_start();
}

struct drain {
    const char *name;
    int64_t ms;
    int64_t published;
    uint64_t in_stream;
    long peak_kb;    /* VmHWM right before the stop */
    long running_kb; /* VmHWM halfway through */
};

struct watch {
    PGconn *conn;
    struct it_relay *relay;
    struct drain *d;
};

static bool stream_full(void *arg)
{
    struct watch *w = arg;
    w->d->in_stream = it_js_stream_msgs(STREAM);
    if (w->d->running_kb < 0 && w->d->in_stream >= ROWS / 2)
        w->d->running_kb = it_proc_status_kb(w->relay->pid, "VmHWM");
    return w->d->in_stream >= ROWS;
}

/* Starts a relay with `env`, waits for every row in the stream and marked, reads its peak RSS. */
static void drain(PGconn *conn, const char *const *env, struct drain *d)
{
    d->running_kb = -1;
    int64_t t0 = it_now_ms();
    struct it_relay *relay = it_relay_start(env, NULL);
    struct watch w = {conn, relay, d};
    it_wait_until(stream_full, &w, DRAIN_MS);
    d->published = it_pg_wait_published(conn, ROWS, 30000);
    d->ms = it_now_ms() - t0;
    d->peak_kb = it_proc_status_kb(relay->pid, "VmHWM");
    fprintf(stderr,
            "memory: %s: %lld of %d rows of %d bytes published, %llu in the stream, in %lld ms;"
            " relay VmHWM %.1f MiB (%.1f MiB halfway)\n",
            d->name, (long long)d->published, ROWS, PAYLOAD_BYTES, (unsigned long long)d->in_stream,
            (long long)d->ms, d->peak_kb / 1024.0, d->running_kb / 1024.0);
    it_relay_stop(relay);
}

START_TEST(test_big_rows_drain_within_memory_budget)
{
    const char *subjects[] = {"it.mem.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();
    /* Distinct, compressible payloads (TOAST keeps the table small; the relay sees 1 MB). */
    for (int from = 1; from <= ROWS; from += 100)
        it_pg_exec(conn,
                   "INSERT INTO outbox (subject, payload)"
                   " SELECT 'it.mem.big', convert_to(repeat(md5(g::text), %d), 'UTF8')"
                   " FROM generate_series(%d, %d) g",
                   PAYLOAD_BYTES / 32, from, from + 99);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE octet_length(payload) = %d",
                               PAYLOAD_BYTES),
                     ROWS);

    struct drain by_default = {.name = "default budget"};
    const char *default_env[] = {NULL};
    drain(conn, default_env, &by_default);

    /* The same rows again under a small budget: new event ids (no dedup), an empty stream. */
    jsErrCode jerr = 0;
    natsStatus s = js_PurgeStream(it_js(), STREAM, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "purge: %s (%d)", natsStatus_GetText(s), (int)jerr);
    it_pg_exec(conn, "UPDATE outbox SET status = 'pending', event_id = gen_random_uuid()::text,"
                     " stream_seq = NULL, published_at = NULL, attempts = 0");
    struct drain small = {.name = "OUTBOX_MAX_INFLIGHT_BYTES=8388608"};
    const char *small_env[] = {"OUTBOX_MAX_INFLIGHT_BYTES=8388608", NULL};
    drain(conn, small_env, &small);

    long small_bound_kb = (SMALL_BUDGET * BUDGET_FACTOR + OVERHEAD) / 1024;
    fprintf(stderr,
            "memory: bounds: default budget <= %ld MiB (shipped limit), 8 MiB budget <= %ld MiB"
            " (budget x %d + %ld MiB)\n",
            SHIPPED_LIMIT / MIB, small_bound_kb / 1024, BUDGET_FACTOR, OVERHEAD / MIB);
    ck_assert_msg(by_default.published == ROWS && by_default.in_stream == ROWS,
                  "default budget: %lld rows published, %llu in the stream, of %d",
                  (long long)by_default.published, (unsigned long long)by_default.in_stream, ROWS);
    ck_assert_msg(small.published == ROWS && small.in_stream == ROWS,
                  "8 MiB budget: %lld rows published, %llu in the stream, of %d",
                  (long long)small.published, (unsigned long long)small.in_stream, ROWS);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(DISTINCT stream_seq) FROM outbox"), ROWS);
#ifdef __SANITIZE_ADDRESS__
    /* The sanitizer build's relay keeps freed memory in quarantine and maps
     * shadow memory: its RSS says nothing about the budget. The drains above
     * still had to complete. */
    fprintf(stderr, "memory: sanitizer build: RSS bounds not checked\n");
    PQfinish(conn);
    return;
#endif
    ck_assert_msg(by_default.peak_kb > 0 && by_default.peak_kb <= SHIPPED_LIMIT / 1024,
                  "default budget: relay peak RSS %.1f MiB, over the shipped %ld MiB limit",
                  by_default.peak_kb / 1024.0, SHIPPED_LIMIT / MIB);
    long default_bound_kb = (DEFAULT_BUDGET * BUDGET_FACTOR + OVERHEAD) / 1024;
    ck_assert_msg(by_default.peak_kb <= default_bound_kb,
                  "default budget: relay peak RSS %.1f MiB, over the formula's %ld MiB",
                  by_default.peak_kb / 1024.0, default_bound_kb / 1024);
    ck_assert_msg(small.peak_kb > 0 && small.peak_kb <= small_bound_kb,
                  "8 MiB budget: relay peak RSS %.1f MiB, over budget x %d + %ld MiB = %ld MiB",
                  small.peak_kb / 1024.0, BUDGET_FACTOR, OVERHEAD / MIB, small_bound_kb / 1024);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("memory_budget");
    TCase *tc = it_tcase(suite, "memory_budget", start_servers_big_payloads, 600);
    tcase_add_test(tc, test_big_rows_drain_within_memory_budget);
    return run_suite(suite);
}
