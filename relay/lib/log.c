/* Structured logging: one JSON object or key=value text line per event, on stderr. */
#include "outbox_relay/lib/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* Read on every call from any thread, set rarely: atomics, no lock. */
static atomic_int log_min_level = LOG_INFO;
static atomic_int log_out_format = LOG_FORMAT_JSON;

/* Growable line buffer; on allocation failure it stays failed and the line is dropped. */
struct line {
    char *buf;
    size_t len;
    size_t cap;
    bool failed;
};

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_labels[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_setup(enum log_level level, enum log_format format)
{
    atomic_store(&log_min_level, (int)level);
    atomic_store(&log_out_format, (int)format);
}

void log_set_level(enum log_level level)
{
    atomic_store(&log_min_level, (int)level);
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

bool log_level_parse(const char *name, enum log_level *out)
{
    if (name == NULL)
        return false;
    for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = LOG_WARN;
        return true;
    }
    return false;
}

const char *log_level_name(enum log_level level)
{
    if ((int)level < LOG_DEBUG || (int)level > LOG_ERROR)
        return "unknown";
    return level_names[level];
}

static void line_append(struct line *l, const char *s, size_t n)
{
    if (l->failed)
        return;
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 256;
        while (cap < l->len + n + 1)
            cap *= 2;
        char *nb = realloc(l->buf, cap);
        if (nb == NULL) {
            l->failed = true;
            return;
        }
        l->buf = nb;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    l->buf[l->len] = '\0';
}

static void line_puts(struct line *l, const char *s)
{
    line_append(l, s, strlen(s));
}

static int line_dump_cb(const char *buffer, size_t size, void *data)
{
    line_append(data, buffer, size);
    return 0;
}

static void format_timestamp(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

/*
 * jansson refuses strings that are not UTF-8, and a message we cannot log
 * is worse than a mangled one: replace the bad bytes with '?'.
 */
static json_t *json_string_lossy(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *p = copy; *p; p++) {
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    }
    j = json_string(copy);
    free(copy);
    return j;
}

/*
 * The fields object, or NULL when there are none. A bad format never loses
 * the event: it becomes a field saying what was wrong.
 */
static json_t *fields_build(const char *fields, va_list ap)
{
    if (fields == NULL || fields[0] == '\0')
        return NULL;
    json_error_t jerr;
    json_t *obj = json_vpack_ex(&jerr, 0, fields, ap);
    if (obj != NULL && json_is_object(obj))
        return obj;

    char why[256];
    if (obj != NULL)
        snprintf(why, sizeof(why), "format \"%s\" does not build an object", fields);
    else
        snprintf(why, sizeof(why), "format \"%s\": %s", fields, jerr.text);
    json_decref(obj);
    obj = json_object();
    if (obj != NULL)
        json_object_set_new(obj, "log_fields_error", json_string_lossy(why));
    return obj;
}

/* A field that would shadow ts, level or msg keeps its value under another name. */
static const char *field_key(const char *key, char *buf, size_t len)
{
    if (strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0) {
        snprintf(buf, len, "field_%s", key);
        return buf;
    }
    return key;
}

static void line_json(struct line *l, const char *ts, enum log_level level, const char *msg,
                      json_t *fields)
{
    json_t *obj = json_object();
    if (obj == NULL) {
        l->failed = true;
        return;
    }
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(log_level_name(level)));
    json_object_set_new(obj, "msg", json_string_lossy(msg));
    if (fields != NULL) {
        const char *key;
        json_t *value;
        char renamed[128];
        json_object_foreach(fields, key, value)
        {
            json_object_set(obj, field_key(key, renamed, sizeof(renamed)), value);
        }
    }
    /* Reals with 6 significant digits: "retry_in_s":5.422, not 5.4219999999999997. */
    if (json_dump_callback(obj, line_dump_cb, l, JSON_COMPACT | JSON_REAL_PRECISION(6)) != 0)
        l->failed = true;
    json_decref(obj);
}

