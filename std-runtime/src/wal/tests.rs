use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::format::{parse_record, Parsed, KIND_FRAME, KIND_LOST, SEGMENT_HEADER};
use super::reader::Entry;
use super::*;
use crate::feed::{Feed, Rng};
use zerocast_core::frame::{encode, FrameBuf};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zc-wal-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small() -> WalOptions {
    WalOptions {
        segment_size: 16 << 10,
        fsync: FsyncPolicy::Never,
        index_every: 8,
        buffer_bytes: 1024,
        ..Default::default()
    }
}

/// Encoded trade frames with their sequence in word 0, as the bus delivers
/// them.
fn frames(n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut feed = Feed::new(4, 7);
    (0..n)
        .map(|seq| {
            let mut buf = FrameBuf::default();
            let words = encode(&feed.trade(), 1, 2, &mut buf.0).unwrap();
            buf.0[0] = seq;
            (seq, buf.bytes()[..words * 8].to_vec())
        })
        .collect()
}

fn write_all(dir: &Path, opts: WalOptions, records: &[(u64, Vec<u8>)]) {
    let (mut wal, rec) = Wal::open(dir, "trades", opts).unwrap();
    assert_eq!(rec, Recovery::default());
    for (seq, f) in records {
        wal.append(*seq, 0, f).unwrap();
    }
    wal.sync().unwrap();
}

