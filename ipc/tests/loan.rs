//! The loan API: a frame written in place into its ring slot, committed or
//! dropped.

use std::time::Duration;

use zerocast_core::frame::{self, id::id, Direction, FrameHeader, Heartbeat, MarketL2, TradeEvent};
use zerocast_ipc::{
    Bus, Config, Publisher, RecvError, Start, SubscriberOptions, TopicConfig, TopicKind,
};

fn bus(test: &str, kind: TopicKind) -> Bus {
    let bus = Bus::new(Config {
        namespace: format!("loan{}-{test}", std::process::id()),
        topics: vec![TopicConfig::new("t", 128 << 10, kind)],
    });
    bus.remove_segments();
    bus
}

fn trade(i: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id(&format!("T{i}")).unwrap(),
        order_id: id(&format!("O{i}")).unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 100.0 + i as f64,
        volume: 0.5,
        direction: if i % 2 == 0 {
            Direction::Buy
        } else {
            Direction::Sell
        },
        timestamp: i as i64,
    }
}

fn oldest(bus: &Bus) -> zerocast_ipc::Subscriber {
    bus.subscriber(
        "t",
        SubscriberOptions {
            start: Start::Oldest,
            ..Default::default()
        },
    )
    .unwrap()
}

/// The bytes `publish` would have encoded for `body`, with the sequence,
/// publisher id and publish time a received frame carries.
fn expected_frame(body: &TradeEvent, received: &[u8]) -> Vec<u8> {
    let h = FrameHeader::read(received).unwrap();
    let mut buf = frame::FrameBuf::default();
    let n = frame::encode(body, h.publisher_id, h.publish_ns, &mut buf.0).unwrap();
    buf.0[0] = h.seq;
    frame::words_as_bytes(&buf.0[..n]).to_vec()
}

#[test]
fn loan_commit_delivers_the_exact_frame() {
    let bus = bus("commit", TopicKind::Trade);
    let mut sub = oldest(&bus);
    let mut publisher = bus.publisher("t").unwrap();
    for i in 0..100 {
        let loan = publisher.loan::<TradeEvent>().unwrap();
        assert_eq!(loan.seq(), i);
        let mut loan = loan.write(&trade(1000));
        // A second write replaces the first, in place.
        loan.write(&trade(i));
        assert_eq!(loan.commit(), i);
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(f.seq, i);
        let n = frame::frame_words(frame::MessageKind::Trade) * 8;
        assert_eq!(f.bytes[..n], expected_frame(&trade(i), f.bytes)[..]);
        let h = FrameHeader::read(f.bytes).unwrap();
        assert_eq!((h.seq, h.retransmit_of()), (i, None));
        assert_eq!(
            f.body::<TradeEvent>().unwrap().price.to_native(),
            100.0 + i as f64
        );
    }
    // `publish` (a loan underneath) and `publish_batch` (written in place
    // slot by slot) deliver the same bytes.
    publisher.publish(&trade(7)).unwrap();
    publisher.publish_batch(&[trade(8), trade(9)]).unwrap();
    for i in 7..10 {
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        let n = frame::frame_words(frame::MessageKind::Trade) * 8;
        assert_eq!(f.bytes[..n], expected_frame(&trade(i), f.bytes)[..]);
    }
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    bus.remove_segments();
}

/// Regression: a loan read the clock for its header at the commit, inside
/// the slot's write window, while a caught-up subscriber polled the slot:
/// each look pulled the slot's line back out of the publisher's cache, and
/// a ping-pong's one-way time was 386 ns instead of 120 ns
/// (`pingpong_parts`, AMD EPYC guest). The time is now read when the slot
/// is lent, before the claim: a frame carries the time of its loan.
#[test]
fn regression_a_loan_read_the_clock_inside_its_write_window() {
    let bus = bus("lent-time", TopicKind::Trade);
    let mut sub = oldest(&bus);
    let mut publisher = bus.publisher("t").unwrap();
    let before = zerocast_ipc::layout::now_ns();
    let loan = publisher.loan::<TradeEvent>().unwrap();
    let lent = zerocast_ipc::layout::now_ns();
    // Time passes between the loan and its commit (deliberately: the
    // header must not be stamped at the commit).
    std::thread::sleep(Duration::from_millis(20));
    let committing = zerocast_ipc::layout::now_ns();
    loan.write(&trade(1)).commit();
    let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
    let stamped = f.publish_ns();
    assert!(
        (before..=lent).contains(&stamped),
        "header time {stamped} is not the loan's ({before}..={lent}); the commit began at {committing}"
    );
    bus.remove_segments();
}

