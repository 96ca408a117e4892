//! The delayed tier's figures (`harness delayed`): sustained rows/s of
//! trade frames into the SQLite sink, the same through the whole batcher
//! catching up from a WAL backlog, the latency from a frame's publish to
//! the commit of its batch at a 100 ms interval, and the database size per
//! million trades.
//!
//! Latency is commit time minus the frame header's `publish_ns` (both
//! CLOCK_REALTIME, one clock for the process), recorded for every frame of
//! every batch in an HDR histogram. The publisher is paced by its schedule
//! and its frames carry their actual publish time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zerocast_core::frame::{self, FrameBuf, FrameRef};
use zerocast_ipc::{Bus, Config, TopicConfig, TopicKind};
use zerocast_runtime::batch::{Batch, BatchOptions, Batcher, Sink, SqliteSink};
use zerocast_runtime::feed::{publish_synthetic, Feed};
use zerocast_runtime::resume::Event;
use zerocast_runtime::wal::{FsyncPolicy, Wal, WalOptions};

/// `harness delayed`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct DelayedArgs {
    /// Tiny counts: checks the cases run, not the figures.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for delayed.json and delayed.md.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Directory for the databases and the WAL (on the disk to measure).
    #[arg(long, default_value = "target/bench-delayed")]
    pub dir: PathBuf,
    /// Paced publish rate of the latency case, frames/s.
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
}

