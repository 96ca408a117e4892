//! A topic's shared-memory segment: a file in `/dev/shm` (mode 0600, or a
//! topic's `mode` and `group`) mapped
//! with memmap2, holding a [`SegmentHeader`] and a broadcast ring.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use zerocast_core::broadcast::{
    slot_stride, Broadcast, BroadcastHeader, DeclareError, Declared, ReadCursor, Start, MAX_GATING,
};
use zerocast_core::storage::Raw;

use crate::config::{Access, Producers};
use crate::error::{io, Error, Result};
use crate::layout::{
    current_owner, is_tombstone, load_name, name_is, now_ns, owner_alive, owner_pid, pid_namespace,
    tombstone, tombstone_taker, SegmentHeader, SubscriberEntry, FLAG_DURABLE, FREE, LAYOUT_HASH,
    LAYOUT_VERSION, MAGIC, NO_OWNER, ORPHAN, PRODUCERS_MANY, PRODUCERS_SINGLE, RING_OFFSET,
};
use crate::shm_file::flock;
pub use crate::shm_file::{in_use, remove_unused, Removal};
use crate::wait::{global_expedited_supported, publisher_registered, single_producer_mode_with};

/// How long a sequence may stay claimed but uncommitted before a subscriber
/// or a publisher waiting on its slot resolves it (the subscribers' default;
/// see `SubscriberOptions::stall_bound`): declared lost if no live
/// publisher lists it in flight or is claiming from it or an older
/// sequence (a publisher marks its entry claiming, with the head it read,
/// before it claims, so one preempted between its claim and its in-flight
/// record, however long, is not mistaken for a dead one).
pub const STALL_BOUND: Duration = Duration::from_millis(50);

/// The ring type inside a segment.
pub type Ring = Broadcast<Raw<BroadcastHeader, std::sync::atomic::AtomicU64>>;

/// Marks a segment still being built under a temporary name.
pub const INIT_MARK: &str = ".init-";

/// How long an opener waits for a creator to finish initialising (only a
/// segment from an older build, created in place, can be seen unready).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Fewest payload words a slot may have: a frame header.
pub const MIN_PAYLOAD_WORDS: usize = zerocast_core::frame::HEADER_LEN / 8;
/// Most payload words a slot may have: the largest frame
/// ([`MAX_FRAME_WORDS`](zerocast_core::frame::MAX_FRAME_WORDS)), the bus's
/// one payload size limit. Words past it would never be written or read.
pub const MAX_PAYLOAD_WORDS: usize = zerocast_core::frame::MAX_FRAME_WORDS;
/// Largest ring capacity a segment may have.
pub const MAX_CAPACITY: u64 = 1 << 32;

type RawRing = Raw<BroadcastHeader, std::sync::atomic::AtomicU64>;

/// Bytes a segment with `capacity` slots of `payload_words` needs, or `None`
/// if that does not fit in the address space.
pub fn checked_segment_size(capacity: u64, payload_words: usize) -> Option<u64> {
    let stride = payload_words.checked_add(1)?.checked_next_multiple_of(8)?;
    let words = usize::try_from(capacity).ok()?.checked_mul(stride)?;
    let bytes = words
        .checked_mul(8)?
        .checked_add(RawRing::elems_offset())?
        .checked_add(RING_OFFSET)?;
    debug_assert!(
        payload_words > MAX_PAYLOAD_WORDS
            || capacity > MAX_CAPACITY
            || stride == slot_stride(payload_words)
    );
    u64::try_from(bytes).ok()
}

/// Bytes a segment with `capacity` slots of `payload_words` needs
/// (`u64::MAX` if that overflows).
pub fn segment_size(capacity: u64, payload_words: usize) -> u64 {
    checked_segment_size(capacity, payload_words).unwrap_or(u64::MAX)
}

/// The largest power-of-two capacity (at most [`MAX_CAPACITY`]) whose
/// segment fits in `size` bytes, if at least 2 fit.
pub fn capacity_for(size: u64, payload_words: usize) -> Option<u64> {
    let mut cap = 2u64;
    if segment_size(cap, payload_words) > size {
        return None;
    }
    while cap < MAX_CAPACITY && segment_size(cap * 2, payload_words) <= size {
        cap *= 2;
    }
    Some(cap)
}

/// Checks a ring shape read from a header (or asked of `create`): a
/// power-of-two capacity within bounds, a payload that holds a frame
/// header, and a size that does not overflow. Returns the segment size.
fn check_shape(path: &Path, capacity: u64, payload_words: u64) -> Result<u64> {
    let bad = |field: &'static str, value: u64, why: String| Error::BadHeader {
        path: path.to_owned(),
        field,
        value,
        why,
    };
    if !(MIN_PAYLOAD_WORDS as u64..=MAX_PAYLOAD_WORDS as u64).contains(&payload_words) {
        return Err(bad(
            "payload words",
            payload_words,
            format!("must be {MIN_PAYLOAD_WORDS} to {MAX_PAYLOAD_WORDS} (a slot holds at least a frame header)"),
        ));
    }
    if !(2..=MAX_CAPACITY).contains(&capacity) || !capacity.is_power_of_two() {
        return Err(bad(
            "capacity",
            capacity,
            format!("must be a power of two from 2 to {MAX_CAPACITY}"),
        ));
    }
    checked_segment_size(capacity, payload_words as usize).ok_or_else(|| {
        bad(
            "capacity",
            capacity,
            "with its payload words, larger than the address space".to_owned(),
        )
    })
}

/// Whether this process is a member of group `gid`.
fn in_our_groups(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions and cannot fail.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 1024];
    // SAFETY: the buffer holds `groups.len()` entries.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    usize::try_from(n).is_ok_and(|n| groups[..n.min(groups.len())].contains(&gid))
}

