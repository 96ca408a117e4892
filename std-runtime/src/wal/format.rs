//! The on-disk format of the write-ahead log.
//!
//! A topic's WAL is a directory of segment files named by the first sequence
//! they hold (`00000000000000001234.wal`), each with a sparse index beside it
//! (`.idx`) and a synced mark (`.synced`: magic `ZCSYNC01` | offset u64 |
//! CRC32C u32, the offset up to which the segment's records had been
//! fdatasynced when it was written; a lower bound). A segment is
//! preallocated to its full size; the bytes after the last record are zero.
//!
//! ```text
//! segment  = header(64) record*
//! header   = magic "ZCWAL\0\0\x01" | version u32 | header_len u32 | first_seq u64
//!            | created_ns u64 | topic [u8; 32] (cut to 32 bytes, zero-padded)
//! record   = len u32 | crc u32 | seq u64 | timestamp_ns u64 | kind u32 | reserved u32
//!            | frame [u8; len] | zero padding to a multiple of 8
//! crc      = CRC32C of the record with the crc field left out
//! kind     = 1 frame   (the archived frame as it was on the bus, validated)
//!            2 lost    (len 0: the bus declared this sequence lost)
//!            3 missed  (len 8, frame = count u64: the recorder was lapped and
//!                       never saw sequences seq ..= seq + count - 1; one
//!                       record for the whole range)          since version 2
//!            4 invalid (the bytes the bus delivered for seq, which fail
//!                       frame validation; len may be 0)     since version 2
//! index    = (seq u64, offset u64)* every `index_every` records: a hint,
//!            checked against the record it points to
//! ```
//!
//! Sequences are at most [`MAX_SEQ`] (2^56 - 1, the largest a ring hands
//! out); a record covering a later one is damage.
//!
//! All integers little-endian. A header of all zeros marks the end of the
//! written records (zeros followed by a valid record are damage, not an end;
//! at open, past the synced mark they are a tail torn out of order by a
//! power loss, and cut).
//!
//! The log is contiguous: each record starts at the sequence after the last
//! one the record before it covers (a missed record covers its whole range),
//! and each segment starts right after the previous one ends. Only the very
//! first record may start later than its segment's name (a WAL is created
//! before the recorder knows where the ring starts).
//!
//! Version 2 added kinds 3 and 4 and is otherwise version 1; this build
//! reads both, and writes version 2 (an active version-1 segment is relabelled
//! at open, since every version-1 record is a valid version-2 record).

pub use zerocast_core::broadcast::MAX_SEQ;

/// Segment file magic.
pub const MAGIC: [u8; 8] = *b"ZCWAL\0\0\x01";
/// Format version written.
pub const VERSION: u32 = 2;
/// Oldest format version read.
pub const MIN_VERSION: u32 = 1;
/// Segment header size.
pub const SEGMENT_HEADER: usize = 64;
/// Record header size.
pub const RECORD_HEADER: usize = 32;
/// Largest frame a record may hold: the bus's one payload size limit
/// ([`MAX_FRAME_LEN`](zerocast_core::frame::MAX_FRAME_LEN), what a ring slot
/// holds). The writer refuses a longer frame; the reader calls one damage.
pub const MAX_RECORD_FRAME: usize = zerocast_core::frame::MAX_FRAME_LEN;
/// Record kind: a frame.
pub const KIND_FRAME: u32 = 1;
/// Record kind: a sequence the bus declared lost.
pub const KIND_LOST: u32 = 2;
/// Record kind: a range of sequences the recorder missed (it was lapped):
/// `seq` is the first, the frame holds the count (u64).
pub const KIND_MISSED: u32 = 3;
/// Record kind: what the bus delivered for `seq`, which is not a valid frame.
pub const KIND_INVALID: u32 = 4;

/// Why a record of `kind` cannot be in a segment of format `version` (kinds
/// 3 and 4 came with version 2), or None if it can.
pub fn kind_unknown_to(version: u32, kind: u32) -> Option<String> {
    (version < 2 && matches!(kind, KIND_MISSED | KIND_INVALID)).then(|| {
        format!("record kind {kind} in a version {version} segment (kind added in version 2)")
    })
}

/// Bytes a record with a `len`-byte frame takes.
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER + len.div_ceil(8) * 8
}

fn crc(len: u32, seq: u64, ts: u64, kind: u32, frame: &[u8]) -> u32 {
    let mut head = [0u8; 28];
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[4..12].copy_from_slice(&seq.to_le_bytes());
    head[12..20].copy_from_slice(&ts.to_le_bytes());
    head[20..24].copy_from_slice(&kind.to_le_bytes());
    // bytes 24..28: the reserved word, zero.
    crc32c::crc32c_append(crc32c::crc32c(&head), frame)
}

