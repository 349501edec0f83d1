/* /metrics of a real run: strict Prometheus text 0.0.4, counters equal to the rows' fates. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "prom_text.h"
#include "relay_families.h"
#include "run_suite.h"

#define STREAM  "IT_METRICS"
#define GOOD    40 /* published */
#define POISON  5  /* dead at once: bad subject or headers */
#define NOROUTE 3  /* no stream: one retry, then dead (OUTBOX_MAX_ATTEMPTS=2) */
#define WAITING 2  /* failed rows retried in an hour: pending, never claimed here */
#define LATENCY RELAY_LATENCY

static struct prom_exposition scraped;

struct scrape {
    int port;
    char *text;
};

/* GETs /metrics and parses it strictly into `scraped`; the text stays in s->text. */
static void scrape(struct scrape *s)
{
    struct it_http r;
    int status = it_http_get(s->port, "/metrics", 5000, &r);
    ck_assert_msg(status == 200, "GET /metrics: %d", status);
    char ctype[128];
    ck_assert_ptr_nonnull(it_http_header(&r, "Content-Type", ctype, sizeof ctype));
    ck_assert_str_eq(ctype, "text/plain; version=0.0.4; charset=utf-8");
    prom_parse(r.body, r.body_len, &scraped);
    free(s->text);
    s->text = r.body;
    r.body = NULL;
    it_http_free(&r);
}

static void wait_metric(struct scrape *s, const char *name, double want, int timeout_ms)
{
    if (!it_wait_metric(s->port, name, want, timeout_ms)) {
        scrape(s);
        ck_abort_msg("%s is %g, want %g", name, prom_value(&scraped, name), want);
    }
}

