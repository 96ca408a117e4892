//! The WAL's open-time repair and its reader on arbitrary segment files:
//! damage is an error naming the file, a torn tail is cut, appends after a
//! repair are read back, and nothing panics.
//!
//! Input: pieces separated by `\xffSEG`, one segment file each (at most 4),
//! named by the first sequence its header claims (else its position); a
//! piece may carry its sparse index after `\xffIDX`.
#![no_main]

use std::ops::ControlFlow;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zerocast_runtime::wal::{reader::Replay, segment_name, Entry, Wal, WalError, WalOptions};

fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(sep.len()).position(|w| w == sep) {
        out.push(&rest[..at]);
        rest = &rest[at + sep.len()..];
    }
    out.push(rest);
    out
}

/// Everything `read` hands out from `from`: (records' sequences, error).
fn read(dir: &Path, from: u64) -> (Vec<u64>, Option<WalError>) {
    let mut seqs = Vec::new();
    let err = Replay::new(dir)
        .read(from, u64::MAX, |e| {
            if let Entry::Record(r) = e {
                seqs.push(r.seq);
            }
            ControlFlow::Continue(())
        })
        .err();
    (seqs, err)
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("zerocast-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create fuzz WAL dir");
    for (i, piece) in split(data, b"\xffSEG").into_iter().take(4).enumerate() {
        let mut parts = split(piece, b"\xffIDX").into_iter();
        let segment = parts.next().unwrap_or_default();
        let first = segment
            .get(16..24)
            .map_or(i as u64, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        let path = dir.join(segment_name(first));
        if path.exists() {
            continue;
        }
        std::fs::write(&path, segment).expect("write segment");
        if let Some(idx) = parts.next() {
            std::fs::write(path.with_extension("idx"), idx).expect("write index");
        }
    }
    // Replay first, on the bytes as they are, then let open repair them.
    let _ = read(&dir, 0);
    let options = WalOptions {
        segment_size: 1 << 16,
        ..Default::default()
    };
    let Ok((mut wal, _recovery)) = Wal::open(&dir, "trade_events", options.clone()) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    let last_segment = wal.segments().last().expect("open leaves a segment").path.clone();
    // What open accepted, the reader accepts: no damage left in the segment
    // open checked and will append to (older ones it does not read).
    let (_, err) = read(&dir, 0);
    if let Some(WalError::Corrupt { path, offset, reason }) = &err {
        assert!(
            *path != last_segment,
            "open accepted {}, the reader finds it corrupt at {offset}: {reason}",
            path.display()
        );
    }
    // Appends after the repair are read back, in order, after a reopen.
    let from = wal.last_seq().map_or(0, |s| s + 1);
    if from + 3 > zerocast_core::broadcast::MAX_SEQ {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    for seq in from..from + 3 {
        wal.append_lost(seq, 0).expect("append after open");
    }
    wal.sync().expect("sync");
    drop(wal);
    let (wal, recovery) = Wal::open(&dir, "trade_events", options).expect("reopen after append");
    assert_eq!(wal.last_seq(), Some(from + 2));
    assert!(recovery.truncated.is_none(), "{recovery:?}");
    drop(wal);
    let (seqs, err) = read(&dir, from);
    if err.is_none() {
        assert_eq!(seqs, [from, from + 1, from + 2], "appended records read back");
    }
    let _ = std::fs::remove_dir_all(&dir);
});
