/* Metrics text: checked by the strict Prometheus text format 0.0.4 parser of tests/common. */
#include <check.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/metrics.h"
#include "prom_text.h"
#include "relay_families.h"
#include "run_suite.h"

static void render_parse(const struct metrics *m, const char *version, struct prom_exposition *e)
{
    size_t len = 0;
    char *text = metrics_render(m, version, &len);
    ck_assert_ptr_nonnull(text);
    prom_parse(text, len, e);
    free(text);
}

#define LATENCY RELAY_LATENCY
_Static_assert(RELAY_LATENCY_LE == METRICS_LATENCY_BUCKETS + 1, "a label per bound, then +Inf");

/* Checks the histogram's shape and returns its cumulative bucket values (+Inf last). */
static void histogram_get(const struct prom_exposition *e,
                          double cumulative[METRICS_LATENCY_BUCKETS + 1])
{
    double previous = 0;
    for (int k = 0; k <= METRICS_LATENCY_BUCKETS; k++) {
        const char *le = relay_latency_le[k];
        const struct prom_sample *s = prom_sample_get(e, LATENCY "_bucket", "le", le);
        ck_assert_int_eq(s->nlabels, 1);
        ck_assert_msg(s->value >= previous, "bucket le=%s not cumulative", le);
        previous = cumulative[k] = s->value;
    }
    /* The buckets appear in order of their bounds, +Inf last. */
    size_t seen = 0;
    for (size_t k = 0; k < e->nsamples; k++) {
        if (strcmp(e->samples[k].name, LATENCY "_bucket") != 0)
            continue;
        const char *want = seen < RELAY_LATENCY_LE ? relay_latency_le[seen] : "(none)";
        ck_assert_str_eq(e->samples[k].label_value[0], want);
        seen++;
    }
    ck_assert_uint_eq(seen, METRICS_LATENCY_BUCKETS + 1);
    ck_assert_double_eq(cumulative[METRICS_LATENCY_BUCKETS], prom_value(e, LATENCY "_count"));
}

START_TEST(test_every_family_named_and_typed)
{
    const struct relay_family *want = relay_families;
    struct metrics m;
    metrics_init(&m);
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);

    ck_assert_uint_eq(e.nfamilies, RELAY_FAMILIES);
    for (size_t k = 0; k < RELAY_FAMILIES; k++) {
        struct prom_family *f = prom_family_find(&e, want[k].name);
        ck_assert_msg(f != NULL, "family %s missing", want[k].name);
        ck_assert_str_eq(f->type, want[k].type);
        ck_assert(f->has_help);
        if (strcmp(want[k].type, "histogram") != 0 && strcmp(want[k].name + 13, "build_info") != 0)
            ck_assert_double_eq(prom_sum(&e, want[k].name), 0);
    }
    /* 21 plain samples, 2 counters by 10 reasons, 4 statement families by 8 kinds, 17 buckets
     * + sum + count, build_info. */
    ck_assert_uint_eq(e.nsamples, 21 + 2 * RELAY_REASONS +
                                      RELAY_STATEMENT_FAMILIES * RELAY_STATEMENT_KINDS +
                                      METRICS_LATENCY_BUCKETS + 1 + 2 + 1);
    /* No process_* families without process figures. */
    for (size_t k = 0; k < PROCESS_FAMILIES; k++)
        ck_assert_ptr_null(prom_family_find(&e, process_families[k].name));
}
END_TEST

