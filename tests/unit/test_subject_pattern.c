/* Unit tests for NATS subject patterns and the subjects rows may publish to. */
#include <check.h>
#include <string.h>

#include "outbox_relay/lib/subject_pattern.h"
#include "run_suite.h"

static const struct {
    const char *pattern, *subject;
    bool match;
} matches[] = {
    {"orders.created", "orders.created", true},
    {"orders.created", "orders.created.x", false},
    {"orders.created", "orders", false},
    {"orders.*", "orders.created", true},
    {"orders.*", "orders.created.x", false},
    {"orders.*", "orders", false},
    {"orders.>", "orders.created", true},
    {"orders.>", "orders.created.x.y", true},
    {"orders.>", "orders", false},
    {"*.created", "orders.created", true},
    {"*.created", "created", false},
    {"*.*.ok", "audit.y.ok", true},
    {"*.*.ok", "audit.ok", false},
    {">", "a", true},
    {">", "a.b.c", true},
    {"*", "a", true},
    {"*", "a.b", false},
    {"a.*.>", "a.b.c", true},
    {"a.*.>", "a.b", false},
    {"order", "orders", false},
    {"orders", "order", false},
    {"a.b", "a.bc", false},
    {"ab.c", "a.c", false},
};

START_TEST(test_match)
{
    ck_assert_msg(
        subject_pattern_match(matches[_i].pattern, matches[_i].subject) == matches[_i].match,
        "\"%s\" vs \"%s\": want %d", matches[_i].pattern, matches[_i].subject, matches[_i].match);
}
END_TEST

static const struct {
    const char *pattern;
    bool valid;
} patterns[] = {
    {"a", true},     {"a.b.c", true},  {"a.*", true}, {"a.>", true},   {"*.b", true},
    {">", true},     {"*", true},      {"", false},   {"a..b", false}, {".a", false},
    {"a.", false},   {"a.>.b", false}, {"a>", false}, {"a.b*", false}, {"a b", false},
    {"a\tb", false}, {"a.*x", false},
};

START_TEST(test_valid)
{
    char why[128] = "";
    bool ok = subject_pattern_valid(patterns[_i].pattern, why, sizeof why);
    ck_assert_msg(ok == patterns[_i].valid, "\"%s\": %d (%s)", patterns[_i].pattern, ok, why);
    if (!ok)
        ck_assert_msg(why[0] != '\0', "\"%s\": no reason", patterns[_i].pattern);
}
END_TEST

