/* Redaction of connection settings: every password form libpq and nats.c read, masked. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "outbox_relay/lib/redact.h"
#include "run_suite.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct redact_case {
    const char *in, *out;
    const char *secrets[4]; /* none of these, nor any piece of them, may be shown */
};

static const struct redact_case pg_cases[] = {
    {"postgresql://u:se,cret@h/db", "user=u password=*** dbname=db host=h", {"se,cret"}},
    {"postgresql://u:se?cret@h/db", "user=u password=*** dbname=db host=h", {"se?cret"}},
    {"postgresql://u:se#cret@h/db", "user=u password=*** dbname=db host=h", {"se#cret"}},
    {"postgresql://u:se cret@h/db", "user=u password=*** dbname=db host=h", {"se cret"}},
    {"postgresql://u:se%2Ccret%40x@h1:5432,h2:5433/db?sslmode=require",
     "user=u password=*** dbname=db host=h1,h2 port=5432,5433 sslmode=require",
     {"se%2Ccret%40x", "se,cret@x"}},
    {"postgresql:///db?user=u&password=se,cret%20x&sslmode=require",
     "user=u password=*** dbname=db sslmode=require",
     {"se,cret x", "se,cret%20x"}},
    {"postgres://relay:p@ss@db.example/app",
     "user=relay password=*** dbname=app host=***@db.example",
     {"p@ss"}},
    {"postgresql://relay@db.example/app", "user=relay dbname=app host=db.example", {NULL}},
    {"host=h password='se cret,#?\\'x' dbname=db",
     "password=*** dbname=db host=h",
     {"se cret,#?", "se cret,#?'x"}},
    {"host=h password = se,cret sslpassword=keyXphrase#zz9 sslmode=verify-full",
     "password=*** host=h sslmode=verify-full sslpassword=***",
     {"se,cret", "keyXphrase#zz9"}},
    {"host=h user='a b' application_name=x", "user='a b' host=h application_name=x", {NULL}},
    {"", "", {NULL}},
    {"postgresql://u:x@h/db?nosuchoption=1", "(malformed)", {NULL}},
};

static const struct redact_case nats_cases[] = {
    {"nats://u:se,cret@a:4222", "nats://u:***@a:4222", {"se,cret"}},
    {"nats://u:se?cret@a:4222,nats://v:p#w x@b:4222",
     "nats://u:***@a:4222,nats://v:***@b:4222",
     {"se?cret", "p#w x"}},
    {"nats://u:se%2Ccret@a:4222", "nats://u:***@a:4222", {"se%2Ccret"}},
    {"nats://relay:p@ss@a:4222, tls://b:4443", "nats://relay:***@a:4222, tls://b:4443", {"p@ss"}},
    {"nats://tok,en@a:4222", "nats://***@a:4222", {"tok,en"}},
    {"tls://tok?en@a:4443,nats://b:4222", "tls://***@a:4443,nats://b:4222", {"tok?en"}},
    {"u:se,cret@a:4222", "u:***@a:4222", {"se,cret"}},
    {"a:4222,nats://u:pw@b:4222", "a:4222,nats://u:***@b:4222", {NULL}},
    {"nats://127.0.0.1:4222,nats://127.0.0.2:4222",
     "nats://127.0.0.1:4222,nats://127.0.0.2:4222",
     {NULL}},
    {"", "", {NULL}},
};

/* The secret, and each piece of it between the characters that used to end a redaction. */
static void assert_not_shown(const char *shown, const char *secret)
{
    ck_assert_msg(strstr(shown, secret) == NULL, "\"%s\" shows \"%s\"", shown, secret);
    char piece[128];
    snprintf(piece, sizeof piece, "%s", secret);
    for (char *save = NULL, *p = strtok_r(piece, ",?# @'%", &save); p != NULL;
         p = strtok_r(NULL, ",?# @'%", &save))
        if (strlen(p) >= 3 && strcmp(p, "***") != 0)
            ck_assert_msg(strstr(shown, p) == NULL, "\"%s\" shows \"%s\" of \"%s\"", shown, p,
                          secret);
}

static void check_case(const struct redact_case *c, void (*redact)(const char *, char *, size_t))
{
    char buf[512];
    redact(c->in, buf, sizeof buf);
    ck_assert_msg(strcmp(buf, c->out) == 0, "\"%s\" -> \"%s\", want \"%s\"", c->in, buf, c->out);
    for (size_t k = 0; k < ARRAY_LEN(c->secrets) && c->secrets[k] != NULL; k++)
        assert_not_shown(buf, c->secrets[k]);
}

START_TEST(test_pg_conninfo)
{
    check_case(&pg_cases[_i], redact_pg_conninfo);
}
END_TEST

START_TEST(test_nats_urls)
{
    check_case(&nats_cases[_i], redact_nats_urls);
}
END_TEST

START_TEST(test_truncated_and_null)
{
    char small[20], buf[64];
    redact_pg_conninfo("postgresql://u:se,cret@a-long-host-name/db", small, sizeof small);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_ptr_null(strstr(small, "se,"));
    redact_nats_urls("nats://u:se,cret@a-long-host-name:4222", small, sizeof small);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert_ptr_null(strstr(small, "se,"));
    redact_pg_conninfo(NULL, buf, sizeof buf);
    ck_assert_str_eq(buf, "");
    redact_nats_urls(NULL, buf, sizeof buf);
    ck_assert_str_eq(buf, "");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redact");
    TCase *tc = tcase_create("redact");
    tcase_add_loop_test(tc, test_pg_conninfo, 0, ARRAY_LEN(pg_cases));
    tcase_add_loop_test(tc, test_nats_urls, 0, ARRAY_LEN(nats_cases));
    tcase_add_test(tc, test_truncated_and_null);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