/* The server's WAL figures: two counters by kind once read, absent before (and while failing). */
START_TEST(test_wal_families_only_when_known)
{
    struct metrics m;
    metrics_init(&m);
    m.wal.bytes[STATEMENT_MARK] = 12345;
    m.wal.calls[STATEMENT_MARK] = 7;
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    for (size_t k = 0; k < RELAY_WAL_FAMILIES; k++)
        ck_assert_ptr_null(prom_family_find(&e, relay_wal_families[k]));

    m.wal.known = true;
    render_parse(&m, "0.1.0", &e);
    ck_assert_uint_eq(e.nfamilies, RELAY_FAMILIES + RELAY_WAL_FAMILIES);
    for (size_t k = 0; k < RELAY_WAL_FAMILIES; k++) {
        struct prom_family *f = prom_family_find(&e, relay_wal_families[k]);
        ck_assert_ptr_nonnull(f);
        ck_assert_str_eq(f->type, "counter");
        for (size_t i = 0; i < RELAY_STATEMENT_KINDS; i++)
            prom_sample_get(&e, relay_wal_families[k], "kind", relay_statement_kinds[i]);
    }
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_pg_wal_bytes_total", "kind", "mark")->value_text,
        "12345");
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_pg_wal_statements_total", "kind", "mark")->value_text,
        "7");
    ck_assert_double_eq(prom_sum(&e, "outbox_relay_pg_wal_bytes_total"), 12345);
}
END_TEST

START_TEST(test_values_rendered)
{
    struct metrics m;
    metrics_init(&m);
    m.published_total = 42;
    m.failed_total = 3;
    m.dead_total = 1;
    m.claimed_total = 100;
    m.pg_reconnects_total = 2;
    m.nats_reconnects_total = 5;
    m.inflight = 7;
    m.pending = 12345;
    m.oldest_pending_age_seconds = 1.5;
    m.leader = true;
    m.pg_connected = false;
    m.nats_connected = true;
    m.statements.calls[STATEMENT_CLAIM] = 9;
    m.statements.rows[STATEMENT_CLAIM] = 27;
    m.statements.seconds[STATEMENT_MARK] = 0.25;
    m.statements.errors[STATEMENT_LOCK] = 1;
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_pg_statements_total", "kind", "claim")->value_text, "9");
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_pg_statement_rows_total", "kind", "claim")->value_text,
        "27");
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_pg_statement_seconds_total", "kind", "mark")->value_text,
        "0.25");
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_pg_statement_errors_total", "kind", "lock")->value_text,
        "1");

    ck_assert_double_eq(prom_value(&e, "outbox_relay_published_total"), 42);
    ck_assert_double_eq(prom_sum(&e, "outbox_relay_failed_total"), 3);
    ck_assert_double_eq(prom_sum(&e, "outbox_relay_dead_total"), 1);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_claimed_total"), 100);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_pg_reconnects_total"), 2);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_nats_reconnects_total"), 5);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_inflight"), 7);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_pending"), 12345);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_oldest_pending_age_seconds"), 1.5);
    ck_assert_str_eq(prom_sample_get(&e, "outbox_relay_leader", NULL, NULL)->value_text, "1");
    ck_assert_str_eq(prom_sample_get(&e, "outbox_relay_pg_connected", NULL, NULL)->value_text, "0");
    ck_assert_str_eq(prom_sample_get(&e, "outbox_relay_nats_connected", NULL, NULL)->value_text,
                     "1");
}
END_TEST

