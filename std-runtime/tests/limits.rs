//! One payload size limit, the same for a ring slot, a WAL record and a
//! frame.

use zerocast_core::frame;
use zerocast_ipc::segment::{self, Segment};
use zerocast_runtime::wal::{format, Wal, WalOptions};

/// Regression: a slot could hold up to 4096 words (32 KiB) while a WAL
/// record could hold 64 KiB and no frame is larger than
/// `frame::MAX_FRAME_WORDS` words: three limits, and the WAL writer
/// appended what its own reader then refused as damage. Now one limit:
/// a slot one word larger is refused, and so is a WAL frame one byte
/// larger, when written.
#[test]
fn regression_payload_size_limit_is_the_same_everywhere() {
    assert_eq!(segment::MAX_PAYLOAD_WORDS, frame::MAX_FRAME_WORDS);
    assert_eq!(format::MAX_RECORD_FRAME, frame::MAX_FRAME_WORDS * 8);

    let dir = std::env::temp_dir().join(format!("zc-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let err = Segment::create(&dir.join("seg"), "t", 8, frame::MAX_FRAME_WORDS + 1).unwrap_err();
    assert!(err.to_string().contains("payload"), "{err}");
    Segment::create(&dir.join("seg"), "t", 8, frame::MAX_FRAME_WORDS).unwrap();

    let (mut wal, _) = Wal::open(&dir.join("wal"), "t", WalOptions::default()).unwrap();
    let too_big = vec![0u8; frame::MAX_FRAME_WORDS * 8 + 1];
    let err = wal.append(0, 0, &too_big).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    wal.append(0, 0, &too_big[1..]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
