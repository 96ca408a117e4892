//! `ShmPublisher::publish_lost`: sequences claimed and marked lost, for a
//! relay that passes another ring's losses on (`zerocast bridge import`).

use std::time::Duration;

use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::{
    Bus, Config, Publisher, RecvError, ShmPublisher, Start, SubscriberOptions, TopicConfig,
    TopicKind,
};

fn bus(test: &str) -> Bus {
    let bus = Bus::new(Config {
        namespace: format!("plost{}-{test}", std::process::id()),
        topics: vec![TopicConfig::new("t", 128 << 10, TopicKind::Trade)],
    });
    bus.remove_segments();
    bus
}

fn shm(bus: &Bus) -> ShmPublisher {
    match bus.publisher("t").unwrap() {
        Publisher::Shm(p) => p,
        #[allow(unreachable_patterns)]
        _ => panic!("a shared-memory topic"),
    }
}

fn trade(i: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id(&format!("T{i}")).unwrap(),
        order_id: id(&format!("O{i}")).unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 100.0,
        volume: 0.5,
        direction: Direction::Buy,
        timestamp: i as i64,
    }
}

#[test]
fn publish_lost_marks_each_sequence_lost_between_frames() {
    let bus = bus("between");
    let mut sub = bus
        .subscriber(
            "t",
            SubscriberOptions {
                start: Start::At(0),
                ..Default::default()
            },
        )
        .unwrap();
    let mut p = shm(&bus);
    assert_eq!(p.publish(&trade(0)).unwrap(), 0);
    assert_eq!(p.publish_lost(3).unwrap(), 1);
    assert_eq!(p.publish(&trade(4)).unwrap(), 4);
    let t = Duration::from_secs(5);
    assert_eq!(sub.recv_timeout(t).unwrap().seq, 0);
    for s in 1..4 {
        assert_eq!(sub.recv_timeout(t).unwrap_err(), RecvError::Lost(s));
    }
    assert_eq!(sub.recv_timeout(t).unwrap().seq, 4);
    bus.remove_segments();
}

#[test]
fn publish_lost_takes_a_whole_ring_and_laps() {
    let bus = bus("laps");
    let mut p = shm(&bus);
    let cap = p.segment().ring().capacity();
    assert_eq!(p.publish_lost(cap).unwrap(), 0);
    assert_eq!(p.publish_lost(cap).unwrap(), cap);
    assert_eq!(p.publish(&trade(0)).unwrap(), 2 * cap);
    let mut sub = bus
        .subscriber(
            "t",
            SubscriberOptions {
                start: Start::At(cap + 1),
                ..Default::default()
            },
        )
        .unwrap();
    let t = Duration::from_secs(5);
    for s in cap + 1..2 * cap {
        assert_eq!(sub.recv_timeout(t).unwrap_err(), RecvError::Lost(s));
    }
    assert_eq!(sub.recv_timeout(t).unwrap().seq, 2 * cap);
    bus.remove_segments();
}

#[test]
fn publish_lost_refuses_zero_and_more_than_the_ring() {
    let bus = bus("refuses");
    let mut p = shm(&bus);
    let cap = p.segment().ring().capacity();
    for n in [0, cap + 1] {
        let e = p.publish_lost(n).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{n} sequences")) && e.contains(&format!("capacity ({cap})")),
            "{e}"
        );
    }
    // Nothing was claimed.
    assert_eq!(p.segment().ring().head(), 0);
    bus.remove_segments();
}

#[test]
fn publish_lost_claims_only_what_gating_subscribers_released() {
    let bus = bus("gating");
    let mut sub = bus
        .subscriber(
            "t",
            SubscriberOptions {
                start: Start::At(0),
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut p = match bus
        .publisher_with(
            "t",
            zerocast_ipc::PublisherOptions {
                gating: zerocast_ipc::GatingPolicy::Fail,
                ..Default::default()
            },
        )
        .unwrap()
    {
        Publisher::Shm(p) => p,
        #[allow(unreachable_patterns)]
        _ => panic!("a shared-memory topic"),
    };
    let cap = p.segment().ring().capacity();
    assert_eq!(p.publish(&trade(0)).unwrap(), 0);
    // Subscriber behind by one: a whole ring cannot be claimed.
    assert!(p.publish_lost(cap).is_err());
    let t = Duration::from_secs(5);
    assert_eq!(sub.recv_timeout(t).unwrap().seq, 0);
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(p.publish_lost(cap).unwrap(), 1);
    for s in 1..=cap {
        assert_eq!(sub.recv_timeout(t).unwrap_err(), RecvError::Lost(s));
    }
    assert_eq!(sub.try_recv().unwrap_err(), RecvError::Empty);
    assert!(p.publish_lost(cap).is_ok());
    bus.remove_segments();
}
