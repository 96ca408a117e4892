//! The shared-memory layout of a topic segment.
//!
//! ```text
//! offset 0            SegmentHeader (magic, layout, sizes, pids, wake word,
//!                     publisher table, subscriber table)
//! ring_offset         BroadcastHeader, then capacity slots (zerocast-core)
//! ```
//!
//! Everything is `#[repr(C)]` plain data: integers and atomics, no pointers.
//! The creator fills the header, initialises the ring, and stores `magic`
//! last with Release; openers load it with Acquire before reading anything
//! else, then compare the layout version and hash with their own.

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use zerocast_core::broadcast::{BroadcastHeader, MAX_GATING};
use zerocast_core::frame::{
    AccountUpdate, Ack, FrameHeader, Heartbeat, MarketL2, TradeEvent, MAX_FRAME_WORDS,
};
use zerocast_core::CachePadded;

/// `ZEROCAST` in little-endian ASCII.
pub const MAGIC: u64 = u64::from_le_bytes(*b"ZEROCAST");
/// Bumped on any change to the segment or frame layout, or to the ring's
/// protocol. 2: slots change hands in strict lap order with plain stamp
/// stores (a version-1 process would still compare-and-swap them), and
/// publishers record the length of an in-flight batch. 3: the ring's claim
/// word carries a registration generation in bits 56..63 and a slot stamp a
/// lost-laps count in bits 58..64 (a version-2 process would read both as
/// part of the sequence); table entries and the creator are owner words (pid
/// and process start time), subscriber entries carry flags (durable holds),
/// names are 24 bytes, a tombstone names its taker ([`tombstone`]), the
/// header tags each ring gating slot with the subscriber entry that owns it
/// (`gating_owners`) and has a lock for durable names (`durable_lock`).
/// 4: publisher entries are two cache lines (128 bytes); the second holds
/// the gating-wait counters (`gating_waits`, `gating_wait_ns`). The header
/// records the topic's producer mode (`producers`, formerly reserved): a
/// version-3 process would claim a single-producer ring with `fetch_add` and
/// register gating consumers through its claim word.
/// 5: a publisher marks its entry's in-flight word "claiming" (bit 63, with
/// the ring head it read) before it claims ([`INFLIGHT_CLAIMING`]); a
/// version-4 supervisor would read the mark as a range listing nothing and
/// could declare a live claimer's sequence lost.
/// 6: the header records the pid namespace its users run in
/// (`pid_namespace`, formerly padding), and every process that maps the
/// segment holds a shared `flock` on it for as long as it does, so that a
/// process of another pid namespace is refused while any user lives (it
/// would judge their pids, and take them for dead). A version-5 process
/// would hold no lock, and a process of another namespace could then take
/// its segment over.
///
/// Every layout from 6 on keeps three things where they are, so that a
/// build can tell another build's segment and whether it is in use: the
/// magic word at offset 0, `layout_version` and `layout_hash` where
/// [`SegmentHeader`] has them, and the shared `flock` of every process that
/// maps the segment (`zerocast stat --remove-other-layouts` removes a
/// segment of another layout from 6 on only while no process holds it).
pub const LAYOUT_VERSION: u32 = 6;

/// The first layout whose processes lock the segments they map (see
/// [`LAYOUT_VERSION`]): a segment of an older one may be in use with no
/// lock held, so no tool removes it.
pub const FIRST_LOCKED_LAYOUT: u32 = 6;

/// [`SegmentHeader::producers`]: any number of publishers (up to
/// [`MAX_PUBLISHERS`]) claim with one atomic `fetch_add`.
pub const PRODUCERS_MANY: u32 = 0;
/// [`SegmentHeader::producers`]: one publisher at a time claims by plain
/// store (the ring's single-producer mode).
pub const PRODUCERS_SINGLE: u32 = 1;
/// Subscriber slots per topic.
pub const MAX_SUBSCRIBERS: usize = 1000;
/// Publisher slots per topic.
pub const MAX_PUBLISHERS: usize = 10;
/// Bytes of a publisher or subscriber name (longer names are cut to this
/// on a char boundary; 24 keeps each table entry one 64-byte cache line
/// now that the owner word is 8 bytes).
pub const NAME_LEN: usize = 24;

