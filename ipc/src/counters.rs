//! A namespace's counters table: a small shared-memory file
//! (`/dev/shm/zerocast.<ns>.@counters`, mode 0600: beside the topic
//! segments, under a name no topic can have) in which processes that are not
//! publishers or subscribers (the recorder, the batcher) export what only
//! they know (WAL bytes and fsync latency, batch rows and commit latency),
//! so that a health monitor, which reads only shared memory, can export
//! them too. Aeron's CnC counters file is the model.
//!
//! ```text
//! offset 0     CountersHeader (magic, version, entry count and size,
//!              label length, values and buckets per entry)
//! offset 128   MAX_COUNTERS CounterEntry, 256 bytes each
//! ```
//!
//! Each entry has an owner word (pid and process start time,
//! [`owner_word`](crate::layout::owner_word)), a kind, two labels (a topic
//! and a name), [`VALUES`] counters and a latency histogram with the
//! bucket bounds [`BUCKET_BOUNDS_NS`]. Only the owner writes an entry's
//! values, with plain Relaxed stores (a load and a store, no locked
//! instruction); readers only load, so readers never block the writer and
//! a reader killed anywhere leaves nothing behind.
//!
//! **Claiming.** [`CountersTable::claim`] takes, by compare-and-swap on the
//! owner word, the entry of the same kind and labels whose owner is dead
//! (so a restarted recorder replaces its predecessor's entry), else a free
//! one, else any dead owner's; while it writes the kind and labels the word
//! is a tombstone naming it ([`tombstone`]), which readers skip. Dropping
//! the [`Counters`] handle frees the entry; when the last handle on a
//! table through which entries were claimed goes (its `Counters` and any
//! `Arc` the caller kept), the table removes the file if every entry is
//! free and no other process holds the file for a claim (a shared `flock`
//! each claiming table holds), so processes that stop cleanly leave
//! nothing in `/dev/shm`. A process killed while it owns
//! an entry leaves it claimed: readers report it dead
//! ([`CounterSnapshot::alive`]) until a claim takes it over or
//! [`CountersTable::reclaim_dead`] frees it.
//!
//! ```
//! use zerocast_ipc::counters::{CounterKind, CountersTable};
//! # let path = std::env::temp_dir().join(format!("zc-counters-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_file(&path);
//! let table = std::sync::Arc::new(CountersTable::open_or_create(&path)?);
//! let wal = table.claim(CounterKind::Wal, "trades", "recorder")?;
//! wal.add(0, 1);
//! wal.observe_ns(120_000);
//! let seen = table.snapshot();
//! assert_eq!(seen[0].values[0], 1);
//! assert_eq!(seen[0].histogram.count, 1);
//! # drop(wal);
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), zerocast_ipc::Error>(())
//! ```

use std::mem::size_of;

use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapMut;

use crate::config::{shm_dir, Config, SEGMENT_PREFIX};
use crate::error::{io, Error, Result};
use crate::layout::{
    current_owner, is_tombstone, load_name, name_is, owner_alive, owner_pid, store_name, tombstone,
    tombstone_taker, FREE, NAME_LEN,
};

/// `ZCCOUNTR` in little-endian ASCII.
pub const COUNTERS_MAGIC: u64 = u64::from_le_bytes(*b"ZCCOUNTR");
/// Bumped on any change to the counters file's layout or protocol.
pub const COUNTERS_LAYOUT_VERSION: u32 = 1;
/// Entries per namespace.
pub const MAX_COUNTERS: usize = 128;
/// Counter values per entry (what each means depends on the kind).
pub const VALUES: usize = 8;
/// Upper bounds (inclusive, nanoseconds) of the histogram's buckets:
/// 50 µs to 1 s. A sample above the last bound counts only in the total.
pub const BUCKET_BOUNDS_NS: [u64; 14] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
const BUCKETS: usize = BUCKET_BOUNDS_NS.len();

/// What an entry counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKind {
    /// A topic's write-ahead log, written by its recorder. Values:
    /// [`wal`] indices; histogram: fsync latency.
    Wal,
    /// A batcher (the delayed tier). Values: [`batch`] indices; histogram:
    /// the sink's commit latency per batch.
    Batch,
}

impl CounterKind {
    fn code(self) -> u32 {
        match self {
            Self::Wal => 1,
            Self::Batch => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Wal),
            2 => Some(Self::Batch),
            _ => None,
        }
    }

    /// Lower-case name (`wal`, `batch`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Wal => "wal",
            Self::Batch => "batch",
        }
    }
}

/// Value indices of a [`CounterKind::Wal`] entry.
pub mod wal {
    /// Records appended (frames, lost, missed and invalid records).
    pub const RECORDS: usize = 0;
    /// Bytes of those records as written to the log (headers included).
    pub const RECORD_BYTES: usize = 1;
    /// fdatasyncs of the active segment (also the histogram's count).
    pub const FSYNCS: usize = 2;
    /// Last sequence appended, plus one (0: none yet).
    pub const LAST_SEQ: usize = 3;
}

