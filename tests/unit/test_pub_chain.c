/* Unit tests for the publish chain: expectations, epochs, breaks, repairs, another writer. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/nats/pub_chain.h"
#include "run_suite.h"

/* Publishes event_id with `publishing` others in flight; returns its position. */
static struct chain_pos publish(struct pub_chain *c, size_t publishing, const char *event_id,
                                const char *want_expect)
{
    struct chain_pos pos;
    const char *expect = NULL;
    ck_assert_int_eq(pub_chain_expect(c, publishing, "s.a", false, NULL, NULL, &pos, &expect),
                     CHAIN_GO);
    if (want_expect == NULL)
        ck_assert_msg(expect == NULL, "%s expected %s, wanted nothing", event_id, expect);
    else
        ck_assert_msg(expect != NULL && strcmp(expect, want_expect) == 0,
                      "%s expected %s, wanted %s", event_id, expect ? expect : "nothing",
                      want_expect);
    pub_chain_sent(c, &pos, strdup(event_id));
    return pos;
}

START_TEST(test_each_publish_names_the_one_before)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos b = publish(&c, 1, "b", "a");
    struct chain_pos d = publish(&c, 2, "d", "b");
    ck_assert_uint_eq(a.epoch, b.epoch);
    ck_assert_uint_eq(b.epoch, d.epoch);
    ck_assert_uint_eq(a.seq + 1, b.seq);
    ck_assert_uint_eq(b.seq + 1, d.seq);
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_nothing_in_flight_starts_an_epoch)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    pub_chain_acked(&c, &a, false);
    /* Everything resolved: the next publish names nothing. */
    struct chain_pos b = publish(&c, 0, "b", NULL);
    ck_assert_uint_gt(b.epoch, a.epoch);
    ck_assert_uint_eq(b.seq, 1);
    publish(&c, 1, "c", "b");
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_failure_holds_publishes_until_all_resolved)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos b = publish(&c, 1, "b", "a");
    publish(&c, 2, "c", "b");
    ck_assert(pub_chain_may_publish(&c, 3));
    pub_chain_failed(&c, &a);
    ck_assert(c.broken);
    ck_assert(!pub_chain_may_publish(&c, 2));
    ck_assert_int_eq(pub_chain_rejected(&c, &b), CHAIN_RETRY);
    ck_assert(!pub_chain_may_publish(&c, 1));
    /* The last one resolved: repaired, and a new epoch names nothing. */
    ck_assert(pub_chain_may_publish(&c, 0));
    ck_assert(!c.broken);
    struct chain_pos b2 = publish(&c, 0, "b", NULL);
    ck_assert_uint_gt(b2.epoch, a.epoch);
    publish(&c, 1, "c", "b");
    ck_assert(c.enabled);
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_refusal_after_duplicate_is_a_retry)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos b = publish(&c, 1, "b", "a");
    /* a was in the stream already (a re-publish): nothing stored, so b is refused. */
    pub_chain_acked(&c, &a, true);
    ck_assert_int_eq(pub_chain_rejected(&c, &b), CHAIN_RETRY);
    ck_assert(c.enabled);
    ck_assert(c.broken);
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_refusal_before_the_previous_ack_is_a_retry)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos b = publish(&c, 1, "b", "a");
    struct chain_pos d = publish(&c, 2, "d", "b");
    pub_chain_acked(&c, &a, false);
    /* d refused while b's outcome is unknown: b may have failed. */
    ck_assert_int_eq(pub_chain_rejected(&c, &d), CHAIN_RETRY);
    ck_assert(c.enabled);
    (void)b;
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_refusal_after_a_stored_publish_is_another_writer)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos b = publish(&c, 1, "b", "a");
    pub_chain_acked(&c, &a, false);
    ck_assert_int_eq(pub_chain_rejected(&c, &b), CHAIN_OTHER_WRITER);
    ck_assert(!c.enabled);
    ck_assert(c.other_writer);
    /* Off: no expectation, no position. */
    ck_assert(pub_chain_may_publish(&c, 0));
    struct chain_pos d;
    const char *expect = "x";
    ck_assert_int_eq(pub_chain_expect(&c, 3, "s.b", false, NULL, NULL, &d, &expect), CHAIN_GO);
    ck_assert_ptr_null(expect);
    ck_assert_uint_eq(d.epoch, 0);
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_outcomes_of_an_old_epoch_change_nothing)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    pub_chain_failed(&c, &a);
    ck_assert(pub_chain_may_publish(&c, 0));
    struct chain_pos b = publish(&c, 0, "b", NULL);
    struct chain_pos d = publish(&c, 1, "d", "b");
    /* a late ack of the old epoch's seq 1 must not count as b stored */
    pub_chain_acked(&c, &a, false);
    ck_assert_int_eq(pub_chain_rejected(&c, &d), CHAIN_RETRY);
    ck_assert(c.enabled);
    (void)b;
    pub_chain_free(&c);
}
END_TEST

