/* Unit tests for the retry backoff curve, its caps, jitter bounds and random source. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "outbox_relay/lib/backoff.h"
#include "run_suite.h"

/* rnd = 0 gives the guaranteed half, rnd just below 1 gives the whole delay. */
static const struct {
    int attempt;
    int64_t base_ms, max_ms;
    double rnd;
    int64_t want;
} delay_cases[] = {
    /* the doubling curve at rnd = 0: d/2 */
    {1, 100, 60000, 0.0, 50},
    {2, 100, 60000, 0.0, 100},
    {3, 100, 60000, 0.0, 200},
    {4, 100, 60000, 0.0, 400},
    {10, 100, 60000, 0.0, 25600},
    /* ... and at rnd close to 1: d */
    {1, 100, 60000, 0.999999, 100},
    {2, 100, 60000, 0.999999, 200},
    {10, 100, 60000, 0.999999, 51200},
    /* the cap: 100 * 2^10 > 60000 */
    {11, 100, 60000, 0.0, 30000},
    {11, 100, 60000, 0.999999, 60000},
    {30, 100, 60000, 0.0, 30000},
    /* huge attempt counts never overflow */
    {62, 100, 60000, 0.999999, 60000},
    {63, 100, 60000, 0.999999, 60000},
    {64, 100, 60000, 0.0, 30000},
    {1000, 100, 60000, 0.999999, 60000},
    {INT32_MAX, 100, 60000, 0.999999, 60000},
    {INT32_MAX, 1, INT64_MAX, 0.0, INT64_MAX / 2},
    {63, 3, INT64_MAX, 0.0, INT64_MAX / 2},
    {40, 1, INT64_MAX, 0.0, INT64_C(1) << 38},
    /* exactly at the cap */
    {3, 250, 1000, 0.999999, 1000},
    {3, 250, 1000, 0.0, 500},
    /* base above max: max wins from the first retry */
    {1, 5000, 1000, 0.0, 500},
    {1, 5000, 1000, 0.999999, 1000},
    /* midpoint of the jitter */
    {1, 1000, 60000, 0.5, 750},
    /* odd delays: [d/2, d] with d/2 rounded down */
    {1, 7, 100, 0.0, 3},
    {1, 7, 100, 0.999999, 7},
    {1, 1, 100, 0.0, 0},
    {1, 1, 100, 0.999999, 1},
    /* attempt below 1 behaves as the first retry */
    {0, 100, 60000, 0.0, 50},
    {-5, 100, 60000, 0.999999, 100},
    /* rnd outside [0, 1) is clamped */
    {1, 100, 60000, -1.0, 50},
    {1, 100, 60000, 1.0, 100},
    {1, 100, 60000, 7.5, 100},
    /* nonsense configuration yields no delay rather than garbage */
    {1, 0, 60000, 0.5, 0},
    {1, 100, 0, 0.5, 0},
    {1, -100, 60000, 0.5, 0},
};

START_TEST(test_delay_table)
{
    int64_t got = backoff_delay_ms(delay_cases[_i].attempt, delay_cases[_i].base_ms,
                                   delay_cases[_i].max_ms, delay_cases[_i].rnd);
    ck_assert_msg(got == delay_cases[_i].want,
                  "attempt=%d base=%lld max=%lld rnd=%f: got %lld, want %lld",
                  delay_cases[_i].attempt, (long long)delay_cases[_i].base_ms,
                  (long long)delay_cases[_i].max_ms, delay_cases[_i].rnd, (long long)got,
                  (long long)delay_cases[_i].want);
}
END_TEST

START_TEST(test_jitter_bounds)
{
    /* Every attempt, many rnd values: always within [d/2, d], monotone in rnd. */
    for (int attempt = 1; attempt <= 70; attempt++) {
        int64_t base = 100, max = 300000;
        int64_t d = max;
        if (attempt - 1 < 20 && (base << (attempt - 1)) < max)
            d = base << (attempt - 1);
        int64_t prev = -1;
        for (int k = 0; k < 1000; k++) {
            double rnd = k / 1000.0;
            int64_t got = backoff_delay_ms(attempt, base, max, rnd);
            ck_assert_int_ge(got, d / 2);
            ck_assert_int_le(got, d);
            ck_assert_int_ge(got, prev);
            prev = got;
        }
    }
}
END_TEST

START_TEST(test_huge_delays_stay_in_bounds)
{
    /* Near INT64_MAX doubles lose precision: the result must still never leave [d/2, d]. */
    static const double rnds[] = {0.0, 0.25, 0.5, 0.999999, 0.9999999999999999};
    for (size_t i = 0; i < sizeof(rnds) / sizeof(rnds[0]); i++) {
        for (int attempt = 63; attempt <= 70; attempt++) {
            int64_t got = backoff_delay_ms(attempt, 1, INT64_MAX, rnds[i]);
            ck_assert_int_ge(got, INT64_MAX / 2);
            ck_assert_int_le(got, INT64_MAX);
        }
        int64_t got = backoff_delay_ms(INT32_MAX, INT64_MAX, INT64_MAX, rnds[i]);
        ck_assert_int_ge(got, INT64_MAX / 2);
    }
    /* high rnd lands in the top of the range */
    ck_assert_int_gt(backoff_delay_ms(64, 1, INT64_MAX, 0.999999), INT64_MAX / 2 + INT64_MAX / 4);
}
END_TEST

START_TEST(test_random_range_and_spread)
{
    /* Uniform in [0, 1): every value in range, and all ten deciles get hit. */
    int deciles[10] = {0};
    double lo = 1.0, hi = 0.0;
    for (int i = 0; i < 100000; i++) {
        double r = backoff_random();
        ck_assert(r >= 0.0);
        ck_assert(r < 1.0);
        deciles[(int)(r * 10)]++;
        if (r < lo)
            lo = r;
        if (r > hi)
            hi = r;
    }
    for (int i = 0; i < 10; i++) {
        /* expected 10000 each; 9000..11000 is > 10 sigma wide */
        ck_assert_int_gt(deciles[i], 9000);
        ck_assert_int_lt(deciles[i], 11000);
    }
    ck_assert(lo < 0.001);
    ck_assert(hi > 0.999);
}
END_TEST

START_TEST(test_random_not_constant)
{
    double a = backoff_random(), b = backoff_random(), c = backoff_random();
    ck_assert(!(a == b && b == c));
}
END_TEST

static Suite *backoff_suite(void)
{
    Suite *s = suite_create("backoff");
    TCase *tc = tcase_create("delay");
    tcase_add_loop_test(tc, test_delay_table, 0,
                        (int)(sizeof(delay_cases) / sizeof(delay_cases[0])));
    tcase_add_test(tc, test_jitter_bounds);
    tcase_add_test(tc, test_huge_delays_stay_in_bounds);
    suite_add_tcase(s, tc);

    tc = tcase_create("random");
    tcase_add_test(tc, test_random_range_and_spread);
    tcase_add_test(tc, test_random_not_constant);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(backoff_suite());
}
