//! Write-ahead log: append-only segment files per topic, with CRC32C per
//! record, a sparse index, group commit, rotation, retention, and repair of a
//! torn tail at open. See [`format`] for the bytes on disk.

pub mod format;
pub mod reader;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_ipc::counters::wal as counters;

use format::{
    encode_header, encode_record, parse_record, Parsed, KIND_FRAME, KIND_INVALID, KIND_LOST,
    KIND_MISSED, MAX_RECORD_FRAME, SEGMENT_HEADER,
};
pub use reader::{Entry, Replay, ReplayStats};

/// When appended records are made durable with `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record.
    Always,
    /// Group commit: after `records` records or `interval`, whichever first.
    Group {
        /// Records per sync.
        records: u64,
        /// Longest time between syncs while records are pending.
        interval: Duration,
    },
    /// Never (the OS writes back when it likes): survives a process crash,
    /// not a machine crash.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        Self::Group {
            records: 65_536,
            interval: Duration::from_millis(10),
        }
    }
}

/// The longest a record waits for its fdatasync under a group-commit
/// policy given as a record count alone (`--fsync 4096`).
pub const RECORDS_ONLY_INTERVAL: Duration = Duration::from_secs(1);

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    /// `always`, `never`, `10ms`, `500us`, `4096` (records, or
    /// [`RECORDS_ONLY_INTERVAL`] after the first pending one, whichever
    /// first: an idle writer still syncs), or `4096,10ms`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => return Ok(Self::Always),
            "never" => return Ok(Self::Never),
            _ => {}
        }
        let mut records = u64::MAX;
        let mut interval = RECORDS_ONLY_INTERVAL;
        for part in s.split(',') {
            let part = part.trim();
            if let Some(us) = part.strip_suffix("us") {
                interval = Duration::from_micros(
                    us.parse()
                        .map_err(|_| format!("bad fsync interval {part:?}"))?,
                );
            } else if let Some(ms) = part.strip_suffix("ms") {
                interval = Duration::from_millis(
                    ms.parse()
                        .map_err(|_| format!("bad fsync interval {part:?}"))?,
                );
            } else {
                records = part
                    .parse()
                    .map_err(|_| format!("fsync policy {s:?}: expected always, never, N (records), Nms, Nus or N,Nms"))?;
            }
        }
        Ok(Self::Group { records, interval })
    }
}

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size of a segment file (preallocated).
    pub segment_size: u64,
    /// When to fdatasync.
    pub fsync: FsyncPolicy,
    /// Keep at most this many bytes of sealed segments (oldest removed first).
    pub retain_bytes: Option<u64>,
    /// Remove sealed segments older than this.
    pub retain_age: Option<Duration>,
    /// A sparse-index entry every this many records.
    pub index_every: u64,
    /// Write buffered records to the file once this many bytes are pending.
    pub buffer_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            fsync: FsyncPolicy::default(),
            retain_bytes: None,
            retain_age: None,
            index_every: 1024,
            buffer_bytes: 256 << 10,
        }
    }
}

/// Everything that can go wrong with a WAL.
#[derive(Debug)]
pub enum WalError {
    /// A system call failed (a full disk shows up here as ENOSPC).
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record in the middle of the log is damaged.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A file in the WAL directory is not a segment of this WAL.
    BadSegment {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Sequences must increase.
    OutOfOrder {
        /// Last sequence in the log.
        last: u64,
        /// Sequence offered.
        seq: u64,
    },
    /// Sequences the log should hold are not in it: a segment was removed
    /// (retention, or by hand) or damaged at its end. [`Replay::run`] reports
    /// this as an error; [`Replay::read`] hands it out as an
    /// [`Entry::Gap`] and goes on.
    Gap {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
        /// Where the reader noticed it: the segment after the gap, or the
        /// segment that vanished.
        path: PathBuf,
    },
    /// A sequence past [`format::MAX_SEQ`] (2^56 - 1), which no ring hands
    /// out, was offered to the log.
    SeqOutOfRange {
        /// Sequence offered.
        seq: u64,
    },
    /// Another writer (a recorder, in this process or another, of any
    /// namespace) holds the WAL directory's lock ([`LOCK_FILE`]).
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it in the lock file (None if it
        /// could not be read: the holder is still writing it).
        holder: Option<u32>,
    },
    /// A frame longer than any record may hold
    /// ([`format::MAX_RECORD_FRAME`], the largest frame a ring slot holds)
    /// was offered to the log.
    FrameTooLarge {
        /// Bytes offered.
        len: usize,
        /// Most bytes a record holds.
        max: usize,
    },
    /// A checkpoint file is damaged.
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io {
                path,
                action,
                source,
            } => write!(f, "{}: {action}: {source}", path.display()),
            Self::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "{}: corrupt record at offset {offset}: {reason}",
                    path.display()
                )
            }
            Self::BadSegment { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::OutOfOrder { last, seq } => {
                write!(
                    f,
                    "sequence {seq} does not follow the log's last sequence {last}"
                )
            }
            Self::Gap { from, to, path } => write!(
                f,
                "{}: sequences {from} to {to} are missing from the log (a segment was removed or damaged)",
                path.display()
            ),
            Self::SeqOutOfRange { seq } => write!(
                f,
                "sequence {seq} is past the largest sequence a ring hands out ({})",
                format::MAX_SEQ
            ),
            Self::BadCheckpoint { path, reason } => {
                write!(f, "{}: bad checkpoint: {reason}", path.display())
            }
            Self::FrameTooLarge { len, max } => write!(
                f,
                "frame of {len} bytes is too large for a WAL record (at most {max} bytes, the largest frame)"
            ),
            Self::Locked { path, holder } => write!(
                f,
                "{}: the WAL directory is locked by another writer ({}); one recorder per topic's WAL directory: stop that one first",
                path.display(),
                holder.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"))
            ),
        }
    }
}

