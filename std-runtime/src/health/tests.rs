//! The monitor driven with explicit times, in one process.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use zerocast_core::frame::Heartbeat;
use zerocast_ipc::layout::{now_ns, owner_word, store_name, FREE};
use zerocast_ipc::{
    Bus, Config, PublisherOptions, ShmPublisher, ShmSubscriber, Start, SubscriberOptions,
    TopicConfig, TopicKind,
};

use super::*;

const SEC: u64 = 1_000_000_000;

/// A namespace of its own with one small topic, removed on drop.
struct TestBus(Bus);

impl TestBus {
    fn new(test: &str) -> Self {
        Self(Bus::new(Config {
            namespace: format!("hm{}-{test}", std::process::id()),
            topics: vec![TopicConfig::new("trades", 200_000, TopicKind::Trade)],
        }))
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        self.0.remove_segments();
        let _ = std::fs::remove_file(self.0.config().segment_path(HEALTH_TOPIC));
    }
}

fn trade() -> zerocast_core::frame::TradeEvent {
    crate::feed::Feed::new(1, 7).trade()
}

fn options(interval: Duration) -> HealthOptions {
    HealthOptions {
        interval,
        reclaim: true,
        ..HealthOptions::default()
    }
}

fn publisher<'a>(r: &'a Report, name: &str) -> &'a PublisherReport {
    r.topics
        .iter()
        .flat_map(|t| &t.publishers)
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no publisher {name:?} in {r:#?}"))
}

fn subscriber<'a>(r: &'a Report, name: &str) -> &'a SubscriberReport {
    r.topics
        .iter()
        .flat_map(|t| &t.subscribers)
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no subscriber {name:?} in {r:#?}"))
}

fn states(r: &Report) -> Vec<(PublisherState, PublisherState)> {
    r.transitions.iter().map(|t| (t.from, t.to)).collect()
}

#[test]
fn publisher_goes_degraded_then_failed_by_silence_and_back_to_healthy_on_progress() {
    let tb = TestBus::new("states");
    let seg = tb.0.segment("trades").unwrap();
    let opts = PublisherOptions {
        name: "engine".into(),
        ..PublisherOptions::default()
    };
    let mut p = ShmPublisher::new(Arc::clone(&seg), &opts).unwrap();
    p.send_heartbeat().unwrap();
    let base = now_ns();
    let mut m = HealthMonitor::new(tb.0.clone(), options(Duration::from_secs(10)));
    // Two polls settle the first sighting: no transitions yet.
    let r = m.poll(base);
    assert_eq!(publisher(&r, "engine").state, PublisherState::Healthy);
    let r = m.poll(base + SEC);
    assert_eq!(publisher(&r, "engine").state, PublisherState::Healthy);
    assert!(r.transitions.is_empty());
    // One interval and a half without a heartbeat: late, Degraded.
    let r = m.poll(base + 15 * SEC);
    let e = publisher(&r, "engine");
    assert_eq!(e.state, PublisherState::Degraded, "{e:?}");
    assert!(e.reason.contains("late"), "{}", e.reason);
    assert_eq!(
        states(&r),
        [(PublisherState::Healthy, PublisherState::Degraded)]
    );
    // Still Degraded below two intervals: no new transition.
    let r = m.poll(base + 19 * SEC);
    assert_eq!(publisher(&r, "engine").state, PublisherState::Degraded);
    assert!(r.transitions.is_empty());
    // Two intervals: Failed.
    let r = m.poll(base + 20 * SEC + 1);
    assert_eq!(publisher(&r, "engine").state, PublisherState::Failed);
    assert_eq!(
        states(&r),
        [(PublisherState::Degraded, PublisherState::Failed)]
    );
    assert_eq!(r.failed().count(), 1);
    // It publishes again: progress is a sign of life.
    p.publish(&trade()).unwrap();
    let r = m.poll(base + 21 * SEC);
    let e = publisher(&r, "engine");
    assert_eq!(e.state, PublisherState::Healthy, "{e:?}");
    assert_eq!(e.published, 2);
    assert_eq!(
        states(&r),
        [(PublisherState::Failed, PublisherState::Healthy)]
    );
    assert_eq!(r.transitions[0].name, "engine");
    assert_eq!(r.transitions[0].pid, std::process::id());
}