/// Appends one record to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, ts: u64, kind: u32, frame: &[u8]) {
    let len = frame.len() as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc(len, seq, ts, kind, frame).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(frame);
    out.resize(start + record_size(frame.len()), 0);
}

/// A record read from a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Topic sequence.
    pub seq: u64,
    /// When the recorder received it, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// [`KIND_FRAME`], [`KIND_LOST`], [`KIND_MISSED`] or [`KIND_INVALID`].
    pub kind: u32,
    /// The frame bytes (empty for a lost marker, the count for a missed
    /// range, the raw bytes for an invalid frame). 8-byte aligned when the
    /// segment is mapped.
    pub frame: &'a [u8],
}

impl RecordRef<'_> {
    /// How many sequences the record covers: the count of a missed range,
    /// else 1.
    pub fn count(&self) -> u64 {
        match self.frame.get(..8) {
            Some(count) if self.kind == KIND_MISSED => u64_at(count, 0).max(1),
            _ => 1,
        }
    }

    /// The last sequence the record covers.
    pub fn last_seq(&self) -> u64 {
        self.seq.saturating_add(self.count() - 1)
    }
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A valid record and its size.
    Record(RecordRef<'a>, usize),
    /// A zero header: no more records.
    End,
    /// Not a valid record, and why.
    Bad(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the record at `offset` of `segment`.
pub fn parse_record(segment: &[u8], offset: usize) -> Parsed<'_> {
    let head = offset
        .checked_add(RECORD_HEADER)
        .and_then(|end| segment.get(offset..end));
    let Some(head) = head else {
        // Past the end (an index entry may point anywhere), or a short
        // tail: zeros end the records.
        return if offset >= segment.len() || segment[offset..].iter().all(|&b| b == 0) {
            Parsed::End
        } else {
            Parsed::Bad("truncated record header")
        };
    };
    if head.iter().all(|&b| b == 0) {
        return Parsed::End;
    }
    let (len, stored_crc, seq, ts, kind, reserved) = (
        u32_at(head, 0),
        u32_at(head, 4),
        u64_at(head, 8),
        u64_at(head, 16),
        u32_at(head, 24),
        u32_at(head, 28),
    );
    if reserved != 0 {
        return Parsed::Bad("reserved field is not zero");
    }
    match kind {
        KIND_FRAME if len == 0 => return Parsed::Bad("frame record of length 0"),
        KIND_LOST if len != 0 => return Parsed::Bad("lost marker with a frame"),
        KIND_MISSED if len != 8 => return Parsed::Bad("missed range without an 8-byte count"),
        KIND_FRAME | KIND_LOST | KIND_MISSED | KIND_INVALID => {}
        _ => return Parsed::Bad("unknown record kind"),
    }
    if len as usize > MAX_RECORD_FRAME {
        return Parsed::Bad("record length out of range");
    }
    let size = record_size(len as usize);
    let Some(frame) = segment.get(offset + RECORD_HEADER..offset + RECORD_HEADER + len as usize)
    else {
        return Parsed::Bad("record runs past the end of the segment");
    };
    if offset + size > segment.len() {
        return Parsed::Bad("record runs past the end of the segment");
    }
    if crc(len, seq, ts, kind, frame) != stored_crc {
        return Parsed::Bad("CRC mismatch");
    }
    let count = if kind == KIND_MISSED {
        u64_at(frame, 0)
    } else {
        1
    };
    if count == 0 {
        return Parsed::Bad("missed range of no sequence");
    }
    // No ring hands out a sequence past MAX_SEQ, so a record covering one
    // is damage (and `last + 1` stays in range for everything that reads
    // the log).
    if seq.checked_add(count - 1).is_none_or(|last| last > MAX_SEQ) {
        return Parsed::Bad("record covers a sequence past MAX_SEQ (2^56 - 1)");
    }
    Parsed::Record(
        RecordRef {
            seq,
            timestamp_ns: ts,
            kind,
            frame,
        },
        size,
    )
}

/// The segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version it was written with.
    pub version: u32,
    /// First sequence the segment holds.
    pub first_seq: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Topic name.
    pub topic: String,
}

/// Encodes a segment header.
pub fn encode_header(first_seq: u64, created_ns: u64, topic: &str) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER as u32).to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h[24..32].copy_from_slice(&created_ns.to_le_bytes());
    let t = topic.as_bytes();
    let n = t.len().min(32);
    h[32..32 + n].copy_from_slice(&t[..n]);
    h
}

