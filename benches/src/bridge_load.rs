//! `harness bridge`: the zenoh bridge over loopback TCP beside the local
//! bus, in one run. Two namespaces in this process, an exporter and an
//! importer (the library's, each on its own zenoh session and thread),
//! one origin publisher.
//!
//! - Throughput: trades published as fast as the path takes them, counted
//!   when the reader has them all: the far side's reader through the
//!   bridge, and a reader of the local bus alone. Exporter and readers are
//!   gating, so each stage holds the one before it to its pace instead of
//!   being lapped.
//! - Latency: trades paced at `--rate`; each carries its scheduled send
//!   time (ns, CLOCK_REALTIME), and latency is receive time minus that
//!   (no coordinated omission), for a reader on the origin (local bus) and
//!   one on the far side (bridge), from the same publishes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::{
    Bus, Config, GatingPolicy, PublisherOptions, RecvError, Start, SubscriberOptions, TopicConfig,
    TopicKind,
};
use zerocast_runtime::bridge::{export, import, key, open_session};

const TOPIC: &str = "trade_events";

/// `harness bridge` options.
#[derive(clap::Args, Debug, Clone)]
pub struct BridgeLoadArgs {
    /// Tiny counts: checks the cases run, not the figures.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for bridge.json and bridge.md.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Paced send rate of the latency case, trades/s.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Trades per case.
    #[arg(long, default_value_t = 100_000)]
    pub frames: u64,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn trade(n: u64, scheduled_ns: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id("T").unwrap(),
        order_id: id("O").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 100.0 + (n % 100) as f64,
        volume: 1.0,
        direction: Direction::Buy,
        timestamp: scheduled_ns as i64,
    }
}

