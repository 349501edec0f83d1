/* POSIX extended regular expressions for the log tests' assertions on text. */
#ifndef OUTBOX_RELAY_TEST_TEXT_MATCH_H
#define OUTBOX_RELAY_TEST_TEXT_MATCH_H

#include <check.h>
#include <regex.h>
#include <stdbool.h>

/* True if `pattern` (ERE) matches somewhere in s; a pattern that does not compile fails the test.
 */
static inline bool text_matches(const char *s, const char *pattern)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#endif