#[test]
fn subscriber_that_stops_reading_shows_growing_lag_and_degrades_its_publisher() {
    let tb = TestBus::new("lag");
    let seg = tb.0.segment("trades").unwrap();
    let opts = PublisherOptions {
        name: "engine".into(),
        ..PublisherOptions::default()
    };
    let mut p = ShmPublisher::new(Arc::clone(&seg), &opts).unwrap();
    let mut sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "slow".into(),
            start: Start::Oldest,
            ..SubscriberOptions::default()
        },
    )
    .unwrap();
    let interval = Duration::from_secs(10);
    let mut m = HealthMonitor::new(tb.0.clone(), options(interval));
    let base = now_ns();
    let mut lags = Vec::new();
    // Samples are taken at most every interval / 2: polls 5 s apart.
    for step in 0..5u64 {
        p.publish_batch(&[trade(); 4]).unwrap();
        let r = m.poll(base + step * 5 * SEC);
        let s = subscriber(&r, "slow");
        assert!(s.alive);
        lags.push((s.lag, s.trend, s.growing_samples));
        let e = publisher(&r, "engine");
        if step < 3 {
            assert_eq!(e.state, PublisherState::Healthy, "step {step}: {e:?}");
        } else {
            assert_eq!(e.state, PublisherState::Degraded, "step {step}: {e:?}");
            assert!(e.reason.contains("\"slow\" lag growing"), "{}", e.reason);
        }
    }
    assert_eq!(
        lags,
        [
            (4, LagTrend::Unknown, 0),
            (8, LagTrend::Growing, 1),
            (12, LagTrend::Growing, 2),
            (16, LagTrend::Growing, 3),
            (20, LagTrend::Growing, 4),
        ]
    );
    // A poll sooner than half an interval after the last sample changes
    // no trend.
    p.publish(&trade()).unwrap();
    let r = m.poll(base + 21 * SEC);
    assert_eq!(subscriber(&r, "slow").growing_samples, 4);
    assert_eq!(subscriber(&r, "slow").lag, 21);
    // It catches up: shrinking, and the publisher is Healthy again.
    while sub.poll().is_ok() {}
    let r = m.poll(base + 26 * SEC);
    let s = subscriber(&r, "slow");
    assert_eq!(
        (s.lag, s.trend, s.growing_samples),
        (0, LagTrend::Shrinking, 0)
    );
    assert_eq!(publisher(&r, "engine").state, PublisherState::Healthy);
    assert_eq!(
        states(&r),
        [(PublisherState::Degraded, PublisherState::Healthy)]
    );
}

#[test]
fn a_lag_growing_within_one_percent_of_the_ring_does_not_degrade() {
    let tb = TestBus::new("jitter");
    let seg = tb.0.segment("trades").unwrap();
    let floor = seg.ring().capacity() / 100;
    assert!(floor >= 4, "capacity {}", seg.ring().capacity());
    let opts = PublisherOptions {
        name: "engine".into(),
        ..PublisherOptions::default()
    };
    let mut p = ShmPublisher::new(Arc::clone(&seg), &opts).unwrap();
    let _sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "busy".into(),
            start: Start::Oldest,
            ..SubscriberOptions::default()
        },
    )
    .unwrap();
    let mut m = HealthMonitor::new(tb.0.clone(), options(Duration::from_secs(10)));
    let base = now_ns();
    for step in 0..floor {
        p.publish(&trade()).unwrap();
        let r = m.poll(base + step * 5 * SEC);
        let s = subscriber(&r, "busy");
        assert_eq!(s.lag, step + 1);
        assert_eq!(
            s.growing_samples, 0,
            "lag {} within the floor {floor}",
            s.lag
        );
        assert_eq!(publisher(&r, "engine").state, PublisherState::Healthy);
    }
}

/// Pid and owner word of a process that has exited (and been waited for).
fn dead_owner() -> (u32, u64) {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    (pid, owner_word(pid, 12345))
}

