//! What a clock read costs on a request-response path: the shared-memory
//! ping-pong of `pingpong_parts` (160 B trade frames, two pinned threads,
//! busy-polling subscribers), each answer published with
//! `Publisher::publish_at(&TradeEvent, t)` and `t` read from a clock right
//! before it, in interleaved rounds (best p50 per case). `publish` reads
//! the frame clock inside; `none` passes the trade's own time (no read).
//! The ordered TSC reads (`lfence; rdtsc`, `rdtscp`: what the vDSO's
//! `clock_gettime` does on x86_64) against a plain `rdtsc` show whether
//! the ordering is what costs.
//!
//! `cargo run --release -p zerocast-benches --example clock_on_path [rounds]`

use zerocast_benches::pingpong::{
    cache_line_floor, shm_pingpong_with, two_cores, OneWay, PathClock, ShmSend,
};
use zerocast_ipc::Producers;

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds"))
        .unwrap_or(100_000);
    let pair = two_cores();
    let ns = format!("clkpath{}", std::process::id());
    let mut cases: Vec<(String, ShmSend)> = vec![
        ("publish".into(), ShmSend::Publish),
        ("none".into(), ShmSend::PublishAt),
    ];
    for c in PathClock::ALL {
        cases.push((c.name().into(), ShmSend::PublishAtClock(c)));
    }
    // Best p50 per case over the rounds at each vCPU placement: a round
    // whose floor is under 100 ns ran near, others far (the guest's two
    // vCPUs move between the two within seconds).
    let mut best = [
        vec![f64::MAX; cases.len() + 1],
        vec![f64::MAX; cases.len() + 1],
    ];
    let mut counted = [0usize; 2];
    for round in 0..7 {
        let floor = cache_line_floor(pair, rounds);
        let mut got = vec![floor.p50_ns];
        let mut line = format!("round {round}: floor {:.0}", floor.p50_ns);
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
            got.push(one.p50_ns);
            line += &format!(", {name} {:.0}", one.p50_ns);
        }
        eprintln!("{line}");
        let at = usize::from(floor.p50_ns >= 100.0);
        counted[at] += 1;
        for (b, g) in best[at].iter_mut().zip(&got) {
            *b = b.min(*g);
        }
    }
    println!(
        "cores {pair:?}, {rounds} round trips per case, one-way p50, best of the interleaved \
         rounds at each placement (near: floor under 100 ns, {} rounds; far: {} rounds)",
        counted[0], counted[1]
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8}",
        "case", "near ns", "x floor", "far ns", "x floor"
    );
    let names = std::iter::once("floor").chain(cases.iter().map(|(n, _)| n.as_str()));
    for (i, name) in names.enumerate() {
        let cell = |at: usize| {
            if counted[at] == 0 {
                format!("{:>8} {:>8}", "-", "-")
            } else {
                format!("{:>8.0} {:>7.2}x", best[at][i], best[at][i] / best[at][0])
            }
        };
        println!("{name:<16} {} {}", cell(0), cell(1));
    }
}
