//! The bus across real processes: the `zerocast` binary publishing and
//! subscribing, killed with SIGKILL, opening foreign segments, side by side in
//! two namespaces.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

#[path = "support/guard.rs"]
mod guard;
use guard::ChildGuard;

/// A unique namespace per test, with its segments removed at the end.
struct Ns {
    name: String,
    config: Option<PathBuf>,
}

impl Ns {
    fn new(test: &str) -> Self {
        Self {
            name: format!("pt{}-{test}", std::process::id()),
            config: None,
        }
    }

    /// A namespace whose `trade_events` topic is small (a ring of 64 slots).
    fn small(test: &str) -> Self {
        Self::with_topic(test, "")
    }

    /// [`small`](Self::small) with `extra` TOML lines in its topic.
    fn with_topic(test: &str, extra: &str) -> Self {
        let mut ns = Self::new(test);
        let path = std::env::temp_dir().join(format!("{}.toml", ns.name));
        std::fs::write(
            &path,
            format!("[[topic]]\nname = \"trade_events\"\nsize = 81920\nkind = \"trade\"\n{extra}"),
        )
        .unwrap();
        ns.config = Some(path);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("ZEROCAST_NAMESPACE");
        c.env("ZEROCAST_LOG", "warn");
        c.args(["--namespace", &self.name]);
        if let Some(cfg) = &self.config {
            c.arg("--config").arg(cfg);
        }
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run zerocast")
    }

    /// The child is killed and reaped when the guard drops (a failed
    /// assertion leaves no process).
    fn spawn(&self, args: &[&str]) -> ChildGuard {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zerocast")
            .into()
    }

    fn segment(&self, topic: &str) -> PathBuf {
        PathBuf::from(format!("/dev/shm/zerocast.{}.{topic}", self.name))
    }

    /// Waits until `n` subscribers are registered on `topic`.
    fn wait_for_subscribers(&self, topic: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(&["stat"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let count = text
                .lines()
                .skip_while(|l| !l.starts_with(&format!("{topic}:")))
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .filter(|l| l.contains("subscriber") && l.contains("alive"))
                .count();
            if count >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "subscribers never registered:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Every file of this namespace: segments, ack channels, the counters
        // table, and `.init-` files a creator killed mid-build left behind.
        let prefix = format!("zerocast.{}.", self.name);
        for e in std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if let Some(c) = &self.config {
            let _ = std::fs::remove_file(c);
        }
    }
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn wait_output(child: ChildGuard) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "zerocast failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn every_sequence_arrives_once_in_order_with_intact_payloads_in_several_processes() {
    let ns = Ns::new("fanout");
    let n = 5000u64;
    let count = n.to_string();
    let subs: Vec<ChildGuard> = (0..3)
        .map(|i| {
            let wait = ["block", "yield", "spin"][i];
            ns.spawn(&[
                "sub",
                "--topic",
                "trade_events",
                "--from",
                "oldest",
                "--count",
                &count,
                "--json",
                "--wait",
                wait,
                "--timeout",
                "30",
            ])
        })
        .collect();
    ns.wait_for_subscribers("trade_events", 3);
    let out = ns.run(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        &count,
        "--batch",
        "7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sub in subs {
        let frames = json_lines(&wait_output(sub).stdout);
        assert_eq!(frames.len() as u64, n);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f["seq"], i as u64, "out of order or missing at {i}");
            assert_eq!(f["kind"], "trade");
            // The feed numbers its trades from 1: an intact payload carries
            // the id that matches its position.
            assert_eq!(f["trade_id"], format!("T{:012}", i + 1));
            assert!(f["price"].as_f64().unwrap() > 0.0);
            assert!(f["direction"] == "buy" || f["direction"] == "sell");
        }
    }
}