#[test]
fn dead_publisher_is_failed_then_reclaimed() {
    let tb = TestBus::new("dead");
    let seg = tb.0.segment("trades").unwrap();
    let (pid, word) = dead_owner();
    let e = &seg.header().publishers[3];
    store_name(&e.name, "ghost");
    // Relaxed: published by the Release store of the owner word below.
    e.heartbeat_ns.store(now_ns(), Ordering::Relaxed);
    // Release: pairs with the monitor's Acquire load of the owner word;
    // a dead process's registration, as a SIGKILL leaves it.
    e.pid.store(word, Ordering::Release);
    let mut m = HealthMonitor::new(tb.0.clone(), options(Duration::from_secs(10)));
    let r = m.poll(now_ns());
    let g = publisher(&r, "ghost");
    assert_eq!(
        (g.state, g.alive, g.pid),
        (PublisherState::Failed, false, pid)
    );
    assert_eq!(g.reason, "process gone");
    let t = &r.topics[0];
    assert_eq!(t.reclaimed.len(), 1, "{:?}", t.reclaimed);
    assert!(t.reclaimed[0].publisher && t.reclaimed[0].index == 3);
    // Acquire: pairs with the reaper's Release store that frees the entry.
    assert_eq!(e.pid.load(Ordering::Acquire), FREE);
    // Still reported as Failed after the reclaiming poll (M2), for
    // KEEP_GONE_FOR.
    let now = now_ns();
    let r = m.poll(now);
    let g = publisher(&r, "ghost");
    assert_eq!((g.state, g.gone), (PublisherState::Failed, true));
    let r = m.poll(now + KEEP_GONE_FOR.as_nanos() as u64 + SEC);
    assert!(r.topics[0].publishers.is_empty());
}

/// A crashed publisher showed as Failed in the reports (and /metrics) for
/// one poll only: the same poll reclaimed its entry, and the next had no
/// trace of it. It stays Failed until a publisher of its name registers
/// again (or KEEP_GONE_FOR), and transitions to Failed are counted.
#[test]
fn regression_reclaimed_publisher_stays_failed_and_is_counted() {
    let tb = TestBus::new("gone");
    let mut p =
        tb.0.publisher_with(
            "trades",
            PublisherOptions {
                name: "engine".into(),
                ..Default::default()
            },
        )
        .unwrap();
    p.send_heartbeat().unwrap();
    let mut m = HealthMonitor::new(tb.0.clone(), options(Duration::from_secs(1)));
    let t0 = now_ns();
    m.poll(t0);
    m.poll(t0 + SEC / 10);
    let r = m.poll(t0 + 3 * SEC);
    assert_eq!(publisher(&r, "engine").state, PublisherState::Failed);
    assert_eq!(r.topics[0].failures_total, 1);
    // Its entry leaves the table (reclaimed).
    drop(p);
    for at in [t0 + 4 * SEC, t0 + 30 * SEC] {
        let r = m.poll(at);
        let g = publisher(&r, "engine");
        assert_eq!((g.state, g.gone), (PublisherState::Failed, true), "{g:?}");
        let text = metrics::render(&r, 0);
        assert!(
            text.contains("zerocast_publisher_failures_total{topic=\"trades\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("name=\"engine\"") && text.contains("state=\"failed\"} 1"),
            "{text}"
        );
    }
    // A publisher of the same name registers again: the old one is gone.
    let mut again =
        tb.0.publisher_with(
            "trades",
            PublisherOptions {
                name: "engine".into(),
                ..Default::default()
            },
        )
        .unwrap();
    again.send_heartbeat().unwrap();
    let r = m.poll(now_ns().max(t0 + 31 * SEC));
    let engines: Vec<_> = r.topics[0]
        .publishers
        .iter()
        .filter(|p| p.name == "engine")
        .collect();
    assert_eq!(engines.len(), 1, "{engines:?}");
    assert!(!engines[0].gone);
}

#[test]
fn regression_reclaiming_is_opt_in() {
    // A monitor that only looks (the default): a monitor in another PID
    // namespace takes live processes for dead, and reclaimed their entries.
    let tb = TestBus::new("optin");
    let seg = tb.0.segment("trades").unwrap();
    let (_, word) = dead_owner();
    let e = &seg.header().publishers[1];
    // Release: as above, a dead process's registration.
    e.pid.store(word, Ordering::Release);
    let mut m = HealthMonitor::new(tb.0.clone(), HealthOptions::default());
    let r = m.poll(now_ns());
    assert!(
        r.topics[0].reclaimed.is_empty(),
        "{:?}",
        r.topics[0].reclaimed
    );
    // Acquire/Release: as above; the test frees the entry itself.
    assert_eq!(e.pid.load(Ordering::Acquire), word);
    e.pid.store(FREE, Ordering::Release);
}