START_TEST(test_disabled_chain_never_names_or_breaks)
{
    struct pub_chain c;
    pub_chain_init(&c, false);
    struct chain_pos pos;
    const char *expect = "x";
    ck_assert_int_eq(pub_chain_expect(&c, 5, "s.a", false, NULL, NULL, &pos, &expect), CHAIN_GO);
    ck_assert_ptr_null(expect);
    ck_assert_uint_eq(pos.epoch, 0);
    pub_chain_sent(&c, &pos, strdup("x"));
    pub_chain_failed(&c, &pos);
    ck_assert(!c.broken);
    ck_assert(pub_chain_may_publish(&c, 5));
    pub_chain_free(&c);
}
END_TEST

static bool never_fits(void *arg, const char *expect)
{
    (void)arg;
    (void)expect;
    return false;
}

/* A fence never names a message of another subject: a row first of its key opens a new epoch,
 * a row behind rows of its key waits for them. */
START_TEST(test_another_subject_opens_an_epoch_or_waits)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos pos;
    const char *expect = "x";
    ck_assert_int_eq(pub_chain_expect(&c, 1, "s.other", false, NULL, NULL, &pos, &expect),
                     CHAIN_WAIT);
    ck_assert_ptr_null(expect);
    ck_assert_uint_eq(pos.epoch, 0);
    ck_assert(!c.broken);
    /* First of its key: a new epoch at once, unfenced; its subject's publishes follow it. */
    ck_assert_int_eq(pub_chain_expect(&c, 1, "s.other", true, NULL, NULL, &pos, &expect), CHAIN_GO);
    ck_assert_ptr_null(expect);
    ck_assert_uint_gt(pos.epoch, a.epoch);
    pub_chain_sent(&c, &pos, strdup("b"));
    ck_assert_int_eq(pub_chain_expect(&c, 2, "s.other", true, NULL, NULL, &pos, &expect), CHAIN_GO);
    ck_assert_str_eq(expect, "b");
    /* Behind a row of its key, with "a" of the old epoch still in flight: the chain does not
     * link it to every publish in flight, it waits. */
    ck_assert_int_eq(pub_chain_expect(&c, 2, "s.other", false, NULL, NULL, &pos, &expect),
                     CHAIN_WAIT);
    pub_chain_acked(&c, &a, false);
    ck_assert_int_eq(pub_chain_expect(&c, 1, "s.other", false, NULL, NULL, &pos, &expect),
                     CHAIN_GO);
    ck_assert_str_eq(expect, "b");
    pub_chain_free(&c);
}
END_TEST

/* A fence that does not fit: first of its key, the row opens an epoch unfenced; else it waits. */
START_TEST(test_a_fence_that_does_not_fit_is_left_off)
{
    struct pub_chain c;
    pub_chain_init(&c, true);
    struct chain_pos a = publish(&c, 0, "a", NULL);
    struct chain_pos pos;
    const char *expect = "x";
    ck_assert_int_eq(pub_chain_expect(&c, 1, "s.a", false, never_fits, NULL, &pos, &expect),
                     CHAIN_WAIT);
    ck_assert_int_eq(pub_chain_expect(&c, 1, "s.a", true, never_fits, NULL, &pos, &expect),
                     CHAIN_GO);
    ck_assert_ptr_null(expect);
    ck_assert_uint_gt(pos.epoch, a.epoch);
    pub_chain_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pub_chain");
    TCase *tc = tcase_create("pub_chain");
    tcase_add_test(tc, test_each_publish_names_the_one_before);
    tcase_add_test(tc, test_nothing_in_flight_starts_an_epoch);
    tcase_add_test(tc, test_failure_holds_publishes_until_all_resolved);
    tcase_add_test(tc, test_refusal_after_duplicate_is_a_retry);
    tcase_add_test(tc, test_refusal_before_the_previous_ack_is_a_retry);
    tcase_add_test(tc, test_refusal_after_a_stored_publish_is_another_writer);
    tcase_add_test(tc, test_outcomes_of_an_old_epoch_change_nothing);
    tcase_add_test(tc, test_disabled_chain_never_names_or_breaks);
    tcase_add_test(tc, test_another_subject_opens_an_epoch_or_waits);
    tcase_add_test(tc, test_a_fence_that_does_not_fit_is_left_off);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