/// Owner word of a free table entry.
pub const FREE: u64 = 0;
/// Bit 31 of an owner word (the top bit of its pid half): set in a
/// tombstone. Linux pids are below 2^22, so no process's owner word has it.
pub const TOMB_BIT: u64 = 1 << 31;
/// A tombstone whose taker is unknown (see [`tombstone`]): it counts as a
/// dead taker's, so the next reaper takes it over.
pub const TOMBSTONE: u64 = u64::MAX;
/// Owner word of an entry taken by the process whose owner word is `taker`
/// (a reaper, a durable subscriber adopting an orphaned hold, or
/// `release_durable`): nobody registers into it, and only the taker writes
/// the entry until it stores [`FREE`], [`ORPHAN`] or its own owner word.
/// If the taker dies first, the next reaper sees the dead taker
/// ([`tombstone_taker`]), takes the tombstone over and redoes the reap
/// (every reap step is idempotent), so a killed taker wedges nothing.
pub fn tombstone(taker: u64) -> u64 {
    taker | TOMB_BIT
}

/// Whether `word` is a tombstone ([`tombstone`], [`TOMBSTONE`]).
pub fn is_tombstone(word: u64) -> bool {
    word != ORPHAN && word & TOMB_BIT != 0
}

/// The owner word of the taker of tombstone `word` ([`FREE`] for
/// [`TOMBSTONE`], whose taker is unknown and never alive).
pub fn tombstone_taker(word: u64) -> u64 {
    if word == TOMBSTONE {
        FREE
    } else {
        word & !TOMB_BIT
    }
}
/// Owner word of a durable subscriber entry whose process is gone: the
/// entry keeps its name and its gating hold until a durable subscriber of
/// the same name takes it over or [`Segment::release_durable`] drops it.
///
/// [`Segment::release_durable`]: crate::Segment::release_durable
pub const ORPHAN: u64 = u64::MAX - 1;

/// [`SegmentHeader::gating_owners`] of a ring gating slot that no
/// subscriber entry owns.
pub const NO_OWNER: u64 = 0;

/// [`SubscriberEntry::flags`]: the entry is a durable registration.
pub const FLAG_DURABLE: u32 = 1;

/// One publisher's entry in the segment header.
#[repr(C, align(64))]
pub struct PublisherEntry {
    /// Owner word of the owning process ([`owner_word`]: pid and start
    /// time); [`FREE`] when free, [`TOMBSTONE`] while a reaper frees it.
    /// Registration claims it with a compare-and-swap from `FREE`, a reaper
    /// with a compare-and-swap from the dead owner's word, so a reaper can
    /// never take an entry that was freed and registered again.
    pub pid: AtomicU64,
    /// Number of sequences in flight from `inflight - 1` on (a batch claims
    /// several); meaningful only while `inflight` is not 0.
    pub inflight_len: AtomicU32,
    /// `seq + 1` of the first sequence claimed but not yet committed; 0 when
    /// none; [`INFLIGHT_CLAIMING`] with the head the owner read while it is
    /// claiming (stored before the claim, replaced by the sequence right
    /// after it). Lets a supervisor find what a dead publisher was writing,
    /// and tells it from which sequence on a live one may hold one it has
    /// not listed yet. Whoever frees the entry (a reaper, or the owner's
    /// drop) clears it ([`clear_for_next_owner`](Self::clear_for_next_owner))
    /// first, and a supervisor reads it after the owner word, so a live
    /// owner's word is never read with a predecessor's record.
    pub inflight: AtomicU64,
    /// Frames published through this entry.
    pub published: AtomicU64,
    /// Time of the last heartbeat, ns since the Unix epoch; 0 until the
    /// first.
    pub heartbeat_ns: AtomicU64,
    /// Name, NUL-padded UTF-8, as three words.
    pub name: [AtomicU64; NAME_LEN / 8],
    /// Publishes (single or batch) that found the ring full on a gating
    /// subscriber and had to wait for it (or, under
    /// [`GatingPolicy::Fail`](crate::GatingPolicy::Fail), gave up at
    /// once). Written only by the owner, on the wait path, with plain
    /// Relaxed stores; in the entry's second cache line, away from the
    /// words every publish writes.
    pub gating_waits: AtomicU64,
    /// Nanoseconds those publishes spent waiting for room, in total (each
    /// wait from its first turn to its last: not the write after it).
    pub gating_wait_ns: AtomicU64,
    /// Reserved (zero).
    pub _reserved: [AtomicU64; 6],
}