impl std::error::Error for WalError {}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// What opening the WAL had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A torn or corrupt tail that was cut off.
    pub truncated: Option<Truncation>,
    /// A last segment whose header was never completely written, removed.
    pub removed_empty_segment: Option<PathBuf>,
}

/// A tail cut off at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment.
    pub path: PathBuf,
    /// Offset of the first bad record, now the end of the log.
    pub offset: u64,
    /// Bytes zeroed.
    pub bytes: u64,
    /// Why the record there was bad.
    pub reason: String,
    /// Last sequence kept (None if the segment has no record left).
    pub last_good_seq: Option<u64>,
    /// Sequence the first cut record claimed, if its header was readable
    /// (for a zeroed region: the first valid record after it).
    pub first_cut_seq: Option<u64>,
    /// Last sequence of the valid records cut after the damage: records
    /// past the synced mark that reached the disk while an earlier page did
    /// not (a power loss under group commit). None if there were none.
    pub last_cut_seq: Option<u64>,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: cut {} bytes of torn tail at offset {} ({}); last kept sequence {}",
            self.path.display(),
            self.bytes,
            self.offset,
            self.reason,
            self.last_good_seq
                .map_or("none".to_owned(), |s| s.to_string()),
        )?;
        if let Some(s) = self.first_cut_seq {
            write!(f, ", first cut record claimed sequence {s}")?;
        }
        if let Some(s) = self.last_cut_seq {
            write!(
                f,
                "; valid records up to sequence {s} after the damage were never synced and are cut"
            )?;
        }
        Ok(())
    }
}

/// A segment file of the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First sequence it holds (its name).
    pub first_seq: u64,
    /// The file.
    pub path: PathBuf,
}

/// Mode of every file of a WAL directory (segments, indexes, marks, the
/// lock): the owner writes, its group may read (replay), others nothing;
/// set exactly, whatever the umask.
pub const WAL_FILE_MODE: u32 = 0o640;
/// Mode of a checkpoint file: only its owner.
pub const CHECKPOINT_MODE: u32 = 0o600;

/// Sets `f`'s mode to exactly `mode` (fchmod: the umask does not apply).
fn set_mode(f: &File, path: &Path, mode: u32) -> Result<(), WalError> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(path, "set file mode"))
}

/// Segment file name for `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// The segment's synced mark: how far its records were fdatasynced.
fn mark_path(segment: &Path) -> PathBuf {
    segment.with_extension("synced")
}

const MARK_MAGIC: [u8; 8] = *b"ZCSYNC01";

/// Encodes a synced mark: magic, offset u64, CRC32C of both.
fn encode_mark(offset: u64) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[..8].copy_from_slice(&MARK_MAGIC);
    m[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32c::crc32c(&m[..16]);
    m[16..].copy_from_slice(&crc.to_le_bytes());
    m
}

/// The segment's synced mark, if it has a valid one (a WAL written before
/// marks existed, or a mark file lost with the machine, has none: then
/// every damaged region followed by records is an error, as it was).
fn read_mark(segment: &Path) -> Option<u64> {
    let m = std::fs::read(mark_path(segment)).ok()?;
    let m: [u8; 20] = m.try_into().ok()?;
    (m[..8] == MARK_MAGIC && crc32c::crc32c(&m[..16]).to_le_bytes() == m[16..20])
        .then(|| u64::from_le_bytes(m[8..16].try_into().expect("8 bytes")))
}

/// Opens (or creates) a segment's mark file and stores `offset`, not synced:
/// it is a lower bound whatever reaches the disk, since it is only ever
/// written after the records below it were fdatasynced.
fn open_mark(segment: &Path, offset: u64) -> Result<File, WalError> {
    let path = mark_path(segment);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path, "open synced mark"))?;
    set_mode(&f, &path, WAL_FILE_MODE)?;
    f.write_all_at(&encode_mark(offset), 0)
        .map_err(io_err(&path, "write synced mark"))?;
    Ok(f)
}

/// The segments in `dir`, sorted by first sequence.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir, "list WAL directory")(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir, "list WAL directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let first_seq = stem.parse().map_err(|_| WalError::BadSegment {
            path: entry.path(),
            reason: "segment name is not a sequence number".into(),
        })?;
        out.push(SegmentInfo {
            first_seq,
            path: entry.path(),
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// The lock file of a WAL directory: a writer ([`Wal::open`]) holds an
/// exclusive `flock` on it for as long as the [`Wal`] lives, with its pid
/// written in it. Readers ([`Replay`], `follow`) do not take it.
pub const LOCK_FILE: &str = ".lock";

/// Takes `dir`'s writer lock, or says who holds it. The lock goes with the
/// open file description: the kernel drops it when the holder exits, however
/// it exits, so a crashed recorder never leaves a stale lock behind.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    // std opens every file with O_CLOEXEC: a child the writer spawns does
    // not inherit the descriptor, so it cannot keep the lock alive.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path, "open WAL lock file"))?;
    set_mode(&f, &path, WAL_FILE_MODE)?;
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(WalError::Locked { path, holder });
        }
        return Err(io_err(&path, "lock WAL directory")(e));
    }
    f.set_len(0)
        .and_then(|()| f.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0))
        .map_err(io_err(&path, "write WAL lock file"))?;
    Ok(f)
}

