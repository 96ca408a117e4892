//! Regression tests of issue 9's hardening items for the ipc layer: the
//! segment trust boundary, liveness, reaping, durable gating holds.
//!
//! Tests that need a process to die run this test binary again as a child
//! (`child_role`, selected by the `ZC_ROLE` environment variable), so the
//! child is a real process that a real SIGKILL ends.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::layout;
use zerocast_ipc::{
    Bus, Config, Error, GatingPolicy, PublisherOptions, Received, Segment, ShmSubscriber, Start,
    SubscriberOptions, TopicConfig, TopicKind,
};

/// A namespace of one topic, `trades`, whose ring has 64 slots.
fn small_bus(test: &str) -> Bus {
    let words = TopicKind::Trade.slot_words();
    let size = zerocast_ipc::segment::segment_size(64, words);
    let bus = Bus::new(Config {
        namespace: format!("h{}-{test}", std::process::id()),
        topics: vec![TopicConfig::new("trades", size, TopicKind::Trade)],
    });
    bus.remove_segments();
    bus
}

fn trade(i: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id(&format!("T{i}")).unwrap(),
        order_id: id("O").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: i as f64,
        volume: 1.0,
        direction: Direction::Buy,
        timestamp: i as i64,
    }
}

/// A child process killed (SIGKILL, which ends a stopped one too) and
/// reaped when dropped, ignoring errors: a failed assertion leaves no child
/// behind (a parked `child_role` would otherwise run on after the test,
/// holding the test binary's stderr open). Derefs to the `Child`, so it is
/// still killed on purpose with `sigkill`; dropped after that, it sends no
/// signal (`kill` of a reaped child does nothing).
struct ChildGuard(Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs this test binary again as a child playing `role` in `namespace`.
/// Returns once the child printed its `ready` line.
fn spawn_role(role: &str, namespace: &str) -> (ChildGuard, String) {
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
            .env("ZC_ROLE", role)
            .env("ZC_NS", namespace)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        let line = lines
            .next()
            .expect("child exited before it was ready")
            .unwrap();
        if let Some((_, rest)) = line.split_once("ready ") {
            break rest.to_owned();
        }
    };
    (child, ready)
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The child side of [`spawn_role`]; a no-op in a normal test run.
#[test]
fn child_role() {
    let Ok(role) = std::env::var("ZC_ROLE") else {
        return;
    };
    if role == "namespace" {
        // ZEROCAST_NAMESPACE is set to an invalid name by the parent.
        let err = Config::try_default_topics().unwrap_err().to_string();
        assert!(err.contains("ZEROCAST_NAMESPACE"), "{err}");
        let bus = Bus::new(Config::default_topics());
        let err = bus.segment("trade_events").unwrap_err().to_string();
        assert!(err.contains("namespace"), "{err}");
        println!("ready checked");
        return;
    }
    let ns = std::env::var("ZC_NS").unwrap();
    let words = TopicKind::Trade.slot_words();
    let bus = Bus::new(Config {
        namespace: ns,
        topics: vec![TopicConfig::new(
            "trades",
            zerocast_ipc::segment::segment_size(64, words),
            TopicKind::Trade,
        )],
    });
    let durable = role.starts_with("durable");
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                name: "rec".into(),
                start: Start::Oldest,
                gating: true,
                durable,
                manual_release: durable,
                ..Default::default()
            },
        )
        .unwrap();
    println!("ready {}", sub.next_seq().unwrap());
    // `durable-read-N` then reads N frames and releases them, as a
    // recorder does once they are in its log; `gating` holds at the start.
    if let Some(n) = role.strip_prefix("durable-read-") {
        let n: u64 = n.parse().unwrap();
        for _ in 0..n {
            sub.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        sub.release();
    }
    loop {
        std::thread::park();
    }
}

// ------------------------------------------------------------ item 14

#[test]
fn regression_dead_gating_subscriber_does_not_fail_the_waiting_publisher() {
    let bus = small_bus("deadgate");
    let mut publisher = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "p".into(),
                gating: GatingPolicy::Wait(Duration::from_secs(5)),
            },
        )
        .unwrap();
    let (mut child, _) = spawn_role("gating", &bus.config().namespace);
    // The ring is full of frames the gating child has not read.
    for i in 0..64 {
        publisher.publish(&trade(i)).unwrap();
    }
    let waiter = std::thread::spawn(move || {
        for i in 64..200 {
            publisher.publish(&trade(i))?;
        }
        Ok::<_, Error>(())
    });
    sigkill(&mut child);
    waiter
        .join()
        .unwrap()
        .expect("the waiting publisher must reclaim the dead subscriber and go on");
    bus.remove_segments();
}

#[test]
fn regression_ring_full_error_names_the_subscriber_behind() {
    let bus = small_bus("fullname");
    let seg = bus.segment("trades").unwrap();
    let _sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "slowpoke".into(),
            gating: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut publisher = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "p".into(),
                gating: GatingPolicy::Fail,
            },
        )
        .unwrap();
    let err = (0..65)
        .map(|i| publisher.publish(&trade(i)))
        .find_map(Result::err)
        .expect("a full ring");
    let text = err.to_string();
    assert!(text.contains("ring full"), "{text}");
    assert!(text.contains("slowpoke"), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    assert!(text.contains("position 0"), "{text}");
    bus.remove_segments();
}

// ------------------------------------------------------------- item 1