/// Flag of [`PublisherEntry::inflight`] while its owner is claiming: the
/// word is `INFLIGHT_CLAIMING | from`, where `from` is the ring's head the
/// owner read before storing it. Stored before the claim (a Release store,
/// see `ShmPublisher`'s `mark_claiming`), so that a supervisor who sees a
/// sequence claimed also sees, in the entry of the publisher that claimed
/// it, this marker or what came after it (the sequence, or 0 once it is
/// committed). A live publisher in this state may hold any sequence from
/// `from` on that it has not listed yet (its claim comes after its read
/// of the head, so it takes nothing below `from`): none of those is
/// declared lost (a publisher preempted between its claim and its record,
/// for longer than a stall bound, is not a dead one), while an older
/// sequence still is (a claimer stopped before its claim holds up no
/// declaration of a dead publisher's older claim). A dead one's marker
/// lists nothing: a sequence it claimed is resolved by the stall check
/// once its entry is reaped. Never part of a listed sequence: sequences
/// stay below 2^56.
pub const INFLIGHT_CLAIMING: u64 = 1 << 63;

impl PublisherEntry {
    /// The sequences this publisher has claimed and not yet committed, if
    /// any (`None` also while it is claiming: see [`claiming`](Self::claiming)).
    /// Read by a supervisor after the owner died or after the sequences
    /// stalled far longer than the owner's stores take.
    pub fn inflight_range(&self) -> Option<core::ops::Range<u64>> {
        self.inflight_state().1
    }

    /// If the owner is claiming ([`INFLIGHT_CLAIMING`]), the least
    /// sequence it may hold unlisted. A hint: read by a supervisor about
    /// to declare an unlisted sequence lost, which must not if a live
    /// owner is claiming from that sequence or an older one.
    pub fn claiming(&self) -> Option<u64> {
        self.inflight_state().0
    }

