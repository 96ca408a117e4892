//! `zerocast stat`'s library side: what `--remove-stale` does to segments
//! still in use.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use zerocast_ipc::{Bus, Config, ShmSubscriber, SubscriberOptions, TopicConfig, TopicKind};

#[test]
fn regression_remove_stale_reaps_dead_entries_of_a_live_segment() {
    let bus = Bus::new(Config {
        namespace: format!("st{}-reap", std::process::id()),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    // We created the segment and keep a publisher: it is in use.
    let _publisher = bus.publisher("trades").unwrap();
    let seg = bus.segment("trades").unwrap();
    let sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "ghost".into(),
            gating: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Its process dies without a word: the entry names a dead process.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let e = &seg.header().subscribers[0];
    let gating = e.gating.load(Ordering::Relaxed);
    assert_ne!(gating, 0);
    // Release: as a registration's owner store.
    e.pid.store(
        zerocast_ipc::layout::owner_word(dead_pid, 1),
        Ordering::Release,
    );
    std::mem::forget(sub);
    zerocast_runtime::stat::run(&bus, true).unwrap();
    assert_eq!(e.pid.load(Ordering::Acquire), 0, "the dead entry was left");
    assert_eq!(
        seg.ring().gating_position(gating as usize - 1),
        None,
        "the dead subscriber's gating hold was left"
    );
    bus.remove_segments();
}

/// Review finding 2: a tombstone left by a reaper that died is shown and
/// finished by `--remove-stale` (its gating hold released).
#[test]
fn regression_remove_stale_finishes_a_dead_reapers_tombstone() {
    let bus = Bus::new(Config {
        namespace: format!("st{}-tomb", std::process::id()),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    let _publisher = bus.publisher("trades").unwrap();
    let seg = bus.segment("trades").unwrap();
    let sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "victim".into(),
            gating: true,
            ..Default::default()
        },
    )
    .unwrap();
    let e = &seg.header().subscribers[0];
    let gating = e.gating.load(Ordering::Relaxed);
    assert_ne!(gating, 0);
    // Its reaper took the entry and died.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let taker = zerocast_ipc::layout::owner_word(dead_pid, 1);
    // Release: as a reaper's tombstone CAS.
    e.pid
        .store(zerocast_ipc::layout::tombstone(taker), Ordering::Release);
    std::mem::forget(sub);
    zerocast_runtime::stat::run(&bus, true).unwrap();
    assert_eq!(e.pid.load(Ordering::Acquire), 0, "the tombstone was left");
    assert_eq!(
        seg.ring().gating_position(gating as usize - 1),
        None,
        "the dead subscriber's gating hold was left"
    );
    bus.remove_segments();
}

/// `stat --remove-stale` called a segment stale when its creator and every
/// live user were gone, even while a killed recorder's durable hold was in
/// it: removing it would drop the hold and every frame in the ring that the
/// log does not have yet. Such a segment is kept until the hold is released.
#[test]
fn regression_remove_stale_keeps_a_segment_with_a_durable_hold() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let bin = env!("CARGO_BIN_EXE_zerocast");
    let ns = format!("st{}-durable", std::process::id());
    let wal = std::env::temp_dir().join(format!("{ns}-wal"));
    let _ = std::fs::remove_dir_all(&wal);
    let segment = std::path::PathBuf::from(format!("/dev/shm/zerocast.{ns}.trade_events"));
    let _ = std::fs::remove_file(&segment);
    let zerocast = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.env_remove("ZEROCAST_NAMESPACE")
            .env("ZEROCAST_LOG", "error")
            .args(["--namespace", &ns])
            .args(args);
        c
    };
    // The recorder creates the segment: it is its creator and its only user.
    // Killed and reaped however the test ends (a failing assert included).
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut recorder = Guard(
        zerocast(&["record", "--topic", "trade_events", "--wal"])
            .arg(&wal)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = zerocast(&["stat"]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("recorder-trade_events") {
            break;
        }
        assert!(Instant::now() < deadline, "the recorder never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    recorder.0.kill().unwrap();
    recorder.0.wait().unwrap();
    let out = zerocast(&["stat", "--remove-stale"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        segment.exists(),
        "a segment holding a durable hold was removed as stale:\n{text}"
    );
    assert!(text.contains("recorder-trade_events"), "{text}");
    // Released by name, the segment is stale and goes.
    let out = zerocast(&["stat", "--release-durable", "recorder-trade_events"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = zerocast(&["stat", "--remove-stale"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        !segment.exists(),
        "released, the segment is stale:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&wal);
}

/// A namespace of one topic for the half-built-file tests, and the pid of
/// a process that has exited (a dead creator's).
fn half_built_case(test: &str) -> (Bus, String, u32) {
    let ns = format!("st{}-{test}", std::process::id());
    let bus = Bus::new(Config {
        namespace: ns.clone(),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    (bus, ns, dead_pid)
}

/// A creator killed while building a segment leaves it under its temporary
/// name (`zerocast.<ns>.<topic>.init-<pid>-<n>`); nothing ever removed it, so
/// every such crash left a file in /dev/shm for good (the chaos test
/// produces them). `stat --remove-stale` removes those whose creator is gone
/// and leaves those of a live creator alone.
#[test]
fn regression_remove_stale_removes_half_built_segments_of_dead_creators() {
    let (bus, ns, dead_pid) = half_built_case("init");
    let dead = std::path::PathBuf::from(format!("/dev/shm/zerocast.{ns}.trades.init-{dead_pid}-0"));
    let live = std::path::PathBuf::from(format!(
        "/dev/shm/zerocast.{ns}.trades.init-{}-7",
        std::process::id()
    ));
    std::fs::write(&dead, b"half built").unwrap();
    std::fs::write(&live, b"being built").unwrap();
    zerocast_runtime::stat::run(&bus, true).unwrap();
    let dead_left = dead.exists();
    let live_left = live.exists();
    let _ = std::fs::remove_file(&dead);
    let _ = std::fs::remove_file(&live);
    assert!(!dead_left, "a dead creator's half-built segment was left");
    assert!(
        live_left,
        "a live creator's segment under construction was removed"
    );
}

/// Review of the pid-namespace check: `stat --remove-stale` judged a
/// half-built file's creator by the pid in its name alone, so a creator
/// of another pid namespace (whose pid reads as dead here) lost its file
/// mid-build; now a file whose creator holds its lock stays. Looking at
/// the lock must not hang on a FIFO given such a name (an open of a FIFO
/// waits for a writer), nor follow a link: those are nobody's half-built
/// files, removed as before.
#[test]
fn regression_remove_stale_removed_a_half_built_file_its_creator_held() {
    use std::os::fd::AsRawFd as _;
    let (bus, ns, dead_pid) = half_built_case("initlock");
    let name = |n: u32| {
        std::path::PathBuf::from(format!(
            "/dev/shm/zerocast.{ns}.trades.init-{dead_pid}-{n}-4026531999"
        ))
    };
    let (held, fifo, link, dead) = (name(1), name(2), name(3), name(4));
    std::fs::write(&held, b"being built elsewhere").unwrap();
    let holder = std::fs::File::open(&held).unwrap();
    // SAFETY: flock on a descriptor this test owns; no memory passed.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_SH) }, 0);
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink(&held, &link).unwrap();
    std::fs::write(&dead, b"half built").unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stat_bus = bus.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(zerocast_runtime::stat::run(&stat_bus, true).is_ok());
    });
    let finished = done_rx.recv_timeout(std::time::Duration::from_secs(30));
    let left = [&held, &fifo, &link, &dead].map(|p| p.symlink_metadata().is_ok());
    for p in [&held, &fifo, &link, &dead] {
        let _ = std::fs::remove_file(p);
    }
    assert_eq!(finished, Ok(true), "stat --remove-stale hung or failed");
    assert_eq!(
        left,
        [true, false, false, false],
        "held by its creator: kept; a FIFO, a link, an unheld file: removed"
    );
    drop(holder);
}

/// Final review: `stat --remove-stale` removed a stale segment but left its
/// ack channel, whose "acked up to" words then outlived the segment: a
/// recreated segment starts again at sequence 0, and every reliable publish
/// was confirmed at once by subscribers long gone.
#[test]
fn regression_remove_stale_removes_the_ack_channel_with_its_segment() {
    use std::process::Command;
    let ns = format!("st{}-acks", std::process::id());
    let bus = Bus::new(Config {
        namespace: ns.clone(),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    // A process that created the segment and is gone: the segment is stale.
    let out = Command::new(env!("CARGO_BIN_EXE_zerocast"))
        .env_remove("ZEROCAST_NAMESPACE")
        .env("ZEROCAST_LOG", "error")
        .args(["--namespace", &ns, "--config"])
        .arg({
            let path = std::env::temp_dir().join(format!("{ns}.toml"));
            std::fs::write(
                &path,
                "[[topic]]\nname = \"trades\"\nsize = 1048576\nkind = \"trade\"\n",
            )
            .unwrap();
            path
        })
        .args(["pub", "--topic", "trades", "--count", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = bus.acks("trades").unwrap();
    let ack_path = bus.config().ack_path("trades");
    drop(acks);
    assert!(ack_path.exists());
    zerocast_runtime::stat::run(&bus, true).unwrap();
    let segment_left = bus.config().segment_path("trades").exists();
    let acks_left = ack_path.exists();
    bus.remove_segments();
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{ns}.toml")));
    assert!(!segment_left, "the stale segment was left");
    assert!(!acks_left, "the stale segment's ack channel was left");
}

/// Review finding: `zerocast stat | head -1` panicked ("failed printing to
/// stdout: Broken pipe", exit 101). A closed stdout now ends `stat` the
/// way it ends other Unix listings: quietly, by SIGPIPE.
#[test]
fn regression_stat_into_a_closed_pipe_does_not_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let ns = format!("st{}-pipe", std::process::id());
    let bus = Bus::new(Config {
        namespace: ns.clone(),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    let _publisher = bus.publisher("trades").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zerocast"))
        .args(["stat", "--namespace", &ns])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before `stat` writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    bus.remove_segments();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

/// Task G: `stat --remove-stale` removed a stale segment but left the bridge
/// importer's origin record (`/dev/shm/zerocast-bridge.<ns>.<topic>`, and
/// the `.tmp` a killed importer leaves) behind in `/dev/shm` for good. It
/// now removes the records of topics whose segment is gone and says so;
/// the record of a topic whose segment is in use stays.
#[test]
fn regression_remove_stale_left_the_bridge_origin_record() {
    use std::process::Command;
    use zerocast_runtime::bridge_records::origin_record_path;
    let ns = format!("st{}-bridge", std::process::id());
    let config_path = std::env::temp_dir().join(format!("{ns}.toml"));
    std::fs::write(
        &config_path,
        "[[topic]]\nname = \"trades\"\nsize = 1048576\nkind = \"trade\"\n\
         [[topic]]\nname = \"kept\"\nsize = 1048576\nkind = \"trade\"\n",
    )
    .unwrap();
    let bus = Bus::new(Config {
        namespace: ns.clone(),
        topics: vec![
            TopicConfig::new("trades", 1 << 20, TopicKind::Trade),
            TopicConfig::new("kept", 1 << 20, TopicKind::Trade),
        ],
    });
    bus.remove_segments();
    let zerocast = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_zerocast"))
            .env_remove("ZEROCAST_NAMESPACE")
            .env("ZEROCAST_LOG", "error")
            .args(["--namespace", &ns, "--config"])
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap()
    };
    // A process that created `trades` and is gone: its segment is stale.
    let out = zerocast(&["pub", "--topic", "trades", "--count", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `kept` is in use (our publisher).
    let _publisher = bus.publisher("kept").unwrap();
    let record = origin_record_path(bus.config(), "trades");
    let mut tmp = record.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let kept = origin_record_path(bus.config(), "kept");
    for p in [&record, &tmp, &kept] {
        std::fs::write(p, "far=1-2-3 origin=4-5-6\n").unwrap();
    }
    let out = zerocast(&["stat", "--remove-stale"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let left = (record.exists(), tmp.exists(), kept.exists());
    let segment_left = bus.config().segment_path("trades").exists();
    for p in [&record, &tmp, &kept] {
        let _ = std::fs::remove_file(p);
    }
    bus.remove_segments();
    let _ = std::fs::remove_file(&config_path);
    assert!(out.status.success(), "{text}");
    assert!(!segment_left, "the stale segment was left:\n{text}");
    assert!(!left.0, "the stale topic's origin record was left:\n{text}");
    assert!(!left.1, "the stale topic's record .tmp was left:\n{text}");
    assert!(
        left.2,
        "the origin record of a topic in use was removed:\n{text}"
    );
    assert!(
        text.contains(&format!("{}", record.display())),
        "the removed record is not listed:\n{text}"
    );
}

/// `health` run from another pid namespace (a sidecar container sharing
/// /dev/shm but not the pid namespace) opened a segment no process mapped
/// the way a publisher does, and so took it over: it recorded its own
/// namespace, and while it held the segment (`health --watch` runs for
/// good), the topic's own processes, restarted in their namespace, were
/// refused. It must refuse instead, touch nothing, and say why. `stat`,
/// which lets go within milliseconds, still takes an unused segment over
/// to read it, and the topic's processes take it back.
#[test]
fn regression_health_of_another_pid_namespace_took_an_unused_segment_over() {
    use std::os::unix::fs::FileExt;
    let ours = zerocast_ipc::layout::pid_namespace();
    assert_ne!(ours, 0, "this test needs /proc/self/ns/pid");
    let bus = Bus::new(Config {
        namespace: format!("st{}-pidns", std::process::id()),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    drop(bus.publisher("trades").unwrap());
    let path = bus.config().segment_path("trades");
    // The segment of another namespace's topic, whose processes are all
    // gone for now (a restart): the header's namespace word.
    let at = std::mem::offset_of!(zerocast_ipc::layout::SegmentHeader, pid_namespace) as u64;
    let foreign = ours ^ 0x5a5a;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&foreign.to_le_bytes(), at).unwrap();
    let recorded = || {
        let mut word = [0u8; 8];
        file.read_exact_at(&mut word, at).unwrap();
        u64::from_le_bytes(word)
    };
    let mut monitor = zerocast_runtime::health::HealthMonitor::new(
        bus.clone(),
        zerocast_runtime::health::HealthOptions::default(),
    );
    // Nobody maps it: listed as idle, not as unreadable (not a failure).
    // Polled until so: a process that another test of this binary forks
    // holds a copy of every descriptor, our segment's locked one too,
    // until it execs (a failed CI run saw one: "a process holds it now").
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let report = loop {
        let report = monitor.poll(zerocast_ipc::layout::now_ns());
        assert_eq!(recorded(), foreign, "health took the segment over");
        if !report.idle_foreign.is_empty() || std::time::Instant::now() >= deadline {
            break report;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let idle = format!("{:?}", report.idle_foreign);
    assert!(
        idle.contains(&format!("pid:[{foreign}]")) && idle.contains("monitor"),
        "health does not say why it does not read the topic: {idle} {:?}",
        report.unreadable
    );
    assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);
    // While it runs, it holds nothing: the topic's own processes take the
    // segment over (here: this namespace's).
    let publisher = bus.publisher("trades").unwrap();
    assert_eq!(recorded(), ours);
    drop((publisher, monitor));
    // `stat` reads an unused foreign segment (taking it over while it
    // reads), and the next user takes it over again.
    file.write_all_at(&foreign.to_le_bytes(), at).unwrap();
    zerocast_runtime::stat::run(&bus, false).unwrap();
    assert_eq!(recorded(), ours, "stat did not read the unused segment");
    bus.remove_segments();
}

/// `stat --remove-stale` removed a stale segment (its creator gone, no live
/// entry) while a process mapped it without an entry of its own yet (a
/// process between opening a topic and registering in it, or a monitor):
/// that process went on with a file nobody else could open any more, and
/// the topic's next process made a new one, so what the first published
/// reached nobody, and nothing said so. A segment is removed only while no
/// process maps it (every process that maps one holds its lock).
#[test]
fn regression_remove_stale_removed_a_segment_a_process_maps() {
    use std::os::unix::fs::MetadataExt;
    let bin = env!("CARGO_BIN_EXE_zerocast");
    let ns = format!("st{}-mapped", std::process::id());
    let mut config = Config::default_topics();
    config.namespace = ns.clone();
    let bus = Bus::new(config);
    bus.remove_segments();
    // A process that has exited creates the segment: its creator is gone.
    let out = std::process::Command::new(bin)
        .env_remove("ZEROCAST_NAMESPACE")
        .env("ZEROCAST_LOG", "error")
        .args([
            "--namespace",
            &ns,
            "pub",
            "--topic",
            "trade_events",
            "--count",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = bus.config().segment_path("trade_events");
    // Mapped here, no entry: what stat judges by pid calls it stale.
    let seg = bus.open_segment("trade_events").unwrap();
    assert!(seg.is_stale());
    let ino = std::fs::metadata(&path).unwrap().ino();
    zerocast_runtime::stat::run(&bus, true).unwrap();
    assert_eq!(
        std::fs::metadata(&path).map(|m| m.ino()).ok(),
        Some(ino),
        "a segment a process maps was removed"
    );
    // Unmapped, it goes.
    drop(seg);
    assert!(
        removed_within_10s(&path, || zerocast_runtime::stat::run(&bus, true).unwrap()),
        "an unused stale segment was left"
    );
    bus.remove_segments();
}

/// Runs `remove` until `path` is gone, for up to 10 s: a process that
/// another test of this binary forks holds a copy of every descriptor (a
/// segment's locked one too) until it execs, so one look may find a file
/// in use that nothing of this test maps.
fn removed_within_10s(path: &std::path::Path, remove: impl Fn()) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        remove();
        if !path.exists() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// After an upgrade, a segment an older build made (another layout) kept
/// the topic from every process of the new build (their open fails on the
/// layout), and no `stat` could remove it: it only said it could not open
/// it, so the file had to be found and deleted by hand.
/// `--remove-other-layouts` now removes one that no process maps, of a
/// layout whose processes lock what they map (v6 on); one a process maps,
/// or of an older layout, stays, and a routine `--remove-stale` leaves it
/// (it may hold frames a killed recorder of that build had not logged).
#[test]
fn regression_remove_stale_could_not_remove_a_segment_of_another_layout() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    use zerocast_ipc::layout::{SegmentHeader, FIRST_LOCKED_LAYOUT, LAYOUT_VERSION};
    let bus = Bus::new(Config {
        namespace: format!("st{}-layout", std::process::id()),
        topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    let path = bus.config().segment_path("trades");
    let set_version = |v: u32| {
        drop(bus.segment("trades").unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(
                &v.to_ne_bytes(),
                std::mem::offset_of!(SegmentHeader, layout_version) as u64,
            )
            .unwrap();
    };
    set_version(LAYOUT_VERSION + 1);
    let err = bus.publisher("trades").unwrap_err().to_string();
    assert!(err.contains("--remove-other-layouts"), "{err}");
    let remove = || zerocast_runtime::stat::run_with(&bus, true, true).unwrap();
    // A process of that build maps it (holds its lock): kept.
    let other = std::fs::File::open(&path).unwrap();
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_SH) };
    assert_eq!(locked, 0);
    remove();
    assert!(path.exists(), "a segment a process maps was removed");
    drop(other);
    // A routine clean-up leaves it.
    zerocast_runtime::stat::run(&bus, true).unwrap();
    assert!(
        path.exists(),
        "--remove-stale removed another layout's segment"
    );
    assert!(
        removed_within_10s(&path, remove),
        "an unused segment of another layout was left"
    );
    // The topic is the new build's again.
    bus.publisher("trades").unwrap();
    bus.remove_segments();
    // A layout from before processes locked what they map: never removed.
    set_version(FIRST_LOCKED_LAYOUT - 1);
    remove();
    assert!(path.exists(), "a segment of an unlocked layout was removed");
    let err = bus.publisher("trades").unwrap_err().to_string();
    assert!(err.contains("delete the file"), "{err}");
    bus.remove_segments();
}