#[test]
fn regression_restarted_durable_subscriber_keeps_the_dead_ones_hold() {
    let bus = small_bus("durable");
    let mut publisher = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "p".into(),
                gating: GatingPolicy::Wait(Duration::from_secs(20)),
            },
        )
        .unwrap();
    // Registered before anything is published: it holds sequence 0.
    let (mut child, _) = spawn_role("durable-read-10", &bus.config().namespace);
    for i in 0..20 {
        publisher.publish(&trade(i)).unwrap();
    }
    // Wait until the child has released its 10 frames.
    let seg = bus.segment("trades").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..zerocast_core::broadcast::MAX_GATING)
        .filter_map(|g| seg.ring().gating_position(g))
        .min()
        != Some(10)
    {
        assert!(Instant::now() < deadline, "child did not release 10 frames");
        std::thread::yield_now();
    }
    sigkill(&mut child);
    // Anyone attaching reaps the dead entry (here a plain subscriber); the
    // hold must survive that.
    let _other = bus
        .subscriber("trades", SubscriberOptions::default())
        .unwrap();
    // The ring is full up to the hold at 10: one more would overwrite it.
    for i in 20..74 {
        publisher.publish(&trade(i)).unwrap();
    }
    let mut impatient = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "impatient".into(),
                gating: GatingPolicy::Fail,
            },
        )
        .unwrap();
    let err = impatient
        .publish(&trade(74))
        .expect_err("sequence 10 was overwritten before the restarted subscriber read it");
    assert!(err.to_string().contains("\"rec\""), "{err}");
    drop(impatient);
    let waiter = std::thread::spawn(move || {
        for i in 74..200 {
            publisher.publish(&trade(i))?;
        }
        Ok::<_, Error>(())
    });
    // The restarted recorder takes over the hold.
    let mut restarted = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                name: "rec".into(),
                start: Start::At(10),
                gating: true,
                durable: true,
                ..Default::default()
            },
        )
        .unwrap();
    for seq in 10..200 {
        match restarted.recv_timeout(Duration::from_secs(10)) {
            Ok(f) => assert_eq!(f.seq, seq),
            Err(e) => panic!("at {seq}: the restarted recorder got {e:?}"),
        }
    }
    waiter.join().unwrap().unwrap();
    bus.remove_segments();
}

// ------------------------------------------------------------- item 8

/// A fresh, valid segment at a unique path in `/dev/shm`.
fn crafted(test: &str, payload_words: usize) -> PathBuf {
    let path = PathBuf::from(format!(
        "/dev/shm/zerocast-hardening-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    Segment::create(&path, "t", 64, payload_words).unwrap();
    path
}

fn poke(path: &Path, offset: u64, value: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

/// The header word at `offset` of the file at `path`.
fn peek(path: &Path, offset: u64) -> u64 {
    let mut word = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut word, offset)
        .unwrap();
    u64::from_le_bytes(word)
}

/// Header offsets (see `layout::SegmentHeader`).
const PAYLOAD_WORDS: u64 = 24;
const CAPACITY: u64 = 32;
const RING_OFFSET: u64 = 56;
const TOTAL_SIZE: u64 = 64;
const PID_NAMESPACE: u64 = 72;

fn open_err(path: &Path) -> String {
    let result = Segment::open(path, "t");
    let _ = std::fs::remove_file(path);
    match result {
        Ok(_) => panic!("{}: a corrupt segment was accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn regression_segment_open_rejects_a_huge_capacity() {
    let path = crafted("cap", 24);
    poke(&path, CAPACITY, 1 << 58);
    let err = open_err(&path);
    assert!(err.contains("capacity"), "{err}");
}

#[test]
fn regression_segment_open_rejects_a_capacity_not_a_power_of_two() {
    let path = crafted("cap3", 24);
    poke(&path, CAPACITY, 48);
    let err = open_err(&path);
    assert!(err.contains("capacity"), "{err}");
}

#[test]
fn regression_segment_open_rejects_too_few_payload_words() {
    for words in [0, 1, 2, 3] {
        let path = crafted(&format!("words{words}"), 24);
        poke(&path, PAYLOAD_WORDS, words);
        let err = open_err(&path);
        assert!(err.contains("payload"), "{words}: {err}");
    }
}

#[test]
fn regression_segment_create_rejects_too_few_payload_words() {
    let path = PathBuf::from(format!(
        "/dev/shm/zerocast-hardening-{}-create2",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let err = Segment::create(&path, "t", 64, 2).unwrap_err().to_string();
    assert!(err.contains("payload"), "{err}");
    assert!(!path.exists());
}

#[test]
fn regression_segment_open_rejects_a_lying_total_size() {
    let path = crafted("total", 24);
    let len = std::fs::metadata(&path).unwrap().len();
    poke(&path, TOTAL_SIZE, len + 4096);
    let err = open_err(&path);
    assert!(err.contains("size"), "{err}");
}

#[test]
fn regression_segment_open_rejects_a_wrong_ring_offset() {
    let path = crafted("offset", 24);
    poke(&path, RING_OFFSET, u64::MAX - 7);
    let err = open_err(&path);
    assert!(err.contains("ring offset"), "{err}");
}

#[test]
fn regression_segment_open_rejects_a_truncated_file() {
    let path = crafted("trunc", 24);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    let err = open_err(&path);
    assert!(err.contains("bytes"), "{err}");
}

#[test]
fn regression_segment_open_rejects_a_segment_open_to_others() {
    let path = crafted("mode", 24);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = open_err(&path);
    assert!(err.contains("0666"), "{err}");
    assert!(err.contains("refusing"), "{err}");
}

#[test]
fn regression_segment_open_rejects_a_segment_of_another_user() {
    let path = crafted("owner", 24);
    // Only root can give a file away; elsewhere this case cannot be set up.
    let c = std::ffi::CString::new(path.as_os_str().to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::chown(c.as_ptr(), 54321, 54321) } != 0 {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let err = open_err(&path);
    assert!(err.contains("uid 54321"), "{err}");
}

/// A topic's `mode = "0660"` and `group`: a segment of another user shared
/// with one of our groups opens; shared with a group we are not in, or
/// open to others, it is refused.
#[test]
fn segment_shared_with_our_group_opens_and_with_another_group_does_not() {
    let path = crafted("group", 24);
    let c = std::ffi::CString::new(path.as_os_str().to_str().unwrap()).unwrap();
    // SAFETY: getegid has no preconditions.
    let ours = unsafe { libc::getegid() };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::chown(c.as_ptr(), 54321, ours) } != 0 {
        // Only root can give a file away; elsewhere this cannot be set up.
        eprintln!("skipped: chown needs root");
        let _ = std::fs::remove_file(&path);
        return;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    let shared = zerocast_ipc::config::Access {
        mode: 0o660,
        gid: None,
    };
    Segment::open_with(&path, "t", shared).expect("shared with our group by 0660");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 54321, 54321) }, 0);
    let err = open_err(&path);
    assert!(err.contains("uid 54321") && err.contains("0660"), "{err}");
}

#[test]
fn regression_received_kind_of_a_short_frame_does_not_panic() {
    for len in [0, 8, 16, 21, 24] {
        let bytes = vec![0u8; len];
        let r = Received {
            seq: 0,
            bytes: &bytes,
        };
        assert_eq!(r.kind(), None);
        assert_eq!(r.retransmit_of(), None);
        let _ = r.publish_ns();
    }
}

// ------------------------------------------------------------ item 13

/// Spawns a child that exits at once and is not waited for: a zombie.
// The zombie is the point; the caller waits for it once it has looked.
#[allow(clippy::zombie_processes)]
fn zombie() -> Child {
    let child = Command::new("true").spawn().unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&stat).unwrap();
        let state = text.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        if state == 'Z' {
            return child;
        }
        assert!(Instant::now() < deadline, "child never became a zombie");
        std::thread::yield_now();
    }
}

#[test]
fn regression_a_zombie_is_dead() {
    let mut child = zombie();
    let owner = layout::owner_of(child.id()).expect("a zombie still has a start time");
    assert!(!layout::owner_alive(owner), "a zombie was seen alive");
    child.wait().unwrap();
}

#[test]
fn regression_a_reused_pid_is_dead() {
    let me = layout::current_owner();
    assert!(layout::owner_alive(me));
    let (pid, start) = layout::owner_parts(me);
    let impostor = layout::owner_word(pid, start.wrapping_add(1));
    assert!(
        !layout::owner_alive(impostor),
        "an entry with our pid but another start time was seen alive"
    );
}

// ------------------------------------------------------------ item 12

#[test]
fn regression_reap_does_not_release_a_reregistered_entrys_gating() {
    let bus = small_bus("aba");
    let seg = bus.segment("trades").unwrap();
    // A dead process's owner word, as a reaper would have read it.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = layout::owner_of(gone.id()).unwrap_or(layout::owner_word(gone.id(), 1));
    gone.wait().unwrap();
    // The entry was meanwhile freed and taken by a live gating subscriber.
    let live = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "new-owner".into(),
            gating: true,
            ..Default::default()
        },
    )
    .unwrap();
    let index = (0..layout::MAX_SUBSCRIBERS)
        .find(|&i| seg.header().subscribers[i].pid.load(Ordering::Relaxed) != 0)
        .unwrap();
    let gating = seg.header().subscribers[index]
        .gating
        .load(Ordering::Relaxed);
    assert_ne!(gating, 0);
    // The reaper acts on what it saw: the dead owner. It must take nothing.
    assert_eq!(seg.reap_subscriber(index, dead), None);
    assert!(
        seg.ring().gating_position(gating as usize - 1).is_some(),
        "the new owner's gating hold was released"
    );
    drop(live);
    bus.remove_segments();
}

