//! The ack channel of a topic: a table of per-subscriber "acked up to" words
//! in its own shared-memory file (`zerocast-acks.<ns>.<topic>`, mode 0600),
//! which a reliable publisher reads. Separate from the topic segment, so the
//! ordinary publish path never touches it.
//!
//! ```text
//! offset 0     AckHeader (magic, version, entry count and size, id length,
//!              the users' pid namespace)
//! offset 128   MAX_ACKERS AckerEntry, 64 bytes each
//! ```
//!
//! Each entry holds a subscriber id (16 bytes, NUL-padded), the pid of the
//! process that acks under it, and one cumulative word, `acked_up_to`
//! (sequence + 1 of the highest sequence acked; 0 = nothing acked), that
//! only rises. There is no queue: an ack is one atomic `fetch_max` on the
//! acker's own word and a publisher only loads words, so a process killed
//! at any instruction leaves at worst its own word behind (or, killed while
//! claiming an entry, a claim that the next registration takes back). No
//! crash wedges the channel.

use std::mem::size_of;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::MmapMut;

use crate::error::{io, Error, Result};
use crate::layout::{current_owner, owner_alive, owner_parts};

/// `ZCACKTAB` in little-endian ASCII.
pub const ACK_MAGIC: u64 = u64::from_le_bytes(*b"ZCACKTAB");
/// The magic of the ack channels of older builds (an `mpmc` ring of acks).
const OLD_ACK_MAGIC: u64 = u64::from_le_bytes(*b"ZCACKS01");
/// Bumped on any change to the ack channel's layout or protocol. 3: the
/// header records the pid namespace of the channel's users, and every
/// process that maps it holds a shared `flock` on it (as on a segment: a
/// process of another pid namespace is refused while any user lives).
pub const ACK_LAYOUT_VERSION: u32 = 3;
/// Subscriber entries per ack channel: at most this many distinct
/// subscriber names ever ack on one topic (while its ack file exists).
pub const MAX_ACKERS: usize = 256;
/// Bytes of a subscriber id.
pub const ACK_ID_LEN: usize = 16;

/// Entry phases, in bits 29..31 of [`AckerEntry::state`]. The rest of the
/// word is the owner's owner word ([`crate::layout::owner_word`]: pid in the
/// low 32 bits, start time in the high 32), whose pid never reaches bit 29
/// (Linux pids are below 2^22), so liveness is judged by pid *and* start
/// time, never by a bare pid.
const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const NAMED: u64 = 2;
const PHASE_SHIFT: u32 = 29;
const PHASE_MASK: u64 = 3 << PHASE_SHIFT;

fn state(phase: u64, owner: u64) -> u64 {
    (owner & !PHASE_MASK) | (phase << PHASE_SHIFT)
}

fn phase(state: u64) -> u64 {
    (state & PHASE_MASK) >> PHASE_SHIFT
}

fn owner(state: u64) -> u64 {
    state & !PHASE_MASK
}

fn pid(state: u64) -> u32 {
    owner_parts(owner(state)).0
}

/// The header of an ack channel file.
#[repr(C)]
struct AckHeader {
    /// [`ACK_MAGIC`], stored last by the creator (before the file gets its
    /// public name).
    magic: AtomicU64,
    /// [`ACK_LAYOUT_VERSION`] of the creator.
    version: AtomicU32,
    /// Entries in the table ([`MAX_ACKERS`]).
    entries: AtomicU32,
    /// Bytes per entry.
    entry_size: AtomicU32,
    /// Bytes of a subscriber id ([`ACK_ID_LEN`]).
    id_len: AtomicU32,
    /// Pid of the creator.
    creator_pid: AtomicU32,
    _pad: AtomicU32,
    /// The pid namespace of the channel's users (see
    /// `segment::join_pid_namespace`); 0 when its creator could not tell.
    pid_namespace: AtomicU64,
    _reserved: [u32; 22],
}

