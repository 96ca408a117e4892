//! Acks and reliable publishing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zerocast_core::frame::{id::id, Heartbeat};
use zerocast_ipc::{
    Bus, Config, PublisherOptions, RecvError, Start, SubscriberOptions, TopicConfig, TopicKind,
};
use zerocast_runtime::reliable::{
    Acker, Quorum, ReliableError, ReliableOptions, ReliablePublisher,
};

fn bus(test: &str) -> Bus {
    let bus = Bus::new(Config {
        namespace: format!("rel{}-{test}", std::process::id()),
        topics: vec![TopicConfig::new("orders", 1 << 20, TopicKind::Any)],
    });
    bus.remove_segments();
    bus
}

fn beat(n: u64) -> Heartbeat {
    Heartbeat {
        publisher_id: id("engine").unwrap(),
        sequence: n,
        timestamp: 0,
    }
}

/// A subscriber thread that acks what it handles; `skip_originals` makes it
/// ignore first transmissions (as if it missed them) and handle only
/// retransmissions.
fn acking_subscriber<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    bus: &'s Bus,
    name: &'static str,
    skip_originals: bool,
    stop: &'s AtomicBool,
) -> std::thread::ScopedJoinHandle<'s, Vec<(u64, Option<u64>)>> {
    let mut sub = bus
        .subscriber(
            "orders",
            SubscriberOptions {
                name: name.into(),
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    let mut acker = Acker::new(bus, "orders", name).unwrap();
    s.spawn(move || {
        let mut seen = Vec::new();
        // Relaxed: a stop flag; the scope join synchronises.
        while !stop.load(Ordering::Relaxed) {
            match sub.recv_timeout(Duration::from_millis(10)) {
                Ok(f) => {
                    seen.push((f.seq, f.retransmit_of()));
                    if skip_originals && f.retransmit_of().is_none() {
                        continue;
                    }
                    if !acker.is_duplicate(&f) {
                        // process it here
                    }
                    acker.handled(&f);
                }
                Err(RecvError::Empty) => {}
                Err(e) => panic!("{e}"),
            }
        }
        seen
    })
}

/// Regression: the seed's reliable publish incremented the sequence twice.
#[test]
fn regression_reliable_publish_takes_exactly_one_sequence() {
    let bus = bus("one");
    let stop = AtomicBool::new(false);
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    std::thread::scope(|s| {
        let a = acking_subscriber(s, &bus, "risk", false, &stop);
        let b = acking_subscriber(s, &bus, "db", false, &stop);
        let quorum = Quorum::All(vec!["risk".into(), "db".into()]);
        for n in 0..20 {
            let seq = p
                .publish_reliable(
                    &beat(n),
                    &quorum,
                    ReliableOptions {
                        timeout: Duration::from_secs(2),
                        max_retries: 0,
                    },
                )
                .unwrap();
            assert_eq!(seq, n, "one sequence per reliable publish");
        }
        assert_eq!(bus.segment("orders").unwrap().ring().head(), 20);
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        for h in [a, b] {
            let seen = h.join().unwrap();
            assert_eq!(
                seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                (0..20).collect::<Vec<_>>()
            );
        }
    });
    bus.remove_segments();
}

/// Regression: the seed never restarted its retry timer, so every retry
/// after the first fired at once. Each attempt now waits its full timeout.
#[test]
fn regression_retry_timer_restarts_with_every_attempt() {
    let bus = bus("timer");
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    let t0 = Instant::now();
    let err = p
        .publish_reliable(
            &beat(1),
            &Quorum::All(vec!["risk".into()]),
            ReliableOptions {
                timeout: Duration::from_millis(100),
                max_retries: 2,
            },
        )
        .unwrap_err();
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "three attempts of 100 ms each, took {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    match &err {
        ReliableError::NotAcked {
            seq,
            attempts,
            missing,
        } => {
            assert_eq!((*seq, *attempts), (0, 3));
            assert!(missing.contains("risk"), "{missing}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("not acked after 3 attempts"));
    // The original and two retransmissions.
    assert_eq!(bus.segment("orders").unwrap().ring().head(), 3);
    bus.remove_segments();
}

#[test]
fn retransmission_reaches_a_subscriber_that_missed_the_original() {
    let bus = bus("retx");
    let stop = AtomicBool::new(false);
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    std::thread::scope(|s| {
        let sub = acking_subscriber(s, &bus, "late", true, &stop);
        let seq = p
            .publish_reliable(
                &beat(7),
                &Quorum::All(vec!["late".into()]),
                ReliableOptions {
                    timeout: Duration::from_millis(100),
                    max_retries: 3,
                },
            )
            .unwrap();
        assert_eq!(seq, 1, "acked on the first retransmission");
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        let seen = sub.join().unwrap();
        assert_eq!(&seen[..2], &[(0, None), (1, Some(0))]);
    });
    bus.remove_segments();
}

#[test]
fn quorum_of_one_is_met_by_either_subscriber() {
    let bus = bus("quorum");
    let stop = AtomicBool::new(false);
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    std::thread::scope(|s| {
        let sub = acking_subscriber(s, &bus, "only", false, &stop);
        let seq = p
            .publish_reliable(&beat(1), &Quorum::AtLeast(1), ReliableOptions::default())
            .unwrap();
        assert_eq!(seq, 0);
        let err = p
            .publish_reliable(
                &beat(2),
                &Quorum::AtLeast(2),
                ReliableOptions {
                    timeout: Duration::from_millis(50),
                    max_retries: 0,
                },
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("1 of at least 2 subscribers acked"),
            "{err}"
        );
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        sub.join().unwrap();
    });
    bus.remove_segments();
}

const VICTIM_NAMESPACE: &str = "ZEROCAST_TEST_ACK_VICTIM_NS";

/// The child side of the test below: acks ever higher sequences as
/// subscriber "victim" in a tight loop until it is killed. Says "acking"
/// on stdout after its first ack so that the parent kills it while it acks.
fn run_ack_victim(namespace: &str) -> ! {
    let bus = Bus::new(Config {
        namespace: namespace.to_owned(),
        topics: vec![TopicConfig::new("orders", 1 << 20, TopicKind::Any)],
    });
    let acker = Acker::new(&bus, "orders", "victim").unwrap();
    let mut seq = 0u64;
    loop {
        acker.ack(seq);
        // libtest may have printed "test NAME ... " on this line already.
        if seq == 0 {
            use std::io::Write;
            let mut out = std::io::stdout();
            writeln!(out, "acking").unwrap();
            out.flush().unwrap();
        }
        seq += 1;
    }
}

/// Regression: acks went through an `mpmc` ring, which a producer that dies
/// between claiming a slot and writing it wedges for good, so a subscriber
/// SIGKILLed while acking stopped every later ack from reaching the
/// publisher. Acker processes are killed at random points of a tight ack
/// loop; after each kill another subscriber's ack must still complete a
/// reliable publish.
#[test]
fn regression_killed_acker_does_not_wedge_ack_channel() {
    if let Ok(ns) = std::env::var(VICTIM_NAMESPACE) {
        run_ack_victim(&ns);
    }
    use std::io::BufRead;
    let bus = bus("killed");
    let namespace = bus.config().namespace.clone();
    let stop = AtomicBool::new(false);
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    let rounds = 30;
    // xorshift64 seeded from the pid: a different kill schedule per run.
    let mut rng = u64::from(std::process::id()) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let acks = bus.acks("orders").unwrap();
    let victim_id = id("victim").unwrap();
    let mut victim_acked = 0;
    /// Stops the survivor however the scope ends, so that a failed
    /// assertion fails the test instead of hanging it.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            // Relaxed: see above.
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let survivor = acking_subscriber(s, &bus, "survivor", false, &stop);
        let _stop = StopOnDrop(&stop);
        for round in 0..rounds {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "regression_killed_acker_does_not_wedge_ack_channel",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(VICTIM_NAMESPACE, &namespace)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let ready = lines.find(|l| l.as_ref().is_ok_and(|l| l.ends_with("acking")));
            assert!(ready.is_some(), "round {round}: the victim never acked");
            // Keep the publisher reading acks while the victim acks, for a
            // random while (this only picks the kill point).
            let until = Instant::now() + Duration::from_micros(next() % 3_000);
            while Instant::now() < until {
                let _ = p.publish_reliable(
                    &beat(round),
                    &Quorum::AtLeast(1),
                    ReliableOptions {
                        timeout: Duration::from_millis(1),
                        max_retries: 0,
                    },
                );
            }
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // child's, not yet waited for, so it cannot have been reused.
            let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
            child.wait().unwrap();
            let acked = p.publish_reliable(
                &beat(round),
                &Quorum::All(vec!["survivor".into()]),
                ReliableOptions {
                    timeout: Duration::from_secs(2),
                    max_retries: 0,
                },
            );
            if let Err(e) = acked {
                panic!("round {round}: after killing an acker: {e}");
            }
            // Each restarted victim took its entry over (it restarts its
            // acks from 0), and the name's acked position never went back.
            let now = acks.acked_up_to(&victim_id);
            assert!(
                now >= victim_acked,
                "round {round}: {now} after {victim_acked}"
            );
            victim_acked = now;
            assert_eq!(acks.acked().len(), 2, "round {round}: {:?}", acks.acked());
        }
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        survivor.join().unwrap();
    });
    bus.remove_segments();
}

/// A bus whose "orders" ring holds only a few slots, so that a subscriber
/// can be lapped.
fn small_bus(test: &str) -> Bus {
    let mut size = 4096;
    let topic = loop {
        let t = TopicConfig::new("orders", size, TopicKind::Any);
        if t.ring_shape().is_ok_and(|(cap, _)| cap >= 8) {
            break t;
        }
        size += 4096;
    };
    let bus = Bus::new(Config {
        namespace: format!("rel{}-{test}", std::process::id()),
        topics: vec![topic],
    });
    bus.remove_segments();
    bus
}

/// Regression: `Acker::handled` acked `frame.seq` even after a gap, so a
/// subscriber that was lapped past a reliable frame "acked" it with the
/// first later frame it read. Now its acked position stops at the gap
/// until it handles the publisher's retransmission of the frame.
#[test]
fn regression_lagged_acker_does_not_ack_the_frame_it_missed() {
    let bus = small_bus("lagged");
    let capacity = bus.segment("orders").unwrap().ring().capacity();
    let mut sub = bus
        .subscriber(
            "orders",
            SubscriberOptions {
                name: "lagger".into(),
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    let mut acker = Acker::new(&bus, "orders", "lagger").unwrap();
    let mut plain = bus.publisher("orders").unwrap();
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    let ring_head = || bus.segment("orders").unwrap().ring().head();
    std::thread::scope(|s| {
        let reliable = s.spawn(move || {
            p.publish_reliable(
                &beat(1),
                &Quorum::All(vec!["lagger".into()]),
                ReliableOptions {
                    timeout: Duration::from_millis(200),
                    max_retries: 20,
                },
            )
        });
        // The reliable frame is sequence 0; then a lap and more of plain
        // frames overwrite it before the subscriber reads anything.
        while ring_head() == 0 {
            std::thread::yield_now();
        }
        for n in 0..capacity + 3 {
            plain.publish(&beat(100 + n)).unwrap();
        }
        let mut lagged = false;
        let retransmission = loop {
            match sub.recv_timeout(Duration::from_secs(10)) {
                Ok(f) => {
                    let retx = f.retransmit_of();
                    acker.handled(&f);
                    if retx == Some(0) {
                        break f.seq;
                    }
                    assert!(
                        acker.acked_up_to() == 0,
                        "acked up to {} after handling {} past a gap over the \
                         reliable frame 0",
                        acker.acked_up_to(),
                        f.seq
                    );
                }
                Err(RecvError::Lagged(_)) => lagged = true,
                Err(e) => panic!("{e}"),
            }
        };
        assert!(lagged, "the subscriber was lapped");
        assert_eq!(acker.acked_up_to(), retransmission + 1);
        let acked = reliable.join().unwrap().unwrap();
        assert_eq!(acked, retransmission, "acked through the retransmission");
    });
    bus.remove_segments();
}

/// A reliable publish with `timeout: Duration::MAX` ("wait as long as it
/// takes") panicked with an Instant overflow before it looked for an ack.
#[test]
fn regression_reliable_timeout_of_duration_max_does_not_overflow() {
    let bus = bus("tmax");
    let stop = AtomicBool::new(false);
    let mut p = ReliablePublisher::new(&bus, "orders", PublisherOptions::default()).unwrap();
    std::thread::scope(|s| {
        let a = acking_subscriber(s, &bus, "risk", false, &stop);
        // A panic must still stop the acking thread, or the scope hangs.
        let seq = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.publish_reliable(
                &beat(0),
                &Quorum::All(vec!["risk".into()]),
                ReliableOptions {
                    timeout: Duration::MAX,
                    max_retries: 0,
                },
            )
        }));
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        let _ = a.join();
        assert_eq!(seq.expect("publish_reliable panicked").unwrap(), 0);
    });
    drop(p);
    bus.remove_segments();
}