#[test]
fn slow_subscriber_reports_the_exact_lag() {
    let ns = Ns::small("lag");
    let out = ns.run(&["pub", "--topic", "trade_events", "--count", "1000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A subscriber that wanted everything from 0 finds only the last ring's
    // worth: it is told exactly how many it missed, then gets the rest.
    let out = ns.run(&[
        "sub",
        "--topic",
        "trade_events",
        "--from",
        "0",
        "--count",
        "64",
        "--json",
        "--timeout",
        "10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["event"], "lagged");
    assert_eq!(lines[0]["count"], 1000 - 64);
    let seqs: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1000 - 64..1000).collect::<Vec<_>>());
}

#[test]
fn publisher_killed_between_claim_and_commit_is_a_gap_of_exactly_one() {
    let ns = Ns::new("pubkill");
    let sub = ns.spawn(&[
        "sub",
        "--topic",
        "trade_events",
        "--from",
        "oldest",
        "--count",
        "20",
        "--json",
        "--timeout",
        "30",
    ]);
    ns.wait_for_subscribers("trade_events", 1);
    let crashed = ns.run(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "100",
        "--crash-after",
        "10",
    ]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGKILL),
        "the publisher must die by SIGKILL"
    );
    let out = ns.run(&["pub", "--topic", "trade_events", "--count", "10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&wait_output(sub).stdout);
    let lost: Vec<_> = lines.iter().filter(|l| l["event"] == "lost").collect();
    assert_eq!(lost.len(), 1, "{lines:?}");
    assert_eq!(lost[0]["seq"], 10);
    let frames: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("kind").is_some())
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        frames,
        (0..10).chain(11..21).collect::<Vec<_>>(),
        "{lines:?}"
    );
}

#[test]
fn killed_gating_subscriber_releases_its_hold() {
    let ns = Ns::small("subkill");
    let mut sub = ns.spawn(&[
        "sub",
        "--topic",
        "trade_events",
        "--gating",
        "--from",
        "newest",
        "--timeout",
        "60",
    ]);
    ns.wait_for_subscribers("trade_events", 1);
    // Freeze it: it holds the ring, so a publisher that will not wait fails.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(sub.id() as i32, libc::SIGSTOP) };
    let out = ns.run(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "200",
        "--no-wait",
    ]);
    assert!(
        !out.status.success(),
        "publishing past a frozen gating subscriber must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ring full"), "{err}");
    // Kill it: its slot and its hold are reclaimed by the next publisher.
    sub.kill().unwrap();
    sub.wait().unwrap();
    let out = ns.run(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "200",
        "--no-wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stat = String::from_utf8_lossy(&ns.run(&["stat"]).stdout).into_owned();
    assert!(
        !stat.contains("subscriber 0"),
        "dead subscriber still listed:\n{stat}"
    );
}

