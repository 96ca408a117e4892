//! Publisher and subscribers in one process, over both transports.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::{
    Bus, Config, Error, RecvError, Start, SubscriberOptions, TopicConfig, TopicKind, Transport,
    WaitStrategy,
};

fn bus(test: &str, transport: Transport) -> Bus {
    let mut topic = TopicConfig::new("trades", 1 << 20, TopicKind::Trade);
    topic.transport = transport;
    let bus = Bus::new(Config {
        namespace: format!("t{}-{test}", std::process::id()),
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
        direction: if i % 2 == 0 {
            Direction::Buy
        } else {
            Direction::Sell
        },
        timestamp: i as i64,
    }
}

fn round_trip(bus: &Bus, wait: WaitStrategy, n: u64) {
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                wait,
                start: Start::Newest,
                ..Default::default()
            },
        )
        .unwrap();
    let mut publisher = bus.publisher("trades").unwrap();
    let first = publisher.publish(&trade(0)).unwrap();
    for i in 1..n {
        publisher.publish(&trade(i)).unwrap();
    }
    publisher.publish_batch(&[trade(n), trade(n + 1)]).unwrap();
    for i in 0..n + 2 {
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(f.seq, first + i);
        let body = f.body::<TradeEvent>().unwrap();
        assert_eq!(body.price.to_native(), i as f64);
    }
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn shm_round_trip_every_wait_strategy() {
    let bus = bus("shm", Transport::Shm);
    round_trip(&bus, WaitStrategy::BusySpin, 1000);
    round_trip(&bus, WaitStrategy::SpinThenYield { spins: 10 }, 1000);
    round_trip(&bus, WaitStrategy::Blocking { spins: 10 }, 1000);
    bus.remove_segments();
}

#[test]
fn iceoryx2_round_trip() {
    let bus = bus("iox", Transport::Iceoryx2);
    // Within iceoryx2's per-subscriber queue (256), nothing is dropped.
    round_trip(&bus, WaitStrategy::BusySpin, 200);
    round_trip(&bus, WaitStrategy::Blocking { spins: 10 }, 200);
}

/// Regression: iceoryx2's safe overflow dropped the oldest frames of a burst
/// sent before the subscriber's first read, and the adapter reported nothing
/// (it only compared a publisher's frames with that publisher's previous
/// one). The drop is now reported with its exact size.
#[test]
fn regression_iceoryx2_overflow_before_the_first_read_is_reported() {
    let bus = bus("iox-overflow", Transport::Iceoryx2);
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                wait: WaitStrategy::BusySpin,
                ..Default::default()
            },
        )
        .unwrap();
    let mut publisher = bus.publisher("trades").unwrap();
    let sent = 1000u64;
    for i in 0..sent {
        publisher.publish(&trade(i)).unwrap();
    }
    let (mut received, mut lagged, mut last) = (0u64, 0u64, None);
    loop {
        match sub.recv_timeout(Duration::from_millis(200)) {
            Ok(f) => {
                received += 1;
                last = Some(f.seq);
            }
            Err(RecvError::Lagged(n)) => lagged += n,
            Err(RecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(lagged > 0, "the burst overflowed a 256-frame queue");
    assert_eq!(
        received + lagged,
        sent,
        "every frame is either received or reported"
    );
    assert_eq!(last, Some(sent - 1));
}

/// A blocking subscriber sleeps on the futex in slices of 20 ms (its
/// re-poll interval): a frame published while it sleeps must wake it
/// through the publisher's futex wake, not the end of the slice. Each round
/// publishes about 2 ms after the subscriber went to sleep and counts the
/// round as woken if the frame arrived less than 15 ms after `recv` was
/// called, which the slice's timer (20 ms or later after the call) cannot
/// do. Without the futex wake no round counts; a noisy machine may delay a
/// few rounds past 15 ms, so a majority must count.
#[test]
fn blocking_subscriber_wakes_on_publish_from_another_thread() {
    let bus = bus("wake", Transport::Shm);
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                wait: WaitStrategy::Blocking { spins: 0 },
                ..Default::default()
            },
        )
        .unwrap();
    let seg = bus.segment("trades").unwrap();
    let rounds = 10u64;
    let (go, went) = std::sync::mpsc::channel::<()>();
    let b2 = bus.clone();
    let t = std::thread::spawn(move || {
        let mut publisher = b2.publisher("trades").unwrap();
        for i in 0..rounds {
            went.recv().unwrap();
            // Relaxed: only a hint of when to publish; the frame itself is
            // synchronised by the ring.
            while seg
                .header()
                .sleepers
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
            {
                std::hint::spin_loop();
            }
            // Let it get from counting itself a sleeper into FUTEX_WAIT
            // (this only makes the check sharper: a frame published before
            // it sleeps is found without any wake).
            std::thread::sleep(Duration::from_millis(2));
            publisher.publish(&trade(i)).unwrap();
        }
    });
    let mut woken = 0;
    let mut took = Vec::new();
    for i in 0..rounds {
        go.send(()).unwrap();
        let called = Instant::now();
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        let elapsed = called.elapsed();
        assert_eq!(f.body::<TradeEvent>().unwrap().price.to_native(), i as f64);
        took.push(elapsed);
        if elapsed < Duration::from_millis(15) {
            woken += 1;
        }
    }
    t.join().unwrap();
    assert!(
        woken * 2 > rounds,
        "only {woken} of {rounds} receives returned before the 20 ms re-poll \
         could have fired; took {took:?}"
    );
    bus.remove_segments();
}

