//! Historical replay: reads segments through memmap2, validates the CRC and
//! the frame layout of every record, and hands out zero-copy views in
//! sequence order.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zerocast_core::frame::FrameRef;

use super::format::{parse_record, Parsed, RecordRef, KIND_FRAME, SEGMENT_HEADER};
use super::{index_path, io_err, list_segments, valid_record_after, SegmentInfo, WalError};

/// Counts of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Frame records yielded.
    pub frames: u64,
    /// Lost markers yielded.
    pub lost: u64,
    /// Record bytes read (headers included).
    pub bytes: u64,
    /// Last sequence yielded.
    pub last_seq: Option<u64>,
}

/// A reader over a topic's WAL directory.
#[derive(Debug, Clone)]
pub struct Replay {
    dir: PathBuf,
}

fn map(path: &Path) -> Result<Mmap, WalError> {
    let f = File::open(path).map_err(io_err(path, "open segment"))?;
    // SAFETY: segments are only ever appended to (and zero-filled past their
    // end); bytes already read do not change under the map except in the
    // tail being written, which is validated record by record.
    unsafe { Mmap::map(&f) }.map_err(io_err(path, "map segment"))
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

/// The last sequence in a segment.
pub fn last_seq_of(path: &Path) -> Result<Option<u64>, WalError> {
    let bytes = map(path)?;
    let mut off = SEGMENT_HEADER;
    let mut last = None;
    while let Parsed::Record(r, size) = parse_record(&bytes, off) {
        last = Some(r.seq);
        off += size;
    }
    Ok(last)
}

impl Replay {
    /// A reader of the WAL in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The segments now in the directory.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, WalError> {
        list_segments(&self.dir)
    }

    /// Calls `f` for every record with `from <= seq <= to`, in order, until
    /// `f` breaks. A damaged record with valid records after it is an error
    /// naming the file and offset; a damaged record at the very end of the
    /// newest segment is a tail still being written (or torn, to be cut at
    /// the next open) and ends the replay quietly.
    pub fn run(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<ReplayStats, WalError> {
        let segments = self.segments()?;
        let mut stats = ReplayStats::default();
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= from)
            .unwrap_or(0);
        let mut prev: Option<u64> = None;
        for (i, seg) in segments.iter().enumerate().skip(start) {
            if seg.first_seq > to {
                break;
            }
            let newest = i + 1 == segments.len();
            let bytes = map(&seg.path)?;
            let mut off = if i == start {
                seek(&seg.path, &bytes, from)
            } else {
                SEGMENT_HEADER
            };
            loop {
                match parse_record(&bytes, off) {
                    Parsed::End => break,
                    Parsed::Bad(reason) => {
                        if newest && valid_record_after(&bytes, off, prev).is_none() {
                            return Ok(stats);
                        }
                        return Err(WalError::Corrupt {
                            path: seg.path.clone(),
                            offset: off as u64,
                            reason: reason.to_owned(),
                        });
                    }
                    Parsed::Record(r, size) => {
                        if prev.is_some_and(|p| r.seq <= p) {
                            return Err(WalError::Corrupt {
                                path: seg.path.clone(),
                                offset: off as u64,
                                reason: format!("sequence {} after {}", r.seq, prev.unwrap_or(0)),
                            });
                        }
                        prev = Some(r.seq);
                        if r.seq > to {
                            return Ok(stats);
                        }
                        if r.seq >= from {
                            if r.kind == KIND_FRAME {
                                if let Err(e) = FrameRef::parse(r.frame) {
                                    return Err(WalError::Corrupt {
                                        path: seg.path.clone(),
                                        offset: off as u64,
                                        reason: format!("record holds an invalid frame: {e}"),
                                    });
                                }
                                stats.frames += 1;
                            } else {
                                stats.lost += 1;
                            }
                            stats.bytes += size as u64;
                            stats.last_seq = Some(r.seq);
                            if f(r).is_break() {
                                return Ok(stats);
                            }
                        }
                        off += size;
                    }
                }
            }
        }
        Ok(stats)
    }
}
