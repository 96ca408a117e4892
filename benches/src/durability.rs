//! Durability benchmarks: recorder throughput under each fsync policy, replay
//! throughput from the page cache, and the time a resumable subscriber takes
//! to catch up to live from a large WAL backlog.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zerocast_core::frame::{self, FrameBuf, TradeEvent};
use zerocast_ipc::{
    Bus, Config, GatingPolicy, Publisher, PublisherOptions, ShmPublisher, TopicConfig, TopicKind,
};
use zerocast_runtime::feed::Feed;
use zerocast_runtime::recorder;
use zerocast_runtime::resume::{CheckpointPolicy, Event, Resumable};
use zerocast_runtime::wal::{FsyncPolicy, Replay, Wal, WalOptions};

fn bus(case: &str) -> Bus {
    let bus = Bus::new(Config {
        namespace: format!("hd{}-{case}", std::process::id()),
        topics: vec![TopicConfig::new("trades", 16 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    bus
}

fn shm_publisher(bus: &Bus) -> ShmPublisher {
    match bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "bench".into(),
                gating: GatingPolicy::Wait(Duration::from_secs(30)),
            },
        )
        .expect("publisher")
    {
        Publisher::Shm(p) => p,
        #[allow(unreachable_patterns)]
        _ => unreachable!("shm topic"),
    }
}

fn trade_words() -> (FrameBuf, usize) {
    let mut buf = FrameBuf::default();
    let t: TradeEvent = Feed::new(8, 5).trade();
    let w = frame::encode(&t, 1, 1, &mut buf.0).expect("encode");
    (buf, w)
}

fn wait_registered(bus: &Bus) {
    let seg = bus.segment("trades").expect("segment");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Relaxed: a poll of the table.
    while !seg
        .header()
        .subscribers
        .iter()
        .any(|e| e.pid.load(Ordering::Relaxed) != 0)
    {
        assert!(Instant::now() < deadline, "recorder never registered");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_recorded(bus: &Bus, n: u64) {
    let seg = bus.segment("trades").expect("segment");
    let deadline = Instant::now() + Duration::from_secs(120);
    // Relaxed: a poll of the recorder's progress hint.
    while seg
        .header()
        .subscribers
        .iter()
        .any(|e| e.pid.load(Ordering::Relaxed) != 0 && e.cursor.load(Ordering::Relaxed) < n)
    {
        assert!(Instant::now() < deadline, "recorder did not finish");
        std::hint::spin_loop();
    }
}

/// Runs `body` while a recorder thread records topic `trades` of `bus` into
/// `wal` (registered before `body` starts), then stops the recorder.
fn with_recorder<R>(bus: &Bus, wal: &mut Wal, body: impl FnOnce() -> R) -> R {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let rec = s.spawn(|| {
            // Relaxed: a stop flag; the join below synchronises.
            recorder::record(bus, "trades", wal, || stop.load(Ordering::Relaxed)).expect("record")
        });
        wait_registered(bus);
        let result = body();
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        rec.join().expect("recorder thread");
        result
    })
}

/// Publishes `frames` trade frames as fast as the gating recorder allows and
/// reports how fast they were recorded.
fn recorder_case(root: &Path, name: &str, policy: FsyncPolicy, frames: u64) -> Value {
    let bus = bus(&format!("rec-{name}"));
    let dir = root.join(format!("rec-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut wal, _) = recorder::open_wal(
        &dir,
        "trades",
        WalOptions {
            fsync: policy,
            ..Default::default()
        },
    )
    .expect("wal");
    let (buf, words) = trade_words();
    let secs = with_recorder(&bus, &mut wal, || {
        let mut p = shm_publisher(&bus);
        let t0 = Instant::now();
        for _ in 0..frames {
            p.publish_words(&buf.0[..words]).expect("publish");
        }
        wait_recorded(&bus, frames);
        t0.elapsed().as_secs_f64()
    });
    drop(wal);
    bus.remove_segments();
    let bytes = frames as f64 * (32 + words * 8) as f64;
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "fsync": name, "frames": frames, "secs": secs,
        "frames_per_s": frames as f64 / secs, "mb_per_s": bytes / secs / 1e6,
    })
}

/// Writes `bytes` of trade records straight into a WAL, then replays it
/// twice; the second pass (page cache warm) is the figure.
fn replay_case(root: &Path, bytes: u64) -> Value {
    let dir = root.join("replay");
    let _ = std::fs::remove_dir_all(&dir);
    let (buf, words) = trade_words();
    let frame_bytes = &frame::words_as_bytes(&buf.0)[..words * 8];
    let records = bytes / (32 + frame_bytes.len() as u64);
    {
        let (mut wal, _) = Wal::open(
            &dir,
            "trades",
            WalOptions {
                fsync: FsyncPolicy::Never,
                ..Default::default()
            },
        )
        .expect("wal");
        for seq in 0..records {
            wal.append(seq, 0, frame_bytes).expect("append");
        }
        wal.sync().expect("sync");
    }
    let replay = Replay::new(&dir);
    let pass = || {
        let t0 = Instant::now();
        let mut n = 0u64;
        let stats = replay
            .run(0, u64::MAX, |r| {
                n += r.frame.len() as u64 & 1; // touch the frame
                ControlFlow::Continue(())
            })
            .expect("replay");
        std::hint::black_box(n);
        (stats, t0.elapsed().as_secs_f64())
    };
    let _ = pass();
    let (stats, secs) = pass();
    let _ = std::fs::remove_dir_all(&dir);
    json!({
        "bytes": stats.bytes, "frames": stats.frames, "secs": secs,
        "gb_per_s": stats.bytes as f64 / secs / 1e9, "frames_per_s": stats.frames as f64 / secs,
        "validated": "CRC32C and frame layout of every record",
    })
}

/// Builds a WAL backlog of about `bytes` through the real recorder, keeps a
/// publisher running at `live_rate`, and times a resumable subscriber from
/// sequence 0 until it has caught up with the live head.
fn catch_up_case(root: &Path, bytes: u64, live_rate: f64) -> Value {
    let bus = bus("catchup");
    let dir = root.join("catchup");
    let _ = std::fs::remove_dir_all(&dir);
    let (mut wal, _) = recorder::open_wal(
        &dir,
        "trades",
        WalOptions {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .expect("wal");
    let (buf, words) = trade_words();
    let backlog = bytes / (32 + words as u64 * 8);
    let stop_live = AtomicBool::new(false);
    let seg = bus.segment("trades").expect("segment");
    let result = with_recorder(&bus, &mut wal, || {
        std::thread::scope(|s| {
            let publisher = s.spawn(|| {
                let mut p = shm_publisher(&bus);
                for _ in 0..backlog {
                    p.publish_words(&buf.0[..words]).expect("publish");
                }
                let t0 = Instant::now();
                let mut sent = 0u64;
                // Relaxed: a stop flag.
                while !stop_live.load(Ordering::Relaxed) {
                    let due = (t0.elapsed().as_secs_f64() * live_rate) as u64;
                    while sent < due {
                        p.publish_words(&buf.0[..words]).expect("publish");
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            });
            wait_recorded(&bus, backlog);
            let mut follower = Resumable::open(
                &bus,
                "trades",
                &dir.join("trades"),
                &dir.join("ckpt"),
                "bench",
                CheckpointPolicy {
                    every_events: 1 << 20,
                    every: Duration::from_secs(1),
                },
            )
            .expect("resumable");
            let t0 = Instant::now();
            let mut delivered = 0u64;
            let mut expected = 0u64;
            follower
                .run(
                    |e| {
                        if let Event::Frame { seq, .. } = e {
                            assert_eq!(seq, expected, "gap or duplicate during catch-up");
                            expected += 1;
                            delivered += 1;
                            if delivered % 1024 == 0 && seq + 64 >= seg.ring().head() {
                                return ControlFlow::Break(());
                            }
                        }
                        ControlFlow::Continue(())
                    },
                    || false,
                )
                .expect("follow");
            let secs = t0.elapsed().as_secs_f64();
            // Relaxed: a stop flag; the join synchronises.
            stop_live.store(true, Ordering::Relaxed);
            publisher.join().expect("publisher");
            json!({
                "backlog_bytes": backlog * (32 + words as u64 * 8), "backlog_frames": backlog,
                "live_rate": live_rate, "delivered": delivered, "secs_to_live": secs,
            })
        })
    });
    drop(wal);
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs every durability case; `smoke` shrinks them.
pub fn run(root: &Path, smoke: bool) -> Value {
    std::fs::create_dir_all(root).expect("WAL bench directory");
    let frames = if smoke { 20_000 } else { 2_000_000 };
    let mut recorders = Vec::new();
    for (name, policy, n) in [
        ("never", FsyncPolicy::Never, frames),
        (
            "group-10ms",
            FsyncPolicy::Group {
                records: u64::MAX,
                interval: Duration::from_millis(10),
            },
            frames,
        ),
        (
            "group-4096",
            FsyncPolicy::Group {
                records: 4096,
                interval: Duration::from_secs(3600),
            },
            frames,
        ),
        (
            "always",
            FsyncPolicy::Always,
            if smoke { 200 } else { 5_000 },
        ),
    ] {
        eprintln!("durability: recorder fsync={name}");
        recorders.push(recorder_case(root, name, policy, n));
    }
    let gb = if smoke { 8 << 20 } else { 1 << 30 };
    eprintln!("durability: replay");
    let replay = replay_case(root, gb);
    eprintln!("durability: catch-up");
    let catch_up = catch_up_case(root, gb, 100_000.0);
    json!({"wal_dir": root.display().to_string(), "recorder": recorders, "replay": replay, "catch_up": catch_up})
}
