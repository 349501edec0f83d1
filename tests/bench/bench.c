/* The benchmark: raw JetStream and PostgreSQL limits, then the relay measured against them.
 * This file: the flags and the order of the sections. */
/* _GNU_SOURCE comes from the build. */
#include "bench.h"

#include <check.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters (flags) ---- */

struct bench_opt opt = {
    .csv = "bench.csv",
    .payload_bytes = 256,
    .raw_js_msgs = 200000,
    .js_window = 8000,
    .raw_pg_rows = 200000,
    .mark_batch = 1000,
    .drain_rows = 200000,
    .steady_rate = 2000,
    .steady_seconds = 30,
    .producers = 8,
    .notify_seconds = 10,
    .notify_relay = true,
    .idle_seconds = 10,
    .fsync = true,
    .perf_args = "-a -g -F 999",
    .cold_rows = 100000,
    .key_rows = 20000,
    .retention_rows = 100000,
    .big64k_rows = 2000,
    .big1m_rows = 300,
    .fast_rate = 10000,
    .fast_producers = 32,
    .fast_seconds = 30,
    .sparse_rate = 20,
    .sparse_seconds = 20,
    .cost_producers = {8, 32},
    .ncost = 2,
    .db_cost_seconds = 15,
    .db_cost_drain_rows = 100000,
};

