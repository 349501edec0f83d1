/* NATS subject patterns ('*' one token, '>' the rest) and the subjects rows may publish to. */
#include "outbox_relay/lib/subject_pattern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/lib/error_text.h"

#define QUOTED_MAX 64

bool subject_is_system(const char *subject, const char **why)
{
    const char *w = NULL;
    if (subject[0] == '$')
        w = "a system subject (\"$...\": the server's and JetStream's API)";
    else if (strncmp(subject, "_INBOX.", 7) == 0)
        w = "a reply subject (\"_INBOX.\": another client's request)";
    if (why != NULL)
        *why = w;
    return w != NULL;
}

/*
 * nats-server closes the connection when a protocol line is longer than its
 * max_control_line (4096 by default). The HPUB line carries the subject, the
 * reply inbox and two sizes, so a longer subject would not just fail its own
 * publish but drop every in-flight publish with it, on every retry.
 */
#define SUBJECT_MAX_LEN 3840

bool subject_valid(const char *subject, char *err, size_t errlen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];

    if (subject == NULL || subject[0] == '\0') {
        error_text_set(err, errlen, "invalid subject \"\": empty");
        return false;
    }
    size_t len = strlen(subject);
    if (len > SUBJECT_MAX_LEN) {
        error_text_set(err, errlen, "invalid subject %s: %zu bytes, longer than %d",
                       error_text_quote(subject, q, sizeof(q)), len, SUBJECT_MAX_LEN);
        return false;
    }
    const char *system = NULL;
    if (subject_is_system(subject, &system)) {
        error_text_set(err, errlen, "invalid subject %s: %s",
                       error_text_quote(subject, q, sizeof(q)), system);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)subject[i];
        if (c <= ' ' || c == 0x7f) {
            error_text_set(err, errlen,
                           "invalid subject %s: contains whitespace or a control character",
                           error_text_quote(subject, q, sizeof(q)));
            return false;
        }
    }

    const char *tok = subject;
    for (;;) {
        const char *dot = strchr(tok, '.');
        size_t toklen = dot ? (size_t)(dot - tok) : strlen(tok);
        if (toklen == 0) {
            error_text_set(err, errlen, "invalid subject %s: empty token",
                           error_text_quote(subject, q, sizeof(q)));
            return false;
        }
        if (toklen == 1 && (tok[0] == '*' || tok[0] == '>')) {
            error_text_set(err, errlen, "invalid subject %s: wildcard token \"%c\"",
                           error_text_quote(subject, q, sizeof(q)), tok[0]);
            return false;
        }
        if (dot == NULL)
            break;
        tok = dot + 1;
    }
    return true;
}

