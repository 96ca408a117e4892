//! A segment whose ring header was scribbled on (fuzzing, a stray write)
//! must give errors, never a panic or a wrapped claim word.

use zerocast_core::broadcast::{GatingCache, PublishError};
use zerocast_ipc::layout;
use zerocast_ipc::{Bus, Config, Segment, TopicConfig, TopicKind};

fn small_bus(test: &str) -> Bus {
    let words = TopicKind::Trade.slot_words();
    let size = zerocast_ipc::segment::segment_size(64, words);
    let bus = Bus::new(Config {
        namespace: format!("rc{}-{test}", std::process::id()),
        topics: vec![TopicConfig::new("trades", size, TopicKind::Trade)],
    });
    bus.remove_segments();
    bus
}

/// From the review: a claim word of all ones overflowed `cur + n` in the
/// claim (a panic in debug builds, a wrapped word in release builds).
#[test]
fn regression_corrupt_claim_word_panics_in_debug() {
    let bus = small_bus("claim");
    let seg = bus.segment("trades").unwrap();
    let path = seg.path().to_owned();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&u64::MAX.to_le_bytes(), layout::RING_OFFSET as u64)
            .unwrap();
    }
    let seg2 = Segment::open(&path, "trades").unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut c = GatingCache::default();
        seg2.ring().try_publish(&mut c, &[0; 8])
    }));
    bus.remove_segments();
    let r = r.expect("panicked on a corrupt claim word");
    assert_eq!(r, Err(PublishError::SequencesExhausted));
}
