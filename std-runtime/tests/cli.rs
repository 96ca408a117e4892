//! The `zerocast` program as an operator runs it: exit codes, messages and
//! what is left on disk (issue 10), each test in its own namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use zerocast_core::frame::{encode, FrameBuf};
use zerocast_runtime::feed::Feed;
use zerocast_runtime::wal::{list_segments, FsyncPolicy, Wal, WalOptions};

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

#[path = "support/guard.rs"]
mod guard;
use guard::ChildGuard;

/// A unique namespace and WAL root per test, removed at the end.
struct Ns {
    name: String,
    root: PathBuf,
}

impl Ns {
    fn new(test: &str) -> Self {
        let name = format!("cli{}-{test}", std::process::id());
        let root = std::env::temp_dir().join(format!("zc-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self { name, root }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("ZEROCAST_NAMESPACE");
        c.env("ZEROCAST_LOG", "warn");
        c.args(["--namespace", &self.name]);
        c.args(args);
        c
    }

    fn spawn(&self, args: &[&str]) -> ChildGuard {
        spawn(self.cmd(args))
    }

    /// Runs `args` to completion (killed after 20 s: a hang fails the test).
    fn run(&self, args: &[&str]) -> Output {
        finish(self.spawn(args), args)
    }

    fn wal(&self) -> &str {
        self.root.to_str().unwrap()
    }

    fn segment(&self, topic: &str) -> PathBuf {
        PathBuf::from(format!("/dev/shm/zerocast.{}.{topic}", self.name))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        for t in ["trade_events", "account_events", "market_l2"] {
            let _ = std::fs::remove_file(self.segment(t));
            let _ = std::fs::remove_file(format!("/dev/shm/zerocast-acks.{}.{t}", self.name));
        }
    }
}

/// Spawns `c` with piped stdout and stderr; the child is killed and reaped
/// when the returned guard drops (a failed assertion leaves no process).
fn spawn(mut c: Command) -> ChildGuard {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zerocast")
        .into()
}

/// Waits for `child` for at most 20 s; a child still running then is
/// killed and the test fails (a hang is a bug here).
fn finish(child: impl Into<ChildGuard>, what: &[&str]) -> Output {
    let mut child = child.into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "zerocast {what:?} did not exit within 20 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sigterm(child: &Child) {
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

/// Waits until `cond` holds (20 s at most).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `n` live subscribers are registered on `topic` of `ns`.
fn wait_for_subscribers(ns: &Ns, topic: &str, n: usize) {
    wait_until("subscribers", || {
        let out = ns.cmd(&["stat"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .skip_while(|l| !l.starts_with(&format!("{topic}:")))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter(|l| l.contains("subscriber") && l.contains("alive"))
            .count()
            >= n
    });
}

/// A log of `trade_events` holding sequences `seqs` in small segments.
fn write_wal(dir: &Path, seqs: std::ops::Range<u64>) {
    let (mut wal, _) = Wal::open(
        dir,
        "trade_events",
        WalOptions {
            segment_size: 16 << 10,
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .unwrap();
    let mut feed = Feed::new(4, 1);
    let mut buf = FrameBuf::default();
    for seq in seqs {
        let w = encode(&feed.trade(), 1, seq, &mut buf.0).unwrap();
        wal.append(seq, 0, &buf.bytes()[..w * 8]).unwrap();
    }
    wal.sync().unwrap();
}

// ---- item 1: the demo and other namespaces ----

/// `ZEROCAST_NAMESPACE` pointing at a namespace with a live subscriber: the
/// demo runs in its own namespace, publishes nothing there and removes
/// nothing there.
#[test]
fn regression_demo_ignores_zerocast_namespace() {
    let ns = Ns::new("demo-env");
    let mut live = ns.spawn(&["sub", "--topic", "trade_events"]);
    wait_for_subscribers(&ns, "trade_events", 1);
    let mut demo = Command::new(BIN);
    demo.env_remove("ZEROCAST_NAMESPACE")
        .env("ZEROCAST_NAMESPACE", &ns.name)
        .env("ZEROCAST_LOG", "warn")
        .args(["demo", "--duration", "0.5", "--rate", "2000"]);
    let out = finish(spawn(demo), &["demo"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        ns.segment("trade_events").exists(),
        "the demo removed the live namespace's segment: {text}"
    );
    assert!(
        !text.contains(&ns.name),
        "the demo used {}: {text}",
        ns.name
    );
    assert!(text.contains("namespace demo-"), "{text}");
    sigterm(&live);
    let _ = live.wait();
    let mut got = String::new();
    std::io::Read::read_to_string(live.stdout.as_mut().unwrap(), &mut got).unwrap();
    assert!(
        got.is_empty(),
        "the live subscriber received demo frames: {got}"
    );
}

/// `--namespace` given to the demo is used, but a segment a live process
/// still uses is left in place (and the demo says so).
#[test]
fn regression_demo_keeps_segments_with_live_users() {
    let ns = Ns::new("demo-live");
    let mut live = ns.spawn(&["sub", "--topic", "account_events"]);
    wait_for_subscribers(&ns, "account_events", 1);
    let out = ns.run(&["demo", "--duration", "0.5", "--rate", "2000"]);
    let text = stdout(&out);
    sigterm(&live);
    let _ = live.wait();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains(&format!("namespace {}", ns.name)), "{text}");
    assert!(
        ns.segment("account_events").exists(),
        "removed a segment with a live subscriber: {text}"
    );
    assert!(!ns.segment("trade_events").exists(), "{text}");
    assert!(
        text.contains("left") && text.contains("account_events"),
        "the demo does not say what it left: {text}"
    );
    assert!(
        stderr(&out).contains("account_events already has 1 live users"),
        "no warning before publishing into a used topic: {}",
        stderr(&out)
    );
}

// ---- item 2: one recorder per WAL directory ----

/// Two recorders on one WAL directory (even from two namespaces): the
/// second is refused, naming the first's pid, and the log stays whole.
#[test]
fn regression_second_recorder_is_refused_naming_holder() {
    let ns = Ns::new("rec-lock");
    let other = Ns::new("rec-lock2");
    let first = ns.spawn(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    let dir = ns.root.join("trade_events");
    wait_until("the first recorder's log", || {
        list_segments(&dir).is_ok_and(|s| !s.is_empty())
    });
    let out = other.run(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    sigterm(&first);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!("pid {}", first_pid(&dir))) && msg.contains("locked"),
        "{msg}"
    );
    // Free again once the first is gone.
    let again = ns.spawn(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    wait_until("the lock file to name the new recorder", || {
        std::fs::read_to_string(dir.join(".lock")).is_ok_and(|s| s.trim() == again.id().to_string())
    });
    sigterm(&again);
    assert!(again.wait_with_output().unwrap().status.success());
}

fn first_pid(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".lock"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

// ---- item 3: follow --name ----

#[test]
fn regression_follow_name_cannot_leave_the_wal_directory() {
    let ns = Ns::new("follow-name");
    let outside = ns.root.join("evil.ckpt");
    for name in ["../../evil", "/tmp/zc-evil", "a b", ""] {
        let out = ns.run(&[
            "follow",
            "--topic",
            "trade_events",
            "--wal",
            ns.wal(),
            "--name",
            name,
            "--until",
            "0",
        ]);
        let msg = stderr(&out);
        // 2: a bad value on the command line.
        assert_eq!(out.status.code(), Some(2), "{name}: {msg}");
        assert!(msg.contains("--name"), "{name}: {msg}");
    }
    assert!(!outside.exists());
    assert!(
        !ns.root.join("trade_events").exists(),
        "follow wrote before checking its name"
    );
}

// ---- item 4: replay says when it cannot give what was asked ----

#[test]
fn regression_replay_unknown_topic_is_an_error() {
    let ns = Ns::new("replay-topic");
    let out = ns.run(&["replay", "--topic", "no_such", "--wal", ns.wal()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no_such"), "{}", stderr(&out));
}

#[test]
fn regression_replay_missing_or_empty_wal_is_an_error() {
    let ns = Ns::new("replay-empty");
    let out = ns.run(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no WAL"), "{}", stderr(&out));
    std::fs::create_dir_all(ns.root.join("trade_events")).unwrap();
    let out = ns.run(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no segment"), "{}", stderr(&out));
}

#[test]
fn regression_replay_from_after_to_is_an_error() {
    let ns = Ns::new("replay-range");
    write_wal(&ns.root.join("trade_events"), 0..20);
    let out = ns.run(&[
        "replay",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--from",
        "10",
        "--to",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--from 10"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn regression_replay_gap_warns_with_range_and_exits_nonzero() {
    let ns = Ns::new("replay-gap");
    let dir = ns.root.join("trade_events");
    write_wal(&dir, 0..500);
    let segments = list_segments(&dir).unwrap();
    std::fs::remove_file(&segments[2].path).unwrap();
    let (from, to) = (segments[2].first_seq, segments[3].first_seq - 1);
    let out = ns.run(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains(&format!("{from} to {to}")), "{msg}");
    assert!(msg.contains("warning"), "{msg}");
    // Everything else was still printed.
    assert_eq!(
        stdout(&out).lines().count() as u64,
        500 - (to - from + 1) + 1
    );
    // A range wholly before the hole is complete.
    let out = ns.run(&[
        "replay",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--to",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn regression_replay_log_ending_before_to_warns_and_exits_nonzero() {
    let ns = Ns::new("replay-short");
    let dir = ns.root.join("trade_events");
    write_wal(&dir, 0..50);
    // Tear the newest segment's tail: its last record loses its end.
    let last = list_segments(&dir).unwrap().pop().unwrap().path;
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    let len = f.metadata().unwrap().len();
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    f.set_len(end - 3).unwrap();
    f.set_len(len).unwrap();
    let args = |to: &'static str| {
        [
            "replay",
            "--topic",
            "trade_events",
            "--wal",
            ns.wal(),
            "--to",
            to,
        ]
    };
    let out = ns.run(&args("60"));
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains("warning") && msg.contains(" to 60"), "{msg}");
    let out = ns.run(&args("10"));
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---- item 9: bad values are refused before any work ----

/// `args` exits with `code` (2: a bad value on the command line, 1: a
/// value bad for this topic) and a message naming `flag`.
fn refused(ns: &Ns, args: &[&str], flag: &str, code: i32) {
    let out = ns.run(args);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {msg}");
    assert!(msg.contains(flag), "{args:?}: {msg}");
    assert!(!msg.contains("panicked"), "{args:?}: {msg}");
    assert!(
        msg.starts_with("zerocast: error: ") && msg.lines().count() == 1,
        "{args:?}: not one error line: {msg}"
    );
}

#[test]
fn regression_pub_refuses_bad_rate_batch_and_count() {
    let ns = Ns::new("pub-bad");
    let base = ["pub", "--topic", "trade_events", "--count", "10"];
    for rate in [
        "--rate=0",
        "--rate=nan",
        "--rate=-5",
        "--rate=1e-9",
        "--rate=inf",
    ] {
        let args: Vec<&str> = base.iter().copied().chain([rate]).collect();
        refused(&ns, &args, "--rate", 2);
    }
    let args: Vec<&str> = base.iter().copied().chain(["--batch", "0"]).collect();
    refused(&ns, &args, "--batch", 2);
    // Larger than the ring: refused before the batch buffer is allocated.
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--batch", "100000000"])
        .collect();
    refused(&ns, &args, "--batch", 1);
    refused(
        &ns,
        &["pub", "--topic", "trade_events", "--count", "0"],
        "--count",
        2,
    );
    assert!(
        !ns.segment("trade_events").exists(),
        "work started before the values were checked"
    );
}

#[test]
fn regression_bad_durations_and_sizes_are_refused() {
    let ns = Ns::new("bad-values");
    refused(&ns, &["demo", "--duration=-1"], "--duration", 2);
    refused(&ns, &["demo", "--duration", "nan"], "--duration", 2);
    refused(
        &ns,
        &["sub", "--topic", "trade_events", "--timeout", "nan"],
        "--timeout",
        2,
    );
    refused(
        &ns,
        &["sub", "--topic", "trade_events", "--timeout=-1"],
        "--timeout",
        2,
    );
    let rec = ["record", "--topic", "trade_events", "--wal", ns.wal()];
    for (flag, v) in [
        ("--segment-size", "0"),
        ("--segment-size", "10"),
        ("--fsync", "0"),
    ] {
        let args: Vec<&str> = rec.iter().copied().chain([flag, v]).collect();
        refused(&ns, &args, flag, 2);
    }
    assert!(!ns.root.join("trade_events").exists());
    let out = ns.run(&[
        "replay",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--from",
        "99999999999999999999",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("out of range"), "{}", stderr(&out));
    refused(
        &ns,
        &[
            "sub",
            "--topic",
            "trade_events",
            "--from",
            "99999999999999999999",
        ],
        "out of range",
        2,
    );
}

// ---- issue 13 item 4: follow --out is synced before each checkpoint ----

/// The hook runs before each checkpoint is stored (the checkpoint file still
/// holds the one before), and a failing hook stores no checkpoint: so
/// `follow --out`, which syncs its file in the hook, never has a checkpoint
/// on disk that covers output still only in the page cache.
#[test]
fn regression_output_is_synced_before_the_checkpoint_covering_it() {
    use std::sync::{Arc, Mutex};
    use zerocast_runtime::resume::{CheckpointPolicy, Event, Resumable};
    use zerocast_runtime::wal::{Checkpoints, WalError};

    let ns = Ns::new("ckpt-hook");
    let dir = ns.root.join("trade_events");
    write_wal(&dir, 0..10);
    let mut config = zerocast_ipc::Config::default_topics();
    config.namespace = ns.name.clone();
    let bus = zerocast_ipc::Bus::new(config);
    let ckpt_dir = dir.join("checkpoints");
    let open = || {
        Resumable::open(
            &bus,
            "trade_events",
            &dir,
            &ckpt_dir,
            "hooked",
            CheckpointPolicy {
                every_events: 3,
                every: Duration::from_secs(3600),
            },
        )
        .unwrap()
    };
    /// (sequence the checkpoint will record, checkpoint on disk meanwhile)
    type Calls = Arc<Mutex<Vec<(u64, Option<u64>)>>>;
    let calls: Calls = Arc::default();
    let mut follower = open();
    let (seen, store) = (Arc::clone(&calls), Checkpoints::new(&ckpt_dir).unwrap());
    follower.before_checkpoint(move |seq| {
        seen.lock()
            .unwrap()
            .push((seq, store.load("hooked").unwrap()));
        Ok(())
    });
    follower
        .run(
            |e| match e {
                Event::Frame { seq: 9, .. } => std::ops::ControlFlow::Break(()),
                _ => std::ops::ControlFlow::Continue(()),
            },
            || false,
        )
        .unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        vec![(2, None), (5, Some(2)), (8, Some(5)), (9, Some(8))]
    );
    let store = Checkpoints::new(&ckpt_dir).unwrap();
    assert_eq!(store.load("hooked").unwrap(), Some(9));

    // A hook that fails (a failed sync) stores nothing.
    write_wal(&dir, 10..20);
    let mut follower = open();
    follower.before_checkpoint(|_| {
        Err(WalError::Io {
            path: "out".into(),
            action: "fdatasync output",
            source: std::io::Error::other("disk gone"),
        })
    });
    let err = follower
        .run(|_| std::ops::ControlFlow::Continue(()), || false)
        .unwrap_err();
    assert!(err.contains("fdatasync output"), "{err}");
    assert_eq!(store.load("hooked").unwrap(), Some(9));
}

/// An invalid `ZEROCAST_NAMESPACE` is refused by every command that uses it
/// (`stat` listed a namespace "../x"), before any file is touched.
#[test]
fn regression_invalid_zerocast_namespace_is_refused() {
    for ns in ["../x", "a b"] {
        let out = finish(
            spawn({
                let mut c = Command::new(BIN);
                c.env_remove("ZEROCAST_NAMESPACE")
                    .env("ZEROCAST_NAMESPACE", ns)
                    .arg("stat");
                c
            }),
            &["stat"],
        );
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{ns}: {msg}");
        assert!(msg.contains("ZEROCAST_NAMESPACE"), "{ns}: {msg}");
    }
}

/// After a machine crash the output's unsynced tail can read back as zeros
/// (a size that reached the disk before the data): the restart's cut keeps
/// only the increasing prefix up to the checkpoint, not zeros that happen
/// to be "at or before" it.
#[test]
fn regression_follow_out_cut_drops_a_zeroed_tail() {
    use zerocast_runtime::wal::Checkpoints;
    let ns = Ns::new("follow-zeros");
    let dir = ns.root.join("trade_events");
    write_wal(&dir, 0..10);
    Checkpoints::new(&dir.join("checkpoints"))
        .unwrap()
        .store("out", 5)
        .unwrap();
    let out_path = ns.root.join("out.bin");
    let mut bytes: Vec<u8> = (0u64..=5).flat_map(u64::to_le_bytes).collect();
    bytes.extend_from_slice(&[0; 24]);
    std::fs::write(&out_path, &bytes).unwrap();
    let out = ns.run(&[
        "follow",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--name",
        "out",
        "--until",
        "9",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<u64> = std::fs::read(&out_path)
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

/// Final review: a recorder SIGKILLed leaves an orphaned durable hold, which
/// `stat --remove-stale` keeps; the demo in that namespace counted only live
/// processes, so it published into the topic without a warning and then
/// removed the segment, hold included.
#[test]
fn regression_demo_keeps_a_segment_with_an_orphaned_durable_hold() {
    let ns = Ns::new("demo-durable");
    let mut rec = ns.spawn(&["record", "--topic", "account_events", "--wal", ns.wal()]);
    wait_for_subscribers(&ns, "account_events", 1);
    rec.kill().unwrap();
    rec.wait().unwrap();
    let stat = stdout(&ns.run(&["stat", "--remove-stale"]));
    assert!(
        ns.segment("account_events").exists(),
        "stat removed it: {stat}"
    );
    let out = ns.run(&["demo", "--duration", "0.3", "--rate", "200"]);
    let text = stdout(&out);
    assert!(
        ns.segment("account_events").exists(),
        "demo removed a segment holding an orphaned durable hold (stat kept it: {stat})\n{text}"
    );
}

// ---- issue 10 item 5: a segment of another size is refused ----

/// A config file of one `trade_events` topic of `size` in `ns.root`.
fn config_with_size(ns: &Ns, file: &str, size: &str) -> String {
    let path = ns.root.join(file);
    std::fs::write(
        &path,
        format!("[[topic]]\nname = \"trade_events\"\nsize = \"{size}\"\nkind = \"trade\"\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Regression: a segment created from a 1MB config was used silently by a
/// publisher whose config asked for 4MB (a ring a quarter of the size it
/// was sized for). It is now refused, naming both sizes, and the segment
/// is left as it was.
#[test]
fn regression_segment_of_another_size_is_refused_with_both_sizes() {
    let ns = Ns::new("size-mismatch");
    let small = config_with_size(&ns, "small.toml", "1MB");
    let big = config_with_size(&ns, "big.toml", "4MB");
    let out = ns.run(&[
        "--config",
        &small,
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::metadata(ns.segment("trade_events")).unwrap().len();
    for args in [
        vec![
            "--config",
            &big,
            "pub",
            "--topic",
            "trade_events",
            "--count",
            "3",
        ],
        vec![
            "--config",
            &big,
            "sub",
            "--topic",
            "trade_events",
            "--count",
            "1",
        ],
    ] {
        let out = ns.run(&args);
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {msg}");
        // Both shapes are named: the segment's 4096 slots and the config's 16384.
        assert!(
            msg.contains("4096 slots") && msg.contains("16384 slots"),
            "{args:?}: {msg}"
        );
        // And the two segment sizes in bytes.
        let asked = zerocast_ipc::segment::segment_size(16384, 20);
        assert!(
            msg.contains(&format!("({before} bytes)")) && msg.contains(&format!("({asked} bytes)")),
            "{msg}"
        );
    }
    assert_eq!(
        std::fs::metadata(ns.segment("trade_events")).unwrap().len(),
        before,
        "the segment was left as it was"
    );
    // The config it was made with still works.
    let out = ns.run(&[
        "--config",
        &small,
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---- issue 10 item 6: every command stops on SIGINT/SIGTERM with its summary ----

/// Regression: `replay` never looked at the signal flag, so Ctrl-C did
/// nothing until the whole log was printed. It now stops at the next
/// record, prints its summary saying it was stopped, and exits 0.
#[test]
fn regression_replay_stops_on_sigterm_with_its_summary() {
    use std::io::{BufRead, Read};
    let ns = Ns::new("replay-sig");
    let total = 20_000u64;
    write_wal(&ns.root.join("trade_events"), 0..total);
    let mut child = ns.spawn(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("0 "), "{first}");
    // The pipe is not read now, so replay is at most a pipe's worth (far
    // fewer than 20,000 lines) ahead when the signal arrives.
    sigterm(&child);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = finish(child, &["replay"]);
    let lines = 1 + rest.lines().count() as u64;
    let msg = stderr(&o);
    assert!(o.status.success(), "{msg}");
    assert!(lines < total, "replay ran to the end: {lines} lines");
    assert!(
        msg.contains(&format!("replayed {lines} frames")) && msg.contains("stopped by a signal"),
        "{msg}"
    );
}

/// Regression: Ctrl-C in a terminal sends SIGINT to the demo and its
/// subscriber processes at once; the children reported and exited before
/// the parent asked, the parent threw those reports away, and the demo
/// ended with "subscriber processes gave no final report". The children
/// now leave SIGINT to the parent, which stops them and prints the summary.
#[test]
fn regression_demo_summary_survives_sigint_to_the_process_group() {
    use std::io::{BufRead, Read};
    use std::os::unix::process::CommandExt;
    let ns = Ns::new("demo-int");
    let mut cmd = ns.cmd(&["demo", "--rate", "2000"]);
    // Its own process group, as a shell gives a foreground job.
    cmd.process_group(0);
    let mut child = spawn(cmd);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("zerocast demo:") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "demo ended early");
    }
    // SAFETY: kill has no memory-safety preconditions; the group is our
    // child's (its pid), not yet waited for.
    let rc = unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGINT) };
    assert_eq!(rc, 0);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = finish(child, &["demo"]);
    assert!(o.status.success(), "{rest}\n{}", stderr(&o));
    assert!(rest.contains("=== summary"), "{rest}");
    assert!(rest.contains("unexplained gaps: 0"), "{rest}");
    assert!(!ns.segment("trade_events").exists(), "{rest}");
}

// ---- issue 10 item 7: pub until stopped; giving up says how far it got ----

/// Regression: `pub` required `--count`. Without it, it now publishes until
/// SIGTERM, then prints its summary and exits 0.
#[test]
fn regression_pub_without_count_runs_until_stopped() {
    let ns = Ns::new("pub-forever");
    let mut child = ns.spawn(&["pub", "--topic", "trade_events", "--rate", "1000"]);
    wait_until("frames on the ring", || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("pub exited ({status}) before it was stopped: {err}");
        }
        let out = ns.cmd(&["stat"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .any(|l| l.starts_with("trade_events:") && !l.contains("head seq 0,"))
    });
    sigterm(&child);
    let o = finish(child, &["pub"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("published "), "{}", stdout(&o));
}

/// Regression: behind a gating subscriber that stopped reading, `pub` gave
/// up with "ring full" and no word of how many frames it had published.
/// The error now says how many it published (and up to which sequence)
/// and names the subscriber that is behind, with its pid.
#[test]
fn regression_pub_giving_up_says_what_it_published_and_who_is_behind() {
    let ns = Ns::new("pub-gated");
    let config = config_with_size(&ns, "small.toml", "128KiB");
    let sub = ns.spawn(&[
        "--config",
        &config,
        "sub",
        "--topic",
        "trade_events",
        "--gating",
        "--name",
        "risk",
    ]);
    wait_for_subscribers(&ns, "trade_events", 1);
    let sub_pid = sub.id();
    // SAFETY: stopping our own child process.
    unsafe { libc::kill(sub.id() as libc::pid_t, libc::SIGSTOP) };
    let o = ns.run(&[
        "--config",
        &config,
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "100000",
        "--gating-wait-ms",
        "50",
    ]);
    // SAFETY: resuming and stopping our own child process.
    unsafe { libc::kill(sub.id() as libc::pid_t, libc::SIGCONT) };
    sigterm(&sub);
    let _ = finish(sub, &["sub"]);
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(msg.contains("published 2"), "how many frames: {msg}");
    assert!(
        msg.contains("\"risk\"") && msg.contains(&format!("pid {sub_pid}")),
        "{msg}"
    );
}

// ---- issue 10 item 8: follow checkpoints every N events or T ms ----

/// Regression: `follow` checkpointed after every event by default (100k
/// frames of catch-up took 89 s). The default is now every 10,000 events
/// or 100 ms, whichever first; its summary says how many checkpoints it
/// stored, and the output still holds every sequence exactly once.
#[test]
fn regression_follow_default_checkpoints_every_n_events_or_t_ms() {
    let ns = Ns::new("follow-ckpt");
    let total = 20_000u64;
    write_wal(&ns.root.join("trade_events"), 0..total);
    let out_file = ns.root.join("out.bin");
    let until = (total - 1).to_string();
    let o = ns.run(&[
        "follow",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--name",
        "f",
        "--until",
        &until,
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let msg = stderr(&o);
    assert!(o.status.success(), "{msg}");
    let stored: u64 = msg
        .split(" checkpoints")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no checkpoint count in the summary: {msg}"));
    assert!(msg.contains(&format!("followed {total} events")), "{msg}");
    // One per 10,000 events, one per 100 ms of work: far fewer than one
    // per event.
    assert!((1..1000).contains(&stored), "{stored} checkpoints: {msg}");
    let data = std::fs::read(&out_file).unwrap();
    let seqs: Vec<u64> = data
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    let checkpoint =
        zerocast_runtime::wal::Checkpoints::new(&ns.root.join("trade_events/checkpoints"))
            .unwrap()
            .load("f")
            .unwrap();
    assert_eq!(checkpoint, Some(total - 1));
}

/// Runs `cmd` with stderr on a new pseudo-terminal; returns its exit status,
/// stdout and what it wrote to the terminal.
fn run_with_tty_stderr(mut cmd: Command) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the pointers given; the name,
    // termios and winsize pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened by openpty and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdout(Stdio::piped()).stderr(Stdio::from(slave));
    let child = cmd.spawn().unwrap();
    // Our copy of the terminal's slave side goes with the Command.
    drop(cmd);
    // The command's stderr closes when it exits: the master then reads EIO.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let out = finish(child, &["(on a terminal)"]);
    (out.status, stdout(&out), reader.join().unwrap())
}

/// A status line (`\r`) on a terminal, nothing of it when stderr is piped:
/// replay (stdout not a terminal) and pub.
#[test]
fn progress_shows_on_a_terminal_only() {
    let ns = Ns::new("progress");
    write_wal(&ns.root.join("trade_events"), 0..500);
    let replay = ["replay", "--topic", "trade_events", "--wal", ns.wal()];
    let (status, out, tty) = run_with_tty_stderr(ns.cmd(&replay));
    assert!(status.success(), "{tty}");
    assert_eq!(out.lines().count(), 500);
    assert!(
        tty.contains("\rreplay: ") || tty.contains("\r\x1b[Kreplay: "),
        "{tty:?}"
    );
    assert!(tty.contains("replayed 500 frames"), "{tty:?}");
    let piped = ns.run(&replay);
    assert!(piped.status.success());
    assert!(!stderr(&piped).contains('\r'), "{:?}", stderr(&piped));
    let publ = ["pub", "--topic", "trade_events", "--count", "3000"];
    let (status, _, tty) = run_with_tty_stderr(ns.cmd(&publ));
    assert!(status.success(), "{tty}");
    assert!(tty.contains("pub: "), "{tty:?}");
    let piped = ns.run(&publ);
    assert!(!stderr(&piped).contains('\r'), "{:?}", stderr(&piped));
}

// ---- issue 10 item 9: sizes take units everywhere; the namespace variable checked ----

/// Regression: `size = "1TB"` was "not a byte count" (the config's parser
/// knew only up to GB, the program's another copy). One parser now takes
/// TB too, and a size past the limit is refused naming the limit.
#[test]
fn regression_config_size_takes_units_and_huge_sizes_are_refused() {
    let ns = Ns::new("size-units");
    let huge = config_with_size(&ns, "huge.toml", "1TB");
    let o = ns.run(&["--config", &huge, "stat"]);
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(!msg.contains("not a byte count"), "{msg}");
    assert!(msg.contains("256GiB"), "the limit is named: {msg}");
    let ok = config_with_size(&ns, "ok.toml", "1 MiB");
    let o = ns.run(&["--config", &ok, "stat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The flags share the parser: TB is a unit there too.
    let o = ns.run(&[
        "record",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--retain-bytes",
        "1TB",
        "--segment-size",
        "2TB",
    ]);
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("--segment-size") && msg.contains("16GiB"),
        "{msg}"
    );
}

/// Regression: with `--config`, an invalid `ZEROCAST_NAMESPACE` was refused
/// as a "namespace" without naming the variable it came from.
#[test]
fn regression_zerocast_namespace_with_config_names_the_variable() {
    let ns = Ns::new("env-config");
    let config = config_with_size(&ns, "c.toml", "1MB");
    for bad in ["../x", "a b"] {
        let o = Command::new(BIN)
            .env("ZEROCAST_NAMESPACE", bad)
            .args(["--config", &config, "stat"])
            .output()
            .unwrap();
        let msg = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{msg}");
        assert!(
            msg.contains(&format!("ZEROCAST_NAMESPACE={bad:?}")),
            "{msg}"
        );
    }
}

// ---- issue 10 item 10: output for people ----

/// Regression: log lines carried ANSI colour codes into files and pipes,
/// `record`'s summary said `last sequence Some(2)` and `pub`'s `seq 0..=2`
/// (Rust's debug formatting).
#[test]
fn regression_no_colour_codes_or_debug_formatting_when_piped() {
    let ns = Ns::new("no-ansi");
    let mut rec = ns.cmd(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    rec.env("ZEROCAST_LOG", "info");
    let rec = spawn(rec);
    wait_for_subscribers(&ns, "trade_events", 1);
    let o = ns.run(&["pub", "--topic", "trade_events", "--count", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Ranges in words, not Rust's `0..=2`.
    assert!(stdout(&o).contains("(seq 0 to 2)"), "{}", stdout(&o));
    wait_until("the recorder to record 3 frames", || {
        let o = ns.run(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
        stdout(&o).lines().count() == 3
    });
    sigterm(&rec);
    let o = finish(rec, &["record"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{err}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
    assert!(err.contains("recording"), "{err}");
    assert!(!out.contains("Some(") && !out.contains("None"), "{out}");
    assert!(out.contains("last sequence 2"), "{out}");
}

/// Regression: a trade's price was printed with every digit of the f64
/// (`@ 697.3815784786989`) and a book's with four decimals. Prices now
/// have four decimals everywhere.
#[test]
fn regression_prices_have_one_precision() {
    let ns = Ns::new("prices");
    write_wal(&ns.root.join("trade_events"), 0..20);
    let o = ns.run(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for line in stdout(&o).lines() {
        let price = line
            .split(" @ ")
            .nth(1)
            .and_then(|p| p.split(' ').next())
            .unwrap();
        let decimals = price.split('.').nth(1).map_or(0, str::len);
        assert_eq!(decimals, 4, "{line}");
    }
}

/// Regression: `follow` without --json printed lost and missing sequences
/// as JSON objects among its text lines.
#[test]
fn regression_follow_text_mode_prints_text() {
    let ns = Ns::new("follow-text");
    let dir = ns.root.join("trade_events");
    write_wal(&dir, 0..500);
    let segments = list_segments(&dir).unwrap();
    std::fs::remove_file(&segments[2].path).unwrap();
    let (from, to) = (segments[2].first_seq, segments[3].first_seq - 1);
    let o = ns.run(&[
        "follow",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--name",
        "t",
        "--until",
        "499",
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains('{'), "JSON in text mode: {out}");
    assert!(out.contains(&format!("MISSING {from} to {to}")), "{out}");
}

/// Regression: `stat` said "last heartbeat - ago" for a publisher that has
/// sent none, and did not show iceoryx2 topics at all.
#[test]
fn regression_stat_says_never_and_shows_iceoryx2_topics() {
    let ns = Ns::new("stat-never");
    let config = ns.root.join("iox.toml");
    std::fs::write(
        &config,
        "[[topic]]\nname = \"trade_events\"\nsize = \"1MB\"\nkind = \"trade\"\n\
         [[topic]]\nname = \"books_iox\"\nsize = \"1MB\"\nkind = \"l2\"\ntransport = \"iceoryx2\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // One frame, then a wait of 1000 s: a live publisher without heartbeats.
    let publ = ns.spawn(&[
        "--config",
        config,
        "pub",
        "--topic",
        "trade_events",
        "--rate",
        "0.001",
        "--heartbeat-ms",
        "0",
    ]);
    let mut text = String::new();
    wait_until("the publisher in stat", || {
        let o = ns.cmd(&["--config", config, "stat"]).output().unwrap();
        text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.contains("  publisher 0:")
    });
    sigterm(&publ);
    let _ = finish(publ, &["pub"]);
    let line = text.lines().find(|l| l.contains("  publisher 0:")).unwrap();
    assert!(line.contains("last heartbeat never"), "{line}");
    assert!(
        text.contains("books_iox") && text.contains("iceoryx2"),
        "{text}"
    );
}

/// Regression: the demo's "received" counts included the heartbeats
/// without saying so (more received than published).
#[test]
fn regression_demo_says_received_counts_heartbeats() {
    let ns = Ns::new("demo-hb");
    let o = ns.run(&["demo", "--duration", "0.5", "--rate", "2000"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("heartbeats"), "{out}");
}

// ---- issue 10 item 11: permissions ----

/// A group of this machine other than root's: (name, gid).
fn some_group() -> (String, u32) {
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_owned();
            let gid = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .find(|(_, gid)| *gid != 0)
        .expect("a group other than root in /etc/group")
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// Regression: a segment was always 0600, so a process of another user
/// could never subscribe. A topic's `mode` and `group` are now applied when
/// its segment is created; the default stays 0600.
#[test]
fn regression_topic_mode_and_group_apply_to_the_segment() {
    use std::os::unix::fs::MetadataExt;
    let ns = Ns::new("perm");
    let (group, gid) = some_group();
    let config = ns.root.join("perm.toml");
    std::fs::write(
        &config,
        format!(
            "[[topic]]\nname = \"trade_events\"\nsize = \"1MB\"\nkind = \"trade\"\nmode = \"0660\"\ngroup = \"{group}\"\n\
             [[topic]]\nname = \"account_events\"\nsize = \"1MB\"\nkind = \"account\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for topic in ["trade_events", "account_events"] {
        let o = ns.run(&["--config", config, "pub", "--topic", topic, "--count", "1"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let shared = ns.segment("trade_events");
    assert_eq!(mode_of(&shared), 0o660);
    assert_eq!(std::fs::metadata(&shared).unwrap().gid(), gid);
    assert_eq!(mode_of(&ns.segment("account_events")), 0o600);
    // A group-shared segment is opened again (stat, another publisher).
    let o = ns.run(&[
        "--config",
        config,
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Bad `mode` or `group` values are refused, naming them, before any
/// segment is made.
#[test]
fn regression_bad_topic_mode_or_group_is_refused() {
    let ns = Ns::new("perm-bad");
    for (line, what) in [
        ("mode = \"0644\"", "0644"),
        ("mode = \"rw\"", "\"rw\""),
        ("mode = \"0666\"", "0666"),
        ("group = \"no-such-group-zc\"", "no-such-group-zc"),
    ] {
        let config = ns.root.join("bad.toml");
        std::fs::write(
            &config,
            format!("[[topic]]\nname = \"trade_events\"\nsize = \"1MB\"\n{line}\n"),
        )
        .unwrap();
        let o = ns.run(&[
            "--config",
            config.to_str().unwrap(),
            "pub",
            "--topic",
            "trade_events",
            "--count",
            "1",
        ]);
        let msg = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{line}: {msg}");
        assert!(msg.contains(what), "{line}: {msg}");
        assert!(!msg.contains("unknown field"), "{line}: {msg}");
        assert!(!ns.segment("trade_events").exists(), "{line}");
    }
}

/// Regression: WAL files and checkpoints took whatever mode the umask gave
/// (0644 under the usual 022: every user could read the log). WAL files
/// are now 0640 and checkpoints 0600.
#[test]
fn regression_wal_and_checkpoint_files_have_stated_modes() {
    let ns = Ns::new("wal-modes");
    let dir = ns.root.join("trade_events");
    write_wal(&dir, 0..10);
    let o = ns.run(&[
        "follow",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--name",
        "m",
        "--until",
        "9",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            assert_eq!(mode_of(&path), 0o640, "{}", path.display());
        }
    }
    assert_eq!(mode_of(&dir.join("checkpoints/m.ckpt")), 0o600);
}

// ---- the command reference in docs/operating.md matches --help ----

/// Every command (`### zerocast NAME`) and flag (`` `--flag` `` in its
/// table) of the reference is in the program's help.
#[test]
fn operating_reference_matches_help() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operating.md"))
        .unwrap();
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = stdout(&help);
    let mut commands = 0;
    let mut documented = Vec::new();
    for section in doc.split("\n### zerocast ").skip(1) {
        // `### zerocast bridge export`: a subcommand's flags are in its
        // own --help.
        let words: Vec<&str> = section.lines().next().unwrap().split_whitespace().collect();
        let name = words[0];
        if name == "bridge" && !cfg!(feature = "bridge") {
            // Built without the bridge: no such command.
            continue;
        }
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "`zerocast {name}` is not in --help:\n{help}"
        );
        let sub = Command::new(BIN)
            .args(&words)
            .arg("--help")
            .output()
            .unwrap();
        let sub = stdout(&sub);
        for flag in section
            .lines()
            .filter_map(|l| l.strip_prefix("| `--"))
            .filter_map(|l| l.split('`').next())
        {
            assert!(
                sub.contains(&format!("--{flag} ")) || sub.contains(&format!("--{flag}\n")),
                "`zerocast {name} --{flag}` is not in its --help:\n{sub}"
            );
        }
        // And the other way: every flag of the command's --help (but the
        // global ones and --help) is in the reference.
        for flag in sub
            .lines()
            .filter_map(|l| l.trim_start().split_once("--"))
            .map(|(_, rest)| rest.split([' ', '\n', ',']).next().unwrap_or(""))
            .filter(|f| !f.is_empty() && !["help", "config", "namespace", "version"].contains(f))
        {
            assert!(
                section.contains(&format!("| `--{flag}`")),
                "`zerocast {name} --{flag}` is in its --help but not in docs/operating.md"
            );
        }
        documented.push(name.to_owned());
        commands += 1;
    }
    assert!(commands >= 9, "{commands} commands in the reference");
    // Every command of --help is in the reference.
    let listed = help
        .split("Commands:")
        .nth(1)
        .and_then(|c| c.split("\n\n").next())
        .expect("a Commands: section in --help");
    for line in listed.lines() {
        let name = line.split_whitespace().next().unwrap_or("help");
        assert!(
            name == "help" || documented.iter().any(|d| d == name),
            "`zerocast {name}` is in --help but not in docs/operating.md"
        );
    }
    // The README's command summary names only commands and flags that exist.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut summary_lines = 0;
    for line in readme.lines().filter(|l| l.starts_with("zerocast ")) {
        let mut words = line.split_whitespace().skip(1);
        let first = words.next().unwrap();
        if first == "bridge" && !cfg!(feature = "bridge") {
            continue;
        }
        // A command with subcommands (`zerocast bridge export`): the flags
        // are the subcommand's.
        let name = match words.next() {
            Some(second) if first == "bridge" => format!("{first} {second}"),
            _ => first.to_owned(),
        };
        let sub = Command::new(BIN)
            .args(name.split(' ').chain(["--help"]))
            .output()
            .unwrap();
        assert!(
            sub.status.success(),
            "README names `zerocast {name}`: {line}"
        );
        let sub = stdout(&sub);
        for flag in line.split("--").skip(1) {
            let flag = flag
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap();
            assert!(
                sub.contains(&format!("--{flag} ")) || sub.contains(&format!("--{flag}\n")),
                "README's `{line}` names --{flag}, not in `zerocast {name} --help`"
            );
        }
        summary_lines += 1;
    }
    assert!(
        summary_lines >= 9,
        "{summary_lines} command lines in the README"
    );
}

/// Review finding: behind a gating subscriber that stopped reading, `pub
/// --gating-wait-ms 60000` ignored SIGINT for the whole minute (one wait
/// per publish). It now waits in slices and stops on the signal with its
/// summary and exit 0.
#[test]
fn regression_pub_waiting_behind_a_gating_subscriber_stops_on_sigint() {
    let ns = Ns::new("pub-gated-int");
    let config = config_with_size(&ns, "small.toml", "128KiB");
    let sub = ns.spawn(&[
        "--config",
        &config,
        "sub",
        "--topic",
        "trade_events",
        "--gating",
        "--name",
        "risk",
    ]);
    wait_for_subscribers(&ns, "trade_events", 1);
    // SAFETY: stopping our own child process.
    unsafe { libc::kill(sub.id() as libc::pid_t, libc::SIGSTOP) };
    let publisher = ns.spawn(&[
        "--config",
        &config,
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "100000",
        "--gating-wait-ms",
        "60000",
    ]);
    // Wait until the publisher has filled the ring and waits: head at the
    // ring's capacity (the stopped gating subscriber holds sequence 0).
    wait_until("the ring full behind the stopped subscriber", || {
        let out = ns.cmd(&["--config", &config, "stat"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some(line) = text.lines().find(|l| l.starts_with("trade_events:")) else {
            return false;
        };
        let num = |after: &str| -> Option<u64> {
            line.split(after)
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())?
                .parse()
                .ok()
        };
        let slots = line
            .split(" slots")
            .next()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        matches!((num("head seq "), slots), (Some(head), Some(slots)) if head >= slots)
    });
    let asked = std::time::Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(publisher.id() as libc::pid_t, libc::SIGINT) };
    let o = publisher.wait_with_output().unwrap();
    let took = asked.elapsed();
    // SAFETY: resuming our own child process.
    unsafe { libc::kill(sub.id() as libc::pid_t, libc::SIGCONT) };
    sigterm(&sub);
    let _ = finish(sub, &["sub"]);
    assert!(
        took < std::time::Duration::from_secs(10),
        "pub took {took:?} to stop on SIGINT"
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("published 2"), "summary: {out}");
}

// ---- review leftovers of issues 10 and 11 ----

/// A pid that no process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// The "last heartbeat" age of `trade_events`' publisher 0 in `stat`, in
/// seconds: `None` for "never" (or no publisher yet).
fn heartbeat_age(ns: &Ns) -> Option<f64> {
    let o = ns.cmd(&["stat"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text.lines().find(|l| l.contains("  publisher 0:"))?;
    line.split("last heartbeat ")
        .nth(1)?
        .strip_suffix("s ago")?
        .parse()
        .ok()
}

/// Review finding (issue 11): `zerocast pub` sent no heartbeats, so a
/// publisher slower than one frame per health interval read Degraded, then
/// Failed, in `zerocast health`. Idle, it now beats every --heartbeat-ms.
#[test]
fn regression_pub_sends_heartbeats_while_idle() {
    let ns = Ns::new("pub-heartbeat");
    // One frame, then a wait of 1000 s.
    let publ = ns.spawn(&["pub", "--topic", "trade_events", "--rate", "0.001"]);
    let started = Instant::now();
    let mut fresh = None;
    // Past one second of idling, the last heartbeat is still recent: the
    // publisher keeps beating (a single beat at the start would age).
    while started.elapsed() < Duration::from_secs(6) {
        let age = heartbeat_age(&ns);
        if started.elapsed() > Duration::from_millis(1200) && age.is_some_and(|a| a < 0.6) {
            fresh = age;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = ns.run(&["health", "--interval", "1000"]);
    sigterm(&publ);
    let o = finish(publ, &["pub"]);
    assert!(
        fresh.is_some(),
        "no recent heartbeat from an idle pub after 1.2 s: {:?}",
        heartbeat_age(&ns)
    );
    let table = stdout(&health);
    assert!(health.status.success(), "{table}\n{}", stderr(&health));
    assert!(
        !table.contains("Degraded") && !table.contains("Failed"),
        "{table}"
    );
    assert!(stdout(&o).contains("published 1 frames"), "{}", stdout(&o));
}

/// Review finding (issue 11): after a bus reset (the topic's segment
/// removed and created again, its sequences restarting at 0) a `follow`
/// resumed from its old checkpoint took the new bus's sequences for ones
/// it had processed: with --until at or below the checkpoint it exited 0
/// having written nothing; live it would wait past them. It now refuses,
/// naming the checkpoint and what changed.
#[test]
fn regression_follow_refuses_a_checkpoint_of_a_reset_bus() {
    let ns = Ns::new("follow-reset");
    // The bus whose frames the log holds (as a recorder would have kept
    // them): the checkpoint counts in its segment.
    let p = ns.run(&["pub", "--topic", "trade_events", "--count", "100"]);
    assert!(p.status.success(), "{}", stderr(&p));
    write_wal(&ns.root.join("trade_events"), 0..100);
    let out_file = ns.root.join("out.bin");
    let follow = |until: &str| {
        ns.run(&[
            "follow",
            "--topic",
            "trade_events",
            "--wal",
            ns.wal(),
            "--name",
            "f",
            "--until",
            until,
            "--out",
            out_file.to_str().unwrap(),
        ])
    };
    let o = follow("99");
    assert!(o.status.success(), "{}", stderr(&o));
    // The bus is reset: a new segment, sequences from 0 again.
    let _ = std::fs::remove_file(ns.segment("trade_events"));
    let _ = std::fs::remove_file(format!("/dev/shm/zerocast-acks.{}.trade_events", ns.name));
    let p = ns.run(&["pub", "--topic", "trade_events", "--count", "5"]);
    assert!(p.status.success(), "{}", stderr(&p));
    let o = follow("4");
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "resumed on a reset bus: {msg}");
    assert!(msg.contains("f.ckpt"), "the checkpoint is not named: {msg}");
    assert!(msg.contains("reset"), "{msg}");
    assert!(msg.contains("sequence 99"), "{msg}");
}

/// Review finding (issue 10): a demo that failed after its subscriber
/// processes started returned without stopping them, so their segments
/// stayed (in use) until `stat --remove-stale`. Here its feed cannot get a
/// publisher entry on market_l2 (ten live publishers hold the table).
#[test]
fn regression_demo_error_after_children_started_stops_them() {
    let ns = Ns::new("demo-fail");
    let holders: Vec<ChildGuard> = (0..10)
        .map(|i| {
            ns.spawn(&[
                "pub",
                "--topic",
                "market_l2",
                "--rate",
                "0.001",
                "--name",
                &format!("holder{i}"),
            ])
        })
        .collect();
    wait_until("ten publishers on market_l2", || {
        let out = ns.cmd(&["stat"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("  publisher 9:")
    });
    let out = ns.run(&[
        "demo",
        "--duration",
        "5",
        "--rate",
        "2000",
        "--gateway",
        "off",
    ]);
    for h in holders {
        sigterm(&h);
        let _ = finish(h, &["pub"]);
    }
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        !ns.segment("trade_events").exists(),
        "the demo's subscribers were still running when it removed its segments: {text}"
    );
}

/// Review finding (issue 10): a demo subscriber whose parent died before
/// the child's first `getppid()` was never told to stop. The parent's pid
/// now comes in the environment: a child whose parent is not that pid
/// stops at once with its final report.
#[test]
fn regression_demo_child_stops_if_its_parent_is_already_gone() {
    let ns = Ns::new("demo-orphan");
    let mut cmd = ns.cmd(&["demo-sub", "--topic", "trade_events", "--name", "orphan"]);
    cmd.env("ZEROCAST_DEMO_PARENT", dead_pid().to_string());
    let mut child = spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    assert!(exited, "an orphaned demo child kept running");
    assert!(stdout(&o).contains("\"final\":true"), "{}", stdout(&o));
}

/// Review finding (issue 10): `follow --out` created its output file
/// without syncing the directory, so a power loss could keep the
/// checkpoint and lose the file's entry. Seen from outside as the
/// directory being opened (to fsync it): inotify's IN_OPEN on the
/// directory itself.
#[test]
fn regression_follow_out_syncs_its_directory() {
    let ns = Ns::new("follow-dirsync");
    write_wal(&ns.root.join("trade_events"), 0..10);
    let dir = ns.root.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let c_dir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: plain syscalls; the fd is closed below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is an inotify fd and c_dir a valid C string.
    let wd = unsafe { libc::inotify_add_watch(fd, c_dir.as_ptr(), libc::IN_OPEN) };
    assert!(wd >= 0);
    let out_file = dir.join("out.bin");
    let o = ns.run(&[
        "follow",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--name",
        "d",
        "--until",
        "9",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut buf = [0u8; 4096];
    let mut dir_opened = false;
    loop {
        // SAFETY: reading into a buffer of the length given.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut at = 0usize;
        while at + 16 <= n as usize {
            let word = |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
            let (mask, len) = (word(4), word(12) as usize);
            // No name: the event is about the watched directory itself.
            if mask & libc::IN_ISDIR != 0 && len == 0 {
                dir_opened = true;
            }
            at += 16 + len;
        }
    }
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    assert!(
        dir_opened,
        "follow --out never opened the output's directory to sync it"
    );
    assert_eq!(std::fs::metadata(&out_file).unwrap().len(), 80);
}

/// Review finding (issue 10): `replay --from 9000 --to 5` exited 1, the
/// status of a failed run; a bad combination of values on the command line
/// exits 2 like clap's own errors (nothing was done).
#[test]
fn regression_replay_from_after_to_exits_2() {
    let ns = Ns::new("replay-range2");
    write_wal(&ns.root.join("trade_events"), 0..20);
    let args = [
        "replay",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--from",
        "9000",
        "--to",
        "5",
    ];
    refused(&ns, &args, "--from 9000", 2);
}

/// Review finding (issue 10): the status line wrote `\x1b[K` to a terminal
/// that says it has no escape codes (TERM=dumb), and log lines were
/// coloured with NO_COLOR set.
#[test]
fn regression_terminal_output_obeys_term_dumb_and_no_color() {
    let ns = Ns::new("term-dumb");
    write_wal(&ns.root.join("trade_events"), 0..500);
    let mut cmd = ns.cmd(&["replay", "--topic", "trade_events", "--wal", ns.wal()]);
    cmd.env("TERM", "dumb");
    let (status, _, tty) = run_with_tty_stderr(cmd);
    assert!(status.success(), "{tty}");
    assert!(tty.contains("\rreplay: "), "no status line: {tty:?}");
    assert!(
        !tty.contains('\x1b'),
        "escape codes with TERM=dumb: {tty:?}"
    );
    // A log line (`record` says where it starts, at INFO) on a terminal,
    // with NO_COLOR: no colour codes.
    let mut cmd = ns.cmd(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    cmd.env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env("ZEROCAST_LOG", "info");
    let tty = tty_stderr_until(cmd, "recording after");
    assert!(tty.contains("INFO"), "{tty:?}");
    assert!(!tty.contains('\x1b'), "colour with NO_COLOR: {tty:?}");
}

/// Runs `cmd` with stderr on a new pseudo-terminal until that shows
/// `marker`, then stops it with SIGTERM; returns what it wrote there.
fn tty_stderr_until(mut cmd: Command, marker: &str) -> String {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: as in `run_with_tty_stderr`.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened by openpty and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdout(Stdio::piped()).stderr(Stdio::from(slave));
    let child = cmd.spawn().unwrap();
    drop(cmd);
    let text = Arc::new(Mutex::new(String::new()));
    let shared = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            shared
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text.lock().unwrap().contains(marker) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&child);
    let _ = finish(child, &["(on a terminal)"]);
    reader.join().unwrap();
    let t = text.lock().unwrap().clone();
    t
}

/// Review finding (issue 10): a SIGKILLed demo left its `demo-<pid>`
/// segments (~65 MB) until `stat --remove-stale`. The next demo removes
/// the segments of dead demos, and says so.
#[test]
fn regression_demo_removes_segments_of_killed_demos() {
    let ns = Ns::new("demo-clean");
    // Another test's demo, running in parallel, may remove the dead
    // segment first (and name it in its own output): then try again.
    for attempt in 1..=3 {
        let dead = format!("demo-{}", dead_pid());
        let seg = PathBuf::from(format!("/dev/shm/zerocast.{dead}.trade_events"));
        // A segment of a demo that is gone: its creator exited, nobody uses it.
        let mut c = Command::new(BIN);
        c.env_remove("ZEROCAST_NAMESPACE")
            .env("ZEROCAST_LOG", "warn")
            .args([
                "--namespace",
                &dead,
                "pub",
                "--topic",
                "trade_events",
                "--count",
                "1",
            ]);
        let o = finish(spawn(c), &["pub"]);
        assert!(o.status.success(), "{}", stderr(&o));
        if !seg.exists() {
            // Removed already by a demo of another test running in
            // parallel (the segment's creator has exited: to any demo it
            // is a dead demo's).
            eprintln!("attempt {attempt}: {dead} was removed before this test's demo ran");
            continue;
        }
        let out = short_demo(&ns);
        let existed = seg.exists();
        let _ = std::fs::remove_file(&seg);
        let text = stdout(&out);
        assert!(out.status.success(), "{text}\n{}", stderr(&out));
        assert!(!existed, "the dead demo's segment is still there: {text}");
        if text.contains(&dead) {
            return;
        }
        eprintln!("attempt {attempt}: {dead} was removed by another demo first");
    }
    panic!("the demo never said which dead demo's segments it removed");
}

/// A 0.3 s demo in `ns`, without its gateway.
fn short_demo(ns: &Ns) -> std::process::Output {
    ns.run(&[
        "demo",
        "--duration",
        "0.3",
        "--rate",
        "2000",
        "--gateway",
        "off",
    ])
}

/// Review finding: a demo removed a killed demo's segments, ack channels
/// and half-built files but not its counters table, so every SIGKILLed
/// demo left `zerocast.demo-<pid>.@counters` in /dev/shm.
#[test]
fn regression_demo_removes_the_counters_table_of_killed_demos() {
    let ns = Ns::new("demo-ctr");
    let dead = format!("demo-{}", dead_pid());
    let config = zerocast_ipc::config::Config {
        namespace: dead.clone(),
        topics: Vec::new(),
    };
    let path = zerocast_ipc::counters::counters_path(&config);
    // A table nobody uses any more (claimed by no live process).
    drop(zerocast_ipc::counters::CountersTable::open_or_create(&path).unwrap());
    if !path.exists() {
        // A demo of another test running in parallel removed it already:
        // the behaviour under test, seen from there (its table was a dead
        // demo's to it too). Nothing left here to check.
        eprintln!("{dead}'s counters table was removed by another test's demo first");
        return;
    }
    let out = short_demo(&ns);
    let existed = path.exists();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !existed,
        "the dead demo's counters table is still there: {}",
        stdout(&out)
    );
}

/// Review finding (of the checkpoint binding): `follow` bound its
/// checkpoint by creating the topic's segment when none existed, so a
/// follow that only reads the log (`--until` within it; a WAL copied to
/// another machine, a bus that is down) left a segment of the topic's
/// size in /dev/shm that nobody removed, and failed where /dev/shm could
/// not take it. A follow that never joins the bus creates no segment.
#[test]
fn regression_follow_of_the_log_alone_creates_no_segment() {
    let ns = Ns::new("follow-walonly");
    write_wal(&ns.root.join("trade_events"), 0..10);
    let out_file = ns.root.join("out.bin");
    let follow = |until: &str| {
        ns.run(&[
            "follow",
            "--topic",
            "trade_events",
            "--wal",
            ns.wal(),
            "--name",
            "w",
            "--until",
            until,
            "--out",
            out_file.to_str().unwrap(),
        ])
    };
    let o = follow("9");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&out_file).unwrap().len(), 80);
    assert!(
        !ns.segment("trade_events").exists(),
        "a follow of the log alone created the topic's segment"
    );
    // Resumed at its checkpoint, still within the log: nothing created.
    let o = follow("9");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!ns.segment("trade_events").exists());
}

/// Publishes `n` trade frames with `zerocast pub`.
fn publish_trades(ns: &Ns, n: &str) {
    let o = ns.run(&["pub", "--topic", "trade_events", "--count", n]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// The arguments of `zerocast follow` of trade_events under the name `f`,
/// in `ns`'s WAL, until `until`.
fn follow_f_until<'a>(ns: &'a Ns, until: &'a str) -> [&'a str; 9] {
    [
        "follow",
        "--topic",
        "trade_events",
        "--wal",
        ns.wal(),
        "--name",
        "f",
        "--until",
        until,
    ]
}

/// After a bus reset, a follower whose checkpoint counts in the old bus
/// could not read the rest of the old log under its own name, even with an
/// `--until` inside the log (it never joins the bus): its checkpoint was
/// held against the new bus's segment and refused. A follow that ends
/// within the log now holds it against the segment the log was recorded
/// from, and reads the rest.
#[test]
fn regression_a_follower_could_not_finish_the_old_log_after_a_reset() {
    let ns = Ns::new("follow-old-log");
    let dir = ns.root.join("trade_events");
    let logged_up_to = |seq| zerocast_runtime::checkpoint_segment::log_reaches(&dir, seq);
    let publish = |n: &str| publish_trades(&ns, n);
    let follow = |until: &str| ns.spawn(&follow_f_until(&ns, until));
    let rec = ns.spawn(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    wait_for_subscribers(&ns, "trade_events", 1);
    publish("5");
    wait_until("5 frames logged", || logged_up_to(4));
    // Past the log's end: it binds its checkpoint to this bus and joins it.
    let f = follow("9");
    wait_for_subscribers(&ns, "trade_events", 2);
    publish("15");
    let out = finish(f, &["follow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("20 frames logged", || logged_up_to(19));
    sigterm(&rec);
    assert!(finish(rec, &["record"]).status.success());
    // The reset: a new segment, its sequences from 0.
    std::fs::remove_file(ns.segment("trade_events")).unwrap();
    publish("3");
    let out = finish(follow("19"), &["follow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let seqs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(seqs.first(), Some(&"10"), "{}", stdout(&out));
    assert_eq!(seqs.last(), Some(&"19"), "{}", stdout(&out));
}

/// Review finding: after a bus reset whose old log was still in place, a
/// new follower bound its checkpoint to the new bus's segment, though it
/// read the old log first; stopped where it would join the new bus
/// (refused there), it checkpointed the old log's last sequence under
/// that binding, and once the old log files were gone, a restart took
/// the checkpoint for a position on the new bus: with `--until` below it,
/// exit 0 having printed nothing (live, it would have skipped the new
/// bus's first sequences). A new checkpoint is now bound to the segment
/// its log was recorded from, and so is one a run within the log left
/// unbound (the review of that fix: a first run with `--until` inside the
/// log stored no binding, and the next run bound its checkpoint to the
/// bus it found).
#[test]
fn regression_a_new_follower_of_an_old_log_bound_its_checkpoint_to_the_new_bus() {
    let ns = Ns::new("follow-new-old");
    let dir = ns.root.join("trade_events");
    let logged_up_to = |seq| zerocast_runtime::checkpoint_segment::log_reaches(&dir, seq);
    let publish = |n: &str| publish_trades(&ns, n);
    let follow = |until: &str| ns.run(&follow_f_until(&ns, until));
    let record = || ns.spawn(&["record", "--topic", "trade_events", "--wal", ns.wal()]);
    let rec = record();
    wait_for_subscribers(&ns, "trade_events", 1);
    publish("20");
    wait_until("20 frames logged", || logged_up_to(19));
    sigterm(&rec);
    assert!(finish(rec, &["record"]).status.success());
    // The follower's first run ends within the log (it never joins the
    // bus; its checkpoint counts in the log's segment all the same).
    let out = follow("10");
    assert!(out.status.success(), "{}", stderr(&out));
    // The reset: a new segment, its sequences from 0.
    std::fs::remove_file(ns.segment("trade_events")).unwrap();
    publish("3");
    // The follower goes on in the old log, then is refused at the new bus.
    let out = follow("25");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("reset"), "{}", stderr(&out));
    // The old log's files go (its checkpoints stay), and the new bus is
    // recorded into a new log.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::remove_file(path).unwrap();
        }
    }
    let rec = record();
    wait_until("the new bus's 3 frames logged", || logged_up_to(2));
    sigterm(&rec);
    assert!(finish(rec, &["record"]).status.success());
    let out = follow("2");
    let msg = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the old log's checkpoint was taken for a position on the new bus: {msg}\n{}",
        stdout(&out)
    );
    assert!(
        msg.contains("f.ckpt") && (msg.contains("reset") || msg.contains("another bus")),
        "{msg}"
    );
}

/// Review finding: `follow` and `batch` on an iceoryx2 topic (whose frames
/// count per publisher, so a position means nothing) made their files (the
/// checkpoint directory, the --out file, the sink) before the reader
/// refused the topic; they now refuse it first, naming the transport.
#[test]
fn regression_follow_and_batch_made_their_files_before_refusing_an_iceoryx2_topic() {
    let ns = Ns::new("iox-refuse");
    let config = ns.root.join("iox.toml");
    std::fs::write(
        &config,
        "[[topic]]\nname = \"books_iox\"\nsize = \"1MB\"\nkind = \"l2\"\ntransport = \"iceoryx2\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out_file = ns.root.join("follow.out");
    let o = ns.run(&[
        "--config",
        config,
        "follow",
        "--topic",
        "books_iox",
        "--wal",
        ns.wal(),
        "--name",
        "f",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("iceoryx2"), "{}", stderr(&o));
    assert!(!out_file.exists(), "follow made its --out file first");
    assert!(
        !ns.root.join("books_iox").exists(),
        "follow made its checkpoint directory first"
    );
    let db = ns.root.join("books.db");
    let o = ns.run(&[
        "--config",
        config,
        "batch",
        "--topic",
        "books_iox",
        "--sink",
        &format!("sqlite:{}", db.display()),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("iceoryx2"), "{}", stderr(&o));
    assert!(!db.exists(), "batch made its database first");
}