/// CPU time of this process (the sink's checkpointer thread included): on
/// a machine other builds keep busy, rows per CPU-second say what an idle
/// core would do; wall-clock rows/s say what this run got.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_PROCESS_CPUTIME_ID always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bus(case: &str) -> Bus {
    let bus = Bus::new(Config {
        namespace: format!("hb{}-{case}", std::process::id()),
        topics: vec![TopicConfig::new("trades", 16 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    bus
}

fn fresh_db(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    for p in zerocast_runtime::batch::sqlite::files(&path) {
        let _ = std::fs::remove_file(p);
    }
    path
}

/// Bytes of the database once closed (closing checkpoints SQLite's WAL
/// into it and removes the WAL).
fn db_bytes(sink: SqliteSink, path: &Path) -> u64 {
    drop(sink);
    zerocast_runtime::batch::sqlite::files(path)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Distinct synthetic trade frames (ids, prices and volumes vary as in the
/// demo feed).
fn trade_frames(n: usize) -> Vec<Vec<u8>> {
    let mut feed = Feed::new(16, 0x5EED);
    (0..n)
        .map(|i| {
            let mut buf = FrameBuf::default();
            let words =
                frame::encode(&feed.trade(), 1, 1_000 + i as u64, &mut buf.0).expect("encode");
            frame::words_as_bytes(&buf.0[..words]).to_vec()
        })
        .collect()
}

/// The sink alone: batches of `batch` trades, `rows` in all.
fn sink_case(dir: &Path, rows: u64, batch: usize) -> Value {
    let path = fresh_db(dir, "sink.db");
    let mut sink = SqliteSink::open(&path, "trades", "bench").expect("open");
    let frames = trade_frames(4096);
    let mut b = Batch::new();
    let mut seq = 0u64;
    let start = Instant::now();
    let cpu = process_cpu();
    let mut commits = Histogram::<u64>::new(3).expect("histogram");
    while seq < rows {
        b.clear();
        let n = (rows - seq).min(batch as u64);
        for i in 0..n {
            let s = seq + i;
            b.push(Event::Frame {
                seq: s,
                bytes: &frames[(s % frames.len() as u64) as usize],
            });
        }
        let t = Instant::now();
        sink.write_batch(&b).expect("write batch");
        commits.record(t.elapsed().as_micros() as u64).ok();
        seq += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = (process_cpu() - cpu).as_secs_f64();
    let bytes = db_bytes(sink, &path);
    json!({
        "rows": rows,
        "batch": batch,
        "rows_per_s": rows as f64 / secs,
        "rows_per_cpu_s": rows as f64 / cpu_secs,
        "commit_us_p50": commits.value_at_quantile(0.5),
        "commit_us_p99": commits.value_at_quantile(0.99),
        "db_bytes": bytes,
        "db_mb_per_million_rows": bytes as f64 / 1e6 / (rows as f64 / 1e6),
    })
}

/// The whole batcher: `rows` trades in a WAL, replayed into SQLite.
fn catch_up_case(dir: &Path, rows: u64) -> Value {
    let bus = bus("catchup");
    let wal_dir = dir.join("wal").join("trades");
    let _ = std::fs::remove_dir_all(&wal_dir);
    // The live ring the batcher opens after the log, made first: the log
    // is this bus's, bound to its segment as a recorder binds its log (a
    // log of no known segment, holding sequences the ring has not reached,
    // is refused as another bus's).
    let segment = bus.segment("trades").expect("segment");
    {
        let (mut wal, _) = Wal::open(
            &wal_dir,
            "trades",
            WalOptions {
                fsync: FsyncPolicy::Never,
                ..Default::default()
            },
        )
        .expect("open wal");
        zerocast_runtime::checkpoint_segment::bind_log(&wal_dir, "trades", &segment, None)
            .expect("bind the log");
        let frames = trade_frames(4096);
        for seq in 0..rows {
            wal.append(seq, 0, &frames[(seq % 4096) as usize])
                .expect("append");
        }
        wal.sync().expect("sync");
    }
    drop(segment);
    let path = fresh_db(dir, "catchup.db");
    let mut sink = SqliteSink::open(&path, "trades", "bench").expect("open");
    let batcher = Batcher::new(
        &bus,
        "trades",
        Some(&wal_dir),
        "bench",
        BatchOptions {
            until: Some(rows - 1),
            ..Default::default()
        },
    );
    let start = Instant::now();
    let cpu = process_cpu();
    let stats = batcher.run(&mut sink, || false, |_| {}).expect("batcher");
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = (process_cpu() - cpu).as_secs_f64();
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&wal_dir);
    json!({
        "rows": stats.frames,
        "batches": stats.batches,
        "rows_per_s": stats.frames as f64 / secs,
        "rows_per_cpu_s": stats.frames as f64 / cpu_secs,
    })
}

/// Publisher paced at `rate` for `secs`; the batcher commits every 100 ms.
fn latency_case(dir: &Path, rate: f64, secs: f64) -> Value {
    let bus = bus("latency");
    let path = fresh_db(dir, "latency.db");
    let mut sink = SqliteSink::open(&path, "trades", "bench").expect("open");
    let frames = (rate * secs) as u64;
    let mut publisher = bus.publisher("trades").expect("publisher");
    let done = AtomicBool::new(false);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram");
    let mut batch_sizes = Vec::new();
    let stats = std::thread::scope(|s| {
        let batcher = s.spawn(|| {
            let batcher = Batcher::new(
                &bus,
                "trades",
                None,
                "bench",
                BatchOptions {
                    interval: Duration::from_millis(100),
                    until: Some(frames - 1),
                    ..Default::default()
                },
            );
            batcher.run(
                &mut sink,
                // Acquire: pairs with the Release store below (a give-up
                // if the publisher fails).
                || done.load(Ordering::Acquire),
                |b| {
                    let now = zerocast_ipc::layout::now_ns();
                    batch_sizes.push(b.len() as u64);
                    for e in b.events() {
                        if let Event::Frame { bytes, .. } = e {
                            if let Ok((h, FrameRef::Trade(_))) = FrameRef::parse(bytes) {
                                hist.saturating_record(
                                    now.saturating_sub(h.publish_ns.to_native()),
                                );
                            }
                        }
                    }
                },
            )
        });
        // Wait for the batcher's subscriber, so that no frame predates it.
        std::thread::sleep(Duration::from_millis(200));
        let mut feed = Feed::new(16, 7);
        let start = Instant::now();
        for i in 0..frames {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if publish_synthetic(&mut publisher, &mut feed, TopicKind::Trade, 1).is_err() {
                // Release: pairs with the Acquire in the batcher's stop.
                done.store(true, Ordering::Release);
                break;
            }
        }
        batcher.join().expect("batcher thread")
    });
    let stats = stats.expect("batcher");
    bus.remove_segments();
    batch_sizes.sort_unstable();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e6;
    json!({
        "rate": rate,
        "frames": frames,
        "committed_frames": stats.frames,
        "missing": stats.missing,
        "batches": stats.batches,
        "batch_rows_p50": batch_sizes.get(batch_sizes.len() / 2).copied().unwrap_or(0),
        "interval_ms": 100,
        "latency_ms_p50": ms(0.5),
        "latency_ms_p99": ms(0.99),
        "latency_ms_max": hist.max() as f64 / 1e6,
    })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    json!({
        "model_name": model,
        // SAFETY: sysconf has no memory effects.
        "nproc": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        "sqlite": rusqlite_version(),
        // Other builds share this machine: say how busy it was.
        "loadavg": std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned(),
    })
}

fn rusqlite_version() -> String {
    zerocast_runtime::batch::sqlite::sqlite_version()
}

/// Runs the delayed-tier cases and returns their report.
pub fn run(dir: &Path, smoke: bool, rate: f64) -> Value {
    std::fs::create_dir_all(dir).expect("create bench directory");
    let (rows, catch_up, rate, secs) = if smoke {
        (20_000, 20_000, 20_000.0, 0.3)
    } else {
        (2_000_000, 1_000_000, rate, 5.0)
    };
    eprintln!("delayed: sqlite sink, {rows} trades");
    let sink = sink_case(dir, rows, 65_536);
    eprintln!("delayed: batcher catching up from the WAL, {catch_up} trades");
    let catch_up = catch_up_case(dir, catch_up);
    eprintln!("delayed: latency at {rate} frames/s, 100 ms interval");
    let latency = latency_case(dir, rate, secs);
    json!({
        "machine": machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "smoke": smoke,
        "sqlite_sink": sink,
        "catch_up": catch_up,
        "latency": latency,
    })
}

/// The report as markdown.
pub fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let s = &r["sqlite_sink"];
    let c = &r["catch_up"];
    let l = &r["latency"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    format!(
        "**Delayed tier** ({}, {} CPUs, load average {} at the start, SQLite {}; `{}`)\n\n\
         | case | figure |\n|---|---|\n\
         | SQLite sink, trade rows/s (batches of {}) | {:.0} k/s wall, {:.0} k per CPU-s (commit p50 {} µs, p99 {} µs) |\n\
         | whole batcher from a WAL backlog, rows/s | {:.0} k/s wall, {:.0} k per CPU-s ({} rows, {} batches) |\n\
         | publish -> batch committed, 100 ms interval, {:.0} frames/s | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches, {} rows each at p50) |\n\
         | database size per million trades | {:.0} MB |\n",
        m["model_name"].as_str().unwrap_or("?"),
        m["nproc"],
        m["loadavg"].as_str().unwrap_or("?"),
        m["sqlite"].as_str().unwrap_or("?"),
        r["command"].as_str().unwrap_or("?"),
        s["batch"],
        f(&s["rows_per_s"]) / 1e3,
        f(&s["rows_per_cpu_s"]) / 1e3,
        s["commit_us_p50"],
        s["commit_us_p99"],
        f(&c["rows_per_s"]) / 1e3,
        f(&c["rows_per_cpu_s"]) / 1e3,
        c["rows"],
        c["batches"],
        f(&l["rate"]),
        f(&l["latency_ms_p50"]),
        f(&l["latency_ms_p99"]),
        f(&l["latency_ms_max"]),
        l["batches"],
        l["batch_rows_p50"],
        f(&s["db_mb_per_million_rows"]),
    )
}

/// `harness delayed`: runs the cases, writes delayed.json and delayed.md,
/// prints the markdown; with `--smoke`, checks every case committed rows.
pub fn main(args: DelayedArgs) {
    let report = run(&args.dir, args.smoke, args.rate);
    std::fs::create_dir_all(&args.out).expect("create output directory");
    std::fs::write(
        args.out.join("delayed.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write delayed.json");
    let md = markdown(&report);
    std::fs::write(args.out.join("delayed.md"), &md).expect("write delayed.md");
    println!("{md}");
    if args.smoke {
        for (case, field, want) in [
            ("sqlite_sink", "rows", 20_000),
            ("catch_up", "rows", 20_000),
            ("latency", "committed_frames", 6_000),
        ] {
            assert_eq!(
                report[case][field].as_u64(),
                Some(want),
                "smoke check: {case}.{field} in {}",
                report[case]
            );
        }
        eprintln!("smoke check: delayed results complete");
    }
    let _ = std::fs::remove_dir_all(&args.dir);
}