/// fsyncs directory `dir`, so that entries created or renamed in it last.
pub fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

fn datasync(file: &File, path: &Path) -> Result<(), WalError> {
    file.sync_data().map_err(io_err(path, "fdatasync"))
}

/// Maps a whole segment (for recovery): a preallocated segment is mostly
/// zeros, which the scans below skip by comparing whole blocks, so opening
/// costs about the records written, not the segment size.
fn map_all(path: &Path) -> Result<memmap2::Mmap, WalError> {
    reader::map(path).map_err(io_err(path, "map segment"))
}

/// Zero bytes to compare blocks against (a slice comparison is a `memcmp`,
/// fast even in a debug build).
const ZEROS: [u8; 4096] = [0; 4096];

/// True if `bytes` are all zero.
fn all_zero(bytes: &[u8]) -> bool {
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// The offset of the first 8-byte word at or after `from` (a multiple of 8)
/// holding a non-zero byte (a short last word counts).
fn first_nonzero_word(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at < bytes.len() {
        // Up to the next block boundary, so blocks stay aligned.
        let end = ((at / ZEROS.len() + 1) * ZEROS.len()).min(bytes.len());
        let block = &bytes[at..end];
        if block != &ZEROS[..block.len()] {
            let word = block.chunks(8).position(|w| w.iter().any(|&b| b != 0))?;
            return Some(at + 8 * word);
        }
        at = end;
    }
    None
}

/// One past the last non-zero byte of `bytes`, or None if all are zero.
fn end_of_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut end = bytes.len();
    while end > 0 {
        let start = (end - 1) / ZEROS.len() * ZEROS.len();
        let block = &bytes[start..end];
        if block != &ZEROS[..block.len()] {
            return block.iter().rposition(|&b| b != 0).map(|p| start + p + 1);
        }
        end = start;
    }
    None
}

/// The offset of the first valid record that starts at an 8-aligned offset
/// after `from` with a sequence after `after_seq`, if any: a damaged or
/// zeroed region with such a record after it is damage in the middle of the
/// log, not a torn tail. Skips runs of zeros without parsing them (a record
/// header is never all zero), so scanning a preallocated segment's empty
/// tail costs about a `memchr`.
pub(crate) fn valid_record_after(
    bytes: &[u8],
    from: usize,
    after_seq: Option<u64>,
) -> Option<usize> {
    let mut off = from.div_ceil(8) * 8 + 8;
    while off + format::RECORD_HEADER <= bytes.len() {
        // The next 8-byte word with a non-zero byte: a record at or after
        // `off` has its header's first non-zero word at or after it.
        let word = first_nonzero_word(bytes, off)?;
        // Headers holding that word start in [word - 24, word]; ones
        // starting earlier would be all zero.
        let mut cand = word.saturating_sub(format::RECORD_HEADER - 8).max(off);
        while cand <= word {
            if let Parsed::Record(r, _) = parse_record(bytes, cand) {
                if after_seq.is_none_or(|s| r.seq > s) {
                    return Some(cand);
                }
            }
            cand += 8;
        }
        off = cand;
    }
    None
}

/// The writing side of a topic's WAL.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    topic: String,
    options: WalOptions,
    segments: Vec<SegmentInfo>,
    active: File,
    active_path: PathBuf,
    index: File,
    /// Where the next write goes in the active segment.
    write_pos: u64,
    /// Records not yet written to the file.
    buf: Vec<u8>,
    /// (seq, offset) index entries for records in `buf`.
    pending_index: Vec<(u64, u64)>,
    last_seq: Option<u64>,
    records_since_index: u64,
    unsynced: u64,
    last_sync: Instant,
    /// Last sequence made durable by `sync`, plus one (0: none yet).
    synced: Arc<AtomicU64>,
    /// The active segment's synced mark file, and the offset it holds.
    mark: File,
    marked: u64,
    /// Where the records appended and the fsyncs are counted for health
    /// monitors ([`Wal::set_counters`]), if anywhere.
    counters: Option<zerocast_ipc::counters::Counters>,
    /// The directory's writer lock ([`LOCK_FILE`]), held while this lives
    /// (dropped after `Drop::drop` has synced).
    _lock: File,
}

/// Where a [`Wal`] has made its records durable, readable from any thread
/// while the WAL itself is borrowed by its writer (see [`Wal::sync_watch`]).
#[derive(Debug, Clone)]
pub struct SyncWatch(Arc<AtomicU64>);

