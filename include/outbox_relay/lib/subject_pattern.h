/*
 * NATS subjects and subject patterns, and which subjects the relay may
 * publish to. Pure.
 *
 * A pattern is tokens separated by '.'; the token "*" matches any one
 * token, the token ">" (last only) one or more. A subject never holds a
 * wildcard (subject_valid).
 */
#ifndef OUTBOX_RELAY_SUBJECT_PATTERN_H
#define OUTBOX_RELAY_SUBJECT_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Subjects no row may publish to, whatever the settings: "$..." drives the
 * server with the relay's credentials (JetStream's API $JS.API.>, the
 * system account's $SYS.>, $KV, $O...), "_INBOX." is where replies to
 * other clients' requests go. On true, why (if not NULL) says which.
 */
bool subject_is_system(const char *subject, const char **why);

/*
 * A subject is publishable when it is non-empty, has no empty token
 * (leading, trailing or double '.'), no whitespace or control character, and
 * no wildcard token ("*" or ">"), and at most 3840 bytes (a longer HPUB line
 * exceeds nats-server's default max_control_line, and the server would close
 * the connection), and is no system subject ("$...", "_INBOX.":
 * subject_is_system). On false, err says which rule failed.
 */
bool subject_valid(const char *subject, char *err, size_t errlen);

/* Whether pattern is a valid pattern; on false, why says what is wrong. */
bool subject_pattern_valid(const char *pattern, char *why, size_t whylen);

/* Whether subject matches pattern (both valid). */
bool subject_pattern_match(const char *pattern, const char *subject);

struct subject_list {
    size_t n;
    char **patterns;
};

/*
 * Parses comma-separated patterns (spaces around commas are ignored; ""
 * is an empty list). Strict: every item must be a valid pattern and not
 * name a system subject, and no item may be empty; -1 with why. Not strict
 * (a list JetStream checks, e.g. a stream's subjects): empty items are
 * skipped and the others taken as they are. -1 also when out of memory.
 */
int subject_list_parse(struct subject_list *out, const char *text, bool strict, char *why,
                       size_t whylen);
bool subject_list_match(const struct subject_list *list, const char *subject);
void subject_list_free(struct subject_list *list);

/*
 * Where rows may publish: with a stream (OUTBOX_STREAM), the subjects it
 * captures (OUTBOX_STREAM_SUBJECTS) and the allowed patterns
 * (OUTBOX_ALLOW_SUBJECTS); without one, the allowed patterns when any are
 * set, else any subject. System subjects never.
 */
struct subject_policy {
    bool restricted;
    struct subject_list stream; /* the stream's subjects */
    struct subject_list allow;  /* other allowed patterns */
};

/* stream_subjects: NULL or "" when no stream is set. -1 with why (naming the setting). */
int subject_policy_init(struct subject_policy *p, const char *stream_subjects, const char *allow,
                        char *why, size_t whylen);
void subject_policy_free(struct subject_policy *p);

/*
 * Whether a (valid) subject may be published. On false, why starts
 * "invalid subject" (a system subject: never publishable) or "subject not
 * allowed" (outside the stream and the allowed patterns: a setting could
 * allow it).
 */
bool subject_policy_allows(const struct subject_policy *p, const char *subject, char *why,
                           size_t whylen);

#endif
