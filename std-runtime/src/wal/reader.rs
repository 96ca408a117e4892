//! Historical replay: reads segments through memmap2, validates the CRC and
//! the frame layout of every record, checks that the log is contiguous, and
//! hands out zero-copy views in sequence order.

use std::fs::File;
use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zerocast_core::frame::FrameRef;

use super::format::{
    decode_header, header_names_topic, kind_unknown_to, parse_record, Parsed, RecordRef,
    KIND_FRAME, KIND_INVALID, KIND_LOST, KIND_MISSED, SEGMENT_HEADER,
};
use super::{index_path, io_err, list_segments, valid_record_after, SegmentInfo, WalError};

/// Counts of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Frame records yielded.
    pub frames: u64,
    /// Lost markers yielded.
    pub lost: u64,
    /// Sequences the recorder missed (in missed-range records yielded).
    pub missed: u64,
    /// Invalid-frame records yielded (and frame records whose frame fails
    /// validation, yielded as invalid).
    pub invalid: u64,
    /// Sequences missing from the log itself ([`Entry::Gap`]s).
    pub gap: u64,
    /// Record bytes read (headers included).
    pub bytes: u64,
    /// Last sequence yielded (the end of a range for a missed range or gap).
    pub last_seq: Option<u64>,
}

/// What [`Replay::read`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A record of the log. A frame record whose frame fails validation (a
    /// version-1 log written before the recorder validated) comes with its
    /// kind set to [`KIND_INVALID`].
    Record(RecordRef<'a>),
    /// Sequences the log should hold and does not: a segment removed under
    /// the reader or by hand, or a segment that ends before the next begins.
    Gap {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
        /// The segment that vanished, or the one after the gap.
        path: PathBuf,
    },
}

/// A reader over a topic's WAL directory.
#[derive(Debug, Clone)]
pub struct Replay {
    dir: PathBuf,
    /// The topic each segment's header must name (None: not checked).
    topic: Option<String>,
}

pub(crate) fn map(path: &Path) -> Result<Mmap, std::io::Error> {
    let f = File::open(path)?;
    // SAFETY: segments are only ever appended to (and zero-filled past their
    // end); bytes already read do not change under the map except in the
    // tail being written, which is validated record by record.
    unsafe { Mmap::map(&f) }
}

