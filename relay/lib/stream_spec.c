/* The stream the relay creates, as plain values: parsed settings and differences from a real one.
 */
#include "outbox_relay/lib/stream_spec.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S  INT64_C(1000000000)

static const struct {
    const char *name;
    int64_t ns;
} duration_units[] = {
    /* Longest names first: "ms" before "m" and "s". */
    {"ns", 1},
    {"us", 1000},
    {"ms", NS_PER_MS},
    {"s", NS_PER_S},
    {"m", 60 * NS_PER_S},
    {"h", 3600 * NS_PER_S},
    {"d", 86400 * NS_PER_S},
};

int stream_spec_parse_duration(const char *text, int64_t *ns, char *why, size_t whylen)
{
    int64_t total = 0;
    const char *p = text;
    if (strcmp(text, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (*p == '\0') {
        snprintf(why, whylen, "is empty");
        return -1;
    }
    while (*p != '\0') {
        if (!isdigit((unsigned char)*p)) {
            snprintf(why, whylen, "\"%s\" is not a duration such as 0, 90s, 2m, 1h30m, 7d", text);
            return -1;
        }
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n > (INT64_MAX - 9) / 10)
                goto too_long;
            n = n * 10 + (*p++ - '0');
        }
        size_t best = 0, match = sizeof(duration_units) / sizeof(duration_units[0]);
        for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
            size_t l = strlen(duration_units[i].name);
            if (l > best && strncmp(p, duration_units[i].name, l) == 0) {
                best = l;
                match = i;
            }
        }
        if (best == 0) {
            snprintf(why, whylen, "\"%s\" needs a unit after each number (ns, us, ms, s, m, h, d)",
                     text);
            return -1;
        }
        if (n > 0 && duration_units[match].ns > (INT64_MAX - total) / n)
            goto too_long;
        total += n * duration_units[match].ns;
        p += best;
    }
    *ns = total;
    return 0;
too_long:
    snprintf(why, whylen, "\"%s\" is too long", text);
    return -1;
}

void stream_spec_format_duration(int64_t ns, char *buf, size_t len)
{
    static const struct {
        const char *name;
        int64_t ns;
    } parts[] = {{"d", 86400 * NS_PER_S},
                 {"h", 3600 * NS_PER_S},
                 {"m", 60 * NS_PER_S},
                 {"s", NS_PER_S},
                 {"ms", NS_PER_MS},
                 {"us", 1000},
                 {"ns", 1}};
    if (ns <= 0) {
        snprintf(buf, len, "0");
        return;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && ns > 0 && used < len; i++) {
        if (ns >= parts[i].ns) {
            int w =
                snprintf(buf + used, len - used, "%" PRId64 "%s", ns / parts[i].ns, parts[i].name);
            if (w < 0)
                return;
            used += (size_t)w;
            ns %= parts[i].ns;
        }
    }
}