/// A dropped loan, written or not, is neither a loss nor a gap: its
/// sequence carries a heartbeat of the publisher, and publishing goes on.
#[test]
fn dropped_loan_is_not_lost_and_wedges_nothing() {
    let bus = bus("drop", TopicKind::L2);
    let mut sub = oldest(&bus);
    let mut gating = bus
        .subscriber(
            "t",
            SubscriberOptions {
                start: Start::Oldest,
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut publisher = bus.publisher("t").unwrap();
    let unwritten = publisher.loan::<MarketL2>().unwrap();
    assert_eq!(unwritten.seq(), 0);
    // While lent, the sequence is not readable yet: nothing new.
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    drop(unwritten);
    let book = MarketL2 {
        instrument_id: id("ETH").unwrap(),
        bids: Default::default(),
        asks: Default::default(),
        timestamp: 5,
    };
    drop(publisher.loan::<MarketL2>().unwrap().write(&book));
    // The whole ring goes round several times after the dropped loans.
    let n = 3 * bus.segment("t").unwrap().ring().capacity();
    fn next(s: &mut zerocast_ipc::Subscriber) -> (u64, bool) {
        let f = s.recv_timeout(Duration::from_secs(5)).unwrap();
        (f.seq, f.body::<Heartbeat>().is_ok())
    }
    for s in [&mut sub, &mut gating] {
        // Both dropped loans read as heartbeats, not losses.
        assert_eq!(next(s), (0, true));
        assert_eq!(next(s), (1, true));
    }
    for i in 0..n {
        let seq = publisher.publish(&trade(i)).unwrap();
        assert_eq!(seq, i + 2);
        for s in [&mut sub, &mut gating] {
            assert_eq!(next(s), (seq, false));
        }
    }
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    bus.remove_segments();
}

/// The `Publisher` wrapper lends on shm and refuses clearly on iceoryx2.
#[test]
fn publisher_wrapper_lends() {
    let bus = bus("wrap", TopicKind::Trade);
    let mut sub = oldest(&bus);
    let mut publisher: Publisher = bus.publisher("t").unwrap();
    let seq = publisher
        .loan::<TradeEvent>()
        .unwrap()
        .write(&trade(3))
        .send();
    let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (f.seq, f.body::<TradeEvent>().unwrap().price.to_native()),
        (seq, 103.0)
    );
    bus.remove_segments();
}

/// The child side of `loan_across_processes`; a no-op in a normal run.
#[test]
fn loan_child() {
    let Ok(ns) = std::env::var("ZC_LOAN_NS") else {
        return;
    };
    let bus = Bus::new(Config {
        namespace: ns,
        topics: vec![TopicConfig::new("t", 128 << 10, TopicKind::Trade)],
    });
    let mut publisher = bus.publisher("t").unwrap();
    for i in 0..10 {
        let loan = publisher.loan::<TradeEvent>().unwrap();
        if i == 5 {
            drop(loan);
        } else {
            loan.write(&trade(i)).commit();
        }
    }
    println!("published");
}

/// Frames written in place by a loan in another process arrive exact, and
/// the one it dropped arrives as a heartbeat.
#[test]
fn loan_across_processes() {
    let bus = bus("procs", TopicKind::Trade);
    let mut sub = oldest(&bus);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "loan_child", "--nocapture", "--test-threads=1"])
        .env("ZC_LOAN_NS", &bus.config().namespace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("published"));
    let n = frame::frame_words(frame::MessageKind::Trade) * 8;
    for i in 0..10 {
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(f.seq, i);
        if i == 5 {
            assert!(f.body::<Heartbeat>().is_ok());
        } else {
            assert_eq!(f.bytes[..n], expected_frame(&trade(i), f.bytes)[..]);
        }
    }
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    bus.remove_segments();
}

