/* Why a NATS connection failed, in words an operator can act on. */
#include "outbox_relay/nats/nats_conn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "outbox_relay/nats/nats_creds.h"

/* The auth setting in use, for a hint when the server refuses us. */
static const char *nats_conn_auth_setting(const struct relay_config *cfg)
{
    if (cfg->nats_creds[0] != '\0')
        return "OUTBOX_NATS_CREDS";
    if (cfg->nats_nkey_seed[0] != '\0')
        return "OUTBOX_NATS_NKEY_SEED";
    if (cfg->nats_user[0] != '\0')
        return "OUTBOX_NATS_USER / OUTBOX_NATS_PASSWORD_FILE";
    if (cfg->nats_token_file[0] != '\0')
        return "OUTBOX_NATS_TOKEN_FILE";
    return "no NATS credentials are configured";
}

/*
 * A readable reason for a failed connect: nats.c's text, with a hint when
 * the server refused the credentials, and any URL password masked (nats.c
 * may quote a server URL).
 */
void nats_conn_describe(const struct relay_config *cfg, natsStatus s, const char *detail, char *buf,
                        size_t len)
{
    char shown[512];
    config_redact(detail && *detail ? detail : natsStatus_GetText(s), shown, sizeof(shown));
    /* nats.c prefixes its source location, "(conn.c:1905): ": noise to an operator. */
    for (size_t i = 0; shown[i] != '\0';) {
        char *p = shown + i, *end = p[0] == '(' ? strstr(p, "): ") : NULL;
        if (end != NULL && end - p < 24 && memchr(p, '.', (size_t)(end - p)) != NULL &&
            memchr(p, ':', (size_t)(end - p)) != NULL)
            memmove(p, end + 3, strlen(end + 3) + 1);
        else
            i++;
    }
    if (s == NATS_CONNECTION_AUTH_FAILED || strstr(shown, "Authorization Violation") != NULL ||
        strstr(shown, "Authentication") != NULL) {
        /* The server says the same for every refused JWT; the JWT itself tells more. */
        char why[320] = "";
        if (cfg->nats_creds[0] != '\0')
            nats_creds_explain_refusal(cfg->nats_creds, time(NULL), why, sizeof(why));
        snprintf(buf, len, "authorization failed (%s): %s%s%s", nats_conn_auth_setting(cfg), shown,
                 why[0] ? ": " : "", why);
    } else if (s == NATS_SSL_ERROR || strstr(shown, "SSL") != NULL)
        snprintf(buf, len, "TLS failed (OUTBOX_NATS_TLS_*): %s", shown);
    else if (strstr(shown, "Expected 'PONG', got ''") != NULL)
        /* With TLS 1.3 a server that wants a client certificate hangs up only now. */
        snprintf(buf, len,
                 "the server closed the connection at CONNECT (TLS client certificate missing or "
                 "refused? OUTBOX_NATS_TLS_CERT, OUTBOX_NATS_TLS_KEY): %s",
                 shown);
    else
        snprintf(buf, len, "%s", shown);
}

int nats_conn_fail(char *err, size_t errlen, const char *what, natsStatus s)
{
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, errlen, "%s: %s%s%s", what, natsStatus_GetText(s), detail && *detail ? ": " : "",
             detail && *detail ? detail : "");
    return -1;
}