    /// Clears what the entry's last owner left in it (its in-flight
    /// record, counts, heartbeat time and name), by whoever holds it (its
    /// owner, or a reaper under its tombstone), right before the Release
    /// store of [`FREE`] that frees it. Relaxed stores: published by that
    /// FREE store. The next owner's registration CAS reads that FREE (or a
    /// later one, by an owner whose CAS read it), so a reader whose Acquire
    /// load of the owner word reads the next owner's word synchronises
    /// with the FREE store (the CAS is in its release sequence, and is
    /// Release itself) and then reads these clears or later values, never
    /// the last owner's: a supervisor does not hold up a declaration for a
    /// live owner with a predecessor's claiming marker (nor name its
    /// listing a live write), and a monitor (`stat`, `health`) does not
    /// take a predecessor's count or heartbeat for the new owner's. (The
    /// new owner also stores them after its registration, its own reset.)
    pub fn clear_for_next_owner(&self) {
        // Relaxed, all: published by the Release FREE store (above).
        self.inflight.store(0, Ordering::Relaxed);
        // 1: a single publish's length, the state between batches.
        self.inflight_len.store(1, Ordering::Relaxed);
        self.published.store(0, Ordering::Relaxed);
        self.heartbeat_ns.store(0, Ordering::Relaxed);
        self.gating_waits.store(0, Ordering::Relaxed);
        self.gating_wait_ns.store(0, Ordering::Relaxed);
        for w in &self.name {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// One read of the in-flight record: where the owner is claiming from
    /// (if it is), and the range it lists.
    pub fn inflight_state(&self) -> (Option<u64>, Option<core::ops::Range<u64>>) {
        // Acquire: pairs with the Release stores of `inflight` in the
        // publisher (`mark_claiming`, `record_inflight`, the single
        // publish's record, the clears after a commit): the length read
        // below is the one stored with this start, and a reader that sees
        // a value stored after a commit also sees that commit (so a
        // declaration it then attempts finds the sequence committed).
        let inflight = self.inflight.load(Ordering::Acquire);
        if inflight & INFLIGHT_CLAIMING != 0 {
            return (Some(inflight & !INFLIGHT_CLAIMING), None);
        }
        // Relaxed: ordered by the Acquire load above.
        let len = u64::from(self.inflight_len.load(Ordering::Relaxed).max(1));
        // Saturating: the words are shared memory, any value may be there.
        (
            None,
            (inflight != 0).then(|| inflight - 1..(inflight - 1).saturating_add(len)),
        )
    }
}

/// One subscriber's entry in the segment header.
#[repr(C, align(64))]
pub struct SubscriberEntry {
    /// Owner word, as [`PublisherEntry::pid`]; also [`ORPHAN`] for a durable
    /// registration whose process is gone.
    pub pid: AtomicU64,
    /// Index + 1 of the gating slot it holds in the ring; 0 if not gating.
    /// A hint for monitors: what a slot's owner is, is
    /// [`SegmentHeader::gating_owners`].
    pub gating: AtomicU32,
    /// [`FLAG_DURABLE`] or 0. Written by the owner before it publishes the
    /// entry with a Release store of its owner word (or by the taker of its
    /// tombstone); read after an Acquire load of `pid`.
    pub flags: AtomicU32,
    /// Next sequence it will read.
    pub cursor: AtomicU64,
    /// Last time it read or polled, ns since the Unix epoch: refreshed
    /// every 256 calls (frames received and empty polls alike) and before
    /// every sleep (a clock read per receive would cost more than the
    /// receive), so a subscriber that makes fewer than 256 calls in a
    /// while can look older than it is.
    pub last_seen_ns: AtomicU64,
    /// Frames it lost to lapping, in total.
    pub lagged: AtomicU64,
    /// Name, NUL-padded UTF-8, as three words.
    pub name: [AtomicU64; NAME_LEN / 8],
}

/// The segment header.
#[repr(C)]
pub struct SegmentHeader {
    /// [`MAGIC`] once the segment is ready; 0 while its creator initialises it.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`] of the creator.
    pub layout_version: u32,
    /// Producer mode of the topic, fixed at creation: [`PRODUCERS_MANY`] or
    /// [`PRODUCERS_SINGLE`]. Every opener follows it.
    pub producers: u32,
    /// [`LAYOUT_HASH`] of the creator.
    pub layout_hash: u64,
    /// Payload words per ring slot.
    pub slot_payload_words: u64,
    /// Ring capacity (slots).
    pub capacity: u64,
    /// Owner word ([`owner_word`]) of the creator.
    pub creator: u64,
    /// Creation time, ns since the Unix epoch.
    pub creation_ns: u64,
    /// Byte offset of the ring from the start of the segment.
    pub ring_offset: u64,
    /// Size of the segment file in bytes.
    pub total_size: u64,
    /// The pid namespace of the segment's users ([`pid_namespace`]), or 0
    /// when its creator could not tell. Written by the creator, and by a
    /// process of another namespace that takes over a segment nobody uses
    /// any more (see `Segment::open`).
    pub pid_namespace: AtomicU64,
    /// Futex word: bumped by a publisher that wakes sleeping subscribers.
    pub wake_seq: CachePadded<AtomicU32>,
    /// Subscribers asleep (or about to sleep) on `wake_seq`.
    pub sleepers: CachePadded<AtomicU32>,
    /// Owner of each ring gating slot: index + 1 of the subscriber entry
    /// that holds it, or [`NO_OWNER`]. A subscriber claims the tag (a
    /// compare-and-swap from `NO_OWNER`) before it takes the ring slot and
    /// clears it (a compare-and-swap from its own tag) after freeing the
    /// ring slot, so while a tag names an entry no other subscriber can
    /// take that ring slot. Only the holder of the named entry (its owner,
    /// or the taker of its tombstone) changes a tag that names it: nobody
    /// ever frees a ring slot that another entry holds.
    pub gating_owners: [AtomicU64; MAX_GATING],
    /// Owner word of the process registering or adopting a durable
    /// subscriber ([`FREE`] when none), so that durable names are unique;
    /// taken over from a dead owner.
    pub durable_lock: AtomicU64,
    /// Publisher table.
    pub publishers: [PublisherEntry; MAX_PUBLISHERS],
    /// Subscriber table.
    pub subscribers: [SubscriberEntry; MAX_SUBSCRIBERS],
}

const _: () = assert!(size_of::<PublisherEntry>() == 128);
const _: () = assert!(size_of::<SubscriberEntry>() == 64);
const _: () = assert!(align_of::<SegmentHeader>() <= 128);

/// Byte offset of the ring inside a segment.
pub const RING_OFFSET: usize = size_of::<SegmentHeader>().div_ceil(128) * 128;

const fn fnv1a(mut hash: u64, value: u64) -> u64 {
    let bytes = value.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Hash of every size and constant the segment and frame layouts depend on.
/// Two builds with different layouts get different hashes.
pub const LAYOUT_HASH: u64 = {
    let parts: [u64; 22] = [
        LAYOUT_VERSION as u64,
        size_of::<FrameHeader>() as u64,
        size_of::<TradeEvent>() as u64,
        size_of::<AccountUpdate>() as u64,
        size_of::<MarketL2>() as u64,
        size_of::<Heartbeat>() as u64,
        size_of::<Ack>() as u64,
        MAX_FRAME_WORDS as u64,
        size_of::<BroadcastHeader>() as u64,
        align_of::<BroadcastHeader>() as u64,
        MAX_GATING as u64,
        size_of::<SegmentHeader>() as u64,
        size_of::<PublisherEntry>() as u64,
        size_of::<SubscriberEntry>() as u64,
        MAX_SUBSCRIBERS as u64,
        MAX_PUBLISHERS as u64,
        NAME_LEN as u64,
        TOMBSTONE,
        ORPHAN,
        FLAG_DURABLE as u64,
        TOMB_BIT,
        NO_OWNER,
    ];
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        hash = fnv1a(hash, parts[i]);
        i += 1;
    }
    hash
};

/// `name` as a table stores it: cut to [`NAME_LEN`] bytes on a char
/// boundary.
pub fn stored_name(name: &str) -> &str {
    let mut end = name.len().min(NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Whether the name in `words` is `name` as [`store_name`] stores it.
pub fn name_is(words: &[AtomicU64; NAME_LEN / 8], name: &str) -> bool {
    load_name(words) == stored_name(name)
}

/// Writes `name` (truncated to [`NAME_LEN`] bytes on a char boundary) into
/// the name's atomic words.
pub fn store_name(words: &[AtomicU64; NAME_LEN / 8], name: &str) {
    let end = stored_name(name).len();
    let mut bytes = [0u8; NAME_LEN];
    bytes[..end].copy_from_slice(&name.as_bytes()[..end]);
    for (w, chunk) in words.iter().zip(bytes.chunks_exact(8)) {
        // Relaxed: published by the Release store of the entry's pid.
        w.store(
            u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

/// Reads a name written by [`store_name`].
pub fn load_name(words: &[AtomicU64; NAME_LEN / 8]) -> String {
    let mut bytes = [0u8; NAME_LEN];
    for (w, chunk) in words.iter().zip(bytes.chunks_exact_mut(8)) {
        // Relaxed: ordered after the Acquire load of the entry's pid.
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The owner word of process `pid` started at `start` (clock ticks since
/// boot, `/proc/<pid>/stat` field 22): the pid in the low 32 bits, the low
/// 32 bits of the start time in the high ones. Two processes that share a
/// pid (one reused the other's) have different words unless they started
/// in the same tick modulo 2^32 ticks (about 497 days at 100 Hz).
pub fn owner_word(pid: u32, start: u64) -> u64 {
    u64::from(pid) | (start << 32)
}

/// The pid and the (truncated) start time of an owner word.
pub fn owner_parts(word: u64) -> (u32, u64) {
    (word as u32, word >> 32)
}

/// The pid of an owner word (0 for [`FREE`], [`ORPHAN`] and tombstones).
pub fn owner_pid(word: u64) -> u32 {
    if is_tombstone(word) || word == ORPHAN {
        0
    } else {
        word as u32
    }
}

/// What `/proc/<pid>/stat` says about a process.
enum ProcStat {
    /// Its state and start time.
    Found(u8, u64),
    /// No such process: the file does not exist (`ENOENT`, `ESRCH`), or
    /// the pid is out of range.
    Gone,
    /// The file could not be read or parsed for another reason (`EMFILE`,
    /// `ENFILE`, `ENOMEM`, `EACCES`, no procfs ...): nothing is known.
    Unknown,
}

/// State and start time of process `pid` from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> ProcStat {
    if pid == 0 || pid > i32::MAX as u32 {
        return ProcStat::Gone;
    }
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text,
        // Only these say the process does not exist; anything else (fds or
        // memory exhausted) is a failure of ours, not a death of theirs.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            return ProcStat::Gone
        }
        Err(_) => return ProcStat::Unknown,
    };
    parse_stat(&text).map_or(ProcStat::Unknown, |(state, start)| {
        ProcStat::Found(state, start)
    })
}

/// State (field 3) and start time (field 22) from the text of a
/// `/proc/<pid>/stat` file.
fn parse_stat(text: &str) -> Option<(u8, u64)> {
    // The command name (field 2) is in parentheses and may contain spaces
    // and parentheses: the fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3: the state.
    let state = *fields.next()?.as_bytes().first()?;
    // Field 22: the start time, 19 fields after the state.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The owner word of process `pid` as it is now, if `/proc` shows it (a
/// zombie still has one).
pub fn owner_of(pid: u32) -> Option<u64> {
    match proc_stat(pid) {
        ProcStat::Found(_, start) => Some(owner_word(pid, start)),
        ProcStat::Gone | ProcStat::Unknown => None,
    }
}

/// The owner word of this process (cached; read again in a forked child,
/// whose pid differs from the cached word's).
pub fn current_owner() -> u64 {
    static OWNER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    // Relaxed: a cache of a value every thread computes alike.
    let cached = OWNER.load(Ordering::Relaxed);
    if cached != 0 && owner_parts(cached).0 == pid {
        return cached;
    }
    match owner_of(pid) {
        Some(word) => {
            // Relaxed: as above.
            OWNER.store(word, Ordering::Relaxed);
            word
        }
        // Without /proc (or with it unreadable just now: fds exhausted) the
        // start time is unknown: 0, and liveness falls back to the pid
        // alone (see `owner_alive`). Not cached: a later call may read it.
        None => owner_word(pid, 0),
    }
}

/// Whether process `pid` exists by `kill(pid, 0)`: cannot tell zombies or
/// reused pids.
fn kill_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This process's pid namespace: the inode number of `/proc/self/ns/pid`
/// (what `readlink` shows as `pid:[N]`), the same for every process of the
/// namespace and different between namespaces that exist at the same time;
/// 0 when it cannot be read (no procfs). Read once: a process never leaves
/// its pid namespace.
pub fn pid_namespace() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
    })
}

/// Whether the process that owns `word` is alive: the one liveness test of
/// the workspace. Alive means `/proc/<pid>/stat` exists, its state is not
/// zombie (`Z`) or dead (`X`), and its start time is the one recorded in
/// the word (so a reused pid is a different process). [`FREE`],
/// [`ORPHAN`] and tombstones ([`is_tombstone`]) are not processes: never
/// alive.
///
/// Dead is only ever concluded from the process's absence (`ENOENT` or
/// `ESRCH` from `/proc`, `ESRCH` from `kill`) or from a mismatching state
/// or start time: where `/proc/<pid>/stat` cannot be read for another
/// reason (no procfs, `hidepid`, file descriptors or memory exhausted), the
/// test falls back to `kill(pid, 0)`, which cannot tell zombies or reused
/// pids but never calls a live process dead. Processes in different pid
/// namespaces see different pids, so this test means something only
/// within one: a segment refuses a process of another pid namespace while
/// any process uses it ([`Error::ForeignPidNamespace`](crate::Error::ForeignPidNamespace)).
pub fn owner_alive(word: u64) -> bool {
    if word == FREE || word == ORPHAN || is_tombstone(word) {
        return false;
    }
    let (pid, start) = owner_parts(word);
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match proc_stat(pid) {
        ProcStat::Found(state, now_start) => {
            state != b'Z' && state != b'X' && (start == 0 || (now_start & 0xffff_ffff) == start)
        }
        // With procfs mounted and showing us, a missing file is a missing
        // process.
        ProcStat::Gone if std::path::Path::new("/proc/self/stat").exists() => false,
        ProcStat::Gone | ProcStat::Unknown => kill_alive(pid),
    }
}

/// Nanoseconds since the Unix epoch on `CLOCK_REALTIME`, the clock every
/// frame timestamp uses.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
