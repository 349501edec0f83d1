/* The NATS settings every connection of the relay shares: servers, credentials, TLS. */
#include "outbox_relay/nats/nats_options.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox_relay/nats/nats_conn.h"

/* Splits the comma-separated server list into nats.c's array form. */
static natsStatus nats_set_servers(natsOptions *o, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    const char *servers[64];
    int n = 0;
    if (copy == NULL)
        return NATS_NO_MEMORY;
    for (char *s = strtok_r(copy, ",", &save); s != NULL && n < 64; s = strtok_r(NULL, ",", &save))
        servers[n++] = s + strspn(s, " ");
    natsStatus st = natsOptions_SetServers(o, servers, n);
    free(copy);
    return st;
}

static int nats_fail(char *err, size_t errlen, const char *what, natsStatus s)
{
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, errlen, "%s: %s%s%s", what, natsStatus_GetText(s), detail && *detail ? ": " : "",
             detail && *detail ? detail : "");
    return -1;
}

/*
 * The user's public key, which nats.c needs next to the seed (the server
 * matches it; without it CONNECT carries an empty nkey) but cannot derive
 * from it: it is the line "U..." that `nk -gen user -pubout` writes after the
 * seed. Only the public key is copied; the seed stays in the file.
 */
static int nats_nkey_public(const char *path, char *pub, size_t publen, char *why, size_t whylen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(why, whylen, "cannot read \"%s\"", path);
        return -1;
    }
    char line[256];
    int found = -1;
    while (found < 0 && fgets(line, sizeof(line), f) != NULL) {
        char *t = line + strspn(line, " \t");
        size_t n = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        if (t[0] == 'U' && n == 56 && strchr(" \t\r\n", t[n]) != NULL && n < publen) {
            memcpy(pub, t, n);
            pub[n] = '\0';
            found = 0;
        }
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    if (found < 0)
        snprintf(why, whylen,
                 "\"%s\" holds no user public key: put it (the \"U...\" line that "
                 "`nk -gen user -pubout` prints) on the line after the seed",
                 path);
    return found;
}

static void nats_secret_free(char *secret)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

static int nats_apply_auth(natsOptions *o, const struct relay_config *cfg, char *err, size_t errlen)
{
    char why[256];
    natsStatus s = NATS_OK;
    if (cfg->nats_creds[0] != '\0') {
        s = natsOptions_SetUserCredentialsFromFiles(o, cfg->nats_creds, NULL);
        return s == NATS_OK ? 0 : nats_fail(err, errlen, "OUTBOX_NATS_CREDS", s);
    }
    if (cfg->nats_nkey_seed[0] != '\0') {
        char pub[64];
        if (nats_nkey_public(cfg->nats_nkey_seed, pub, sizeof(pub), why, sizeof(why)) < 0) {
            snprintf(err, errlen, "OUTBOX_NATS_NKEY_SEED: %s", why);
            return -1;
        }
        s = natsOptions_SetNKeyFromSeed(o, pub, cfg->nats_nkey_seed);
        return s == NATS_OK ? 0 : nats_fail(err, errlen, "OUTBOX_NATS_NKEY_SEED", s);
    }
    bool user = cfg->nats_user[0] != '\0';
    if (!user && cfg->nats_token_file[0] == '\0')
        return 0;
    const char *setting = user ? "OUTBOX_NATS_PASSWORD_FILE" : "OUTBOX_NATS_TOKEN_FILE";
    char *secret =
        config_read_secret(user ? cfg->nats_password_file : cfg->nats_token_file, why, sizeof(why));
    if (secret == NULL) {
        snprintf(err, errlen, "%s: %s", setting, why);
        return -1;
    }
    /* nats.c keeps copies of its own. */
    s = user ? natsOptions_SetUserInfo(o, cfg->nats_user, secret) : natsOptions_SetToken(o, secret);
    nats_secret_free(secret);
    return s == NATS_OK ? 0 : nats_fail(err, errlen, setting, s);
}

static int nats_apply_tls(natsOptions *o, const struct relay_config *cfg, char *err, size_t errlen)
{
    bool tls = cfg->nats_tls_ca[0] || cfg->nats_tls_cert[0] || cfg->nats_tls_server_name[0] ||
               strstr(cfg->nats_url, "tls://") != NULL;
    if (!tls)
        return 0;
    natsStatus s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK && cfg->nats_tls_ca[0])
        s = natsOptions_LoadCATrustedCertificates(o, cfg->nats_tls_ca);
    if (s != NATS_OK)
        return nats_fail(err, errlen, "OUTBOX_NATS_TLS_CA", s);
    if (cfg->nats_tls_cert[0]) {
        s = natsOptions_LoadCertificatesChain(o, cfg->nats_tls_cert, cfg->nats_tls_key);
        if (s != NATS_OK)
            return nats_fail(err, errlen, "OUTBOX_NATS_TLS_CERT", s);
    }
    if (cfg->nats_tls_server_name[0]) {
        s = natsOptions_SetExpectedHostname(o, cfg->nats_tls_server_name);
        if (s != NATS_OK)
            return nats_fail(err, errlen, "OUTBOX_NATS_TLS_SERVER_NAME", s);
    }
    return 0;
}

int nats_options_apply(natsOptions *o, const struct relay_config *cfg, char *err, size_t errlen)
{
    natsStatus s = nats_set_servers(o, cfg->nats_url);
    if (s != NATS_OK)
        return nats_fail(err, errlen, "OUTBOX_NATS_URL", s);
    natsOptions_SetTimeout(o, cfg->pg_timeout_ms < 5000 ? cfg->pg_timeout_ms : 5000);
    if (nats_apply_auth(o, cfg, err, errlen) < 0)
        return -1;
    return nats_apply_tls(o, cfg, err, errlen);
}

int nats_connect_once(const struct relay_config *cfg, const char *name, natsConnection **nc,
                      jsCtx **js, char *err, size_t errlen)
{
    *nc = NULL;
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    int rc = s == NATS_OK ? 0 : nats_fail(err, errlen, "NATS options", s);
    if (rc == 0)
        rc = nats_options_apply(o, cfg, err, errlen);
    if (rc == 0) {
        natsOptions_SetName(o, name);
        natsOptions_SetMaxReconnect(o, 0);
        s = natsConnection_Connect(nc, o);
        if (s != NATS_OK) {
            natsStatus st = s;
            const char *detail = nats_GetLastError(&st);
            char why[640];
            nats_conn_describe(cfg, st != NATS_OK ? st : s, detail, why, sizeof(why));
            snprintf(err, errlen, "cannot connect to NATS (OUTBOX_NATS_URL): %s", why);
            rc = -1;
        }
    }
    if (rc == 0 && js != NULL) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = cfg->publish_timeout_ms;
        s = natsConnection_JetStream(js, *nc, &jo);
        if (s != NATS_OK)
            rc = nats_fail(err, errlen, "JetStream context", s);
    }
    natsOptions_Destroy(o);
    if (rc < 0) {
        natsConnection_Destroy(*nc);
        *nc = NULL;
    }
    return rc;
}