#[test]
fn regression_a_tombstoned_entry_is_not_reused() {
    let bus = small_bus("tomb");
    let seg = bus.segment("trades").unwrap();
    let h = seg.header();
    // A live taker's tombstone (this process is the taker).
    let tomb = layout::tombstone(layout::current_owner());
    h.subscribers[0].pid.store(tomb, Ordering::Release);
    let sub = ShmSubscriber::new(Arc::clone(&seg), &SubscriberOptions::default()).unwrap();
    assert_eq!(h.subscribers[0].pid.load(Ordering::Acquire), tomb);
    assert_eq!(
        h.subscribers[1].pid.load(Ordering::Acquire),
        layout::current_owner()
    );
    drop(sub);
    bus.remove_segments();
}

// ----------------------------------------------------------- item 17b

#[test]
fn regression_invalid_namespace_from_the_environment_is_an_error() {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env("ZC_ROLE", "namespace")
        .env("ZEROCAST_NAMESPACE", "../../tmp/x")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && out.contains("ready checked"),
        "{out}"
    );
}

#[test]
fn regression_an_orphaned_durable_hold_is_shown_named_and_released_on_request() {
    let bus = small_bus("orphan");
    let seg = bus.segment("trades").unwrap();
    let options = SubscriberOptions {
        name: "rec".into(),
        start: Start::Oldest,
        gating: true,
        durable: true,
        manual_release: true,
        ..Default::default()
    };
    // A second live durable subscriber of the same name is refused.
    let first = ShmSubscriber::new(Arc::clone(&seg), &options).unwrap();
    let err = ShmSubscriber::new(Arc::clone(&seg), &options).unwrap_err();
    assert!(matches!(err, Error::DurableNameTaken { .. }), "{err}");
    drop(first);
    let holds = seg.durable_holds();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert!(holds[0].orphaned && holds[0].name == "rec" && holds[0].position == Some(0));
    let mut publisher = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "p".into(),
                gating: GatingPolicy::Fail,
            },
        )
        .unwrap();
    for i in 0..64 {
        publisher.publish(&trade(i)).unwrap();
    }
    let err = publisher.publish(&trade(64)).unwrap_err().to_string();
    assert!(
        err.contains("durable hold \"rec\"") && err.contains("position 0"),
        "{err}"
    );
    assert_eq!(seg.release_durable("other"), None);
    assert_eq!(seg.release_durable("rec"), Some(0));
    assert!(seg.durable_holds().is_empty());
    publisher.publish(&trade(64)).unwrap();
    // Bad options are refused, not silently weakened.
    let err = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            durable: true,
            gating: false,
            name: "x".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadOptions(_)), "{err}");
    bus.remove_segments();
}

// ------------------------------------------- review of the hardening diff

/// Registers a subscriber on `seg` with `options` and forgets it, as if its
/// process died without a word; returns its entry (found by `name`).
fn forgotten_subscriber(seg: &Arc<Segment>, options: &SubscriberOptions, name: &str) -> usize {
    let sub = ShmSubscriber::new(Arc::clone(seg), options).unwrap();
    let index = entry_of(seg, name);
    std::mem::forget(sub);
    index
}

/// Index of the subscriber entry named `name`.
fn entry_of(seg: &Segment, name: &str) -> usize {
    (0..layout::MAX_SUBSCRIBERS)
        .find(|&i| {
            let w = seg.header().subscribers[i].pid.load(Ordering::Acquire);
            w != 0 && layout::name_is(&seg.header().subscribers[i].name, name)
        })
        .unwrap()
}

/// A live child process (`sleep`, killed and reaped when dropped) and its
/// owner word.
fn live_process() -> (ChildGuard, u64) {
    let child = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
    let word = layout::owner_of(child.id()).unwrap();
    (child, word)
}

