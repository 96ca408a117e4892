//! Single-producer topics (`producers = "single"`): the mode recorded in
//! the segment, one live publisher at a time, a dead one's place taken over
//! with its half-written sequence resolved, and subscribers (gating and
//! blocking) served as on any topic.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zerocast_core::broadcast::GatingCache;
use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::{
    layout, Bus, Config, Error, Producers, RecvError, ShmSubscriber, Start, SubscriberOptions,
    TopicConfig, TopicKind, WaitStrategy,
};

fn bus(test: &str, producers: Producers) -> Bus {
    let mut topic = TopicConfig::new("trades", 1 << 20, TopicKind::Trade);
    topic.producers = producers;
    let bus = Bus::new(Config {
        namespace: format!("sp{}-{test}", std::process::id()),
        topics: vec![topic],
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

/// A single-producer topic whose first publisher published sequence 0 and
/// left; a subscriber from the oldest frame; and the owner word of a
/// process that is gone, for a test to plant in the one entry.
fn first_publisher_gone(
    test: &str,
) -> (
    Bus,
    std::sync::Arc<zerocast_ipc::Segment>,
    zerocast_ipc::Subscriber,
    u64,
) {
    let bus = bus(test, Producers::Single);
    let seg = bus.segment("trades").unwrap();
    let sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    {
        let mut first = bus.publisher("trades").unwrap();
        assert_eq!(first.publish(&trade(0)).unwrap(), 0);
    }
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = layout::owner_of(gone.id()).unwrap_or(layout::owner_word(gone.id(), 1));
    gone.wait().unwrap();
    (bus, seg, sub, dead)
}

#[test]
fn single_producer_topic_refuses_a_second_live_publisher_naming_its_pid() {
    let bus = bus("second", Producers::Single);
    let mut first = bus.publisher("trades").unwrap();
    assert_eq!(first.publish(&trade(0)).unwrap(), 0);
    let err = bus.publisher("trades").unwrap_err();
    match &err {
        Error::SinglePublisherTaken { topic, pid } => {
            assert_eq!(topic, "trades");
            assert_eq!(*pid, std::process::id());
        }
        other => panic!("expected SinglePublisherTaken, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("trades") && text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    // Once the first is gone, the next takes its place and continues the
    // topic's sequence.
    drop(first);
    let mut next = bus.publisher("trades").unwrap();
    assert_eq!(next.publish(&trade(1)).unwrap(), 1);
    drop(next);
    bus.remove_segments();
}

#[test]
fn single_producer_mode_is_recorded_in_the_segment_and_a_mismatched_config_is_refused() {
    let single = bus("mode", Producers::Single);
    let seg = single.segment("trades").unwrap();
    assert_eq!(seg.producers(), Producers::Single);
    assert_eq!(seg.header().producers, layout::PRODUCERS_SINGLE);
    // Another config of the same namespace that says "many".
    let mut topic = TopicConfig::new("trades", 1 << 20, TopicKind::Trade);
    topic.producers = Producers::Many;
    let many = Bus::new(Config {
        namespace: single.config().namespace.clone(),
        topics: vec![topic],
    });
    let err = many.segment("trades").unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProducersMismatch {
                found: Producers::Single,
                asked: Producers::Many,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("single") && text.contains("many"), "{text}");
    // Opened without creating, the segment's mode rules.
    assert_eq!(
        many.open_segment("trades").unwrap().producers(),
        Producers::Single
    );
    drop(seg);
    single.remove_segments();
}

/// A publisher that died holding the topic's one entry, mid-publish: the
/// next publisher reaps it (its claimed sequence reads `Lost`, a gap of
/// one) and takes its place.
#[test]
fn single_producer_topic_takes_over_a_dead_publishers_place() {
    let (bus, seg, mut sub, dead) = first_publisher_gone("dead");
    // A dead process's owner word in the one entry, with sequence 1 claimed
    // and never written, as a publisher killed mid-publish leaves it.
    let entry = &seg.header().publishers[0];
    // Relaxed: single-threaded set-up; the reaper reads it after the
    // Release store of the owner word below.
    entry.inflight_len.store(1, Ordering::Relaxed);
    let claim = seg.ring().try_claim(&mut GatingCache::default()).unwrap();
    assert_eq!(claim.seq(), 1);
    std::mem::forget(claim);
    // Release: publishes the in-flight record with the owner word.
    entry.inflight.store(2, Ordering::Release);
    entry.pid.store(dead, Ordering::Release);

    let mut next = bus.publisher("trades").unwrap();
    assert_eq!(next.publish(&trade(2)).unwrap(), 2);
    let got = |sub: &mut zerocast_ipc::Subscriber| {
        sub.recv_timeout(Duration::from_secs(5)).map(|f| f.seq)
    };
    assert_eq!(got(&mut sub), Ok(0));
    assert_eq!(got(&mut sub), Err(RecvError::Lost(1)));
    assert_eq!(got(&mut sub), Ok(2));
    drop(next);
    drop(sub);
    drop(seg);
    bus.remove_segments();
}

/// A gating subscriber and a blocking one on a single-producer topic,
/// registered while the publisher runs on another thread: the gating one
/// gets every frame from its start in order, the blocking one is woken.
#[test]
fn single_producer_topic_serves_gating_and_blocking_subscribers() {
    let bus = bus("serve", Producers::Single);
    let total = 5_000u64;
    let mut blocking = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                start: Start::Oldest,
                wait: WaitStrategy::Blocking { spins: 0 },
                ..Default::default()
            },
        )
        .unwrap();
    let seg = bus.segment("trades").unwrap();
    let b2 = bus.clone();
    let publisher = std::thread::spawn(move || {
        let mut p = b2.publisher("trades").unwrap();
        for i in 0..total {
            // The default policy waits up to 100 ms for a gating subscriber;
            // retry past that so the test does not depend on timing.
            loop {
                match p.publish(&trade(i)) {
                    Ok(seq) => {
                        assert_eq!(seq, i, "a single publisher's sequences are gapless");
                        break;
                    }
                    Err(Error::RingFull { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    let mut gating = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                start: Start::Oldest,
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut expected = gating.next_seq().unwrap();
    while expected < total {
        let f = gating.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(f.seq, expected);
        assert_eq!(
            f.body::<TradeEvent>().unwrap().price.to_native(),
            expected as f64
        );
        expected += 1;
    }
    publisher.join().unwrap();
    let (mut received, mut lagged) = (0, 0);
    while received + lagged < total {
        match blocking.recv_timeout(Duration::from_secs(10)) {
            Ok(_) => received += 1,
            Err(RecvError::Lagged(n)) => lagged += n,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(received + lagged, total);
    drop((gating, blocking, seg));
    bus.remove_segments();
}

#[test]
fn producers_key_is_read_from_the_config_file() {
    let c = Config::from_toml(
        "[[topic]]\nname = \"t\"\nsize = \"1MB\"\nkind = \"trade\"\nproducers = \"single\"\n",
    )
    .unwrap();
    assert_eq!(c.topic("t").unwrap().producers, Producers::Single);
    let c = Config::from_toml("[[topic]]\nname = \"t\"\nsize = \"1MB\"\n").unwrap();
    assert_eq!(c.topic("t").unwrap().producers, Producers::Many);
    let err = Config::from_toml("[[topic]]\nname = \"t\"\nsize = \"1MB\"\nproducers = \"two\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("producers") || err.contains("two"), "{err}");
}

/// Runs test `name` alone in a fresh process (`cmd`: this test binary,
/// with the environment the child run needs: registration and the wake
/// protocol are per process) and asserts that it passed.
fn run_in_a_child(name: &str, cmd: &mut Command) {
    let out = cmd
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of {name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fallback where publishers cannot rely on the sleepers' membarrier
/// (a kernel without `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, forced here with
/// `ZEROCAST_WAKE_FENCE=1` in a child run of this test): publishers keep
/// the SeqCst wake fence and claim single-producer rings with a SeqCst
/// fence, and a blocking subscriber is still woken, many times over.
#[test]
fn wake_fence_fallback_still_wakes_a_blocking_subscriber() {
    use zerocast_ipc::wait::{register_publisher, WAKE_FENCE_ENV};
    if std::env::var_os(WAKE_FENCE_ENV).is_none() {
        run_in_a_child(
            "wake_fence_fallback_still_wakes_a_blocking_subscriber",
            Command::new(std::env::current_exe().unwrap()).env(WAKE_FENCE_ENV, "1"),
        );
        return;
    }
    assert!(!register_publisher(), "the env var keeps the fence");
    blocking_rounds("fence", false);
}

/// The same rounds with the membarrier protocol (where the kernel has it).
#[test]
fn single_producer_topic_wakes_a_blocking_subscriber_every_round() {
    let registered = zerocast_ipc::wait::register_publisher();
    blocking_rounds("membarrier", registered);
}

/// `rounds` times: the subscriber goes to sleep, the publisher publishes
/// once it is counted a sleeper, the subscriber must be woken by it. Each
/// sleep is one `ShmSubscriber::sleep` of `SLEEP`, with a stall bound
/// longer than that: only a wake-up ends it early. (Through `Subscriber`
/// the sleeps are cut into 20 ms slices, and a build that never wakes
/// would pass, slowly.) A sleep that lasts its whole `SLEEP` is a lost
/// wake: a liveness bound with seconds of margin, not a timing figure.
fn blocking_rounds(test: &str, asymmetric: bool) {
    const SLEEP: Duration = Duration::from_secs(5);
    let bus = bus(test, Producers::Single);
    let seg = bus.segment("trades").unwrap();
    assert_eq!(
        seg.ring().single_producer().map(|m| m.asymmetric),
        Some(asymmetric)
    );
    let mut sub = ShmSubscriber::new(
        std::sync::Arc::clone(&seg),
        &SubscriberOptions {
            wait: WaitStrategy::Blocking { spins: 0 },
            stall_bound: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .unwrap();
    let rounds = 200u64;
    let seg2 = std::sync::Arc::clone(&seg);
    let b2 = bus.clone();
    // Rounds the subscriber has finished (its sleep of the round over).
    let taken = std::sync::Arc::new(AtomicU64::new(0));
    let taken2 = std::sync::Arc::clone(&taken);
    let publisher = std::thread::spawn(move || {
        let mut p = b2.publisher("trades").unwrap();
        for i in 0..rounds {
            // Acquire: pairs with the subscriber's Release store; its
            // previous sleep (and its `sleepers` decrement) is over.
            while taken2.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            // Relaxed: only a hint of when to publish (the subscriber is
            // about to sleep, or asleep); the frame is synchronised by
            // the ring.
            while seg2.header().sleepers.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            p.publish(&trade(i)).unwrap();
        }
    });
    for i in 0..rounds {
        let started = Instant::now();
        let seq = match sub.sleep(SLEEP) {
            Ok(seq) => seq,
            Err(RecvError::Empty) => {
                assert!(
                    started.elapsed() < SLEEP,
                    "round {i}: slept the whole {SLEEP:?}: the publisher's wake was lost"
                );
                // Woken (or a spurious return): the frame is there, or
                // comes at once.
                loop {
                    match sub.poll() {
                        Ok(seq) => break seq,
                        Err(RecvError::Empty) => std::hint::spin_loop(),
                        Err(e) => panic!("round {i}: {e}"),
                    }
                }
            }
            Err(e) => panic!("round {i}: {e}"),
        };
        assert_eq!(seq, i);
        // Release: pairs with the publisher's Acquire load.
        taken.store(i + 1, Ordering::Release);
    }
    publisher.join().unwrap();
    drop((sub, seg));
    bus.remove_segments();
}

/// A forked child that drops the publisher it inherited (a child that runs
/// to its end, or unwinds) must not free the parent's publisher entry: on
/// a single-producer topic a second publisher would then take it while the
/// parent still publishes, and two producers claiming by plain store
/// corrupt the ring.
#[test]
fn regression_forked_child_dropping_an_inherited_publisher_keeps_the_single_entry() {
    let bus = bus("forkdrop", Producers::Single);
    let mut first = bus.publisher("trades").unwrap();
    assert_eq!(first.publish(&trade(0)).unwrap(), 0);
    // SAFETY: the child only drops the publisher (atomic stores into the
    // shared mapping, an Arc decrement, frees through the fork-safe
    // allocator) and leaves with _exit, running nothing else.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        drop(first);
        // SAFETY: ends the child without running the parent's atexit
        // handlers or test harness.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    match bus.publisher("trades") {
        Err(Error::SinglePublisherTaken { pid, .. }) => assert_eq!(pid, std::process::id()),
        Ok(_) => panic!("a second publisher took the live parent's single-producer entry"),
        Err(other) => panic!("expected SinglePublisherTaken, got {other:?}"),
    }
    assert_eq!(first.publish(&trade(1)).unwrap(), 1);
    drop(first);
    bus.remove_segments();
}

/// A publisher that died between its claim store and recording the
/// sequence in flight (the reaper knows nothing to declare): subscribers
/// still resolve the sequence as lost (after the stall bound), and its
/// successor writes the slot's next laps.
#[test]
fn single_producer_topic_resolves_a_dead_publishers_unrecorded_claim() {
    let (bus, seg, mut sub, dead) = first_publisher_gone("deadnorec");
    let entry = &seg.header().publishers[0];
    let claim = seg.ring().try_claim(&mut GatingCache::default()).unwrap();
    assert_eq!(claim.seq(), 1);
    std::mem::forget(claim);
    // Release: as a publisher's registration publishes its entry.
    entry.pid.store(dead, Ordering::Release);
    let mut next = bus.publisher("trades").unwrap();
    assert_eq!(next.publish(&trade(2)).unwrap(), 2);
    let got = |sub: &mut zerocast_ipc::Subscriber| {
        sub.recv_timeout(Duration::from_secs(5)).map(|f| f.seq)
    };
    assert_eq!(got(&mut sub), Ok(0));
    assert_eq!(got(&mut sub), Err(RecvError::Lost(1)));
    assert_eq!(got(&mut sub), Ok(2));
    // And a lap later the publisher can still write slot 1's next lap.
    for i in 3..(seg.ring().capacity() + 5) {
        assert_eq!(next.publish(&trade(i)).unwrap(), i);
    }
    drop(next);
    drop(sub);
    drop(seg);
    bus.remove_segments();
}

/// A single-producer topic whose one entry a reaper holds (a tombstone
/// naming a live reaper) is not "taken by a live publisher (pid 0)": the
/// error says the entry is being reaped and to retry.
#[test]
fn regression_single_publisher_entry_held_by_a_reaper_is_not_reported_as_pid_0() {
    let bus = bus("reaping", Producers::Single);
    let seg = bus.segment("trades").unwrap();
    let entry = &seg.header().publishers[0];
    // Release: as a reaper's take of the entry (ourselves: alive, so
    // nobody takes it over).
    entry.pid.store(
        layout::tombstone(layout::current_owner()),
        Ordering::Release,
    );
    let err = bus.publisher("trades").unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains("pid 0") && text.contains("retry"),
        "unclear error: {text}"
    );
    // Release: frees the entry again, as the reaper would.
    entry.pid.store(layout::FREE, Ordering::Release);
    assert!(bus.publisher("trades").is_ok());
    drop(seg);
    bus.remove_segments();
}

/// A forked child (a daemon's double fork, say) that publishes through the
/// publisher it inherited would be a second producer claiming by plain
/// store beside its parent: refused with an error, nothing claimed.
#[test]
fn regression_forked_child_cannot_publish_through_an_inherited_publisher() {
    let bus = bus("forkpub", Producers::Single);
    let mut first = bus.publisher("trades").unwrap();
    assert_eq!(first.publish(&trade(0)).unwrap(), 0);
    // SAFETY: the child only tries one publish (atomics in the shared
    // mapping; an error string on refusal, through the fork-safe
    // allocator) and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let code = match first.publish(&trade(1)) {
            Err(Error::PublisherInheritedByFork { .. }) => 0,
            Err(_) => 2,
            Ok(_) => 1,
        };
        // SAFETY: ends the child without running the test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status));
    match libc::WEXITSTATUS(status) {
        0 => {}
        1 => panic!("the forked child published through its parent's publisher"),
        other => panic!("the forked child's publish failed otherwise ({other})"),
    }
    assert_eq!(
        first.publish(&trade(1)).unwrap(),
        1,
        "the child claimed nothing"
    );
    drop(first);
    bus.remove_segments();
}

/// A forked child that drops the subscriber it inherited must leave the
/// parent's subscriber entry and gating hold alone: freed, the publisher
/// would overwrite frames the parent's gating subscriber was promised.
#[test]
fn regression_forked_child_dropping_an_inherited_subscriber_keeps_the_gating_hold() {
    let bus = bus("forksub", Producers::Single);
    let seg = bus.segment("trades").unwrap();
    let gating = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let held = |seg: &zerocast_ipc::Segment| {
        seg.header()
            .subscribers
            .iter()
            // Relaxed: a snapshot; the child has exited (waitpid).
            .filter(|s| s.pid.load(Ordering::Relaxed) != layout::FREE)
            .count()
    };
    assert_eq!(held(&seg), 1);
    // SAFETY: the child only drops the subscriber (atomics in the shared
    // mapping, frees through the fork-safe allocator) and leaves with
    // _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        drop(gating);
        // SAFETY: ends the child without running the test harness.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(
        held(&seg),
        1,
        "the child freed the parent's subscriber entry"
    );
    assert!(
        seg.ring().claims_are_checked() || (0..16).any(|i| seg.ring().gating_position(i).is_some()),
        "the child freed the parent's gating hold"
    );
    drop(gating);
    assert_eq!(held(&seg), 0);
    drop(seg);
    bus.remove_segments();
}

/// Set in the child run of `regression_a_subscriber_registered_for_membarrier`.
const SUBSCRIBE_ONLY_CHILD_ENV: &str = "ZEROCAST_TEST_SUBSCRIBE_ONLY";

/// Regression: opening a single-producer topic registered the process for
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, so every sleeping
/// subscriber's barrier (and every gating registration's) interrupted the
/// CPUs of processes that only subscribe, too. Only a process that creates
/// a publisher registers now; its publisher still claims with the compiler
/// fence alone, through the segment's producer handle, although the
/// segment was opened before it registered. Run in a fresh process (a
/// child run of this test): registration is once per process.
#[test]
fn regression_a_subscriber_registered_for_membarrier() {
    use zerocast_ipc::wait::{global_expedited_supported, publisher_registered};
    if std::env::var_os(SUBSCRIBE_ONLY_CHILD_ENV).is_none() {
        run_in_a_child(
            "regression_a_subscriber_registered_for_membarrier",
            Command::new(std::env::current_exe().unwrap())
                .env(SUBSCRIBE_ONLY_CHILD_ENV, "1")
                .env_remove(zerocast_ipc::wait::WAKE_FENCE_ENV),
        );
        return;
    }
    let bus = bus("subonly", Producers::Single);
    let seg = bus.segment("trades").unwrap();
    let mut gating = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                gating: true,
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    let mut sleeper = ShmSubscriber::new(
        std::sync::Arc::clone(&seg),
        &SubscriberOptions {
            wait: WaitStrategy::Blocking { spins: 0 },
            ..Default::default()
        },
    )
    .unwrap();
    // One sleep: the sleeper's barrier.
    assert_eq!(
        sleeper.sleep(Duration::from_millis(1)),
        Err(RecvError::Empty)
    );
    assert!(
        !publisher_registered(),
        "a process that only subscribes registered for membarrier"
    );
    assert_eq!(
        seg.ring().single_producer().map(|m| m.asymmetric),
        Some(false),
        "an unregistered process's ring handle skips the claim fence"
    );
    // A publisher registers the process; it claims through the asymmetric
    // handle of the segment opened before.
    let mut publisher = bus.publisher("trades").unwrap();
    assert_eq!(publisher_registered(), global_expedited_supported());
    assert_eq!(
        seg.producer_ring().single_producer().map(|m| m.asymmetric),
        Some(publisher_registered())
    );
    for i in 0..3 {
        assert_eq!(publisher.publish(&trade(i)).unwrap(), i);
    }
    for i in 0..3 {
        assert_eq!(gating.try_recv().unwrap().seq, i);
    }
    drop((publisher, gating, sleeper));
    bus.remove_segments();
}
