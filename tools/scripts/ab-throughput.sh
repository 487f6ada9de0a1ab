#!/usr/bin/env bash
# A/B of two builds of the throughput example, alternating round by round.
#
#   tools/scripts/ab-throughput.sh NAME_A BIN_A NAME_B BIN_B ROUNDS [throughput args...]
#
# Each round runs `BIN --paired --only accountant --threads 2 --seconds 1
# --runs 7 --shape head-per-thread [args]` for both builds (which goes first
# alternates between rounds), then a `pingpong` probe of the two cores'
# placement (about 70 ns near, about 400 ns far on this VM). It prints each
# round's 2-thread / 1-thread ratio and its per-CPU-second form, and at the
# end each build's median over the rounds and how many rounds it led.
# The extra args come after those defaults, and the example takes the last
# of a repeated option, so `--shape shared-head` measures the shared head
# instead (one shape at a time: with `--shape both` only the first ratio
# of a run would be kept).
#
# Build the two binaries first, e.g. main's in a worktree:
#   git worktree add /tmp/base HEAD --detach
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release --example throughput)
#   cargo build --release --example throughput
#   cargo build --release -p segment-accountant-tools --example pingpong
# and run nothing else meanwhile (docs/performance.md, "Reading a 2-thread
# figure", says why: the VM's placement moves a figure more than most
# changes do).
set -euo pipefail
if [ $# -lt 5 ]; then
    # The header above, up to the first line that is not a comment.
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 2
fi
name_a=$1 bin_a=$2 name_b=$3 bin_b=$4 rounds=$5
shift 5
probe="$(dirname "$0")/../../target/release/examples/pingpong"
ratio() {
    local bin=$1
    shift
    "$bin" --paired --only accountant --threads 2 --seconds 1 --runs 7 \
        --shape head-per-thread "$@" 2>&1 |
        awk -F'|' '/accountant: N-thread \/ 1-thread/ { gsub(/ /, "", $6); printf "%s ", $6 }'
}
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) = 1 ]; then order="a b"; else order="b a"; fi
    for which in $order; do
        if [ "$which" = a ]; then name=$name_a bin=$bin_a; else name=$name_b bin=$bin_b; fi
        r=$(ratio "$bin" "$@")
        if [ -z "$r" ]; then
            echo "round $round: $bin printed no 2-thread / 1-thread ratio" >&2
            exit 1
        fi
        echo "round $round $name $r" | tee -a "$results"
    done
    if [ -x "$probe" ]; then
        echo "round $round probe $("$probe" --seconds 1 2>/dev/null | tail -1)"
    fi
done
awk -v a="$name_a" -v b="$name_b" '
    function median(v, n,    i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    $3 == a { na++; ra[na] = $4; byround_a[$2] = $4 }
    $3 == b { nb++; rb[nb] = $4; byround_b[$2] = $4 }
    END {
        for (k in byround_a) if (k in byround_b) { if (byround_a[k] > byround_b[k]) lead++; else if (byround_a[k] < byround_b[k]) trail++ }
        printf "median 2-thread / 1-thread: %s %.3f, %s %.3f; %s led in %d rounds, trailed in %d\n", a, median(ra, na), b, median(rb, nb), a, lead, trail
    }' "$results"