/// One subscriber's entry.
#[repr(C, align(64))]
struct AckerEntry {
    /// Phase (bits 29..31) and the owner's owner word (pid and start time,
    /// see `state`). `FREE` (0): never
    /// used. `CLAIMING`: the owner is writing the id (a dead owner's claim
    /// is taken back by the next registration). `NAMED`: the id is written
    /// and never changes again; a later process registering the same id
    /// takes the entry over once the owner is dead.
    state: AtomicU64,
    /// Sequence + 1 of the highest sequence acked; 0 when none. Only rises.
    acked_up_to: AtomicU64,
    /// Subscriber id, NUL-padded, as two words; written while `CLAIMING`.
    id: [AtomicU64; ACK_ID_LEN / 8],
    _reserved: [u64; 4],
}

const HEADER: usize = 128;
const _: () = assert!(size_of::<AckHeader>() == HEADER);
const _: () = assert!(size_of::<AckerEntry>() == 64);
const FILE_SIZE: usize = HEADER + MAX_ACKERS * size_of::<AckerEntry>();

/// One named entry of an ack channel, as a publisher reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckerState {
    /// Subscriber id, NUL-padded.
    pub subscriber: [u8; ACK_ID_LEN],
    /// Pid of the process acking under it (or that last did).
    pub pid: u32,
    /// Sequence + 1 of the highest sequence acked; 0 when none.
    pub acked_up_to: u64,
}

/// A topic's ack channel.
pub struct AckChannel {
    path: PathBuf,
    map: MmapMut,
    /// The file, on which this handle holds a shared `flock` while it maps
    /// it (see `segment::join_pid_namespace`). Dropped after the mapping.
    file: std::fs::File,
}