/// Refuses a segment file that others may access, or that another user
/// owns unless `access` (the topic's `mode` and `group`) shares the topic
/// by 0660 and the file is shared with that group (one of ours) by 0660:
/// anyone who can write it can corrupt the topic, so only this user and,
/// where the topic says so, its group may.
fn check_trusted(file: &File, path: &Path, access: Access) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(io(path, "stat segment"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    // Another user's segment only for a topic shared by 0660, and only of
    // its group: a private topic's segment created first by someone else
    // would let them read and inject its frames.
    let shared_with_us = access.mode == 0o660
        && mode & 0o070 == 0o060
        && access.gid.is_none_or(|g| g == meta.gid())
        && in_our_groups(meta.gid());
    let trusted = mode & 0o7007 == 0 && (meta.uid() == ours || shared_with_us);
    if !trusted {
        return Err(Error::Untrusted {
            path: path.to_owned(),
            uid: meta.uid(),
            our_uid: ours,
            mode,
        });
    }
    Ok(())
}

/// A name, unique to this call, under which a file that will be published
/// as `path` (with `link()`) is built: the pid, a per-process counter and
/// the pid namespace after [`INIT_MARK`], so neither another process (of
/// this pid namespace or another: two containers' first processes are both
/// pid 1) nor another thread of this one can take or remove it.
pub(crate) fn init_path(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    PathBuf::from(format!(
        "{}{INIT_MARK}{}-{}-{}",
        path.display(),
        std::process::id(),
        // Relaxed: only uniqueness matters.
        COUNTER.fetch_add(1, Ordering::Relaxed),
        pid_namespace()
    ))
}

/// A mapped topic segment.
pub struct Segment {
    ring: Ring,
    /// Single-producer segments opened before this process registered for
    /// membarrier (see `crate::wait`): a second handle of the same ring
    /// whose claims issue only a compiler fence, used by this process's
    /// publishers once it has registered ([`producer_ring`](Self::producer_ring)).
    /// `None` where `ring` is already in that mode or the kernel lacks the
    /// command.
    producer: Option<Ring>,
    path: PathBuf,
    topic: String,
    // After the rings: they point into this mapping.
    map: MmapMut,
    /// The segment file, on which this handle holds a shared `flock` for
    /// as long as it maps the segment: how a process of another pid
    /// namespace, which cannot judge our pids, learns that the segment is
    /// in use (see [`open`](Self::open)). Dropped after the mapping.
    _lock: File,
}

/// Takes the shared lock that every process mapping a shared file (a
/// segment, an ack channel) holds, and checks that the file's users run in
/// this process's pid namespace, which the file records in `recorded`.
/// Liveness is judged by pid ([`owner_alive`]), so a process of another
/// namespace would take live users for dead (reap a live publisher's
/// claims, take over a single-producer topic's live publisher or a live
/// acker's entry, remove the segment as stale).
///
/// A file of another namespace is taken over once no process holds its
/// lock: every process that used it has unmapped it or died (the kernel
/// drops a dead process's locks). With the lock held exclusively this
/// process records its own namespace, so that the other namespace's
/// processes are refused from then on; it then takes the shared lock
/// again and reads the word again (the conversion is not atomic: another
/// process may have taken the file over in between). While other
/// processes hold the lock, it tries for [`TAKEOVER_PATIENCE`], holding no
/// lock between tries (two openers of one namespace taking over the same
/// file must not keep each other out), then refuses
/// ([`Error::ForeignPidNamespace`]). A namespace of 0 (a process that
/// could not read `/proc/self/ns/pid`) is not checked.
///
/// A monitor (`take_over` false) never takes a file over: it refuses one
/// of another namespace at once ([`Error::ForeignPidNamespaceObserved`],
/// saying whether a process holds the lock).
///
/// Returns whether `path` still names the file once the shared lock is
/// held ([`shm_file::still_linked`](crate::shm_file::still_linked)): if not,
/// a remover unlinked it between the caller's `open` and this lock, and
/// the caller must drop it and open the name again.
#[must_use = "a file unlinked before its lock must be opened again"]
pub(crate) fn join_pid_namespace(
    file: &File,
    path: &Path,
    recorded: &AtomicU64,
    take_over: bool,
) -> Result<bool> {
    let ours = pid_namespace();
    let deadline = Instant::now() + TAKEOVER_PATIENCE;
    let mut takeovers = 0;
    loop {
        lock_shared(file, path)?;
        // Relaxed: the kernel's lock orders it: a process that recorded
        // its namespace did so holding the lock exclusively and released
        // it (a system call taking the lock's spinlock) before ours was
        // granted.
        let theirs = recorded.load(Ordering::Relaxed);
        if theirs == ours || theirs == 0 || ours == 0 {
            return Ok(crate::shm_file::still_linked(file, path));
        }
        if !take_over {
            // Whether anyone else holds the lock: an exclusive try, let go
            // at once (the caller drops the file, and its lock, on the
            // error).
            flock(file, libc::LOCK_UN).map_err(io(path, "unlock the file"))?;
            let in_use = match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => false,
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(e) => return Err(io(path, "try the file's lock")(e)),
            };
            return Err(Error::ForeignPidNamespaceObserved {
                path: path.to_owned(),
                theirs,
                ours,
                in_use,
            });
        }
        // Exclusively, only if no other process holds the lock; ours is
        // dropped first, so that a failed try leaves none held.
        flock(file, libc::LOCK_UN).map_err(io(path, "unlock the file to take it over"))?;
        let took = match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                // Relaxed: published by the lock's release (see the load).
                recorded.store(ours, Ordering::Relaxed);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => return Err(io(path, "lock the file to take it over")(e)),
        };
        // After a takeover the word is read again under the shared lock
        // (normally ours: done); a word that keeps changing back (a process
        // writing it without the lock) must not keep this loop going, so
        // takeovers are counted, and refused past a few.
        if took {
            takeovers += 1;
            if takeovers <= MAX_TAKEOVERS {
                continue;
            }
        }
        if took || Instant::now() >= deadline {
            return Err(Error::ForeignPidNamespace {
                path: path.to_owned(),
                theirs,
                ours,
            });
        }
        // 1 to 4 ms, varied by the clock's nanoseconds, so that two openers
        // trying together drift apart.
        std::thread::sleep(Duration::from_millis(1 + now_ns() % 4));
    }
}

/// How long an opener of another pid namespace tries to take a file over
/// while other processes hold its lock before it refuses.
const TAKEOVER_PATIENCE: Duration = Duration::from_millis(200);

/// Tries an opener makes at a name whose file is removed (or replaced)
/// between its `open` and its lock, every time, before it gives up: each
/// retry follows a removal by another process, so more than a few in a
/// row is a loop of removers, not bad luck.
pub(crate) const REOPENS: u32 = 8;

/// Takeovers one opener makes before it refuses (each is normally the
/// last: only a namespace word written back without the lock needs more).
const MAX_TAKEOVERS: u32 = 4;

