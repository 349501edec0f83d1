#!/bin/sh
# Builds Release, runs the benchmark 3 times, prints the medians and plots the latency distribution.
#
# Usage: tests/bench/run.sh [outbox_bench flags...]      (e.g. --relay-env OUTBOX_BATCH_SIZE=1000)
# Environment: BENCH_BUILD_DIR (default build-bench), BENCH_RUNS (default 3),
#   BENCH_COMPARE_RELAY: another relay binary (e.g. a build of an older commit) run by the same
#   bench after each run, interleaved; its medians go to results/compare-median.csv.
# Writes tests/bench/results/: run-N.csv, latency-run-N.dat, median.csv, latency.svg, latency.png.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${BENCH_BUILD_DIR:-$repo/build-bench}
runs=${BENCH_RUNS:-3}
results=$repo/tests/bench/results

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target outbox-relay outbox_bench -j"$(nproc)" >/dev/null
mkdir -p "$results"
rm -f "$results"/run-*.csv "$results"/latency-run-*.dat "$results"/compare-*

i=1
while [ "$i" -le "$runs" ]; do
    echo "== run $i of $runs" >&2
    "$build/tests/bench/outbox_bench" --csv "$results/run-$i.csv" \
        --latency-out "$results/latency-run-$i.dat" "$@" >"$results/run-$i.log"
    if [ -n "${BENCH_COMPARE_RELAY:-}" ]; then
        echo "== run $i of $runs: $BENCH_COMPARE_RELAY" >&2
        IT_RELAY_BINARY=$BENCH_COMPARE_RELAY "$build/tests/bench/outbox_bench" \
            --csv "$results/compare-run-$i.csv" "$@" >"$results/compare-run-$i.log"
    fi
    i=$((i + 1))
done

# Medians per metric over the runs; text (conditions) from the first run, loadavg from each.
# summarize OUT PREFIX: the runs results/PREFIX1.csv ... into OUT.
summarize() {
out=$1
prefix=$2
awk -F, -v runs="$runs" '
FNR == 1 { run++; next }
{
    key = $1 "," $2
    if (!(key in unit)) { order[++n] = key; unit[key] = $4 }
    v[key, run] = $3
}
function median(key,    vals, m, i, j, t) {
    m = 0
    for (i = 1; i <= runs; i++) {
        if (!((key, i) in v) || v[key, i] !~ /^-?[0-9]+(\.[0-9]+)?$/) return ""
        vals[++m] = v[key, i] + 0
    }
    for (i = 2; i <= m; i++)
        for (j = i; j > 1 && vals[j - 1] > vals[j]; j--) { t = vals[j]; vals[j] = vals[j - 1]; vals[j - 1] = t }
    return m % 2 ? vals[(m + 1) / 2] : (vals[m / 2] + vals[m / 2 + 1]) / 2
}
END {
    header = "section,metric,median,unit"
    for (i = 1; i <= runs; i++) header = header ",run" i
    print header > "'"$out"'"
    printf "%-11s %-24s %14s  %-10s %s\n", "section", "metric", "median", "unit", "runs"
    for (k = 1; k <= n; k++) {
        key = order[k]
        split(key, parts, ",")
        med = median(key)
        all = ""
        for (i = 1; i <= runs; i++) all = all (i > 1 ? " | " : "") v[key, i]
        if (med == "") {
            shown = (parts[2] ~ /^loadavg/) ? "" : v[key, 1]
            line = key "," shown "," unit[key]
        } else {
            shown = (med >= 100 || med == int(med)) ? sprintf("%.0f", med) : sprintf("%.2f", med)
            if (med != 0 && med < 0.1 && med > -0.1) shown = sprintf("%.4f", med)
            line = key "," shown "," unit[key]
        }
        for (i = 1; i <= runs; i++) line = line "," v[key, i]
        print line > "'"$out"'"
        if (med == "" && parts[2] !~ /^loadavg/)
            printf "%-11s %-24s %s\n", parts[1], parts[2], v[key, 1]
        else
            printf "%-11s %-24s %14s  %-10s %s\n", parts[1], parts[2], shown, unit[key], all
    }
}' $(i=1; while [ "$i" -le "$runs" ]; do printf '%s ' "$results/$prefix$i.csv"; i=$((i + 1)); done)
}

summarize "$results/median.csv" run-
echo
echo "medians: $results/median.csv"
if [ -n "${BENCH_COMPARE_RELAY:-}" ]; then
    echo
    echo "== $BENCH_COMPARE_RELAY"
    summarize "$results/compare-median.csv" compare-run-
    echo "medians: $results/compare-median.csv"
fi

if command -v gnuplot >/dev/null 2>&1; then
    plots=""
    i=1
    while [ "$i" -le "$runs" ]; do
        plots="$plots $i"
        i=$((i + 1))
    done
    p50=$(awk -F, '$1 == "steady" && $2 == "p50_ms" { print $3 }' "$results/median.csv")
    p99=$(awk -F, '$1 == "steady" && $2 == "p99_ms" { print $3 }' "$results/median.csv")
    rate=$(awk -F, '$1 == "steady" && $2 == "target_rate" { print $3 }' "$results/median.csv")
    for term in svg png; do
        case $term in
        svg) setterm="set terminal svg size 1100,450 dynamic font 'sans,12'" ;;
        png) setterm="set terminal pngcairo size 1100,450 font 'sans,10'" ;;
        esac
        gnuplot <<GNUPLOT
$setterm
set output '$results/latency.$term'
set termoption noenhanced
set multiplot layout 1,2 title "outbox-relay: created_at -> JetStream consumer, $rate rows/s, medians of $runs runs: p50 $p50 ms, p99 $p99 ms"
set grid
set xlabel 'latency (ms)'
set ylabel 'share of messages per 0.25 ms (%)'
set xrange [0:*]
binwidth = 0.25
bin(x) = binwidth * floor(x / binwidth) + binwidth / 2
$(for i in $plots; do echo "stats '$results/latency-run-$i.dat' using 1 name 'R$i' nooutput"; done)
set xrange [0:R1_max < 30 ? R1_max : 30]
plot $(for i in $plots; do printf "'%s' using (bin(\$1)):(100.0 / R%s_records) smooth frequency with lines lw 2 title 'run %s', " "$results/latency-run-$i.dat" "$i" "$i"; done | sed 's/, $//')
set logscale x
set xrange [*:*]
set ylabel 'messages at or below (%)'
set yrange [0:100]
set ytics 10
plot $(for i in $plots; do printf "'%s' using 1:((\$0 + 1) * 100.0 / R%s_records) with lines lw 2 title 'run %s', " "$results/latency-run-$i.dat" "$i" "$i"; done | sed 's/, $//')
unset multiplot
GNUPLOT
    done
    echo "latency plot: $results/latency.svg $results/latency.png"
else
    echo "gnuplot not found (apt-get install gnuplot-nox): no latency plot" >&2
fi