impl std::fmt::Debug for AckChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckChannel")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AckChannel {
    /// Opens the channel at `path`, creating it (fully built, then published
    /// with `link()`) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        for _ in 1..crate::segment::REOPENS {
            match Self::open_or_create_once(path) {
                // Removed between our `link` finding it and our `open`
                // (`remove_unused`): create it again.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        Self::open_or_create_once(path)
    }

    fn open_or_create_once(path: &Path) -> Result<Self> {
        match Self::open(path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let tmp = crate::segment::init_path(path);
        // Locked from its creation: every process that maps it holds this
        // lock (see `open`).
        let (file, map) = crate::shm_file::create(&tmp, FILE_SIZE, "create ack channel")?;
        let channel = Self {
            path: path.to_owned(),
            file,
            map,
        };
        let h = channel.header();
        // Relaxed (all six): published by the Release store of `magic`;
        // the file has no public name yet.
        h.version.store(ACK_LAYOUT_VERSION, Ordering::Relaxed);
        h.entries.store(MAX_ACKERS as u32, Ordering::Relaxed);
        h.entry_size
            .store(size_of::<AckerEntry>() as u32, Ordering::Relaxed);
        h.id_len.store(ACK_ID_LEN as u32, Ordering::Relaxed);
        h.creator_pid.store(std::process::id(), Ordering::Relaxed);
        h.pid_namespace
            .store(crate::layout::pid_namespace(), Ordering::Relaxed);
        // Release: pairs with the Acquire load in `open`; publishes the
        // header fields (the entries are zero, i.e. free, as created).
        h.magic.store(ACK_MAGIC, Ordering::Release);
        if crate::shm_file::publish(&tmp, path, "publish ack channel")? {
            Ok(channel)
        } else {
            // Someone else published theirs first: use it.
            Self::open(path)
        }
    }

    /// Opens an existing channel, checking that this user owns it, that no
    /// one else may open it, and that its size and header are those of this
    /// build's layout.
    pub fn open(path: &Path) -> Result<Self> {
        // A file unlinked between our `open` and our lock is opened again
        // by name (see `segment::join_pid_namespace`).
        for _ in 0..crate::segment::REOPENS {
            if let Some(channel) = Self::open_once(path)? {
                return Ok(channel);
            }
        }
        Err(Error::Io {
            path: path.to_owned(),
            action: "open ack channel (removed or replaced each time it was opened)",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    /// One try of [`open`](Self::open): `None` if the file was unlinked
    /// before its lock was taken.
    fn open_once(path: &Path) -> Result<Option<Self>> {
        let bad = |problem: String| Error::BadAckChannel {
            path: path.to_owned(),
            problem,
        };
        let file = crate::shm_file::open_private(path, "ack channel", "write acks", bad)?;
        // SAFETY: the file is shared with other processes, which access it
        // only through atomics; its length is checked against the mapping
        // below before any entry is read.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "map ack channel"))?;
        if map.len() < HEADER {
            return Err(Error::Truncated {
                path: path.to_owned(),
                size: map.len() as u64,
                needed: FILE_SIZE as u64,
            });
        }
        let channel = Self {
            path: path.to_owned(),
            file,
            map,
        };
        let h = channel.header();
        // Acquire: pairs with the Release store of the creator; makes its
        // header fields visible.
        let magic = h.magic.load(Ordering::Acquire);
        if magic == OLD_ACK_MAGIC {
            return Err(bad(
                "an ack ring of an older zerocast (before per-subscriber ack words); remove the file once no process of that version uses it".into(),
            ));
        }
        if magic != ACK_MAGIC {
            return Err(bad(format!(
                "not an ack channel (magic {magic:#018x}, expected {ACK_MAGIC:#018x})"
            )));
        }
        // Relaxed (all four): ordered after the Acquire load of `magic`.
        let found = (
            h.version.load(Ordering::Relaxed),
            h.entries.load(Ordering::Relaxed),
            h.entry_size.load(Ordering::Relaxed),
            h.id_len.load(Ordering::Relaxed),
        );
        let expected = (
            ACK_LAYOUT_VERSION,
            MAX_ACKERS as u32,
            size_of::<AckerEntry>() as u32,
            ACK_ID_LEN as u32,
        );
        if found != expected {
            return Err(bad(format!(
                "layout v{} with {} entries of {} bytes and {}-byte ids; this build expects v{} with {} entries of {} bytes and {}-byte ids",
                found.0, found.1, found.2, found.3, expected.0, expected.1, expected.2, expected.3
            )));
        }
        if channel.map.len() < FILE_SIZE {
            return Err(Error::Truncated {
                path: path.to_owned(),
                size: channel.map.len() as u64,
                needed: FILE_SIZE as u64,
            });
        }
        if !crate::segment::join_pid_namespace(&channel.file, path, &h.pid_namespace, true)? {
            return Ok(None);
        }
        Ok(Some(channel))
    }

    fn header(&self) -> &AckHeader {
        // SAFETY: the map is at least HEADER bytes (checked in `open`, set
        // in `open_or_create`) and page-aligned; AckHeader is atomics and
        // plain integers, valid for any bytes.
        unsafe { &*self.map.as_ptr().cast::<AckHeader>() }
    }

    fn entries(&self) -> &[AckerEntry] {
        // SAFETY: the map holds FILE_SIZE bytes (checked in `open`, set in
        // `open_or_create`); the table starts at HEADER, a multiple of 64
        // from a page-aligned base; entries are atomics and padding, valid
        // for any bytes, and lives as long as `self.map`.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(HEADER).cast::<AckerEntry>(),
                MAX_ACKERS,
            )
        }
    }

    /// Registers this process as the acker of `subscriber` and returns the
    /// handle it acks through.
    ///
    /// Claims the entry already named `subscriber` if its owner is dead or
    /// is this process (so a restarted subscriber takes its entry over and
    /// its acked position carries on rising), else a free entry (or one
    /// whose claimer died before naming it). Fails if a live process other
    /// than this one acks under `subscriber`, or if every entry is named.
    ///
    /// Lock-free: a retry happens only when another registration changed an
    /// entry. Two processes registering the same new name at the same time
    /// may both get an entry; readers take the highest word of a name, so
    /// that costs an entry, never an ack.
    pub fn register(self: &Arc<Self>, subscriber: [u8; ACK_ID_LEN]) -> Result<AckSender> {
        let me = current_owner();
        'retry: loop {
            let mut free = None;
            for (index, e) in self.entries().iter().enumerate() {
                // Acquire: pairs with the Release store of NAMED in the claim
                // below (or the AcqRel takeover); makes the id visible.
                let s = e.state.load(Ordering::Acquire);
                match phase(s) {
                    NAMED if load_id(&e.id) == subscriber => {
                        let holder = owner(s);
                        if holder != me && owner_alive(holder) {
                            return Err(Error::AckerNameTaken {
                                path: self.path.clone(),
                                name: id_string(&subscriber),
                                pid: pid(s),
                            });
                        }
                        if holder != me {
                            // AcqRel: Acquire as above; Release so that a
                            // later taker sees our acks ordered before.
                            if e.state
                                .compare_exchange(
                                    s,
                                    state(NAMED, me),
                                    Ordering::AcqRel,
                                    Ordering::Relaxed,
                                )
                                .is_err()
                            {
                                // Relaxed failure: we rescan with Acquire.
                                continue 'retry;
                            }
                        }
                        return Ok(AckSender {
                            channel: Arc::clone(self),
                            index,
                        });
                    }
                    FREE => {
                        free.get_or_insert((index, s));
                    }
                    CLAIMING if !owner_alive(owner(s)) => {
                        free.get_or_insert((index, s));
                    }
                    _ => {}
                }
            }
            let Some((index, s)) = free else {
                return Err(Error::AckTableFull {
                    path: self.path.clone(),
                });
            };
            let e = &self.entries()[index];
            // Relaxed (success and failure): the entry is not yet named, so
            // nothing is read through it; the Release store of NAMED below
            // publishes what we write.
            if e.state
                .compare_exchange(s, state(CLAIMING, me), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue 'retry;
            }
            for (w, chunk) in e.id.iter().zip(subscriber.chunks_exact(8)) {
                // Relaxed: published by the Release store of NAMED below.
                w.store(
                    u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
                    Ordering::Relaxed,
                );
            }
            // Release: pairs with the Acquire loads of `state` in readers
            // and registrations; publishes the id. `acked_up_to` is still 0:
            // an entry is acked only once named, and never renamed.
            e.state.store(state(NAMED, me), Ordering::Release);
            return Ok(AckSender {
                channel: Arc::clone(self),
                index,
            });
        }
    }

    /// Every named entry: id, owner pid and acked word. Wait-free (loads
    /// only); a concurrent registration may or may not be seen.
    pub fn acked(&self) -> Vec<AckerState> {
        self.entries()
            .iter()
            .filter_map(|e| {
                // Acquire: pairs with the Release store of NAMED in
                // `register`; makes the id visible.
                let s = e.state.load(Ordering::Acquire);
                (phase(s) == NAMED).then(|| AckerState {
                    subscriber: load_id(&e.id),
                    pid: pid(s),
                    // Acquire: pairs with the Release `fetch_max` in
                    // `AckSender::ack`; what the subscriber did before
                    // acking happens-before what the reader does after.
                    acked_up_to: e.acked_up_to.load(Ordering::Acquire),
                })
            })
            .collect()
    }

    /// The highest `acked_up_to` of `subscriber` (sequence + 1 of the
    /// highest sequence it acked; 0 when none). Wait-free.
    pub fn acked_up_to(&self, subscriber: &[u8; ACK_ID_LEN]) -> u64 {
        self.acked()
            .iter()
            .filter(|a| &a.subscriber == subscriber)
            .map(|a| a.acked_up_to)
            .max()
            .unwrap_or(0)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn load_id(words: &[AtomicU64; ACK_ID_LEN / 8]) -> [u8; ACK_ID_LEN] {
    let mut id = [0u8; ACK_ID_LEN];
    for (w, chunk) in words.iter().zip(id.chunks_exact_mut(8)) {
        // Relaxed: ordered after the Acquire load of the entry's state,
        // which was stored NAMED after the id; a named id never changes.
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    id
}

fn id_string(id: &[u8; ACK_ID_LEN]) -> String {
    let end = id.iter().position(|&b| b == 0).unwrap_or(ACK_ID_LEN);
    String::from_utf8_lossy(&id[..end]).into_owned()
}

/// A registered acker's handle on its own entry.
#[derive(Debug, Clone)]
pub struct AckSender {
    channel: Arc<AckChannel>,
    index: usize,
}

impl AckSender {
    /// Acks every sequence up to and including `seq`. Lock-free (one atomic
    /// `fetch_max`), never blocks, never fails; the word only rises, so an
    /// ack below one already made changes nothing. A process killed here
    /// leaves the word as it was or as acked.
    pub fn ack(&self, seq: u64) {
        // Release: pairs with the Acquire load in `AckChannel::acked`.
        // `fetch_max` rather than a store keeps the word rising even if an
        // owner taken for dead still stores.
        self.channel.entries()[self.index]
            .acked_up_to
            .fetch_max(seq.saturating_add(1), Ordering::Release);
    }

    /// This entry's word: sequence + 1 of the highest sequence acked
    /// through it (by this or an earlier process of the same name); 0 when
    /// none.
    pub fn acked_up_to(&self) -> u64 {
        // Acquire: as in `AckChannel::acked`.
        self.channel.entries()[self.index]
            .acked_up_to
            .load(Ordering::Acquire)
    }

    /// The channel.
    pub fn channel(&self) -> &Arc<AckChannel> {
        &self.channel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(test: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("zerocast-acks-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    fn sid(name: &str) -> [u8; ACK_ID_LEN] {
        zerocast_core::frame::id::id(name).unwrap()
    }

    /// A pid that no process has: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn regression_two_threads_creating_one_ack_channel_share_it() {
        // Both creators used the same temporary name (the pid) and removed
        // it before creating theirs, so one could unlink the other's
        // half-built file and publish it: the two ends then held different
        // channels and every ack was lost.
        let dir = std::env::temp_dir().join(format!("zerocast-acks-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rounds = if cfg!(miri) { 3 } else { 300u64 };
        for i in 0..rounds {
            let path = dir.join(format!("acks-{i}"));
            let start = std::sync::Barrier::new(2);
            let open = || {
                start.wait();
                Arc::new(AckChannel::open_or_create(&path).unwrap())
            };
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(open);
                let b = s.spawn(open);
                (a.join().unwrap(), b.join().unwrap())
            });
            a.register([1; 16]).unwrap().ack(i);
            assert_eq!(
                b.acked_up_to(&[1; 16]),
                i + 1,
                "round {i}: the two ends hold different channels"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression (the structure this file had was an `mpmc` ring): a
    /// producer that claimed a position and died before writing it wedged
    /// the ring, so no later ack ever reached the publisher. Here the
    /// nearest thing, a registration abandoned mid-claim by a dead process
    /// (and a named entry whose owner died), costs nothing: later acks
    /// arrive, and the entries are taken back.
    #[test]
    fn regression_abandoned_claim_does_not_wedge_ack_channel() {
        let path = temp_path("abandon");
        let ch = Arc::new(AckChannel::open_or_create(&path).unwrap());
        let dead = dead_pid();
        // A process that named entry 0 "victim", acked 9, and died.
        let victim = ch.register(sid("victim")).unwrap();
        victim.ack(9);
        assert_eq!(victim.index, 0);
        ch.entries()[0].state.store(
            state(NAMED, crate::layout::owner_word(dead, 0)),
            Ordering::Relaxed,
        );
        // A process that claimed entry 1, wrote half an id, and died.
        ch.entries()[1].state.store(
            state(CLAIMING, crate::layout::owner_word(dead, 0)),
            Ordering::Relaxed,
        );
        ch.entries()[1].id[0].store(u64::from_le_bytes(*b"halfwrit"), Ordering::Relaxed);

        let survivor = ch.register(sid("survivor")).unwrap();
        assert_eq!(survivor.index, 1, "the dead claim is taken back");
        survivor.ack(5);
        assert_eq!(ch.acked_up_to(&sid("survivor")), 6);
        // The restarted victim takes its entry over and keeps its position.
        let again = ch.register(sid("victim")).unwrap();
        assert_eq!(again.index, 0);
        assert_eq!(again.acked_up_to(), 10);
        again.ack(3);
        assert_eq!(ch.acked_up_to(&sid("victim")), 10, "acks never go back");
        assert_eq!(ch.acked().len(), 2);
        std::fs::remove_file(&path).unwrap();
    }

    /// An opener that opened the channel by name just before a remover
    /// (`zerocast stat --remove-stale`, which removes a stale segment's
    /// channel with it) unlinked it, and locked it just after, acked into
    /// the unlinked file: acks nobody could read. It now opens the name
    /// again once it holds the lock (here: creates it anew).
    #[test]
    fn regression_an_opener_kept_an_ack_channel_removed_before_its_lock() {
        use std::os::fd::AsRawFd;
        let path = temp_path("unlinked-open");
        let old = Arc::new(AckChannel::open_or_create(&path).unwrap());
        old.register(sid("gone")).unwrap().ack(5);
        drop(old);
        let remover = std::fs::File::open(&path).unwrap();
        // SAFETY: flock on a descriptor we own.
        let locked = unsafe { libc::flock(remover.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(locked, 0);
        let opener = {
            let path = path.clone();
            std::thread::spawn(move || AckChannel::open_or_create(&path))
        };
        // Wait until the opener holds a descriptor of the file (it then
        // waits for the lock): two in this process name it.
        // The links name the file by its real path.
        let real = std::fs::canonicalize(&path).unwrap();
        let named = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == real))
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while named() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the opener never opened it"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::fs::remove_file(&path).unwrap();
        drop(remover);
        let ch = Arc::new(opener.join().unwrap().unwrap());
        assert!(
            ch.acked().is_empty(),
            "the opener kept the channel removed before its lock"
        );
        ch.register(sid("new")).unwrap().ack(1);
        let by_name = AckChannel::open(&path).unwrap();
        assert_eq!(by_name.acked_up_to(&sid("new")), 2);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_live_owner_keeps_its_name() {
        let path = temp_path("taken");
        let ch = Arc::new(AckChannel::open_or_create(&path).unwrap());
        let mine = ch.register(sid("risk")).unwrap();
        // The same process may register the name again (it shares the entry).
        assert_eq!(ch.register(sid("risk")).unwrap().index, mine.index);
        // Pretend the entry belongs to another live process: our parent.
        let parent = std::os::unix::process::parent_id();
        ch.entries()[mine.index].state.store(
            state(
                NAMED,
                crate::layout::owner_of(parent).expect("our parent is alive"),
            ),
            Ordering::Relaxed,
        );
        let err = ch.register(sid("risk")).unwrap_err();
        assert!(
            matches!(err, Error::AckerNameTaken { pid, .. } if pid == parent),
            "{err}"
        );
        assert!(err.to_string().contains("\"risk\" already acks"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_full_table_is_a_clear_error() {
        let path = temp_path("full");
        let ch = Arc::new(AckChannel::open_or_create(&path).unwrap());
        for i in 0..MAX_ACKERS {
            ch.register(sid(&format!("s{i}"))).unwrap();
        }
        let err = ch.register(sid("one-more")).unwrap_err();
        assert!(matches!(err, Error::AckTableFull { .. }), "{err}");
        assert!(
            err.to_string().contains("all 256 subscriber entries"),
            "{err}"
        );
        // Names already in the table still register.
        ch.register(sid("s7")).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn open_rejects_foreign_files_with_clear_errors() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("bad");
        let write = |bytes: &[u8], mode: u32| {
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let expect = |what: &str| {
            let err = AckChannel::open(&path).unwrap_err().to_string();
            assert!(err.contains(what), "expected {what:?} in {err:?}");
        };
        write(&[0; 16], 0o600);
        expect("needs 16512");
        write(&vec![0; FILE_SIZE], 0o600);
        expect("not an ack channel (magic 0x0000000000000000");
        let mut old = vec![0; FILE_SIZE];
        old[..8].copy_from_slice(b"ZCACKS01");
        write(&old, 0o600);
        expect("an ack ring of an older zerocast");
        let mut other = vec![0; FILE_SIZE];
        other[..8].copy_from_slice(b"ZCACKTAB");
        other[8..12].copy_from_slice(&2u32.to_le_bytes());
        other[12..16].copy_from_slice(&64u32.to_le_bytes());
        write(&other, 0o600);
        expect("layout v2 with 64 entries");
        // A good file, cut short.
        let _ = std::fs::remove_file(&path);
        drop(AckChannel::open_or_create(&path).unwrap());
        let bytes = std::fs::read(&path).unwrap();
        write(&bytes[..FILE_SIZE - 64], 0o600);
        expect(&format!(
            "is {} bytes, its header needs {FILE_SIZE}",
            FILE_SIZE - 64
        ));
        write(&bytes, 0o666);
        expect("mode 666 lets group or others write acks");
        std::fs::remove_file(&path).unwrap();
    }

    /// An acker of another pid namespace (a container sharing `/dev/shm`)
    /// judged this namespace's ackers by their pids in its own and could
    /// take a live acker's entry for a dead one's (two processes acking
    /// under one id, or a claim taken back mid-write). Now the channel
    /// records its users' pid namespace and each holds a lock on it: a
    /// process of another namespace is refused while any of them maps it,
    /// and takes it over once none does.
    #[test]
    fn regression_an_acker_of_another_pid_namespace_judged_live_ackers_by_pid() {
        let ours = crate::layout::pid_namespace();
        assert_ne!(ours, 0, "this test needs /proc/self/ns/pid");
        let path = temp_path("pidns");
        let ch = Arc::new(AckChannel::open_or_create(&path).unwrap());
        let sender = ch.register(sid("live")).unwrap();
        sender.ack(3);
        let foreign = ours ^ 0x5a5a;
        ch.header().pid_namespace.store(foreign, Ordering::Relaxed);
        match AckChannel::open_or_create(&path) {
            Err(Error::ForeignPidNamespace {
                theirs, ours: o, ..
            }) => assert_eq!((theirs, o), (foreign, ours)),
            other => panic!("an ack channel of another pid namespace in use: {other:?}"),
        }
        assert_eq!(ch.header().pid_namespace.load(Ordering::Relaxed), foreign);
        drop(sender);
        drop(ch);
        let ch = AckChannel::open(&path).unwrap();
        assert_eq!(ch.header().pid_namespace.load(Ordering::Relaxed), ours);
        assert_eq!(ch.acked_up_to(&sid("live")), 4, "the acks survive");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn created_with_mode_600() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("mode");
        drop(AckChannel::open_or_create(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&path).unwrap();
    }

    /// The ack channel was sized with `set_len` (a sparse file): on a full
    /// /dev/shm a process's first store into an entry was a SIGBUS instead
    /// of an error at creation (the counters table had been fixed alone;
    /// both now build through `shm_file::create`).
    #[test]
    fn regression_the_ack_channel_reserves_its_pages_when_created() {
        use std::os::unix::fs::MetadataExt;
        let path = temp_path("reserve");
        let _ = std::fs::remove_file(&path);
        drop(AckChannel::open_or_create(&path).unwrap());
        let blocks = std::fs::metadata(&path).unwrap().blocks();
        std::fs::remove_file(&path).unwrap();
        assert!(
            blocks * 512 >= FILE_SIZE as u64,
            "{blocks} blocks of 512 bytes reserved for {FILE_SIZE} bytes"
        );
    }

    /// A symbolic link at an ack channel's path was followed to whatever
    /// file it named (segments and the counters table refuse links).
    #[test]
    fn regression_an_ack_channel_symlink_is_refused() {
        let real = temp_path("linktarget");
        let link = temp_path("link");
        let _ = std::fs::remove_file(&real);
        let _ = std::fs::remove_file(&link);
        drop(AckChannel::open_or_create(&real).unwrap());
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let opened = AckChannel::open(&link).map(|_| ());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&real).unwrap();
        let e = opened.unwrap_err().to_string();
        assert!(e.contains(&*link.to_string_lossy()), "{e}");
    }
}
