/* suggest.c: the nearest command, flag or setting name for a typo, and none for a stranger. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/suggest.h"
#include "run_suite.h"

static const char *const names[] = {"status",
                                    "requeue",
                                    "replay",
                                    "audit",
                                    "migrate",
                                    "OUTBOX_BATCH_SIZE",
                                    "OUTBOX_MAX_INFLIGHT",
                                    "batch-size"};
#define NNAMES (sizeof(names) / sizeof(names[0]))

static const char *closest(const char *word)
{
    return suggest_closest(word, strlen(word), names, NNAMES, sizeof(names[0]));
}

START_TEST(test_distance_counts_the_usual_typos_as_one_edit)
{
    ck_assert_uint_eq(suggest_distance("status", 6, "status", 6), 0);
    ck_assert_uint_eq(suggest_distance("stauts", 6, "status", 6), 1);  /* swap */
    ck_assert_uint_eq(suggest_distance("statu", 5, "status", 6), 1);   /* deletion */
    ck_assert_uint_eq(suggest_distance("statuss", 7, "status", 6), 1); /* insertion */
    ck_assert_uint_eq(suggest_distance("statos", 6, "status", 6), 1);  /* substitution */
    ck_assert_uint_eq(suggest_distance("STATUS", 6, "status", 6), 0);  /* case */
    ck_assert_uint_eq(suggest_distance("", 0, "abc", 3), 3);
}
END_TEST

/* Each typo, and the name it should lead to (NULL: nothing is close enough). */
static const struct {
    const char *typo, *want;
} cases[] = {
    {"stauts", "status"},
    {"replya", "replay"},
    {"migrat", "migrate"},
    {"OUTBOX_BATCH_SISE", "OUTBOX_BATCH_SIZE"},
    {"OUTBOX_BATCHSIZE", "OUTBOX_BATCH_SIZE"},
    {"OUTBOX_MAX_INFLIGT", "OUTBOX_MAX_INFLIGHT"},
    {"batch-sise", "batch-size"},
    {"outbox_batch_size", "OUTBOX_BATCH_SIZE"},
    /* Kubernetes service links (a Service named outbox-relay) are no typo of a setting. */
    {"OUTBOX_RELAY_SERVICE_HOST", NULL},
    {"OUTBOX_RELAY_PORT", NULL},
    {"xyz", NULL},
    {"run", NULL},
    {"", NULL},
};

START_TEST(test_closest_name_or_none)
{
    const char *got = closest(cases[_i].typo);
    if (cases[_i].want == NULL)
        ck_assert_msg(got == NULL, "%s: suggested %s", cases[_i].typo, got);
    else
        ck_assert_msg(got != NULL && strcmp(got, cases[_i].want) == 0, "%s: want %s, got %s",
                      cases[_i].typo, cases[_i].want, got ? got : "(none)");
}
END_TEST

START_TEST(test_overlong_word_gets_no_suggestion)
{
    char word[200];
    memset(word, 'a', sizeof(word) - 1);
    word[sizeof(word) - 1] = '\0';
    ck_assert_ptr_null(closest(word));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("suggest");
    TCase *tc = tcase_create("suggest");
    tcase_add_test(tc, test_distance_counts_the_usual_typos_as_one_edit);
    tcase_add_loop_test(tc, test_closest_name_or_none, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, test_overlong_word_gets_no_suggestion);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
