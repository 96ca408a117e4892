#!/usr/bin/env bash
# Checks the harness's plain-iceoryx2 rows against iceoryx2's own benchmark
# methods on this machine (issue 14, "A fair harness"), interleaved, several
# rounds: each round runs
#   1. iceoryx2's benchmarks/publish-subscribe (ported: examples/iox_own_pubsub.rs),
#      160 B, without and with --send-copy (and without again right after the
#      harness's ping-pong in 2.);
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
#        OUT (work directory, default target/iox-own), HARNESS (the harness
#        binary, default target/release/harness), BEFORE (a second harness
#        binary run right after the first in each round, e.g. a build of an
#        earlier commit: its rows are printed as "before"), PRIO=1 (run every
#        measurement in a session of its own with autogroup and nice -19, so
#        that other work on a busy machine does not preempt the pinned
#        threads; needs root).
set -Eeuo pipefail
shopt -s inherit_errexit
# A failed step (a harness that crashed, a field missing from its JSON) ends
# the run, naming the command, instead of printing zeros.
trap 'echo "iox-own.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

ROUNDS=${1:-3}
ITER=${ITER:-1000000}
WAKE=${WAKE:-100000}
STREAM=${STREAM:-2000000}
OUT=${OUT:-target/iox-own}
mkdir -p "$OUT"

if [[ -z "${IOX_OWN_SESSION:-}" ]]; then
    cargo build --release -p zerocast-benches --bin harness \
        --example iox_own_pubsub --example iox_own_event
fi

if [[ "${PRIO:-0}" == 1 && -z "${IOX_OWN_SESSION:-}" ]]; then
    # A session of its own gets an autogroup of its own, whose nice this
    # script may raise without touching anything else on the machine.
    exec env IOX_OWN_SESSION=1 setsid --wait bash -c 'echo -19 > /proc/$$/autogroup && exec nice -n -19 "$0" "$@"' "$0" "$@"
fi

HARNESS=${HARNESS:-target/release/harness}
EX=target/release/examples

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cpus, kernel $(uname -r)"

# The "ipc::Service" line's integer after "Latency:" (ns, one-way); the
# whole output is read (no early exit that would break the writer's pipe).
own_latency() { grep '^iceoryx2::service::ipc::Service ' | sed -E 's/.*Latency: ([0-9]+) ns.*/\1/'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# The harness's rows of one round: "<pp mean> <pp p50> <floor p50> <wake mean> <sent M/s> <received M/s> <pp untimed mean>"
# (the untimed mean: as many round trips with no clock read inside the loop, as
# upstream times; "n/a" from a harness older than dd496b1).
harness_rows() {
    local bin=$1 tag=$2
    "$bin" all --pairs-only --pingpong-rounds "$ITER" --wake-rounds "$WAKE" \
        --out "$OUT/pairs-$tag" >/dev/null 2>"$OUT/pairs-$tag.log"
    local pairs="$OUT/pairs-$tag/results.json"
    # iceoryx2's own ping-pong again, right after the harness's (before its
    # throughput run): the two vCPUs of a guest may move between near and
    # far placements (floor 20 or 200 ns) within seconds, so the harness's
    # row is compared with the own figures taken on both sides of it.
    "$EX/iox_own_pubsub" --bench-ipc --payload-size 160 --iterations "$ITER" | own_latency \
        >"$OUT/own-after-$tag.txt"
    "$bin" all --throughput-only --out "$OUT/thr-$tag" >/dev/null 2>"$OUT/thr-$tag.log"
    local thr="$OUT/thr-$tag/results.json"
    local row='.throughput[] | select(.transport == "iox-plain" and .subscribers == 1)'
    local pp='.pingpong[] | select(.transport == "iox-plain")'
    # Each field on its own (jq -e: a missing one fails the script, with
    # inherit_errexit, instead of shifting the others left).
    local mean p50 floor wake sent recv untimed
    mean=$(jq -er "$pp | .one_way_mean_ns" "$pairs")
    p50=$(jq -er "$pp | .one_way_p50_ns" "$pairs")
    floor=$(jq -er '.floor.one_way_p50_ns' "$pairs")
    wake=$(jq -er '.wake[] | select(.transport == "iox-plain") | .one_way_mean_ns' "$pairs")
    sent=$(jq -er "$row | .publish_frames_per_s / 1e6" "$thr")
    recv=$(jq -er "$row | .receive_frames_per_s_min / 1e6" "$thr")
    untimed=$(jq -er "$pp | .one_way_mean_untimed_ns // \"n/a\"" "$pairs")
    echo "$mean $p50 $floor $wake $sent $recv $untimed"
}

print_rows() {
    local label=$1 pp pp50 floor wake sent recv untimed untimed_x
    read -r pp pp50 floor wake sent recv untimed <<<"$2"
    untimed_x=n/a
    if [[ "$untimed" != *n/a* ]]; then
        untimed_x=$(ratio "$untimed" "$own_pp")
        untimed=$(printf '%.0f' "$untimed")
    fi
    printf '  %-8s ping-pong mean %.0f ns (p50 %.0f, floor p50 %.0f), x own %s; untimed mean %s ns, x own %s | wake mean %.0f ns, x own %s | 1->1 sent %.3f M/s x own %s, received %.3f M/s x own %s\n' \
        "$label" "$pp" "$pp50" "$floor" "$(ratio "$pp" "$own_pp")" "$untimed" "$untimed_x" "$wake" "$(ratio "$wake" "$own_wake")" \
        "$sent" "$(ratio "$sent" "$own_sent")" "$recv" "$(ratio "$recv" "$own_recv")"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round, load average: $(cut -d' ' -f1-3 /proc/loadavg)"

    own_pp=$("$EX/iox_own_pubsub" --bench-ipc --payload-size 160 --iterations "$ITER" | own_latency)
    own_pp_copy=$("$EX/iox_own_pubsub" --bench-ipc --payload-size 160 --send-copy --iterations "$ITER" | own_latency)
    h_after=$(harness_rows "$HARNESS" "$round")
    own_pp_after=$(cat "$OUT/own-after-$round.txt")
    h_before=""
    if [[ -n "${BEFORE:-}" ]]; then
        h_before=$(harness_rows "$BEFORE" "before-$round")
    fi
    own_wake=$("$EX/iox_own_event" --bench-ipc --iterations "$WAKE" | own_latency)
    own_thr=$("$EX/iox_own_pubsub" --bench-ipc --throughput --payload-size 160 --iterations "$STREAM" \
        | grep '^iceoryx2::service::ipc::Service ')
    own_sent=$(sed -E 's/.*Sent: ([0-9.]+) M\/s.*/\1/' <<<"$own_thr")
    own_recv=$(sed -E 's/.*Received: [0-9]+ \(([0-9.]+) M\/s\).*/\1/' <<<"$own_thr")

    printf '  own      ping-pong mean %s ns (--send-copy %s ns; after the harness %s ns, harness x that %s) | wake mean %s ns | 1->1 sent %s M/s, received %s M/s\n' \
        "$own_pp" "$own_pp_copy" "$own_pp_after" "$(ratio "$(cut -d' ' -f1 <<<"$h_after")" "$own_pp_after")" "$own_wake" "$own_sent" "$own_recv"
    print_rows harness "$h_after"
    if [[ -n "$h_before" ]]; then
        print_rows before "$h_before"
    fi
done