int stream_spec_from_config(const struct relay_config *cfg, struct stream_spec *out, char *err,
                            size_t errlen)
{
    char why[200];
    memset(out, 0, sizeof(*out));
    out->replicas = cfg->stream_replicas;
    if (strcmp(cfg->stream_storage, "file") == 0) {
        out->memory = false;
    } else if (strcmp(cfg->stream_storage, "memory") == 0) {
        out->memory = true;
    } else {
        snprintf(err, errlen, "OUTBOX_STREAM_STORAGE: \"%s\" is not file or memory",
                 cfg->stream_storage);
        return -1;
    }
    if (stream_spec_parse_duration(cfg->stream_max_age, &out->max_age_ns, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "OUTBOX_STREAM_MAX_AGE: %s", why);
        return -1;
    }
    if (stream_spec_parse_duration(cfg->stream_duplicate_window, &out->duplicate_window_ns, why,
                                   sizeof(why)) < 0) {
        snprintf(err, errlen, "OUTBOX_STREAM_DUPLICATE_WINDOW: %s", why);
        return -1;
    }
    if (out->duplicate_window_ns == 0) {
        /* JetStream reads 0 as its default (2 minutes): say what it means. */
        snprintf(err, errlen,
                 "OUTBOX_STREAM_DUPLICATE_WINDOW: must be above 0 (a retried publish is "
                 "deduplicated only inside the window)");
        return -1;
    }
    if (out->max_age_ns > 0 && out->duplicate_window_ns > out->max_age_ns) {
        char a[32], d[32];
        stream_spec_format_duration(out->max_age_ns, a, sizeof(a));
        stream_spec_format_duration(out->duplicate_window_ns, d, sizeof(d));
        snprintf(err, errlen,
                 "OUTBOX_STREAM_DUPLICATE_WINDOW: %s is longer than OUTBOX_STREAM_MAX_AGE %s "
                 "(JetStream refuses such a stream)",
                 d, a);
        return -1;
    }
    const char *s = cfg->stream_subjects;
    while (*s != '\0') {
        s += strspn(s, " ,");
        size_t n = strcspn(s, ",");
        while (n > 0 && s[n - 1] == ' ')
            n--;
        if (n == 0)
            break;
        if (out->nsubjects == STREAM_SPEC_MAX_SUBJECTS || n >= sizeof(out->subjects[0])) {
            snprintf(err, errlen, "OUTBOX_STREAM_SUBJECTS: more than %d subjects or one too long",
                     STREAM_SPEC_MAX_SUBJECTS);
            return -1;
        }
        memcpy(out->subjects[out->nsubjects], s, n);
        out->subjects[out->nsubjects++][n] = '\0';
        s += n;
        s += strcspn(s, ",");
    }
    return 0;
}

/* Appends one "; "-separated item to out. */
static void diff_add(char *out, size_t len, int *count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void diff_add(char *out, size_t len, int *count, const char *fmt, ...)
{
    size_t used = strlen(out);
    if (*count > 0 && used + 2 < len) {
        memcpy(out + used, "; ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    if (used < len)
        vsnprintf(out + used, len - used, fmt, ap);
    va_end(ap);
    (*count)++;
}

void stream_spec_from_stream(const jsStreamConfig *c, struct stream_spec *out)
{
    memset(out, 0, sizeof(*out));
    out->replicas = (int)c->Replicas;
    out->memory = c->Storage == js_MemoryStorage;
    out->max_age_ns = c->MaxAge;
    out->duplicate_window_ns = c->Duplicates;
    for (int i = 0; i < c->SubjectsLen && out->nsubjects < STREAM_SPEC_MAX_SUBJECTS; i++)
        snprintf(out->subjects[out->nsubjects++], sizeof(out->subjects[0]), "%s", c->Subjects[i]);
}

int stream_spec_diff(const struct stream_spec *want, const struct stream_spec *have, char *out,
                     size_t len)
{
    int count = 0;
    char a[32], b[32];
    if (len > 0)
        out[0] = '\0';
    if (have->replicas != want->replicas)
        diff_add(out, len, &count, "replicas %d, settings ask %d", have->replicas, want->replicas);
    if (have->memory != want->memory)
        diff_add(out, len, &count, "storage %s, settings ask %s", have->memory ? "memory" : "file",
                 want->memory ? "memory" : "file");
    if (have->max_age_ns != want->max_age_ns) {
        stream_spec_format_duration(have->max_age_ns, a, sizeof(a));
        stream_spec_format_duration(want->max_age_ns, b, sizeof(b));
        diff_add(out, len, &count, "max age %s, settings ask %s", a, b);
    }
    if (have->duplicate_window_ns != want->duplicate_window_ns) {
        stream_spec_format_duration(have->duplicate_window_ns, a, sizeof(a));
        stream_spec_format_duration(want->duplicate_window_ns, b, sizeof(b));
        diff_add(out, len, &count, "duplicate window %s, settings ask %s", a, b);
    }
    for (int i = 0; i < want->nsubjects; i++) {
        bool found = false;
        for (int j = 0; j < have->nsubjects && !found; j++)
            found = strcmp(want->subjects[i], have->subjects[j]) == 0;
        if (!found)
            diff_add(out, len, &count, "subject %s missing", want->subjects[i]);
    }
    return count;
}