START_TEST(test_counters_match_the_table)
{
    const char *subjects[] = {"it.metrics.ok.>", NULL};
    it_js_add_stream(STREAM, subjects);
    PGconn *conn = it_pg_connect();

    /* Not yet due: counted as pending, with their age, but never claimed during the test. */
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, status, attempts, next_attempt_at,"
               "                    last_error, created_at)"
               " SELECT 'it.metrics.ok.later', 'w', 'failed', 1, now() + interval '1 hour',"
               "        'test', now() - interval '100 seconds' FROM generate_series(1, %d)",
               WAITING);

    const char *env[] = {"OUTBOX_MAX_ATTEMPTS=2",          "OUTBOX_RETRY_BASE_MS=50",
                         "OUTBOX_RETRY_MAX_MS=100",        "OUTBOX_METRICS_INTERVAL_MS=100",
                         "OUTBOX_PUBLISH_TIMEOUT_MS=2000", NULL};
    struct it_relay *relay = it_relay_start_http(env, NULL);
    struct scrape s = {.port = relay->http_port};
    wait_metric(&s, "outbox_relay_leader", 1, 10000);
    wait_metric(&s, "outbox_relay_pending", WAITING, 5000);
    scrape(&s);
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_published_total"), 0);
    ck_assert(prom_value(&scraped, "outbox_relay_oldest_pending_age_seconds") >= 100);

    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload, headers)"
               " SELECT 'it.metrics.ok.' || (g %% 4), convert_to('row ' || g, 'UTF8'),"
               "        jsonb_build_object('X-Row', g::text)"
               " FROM generate_series(1, %d) g",
               GOOD);
    it_pg_exec(conn, "INSERT INTO outbox (subject, payload, headers) VALUES"
                     " ('it.metrics.bad subject', 'p', '{}'),"
                     " ('it.metrics.tab\tsubject', 'p', '{}'),"
                     " ('it.metrics.*', 'p', '{}'),"
                     " ('it.metrics.ok.>', 'p', '{}'),"
                     " ('it.metrics.ok.headers', 'p', '{\"X-Number\": 1}')");
    it_pg_exec(conn,
               "INSERT INTO outbox (subject, payload)"
               " SELECT 'it.metrics.noroute.' || g, 'n' FROM generate_series(1, %d) g",
               NOROUTE);

    /* Counters only grow, scrape after scrape, while the rows move. */
    double last_published = 0, last_dead = 0, last_failed = 0;
    int64_t deadline = it_now_ms() + 30000;
    for (;;) {
        scrape(&s);
        double published = prom_value(&scraped, "outbox_relay_published_total");
        double dead = prom_sum(&scraped, "outbox_relay_dead_total");
        double failed = prom_sum(&scraped, "outbox_relay_failed_total");
        ck_assert(published >= last_published && dead >= last_dead && failed >= last_failed);
        last_published = published, last_dead = dead, last_failed = failed;
        if (published == GOOD && dead == POISON + NOROUTE)
            break;
        ck_assert_msg(it_now_ms() < deadline, "after 30 s: %g published, %g dead", published, dead);
        usleep(20 * 1000);
    }
    /* The sampled gauges catch up with the table within a few sample intervals. */
    wait_metric(&s, "outbox_relay_pending", WAITING, 5000);
    wait_metric(&s, "outbox_relay_inflight", 0, 5000);
    scrape(&s);

    /* The table's view of the same run. */
    ck_assert_int_eq(it_pg_published(conn), GOOD);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"),
                     POISON + NOROUTE);
    ck_assert_int_eq(it_pg_int(conn, "SELECT count(*) FROM outbox WHERE status = 'dead'"
                                     " AND subject LIKE 'it.metrics.noroute.%%' AND attempts = 2"),
                     NOROUTE);
    int64_t retried = it_pg_int(conn, "SELECT COALESCE(sum(attempts - 1), 0) FROM outbox"
                                      " WHERE status IN ('published', 'dead')");
    ck_assert_int_eq(retried, NOROUTE);
    ck_assert_int_eq(it_js_stream_msgs(STREAM), GOOD);

    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_published_total"), GOOD);
    ck_assert_double_eq(prom_sum(&scraped, "outbox_relay_dead_total"), POISON + NOROUTE);
    ck_assert_double_eq(prom_sum(&scraped, "outbox_relay_failed_total"), (double)retried);
    /* One claim per attempt: the no-route rows were claimed twice. */
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_claimed_total"),
                        GOOD + POISON + 2 * NOROUTE);
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_inflight"), 0);
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_pending"), WAITING);
    ck_assert(prom_value(&scraped, "outbox_relay_oldest_pending_age_seconds") >= 100);
    ck_assert(prom_value(&scraped, "outbox_relay_oldest_pending_age_seconds") < 3600);
    ck_assert_str_eq(prom_sample_get(&scraped, "outbox_relay_leader", NULL, NULL)->value_text, "1");
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_pg_connected"), 1);
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_nats_connected"), 1);
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_pg_reconnects_total"), 0);
    ck_assert_double_eq(prom_value(&scraped, "outbox_relay_nats_reconnects_total"), 0);
    ck_assert_double_eq(
        prom_sample_get(&scraped, "outbox_relay_build_info", "version", OUTBOX_RELAY_VERSION)
            ->value,
        1);

    /* Every family with its type; the histogram has its 16 bounds (1 ms .. 60 s) and +Inf. */
    ck_assert_uint_eq(scraped.nfamilies, RELAY_FAMILIES + PROCESS_FAMILIES);
    for (size_t k = 0; k < RELAY_FAMILIES; k++) {
        struct prom_family *f = prom_family_find(&scraped, relay_families[k].name);
        ck_assert_msg(f != NULL, "family %s missing", relay_families[k].name);
        ck_assert_str_eq(f->type, relay_families[k].type);
    }
    /* The process_* families of the relay's own process, as a client library reports them. */
    for (size_t k = 0; k < PROCESS_FAMILIES; k++) {
        struct prom_family *f = prom_family_find(&scraped, process_families[k].name);
        ck_assert_msg(f != NULL, "family %s missing", process_families[k].name);
        ck_assert_str_eq(f->type, process_families[k].type);
    }
    ck_assert(prom_value(&scraped, "process_resident_memory_bytes") > 1e6);
    ck_assert(prom_value(&scraped, "process_open_fds") >= 5); /* listener, pg, nats, ... */
    ck_assert(prom_value(&scraped, "process_max_fds") >= prom_value(&scraped, "process_open_fds"));
    double started = prom_value(&scraped, "process_start_time_seconds");
    ck_assert_msg(started > (double)time(NULL) - 600 && started <= (double)time(NULL) + 1,
                  "process_start_time_seconds %f", started);
    /* Every reason present; the sum checked above is the table's view. */
    for (size_t r = 0; r < RELAY_REASONS; r++)
        for (size_t f = 0; f < 2; f++)
            prom_sample_get(&scraped, relay_reason_families[f], "reason", relay_reasons[r]);

    /* promtool, Prometheus' own linter, accepts the exposition as scraped. */
    char path[4200], cmd[8600];
    snprintf(path, sizeof path, "%s/metrics.txt", it_dir());
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(s.text, f);
    ck_assert_int_eq(fclose(f), 0);
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s'", path);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "promtool check metrics failed (%d) on:\n%s", rc, s.text);
    double previous = 0;
    for (size_t k = 0; k < RELAY_LATENCY_LE; k++) {
        double v = prom_sample_get(&scraped, LATENCY "_bucket", "le", relay_latency_le[k])->value;
        ck_assert_msg(v >= previous, "bucket le=%s is not cumulative", relay_latency_le[k]);
        previous = v;
    }
    ck_assert_double_eq(previous, GOOD);
    ck_assert_double_eq(prom_value(&scraped, LATENCY "_count"), GOOD);
    ck_assert(prom_value(&scraped, LATENCY "_sum") > 0);
    /* Rows inserted while the relay ran reach the stream well within a minute. */
    ck_assert_double_eq(prom_sample_get(&scraped, LATENCY "_bucket", "le", "60")->value, GOOD);

    fprintf(stderr, "---- /metrics after the scripted run ----\n%s---- end of /metrics ----\n",
            s.text);
    free(s.text);

    it_relay_stop(relay);
    PQfinish(conn);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("metrics_scrape");
    TCase *tc = it_tcase(suite, "metrics_scrape", it_start_servers, 120);
    tcase_add_test(tc, test_counters_match_the_table);
    return run_suite(suite);
}