/// A subscriber that asks a stalled sequence to be resolved soon.
fn quick_stall(bus: &Bus) -> zerocast_ipc::Subscriber {
    bus.subscriber(
        "t",
        SubscriberOptions {
            start: Start::Oldest,
            stall_bound: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .unwrap()
}

/// The next frame's sequence and whether it is a heartbeat; `None` if
/// nothing (or an error) came within two seconds.
fn next_frame(s: &mut zerocast_ipc::Subscriber) -> Option<(u64, bool)> {
    let f = s.recv_timeout(Duration::from_secs(2)).ok()?;
    Some((f.seq, f.body::<Heartbeat>().is_ok()))
}

/// Review finding (issue: a forgotten loan wedges the topic). A loan
/// forgotten with `mem::forget` (or leaked) never runs its drop, so its
/// slot stayed WRITING for good: subscribers could not resolve it (its
/// publisher is alive and lists it in flight). The publisher now finishes
/// it (a heartbeat) on its next publish.
#[test]
fn regression_forgotten_loan_does_not_wedge_the_topic() {
    let bus = bus("forgot", TopicKind::Trade);
    let mut sub = quick_stall(&bus);
    let mut publisher = bus.publisher("t").unwrap();
    std::mem::forget(publisher.loan::<TradeEvent>().unwrap());
    assert_eq!(publisher.publish(&trade(1)).unwrap(), 1);
    assert_eq!(
        next_frame(&mut sub),
        Some((0, true)),
        "seq 0 never finished"
    );
    assert_eq!(next_frame(&mut sub), Some((1, false)));
    // A leaked (boxed) loan, written, and a heartbeat after it.
    let leaked = Box::leak(Box::new(
        publisher.loan::<TradeEvent>().unwrap().write(&trade(2)),
    ));
    assert_eq!(leaked.seq(), 2);
    assert_eq!(publisher.send_heartbeat().unwrap(), 3);
    assert_eq!(next_frame(&mut sub), Some((2, true)));
    assert_eq!(next_frame(&mut sub), Some((3, true)));
    bus.remove_segments();
}

/// A forgotten loan of a publisher that never publishes again is finished
/// when the publisher is dropped.
#[test]
fn regression_forgotten_loan_is_finished_when_its_publisher_drops() {
    let bus = bus("forgot-drop", TopicKind::Trade);
    let mut sub = quick_stall(&bus);
    let mut a = bus.publisher("t").unwrap();
    let mut b = bus.publisher("t").unwrap();
    std::mem::forget(a.loan::<TradeEvent>().unwrap());
    assert_eq!(b.publish(&trade(1)).unwrap(), 1);
    drop(a);
    assert_eq!(
        next_frame(&mut sub),
        Some((0, true)),
        "seq 0 never finished"
    );
    assert_eq!(next_frame(&mut sub), Some((1, false)));
    bus.remove_segments();
}

/// A publisher a lap behind a live publisher's unfinished slot (a loan
/// forgotten by a publisher that stays idle) gives up by its gating policy
/// with an error naming that publisher and sequence, instead of spinning
/// forever.
#[test]
fn regression_forgotten_loan_does_not_block_other_publishers_forever() {
    let bus = bus("forgot-lap", TopicKind::Trade);
    let cap = bus.segment("t").unwrap().ring().capacity();
    let mut a = bus.publisher("t").unwrap();
    std::mem::forget(a.loan::<TradeEvent>().unwrap());
    let mut b = bus
        .publisher_with(
            "t",
            zerocast_ipc::PublisherOptions {
                gating: zerocast_ipc::GatingPolicy::Wait(Duration::from_millis(100)),
                ..Default::default()
            },
        )
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut results = Vec::new();
        for i in 1..=cap {
            results.push(b.publish(&trade(i)).map_err(|e| e.to_string()));
        }
        tx.send(results).unwrap();
    });
    let results = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("publisher B spun for 5 s behind the forgotten loan's slot");
    for (i, r) in results[..cap as usize - 1].iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&(i as u64 + 1)));
    }
    let err = results[cap as usize - 1].as_ref().unwrap_err();
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("sequence 0"),
        "{err}"
    );
    // Once A publishes (finishing its forgotten loan), B's slot is free.
    assert_eq!(a.publish(&trade(0)).unwrap(), cap);
    drop(a);
    bus.remove_segments();
}

