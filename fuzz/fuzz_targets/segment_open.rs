//! Opening a segment whose header is corrupt or hostile: a real segment is
//! created, then the fuzzer overwrites bytes of its header and changes its
//! length. `open` must refuse with an error, or give a ring that is safe to
//! receive from and reap; never a panic, an out-of-bounds access or UB.
//!
//! Input: `len_code u16 | (offset u32 | value u64)*`. `len_code` 0 keeps the
//! file length, otherwise the file is cut or grown by up to 32 KiB around its
//! size (never below a header: a shorter file makes `open` wait for a creator
//! that is still sizing it, which is a timeout, not a bug). Each patch writes
//! `value` at `offset` (modulo the file length, 8-byte aligned): the segment
//! header, its tables, the ring header behind them and the slots.
#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use zerocast_core::broadcast::slot_stride;
use zerocast_ipc::layout::RING_OFFSET;
use zerocast_ipc::{Segment, ShmSubscriber, Start, SubscriberOptions};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("zerocast-fuzz-seg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("zerocast.fuzz.trade_events");
    let _ = std::fs::remove_file(&path);
    let created = Segment::create(&path, "trade_events", 8, 20).expect("create segment");
    drop(created);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("reopen segment file");
    let (len_code, patches) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, data),
    };
    if len_code != 0 {
        let size = file.metadata().expect("stat").len() as i64;
        let delta = i64::from(len_code as i16);
        let len = if u64::from(len_code) < RING_OFFSET as u64 && len_code % 2 == 1 {
            u64::from(len_code)
        } else {
            (size + delta).max(0) as u64
        };
        file.set_len(len).expect("resize");
    }
    let len = file.metadata().expect("stat").len().max(8);
    for patch in patches.chunks_exact(12) {
        let offset = u64::from(u32::from_le_bytes([patch[0], patch[1], patch[2], patch[3]]));
        let offset = (offset % len.saturating_sub(8).max(1)) & !7;
        file.write_all_at(&patch[4..], offset)
            .expect("patch header");
    }
    drop(file);
    if let Ok(seg) = Segment::open_with_timeout(&path, "trade_events", Duration::ZERO) {
        // Whatever open accepts must fit in the file it mapped.
        let ring = seg.ring();
        let ring_bytes = ring
            .capacity()
            .checked_mul(slot_stride(ring.payload_words()) as u64 * 8)
            .expect("accepted a ring whose size overflows");
        assert!(
            RING_OFFSET as u64 + ring_bytes <= len,
            "accepted a ring of {ring_bytes} bytes in a {len}-byte file"
        );
        let last_slot = ring.capacity() - 1;
        let seg = Arc::new(seg);
        let _ = seg.reap();
        let _ = seg.live_users();
        let _ = seg.is_stale();
        for start in [Start::Oldest, Start::At(last_slot)] {
            let options = SubscriberOptions {
                start,
                ..Default::default()
            };
            let Ok(mut sub) = ShmSubscriber::new(seg.clone(), &options) else {
                continue;
            };
            for _ in 0..4 {
                if let Ok(seq) = sub.poll() {
                    let received = sub.last(seq);
                    let _ = received.kind();
                    let _ = received.parse();
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
