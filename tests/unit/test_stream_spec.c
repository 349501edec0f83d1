/* Unit tests for the managed stream's spec: durations, settings checks, differences. */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "outbox_relay/lib/stream_spec.h"
#include "run_suite.h"

#define S INT64_C(1000000000)

static const struct {
    const char *text;
    int64_t ns; /* -1: refused */
} durations[] = {
    {"0", 0},
    {"2m", 120 * S},
    {"90s", 90 * S},
    {"500ms", 500 * INT64_C(1000000)},
    {"1h30m", 5400 * S},
    {"7d", 7 * 86400 * S},
    {"1m30s", 90 * S},
    {"250us", 250000},
    {"10ns", 10},
    {"0s", 0},
    {"", -1},
    {"5", -1},    /* no unit */
    {"m", -1},    /* no number */
    {"1.5s", -1}, /* no fractions */
    {"-1s", -1},  /* no sign */
    {"2 m", -1},  /* no spaces */
    {"1w", -1},   /* unknown unit */
    {"99999999999999999999s", -1},
    {"300000d", -1}, /* over int64 nanoseconds */
};

START_TEST(test_parse_duration)
{
    int64_t ns = -2;
    char why[200] = "";
    int rc = stream_spec_parse_duration(durations[_i].text, &ns, why, sizeof(why));
    if (durations[_i].ns < 0) {
        ck_assert_msg(rc < 0, "\"%s\" was taken as %lld ns", durations[_i].text, (long long)ns);
        ck_assert_msg(why[0] != '\0', "no reason for \"%s\"", durations[_i].text);
    } else {
        ck_assert_msg(rc == 0, "\"%s\": %s", durations[_i].text, why);
        ck_assert_msg(ns == durations[_i].ns, "\"%s\" = %lld ns", durations[_i].text,
                      (long long)ns);
    }
}
END_TEST

START_TEST(test_format_duration_round_trips)
{
    static const int64_t values[] = {
        0, 120 * S, 5400 * S, 90 * S, 1500 * INT64_C(1000000), 7 * 86400 * S + 3 * S};
    static const char *const texts[] = {"0", "2m", "1h30m", "1m30s", "1s500ms", "7d3s"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char buf[32];
        int64_t back = -1;
        char why[100];
        stream_spec_format_duration(values[i], buf, sizeof(buf));
        ck_assert_str_eq(buf, texts[i]);
        ck_assert_int_eq(stream_spec_parse_duration(buf, &back, why, sizeof(why)), 0);
        ck_assert(back == values[i]);
    }
}
END_TEST

static struct relay_config config_with(const char *storage, const char *age, const char *window,
                                       const char *subjects)
{
    struct relay_config cfg = {0};
    cfg.stream = "S";
    cfg.stream_replicas = 3;
    cfg.stream_storage = (char *)storage;
    cfg.stream_max_age = (char *)age;
    cfg.stream_duplicate_window = (char *)window;
    cfg.stream_subjects = (char *)subjects;
    return cfg;
}

START_TEST(test_from_config)
{
    struct relay_config cfg = config_with("memory", "7d", "1h", " orders.>, billing.* ,x");
    struct stream_spec spec;
    char err[300];
    ck_assert_int_eq(stream_spec_from_config(&cfg, &spec, err, sizeof(err)), 0);
    ck_assert_int_eq(spec.replicas, 3);
    ck_assert(spec.memory);
    ck_assert(spec.max_age_ns == 7 * 86400 * S);
    ck_assert(spec.duplicate_window_ns == 3600 * S);
    ck_assert_int_eq(spec.nsubjects, 3);
    ck_assert_str_eq(spec.subjects[0], "orders.>");
    ck_assert_str_eq(spec.subjects[1], "billing.*");
    ck_assert_str_eq(spec.subjects[2], "x");
}
END_TEST

static const struct {
    const char *storage, *age, *window;
    const char *want_in_err;
} bad_configs[] = {
    {"disk", "0", "2m", "OUTBOX_STREAM_STORAGE: \"disk\" is not file or memory"},
    {"file", "7", "2m", "OUTBOX_STREAM_MAX_AGE:"},
    {"file", "0", "soon", "OUTBOX_STREAM_DUPLICATE_WINDOW:"},
    {"file", "0", "0", "OUTBOX_STREAM_DUPLICATE_WINDOW: must be above 0"},
    {"file", "1m", "2m",
     "OUTBOX_STREAM_DUPLICATE_WINDOW: 2m is longer than OUTBOX_STREAM_MAX_AGE 1m"},
};

START_TEST(test_bad_config_named)
{
    struct relay_config cfg =
        config_with(bad_configs[_i].storage, bad_configs[_i].age, bad_configs[_i].window, "a.>");
    struct stream_spec spec;
    char err[300] = "";
    ck_assert_int_eq(stream_spec_from_config(&cfg, &spec, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, bad_configs[_i].want_in_err) != NULL, "error: %s", err);
}
END_TEST

START_TEST(test_diff)
{
    struct relay_config cfg = config_with("file", "0", "2m", "orders.>, billing.*");
    struct stream_spec want, have;
    char err[200], out[400];
    ck_assert_int_eq(stream_spec_from_config(&cfg, &want, err, sizeof(err)), 0);
    have = want;
    ck_assert_int_eq(stream_spec_diff(&want, &have, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");

    have.replicas = 1;
    have.memory = true;
    have.max_age_ns = 86400 * S;
    have.duplicate_window_ns = 120 * S; /* same */
    have.nsubjects = 2;
    strcpy(have.subjects[0], "billing.*");
    strcpy(have.subjects[1], "other.>");
    ck_assert_int_eq(stream_spec_diff(&want, &have, out, sizeof(out)), 4);
    ck_assert_str_eq(out, "replicas 1, settings ask 3; storage memory, settings ask file; "
                          "max age 1d, settings ask 0; subject orders.> missing");
    /* A short buffer truncates, never overflows, and still counts. */
    char tiny[16];
    ck_assert_int_eq(stream_spec_diff(&want, &have, tiny, sizeof(tiny)), 4);
    ck_assert_uint_eq(strlen(tiny), sizeof(tiny) - 1);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("stream_spec");
    TCase *tc = tcase_create("stream_spec");
    tcase_add_loop_test(tc, test_parse_duration, 0, sizeof(durations) / sizeof(durations[0]));
    tcase_add_test(tc, test_format_duration_round_trips);
    tcase_add_test(tc, test_from_config);
    tcase_add_loop_test(tc, test_bad_config_named, 0, sizeof(bad_configs) / sizeof(bad_configs[0]));
    tcase_add_test(tc, test_diff);
    suite_add_tcase(suite, tc);
    return run_suite(suite);
}