#[test]
fn no_reclaim_leaves_a_dead_entry_in_place() {
    let tb = TestBus::new("noreclaim");
    let seg = tb.0.segment("trades").unwrap();
    let (_, word) = dead_owner();
    let e = &seg.header().publishers[0];
    // Release: as above, a dead process's registration.
    e.pid.store(word, Ordering::Release);
    let mut m = HealthMonitor::new(
        tb.0.clone(),
        HealthOptions {
            reclaim: false,
            ..HealthOptions::default()
        },
    );
    let r = m.poll(now_ns());
    assert!(r.topics[0].reclaimed.is_empty());
    // Acquire/Release: as above; the test frees the entry itself.
    assert_eq!(e.pid.load(Ordering::Acquire), word);
    e.pid.store(FREE, Ordering::Release);
}

#[test]
fn recorder_lag_is_head_minus_its_hold() {
    let tb = TestBus::new("recorder");
    let seg = tb.0.segment("trades").unwrap();
    let mut p = ShmPublisher::new(Arc::clone(&seg), &PublisherOptions::default()).unwrap();
    let mut rec = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "recorder-trades".into(),
            start: Start::Oldest,
            gating: true,
            durable: true,
            ..SubscriberOptions::default()
        },
    )
    .unwrap();
    p.publish_batch(&[trade(); 7]).unwrap();
    for _ in 0..3 {
        rec.poll().unwrap();
    }
    let mut m = HealthMonitor::new(tb.0.clone(), HealthOptions::default());
    let r = m.poll(now_ns());
    assert_eq!(r.topics[0].recorder_lag, Some(4));
    let s = subscriber(&r, "recorder-trades");
    assert!(s.durable && !s.orphaned);
    // Reads are released in bulk: the hold is at least the lag.
    assert!(s.gating_hold(r.topics[0].head).unwrap() >= 4);
    // Caught up (an empty poll releases): nothing held, no lag.
    while rec.poll().is_ok() {}
    let r = m.poll(now_ns());
    assert_eq!(r.topics[0].recorder_lag, Some(0));
    let s = subscriber(&r, "recorder-trades");
    assert_eq!(s.gating_hold(r.topics[0].head), Some(0));
    // Gone: the orphaned hold is where its successor resumes.
    p.publish_batch(&[trade(); 2]).unwrap();
    drop(rec);
    let r = m.poll(now_ns());
    let s = subscriber(&r, "recorder-trades");
    assert!(s.orphaned && !s.alive);
    assert_eq!(r.topics[0].recorder_lag, Some(2));
    seg.release_durable("recorder-trades").unwrap();
}

#[test]
fn health_events_round_trip_through_a_heartbeat_body() {
    let t = Transition {
        topic: "account_events".into(),
        index: 9,
        name: "ledger".into(),
        pid: 4_000_000,
        from: PublisherState::Degraded,
        to: PublisherState::Failed,
        reason: String::new(),
        at_ns: 1_700_000_000_123_456_789,
    };
    let hb: Heartbeat = HealthEvent::of(&t).encode();
    let back = HealthEvent::decode(&hb.publisher_id, hb.sequence, hb.timestamp).unwrap();
    assert_eq!(back.topic, "account_events");
    assert_eq!((back.index, back.pid), (9, 4_000_000));
    assert_eq!(
        (back.from, back.to),
        (PublisherState::Degraded, PublisherState::Failed)
    );
    assert_eq!(back.at_ns, t.at_ns);
    // An ordinary heartbeat is not an event.
    assert_eq!(HealthEvent::decode(&[0; 16], 7, 1), None);
}

/// Any plain heartbeat on the health topic whose low bytes happened to be
/// state codes decoded as an event (a fake state change). Events carry a
/// mark and a pid; plain heartbeats never decode.
#[test]
fn regression_plain_heartbeats_on_the_health_topic_are_not_events() {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(b"trades");
    // Before: from 1, to 3, any pid and index: "decoded".
    for sequence in [0x0103u64, 0x0000_0001_0002_0103, 0x0000_1234_0000_0201] {
        assert_eq!(HealthEvent::decode(&id, sequence, 1), None, "{sequence:#x}");
    }
    // The mark without a pid is not an event either.
    assert_eq!(HealthEvent::decode(&id, 0xE502_0103, 1), None);
    assert!(HealthEvent::decode(&id, 0x0000_0001_E502_0103, 1).is_some());
}