/* Text values are bare unless they would be ambiguous when split on spaces and '='. */
static void text_value(struct line *l, const char *s, bool quote_if_needed)
{
    bool quote = false;
    if (quote_if_needed) {
        quote = s[0] == '\0';
        for (const char *p = s; *p && !quote; p++) {
            unsigned char c = (unsigned char)*p;
            quote = c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f;
        }
    }
    if (quote)
        line_puts(l, "\"");
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' && quote)
            line_puts(l, "\\\"");
        else if (c == '\\' && quote)
            line_puts(l, "\\\\");
        else if (c == '\n')
            line_puts(l, "\\n");
        else if (c == '\r')
            line_puts(l, "\\r");
        else if (c == '\t')
            line_puts(l, "\\t");
        else if (c < ' ' || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            line_puts(l, esc);
        } else
            line_append(l, p, 1);
    }
    if (quote)
        line_puts(l, "\"");
}

static void text_field(struct line *l, const char *key, json_t *value)
{
    char buf[64];
    line_puts(l, " ");
    text_value(l, key, true);
    line_puts(l, "=");
    switch (json_typeof(value)) {
    case JSON_STRING:
        text_value(l, json_string_value(value), true);
        break;
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        line_puts(l, buf);
        break;
    case JSON_REAL:
        snprintf(buf, sizeof(buf), "%g", json_real_value(value));
        line_puts(l, buf);
        break;
    case JSON_TRUE:
        line_puts(l, "true");
        break;
    case JSON_FALSE:
        line_puts(l, "false");
        break;
    case JSON_NULL:
        line_puts(l, "null");
        break;
    default: {
        char *s = json_dumps(value, JSON_COMPACT);
        text_value(l, s ? s : "?", true);
        free(s);
        break;
    }
    }
}

static void line_text(struct line *l, const char *ts, enum log_level level, const char *msg,
                      json_t *fields)
{
    line_puts(l, ts);
    line_puts(l, " ");
    line_puts(l, ((int)level >= LOG_DEBUG && (int)level <= LOG_ERROR) ? level_labels[level]
                                                                      : "UNKNOWN");
    line_puts(l, " ");
    text_value(l, msg, false);
    if (fields != NULL) {
        const char *key;
        json_t *value;
        json_object_foreach(fields, key, value)
        {
            text_field(l, key, value);
        }
    }
}

/*
 * One write(2) per line: the kernel keeps concurrent writes to stderr from
 * interleaving (atomic up to PIPE_BUF on pipes, whole writes on files).
 * The loop only matters if the kernel takes part of a very long line.
 */
static void line_write(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void log_event(enum log_level level, const char *msg, const char *fields, ...)
{
    if (!log_enabled(level))
        return;
    if (msg == NULL)
        msg = "";

    int saved_errno = errno;
    char ts[40];
    format_timestamp(ts, sizeof(ts));

    va_list ap;
    va_start(ap, fields);
    json_t *fobj = fields_build(fields, ap);
    va_end(ap);

    struct line l = {0};
    if (atomic_load_explicit(&log_out_format, memory_order_relaxed) == LOG_FORMAT_TEXT)
        line_text(&l, ts, level, msg, fobj);
    else
        line_json(&l, ts, level, msg, fobj);
    line_puts(&l, "\n");
    json_decref(fobj);

    if (!l.failed) {
        line_write(l.buf, l.len);
    } else {
        static const char oom_json[] =
            "{\"level\":\"error\",\"msg\":\"log: out of memory, an event was dropped\"}\n";
        static const char oom_text[] = "ERROR log: out of memory, an event was dropped\n";
        if (atomic_load_explicit(&log_out_format, memory_order_relaxed) == LOG_FORMAT_TEXT)
            line_write(oom_text, sizeof(oom_text) - 1);
        else
            line_write(oom_json, sizeof(oom_json) - 1);
    }
    free(l.buf);
    errno = saved_errno;
}
