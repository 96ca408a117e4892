//! A topic's shared-memory segment: a file in `/dev/shm` (mode 0600) mapped
//! with memmap2, holding a [`SegmentHeader`] and a broadcast ring.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use zerocast_core::broadcast::{slot_stride, Broadcast, BroadcastHeader, Declared};
use zerocast_core::storage::Raw;

use crate::error::{io, Error, Result};
use crate::layout::{
    now_ns, pid_alive, SegmentHeader, LAYOUT_HASH, LAYOUT_VERSION, MAGIC, RING_OFFSET,
};

/// How long a sequence may stay claimed but uncommitted before a subscriber
/// or a publisher waiting on its slot resolves it (the subscribers' default;
/// see `SubscriberOptions::stall_bound`). Far longer than any live
/// publisher's window between its claim and its in-flight record.
pub const STALL_BOUND: Duration = Duration::from_millis(50);

/// The ring type inside a segment.
pub type Ring = Broadcast<Raw<BroadcastHeader, std::sync::atomic::AtomicU64>>;

/// Marks a segment still being built under a temporary name.
pub const INIT_MARK: &str = ".init-";

/// How long an opener waits for a creator to finish initialising (only a
/// segment from an older build, created in place, can be seen unready).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes a segment with `capacity` slots of `payload_words` needs.
pub fn segment_size(capacity: u64, payload_words: usize) -> u64 {
    (RING_OFFSET
        + Raw::<BroadcastHeader, std::sync::atomic::AtomicU64>::region_size(
            capacity as usize * slot_stride(payload_words),
        )) as u64
}

/// The largest power-of-two capacity whose segment fits in `size` bytes, if
/// at least 2 fit.
pub fn capacity_for(size: u64, payload_words: usize) -> Option<u64> {
    let mut cap = 2u64;
    if segment_size(cap, payload_words) > size {
        return None;
    }
    while segment_size(cap * 2, payload_words) <= size {
        cap *= 2;
    }
    Some(cap)
}