/// Pins the calling thread to `cpu` and runs it under `SCHED_FIFO` at
/// priority 1; false if this process may not (no `CAP_SYS_NICE`).
fn pin_fifo(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bitmask written through the libc macros;
    // pid 0 is the calling thread for both calls, which read only the
    // structures passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return false;
        }
        let param = libc::sched_param { sched_priority: 1 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
}

/// For the two older-lap tests: this thread's CPU (where `SCHED_FIFO`
/// pinning is allowed: `None`, with a note, where it is refused), a trade
/// topic, its capacity, a publisher and a second one that gives up at
/// once (`GatingPolicy::Fail`, with its 1 ms grace behind an older lap).
fn one_cpu_pair(test: &str) -> Option<(usize, Bus, u64, Publisher, Publisher)> {
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
    let probe = std::thread::spawn(move || pin_fifo(cpu)).join().unwrap();
    if !probe {
        eprintln!("skipped: SCHED_FIFO or pinning refused to this process");
        return None;
    }
    let bus = bus(test, TopicKind::Trade);
    let cap = bus.segment("t").unwrap().ring().capacity();
    let a = bus.publisher("t").unwrap();
    let b = bus
        .publisher_with(
            "t",
            zerocast_ipc::PublisherOptions {
                gating: zerocast_ipc::GatingPolicy::Fail,
                ..Default::default()
            },
        )
        .unwrap();
    Some((cpu, bus, cap, a, b))
}

/// Regression: a publish waiting behind a live publisher's unfinished
/// older lap (`wait_for_older_laps`) spun hot until its gating limit,
/// never yielding: where the publisher it waits for needs the same CPU
/// (a 2-core machine under load), it starved it and gave up with
/// `StuckBehind`, or spun its whole limit. Made deterministic here: both
/// threads on one CPU under `SCHED_FIFO` at one priority, where the
/// holder runs only when the waiter yields. Without the yield the waiter
/// fails after its 1 ms grace (`GatingPolicy::Fail`); with it, the holder
/// commits and the publish goes through. Skipped where `SCHED_FIFO` is
/// refused.
#[test]
fn regression_a_publish_behind_an_older_lap_spun_without_yielding() {
    let Some((cpu, bus, cap, mut a, mut b)) = one_cpu_pair("older-lap-yield") else {
        return;
    };
    let (lent_tx, lent_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        assert!(pin_fifo(cpu));
        let loan = a.loan::<TradeEvent>().unwrap().write(&trade(0));
        lent_tx.send(loan.seq()).unwrap();
        // Blocks: the waiter runs until it sends `go`, then keeps the CPU
        // (a woken thread of the same FIFO priority does not preempt it)
        // until it yields.
        go_rx.recv().unwrap();
        loan.commit()
    });
    let waiter = std::thread::spawn(move || {
        assert!(pin_fifo(cpu));
        assert_eq!(lent_rx.recv().unwrap(), 0);
        for i in 1..cap {
            assert_eq!(b.publish(&trade(i)).unwrap(), i);
        }
        go_tx.send(()).unwrap();
        // Lands on the loan's slot: waits for its lap to be committed.
        b.publish(&trade(cap)).map_err(|e| e.to_string())
    });
    let waited = waiter.join().unwrap();
    let committed = holder.join().unwrap();
    bus.remove_segments();
    assert_eq!(committed, 0);
    assert_eq!(
        waited,
        Ok(cap),
        "the publish behind the older lap never let its holder run"
    );
}

