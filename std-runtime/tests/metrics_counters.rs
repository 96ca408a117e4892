//! The metrics that only recorders, batchers and waiting publishers know,
//! end to end: a `zerocast record` process's WAL counts and fsync latency
//! in `zerocast health --listen`'s `/metrics`, a batcher's rows against its
//! SQLite table, a publisher held by a gating subscriber that stopped
//! reading, a killed recorder's counters entry reported dead then
//! reclaimed, and a corrupt counters file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_ipc::counters::{counters_path, CounterKind, CountersTable};
use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{
    Bus, Config, GatingPolicy, PublisherOptions, ShmPublisher, ShmSubscriber, SubscriberOptions,
};
use zerocast_runtime::batch::{BatchOptions, Batcher, SqliteSink};
use zerocast_runtime::health::{metrics, HealthMonitor, HealthOptions, Report};
use zerocast_runtime::wal::{format, Entry, Replay};

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

/// How long anything that should happen at once may take on a loaded
/// 2-core machine before the test gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// A namespace of its own with one `trade_events` topic of `size` bytes;
/// its shared-memory files (segments, ack channels, counters) and its
/// scratch directory are removed on drop.
struct Ns {
    name: String,
    config: PathBuf,
    dir: PathBuf,
}

impl Ns {
    fn new(test: &str, size: u64) -> Self {
        let name = format!("mc{}-{test}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("zerocast.toml");
        std::fs::write(
            &config,
            format!("[[topic]]\nname = \"trade_events\"\nsize = {size}\nkind = \"trade\"\n"),
        )
        .unwrap();
        Self { name, config, dir }
    }

    fn bus(&self) -> Bus {
        let mut config = Config::load(&self.config).unwrap();
        config.namespace = self.name.clone();
        Bus::new(config)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("ZEROCAST_NAMESPACE");
        c.env("ZEROCAST_LOG", "warn");
        c.args(["--namespace", &self.name]);
        c.arg("--config").arg(&self.config);
        c.args(args);
        c
    }

    fn monitor(&self, reclaim: bool) -> HealthMonitor {
        HealthMonitor::new(
            self.bus(),
            HealthOptions {
                interval: Duration::from_secs(30),
                reclaim,
                ..HealthOptions::default()
            },
        )
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Segments and the counters table (`zerocast.<ns>.@counters`),
        // ack channels.
        let ours = [
            format!("zerocast.{}.", self.name),
            format!("zerocast-acks.{}.", self.name),
        ];
        for e in std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = e.file_name().to_string_lossy().into_owned();
            if ours.iter().any(|p| file.starts_with(p.as_str())) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills a child process on drop (a failed assertion leaves no process).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `ready()`; panics naming `what` after [`PATIENCE`].
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The namespace's counters table, once a process has created it.
fn counters(bus: &Bus) -> Option<CountersTable> {
    CountersTable::open(&counters_path(bus.config())).ok()
}

/// The value of counter `i` of the live entry of `kind`, if there is one.
fn live_value(bus: &Bus, kind: CounterKind, i: usize) -> Option<u64> {
    counters(bus)?
        .snapshot()
        .into_iter()
        .find(|s| s.kind == kind && s.alive)
        .map(|s| s.values[i])
}

fn render(report: &Report) -> Vec<Sample> {
    parse_exposition(&metrics::render(report, 0))
}

fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}

#[path = "support/exposition.rs"]
mod exposition;
use exposition::{find, parse_exposition, try_find, Sample};

/// The value of `name` with `labels`, if exported.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    try_find(samples, name, labels).map(|s| s.value)
}

/// Checks a histogram's buckets: cumulative, the `+Inf` one equal to the
/// count; returns the count.
fn histogram_count(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let count = find(samples, &format!("{name}_count"), labels).value;
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| {
            s.name == format!("{name}_bucket")
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| {
            let le = &s.labels["le"];
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (bound, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 15, "14 bounds and +Inf: {buckets:?}");
    assert_eq!(buckets[0].0, 0.00005, "first bound 50us");
    assert_eq!(buckets[13].0, 1.0, "last bound 1s");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    assert_eq!(buckets[14].1, count, "+Inf bucket is the count");
    count
}

/// Publishes `n` trades through `p`.
fn publish_trades(p: &mut zerocast_ipc::Publisher, n: u64) {
    let mut feed = zerocast_runtime::feed::Feed::new(1, 7);
    for _ in 0..n {
        p.publish(&feed.trade()).unwrap();
    }
}

#[test]
fn regression_wal_metrics_count_the_records_written_not_the_preallocated_files() {
    // `zerocast_wal_bytes` was the size of the WAL files, preallocated to
    // the segment size, and nothing exported the records or the fsyncs.
    let ns = Ns::new("wal", 80_000);
    let bus = ns.bus();
    let wal = ns.dir.join("wal");
    let wal_arg = wal.to_str().unwrap();
    let recorder = Proc(
        ns.cmd(&[
            "record",
            "--topic",
            "trade_events",
            "--wal",
            wal_arg,
            "--fsync",
            "always",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    // The recorder claims its counters entry after its gating registration:
    // from then on every frame published is recorded.
    wait_for("the recorder's counters entry", || {
        live_value(&bus, CounterKind::Wal, 0).is_some()
    });
    // The table sits beside the segments, and is no topic.
    let listed: Vec<_> = bus.list_segments().into_iter().map(|(t, _)| t).collect();
    assert_eq!(listed, ["trade_events"]);
    let mut p = bus
        .publisher_with(
            "trade_events",
            PublisherOptions {
                name: "engine".into(),
                gating: GatingPolicy::Wait(PATIENCE),
            },
        )
        .unwrap();
    const N: u64 = 300;
    publish_trades(&mut p, N);
    use zerocast_ipc::counters::wal as w;
    wait_for("the recorder to append every frame", || {
        live_value(&bus, CounterKind::Wal, w::LAST_SEQ) == Some(N)
    });

    // What the log holds: its records and their bytes.
    let (mut records, mut bytes) = (0u64, 0u64);
    Replay::with_topic(&wal.join("trade_events"), "trade_events")
        .read(0, u64::MAX, |e| {
            if let Entry::Record(r) = e {
                records += 1;
                bytes += format::record_size(r.frame.len()) as u64;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(records, N);

    let mut server = Proc(
        ns.cmd(&[
            "health",
            "--interval",
            "30000",
            "--listen",
            "127.0.0.1:0",
            "--wal",
            wal_arg,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    let (head, body) = get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let samples = parse_exposition(&body);
    let pid = recorder.0.id().to_string();
    let labels = [
        ("topic", "trade_events"),
        ("name", "recorder"),
        ("pid", pid.as_str()),
    ];
    assert_eq!(
        find(&samples, "zerocast_wal_records_total", &labels).value,
        records as f64
    );
    assert_eq!(
        find(&samples, "zerocast_wal_record_bytes_total", &labels).value,
        bytes as f64
    );
    let preallocated = find(&samples, "zerocast_wal_bytes", &[("topic", "trade_events")]).value;
    assert!(
        preallocated > bytes as f64,
        "the files are preallocated: {preallocated}"
    );
    // `--fsync always`: one fdatasync per record appended.
    let fsyncs = find(&samples, "zerocast_wal_fsyncs_total", &labels).value;
    assert_eq!(fsyncs, records as f64);
    assert_eq!(
        histogram_count(&samples, "zerocast_wal_fsync_seconds", &labels),
        fsyncs
    );
    assert!(find(&samples, "zerocast_wal_fsync_seconds_sum", &labels).value > 0.0);
    assert_eq!(
        find(&samples, "zerocast_wal_last_sequence", &labels).value,
        (N - 1) as f64
    );
    let mut kind = vec![("kind", "wal")];
    kind.extend(labels);
    assert_eq!(find(&samples, "zerocast_counters_alive", &kind).value, 1.0);

    // Killed: its entry is reported dead, with its last values...
    let mut recorder = recorder;
    recorder.0.kill().unwrap();
    recorder.0.wait().unwrap();
    let samples = parse_exposition(&get(&addr, "/metrics").1);
    assert_eq!(find(&samples, "zerocast_counters_alive", &kind).value, 0.0);
    assert_eq!(
        find(&samples, "zerocast_wal_records_total", &labels).value,
        records as f64
    );
    // ...until a reclaiming monitor frees it (that poll still shows it).
    let mut monitor = ns.monitor(true);
    let report = monitor.poll(now_ns());
    assert_eq!(report.counters.len(), 1, "{:?}", report.counters);
    assert!(report.counters[0].reclaimed && !report.counters[0].entry.alive);
    let table = zerocast_runtime::health::table(&report);
    assert!(
        table.contains("wal trade_events recorder") && table.contains("reclaimed"),
        "{table}"
    );
    assert!(monitor.poll(now_ns()).counters.is_empty());
    assert!(counters(&bus).unwrap().snapshot().is_empty());
    let samples = parse_exposition(&get(&addr, "/metrics").1);
    assert_eq!(value(&samples, "zerocast_counters_alive", &kind), None);
}

#[test]
fn batch_rows_metric_equals_the_rows_of_the_sqlite_table() {
    let ns = Ns::new("batch", 1 << 20);
    let bus = ns.bus();
    let db = ns.dir.join("trades.db");
    let mut sink = SqliteSink::open(&db, "trade_events", "db").unwrap();
    // The segment first: the batcher binds the sink to it.
    let mut p = bus.publisher("trade_events").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let batcher = {
        let bus = bus.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            Batcher::new(
                &bus,
                "trade_events",
                None,
                "db",
                BatchOptions {
                    interval: Duration::from_millis(20),
                    max_batch: 100,
                    ..BatchOptions::default()
                },
            )
            // Relaxed: a stop flag; nothing is published through it.
            .run(&mut sink, || stop.load(Ordering::Relaxed), |_| {})
            .unwrap()
        })
    };
    wait_for("the batcher's counters entry", || {
        live_value(&bus, CounterKind::Batch, 0).is_some()
    });
    const N: u64 = 1_000;
    publish_trades(&mut p, N);
    use zerocast_ipc::counters::batch as b;
    wait_for("the batcher to commit every frame", || {
        live_value(&bus, CounterKind::Batch, b::COMMITTED_SEQ) == Some(N)
    });

    let report = ns.monitor(false).poll(now_ns());
    let samples = render(&report);
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM trades", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, N as i64);
    let labels = [("topic", "trade_events"), ("name", "db")];
    assert_eq!(
        find(&samples, "zerocast_batch_rows_total", &labels).value,
        rows as f64
    );
    let batches = find(&samples, "zerocast_batch_batches_total", &labels).value;
    assert!(
        batches >= (N / 100) as f64,
        "at most 100 rows a batch: {batches}"
    );
    assert_eq!(
        histogram_count(&samples, "zerocast_batch_commit_seconds", &labels),
        batches
    );
    assert_eq!(
        find(&samples, "zerocast_batch_committed_sequence", &labels).value,
        (N - 1) as f64
    );
    assert_eq!(
        find(&samples, "zerocast_batch_lost_total", &labels).value,
        0.0
    );

    // Relaxed: as above.
    stop.store(true, Ordering::Relaxed);
    let stats = batcher.join().unwrap();
    assert_eq!(stats.frames, N);
    // A batcher that stopped frees its entry, and the last entry to go
    // takes the file with it.
    assert!(!counters_path(bus.config()).exists());
}

#[test]
fn a_publisher_held_by_a_stopped_gating_subscriber_shows_gating_waits() {
    let ns = Ns::new("gating", 80_000);
    let bus = ns.bus();
    let seg = bus.segment("trade_events").unwrap();
    // Registered, gating, and never reading: a stopped process, as far as
    // the publisher can tell.
    let _stopped = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "stopped".into(),
            gating: true,
            ..SubscriberOptions::default()
        },
    )
    .unwrap();
    let wait = Duration::from_millis(2);
    let mut p = ShmPublisher::new(
        Arc::clone(&seg),
        &PublisherOptions {
            name: "engine".into(),
            gating: GatingPolicy::Wait(wait),
        },
    )
    .unwrap();
    let mut feed = zerocast_runtime::feed::Feed::new(1, 7);
    let capacity = seg.ring().capacity();
    for _ in 0..capacity {
        p.publish(&feed.trade()).unwrap();
    }
    let samples = render(&ns.monitor(false).poll(now_ns()));
    let labels = [("topic", "trade_events"), ("name", "engine")];
    assert_eq!(
        find(&samples, "zerocast_publisher_gating_waits_total", &labels).value,
        0.0
    );
    // The ring is full: the next publish waits its limit and fails.
    assert!(p.publish(&feed.trade()).is_err());
    let report = ns.monitor(false).poll(now_ns());
    let samples = render(&report);
    assert_eq!(
        find(&samples, "zerocast_publisher_gating_waits_total", &labels).value,
        1.0
    );
    let waited = find(
        &samples,
        "zerocast_publisher_gating_wait_seconds_total",
        &labels,
    )
    .value;
    assert!(waited >= wait.as_secs_f64(), "{waited}");
    let table = zerocast_runtime::health::table(&report);
    assert!(
        table.contains("waited for gating subscribers 1 times"),
        "{table}"
    );
}

#[test]
fn a_corrupt_counters_file_is_a_clear_error_and_stops_nothing() {
    use std::os::unix::fs::OpenOptionsExt;
    let ns = Ns::new("corrupt", 80_000);
    let bus = ns.bus();
    let path = counters_path(bus.config());
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap()
        .write_all(&[0x5a; 64 * 1024])
        .unwrap();
    let report = ns.monitor(false).poll(now_ns());
    let (what, why) = report
        .unreadable
        .iter()
        .find(|(what, _)| what == zerocast_ipc::counters::COUNTERS_FILE)
        .unwrap_or_else(|| panic!("{:?}", report.unreadable));
    assert_eq!(what, zerocast_ipc::counters::COUNTERS_FILE);
    assert!(
        why.contains("bad counters table") && why.contains("not a zerocast counters file"),
        "{why}"
    );
    assert!(
        why.contains(&*path.to_string_lossy()),
        "names the file: {why}"
    );
    // The program says so too, and a recorder still records (without
    // metrics: a warning).
    let out = ns.cmd(&["health", "--interval", "50"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("counters: cannot open"), "{text}");
    let mut p = bus.publisher("trade_events").unwrap();
    publish_trades(&mut p, 3);
    let wal = ns.dir.join("wal");
    let (mut log, _) = zerocast_runtime::recorder::open_wal(
        &wal,
        "trade_events",
        zerocast_runtime::wal::WalOptions::default(),
    )
    .unwrap();
    let stats =
        zerocast_runtime::recorder::record(&bus, "trade_events", &mut log, || log_done(&wal))
            .unwrap();
    assert_eq!(stats.frames, 3);
}

/// Whether the log in `wal` holds sequences 0..=2 (the recorder's stop
/// condition in the corrupt-file test).
fn log_done(wal: &std::path::Path) -> bool {
    let mut last = None;
    let _ = Replay::with_topic(&wal.join("trade_events"), "trade_events").read(0, u64::MAX, |e| {
        if let Entry::Record(r) = e {
            last = Some(r.seq);
        }
        ControlFlow::Continue(())
    });
    last == Some(2)
}

#[test]
fn batch_rows_per_second_is_the_rows_committed_between_two_polls() {
    let ns = Ns::new("rate", 80_000);
    let bus = ns.bus();
    let table = Arc::new(CountersTable::open_or_create(&counters_path(bus.config())).unwrap());
    let c = table
        .claim(CounterKind::Batch, "trade_events", "db")
        .unwrap();
    use zerocast_ipc::counters::batch as b;
    let mut monitor = ns.monitor(false);
    let t0 = now_ns();
    let first = monitor.poll(t0);
    assert_eq!(first.counters.len(), 1);
    assert_eq!(first.counters[0].rate, None, "one sample: no rate yet");
    c.add(b::ROWS, 30_000);
    // Two intervals (30 s) later: 30000 rows in 60 s.
    let report = monitor.poll(t0 + 60_000_000_000);
    assert_eq!(report.counters[0].rate, Some(500.0));
    let samples = render(&report);
    assert_eq!(
        find(
            &samples,
            "zerocast_batch_rows_per_second",
            &[("topic", "trade_events"), ("name", "db")]
        )
        .value,
        500.0
    );
    drop(c);
    assert!(monitor.poll(t0 + 61_000_000_000).counters.is_empty());
}

/// A counters file whose histogram words were overwritten (a hostile or
/// corrupt writer): every bucket at `u64::MAX`. The monitor must render it
/// without overflowing (a panic in a debug build) and with cumulative
/// buckets that never go down.
#[test]
fn regression_a_hostile_histogram_renders_without_overflow() {
    use std::os::unix::fs::FileExt;
    let ns = Ns::new("hostilehist", 80_000);
    let bus = ns.bus();
    let path = counters_path(bus.config());
    let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
    let c = table
        .claim(CounterKind::Batch, "trade_events", "db")
        .unwrap();
    // The entry's histogram: count at 128, sum at 136, 14 buckets from 144
    // (the entry starts at 128 + index * 256).
    let entry = 128 + c.index() as u64 * 256;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&u64::MAX.to_le_bytes(), entry + 128)
        .unwrap();
    f.write_all_at(&u64::MAX.to_le_bytes(), entry + 136)
        .unwrap();
    for b in 0..14 {
        f.write_all_at(&u64::MAX.to_le_bytes(), entry + 144 + b * 8)
            .unwrap();
    }
    let report = ns.monitor(false).poll(now_ns());
    let samples = render(&report);
    let mut last = 0.0;
    for s in samples
        .iter()
        .filter(|s| s.name == "zerocast_batch_commit_seconds_bucket")
    {
        assert!(s.value >= last, "cumulative buckets go down: {samples:?}");
        last = s.value;
    }
    assert!(last > 0.0, "{samples:?}");
    drop(c);
}
