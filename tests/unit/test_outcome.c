/* Unit tests for the outcome policy: retry or dead, whose fault, and when a key's later rows go. */
#include <check.h>
#include <stdint.h>

#include "outbox_relay/lib/backoff.h"
#include "outbox_relay/pipeline/outcome.h"
#include "run_suite.h"

static const struct retry_policy policy = {.max_attempts = 3, .base_ms = 100, .max_ms = 60000};

/* Which failures the connection caused, whatever the row. */
static const struct {
    enum publish_reason reason;
    bool unanswered, nats_up;
    bool want;
} connection_cases[] = {
    {PUBLISH_CONNECTION, false, true, true},   {PUBLISH_CONNECTION, false, false, true},
    {PUBLISH_TIMEOUT, true, true, true},     /* the server answered nothing sent since */
    {PUBLISH_TIMEOUT, false, true, false},   /* it answered later publishes: the row's */
    {PUBLISH_NO_STREAM, false, false, true}, /* no responders while the link is down */
    {PUBLISH_NO_STREAM, false, true, false}, /* no stream takes the subject */
    {PUBLISH_LIMITS, true, false, false},      {PUBLISH_REJECTED, true, false, false},
    {PUBLISH_UNAVAILABLE, true, false, false}, {PUBLISH_NATS_ERROR, true, false, false},
    {PUBLISH_INVALID_ROW, true, false, false},
};

START_TEST(test_connection_failed_table)
{
    ck_assert_int_eq(outcome_connection_failed(connection_cases[_i].reason,
                                               connection_cases[_i].unanswered,
                                               connection_cases[_i].nats_up),
                     connection_cases[_i].want);
}
END_TEST

START_TEST(test_permanent_is_dead_at_once)
{
    /* Even a permanent error while the link is down: retrying can never succeed. */
    struct failure_facts f = {.permanent = true, .reason = PUBLISH_CONNECTION, .attempts = 0};
    struct failure_verdict v = outcome_of_failure(&f, &policy, 0.5);
    ck_assert(v.dead);
    ck_assert(!v.not_an_attempt);
    ck_assert_int_eq(v.delay_ms, 0);
}
END_TEST

START_TEST(test_transient_retries_with_backoff_until_the_limit)
{
    for (int attempts = 0; attempts < policy.max_attempts; attempts++) {
        struct failure_facts f = {.reason = PUBLISH_LIMITS, .attempts = attempts, .nats_up = true};
        struct failure_verdict v = outcome_of_failure(&f, &policy, 0.25);
        ck_assert(!v.not_an_attempt);
        if (attempts + 1 >= policy.max_attempts) {
            ck_assert_msg(v.dead, "attempt %d of %d is the last", attempts + 1,
                          policy.max_attempts);
            ck_assert_int_eq(v.delay_ms, 0);
        } else {
            ck_assert(!v.dead);
            ck_assert_int_eq(v.delay_ms,
                             backoff_delay_ms(attempts + 1, policy.base_ms, policy.max_ms, 0.25));
        }
    }
}
END_TEST

START_TEST(test_connection_failure_is_no_attempt)
{
    /* Far past the attempt limit: the connection's failure never kills the row. */
    struct failure_facts f = {.reason = PUBLISH_TIMEOUT, .attempts = 1000, .unanswered = true};
    struct failure_verdict v = outcome_of_failure(&f, &policy, 0.9);
    ck_assert(!v.dead);
    ck_assert(v.not_an_attempt);
    ck_assert_int_eq(v.delay_ms, 0);
}
END_TEST

/* keyed, held_key, published, dead, dead_holds_key → releases */
static const struct {
    bool keyed, held_key, published, dead, dead_holds_key, want;
} release_cases[] = {
    {false, true, true, false, false, false}, /* no key: nothing to release */
    {false, false, false, true, false, false},
    {true, true, true, false, false, true},   /* published after holding its key */
    {true, false, true, false, false, false}, /* published in key order: held nothing */
    {true, false, false, true, false, true},  /* dead: the key goes on */
    {true, true, false, true, false, true},
    {true, false, false, true, true, false},  /* dead, and dead rows hold their key */
    {true, true, false, false, false, false}, /* a retry keeps holding it */
    {true, false, false, false, false, false},
};

START_TEST(test_releases_key_table)
{
    ck_assert_int_eq(outcome_releases_key(release_cases[_i].keyed, release_cases[_i].held_key,
                                          release_cases[_i].published, release_cases[_i].dead,
                                          release_cases[_i].dead_holds_key),
                     release_cases[_i].want);
}
END_TEST

static Suite *outcome_suite(void)
{
    Suite *s = suite_create("outcome");
    TCase *tc = tcase_create("failure");
    tcase_add_loop_test(tc, test_connection_failed_table, 0,
                        (int)(sizeof(connection_cases) / sizeof(connection_cases[0])));
    tcase_add_test(tc, test_permanent_is_dead_at_once);
    tcase_add_test(tc, test_transient_retries_with_backoff_until_the_limit);
    tcase_add_test(tc, test_connection_failure_is_no_attempt);
    suite_add_tcase(s, tc);

    tc = tcase_create("key");
    tcase_add_loop_test(tc, test_releases_key_table, 0,
                        (int)(sizeof(release_cases) / sizeof(release_cases[0])));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(outcome_suite());
}
