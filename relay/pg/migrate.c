/* The embedded sql/ templates rewritten for the configured names, and the schema version check. */
#include "outbox_relay/pg/migrate.h"

#include "outbox_relay/lib/log.h"
#include "outbox_relay/pg/pg_source.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_NAME "outbox"

/* Names shared by every outbox table in the database: never renamed. */
static const char *const shared_names[] = {"outbox_relay", "outbox_writer"};

struct out {
    char *s;
    size_t len, cap;
    bool oom;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->s, cap);
        if (p == NULL) {
            o->oom = true;
            return;
        }
        o->s = p;
        o->cap = cap;
    }
    memcpy(o->s + o->len, s, n);
    o->len += n;
    o->s[o->len] = '\0';
}

static const char *table_base(const struct relay_config *cfg)
{
    const char *dot = strchr(cfg->table, '.');
    return dot ? dot + 1 : cfg->table;
}

/*
 * A name derived from the table's (base + suffix, e.g. "_unfinished_idx"),
 * quoted. PostgreSQL cuts a longer name to NAMEDATALEN - 1 bytes, and for a
 * long table name every derived name would then be the table's own name:
 * "CREATE INDEX IF NOT EXISTS" skipped them all. Past the limit the base is
 * shortened and a hash of the whole base keeps the names of two long tables
 * apart.
 */
