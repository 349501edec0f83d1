#!/bin/sh
# Smoke run of the benchmark with tiny numbers: it completes, and its CSV has every row, sane.
# Usage: smoke.sh OUTBOX_BENCH OUTPUT_DIR
set -eu
bench=$1
out=$2
rm -rf "$out"
mkdir -p "$out"

"$bench" --csv "$out/bench.csv" --latency-out "$out/latency.dat" \
    --raw-js-msgs 3000 --raw-pg-rows 3000 --drain-rows 3000 \
    --steady-rate 400 --steady-seconds 1 --notify-seconds 1 --idle-seconds 1 \
    --cold-rows 1000 --key-rows 300 --big64k-rows 20 --big1m-rows 4 --retention-rows 2000 \
    --fast-rate 1000 --fast-producers 32 --fast-seconds 1 --sparse-rate 20 --sparse-seconds 1 \
    --cost-producers 8 --db-cost-seconds 1 --db-cost-drain-rows 1000

# Every metric the table promises, then sanity: rates > 0, counts that add up.
awk -F, '
BEGIN {
    n = split("conditions/cores conditions/postgresql conditions/nats_server conditions/nats_c " \
              "conditions/payload_bytes conditions/fsync conditions/synchronous_commit " \
              "raw/J_js_publish_rate raw/M_pg_mark_rate raw/L_limit " \
              "drain/rows drain/seconds drain/drain_rate drain/ratio_to_L " \
              "drain/relay_peak_rss_mb drain/relay_peak_anon_mb drain/relay_cpu_s drain/postgres_cpu_s " \
              "drain/nats_server_cpu_s idle/relay_cpu_s idle/relay_cpu_pct idle/after_drain_relay_cpu_s " \
              "steady/rows steady/achieved_rate steady/received steady/p50_ms steady/p90_ms " \
              "steady/p99_ms steady/max_ms steady/relay_peak_rss_mb steady/relay_cpu_s " \
              "steady/insert_commit_p50_ms steady/commit_to_recv_p50_ms steady/commit_to_recv_p99_ms " \
              "notify/commit_rate_trigger notify/commit_rate_no_trigger notify/trigger_cost_pct " \
              "cold/drain_rate cold/drain_rate_stale cold/drain_rate_analyzed cold/ratio_to_analyzed " \
              "cold/ratio_to_L " \
              "keyed/one_key_rate keyed/no_key_rate keyed/ratio_one_to_no_key " \
              "big64k/raw_js_mb_s big64k/drain_mb_s big64k/ratio_to_raw big64k/relay_peak_rss_mb " \
              "big1m/raw_js_mb_s big1m/drain_mb_s big1m/ratio_to_raw big1m/relay_peak_rss_mb " \
              "steady_hi/p50_ms steady_hi/p99_ms steady_hi/p99_to_goal steady_hi/received " \
              "steady_sparse/p50_ms steady_sparse/p99_ms steady_sparse/received " \
              "steady/relay_loop_runq_wait_s " \
              "prodcost/shipped_rate_8c prodcost/no_trigger_rate_8c prodcost/ratio_8c " \
              "retention/drain_rate_off retention/drain_rate_pruning retention/pruned_during_drain " \
              "db_cost/2k_insert_pg_us_row db_cost/2k_relay_pg_us_row db_cost/2k_wal_added_b_row " \
              "db_cost/2k_relay_us_row db_cost/2k_p99_ms db_cost/10k_relay_pg_to_insert " \
              "db_cost/drain_relay_pg_us_row db_cost/drain_wal_added_to_insert",
              want, " ")
}
NR == 1 { if ($0 != "section,metric,value,unit") { print "bad header: " $0; bad = 1 }; next }
NF != 4 { print "bad line " NR ": " $0; bad = 1; next }
{
    key = $1 "/" $2
    value[key] = $3
    numeric = ($3 ~ /^-?[0-9]+(\.[0-9]+)?$/)
    if ($4 ~ /\/s$/ && !(numeric && $3 + 0 > 0)) { print "rate not > 0: " $0; bad = 1 }
    # Latencies measured from the producer commit may be slightly negative: not checked here.
    if (($4 == "MB" || $4 == "s") && !(numeric && $3 + 0 >= 0)) {
        print "not a number >= 0: " $0; bad = 1
    }
}
END {
    for (i = 1; i <= n; i++)
        if (!(want[i] in value)) { print "missing: " want[i]; bad = 1 }
    if (value["drain/rows"] != 3000) { print "drain rows: " value["drain/rows"]; bad = 1 }
    if (value["steady/received"] != value["steady/rows"] || value["steady/rows"] < 100) {
        print "steady: " value["steady/received"] " of " value["steady/rows"]; bad = 1
    }
    if (!(value["steady/p50_ms"] <= value["steady/p99_ms"] && \
          value["steady/p99_ms"] <= value["steady/max_ms"] && value["steady/max_ms"] > 0)) {
        print "percentiles out of order"; bad = 1
    }
    if (!(value["drain/relay_peak_rss_mb"] > 0)) { print "no relay RSS"; bad = 1 }
    if (value["steady_hi/received"] != value["steady_hi/rows"] || value["steady_hi/rows"] < 100) {
        print "steady_hi: " value["steady_hi/received"] " of " value["steady_hi/rows"]; bad = 1
    }
    if (!(value["big1m/relay_peak_rss_mb"] > 0 && value["big1m/ratio_to_raw"] > 0)) {
        print "big1m: no figures"; bad = 1
    }
    if (value["conditions/fsync"] != "on") { print "fsync not on"; bad = 1 }
    exit bad
}' "$out/bench.csv"

lines=$(wc -l < "$out/latency.dat")
test "$lines" -gt 0 || { echo "empty latency file"; exit 1; }
echo "bench smoke: CSV complete and sane ($out/bench.csv)"
