/* What the publish chain relies on, checked against the real nats-server: a publish naming the
 * wrong last message id is refused with 10070, and a duplicate (same Nats-Msg-Id) is acked as
 * a duplicate before that check, so re-publishing a stored row never breaks on its fence. */
#include <check.h>
#include <string.h>

#include "harness.h"
#include "run_suite.h"

#define STREAM "IT_EXPECT"

/* Publishes id on it.expect with the given expectation; returns the ack or the error code. */
static int publish(const char *id, const char *expect, bool *duplicate)
{
    jsPubOptions o;
    jsPubOptions_Init(&o);
    o.MsgId = id;
    o.ExpectLastMsgId = expect;
    jsPubAck *pa = NULL;
    jsErrCode code = 0;
    natsStatus s = js_Publish(&pa, it_js(), "it.expect", id, (int)strlen(id), &o, &code);
    if (s != NATS_OK)
        return code != 0 ? (int)code : -1;
    *duplicate = pa->Duplicate;
    jsPubAck_Destroy(pa);
    return 0;
}

START_TEST(test_duplicate_is_acked_before_the_expected_last_check)
{
    const char *subjects[] = {"it.expect", NULL};
    it_js_add_stream(STREAM, subjects);
    bool dup = false;
    ck_assert_int_eq(publish("a", NULL, &dup), 0);
    ck_assert(!dup);
    ck_assert_int_eq(publish("b", "a", &dup), 0);
    ck_assert(!dup);
    /* The fence: "a" is no longer the last message. */
    ck_assert_int_eq(publish("c", "a", &dup), JSStreamWrongLastMsgIDErr);
    /* A stored message published again with a wrong expectation: a duplicate ack, not 10070. */
    ck_assert_int_eq(publish("a", "zzz", &dup), 0);
    ck_assert(dup);
    /* ... which leaves the last message as it was. */
    ck_assert_int_eq(publish("c", "b", &dup), 0);
    ck_assert(!dup);
    ck_assert_uint_eq(it_js_stream_msgs(STREAM), 3);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("js_expect_last");
    TCase *tc = it_tcase(suite, "js_expect_last", it_start_servers, 60);
    tcase_add_test(tc, test_duplicate_is_acked_before_the_expected_last_check);
    return run_suite(suite);
}
