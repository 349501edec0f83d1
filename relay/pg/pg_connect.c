/* How the relay connects to PostgreSQL: the connection keywords, and a blocking connect. */
#include "outbox_relay/pg/pg_connect.h"

#include <stdio.h>
#include <string.h>

/* Connection keywords: ours first, then the operator's string, which wins. */
int pg_connect_params(const struct relay_config *cfg, const char **keys, const char **vals,
                      char *tcp_timeout, size_t len)
{
    int n = 0;
    snprintf(tcp_timeout, len, "%d", cfg->pg_timeout_ms);
    keys[n] = "application_name", vals[n++] = "outbox-relay";
    /* Keepalives and a TCP user timeout catch a peer that vanished without
     * a FIN (failover, cut network), which otherwise hangs a read forever. */
    keys[n] = "keepalives", vals[n++] = "1";
    keys[n] = "keepalives_idle", vals[n++] = "10";
    keys[n] = "keepalives_interval", vals[n++] = "5";
    keys[n] = "keepalives_count", vals[n++] = "3";
    keys[n] = "tcp_user_timeout", vals[n++] = tcp_timeout;
    if (cfg->pg_url[0] != '\0')
        keys[n] = "dbname", vals[n++] = cfg->pg_url;
    keys[n] = NULL, vals[n] = NULL;
    return n;
}

PGconn *pg_connect_blocking(const struct relay_config *cfg, char *err, size_t errlen)
{
    const char *keys[PG_CONNECT_MAX_PARAMS + 1], *vals[PG_CONNECT_MAX_PARAMS + 1];
    char tcp_timeout[16], connect_timeout[16];
    int n = pg_connect_params(cfg, keys, vals, tcp_timeout, sizeof(tcp_timeout));
    /* connect_timeout goes before the operator's string so theirs wins. */
    memmove(&keys[1], &keys[0], (size_t)(n + 1) * sizeof(keys[0]));
    memmove(&vals[1], &vals[0], (size_t)(n + 1) * sizeof(vals[0]));
    snprintf(connect_timeout, sizeof(connect_timeout), "%d", (cfg->pg_timeout_ms + 999) / 1000);
    keys[0] = "connect_timeout", vals[0] = connect_timeout;
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", conn ? PQerrorMessage(conn) : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfinish(conn);
        return NULL;
    }
    return conn;
}