#[test]
fn slow_subscriber_gets_exact_lag() {
    let bus = bus("lag", Transport::Shm);
    let seg = bus.segment("trades").unwrap();
    let cap = seg.ring().capacity();
    let mut sub = bus
        .subscriber("trades", SubscriberOptions::default())
        .unwrap();
    let mut publisher = bus.publisher("trades").unwrap();
    let total = cap * 2 + 10;
    for i in 0..total {
        publisher.publish(&trade(i)).unwrap();
    }
    let (mut received, mut lagged) = (0, 0);
    loop {
        match sub.try_recv() {
            Ok(_) => received += 1,
            Err(RecvError::Lagged(n)) => lagged += n,
            Err(RecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(lagged, total - cap);
    assert_eq!(received + lagged, total);
    bus.remove_segments();
}

#[test]
fn gating_subscriber_holds_the_publisher() {
    let bus = bus("gate", Transport::Shm);
    let seg = bus.segment("trades").unwrap();
    let cap = seg.ring().capacity();
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut publisher = bus
        .publisher_with(
            "trades",
            zerocast_ipc::PublisherOptions {
                gating: zerocast_ipc::GatingPolicy::Fail,
                ..Default::default()
            },
        )
        .unwrap();
    for i in 0..cap {
        publisher.publish(&trade(i)).unwrap();
    }
    assert!(matches!(
        publisher.publish(&trade(cap)),
        Err(Error::RingFull { .. })
    ));
    // Reading releases (every 64 frames, and when the subscriber runs dry).
    let mut read = 0;
    while sub.try_recv().is_ok() {
        read += 1;
    }
    assert_eq!(read, cap);
    publisher.publish(&trade(cap)).unwrap();
    drop(sub); // unregisters: the publisher is free again
    for i in 0..cap {
        publisher.publish(&trade(i)).unwrap();
    }
    bus.remove_segments();
}

#[test]
fn a_publisher_held_by_a_stopped_gating_subscriber_counts_its_gating_waits() {
    let bus = bus("gatewaits", Transport::Shm);
    let seg = bus.segment("trades").unwrap();
    let cap = seg.ring().capacity();
    // A gating subscriber that never reads: a stopped process, as far as
    // the publisher can tell.
    let _stopped = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let wait = Duration::from_millis(5);
    let mut publisher = bus
        .publisher_with(
            "trades",
            zerocast_ipc::PublisherOptions {
                gating: zerocast_ipc::GatingPolicy::Wait(wait),
                ..Default::default()
            },
        )
        .unwrap();
    // The only publisher: the only entry in use.
    let entry = seg
        .header()
        .publishers
        .iter()
        .find(|p| p.pid.load(Ordering::Acquire) != zerocast_ipc::layout::FREE)
        .unwrap();
    let waits = || {
        (
            entry.gating_waits.load(Ordering::Relaxed),
            entry.gating_wait_ns.load(Ordering::Relaxed),
        )
    };
    for i in 0..cap {
        publisher.publish(&trade(i)).unwrap();
    }
    // Room for every one of them: no wait counted.
    assert_eq!(waits(), (0, 0));
    for i in 0..2 {
        assert!(matches!(
            publisher.publish(&trade(cap + i)),
            Err(Error::RingFull { .. })
        ));
    }
    let (n, ns) = waits();
    assert_eq!(n, 2, "two publishes waited");
    assert!(
        ns >= 2 * wait.as_nanos() as u64,
        "each waited its whole limit: {ns} ns in all"
    );
    // A batch that must wait counts once.
    assert!(publisher.publish_batch(&[trade(1), trade(2)]).is_err());
    assert_eq!(waits().0, 3);
    bus.remove_segments();
}

/// The gating-wait counters are words any process of this user may write
/// (a hostile or corrupt segment): a publisher that waits with them at
/// their maximum must still publish (wrapping the count, saturating the
/// time), not panic on an overflow in a debug build.
#[test]
fn regression_gating_wait_counters_at_their_maximum_do_not_panic_the_publisher() {
    let bus = bus("gatewaitmax", Transport::Shm);
    let seg = bus.segment("trades").unwrap();
    let cap = seg.ring().capacity();
    let _stopped = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut publisher = bus
        .publisher_with(
            "trades",
            zerocast_ipc::PublisherOptions {
                gating: zerocast_ipc::GatingPolicy::Fail,
                ..Default::default()
            },
        )
        .unwrap();
    let entry = seg
        .header()
        .publishers
        .iter()
        .find(|p| p.pid.load(Ordering::Acquire) != zerocast_ipc::layout::FREE)
        .unwrap();
    for i in 0..cap {
        publisher.publish(&trade(i)).unwrap();
    }
    // Relaxed: the test is the only other thread; the publisher is idle.
    entry.gating_waits.store(u64::MAX, Ordering::Relaxed);
    entry.gating_wait_ns.store(u64::MAX, Ordering::Relaxed);
    let full = publisher.publish(&trade(cap));
    assert!(matches!(full, Err(Error::RingFull { .. })), "{full:?}");
    // Relaxed: as above.
    assert_eq!(entry.gating_waits.load(Ordering::Relaxed), 0, "wrapped");
    assert_eq!(entry.gating_wait_ns.load(Ordering::Relaxed), u64::MAX);
    bus.remove_segments();
}

#[test]
fn two_namespaces_do_not_share_topics() {
    let a = bus("nsa", Transport::Shm);
    let b = bus("nsb", Transport::Shm);
    let mut sub_b = b
        .subscriber("trades", SubscriberOptions::default())
        .unwrap();
    a.publisher("trades").unwrap().publish(&trade(1)).unwrap();
    assert_eq!(sub_b.try_recv().unwrap_err(), RecvError::Empty);
    a.remove_segments();
    b.remove_segments();
}

/// Regression: openers racing a slow creator used to map the file before it
/// was initialised and give up with `NotReady` (seen with 1000 subscribers
/// on a loaded machine). Segments are now published fully built.
#[test]
fn regression_concurrent_open_never_sees_an_uninitialised_segment() {
    let bus = Bus::new(Config {
        namespace: format!("t{}-race", std::process::id()),
        // A large topic makes initialisation slow enough to race.
        topics: vec![TopicConfig::new("big", 64 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    let capacities: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    bus.segment("big")
                        .expect("open or create")
                        .ring()
                        .capacity()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(capacities.iter().all(|&c| c == capacities[0] && c > 0));
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("t{}-race", std::process::id()))
        })
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the published segment remains: {leftovers:?}"
    );
    bus.remove_segments();
}

/// Handles can move to the thread that uses them, whatever the transport.
#[test]
fn publisher_and_subscriber_are_send() {
    fn send<T: Send>() {}
    send::<zerocast_ipc::Publisher>();
    send::<zerocast_ipc::Subscriber>();
}

/// Regression: `Subscriber::recv_batch` stopped at a loss that followed
/// frames in the same batch but moved past it, so the loss was never
/// reported (a recorder then logged frames 0 and 2 with no marker for 1).
/// The batch now ends at the event and the next call returns it.
#[test]
fn regression_recv_batch_keeps_lost_after_frames() {
    let bus = bus("batch-lost", Transport::Shm);
    let mut sub = bus
        .subscriber(
            "trades",
            SubscriberOptions {
                start: Start::Newest,
                ..Default::default()
            },
        )
        .unwrap();
    let seg = bus.segment("trades").unwrap();
    let mut publisher = bus.publisher("trades").unwrap();
    let first = publisher.publish(&trade(0)).unwrap();
    // A claim dropped unwritten: its sequence is declared lost.
    let lost = {
        let claim = seg
            .ring()
            .try_claim(&mut zerocast_core::broadcast::GatingCache::default())
            .unwrap();
        claim.seq()
    };
    assert_eq!(lost, first + 1);
    publisher.publish(&trade(2)).unwrap();
    let mut seen = Vec::new();
    assert_eq!(sub.recv_batch(10, |f| seen.push(f.seq)), Ok(1));
    assert_eq!(seen, [first]);
    assert_eq!(
        sub.recv_batch(10, |f| seen.push(f.seq)),
        Err(RecvError::Lost(lost))
    );
    assert_eq!(sub.recv_batch(10, |f| seen.push(f.seq)), Ok(1));
    assert_eq!(seen, [first, lost + 1]);
    assert_eq!(sub.recv_batch(10, |_| {}), Ok(0));
    bus.remove_segments();
}

/// Regression: a lag found after frames in one `recv_batch` was dropped
/// (shm and iceoryx2): frames + lags no longer added up to what was sent.
#[test]
fn regression_recv_batch_keeps_lagged_after_frames() {
    for (name, transport) in [
        ("batch-lag-shm", Transport::Shm),
        ("batch-lag-iox", Transport::Iceoryx2),
    ] {
        // A small ring (shm) so that the reader is lapped mid-batch.
        let mut topic = TopicConfig::new("trades", 1 << 17, TopicKind::Trade);
        topic.transport = transport;
        let bus = Bus::new(Config {
            namespace: format!("t{}-{name}", std::process::id()),
            topics: vec![topic],
        });
        bus.remove_segments();
        let mut sub = bus
            .subscriber(
                "trades",
                SubscriberOptions {
                    wait: WaitStrategy::BusySpin,
                    ..Default::default()
                },
            )
            .unwrap();
        let sent = 20_000u64;
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let mut publisher = bus.publisher("trades").unwrap();
                for i in 0..sent {
                    publisher.publish(&trade(i)).unwrap();
                }
            })
        };
        let (mut received, mut lagged, mut last) = (0u64, 0u64, None);
        let mut idle = 0;
        while idle < 20_000 || !publisher.is_finished() {
            let mut batch = Vec::new();
            // A slow callback, so that the publisher laps the reader (shm)
            // or overflows its queue (iceoryx2) in the middle of a batch.
            match sub.recv_batch(64, |f| {
                batch.push(f.seq);
                for i in 0..2_000u64 {
                    std::hint::black_box(i);
                }
            }) {
                Ok(0) => {
                    idle += 1;
                    std::thread::yield_now();
                    continue;
                }
                Ok(n) => {
                    idle = 0;
                    received += n as u64;
                    for seq in batch {
                        assert!(last.is_none_or(|l| seq > l), "{name}: out of order");
                        last = Some(seq);
                    }
                }
                Err(RecvError::Lagged(n)) => lagged += n,
                Err(RecvError::Empty) => {
                    idle += 1;
                    std::thread::yield_now();
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
        publisher.join().unwrap();
        assert_eq!(last, Some(sent - 1), "{name}: the last frame arrived");
        assert_eq!(
            received + lagged,
            sent,
            "{name}: every frame is received or reported as lagged"
        );
        bus.remove_segments();
    }
}

/// `publish_at` stamps the caller's time into the frame header and reads no
/// clock (a clock reading would be the present, never these times), on
/// both transports; `loan_at` does on shared memory and says what to use
/// instead on iceoryx2; `publish` after them reads the clock again.
#[test]
fn publish_at_stamps_the_callers_time_on_both_transports() {
    for (test, transport) in [("at-shm", Transport::Shm), ("at-iox", Transport::Iceoryx2)] {
        let bus = bus(test, transport);
        // The default starts at the newest frame: before the first here.
        let mut sub = bus
            .subscriber("trades", SubscriberOptions::default())
            .unwrap();
        let mut publisher = bus.publisher("trades").unwrap();
        // A time from the past, one going back, the largest and 0 (which
        // `Received::publish_ns` also gives for bytes with no header).
        let times = [1_000_000_007, 5, u64::MAX, 0];
        for (i, &t) in times.iter().enumerate() {
            publisher.publish_at(&trade(i as u64), t).unwrap();
        }
        let shm = transport == Transport::Shm;
        if shm {
            publisher
                .loan_at::<TradeEvent>(77)
                .unwrap()
                .write(&trade(4))
                .commit();
        } else {
            let err = publisher.loan_at::<TradeEvent>(77).unwrap_err();
            assert!(err.to_string().contains("publish_at()"), "{err}");
        }
        let before = zerocast_ipc::layout::now_ns();
        publisher.publish(&trade(5)).unwrap();
        let after = zerocast_ipc::layout::now_ns();
        let mut expect: Vec<(u64, u64)> = times
            .iter()
            .copied()
            .zip(0..)
            .map(|(t, i)| (i, t))
            .collect();
        if shm {
            expect.push((4, 77));
        }
        for (price, t) in expect {
            let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
            let body = f.body::<TradeEvent>().unwrap();
            assert_eq!(
                (body.price.to_native(), f.publish_ns()),
                (price as f64, t),
                "{test}"
            );
        }
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(f.body::<TradeEvent>().unwrap().price.to_native(), 5.0);
        assert!(
            (before..=after).contains(&f.publish_ns()),
            "{test}: publish read no clock"
        );
        assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
        bus.remove_segments();
    }
}