/// A name, unique to this call, under which a file that will be published
/// as `path` (with `link()`) is built: the pid and a per-process counter
/// after [`INIT_MARK`], so neither another process nor another thread of
/// this one can take or remove it.
pub(crate) fn init_path(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    PathBuf::from(format!(
        "{}{INIT_MARK}{}-{}",
        path.display(),
        std::process::id(),
        // Relaxed: only uniqueness matters.
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A mapped topic segment.
pub struct Segment {
    ring: Ring,
    path: PathBuf,
    topic: String,
    // Last: the ring points into this mapping.
    map: MmapMut,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("capacity", &self.ring.capacity())
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Opens the segment at `path`, creating it with `capacity` slots of
    /// `payload_words` if it does not exist.
    pub fn open_or_create(
        path: &Path,
        topic: &str,
        capacity: u64,
        payload_words: usize,
    ) -> Result<Self> {
        match Self::create(path, topic, capacity, payload_words) {
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                Self::open(path, topic)
            }
            other => other,
        }
    }

    /// Creates a new segment; fails (`AlreadyExists`) if the file exists.
    ///
    /// The segment is built under a temporary name and published with
    /// `link()`, which fails if the name is taken: nobody can open a segment
    /// whose creator has not finished initialising it, however slow that is
    /// (found by the fan-out benchmark: 1000 subscribers racing to open a new
    /// topic timed out waiting for its creator).
    pub fn create(path: &Path, topic: &str, capacity: u64, payload_words: usize) -> Result<Self> {
        let size = segment_size(capacity, payload_words);
        let tmp = init_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create segment"))?;
        let result =
            Self::init(&file, path, topic, size, capacity, payload_words).and_then(|seg| {
                std::fs::hard_link(&tmp, path).map_err(io(path, "publish segment"))?;
                Ok(seg)
            });
        // Either published under its real name or abandoned: the temporary
        // name goes in both cases.
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn init(
        file: &File,
        path: &Path,
        topic: &str,
        size: u64,
        capacity: u64,
        payload_words: usize,
    ) -> Result<Self> {
        // fallocate rather than ftruncate: on tmpfs it reserves the pages now,
        // so a full /dev/shm is an error here instead of a SIGBUS later.
        // SAFETY: plain syscall on a valid fd.
        let rc =
            unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(file), 0, size as i64) };
        if rc != 0 {
            return Err(Error::Io {
                path: path.to_owned(),
                action: "reserve segment memory",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        // SAFETY: the file is ours (just created, mode 0600); other processes
        // only ever access it through the atomics in the header and ring.
        let mut map = unsafe { MmapMut::map_mut(file) }.map_err(io(path, "map segment"))?;
        let base = map.as_mut_ptr();
        // SAFETY: the mapping is at least RING_OFFSET bytes (segment_size),
        // page-aligned, zero-filled, and nobody else reads it before `magic`
        // is set below. Plain writes to the non-atomic fields happen before
        // the Release store that publishes them.
        unsafe {
            let h = base.cast::<SegmentHeader>();
            std::ptr::addr_of_mut!((*h).layout_version).write(LAYOUT_VERSION);
            std::ptr::addr_of_mut!((*h).layout_hash).write(LAYOUT_HASH);
            std::ptr::addr_of_mut!((*h).slot_payload_words).write(payload_words as u64);
            std::ptr::addr_of_mut!((*h).capacity).write(capacity);
            std::ptr::addr_of_mut!((*h).creator_pid).write(std::process::id());
            std::ptr::addr_of_mut!((*h).creation_ns).write(now_ns());
            std::ptr::addr_of_mut!((*h).ring_offset).write(RING_OFFSET as u64);
            std::ptr::addr_of_mut!((*h).total_size).write(size);
        }
        let raw = Self::raw_ring(&mut map, path, capacity, payload_words)?;
        let ring =
            Broadcast::init(raw, capacity, payload_words as u64).map_err(|source| Error::Ring {
                path: path.to_owned(),
                source,
            })?;
        let seg = Self {
            ring,
            path: path.to_owned(),
            topic: topic.to_owned(),
            map,
        };
        // Release: pairs with the Acquire load in `open`; publishes the header
        // fields and the initialised ring.
        seg.header().magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    fn raw_ring(
        map: &mut MmapMut,
        path: &Path,
        capacity: u64,
        payload_words: usize,
    ) -> Result<Raw<BroadcastHeader, std::sync::atomic::AtomicU64>> {
        let words = capacity as usize * slot_stride(payload_words);
        let region = map.len().saturating_sub(RING_OFFSET);
        // SAFETY: the region lies inside the mapping, which the Segment keeps
        // alive as long as the ring; it holds atomics only (any bit pattern is
        // valid), accessed by every process through the same ring code.
        unsafe { Raw::from_region(map.as_mut_ptr().add(RING_OFFSET), region, words) }.map_err(
            |_| Error::Truncated {
                path: path.to_owned(),
                size: map.len() as u64,
                needed: segment_size(capacity, payload_words),
            },
        )
    }

    /// Opens an existing segment, checking that it is zerocast's, with this
    /// build's layout, and as large as its header says.
    pub fn open(path: &Path, topic: &str) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path, "open segment"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        // The creator may still be sizing the file.
        let len = loop {
            let len = file.metadata().map_err(io(path, "stat segment"))?.len();
            if len >= RING_OFFSET as u64 || Instant::now() > deadline {
                break len;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if len < 8 {
            return Err(Error::NotZerocast {
                path: path.to_owned(),
                found_magic: 0,
            });
        }
        // SAFETY: as in `init`; the file is only accessed through atomics
        // once mapped, and its size is checked before the header is read.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "map segment"))?;
        // SAFETY: at least 8 bytes, page-aligned: the magic word.
        let magic = unsafe { &*map.as_ptr().cast::<std::sync::atomic::AtomicU64>() };
        let found = loop {
            // Acquire: pairs with the Release store in `init`.
            let m = magic.load(Ordering::Acquire);
            if m == MAGIC {
                break m;
            }
            if m != 0 || Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if found == 0 && len >= RING_OFFSET as u64 {
            return Err(Error::NotReady {
                path: path.to_owned(),
            });
        }
        if found != MAGIC {
            return Err(Error::NotZerocast {
                path: path.to_owned(),
                found_magic: found,
            });
        }
        if len < RING_OFFSET as u64 {
            return Err(Error::Truncated {
                path: path.to_owned(),
                size: len,
                needed: RING_OFFSET as u64,
            });
        }
        // SAFETY: the mapping holds a whole header (checked above), published
        // by the creator (Acquire above).
        let h = unsafe { &*map.as_ptr().cast::<SegmentHeader>() };
        if h.layout_version != LAYOUT_VERSION || h.layout_hash != LAYOUT_HASH {
            return Err(Error::LayoutMismatch {
                path: path.to_owned(),
                found_version: h.layout_version,
                found_hash: h.layout_hash,
                expected_version: LAYOUT_VERSION,
                expected_hash: LAYOUT_HASH,
            });
        }
        let (capacity, payload_words) = (h.capacity, h.slot_payload_words as usize);
        let needed = segment_size(capacity, payload_words);
        if len < needed || payload_words == 0 || payload_words > 4096 {
            return Err(Error::Truncated {
                path: path.to_owned(),
                size: len,
                needed,
            });
        }
        let raw = Self::raw_ring(&mut map, path, capacity, payload_words)?;
        let ring = Broadcast::attach(raw).map_err(|source| Error::Ring {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            ring,
            path: path.to_owned(),
            topic: topic.to_owned(),
            map,
        })
    }

    /// The header.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping starts with a header (checked at open/create)
        // and lives as long as `self`.
        unsafe { &*self.map.as_ptr().cast::<SegmentHeader>() }
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Payload bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.ring.payload_words() * 8
    }

    /// Whether nobody is using the segment: its creator and every registered
    /// publisher and subscriber are dead.
    pub fn is_stale(&self) -> bool {
        let h = self.header();
        !pid_alive(h.creator_pid) && self.live_users() == 0
    }

    /// Processes registered in the tables that are still alive.
    pub fn live_users(&self) -> usize {
        let h = self.header();
        // Acquire: pairs with the Release pid stores that register entries.
        let pubs = h
            .publishers
            .iter()
            .filter(|p| pid_alive(p.pid.load(Ordering::Acquire)));
        let subs = h
            .subscribers
            .iter()
            .filter(|s| pid_alive(s.pid.load(Ordering::Acquire)));
        pubs.count() + subs.count()
    }

    /// Reclaims the entries of dead processes: a dead publisher's in-flight
    /// sequences are declared lost (subscribers see a gap of one per
    /// sequence), a dead subscriber's gating hold is released. Returns how
    /// many entries were reclaimed.
    pub fn reap(&self) -> usize {
        let h = self.header();
        let mut reaped = 0;
        let mut dead = Vec::new();
        for p in &h.publishers {
            // Acquire: pairs with the Release pid store at registration.
            let pid = p.pid.load(Ordering::Acquire);
            if pid == 0 || pid_alive(pid) {
                continue;
            }
            // The owner is dead; nothing races on its entry but
            // other reapers, and declare_lost is idempotent.
            dead.extend(p.inflight_range().into_iter().flatten());
            // AcqRel: only one reaper frees the entry.
            if p.pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                reaped += 1;
            }
        }
        // Oldest first: a slot passes to a lap only once the lap before it is
        // resolved, so a later sequence in the same slot can be declared
        // only after an earlier one.
        dead.sort_unstable();
        for seq in dead {
            let _ = self.ring.declare_lost(seq);
        }
        for s in &h.subscribers {
            // Acquire: as above.
            let pid = s.pid.load(Ordering::Acquire);
            if pid == 0 || pid_alive(pid) {
                continue;
            }
            // Relaxed: the owner is dead.
            let gating = s.gating.swap(0, Ordering::Relaxed);
            if gating != 0 {
                self.ring.release_gating_slot(gating as usize - 1);
            }
            // AcqRel: only one reaper frees the entry.
            if s.pid
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                reaped += 1;
            }
        }
        reaped
    }

    /// Resolves sequence `seq`, claimed but not committed for longer than a
    /// stall bound ([`STALL_BOUND`] unless a subscriber configures its own):
    /// if no live publisher says it is writing it, it is declared lost.
    pub fn resolve_stalled(&self, seq: u64) -> Option<Declared> {
        self.reap();
        let h = self.header();
        let owned_by_live = h.publishers.iter().any(|p| {
            // A hint (see `inflight_range`): the stall bound makes a stale
            // read harmless, the owner stored it long before the bound elapsed.
            p.inflight_range().is_some_and(|r| r.contains(&seq))
                && pid_alive(p.pid.load(Ordering::Acquire))
        });
        if owned_by_live {
            return None;
        }
        self.ring.declare_lost(seq).ok()
    }
}
