//! Publish cost of one trade frame into a shared-memory segment, by path:
//! a loan written in place (one copy of the body: its fields into the slot's
//! words), `publish(&T)` (a loan underneath), and the old path kept for
//! comparison: `frame::encode` into a buffer, then `publish_words` copying
//! the buffer into the slot (two copies). Also a batch of 64 written in
//! place. No subscriber, no gating: the publisher's own cost.
//!
//! `cargo bench -p zerocast-benches --bench loan`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zerocast_core::frame::{self, id::id, Direction, FrameBuf, TradeEvent};
use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{PublisherOptions, Segment, ShmPublisher};

const CAPACITY: u64 = 4096;
const BATCH: usize = 64;

fn trade(i: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id("T-000001").unwrap(),
        order_id: id("O-424242").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 64_000.0 + i as f64,
        volume: 0.5,
        direction: Direction::Buy,
        timestamp: i as i64,
    }
}

fn loan_vs_publish(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("zc-bench-loan-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let words = frame::frame_words(frame::MessageKind::Trade);
    let seg = Arc::new(Segment::create(&path, "bench", CAPACITY, words).unwrap());
    let mut publisher = ShmPublisher::new(seg, &PublisherOptions::default()).unwrap();
    let body = trade(1);

    let mut g = c.benchmark_group("shm_publish_trade");
    g.throughput(Throughput::Elements(1));
    g.bench_function("loan_write_commit", |b| {
        b.iter(|| {
            publisher
                .loan::<TradeEvent>()
                .unwrap()
                .write(black_box(&body))
                .commit()
        })
    });
    g.bench_function("publish_ref", |b| {
        b.iter(|| publisher.publish(black_box(&body)).unwrap())
    });
    let mut buf = FrameBuf::default();
    g.bench_function("encode_then_publish_words", |b| {
        b.iter(|| {
            // Stamped now, as `publish` and a loan's commit stamp theirs.
            let n = frame::encode(black_box(&body), 0, now_ns(), &mut buf.0).unwrap();
            publisher.publish_words(&buf.0[..n]).unwrap()
        })
    });
    g.finish();

    let bodies: Vec<TradeEvent> = (0..BATCH as u64).map(trade).collect();
    let mut g = c.benchmark_group("shm_publish_trade_batch64");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("publish_batch_in_place", |b| {
        b.iter(|| publisher.publish_batch(black_box(&bodies)).unwrap())
    });
    g.finish();
    drop(publisher);
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, loan_vs_publish);
criterion_main!(benches);