/// Regression: once `wait_for_older_laps` yields (after its first spins),
/// it still read the clock only every 1024 checks, and each yield to a
/// busy thread of the same CPU costs that thread's whole turn: a publish
/// under `GatingPolicy::Fail` (1 ms grace) behind a live loan gave up only
/// after about 1024 such turns (seconds on a loaded machine), a dead
/// holder's lap was resolved as late. Made deterministic as in
/// `regression_a_publish_behind_an_older_lap_spun_without_yielding`: one
/// CPU under `SCHED_FIFO`, where the holder of the loan is also a busy
/// thread that runs only while the waiter yields, for about 200 µs a
/// turn, and counts its turns. The waiter must give up with `StuckBehind`
/// after a handful of turns, not a thousand. Skipped where `SCHED_FIFO`
/// is refused.
#[test]
fn regression_a_yielding_older_lap_wait_read_the_clock_once_per_1024_yields() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let Some((cpu, bus, cap, mut a, mut b)) = one_cpu_pair("older-lap-clock") else {
        return;
    };
    // SeqCst for the flag and the count: a test's handshakes, on one CPU.
    let done = Arc::new(AtomicBool::new(false));
    let turns = Arc::new(AtomicU32::new(0));
    let (lent_tx, lent_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let (done, turns) = (done.clone(), turns.clone());
        std::thread::spawn(move || {
            assert!(pin_fifo(cpu));
            let loan = a.loan::<TradeEvent>().unwrap().write(&trade(0));
            lent_tx.send(loan.seq()).unwrap();
            // Blocks until the waiter is about to wait (busy before that,
            // it would keep the CPU from the waiter's own pinning).
            go_rx.recv().unwrap();
            // Runs only while the waiter yields (same CPU, same FIFO
            // priority): each turn is busy for ~200 µs, then yields back.
            while !done.load(Ordering::SeqCst) {
                turns.fetch_add(1, Ordering::SeqCst);
                let busy = Instant::now();
                while busy.elapsed() < Duration::from_micros(200) {
                    std::hint::spin_loop();
                }
                std::thread::yield_now();
            }
            loan.commit()
        })
    };
    let waiter = std::thread::spawn(move || {
        assert!(pin_fifo(cpu));
        assert_eq!(lent_rx.recv().unwrap(), 0);
        for i in 1..cap {
            assert_eq!(b.publish(&trade(i)).unwrap(), i);
        }
        // Wakes the holder, which runs once the waiter yields.
        go_tx.send(()).unwrap();
        // Lands on the loan's slot, held by a live publisher: gives up.
        let result = b.publish(&trade(cap)).map_err(|e| e.to_string());
        done.store(true, Ordering::SeqCst);
        result
    });
    let waited = waiter.join().unwrap();
    let committed = holder.join().unwrap();
    bus.remove_segments();
    assert_eq!(committed, 0);
    let waited = waited.expect_err("the publish behind a live loan went through");
    assert!(waited.contains("has not committed sequence 0"), "{waited}");
    let turns = turns.load(Ordering::SeqCst);
    assert!(
        turns < 64,
        "the waiter yielded {turns} busy turns of ~200 µs before it read the clock (1 ms grace)"
    );
}

/// The bytes `encode` writes for `body` with a received frame's sequence,
/// publisher id and time, against the frame received.
fn assert_exact<B: frame::Body>(body: &B, received: &[u8]) {
    let h = FrameHeader::read(received).unwrap();
    let mut buf = frame::FrameBuf::default();
    let n = frame::encode(body, h.publisher_id, h.publish_ns, &mut buf.0).unwrap();
    buf.0[0] = h.seq;
    assert_eq!(
        &received[..n * 8],
        frame::words_as_bytes(&buf.0[..n]),
        "{:?} frame {}",
        B::KIND,
        h.seq
    );
}

/// Publishes `body` and checks the frame received is `encode`'s.
fn publish_and_check<B: frame::Body>(
    publisher: &mut Publisher,
    sub: &mut zerocast_ipc::Subscriber,
    body: &B,
) {
    let before = zerocast_ipc::layout::now_ns();
    let seq = publisher.publish(body).unwrap();
    let after = zerocast_ipc::layout::now_ns();
    let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(f.seq, seq);
    assert_exact(body, f.bytes);
    // `assert_exact` takes the id and time from the frame; both are
    // checked here: the id is this publisher's, and the time this
    // publish's (the frame clock may read a little behind the clock, or
    // interpolate up to about a µs ahead), not an older lap's left in the
    // slot.
    let Publisher::Shm(shm) = &*publisher else {
        panic!("a shared-memory topic")
    };
    let h = FrameHeader::read(f.bytes).unwrap();
    assert_eq!(h.publisher_id, shm.id(), "frame {seq}'s publisher id");
    let stamped = f.publish_ns();
    assert!(
        stamped <= after + 1_000 && stamped + 100_000 >= before,
        "frame {seq} stamped {stamped}, published between {before} and {after}"
    );
}

