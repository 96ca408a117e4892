//! `zerocast replay` run as a process.

use std::process::Command;

use zerocast_core::frame::{encode, FrameBuf};
use zerocast_runtime::feed::Feed;
use zerocast_runtime::wal::{list_segments, FsyncPolicy, Wal, WalOptions};

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

/// A log with every kind of hole: the recorder's missed range, an invalid
/// frame, and a segment deleted from the middle. `replay` prints each for
/// what it is, and the frames around them, instead of stopping.
#[test]
fn replay_reports_missed_ranges_invalid_frames_and_missing_segments_and_goes_on() {
    let root = std::env::temp_dir().join(format!("zc-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("trade_events");
    let (mut wal, _) = Wal::open(
        &dir,
        "trade_events",
        WalOptions {
            segment_size: 16 << 10,
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .unwrap();
    let mut feed = Feed::new(4, 1);
    let mut buf = FrameBuf::default();
    wal.append_invalid(0, 0, &[0; 64]).unwrap();
    wal.append_missed(1, 9, 0).unwrap();
    for seq in 10..500 {
        let w = encode(&feed.trade(), 1, seq, &mut buf.0).unwrap();
        wal.append(seq, 0, &buf.bytes()[..w * 8]).unwrap();
    }
    drop(wal);
    let segments = list_segments(&dir).unwrap();
    std::fs::remove_file(&segments[2].path).unwrap();
    let (from, to) = (segments[2].first_seq, segments[3].first_seq - 1);
    let out = Command::new(BIN)
        .env("ZEROCAST_LOG", "warn")
        .args(["replay", "--topic", "trade_events", "--json", "--wal"])
        .arg(&root)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The deleted segment makes the replay incomplete: exit status 1,
    // after everything else was printed.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "invalid");
    assert_eq!(lines[0]["seq"], 0);
    assert_eq!(lines[0]["error"], "unknown message kind 0");
    assert_eq!(lines[1]["event"], "missed");
    assert_eq!(
        (lines[1]["from"].clone(), lines[1]["to"].clone()),
        (1.into(), 9.into())
    );
    let missing: Vec<_> = lines.iter().filter(|l| l["event"] == "missing").collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert_eq!(
        (missing[0]["from"].as_u64(), missing[0]["to"].as_u64()),
        (Some(from), Some(to))
    );
    let frames = lines
        .iter()
        .filter(|l| l["seq"].is_u64() && l["kind"].is_string())
        .count() as u64;
    assert_eq!(frames, 490 - (to - from + 1));
    assert_eq!(lines.last().unwrap()["seq"], 499);
    assert!(
        stderr.contains(&format!("{} sequences missing from the log", to - from + 1)),
        "{stderr}"
    );
}