fn replay_all(dir: &Path, from: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut out = Vec::new();
    Replay::new(dir).run(from, u64::MAX, |r| {
        out.push((r.seq, r.frame.to_vec()));
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[test]
fn round_trip_across_rotations_and_seek_by_index() {
    let dir = tempdir("roundtrip");
    let records = frames(500);
    write_all(&dir, small(), &records);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 5, "rotation happened: {segments:?}");
    assert_eq!(replay_all(&dir, 0).unwrap(), records);
    // From the middle: starts exactly there.
    let tail = replay_all(&dir, 321).unwrap();
    assert_eq!(tail, records[321..]);
    // A bounded range.
    let mut got = Vec::new();
    Replay::new(&dir)
        .run(10, 12, |r| {
            got.push(r.seq);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, [10, 11, 12]);
}

#[test]
fn reopen_continues_after_the_last_sequence_and_rejects_going_back() {
    let dir = tempdir("reopen");
    let records = frames(100);
    write_all(&dir, small(), &records[..60]);
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    assert_eq!(wal.last_seq(), Some(59));
    assert!(matches!(
        wal.append(59, 0, &records[59].1),
        Err(WalError::OutOfOrder { last: 59, seq: 59 })
    ));
    for (seq, f) in &records[60..] {
        wal.append(*seq, 0, f).unwrap();
    }
    wal.append_lost(100, 0).unwrap();
    drop(wal);
    let mut kinds = BTreeMap::new();
    Replay::new(&dir)
        .run(0, u64::MAX, |r| {
            kinds.insert(r.seq, r.kind);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(kinds.len(), 101);
    assert_eq!(kinds[&100], KIND_LOST);
    assert_eq!(kinds[&0], KIND_FRAME);
}

#[test]
fn torn_tail_is_cut_reported_and_appends_continue() {
    let dir = tempdir("torn");
    let records = frames(40);
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small()
    };
    write_all(&dir, opts.clone(), &records[..30]);
    let seg = &list_segments(&dir).unwrap()[0].path;
    // Half of a record: a crash in the middle of a write.
    let end = {
        let (wal, _) = Wal::open(&dir, "trades", opts.clone()).unwrap();
        wal.write_pos
    };
    let mut partial = Vec::new();
    format::encode_record(&mut partial, 30, 0, KIND_FRAME, &records[30].1);
    let f = OpenOptions::new().write(true).open(seg).unwrap();
    f.write_all_at(&partial[..partial.len() / 2], end).unwrap();
    drop(f);

    let (mut wal, recovery) = Wal::open(&dir, "trades", opts).unwrap();
    let t = recovery.truncated.expect("the torn record is reported");
    assert_eq!(t.offset, end);
    assert_eq!(t.last_good_seq, Some(29));
    assert_eq!(t.first_cut_seq, Some(30));
    assert!(t.bytes > 0 && t.bytes <= partial.len() as u64, "{t}");
    assert_eq!(wal.last_seq(), Some(29));
    for (seq, fr) in &records[30..] {
        wal.append(*seq, 0, fr).unwrap();
    }
    drop(wal);
    assert_eq!(replay_all(&dir, 0).unwrap(), records);
}

#[test]
fn damage_in_the_middle_is_an_error_naming_file_and_offset() {
    let dir = tempdir("middle");
    let records = frames(50);
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small()
    };
    write_all(&dir, opts.clone(), &records);
    let seg = list_segments(&dir).unwrap()[0].path.clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let victim = SEGMENT_HEADER + 10 * format::record_size(records[0].1.len()) + 40;
    bytes[victim] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let expected_offset = (SEGMENT_HEADER + 10 * format::record_size(records[0].1.len())) as u64;
    match replay_all(&dir, 0) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!((path, offset), (seg.clone(), expected_offset));
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    match Wal::open(&dir, "trades", opts) {
        Err(e @ WalError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&seg.display().to_string())
                    && msg.contains(&format!("offset {expected_offset}")),
                "{msg}"
            );
        }
        other => panic!("open must refuse to truncate valid records: {other:?}"),
    }
}

/// Random truncations and bit flips: replay never yields a record that was
/// not written, and damage is either cut (tail) or reported (middle).
#[test]
fn random_damage_never_yields_an_unwritten_record() {
    let records = frames(300);
    let truth: BTreeMap<u64, Vec<u8>> = records.iter().cloned().collect();
    let mut rng = Rng::new(0xD15C);
    let cases = if cfg!(debug_assertions) { 60 } else { 200 };
    for case in 0..cases {
        let dir = tempdir(&format!("fuzz{case}"));
        write_all(&dir, small(), &records);
        let segments = list_segments(&dir).unwrap();
        let victim = &segments[(rng.next_u64() % segments.len() as u64) as usize].path;
        let mut bytes = std::fs::read(victim).unwrap();
        let used = bytes.iter().rposition(|&b| b != 0).unwrap_or(0) + 1;
        let at = (rng.next_u64() % used as u64) as usize;
        if rng.next_u64() % 2 == 0 {
            // Truncate the data (a zeroed tail, as preallocation leaves it).
            for b in &mut bytes[at..] {
                *b = 0;
            }
        } else {
            bytes[at] ^= 1 << (rng.next_u64() % 8);
        }
        std::fs::write(victim, &bytes).unwrap();
        let mut yielded = Vec::new();
        let result = Replay::new(&dir).run(0, u64::MAX, |r| {
            yielded.push((r.seq, r.frame.to_vec()));
            ControlFlow::Continue(())
        });
        for (seq, frame) in &yielded {
            assert_eq!(
                truth.get(seq),
                Some(frame),
                "case {case}: replay yielded a record never written (seq {seq})"
            );
        }
        let seqs: Vec<u64> = yielded.iter().map(|(s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "case {case}: out of order"
        );
        if result.is_ok() && yielded.len() < records.len() {
            // Only a cut tail may end a replay early without an error: what
            // was yielded is a prefix.
            assert_eq!(
                seqs,
                (0..seqs.len() as u64).collect::<Vec<_>>(),
                "case {case}: silent hole"
            );
        }
        // Opening either repairs a tail or reports the damage; never panics.
        let _ = Wal::open(&dir, "trades", small());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn retention_by_size_removes_the_oldest_sealed_segments() {
    let dir = tempdir("retain");
    let opts = WalOptions {
        retain_bytes: Some(40 << 10),
        ..small()
    };
    write_all(&dir, opts, &frames(1000));
    let segs = list_segments(&dir).unwrap();
    let sealed: u64 = segs[..segs.len() - 1]
        .iter()
        .map(|s| std::fs::metadata(&s.path).unwrap().len())
        .sum();
    assert!(sealed <= 40 << 10, "{sealed}");
    assert!(segs[0].first_seq > 0, "oldest segments were removed");
    // What remains replays from its first sequence to the end (from 0, the
    // removed sequences are a gap).
    assert!(matches!(
        replay_all(&dir, 0),
        Err(WalError::Gap { from: 0, .. })
    ));
    let got = replay_all(&dir, segs[0].first_seq).unwrap();
    assert_eq!(got.first().unwrap().0, segs[0].first_seq);
    assert_eq!(got.last().unwrap().0, 999);
}

#[test]
fn segment_of_another_topic_is_refused() {
    let dir = tempdir("topic");
    write_all(&dir, small(), &frames(3));
    let err = Wal::open(&dir, "books", small()).unwrap_err().to_string();
    assert!(
        err.contains("segment of topic \"trades\", not \"books\""),
        "{err}"
    );
}

#[test]
fn checkpoints_round_trip_and_damage_is_an_error() {
    let dir = tempdir("ckpt");
    let c = Checkpoints::new(&dir).unwrap();
    assert_eq!(c.load("risk").unwrap(), None);
    c.store("risk", 41).unwrap();
    c.store("risk", 42).unwrap();
    assert_eq!(c.load("risk").unwrap(), Some(42));
    let path = dir.join("risk.ckpt");
    let mut b = std::fs::read(&path).unwrap();
    b[9] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let err = c.load("risk").unwrap_err().to_string();
    assert!(err.contains("bad checkpoint: CRC mismatch"), "{err}");
    std::fs::write(&path, b"short").unwrap();
    assert!(c.load("risk").unwrap_err().to_string().contains("5 bytes"));
}

#[test]
fn fsync_policies_parse() {
    assert_eq!(
        "always".parse::<FsyncPolicy>().unwrap(),
        FsyncPolicy::Always
    );
    assert_eq!(
        "4096,10ms".parse::<FsyncPolicy>().unwrap(),
        FsyncPolicy::Group {
            records: 4096,
            interval: Duration::from_millis(10)
        }
    );
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
}

/// Offsets of the records of a segment, in order.
fn record_offsets(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut off = SEGMENT_HEADER;
    let mut out = Vec::new();
    while let Parsed::Record(_, size) = parse_record(&bytes, off) {
        out.push(off);
        off += size;
    }
    out
}

/// Zeroes 4 KiB of `path` from the record boundary nearest its middle;
/// returns the offset.
fn zero_page_at_middle_record(path: &Path) -> usize {
    let offsets = record_offsets(path);
    let at = offsets[offsets.len() / 3];
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at..at + 4096].fill(0);
    std::fs::write(path, &bytes).unwrap();
    at
}

#[test]
fn regression_zeroed_page_in_newest_segment_is_damage_not_end() {
    let dir = tempdir("zeroed-newest");
    let records = frames(400);
    let opts = WalOptions {
        segment_size: 1 << 20,
        ..small()
    };
    write_all(&dir, opts.clone(), &records);
    let seg = list_segments(&dir).unwrap()[0].path.clone();
    let at = zero_page_at_middle_record(&seg);
    let before = std::fs::read(&seg).unwrap();
    match Wal::open(&dir, "trades", opts) {
        Err(e @ WalError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&seg.display().to_string()) && msg.contains(&format!("offset {at}")),
                "{msg}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok((wal, rec)) => panic!(
            "a zeroed page with valid records after it opened as the end of the log \
             (last_seq {:?}, recovery {rec:?})",
            wal.last_seq()
        ),
    }
    assert!(
        std::fs::read(&seg).unwrap() == before,
        "open changed the segment"
    );
}

#[test]
fn regression_zeroed_page_in_sealed_segment_is_reported_not_a_silent_gap() {
    let dir = tempdir("zeroed-sealed");
    let records = frames(500);
    write_all(&dir, small(), &records);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 3);
    zero_page_at_middle_record(&segments[1].path);
    match replay_all(&dir, 0) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&segments[1].path.display().to_string()),
                "{msg}"
            );
        }
        Ok(got) => panic!(
            "replay returned {} of {} records without an error",
            got.len(),
            records.len()
        ),
    }
}