/// Regression: on iceoryx2 the frame header's word 3 carried the
/// publisher's start time, which `Received::retransmit_of` read as a
/// retransmission mark, so an `Acker` took every frame after the first for
/// a duplicate of it. Every frame over an iceoryx2 topic is an original,
/// processed once and acked.
#[cfg(feature = "iceoryx2")]
#[test]
fn regression_acker_on_iceoryx2_topic_acks_every_frame() {
    let mut topic = TopicConfig::new("orders", 1 << 20, TopicKind::Any);
    topic.transport = zerocast_ipc::Transport::Iceoryx2;
    let bus = Bus::new(Config {
        namespace: format!("rel{}-iox", std::process::id()),
        topics: vec![topic],
    });
    let mut sub = bus
        .subscriber(
            "orders",
            SubscriberOptions {
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    let mut acker = Acker::new(&bus, "orders", "iox-acker").unwrap();
    let mut publisher = bus.publisher("orders").unwrap();
    const N: u64 = 20;
    for n in 0..N {
        publisher.publish(&beat(n)).unwrap();
    }
    let mut processed = Vec::new();
    while processed.len() < N as usize {
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(f.retransmit_of(), None, "frame {} is an original", f.seq);
        if !acker.is_duplicate(&f) {
            processed.push(f.seq);
        }
        acker.handled(&f);
    }
    assert_eq!(processed, (0..N).collect::<Vec<_>>());
    assert_eq!(acker.acked_up_to(), N);
    let _ = std::fs::remove_file(bus.config().ack_path("orders"));
}
