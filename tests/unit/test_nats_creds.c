/* Unit tests for reading a .creds file's user JWT to explain a refused connection. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "outbox_relay/nats/nats_creds.h"
#include "run_suite.h"

/* Unsigned JWTs (the signature is the server's concern): header and claims, base64url. */
#define HEADER "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ."
/* {"name":"relay-expired","sub":"UEXPIRED","iss":"AACCOUNT","exp":1577836800} */
#define EXPIRED                                                                                    \
    HEADER                                                                                         \
    "eyJuYW1lIjoicmVsYXktZXhwaXJlZCIsInN1YiI6IlVFWFBJUkVEIiwiaXNzIjoiQUFDQ09VTlQiLCJleHAiOj"       \
    "E1Nzc4MzY4MDB9.c2ln"
/* {"name":"relay","sub":"UVALID","iss":"AACCOUNT","iat":1700000000} */
#define VALID                                                                                      \
    HEADER                                                                                         \
    "eyJuYW1lIjoicmVsYXkiLCJzdWIiOiJVVkFMSUQiLCJpc3MiOiJBQUNDT1VOVCIsImlhdCI6MTcwMDAwMDAwMH0"      \
    ".c2ln"
/* {"name":"later","sub":"ULATER","iss":"AACCOUNT","nbf":1900000000} */
#define LATER                                                                                      \
    HEADER                                                                                         \
    "eyJuYW1lIjoibGF0ZXIiLCJzdWIiOiJVTEFURVIiLCJpc3MiOiJBQUNDT1VOVCIsIm5iZiI6MTkwMDAwMDAwMH0"      \
    ".c2ln"
#define SEED "SUAICNHFXG57DIHQSNCUJ7AQPGZR7FIJTUTG3OEBT2CQ2USQBJEXMLP3YI"
#define NOW  1800000000

static char path[64];

/* A .creds file in the layout nats.c and nsc write, with `jwt`. */
static const char *creds_with(const char *jwt)
{
    snprintf(path, sizeof path, "/tmp/outbox-creds-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n" SEED "\n------END USER NKEY SEED------\n",
            jwt);
    fclose(f);
    return path;
}

static char *explain(const char *jwt, int *rc)
{
    static char buf[400];
    *rc = nats_creds_explain_refusal(creds_with(jwt), NOW, buf, sizeof buf);
    unlink(path);
    ck_assert_ptr_null(strstr(buf, SEED));
    return buf;
}

START_TEST(test_expired_user_names_the_expiry)
{
    int rc;
    const char *why = explain(EXPIRED, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(why, "user authentication expired") != NULL &&
                      strstr(why, "2020-01-01T00:00:00Z") != NULL &&
                      strstr(why, "\"relay-expired\" (UEXPIRED)") != NULL,
                  "%s", why);
}
END_TEST

START_TEST(test_unexpired_user_points_at_revocation)
{
    int rc;
    const char *why = explain(VALID, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(why, "revoked by its account AACCOUNT") != NULL &&
                      strstr(why, "(UVALID)") != NULL,
                  "%s", why);
}
END_TEST

START_TEST(test_user_not_valid_yet)
{
    int rc;
    const char *why = explain(LATER, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(why, "not valid yet") != NULL && strstr(why, "2030-03-17") != NULL, "%s",
                  why);
}
END_TEST

START_TEST(test_no_readable_jwt)
{
    int rc;
    const char *why = explain("not-a-jwt", &rc);
    ck_assert_int_eq(rc, -1);
    ck_assert_str_eq(why, "");
    why = explain("", &rc);
    ck_assert_int_eq(rc, -1);
    char buf[64] = "x";
    ck_assert_int_eq(nats_creds_explain_refusal("/nonexistent/user.creds", NOW, buf, sizeof buf),
                     -1);
    ck_assert_str_eq(buf, "");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nats_creds");
    TCase *tc = tcase_create("nats_creds");
    tcase_add_test(tc, test_expired_user_names_the_expiry);
    tcase_add_test(tc, test_unexpired_user_points_at_revocation);
    tcase_add_test(tc, test_user_not_valid_yet);
    tcase_add_test(tc, test_no_readable_jwt);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