/// Takes the shared lock of a segment or ack channel file
/// ([`shm_file::wait_shared`](crate::shm_file::wait_shared)), naming the
/// file in the error.
pub(crate) fn lock_shared(file: &File, path: &Path) -> Result<()> {
    crate::shm_file::wait_shared(file).map_err(|source| Error::Io {
        path: path.to_owned(),
        action: "take the file's shared lock (flock; a process taking it over holds it \
                 exclusively for microseconds: one holding it for over a second is stopped)",
        source,
    })
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
    ///
    /// An existing segment of another shape (made from a config with
    /// another size or kind) is refused with [`Error::ShapeMismatch`]: used
    /// as it is, the topic would silently run on a ring of a size nobody
    /// asked for.
    pub fn open_or_create(
        path: &Path,
        topic: &str,
        capacity: u64,
        payload_words: usize,
    ) -> Result<Self> {
        Self::open_or_create_with(path, topic, capacity, payload_words, Access::default())
    }

    /// [`open_or_create`](Self::open_or_create), creating it with `access`
    /// (a topic's `mode` and `group`).
    pub fn open_or_create_with(
        path: &Path,
        topic: &str,
        capacity: u64,
        payload_words: usize,
        access: Access,
    ) -> Result<Self> {
        Self::open_or_create_for(
            path,
            topic,
            capacity,
            payload_words,
            access,
            Producers::Many,
        )
    }

    /// [`open_or_create_with`](Self::open_or_create_with) for a topic of
    /// `producers`: created with that mode; an existing segment of the
    /// other mode is refused ([`Error::ProducersMismatch`]).
    pub fn open_or_create_for(
        path: &Path,
        topic: &str,
        capacity: u64,
        payload_words: usize,
        access: Access,
        producers: Producers,
    ) -> Result<Self> {
        // Opened first: a create builds and reserves a whole segment under
        // a temporary name before it finds the name taken, which every
        // open of an existing topic paid. A name missing at the open is
        // created; one taken by another creator meanwhile, or removed
        // again (`remove_unused`) after our create found it, is tried
        // again, a bounded number of times.
        let mut tries = 0;
        let seg = loop {
            tries += 1;
            let retry = tries < REOPENS;
            match Self::open_with(path, topic, access) {
                Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
                other => break other?,
            }
            match Self::create_for(path, topic, capacity, payload_words, access, producers) {
                Err(Error::Io { source, .. })
                    if source.kind() == ErrorKind::AlreadyExists && retry => {}
                other => return other,
            }
        };
        if seg.producers() != producers {
            return Err(Error::ProducersMismatch {
                path: path.to_owned(),
                topic: topic.to_owned(),
                found: seg.producers(),
                asked: producers,
            });
        }
        let found = (seg.ring.capacity(), seg.ring.payload_words());
        if found != (capacity, payload_words) {
            return Err(Error::ShapeMismatch {
                path: path.to_owned(),
                topic: topic.to_owned(),
                found_capacity: found.0,
                found_slot_bytes: found.1 as u64 * 8,
                found_size: seg.map.len() as u64,
                asked_capacity: capacity,
                asked_slot_bytes: payload_words as u64 * 8,
                asked_size: segment_size(capacity, payload_words),
            });
        }
        Ok(seg)
    }

    /// Creates a new segment; fails (`AlreadyExists`) if the file exists.
    ///
    /// The segment is built under a temporary name and published with
    /// `link()`, which fails if the name is taken: nobody can open a segment
    /// whose creator has not finished initialising it, however slow that is
    /// (found by the fan-out benchmark: 1000 subscribers racing to open a new
    /// topic timed out waiting for its creator).
    pub fn create(path: &Path, topic: &str, capacity: u64, payload_words: usize) -> Result<Self> {
        Self::create_with(path, topic, capacity, payload_words, Access::default())
    }

    /// [`create`](Self::create) with `access`: its group and mode are set
    /// (fchown, fchmod) before the segment is published under its name, so
    /// nobody sees it with others.
    pub fn create_with(
        path: &Path,
        topic: &str,
        capacity: u64,
        payload_words: usize,
        access: Access,
    ) -> Result<Self> {
        Self::create_for(
            path,
            topic,
            capacity,
            payload_words,
            access,
            Producers::Many,
        )
    }

    /// [`create_with`](Self::create_with) for a topic of `producers`,
    /// recorded in the header.
    pub fn create_for(
        path: &Path,
        topic: &str,
        capacity: u64,
        payload_words: usize,
        access: Access,
        producers: Producers,
    ) -> Result<Self> {
        let size = check_shape(path, capacity, payload_words as u64)?;
        let tmp = init_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create segment"))?;
        // Before the segment has its name: from then on every process that
        // maps it holds this lock (see `open`).
        let result = lock_shared(&file, &tmp)
            .and_then(|()| Self::set_access(&file, path, access))
            .and_then(|()| {
                Self::init(
                    file,
                    path,
                    topic,
                    size,
                    (capacity, payload_words),
                    producers,
                )
            })
            .and_then(|seg| {
                std::fs::hard_link(&tmp, path).map_err(io(path, "publish segment"))?;
                Ok(seg)
            });
        // Either published under its real name or abandoned: the temporary
        // name goes in both cases.
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Gives `file` the group and mode of `access` (the mode exactly: not
    /// narrowed by the umask).
    fn set_access(file: &File, path: &Path, access: Access) -> Result<()> {
        use std::os::fd::AsRawFd;
        if let Some(gid) = access.gid {
            // SAFETY: plain syscall on a valid fd; -1 keeps the owner.
            if unsafe { libc::fchown(file.as_raw_fd(), u32::MAX, gid) } != 0 {
                return Err(Error::Io {
                    path: path.to_owned(),
                    action: "give the segment its topic's group (the creator must be a member)",
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(access.mode))
            .map_err(io(path, "set the segment's mode"))
    }

    fn init(
        file: File,
        path: &Path,
        topic: &str,
        size: u64,
        (capacity, payload_words): (u64, usize),
        producers: Producers,
    ) -> Result<Self> {
        // fallocate rather than ftruncate: on tmpfs it reserves the pages now,
        // so a full /dev/shm is an error here instead of a SIGBUS later.
        // SAFETY: plain syscall on a valid fd.
        let rc = unsafe {
            libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, size as i64)
        };
        if rc != 0 {
            return Err(Error::Io {
                path: path.to_owned(),
                action: "reserve segment memory",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        // SAFETY: the file is ours (just created, mode 0600); other processes
        // only ever access it through the atomics in the header and ring.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "map segment"))?;
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
            std::ptr::addr_of_mut!((*h).creator).write(current_owner());
            std::ptr::addr_of_mut!((*h).creation_ns).write(now_ns());
            std::ptr::addr_of_mut!((*h).ring_offset).write(RING_OFFSET as u64);
            std::ptr::addr_of_mut!((*h).total_size).write(size);
            std::ptr::addr_of_mut!((*h).pid_namespace).write(AtomicU64::new(pid_namespace()));
            std::ptr::addr_of_mut!((*h).producers).write(match producers {
                Producers::Many => PRODUCERS_MANY,
                Producers::Single => PRODUCERS_SINGLE,
            });
        }
        let raw = Self::raw_ring(&mut map, path, capacity, payload_words)?;
        let mut ring =
            Broadcast::init(raw, capacity, payload_words as u64).map_err(|source| Error::Ring {
                path: path.to_owned(),
                source,
            })?;
        if producers == Producers::Single {
            // SAFETY: the header records the mode before anyone can open
            // the segment, so every handle of the ring, in every process,
            // is in this mode; publishers take the topic's one publisher
            // entry first (`ShmPublisher::new`), so one claims at a time.
            // Asymmetric only if this process is registered already: a
            // process that only subscribes does not register.
            unsafe { ring.set_single_producer(single_producer_mode_with(publisher_registered())) };
        }
        let producer = Self::producer_handle(&mut map, path, &ring)?;
        let seg = Self {
            ring,
            producer,
            path: path.to_owned(),
            topic: topic.to_owned(),
            _lock: file,
            map,
        };
        // Release: pairs with the Acquire load in `open`; publishes the header
        // fields and the initialised ring.
        seg.header().magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// The asymmetric handle of a single-producer ring whose `ring` handle
    /// was opened before this process registered for membarrier (see
    /// the `producer` field); `None` where none is needed.
    fn producer_handle(map: &mut MmapMut, path: &Path, ring: &Ring) -> Result<Option<Ring>> {
        match ring.single_producer() {
            Some(mode) if !mode.asymmetric && global_expedited_supported() => {}
            _ => return Ok(None),
        }
        let raw = Self::raw_ring(map, path, ring.capacity(), ring.payload_words())?;
        let mut producer = Broadcast::attach(raw).map_err(|source| Error::Ring {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: a handle of the same single-producer ring (every handle
        // follows the header's mode, and publishers take the one entry
        // first). Asymmetric: `producer_ring` hands it out only once this
        // process is registered, and every gating registration, in every
        // process, runs `registration_barrier` (membarrier), which then
        // reaches the CPUs of this process's publishers.
        unsafe { producer.set_single_producer(single_producer_mode_with(true)) };
        Ok(Some(producer))
    }

    fn raw_ring(
        map: &mut MmapMut,
        path: &Path,
        capacity: u64,
        payload_words: usize,
    ) -> Result<Raw<BroadcastHeader, std::sync::atomic::AtomicU64>> {
        // Checked by `check_shape` (both callers), so no overflow here.
        let words = (capacity as usize).saturating_mul(slot_stride(payload_words));
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
    ///
    /// The file is untrusted input: it must belong to this user (or, with
    /// [`open_with`](Self::open_with) for a topic shared by 0660, be shared
    /// with its group by 0660), with no other-user bits
    /// ([`Error::Untrusted`]), and every
    /// header field is checked against the length actually mapped, with
    /// checked arithmetic, before anything past the header is touched. Any
    /// content gives a clear error, never a panic or an access outside the
    /// mapping. (A file shrunk by its owner *after* it was mapped still
    /// makes accesses past its new end fault: same-user processes are
    /// trusted not to do that.)
    pub fn open(path: &Path, topic: &str) -> Result<Self> {
        Self::open_with_timeout(path, topic, READY_TIMEOUT)
    }

    /// [`open`](Self::open) for a topic of `access`: a topic whose `mode`
    /// is "0660" also accepts a segment of another user shared with its
    /// `group` (any of our groups when it names none) by 0660. A private
    /// topic (the default "0600") accepts only this user's segments, so
    /// nobody else can create its segment first.
    pub fn open_with(path: &Path, topic: &str, access: Access) -> Result<Self> {
        Self::open_checked(path, topic, READY_TIMEOUT, access, true)
    }

    /// [`open_with`](Self::open_with) for a long-lived monitor (`health`,
    /// anything that holds a segment to read a topic's state without
    /// publishing or subscribing): a segment whose users run in another
    /// pid namespace is refused ([`Error::ForeignPidNamespaceObserved`]),
    /// never taken over, even when no process maps it. One that took an
    /// unused segment over would record its own namespace, so the topic's
    /// own processes, restarted in theirs, would be refused for as long as
    /// it held the segment. (A one-shot tool, `zerocast stat`, opens with
    /// `open_with`: it takes an unused segment over for the milliseconds it
    /// reads it, well inside the 200 ms a restarted process tries to take
    /// the segment back.)
    pub fn observe(path: &Path, topic: &str, access: Access) -> Result<Self> {
        Self::open_checked(path, topic, READY_TIMEOUT, access, false)
    }

    /// [`open`](Self::open), waiting at most `ready_timeout` for a creator
    /// to finish initialising it (a fuzz target passes zero).
    pub fn open_with_timeout(path: &Path, topic: &str, ready_timeout: Duration) -> Result<Self> {
        Self::open_checked(path, topic, ready_timeout, Access::default(), true)
    }

    fn open_checked(
        path: &Path,
        topic: &str,
        ready_timeout: Duration,
        access: Access,
        take_over: bool,
    ) -> Result<Self> {
        // A file unlinked between our `open` and our lock is opened again
        // by name (see `join_pid_namespace`); a name removed or replaced
        // on every try is an error, never a loop.
        for _ in 0..REOPENS {
            if let Some(seg) = Self::open_once(path, topic, ready_timeout, access, take_over)? {
                return Ok(seg);
            }
        }
        Err(Error::Io {
            path: path.to_owned(),
            action: "open segment (removed or replaced each time it was opened)",
            source: std::io::Error::from(ErrorKind::NotFound),
        })
    }

    /// One try of [`open_checked`](Self::open_checked): `None` if the file
    /// was unlinked before its lock was taken.
    fn open_once(
        path: &Path,
        topic: &str,
        ready_timeout: Duration,
        access: Access,
        take_over: bool,
    ) -> Result<Option<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io(path, "open segment"))?;
        check_trusted(&file, path, access)?;
        let deadline = Instant::now() + ready_timeout;
        // The creator may still be sizing the file (only an older build
        // creates in place).
        loop {
            let len = file.metadata().map_err(io(path, "stat segment"))?.len();
            if len >= RING_OFFSET as u64 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: as in `init`; the file is only accessed through atomics
        // once mapped, and every access below is checked against the
        // mapping's own length.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "map segment"))?;
        let len = map.len() as u64;
        if len < 8 {
            return Err(Error::NotZerocast {
                path: path.to_owned(),
                found_magic: 0,
            });
        }
        // SAFETY: the mapping holds at least 8 bytes, page-aligned: the
        // magic word.
        let magic = unsafe { &*map.as_ptr().cast::<std::sync::atomic::AtomicU64>() };
        let found = loop {
            // Acquire: pairs with the Release store in `init`.
            let m = magic.load(Ordering::Acquire);
            if m != 0 || Instant::now() >= deadline {
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
        // by the creator (Acquire above). Its plain fields are only read;
        // whatever a hostile writer put there is checked before use.
        let h = unsafe { &*map.as_ptr().cast::<SegmentHeader>() };
        // SAFETY: both fields lie inside the header; volatile as below.
        let (found_version, found_hash) = unsafe {
            (
                std::ptr::read_volatile(&h.layout_version),
                std::ptr::read_volatile(&h.layout_hash),
            )
        };
        if found_version != LAYOUT_VERSION || found_hash != LAYOUT_HASH {
            return Err(Error::LayoutMismatch {
                path: path.to_owned(),
                found_version,
                found_hash,
                expected_version: LAYOUT_VERSION,
                expected_hash: LAYOUT_HASH,
            });
        }
        if !join_pid_namespace(&file, path, &h.pid_namespace, take_over)? {
            return Ok(None);
        }
        // Volatile: plain fields of shared memory that a hostile writer may
        // change at any time; each is read once, and only the copies are
        // checked and used.
        // SAFETY: each field lies inside the header, inside the mapping.
        let (capacity, payload_words, ring_offset, total_size, producers) = unsafe {
            (
                std::ptr::read_volatile(&h.capacity),
                std::ptr::read_volatile(&h.slot_payload_words),
                std::ptr::read_volatile(&h.ring_offset),
                std::ptr::read_volatile(&h.total_size),
                std::ptr::read_volatile(&h.producers),
            )
        };
        let needed = check_shape(path, capacity, payload_words)?;
        let bad = |field: &'static str, value: u64, why: String| Error::BadHeader {
            path: path.to_owned(),
            field,
            value,
            why,
        };
        if ring_offset != RING_OFFSET as u64 {
            return Err(bad(
                "ring offset",
                ring_offset,
                format!("this layout puts the ring at {RING_OFFSET}"),
            ));
        }
        let producers = match producers {
            PRODUCERS_MANY => Producers::Many,
            PRODUCERS_SINGLE => Producers::Single,
            other => {
                return Err(bad(
                    "producers",
                    u64::from(other),
                    format!("must be {PRODUCERS_MANY} (many) or {PRODUCERS_SINGLE} (single)"),
                ))
            }
        };
        if total_size != needed {
            return Err(bad(
                "total size",
                total_size,
                format!(
                    "capacity {capacity} and {payload_words} payload words need {needed} bytes"
                ),
            ));
        }
        if len < needed {
            return Err(Error::Truncated {
                path: path.to_owned(),
                size: len,
                needed,
            });
        }
        let payload_words = payload_words as usize;
        let raw = Self::raw_ring(&mut map, path, capacity, payload_words)?;
        let mut ring = Broadcast::attach(raw).map_err(|source| Error::Ring {
            path: path.to_owned(),
            source,
        })?;
        if producers == Producers::Single {
            // SAFETY: as in `init`: every handle follows the header's mode
            // (read once, above), and publishers take the one entry first.
            // Asymmetric only if registered already, as in `init`.
            unsafe { ring.set_single_producer(single_producer_mode_with(publisher_registered())) };
        }
        // The ring keeps its own copy of its shape; it must be the header's.
        if ring.capacity() != capacity || ring.payload_words() != payload_words {
            return Err(bad(
                "capacity",
                ring.capacity(),
                format!(
                    "the ring header says {} slots of {} words, the segment header {capacity} of {payload_words}",
                    ring.capacity(),
                    ring.payload_words()
                ),
            ));
        }
        let producer = Self::producer_handle(&mut map, path, &ring)?;
        Ok(Some(Self {
            ring,
            producer,
            path: path.to_owned(),
            topic: topic.to_owned(),
            _lock: file,
            map,
        }))
    }

    /// The (device, inode) of the segment's file: what
    /// [`remove_unused`] checks the name still holds before it removes it.
    pub fn file_id(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt as _;
        // The descriptor is ours and open: fstat fails only on a broken
        // kernel; (0, 0) then matches no file.
        self._lock.metadata().map_or((0, 0), |m| (m.dev(), m.ino()))
    }

    /// The topic's producer mode, as its header records it.
    pub fn producers(&self) -> Producers {
        if self.ring.single_producer().is_some() {
            Producers::Single
        } else {
            Producers::Many
        }
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

    /// The ring handle this process's publishers claim through: on a
    /// single-producer topic opened before the process registered for
    /// membarrier (it registers when its first publisher is created), a
    /// handle whose claims skip the `SeqCst` fence once it has registered;
    /// otherwise [`ring`](Self::ring). Both handles read and write the same
    /// ring.
    #[inline(always)]
    pub fn producer_ring(&self) -> &Ring {
        match &self.producer {
            Some(producer) if publisher_registered() => producer,
            _ => &self.ring,
        }
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
    ///
    /// A segment that holds a durable hold (a recorder's, live or not) is
    /// never stale: the hold stands for frames in the ring that its log may
    /// not have yet. Release it first ([`release_durable`](Self::release_durable)).
    pub fn is_stale(&self) -> bool {
        let h = self.header();
        !owner_alive(h.creator) && self.live_users() == 0 && self.durable_holds().is_empty()
    }

    /// Processes registered in the tables that are still alive.
    pub fn live_users(&self) -> usize {
        self.live_users_except(0)
    }

    /// [`live_users`](Self::live_users) not counting process `pid`'s own
    /// entries (a process about to remove a segment asks who else uses it).
    pub fn live_users_except(&self, pid: u32) -> usize {
        let h = self.header();
        // Acquire: pairs with the Release owner stores that register entries.
        let words = h
            .publishers
            .iter()
            .map(|p| p.pid.load(Ordering::Acquire))
            .chain(h.subscribers.iter().map(|s| s.pid.load(Ordering::Acquire)));
        words
            .filter(|&w| (pid == 0 || owner_pid(w) != pid) && owner_alive(w))
            .count()
    }

    /// Who still uses the segment apart from process `pid`: live entries of
    /// other processes, plus durable holds no live process holds (a killed
    /// recorder's, waiting for its successor). What a process about to
    /// publish synthetic frames into a namespace, or remove its segments,
    /// must not ignore.
    pub fn users_except(&self, pid: u32) -> usize {
        let h = self.header();
        let unheld = self
            .durable_holds()
            .into_iter()
            // Acquire: pairs with the Release owner stores of registration.
            .filter(|d| {
                d.orphaned || !owner_alive(h.subscribers[d.index].pid.load(Ordering::Acquire))
            })
            .count();
        self.live_users_except(pid) + unheld
    }

    /// The pid of a live publisher that lists `seq` in flight, if any (one
    /// still claiming, which may hold `seq` unlisted, is not named: its
    /// record follows in a few instructions).
    pub(crate) fn live_publisher_writing(&self, seq: u64) -> Option<u32> {
        self.header().publishers.iter().find_map(|p| {
            // The owner before its record: see `live_owner_record`.
            let (owner, (_, range)) = live_owner_record(p);
            // A hint (see `PublisherEntry::inflight_state`): asked only
            // after a wait far longer than the owner's stores take.
            if !range.is_some_and(|r| r.contains(&seq)) {
                return None;
            }
            owner_alive(owner).then(|| owner_pid(owner))
        })
    }

    /// Whether a live publisher lists `seq` in flight (claimed, not yet
    /// committed), or is claiming from `seq` or an older sequence and may
    /// hold it unlisted ([`INFLIGHT_CLAIMING`](crate::layout::INFLIGHT_CLAIMING)):
    /// then it must not be declared lost. A claimer whose marker names a
    /// later sequence cannot hold `seq` (it read the head past `seq` before
    /// its claim), so it holds up no declaration of an older one.
    ///
    /// Why a live claimer of `seq` is always found: the caller saw `seq`
    /// claimed (the ring's head past it, an Acquire load of the claim
    /// word) before calling. The claimer stored the claiming marker
    /// (`mark_claiming`) before its claim RMW (many producers: SeqCst, so
    /// Release; every later write of the word is an RMW, in its release
    /// sequence) or its claim store (one producer: Release; a later store
    /// is its own, or a successor's ordered after it by the successor's
    /// Acquire claim load). That Acquire load synchronises with it, so the
    /// marker store happens before the load of `inflight` here, which
    /// reads the marker or a later value: the sequence (listed), or, once
    /// it is committed, 0 or a later publish's marker or sequence (then a
    /// declaration finds it committed, see `PublisherEntry::inflight_state`).
    /// A publisher waiting for room (before any claim) lists nothing, so it
    /// holds up no declaration for long; one stopped between its marker
    /// and its claim holds up only sequences from the head it read on.
    ///
    /// The owner word is read before the record (`live_owner_record`): the
    /// claimer's registration happens before its marker store, so before
    /// our load of the owner word too, which reads the claimer's word
    /// unless the entry was freed since (by its own drop, after its
    /// commits, or by a reaper, once it died).
    pub(crate) fn in_flight_in_a_live_publisher(&self, seq: u64) -> bool {
        self.header().publishers.iter().any(|p| {
            let (owner, (claiming_from, range)) = live_owner_record(p);
            (claiming_from.is_some_and(|from| from <= seq)
                || range.is_some_and(|r| r.contains(&seq)))
                && owner_alive(owner)
        })
    }

    /// Reclaims the entries of dead processes: a dead publisher's in-flight
    /// sequences are declared lost (subscribers see a gap of one per
    /// sequence), a dead subscriber's gating hold is released, except a
    /// durable subscriber's, which is kept as an orphaned hold (see
    /// [`SubscriberOptions::durable`](crate::SubscriberOptions::durable)).
    /// Returns how many entries were reclaimed.
    pub fn reap(&self) -> usize {
        self.reap_entries().len()
    }

    /// [`reap`](Self::reap), saying what was done to each entry.
    ///
    /// Each entry is first taken (its owner word swapped for a
    /// [`tombstone`] naming us, by compare-and-swap from the dead owner's
    /// word), then read and acted on, then freed: an entry freed and
    /// registered again after the liveness check is never touched (its word
    /// differs). A tombstone whose taker died is taken over the same way
    /// and the reap redone: every step is idempotent.
    pub fn reap_entries(&self) -> Vec<Reaped> {
        let h = self.header();
        let mut done = Vec::new();
        let mut dead = Vec::new();
        let mut taken = Vec::new();
        for (index, p) in h.publishers.iter().enumerate() {
            // Acquire: pairs with the Release owner store at registration.
            let word = p.pid.load(Ordering::Acquire);
            if !take(&p.pid, word) {
                continue;
            }
            let name = crate::layout::load_name(&p.name);
            // At most a ring's worth: the words are untrusted shared memory.
            let range = p.inflight_range();
            let lost = range
                .clone()
                .into_iter()
                .flatten()
                .take(self.ring.capacity() as usize);
            let before = dead.len();
            dead.extend(lost);
            // Freed only after its sequences are declared (below): a reaper
            // killed in between leaves the tombstone, and the next reaper
            // takes it over and declares again (a repeat is `AlreadyLost`).
            taken.push(index);
            done.push(Reaped {
                publisher: true,
                index,
                pid: reaped_pid(word),
                name,
                action: if dead.len() > before {
                    ReapAction::DeclaredLost(range.unwrap_or(0..0))
                } else {
                    ReapAction::Freed
                },
            });
        }
        // Oldest first: a slot passes to a lap only once the lap before it is
        // resolved, so a later sequence in the same slot can be declared
        // only after an earlier one.
        dead.sort_unstable();
        for seq in dead {
            let _ = self.resolve_lost(seq);
        }
        for index in taken {
            let p = &h.publishers[index];
            // The dead owner's record (and counts, heartbeat time, name)
            // is cleared before the entry is freed, after its sequences
            // are declared (a reaper killed before this point leaves the
            // record to the next one). Were it left, a supervisor could
            // read the entry's next owner, a live one, with the dead one's
            // claiming marker or listing, and hold up declarations for it
            // until that owner's first store; hence, too, supervisors load
            // the owner word first (`live_owner_record`). See
            // `clear_for_next_owner` for why the FREE store below
            // publishes the clears.
            // Release: pairs with the Acquire fence of monitors that load
            // the owner word again after reading the entry (`zerocast
            // health`, `zerocast stat`): one that reads any clear below
            // also sees the tombstone taken above, not the dead owner's
            // word.
            fence(Ordering::Release);
            p.clear_for_next_owner();
            // Release: pairs with the Acquire loads of registration and of
            // other readers; our reads of the entry (and the clears above)
            // happen before reuse.
            p.pid.store(FREE, Ordering::Release);
        }
        for index in 0..h.subscribers.len() {
            // Acquire: as above.
            let word = h.subscribers[index].pid.load(Ordering::Acquire);
            if let Some(r) = self.reap_subscriber(index, word) {
                done.push(r);
            }
        }
        done
    }

    /// Reclaims dead gating subscribers only (at most one entry per gating
    /// slot is checked, so it is cheap enough for a publisher waiting on a
    /// full ring to call every millisecond). Durable holds are kept, as in
    /// [`reap`](Self::reap). Returns how many entries were reclaimed.
    pub fn reap_gating(&self) -> usize {
        let h = self.header();
        let mut reaped = 0;
        for tag in &h.gating_owners {
            // Relaxed: a filter; the owner word below is what counts.
            let owner = tag.load(Ordering::Relaxed);
            let Some(index) = tag_entry(owner) else {
                continue;
            };
            // Acquire: pairs with the Release owner stores.
            let word = h.subscribers[index].pid.load(Ordering::Acquire);
            if self
                .reap_subscriber(index, word)
                .is_some_and(|r| matches!(r.action, ReapAction::GatingReleased(_)))
            {
                reaped += 1;
            }
        }
        reaped
    }

    /// Reaps subscriber entry `index` if its owner word is still `seen` and
    /// that owner is dead (or `seen` is a tombstone whose taker is dead);
    /// returns what was done, or `None` if the entry was not taken (free,
    /// alive, orphaned, no longer `seen`'s, or a live taker's tombstone). A
    /// durable entry's gating hold is kept (the entry becomes [`ORPHAN`]);
    /// any other's is released.
    pub fn reap_subscriber(&self, index: usize, seen: u64) -> Option<Reaped> {
        let e = self.header().subscribers.get(index)?;
        if !take(&e.pid, seen) {
            return None;
        }
        let name = load_name(&e.name);
        let action = self.settle_subscriber(index, e);
        Some(Reaped {
            publisher: false,
            index,
            pid: reaped_pid(seen),
            name,
            action,
        })
    }

    /// Finishes a taken (tombstoned) subscriber entry: a durable one that
    /// still holds a ring gating slot becomes [`ORPHAN`] with that hold; any
    /// other has every ring gating slot tagged with it released and is
    /// freed. Idempotent: a taker killed anywhere in here leaves a state
    /// the next taker finishes the same way.
    pub(crate) fn settle_subscriber(&self, index: usize, e: &SubscriberEntry) -> ReapAction {
        // Relaxed: we hold the tombstone, taken with an Acquire CAS that
        // pairs with the previous holder's last Release store of the owner
        // word, which follows its flag stores.
        let durable = e.flags.load(Ordering::Relaxed) & FLAG_DURABLE != 0;
        let mut kept = None;
        let mut released = None;
        for slot in self.gating_slots_of(index) {
            let position = self.ring.gating_position(slot);
            if durable && kept.is_none() {
                if let Some(p) = position {
                    kept = Some((slot, p));
                    continue;
                }
            }
            self.release_gating_slot_of(index, slot);
            released = released.or(position);
        }
        if let Some((slot, position)) = kept {
            // Relaxed: a hint, published by the Release store below.
            e.gating.store(slot as u32 + 1, Ordering::Relaxed);
            // Release: pairs with the Acquire loads of a durable subscriber
            // taking the hold over (and of monitors and later reapers).
            e.pid.store(ORPHAN, Ordering::Release);
            return ReapAction::Orphaned(position);
        }
        // Relaxed: we hold the tombstone; the Release store below publishes.
        e.gating.store(0, Ordering::Relaxed);
        // Relaxed: as above.
        e.flags.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire loads (CAS) of registration.
        e.pid.store(FREE, Ordering::Release);
        match released {
            Some(p) => ReapAction::GatingReleased(p),
            None => ReapAction::Freed,
        }
    }

    /// The ring gating slots tagged as held by subscriber entry `index`
    /// (normally at most one).
    pub fn gating_slots_of(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        let tag = index as u64 + 1;
        // Acquire: pairs with the AcqRel tag claim of the entry's owner, so
        // its ring registration in that slot (which follows the claim) is
        // not missed by the holder of the entry's tombstone.
        (0..MAX_GATING)
            .filter(move |&slot| self.header().gating_owners[slot].load(Ordering::Acquire) == tag)
    }

    /// Position of subscriber entry `index`'s gating hold, if it has one.
    pub fn gating_position_of_entry(&self, index: usize) -> Option<u64> {
        self.gating_slots_of(index)
            .find_map(|slot| self.ring.gating_position(slot))
    }

    /// Registers a gating cursor for subscriber entry `index`, which the
    /// caller owns: claims a ring gating slot's owner tag, then the ring
    /// slot itself. `None` if every slot is taken.
    pub(crate) fn register_gating_for(&self, index: usize, start: Start) -> Option<ReadCursor> {
        let h = self.header();
        let e = h.subscribers.get(index)?;
        let tag = index as u64 + 1;
        for (slot, owner) in h.gating_owners.iter().enumerate() {
            // AcqRel: claims the tag; Acquire pairs with the Release tag
            // clear of the slot's previous owner, which follows its ring
            // slot release, so the ring slot is seen free below.
            if owner
                .compare_exchange(NO_OWNER, tag, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // Relaxed: a hint for monitors, published by the owner's
            // Release store of its owner word.
            e.gating.store(slot as u32 + 1, Ordering::Relaxed);
            if let Some(cursor) = self.ring.register_gating_at(slot, start) {
                return Some(cursor);
            }
            // The ring slot is taken by a registration that bypassed the
            // tags (a direct user of the ring): give the tag back.
            // Relaxed: a hint, as above.
            e.gating.store(0, Ordering::Relaxed);
            // Release: pairs with the Acquire tag claims.
            let _ = owner.compare_exchange(tag, NO_OWNER, Ordering::Release, Ordering::Relaxed);
        }
        None
    }

    /// Frees ring gating slot `slot`, held by subscriber entry `index`
    /// (whose owner or tombstone holder the caller is), then its tag. Does
    /// nothing to a slot tagged with another entry.
    pub(crate) fn release_gating_slot_of(&self, index: usize, slot: usize) {
        let Some(owner) = self.header().gating_owners.get(slot) else {
            return;
        };
        let tag = index as u64 + 1;
        // Acquire: pairs with our own (or the dead previous holder's) claim;
        // a check that the tag is this entry's, so the ring slot is too.
        if owner.load(Ordering::Acquire) != tag {
            return;
        }
        // Ring slot first, tag second: while the tag names us nobody else
        // takes the ring slot, so freeing it twice (a taker redoing this)
        // frees nobody else's hold.
        // SAFETY: the tag names entry `index`, whose owner or tombstone
        // holder the caller is: the slot's holder is the caller, or dead.
        unsafe { self.ring.release_gating_slot(slot) };
        // Release: pairs with the Acquire tag claims; our ring slot release
        // happens before the next owner takes the slot.
        let _ = owner.compare_exchange(tag, NO_OWNER, Ordering::Release, Ordering::Relaxed);
    }

    /// The durable gating holds registered on this topic: live ones and
    /// orphaned ones (their process gone, see
    /// [`SubscriberOptions::durable`](crate::SubscriberOptions::durable)).
    pub fn durable_holds(&self) -> Vec<DurableHold> {
        let h = self.header();
        let mut holds = Vec::new();
        for (index, e) in h.subscribers.iter().enumerate() {
            // Acquire: pairs with the Release owner stores.
            let word = e.pid.load(Ordering::Acquire);
            if word == FREE || is_tombstone(word) {
                continue;
            }
            // Relaxed: ordered after the Acquire load above; a snapshot.
            if e.flags.load(Ordering::Relaxed) & FLAG_DURABLE == 0 {
                continue;
            }
            holds.push(DurableHold {
                index,
                name: load_name(&e.name),
                position: self.gating_position_of_entry(index),
                orphaned: word == ORPHAN,
                pid: owner_pid(word),
            });
        }
        holds
    }

    /// Drops the orphaned durable hold named `name`: publishers stop waiting
    /// for it. Returns the position it held, or `None` if there was no
    /// orphaned hold of that name (a live durable subscriber's hold is
    /// never dropped: stop that process first).
    pub fn release_durable(&self, name: &str) -> Option<u64> {
        let me = current_owner();
        for (index, e) in self.header().subscribers.iter().enumerate() {
            // Acquire: pairs with the Release store of ORPHAN in the reaper
            // or in a durable subscriber's drop.
            if e.pid.load(Ordering::Acquire) != ORPHAN || !name_is(&e.name, name) {
                continue;
            }
            // AcqRel: takes the orphan; only one of several callers does.
            if e.pid
                .compare_exchange(ORPHAN, tombstone(me), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // The entry may have been taken over and orphaned again under
            // another name between our check and the swap: check again.
            if !name_is(&e.name, name) {
                // Release: gives it back untouched.
                e.pid.store(ORPHAN, Ordering::Release);
                continue;
            }
            let position = self.gating_position_of_entry(index);
            // Not durable any more: if we die below, whoever takes our
            // tombstone over releases the hold too instead of orphaning it.
            // Relaxed: published by the Release store that follows.
            e.flags.store(0, Ordering::Relaxed);
            // Release: pairs with the Acquire CAS of a reaper taking our
            // tombstone over; publishes the flags store above.
            e.pid.store(tombstone(me), Ordering::Release);
            self.settle_subscriber(index, e);
            return Some(position.unwrap_or(0));
        }
        None
    }

    /// Resolves sequence `seq`, claimed but not committed for longer than a
    /// stall bound ([`STALL_BOUND`] unless a subscriber configures its own):
    /// if no live publisher says it is writing it, it is declared lost.
    ///
    /// # Safety
    ///
    /// The caller must have seen `seq` claimed (the ring's head past it)
    /// and not committed for at least a stall bound. A live publisher marks
    /// its entry claiming before it claims and lists the sequence right
    /// after (before any wait), and is never declared while it does either
    /// (see `in_flight_in_a_live_publisher`), however long it is preempted
    /// in between: what keeps a live publisher safe is that the caller saw
    /// `seq` claimed before calling (the ordering argument is there); the
    /// bound is how long a dead publisher's sequence may hold readers up,
    /// and keeps the check (which reads `/proc`) off every empty poll. A
    /// declaration of a live publisher's sequence would break the contract of
    /// [`Broadcast::declare_lost`](zerocast_core::broadcast::Broadcast::declare_lost)
    /// (consumers told a frame is lost that still arrives, or a torn frame).
    pub unsafe fn resolve_stalled(&self, seq: u64) -> Option<Declared> {
        self.reap();
        if self.in_flight_in_a_live_publisher(seq) {
            return None;
        }
        self.resolve_lost(seq)
    }

    /// Declares `seq` lost. If an older lap of its slot is itself unfinished
    /// (claimed by a producer that died, or was reaped, before its
    /// declaration), that lap is resolved first, oldest first, as long as no
    /// live publisher has it in flight; then `seq`. Bounded: each round
    /// either declares a lap or moves to a strictly older one.
    fn resolve_lost(&self, seq: u64) -> Option<Declared> {
        let mut target = seq;
        for _ in 0..64 {
            // SAFETY: `target` is a dead publisher's in-flight sequence
            // (from `reap_entries`), or one pending past the stall bound that
            // no live publisher lists in flight (`resolve_stalled`, whose
            // caller vouches for the bound, and the older laps below, which
            // block `seq` and so are older still): publishers mark their
            // entry claiming before a claim and record the claim in flight
            // as soon as they hold it (`on_claimed`), and no live one did
            // either, so its owner is dead.
            let declared = unsafe { self.ring.declare_lost(target) };
            match declared {
                Ok(declared) if target == seq => return Some(declared),
                // An older lap is resolved: back to `seq`.
                Ok(_) => target = seq,
                Err(DeclareError::NotClaimed(_)) => return None,
                Err(DeclareError::OlderWriterStuck(older)) => {
                    if older >= target {
                        return None;
                    }
                    if self.in_flight_in_a_live_publisher(older) {
                        return None;
                    }
                    target = older;
                }
            }
        }
        None
    }

    /// The gating subscriber furthest behind, if any: whom a publisher
    /// facing a full ring waits for.
    pub fn slowest_gating(&self) -> Option<DurableHold> {
        let h = self.header();
        let mut best: Option<DurableHold> = None;
        for (index, e) in h.subscribers.iter().enumerate() {
            // Acquire: pairs with the Release owner stores.
            let word = e.pid.load(Ordering::Acquire);
            if word == FREE || is_tombstone(word) {
                continue;
            }
            // Relaxed: a filter (the hint); the tags below are what counts.
            if e.gating.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let Some(position) = self.gating_position_of_entry(index) else {
                continue;
            };
            if best.as_ref().is_some_and(|b| b.position <= Some(position)) {
                continue;
            }
            best = Some(DurableHold {
                index,
                name: load_name(&e.name),
                position: Some(position),
                // Relaxed: as above.
                orphaned: word == ORPHAN,
                pid: owner_pid(word),
            });
        }
        best
    }
}

/// How long a durable subscriber waits for another process registering a
/// durable subscriber, or for a live taker of a same-name entry.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// The segment's durable-name lock, held (see
/// [`SegmentHeader::durable_lock`]); released on drop.
pub(crate) struct DurableLock<'a> {
    seg: &'a Segment,
    me: u64,
}

impl Segment {
    /// Takes the durable-name lock: from nobody, or from a dead holder.
    /// Fails after [`DURABLE_WAIT`] if a live process keeps it.
    pub(crate) fn lock_durable(&self, name: &str) -> Result<DurableLock<'_>> {
        let lock = &self.header().durable_lock;
        let me = current_owner();
        let deadline = Instant::now() + DURABLE_WAIT;
        loop {
            // Relaxed: a first guess; the CAS below decides.
            let cur = lock.load(Ordering::Relaxed);
            if cur == FREE || !owner_alive(cur) {
                // Acquire: pairs with the Release unlock of the previous
                // holder (its entry stores happen before our scan). A dead
                // holder's half-done registration is an entry of a dead
                // owner, which the reaper finishes.
                if lock
                    .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(DurableLock { seg: self, me });
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Err(Error::DurableBusy {
                    topic: self.topic.clone(),
                    name: name.to_owned(),
                    pid: owner_pid(cur),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for DurableLock<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire lock CAS of the next holder.
        let _ = self.seg.header().durable_lock.compare_exchange(
            self.me,
            FREE,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

/// A publisher entry's owner word, then its in-flight record
/// (`PublisherEntry::inflight_state`), in that order: a reaper clears a
/// dead owner's record before it frees the entry (see `reap_entries`), so
/// a record read after a live owner's word is never a dead predecessor's.
/// (Read the other way round, the record could be the dead owner's, read
/// just before the reaper cleared and freed it, and the word the next,
/// live, owner's.)
fn live_owner_record(
    p: &crate::layout::PublisherEntry,
) -> (u64, (Option<u64>, Option<core::ops::Range<u64>>)) {
    // Acquire: pairs with the Release owner stores (registration's CAS,
    // and the FREE store of a reaper or a dropped publisher, whose
    // release sequence that CAS continues): what the entry's earlier
    // holders stored happens before the record load below.
    let owner = p.pid.load(Ordering::Acquire);
    between_owner_and_record();
    (owner, p.inflight_state())
}

#[cfg(test)]
thread_local! {
    /// Run once, by this thread's next [`live_owner_record`], between its
    /// load of the owner word and its load of the record: a test's stand-in
    /// for whatever other processes do to the entry meanwhile.
    pub(crate) static BETWEEN_OWNER_AND_RECORD: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// Runs between [`live_owner_record`]'s two loads: in tests, the closure
/// set in [`BETWEEN_OWNER_AND_RECORD`] (once); otherwise nothing.
#[inline(always)]
fn between_owner_and_record() {
    #[cfg(test)]
    if let Some(f) = BETWEEN_OWNER_AND_RECORD.with(std::cell::Cell::take) {
        f();
    }
}

/// Takes the table entry whose owner word is `pid` from `seen` (just
/// loaded from it) if `seen` is a dead process's, or a tombstone whose
/// taker is dead: swaps in a [`tombstone`] naming us. `false` if the entry
/// is free, orphaned, alive, a live taker's, or no longer `seen`.
fn take(pid: &std::sync::atomic::AtomicU64, seen: u64) -> bool {
    if seen == FREE || seen == ORPHAN {
        return false;
    }
    let owner = if is_tombstone(seen) {
        tombstone_taker(seen)
    } else {
        seen
    };
    if owner_alive(owner) {
        return false;
    }
    // AcqRel: takes the entry from exactly the dead owner (or taker) we
    // checked (a re-registered entry has another word); Acquire pairs with
    // its last Release store of the owner word and makes its stores to the
    // entry visible before we read them; Release publishes our tombstone.
    pid.compare_exchange(
        seen,
        tombstone(current_owner()),
        Ordering::AcqRel,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// The pid a [`Reaped`] names for an entry taken from `seen`: the dead
/// owner's, or the dead taker's for a tombstone.
fn reaped_pid(seen: u64) -> u32 {
    if is_tombstone(seen) {
        owner_pid(tombstone_taker(seen))
    } else {
        owner_pid(seen)
    }
}

/// The subscriber entry a ring gating slot's owner tag names, if any.
fn tag_entry(tag: u64) -> Option<usize> {
    let index = usize::try_from(tag.checked_sub(1)?).ok()?;
    (index < crate::layout::MAX_SUBSCRIBERS).then_some(index)
}

/// A gating registration as a monitor or an error message shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableHold {
    /// Index in the subscriber table.
    pub index: usize,
    /// Subscriber name.
    pub name: String,
    /// Position held (every sequence below it released), if it holds one.
    pub position: Option<u64>,
    /// No process owns it (a durable hold whose subscriber is gone).
    pub orphaned: bool,
    /// Pid of the owner; 0 when orphaned.
    pub pid: u32,
}

/// What [`Segment::reap_entries`] did to one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// A publisher entry (else a subscriber entry).
    pub publisher: bool,
    /// Index in its table.
    pub index: usize,
    /// Pid of the dead owner.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// What was done.
    pub action: ReapAction,
}

/// What was done to a dead process's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReapAction {
    /// Freed; it held nothing.
    Freed,
    /// A publisher's in-flight sequences were declared lost.
    DeclaredLost(core::ops::Range<u64>),
    /// A subscriber's gating hold at this position was released.
    GatingReleased(u64),
    /// A durable subscriber's hold at this position was kept, orphaned.
    Orphaned(u64),
}

impl std::fmt::Display for Reaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.publisher {
            "publisher"
        } else {
            "subscriber"
        };
        write!(
            f,
            "{what} {} (pid {}, name {:?}): ",
            self.index, self.pid, self.name
        )?;
        match &self.action {
            ReapAction::Freed => f.write_str("freed"),
            ReapAction::DeclaredLost(r) => {
                write!(
                    f,
                    "freed, in-flight sequences {}..{} declared lost",
                    r.start, r.end
                )
            }
            ReapAction::GatingReleased(p) => {
                write!(f, "freed, gating hold at {p} released")
            }
            ReapAction::Orphaned(p) => write!(
                f,
                "durable hold at {p} kept for a restart (drop it with release_durable)"
            ),
        }
    }
}