/// Review finding 2: a reaper killed between its swap to a tombstone and
/// its final store left the entry (and its gating hold) taken forever.
#[test]
fn regression_tombstone_left_by_a_dead_reaper_is_taken_over() {
    let bus = small_bus("tomb2");
    let seg = bus.segment("trades").unwrap();
    let idx = forgotten_subscriber(
        &seg,
        &SubscriberOptions {
            name: "victim".into(),
            gating: true,
            ..Default::default()
        },
        "victim",
    );
    // The subscriber died; a reaper took the entry and died too (a
    // tombstone whose taker is unknown counts as a dead taker's).
    seg.header().subscribers[idx]
        .pid
        .store(layout::TOMBSTONE, Ordering::Release);
    let mut publisher = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                name: "p".into(),
                gating: GatingPolicy::Wait(Duration::from_secs(5)),
            },
        )
        .unwrap();
    let r = (0..100)
        .map(|i| publisher.publish(&trade(i)))
        .find_map(Result::err);
    assert!(r.is_none(), "wedged: {}", r.unwrap());
    assert_eq!(
        seg.header().subscribers[idx].pid.load(Ordering::Acquire),
        layout::FREE
    );
    bus.remove_segments();
}

/// Review finding 3: a gating subscriber killed inside `Drop` after its
/// ring slot was freed but before its entry was: a subscriber registering
/// before that death is visible must not get a slot the reaper of the
/// dead entry then frees.
#[test]
fn regression_reap_after_kill_mid_drop_keeps_another_subscribers_hold() {
    let bus = small_bus("middrop");
    let seg = bus.segment("trades").unwrap();
    let s1 = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "s1".into(),
            gating: true,
            ..Default::default()
        },
    )
    .unwrap();
    let idx = entry_of(&seg, "s1");
    let g = seg.header().subscribers[idx].gating.load(Ordering::Relaxed) as usize - 1;
    // The entry belongs to a process (alive for now) whose Drop freed the
    // ring slot and was then killed.
    std::mem::forget(s1);
    // SAFETY: `s1` is forgotten: it never touches the ring again.
    unsafe { seg.ring().release_gating_slot(g) };
    let (mut owner, word) = live_process();
    seg.header().subscribers[idx]
        .pid
        .store(word, Ordering::Release);
    let rec = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "rec".into(),
            gating: true,
            durable: true,
            ..Default::default()
        },
    )
    .unwrap();
    let rec_idx = entry_of(&seg, "rec");
    let rg = seg.header().subscribers[rec_idx]
        .gating
        .load(Ordering::Relaxed) as usize
        - 1;
    sigkill(&mut owner);
    let reaped = seg.reap_entries();
    let still = seg.ring().gating_position(rg).is_some();
    drop(rec);
    let _ = seg.release_durable("rec");
    bus.remove_segments();
    assert!(
        still,
        "the reaper released a live consumer's gating slot: {reaped:?}"
    );
}

/// Review finding 4: a durable subscriber restarting while a reaper holds
/// the dead one's entry as a tombstone registered a second hold.
#[test]
fn regression_durable_restart_racing_a_reaper_keeps_one_hold() {
    let bus = small_bus("dup");
    let seg = bus.segment("trades").unwrap();
    let idx = forgotten_subscriber(
        &seg,
        &SubscriberOptions {
            name: "rec".into(),
            gating: true,
            durable: true,
            ..Default::default()
        },
        "rec",
    );
    // A reaper (say a waiting publisher) is mid-reap of the dead entry.
    seg.header().subscribers[idx]
        .pid
        .store(layout::TOMBSTONE, Ordering::Release);
    let d2 = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "rec".into(),
            gating: true,
            durable: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Every hold counts, a tombstoned entry's too.
    let held = (0..zerocast_core::broadcast::MAX_GATING)
        .filter(|&g| seg.ring().gating_position(g).is_some())
        .count();
    let holds = seg.durable_holds();
    drop(d2);
    let _ = seg.release_durable("rec");
    bus.remove_segments();
    assert_eq!(
        held, 1,
        "{held} gating holds for one durable name: {holds:?}"
    );
}

fn durable(name: &str) -> SubscriberOptions {
    SubscriberOptions {
        name: name.into(),
        gating: true,
        durable: true,
        ..Default::default()
    }
}

fn held_gating_slots(seg: &Segment) -> usize {
    (0..zerocast_core::broadcast::MAX_GATING)
        .filter(|&g| seg.ring().gating_position(g).is_some())
        .count()
}

/// Review finding 4, with a live taker: the restarting durable subscriber
/// waits for the reaper to finish, then takes the hold over (or, if the
/// taker dies instead, takes its tombstone over).
#[test]
fn regression_durable_restart_waits_for_a_live_reaper() {
    for taker_dies in [false, true] {
        let bus = small_bus(if taker_dies { "dupdie" } else { "duplive" });
        let seg = bus.segment("trades").unwrap();
        let d1 = ShmSubscriber::new(Arc::clone(&seg), &durable("rec")).unwrap();
        let idx = entry_of(&seg, "rec");
        std::mem::forget(d1);
        let (mut taker, word) = live_process();
        let e = &seg.header().subscribers[idx];
        e.pid.store(layout::tombstone(word), Ordering::Release);
        let seg2 = Arc::clone(&seg);
        let restart = std::thread::spawn(move || ShmSubscriber::new(seg2, &durable("rec")));
        // Only makes the race likely; the outcome must not depend on it.
        std::thread::sleep(Duration::from_millis(50));
        if taker_dies {
            sigkill(&mut taker);
        } else {
            // The reaper finishes: the hold becomes an orphan.
            e.pid.store(layout::ORPHAN, Ordering::Release);
            sigkill(&mut taker);
        }
        let d2 = restart.join().unwrap().unwrap();
        let owner = e.pid.load(Ordering::Acquire);
        let held = held_gating_slots(&seg);
        drop(d2);
        let _ = seg.release_durable("rec");
        bus.remove_segments();
        assert_eq!(
            owner,
            layout::current_owner(),
            "the old entry was not adopted"
        );
        assert_eq!(held, 1, "taker_dies={taker_dies}: {held} holds");
    }
}

/// Review finding 4: durable subscribers of one name starting at once
/// register one hold; the others are refused.
#[test]
fn regression_concurrent_durable_subscribers_of_one_name_register_once() {
    let bus = small_bus("dupconc");
    let seg = bus.segment("trades").unwrap();
    for _ in 0..if cfg!(miri) { 1 } else { 20 } {
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let seg = Arc::clone(&seg);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    ShmSubscriber::new(seg, &durable("rec"))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let held = held_gating_slots(&seg);
        let ok = results.iter().filter(|r| r.is_ok()).count();
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::DurableNameTaken { .. }),
                    "unexpected error: {e}"
                );
            }
        }
        drop(results);
        assert_eq!((ok, held), (1, 1), "{ok} registered, {held} holds");
    }
    let _ = seg.release_durable("rec");
    bus.remove_segments();
}

