//! The delayed tier (`zerocast batch` and [`Batcher`]): exactly once across
//! SIGKILLs into SQLite and JSON lines, sink errors that lose nothing, and
//! lost or missing sequences recorded as such.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use zerocast_ipc::{Bus, Config, TopicConfig, TopicKind};
use zerocast_runtime::batch::{Batch, BatchError, BatchOptions, Batcher, Sink, SinkError};
use zerocast_runtime::feed::{publish_synthetic, Feed};
use zerocast_runtime::resume::Event;

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");
const TOPIC: &str = "trades";

#[path = "support/guard.rs"]
mod guard;
use guard::ChildGuard;

/// A namespace of its own with one trade topic of `size` bytes, and a
/// scratch directory; both removed on drop.
struct Ns {
    ns: String,
    dir: PathBuf,
    config: PathBuf,
}

impl Ns {
    fn new(test: &str, size: u64) -> Self {
        let ns = format!("bt{}{test}", std::process::id());
        let dir = std::env::temp_dir().join(format!("zc-batch-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("zerocast.toml");
        std::fs::write(
            &config,
            format!("[[topic]]\nname = \"{TOPIC}\"\nsize = {size}\nkind = \"trade\"\n"),
        )
        .unwrap();
        Self { ns, dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("ZEROCAST_NAMESPACE")
            .env("ZEROCAST_LOG", "error")
            .args(["--namespace", &self.ns, "--config"])
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Spawns `zerocast args` with stdout discarded and stderr to `log`
    /// (killed and reaped when the guard drops: a failed assertion leaves
    /// no process).
    fn spawn(&self, args: &[&str], log: &str) -> ChildGuard {
        let file = std::fs::File::create(self.path(log)).unwrap();
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn zerocast")
            .into()
    }

    /// Runs `zerocast args` to completion (60 s at most).
    fn run(&self, args: &[&str]) -> Output {
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, Duration::from_secs(60), args[0])
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Waits until `stat` lists a subscriber named `name`.
    fn wait_for_subscriber(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(&["stat"]);
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains(&format!("\"{name}\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never registered:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let prefix = format!("zerocast.{}.", self.ns);
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_file(format!("/dev/shm/zerocast-acks.{}.{TOPIC}", self.ns));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits for `child` up to `limit`, draining its pipes; kills it and fails
/// the test if it hangs.
fn wait_bounded(child: impl Into<ChildGuard>, limit: Duration, what: &str) -> Output {
    use std::io::Read;
    let mut child = child.into();
    fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A small xorshift generator: kill times differ from run to run but a
/// failing seed can be replayed (`ZEROCAST_BATCH_SEED`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn query_u64(db: &Connection, sql: &str) -> u64 {
    db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// The sequences of every line of a JSON-lines sink's file, and its missing
/// or lost ranges.
fn jsonl_seqs(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial last line"
    );
    let mut lines = text.lines();
    if let Some(header) = lines.next() {
        let v: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(v["zerocast"], "batch", "no header: {header}");
    }
    lines
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["kind"], "trade", "not a trade line: {l}");
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

/// A publisher runs with a recorder while two batchers, one into SQLite and
/// one into JSON lines, are SIGKILLed over and over; then each finishes.
/// Every sequence is in each sink exactly once, and the progress row says
/// the last.
#[test]
fn batch_is_exactly_once_across_repeated_sigkill() {
    let seed = std::env::var("ZEROCAST_BATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    eprintln!("ZEROCAST_BATCH_SEED={seed}");
    let mut rng = Rng(seed);
    // About 3000 slots: the publisher laps a restarting batcher, which then
    // catches up from the recorder's log.
    let ns = Ns::new("kill", 1_000_000);
    let wal = ns.path("wal");
    let wal_s = wal.to_str().unwrap().to_owned();
    let db = ns.path("trades.db");
    let lines = ns.path("trades.jsonl");
    let sqlite_sink = format!("sqlite:{}", db.display());
    let jsonl_sink = format!("jsonl:{}", lines.display());
    let count: u64 = 30_000;
    let last = (count - 1).to_string();

    let mut recorder = ns.spawn(
        &[
            "record", "--topic", TOPIC, "--wal", &wal_s, "--fsync", "never",
        ],
        "record.log",
    );
    ns.wait_for_subscriber(&format!("recorder-{TOPIC}"));
    let batcher = |sink: &str, name: &str, log: &str, until: bool| {
        let mut args = vec![
            "batch",
            "--topic",
            TOPIC,
            "--sink",
            sink,
            "--name",
            name,
            "--wal",
            &wal_s,
            "--interval",
            "20ms",
        ];
        if until {
            args.extend(["--until", &last]);
        }
        ns.spawn(&args, log)
    };
    let mut sq = batcher(&sqlite_sink, "sq", "sq.log", false);
    let mut js = batcher(&jsonl_sink, "js", "js.log", false);
    let mut publisher = ns.spawn(
        &[
            "pub",
            "--topic",
            TOPIC,
            "--count",
            &count.to_string(),
            "--rate",
            "15000",
            "--gating-wait-ms",
            "10000",
        ],
        "pub.log",
    );
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while publisher.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the publisher did not finish");
        std::thread::sleep(Duration::from_millis(40 + rng.below(200)));
        // SIGKILL (Child::kill), at any point of a batch or a commit.
        if rng.below(2) == 0 {
            sq.kill().unwrap();
            sq.wait().unwrap();
            sq = batcher(&sqlite_sink, "sq", "sq.log", false);
        } else {
            js.kill().unwrap();
            js.wait().unwrap();
            js = batcher(&jsonl_sink, "js", "js.log", false);
        }
        kills += 1;
    }
    let published = publisher.wait().unwrap();
    assert!(published.success(), "publisher: {}", ns.log("pub.log"));
    // One last kill each, then a run that finishes at the last sequence.
    for mut c in [sq, js] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let sq = batcher(&sqlite_sink, "sq", "sq.log", true);
    let js = batcher(&jsonl_sink, "js", "js.log", true);
    let sq = wait_bounded(sq, Duration::from_secs(30), "batch sqlite");
    assert!(sq.status.success(), "batch sqlite: {}", ns.log("sq.log"));
    let js = wait_bounded(js, Duration::from_secs(30), "batch jsonl");
    assert!(js.status.success(), "batch jsonl: {}", ns.log("js.log"));
    let _ = recorder.kill();
    let _ = recorder.wait();
    eprintln!("killed the batchers {kills} times");
    assert!(kills >= 3, "too few kills to mean anything: {kills}");

    let conn = Connection::open(&db).unwrap();
    let rows = query_u64(&conn, "SELECT count(*) FROM trades");
    let distinct = query_u64(&conn, "SELECT count(DISTINCT seq) FROM trades");
    let gaps = query_u64(&conn, "SELECT count(*) FROM gaps");
    assert_eq!((rows, distinct, gaps), (count, count, 0));
    assert_eq!(query_u64(&conn, "SELECT min(seq) FROM trades"), 0);
    assert_eq!(query_u64(&conn, "SELECT max(seq) FROM trades"), count - 1);
    assert_eq!(
        query_u64(
            &conn,
            "SELECT last_seq FROM progress WHERE topic = 'trades' AND name = 'sq'"
        ),
        count - 1
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    assert_eq!(jsonl_seqs(&lines), (0..count).collect::<Vec<_>>());
}

/// A sink that refuses its `fail_at`-th batch (counting from 1).
#[derive(Default)]
struct Flaky {
    seqs: Vec<u64>,
    committed: Option<u64>,
    batches: u32,
    fail_at: Option<u32>,
}

impl Sink for Flaky {
    fn committed(&mut self) -> Result<Option<u64>, SinkError> {
        Ok(self.committed)
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.batches += 1;
        if Some(self.batches) == self.fail_at {
            return Err(SinkError::new("flaky", "write", "disk full"));
        }
        for e in batch.events() {
            match e {
                Event::Frame { seq, .. } => self.seqs.push(seq),
                other => panic!("unexpected {other:?}"),
            }
        }
        self.committed = batch.last_seq();
        Ok(())
    }
}

/// A scratch directory of a test, removed when the test ends (passed or
/// failed: tests left `/tmp/zc-batch-*` behind).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("zc-batch-{test}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn lib_bus(test: &str, frames: u64) -> Bus {
    let bus = Bus::new(Config {
        namespace: format!("btl{}{test}", std::process::id()),
        topics: vec![TopicConfig::new(TOPIC, 1_000_000, TopicKind::Trade)],
    });
    bus.remove_segments();
    let mut p = bus.publisher(TOPIC).unwrap();
    let mut feed = Feed::new(4, 7);
    for _ in 0..frames {
        publish_synthetic(&mut p, &mut feed, TopicKind::Trade, 1).unwrap();
    }
    bus
}

/// A sink error stops the loop with the sink's error; its position stays at
/// the last batch it committed, and the next run delivers the refused batch
/// again, so nothing is lost or doubled.
#[test]
fn sink_error_stops_the_loop_and_the_position_does_not_advance() {
    let bus = lib_bus("err", 50);
    let options = BatchOptions {
        interval: Duration::from_secs(60),
        max_batch: 10,
        until: Some(49),
        ..Default::default()
    };
    let batcher = Batcher::new(&bus, TOPIC, None, "f", options);
    let mut sink = Flaky {
        fail_at: Some(3),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let err = batcher
        .run(&mut sink, || false, |b| seen.push(b.last_seq()))
        .unwrap_err();
    assert!(matches!(err, BatchError::Sink(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("flaky: write: disk full"), "{message}");
    assert!(message.contains("batch"), "{message}");
    assert_eq!(
        sink.committed,
        Some(19),
        "the position advanced past the refused batch"
    );
    assert_eq!(seen, vec![Some(9), Some(19)]);

    sink.fail_at = None;
    let stats = batcher.run(&mut sink, || false, |_| {}).unwrap();
    assert_eq!(stats.committed, Some(49));
    assert_eq!(stats.frames, 30);
    assert_eq!(sink.seqs, (0..50).collect::<Vec<_>>());
    bus.remove_segments();
}

/// A database locked by another writer: `zerocast batch` exits 1 naming
/// the database and the batch, and its progress row stays where it was;
/// once the lock is gone, a rerun completes without a duplicate.
#[test]
fn locked_database_stops_batch_with_a_clear_error_and_keeps_progress() {
    let ns = Ns::new("lock", 1_000_000);
    let db = ns.path("locked.db");
    let sink = format!("sqlite:{}", db.display());
    let out = ns.run(&["pub", "--topic", TOPIC, "--count", "100"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch = |until: &str| {
        ns.run(&[
            "batch",
            "--topic",
            TOPIC,
            "--sink",
            &sink,
            "--until",
            until,
            "--max-batch",
            "25",
        ])
    };
    let first = batch("49");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    let holder = Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failed = batch("99");
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&sink),
        "the error must name the database: {err}"
    );
    assert!(err.contains("commit batch 50 to 74"), "{err}");
    assert!(err.contains("locked"), "{err}");
    holder.execute_batch("ROLLBACK").unwrap();
    let conn = Connection::open(&db).unwrap();
    assert_eq!(query_u64(&conn, "SELECT last_seq FROM progress"), 49);
    assert_eq!(query_u64(&conn, "SELECT count(*) FROM trades"), 50);

    let again = batch("99");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        query_u64(&conn, "SELECT count(DISTINCT seq) FROM trades"),
        100
    );
    assert_eq!(query_u64(&conn, "SELECT count(*) FROM trades"), 100);
    assert_eq!(query_u64(&conn, "SELECT last_seq FROM progress"), 99);
}

/// Set to `1` to let [`regression_sqlite_commit_rides_out_a_moment_of_full_disk`]
/// pass without running where it cannot mount a tmpfs (not root).
const ALLOW_SKIP_FULL_DISK: &str = "ZEROCAST_ALLOW_SKIP_FULL_DISK";

/// A disk that is full for a moment (another process's files come and go
/// on a shared disk) made a commit fail with SQLITE_FULL, "database or disk
/// is full", and stopped the batcher. The sink now retries the batch for a
/// bounded time, saying so. Here the database lives on a 1 MiB tmpfs that
/// a balloon file fills; once the batcher reports the retry the balloon
/// goes, and the run completes with every row once. Needs root to mount
/// the tmpfs, like `full_disk_is_an_error_and_earlier_records_stay_readable`.
#[test]
fn regression_sqlite_commit_rides_out_a_moment_of_full_disk() {
    let ns = Ns::new("full", 1_000_000);
    let mnt = ns.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .output();
    if !mount.as_ref().map(|o| o.status.success()).unwrap_or(false) {
        let why = mount
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_else(|e| e.to_string());
        if std::env::var(ALLOW_SKIP_FULL_DISK).as_deref() == Ok("1") {
            eprintln!("SKIPPED ({ALLOW_SKIP_FULL_DISK}=1): cannot mount a tmpfs here ({why})");
            return;
        }
        panic!(
            "cannot mount a tmpfs ({why}); run as root, or set {ALLOW_SKIP_FULL_DISK}=1 to \
             skip this test explicitly"
        );
    }
    let result = std::panic::catch_unwind(|| {
        let db = mnt.join("full.db");
        let sink = format!("sqlite:{}", db.display());
        let out = ns.run(&["pub", "--topic", TOPIC, "--count", "1000"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first = ns.run(&["batch", "--topic", TOPIC, "--sink", &sink, "--until", "9"]);
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        // Keeps SQLite's -wal and -shm files (made now, while there is
        // room), so that only the batch's own WAL frames meet the full disk.
        let conn = Connection::open(&db).unwrap();
        assert_eq!(query_u64(&conn, "SELECT last_seq FROM progress"), 9);
        let balloon = mnt.join("balloon");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&balloon).unwrap();
            let chunk = [0xa5u8; 4096];
            let err = loop {
                if let Err(e) = f.write_all(&chunk) {
                    break e;
                }
            };
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        }
        let log = ns.path("full.log");
        let mut child: ChildGuard = ns
            .cmd(&["batch", "--topic", TOPIC, "--sink", &sink, "--until", "999"])
            .env("ZEROCAST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap()
            .into();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ns.log("full.log").contains("retrying") {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "batch exited ({status}) while the disk was full instead of retrying: {}",
                    ns.log("full.log")
                );
            }
            assert!(Instant::now() < deadline, "no retry reported");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::remove_file(&balloon).unwrap();
        let done = wait_bounded(child, Duration::from_secs(30), "batch");
        assert!(done.status.success(), "{}", ns.log("full.log"));
        assert_eq!(query_u64(&conn, "SELECT count(*) FROM trades"), 1000);
        assert_eq!(
            query_u64(&conn, "SELECT count(DISTINCT seq) FROM trades"),
            1000
        );
        assert_eq!(query_u64(&conn, "SELECT last_seq FROM progress"), 999);
    });
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A sequence the bus lost (its publisher died between claim and commit)
/// is a `lost` row in `gaps`; sequences overwritten before the batcher
/// started, with no log to fall back on, are one `missing` range. Every
/// sequence is then a trade row or inside a gap, once.
#[test]
fn lost_and_missing_sequences_are_recorded_in_gaps() {
    let ns = Ns::new("gaps", 170_000);
    let db = ns.path("gaps.db");
    let sink = format!("sqlite:{}", db.display());
    let crashed = ns.run(&[
        "pub",
        "--topic",
        TOPIC,
        "--count",
        "100",
        "--crash-after",
        "10",
    ]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(crashed.status.signal(), Some(libc::SIGKILL));
    let out = ns.run(&["pub", "--topic", TOPIC, "--count", "10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = ns.run(&["batch", "--topic", TOPIC, "--sink", &sink, "--until", "20"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let conn = Connection::open(&db).unwrap();
    let gaps: Vec<(i64, i64, String)> = conn
        .prepare("SELECT from_seq, to_seq, reason FROM gaps")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(gaps, vec![(10, 10, "lost".to_owned())]);
    assert_eq!(query_u64(&conn, "SELECT count(*) FROM trades"), 20);

    // Lap the ring (about 500 slots) with no batcher and no recorder.
    let out = ns.run(&["pub", "--topic", TOPIC, "--count", "3000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = ns.run(&[
        "batch", "--topic", TOPIC, "--sink", &sink, "--until", "3020",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (from, to, reason): (i64, i64, String) = conn
        .query_row(
            "SELECT from_seq, to_seq, reason FROM gaps WHERE reason = 'missing'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((from, reason.as_str()), (21, "missing"));
    let rows = query_u64(&conn, "SELECT count(*) FROM trades WHERE seq > 20");
    assert_eq!(
        rows + (to - from + 1) as u64,
        3000,
        "rows {rows}, missing {from}..={to}"
    );
    assert_eq!(
        query_u64(&conn, "SELECT min(seq) FROM trades WHERE seq > 20"),
        to as u64 + 1
    );
}

/// The JSON-lines sink cuts a partial last line (a batch cut short by a
/// kill) and resumes after the last complete line.
#[test]
fn jsonl_sink_cuts_a_partial_last_line_and_resumes_after_the_last_complete_one() {
    let bus = lib_bus("jsonl", 30);
    let dir = scratch("jsonl");
    let path = dir.join("out.jsonl");
    let run = |until: u64| {
        let mut sink = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j").unwrap();
        Batcher::new(
            &bus,
            TOPIC,
            None,
            "j",
            BatchOptions {
                until: Some(until),
                ..Default::default()
            },
        )
        .run(&mut sink, || false, |_| {})
        .unwrap()
    };
    run(9);
    // A kill mid-write: half a line after the complete ones.
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":10,\"kind\":\"tra");
    std::fs::write(&path, &text).unwrap();
    let mut sink = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j").unwrap();
    assert_eq!(sink.committed().unwrap(), Some(9));
    drop(sink);
    let stats = run(29);
    assert_eq!(stats.frames, 20);
    assert_eq!(jsonl_seqs(&path), (0..30).collect::<Vec<_>>());
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad values are refused before any work, naming the flag and what to use;
/// a second batcher on the same JSON-lines file is refused.
#[test]
fn bad_batch_arguments_are_refused_with_what_to_use() {
    let ns = Ns::new("args", 1_000_000);
    for (args, want) in [
        (vec!["--sink", "csv:x"], "unknown sink \"csv\""),
        (vec!["--sink", "sqlite:"], "no file named"),
        (vec!["--sink", "x.db"], "use sqlite:FILE or jsonl:FILE"),
        (vec!["--sink", "jsonl:x", "--interval", "100"], "--interval"),
        (vec!["--sink", "jsonl:x", "--max-batch", "0"], "--max-batch"),
        // Regressions: a --wal that does not exist was accepted, then
        // recorded permanent "missing" gaps; the interval message suggested
        // 500us, which it then refused.
        (
            vec!["--sink", "jsonl:x", "--wal", "/nonexistent/zc-wal"],
            "/nonexistent/zc-wal",
        ),
        (vec!["--sink", "jsonl:x", "--interval", "500us"], "1000us"),
        (
            vec!["--sink", "jsonl:x", "--interval", "5m"],
            "1ms to 3600s",
        ),
    ] {
        let mut all = vec!["batch", "--topic", TOPIC];
        all.extend(args.iter().copied());
        let out = ns.run(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let path = ns.path("one.jsonl");
    let _held = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j").unwrap();
    let err = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j")
        .unwrap_err()
        .to_string();
    assert!(err.contains("another batcher writes this file"), "{err}");
    assert!(err.contains("one.jsonl"), "{err}");
}

/// Frames that do not parse (a damaged log) and frames the bus marked
/// invalid become `invalid_frames` rows with the reason, not an error that
/// would stop the batcher at the same sequence on every start; the
/// progress row moves past them.
#[test]
fn regression_sqlite_sink_keeps_unparsable_frames_as_invalid_rows() {
    let dir = scratch("inv");
    let path = dir.join("inv.db");
    let mut sink = zerocast_runtime::batch::SqliteSink::open(&path, TOPIC, "i").unwrap();
    let mut batch = Batch::new();
    batch.push(Event::Frame {
        seq: 0,
        bytes: &[0xAB; 40],
    });
    batch.push(Event::Invalid {
        seq: 1,
        bytes: &[1, 2, 3],
    });
    batch.push(Event::Lost(2));
    sink.write_batch(&batch).unwrap();
    assert_eq!(sink.committed().unwrap(), Some(2));
    drop(sink);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(query_u64(&conn, "SELECT count(*) FROM invalid_frames"), 2);
    let why: String = conn
        .query_row("SELECT error FROM invalid_frames WHERE seq = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!why.is_empty());
    assert_eq!(query_u64(&conn, "SELECT last_seq FROM progress"), 2);
    // Reopened for another stream: refused, naming the one it holds.
    let err = zerocast_runtime::batch::SqliteSink::open(&path, TOPIC, "other")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("name \"i\"") && err.contains("one stream"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A write lock another connection holds for a moment is waited out (the
/// sink's busy timeout covers `BEGIN IMMEDIATE`), not reported: the holder
/// lets go once the batcher has started, and the run completes.
#[test]
fn a_lock_held_for_a_moment_by_another_connection_is_waited_out() {
    let ns = Ns::new("brief", 1_000_000);
    let db = ns.path("brief.db");
    let sink = format!("sqlite:{}", db.display());
    let out = ns.run(&["pub", "--topic", TOPIC, "--count", "100"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = ns.run(&["batch", "--topic", TOPIC, "--sink", &sink, "--until", "9"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let holder = Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let log = ns.path("brief.log");
    let child: ChildGuard = ns
        .cmd(&[
            "batch",
            "--topic",
            TOPIC,
            "--sink",
            &sink,
            "--until",
            "99",
            "--max-batch",
            "25",
        ])
        .env("ZEROCAST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap()
        .into();
    // "batching" is logged once the sink is open, right before the first
    // commit (25 frames are waiting), which then waits on the holder's
    // lock; the holder keeps it a while (well inside the busy timeout), so
    // that a commit that did not wait would fail.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns.log("brief.log").contains("batching") {
        assert!(Instant::now() < deadline, "batch never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Deliberate: the lock is held for a while (an event the batcher does
    // not show: its commit waiting in SQLite's busy handler).
    std::thread::sleep(Duration::from_millis(300));
    holder.execute_batch("ROLLBACK").unwrap();
    let done = wait_bounded(child, Duration::from_secs(30), "batch");
    assert!(done.status.success(), "{}", ns.log("brief.log"));
    assert_eq!(query_u64(&holder, "SELECT count(*) FROM trades"), 100);
    assert_eq!(query_u64(&holder, "SELECT last_seq FROM progress"), 99);
}

/// Passive checkpoints running beside the commits (here from a second
/// connection in a tight loop, besides the sink's own checkpoint thread)
/// never make a commit fail: they never take the write lock.
#[test]
fn checkpoints_beside_the_commits_never_fail_one() {
    let dir = scratch("ckpt");
    let path = dir.join("ckpt.db");
    let mut sink = zerocast_runtime::batch::SqliteSink::open(&path, TOPIC, "c").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = {
        let stop = std::sync::Arc::clone(&stop);
        let path = path.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(&path).unwrap();
            let mut runs = 0u64;
            // Relaxed: a flag polled in a loop, no data hangs on it.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    .unwrap();
                runs += 1;
            }
            runs
        })
    };
    let payload = vec![0x5au8; 3000];
    let batches = if cfg!(debug_assertions) { 300 } else { 1000 };
    for b in 0..batches {
        let mut batch = Batch::new();
        for i in 0..4u64 {
            batch.push(Event::Invalid {
                seq: b * 4 + i,
                bytes: &payload,
            });
        }
        if let Err(e) = sink.write_batch(&batch) {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("batch {b}: {e}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(checkpointer.join().unwrap() > 0);
    assert_eq!(sink.committed().unwrap(), Some(batches * 4 - 1));
    drop(sink);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        query_u64(&conn, "SELECT count(*) FROM invalid_frames"),
        batches * 4
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JSON-lines sink's lock (flock) belongs to the open file, which a
/// child forked at that moment by another thread (any `Command::spawn` in
/// the process) shares until its exec. Reopening the file right after the
/// sink was dropped then failed with "another batcher writes this file"
/// (a flake of `jsonl_sink_cuts_a_partial_last_line...` under load). The
/// sink now waits a bounded time for such a lock. Here a forked child
/// holds the inherited descriptor for 300 ms.
#[test]
fn regression_jsonl_lock_shared_with_a_forked_child_is_waited_out() {
    let dir = scratch("jfork");
    let path = dir.join("out.jsonl");
    let sink = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j").unwrap();
    // SAFETY: the child calls only async-signal-safe functions (nanosleep,
    // _exit) before it exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 300_000_000,
        };
        // SAFETY: in the forked child: nanosleep and _exit are
        // async-signal-safe; `t` is a valid timespec.
        unsafe {
            libc::nanosleep(&t, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    drop(sink);
    let reopened = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j");
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = reopened {
        panic!("reopened while a forked child held the lock: {e}");
    }
}

fn trade(price: f64) -> zerocast_core::frame::TradeEvent {
    zerocast_core::frame::TradeEvent {
        trade_id: [b'a'; 40],
        order_id: [b'b'; 40],
        instrument_id: [b'c'; 16],
        price,
        volume: 1.0,
        direction: zerocast_core::frame::Direction::Buy,
        timestamp: 1,
    }
}

fn until(seq: u64) -> BatchOptions {
    BatchOptions {
        interval: Duration::from_millis(10),
        max_batch: 1,
        until: Some(seq),
        ..Default::default()
    }
}

/// A batch had no byte limit: only `max_batch` events or the interval cut
/// it, so a batch of large frames could hold any amount of memory. It is
/// cut at `max_bytes` of frames too.
#[test]
fn regression_batches_are_cut_at_a_byte_limit() {
    let bus = lib_bus("bytes", 40);
    let dir = scratch("bytes");
    let mut sink =
        zerocast_runtime::batch::JsonlSink::open(&dir.join("b.jsonl"), TOPIC, "b").unwrap();
    let mut largest = 0;
    let stats = Batcher::new(
        &bus,
        TOPIC,
        None,
        "b",
        BatchOptions {
            interval: Duration::from_secs(60),
            max_batch: 1_000,
            max_bytes: 1_000,
            until: Some(39),
        },
    )
    .run(&mut sink, || false, |b| largest = largest.max(b.byte_len()))
    .unwrap();
    assert_eq!(stats.frames, 40);
    assert!(stats.batches > 1, "{stats:?}");
    // Cut at the frame that reached the limit: under the limit plus a frame.
    assert!(largest < 1_000 + 512, "{largest}");
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A NaN price (SQLite binds it as NULL, which the NOT NULL column refused)
/// stopped the SQLite sink at that frame on every start, for good. Every
/// frame the bus accepted is stored: NaN as the text 'NaN', an infinity as
/// a real, a heartbeat sequence above i64::MAX as its two's complement.
#[test]
fn regression_non_finite_prices_and_huge_sequences_never_stop_the_sqlite_sink() {
    let bus = Bus::new(Config {
        namespace: format!("btl{}nan", std::process::id()),
        topics: vec![TopicConfig::new(TOPIC, 1_000_000, TopicKind::Trade)],
    });
    bus.remove_segments();
    let mut p = bus.publisher(TOPIC).unwrap();
    p.publish(&trade(1.0)).unwrap();
    p.publish(&trade(f64::NAN)).unwrap();
    p.publish(&trade(f64::INFINITY)).unwrap();
    p.publish(&zerocast_core::frame::Heartbeat {
        publisher_id: [b'h'; 16],
        sequence: u64::MAX,
        timestamp: 1,
    })
    .unwrap();
    let dir = scratch("nan");
    let db = dir.join("t.db");
    let mut sink = zerocast_runtime::batch::SqliteSink::open(&db, TOPIC, "n").unwrap();
    let stats = Batcher::new(&bus, TOPIC, None, "n", until(3)).run(&mut sink, || false, |_| {});
    let stats = stats.unwrap_or_else(|e| panic!("the sink stopped: {e}"));
    assert_eq!((stats.frames, stats.committed), (4, Some(3)));
    let c = sink.connection();
    let prices: Vec<String> = c
        .prepare("SELECT typeof(price) || ':' || price FROM trades ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(prices[0], "real:1.0");
    assert_eq!(prices[1], "text:NaN");
    assert!(prices[2].starts_with("real:"), "{prices:?}");
    assert_eq!(
        query_u64(c, "SELECT sequence FROM heartbeats WHERE seq = 3") as i64,
        -1
    );
    drop(sink);
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A JSON-lines file had no identity: reused for another topic it resumed
/// at the old topic's position, skipping the new topic's first sequences
/// with no gap. Its header line names the stream; another is refused.
#[test]
fn regression_jsonl_file_of_another_stream_is_refused() {
    let bus = lib_bus("jstream", 10);
    let dir = scratch("jstream");
    let path = dir.join("x.jsonl");
    let mut sink = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j").unwrap();
    Batcher::new(&bus, TOPIC, None, "j", until(9))
        .run(&mut sink, || false, |_| {})
        .unwrap();
    drop(sink);
    let first = std::fs::read_to_string(&path).unwrap();
    let header: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["topic"].as_str(), header["name"].as_str()),
        (Some(TOPIC), Some("j"))
    );
    for (topic, name) in [("other", "j"), (TOPIC, "k")] {
        let err = zerocast_runtime::batch::JsonlSink::open(&path, topic, name)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("holds topic \"{TOPIC}\" name \"j\"")),
            "{err}"
        );
        assert!(
            err.contains(&format!("not topic \"{topic}\" name \"{name}\"")),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
}

/// After a bus reset (segment removed and created again, sequences from 0)
/// the batcher resumed at its old position and skipped the new bus's first
/// sequences with no gap. Both sinks record the segment and refuse another.
#[test]
fn regression_batcher_refuses_a_reset_bus() {
    let bus = lib_bus("reset", 10);
    let dir = scratch("reset");
    let db = dir.join("t.db");
    let jl = dir.join("t.jsonl");
    let run = |bus: &Bus| {
        let mut s = zerocast_runtime::batch::SqliteSink::open(&db, TOPIC, "r").unwrap();
        let a = Batcher::new(bus, TOPIC, None, "r", until(9)).run(&mut s, || false, |_| {});
        let mut j = zerocast_runtime::batch::JsonlSink::open(&jl, TOPIC, "r").unwrap();
        let b = Batcher::new(bus, TOPIC, None, "r", until(9)).run(&mut j, || false, |_| {});
        (a, b)
    };
    let (a, b) = run(&bus);
    assert_eq!(a.unwrap().committed, Some(9));
    assert_eq!(b.unwrap().committed, Some(9));
    // The reset: a new segment, sequences from 0 again.
    bus.remove_segments();
    std::thread::sleep(Duration::from_millis(2)); // another creation_ns
    let bus = lib_bus("reset", 12);
    let (a, b) = run(&bus);
    for r in [a, b] {
        let err = r.unwrap_err().to_string();
        assert!(err.contains("the bus was reset"), "{err}");
        assert!(err.contains("another file"), "{err}");
    }
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JSON-lines sink cut an existing file with no newline (a note, a
/// file of NULs) to 0 bytes. A file that does not start with our header is
/// refused, naming it, and not one byte changes.
#[test]
fn regression_jsonl_sink_never_cuts_a_file_that_is_not_ours() {
    let dir = scratch("foreign");
    let cases: [(&str, Vec<u8>); 5] = [
        ("notes.txt", b"remember the milk".to_vec()),
        ("zeros.bin", vec![0u8; 5000]),
        ("lines.jsonl", b"{\"seq\":1}\n{\"seq\":2}\npartial".to_vec()),
        ("empty-line", b"\n".to_vec()),
        ("brace", b"{".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(name) && err.contains("not a file zerocast batch wrote"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was changed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// SQLite: a database that is not ours is refused before anything in it
/// changes (no tables added, journal mode kept); a second batcher of the
/// same stream fails its commit instead of interleaving.
#[test]
fn regression_sqlite_sink_refuses_a_foreign_database_and_a_second_writer() {
    let dir = scratch("foreigndb");
    let db = dir.join("app.db");
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE users(id INTEGER)").unwrap();
    }
    let err = zerocast_runtime::batch::SqliteSink::open(&db, TOPIC, "s")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a zerocast batch database") && err.contains("app.db"),
        "{err}"
    );
    let c = Connection::open(&db).unwrap();
    assert_eq!(query_u64(&c, "SELECT count(*) FROM sqlite_master"), 1);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    drop(c);

    let bus = lib_bus("twowriters", 10);
    let ours = dir.join("t.db");
    let mut a = zerocast_runtime::batch::SqliteSink::open(&ours, TOPIC, "w").unwrap();
    let mut b = zerocast_runtime::batch::SqliteSink::open(&ours, TOPIC, "w").unwrap();
    Batcher::new(&bus, TOPIC, None, "w", until(4))
        .run(&mut a, || false, |_| {})
        .unwrap();
    let err = Batcher::new(&bus, TOPIC, None, "w2", until(9))
        .run(&mut b, || false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another batcher writes"), "{err}");
    drop((a, b));
    bus.remove_segments();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sink whose position counts in the bus as it was when the batcher
/// bound it, and which resets the bus (removes the topic's segment, makes
/// it again and publishes three frames there) when the batcher asks for
/// its position: the reset lands between the sink's check and the
/// reader's join.
struct ResetWhileStarting {
    bus: Bus,
    bound: Option<String>,
    seqs: Vec<u64>,
}

impl Sink for ResetWhileStarting {
    fn bind_segment(&mut self, segment: &str) -> Result<(), SinkError> {
        self.bound = Some(segment.to_owned());
        Ok(())
    }

    fn committed(&mut self) -> Result<Option<u64>, SinkError> {
        self.bus.remove_segments();
        let mut p = self.bus.publisher(TOPIC).unwrap();
        let mut feed = Feed::new(4, 7);
        for _ in 0..3 {
            publish_synthetic(&mut p, &mut feed, TopicKind::Trade, 1).unwrap();
        }
        // Committed up to 1 on the bus it was bound to.
        Ok(Some(1))
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        for e in batch.events() {
            if let Event::Frame { seq, .. } = e {
                self.seqs.push(seq);
            }
        }
        Ok(())
    }
}

/// Review finding: the batcher took its sink's segment identity, then
/// joined whatever segment the topic had when its reader got there; with
/// no log (whose binding is checked otherwise), a bus reset in between
/// went unnoticed: the new bus's first sequences were skipped with no gap
/// row and the rest stored as the old bus's.
#[test]
fn regression_a_reset_while_the_batcher_started_was_skipped_silently() {
    let bus = lib_bus("resetstart", 5);
    let options = BatchOptions {
        interval: Duration::from_millis(20),
        max_batch: 10,
        until: Some(2),
        ..Default::default()
    };
    let batcher = Batcher::new(&bus, TOPIC, None, "r", options);
    let mut sink = ResetWhileStarting {
        bus: bus.clone(),
        bound: None,
        seqs: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let result = batcher.run(&mut sink, || Instant::now() > deadline, |_| {});
    assert!(sink.bound.is_some());
    assert_eq!(
        sink.seqs,
        Vec::<u64>::new(),
        "the new bus's frames were batched as the old's"
    );
    let err = result.expect_err("a batcher went on over a reset bus");
    assert!(err.to_string().contains("bus was reset"), "{err}");
    bus.remove_segments();
}

/// Review finding: the batcher (and every reader that goes on from a
/// position: `follow`, a gateway resume) took an iceoryx2 topic, whose
/// frames count per publisher and start again at 0 after a restart, and
/// whose subscribers start at the newest frame wherever the position is: a
/// restarted publisher's frames were taken for ones already batched, and
/// what was published while the batcher was away skipped, without a word
/// (and the batcher made a shared-memory segment for the topic to take its
/// identity). Both are refused, naming the transport.
#[cfg(feature = "iceoryx2")]
#[test]
fn regression_readers_from_a_position_took_an_iceoryx2_topic() {
    let mut topic = TopicConfig::new(TOPIC, 1_000_000, TopicKind::Trade);
    topic.transport = zerocast_ipc::Transport::Iceoryx2;
    let bus = Bus::new(Config {
        namespace: format!("btl{}iox", std::process::id()),
        topics: vec![topic],
    });
    let options = BatchOptions {
        interval: Duration::from_millis(20),
        until: Some(10),
        ..Default::default()
    };
    let mut sink = Flaky::default();
    let deadline = Instant::now() + Duration::from_secs(2);
    let err = Batcher::new(&bus, TOPIC, None, "iox", options)
        .run(&mut sink, || Instant::now() > deadline, |_| {})
        .expect_err("an iceoryx2 topic was batched");
    assert!(err.to_string().contains("iceoryx2"), "{err}");
    assert!(
        !bus.config().segment_path(TOPIC).exists(),
        "the batcher made a shared-memory segment for an iceoryx2 topic"
    );
    let mut reader = zerocast_runtime::resume::Resumable::open_at(
        &bus,
        TOPIC,
        std::path::Path::new("/nonexistent"),
        "iox",
        5,
    );
    let why = reader
        .run(
            |_| std::ops::ControlFlow::Continue(()),
            || Instant::now() > deadline,
        )
        .expect_err("an iceoryx2 topic was read from a position");
    assert!(why.contains("iceoryx2"), "{why}");
}

/// Review finding: the JSON-lines sink took any `u64` for the sequence of
/// its last line, and the batcher resumed at the one after it: a damaged
/// or edited line with `u64::MAX` panicked in a debug build and, wrapped
/// to 0, batched the whole topic again in a release build. A sequence past
/// what a bus hands out is refused, naming it.
#[test]
fn regression_a_jsonl_last_line_of_sequence_u64_max_wrapped_the_position() {
    let bus = lib_bus("jsonlmax", 3);
    let dir = scratch("jsonlmax");
    let path = dir.join("out.jsonl");
    let mut sink = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j").unwrap();
    Batcher::new(
        &bus,
        TOPIC,
        None,
        "j",
        BatchOptions {
            until: Some(2),
            ..Default::default()
        },
    )
    .run(&mut sink, || false, |_| {})
    .unwrap();
    drop(sink);
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(format!("{{\"seq\":{},\"kind\":\"lost\"}}\n", u64::MAX).as_bytes());
    std::fs::write(&path, &text).unwrap();
    let Err(err) = zerocast_runtime::batch::JsonlSink::open(&path, TOPIC, "j") else {
        panic!("a last line of sequence u64::MAX was taken");
    };
    assert!(err.to_string().contains(&u64::MAX.to_string()), "{err}");
    bus.remove_segments();
}

/// Review of the JSON-lines fix above: the same overflow was open for
/// every sink, at the batcher's position arithmetic (`committed + 1`); a
/// SQLite `last_seq` of -1 reads as `u64::MAX`. The batcher now refuses
/// any sink position past what a bus hands out.
#[test]
fn regression_a_sqlite_position_of_minus_one_wrapped_the_batcher() {
    let bus = lib_bus("sqlmax", 3);
    let dir = scratch("sqlmax");
    let db = dir.join("b.db");
    let run = || {
        let mut sink = zerocast_runtime::batch::SqliteSink::open(&db, TOPIC, "s").unwrap();
        Batcher::new(
            &bus,
            TOPIC,
            None,
            "s",
            BatchOptions {
                until: Some(2),
                ..Default::default()
            },
        )
        .run(&mut sink, || false, |_| {})
    };
    run().unwrap();
    let conn = Connection::open(&db).unwrap();
    conn.execute("UPDATE progress SET last_seq = -1", [])
        .unwrap();
    drop(conn);
    let err = run().expect_err("a position of u64::MAX was taken");
    assert!(err.to_string().contains(&u64::MAX.to_string()), "{err}");
    bus.remove_segments();
}
