//! The publish paths of `benches/benches/loan.rs` measured in interleaved
//! rounds (60 rounds of 20,000 publishes of one trade frame per path, best
//! round per path), so that a busy machine slows every path alike and the
//! ratio stays meaningful: a loan written in place, `publish(&T)` (a loan
//! underneath), and `frame::encode` into a buffer then `publish_words`.
//! Also: the vDSO's `clock_gettime(CLOCK_REALTIME)` (`now_ns`); the frame
//! clock every path reads for `publish_ns` (`clock::frame_ns`, back to back:
//! a dense thread's TSC path where the clocksource is `tsc`); the ring below
//! them all (`Broadcast::try_publish` of an encoded frame); `publish_words`
//! of that same encoded frame (the bus's own cost over the ring: no encode,
//! no clock); and `publish(&T)` once every 2 us (a sparse thread, which
//! reads the vDSO clock); `publish_at(&T, t)` with the trade's own time
//! (no clock). On x86_64 also the bare TSC read (`rdtsc`, back to back)
//! and `publish_at(&T, rdtsc)` with a TSC read right before each publish
//! (no conversion, no bookkeeping: the least any clock read per frame adds
//! to `publish_at`, to hold `publish(&T)` against).
//! `ZEROCAST_FRAME_CLOCK=realtime` gives the A/B.
//!
//! `cargo run --release -p zerocast-benches --example loan_interleaved`
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use zerocast_core::frame::{self, id::id, Direction, FrameBuf, TradeEvent};
use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{PublisherOptions, Segment, ShmPublisher};

fn main() {
    let path = std::env::temp_dir().join(format!("zc-inter-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let words = frame::frame_words(frame::MessageKind::Trade);
    let seg = Arc::new(Segment::create(&path, "bench", 4096, words).unwrap());
    let mut p = ShmPublisher::new(seg, &PublisherOptions::default()).unwrap();
    let body = TradeEvent {
        trade_id: id("T-000001").unwrap(),
        order_id: id("O-424242").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 64_000.0,
        volume: 0.5,
        direction: Direction::Buy,
        timestamp: 1,
    };
    let mut buf = FrameBuf::default();
    let n = 20_000;
    let mut best = [f64::MAX; 11];
    let mut sparse_rounds = Vec::new();
    let mut cache = zerocast_core::broadcast::GatingCache::default();
    let encoded = {
        let k = frame::encode(&body, 0, now_ns(), &mut buf.0).unwrap();
        buf.0[..k].to_vec()
    };
    for _ in 0..60 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(
                p.loan::<TradeEvent>()
                    .unwrap()
                    .write(black_box(&body))
                    .commit(),
            );
        }
        best[0] = best[0].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            let k = frame::encode(black_box(&body), 0, now_ns(), &mut buf.0).unwrap();
            black_box(p.publish_words(&buf.0[..k]).unwrap());
        }
        best[1] = best[1].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            black_box(p.publish(black_box(&body)).unwrap());
        }
        best[2] = best[2].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            black_box(now_ns());
        }
        best[3] = best[3].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        let ring = p.segment().ring();
        for _ in 0..n {
            black_box(ring.try_publish(&mut cache, black_box(&encoded)).unwrap());
        }
        best[4] = best[4].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            black_box(p.publish_words(black_box(&encoded)).unwrap());
        }
        best[5] = best[5].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            black_box(zerocast_ipc::clock::frame_ns());
        }
        best[6] = best[6].min(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            black_box(
                p.publish_at(black_box(&body), black_box(body.timestamp as u64))
                    .unwrap(),
            );
        }
        best[8] = best[8].min(t.elapsed().as_nanos() as f64 / n as f64);
        #[cfg(target_arch = "x86_64")]
        {
            let t = Instant::now();
            for _ in 0..n {
                black_box(zerocast_benches::pingpong::PathClock::Rdtsc.read());
            }
            best[9] = best[9].min(t.elapsed().as_nanos() as f64 / n as f64);
            let t = Instant::now();
            for _ in 0..n {
                let tsc = zerocast_benches::pingpong::PathClock::Rdtsc.read();
                black_box(p.publish_at(black_box(&body), tsc).unwrap());
            }
            best[10] = best[10].min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        // A sparse publisher: one publish(&T) every 2 us (past the frame
        // clock's 1 us window), each timed alone (clock reads around it,
        // their own cost measured in the same loop with nothing between).
        let (mut with, mut without) = (0u64, 0u64);
        let sparse = n / 20;
        for _ in 0..sparse {
            let until = Instant::now() + std::time::Duration::from_micros(2);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            let a = now_ns();
            black_box(p.publish(black_box(&body)).unwrap());
            let b = now_ns();
            let c = now_ns();
            with += b - a;
            without += c - b;
        }
        sparse_rounds.push(with.saturating_sub(without) as f64 / sparse as f64);
    }
    // Each sparse round is a mean over single timed publishes (noisier than
    // a timed loop): the median round.
    sparse_rounds.sort_by(f64::total_cmp);
    best[7] = sparse_rounds[sparse_rounds.len() / 2];
    println!(
        "per trade frame, best of 60 interleaved rounds: loan {:.1} ns, \
         encode+publish_words {:.1} ns, publish(&T) {:.1} ns (each reads the frame clock, see below; the vDSO's clock_gettime alone: {:.1} ns); \
         the raw ring's try_publish of the encoded frame, no clock: {:.1} ns; \
         publish_words of the same encoded frame, no clock: {:.1} ns; \
         the frame clock (zerocast_ipc::clock::frame_ns, back to back): {:.1} ns; \
         publish(&T) one every 2 us (median round): {:.1} ns; \
         publish_at(&T, the trade's own time), no clock: {:.1} ns",
        best[0], best[1], best[2], best[3], best[4], best[5], best[6], best[7], best[8]
    );
    #[cfg(target_arch = "x86_64")]
    println!(
        "the TSC read alone (rdtsc, back to back): {:.1} ns; \
         publish_at(&T, a TSC read right before it): {:.1} ns",
        best[9], best[10]
    );
    let _ = std::fs::remove_file(&path);
}