fn bus(ns: &str) -> Bus {
    let bus = Bus::new(Config {
        namespace: ns.to_owned(),
        topics: vec![TopicConfig::new(TOPIC, 16 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    bus
}

/// A reader of `frames` trades: latencies (receive minus scheduled send)
/// and when the last arrived; frames it could not read (lagged or lost)
/// are counted. A gating reader holds its publisher back instead of
/// lagging.
fn reader(
    bus: &Bus,
    frames: u64,
    gating: bool,
) -> std::thread::JoinHandle<(Histogram<u64>, Instant, u64)> {
    let mut sub = bus
        .subscriber(
            TOPIC,
            SubscriberOptions {
                start: Start::At(0),
                gating,
                ..Default::default()
            },
        )
        .expect("subscriber");
    std::thread::spawn(move || {
        let mut h = Histogram::<u64>::new(3).unwrap();
        let mut seen = 0;
        let mut missed = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen + missed < frames && Instant::now() < deadline {
            match sub.recv_timeout(Duration::from_millis(100)) {
                Ok(f) => {
                    let now = now_ns();
                    if let Ok(t) = f.body::<TradeEvent>() {
                        h.record(now.saturating_sub(t.timestamp.to_native() as u64))
                            .ok();
                    }
                    seen += 1;
                }
                Err(RecvError::Lagged(n)) => missed += n,
                Err(RecvError::Lost(_)) => missed += 1,
                Err(RecvError::Empty) => {}
            }
        }
        (h, Instant::now(), missed)
    })
}

/// The bridge between two fresh namespaces, stopped when dropped.
struct Bridge {
    origin: Bus,
    far: Bus,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    gating: Option<String>,
}

impl Bridge {
    fn start(tag: &str, gating: bool) -> Self {
        let pid = std::process::id();
        let origin = bus(&format!("hb{pid}{tag}a"));
        let far = bus(&format!("hb{pid}{tag}b"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let endpoint = vec![format!("tcp/127.0.0.1:{port}")];
        let stop = Arc::new(AtomicBool::new(false));
        let k = key(&origin.config().namespace, TOPIC);
        let gating = gating.then(|| format!("harness-{tag}"));
        let mut threads = Vec::new();
        {
            let (bus, stop, k, gating) = (origin.clone(), stop.clone(), k.clone(), gating.clone());
            let session = open_session(None, &endpoint, &[]).expect("zenoh session");
            threads.push(std::thread::spawn(move || {
                let mut o = export::ExportOptions::new(TOPIC, &k);
                o.gating = gating;
                export::export(&bus, &session, &o, || stop.load(Ordering::Relaxed))
                    .expect("exporter");
            }));
        }
        {
            let (bus, stop) = (far.clone(), stop.clone());
            let session = open_session(None, &[], &endpoint).expect("zenoh session");
            threads.push(std::thread::spawn(move || {
                let o = import::ImportOptions::new(TOPIC, &k);
                import::import(&bus, &session, &o, || stop.load(Ordering::Relaxed))
                    .expect("importer");
            }));
        }
        let b = Self {
            origin,
            far,
            stop,
            threads,
            gating,
        };
        // Connected when a first trade crosses.
        if let Some(name) = &b.gating {
            let seg = b.origin.segment(TOPIC).unwrap();
            while !seg.durable_holds().iter().any(|h| &h.name == name) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        b
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let (Some(name), Ok(seg)) = (&self.gating, self.origin.segment(TOPIC)) {
            seg.release_durable(name);
        }
        self.origin.remove_segments();
        self.far.remove_segments();
        // The importer's record of the origin it followed.
        let _ = std::fs::remove_file(import::origin_record_path(self.far.config(), TOPIC));
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.5) as f64 / 1e3,
        "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
        "max_us": h.max() as f64 / 1e3,
    })
}

/// The local bus alone: `frames` trades as fast as they go, one reader.
fn local_throughput(frames: u64) -> (f64, u64) {
    let b = bus(&format!("hb{}tl", std::process::id()));
    let local = reader(&b, frames, true);
    let mut p = b
        .publisher_with(
            TOPIC,
            PublisherOptions {
                gating: GatingPolicy::Wait(Duration::from_secs(30)),
                ..Default::default()
            },
        )
        .expect("publisher");
    let start = Instant::now();
    for n in 0..frames {
        p.publish(&trade(n, now_ns())).expect("publish");
    }
    let (_, end, missed) = local.join().unwrap();
    b.remove_segments();
    (
        frames as f64 / end.duration_since(start).as_secs_f64(),
        missed,
    )
}

/// Throughput: `frames` trades as fast as the gating exporter lets them,
/// and as fast as the local bus alone takes them.
fn throughput(frames: u64) -> Value {
    let (local_rate, local_missed) = local_throughput(frames);
    let b = Bridge::start("t", true);
    let far = reader(&b.far, frames, true);
    let mut p = b
        .origin
        .publisher_with(
            TOPIC,
            PublisherOptions {
                gating: GatingPolicy::Wait(Duration::from_secs(30)),
                ..Default::default()
            },
        )
        .expect("publisher");
    let start = Instant::now();
    for n in 0..frames {
        p.publish(&trade(n, now_ns())).expect("publish");
    }
    let published = start.elapsed();
    let (_, far_end, far_missed) = far.join().unwrap();
    json!({
        "frames": frames,
        "publish_s": published.as_secs_f64(),
        "local_frames_per_s": local_rate,
        "bridge_frames_per_s": frames as f64 / far_end.duration_since(start).as_secs_f64(),
        "local_missed": local_missed,
        "bridge_missed": far_missed,
    })
}

/// Latency: `frames` trades paced at `rate`, local reader and far reader.
fn latency(frames: u64, rate: f64) -> Value {
    let b = Bridge::start("l", false);
    // The bridge is up when a first trade crosses.
    let mut p = b.origin.publisher(TOPIC).expect("publisher");
    let warm = reader(&b.far, 1, false);
    p.publish(&trade(0, now_ns())).expect("publish");
    warm.join().unwrap();
    let local = reader(&b.origin, frames + 1, false);
    let far = reader(&b.far, frames + 1, false);
    let start_ns = now_ns();
    let start = Instant::now();
    let period = 1e9 / rate;
    for n in 0..frames {
        let due = Duration::from_nanos((n as f64 * period) as u64);
        while start.elapsed() < due {
            std::hint::spin_loop();
        }
        // Latency is measured from the scheduled time, not the actual one.
        p.publish(&trade(n + 1, start_ns + due.as_nanos() as u64))
            .expect("publish");
    }
    let (lh, _, lm) = local.join().unwrap();
    let (fh, _, fm) = far.join().unwrap();
    json!({
        "frames": frames,
        "rate": rate,
        "local": percentiles(&lh),
        "bridge": percentiles(&fh),
        "local_missed": lm,
        "bridge_missed": fm,
    })
}

/// Runs both cases.
pub fn run(smoke: bool, frames: u64, rate: f64) -> Value {
    let frames = if smoke { 2_000 } else { frames };
    let rate = if smoke { 5_000.0 } else { rate };
    json!({
        "smoke": smoke,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "throughput": throughput(frames),
        "latency": latency(frames, rate),
    })
}

fn markdown(r: &Value) -> String {
    let t = &r["throughput"];
    let l = &r["latency"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    format!(
        "### Bridge over loopback TCP beside the local bus ({} CPUs)\n\n\
         | path | trades/s | p50 µs at {} trades/s | p99 µs | max µs |\n\
         |---|---|---|---|---|\n\
         | local bus | {:.0} | {:.1} | {:.1} | {:.1} |\n\
         | zenoh bridge, TCP loopback (gating exporter) | {:.0} | {:.1} | {:.1} | {:.1} |\n\n\
         {} trades per case; missed (lagged or lost): local {} / {}, bridge {} / {}.\n",
        r["cpus"],
        l["rate"],
        f(&t["local_frames_per_s"]),
        f(&l["local"]["p50_us"]),
        f(&l["local"]["p99_us"]),
        f(&l["local"]["max_us"]),
        f(&t["bridge_frames_per_s"]),
        f(&l["bridge"]["p50_us"]),
        f(&l["bridge"]["p99_us"]),
        f(&l["bridge"]["max_us"]),
        t["frames"],
        t["local_missed"],
        l["local_missed"],
        t["bridge_missed"],
        l["bridge_missed"],
    )
}

/// `harness bridge`.
pub fn main(args: BridgeLoadArgs) {
    let report = run(args.smoke, args.frames, args.rate);
    std::fs::create_dir_all(&args.out).expect("create output directory");
    std::fs::write(
        args.out.join("bridge.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write bridge.json");
    let md = markdown(&report);
    std::fs::write(args.out.join("bridge.md"), &md).expect("write bridge.md");
    println!("{md}");
    if args.smoke {
        for case in ["throughput", "latency"] {
            assert_eq!(
                report[case]["bridge_missed"].as_u64(),
                Some(0),
                "smoke check: the bridge missed trades in {case}"
            );
        }
        assert!(report["latency"]["bridge"]["count"].as_u64().unwrap_or(0) > 0);
        eprintln!("smoke check: bridge results complete");
    }
}