START_TEST(test_system_subjects)
{
    const char *yes[] = {"$JS.API.STREAM.PURGE.ORDERS", "$SYS.REQ.SERVER.PING", "$KV.b.k",
                         "_INBOX.x", "_INBOX.abc.def"};
    const char *no[] = {"orders.x", "_INBOX", "_INBOXES.x", "a.$JS", "x._INBOX.y"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        const char *why = NULL;
        ck_assert_msg(subject_is_system(yes[i], &why) && why != NULL, "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        ck_assert_msg(!subject_is_system(no[i], NULL), "%s", no[i]);
}
END_TEST

START_TEST(test_list_parse)
{
    struct subject_list l;
    char why[256] = "";
    ck_assert_int_eq(subject_list_parse(&l, "", true, why, sizeof why), 0);
    ck_assert_uint_eq(l.n, 0);
    ck_assert(!subject_list_match(&l, "a"));
    subject_list_free(&l);
    ck_assert_int_eq(subject_list_parse(&l, " a.* , b.> ,c", true, why, sizeof why), 0);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(l.patterns[0], "a.*");
    ck_assert_str_eq(l.patterns[1], "b.>");
    ck_assert_str_eq(l.patterns[2], "c");
    ck_assert(subject_list_match(&l, "b.x.y"));
    ck_assert(subject_list_match(&l, "c"));
    ck_assert(!subject_list_match(&l, "a.x.y"));
    subject_list_free(&l);

    const char *bad[] = {"a,,b", "a,", ",a", "a..b", "a b", "$JS.API.>", "_INBOX.>", "a.b*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        ck_assert_msg(subject_list_parse(&l, bad[i], true, why, sizeof why) < 0, "%s taken",
                      bad[i]);
        ck_assert_msg(why[0] != '\0', "%s: no reason", bad[i]);
        ck_assert_ptr_null(l.patterns);
    }
    /* Not strict (a stream's subjects, as OUTBOX_STREAM_SUBJECTS writes them): empties skipped. */
    ck_assert_int_eq(subject_list_parse(&l, "a.>, ,b", false, why, sizeof why), 0);
    ck_assert_uint_eq(l.n, 2);
    subject_list_free(&l);
}
END_TEST

START_TEST(test_policy)
{
    struct subject_policy p;
    char why[256];
    /* No stream, nothing allowed: any subject but the system ones. */
    ck_assert_int_eq(subject_policy_init(&p, NULL, "", why, sizeof why), 0);
    ck_assert(subject_policy_allows(&p, "anything.at.all", why, sizeof why));
    ck_assert(!subject_policy_allows(&p, "$JS.API.STREAM.PURGE.ORDERS", why, sizeof why));
    ck_assert_msg(strncmp(why, "invalid subject", 15) == 0, "%s", why);
    ck_assert(!subject_policy_allows(&p, "_INBOX.x", why, sizeof why));
    subject_policy_free(&p);

    /* A stream: its subjects, and the allowed patterns. */
    ck_assert_int_eq(subject_policy_init(&p, "orders.>, billing.*", "audit.*.ok", why, sizeof why),
                     0);
    ck_assert(subject_policy_allows(&p, "orders.a.b", why, sizeof why));
    ck_assert(subject_policy_allows(&p, "billing.x", why, sizeof why));
    ck_assert(subject_policy_allows(&p, "audit.y.ok", why, sizeof why));
    ck_assert(!subject_policy_allows(&p, "audit.y.no", why, sizeof why));
    ck_assert_msg(strncmp(why, "subject not allowed", 19) == 0, "%s", why);
    ck_assert(!subject_policy_allows(&p, "billing.x.y", why, sizeof why));
    subject_policy_free(&p);

    /* No stream, patterns set: only those. */
    ck_assert_int_eq(subject_policy_init(&p, "", "a.>", why, sizeof why), 0);
    ck_assert(subject_policy_allows(&p, "a.b", why, sizeof why));
    ck_assert(!subject_policy_allows(&p, "b.a", why, sizeof why));
    subject_policy_free(&p);

    /* A bad pattern names the setting. */
    ck_assert_int_eq(subject_policy_init(&p, NULL, "a..b", why, sizeof why), -1);
    ck_assert_msg(strstr(why, "OUTBOX_ALLOW_SUBJECTS") != NULL, "%s", why);
}
END_TEST

START_TEST(test_reason_never_cuts_a_character)
{
    struct subject_policy p;
    char why[512];
    ck_assert_int_eq(subject_policy_init(&p, "orders.>", "", why, sizeof why), 0);
    /* 63 ASCII bytes then a 2-byte character across the 64-byte cut. */
    char subject[128];
    memset(subject, 'a', 63);
    strcpy(subject + 63, "\xc3\xa9.x");
    ck_assert(!subject_policy_allows(&p, subject, why, sizeof why));
    ck_assert_msg(strstr(why, "\xc3...") == NULL, "half a character: %s", why);
    subject_policy_free(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("subject_pattern");
    TCase *tc = tcase_create("subject_pattern");
    tcase_add_loop_test(tc, test_match, 0, sizeof matches / sizeof matches[0]);
    tcase_add_loop_test(tc, test_valid, 0, sizeof patterns / sizeof patterns[0]);
    tcase_add_test(tc, test_system_subjects);
    tcase_add_test(tc, test_list_parse);
    tcase_add_test(tc, test_policy);
    tcase_add_test(tc, test_reason_never_cuts_a_character);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