#[test]
fn opening_a_segment_with_another_layout_names_both_layouts() {
    let ns = Ns::new("layout");
    let path = ns.segment("trade_events");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..8].copy_from_slice(b"ZEROCAST");
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    bytes[16..24].copy_from_slice(&0xdead_beef_u64.to_le_bytes());
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    // Ours and private, as a segment must be: only its layout is foreign.
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(&path, private).unwrap();
    let out = ns.run(&["sub", "--topic", "trade_events", "--count", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("layout v99 (hash 0x00000000deadbeef)"),
        "{err}"
    );
    let ours = format!(
        "this build's layout v{}",
        zerocast_ipc::layout::LAYOUT_VERSION
    );
    assert!(err.contains(&ours), "{err}");

    // Not zerocast's at all.
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let out = ns.run(&["pub", "--topic", "trade_events", "--count", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a zerocast segment"),
        "{err}"
    );
}

/// Frames published in namespace a reach a's subscriber and never b's.
/// Regression: b's subscriber waited only 2 s, so on a slow machine it
/// could time out before anything was published and the test passed
/// without showing anything. Now b's live subscriber must still be waiting
/// after a's frames arrived, and a fresh `--from oldest` reader in b, run
/// after the publish, must find nothing while the same reader in a finds
/// the frames.
#[test]
fn two_namespaces_side_by_side_do_not_see_each_other() {
    let a = Ns::new("nsa");
    let b = Ns::new("nsb");
    let sub_a = a.spawn(&[
        "sub",
        "--topic",
        "trade_events",
        "--from",
        "oldest",
        "--count",
        "50",
        "--json",
        "--timeout",
        "30",
    ]);
    let mut sub_b = b.spawn(&[
        "sub",
        "--topic",
        "trade_events",
        "--from",
        "oldest",
        "--count",
        "1",
        "--json",
        "--timeout",
        "60",
    ]);
    a.wait_for_subscribers("trade_events", 1);
    b.wait_for_subscribers("trade_events", 1);
    assert!(a
        .run(&["pub", "--topic", "trade_events", "--count", "50"])
        .status
        .success());
    assert_eq!(json_lines(&wait_output(sub_a).stdout).len(), 50);
    // The frames are in a's ring: a reader from the oldest finds them ...
    let probe = [
        "sub",
        "--topic",
        "trade_events",
        "--from",
        "oldest",
        "--count",
        "1",
        "--json",
        "--timeout",
        "1",
    ];
    let in_a = a.run(&probe);
    assert!(
        in_a.status.success(),
        "{}",
        String::from_utf8_lossy(&in_a.stderr)
    );
    assert_eq!(json_lines(&in_a.stdout).len(), 1);
    // ... and the same reader in b, run after the publish, finds nothing.
    let in_b = b.run(&probe);
    assert!(!in_b.status.success(), "namespace b must see nothing");
    assert!(json_lines(&in_b.stdout).is_empty());
    assert!(String::from_utf8_lossy(&in_b.stderr).contains("no frame on trade_events"));
    // b's subscriber, live all along, was still waiting for its first
    // frame (had it timed out, it would prove nothing).
    let early_exit = sub_b.try_wait().unwrap();
    let _ = sub_b.kill();
    let out_b = sub_b.wait_with_output().unwrap();
    assert!(
        early_exit.is_none(),
        "b's subscriber exited ({early_exit:?}) before a's frames were checked: {}{}",
        String::from_utf8_lossy(&out_b.stdout),
        String::from_utf8_lossy(&out_b.stderr)
    );
    assert!(json_lines(&out_b.stdout).is_empty(), "b received a frame");
}

#[test]
fn bad_input_gets_a_one_line_error_and_nonzero_exit() {
    let ns = Ns::new("badinput");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["pub", "--topic", "nope", "--count", "1"],
            "unknown topic \"nope\"",
        ),
        (
            vec!["sub", "--topic", "trade_events", "--from", "yesterday"],
            "--from \"yesterday\"",
        ),
        (
            vec!["--config", "/nonexistent/zc.toml", "stat"],
            "/nonexistent/zc.toml",
        ),
    ];
    for (args, expected) in cases {
        let out = ns.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("zerocast: error:") && err.contains(expected),
            "{args:?}: {err}"
        );
    }
    let small = std::env::temp_dir().join(format!("{}-small.toml", ns.name));
    std::fs::write(&small, "[[topic]]\nname = \"t\"\nsize = 1000\n").unwrap();
    let out = ns.run(&["--config", small.to_str().unwrap(), "stat"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("too small"), "{err}");
    let _ = std::fs::remove_file(small);
}