impl SyncWatch {
    /// The last sequence the WAL has fdatasynced since it was opened (None:
    /// nothing yet). Under [`FsyncPolicy::Never`] only a rotation, an
    /// explicit [`Wal::sync`] or the drop advances it.
    pub fn synced_seq(&self) -> Option<u64> {
        // Acquire: pairs with the Release store in `Wal::sync`; a reader
        // that sees the position also sees everything the writer did before
        // the fdatasync returned.
        self.0.load(Ordering::Acquire).checked_sub(1)
    }
}

impl Wal {
    /// Opens (or creates) the WAL of `topic` in `dir`, repairing a torn tail.
    /// A damaged record followed by valid ones is an error naming the file
    /// and offset: nothing is skipped silently. The exception is damage at
    /// or past the segment's synced mark (records written and never
    /// fdatasynced, reaching the disk out of order before a power loss):
    /// that tail is cut, and [`Recovery::truncated`] names the sequences
    /// cut. Opening checks the segment headers, the last segment's records,
    /// and that the last segment starts after the one before it ends; it
    /// maps the last segment rather than reading it, so it costs about the
    /// records written, not the preallocated size.
    pub fn open(
        dir: &Path,
        topic: &str,
        options: WalOptions,
    ) -> Result<(Self, Recovery), WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create WAL directory"))?;
        // Before anything is read or repaired: two writers would each cut
        // and append to the other's tail.
        let lock = lock_dir(dir)?;
        let mut recovery = Recovery::default();
        let mut segments = list_segments(dir)?;
        let mut last_version = format::VERSION;
        for s in &segments {
            let mut head = [0u8; SEGMENT_HEADER];
            let ok = File::open(&s.path)
                .and_then(|f| f.read_exact_at(&mut head, 0))
                .is_ok();
            let decoded = if ok {
                format::decode_header(&head)
            } else {
                Err("shorter than a segment header".into())
            };
            match decoded {
                Ok(h)
                    if h.first_seq == s.first_seq
                        && format::header_names_topic(&h.topic, topic) =>
                {
                    last_version = h.version
                }
                Ok(h) if !format::header_names_topic(&h.topic, topic) => {
                    return Err(WalError::BadSegment {
                        path: s.path.clone(),
                        reason: format!("segment of topic {:?}, not {topic:?}", h.topic),
                    })
                }
                Ok(_) => {
                    return Err(WalError::BadSegment {
                        path: s.path.clone(),
                        reason: "header's first sequence does not match the file name".into(),
                    })
                }
                Err(reason) => {
                    let is_last = s.path == segments.last().expect("non-empty").path;
                    if is_last && (!ok || all_zero(&map_all(&s.path)?)) {
                        // Created, never written: a crash during rotation.
                        recovery.removed_empty_segment = Some(s.path.clone());
                    } else {
                        return Err(WalError::BadSegment {
                            path: s.path.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        if let Some(p) = &recovery.removed_empty_segment {
            std::fs::remove_file(p).map_err(io_err(p, "remove empty segment"))?;
            let _ = std::fs::remove_file(index_path(p));
            let _ = std::fs::remove_file(mark_path(p));
            segments.pop();
        }
        let (write_pos, last_seq) = match segments.last() {
            Some(last) => {
                // The segment before must end before this one's name (as
                // the reader checks); it is sealed, so reading its tail
                // from its last index entry is enough.
                let before = match segments.len() {
                    n if n > 1 => reader::last_seq_of(&segments[n - 2].path)?,
                    _ => None,
                };
                if let Some(p) = before.filter(|&p| last.first_seq <= p) {
                    return Err(WalError::Corrupt {
                        path: last.path.clone(),
                        offset: 0,
                        reason: format!(
                            "segment starts at sequence {}, not after the previous segment's last sequence {p}",
                            last.first_seq
                        ),
                    });
                }
                let (end, last_seq, truncation) = Self::recover_tail(
                    &last.path,
                    last.first_seq,
                    last_version,
                    read_mark(&last.path),
                )?;
                recovery.truncated = truncation;
                // Empty: the log goes on at its name (the sequences between
                // the segment before and it are a gap, never appended).
                let last_seq = last_seq.or(last.first_seq.checked_sub(1)).or(before);
                (end, last_seq)
            }
            None => (0, None),
        };
        let (active, active_path, write_pos) = match segments.last() {
            Some(last) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&last.path)
                    .map_err(io_err(&last.path, "open segment"))?;
                if last_version != format::VERSION {
                    // Every older record is valid in this version, and the
                    // records appended from now on may use its kinds.
                    f.write_all_at(&format::VERSION.to_le_bytes(), 8)
                        .and_then(|()| f.sync_data())
                        .map_err(io_err(&last.path, "relabel segment version"))?;
                }
                (f, last.path.clone(), write_pos)
            }
            None => {
                let first = 0;
                let (f, p) = Self::create_segment(dir, topic, first, options.segment_size)?;
                segments.push(SegmentInfo {
                    first_seq: first,
                    path: p.clone(),
                });
                (f, p, SEGMENT_HEADER as u64)
            }
        };
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(index_path(&active_path))
            .map_err(io_err(&active_path, "open index"))?;
        set_mode(&index, &index_path(&active_path), WAL_FILE_MODE)?;
        // What open found is the log: make it durable, then mark it synced.
        datasync(&active, &active_path)?;
        let mark = open_mark(&active_path, write_pos)?;
        Ok((
            Self {
                dir: dir.to_owned(),
                topic: topic.to_owned(),
                options,
                segments,
                active,
                active_path,
                index,
                write_pos,
                buf: Vec::new(),
                pending_index: Vec::new(),
                last_seq,
                records_since_index: 0,
                unsynced: 0,
                last_sync: Instant::now(),
                synced: Arc::new(AtomicU64::new(0)),
                mark,
                marked: write_pos,
                counters: None,
                _lock: lock,
            },
            recovery,
        ))
    }

    /// Scans the last segment: returns (end offset, last sequence,
    /// truncation if its tail was torn).
    fn recover_tail(
        path: &Path,
        first_seq: u64,
        version: u32,
        synced: Option<u64>,
    ) -> Result<(u64, Option<u64>, Option<Truncation>), WalError> {
        let bytes = map_all(path)?;
        let mut off = SEGMENT_HEADER;
        let mut last_seq: Option<u64> = None;
        loop {
            match parse_record(&bytes, off) {
                Parsed::Record(r, _) if format::kind_unknown_to(version, r.kind).is_some() => {
                    return Self::cut(
                        path,
                        &bytes,
                        off,
                        last_seq,
                        "record kind added in version 2 in a version-1 segment",
                        synced,
                    );
                }
                Parsed::Record(r, _) if r.seq < first_seq => {
                    return Self::cut(
                        path,
                        &bytes,
                        off,
                        last_seq,
                        "sequence before the segment's first sequence",
                        synced,
                    );
                }
                Parsed::Record(r, size) => {
                    if last_seq.is_some_and(|l| r.seq <= l) {
                        return Self::cut(
                            path,
                            &bytes,
                            off,
                            last_seq,
                            "sequence does not increase",
                            synced,
                        );
                    }
                    last_seq = Some(r.last_seq());
                    off += size;
                }
                Parsed::End => {
                    // Zeros with a record after them are a lost block (a
                    // page that never reached the disk), not the end:
                    // appending here would overwrite the records after it.
                    // Past the synced mark it is a tail torn out of order.
                    if synced.is_some_and(|m| off as u64 >= m)
                        && valid_record_after(&bytes, off, last_seq).is_some()
                    {
                        return Self::cut(path, &bytes, off, last_seq, "zeroed region", synced);
                    }
                    if let Some(at) = valid_record_after(&bytes, off, last_seq) {
                        return Err(WalError::Corrupt {
                            path: path.to_owned(),
                            offset: off as u64,
                            reason: format!(
                                "zeroed region, and a valid record follows at offset {at}: \
                                 damage in the middle of the log"
                            ),
                        });
                    }
                    if end_of_nonzero(&bytes).is_some_and(|e| e > off) {
                        // Zeros, then bytes that are no record: a torn
                        // write. Cut them, or they would sit after the
                        // records appended from here.
                        return Self::cut(
                            path,
                            &bytes,
                            off,
                            last_seq,
                            "zeroed region followed by bytes that are no record",
                            synced,
                        );
                    }
                    return Ok((off as u64, last_seq, None));
                }
                Parsed::Bad(reason) => {
                    return Self::cut(path, &bytes, off, last_seq, reason, synced)
                }
            }
        }
    }

    /// Cuts the segment at `off`: a torn tail. Valid records after `off`
    /// make it damage in the middle of the log (an error, nothing cut),
    /// unless `off` is at or past the synced mark: then they were written
    /// and never synced, and reached the disk out of order (a power loss);
    /// they are cut too, and reported.
    fn cut(
        path: &Path,
        bytes: &[u8],
        off: usize,
        last_seq: Option<u64>,
        reason: &str,
        synced: Option<u64>,
    ) -> Result<(u64, Option<u64>, Option<Truncation>), WalError> {
        let unsynced = synced.is_some_and(|m| off as u64 >= m);
        // The valid records after the damage: (first sequence, last).
        let mut after: Option<(u64, u64)> = None;
        if let Some(at) = valid_record_after(bytes, off, last_seq) {
            if !unsynced {
                return Err(WalError::Corrupt {
                    path: path.to_owned(),
                    offset: off as u64,
                    reason: format!("{reason}, and a valid record follows at offset {at}: damage in the middle of the log"),
                });
            }
            let mut at = at;
            while let Parsed::Record(r, _) = parse_record(bytes, at) {
                after = Some((after.map_or(r.seq, |a| a.0), r.last_seq()));
                match valid_record_after(bytes, at, Some(r.last_seq())) {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
        let last_nonzero = end_of_nonzero(bytes).unwrap_or(off);
        let cut_bytes = last_nonzero.saturating_sub(off);
        let first_cut_seq = match bytes.get(off..off + format::RECORD_HEADER) {
            // A zeroed region: the first record found after it.
            Some(head) if all_zero(head) => after.map(|a| a.0),
            _ => bytes
                .get(off + 8..off + 16)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        };
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path, "open segment for repair"))?;
        f.write_all_at(&vec![0u8; cut_bytes], off as u64)
            .map_err(io_err(path, "zero torn tail"))?;
        datasync(&f, path)?;
        // Drop index entries that point into the cut tail.
        let idx = index_path(path);
        if let Ok(entries) = std::fs::read(&idx) {
            let keep: Vec<u8> = entries
                .chunks_exact(16)
                .filter(|e| u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")) < off as u64)
                .flatten()
                .copied()
                .collect();
            std::fs::write(&idx, keep).map_err(io_err(&idx, "rewrite index"))?;
        }
        Ok((
            off as u64,
            last_seq,
            Some(Truncation {
                path: path.to_owned(),
                offset: off as u64,
                bytes: cut_bytes as u64,
                reason: reason.to_owned(),
                last_good_seq: last_seq,
                first_cut_seq,
                last_cut_seq: after.map(|a| a.1),
            }),
        ))
    }

    fn create_segment(
        dir: &Path,
        topic: &str,
        first_seq: u64,
        size: u64,
    ) -> Result<(File, PathBuf), WalError> {
        let path = dir.join(segment_name(first_seq));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path, "create segment"))?;
        set_mode(&f, &path, WAL_FILE_MODE)?;
        // Preallocate: a full disk fails here, before any record is accepted
        // into this segment.
        // SAFETY: plain syscall on a valid fd.
        let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, size as libc::off_t) };
        if rc == libc::EOPNOTSUPP || rc == libc::EINVAL {
            f.set_len(size).map_err(io_err(&path, "size segment"))?;
        } else if rc != 0 {
            let _ = std::fs::remove_file(&path);
            return Err(WalError::Io {
                path,
                action: "preallocate segment",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        let header = encode_header(first_seq, zerocast_ipc::layout::now_ns(), topic);
        if let Err(e) = f.write_all_at(&header, 0).and_then(|()| f.sync_data()) {
            let _ = std::fs::remove_file(&path);
            return Err(io_err(&path, "write segment header")(e));
        }
        // Synced up to the header (the mark's name is synced with the
        // segment's below; without it, open is strict about damage).
        let mark = open_mark(&path, SEGMENT_HEADER as u64)?;
        datasync(&mark, &mark_path(&path))?;
        // The new name must survive a crash too.
        fsync_dir(dir)?;
        Ok((f, path))
    }

    /// The last sequence in the log (written or buffered).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// A handle that reads how far this WAL has fdatasynced, from any thread.
    pub fn sync_watch(&self) -> SyncWatch {
        SyncWatch(Arc::clone(&self.synced))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Counts, from now on, every record appended (records, their bytes,
    /// the last sequence) and every fdatasync of the active segment (count
    /// and latency) in `counters`, a [`CounterKind::Wal`] entry of the
    /// namespace's counters table, where `zerocast health` reads them.
    /// The log's last sequence is exported at once (a restarted recorder
    /// shows where its log ends before it appends anything). Returns the
    /// entry counted in before (`None` stops counting).
    ///
    /// [`CounterKind::Wal`]: zerocast_ipc::counters::CounterKind::Wal
    pub fn set_counters(
        &mut self,
        counters: Option<zerocast_ipc::counters::Counters>,
    ) -> Option<zerocast_ipc::counters::Counters> {
        if let (Some(c), Some(last)) = (&counters, self.last_seq) {
            c.set(
                zerocast_ipc::counters::wal::LAST_SEQ,
                last.saturating_add(1),
            );
        }
        std::mem::replace(&mut self.counters, counters)
    }

    /// Appends a frame received with sequence `seq` (greater than every
    /// sequence before it, and at most [`format::MAX_SEQ`]).
    pub fn append(&mut self, seq: u64, timestamp_ns: u64, frame: &[u8]) -> Result<(), WalError> {
        self.append_kind(seq, timestamp_ns, KIND_FRAME, frame)
    }

    /// Records that the bus declared `seq` lost.
    pub fn append_lost(&mut self, seq: u64, timestamp_ns: u64) -> Result<(), WalError> {
        self.append_kind(seq, timestamp_ns, KIND_LOST, &[])
    }

    /// Records, in one record, that the recorder never saw the `count`
    /// sequences from `from` on (it was lapped). A count of 0 writes nothing.
    pub fn append_missed(
        &mut self,
        from: u64,
        count: u64,
        timestamp_ns: u64,
    ) -> Result<(), WalError> {
        if count == 0 {
            return Ok(());
        }
        // The range ends at the last sequence there is.
        let count = count.min(format::MAX_SEQ.saturating_sub(from).saturating_add(1));
        self.append_kind(from, timestamp_ns, KIND_MISSED, &count.to_le_bytes())
    }

    /// Records what the bus delivered for `seq` when it is not a valid frame
    /// (the first [`MAX_RECORD_FRAME`] bytes of it).
    pub fn append_invalid(
        &mut self,
        seq: u64,
        timestamp_ns: u64,
        bytes: &[u8],
    ) -> Result<(), WalError> {
        let bytes = &bytes[..bytes.len().min(MAX_RECORD_FRAME)];
        self.append_kind(seq, timestamp_ns, KIND_INVALID, bytes)
    }

    fn append_kind(&mut self, seq: u64, ts: u64, kind: u32, frame: &[u8]) -> Result<(), WalError> {
        if seq > format::MAX_SEQ {
            return Err(WalError::SeqOutOfRange { seq });
        }
        if frame.len() > MAX_RECORD_FRAME {
            // The reader would call such a record damage.
            return Err(WalError::FrameTooLarge {
                len: frame.len(),
                max: MAX_RECORD_FRAME,
            });
        }
        if let Some(last) = self.last_seq {
            if seq <= last {
                return Err(WalError::OutOfOrder { last, seq });
            }
        }
        if self.write_pos == SEGMENT_HEADER as u64
            && self.buf.is_empty()
            && self
                .segments
                .last()
                .is_some_and(|s| s.first_seq != seq && s.path == self.active_path)
        {
            self.rename_empty_active(seq)?;
        }
        let size = format::record_size(frame.len()) as u64;
        if self.write_pos + self.buf.len() as u64 + size > self.options.segment_size
            && self.write_pos + (self.buf.len() as u64) > SEGMENT_HEADER as u64
        {
            self.rotate(seq)?;
        }
        let offset = self.write_pos + self.buf.len() as u64;
        if self.records_since_index == 0 {
            self.pending_index.push((seq, offset));
        }
        self.records_since_index = (self.records_since_index + 1) % self.options.index_every.max(1);
        encode_record(&mut self.buf, seq, ts, kind, frame);
        let last = if kind == KIND_MISSED {
            let count = u64::from_le_bytes(frame.try_into().expect("8-byte count"));
            seq.saturating_add(count - 1)
        } else {
            seq
        };
        self.last_seq = Some(last);
        if let Some(c) = &self.counters {
            c.add(counters::RECORDS, 1);
            c.add(counters::RECORD_BYTES, size);
            c.set(counters::LAST_SEQ, last.saturating_add(1));
        }
        self.unsynced += 1;
        match self.options.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Group { records, interval } => {
                if self.unsynced >= records || self.last_sync.elapsed() >= interval {
                    self.sync()?;
                } else if self.buf.len() >= self.options.buffer_bytes {
                    self.flush()?;
                }
            }
            FsyncPolicy::Never => {
                if self.buf.len() >= self.options.buffer_bytes {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Writes buffered records to the file (readers see them after this; a
    /// crash of this process no longer loses them).
    pub fn flush(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.write_all_at(&self.buf, self.write_pos) {
            // A partial write leaves a torn tail that the next open cuts; the
            // records before it stay readable. Keep the buffer so the caller
            // can retry after freeing space.
            return Err(io_err(&self.active_path, "append records")(e));
        }
        self.write_pos += self.buf.len() as u64;
        self.buf.clear();
        if !self.pending_index.is_empty() {
            let mut entries = Vec::with_capacity(self.pending_index.len() * 16);
            for (seq, off) in self.pending_index.drain(..) {
                entries.extend_from_slice(&seq.to_le_bytes());
                entries.extend_from_slice(&off.to_le_bytes());
            }
            // The index is a hint (checked on use): not synced.
            self.index
                .write_all(&entries)
                .map_err(io_err(&self.active_path, "append index"))?;
        }
        Ok(())
    }

    /// Flushes and fdatasyncs: everything appended so far survives a machine
    /// crash.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.flush()?;
        if self.unsynced > 0 {
            let started = self.counters.as_ref().map(|_| Instant::now());
            datasync(&self.active, &self.active_path)?;
            if let (Some(c), Some(started)) = (&self.counters, started) {
                c.add(counters::FSYNCS, 1);
                c.observe_ns(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            self.unsynced = 0;
            if self.write_pos != self.marked {
                // After the fdatasync: the mark never runs ahead of what
                // is durable, whenever it reaches the disk itself.
                let path = mark_path(&self.active_path);
                self.mark
                    .write_all_at(&encode_mark(self.write_pos), 0)
                    .map_err(io_err(&path, "write synced mark"))?;
                self.marked = self.write_pos;
            }
            if let Some(last) = self.last_seq {
                // Release: pairs with the Acquire load in
                // `SyncWatch::synced_seq`.
                self.synced.store(last + 1, Ordering::Release);
            }
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Lets the group-commit timer fire while no records arrive; call it
    /// from an idle loop.
    pub fn tick(&mut self) -> Result<(), WalError> {
        if let FsyncPolicy::Group { interval, .. } = self.options.fsync {
            if self.unsynced > 0 && self.last_sync.elapsed() >= interval {
                self.sync()?;
            }
        } else if self.options.fsync == FsyncPolicy::Never {
            self.flush()?;
        }
        Ok(())
    }

    /// How long until [`tick`](Self::tick) would sync the records now
    /// pending under a group-commit policy (None: nothing is waiting on the
    /// clock). An idle writer sleeps at most this long.
    pub fn sync_due_in(&self) -> Option<Duration> {
        match self.options.fsync {
            FsyncPolicy::Group { interval, .. } if self.unsynced > 0 => {
                Some(interval.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Replaces the empty active segment by one named for `seq`, the first
    /// sequence it will hold: a segment made before that sequence was known
    /// (a new log's first, named 0; a recorder joins the ring anywhere) is
    /// otherwise named by a sequence it does not hold. The new one is made
    /// before the old one goes, so a reader sees one or the other.
    fn rename_empty_active(&mut self, seq: u64) -> Result<(), WalError> {
        let old = self.active_path.clone();
        self.start_segment(seq)?;
        if let Some(last) = self.segments.last_mut() {
            *last = SegmentInfo {
                first_seq: seq,
                path: self.active_path.clone(),
            };
        }
        for path in [index_path(&old), mark_path(&old), old] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, "remove empty segment")(e)),
            }
        }
        fsync_dir(&self.dir)
    }

    /// Creates the segment for `first_seq` and makes it the active one.
    fn start_segment(&mut self, first_seq: u64) -> Result<(), WalError> {
        let (f, p) =
            Self::create_segment(&self.dir, &self.topic, first_seq, self.options.segment_size)?;
        self.index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(index_path(&p))
            .map_err(io_err(&p, "open index"))?;
        set_mode(&self.index, &index_path(&p), WAL_FILE_MODE)?;
        self.mark = open_mark(&p, SEGMENT_HEADER as u64)?;
        self.marked = SEGMENT_HEADER as u64;
        self.active = f;
        self.active_path = p;
        self.write_pos = SEGMENT_HEADER as u64;
        self.records_since_index = 0;
        Ok(())
    }

    fn rotate(&mut self, next_seq: u64) -> Result<(), WalError> {
        self.sync()?;
        self.start_segment(next_seq)?;
        self.segments.push(SegmentInfo {
            first_seq: next_seq,
            path: self.active_path.clone(),
        });
        self.apply_retention()
    }

    /// Removes sealed segments beyond the retention limits (never the active
    /// one).
    pub fn apply_retention(&mut self) -> Result<(), WalError> {
        let sealed = self.segments.len().saturating_sub(1);
        let mut remove = 0;
        if let Some(max) = self.options.retain_bytes {
            let mut total: u64 = self.segments[..sealed]
                .iter()
                .map(|s| std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0))
                .sum();
            while remove < sealed && total > max {
                total -= std::fs::metadata(&self.segments[remove].path)
                    .map(|m| m.len())
                    .unwrap_or(0);
                remove += 1;
            }
        }
        if let Some(age) = self.options.retain_age {
            while remove < sealed {
                // A sealed segment's mtime is its last write.
                let old = std::fs::metadata(&self.segments[remove].path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > age)
                    .unwrap_or(false);
                if !old {
                    break;
                }
                remove += 1;
            }
        }
        for s in self.segments.drain(..remove) {
            std::fs::remove_file(&s.path).map_err(io_err(&s.path, "remove old segment"))?;
            let _ = std::fs::remove_file(index_path(&s.path));
            let _ = std::fs::remove_file(mark_path(&s.path));
        }
        if remove > 0 {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Wal {
    /// Test support: the process "dies" here (no sync, nothing dropped)
    /// but, as at a real death, the kernel drops its directory lock.
    #[cfg(test)]
    pub(crate) fn crash(self) {
        // SAFETY: flock on the lock file's descriptor, owned by `self`.
        unsafe { libc::flock(self._lock.as_raw_fd(), libc::LOCK_UN) };
        std::mem::forget(self);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Atomically written per-subscriber checkpoints: the last sequence a
/// subscriber has processed.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

const CKPT_MAGIC: [u8; 8] = *b"ZCCKPT01";

impl Checkpoints {
    /// Checkpoints kept in `dir`.
    pub fn new(dir: &Path) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "create checkpoint directory"))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ckpt"))
    }

    /// The directory the checkpoints are kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last processed sequence of `name`, or None if it has none yet. A
    /// damaged checkpoint is an error, never a silent restart from zero.
    pub fn load(&self, name: &str) -> Result<Option<u64>, WalError> {
        let path = self.path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read checkpoint")(e)),
        };
        let bad = |reason: &str| WalError::BadCheckpoint {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        if bytes.len() != 20 {
            return Err(bad(&format!("{} bytes, expected 20", bytes.len())));
        }
        if bytes[..8] != CKPT_MAGIC {
            return Err(bad("bad magic"));
        }
        let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[..16]) != crc {
            return Err(bad("CRC mismatch"));
        }
        let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if seq > format::MAX_SEQ {
            return Err(bad(&format!(
                "sequence {seq} is past MAX_SEQ ({})",
                format::MAX_SEQ
            )));
        }
        Ok(Some(seq))
    }

    /// Stores `seq` for `name`: temp file, fsync, rename, fsync directory.
    pub fn store(&self, name: &str, seq: u64) -> Result<(), WalError> {
        let path = self.path(name);
        let tmp = self.dir.join(format!("{name}.ckpt.tmp"));
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&CKPT_MAGIC);
        bytes.extend_from_slice(&seq.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        write_file_atomically(&tmp, &path, &bytes, CHECKPOINT_MODE)
    }
}

/// Replaces `path` with `bytes` so that a crash at any point leaves the old
/// file or the new one, whole: written to `tmp` (beside it, a fixed name, so
/// a killed writer's leftover is overwritten next time, never piled up)
/// with exactly `mode`, fsynced, renamed over `path`, then the directory
/// fsynced. The one atomic file write of the runtime (checkpoints, their
/// segment bindings, the bridge's origin record).
pub(crate) fn write_file_atomically(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), WalError> {
    let mut f = File::create(tmp).map_err(io_err(tmp, "create"))?;
    set_mode(&f, tmp, mode)?;
    f.write_all(bytes).map_err(io_err(tmp, "write"))?;
    f.sync_all().map_err(io_err(tmp, "fsync"))?;
    std::fs::rename(tmp, path).map_err(io_err(path, "rename into place"))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests;
