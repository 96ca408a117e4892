#!/usr/bin/env bash
# Checks the harness's plain-iceoryx2 rows against iceoryx2's own benchmark
# methods on this machine (issue 14, "A fair harness"), interleaved, several
# rounds: each round runs
#   1. iceoryx2's benchmarks/publish-subscribe (ported: examples/iox_own_pubsub.rs),
#      160 B, without and with --send-copy;
#   2. the harness's two-core cases (`harness all --pairs-only`): its ping-pong
#      row "iox-plain" (160 B) and its wake-up row "iox-plain";
#   3. iceoryx2's benchmarks/event (ported: examples/iox_own_event.rs);
#   4. the same two pinned threads streaming 160 B samples 1 -> 1
#      (`iox_own_pubsub --throughput`, not upstream: upstream has no throughput
#      benchmark);
#   5. the harness's throughput rows (`harness all --throughput-only`): its
#      "iox-plain" row, 1 subscriber.
# and prints one line per figure and the ratio harness / own method.
#
# Usage: benches/iox-own.sh [ROUNDS]   (from the workspace root)
# Env:   ITER (ping-pong round trips, default 1000000), WAKE (event round
#        trips, default 100000), STREAM (throughput samples, default 2000000),
#        OUT (work directory, default target/iox-own).
set -euo pipefail

ROUNDS=${1:-3}
ITER=${ITER:-1000000}
WAKE=${WAKE:-100000}
STREAM=${STREAM:-2000000}
OUT=${OUT:-target/iox-own}
mkdir -p "$OUT"

cargo build --release -p zerocast-benches --bin harness \
    --example iox_own_pubsub --example iox_own_event
BIN=target/release
EX=target/release/examples

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cpus, kernel $(uname -r)"

# The first "ipc::Service" line's integer after "Latency:" (ns, one-way).
own_latency() { grep -m1 '^iceoryx2::service::ipc::Service ' | sed -E 's/.*Latency: ([0-9]+) ns.*/\1/'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round, load average: $(cut -d' ' -f1-3 /proc/loadavg)"

    own_pp=$("$EX/iox_own_pubsub" --bench-ipc --payload-size 160 --iterations "$ITER" | own_latency)
    own_pp_copy=$("$EX/iox_own_pubsub" --bench-ipc --payload-size 160 --send-copy --iterations "$ITER" | own_latency)

    "$BIN/harness" all --pairs-only --pingpong-rounds "$ITER" --wake-rounds "$WAKE" \
        --out "$OUT/pairs-$round" >/dev/null 2>"$OUT/pairs-$round.log"
    pairs="$OUT/pairs-$round/results.json"
    h_pp=$(jq '.pingpong[] | select(.transport == "iox-plain") | .one_way_mean_ns' "$pairs")
    h_pp_p50=$(jq '.pingpong[] | select(.transport == "iox-plain") | .one_way_p50_ns' "$pairs")
    h_floor=$(jq '.floor.one_way_p50_ns' "$pairs")
    h_wake=$(jq '.wake[] | select(.transport == "iox-plain") | .one_way_mean_ns' "$pairs")

    own_wake=$("$EX/iox_own_event" --bench-ipc --iterations "$WAKE" | own_latency)

    own_thr=$("$EX/iox_own_pubsub" --bench-ipc --throughput --payload-size 160 --iterations "$STREAM" \
        | grep -m1 '^iceoryx2::service::ipc::Service ')
    own_sent=$(sed -E 's/.*Sent: ([0-9.]+) M\/s.*/\1/' <<<"$own_thr")
    own_recv=$(sed -E 's/.*Received: [0-9]+ \(([0-9.]+) M\/s\).*/\1/' <<<"$own_thr")

    "$BIN/harness" all --throughput-only --out "$OUT/thr-$round" >/dev/null 2>"$OUT/thr-$round.log"
    thr="$OUT/thr-$round/results.json"
    row='.throughput[] | select(.transport == "iox-plain" and .subscribers == 1)'
    h_sent=$(jq "$row | .publish_frames_per_s / 1e6" "$thr")
    h_recv=$(jq "$row | .receive_frames_per_s_min / 1e6" "$thr")

    printf 'ping-pong one-way mean, 160 B: own %s ns (--send-copy %s ns), harness %.0f ns (p50 %.0f, floor p50 %.0f): harness/own %s\n' \
        "$own_pp" "$own_pp_copy" "$h_pp" "$h_pp_p50" "$h_floor" "$(ratio "$h_pp" "$own_pp")"
    printf 'event wake one-way mean: own %s ns, harness %.0f ns: harness/own %s\n' \
        "$own_wake" "$h_wake" "$(ratio "$h_wake" "$own_wake")"
    printf 'throughput 1 -> 1, 160 B, M/s: own sent %s received %s, harness sent %.3f received %.3f: harness/own sent %s received %s\n' \
        "$own_sent" "$own_recv" "$h_sent" "$h_recv" "$(ratio "$h_sent" "$own_sent")" "$(ratio "$h_recv" "$own_recv")"
done