/* Every reason is rendered; counts without a reason show as "other"; the labels add up. */
START_TEST(test_reasons)
{
    _Static_assert(RELAY_REASONS == PUBLISH_REASONS, "one label value per reason");
    for (int r = 0; r < PUBLISH_REASONS; r++) {
        enum publish_reason back;
        ck_assert_str_eq(publish_reason_name((enum publish_reason)r), relay_reasons[r]);
        ck_assert(publish_reason_parse(relay_reasons[r], &back));
        ck_assert_int_eq(back, r);
    }
    enum publish_reason unused;
    ck_assert(!publish_reason_parse("no-stream", &unused));
    ck_assert_ptr_null(publish_reason_name(PUBLISH_REASONS));

    struct metrics m;
    metrics_init(&m);
    metrics_failed(&m, PUBLISH_TIMEOUT);
    metrics_failed(&m, PUBLISH_TIMEOUT);
    metrics_failed(&m, PUBLISH_NO_STREAM);
    m.failed_total += 4; /* counted the old way, without a reason */
    metrics_dead(&m, PUBLISH_INVALID_ROW);
    metrics_dead(&m, PUBLISH_OTHER);
    metrics_dead(&m, PUBLISH_REASONS); /* out of range: other */
    m.dead_rows = 17;
    m.duplicate_acks_total = 9;
    m.republished_total = 11;
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);

    const char *fam = "outbox_relay_failed_total";
    ck_assert_double_eq(prom_sample_get(&e, fam, "reason", "timeout")->value, 2);
    ck_assert_double_eq(prom_sample_get(&e, fam, "reason", "no_stream")->value, 1);
    ck_assert_double_eq(prom_sample_get(&e, fam, "reason", "other")->value, 4);
    ck_assert_double_eq(prom_sample_get(&e, fam, "reason", "rejected")->value, 0);
    ck_assert_double_eq(prom_sum(&e, fam), 7);
    fam = "outbox_relay_dead_total";
    ck_assert_double_eq(prom_sample_get(&e, fam, "reason", "invalid_row")->value, 1);
    ck_assert_double_eq(prom_sample_get(&e, fam, "reason", "other")->value, 2);
    ck_assert_double_eq(prom_sum(&e, fam), 3);
    for (size_t r = 0; r < RELAY_REASONS; r++)
        for (size_t f = 0; f < 2; f++)
            ck_assert_int_eq(
                prom_sample_get(&e, relay_reason_families[f], "reason", relay_reasons[r])->nlabels,
                1);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_dead_rows"), 17);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_duplicate_acks_total"), 9);
    ck_assert_double_eq(prom_value(&e, "outbox_relay_republished_total"), 11);
}
END_TEST

/* process_* families under their standard names, without the relay's prefix. */
START_TEST(test_process_families)
{
    struct metrics m;
    metrics_init(&m);
    m.process = (struct metrics_process){.valid = true,
                                         .cpu_seconds_total = 1.25,
                                         .start_time_seconds = 1764500000.5,
                                         .resident_memory_bytes = 8 * 1024 * 1024,
                                         .virtual_memory_bytes = 64 * 1024 * 1024,
                                         .open_fds = 11,
                                         .max_fds = 1024};
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    ck_assert_uint_eq(e.nfamilies, RELAY_FAMILIES + PROCESS_FAMILIES);
    for (size_t k = 0; k < PROCESS_FAMILIES; k++) {
        struct prom_family *f = prom_family_find(&e, process_families[k].name);
        ck_assert_msg(f != NULL, "family %s missing", process_families[k].name);
        ck_assert_str_eq(f->type, process_families[k].type);
    }
    ck_assert_double_eq(prom_value(&e, "process_cpu_seconds_total"), 1.25);
    ck_assert_double_eq(prom_value(&e, "process_start_time_seconds"), 1764500000.5);
    ck_assert_double_eq(prom_value(&e, "process_resident_memory_bytes"), 8388608);
    ck_assert_double_eq(prom_value(&e, "process_virtual_memory_bytes"), 67108864);
    ck_assert_double_eq(prom_value(&e, "process_open_fds"), 11);
    ck_assert_double_eq(prom_value(&e, "process_max_fds"), 1024);
}
END_TEST