#[test]
fn regression_deleted_middle_segment_is_reported_as_missing() {
    let dir = tempdir("deleted-middle");
    let records = frames(500);
    write_all(&dir, small(), &records);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 3);
    std::fs::remove_file(&segments[2].path).unwrap();
    let (from, to) = (segments[2].first_seq, segments[3].first_seq - 1);
    match replay_all(&dir, 0) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("{from} to {to}")), "{msg}");
        }
        Ok(got) => panic!(
            "replay returned {} of {} records without an error",
            got.len(),
            records.len()
        ),
    }
    // Reading on: the gap, then everything after it.
    let mut gaps = Vec::new();
    let mut count = 0;
    Replay::new(&dir)
        .read(0, u64::MAX, |e| {
            match e {
                Entry::Record(_) => count += 1,
                Entry::Gap { from, to, .. } => gaps.push((from, to)),
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(gaps, [(from, to)]);
    assert_eq!(count, 500 - (to - from + 1));
}

#[test]
fn regression_segment_removed_under_a_reader_is_missing_and_the_reader_goes_on() {
    let dir = tempdir("removed-under");
    let records = frames(500);
    write_all(&dir, small(), &records);
    let segments = list_segments(&dir).unwrap();
    assert!(segments.len() > 3);
    let victim = segments[1].clone();
    let mut gaps = Vec::new();
    let mut seqs = Vec::new();
    let stats = Replay::new(&dir)
        .read(0, u64::MAX, |e| {
            match e {
                Entry::Record(r) => {
                    if r.seq == 0 {
                        // Retention removes the next segment while we read
                        // this one.
                        std::fs::remove_file(&victim.path).unwrap();
                    }
                    seqs.push(r.seq);
                }
                Entry::Gap { from, to, path } => gaps.push((from, to, path)),
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let (from, to) = (segments[1].first_seq, segments[2].first_seq - 1);
    assert_eq!(gaps, [(from, to, victim.path.clone())]);
    assert_eq!(stats.gap, to - from + 1);
    let mut expected: Vec<u64> = (0..from).collect();
    expected.extend(to + 1..500);
    assert_eq!(seqs, expected);
}

#[test]
fn corrupt_segment_header_is_an_error_naming_the_file() {
    let dir = tempdir("bad-header");
    write_all(&dir, small(), &frames(500));
    let segments = list_segments(&dir).unwrap();
    for victim in [&segments[1].path, &segments.last().unwrap().path] {
        let mut bytes = std::fs::read(victim).unwrap();
        bytes[3] ^= 0xFF;
        std::fs::write(victim, &bytes).unwrap();
        let err = Wal::open(&dir, "trades", small()).unwrap_err().to_string();
        assert!(
            err.contains(&victim.display().to_string()) && err.contains("bad magic"),
            "{err}"
        );
        bytes[3] ^= 0xFF;
        std::fs::write(victim, &bytes).unwrap();
    }
}

/// Version-1 logs stay readable; the active segment is relabelled version 2
/// at open (its records are valid in both), sealed ones are left alone.
#[test]
fn version_1_log_is_read_and_its_active_segment_relabelled() {
    let dir = tempdir("v1");
    let records = frames(300);
    write_all(&dir, small(), &records);
    let segments = list_segments(&dir).unwrap();
    for s in &segments {
        let f = OpenOptions::new().write(true).open(&s.path).unwrap();
        f.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
    }
    assert_eq!(replay_all(&dir, 0).unwrap(), records);
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    wal.append_missed(300, 10, 0).unwrap();
    wal.append(310, 0, &records[0].1).unwrap();
    assert_eq!(wal.last_seq(), Some(310));
    drop(wal);
    let version = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        format::decode_header(&b).unwrap().version
    };
    assert_eq!(version(&segments[0].path), 1);
    assert_eq!(version(&segments.last().unwrap().path), format::VERSION);
    let mut last = Vec::new();
    Replay::new(&dir)
        .run(299, u64::MAX, |r| {
            last.push((r.seq, r.last_seq()));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(last, [(299, 299), (300, 309), (310, 310)]);
    // Reopening continues after the range's end.
    let (wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    assert_eq!(wal.last_seq(), Some(310));
}

/// Records' sequences and gaps, in the order `read` handed them out.
type Entries = (Vec<u64>, Vec<(u64, u64)>);

/// Replays everything from `from` with `read`: (records' sequences, gaps).
fn read_all_entries(dir: &Path, from: u64) -> Result<Entries, WalError> {
    let mut seqs = Vec::new();
    let mut gaps = Vec::new();
    Replay::new(dir).read(from, u64::MAX, |e| {
        match e {
            Entry::Record(r) => seqs.push(r.seq),
            Entry::Gap { from, to, .. } => gaps.push((from, to)),
        }
        ControlFlow::Continue(())
    })?;
    Ok((seqs, gaps))
}

#[test]
fn regression_zeroed_records_in_newest_segment_are_an_error_for_the_reader() {
    let dir = tempdir("zeroed-newest-reader");
    write_all(&dir, small(), &frames(500));
    let seg = list_segments(&dir).unwrap().last().unwrap().path.clone();
    let offsets = record_offsets(&seg);
    assert!(offsets.len() > 10);
    // Zero records 5..=7 of the newest segment.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offsets[5]..offsets[8]].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    match read_all_entries(&dir, 0) {
        Err(e @ WalError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&seg.display().to_string())
                    && msg.contains(&format!("offset {}", offsets[5])),
                "{msg}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok((seqs, gaps)) => panic!(
            "the reader ended quietly at sequence {:?} ({} records, gaps {gaps:?}); \
             500 were written",
            seqs.last(),
            seqs.len()
        ),
    }
}

#[test]
fn regression_sequences_past_max_seq_are_refused_not_overflowed() {
    use zerocast_core::broadcast::MAX_SEQ;
    // A record that covers a sequence past MAX_SEQ is damage: nothing in a
    // valid log gets there, and `last + 1` would overflow at u64::MAX.
    for (seq, kind, frame) in [
        (u64::MAX, KIND_LOST, Vec::new()),
        (MAX_SEQ + 1, KIND_LOST, Vec::new()),
        (MAX_SEQ, format::KIND_MISSED, 2u64.to_le_bytes().to_vec()),
        (0, format::KIND_MISSED, u64::MAX.to_le_bytes().to_vec()),
    ] {
        let mut buf = Vec::new();
        format::encode_record(&mut buf, seq, 0, kind, &frame);
        assert!(
            matches!(parse_record(&buf, 0), Parsed::Bad(r) if r.contains("MAX_SEQ")),
            "seq {seq} kind {kind}: {:?}",
            parse_record(&buf, 0)
        );
    }
    let mut buf = Vec::new();
    format::encode_record(&mut buf, MAX_SEQ, 0, KIND_LOST, &[]);
    assert!(matches!(parse_record(&buf, 0), Parsed::Record(..)));

    // The writer refuses them with an error instead of overflowing.
    let dir = tempdir("max-seq");
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    wal.append_lost(MAX_SEQ - 1, 0).unwrap();
    let err = wal.append_lost(u64::MAX, 0).unwrap_err().to_string();
    assert!(err.contains(&u64::MAX.to_string()), "{err}");
    wal.append_missed(MAX_SEQ, 10, 0).unwrap();
    assert_eq!(wal.last_seq(), Some(MAX_SEQ));
    wal.sync().unwrap();
    drop(wal);
    let (wal, rec) = Wal::open(&dir, "trades", small()).unwrap();
    assert_eq!((wal.last_seq(), rec), (Some(MAX_SEQ), Recovery::default()));

    // A checkpoint past MAX_SEQ is damaged, not a position to resume after.
    let ck = Checkpoints::new(&dir.join("ckpt")).unwrap();
    ck.store("x", u64::MAX).unwrap();
    let err = ck.load("x").unwrap_err().to_string();
    assert!(err.contains("MAX_SEQ"), "{err}");
}

#[test]
fn regression_newest_listed_segment_removed_under_a_reader_is_missing_not_an_error() {
    let dir = tempdir("newest-removed-under");
    write_all(&dir, small(), &frames(500));
    let segments = list_segments(&dir).unwrap();
    let n = segments.len();
    assert!(n > 3);
    // The reader lists segments 0 ..= n-2 (the writer has not rotated to
    // n-1 yet); while it reads segment 0 the writer rotates (n-1 appears)
    // and retention removes n-2, the newest the reader listed.
    let aside = dir.join("aside");
    std::fs::rename(&segments[n - 1].path, &aside).unwrap();
    let victim = &segments[n - 2];
    let mut seqs = Vec::new();
    let mut gaps = Vec::new();
    let result = Replay::new(&dir).read(0, u64::MAX, |e| {
        match e {
            Entry::Record(r) => {
                if r.seq == 0 {
                    std::fs::rename(&aside, &segments[n - 1].path).unwrap();
                    std::fs::remove_file(&victim.path).unwrap();
                }
                seqs.push(r.seq);
            }
            Entry::Gap { from, to, .. } => gaps.push((from, to)),
        }
        ControlFlow::Continue(())
    });
    let stats = result.unwrap();
    let (from, to) = (victim.first_seq, segments[n - 1].first_seq - 1);
    assert_eq!(gaps, [(from, to)]);
    assert_eq!(stats.gap, to - from + 1);
    let mut expected: Vec<u64> = (0..from).collect();
    expected.extend(to + 1..500);
    assert_eq!(seqs, expected);

    // Removed, and nothing after it: the reader stops quietly at the end
    // of what it could read, reporting what it knows is gone.
    let segments = list_segments(&dir).unwrap();
    let last = segments.last().unwrap().clone();
    let mut gaps = Vec::new();
    let mut count = 0;
    Replay::new(&dir)
        .read(0, u64::MAX, |e| {
            match e {
                Entry::Record(r) => {
                    if r.seq == 0 {
                        std::fs::remove_file(&last.path).unwrap();
                    }
                    count += 1;
                }
                Entry::Gap { from, to, .. } => gaps.push((from, to)),
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(count as u64, last.first_seq - (to - from + 1));
}

#[test]
fn zero_scans_find_the_first_and_last_non_zero_bytes() {
    for len in [0usize, 7, 8, 4095, 4096, 4097, 3 * 4096 + 13] {
        let bytes = vec![0u8; len];
        assert!(all_zero(&bytes) && end_of_nonzero(&bytes).is_none());
        assert_eq!(first_nonzero_word(&bytes, 0), None);
        for at in [0, len / 2, len.saturating_sub(1)] {
            if at >= len {
                continue;
            }
            let mut b = bytes.clone();
            b[at] = 1;
            assert!(!all_zero(&b));
            assert_eq!(end_of_nonzero(&b), Some(at + 1), "len {len} at {at}");
            assert_eq!(
                first_nonzero_word(&b, 0),
                Some(at / 8 * 8),
                "len {len} at {at}"
            );
            let after = (at / 8 + 1) * 8;
            assert_eq!(first_nonzero_word(&b, after), None, "len {len} at {at}");
        }
    }
}

#[test]
fn regression_reader_checks_each_segment_header() {
    let dir = tempdir("reader-headers");
    write_all(&dir, small(), &frames(500));
    let segments = list_segments(&dir).unwrap();
    let victim = &segments[1].path;
    let good = std::fs::read(victim).unwrap();
    let expect_bad = |dir: &Path, replay: Replay, what: &str| {
        let mut count = 0;
        match replay.read(0, u64::MAX, |_| {
            count += 1;
            ControlFlow::Continue(())
        }) {
            Err(e @ WalError::BadSegment { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&victim.display().to_string()) && msg.contains(what),
                    "{msg}"
                );
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!(
                "{}: read {count} entries through a segment whose header is wrong ({what})",
                dir.display()
            ),
        }
    };
    // A zeroed header.
    let mut bytes = good.clone();
    bytes[..SEGMENT_HEADER].fill(0);
    std::fs::write(victim, &bytes).unwrap();
    expect_bad(&dir, Replay::new(&dir), "bad magic");
    // A header naming another first sequence than the file name.
    let mut bytes = good.clone();
    bytes[16..24].copy_from_slice(&7u64.to_le_bytes());
    std::fs::write(victim, &bytes).unwrap();
    expect_bad(&dir, Replay::new(&dir), "first sequence");
    // A segment of another topic under a matching name.
    let mut bytes = good.clone();
    bytes[32..64].fill(0);
    bytes[32..38].copy_from_slice(b"quotes");
    std::fs::write(victim, &bytes).unwrap();
    assert!(
        read_all_entries(&dir, 0).is_ok(),
        "no topic given, none checked"
    );
    expect_bad(&dir, Replay::with_topic(&dir, "trades"), "quotes");
    std::fs::write(victim, &good).unwrap();
    assert_eq!(
        read_all_entries(&dir, 0).unwrap().0,
        (0..500).collect::<Vec<_>>()
    );
}

#[test]
fn regression_topic_longer_than_the_header_field_reopens() {
    let dir = tempdir("long-topic");
    let topic = "a_topic_name_that_is_longer_than_32_bytes_but_under_64";
    assert!(topic.len() > 32 && topic.len() <= 64);
    let (mut wal, _) = Wal::open(&dir, topic, small()).unwrap();
    wal.append_lost(0, 0).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(&dir, topic, small()).unwrap();
    assert_eq!(wal.last_seq(), Some(0));
    assert!(Replay::with_topic(&dir, topic)
        .run(0, u64::MAX, |_| ControlFlow::Continue(()))
        .is_ok());
}

#[test]
fn regression_log_starting_after_from_is_a_leading_gap() {
    // The oldest segment removed: the log now starts later than asked.
    let dir = tempdir("leading-gap");
    write_all(&dir, small(), &frames(500));
    let segments = list_segments(&dir).unwrap();
    std::fs::remove_file(&segments[0].path).unwrap();
    let begins = segments[1].first_seq;
    let (seqs, gaps) = read_all_entries(&dir, 0).unwrap();
    assert_eq!(gaps, [(0, begins - 1)]);
    assert_eq!(seqs, (begins..500).collect::<Vec<_>>());
    // Clipped to what was asked; none when the log covers `from`.
    assert_eq!(read_all_entries(&dir, 5).unwrap().1, [(5, begins - 1)]);
    assert!(read_all_entries(&dir, begins).unwrap().1.is_empty());
    // `run` reports it as the error it reports every gap as.
    let err = replay_all(&dir, 0).unwrap_err().to_string();
    assert!(err.contains(&format!("0 to {}", begins - 1)), "{err}");

    // A log whose first record comes after its segment's name (the
    // recorder joined a ring that had moved on): the same, from the
    // reader's view.
    let dir = tempdir("leading-gap-late-start");
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    wal.append_lost(1000, 0).unwrap();
    wal.append_lost(1001, 0).unwrap();
    drop(wal);
    let (seqs, gaps) = read_all_entries(&dir, 0).unwrap();
    assert_eq!((seqs, gaps), (vec![1000, 1001], vec![(0, 999)]));
}

/// Open and the reader agree on where a segment's records may start: at or
/// after its name, and after the previous segment's last sequence.
#[test]
fn regression_open_checks_the_last_segment_against_its_name_and_the_one_before() {
    // A record below its segment's name.
    let dir = tempdir("below-name");
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    wal.append_lost(0, 0).unwrap();
    drop(wal);
    let seg = list_segments(&dir).unwrap()[0].path.clone();
    let renamed = dir.join(segment_name(5));
    std::fs::rename(&seg, &renamed).unwrap();
    let mut bytes = std::fs::read(&renamed).unwrap();
    bytes[16..24].copy_from_slice(&5u64.to_le_bytes());
    std::fs::write(&renamed, &bytes).unwrap();
    let read = read_all_entries(&dir, 0);
    let open = Wal::open(&dir, "trades", small()).map(|(w, r)| (w.last_seq(), r));
    assert!(
        matches!(&read, Err(WalError::Corrupt { path, .. }) if *path == renamed),
        "{read:?}"
    );
    assert!(
        !matches!(
            open,
            Ok((
                _,
                Recovery {
                    truncated: None,
                    ..
                }
            ))
        ),
        "open took a record below its segment's name as the log: {open:?}"
    );

    // An empty last segment named past the previous one's end: the log
    // goes on after the name, not after the previous record.
    let dir = tempdir("empty-last-later");
    write_all(&dir, small(), &frames(500));
    assert!(list_segments(&dir).unwrap().len() > 2);
    let (_f, _p) = Wal::create_segment(&dir, "trades", 1000, 16 << 10).unwrap();
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    assert_eq!(wal.last_seq(), Some(999));
    assert!(wal.append_lost(500, 0).is_err());
    wal.append_lost(1000, 0).unwrap();
    drop(wal);
    let (seqs, gaps) = read_all_entries(&dir, 0).unwrap();
    assert_eq!(gaps, [(500, 999)]);
    assert_eq!(seqs.len(), 501);

    // A last segment named inside the previous one: refused by both.
    let dir = tempdir("overlapping-last");
    write_all(&dir, small(), &frames(500));
    let newest = list_segments(&dir).unwrap().last().unwrap().first_seq;
    let (_f, _p) = Wal::create_segment(&dir, "trades", newest + 1, 16 << 10).unwrap();
    assert!(read_all_entries(&dir, 0).is_err());
    let open = Wal::open(&dir, "trades", small()).map(|(w, _)| w.last_seq());
    assert!(
        open.is_err(),
        "open accepted a segment overlapping the one before: {open:?}"
    );
}

/// A records-only group commit still syncs an idle writer's records within
/// a bounded time (it used to wait up to an hour).
#[test]
fn regression_records_only_fsync_policy_has_a_bounded_interval() {
    let FsyncPolicy::Group { records, interval } = "4096".parse::<FsyncPolicy>().unwrap() else {
        panic!("not a group commit");
    };
    assert_eq!(records, 4096);
    assert!(interval <= Duration::from_secs(1), "{interval:?}");
    // The writer's idle timer says so.
    let dir = tempdir("records-only");
    let opts = WalOptions {
        fsync: "4096".parse().unwrap(),
        ..small()
    };
    let (mut wal, _) = Wal::open(&dir, "trades", opts).unwrap();
    wal.append_lost(0, 0).unwrap();
    let due = wal.sync_due_in().expect("a record is waiting on the clock");
    assert!(due <= Duration::from_secs(1), "{due:?}");
}

/// Kinds 3 (missed) and 4 (invalid) came with version 2: a version-1
/// segment holding one is damaged, for the reader and for open.
#[test]
fn regression_version_1_segment_with_version_2_kinds_is_refused() {
    let dir = tempdir("v1-kinds");
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    wal.append_lost(0, 0).unwrap();
    wal.append_missed(1, 5, 0).unwrap();
    drop(wal);
    let seg = list_segments(&dir).unwrap()[0].path.clone();
    let missed_at = record_offsets(&seg)[1];
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
    drop(f);
    match read_all_entries(&dir, 0) {
        Err(WalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset as usize, missed_at, "{reason}");
            assert!(reason.contains("version 1"), "{reason}");
        }
        other => panic!("a version-1 segment with a missed range read as {other:?}"),
    }
    let open = Wal::open(&dir, "trades", small()).map(|(w, r)| (w.last_seq(), r));
    match open {
        Ok((
            last,
            Recovery {
                truncated: Some(t), ..
            },
        )) => {
            assert_eq!((last, t.offset as usize), (Some(0), missed_at), "{t}");
        }
        Err(WalError::Corrupt { .. }) => {}
        other => panic!("open took the version-1 segment as it is: {other:?}"),
    }
}

/// After a power loss, pages written after the last fdatasync may reach the
/// disk in any order (or never): a zeroed block with records after it, all
/// past the synced mark, is a torn tail to cut (and report, with the
/// sequences cut), not damage that stops the recorder. Below the mark the
/// same bytes are damage, as before.
#[test]
fn regression_unsynced_tail_with_a_hole_is_cut_after_a_power_loss() {
    let dir = tempdir("unsynced-hole");
    let records = frames(200);
    let opts = WalOptions {
        segment_size: 1 << 20,
        fsync: FsyncPolicy::Group {
            records: u64::MAX,
            interval: Duration::from_secs(3600),
        },
        ..small()
    };
    let (mut wal, _) = Wal::open(&dir, "trades", opts.clone()).unwrap();
    for (seq, f) in &records[..100] {
        wal.append(*seq, 0, f).unwrap();
    }
    wal.sync().unwrap();
    for (seq, f) in &records[100..] {
        wal.append(*seq, 0, f).unwrap();
    }
    // Written, never synced; then the machine dies (no drop, no sync).
    wal.flush().unwrap();
    wal.crash();
    let seg = list_segments(&dir).unwrap()[0].path.clone();
    let offsets = record_offsets(&seg);
    let good = std::fs::read(&seg).unwrap();
    // A page of the unsynced part (records 150..=152) never reached the disk.
    let mut bytes = good.clone();
    bytes[offsets[150]..offsets[153]].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let (wal, rec) = Wal::open(&dir, "trades", opts.clone())
        .unwrap_or_else(|e| panic!("a hole in the never-synced tail stopped open: {e}"));
    assert_eq!(wal.last_seq(), Some(149));
    let t = rec.truncated.expect("the cut is reported");
    assert_eq!(t.offset as usize, offsets[150]);
    assert_eq!(
        (t.last_good_seq, t.first_cut_seq, t.last_cut_seq),
        (Some(149), Some(153), Some(199))
    );
    drop(wal);
    assert_eq!(
        read_all_entries(&dir, 0).unwrap().0,
        (0..150).collect::<Vec<_>>()
    );

    // The same hole below the synced mark is damage: an error, nothing cut.
    let dir2 = tempdir("synced-hole");
    let seg2 = dir2.join(seg.file_name().unwrap());
    write_all(&dir2, opts.clone(), &records);
    let mut bytes = std::fs::read(&seg2).unwrap();
    bytes[offsets[150]..offsets[153]].fill(0);
    std::fs::write(&seg2, &bytes).unwrap();
    assert!(matches!(
        Wal::open(&dir2, "trades", opts),
        Err(WalError::Corrupt { .. })
    ));
}

/// Zeros and then bytes that are no record (a torn write whose first page
/// never reached the disk) are cut at open, so records appended after them
/// are not followed by junk that the next open would report as a torn tail.
/// Found by the wal_open fuzzer.
#[test]
fn regression_junk_after_the_end_is_cut_at_open_not_left_for_the_next() {
    let dir = tempdir("junk-after-end");
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    for seq in 0..10 {
        wal.append_lost(seq, 0).unwrap();
    }
    drop(wal);
    let seg = list_segments(&dir).unwrap()[0].path.clone();
    let end = *record_offsets(&seg).last().unwrap() + 32;
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[end + 256..end + 512].fill(0xA5);
    std::fs::write(&seg, &bytes).unwrap();
    let (mut wal, rec) = Wal::open(&dir, "trades", small()).unwrap();
    let t = rec.truncated.expect("the junk is cut and reported");
    assert_eq!((t.offset as usize, t.bytes), (end, 512));
    for seq in 10..20 {
        wal.append_lost(seq, 0).unwrap();
    }
    drop(wal);
    let (wal, rec) = Wal::open(&dir, "trades", small()).unwrap();
    assert_eq!((wal.last_seq(), rec), (Some(19), Recovery::default()));
}

/// Two writers on one WAL directory corrupt it (each cuts and appends to
/// the other's tail): the second is refused while the first lives, naming
/// its pid, and the lock is free again once the first is dropped. Readers
/// take no lock.
#[test]
fn regression_second_writer_is_refused_while_the_first_lives() {
    let dir = tempdir("writer-lock");
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    for (seq, f) in frames(5) {
        wal.append(seq, 0, &f).unwrap();
    }
    wal.sync().unwrap();
    match Wal::open(&dir, "trades", small()) {
        Err(WalError::Locked { path, holder }) => {
            assert_eq!(path, dir.join(LOCK_FILE));
            assert_eq!(holder, Some(std::process::id()));
        }
        other => panic!(
            "a second writer was let in: {:?}",
            other.map(|(w, _)| w.last_seq())
        ),
    }
    let msg = Wal::open(&dir, "trades", small())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // A reader is not a writer.
    assert_eq!(
        read_all_entries(&dir, 0).unwrap().0,
        (0..5).collect::<Vec<_>>()
    );
    drop(wal);
    let (wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    assert_eq!(wal.last_seq(), Some(4));
}

/// Regression: a new log's first segment was named 0 whatever sequence it
/// held first (a recorder joins a ring anywhere): `00000000000000000000.wal`
/// holding 5000 onwards. Each segment file is now named by the first
/// sequence it holds, also after a restart on an empty active segment.
#[test]
fn regression_segment_file_is_named_by_its_first_sequence() {
    let dir = tempdir("first-seq-name");
    let frame = &frames(1)[0].1;
    {
        let (mut wal, _) = Wal::open(&dir, "t", small()).unwrap();
        wal.append(5000, 0, frame).unwrap();
        wal.append(5001, 0, frame).unwrap();
        wal.sync().unwrap();
    }
    let names = |dir: &Path| {
        list_segments(dir)
            .unwrap()
            .iter()
            .map(|s| (s.first_seq, s.path.file_name().unwrap().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&dir),
        vec![(5000, std::ffi::OsString::from(segment_name(5000)))]
    );
    // No other file of the old name is left (index, mark).
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(&"0".repeat(20)), "{name} left behind");
    }
    let mut seen = Vec::new();
    Replay::with_topic(&dir, "t")
        .read(0, u64::MAX, |e| {
            if let Entry::Record(r) = e {
                seen.push(r.seq);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, vec![5000, 5001]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A recorder restarted on a log that already holds sequences exports the
/// log's last sequence from the start, as a restarted batcher exports its
/// last committed one: before, `zerocast_wal_last_sequence` was absent (and
/// `zerocast health` showed `-`) until the first new record.
#[test]
fn regression_counters_get_the_logs_last_sequence_when_set() {
    use zerocast_ipc::counters::{CounterKind, CountersTable};
    let dir = tempdir("ctrlast");
    let records = frames(10);
    write_all(&dir, small(), &records);
    let (mut wal, _) = Wal::open(&dir, "trades", small()).unwrap();
    let path = dir.join("counters");
    let table = std::sync::Arc::new(CountersTable::open_or_create(&path).unwrap());
    let c = table.claim(CounterKind::Wal, "trades", "recorder").unwrap();
    wal.set_counters(Some(c));
    let seen = table.snapshot()[0].values[counters::LAST_SEQ];
    drop(wal);
    drop(table);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(seen, 10, "last sequence 9, plus one");
}