/// Value indices of a [`CounterKind::Batch`] entry.
pub mod batch {
    /// Frames committed (rows of the sink's message tables).
    pub const ROWS: usize = 0;
    /// Batches committed.
    pub const BATCHES: usize = 1;
    /// Last committed sequence, plus one (0: none yet).
    pub const COMMITTED_SEQ: usize = 2;
    /// Sequences committed as lost by the bus.
    pub const LOST: usize = 3;
    /// Sequences committed as missing.
    pub const MISSING: usize = 4;
    /// Invalid frames committed.
    pub const INVALID: usize = 5;
}

/// The header of a counters file.
#[repr(C)]
struct CountersHeader {
    /// [`COUNTERS_MAGIC`], stored last by the creator (before the file gets
    /// its public name).
    magic: AtomicU64,
    /// [`COUNTERS_LAYOUT_VERSION`] of the creator.
    version: AtomicU32,
    /// Entries in the table ([`MAX_COUNTERS`]).
    entries: AtomicU32,
    /// Bytes per entry.
    entry_size: AtomicU32,
    /// Bytes of a label ([`NAME_LEN`]).
    label_len: AtomicU32,
    /// Values per entry ([`VALUES`]).
    values: AtomicU32,
    /// Histogram buckets per entry.
    buckets: AtomicU32,
    /// Reserved (zero). Atomic like every word of the file: other
    /// processes may write any of it while a `&CountersHeader` lives, so
    /// no part of it may be plain (immutable-behind-`&`) memory.
    _reserved: [AtomicU64; 12],
}

/// One process's counters.
#[repr(C, align(64))]
struct CounterEntry {
    /// Owner word of the owning process; [`FREE`] when free; a tombstone
    /// naming the claimer while it writes the kind and labels.
    owner: AtomicU64,
    /// [`CounterKind`] code.
    kind: AtomicU32,
    /// Padding, atomic for the reason given at `CountersHeader::_reserved`.
    _pad: AtomicU32,
    /// Topic label, as a publisher name is stored.
    topic: [AtomicU64; NAME_LEN / 8],
    /// Name label.
    name: [AtomicU64; NAME_LEN / 8],
    /// The kind's counters.
    values: [AtomicU64; VALUES],
    /// Samples in the histogram.
    count: AtomicU64,
    /// Sum of the samples, ns.
    sum_ns: AtomicU64,
    /// Samples per bucket (not cumulative): bucket `i` counts samples
    /// above bound `i - 1` and at most bound `i`.
    buckets: [AtomicU64; BUCKETS],
}

const HEADER: usize = 128;
const ENTRY: usize = 256;
const _: () = assert!(size_of::<CountersHeader>() == HEADER);
const _: () = assert!(size_of::<CounterEntry>() == ENTRY);
const FILE_SIZE: usize = HEADER + MAX_COUNTERS * ENTRY;

/// The last part of the counters file's name, after the namespace's
/// segment prefix: `@` is not allowed in topic names, so no topic segment
/// has it ([`Bus::list_segments`](crate::Bus::list_segments) skips it).
pub const COUNTERS_FILE: &str = "@counters";

/// The counters file of `config`'s namespace:
/// `/dev/shm/zerocast.<ns>.@counters`.
pub fn counters_path(config: &Config) -> PathBuf {
    shm_dir().join(format!(
        "{SEGMENT_PREFIX}{}.{COUNTERS_FILE}",
        config.namespace
    ))
}

/// Claims an entry in the counters table of `config`'s namespace (created
/// if there is none): [`CountersTable::claim`] on
/// [`counters_path`]`(config)`.
pub fn claim(config: &Config, kind: CounterKind, topic: &str, name: &str) -> Result<Counters> {
    let path = counters_path(config);
    for _ in 0..8 {
        let table = Arc::new(CountersTable::open_or_create(&path)?);
        let counters = table.claim(kind, topic, name)?;
        if table.still_linked() {
            return Ok(counters);
        }
        // The last user's release removed the file between our open and
        // our lock: nobody would find this entry. Take one in the new file.
    }
    Err(Error::BadCounters {
        path,
        problem: "removed and created again under every claim (8 tries)".to_owned(),
    })
}

/// A histogram as a reader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Samples.
    pub count: u64,
    /// Sum of the samples, ns.
    pub sum_ns: u64,
    /// Samples per bucket of [`BUCKET_BOUNDS_NS`], not cumulative (samples
    /// above the last bound are in `count` only).
    pub buckets: [u64; BUCKETS],
}

/// One claimed entry as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Index in the table.
    pub index: usize,
    /// What it counts.
    pub kind: CounterKind,
    /// Topic label.
    pub topic: String,
    /// Name label.
    pub name: String,
    /// Owner word of its process.
    pub owner: u64,
    /// Pid of its process.
    pub pid: u32,
    /// Whether its process is alive ([`owner_alive`]).
    pub alive: bool,
    /// The kind's counters ([`wal`], [`batch`] indices).
    pub values: [u64; VALUES],
    /// Its latency histogram.
    pub histogram: HistogramSnapshot,
}