START_TEST(test_number_formats)
{
    struct metrics m;
    metrics_init(&m);
    m.published_total = UINT64_MAX;
    m.inflight = -1; /* a bookkeeping bug must still render parseably */
    m.oldest_pending_age_seconds = 0.1;
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    ck_assert_str_eq(prom_sample_get(&e, "outbox_relay_published_total", NULL, NULL)->value_text,
                     "18446744073709551615");
    ck_assert_str_eq(prom_sample_get(&e, "outbox_relay_inflight", NULL, NULL)->value_text, "-1");
    /* Shortest exact form, not 0.10000000000000001. */
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_oldest_pending_age_seconds", NULL, NULL)->value_text,
        "0.1");

    m.oldest_pending_age_seconds = NAN;
    render_parse(&m, "0.1.0", &e);
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_oldest_pending_age_seconds", NULL, NULL)->value_text,
        "NaN");
    m.oldest_pending_age_seconds = INFINITY;
    render_parse(&m, "0.1.0", &e);
    ck_assert_str_eq(
        prom_sample_get(&e, "outbox_relay_oldest_pending_age_seconds", NULL, NULL)->value_text,
        "+Inf");

    static const double awkward[] = {1e-9,   1.0 / 3.0, 123456789.125, 1e15,
                                     2.5e16, -0.75,     DBL_MAX,       5e-324};
    for (size_t k = 0; k < sizeof(awkward) / sizeof(awkward[0]); k++) {
        m.oldest_pending_age_seconds = awkward[k];
        render_parse(&m, "0.1.0", &e);
        ck_assert_msg(prom_value(&e, "outbox_relay_oldest_pending_age_seconds") == awkward[k],
                      "%.17g did not survive rendering", awkward[k]);
    }
}
END_TEST

START_TEST(test_histogram_empty)
{
    struct metrics m;
    metrics_init(&m);
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    double cumulative[METRICS_LATENCY_BUCKETS + 1];
    histogram_get(&e, cumulative);
    for (int k = 0; k <= METRICS_LATENCY_BUCKETS; k++)
        ck_assert_double_eq(cumulative[k], 0);
    ck_assert_str_eq(prom_sample_get(&e, LATENCY "_sum", NULL, NULL)->value_text, "0");
    ck_assert_str_eq(prom_sample_get(&e, LATENCY "_count", NULL, NULL)->value_text, "0");
}
END_TEST

START_TEST(test_histogram_bounds_table)
{
    /* The le labels are the bounds, printed exactly and strictly increasing. */
    for (int k = 0; k < METRICS_LATENCY_BUCKETS; k++) {
        ck_assert_double_eq(strtod(relay_latency_le[k], NULL), metrics_latency_bounds[k]);
        if (k > 0)
            ck_assert(metrics_latency_bounds[k] > metrics_latency_bounds[k - 1]);
    }
    ck_assert_double_eq(metrics_latency_bounds[0], 0.001);
    ck_assert_double_eq(metrics_latency_bounds[METRICS_LATENCY_BUCKETS - 1], 60);
}
END_TEST

START_TEST(test_histogram_observations)
{
    static const double seen[] = {0.0004, 0.003, 0.003, 0.02, 0.07, 0.3,  0.3, 0.9,
                                  1.7,    4.2,   12,    25,   45,   59.9, 61,  3600};
    size_t n = sizeof(seen) / sizeof(seen[0]);
    struct metrics m;
    metrics_init(&m);
    double sum = 0;
    for (size_t k = 0; k < n; k++) {
        metrics_observe_latency(&m, seen[k]);
        sum += seen[k];
    }
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    double cumulative[METRICS_LATENCY_BUCKETS + 1];
    histogram_get(&e, cumulative);

    for (int b = 0; b < METRICS_LATENCY_BUCKETS; b++) {
        double want = 0;
        for (size_t k = 0; k < n; k++)
            if (seen[k] <= metrics_latency_bounds[b])
                want++;
        ck_assert_msg(cumulative[b] == want, "le=%s: %g, want %g", relay_latency_le[b],
                      cumulative[b], want);
    }
    ck_assert_double_eq(cumulative[METRICS_LATENCY_BUCKETS], (double)n);
    ck_assert_double_eq(prom_value(&e, LATENCY "_count"), (double)n);
    ck_assert_double_eq(prom_value(&e, LATENCY "_sum"), sum);
    ck_assert_uint_eq(m.latency.count, n);
}
END_TEST