/// `publish` stores every kind of body field by field straight into the
/// slot: each must be the frame `encode` makes (rkyv's bytes), header
/// included, whatever the slot held before (the ring is wrapped twice, so
/// every slot is written over an older frame of another kind).
#[test]
fn publish_delivers_the_exact_frame_of_every_body_kind() {
    use zerocast_core::frame::{AccountUpdate, Ack, Level, L2_DEPTH};
    let bus = bus("kinds", TopicKind::L2);
    let mut sub = oldest(&bus);
    let mut p = bus.publisher("t").unwrap();
    let level = |i: u64| Level {
        price: 1.5 * i as f64,
        volume: 0.25 + i as f64,
    };
    let capacity = bus.segment("t").unwrap().ring().capacity();
    // A first lap of retransmissions: every slot then holds a nonzero
    // retransmission mark, which a publish must store over (as 0).
    for i in 0..capacity {
        let Publisher::Shm(shm) = &mut p else {
            panic!("a shared-memory topic")
        };
        shm.publish_retransmit(&trade(i), i).unwrap();
        let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(f.retransmit_of(), Some(i));
    }
    for i in 0..capacity * 2 {
        let s = &mut sub;
        match i % 5 {
            0 => publish_and_check(&mut p, s, &trade(i)),
            1 => publish_and_check(
                &mut p,
                s,
                &AccountUpdate {
                    user_id: id(&format!("user-{i}")).unwrap(),
                    balance: i as f64,
                    available: -(i as f64),
                    margin: 0.5,
                    timestamp: i as i64,
                },
            ),
            2 => publish_and_check(
                &mut p,
                s,
                &MarketL2 {
                    instrument_id: id("ETH-USDT").unwrap(),
                    bids: core::array::from_fn(|k| level(i + k as u64)),
                    asks: core::array::from_fn(|k| level(i + (L2_DEPTH + k) as u64)),
                    timestamp: i as i64,
                },
            ),
            3 => publish_and_check(
                &mut p,
                s,
                &Heartbeat {
                    publisher_id: id("hb").unwrap(),
                    sequence: i,
                    timestamp: i as i64,
                },
            ),
            _ => publish_and_check(
                &mut p,
                s,
                &Ack {
                    sequence: i,
                    subscriber_id: id("acker").unwrap(),
                    timestamp: i as i64,
                },
            ),
        }
    }
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    bus.remove_segments();
}

/// A `loan_at` loan dropped uncommitted publishes its heartbeat with the
/// caller's time; one forgotten is filled at the next publish with the
/// frame clock's time of the fill (as `loan_at`'s docs say).
#[test]
fn loan_at_dropped_or_forgotten_carries_the_times_its_docs_say() {
    let bus = bus("at-drop", TopicKind::Trade);
    let mut sub = oldest(&bus);
    let mut publisher = bus.publisher("t").unwrap();
    drop(publisher.loan_at::<TradeEvent>(42).unwrap());
    std::mem::forget(publisher.loan_at::<TradeEvent>(43).unwrap());
    let before = zerocast_ipc::layout::now_ns();
    publisher.publish_at(&trade(2), 44).unwrap();
    let after = zerocast_ipc::layout::now_ns();
    let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (f.seq, f.kind(), f.publish_ns()),
        (0, Some(frame::MessageKind::Heartbeat), 42)
    );
    let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((f.seq, f.kind()), (1, Some(frame::MessageKind::Heartbeat)));
    assert!(
        (before..=after).contains(&f.publish_ns()),
        "a forgotten loan_at loan's fill carried {}, not the time of the fill",
        f.publish_ns()
    );
    let f = sub.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((f.seq, f.publish_ns()), (2, 44));
    bus.remove_segments();
}