#[test]
fn stat_shows_a_dead_publisher_and_removes_stale_segments() {
    let ns = Ns::new("stale");
    let crashed = ns.run(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "10",
        "--crash-after",
        "5",
    ]);
    assert!(!crashed.status.success());
    let stat = String::from_utf8_lossy(&ns.run(&["stat"]).stdout).into_owned();
    assert!(stat.contains("DEAD") && stat.contains("STALE"), "{stat}");
    let out = ns.run(&["stat", "--remove-stale"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed stale segment"));
    assert!(!ns.segment("trade_events").exists());
}

#[test]
fn demo_runs_and_reports_zero_unexplained_gaps() {
    let ns = Ns::new("demo");
    let out = ns.run(&["demo", "--duration", "2", "--rate", "20000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("=== summary"), "{text}");
    assert!(text.contains("unexplained gaps: 0"), "{text}");
    assert!(
        !ns.segment("trade_events").exists(),
        "demo must remove its segments"
    );
}

/// A resumable subscriber killed with SIGKILL at random points, many times,
/// while a publisher runs and a recorder records: after the last restart its
/// output holds every sequence exactly once, in order.
#[test]
fn resumable_subscriber_killed_at_random_points_processes_every_sequence_exactly_once() {
    let ns = Ns::new("resume");
    let wal = std::env::temp_dir().join(format!("{}-wal", ns.name));
    let out = std::env::temp_dir().join(format!("{}-out.bin", ns.name));
    let _ = std::fs::remove_dir_all(&wal);
    let _ = std::fs::remove_file(&out);
    let wal_s = wal.to_str().unwrap().to_owned();
    let out_s = out.to_str().unwrap().to_owned();
    let mut recorder = ns.spawn(&[
        "record",
        "--topic",
        "trade_events",
        "--wal",
        &wal_s,
        "--fsync",
        "never",
    ]);
    ns.wait_for_subscribers("trade_events", 1);
    let total = 60_000u64;
    let total_s = total.to_string();
    let mut publisher = ns.spawn(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        &total_s,
        "--rate",
        "30000",
    ]);
    let follow = |until: Option<&str>| {
        let mut args = vec![
            "follow",
            "--topic",
            "trade_events",
            "--wal",
            &wal_s,
            "--name",
            "risk",
            "--out",
            &out_s,
        ];
        if let Some(u) = until {
            args.extend(["--until", u]);
        }
        ns.spawn(&args)
    };
    // Deterministic "random" kill points.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..10 {
        let mut f = follow(None);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(40 + x % 250));
        f.kill().unwrap();
        f.wait().unwrap();
    }
    assert!(publisher.wait().unwrap().success());
    let last = (total - 1).to_string();
    let finisher = follow(Some(&last));
    let done = wait_output(finisher);
    assert!(done.status.success());
    // SAFETY: signal to our own child.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGTERM) };
    recorder.wait().unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let seqs: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        seqs.len() as u64,
        total,
        "every sequence once (no loss, no duplicate)"
    );
    assert!(
        seqs.iter().enumerate().all(|(i, &s)| s == i as u64),
        "in order, each exactly once"
    );
    let _ = std::fs::remove_dir_all(&wal);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn record_then_replay_prints_what_was_published() {
    let ns = Ns::new("recreplay");
    let wal = std::env::temp_dir().join(format!("{}-wal", ns.name));
    let _ = std::fs::remove_dir_all(&wal);
    let wal_s = wal.to_str().unwrap().to_owned();
    let recorder = ns.spawn(&[
        "record",
        "--topic",
        "trade_events",
        "--wal",
        &wal_s,
        "--fsync",
        "always",
    ]);
    ns.wait_for_subscribers("trade_events", 1);
    assert!(ns
        .run(&["pub", "--topic", "trade_events", "--count", "500"])
        .status
        .success());
    // Wait until the recorder has all 500 in the log, then stop it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ns.run(&[
            "replay",
            "--wal",
            &wal_s,
            "--topic",
            "trade_events",
            "--json",
        ]);
        if out.status.success() && json_lines(&out.stdout).len() == 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the recorder never wrote all 500 frames"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signal to our own child.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGTERM) };
    let rec = recorder.wait_with_output().unwrap();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    assert!(String::from_utf8_lossy(&rec.stdout).contains("recorded 500 frames"));
    let out = ns.run(&[
        "replay",
        "--wal",
        &wal_s,
        "--topic",
        "trade_events",
        "--from",
        "100",
        "--to",
        "199",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 100);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], 100 + i as u64);
        assert_eq!(l["trade_id"], format!("T{:012}", 101 + i));
    }
    let _ = std::fs::remove_dir_all(&wal);
}

