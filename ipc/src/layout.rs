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
/// part of the sequence).
pub const LAYOUT_VERSION: u32 = 3;
/// Subscriber slots per topic.
pub const MAX_SUBSCRIBERS: usize = 1000;
/// Publisher slots per topic.
pub const MAX_PUBLISHERS: usize = 10;
/// Bytes of a publisher or subscriber name.
pub const NAME_LEN: usize = 32;

/// One publisher's entry in the segment header.
#[repr(C, align(64))]
pub struct PublisherEntry {
    /// Pid of the owning process; 0 when free.
    pub pid: AtomicU32,
    /// Number of sequences in flight from `inflight - 1` on (a batch claims
    /// several); meaningful only while `inflight` is not 0.
    pub inflight_len: AtomicU32,
    /// `seq + 1` of the first sequence claimed but not yet committed; 0 when
    /// none. Lets a supervisor find what a dead publisher was writing.
    pub inflight: AtomicU64,
    /// Frames published through this entry.
    pub published: AtomicU64,
    /// Time of the last heartbeat, ns since the Unix epoch.
    pub heartbeat_ns: AtomicU64,
    /// Name, NUL-padded UTF-8, as four words.
    pub name: [AtomicU64; NAME_LEN / 8],
}

impl PublisherEntry {
    /// The sequences this publisher has claimed and not yet committed, if
    /// any. Relaxed loads: only read by a supervisor after the owner died or
    /// after the sequences stalled far longer than the owner's stores take.
    pub fn inflight_range(&self) -> Option<core::ops::Range<u64>> {
        // Relaxed: see above.
        let inflight = self.inflight.load(Ordering::Relaxed);
        // Relaxed: see above.
        let len = u64::from(self.inflight_len.load(Ordering::Relaxed).max(1));
        (inflight != 0).then(|| inflight - 1..inflight - 1 + len)
    }
}

/// One subscriber's entry in the segment header.
#[repr(C, align(64))]
pub struct SubscriberEntry {
    /// Pid of the owning process; 0 when free.
    pub pid: AtomicU32,
    /// Index + 1 of the gating slot it holds in the ring; 0 if not gating.
    pub gating: AtomicU32,
    /// Next sequence it will read.
    pub cursor: AtomicU64,
    /// Last time it read or polled, ns since the Unix epoch.
    pub last_seen_ns: AtomicU64,
    /// Frames it lost to lapping, in total.
    pub lagged: AtomicU64,
    /// Name, NUL-padded UTF-8, as four words.
    pub name: [AtomicU64; NAME_LEN / 8],
}

/// The segment header.
#[repr(C)]
pub struct SegmentHeader {
    /// [`MAGIC`] once the segment is ready; 0 while its creator initialises it.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`] of the creator.
    pub layout_version: u32,
    /// Reserved.
    pub _reserved: u32,
    /// [`LAYOUT_HASH`] of the creator.
    pub layout_hash: u64,
    /// Payload words per ring slot.
    pub slot_payload_words: u64,
    /// Ring capacity (slots).
    pub capacity: u64,
    /// Pid of the creator.
    pub creator_pid: u32,
    /// Reserved.
    pub _reserved2: u32,
    /// Creation time, ns since the Unix epoch.
    pub creation_ns: u64,
    /// Byte offset of the ring from the start of the segment.
    pub ring_offset: u64,
    /// Size of the segment file in bytes.
    pub total_size: u64,
    /// Futex word: bumped by a publisher that wakes sleeping subscribers.
    pub wake_seq: CachePadded<AtomicU32>,
    /// Subscribers asleep (or about to sleep) on `wake_seq`.
    pub sleepers: CachePadded<AtomicU32>,
    /// Publisher table.
    pub publishers: [PublisherEntry; MAX_PUBLISHERS],
    /// Subscriber table.
    pub subscribers: [SubscriberEntry; MAX_SUBSCRIBERS],
}

const _: () = assert!(size_of::<PublisherEntry>() == 64);
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
    let parts: [u64; 16] = [
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
    ];
    let mut hash = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        hash = fnv1a(hash, parts[i]);
        i += 1;
    }
    hash
};

/// Writes `name` (truncated to [`NAME_LEN`] bytes on a char boundary) into
/// four atomic words.
pub fn store_name(words: &[AtomicU64; NAME_LEN / 8], name: &str) {
    let mut end = name.len().min(NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
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

/// Whether process `pid` exists (it may be a zombie).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