bool subject_pattern_valid(const char *pattern, char *why, size_t whylen)
{
    const char *w = NULL;
    if (pattern[0] == '\0')
        w = "empty";
    for (const char *p = pattern; w == NULL && *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            w = "contains whitespace or a control character";
    for (const char *tok = pattern; w == NULL;) {
        const char *dot = strchr(tok, '.');
        size_t n = dot ? (size_t)(dot - tok) : strlen(tok);
        if (n == 0)
            w = "empty token";
        else if (n > 1 && (memchr(tok, '*', n) != NULL || memchr(tok, '>', n) != NULL))
            w = "a wildcard must be a whole token";
        else if (n == 1 && tok[0] == '>' && dot != NULL)
            w = "\">\" must be the last token";
        if (dot == NULL)
            break;
        tok = dot + 1;
    }
    if (w != NULL && why != NULL)
        snprintf(why, whylen, "\"%.*s\": %s", QUOTED_MAX, pattern, w);
    return w == NULL;
}

bool subject_pattern_match(const char *pattern, const char *subject)
{
    const char *p = pattern, *s = subject;
    for (;;) {
        size_t pn = strcspn(p, "."), sn = strcspn(s, ".");
        if (pn == 1 && p[0] == '>')
            return sn > 0;
        if (!(pn == 1 && p[0] == '*') && (pn != sn || memcmp(p, s, pn) != 0))
            return false;
        if (sn == 0)
            return false;
        p += pn;
        s += sn;
        if (*p == '\0' || *s == '\0')
            return *p == '\0' && *s == '\0';
        p++;
        s++;
    }
}

int subject_list_parse(struct subject_list *out, const char *text, bool strict, char *why,
                       size_t whylen)
{
    out->n = 0;
    out->patterns = NULL;
    size_t cap = 1;
    for (const char *c = text; *c; c++)
        cap += *c == ',';
    if (text[strspn(text, " ")] == '\0')
        return 0;
    out->patterns = calloc(cap, sizeof(char *));
    if (out->patterns == NULL)
        goto nomem;
    for (const char *s = text;;) {
        s += strspn(s, " ");
        size_t n = strcspn(s, ",");
        while (n > 0 && s[n - 1] == ' ')
            n--;
        if (n == 0 && strict) {
            snprintf(why, whylen, "an empty pattern (two commas, or one at an end)");
            goto fail;
        }
        if (n > 0) {
            char *pat = strndup(s, n);
            if (pat == NULL)
                goto nomem;
            out->patterns[out->n++] = pat;
            const char *sys = NULL;
            if (strict && !subject_pattern_valid(pat, why, whylen))
                goto fail;
            if (strict && subject_is_system(pat, &sys)) {
                snprintf(why, whylen, "\"%.*s\": %s is never published", QUOTED_MAX, pat, sys);
                goto fail;
            }
        }
        s += strcspn(s, ",");
        if (*s == '\0')
            break;
        s++;
    }
    return 0;
nomem:
    snprintf(why, whylen, "out of memory");
fail:
    subject_list_free(out);
    return -1;
}

bool subject_list_match(const struct subject_list *list, const char *subject)
{
    for (size_t i = 0; i < list->n; i++)
        if (subject_pattern_match(list->patterns[i], subject))
            return true;
    return false;
}

void subject_list_free(struct subject_list *list)
{
    for (size_t i = 0; i < list->n; i++)
        free(list->patterns[i]);
    free(list->patterns);
    list->n = 0;
    list->patterns = NULL;
}

int subject_policy_init(struct subject_policy *p, const char *stream_subjects, const char *allow,
                        char *why, size_t whylen)
{
    memset(p, 0, sizeof(*p));
    char w[256];
    if (subject_list_parse(&p->allow, allow ? allow : "", true, w, sizeof(w)) < 0) {
        snprintf(why, whylen, "OUTBOX_ALLOW_SUBJECTS: %s", w);
        return -1;
    }
    bool stream = stream_subjects != NULL && stream_subjects[0] != '\0';
    if (stream && subject_list_parse(&p->stream, stream_subjects, false, w, sizeof(w)) < 0) {
        snprintf(why, whylen, "OUTBOX_STREAM_SUBJECTS: %s", w);
        subject_list_free(&p->allow);
        return -1;
    }
    p->restricted = stream || p->allow.n > 0;
    return 0;
}

void subject_policy_free(struct subject_policy *p)
{
    subject_list_free(&p->stream);
    subject_list_free(&p->allow);
}

bool subject_policy_allows(const struct subject_policy *p, const char *subject, char *why,
                           size_t whylen)
{
    char q[ERROR_TEXT_QUOTED_SIZE];
    const char *sys = NULL;
    if (subject_is_system(subject, &sys)) {
        error_text_set(why, whylen, "invalid subject %s: %s",
                       error_text_quote(subject, q, sizeof(q)), sys);
        return false;
    }
    if (!p->restricted || subject_list_match(&p->stream, subject) ||
        subject_list_match(&p->allow, subject))
        return true;
    error_text_set(why, whylen,
                   "subject not allowed: %s is outside %s (OUTBOX_ALLOW_SUBJECTS may allow it)",
                   error_text_quote(subject, q, sizeof(q)),
                   p->stream.n > 0 ? "the stream's subjects (OUTBOX_STREAM_SUBJECTS)"
                                   : "OUTBOX_ALLOW_SUBJECTS");
    return false;
}
