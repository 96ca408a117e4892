//! What a clock read costs on a request-response path: the shared-memory
//! ping-pong of `pingpong_parts` (160 B trade frames, two pinned threads,
//! busy-polling subscribers), each answer published with
//! `Publisher::publish_at(&TradeEvent, t)` and `t` read from a clock right
//! before it, in interleaved rounds (best p50 per case and vCPU placement,
//! told by a floor measured before and after each case). `publish` reads
//! the frame clock inside; `none` passes the trade's own time (no read).
//! The ordered TSC reads (`lfence; rdtsc`, `rdtscp`: what the vDSO's
//! `clock_gettime` does on x86_64) against a plain `rdtsc` show whether
//! the ordering is what costs. A case whose placement changed twice
//! between its two floors is not told apart.
//!
//! `cargo run --release -p zerocast-benches --example clock_on_path [rounds]`

use zerocast_benches::pingpong::{
    cache_line_floor, shm_pingpong_with, two_cores, OneWay, PathClock, ShmSend, MAX_ROUNDS,
};
use zerocast_ipc::Producers;

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds: a whole number"))
        .unwrap_or(100_000);
    assert!(
        (10..=MAX_ROUNDS).contains(&rounds),
        "rounds: 10 to {MAX_ROUNDS} (got {rounds})"
    );
    let pair = two_cores();
    let ns = format!("clkpath{}", std::process::id());
    let mut cases: Vec<(String, ShmSend)> = vec![
        ("publish".into(), ShmSend::Publish),
        ("none".into(), ShmSend::PublishAt(None)),
    ];
    for c in PathClock::available() {
        cases.push((c.name().into(), ShmSend::PublishAt(Some(c))));
    }
    // Best p50 per case at each vCPU placement (the guest's two vCPUs
    // move between near and far within seconds): a short floor is taken
    // before and after every case, and the case counts as near if both
    // are under 100 ns, far if both are not, and not at all if they
    // disagree (the placement changed during the case). The floor's own
    // column is the best of those floors at that placement.
    let short = (rounds / 10).max(100);
    let near = |f: f64| f < 100.0;
    let mut best = [
        vec![f64::MAX; cases.len() + 1],
        vec![f64::MAX; cases.len() + 1],
    ];
    let mut counted = [vec![0usize; cases.len()], vec![0usize; cases.len()]];
    let mut dropped = 0;
    for round in 0..7 {
        let mut before = cache_line_floor(pair, short).p50_ns;
        let mut line = format!("round {round}: floor {before:.0}");
        for (i, (name, send)) in cases.iter().enumerate() {
            let one: OneWay = shm_pingpong_with(
                &format!("{ns}-{round}-{i}"),
                pair,
                rounds,
                None,
                *send,
                Producers::Many,
            )
            .0;
            let after = cache_line_floor(pair, short).p50_ns;
            line += &format!(", {name} {:.0} (floor {after:.0})", one.p50_ns);
            if near(before) == near(after) {
                let at = usize::from(!near(before));
                counted[at][i] += 1;
                best[at][0] = best[at][0].min(before.min(after));
                best[at][i + 1] = best[at][i + 1].min(one.p50_ns);
            } else {
                dropped += 1;
            }
            before = after;
        }
        eprintln!("{line}");
    }
    println!(
        "cores {pair:?}, {rounds} round trips per case, one-way p50, best of 7 interleaved \
         rounds at each placement (a case counts as near when the floors before and after it \
         are both under 100 ns, far when both are not; {dropped} cases dropped whose floors \
         disagreed); n: cases counted"
    );
    println!(
        "{:<16} {:>8} {:>8} {:>3} {:>8} {:>8} {:>3}",
        "case", "near ns", "x floor", "n", "far ns", "x floor", "n"
    );
    let cell = |at: usize, i: usize, n: Option<usize>| {
        if best[at][i] == f64::MAX {
            let n = n.map_or(String::new(), |n| n.to_string());
            format!("{:>8} {:>8} {n:>3}", "-", "-")
        } else {
            let n = n.map_or(String::new(), |n| n.to_string());
            format!(
                "{:>8.0} {:>7.2}x {n:>3}",
                best[at][i],
                best[at][i] / best[at][0]
            )
        }
    };
    println!("{:<16} {} {}", "floor", cell(0, 0, None), cell(1, 0, None));
    for (i, (name, _)) in cases.iter().enumerate() {
        println!(
            "{name:<16} {} {}",
            cell(0, i + 1, Some(counted[0][i])),
            cell(1, i + 1, Some(counted[1][i]))
        );
    }
}