/// The log's records as JSON lines, once it holds at least `n`.
fn wal_lines(ns: &Ns, wal: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ns.run(&["replay", "--wal", wal, "--topic", "trade_events", "--json"]);
        if out.status.success() {
            let lines = json_lines(&out.stdout);
            if lines.len() >= n {
                return lines;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the recorder never wrote {n} records"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Regression (issue 9, item 1): a recorder killed with SIGKILL lost the
/// frames published while it was down, because the next process to attach
/// reclaimed its gating slot. Its hold is durable now: publishers wait for
/// it (here: fail, naming it), and the restarted recorder takes it over.
#[test]
fn regression_restarted_recorder_loses_nothing_published_while_it_was_down() {
    let ns = Ns::small("recrestart");
    let wal = std::env::temp_dir().join(format!("{}-wal", ns.name));
    let _ = std::fs::remove_dir_all(&wal);
    let wal_s = wal.to_str().unwrap().to_owned();
    let record = ["record", "--topic", "trade_events", "--wal", &wal_s];
    let mut recorder = ns.spawn(&record);
    ns.wait_for_subscribers("trade_events", 1);
    let publish = |count: &str| ns.run(&["pub", "--topic", "trade_events", "--count", count]);
    assert!(publish("30").status.success());
    wal_lines(&ns, &wal_s, 30);
    recorder.kill().unwrap();
    recorder.wait().unwrap();
    // A ring of 64 behind the dead recorder's hold at 30: 64 more fit, the
    // next one would overwrite sequence 30, which the log does not have.
    let out = publish("100");
    assert!(
        !out.status.success(),
        "published 100 frames over a dead recorder's hold"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recorder-trade_events"), "{err}");
    let recorder = ns.spawn(&record);
    let lines = wal_lines(&ns, &wal_s, 94);
    // SAFETY: signal to our own child.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGTERM) };
    wait_output(recorder);
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, (0..94).collect::<Vec<_>>(), "{lines:?}");
    assert!(
        lines.iter().all(|l| l.get("event").is_none()),
        "no lost or missing markers: {lines:?}"
    );
    let _ = std::fs::remove_dir_all(&wal);
}

/// `zerocast` in a new pid namespace (`unshare --pid --fork --mount-proc`,
/// inside a new user namespace where that needs one), as a container
/// sharing `/dev/shm` runs it; `None` if this machine cannot make one.
fn in_new_pid_namespace(ns: &Ns, args: &[&str]) -> Option<Output> {
    let pid_ns = ["--pid", "--fork", "--mount-proc"];
    let user_ns = ["--user", "--map-root-user"];
    let works = |prefix: &[&str]| {
        Command::new("unshare")
            .args(prefix)
            .args(pid_ns)
            .arg("true")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let prefix: &[&str] = if works(&[]) {
        &[]
    } else if works(&user_ns) {
        &user_ns
    } else {
        eprintln!("SKIPPED: `unshare --pid` fails here, as root and in a user namespace");
        return None;
    };
    let mut c = Command::new("unshare");
    c.args(prefix).args(pid_ns).arg(BIN);
    c.env_remove("ZEROCAST_NAMESPACE");
    c.env("ZEROCAST_LOG", "warn");
    c.args(["--namespace", &ns.name]);
    if let Some(cfg) = &ns.config {
        c.arg("--config").arg(cfg);
    }
    Some(c.args(args).output().expect("run unshare"))
}

/// A `zerocast pub` in another pid namespace, sharing `/dev/shm`, took a
/// live single-producer publisher for dead (its pid means another process
/// there, or none), took its entry over and published beside it by plain
/// store; the first publisher then found its sequence "declared lost by a
/// supervisor" and gave up. `stat --remove-stale` there removed the live
/// segment as stale. Now both are refused, naming the two namespaces,
/// until the publisher is gone; then the other namespace takes over.
#[test]
fn regression_a_publisher_in_another_pid_namespace_took_over_a_live_one() {
    let ns = Ns::with_topic("pidns", "producers = \"single\"\n");
    // Killed however the test ends (it publishes until stopped).
    let mut live = ns.spawn(&["pub", "--topic", "trade_events", "--rate", "2000"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&ns.run(&["stat"]).stdout).contains("publisher 0: pid") {
        assert!(Instant::now() < deadline, "the publisher never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(second) =
        in_new_pid_namespace(&ns, &["pub", "--topic", "trade_events", "--count", "1000"])
    else {
        return;
    };
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("pid namespace") && err.contains("pid:["),
        "a second publisher in another pid namespace: {} {err}",
        second.status
    );
    let stat = in_new_pid_namespace(&ns, &["stat", "--remove-stale"]).unwrap();
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(
        text.contains("cannot open") && text.contains("pid namespace"),
        "{text}"
    );
    assert!(ns.segment("trade_events").exists(), "removed: {text}");
    if let Some(status) = live.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(live.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("the live publisher stopped ({status}): {err}");
    }
    // Gone (SIGKILL: the kernel drops its lock): the other namespace takes
    // the topic over.
    drop(live);
    let second =
        in_new_pid_namespace(&ns, &["pub", "--topic", "trade_events", "--count", "10"]).unwrap();
    assert!(
        second.status.success(),
        "after the publisher died: {}",
        String::from_utf8_lossy(&second.stderr)
    );
}
