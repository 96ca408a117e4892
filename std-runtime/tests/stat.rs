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
