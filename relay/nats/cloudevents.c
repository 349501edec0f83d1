/* CloudEvents binary content mode: the ce- headers added to a row's headers. */
#include "outbox_relay/nats/cloudevents.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#define US_PER_S 1000000LL

bool cloudevents_time(double created_at, char *buf, size_t len)
{
    /* Past year 9999 RFC 3339 has no form; NaN and infinities have none either. */
    if (!isfinite(created_at) || fabs(created_at) > 253402300799.0)
        return false;
    long long us = llround(created_at * 1e6);
    long long s = us / US_PER_S, frac = us % US_PER_S;
    if (frac < 0) {
        frac += US_PER_S;
        s--;
    }
    time_t t = (time_t)s;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0)
        return false;
    int n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return n > 0 && (size_t)n < len;
}

char *cloudevents_header_value(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '%') ? 3 : 1;
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '%') {
            static const char hex[] = "0123456789ABCDEF";
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 0xf];
        } else {
            *o++ = (char)*p;
        }
    }
    *o = '\0';
    return out;
}

/* The row's value of header `name`, any case: the first if repeated; NULL if absent. */
static json_t *row_header(json_t *obj, const char *name)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value)
    {
        if (strcasecmp(key, name) == 0)
            return json_is_array(value) ? json_array_get(value, 0) : value;
    }
    return NULL;
}

/* Adds name: value (encoded) unless the row sets name itself. False when out of memory. */
static bool attribute_add(json_t *obj, const char *name, const char *value)
{
    if (row_header(obj, name) != NULL)
        return true;
    char *encoded = cloudevents_header_value(value);
    if (encoded == NULL)
        return false;
    json_t *v = json_string(encoded);
    free(encoded);
    /* A value that is not UTF-8 cannot be a JSON string; encoded, it is ASCII. */
    return v != NULL && json_object_set_new(obj, name, v) == 0;
}

enum message_result cloudevents_headers(const char *headers_json, const char *subject,
                                        const char *event_id, double created_at, const char *source,
                                        char **out)
{
    *out = NULL;
    if (subject == NULL || event_id == NULL || source == NULL)
        return MESSAGE_OK; /* message_build refuses the row */
    json_t *obj;
    if (headers_json == NULL || headers_json[0] == '\0') {
        obj = json_object();
        if (obj == NULL)
            return MESSAGE_NOMEM;
    } else {
        json_error_t jerr;
        obj = json_loads(headers_json, JSON_DECODE_ANY, &jerr);
        if (obj == NULL)
            return json_error_code(&jerr) == json_error_out_of_memory ? MESSAGE_NOMEM : MESSAGE_OK;
        if (!json_is_object(obj)) {
            json_decref(obj);
            return MESSAGE_OK;
        }
    }

    char when[CLOUDEVENTS_TIME_LEN];
    json_t *content_type = row_header(obj, "content-type");
    bool ok = attribute_add(obj, "ce-specversion", "1.0") &&
              attribute_add(obj, "ce-id", event_id) && attribute_add(obj, "ce-source", source) &&
              attribute_add(obj, "ce-type", subject);
    if (ok && cloudevents_time(created_at, when, sizeof(when)))
        ok = attribute_add(obj, "ce-time", when);
    if (ok && json_is_string(content_type) && json_string_value(content_type)[0] != '\0')
        ok = attribute_add(obj, "ce-datacontenttype", json_string_value(content_type));
    if (ok)
        *out = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return *out != NULL ? MESSAGE_OK : MESSAGE_NOMEM;
}
