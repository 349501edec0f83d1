/* The benchmark: what relaying costs the database (issue 21), per row, steady and drained. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>

/* ---- 7. what relaying costs the database (issue 21) ---- */

/* With --pg-stat-statements: every statement's calls, rows and time since the last reset. */
static void statements_dump(PGconn *conn, const char *what)
{
    if (!opt.pg_stat_statements)
        return;
    PGresult *res =
        it_pg_query(conn, "SELECT calls, rows, round(total_exec_time::numeric, 1),"
                          " round((1000 * total_exec_time / calls)::numeric, 1), wal_bytes,"
                          " left(regexp_replace(query, '\\s+', ' ', 'g'), 110)"
                          " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12");
    fprintf(stderr, "bench: %s: pg_stat_statements (calls, rows, total ms, us/call, WAL B)\n",
            what);
    for (int i = 0; i < PQntuples(res); i++)
        fprintf(stderr, "  %8s %8s %9s %7s %10s  %s\n", PQgetvalue(res, i, 0),
                PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
    PQclear(res);
    it_pg_exec(conn, "SELECT pg_stat_statements_reset()");
}

/* The producers alone (no relay): their backends' CPU and the WAL their inserts wrote. */
static void inserts_alone(PGconn *conn, int rate, int producers, int seconds, double *pg_s,
                          double *wal_b, int64_t *rows)
{
    it_pg_exec(conn, "TRUNCATE outbox");
    pg_checkpoint(conn);
    progress("db_cost: inserts alone, %d rows/s from %d producers for %d s", rate, producers,
             seconds);
    int64_t wal0 = wal_bytes(conn);
    double elapsed;
    *rows = producers_run(producers, "alone", "bench.alone", rate, seconds, NULL, &elapsed);
    *wal_b = (double)(wal_bytes(conn) - wal0);
    *pg_s = producers_pg_cpu_s;
    it_pg_exec(conn, "TRUNCATE outbox");
}

#define DBC(suffix, unit, value)                                                                   \
    do {                                                                                           \
        snprintf(metric, sizeof metric, "%s_%s", name, suffix);                                    \
        bench_record(section, metric, unit, value);                                                \
    } while (0)

/*
 * Per row at a steady rate: the producers' inserts alone (no relay), then
 * the same load relayed. Returns the producers' PostgreSQL CPU (s) and WAL
 * (B) per row of the run alone, the reference for the drain.
 */
static void db_cost_steady(PGconn *conn, const char *name, int rate, int producers,
                           double *insert_pg_s, double *insert_wal_b)
{
    char section[16], metric[40];
    snprintf(section, sizeof section, "db_cost");
    double alone_pg, alone_wal;
    int64_t alone_rows;
    inserts_alone(conn, rate, producers, opt.db_cost_seconds, &alone_pg, &alone_wal, &alone_rows);
    statements_dump(conn, "inserts alone");
    struct steady_cost c = {0};
    char tag[24];
    snprintf(tag, sizeof tag, "dbc%s", name);
    bench_steady(conn, tag, rate, producers, opt.db_cost_seconds, 0, NULL, false, &c);
    statements_dump(conn, "relayed");
    double rows = (double)c.rows, ins_pg = alone_pg / (double)alone_rows,
           ins_wal = alone_wal / (double)alone_rows;
    double relay_pg = c.relay_pg_s / rows, added_wal = c.wal_b / rows - ins_wal;
    DBC("achieved_rate", "rows/s", c.achieved);
    DBC("insert_pg_us_row", "us", 1e6 * ins_pg);
    DBC("insert_pg_relayed_us_row", "us", 1e6 * c.producers_pg_s / rows);
    DBC("insert_wal_b_row", "B", ins_wal);
    DBC("relay_pg_us_row", "us", 1e6 * relay_pg);
    DBC("relay_pg_to_insert", "x", relay_pg / ins_pg);
    DBC("wal_added_b_row", "B", added_wal);
    DBC("wal_added_to_insert", "x", added_wal / ins_wal);
    DBC("relay_us_row", "us", 1e6 * c.relay_s / rows);
    DBC("nats_us_row", "us", 1e6 * c.nats_s / rows);
    DBC("p50_ms", "ms", c.p50_ms);
    DBC("p99_ms", "ms", c.p99_ms);
    if (insert_pg_s) {
        *insert_pg_s = ins_pg;
        *insert_wal_b = ins_wal;
    }
}

/* A backlog drained: the relay's sessions (their whole life), the relay, nats-server, WAL. */
static void db_cost_drain(PGconn *conn, double insert_pg_s, double insert_wal_b)
{
    char metric[40];
    const char *name = "drain";
    const char *section = "db_cost";
    int rows = opt.db_cost_drain_rows;
    backlog_build(conn, rows, opt.payload_bytes, "NULL", STATS_NONE);
    statements_dump(conn, "backlog built");
    uint64_t before = it_js_stream_msgs(STREAM);
    progress("db_cost: drain of %d rows", rows);
    double nats0 = proc_cpu_s(it_nats_pid(), false, NULL);
    int64_t wal0 = wal_bytes(conn);
    double t0 = mono_now();
    struct it_relay *relay = it_relay_start(opt.relay_env, NULL);
    struct relay_sessions rs = {0};
    struct stream_wait w = {.want = before + (uint64_t)rows};
    int timeout_ms = 300000;
    /* The relay's sessions start with it: their CPU since they began is the drain's. */
    while (rs.n == 0 && mono_now() - t0 < 30)
        relay_sessions_find(conn, &rs);
    if (!it_wait_until(stream_reached, &w, timeout_ms))
        ck_abort_msg("db_cost drain: %llu of %d rows reached the stream",
                     (unsigned long long)w.seen, rows);
    int64_t left = it_pg_wait_int(conn, "SELECT count(*) FROM outbox WHERE status <> 'published'",
                                  0, timeout_ms);
    double seconds = mono_now() - t0;
    ck_assert_int_eq(left, 0);
    double wal = (double)(wal_bytes(conn) - wal0);
    double relay_pg = relay_sessions_cpu_s(&rs), relay_cpu = proc_cpu_s(relay->pid, false, NULL);
    double nats = proc_cpu_s(it_nats_pid(), false, NULL) - nats0;
    relay_stop(relay);
    it_pg_exec(conn, "ALTER TABLE outbox RESET (autovacuum_enabled)");
    statements_dump(conn, "drain");
    DBC("rows", "rows", rows);
    DBC("rate", "rows/s", rows / seconds);
    DBC("relay_pg_us_row", "us", 1e6 * relay_pg / rows);
    DBC("relay_pg_to_insert", "x", relay_pg / rows / insert_pg_s);
    DBC("wal_added_b_row", "B", wal / rows);
    DBC("wal_added_to_insert", "x", wal / rows / insert_wal_b);
    DBC("relay_us_row", "us", 1e6 * relay_cpu / rows);
    DBC("nats_us_row", "us", 1e6 * nats / rows);
}

#undef DBC

void bench_db_cost(PGconn *conn)
{
    double insert_pg = 0, insert_wal = 0;
    db_cost_steady(conn, "2k", opt.steady_rate, opt.producers, &insert_pg, &insert_wal);
    if (opt.fast_seconds > 0)
        db_cost_steady(conn, "10k", opt.fast_rate, opt.fast_producers, NULL, NULL);
    if (opt.db_cost_drain_rows > 0)
        db_cost_drain(conn, insert_pg, insert_wal);
}