START_TEST(test_histogram_value_on_a_bound_goes_into_that_bucket)
{
    struct metrics m;
    metrics_init(&m);
    for (int k = 0; k < METRICS_LATENCY_BUCKETS; k++)
        metrics_observe_latency(&m, metrics_latency_bounds[k]);
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    double cumulative[METRICS_LATENCY_BUCKETS + 1];
    histogram_get(&e, cumulative);
    for (int k = 0; k < METRICS_LATENCY_BUCKETS; k++)
        ck_assert_double_eq(cumulative[k], k + 1);
    ck_assert_double_eq(cumulative[METRICS_LATENCY_BUCKETS], METRICS_LATENCY_BUCKETS);

    /* Just above a bound is the next bucket's; just above 60 only +Inf's. */
    metrics_init(&m);
    for (int k = 0; k < METRICS_LATENCY_BUCKETS; k++)
        metrics_observe_latency(&m, nextafter(metrics_latency_bounds[k], INFINITY));
    render_parse(&m, "0.1.0", &e);
    histogram_get(&e, cumulative);
    ck_assert_double_eq(cumulative[0], 0);
    for (int k = 1; k < METRICS_LATENCY_BUCKETS; k++)
        ck_assert_double_eq(cumulative[k], k);
    ck_assert_double_eq(cumulative[METRICS_LATENCY_BUCKETS], METRICS_LATENCY_BUCKETS);
}
END_TEST

START_TEST(test_histogram_odd_observations)
{
    struct metrics m;
    metrics_init(&m);
    metrics_observe_latency(&m, -0.5); /* clock skew between PostgreSQL and us: counts as 0 */
    metrics_observe_latency(&m, NAN);
    metrics_observe_latency(&m, INFINITY);
    static struct prom_exposition e;
    render_parse(&m, "0.1.0", &e);
    double cumulative[METRICS_LATENCY_BUCKETS + 1];
    histogram_get(&e, cumulative);
    ck_assert_double_eq(cumulative[0], 1);
    ck_assert_double_eq(prom_value(&e, LATENCY "_count"), 1);
    ck_assert_double_eq(prom_value(&e, LATENCY "_sum"), 0);
}
END_TEST

START_TEST(test_build_info)
{
    struct metrics m;
    metrics_init(&m);
    static struct prom_exposition e;
    render_parse(&m, "1.2.3", &e);
    const struct prom_sample *s =
        prom_sample_get(&e, "outbox_relay_build_info", "version", "1.2.3");
    ck_assert_str_eq(s->value_text, "1");

    render_parse(&m, "a\"b\\c\nd", &e); /* escaped, and the parser unescapes it back */
    s = prom_sample_get(&e, "outbox_relay_build_info", "version", "a\"b\\c\nd");
    ck_assert_double_eq(s->value, 1);

    render_parse(&m, NULL, &e);
    prom_sample_get(&e, "outbox_relay_build_info", "version", "unknown");
}
END_TEST

START_TEST(test_render_without_len)
{
    struct metrics m;
    metrics_init(&m);
    char *text = metrics_render(&m, "0.1.0", NULL);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "outbox_relay_published_total 0\n"));
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("render");
    tcase_add_test(tc, test_every_family_named_and_typed);
    tcase_add_test(tc, test_values_rendered);
    tcase_add_test(tc, test_wal_families_only_when_known);
    tcase_add_test(tc, test_reasons);
    tcase_add_test(tc, test_process_families);
    tcase_add_test(tc, test_number_formats);
    tcase_add_test(tc, test_histogram_empty);
    tcase_add_test(tc, test_histogram_bounds_table);
    tcase_add_test(tc, test_histogram_observations);
    tcase_add_test(tc, test_histogram_value_on_a_bound_goes_into_that_bucket);
    tcase_add_test(tc, test_histogram_odd_observations);
    tcase_add_test(tc, test_build_info);
    tcase_add_test(tc, test_render_without_len);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
