//! The WAL's open-time repair and its reader on an arbitrary segment file:
//! damage is an error naming the file, a torn tail is cut, and nothing
//! panics.
#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use zerocast_runtime::wal::{reader::Replay, Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("zerocast-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create fuzz WAL dir");
    // Replay first, on the bytes as they are, then let open repair them.
    std::fs::write(dir.join("00000000000000000000.wal"), data).expect("write segment");
    let _ = Replay::new(&dir).read(0, u64::MAX, |_| ControlFlow::Continue(()));
    let options = WalOptions {
        segment_size: 1 << 16,
        ..Default::default()
    };
    if let Ok((mut wal, _recovery)) = Wal::open(&dir, "trade_events", options) {
        let _ = wal.sync();
        drop(wal);
        let _ = Replay::new(&dir).read(0, u64::MAX, |_| ControlFlow::Continue(()));
    }
    let _ = std::fs::remove_dir_all(&dir);
});