/// A namespace's counters file, mapped.
pub struct CountersTable {
    path: PathBuf,
    /// The open file: [`CountersTable::claim`] holds a shared `flock` on
    /// it while this lives (see its drop).
    file: std::fs::File,
    map: MmapMut,
    /// Whether a claim was made through this table (and so holds the
    /// shared lock): only then does its drop try to remove the file.
    claimed: std::sync::atomic::AtomicBool,
    /// The process that opened it: a copy inherited by a forked child
    /// removes nothing (its flock is the parent's open file description).
    pid: u32,
}

impl Drop for CountersTable {
    fn drop(&mut self) {
        // The last handle on this mapping, so no claim through it is
        // live any more (each `Counters` holds one): if we claimed, remove
        // the file if nobody uses it. Here rather than in the last
        // `Counters`' drop, so that a caller still holding the table, or
        // two handles dropped at once on two threads, do not leave it.
        // Relaxed: `&mut self`, nothing else can touch the flag now.
        if self.claimed.load(Ordering::Relaxed) && self.pid == std::process::id() {
            self.remove_if_unused();
        }
    }
}

impl std::fmt::Debug for CountersTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountersTable")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl CountersTable {
    /// Opens the table at `path`, creating it (fully built, then published
    /// with `link()`) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        match Self::open(path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let tmp = crate::segment::init_path(path);
        // Locked while half-built only (a live creator's init file is not
        // abandoned, whatever its pid reads as here); a table holds the
        // lock only for claims (see `claim`).
        let (file, map) = crate::shm_file::create(&tmp, FILE_SIZE, "create counters file")?;
        let table = Self {
            path: path.to_owned(),
            file,
            map,
            claimed: std::sync::atomic::AtomicBool::new(false),
            pid: std::process::id(),
        };
        let h = table.header();
        // Relaxed (all five): published by the Release store of `magic`;
        // the file has no public name yet.
        h.version.store(COUNTERS_LAYOUT_VERSION, Ordering::Relaxed);
        h.entries.store(MAX_COUNTERS as u32, Ordering::Relaxed);
        h.entry_size.store(ENTRY as u32, Ordering::Relaxed);
        h.label_len.store(NAME_LEN as u32, Ordering::Relaxed);
        h.values.store(VALUES as u32, Ordering::Relaxed);
        h.buckets.store(BUCKETS as u32, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `open`; publishes the
        // header fields (the entries are zero, i.e. free, as created).
        h.magic.store(COUNTERS_MAGIC, Ordering::Release);
        let published = crate::shm_file::publish(&tmp, path, "publish counters file");
        table
            .flock(libc::LOCK_UN)
            .map_err(io(path, "unlock the new counters file"))?;
        if published? {
            Ok(table)
        } else {
            // Someone else published theirs first: use it.
            Self::open(path)
        }
    }

    /// Opens an existing table, checking that this user owns it, that no
    /// one else may write it, and that its size and header are those of
    /// this build's layout: a foreign or damaged file is
    /// [`Error::BadCounters`], never read.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |problem: String| Error::BadCounters {
            path: path.to_owned(),
            problem,
        };
        let file = crate::shm_file::open_private(path, "counters file", "read or write it", bad)?;
        let meta = file.metadata().map_err(io(path, "stat counters file"))?;
        if meta.len() < FILE_SIZE as u64 {
            return Err(bad(format!(
                "{} bytes, too short for a counters table ({FILE_SIZE} bytes)",
                meta.len()
            )));
        }
        // SAFETY: the file is shared with other processes, which access it
        // only through atomics; its length is checked against the mapping
        // below before any entry is read.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "map counters file"))?;
        if map.len() < FILE_SIZE {
            return Err(bad(format!(
                "{} bytes mapped, too short for a counters table ({FILE_SIZE} bytes)",
                map.len()
            )));
        }
        let table = Self {
            path: path.to_owned(),
            file,
            map,
            claimed: std::sync::atomic::AtomicBool::new(false),
            pid: std::process::id(),
        };
        let h = table.header();
        // Acquire: pairs with the Release store of the creator; makes its
        // header fields visible.
        let magic = h.magic.load(Ordering::Acquire);
        if magic != COUNTERS_MAGIC {
            return Err(bad(format!(
                "not a zerocast counters file (magic {magic:#018x}, expected {COUNTERS_MAGIC:#018x})"
            )));
        }
        // Relaxed (all six): ordered after the Acquire load of `magic`.
        let found = [
            h.version.load(Ordering::Relaxed),
            h.entries.load(Ordering::Relaxed),
            h.entry_size.load(Ordering::Relaxed),
            h.label_len.load(Ordering::Relaxed),
            h.values.load(Ordering::Relaxed),
            h.buckets.load(Ordering::Relaxed),
        ];
        let expected = [
            COUNTERS_LAYOUT_VERSION,
            MAX_COUNTERS as u32,
            ENTRY as u32,
            NAME_LEN as u32,
            VALUES as u32,
            BUCKETS as u32,
        ];
        if found != expected {
            return Err(bad(format!(
                "layout v{} with {} entries of {} bytes ({}-byte labels, {} values, {} buckets); \
                 this build expects v{} with {} entries of {} bytes ({}-byte labels, {} values, {} buckets); \
                 remove the file once no process of the other build uses it",
                found[0], found[1], found[2], found[3], found[4], found[5],
                expected[0], expected[1], expected[2], expected[3], expected[4], expected[5],
            )));
        }
        Ok(table)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the file this table mapped.
    fn still_linked(&self) -> bool {
        crate::shm_file::still_linked(&self.file, &self.path)
    }

    /// `flock(operation)` on the file, retried on `EINTR`.
    fn flock(&self, operation: libc::c_int) -> std::io::Result<()> {
        crate::shm_file::flock(&self.file, operation)
    }

    /// Takes the shared claim lock, waiting at most
    /// [`LOCK_PATIENCE`](crate::shm_file::LOCK_PATIENCE) for a process that
    /// holds it exclusively: removals hold it for microseconds, so a
    /// longer hold is a stopped or hostile process, and a claim (a
    /// recorder's, a batcher's metrics) must not hang on it.
    fn lock_shared(&self) -> Result<()> {
        match crate::shm_file::wait_shared(&self.file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::BadCounters {
                path: self.path.clone(),
                problem: format!(
                    "another process has held its exclusive lock (flock) for over {} ms \
                     (a removal stopped midway?); no entry claimed",
                    crate::shm_file::LOCK_PATIENCE.as_millis()
                ),
            }),
            Err(e) => Err(io(&self.path, "lock counters file")(e)),
        }
    }

    /// Removes the counters file at `path` if no live process uses it:
    /// every entry is free or its owner is dead, and no process holds the
    /// file for a claim. `Ok(true)` if it was removed, `Ok(false)` if it is
    /// in use or there is none; a file that is not a counters table of
    /// this build is an error (and stays). For `zerocast stat
    /// --remove-stale`.
    pub fn remove_if_stale(path: &Path) -> Result<bool> {
        let table = match Self::open(path) {
            Ok(t) => t,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if table.flock(libc::LOCK_EX | libc::LOCK_NB).is_err() {
            return Ok(false);
        }
        let in_use = table.entries().iter().any(|e| {
            // Acquire: pairs with the Release stores of owner words in
            // `claim`.
            let word = e.owner.load(Ordering::Acquire);
            let holder = if is_tombstone(word) {
                tombstone_taker(word)
            } else {
                word
            };
            word != FREE && owner_alive(holder)
        });
        if in_use || !table.still_linked() {
            return Ok(false);
        }
        std::fs::remove_file(path).map_err(io(path, "remove counters file"))?;
        Ok(true)
    }

    /// Removes the file if every entry is free and no other process holds
    /// it for a claim: the last clean release leaves nothing behind in
    /// `/dev/shm`. A file with a dead owner's entry stays (monitors show
    /// it dead until it is reclaimed). Called as a table through which
    /// entries were claimed drops (its last handle).
    fn remove_if_unused(&self) {
        // Acquire: pairs with the Release stores of owner words in `claim`;
        // a claim seen here is one whose process holds its own lock.
        let all_free = || {
            self.entries()
                .iter()
                .all(|e| e.owner.load(Ordering::Acquire) == FREE)
        };
        if !all_free() {
            return;
        }
        // Exclusive only if no other process holds its shared claim lock.
        // A process that opened the file and has not locked it yet checks,
        // after its claim, that the path still names the file
        // (`still_linked`), and claims again in a new one if not.
        if self.flock(libc::LOCK_EX | libc::LOCK_NB).is_err() {
            return;
        }
        if all_free() && self.still_linked() {
            let _ = std::fs::remove_file(&self.path);
        }
        // The lock goes with the descriptor, when the table drops.
    }

    fn header(&self) -> &CountersHeader {
        // SAFETY: the map is at least FILE_SIZE bytes (checked in `open`,
        // set in `open_or_create`) and page-aligned; CountersHeader is
        // atomics only (interior mutability: other processes may write
        // any word while we hold the reference), valid for any bytes.
        unsafe { &*self.map.as_ptr().cast::<CountersHeader>() }
    }

    fn entries(&self) -> &[CounterEntry] {
        // SAFETY: the map holds FILE_SIZE bytes (checked in `open`, set in
        // `open_or_create`); the table starts at HEADER, a multiple of 64
        // from a page-aligned base; entries are atomics only (valid for
        // any bytes, and any word may change under a shared reference),
        // and live as long as `self.map`.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(HEADER).cast::<CounterEntry>(),
                MAX_COUNTERS,
            )
        }
    }

    /// Claims an entry for this process, counting `kind` for `topic` and
    /// `name` (each cut to [`NAME_LEN`] bytes), with every value 0.
    ///
    /// Takes the entry of the same kind and labels whose owner is dead
    /// (its last values are dropped: a new process counts from 0), else a
    /// free one, else any dead owner's. Fails with
    /// [`Error::CountersTableFull`] if every entry is owned by a live
    /// process. Lock-free among claims (a retry happens only when another
    /// claim took the entry chosen first); blocking, for at most one
    /// second, while a process removing the file holds its lock, then
    /// [`Error::BadCounters`].
    ///
    /// The entry is in this mapping's file even if the last user of the
    /// file removed it after this table was opened (no monitor then sees
    /// it): where other processes share the path, use the module's
    /// [`claim`](fn@claim), which checks and claims again in the new file.
    pub fn claim(self: &Arc<Self>, kind: CounterKind, topic: &str, name: &str) -> Result<Counters> {
        // Held while this table lives: the last releaser removes the file
        // only while no process holds it (`remove_if_unused`).
        self.lock_shared()?;
        // Relaxed: read only in this table's drop, after every handle is
        // gone (the Arc's drop orders it).
        self.claimed.store(true, Ordering::Relaxed);
        let me = current_owner();
        'retry: loop {
            let mut same = None;
            let mut free = None;
            let mut dead = None;
            for (index, e) in self.entries().iter().enumerate() {
                // Acquire: pairs with the Release store of the owner word
                // in a claim; the kind and labels read below are its.
                let word = e.owner.load(Ordering::Acquire);
                if word == FREE {
                    free.get_or_insert((index, word));
                    continue;
                }
                let holder = if is_tombstone(word) {
                    tombstone_taker(word)
                } else {
                    word
                };
                if holder == me || owner_alive(holder) {
                    continue;
                }
                // Relaxed: ordered after the Acquire load above.
                let same_kind = e.kind.load(Ordering::Relaxed) == kind.code();
                if !is_tombstone(word)
                    && same_kind
                    && name_is(&e.topic, topic)
                    && name_is(&e.name, name)
                {
                    same.get_or_insert((index, word));
                } else {
                    dead.get_or_insert((index, word));
                }
            }
            let Some((index, word)) = same.or(free).or(dead) else {
                return Err(Error::CountersTableFull {
                    path: self.path.clone(),
                });
            };
            let e = &self.entries()[index];
            // Acquire on success: pairs with the Release store of FREE in
            // `Counters::drop`, so our stores below come after the last
            // ones of an owner that freed the entry (a dead owner stores
            // nothing more). Relaxed failure: we rescan with Acquire.
            if e.owner
                .compare_exchange(word, tombstone(me), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue 'retry;
            }
            // Release: pairs with the Acquire fence of readers in
            // `snapshot`: a reader that reads any of the words written
            // below also sees the tombstone on its second load of the
            // owner word, and drops what it read.
            fence(Ordering::Release);
            // Relaxed (all): published by the Release store of the owner
            // word below.
            e.kind.store(kind.code(), Ordering::Relaxed);
            store_name(&e.topic, topic);
            store_name(&e.name, name);
            for v in e
                .values
                .iter()
                .chain([&e.count, &e.sum_ns])
                .chain(e.buckets.iter())
            {
                v.store(0, Ordering::Relaxed);
            }
            // Release: pairs with the Acquire loads of the owner word in
            // `snapshot` and `claim`; publishes the kind, labels and zeros.
            e.owner.store(me, Ordering::Release);
            return Ok(Counters {
                table: Arc::clone(self),
                index,
                owner: me,
            });
        }
    }

    /// Every claimed entry (tombstones, being claimed or freed, are
    /// skipped). Wait-free: loads only; an entry claimed again while it is
    /// read is left out.
    pub fn snapshot(&self) -> Vec<CounterSnapshot> {
        let mut out = Vec::new();
        for (index, e) in self.entries().iter().enumerate() {
            // Acquire: pairs with the Release store of the owner word in
            // `claim`.
            let word = e.owner.load(Ordering::Acquire);
            if word == FREE || is_tombstone(word) {
                continue;
            }
            // Relaxed (all below): the owner's single-writer counters, read
            // as snapshots; kind and labels are ordered after the Acquire
            // load above.
            let Some(kind) = CounterKind::from_code(e.kind.load(Ordering::Relaxed)) else {
                continue;
            };
            let topic = load_name(&e.topic);
            let name = load_name(&e.name);
            let values = std::array::from_fn(|i| e.values[i].load(Ordering::Relaxed));
            let histogram = HistogramSnapshot {
                count: e.count.load(Ordering::Relaxed),
                sum_ns: e.sum_ns.load(Ordering::Relaxed),
                buckets: std::array::from_fn(|i| e.buckets[i].load(Ordering::Relaxed)),
            };
            // Acquire: pairs with the Release fence after a claim's
            // compare-and-swap: if any word read above is a new claimer's,
            // the owner word is no longer `word`.
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence above.
            if e.owner.load(Ordering::Relaxed) != word {
                continue;
            }
            out.push(CounterSnapshot {
                index,
                kind,
                topic,
                name,
                owner: word,
                pid: owner_pid(word),
                alive: owner_alive(word),
                values,
                histogram,
            });
        }
        out
    }

    /// Frees the entries of dead processes (and abandoned claims); returns
    /// the snapshots of those it freed. A monitor that cannot see a
    /// process (another pid namespace) takes it for dead.
    pub fn reclaim_dead(&self) -> Vec<CounterSnapshot> {
        let mut freed = Vec::new();
        let dead: Vec<_> = self.snapshot().into_iter().filter(|s| !s.alive).collect();
        for s in dead {
            let e = &self.entries()[s.index];
            // Relaxed (success and failure): freeing publishes nothing (a
            // claimer writes every word again); a failure means someone
            // claimed it meanwhile, and it is theirs.
            if e.owner
                .compare_exchange(s.owner, FREE, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                freed.push(s);
            }
        }
        for e in self.entries() {
            // Relaxed: a claimer that died mid-claim left a tombstone naming
            // itself; the compare-and-swap below frees only that word.
            let word = e.owner.load(Ordering::Relaxed);
            if is_tombstone(word) && !owner_alive(tombstone_taker(word)) {
                // Relaxed: as above.
                let _ = e
                    .owner
                    .compare_exchange(word, FREE, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        freed
    }
}

/// An entry of a [`CountersTable`] owned by this process: its counters,
/// written with plain Relaxed stores. Dropping it frees the entry.
///
/// Single writer: one handle per entry, and `add`/`set`/`observe_ns` are
/// meant to be called from one thread at a time (the recorder's or the
/// batcher's loop); concurrent calls on one handle may lose increments
/// (never corrupt anything).
pub struct Counters {
    table: Arc<CountersTable>,
    index: usize,
    owner: u64,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("path", &self.table.path)
            .field("index", &self.index)
            .finish()
    }
}

impl Counters {
    fn entry(&self) -> &CounterEntry {
        &self.table.entries()[self.index]
    }

    /// Index of the entry in its table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Adds `n` to value `i` (wrapping). Wait-free: a load and a store.
    ///
    /// # Panics
    /// If `i` is not below [`VALUES`].
    pub fn add(&self, i: usize, n: u64) {
        let v = &self.entry().values[i];
        // Relaxed (both): only the owner writes its values; readers take
        // snapshots and need no order with anything else.
        v.store(v.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Sets value `i` to `value`. Wait-free.
    ///
    /// # Panics
    /// If `i` is not below [`VALUES`].
    pub fn set(&self, i: usize, value: u64) {
        // Relaxed: as in `add`.
        self.entry().values[i].store(value, Ordering::Relaxed);
    }

    /// Value `i` as this process last stored it.
    ///
    /// # Panics
    /// If `i` is not below [`VALUES`].
    pub fn get(&self, i: usize) -> u64 {
        // Relaxed: our own word.
        self.entry().values[i].load(Ordering::Relaxed)
    }

    /// Adds one sample of `ns` nanoseconds to the histogram. Wait-free.
    pub fn observe_ns(&self, ns: u64) {
        let e = self.entry();
        let bump = |w: &AtomicU64, n: u64| {
            // Relaxed (both): as in `add`.
            w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        };
        if let Some(b) = BUCKET_BOUNDS_NS.iter().position(|&bound| ns <= bound) {
            bump(&e.buckets[b], 1);
        }
        bump(&e.sum_ns, ns);
        bump(&e.count, 1);
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        // A copy inherited by a forked child: the entry is its parent's.
        if crate::layout::owner_pid(self.owner) != std::process::id() {
            return;
        }
        // Release: pairs with the Acquire loads of claimers, which then
        // overwrite our words after our last stores. Only if it is still
        // ours (a monitor may have reclaimed it, wrongly thinking us dead,
        // and someone else claimed it since).
        // The file is removed, if nobody uses it, when the last handle on
        // the table drops (`CountersTable`'s drop).
        let _ = self.entry().owner.compare_exchange(
            self.owner,
            FREE,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zc-counters-{name}-{}", std::process::id()))
    }

    #[test]
    fn claim_count_and_release() {
        let path = temp("claim");
        let _ = std::fs::remove_file(&path);
        let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
        let c = table.claim(CounterKind::Batch, "trades", "db").unwrap();
        c.add(batch::ROWS, 5);
        c.add(batch::ROWS, 2);
        c.set(batch::COMMITTED_SEQ, 7);
        for ns in [10, 50_000, 50_001, 2_000_000_000] {
            c.observe_ns(ns);
        }
        let again = Arc::new(CountersTable::open(&path).unwrap());
        let s = again.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].kind, &*s[0].topic, &*s[0].name),
            (CounterKind::Batch, "trades", "db")
        );
        assert!(s[0].alive);
        assert_eq!(s[0].values[batch::ROWS], 7);
        assert_eq!(s[0].values[batch::COMMITTED_SEQ], 7);
        assert_eq!(s[0].histogram.count, 4);
        assert_eq!(s[0].histogram.buckets[0], 2);
        assert_eq!(s[0].histogram.buckets[1], 1);
        assert_eq!(s[0].histogram.buckets.iter().sum::<u64>(), 3);
        assert_eq!(s[0].histogram.sum_ns, 2_000_100_011);
        drop(c);
        assert!(again.snapshot().is_empty());
        std::fs::remove_file(&path).unwrap();
    }

    /// A forked child dropping the counters and table it inherited freed
    /// the parent's live entry (the owner word is the parent's, so the CAS
    /// succeeded) and removed the parent's file (publishers and subscribers
    /// already refused this in a child).
    #[test]
    fn regression_a_forked_child_dropping_inherited_counters_keeps_the_parents_entry() {
        let path = temp("fork");
        let _ = std::fs::remove_file(&path);
        let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
        let c = table.claim(CounterKind::Wal, "trades", "recorder").unwrap();
        // SAFETY: the child only drops the counters and the table (atomics
        // in the shared mapping, an flock, frees through the fork-safe
        // allocator) and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            drop(c);
            drop(table);
            // SAFETY: ends the child without running the test harness.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        let alive = table.snapshot().iter().filter(|s| s.alive).count();
        let exists = path.exists();
        drop(c);
        drop(table);
        let _ = std::fs::remove_file(&path);
        assert!(exists, "the child removed the parent's counters file");
        assert_eq!(alive, 1, "the child freed the parent's counters entry");
    }

    #[test]
    fn a_dead_owners_entry_is_reported_dead_then_taken_over() {
        let path = temp("dead");
        let _ = std::fs::remove_file(&path);
        let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
        let c = table.claim(CounterKind::Wal, "trades", "recorder").unwrap();
        c.add(wal::RECORDS, 3);
        // Fake a dead owner: pid 0x3fffff is above any pid Linux hands out
        // by default (pid_max 4194304 is 0x400000) and start time 1.
        let dead = crate::layout::owner_word(0x3f_ffff, 1);
        table.entries()[c.index()]
            .owner
            .store(dead, Ordering::Release);
        std::mem::forget(c);
        let s = table.snapshot();
        assert_eq!(s.len(), 1);
        assert!(!s[0].alive, "{s:?}");
        assert_eq!(s[0].values[wal::RECORDS], 3);
        // A claim of the same kind and labels takes it over, from 0.
        let c = table.claim(CounterKind::Wal, "trades", "recorder").unwrap();
        let s = table.snapshot();
        assert_eq!(s.len(), 1);
        assert!(s[0].alive);
        assert_eq!(s[0].values[wal::RECORDS], 0);
        // And reclaiming frees a dead one.
        table.entries()[c.index()]
            .owner
            .store(dead, Ordering::Release);
        std::mem::forget(c);
        assert_eq!(table.reclaim_dead().len(), 1);
        assert!(table.snapshot().is_empty());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn concurrent_claims_get_distinct_entries_until_the_table_is_full() {
        let path = temp("race");
        let _ = std::fs::remove_file(&path);
        let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
        let threads = 8;
        let each = MAX_COUNTERS / threads;
        let claimed: Vec<Counters> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let table = Arc::clone(&table);
                    s.spawn(move || {
                        (0..each)
                            .map(|i| {
                                let c = table
                                    .claim(CounterKind::Batch, "t", &format!("{t}-{i}"))
                                    .unwrap();
                                c.set(batch::ROWS, (t * each + i) as u64);
                                c
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut indices: Vec<_> = claimed.iter().map(Counters::index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), threads * each, "every claim its own entry");
        // Each entry holds what its claimer wrote, under its labels.
        let seen = table.snapshot();
        assert_eq!(seen.len(), threads * each);
        for s in &seen {
            let (t, i) = s.name.split_once('-').unwrap();
            let expect = t.parse::<usize>().unwrap() * each + i.parse::<usize>().unwrap();
            assert_eq!(s.values[batch::ROWS], expect as u64, "{s:?}");
        }
        let full = table.claim(CounterKind::Wal, "t", "one too many");
        assert!(
            matches!(full, Err(Error::CountersTableFull { .. })),
            "{full:?}"
        );
        drop(claimed);
        assert!(table.snapshot().is_empty());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_last_clean_release_removes_the_file_and_a_dead_entry_keeps_it() {
        let config = Config {
            namespace: format!("ctr{}-rm", std::process::id()),
            topics: Vec::new(),
        };
        let path = counters_path(&config);
        let _ = std::fs::remove_file(&path);
        let wal = claim(&config, CounterKind::Wal, "t", "recorder").unwrap();
        let batch = claim(&config, CounterKind::Batch, "t", "db").unwrap();
        assert!(path.exists());
        drop(wal);
        assert!(path.exists(), "the batcher's entry is still claimed");
        drop(batch);
        assert!(!path.exists(), "nobody uses it any more");

        // A claim that dies with its process keeps the file: monitors show
        // it dead.
        let c = claim(&config, CounterKind::Wal, "t", "recorder").unwrap();
        let table = Arc::clone(&c.table);
        let dead = crate::layout::owner_word(0x3f_ffff, 1);
        table.entries()[c.index()]
            .owner
            .store(dead, Ordering::Release);
        drop(c);
        assert!(path.exists());
        assert!(!table.snapshot()[0].alive);
        // Its process is gone: stale, and `stat --remove-stale` removes it.
        let live = claim(&config, CounterKind::Batch, "t", "db").unwrap();
        assert!(!CountersTable::remove_if_stale(&path).unwrap(), "in use");
        drop(live);
        assert!(path.exists(), "the dead entry keeps it");
        drop(table);
        assert!(CountersTable::remove_if_stale(&path).unwrap());
        assert!(!path.exists());
        assert!(!CountersTable::remove_if_stale(&path).unwrap(), "none left");
    }

    /// A process that claims through a table it also holds (the API the
    /// module example shows) and stops cleanly leaves nothing in
    /// `/dev/shm`: the file goes when the last handle on the table does,
    /// whichever that is (before, only a `Counters` dropped as the last
    /// handle removed it, so here the file stayed).
    #[test]
    fn regression_dropping_the_table_after_its_counters_removes_the_file() {
        let config = Config {
            namespace: format!("ctr{}-tabledrop", std::process::id()),
            topics: Vec::new(),
        };
        let path = counters_path(&config);
        let _ = std::fs::remove_file(&path);
        let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
        let c = table.claim(CounterKind::Wal, "t", "recorder").unwrap();
        drop(c);
        assert!(path.exists(), "the table is still held");
        drop(table);
        let left = path.exists();
        let _ = std::fs::remove_file(&path);
        assert!(!left, "the last clean release left {}", path.display());
    }

    /// A sparse file would take its pages only when a claimer first
    /// writes an entry: on a full `/dev/shm` that write is a SIGBUS (in a
    /// recorder, which treats its counters as optional). The pages are
    /// reserved at creation, where a full `/dev/shm` is an error.
    #[test]
    fn regression_the_counters_file_reserves_its_pages_when_created() {
        let config = Config {
            namespace: format!("ctr{}-reserve", std::process::id()),
            topics: Vec::new(),
        };
        let path = counters_path(&config);
        let _ = std::fs::remove_file(&path);
        let table = CountersTable::open_or_create(&path).unwrap();
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        std::fs::remove_file(&path).unwrap();
        drop(table);
        assert!(
            blocks * 512 >= FILE_SIZE as u64,
            "{blocks} blocks of 512 bytes reserved for {FILE_SIZE} bytes"
        );
    }

    /// A process that holds the file's exclusive lock (a `zerocast stat
    /// --remove-stale` stopped with ^Z mid-removal) must not hang a
    /// recorder's or batcher's claim: it gives up with an error naming the
    /// file and the lock (they then run without metrics).
    #[test]
    fn regression_a_held_exclusive_lock_does_not_hang_a_claim() {
        use std::os::fd::AsRawFd as _;
        let path = temp("exlock");
        let _ = std::fs::remove_file(&path);
        let table = Arc::new(CountersTable::open_or_create(&path).unwrap());
        let holder = std::fs::File::open(&path).unwrap();
        // SAFETY: flock on a descriptor this test owns; no memory passed.
        let rc = unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        let (tx, rx) = std::sync::mpsc::channel();
        let claimer = Arc::clone(&table);
        std::thread::spawn(move || {
            let _ = tx.send(
                claimer
                    .claim(CounterKind::Wal, "t", "recorder")
                    .map(|c| c.index()),
            );
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        // Let a hung claimer finish, so the test cleans up either way.
        drop(holder);
        let got = got.expect("the claim still waits for the lock after 10 s");
        let e = got.unwrap_err().to_string();
        assert!(
            e.contains(&*path.to_string_lossy()) && e.contains("lock"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// As for segments: a symbolic link at the table's path is not
    /// followed (it could point at any file of this user that passes the
    /// checks, or somewhere a removal then unlinks the wrong name).
    #[test]
    fn regression_a_symlink_at_the_path_is_refused() {
        let real = temp("linktarget");
        let link = temp("link");
        let _ = std::fs::remove_file(&real);
        let _ = std::fs::remove_file(&link);
        let table = CountersTable::open_or_create(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let opened = CountersTable::open(&link).map(|_| ());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&real).unwrap();
        drop(table);
        let e = opened.unwrap_err().to_string();
        assert!(e.contains(&*link.to_string_lossy()), "{e}");
    }

    #[test]
    fn a_foreign_or_short_file_is_a_clear_error() {
        let path = temp("foreign");
        let _ = std::fs::remove_file(&path);
        let write = |bytes: &[u8]| {
            use std::io::Write;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        write(&vec![7u8; FILE_SIZE]);
        let e = CountersTable::open(&path).unwrap_err().to_string();
        assert!(e.contains("not a zerocast counters file"), "{e}");
        write(&[0u8; 100]);
        let e = CountersTable::open(&path).unwrap_err().to_string();
        assert!(e.contains("100"), "{e}");
        let mut other = vec![0u8; FILE_SIZE];
        other[..8].copy_from_slice(&COUNTERS_MAGIC.to_le_bytes());
        other[8] = 9;
        write(&other);
        let e = CountersTable::open(&path).unwrap_err().to_string();
        assert!(e.contains("layout v9"), "{e}");
        // open_or_create does not overwrite it either.
        let e = CountersTable::open_or_create(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layout v9"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
