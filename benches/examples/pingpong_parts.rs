//! Where a ping-pong's one-way time goes: the same two pinned cores, the
//! same 160 B trade frame, measured layer by layer in interleaved rounds
//! (each case once per round, best p50 per case), so that a busy guest
//! slows every case alike:
//!
//! - `floor`: one cache line ping-ponged (nothing can be faster);
//! - `ring`: the core broadcast ring on the heap, `try_publish` of a
//!   pre-encoded frame, `try_recv` into a buffer;
//! - `ring-single`: the same ring in single-producer mode;
//! - `ring-1-line`, `ring-2-lines`: the ring (multi-producer) with a
//!   frame of 7 and 15 words (stamp and payload in one and two cache
//!   lines; the trade frame's slot spans three): how the one-way time
//!   grows with the lines a frame spans;
//! - `words`: the shared-memory bus, `publish_words` of a pre-encoded frame,
//!   `Subscriber::try_recv`;
//! - `publish`: the bus, `Publisher::publish(&TradeEvent)`, `try_recv` (the
//!   harness's ping-pong row);
//! - `publish-at`: `Publisher::publish_at(&TradeEvent, t)`, the trade's
//!   own time for the frame's (no clock read);
//! - `publish-single`: the same as `publish` on single-producer topics;
//! - `loan-held`, `loan-held-single`: iceoryx2's own method (the harness's
//!   `shm-loan` row): each side lends its next slot and writes the trade
//!   into it before it waits, and commits once the answer is there.
//!
//! `cargo run --release -p zerocast-benches --example pingpong_parts [rounds]`
use std::sync::Arc;

use zerocast_benches::pingpong::{
    cache_line_floor, run_pair, shm_pingpong_with, two_cores, OneWay, ShmSend,
};
use zerocast_benches::trade_frame;
use zerocast_core::broadcast::{Broadcast, GatingCache, SingleProducer, Start as RingStart};
use zerocast_ipc::Producers;

fn ring(cores: [usize; 2], rounds: u64, single: bool) -> OneWay {
    ring_of(cores, rounds, single, trade_frame())
}

/// The ring's ping-pong with `frame` (any words: only the ring reads them).
fn ring_of(cores: [usize; 2], rounds: u64, single: bool, frame: Vec<u64>) -> OneWay {
    let make = || {
        let mut r = Broadcast::with_capacity(4096, frame.len()).unwrap();
        if single {
            // SAFETY: one producer per ring (each side publishes on its
            // own ring); no gating consumer ever registers, so the
            // registration barrier is never run.
            unsafe {
                r.set_single_producer(SingleProducer {
                    asymmetric: true,
                    registration_barrier: || true,
                })
            };
        }
        Arc::new(r)
    };
    let (a2b, b2a) = (make(), make());
    let side = |out: Arc<Broadcast<_>>, inn: Arc<Broadcast<_>>, frame: Vec<u64>| {
        move || {
            let cache = GatingCache::default();
            let cursor = inn.cursor(RingStart::Newest);
            let buf = vec![0u64; frame.len()];
            let send = move |cache: &mut GatingCache| {
                out.try_publish(cache, &frame).unwrap();
            };
            let recv = move |cursor: &mut _, buf: &mut Vec<u64>| loop {
                if inn.try_recv(cursor, buf).is_ok() {
                    return;
                }
                core::hint::spin_loop();
            };
            (cache, cursor, buf, send, recv)
        }
    };
    let (ping, echo) = (
        side(a2b.clone(), b2a.clone(), frame.clone()),
        side(b2a, a2b, frame),
    );
    run_pair(
        cores,
        rounds,
        move || {
            let (mut cache, mut cursor, mut buf, send, recv) = ping();
            move || {
                send(&mut cache);
                recv(&mut cursor, &mut buf);
            }
        },
        move || {
            let (mut cache, mut cursor, mut buf, send, recv) = echo();
            move || {
                recv(&mut cursor, &mut buf);
                send(&mut cache);
            }
        },
    )
}

fn bus(namespace: &str, cores: [usize; 2], rounds: u64, send: ShmSend, p: Producers) -> OneWay {
    shm_pingpong_with(namespace, cores, rounds, None, send, p).0
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds"))
        .unwrap_or(100_000);
    let pair = two_cores();
    let ns = format!("parts{}", std::process::id());
    let names = [
        "floor",
        "ring",
        "ring-single",
        "ring-1-line",
        "ring-2-lines",
        "words",
        "publish",
        "publish-at",
        "publish-single",
        "loan-held",
        "loan-held-single",
    ];
    let mut best = [(f64::MAX, f64::MAX, f64::MAX); 11];
    for round in 0..7 {
        let got = [
            cache_line_floor(pair, rounds),
            ring(pair, rounds, false),
            ring(pair, rounds, true),
            // Stamp + 7 words: one line; stamp + 15: two.
            ring_of(pair, rounds, false, (1..=7).collect()),
            ring_of(pair, rounds, false, (1..=15).collect()),
            bus(
                &format!("{ns}w{round}"),
                pair,
                rounds,
                ShmSend::Words,
                Producers::Many,
            ),
            bus(
                &format!("{ns}p{round}"),
                pair,
                rounds,
                ShmSend::Publish,
                Producers::Many,
            ),
            bus(
                &format!("{ns}a{round}"),
                pair,
                rounds,
                ShmSend::PublishAt(None),
                Producers::Many,
            ),
            bus(
                &format!("{ns}s{round}"),
                pair,
                rounds,
                ShmSend::Publish,
                Producers::Single,
            ),
            bus(
                &format!("{ns}l{round}"),
                pair,
                rounds,
                ShmSend::LoanHeld,
                Producers::Many,
            ),
            bus(
                &format!("{ns}m{round}"),
                pair,
                rounds,
                ShmSend::LoanHeld,
                Producers::Single,
            ),
        ];
        for (b, g) in best.iter_mut().zip(&got) {
            b.0 = b.0.min(g.p50_ns);
            b.1 = b.1.min(g.mean_ns);
            b.2 = b.2.min(g.untimed_mean_ns);
        }
        eprintln!(
            "round {round}: {}",
            names
                .iter()
                .zip(&got)
                .map(|(n, g)| format!("{n} {:.0}", g.p50_ns))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("cores {pair:?}, {rounds} round trips per case, best of 7 interleaved rounds");
    println!(
        "(timed by the echoing side after each answer; the untimed mean is over as many round trips with no clock read in the loop)"
    );
    println!("case             p50 ns  x floor  mean ns  untimed mean  x floor's");
    for (n, b) in names.iter().zip(&best) {
        println!(
            "{n:<16} {:>6.0} {:>7.2}x {:>8.0} {:>13.1} {:>9.2}x",
            b.0,
            b.0 / best[0].0,
            b.1,
            b.2,
            b.2 / best[0].2
        );
    }
}