#[test]
fn transitions_are_published_on_the_health_topic() {
    let tb = TestBus::new("events");
    let mut events = HealthEvents::open(&tb.0).unwrap();
    let mut sub =
        tb.0.subscriber(
            HEALTH_TOPIC,
            SubscriberOptions {
                start: Start::Oldest,
                ..SubscriberOptions::default()
            },
        )
        .unwrap();
    let t = Transition {
        topic: "trades".into(),
        index: 1,
        name: "engine".into(),
        pid: 42,
        from: PublisherState::Healthy,
        to: PublisherState::Degraded,
        reason: "late".into(),
        at_ns: 5,
    };
    let seq = events.publish(&t).unwrap();
    let got = sub.try_recv().unwrap();
    assert_eq!(got.seq, seq);
    let hb = got.body::<Heartbeat>().unwrap();
    let e = HealthEvent::decode(
        &hb.publisher_id,
        hb.sequence.to_native(),
        hb.timestamp.to_native(),
    )
    .unwrap();
    assert_eq!(e, HealthEvent::of(&t));
}

#[test]
fn metrics_text_names_every_counter() {
    let tb = TestBus::new("metrics");
    let seg = tb.0.segment("trades").unwrap();
    let opts = PublisherOptions {
        name: "engine".into(),
        ..PublisherOptions::default()
    };
    let mut p = ShmPublisher::new(Arc::clone(&seg), &opts).unwrap();
    let _sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "viewer".into(),
            start: Start::Oldest,
            ..SubscriberOptions::default()
        },
    )
    .unwrap();
    p.publish_batch(&[trade(); 5]).unwrap();
    let mut m = HealthMonitor::new(tb.0.clone(), HealthOptions::default());
    let text = metrics::render(&m.poll(now_ns()), 2);
    for line in [
        "zerocast_topic_head{topic=\"trades\"} 5",
        "zerocast_publisher_published_total{topic=\"trades\",index=\"0\",name=\"engine\",pid=\"",
        "zerocast_subscriber_lag{topic=\"trades\",index=\"0\",name=\"viewer\",pid=\"",
        "zerocast_subscriber_lagged_total{topic=\"trades\"",
        "state=\"healthy\"} 1",
        "zerocast_health_reclaimed_entries_total 2",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

thread_local! {
    /// Run once by the next poll between its first load of a live
    /// publisher entry's owner word and its reads of the entry's fields.
    static BETWEEN_PUBLISHER_READS: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by `poll_topic` (test builds only) between loading a publisher
/// entry's owner word and reading its fields.
pub(super) fn between_publisher_reads() {
    if let Some(f) = BETWEEN_PUBLISHER_READS.with(|h| h.borrow_mut().take()) {
        f();
    }
}

/// A publisher dropped while a poll read its entry: the poll had loaded the
/// live owner word, then read the fields the drop had just cleared, and
/// reported a live publisher with no name that had published nothing (a
/// count gone from 5 to 0), with the heartbeat age of a publisher that
/// never beat. The poll now loads the owner word again after the fields
/// and drops a reading whose owner changed.
#[test]
fn regression_publisher_dropped_during_a_poll_is_not_reported_cleared() {
    let tb = TestBus::new("dropread");
    let seg = tb.0.segment("trades").unwrap();
    let mut p = ShmPublisher::new(
        seg,
        &PublisherOptions {
            name: "leaving".into(),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..5 {
        p.publish(&trade()).unwrap();
    }
    let mut m = HealthMonitor::new(tb.0.clone(), options(Duration::from_secs(10)));
    let r = m.poll(now_ns());
    assert_eq!(publisher(&r, "leaving").published, 5);
    BETWEEN_PUBLISHER_READS.with(|h| *h.borrow_mut() = Some(Box::new(move || drop(p))));
    let r = m.poll(now_ns());
    // The hook ran: the publisher is gone from the table.
    assert!(BETWEEN_PUBLISHER_READS.with(|h| h.borrow().is_none()));
    let seen: Vec<_> = r.topics.iter().flat_map(|t| &t.publishers).collect();
    assert!(
        seen.iter().all(|p| p.name == "leaving" && p.published == 5),
        "a reading of a cleared entry was reported: {seen:#?}"
    );
    // And the entry, freed, is not reported at all on the next poll.
    let r = m.poll(now_ns());
    assert!(r.topics.iter().all(|t| t.publishers.is_empty()), "{r:#?}");
}
