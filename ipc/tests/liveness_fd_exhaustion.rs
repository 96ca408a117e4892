//! Regression test of the review's finding 1: a transient failure to read
//! `/proc/<pid>/stat` (here EMFILE) must not make a live process dead.
//!
//! Alone in its test binary: it lowers the process's file-descriptor limit
//! and exhausts it, which would break any test running beside it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use zerocast_ipc::layout;
use zerocast_ipc::{Bus, Config, ShmSubscriber, SubscriberOptions, TopicConfig, TopicKind};

#[test]
fn regression_emfile_does_not_reap_a_live_gating_subscriber() {
    let words = TopicKind::Trade.slot_words();
    let size = zerocast_ipc::segment::segment_size(64, words);
    let bus = Bus::new(Config {
        namespace: format!("fd{}-emfile", std::process::id()),
        topics: vec![TopicConfig::new("trades", size, TopicKind::Trade)],
    });
    bus.remove_segments();
    let seg = bus.segment("trades").unwrap();
    let sub = ShmSubscriber::new(
        Arc::clone(&seg),
        &SubscriberOptions {
            name: "live".into(),
            gating: true,
            ..Default::default()
        },
    )
    .unwrap();
    let idx = (0..layout::MAX_SUBSCRIBERS)
        .find(|&i| layout::name_is(&seg.header().subscribers[i].name, "live"))
        .unwrap();
    let g = seg.header().subscribers[idx].gating.load(Ordering::Relaxed) as usize - 1;
    assert!(seg.ring().gating_position(g).is_some());
    let me = layout::current_owner();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: 256.min(old.rlim_cur),
        rlim_max: old.rlim_max,
    };
    // SAFETY: setrlimit reads a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let mut files = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        files.push(f);
    }
    let alive = layout::owner_alive(me);
    let reaped = seg.reap_entries();
    drop(files);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    let held = seg.ring().gating_position(g).is_some();
    drop(sub);
    bus.remove_segments();
    assert!(
        alive,
        "a live process read as dead while fds were exhausted"
    );
    assert!(reaped.is_empty(), "reaped live entries: {reaped:?}");
    assert!(held, "a live gating hold was released");
}