START_TEST(bench_all)
{
    it_pg_set_durable(opt.fsync);
    if (opt.pg_stat_statements)
        it_pg_add_setting("shared_preload_libraries=pg_stat_statements");
    it_start_servers();
    PGconn *conn = it_pg_connect();
    it_pg_exec(conn, "SET client_min_messages = warning");
    bench_conditions(conn, NULL);
    bench_conditions(conn, "loadavg_start");
    const char *subjects[] = {"bench.>", NULL};
    it_js_add_stream(STREAM, subjects);

    if (opt.pg_stat_statements)
        it_pg_exec(conn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    if (opt.db_cost_only) {
        bench_db_cost(conn);
        bench_conditions(conn, "loadavg_end");
        PQfinish(conn);
        bench_write_outputs();
        it_teardown();
        return;
    }
    double j = bench_raw_js();
    double m = bench_raw_pg(conn);
    double limit = 1.0 / (1.0 / j + 1.0 / m);
    bench_record("raw", "L_limit", "rows/s", limit);

    /* First: the table has never been analyzed yet. */
    if (opt.cold_rows > 0)
        bench_cold(conn, limit);
    bench_drain(conn, limit);
    if (opt.key_rows > 0)
        bench_keyed(conn, limit);
    if (opt.big64k_rows > 0)
        bench_big(conn, "big64k", opt.big64k_rows, 65536);
    if (opt.big1m_rows > 0)
        bench_big(conn, "big1m", opt.big1m_rows, 1000000);
    if (opt.retention_rows > 0)
        bench_retention(conn, limit);
    /* Issue 11 §2: p99 <= 5 ms at 2,000 rows/s, <= 10 ms at 10,000 rows/s. */
    bench_steady(conn, "steady", opt.steady_rate, opt.producers, opt.steady_seconds, 5.0,
                 opt.latency_out, true, NULL);
    if (opt.fast_seconds > 0)
        bench_steady(conn, "steady_hi", opt.fast_rate, opt.fast_producers, opt.fast_seconds, 10.0,
                     NULL, false, NULL);
    /* The commonest outbox: a row now and then, each found through a wake-up or a poll. */
    if (opt.sparse_seconds > 0)
        bench_steady(conn, "steady_sparse", opt.sparse_rate, 2, opt.sparse_seconds, 5.0, NULL,
                     false, NULL);
    if (opt.db_cost_seconds > 0)
        bench_db_cost(conn);
    bench_notify(conn);
    bench_conditions(conn, "loadavg_end");
    PQfinish(conn);
    bench_write_outputs();
    it_teardown();
}
END_TEST

/* ---- flags ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: outbox_bench [flags]\n"
            "Starts its own PostgreSQL and nats-server, measures raw limits, then the relay.\n"
            "  --csv PATH              results (default bench.csv)\n"
            "  --latency-out PATH      every steady-load latency in ms, sorted, one a line\n"
            "  --payload-bytes N       payload size (256; at least 32)\n"
            "  --raw-js-msgs N         J: async publishes (200000)\n"
            "  --js-window N           J: nats.c PublishAsync.MaxPending (8000)\n"
            "  --raw-pg-rows N         M: rows marked (200000)\n"
            "  --mark-batch N          M: rows per UPDATE (1000)\n"
            "  --drain-rows N          backlog drained by the relay (200000)\n"
            "  --steady-rate N         rows/s in total during the latency run (2000)\n"
            "  --steady-seconds N      length of the latency run (30)\n"
            "  --producers N           producer connections (8)\n"
            "  --notify-seconds N      length of each NOTIFY-cost run (10)\n"
            "  --notify-relay on|off   relay running during the NOTIFY-cost runs (on)\n"
            "  --idle-seconds N        idle CPU window (10)\n"
            "  --fsync on|off          PostgreSQL fsync/full_page_writes (on: the defaults)\n"
            "  --relay-env KEY=VALUE   extra relay setting (repeatable)\n"
            "  --perf-drain FILE       perf record during the drain into FILE\n"
            "  --perf-args ARGS        perf record options (\"-a -g -F 999\"; without -a: the "
            "relay only)\n"
            "Workload shapes (issues 10 and 11; 0 skips one):\n"
            "  --cold-rows N           backlog drained without ANALYZE, and after (100000)\n"
            "  --key-rows N            one-key vs no-key drain (20000)\n"
            "  --retention-rows N      old published rows pruned during a drain (100000)\n"
            "  --big64k-rows N         64 KiB rows: drain vs raw JetStream (2000)\n"
            "  --big1m-rows N          1 MB rows: drain vs raw JetStream (300)\n"
            "  --fast-rate N           second latency run: rows/s (10000)\n"
            "  --fast-producers N      ... producer connections (32)\n"
            "  --fast-seconds N        ... length, 0 skips it (30)\n"
            "  --sparse-rate N         third latency run, 2 producers: rows/s (20)\n"
            "  --sparse-seconds N      ... length, 0 skips it (20)\n"
            "  --cost-producers N,M    producer cost at these connection counts (8,32)\n"
            "What relaying costs the database (db_cost; the rates and producers of steady\n"
            "and steady_hi, 0 --fast-seconds skips 10k):\n"
            "  --db-cost-seconds N     each steady run, inserts alone and relayed (15; 0 skips)\n"
            "  --db-cost-drain-rows N  the drain (100000; 0 skips)\n"
            "  --db-cost-only          run only the db_cost section\n"
            "  --pg-stat-statements    load pg_stat_statements; print statements per run\n");
}

static int parse_int(const char *name, const char *value, int min)
{
    char *end;
    long v = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || v < min || v > 100000000) {
        fprintf(stderr, "outbox_bench: --%s: expected an integer >= %d, got \"%s\"\n", name, min,
                value);
        exit(2);
    }
    return (int)v;
}

static bool parse_on_off(const char *name, const char *value)
{
    if (strcmp(value, "on") == 0)
        return true;
    if (strcmp(value, "off") == 0)
        return false;
    fprintf(stderr, "outbox_bench: --%s: expected on or off, got \"%s\"\n", name, value);
    exit(2);
}

static void parse_flags(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"csv", required_argument, NULL, 'c'},
        {"latency-out", required_argument, NULL, 'l'},
        {"payload-bytes", required_argument, NULL, 'b'},
        {"raw-js-msgs", required_argument, NULL, 'j'},
        {"js-window", required_argument, NULL, 'w'},
        {"raw-pg-rows", required_argument, NULL, 'm'},
        {"mark-batch", required_argument, NULL, 'B'},
        {"drain-rows", required_argument, NULL, 'd'},
        {"steady-rate", required_argument, NULL, 'r'},
        {"steady-seconds", required_argument, NULL, 's'},
        {"producers", required_argument, NULL, 'p'},
        {"notify-seconds", required_argument, NULL, 'n'},
        {"notify-relay", required_argument, NULL, 'N'},
        {"idle-seconds", required_argument, NULL, 'i'},
        {"fsync", required_argument, NULL, 'f'},
        {"relay-env", required_argument, NULL, 'e'},
        {"perf-drain", required_argument, NULL, 'P'},
        {"perf-args", required_argument, NULL, 'A'},
        {"cold-rows", required_argument, NULL, 'C'},
        {"key-rows", required_argument, NULL, 'K'},
        {"retention-rows", required_argument, NULL, 'T'},
        {"big64k-rows", required_argument, NULL, 'G'},
        {"big1m-rows", required_argument, NULL, 'M'},
        {"fast-rate", required_argument, NULL, 'R'},
        {"fast-producers", required_argument, NULL, 'Q'},
        {"fast-seconds", required_argument, NULL, 'S'},
        {"sparse-rate", required_argument, NULL, 'Y'},
        {"sparse-seconds", required_argument, NULL, 'Z'},
        {"cost-producers", required_argument, NULL, 'X'},
        {"db-cost-seconds", required_argument, NULL, 'D'},
        {"db-cost-drain-rows", required_argument, NULL, 'E'},
        {"db-cost-only", no_argument, NULL, 'O'},
        {"pg-stat-statements", no_argument, NULL, 'U'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        const char *name = NULL;
        for (const struct option *o = longopts; o->name; o++)
            if (o->val == c)
                name = o->name;
        switch (c) {
        case 'c':
            opt.csv = optarg;
            break;
        case 'l':
            opt.latency_out = optarg;
            break;
        case 'b':
            opt.payload_bytes = parse_int(name, optarg, 32);
            break;
        case 'j':
            opt.raw_js_msgs = parse_int(name, optarg, 1);
            break;
        case 'w':
            opt.js_window = parse_int(name, optarg, 1);
            break;
        case 'm':
            opt.raw_pg_rows = parse_int(name, optarg, 1);
            break;
        case 'B':
            opt.mark_batch = parse_int(name, optarg, 1);
            break;
        case 'd':
            opt.drain_rows = parse_int(name, optarg, 1);
            break;
        case 'r':
            opt.steady_rate = parse_int(name, optarg, 1);
            break;
        case 's':
            opt.steady_seconds = parse_int(name, optarg, 1);
            break;
        case 'p':
            opt.producers = parse_int(name, optarg, 1);
            break;
        case 'n':
            opt.notify_seconds = parse_int(name, optarg, 1);
            break;
        case 'N':
            opt.notify_relay = parse_on_off(name, optarg);
            break;
        case 'i':
            opt.idle_seconds = parse_int(name, optarg, 1);
            break;
        case 'f':
            opt.fsync = parse_on_off(name, optarg);
            break;
        case 'e':
            if (opt.nrelay_env == MAX_RELAY_ENV || !strchr(optarg, '=')) {
                fprintf(stderr, "outbox_bench: --relay-env: KEY=VALUE, at most %d\n",
                        MAX_RELAY_ENV);
                exit(2);
            }
            opt.relay_env[opt.nrelay_env++] = optarg;
            break;
        case 'P':
            opt.perf_drain = optarg;
            break;
        case 'A':
            opt.perf_args = optarg;
            break;
        case 'C':
            opt.cold_rows = parse_int(name, optarg, 0);
            break;
        case 'K':
            opt.key_rows = parse_int(name, optarg, 0);
            break;
        case 'T':
            opt.retention_rows = parse_int(name, optarg, 0);
            break;
        case 'G':
            opt.big64k_rows = parse_int(name, optarg, 0);
            break;
        case 'M':
            opt.big1m_rows = parse_int(name, optarg, 0);
            break;
        case 'R':
            opt.fast_rate = parse_int(name, optarg, 1);
            break;
        case 'Q':
            opt.fast_producers = parse_int(name, optarg, 1);
            break;
        case 'S':
            opt.fast_seconds = parse_int(name, optarg, 0);
            break;
        case 'Y':
            opt.sparse_rate = parse_int(name, optarg, 1);
            break;
        case 'Z':
            opt.sparse_seconds = parse_int(name, optarg, 0);
            break;
        case 'X': {
            opt.ncost = 0;
            char *list = strdup(optarg), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (opt.ncost == MAX_COST_RUNS) {
                    fprintf(stderr, "outbox_bench: --cost-producers: at most %d\n", MAX_COST_RUNS);
                    exit(2);
                }
                opt.cost_producers[opt.ncost++] = parse_int(name, t, 1);
            }
            free(list);
            break;
        }
        case 'D':
            opt.db_cost_seconds = parse_int(name, optarg, 0);
            break;
        case 'E':
            opt.db_cost_drain_rows = parse_int(name, optarg, 0);
            break;
        case 'O':
            opt.db_cost_only = true;
            break;
        case 'U':
            opt.pg_stat_statements = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "outbox_bench: unexpected argument \"%s\"\n", argv[optind]);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse_flags(argc, argv);
    /* The harness reports failures through Check: the whole run is one Check test, forked. */
    Suite *suite = suite_create("bench");
    TCase *tc = tcase_create("bench");
    tcase_set_timeout(tc, 4 * 3600);
    tcase_add_test(tc, bench_all);
    suite_add_tcase(suite, tc);
    SRunner *sr = srunner_create(suite);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