static void derived_name(struct out *o, const char *base, const char *suffix, size_t suffix_len)
{
    enum { MAX_IDENT = 63, HASH_LEN = 9 /* "_" and 8 hex digits */ };
    size_t keep = strlen(base);
    char hash[HASH_LEN + 1] = "";
    if (keep + suffix_len > MAX_IDENT) {
        uint32_t h = 2166136261u; /* FNV-1a */
        for (const char *p = base; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        snprintf(hash, sizeof(hash), "_%08x", h);
        keep = MAX_IDENT - suffix_len - HASH_LEN;
    }
    put(o, "\"", 1);
    put(o, base, keep);
    put(o, hash, strlen(hash));
    for (size_t i = 0; i < suffix_len; i++) {
        char c = (char)tolower((unsigned char)suffix[i]);
        put(o, &c, 1);
    }
    put(o, "\"", 1);
}

static void put_identifier(struct out *o, const char *w, size_t n, const struct relay_config *cfg)
{
    size_t d = strlen(DEFAULT_NAME);
    bool ours = n >= d && !strncasecmp(w, DEFAULT_NAME, d) && (n == d || w[d] == '_');
    for (size_t i = 0; ours && i < sizeof(shared_names) / sizeof(shared_names[0]); i++)
        if (strlen(shared_names[i]) == n && !strncasecmp(w, shared_names[i], n))
            ours = false;
    if (!ours) {
        put(o, w, n);
        return;
    }
    /* The table itself schema-qualified (function bodies run under the
     * caller's search_path); derived names plain (an index or a trigger
     * cannot be qualified; they land in the schema migrate sets). Quoted: the
     * configured name may hold capitals (the relay quotes it too). */
    if (n == d) {
        char *t = config_table_sql(cfg);
        if (t == NULL)
            o->oom = true;
        else
            put(o, t, strlen(t));
        free(t);
        return;
    }
    derived_name(o, table_base(cfg), w + d, n - d);
}

char *migrate_render(const char *text, const struct relay_config *cfg)
{
    struct out o = {0};
    put(&o, "", 0);
    const char *p = text;
    while (*p && !o.oom) {
        if (p[0] == '-' && p[1] == '-') { /* line comment: copied */
            size_t n = strcspn(p, "\n");
            put(&o, p, n);
            p += n;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            size_t n = end ? (size_t)(end + 2 - p) : strlen(p);
            put(&o, p, n);
            p += n;
        } else if (*p == '\'') { /* string literal; '' is a quote inside */
            const char *q = p + 1;
            while (*q && !(q[0] == '\'' && q[1] != '\''))
                q += (q[0] == '\'' && q[1] == '\'') ? 2 : 1;
            size_t n = (size_t)(*q ? q + 1 - p : q - p);
            if (n == strlen(DEFAULT_NAME) + 2 && !strncmp(p + 1, DEFAULT_NAME, n - 2)) {
                put(&o, "'", 1);
                put(&o, cfg->channel, strlen(cfg->channel)); /* validated identifier */
                put(&o, "'", 1);
            } else {
                put(&o, p, n);
            }
            p += n;
        } else if (*p == '"') { /* quoted identifier: meant as written */
            const char *q = strchr(p + 1, '"');
            size_t n = q ? (size_t)(q + 1 - p) : strlen(p);
            put(&o, p, n);
            p += n;
        } else if (isalpha((unsigned char)*p) || *p == '_') {
            size_t n = 1;
            while (isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == '$')
                n++;
            put_identifier(&o, p, n, cfg);
            p += n;
        } else if (isdigit((unsigned char)*p)) { /* a number: keep 1e5, 0x1f together */
            size_t n = 1;
            while (isalnum((unsigned char)p[n]) || p[n] == '.')
                n++;
            put(&o, p, n);
            p += n;
        } else {
            put(&o, p, 1);
            p++;
        }
    }
    if (o.oom) {
        free(o.s);
        return NULL;
    }
    return o.s;
}

bool migrate_file_applied(const struct migrate_file *f)
{
    return strstr(f->name, "example") == NULL;
}

int migrate_schema_version(void)
{
    for (size_t i = 0; i < migrate_nfiles; i++) {
        const char *at = strstr(migrate_files[i].text, "schema version ");
        if (at != NULL && strstr(migrate_files[i].name, "schema_version") != NULL)
            return atoi(at + strlen("schema version "));
    }
    return 0;
}

const char migrate_version_sql[] =
    "SELECT to_regclass($1) IS NOT NULL, "
    "substring(obj_description(to_regclass($1), 'pg_class') FROM 'schema version ([0-9]+)')";

enum migrate_verdict migrate_judge(PGresult *res, int *found)
{
    *found = 0;
    if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        return MIGRATE_NO_TABLE;
    if (PQgetisnull(res, 0, 1))
        return MIGRATE_UNMARKED;
    *found = atoi(PQgetvalue(res, 0, 1));
    return *found >= migrate_schema_version() ? MIGRATE_CURRENT : MIGRATE_OLDER;
}

static void migrate_on_version(void *arg, PGresult *res)
{
    const struct relay_config *cfg = arg;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
        return;
    int found = 0;
    switch (migrate_judge(res, &found)) {
    case MIGRATE_OLDER:
        log_warn("the outbox schema is older than this relay: run `outbox-relay migrate`",
                 "{s:s, s:i, s:i}", "table", cfg->table, "version", found, "wanted",
                 migrate_schema_version());
        break;
    case MIGRATE_UNMARKED:
        log_warn("the outbox table has no schema version: run `outbox-relay migrate`", "{s:s}",
                 "table", cfg->table);
        break;
    case MIGRATE_CURRENT:
    case MIGRATE_NO_TABLE:
        break;
    }
}

void migrate_check_queued(struct pg_source *pg, const struct relay_config *cfg)
{
    char *params[1] = {config_table_sql(cfg)};
    if (params[0] == NULL)
        return;
    pg_source_query(pg, migrate_version_sql, 1, params, false, migrate_on_version, (void *)cfg);
}

int migrate_check_version(PGconn *conn, const struct relay_config *cfg, char *msg, size_t len)
{
    char *t = config_table_sql(cfg);
    const char *params[] = {t};
    PGresult *res =
        t ? PQexecParams(conn, migrate_version_sql, 1, NULL, params, NULL, NULL, 0) : NULL;
    free(t);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(msg, len, "schema version check failed: %s",
                 res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "out of memory");
        PQclear(res);
        return -1;
    }
    int found, need = migrate_schema_version();
    enum migrate_verdict v = migrate_judge(res, &found);
    PQclear(res);
    switch (v) {
    case MIGRATE_CURRENT:
        snprintf(msg, len, "table %s has schema version %d (this relay needs %d)", cfg->table,
                 found, need);
        break;
    case MIGRATE_OLDER:
        snprintf(msg, len,
                 "table %s has schema version %d, older than %d: run `outbox-relay migrate`",
                 cfg->table, found, need);
        break;
    case MIGRATE_UNMARKED:
        snprintf(msg, len,
                 "table %s carries no schema version (made by hand or by an older sql/): run "
                 "`outbox-relay migrate`",
                 cfg->table);
        break;
    case MIGRATE_NO_TABLE:
        snprintf(msg, len, "table %s does not exist: run `outbox-relay migrate`", cfg->table);
        break;
    }
    return (int)v;
}
