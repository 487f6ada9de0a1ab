#!/usr/bin/env bash
# One set of the many-core write path's targets (issue 15), as
# docs/performance.md quotes them ("The throughput targets, latest sets";
# the earlier sets are in docs/performance-log.md).
#
#   tools/scripts/issue15-targets.sh [LOG]
#
# Builds the release binaries, then runs, with nothing else on the machine:
# 5 invocations of `throughput --paired --probe --threads 2 --seconds 1
# --runs 7 --shape both`, 5 of `floor --pairs 100`, 5 of `throughput
# --paired --probe --threads 8 --seconds 1 --runs 7 --shape
# head-per-thread` and 4 of `cycle --pairs 40`, a `pingpong` probe of the
# two cores' placement before each throughput invocation (about 70 ns
# near, about 330 ns far on the sandbox this was written on) and, with
# `--probe`, a short one before each run of pairs inside it (the raw log
# has each run's; the summary, each invocation's median). The raw output goes to LOG (default
# target/issue15-targets.log); at the end it prints each figure's five
# invocation medians and their median, the shared head against the mutex
# design derived per invocation (its 1-thread ratio times its own scaling
# divided by the mutex's own scaling), the probes, and each 2- and
# 8-thread figure's runs split by the probe before each (near: at most
# 200 ns) with their medians. About 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
log=${1:-target/issue15-targets.log}
cargo build --release --example throughput
cargo build --release -p segment-accountant-tools --examples
t=target/release/examples/throughput
probe() { target/release/examples/pingpong --seconds 1 | tail -1; }
{
    for i in 1 2 3 4 5; do
        echo "== both $i $(date +%H:%M:%S) probe $(probe)"
        "$t" --paired --probe --threads 2 --seconds 1 --runs 7 --shape both
    done
    for i in 1 2 3 4 5; do
        echo "== floor $i $(date +%H:%M:%S)"
        target/release/examples/floor --pairs 100
    done
    for i in 1 2 3 4 5; do
        echo "== eight $i $(date +%H:%M:%S) probe $(probe)"
        "$t" --paired --probe --threads 8 --seconds 1 --runs 7 --shape head-per-thread
    done
    for i in 1 2 3 4; do
        echo "== cycle $i $(date +%H:%M:%S)"
        target/release/examples/cycle --pairs 40
    done
    echo "== done $(date +%H:%M:%S) probe $(probe)"
} >"$log" 2>&1

# The median column (the 6th field) of the table rows matching $1.
column() {
    grep -E "^\| $1 \|" "$log" | awk -F'|' '{ gsub(/ /, "", $6); print $6 }'
}
# Prints "NAME: v1, v2, ... (median m)" for the values after NAME, in the
# order given (sort and awk, as ab-throughput.sh takes its medians).
summary() {
    local name=$1
    shift
    if [ $# -eq 0 ]; then
        echo "$name: none"
        return
    fi
    local median
    median=$(printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.3g", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    local values
    values=$(printf '%s, ' "$@")
    echo "$name: ${values%, } (median $median)"
}
summary "head per thread, 2 threads / own" $(column 'head-per-thread \| 2 \| accountant: N-thread / 1-thread')
summary "head per thread, 8 threads / own" $(column 'head-per-thread \| 8 \| accountant: N-thread / 1-thread')
summary "head per thread, 1 thread / mutex (2- then 8-thread invocations)" $(column 'head-per-thread \| 1 \| accountant / mutex')
summary "shared head, 2 threads / own" $(column 'shared-head \| 2 \| accountant: N-thread / 1-thread')
summary "shared head, 1 thread / mutex" $(column 'shared-head \| 1 \| accountant / mutex')
summary "parallel loop, 2 threads / 1" $(column '- \| 2 \| parallel loop: N-thread / 1-thread')
derived=$(paste -d' ' \
    <(column 'shared-head \| 1 \| accountant / mutex') \
    <(column 'shared-head \| 2 \| accountant: N-thread / 1-thread') \
    <(column 'shared-head \| 2 \| mutex: N-thread / 1-thread') |
    awk '{ printf "%.2f ", $1 * $2 / $3 }')
# shellcheck disable=SC2086 # one argument per invocation
summary "shared head, 2 threads / mutex (derived)" $derived
summary "mark_link / floor" $(grep -oE 'ratio_entry=[0-9.]+' "$log" | cut -d= -f2)
for op in mark_replace_1_old mark_replace_4_old next_link256_stabilize; do
    summary "$op / mutex" $(grep -E "^$op:" "$log" | grep -oE ' ratio=[0-9.]+' | cut -d= -f2)
done
probe_row='probe before each run, ns per line round trip \(shapes in order\)'
summary "probe before each run, 2-thread invocations (ns, invocation medians)" $(column "- \\| 2 \\| $probe_row")
summary "probe before each run, 8-thread invocations (ns, invocation medians)" $(column "- \\| 8 \\| $probe_row")
echo "probes between invocations (ns): $(grep -oE '^== (both|eight) [0-9].*median_ns=[0-9]+' "$log" |
    sed -E 's/.*median_ns=//' | paste -sd' ')"
echo "raw output: $log"
# Each run's ratio by the probe taken just before it (`--probe`: the row
# lists one probe per run, the shapes in the order of the rows above it):
# the medians over the runs after a near probe (at most 200 ns) and after a
# far one.
awk -F'|' '
    function vals(field, arr,    n, i, parts) {
        n = split(field, parts, ",")
        for (i = 1; i <= n; i++) { gsub(/ /, "", parts[i]); arr[i] = parts[i] + 0 }
        return n
    }
    /^\| head-per-thread \| 2 \| accountant: N-thread \/ 1-thread \|/ { nh = vals($5, h) }
    /^\| shared-head \| 2 \| accountant: N-thread \/ 1-thread \|/ { ns = vals($5, sh) }
    /^\| head-per-thread \| 8 \| accountant: N-thread \/ 1-thread \|/ { ne = vals($5, e) }
    /^\| - \| [28] \| probe before each run/ {
        np = vals($5, p)
        if ($3 + 0 == 2) {
            for (i = 1; i <= nh; i++) put("head per thread, 2 threads", h[i], p[i])
            for (i = 1; i <= ns; i++) put("shared head, 2 threads", sh[i], p[nh + i])
            nh = 0; ns = 0
        } else {
            for (i = 1; i <= ne; i++) put("head per thread, 8 threads", e[i], p[i])
            ne = 0
        }
    }
    function put(name, v, probe,    key) {
        key = name (probe > 200 ? " after a far probe" : " after a near probe")
        list[key] = list[key] " " v
    }
    END { for (k in list) print k ":" list[k] }
' "$log" | sort | while IFS=: read -r name values; do
    # shellcheck disable=SC2086 # one argument per run
    summary "$name (runs)" $values
done
