/* A .creds file's user JWT, decoded to explain why the server refused it. */
#include "outbox_relay/nats/nats_creds.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#define CREDS_JWT_MAX 4096

/* RFC 4648 base64url without padding (as JWTs are); returns the bytes written or -1. */
static long b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned long acc = 0;
    int bits = 0;
    size_t len = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        const char *p = in[i] != '\0' ? strchr(alphabet, in[i]) : NULL;
        if (p == NULL)
            return -1;
        acc = (acc << 6) | (unsigned long)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (len == cap)
                return -1;
            out[len++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)len;
}

/*
 * The line after "-----BEGIN NATS USER JWT-----" (the layout nats.c and the
 * nsc tool share). Stops there: the seed further down is never read.
 */
static int creds_read_jwt(const char *path, char *jwt, size_t len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[CREDS_JWT_MAX];
    bool in_block = false;
    int rc = -1;
    while (rc < 0 && fgets(line, sizeof(line), f) != NULL) {
        char *t = line + strspn(line, " \t");
        size_t n = strlen(t);
        while (n > 0 && strchr(" \t\r\n", t[n - 1]) != NULL)
            t[--n] = '\0';
        if (!in_block)
            in_block = strncmp(t, "-----BEGIN", 10) == 0 && strstr(t, "JWT") != NULL;
        else if (n > 0 && n < len) {
            memcpy(jwt, t, n + 1);
            rc = 0;
        } else if (n > 0)
            break;
    }
    fclose(f);
    return rc;
}

static json_t *creds_claims(const char *path)
{
    char jwt[CREDS_JWT_MAX];
    if (creds_read_jwt(path, jwt, sizeof(jwt)) < 0)
        return NULL;
    const char *body = strchr(jwt, '.');
    const char *end = body != NULL ? strchr(body + 1, '.') : NULL;
    if (end == NULL)
        return NULL;
    unsigned char json[CREDS_JWT_MAX];
    long n = b64url_decode(body + 1, (size_t)(end - body - 1), json, sizeof(json));
    json_t *claims = n > 0 ? json_loadb((const char *)json, (size_t)n, 0, NULL) : NULL;
    if (claims != NULL && !json_is_object(claims)) {
        json_decref(claims);
        claims = NULL;
    }
    return claims;
}

static void utc_text(json_int_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", (long long)t);
}

int nats_creds_explain_refusal(const char *path, time_t now, char *buf, size_t len)
{
    buf[0] = '\0';
    json_t *claims = creds_claims(path);
    if (claims == NULL)
        return -1;
    const char *name = json_string_value(json_object_get(claims, "name"));
    const char *user = json_string_value(json_object_get(claims, "sub"));
    const char *account = json_string_value(json_object_get(claims, "iss"));
    json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
    json_int_t nbf = json_integer_value(json_object_get(claims, "nbf"));
    char who[160], at[32];
    snprintf(who, sizeof(who), "user \"%s\" (%s)", name ? name : "", user ? user : "?");
    if (exp > 0 && exp <= (json_int_t)now) {
        utc_text(exp, at, sizeof(at));
        snprintf(buf, len, "user authentication expired: the JWT of %s expired at %s", who, at);
    } else if (nbf > (json_int_t)now) {
        utc_text(nbf, at, sizeof(at));
        snprintf(buf, len, "not valid yet: the JWT of %s is valid from %s", who, at);
    } else {
        snprintf(buf, len,
                 "the JWT of %s has not expired: revoked by its account %s, or the server does "
                 "not know that account",
                 who, account ? account : "?");
    }
    json_decref(claims);
    return 0;
}