/// Review finding 3: a non-durable gating subscriber killed at each step
/// of its `Drop`: the next registration and reap leave the ring with
/// exactly the live holds.
#[test]
fn regression_kill_at_each_drop_step_leaks_and_steals_no_gating_slot() {
    let bus = small_bus("dropsteps");
    let seg = bus.segment("trades").unwrap();
    let h = seg.header();
    for step in 0..3 {
        let s1 = ShmSubscriber::new(
            Arc::clone(&seg),
            &SubscriberOptions {
                name: "s1".into(),
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
        let idx = entry_of(&seg, "s1");
        let g = h.subscribers[idx].gating.load(Ordering::Relaxed) as usize - 1;
        std::mem::forget(s1);
        // Drop's steps: clear the hint, free the ring slot, clear the tag.
        h.subscribers[idx].gating.store(0, Ordering::Relaxed);
        if step >= 1 {
            // SAFETY: `s1` is forgotten: it never touches the ring again.
            unsafe { seg.ring().release_gating_slot(g) };
        }
        if step >= 2 {
            h.gating_owners[g].store(layout::NO_OWNER, Ordering::Release);
        }
        let (mut owner, word) = live_process();
        h.subscribers[idx].pid.store(word, Ordering::Release);
        let live = ShmSubscriber::new(
            Arc::clone(&seg),
            &SubscriberOptions {
                name: "live".into(),
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
        sigkill(&mut owner);
        seg.reap();
        let held = held_gating_slots(&seg);
        let live_idx = entry_of(&seg, "live");
        let live_held = seg.gating_position_of_entry(live_idx).is_some();
        drop(live);
        let left = held_gating_slots(&seg);
        assert!(
            live_held,
            "step {step}: the live subscriber's hold was freed"
        );
        assert_eq!((held, left), (1, 0), "step {step}: holds leaked");
        assert_eq!(h.subscribers[idx].pid.load(Ordering::Acquire), layout::FREE);
    }
    bus.remove_segments();
}

/// Review finding 3 (related): a subscriber killed after taking its ring
/// gating slot but before recording it in its entry leaked the slot; the
/// owner tag, claimed first, lets the reaper free it.
#[test]
fn regression_kill_mid_registration_leaks_no_gating_slot() {
    let bus = small_bus("midreg");
    let seg = bus.segment("trades").unwrap();
    let h = seg.header();
    let idx = forgotten_subscriber(
        &seg,
        &SubscriberOptions {
            name: "s1".into(),
            gating: true,
            ..Default::default()
        },
        "s1",
    );
    // Killed before its entry said which slot it took.
    h.subscribers[idx].gating.store(0, Ordering::Relaxed);
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = layout::owner_word(gone.id(), 12345);
    gone.wait().unwrap();
    h.subscribers[idx].pid.store(dead, Ordering::Release);
    assert_eq!(held_gating_slots(&seg), 1);
    let reaped = seg.reap_entries();
    let left = held_gating_slots(&seg);
    bus.remove_segments();
    assert_eq!(left, 0, "a ring gating slot leaked: {reaped:?}");
}

/// Second review, finding 4: a subscriber stalled on sequence `s + capacity`
/// whose slot is still held by an older unfinished lap `s` (a producer that
/// died before anything recorded its claim) was never resolved:
/// `resolve_stalled` gave up on `OlderWriterStuck` and the subscriber stayed
/// `Empty` there for good while later sequences were committed.
#[test]
fn regression_resolve_stalled_resolves_an_older_unfinished_lap_first() {
    let bus = small_bus("olderlap");
    let seg = bus.segment("trades").unwrap();
    let ring = seg.ring();
    let cap = ring.capacity();
    let mut cache = zerocast_core::broadcast::GatingCache::default();
    let payload = vec![0u64; ring.payload_words()];
    // Sequence 0 is claimed by a producer that dies at once: nothing records
    // it in flight, nothing commits it.
    std::mem::forget(ring.try_claim(&mut cache).unwrap());
    for _ in 1..cap {
        ring.try_publish(&mut cache, &payload).unwrap();
    }
    // Sequence `cap` (slot 0 again) is claimed and abandoned the same way.
    std::mem::forget(ring.try_claim(&mut cache).unwrap());
    assert_eq!(
        // SAFETY: both claims were forgotten: their producers are dead.
        unsafe { seg.resolve_stalled(cap) },
        Some(zerocast_core::broadcast::Declared::Lost),
        "a subscriber stalled on {cap} must get past it"
    );
    let mut sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            start: Start::At(cap),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(sub.poll(), Err(zerocast_ipc::RecvError::Lost(s)) if s == cap));
    bus.remove_segments();
}

/// Second review, finding 1: a durable subscriber waiting for its name (its
/// old entry held by a live, slow taker) held the segment-wide durable-name
/// lock for the whole wait (up to 5 s), so a durable subscriber of another
/// name could not register meanwhile.
#[test]
fn regression_a_durable_name_wait_does_not_block_other_names() {
    let durable = |name: &str| SubscriberOptions {
        name: name.into(),
        gating: true,
        durable: true,
        ..Default::default()
    };
    let bus = small_bus("xname");
    let seg = bus.segment("trades").unwrap();
    let first = ShmSubscriber::new(Arc::clone(&seg), &durable("rec")).unwrap();
    let index = (0..layout::MAX_SUBSCRIBERS)
        .find(|&i| {
            let e = &seg.header().subscribers[i];
            e.pid.load(Ordering::Acquire) != 0 && layout::name_is(&e.name, "rec")
        })
        .unwrap();
    std::mem::forget(first);
    // A live process has taken the entry (as a slow reaper would).
    let mut taker = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let word = loop {
        if let Some(w) = layout::owner_of(taker.id()) {
            break w;
        }
        assert!(Instant::now() < deadline, "no /proc entry for the taker");
        std::thread::sleep(Duration::from_millis(5));
    };
    // Release: as a reaper's takeover.
    seg.header().subscribers[index]
        .pid
        .store(layout::tombstone(word), Ordering::Release);
    let seg2 = Arc::clone(&seg);
    let waiter = std::thread::spawn(move || ShmSubscriber::new(seg2, &durable("rec")).map(drop));
    std::thread::sleep(Duration::from_millis(100));
    // Still waiting for its name (a waiter that already returned would
    // make the timing below prove nothing).
    assert!(
        !waiter.is_finished(),
        "durable 'rec' did not wait for the taker's tombstone"
    );
    let t0 = Instant::now();
    let other = ShmSubscriber::new(Arc::clone(&seg), &durable("other"));
    let took = t0.elapsed();
    let other = other.map(drop).map_err(|e| e.to_string());
    let _ = taker.kill();
    let _ = taker.wait();
    let _ = waiter.join().unwrap();
    let _ = seg.release_durable("rec");
    let _ = seg.release_durable("other");
    bus.remove_segments();
    assert!(other.is_ok(), "durable 'other' failed: {other:?}");
    assert!(
        took < Duration::from_secs(1),
        "durable 'other' waited {took:?} for another name's wait"
    );
}

/// `recv_timeout(Duration::MAX)` ("wait as long as it takes") panicked with
/// "overflow when adding duration to instant" before looking at the ring,
/// even with a frame waiting.
#[test]
fn regression_recv_timeout_of_duration_max_does_not_overflow() {
    let bus = small_bus("tmax");
    let mut publisher = bus.publisher("trades").unwrap();
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    publisher.publish(&trade(1)).unwrap();
    let seq = sub.recv_timeout(Duration::MAX).unwrap().seq;
    assert_eq!(seq, 0);
    bus.remove_segments();
}

/// `GatingPolicy::Wait(Duration::MAX)` (or `pub --gating-wait-ms` of
/// u64::MAX) panicked with an Instant overflow the first time a gating
/// subscriber was behind, instead of waiting for it.
#[test]
fn regression_gating_wait_of_duration_max_waits_instead_of_panicking() {
    let bus = small_bus("gwmax");
    let mut publisher = bus
        .publisher_with(
            "trades",
            PublisherOptions {
                gating: GatingPolicy::Wait(Duration::MAX),
                ..Default::default()
            },
        )
        .unwrap();
    let mut slow = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                gating: true,
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    let capacity = bus.segment("trades").unwrap().ring().capacity();
    for i in 0..capacity {
        publisher.publish(&trade(i)).unwrap();
    }
    // The ring is full behind `slow`: the next publish waits for it.
    let waiting = std::thread::spawn(move || publisher.publish(&trade(capacity)).map(|_| ()));
    // Gives the publish time to start waiting. Deliberate, not a wait for
    // an event: nothing outside the publisher shows a wait (its counters
    // are written when the wait ends), and the outcome must be the same
    // either way (a loaded machine only makes the test prove less).
    std::thread::sleep(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut read = 0;
    while read < capacity && Instant::now() < deadline {
        if slow.try_recv().is_ok() {
            read += 1;
        }
    }
    slow.release();
    drop(slow);
    let published = waiting.join();
    bus.remove_segments();
    assert!(
        matches!(published, Ok(Ok(()))),
        "the waiting publish must complete once the subscriber reads"
    );
}

/// Issue 13, item 4: once a gating subscriber had registered, the topic
/// claimed by compare-and-swap forever (the ring's GATED flag was sticky).
/// Now the last gating hold to go (a subscriber dropped, or a dead one's
/// hold reaped) puts claims back on the wait-free path.
#[test]
fn regression_last_gating_subscriber_gone_restores_wait_free_claims() {
    let bus = small_bus("ungate");
    let seg = bus.segment("trades").unwrap();
    let gating = |name: &str| SubscriberOptions {
        name: name.into(),
        gating: true,
        ..Default::default()
    };
    assert!(!seg.ring().claims_are_checked());
    let live = ShmSubscriber::new(Arc::clone(&seg), &gating("live")).unwrap();
    let idx = forgotten_subscriber(&seg, &gating("dead"), "dead");
    assert!(seg.ring().claims_are_checked());
    drop(live);
    assert!(seg.ring().claims_are_checked(), "the dead one still holds");
    // Its process died: the owner word of a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = layout::owner_of(gone.id()).unwrap_or(layout::owner_word(gone.id(), 1));
    gone.wait().unwrap();
    seg.header().subscribers[idx]
        .pid
        .store(dead, Ordering::Release);
    assert_eq!(seg.reap(), 1);
    assert!(
        !seg.ring().claims_are_checked(),
        "no gating hold left, claims still checked"
    );
    bus.remove_segments();
}

/// Regression: a segment of another user shared with one of our groups by
/// 0660 was accepted for every topic, also one configured private (the
/// default "0600"): any user sharing a group with us (often `users`) could
/// create a topic's segment first and read or inject its frames. Only a
/// topic whose `mode` is "0660" accepts it, and only of its `group` when
/// it names one.
#[test]
fn regression_private_topic_refuses_a_segment_shared_by_another_user() {
    use zerocast_ipc::config::Access;
    let path = crafted("private", 24);
    let c = std::ffi::CString::new(path.as_os_str().to_str().unwrap()).unwrap();
    // SAFETY: getegid has no preconditions.
    let ours = unsafe { libc::getegid() };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::chown(c.as_ptr(), 54321, ours) } != 0 {
        eprintln!("skipped: chown needs root");
        let _ = std::fs::remove_file(&path);
        return;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    let shared = Access {
        mode: 0o660,
        gid: None,
    };
    let other_group = Access {
        mode: 0o660,
        gid: Some(ours.wrapping_add(1)),
    };
    let private = Segment::open(&path, "t").map(|_| ());
    let wrong_group = Segment::open_with(&path, "t", other_group).map(|_| ());
    let ok = Segment::open_with(&path, "t", shared).map(|_| ());
    let _ = std::fs::remove_file(&path);
    let err = private.expect_err("a private topic accepted another user's segment");
    assert!(matches!(err, Error::Untrusted { .. }), "{err}");
    assert!(matches!(wrong_group, Err(Error::Untrusted { .. })));
    ok.expect("a topic shared by 0660 opens a segment of our group");
}

/// A process of another pid namespace (a container sharing `/dev/shm`,
/// as two containers of a Kubernetes pod do) read this namespace's pids in
/// its own: on a single-producer topic it took the live publisher for dead
/// and took its entry over, so that two processes claimed by plain store
/// (seen with `unshare --pid`: the first publisher's sequence was then
/// "declared lost by a supervisor" and it gave up), and `stat` called the
/// live segment stale. Now a segment records its users' pid namespace and
/// every process that maps it holds a shared lock on it: a process of
/// another namespace is refused while any holds it, and takes it over
/// once none does. (The namespace is poked into the header here; the
/// `zerocast` binary under a real `unshare --pid` is in
/// std-runtime/tests/processes.rs.)
#[test]
fn regression_a_process_of_another_pid_namespace_took_live_users_for_dead() {
    let ours = layout::pid_namespace();
    assert_ne!(ours, 0, "this test needs /proc/self/ns/pid");
    let mut topic = TopicConfig::new("trades", 1 << 20, TopicKind::Trade);
    topic.producers = zerocast_ipc::Producers::Single;
    let bus = Bus::new(Config {
        namespace: format!("h{}-pidns", std::process::id()),
        topics: vec![topic],
    });
    bus.remove_segments();
    let mut publisher = bus.publisher("trades").unwrap();
    publisher.publish(&trade(0)).unwrap();
    let seg = bus.open_segment("trades").unwrap();
    assert_eq!(seg.header().pid_namespace.load(Ordering::Relaxed), ours);
    let path = seg.path().to_owned();
    drop(seg);
    // The segment as one created in another pid namespace records it: its
    // users (our publisher) are, to a process of this namespace, processes
    // of another.
    let foreign = ours ^ 0x5a5a;
    poke(&path, PID_NAMESPACE, foreign);
    let refused = |what: &str, e: Error| match e {
        Error::ForeignPidNamespace {
            theirs, ours: o, ..
        } => {
            assert_eq!((theirs, o), (foreign, ours), "{what}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("pid:[{foreign}]"))
                    && text.contains(&format!("pid:[{ours}]"))
                    && text.contains("one pid namespace"),
                "{what}: {text}"
            );
        }
        other => panic!("{what}: {other}"),
    };
    refused(
        "a second publisher",
        bus.publisher("trades").map(|_| ()).unwrap_err(),
    );
    refused(
        "a subscriber",
        bus.subscriber("trades", SubscriberOptions::default())
            .map(|_| ())
            .unwrap_err(),
    );
    refused("a monitor", Segment::open(&path, "trades").unwrap_err());
    // Refused without a trace: the namespace recorded is still the other's,
    // and the live publisher still publishes.
    publisher.publish(&trade(1)).unwrap();
    assert_eq!(peek(&path, PID_NAMESPACE), foreign);
    // Once nobody maps it, this namespace takes it over: its dead users are
    // judged here from now on, and the single-producer entry is ours.
    drop(publisher);
    let mut publisher = bus.publisher("trades").unwrap();
    let seg = bus.open_segment("trades").unwrap();
    assert_eq!(seg.header().pid_namespace.load(Ordering::Relaxed), ours);
    assert_eq!(publisher.publish(&trade(2)).unwrap(), 2);
    // Openers (not the creator, as above) hold the lock too.
    drop(seg);
    poke(&path, PID_NAMESPACE, foreign);
    refused(
        "a monitor beside an opener",
        Segment::open(&path, "trades").unwrap_err(),
    );
    drop(publisher);
    bus.remove_segments();
}

/// A monitor (`Segment::observe`: `stat`, `health`) of another pid
/// namespace opened a segment as a publisher does, and so took over one no
/// process mapped (recording its own namespace, so the topic's restarted
/// processes were refused while it ran) and judged the other namespace's
/// pids. It refuses now, used or not, and leaves the word as it was.
#[test]
fn regression_a_monitor_took_over_a_segment_of_another_pid_namespace() {
    use std::os::fd::AsRawFd as _;
    let path = crafted("observe-foreign", 24);
    let ours = layout::pid_namespace();
    assert_ne!(ours, 0, "this test needs /proc/self/ns/pid");
    let foreign = ours ^ 0x5a5a;
    poke(&path, PID_NAMESPACE, foreign);
    let recorded = || peek(&path, PID_NAMESPACE);
    let refused = |in_use: bool| {
        // Idle: retried while a process that another test of this binary
        // forked holds a copy of a locked descriptor (until it execs).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut result = Segment::observe(&path, "t", Default::default()).map(|_| ());
        while !in_use
            && matches!(
                result,
                Err(Error::ForeignPidNamespaceObserved { in_use: true, .. })
            )
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
            result = Segment::observe(&path, "t", Default::default()).map(|_| ());
        }
        match result {
            Err(
                e @ Error::ForeignPidNamespaceObserved {
                    theirs, ours: o, ..
                },
            ) => {
                assert_eq!((theirs, o), (foreign, ours));
                let text = e.to_string();
                assert!(
                    matches!(e, Error::ForeignPidNamespaceObserved { in_use: u, .. } if u == in_use),
                    "in use {in_use}: {text}"
                );
                assert!(
                    text.contains(&format!("pid:[{foreign}]"))
                        && text.contains("monitor")
                        && text.contains("takes it over") != in_use
                        && !text.contains("remove the file")
                        && text.contains("do not delete the file") != in_use,
                    "{text}"
                );
            }
            other => panic!("a monitor opened a foreign segment: {other:?}"),
        }
        assert_eq!(recorded(), foreign, "the monitor took the segment over");
    };
    // Nobody maps it: still refused, and not taken over, and no lock left.
    refused(false);
    // (Tried for a while: a child another test forks holds a copy of a
    // locked descriptor until it execs; a lock the monitor kept stays.)
    let free = std::fs::File::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: flock on a descriptor this test owns; no memory passed.
    let try_lock = || unsafe { libc::flock(free.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    let mut locked = try_lock();
    while locked != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        locked = try_lock();
    }
    assert_eq!(locked, 0, "the monitor left the file locked");
    drop(free);
    // A process of that namespace maps it (holds the shared lock).
    let user = std::fs::File::open(&path).unwrap();
    // SAFETY: flock on a descriptor this test owns; no memory passed.
    assert_eq!(unsafe { libc::flock(user.as_raw_fd(), libc::LOCK_SH) }, 0);
    refused(true);
    // The monitor's probe left the user's lock alone.
    let probe = std::fs::File::open(&path).unwrap();
    assert_ne!(
        // SAFETY: as above.
        unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    drop((user, probe));
    // Of this namespace, a monitor opens it as before.
    poke(&path, PID_NAMESPACE, ours);
    Segment::observe(&path, "t", Default::default()).unwrap();
    let _ = std::fs::remove_file(&path);
}

/// Review of the pid-namespace check: openers of one namespace taking over
/// a segment of another together (a restarted container starting its
/// publisher and subscribers at once) kept each other out: an opener's one
/// try for the exclusive lock failed on another's shared lock, held while
/// it read the namespace word, and it was told a process of the other
/// namespace still mapped the segment. Now it tries again (holding no
/// lock between tries) and finds the segment taken over.
#[test]
fn regression_openers_taking_over_a_segment_together_refused_each_other() {
    use std::os::fd::AsRawFd as _;
    let path = crafted("takeover-race", 24);
    let ours = layout::pid_namespace();
    poke(&path, PID_NAMESPACE, ours ^ 0x5a5a);
    let flock = |f: &std::fs::File, op| {
        // SAFETY: flock on a descriptor this test owns; no memory passed.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op) }, 0);
    };
    // Another opener of this namespace, between its shared lock and its
    // look at the namespace word.
    let other = std::fs::File::open(&path).unwrap();
    flock(&other, libc::LOCK_SH);
    let opener = {
        let path = path.clone();
        std::thread::spawn(move || Segment::open(&path, "t").map(|_| ()))
    };
    // Long enough for the opener's first try (a thread start), well
    // inside its 200 ms of tries.
    std::thread::sleep(Duration::from_millis(5));
    // It takes the segment over, as `Segment::open` does.
    flock(&other, libc::LOCK_UN);
    flock(&other, libc::LOCK_EX);
    poke(&path, PID_NAMESPACE, ours);
    flock(&other, libc::LOCK_SH);
    let opened = opener.join().unwrap();
    drop(other);
    std::fs::remove_file(&path).unwrap();
    opened.unwrap();
}

/// An opener that opened a segment by name just before a remover
/// (`zerocast stat --remove-stale`) unlinked it, and took its lock just
/// after, went on with the unlinked file: a publisher there published into
/// a file no other process could open, and the topic's next process made a
/// new one under the name. The opener now finds the file unlinked once it
/// holds the lock, and opens the name again (here: creates it anew).
#[test]
fn regression_an_opener_kept_a_segment_removed_before_its_lock() {
    use std::os::fd::AsRawFd;
    let bus = small_bus("unlinked-open");
    bus.remove_segments();
    let path = bus.config().segment_path("trades");
    let first = bus.segment("trades").unwrap();
    let first_born = first.header().creation_ns;
    drop(first);
    // The remover: the file locked exclusively, as `remove_unused` does.
    let remover = std::fs::File::open(&path).unwrap();
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe { libc::flock(remover.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(locked, 0);
    let opener = {
        let bus = bus.clone();
        std::thread::spawn(move || bus.segment("trades"))
    };
    // Wait until the opener holds a descriptor of the file (it then waits
    // for the lock): two in this process name it, ours and its.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_descriptors_of(&path) < 2 {
        assert!(
            Instant::now() < deadline,
            "the opener never opened the file"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::remove_file(&path).unwrap();
    drop(remover);
    let seg = opener.join().unwrap().unwrap();
    let by_name = Segment::open(&path, "trades").unwrap();
    assert_ne!(
        seg.header().creation_ns,
        first_born,
        "the opener kept the segment removed before its lock"
    );
    assert_eq!(seg.header().creation_ns, by_name.header().creation_ns);
    bus.remove_segments();
}

/// Descriptors of this process that name `path`.
fn open_descriptors_of(path: &Path) -> usize {
    // The links name the file by its real path.
    let real = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == real))
        .count()
}

/// Review finding: a durable subscriber that releases automatically
/// releases in steps (every `RELEASE_EVERY` frames, and on an empty
/// poll); dropped between two, its orphaned hold stayed at the last step,
/// and the next subscriber of its name got up to 63 frames again that the
/// first had already read.
#[test]
fn regression_a_dropped_auto_release_durable_subscriber_handed_on_what_it_had_read() {
    let bus = small_bus("durable-drop");
    let seg = bus.segment("trades").unwrap();
    let options = SubscriberOptions {
        name: "auto".into(),
        start: Start::Oldest,
        gating: true,
        durable: true,
        ..Default::default()
    };
    let mut sub = ShmSubscriber::new(Arc::clone(&seg), &options).unwrap();
    let mut publisher = bus.publisher("trades").unwrap();
    for i in 0..10 {
        publisher.publish(&trade(i)).unwrap();
    }
    // Ten frames read, never an empty poll (which would release them).
    for seq in 0..10 {
        assert_eq!(sub.poll(), Ok(seq));
    }
    drop(sub);
    let holds = seg.durable_holds();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(
        holds[0].position,
        Some(10),
        "the orphaned hold is behind what the subscriber read"
    );
    let mut next = ShmSubscriber::new(Arc::clone(&seg), &options).unwrap();
    assert_eq!(next.poll(), Err(zerocast_ipc::RecvError::Empty));
    drop(next);
    assert_eq!(seg.release_durable("auto"), Some(10));
    bus.remove_segments();
}

/// Review of the change above: a durable subscriber dropped while its
/// thread unwinds (a panic processing a frame it had just received) must
/// not release what it read: the frame that panicked was not processed.
#[test]
fn regression_a_durable_subscriber_unwinding_released_the_frame_that_panicked() {
    let bus = small_bus("durable-panic");
    let seg = bus.segment("trades").unwrap();
    let options = SubscriberOptions {
        name: "panics".into(),
        start: Start::Oldest,
        gating: true,
        durable: true,
        ..Default::default()
    };
    let mut publisher = bus.publisher("trades").unwrap();
    for i in 0..10 {
        publisher.publish(&trade(i)).unwrap();
    }
    let (s, o) = (Arc::clone(&seg), options.clone());
    let result = std::thread::spawn(move || {
        let mut sub = ShmSubscriber::new(s, &o).unwrap();
        for seq in 0..10 {
            assert_eq!(sub.poll(), Ok(seq));
        }
        panic!("processing frame 9 failed");
    })
    .join();
    assert!(result.is_err());
    let holds = seg.durable_holds();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(
        holds[0].position,
        Some(0),
        "an unwinding subscriber released frames it had not processed"
    );
    assert_eq!(seg.release_durable("panics"), Some(0));
    bus.remove_segments();
}