/// Whether a valid record appears at `off` of the newest segment within a
/// few milliseconds: the writer copies a batch of records into the file in
/// one write, and a concurrent reader may see a later part of it before an
/// earlier one (the kernel's copy need not store in order), so damage seen
/// while later records are already there is read again before it counts.
/// Each try maps the file afresh (the compiler may take bytes behind a
/// shared reference to stay put); returns the map that has the record.
fn settles(path: &Path, off: usize) -> Option<Mmap> {
    for _ in 0..5 {
        let fresh = map(path).ok()?;
        if matches!(parse_record(&fresh, off), Parsed::Record(..)) {
            return Some(fresh);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    None
}

/// Index hint: the offset of the last indexed record at or before `from`.
fn seek(segment: &Path, bytes: &[u8], from: u64) -> usize {
    let Ok(entries) = std::fs::read(index_path(segment)) else {
        return SEGMENT_HEADER;
    };
    let mut best = SEGMENT_HEADER;
    for e in entries.chunks_exact(16) {
        let seq = u64::from_le_bytes(e[0..8].try_into().expect("8 bytes"));
        let off = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")) as usize;
        if seq > from {
            break;
        }
        // Trust the entry only if it points at the record it names.
        if matches!(parse_record(bytes, off), Parsed::Record(r, _) if r.seq == seq) {
            best = off;
        }
    }
    best
}

/// The last sequence in a segment (the end of the range, for a missed
/// range): read from its last index entry on (the entry is checked against
/// the record it points to), so it costs about one index interval.
pub fn last_seq_of(path: &Path) -> Result<Option<u64>, WalError> {
    Ok(last_record_of(path)?.map(|(seq, _)| seq))
}

/// The last record of the WAL segment at `path`: the last sequence it
/// covers and the time it was recorded (ns since the Unix epoch); `None`
/// for a segment with no record.
pub fn last_record_of(path: &Path) -> Result<Option<(u64, u64)>, WalError> {
    let bytes = map(path).map_err(io_err(path, "open segment"))?;
    let mut off = seek(path, &bytes, u64::MAX);
    let mut last = None;
    while let Parsed::Record(r, size) = parse_record(&bytes, off) {
        last = Some((r.last_seq(), r.timestamp_ns));
        off += size;
    }
    Ok(last)
}

impl Replay {
    /// A reader of the WAL in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            topic: None,
        }
    }

    /// A reader of the WAL of `topic` in `dir`: a segment whose header names
    /// another topic is an error.
    pub fn with_topic(dir: &Path, topic: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            topic: Some(topic.to_owned()),
        }
    }

    /// Checks a segment's header: magic, version, the first sequence its
    /// name gives and, if known, the topic; returns the format version.
    /// None for a segment not written yet: all zero (or still empty), which only the newest segment may be
    /// while the writer rotates.
    fn check_header(&self, seg: &SegmentInfo, bytes: &[u8]) -> Result<Option<u32>, WalError> {
        let bad = |reason: String| WalError::BadSegment {
            path: seg.path.clone(),
            reason,
        };
        // A rotation writes the header before any record: zeros with
        // something after them are damage.
        if super::all_zero(bytes) {
            let newest = self
                .segments()?
                .last()
                .is_none_or(|s| s.first_seq <= seg.first_seq);
            if newest {
                return Ok(None);
            }
        }
        let h = decode_header(bytes).map_err(bad)?;
        if h.first_seq != seg.first_seq {
            return Err(bad(format!(
                "header's first sequence {} does not match the file name",
                h.first_seq
            )));
        }
        if let Some(topic) = &self.topic {
            if !header_names_topic(&h.topic, topic) {
                return Err(bad(format!(
                    "segment of topic {:?}, not {topic:?}",
                    h.topic
                )));
            }
        }
        Ok(Some(h.version))
    }

    /// The segments now in the directory.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, WalError> {
        list_segments(&self.dir)
    }

    /// Calls `f` for every record covering a sequence in `from ..= to`, in
    /// order, until `f` breaks. Sequences missing from the log (a removed
    /// segment, a hole between segments, a log beginning after `from`) are
    /// an error
    /// ([`WalError::Gap`]); use [`read`](Self::read) to step over them.
    pub fn run(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<ReplayStats, WalError> {
        let mut gap = None;
        let stats = self.read(from, to, |e| match e {
            Entry::Record(r) => f(r),
            Entry::Gap { from, to, path } => {
                gap = Some(WalError::Gap { from, to, path });
                ControlFlow::Break(())
            }
        })?;
        gap.map_or(Ok(stats), Err)
    }

    /// Calls `f` for every record covering a sequence in `from ..= to`, and
    /// for every range of those sequences missing from the log, in order,
    /// until `f` breaks. A log whose first record comes after `from` (its
    /// oldest segments removed, or a recorder that started after the ring
    /// had moved on) begins with a gap from `from`: from the reader's view
    /// those sequences are missing, whatever the reason.
    ///
    /// A damaged record, or a zeroed region, with valid records after it is
    /// an error naming the file and offset. A damaged record at the very end
    /// of the newest segment is a tail still being written (or torn, to be
    /// cut at the next open) and ends the replay quietly. A segment removed
    /// under the reader (retention) is a [`Entry::Gap`] for its range, and
    /// the reader goes on with the next.
    pub fn read(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(Entry<'_>) -> ControlFlow<()>,
    ) -> Result<ReplayStats, WalError> {
        let mut segments = self.segments()?;
        let mut stats = ReplayStats::default();
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= from)
            .unwrap_or(0);
        // The last sequence covered by the records read so far.
        let mut prev: Option<u64> = None;
        // Hands out a gap, clipped to `from ..= to`; true if `f` broke.
        let bounds = (from, to);
        let gap = |f: &mut dyn FnMut(Entry<'_>) -> ControlFlow<()>,
                   stats: &mut ReplayStats,
                   a: u64,
                   b: u64,
                   path: &Path| {
            let (a, b) = (a.max(bounds.0), b.min(bounds.1));
            if a > b {
                return false;
            }
            stats.gap += b - a + 1;
            stats.last_seq = Some(b);
            f(Entry::Gap {
                from: a,
                to: b,
                path: path.to_owned(),
            })
            .is_break()
        };
        let mut i = start;
        while i < segments.len() {
            let seg = &segments[i];
            if seg.first_seq > to {
                break;
            }
            let newest = i + 1 == segments.len();
            // Each segment begins right after the previous one ends.
            if let Some(p) = prev {
                if seg.first_seq <= p {
                    return Err(WalError::Corrupt {
                        path: seg.path.clone(),
                        offset: 0,
                        reason: format!(
                            "segment starts at sequence {}, not after the previous segment's last sequence {p}",
                            seg.first_seq
                        ),
                    });
                }
                if seg.first_seq > p + 1
                    && gap(&mut f, &mut stats, p + 1, seg.first_seq - 1, &seg.path)
                {
                    return Ok(stats);
                }
                prev = Some(seg.first_seq - 1);
            }
            let mut bytes = match map(&seg.path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // Removed since the listing (retention racing this
                    // reader): its range is gone; go on with the next. The
                    // writer may have rotated since the listing too (the
                    // removed one was the newest listed), so list again.
                    let later = self.segments()?;
                    let Some(j) = later.iter().position(|s| s.first_seq > seg.first_seq) else {
                        // Nothing after it: the end of what is left.
                        return Ok(stats);
                    };
                    let next = later[j].first_seq;
                    let a = prev.map_or(from, |p| p + 1);
                    if next > a && gap(&mut f, &mut stats, a, next - 1, &seg.path) {
                        return Ok(stats);
                    }
                    prev = Some(next - 1)
                        .filter(|&n| prev.is_none_or(|p| n > p))
                        .or(prev);
                    segments = later;
                    i = j;
                    continue;
                }
                Err(e) => return Err(io_err(&seg.path, "open segment")(e)),
            };
            let version = match self.check_header(seg, &bytes)? {
                Some(v) => v,
                // The newest segment, created but its header not yet
                // written (a rotation under way): nothing in it yet.
                None => break,
            };
            let mut off = if i == start {
                seek(&seg.path, &bytes, from)
            } else {
                SEGMENT_HEADER
            };
            loop {
                match parse_record(&bytes, off) {
                    Parsed::End => {
                        // Zeros with a record after them (a later sequence)
                        // are a lost block, not the end, in any segment (as
                        // at `Wal::open`). In the newest one the writer may
                        // be appending right now: read the spot again before
                        // calling it damage (see `settles`).
                        if let Some(at) = valid_record_after(&bytes, off, prev) {
                            if let Some(fresh) = newest.then(|| settles(&seg.path, off)).flatten() {
                                bytes = fresh;
                                continue;
                            }
                            return Err(WalError::Corrupt {
                                path: seg.path.clone(),
                                offset: off as u64,
                                reason: format!(
                                    "zeroed region, and a valid record follows at offset {at}: \
                                     damage in the middle of the log"
                                ),
                            });
                        }
                        break;
                    }
                    Parsed::Bad(reason) => {
                        if newest && valid_record_after(&bytes, off, prev).is_none() {
                            return Ok(stats);
                        }
                        if let Some(fresh) = newest.then(|| settles(&seg.path, off)).flatten() {
                            bytes = fresh;
                            continue;
                        }
                        return Err(WalError::Corrupt {
                            path: seg.path.clone(),
                            offset: off as u64,
                            reason: reason.to_owned(),
                        });
                    }
                    Parsed::Record(mut r, size) => {
                        if let Some(reason) = kind_unknown_to(version, r.kind) {
                            return Err(WalError::Corrupt {
                                path: seg.path.clone(),
                                offset: off as u64,
                                reason,
                            });
                        }
                        if r.seq < seg.first_seq {
                            return Err(WalError::Corrupt {
                                path: seg.path.clone(),
                                offset: off as u64,
                                reason: format!(
                                    "sequence {} before the segment's first sequence {}",
                                    r.seq, seg.first_seq
                                ),
                            });
                        }
                        if let Some(p) = prev {
                            if r.seq <= p {
                                return Err(WalError::Corrupt {
                                    path: seg.path.clone(),
                                    offset: off as u64,
                                    reason: format!("sequence {} after {p}", r.seq),
                                });
                            }
                            if r.seq > p + 1 && gap(&mut f, &mut stats, p + 1, r.seq - 1, &seg.path)
                            {
                                return Ok(stats);
                            }
                        } else if r.seq > from
                            && gap(&mut f, &mut stats, from, r.seq - 1, &seg.path)
                        {
                            // The log begins after `from` (its oldest
                            // segments removed, or the recorder joined late).
                            return Ok(stats);
                        }
                        prev = Some(r.last_seq());
                        if r.seq > to {
                            return Ok(stats);
                        }
                        if r.last_seq() >= from {
                            if r.kind == KIND_FRAME && FrameRef::parse(r.frame).is_err() {
                                r.kind = KIND_INVALID;
                            }
                            match r.kind {
                                KIND_FRAME => stats.frames += 1,
                                KIND_LOST => stats.lost += 1,
                                KIND_MISSED => stats.missed += r.count(),
                                _ => stats.invalid += 1,
                            }
                            stats.bytes += size as u64;
                            stats.last_seq = Some(r.last_seq().min(to));
                            if f(Entry::Record(r)).is_break() {
                                return Ok(stats);
                            }
                        }
                        off += size;
                    }
                }
            }
            i += 1;
        }
        Ok(stats)
    }
}