/// True if a header's `topic` field (at most 32 bytes, as
/// [`encode_header`] stores it) names `topic`; a topic name may be longer
/// (up to 64 characters) and is kept cut to 32 bytes.
pub fn header_names_topic(header_topic: &str, topic: &str) -> bool {
    let t = topic.as_bytes();
    header_topic.as_bytes() == &t[..t.len().min(32)]
}

/// Decodes a segment header, or says what is wrong with it.
pub fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, String> {
    if bytes.len() < SEGMENT_HEADER {
        return Err(format!(
            "{} bytes, shorter than a segment header",
            bytes.len()
        ));
    }
    if bytes[0..8] != MAGIC {
        return Err("not a zerocast WAL segment (bad magic)".into());
    }
    let version = u32_at(bytes, 8);
    if !(MIN_VERSION..=VERSION).contains(&version) || u32_at(bytes, 12) as usize != SEGMENT_HEADER {
        return Err(format!(
            "WAL format version {version}, this build reads {MIN_VERSION} to {VERSION}"
        ));
    }
    let topic = &bytes[32..64];
    let end = topic.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(SegmentHeader {
        version,
        first_seq: u64_at(bytes, 16),
        created_ns: u64_at(bytes, 24),
        topic: String::from_utf8_lossy(&topic[..end]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_bit_flip_is_caught() {
        let mut buf = vec![0u8; SEGMENT_HEADER];
        encode_record(&mut buf, 42, 7, KIND_FRAME, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let size = buf.len() - SEGMENT_HEADER;
        assert_eq!(size, record_size(9));
        buf.resize(buf.len() + 64, 0);
        match parse_record(&buf, SEGMENT_HEADER) {
            Parsed::Record(r, s) => {
                assert_eq!(
                    (r.seq, r.timestamp_ns, r.kind, r.frame, s),
                    (42, 7, KIND_FRAME, &[1u8, 2, 3, 4, 5, 6, 7, 8, 9][..], size)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_record(&buf, SEGMENT_HEADER + size), Parsed::End);
        // Any single flipped bit in the header or the frame is rejected.
        for byte in SEGMENT_HEADER..SEGMENT_HEADER + RECORD_HEADER + 9 {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    !matches!(parse_record(&damaged, SEGMENT_HEADER), Parsed::Record(..)),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn missed_range_round_trips_and_a_bad_count_is_refused() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 64, 1, KIND_MISSED, &128u64.to_le_bytes());
        match parse_record(&buf, 0) {
            Parsed::Record(r, 40) => assert_eq!((r.seq, r.count(), r.last_seq()), (64, 128, 191)),
            other => panic!("{other:?}"),
        }
        for count in [0, u64::MAX] {
            let mut bad = Vec::new();
            encode_record(&mut bad, 64, 1, KIND_MISSED, &count.to_le_bytes());
            assert!(
                matches!(parse_record(&bad, 0), Parsed::Bad(_)),
                "count {count}"
            );
        }
    }

    #[test]
    fn regression_offset_near_usize_max_is_not_a_record() {
        // An index entry may point anywhere: found by the wal_open fuzzer.
        let mut buf = Vec::new();
        encode_record(&mut buf, 9, 1, KIND_LOST, &[]);
        for offset in [usize::MAX, usize::MAX - 8, usize::MAX - 31, buf.len() + 8] {
            assert_eq!(parse_record(&buf, offset), Parsed::End, "offset {offset}");
        }
    }

    #[test]
    fn lost_marker_round_trips() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 9, 1, KIND_LOST, &[]);
        assert!(matches!(
            parse_record(&buf, 0),
            Parsed::Record(
                RecordRef {
                    seq: 9,
                    kind: KIND_LOST,
                    ..
                },
                32
            )
        ));
    }

    #[test]
    fn header_round_trip_and_foreign_files() {
        let h = encode_header(1234, 99, "trade_events");
        assert_eq!(
            decode_header(&h).unwrap(),
            SegmentHeader {
                version: VERSION,
                first_seq: 1234,
                created_ns: 99,
                topic: "trade_events".into()
            }
        );
        assert!(decode_header(
            b"hello world, this is not a WAL segment at all, no sir, not one bit"
        )
        .unwrap_err()
        .contains("bad magic"));
        let mut v1 = h;
        v1[8] = 1;
        assert_eq!(decode_header(&v1).unwrap().version, 1);
        let mut v3 = h;
        v3[8] = 3;
        assert!(decode_header(&v3).unwrap_err().contains("version 3"));
    }
}
