//! Broadcast ring: many producers, any number of independent consumers,
//! overwriting, never blocking a producer (unless a gating consumer asks it
//! to).
//!
//! # Layout
//!
//! A [`BroadcastHeader`] (claim counter, gating table) followed by `capacity`
//! slots. A slot is one stamp word followed by `payload_words` words, padded to
//! a multiple of 64 bytes so that neighbouring slots never share a cache line.
//! Payloads are copied in and out through `AtomicU64` words, which compile to
//! plain moves on x86-64 and aarch64 and make concurrent overwrites defined
//! behaviour (Miri and loom accept them).
//!
//! # The algorithm
//!
//! **Claim.** A producer takes sequence `s` with one `fetch_add` on the claim
//! counter (wait-free; a single-producer ring uses a plain store instead,
//! see "Single-producer mode"). While any gating consumer is registered, producers
//! claim with a compare-and-swap instead, after checking that `s` does not
//! overwrite a slot a gating consumer still needs (lock-free); when the last
//! one leaves, claims are wait-free again.
//!
//! **Stamp.** Each slot's stamp is `seq << 2 | state`, state one of `WRITING`,
//! `COMMITTED`, `LOST`; 0 means never written. Its top six bits count laps
//! after `seq` that are lost without a stamp of their own (a claim given up
//! while the slot still held a frame someone may need; see "Gating
//! consumers"); they are 0 on every ordinary stamp. Slots change hands in strict
//! lap order: the producer of `s` waits until the stamp shows the previous
//! lap `s - capacity` committed or lost, then owns the slot alone. It stores
//! `WRITING(s)`, copies the payload, and stores `COMMITTED(s)`: two plain
//! stores, no locked instruction on the line consumers poll. This is a
//! seqlock whose "version" is the sequence itself, so a reader can tell "not
//! yet written", "being written", "written for s" and "overwritten by a later
//! lap" apart from one load.
//!
//! **In place.** A producer may also hold the slot between the two stores
//! and store the payload itself, word by word ([`Claim::begin_write`],
//! [`SlotWrite`]): the ipc layer's loan archives a body straight into the
//! slot that way. A slot write dropped without its commit stamps
//! `LOST(seq)` (by compare-and-swap from its own `WRITING(seq)`, so that a
//! later lap that took the slot after a supervisor's declaration keeps its
//! stamp).
//!
//! **Read.** A consumer wanting `next` loads the stamp (Acquire), copies the
//! payload, issues an Acquire fence and reloads the stamp. Equal stamps of
//! `COMMITTED(next)` mean the copy is intact; a later sequence means the
//! consumer was lapped: it gets [`TryRecvError::Lagged`] with the exact number
//! of sequences it skips, and resumes at the oldest sequence still in the ring.
//! It never returns a torn or stale payload.
//!
//! **Crashed producers.** A producer that dies between claim and commit leaves
//! its sequence claimed but never committed; consumers see
//! [`TryRecvError::Pending`] (or `Empty` with [`Broadcast::is_pending`] true).
//! A supervisor that knows the producer is dead (the ipc layer checks its
//! pid) calls [`Broadcast::declare_lost`], after which consumers see
//! [`TryRecvError::Lost`], a gap of exactly one, and the slot passes to the
//! next lap. A declaration before the write started leaves the previous
//! lap's frame in the slot, readable (as a lost lap counted on its stamp).
//! Only the lap right after a finished one can be declared, just as only it
//! can write.
//!
//! Declaring a producer that is in fact alive breaks the contract: if the
//! declaration lands before its write starts, its commit fails with
//! [`PublishError::DeclaredLost`] and nothing changes; if it lands inside the
//! write window (two stores and a copy), the frame may still be delivered
//! after consumers were told it was lost, and if the ring also laps the slot
//! during that window the next lap's frame may be torn. There is no undefined
//! behaviour either way. The ipc layer only declares sequences whose owner's
//! pid is gone, or that stayed claimed past its stall bound while no live
//! publisher lists them in flight or is claiming from them or earlier (a
//! publisher marks its entry, with the head it read, before it claims: one
//! preempted between its claim and its record is not taken for a dead one,
//! however long the preemption).
//!
//! **Gating consumers.** Up to [`MAX_GATING`] consumers register a cursor in
//! the header; a producer never claims a sequence whose slot still holds one
//! of those consumers has not released. [`Broadcast::try_publish`] returns
//! [`PublishError::Full`] instead. Each registration changes the claim word
//! (a generation count beside the sequence), so a producer's checked claim
//! based on a read from before it fails and re-checks. A registration
//! while no other gating consumer is registered (the first, or the first
//! after the last one left) can race a producer already past its check for
//! gating (it read the claim word before, and claims with `fetch_add`
//! after): that claim waits while the caller's `keep_waiting` allows, and is then given
//! up, its sequences reading as [`TryRecvError::Lost`] while the frames in
//! their slots stay readable; the caller gets `Full`. Such a claim is taken
//! before it waits, so a supervised caller records it in flight first
//! ([`Broadcast::claim_batch_wait_with`]). Producers cache the slowest cursor and only
//! rescan the table when they reach it, so publish cost stays O(1) in the
//! number of consumers (non-gating consumers are never touched by producers
//! at all).
//!
//! **Single-producer mode.** A ring whose caller guarantees one producer
//! at a time ([`Broadcast::set_single_producer`]) claims with a plain load
//! and a Release store of the claim word instead of the locked
//! `fetch_add`. Registrations then leave the claim word alone (a plain
//! store would overwrite their flag), and the race between a producer's
//! claim and a gating registration is resolved as a store-buffering
//! (Dekker) pair instead: the producer stores its claim, then a barrier,
//! then loads the gating epoch; a registration bumps the epoch, then a
//! barrier, then loads the head. Either the producer sees the new epoch
//! (and checks the new cursor, waiting or giving its claim up as a claim
//! racing a first registration does), or the registration sees the claim
//! in the head it starts from (and the claim overwrites only sequences
//! below that start). The producer's barrier is a `SeqCst` fence, or, when
//! every registration runs a heavy barrier on the producer's CPU
//! (`membarrier`, [`SingleProducer::asymmetric`]), only a compiler fence:
//! then a publish has no locked instruction and no fence at all.
//!
//! # Progress
//!
//! - Publish without gating: wait-free claim, then wait-free write, except
//!   that it waits if the ring has lapped a producer that is still between
//!   its claim and its commit (capacity publishes during one copy: a
//!   descheduled or dead peer), until that commit or a lost declaration.
//!   [`Claim::commit_with`] and [`BatchClaim::commit_with`] report such
//!   a wait, so that a supervising caller can resolve a dead peer. A single
//!   producer never waits.
//! - Publish with gating: lock-free; `Full` while the slowest gating consumer
//!   is a full ring behind (a claim that raced a first registration waits
//!   only while its caller's `keep_waiting` allows, then gives up). A gating consumer that dies holds producers until
//!   its slot is released ([`Broadcast::release_gating_slot`]). When the
//!   last gating consumer leaves (unregisters, or a supervisor releases its
//!   slot), claims go back to the wait-free path.
//! - Receive: wait-free per attempt (one that finds its frame mid-write
//!   pauses a bounded while, about a write's length, before it reports
//!   `Pending`); never blocks a producer.

use core::fmt;

use crossbeam_utils::CachePadded;

pub use crate::storage::LayoutError;
use crate::storage::Storage;
use crate::sync::{fence, light_fence, spin_loop, AtomicU64, Ordering};

/// A gating cursor releases its slots at least every this many frames (and
/// whenever it polls an empty ring).
pub const RELEASE_EVERY: u64 = 64;

/// A receive that finds its slot mid-write pauses this many times, up to
/// [`PENDING_WAITS`] times over, before it reports [`TryRecvError::Pending`].
#[cfg(not(zerocast_loom))]
const PENDING_PAUSES: usize = 8;
#[cfg(not(zerocast_loom))]
const PENDING_WAITS: u32 = 4;
// Under loom a pause is a yield, a scheduling point: one is enough to model.
#[cfg(zerocast_loom)]
const PENDING_PAUSES: usize = 1;
#[cfg(zerocast_loom)]
const PENDING_WAITS: u32 = 1;

/// Most gating consumers a ring can have at once.
pub const MAX_GATING: usize = 16;

/// Bound of the sequence space: the claim word keeps the next sequence in
/// its low 56 bits (above them a registration generation and a flag), and
/// the stamp keeps two state bits below it. The next sequence never passes
/// `MAX_SEQ`, so the largest sequence a ring hands out is `MAX_SEQ - 1`; a
/// claim that would pass it fails with [`PublishError::SequencesExhausted`].
/// About 7.2 * 10^16: 22 years at 100 million frames a second.
pub const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// The unchecked `fetch_add` claim is taken only while this bit of the claim
/// word is clear (the next sequence is below 2^55), so that no claim racing
/// it can carry the sequence into the generation bits: that would take 2^55
/// sequences claimed between one producer's load and its `fetch_add`. Above
/// it, claims take the checked path, which enforces [`MAX_SEQ`] exactly.
const FAST_SEQ_LIMIT: u64 = 1 << (SEQ_BITS - 1);

/// Bits of the claim word that hold the next sequence.
const SEQ_BITS: u32 = 56;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Claim-word registration generation: bits `SEQ_BITS .. 63`, bumped (mod
/// 2^7) by every gating registration. It exists so that a registration
/// *changes* the claim word: a producer's compare-and-swap on a value read
/// before the registration then fails, and its retry sees the registration
/// (see `claim` and `register_gating`).
const GEN_ONE: u64 = 1 << SEQ_BITS;
const GEN_MASK: u64 = ((1 << 63) - 1) & !SEQ_MASK;

/// Claim-word flag: a gating consumer is (or may be) registered, so
/// producers must claim with the checked (CAS) path. Set by every
/// registration; cleared by the last consumer to leave, only if no
/// registration changed the generation meanwhile (see
/// `Broadcast::clear_gated_if_idle`).
const GATED: u64 = 1 << 63;

/// Gating-table entry that no consumer holds.
const FREE: u64 = u64::MAX;

const WRITING: u64 = 1;
const COMMITTED: u64 = 2;
const LOST: u64 = 3;
const NEVER_WRITTEN: u64 = 0;

/// Stamp bits `58..64`: how many laps after the slot's stamped sequence are
/// lost too, without their own stamp (see [`Broadcast::abandon`]). The
/// stamped sequence's payload stays readable; the `k` sequences
/// `seq + capacity, .., seq + k * capacity` read as `Lost`. Sequences stay
/// below 2^56 ([`MAX_SEQ`]), so `seq << 2` never reaches these bits.
const LAPS_SHIFT: u32 = 58;
const LAPS_ONE: u64 = 1 << LAPS_SHIFT;
const LAPS_MASK: u64 = !((1 << LAPS_SHIFT) - 1);
const MAX_LOST_LAPS: u64 = (1 << (64 - LAPS_SHIFT)) - 1;

#[inline(always)]
const fn stamp(seq: u64, state: u64) -> u64 {
    (seq << 2) | state
}
#[inline(always)]
const fn stamp_seq(stamp: u64) -> u64 {
    (stamp & !LAPS_MASK) >> 2
}
#[inline(always)]
const fn lost_laps(stamp: u64) -> u64 {
    stamp >> LAPS_SHIFT
}
#[inline(always)]
const fn stamp_state(stamp: u64) -> u64 {
    stamp & 3
}

/// Words per cache line.
const LINE_WORDS: usize = 8;

/// The shared header of a broadcast ring. Plain data (`#[repr(C)]`, atomics
/// only), so it can live in a shared-memory segment.
#[repr(C)]
pub struct BroadcastHeader {
    /// Next sequence to claim, in `0 ..= MAX_SEQ` (low [`SEQ_BITS`] bits),
    /// the registration generation ([`GEN_MASK`]) and the [`GATED`] flag.
    claim: CachePadded<AtomicU64>,
    /// Bumped by every gating registration, so producers know their cached
    /// minimum cursor may be too high.
    gating_epoch: CachePadded<AtomicU64>,
    /// Slot count, a power of two. Written once by `init`.
    capacity: AtomicU64,
    /// Payload words per slot. Written once by `init`.
    payload_words: AtomicU64,
    /// Gating cursors: every sequence below the cursor is released. `FREE`
    /// when unused.
    gating: [CachePadded<AtomicU64>; MAX_GATING],
}

impl fmt::Debug for BroadcastHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a debugging snapshot; nothing is published with it.
        f.debug_struct("BroadcastHeader")
            .field("claim", &self.claim.load(Ordering::Relaxed))
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .field("payload_words", &self.payload_words.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BroadcastHeader {
    /// A header for a ring not yet initialised.
    #[cfg(not(zerocast_loom))]
    pub const fn new() -> Self {
        Self {
            claim: CachePadded::new(AtomicU64::new(0)),
            gating_epoch: CachePadded::new(AtomicU64::new(0)),
            capacity: AtomicU64::new(0),
            payload_words: AtomicU64::new(0),
            gating: [const { CachePadded::new(AtomicU64::new(FREE)) }; MAX_GATING],
        }
    }

    /// A header for a ring not yet initialised.
    #[cfg(zerocast_loom)]
    pub fn new() -> Self {
        Self {
            claim: CachePadded::new(AtomicU64::new(0)),
            gating_epoch: CachePadded::new(AtomicU64::new(0)),
            capacity: AtomicU64::new(0),
            payload_words: AtomicU64::new(0),
            gating: core::array::from_fn(|_| CachePadded::new(AtomicU64::new(FREE))),
        }
    }
}

impl Default for BroadcastHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a publish did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// A gating consumer has not released the slot this publish would
    /// overwrite. Nothing was published. Nothing was claimed either, except
    /// when this claim raced a first gating registration (one while no other
    /// gating consumer was registered): then the
    /// sequences it had taken read as [`TryRecvError::Lost`].
    Full,
    /// The payload is longer than a slot.
    TooLarge {
        /// Words given.
        len: usize,
        /// Words a slot holds.
        max: usize,
    },
    /// A batch longer than the ring's capacity.
    BatchTooLarge {
        /// Frames given.
        len: usize,
        /// Ring capacity.
        capacity: u64,
    },
    /// A supervisor declared this sequence lost before the commit (it thought
    /// this producer dead). Consumers see the sequence as a gap.
    DeclaredLost(u64),
    /// The claim would take the ring's next sequence past [`MAX_SEQ`] (or
    /// the claim word is corrupt). Nothing was claimed.
    SequencesExhausted,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => {
                f.write_str("ring full: a gating consumer has not released the oldest slot")
            }
            Self::TooLarge { len, max } => {
                write!(f, "payload of {len} words exceeds the slot's {max} words")
            }
            Self::BatchTooLarge { len, capacity } => {
                write!(
                    f,
                    "batch of {len} frames exceeds the ring capacity {capacity}"
                )
            }
            Self::DeclaredLost(s) => {
                write!(
                    f,
                    "sequence {s} was declared lost by a supervisor before commit"
                )
            }
            Self::SequencesExhausted => write!(
                f,
                "sequence space exhausted: the claim would pass {MAX_SEQ} (or the ring's claim word is corrupt)"
            ),
        }
    }
}

/// Why a receive returned no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing published past the cursor yet.
    Empty,
    /// The next sequence is being written by a producer right now. If it stays
    /// so, its producer may be dead: see [`Broadcast::declare_lost`] (and
    /// [`Broadcast::is_pending`] for a claim whose write has not started).
    Pending(u64),
    /// The consumer was lapped: this many sequences were overwritten before it
    /// read them. It now continues from the oldest sequence still in the ring.
    Lagged(u64),
    /// This sequence was declared lost (its producer died mid-write, dropped
    /// its claim, or gave up a claim that raced a first gating
    /// registration). The consumer moves past it: a gap of exactly one.
    Lost(u64),
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no frame published yet"),
            Self::Pending(s) => write!(f, "sequence {s} claimed but not yet committed"),
            Self::Lagged(n) => write!(f, "lagged: {n} frames overwritten before they were read"),
            Self::Lost(s) => write!(f, "sequence {s} was lost (its producer died mid-write)"),
        }
    }
}

/// Result of [`Broadcast::declare_lost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// The sequence is now marked lost.
    Lost,
    /// It was committed after all; nothing changed.
    AlreadyCommitted,
    /// It was already marked lost.
    AlreadyLost,
    /// A later lap already overwrote the slot; nothing changed.
    AlreadyOverwritten,
}

/// Why [`Broadcast::declare_lost`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclareError {
    /// The sequence has not been claimed by any producer.
    NotClaimed(u64),
    /// The slot is being written by an older sequence that is itself stuck;
    /// declare that one first.
    OlderWriterStuck(u64),
}

impl fmt::Display for DeclareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotClaimed(s) => write!(f, "sequence {s} has not been claimed"),
            Self::OlderWriterStuck(s) => {
                write!(
                    f,
                    "slot still being written by older sequence {s}; declare it first"
                )
            }
        }
    }
}

/// Why a gating consumer could not register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatingTableFull;

impl fmt::Display for GatingTableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {MAX_GATING} gating slots are taken")
    }
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The next sequence to be published.
    Newest,
    /// The oldest sequence still in the ring.
    Oldest,
    /// This sequence (if already overwritten, the first receive reports
    /// `Lagged` with the exact count).
    At(u64),
}

/// A consumer's position. Plain local state: any number of cursors can read
/// one ring, and the ring never sees the non-gating ones.
///
/// Not `Clone` (issue 13, item 5): a gating cursor stands for one
/// registration, and a copy would keep publishing positions into the gating
/// slot after the original unregistered (into a free slot, or another
/// consumer's, letting producers overwrite what that one has not read):
///
/// ```compile_fail
/// use zerocast_core::broadcast::{Broadcast, Start};
/// let ring = Broadcast::with_capacity(8, 1).unwrap();
/// let cursor = ring.register_gating(Start::Newest).unwrap();
/// let copy = cursor.clone(); // a second holder of one registration
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct ReadCursor {
    /// Next sequence to read. Private: a gating cursor publishes it to
    /// producers, and moving it backwards would let them overwrite slots
    /// below a position already released (see [`ReadCursor::next`]).
    next: u64,
    /// Index in the gating table, for a gating consumer.
    gating: Option<usize>,
    /// A gating consumer that releases slots itself ([`Broadcast::release`])
    /// instead of on every receive.
    manual_release: bool,
    /// The position last published to the gating table by `try_recv`, or
    /// for an adopted cursor the hold it took over: the cursor is never
    /// published below it (`next` may start below an adopted hold). The
    /// gating slot holds exactly this while the cursor owns it: `release`
    /// and `unregister_gating` change the slot only from this value.
    released: u64,
}

impl ReadCursor {
    /// The next sequence this cursor reads.
    #[inline(always)]
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Makes a gating cursor release slots only when
    /// [`Broadcast::release`] is called, e.g. once what was read is safely
    /// stored elsewhere (a WAL recorder releases after writing to its file).
    pub fn set_manual_release(&mut self, manual: bool) {
        self.manual_release = manual;
    }

    /// Whether this cursor releases only when [`Broadcast::release`] is
    /// called ([`set_manual_release`](Self::set_manual_release)).
    pub fn manual_release(&self) -> bool {
        self.manual_release
    }

    /// The gating-table slot this cursor holds, if it is gating. A gating
    /// cursor whose slot was freed under it (a supervisor's
    /// [`Broadcast::release_gating_slot`] on a live consumer) becomes
    /// non-gating at its next release, and this says `None` from then on.
    pub fn gating_slot(&self) -> Option<usize> {
        self.gating
    }
}

/// A producer's cached view of the slowest gating consumer. One per producer
/// handle; it lets a producer skip the gating table on almost every publish.
#[derive(Debug, Clone)]
pub struct GatingCache {
    min: u64,
    epoch: u64,
}

impl Default for GatingCache {
    fn default() -> Self {
        Self {
            min: 0,
            epoch: u64::MAX,
        }
    }
}

/// How a ring's single producer and its gating registrations order the
/// producer's claim against a registration (see "Single-producer mode" in
/// the module docs, and [`Broadcast::set_single_producer`]).
#[derive(Debug, Clone, Copy)]
pub struct SingleProducer {
    /// Whether the producer may issue only a compiler fence between its
    /// claim and its check of the gating epoch, because every registration's
    /// [`registration_barrier`](Self::registration_barrier) runs a full
    /// memory barrier on every CPU running the producer. False: the
    /// producer issues a `SeqCst` fence.
    pub asymmetric: bool,
    /// Run by a gating registration (in whichever process registers) after
    /// its own `SeqCst` fence, between its epoch bump and its load of the
    /// head: where some producer may be `asymmetric`, it must force a full
    /// barrier on every CPU running that producer
    /// (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` with the producer's
    /// process registered); otherwise a no-op. Returns whether it did: on
    /// `false` the registration is given up (its slot freed, `None`), never
    /// left half-made.
    pub registration_barrier: fn() -> bool,
}

/// A broadcast ring over storage `S`.
pub struct Broadcast<S> {
    storage: S,
    capacity: u64,
    mask: u64,
    stride: usize,
    payload_words: usize,
    /// Set for a single-producer ring (see [`Broadcast::set_single_producer`]).
    single: Option<SingleProducer>,
}

impl<S> fmt::Debug for Broadcast<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("capacity", &self.capacity)
            .field("payload_words", &self.payload_words)
            .finish_non_exhaustive()
    }
}

/// Words of storage one slot takes for `payload_words` of payload: the stamp
/// plus the payload, rounded up to whole cache lines.
pub const fn slot_stride(payload_words: usize) -> usize {
    (1 + payload_words).div_ceil(LINE_WORDS) * LINE_WORDS
}

/// Words of storage a ring of `capacity` slots of `payload_words` needs.
pub const fn words_needed(capacity: usize, payload_words: usize) -> usize {
    capacity * slot_stride(payload_words)
}

#[cfg(feature = "alloc")]
impl Broadcast<crate::storage::Heap<BroadcastHeader, AtomicU64>> {
    /// A heap-backed ring of `capacity` slots (a power of two >= 2) holding up
    /// to `payload_words` words each.
    pub fn with_capacity(capacity: usize, payload_words: usize) -> Result<Self, LayoutError> {
        let storage = crate::storage::Heap::new(
            BroadcastHeader::new(),
            words_needed(capacity, payload_words),
            |_| AtomicU64::new(0),
        );
        Self::init(storage, capacity as u64, payload_words as u64)
    }
}

impl<S> Broadcast<S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    /// Initialises a ring in `storage`: writes the header and clears every
    /// stamp. Only the creator calls this, before anyone else attaches.
    pub fn init(storage: S, capacity: u64, payload_words: u64) -> Result<Self, LayoutError> {
        let ring = Self::layout(storage, capacity, payload_words)?;
        let h = ring.header();
        // Relaxed throughout: nobody else can see the ring yet; whoever shares
        // it (the ipc layer) publishes it with its own Release store.
        h.claim.store(0, Ordering::Relaxed);
        h.gating_epoch.store(0, Ordering::Relaxed);
        h.capacity.store(capacity, Ordering::Relaxed);
        h.payload_words.store(payload_words, Ordering::Relaxed);
        for g in &h.gating {
            g.store(FREE, Ordering::Relaxed);
        }
        for i in 0..ring.capacity {
            // Relaxed: as above, the ring is not shared yet.
            ring.slot(i)[0].store(NEVER_WRITTEN, Ordering::Relaxed);
        }
        Ok(ring)
    }

    /// Attaches to a ring that another party initialised in `storage`,
    /// checking that the header matches the storage's size.
    pub fn attach(storage: S) -> Result<Self, LayoutError> {
        // Relaxed: written once before the ring was shared; the sharing layer
        // synchronised with that (e.g. an Acquire load of a segment's magic).
        let capacity = storage.header().capacity.load(Ordering::Relaxed);
        let payload_words = storage.header().payload_words.load(Ordering::Relaxed);
        Self::layout(storage, capacity, payload_words)
    }

    fn layout(storage: S, capacity: u64, payload_words: u64) -> Result<Self, LayoutError> {
        crate::storage::check_capacity(capacity)?;
        if payload_words == 0 || payload_words > (1 << 20) {
            return Err(LayoutError::BadPayload(payload_words));
        }
        let stride = slot_stride(payload_words as usize);
        let needed = (capacity as usize).saturating_mul(stride);
        if storage.elems().len() != needed {
            return Err(LayoutError::WrongLength {
                needed,
                found: storage.elems().len(),
            });
        }
        Ok(Self {
            storage,
            capacity,
            mask: capacity - 1,
            stride,
            payload_words: payload_words as usize,
            single: None,
        })
    }

    /// Puts this handle of the ring into single-producer mode: claims by a
    /// plain load and store of the claim word, no locked instruction (see
    /// the module docs). Every handle of the ring, in every process, must
    /// be put into this mode before it claims or registers a gating
    /// consumer, and stay in it (the ipc layer records the mode in the
    /// segment header, so every opener agrees).
    ///
    /// # Safety
    ///
    /// At most one producer claims at a time, over the ring's whole life
    /// (a successor only after its predecessor is gone for good: dead, or
    /// dropped); two concurrent claims would take the same sequence and
    /// write one slot at once (a reader is still never handed a torn frame
    /// by the seqlock, but frames are lost and the hand-off between laps is
    /// broken). No handle claims in multi-producer mode or registers without
    /// this mode (its claim-word flag would be overwritten). Where any
    /// producer is [`SingleProducer::asymmetric`], every registering
    /// handle's [`SingleProducer::registration_barrier`] must run a full
    /// barrier on that producer's CPU, as documented there.
    pub unsafe fn set_single_producer(&mut self, mode: SingleProducer) {
        self.single = Some(mode);
    }

    /// The single-producer mode of this handle, if set.
    pub fn single_producer(&self) -> Option<SingleProducer> {
        self.single
    }

    fn header(&self) -> &BroadcastHeader {
        self.storage.header()
    }

    #[inline(always)]
    fn slot(&self, seq: u64) -> &[AtomicU64] {
        let start = (seq & self.mask) as usize * self.stride;
        &self.storage.elems()[start..start + 1 + self.payload_words]
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Words of payload a slot holds.
    pub fn payload_words(&self) -> usize {
        self.payload_words
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The next sequence a producer will claim: every sequence below it has
    /// been claimed (not necessarily committed).
    pub fn head(&self) -> u64 {
        // Acquire: pairs with the SeqCst claim RMWs (or a single producer's
        // Release claim store), so a caller that sees head > s also sees
        // the claims' preceding effects (only a hint: the
        // stamps are what readers trust).
        self.header().claim.load(Ordering::Acquire) & SEQ_MASK
    }

    /// The oldest sequence that can still be in the ring.
    pub fn oldest(&self) -> u64 {
        self.head().saturating_sub(self.capacity)
    }

    // ---------------------------------------------------------------- publish

    /// Publishes one frame and returns its sequence. Word 0 of `payload` is
    /// replaced by the sequence (it is the frame header's `seq` field).
    ///
    /// Never blocks while no gating consumer is registered; with gating
    /// consumers, returns [`PublishError::Full`] rather than overwrite a slot
    /// one of them still needs.
    #[inline]
    pub fn try_publish(
        &self,
        cache: &mut GatingCache,
        payload: &[u64],
    ) -> Result<u64, PublishError> {
        self.check_len(payload.len())?;
        let seq = self.claim(cache, 1, &mut || false, &mut |_, _| {}, &mut |_| {})?;
        self.write(seq, payload, &mut |_| {})?;
        Ok(seq)
    }

    /// Like [`try_publish`](Self::try_publish), but when a gating consumer is
    /// behind, spins while `keep_waiting()` returns true (the caller puts its
    /// timeout there), then returns [`PublishError::Full`].
    pub fn publish_wait(
        &self,
        cache: &mut GatingCache,
        payload: &[u64],
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<u64, PublishError> {
        self.check_len(payload.len())?;
        let seq = self.claim(cache, 1, &mut keep_waiting, &mut |_, _| {}, &mut |_| {})?;
        self.write(seq, payload, &mut |_| {})?;
        Ok(seq)
    }

    /// Publishes `words.len() / frame_words` frames of `frame_words` words
    /// each with a single claim, and returns the first sequence. The frames
    /// get consecutive sequences with no other producer's frame between them.
    ///
    /// Each slot still gets its own stamp commit (the stamp is the per-slot
    /// seqlock, which cannot be shared), but the claim counter, the one index
    /// all producers contend on, is written once per batch.
    pub fn try_publish_batch(
        &self,
        cache: &mut GatingCache,
        words: &[u64],
        frame_words: usize,
    ) -> Result<u64, PublishError> {
        self.check_len(frame_words)?;
        if frame_words == 0 || words.is_empty() {
            return Ok(self.head());
        }
        let n = words.len() / frame_words;
        self.claim_batch_wait(cache, n, || false)?
            .commit_with(words, frame_words, |_| {})
    }

    /// Claims `n` consecutive sequences without writing them yet: the first
    /// half of a batch publish, for a caller that records what it has in
    /// flight (as the ipc layer does for crash recovery). While a gating
    /// consumer is behind, spins as long as `keep_waiting()` returns true,
    /// then returns [`PublishError::Full`] (see there). Dropping the
    /// [`BatchClaim`] without committing declares its sequences lost.
    pub fn claim_batch_wait(
        &self,
        cache: &mut GatingCache,
        n: usize,
        keep_waiting: impl FnMut() -> bool,
    ) -> Result<BatchClaim<'_, S>, PublishError> {
        self.claim_batch_wait_with(cache, n, keep_waiting, |_, _| {}, |_| {})
    }

    /// Like [`claim_batch_wait`](Self::claim_batch_wait), for a supervised
    /// caller (the ipc layer):
    ///
    /// - `on_claimed(first, n)` runs once the sequences are taken and before
    ///   any wait, so the caller can record them in flight: a claim that
    ///   raced a first gating registration is taken *before* it
    ///   waits for room (see the module docs), and a supervisor must not
    ///   mistake it for a dead producer's meanwhile.
    /// - `stuck(older)` is called on every spin while giving such a claim up
    ///   waits for an older lap of a slot (a producer that claimed a full
    ///   ring ago, maybe dead), so the caller can resolve a dead one. The
    ///   ring (no_std) only pauses between turns and never yields the CPU:
    ///   a caller that can should yield in `stuck` after a few turns (the
    ///   ipc layer does after 64), or a waiter on the CPU the older lap's
    ///   producer needs starves that producer.
    ///   `keep_waiting` is also called (its answer ignored) while giving up
    ///   waits for a gating consumer, so the caller can reclaim a dead one.
    ///
    /// If `keep_waiting` or `stuck` unwinds after the claim was taken (in
    /// the wait for room of a claim that raced a registration, or while
    /// giving it up), the claim is given up on the way out all the same:
    /// its sequences read `Lost`, the frames in their slots stay, and the
    /// wait for an older lap still in a slot goes on without hooks, until
    /// someone else resolves that lap (as a dropped [`BatchClaim`]'s). An
    /// `on_claimed` that unwinds leaves the sequences claimed and unmarked
    /// (the caller's record of them is what failed): it must not.
    #[inline(always)]
    pub fn claim_batch_wait_with(
        &self,
        cache: &mut GatingCache,
        n: usize,
        mut keep_waiting: impl FnMut() -> bool,
        on_claimed: impl FnOnce(u64, u64),
        mut stuck: impl FnMut(u64),
    ) -> Result<BatchClaim<'_, S>, PublishError> {
        if n as u64 > self.capacity {
            return Err(PublishError::BatchTooLarge {
                len: n,
                capacity: self.capacity,
            });
        }
        let mut on_claimed = Some(on_claimed);
        let first = self.claim(
            cache,
            n as u64,
            &mut keep_waiting,
            &mut |first, n| {
                if let Some(f) = on_claimed.take() {
                    f(first, n);
                }
            },
            &mut stuck,
        )?;
        Ok(BatchClaim {
            ring: self,
            next: first,
            end: first + n as u64,
        })
    }

    /// Claims one sequence without writing it yet: the first half of a
    /// publish. Dropping the [`Claim`] without committing declares the
    /// sequence lost, so consumers never wait on it.
    pub fn try_claim(&self, cache: &mut GatingCache) -> Result<Claim<'_, S>, PublishError> {
        self.claim_wait(cache, || false)
    }

    /// Like [`try_claim`](Self::try_claim), but when a gating consumer is
    /// behind, spins while `keep_waiting()` returns true, then returns
    /// [`PublishError::Full`].
    pub fn claim_wait(
        &self,
        cache: &mut GatingCache,
        keep_waiting: impl FnMut() -> bool,
    ) -> Result<Claim<'_, S>, PublishError> {
        self.claim_batch_wait(cache, 1, keep_waiting).map(Claim)
    }

    /// Like [`claim_wait`](Self::claim_wait), with the hooks of
    /// [`claim_batch_wait_with`](Self::claim_batch_wait_with).
    #[inline(always)]
    pub fn claim_wait_with(
        &self,
        cache: &mut GatingCache,
        keep_waiting: impl FnMut() -> bool,
        on_claimed: impl FnOnce(u64, u64),
        stuck: impl FnMut(u64),
    ) -> Result<Claim<'_, S>, PublishError> {
        self.claim_batch_wait_with(cache, 1, keep_waiting, on_claimed, stuck)
            .map(Claim)
    }

    /// One publish with the hooks of [`claim_wait_with`](Self::claim_wait_with):
    /// claims a sequence (waiting while `keep_waiting()` allows if a gating
    /// consumer is behind), calls `on_claimed(seq)` right after the claim,
    /// then writes and commits `payload` into the slot, calling
    /// `stuck(older)` on every turn of a wait behind an unfinished older lap
    /// (as [`Claim::commit_with`] does). Returns the sequence.
    ///
    /// The same protocol as `claim_wait_with` then `commit_with`, without
    /// a claim object between them: no batch loop, no drop to run on the
    /// way out (the ipc layer's single publish, where those cost about a
    /// third of the publish). A payload too large for a slot is refused
    /// before anything is claimed.
    ///
    /// If `keep_waiting` or `stuck` unwinds after the claim (in the wait
    /// for room or the give-up of a claim that raced a registration, see
    /// [`claim_batch_wait_with`](Self::claim_batch_wait_with), or in the
    /// write's wait behind an older lap), the claimed sequence is marked
    /// lost on the way out, as a dropped claim's is (a wait for an older
    /// lap still in its slot goes on without hooks). An `on_claimed` that
    /// unwinds leaves the sequence claimed and unmarked: it must not.
    #[inline(always)]
    pub fn publish_wait_with(
        &self,
        cache: &mut GatingCache,
        payload: &[u64],
        mut keep_waiting: impl FnMut() -> bool,
        mut on_claimed: impl FnMut(u64),
        mut stuck: impl FnMut(u64),
    ) -> Result<u64, PublishError> {
        self.check_len(payload.len())?;
        let seq = self.claim(
            cache,
            1,
            &mut keep_waiting,
            &mut |seq, _| on_claimed(seq),
            &mut stuck,
        )?;
        let unwritten = Unwritten { ring: self, seq };
        let written = self.write(seq, payload, &mut stuck);
        // Written, or declared lost by a supervisor before we began:
        // either way the sequence is resolved.
        core::mem::forget(unwritten);
        written.map(|()| seq)
    }

    /// Claims one sequence as [`publish_wait_with`](Self::publish_wait_with)
    /// does and starts writing its slot in place: `claim_wait_with` then
    /// [`Claim::begin_write`], without a claim object between them. Fails
    /// with [`PublishError::DeclaredLost`] if a supervisor declared the
    /// sequence lost before the write began (the sequence is resolved
    /// then). A hook that unwinds does as in `publish_wait_with`: the
    /// sequence is marked lost unless it was `on_claimed`.
    #[inline(always)]
    pub fn claim_write_with(
        &self,
        cache: &mut GatingCache,
        mut keep_waiting: impl FnMut() -> bool,
        mut on_claimed: impl FnMut(u64),
        mut stuck: impl FnMut(u64),
    ) -> Result<SlotWrite<'_, S>, PublishError> {
        let seq = self.claim(
            cache,
            1,
            &mut keep_waiting,
            &mut |seq, _| on_claimed(seq),
            &mut stuck,
        )?;
        let unwritten = Unwritten { ring: self, seq };
        let data = self.begin_write(seq, &mut stuck);
        // Begun (the `SlotWrite` resolves it from here), or declared lost
        // before we began.
        core::mem::forget(unwritten);
        data.map(|data| SlotWrite {
            ring: self,
            seq,
            data,
        })
    }

    #[inline(always)]
    fn check_len(&self, len: usize) -> Result<(), PublishError> {
        if len > self.payload_words {
            return Err(PublishError::TooLarge {
                len,
                max: self.payload_words,
            });
        }
        Ok(())
    }

    /// Claims `n` consecutive sequences (`n <= capacity`), calling
    /// `on_claimed(first, n)` once they are taken, before any wait.
    #[inline(always)]
    fn claim(
        &self,
        cache: &mut GatingCache,
        n: u64,
        keep_waiting: &mut dyn FnMut() -> bool,
        on_claimed: &mut dyn FnMut(u64, u64),
        stuck: &mut dyn FnMut(u64),
    ) -> Result<u64, PublishError> {
        if let Some(single) = self.single {
            return self.claim_single(single, cache, n, keep_waiting, on_claimed, stuck);
        }
        let claim = &self.header().claim;
        // Acquire: pairs with the SeqCst claim-word RMW of `register_gating`
        // (and the claim RMWs after it in its release sequence: every write
        // to the claim word is an RMW). Seeing GATED must make the
        // registration's cursor and epoch visible to `has_room` below; with
        // Relaxed here a producer could validate against a stale, empty
        // gating table and overwrite a slot the new consumer needs (found by
        // the loom model `regression_gated_claim_must_see_the_registration`).
        let mut cur = claim.load(Ordering::Acquire);
        // One test for both: no gating consumer yet, and the sequence far
        // below MAX_SEQ (see FAST_SEQ_LIMIT).
        if cur & (GATED | FAST_SEQ_LIMIT) == 0 {
            // SeqCst: pairs with the SeqCst claim-word RMW in
            // `register_gating`. Claims ordered after it see the flag in the
            // returned value; claims ordered before it only overwrite
            // sequences older than the registering consumer's start.
            let prev = claim.fetch_add(n, Ordering::SeqCst);
            let seq = prev & SEQ_MASK;
            on_claimed(seq, n);
            if prev & GATED != 0 {
                // A first gating consumer (none other registered) registered
                // between our load and our claim (while another is
                // registered GATED stays set, so later ones never race an
                // unchecked claim). The claim is ours and
                // cannot be undone, and our load may come arbitrarily long
                // before it, so no choice of the consumer's start can make
                // room for it in advance. Wait while the caller allows
                // (`keep_waiting`), as the checked path does; then give the
                // claim up: `abandon` marks each sequence lost without
                // overwriting the frame in its slot (which the new consumer
                // may still need), so nothing is lost or wedged, and the
                // caller gets `Full` as if it had checked first. The caller
                // recorded the claim (`on_claimed`) before this wait, so a
                // supervisor does not take it for a dead producer's.
                self.wait_for_room_or_give_up(cache, seq, n, keep_waiting, stuck)?;
            }
            return Ok(seq);
        }
        // The checked path. Why a claim that succeeds never overwrites a slot
        // a gating consumer X still needs:
        //
        // Let R be X's claim-word RMW in `register_gating` (it sets GATED
        // and bumps the generation, so the word after R differs from the
        // word before it), H the head it returned, and C our successful
        // compare-and-swap below, from `cur` to `cur + n`.
        //
        // - C before R in the claim word's modification order: our
        //   sequences are below H, so we overwrite only sequences below
        //   H - capacity, and X starts at or after that (or, started at an
        //   older `At`, is told `Lagged` exactly).
        // - R before C: C succeeded, so the word just before C equals
        //   `cur`. Every write to the word is an RMW that either adds to the
        //   sequence (claims) or changes the generation (registrations), so
        //   a `cur` read before R can no longer be current after R: `cur`
        //   was read from R or a later RMW (the one exception, an ABA, needs
        //   2^7 registrations and no claim at all while we sit between our
        //   load and our CAS). Our Acquire load (or the failed CAS's
        //   Acquire) therefore synchronises with R, so X's table entry (at
        //   least its `announce`) and its epoch bump, both sequenced before
        //   R, happen before `has_room` below. `has_room` sees the new epoch
        //   and rescans, or has a cache from a scan that already saw it;
        //   either way its minimum is at most X's position, and `seq + n <=
        //   min + capacity` keeps us off every slot X has not released.
        //
        // Before the generation existed, a second registration left the
        // word unchanged (GATED was already set), so a producer that checked
        // a stale cached minimum won its CAS and overwrote the new cursor's
        // first slot (loom:
        // `regression_second_gating_registration_is_never_overwritten_before_it_reads`).
        loop {
            let seq = cur & SEQ_MASK;
            if n > MAX_SEQ - seq {
                // The word's sequence field stays within its bits, so
                // `cur + n` below never carries into the generation (nor
                // overflows on a corrupt word).
                return Err(PublishError::SequencesExhausted);
            }
            if !self.has_room(cache, seq, n) {
                if keep_waiting() {
                    spin_loop();
                    // Acquire: as for the first load.
                    cur = claim.load(Ordering::Acquire);
                    continue;
                }
                return Err(PublishError::Full);
            }
            // SeqCst: as for fetch_add above. Acquire on failure: the value
            // we retry with is validated by `has_room`, so it must
            // synchronise like the first load.
            match claim.compare_exchange_weak(cur, cur + n, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    on_claimed(seq, n);
                    return Ok(seq);
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// The claim of a single-producer ring (see the module docs): a plain
    /// load and a Release store of the claim word, a barrier, and one load
    /// of the gating epoch. No locked instruction.
    #[inline(always)]
    fn claim_single(
        &self,
        single: SingleProducer,
        cache: &mut GatingCache,
        n: u64,
        keep_waiting: &mut dyn FnMut() -> bool,
        on_claimed: &mut dyn FnMut(u64, u64),
        stuck: &mut dyn FnMut(u64),
    ) -> Result<u64, PublishError> {
        let h = self.header();
        // Acquire: pairs with the Release claim store below of whichever
        // producer stored last: usually ourselves; after a hand-over, a
        // predecessor (dead, or dropped) whose entry a reaper freed, where
        // nothing else formally orders its last claim before ours. Free on
        // x86, one barrier-free load-acquire on arm64.
        let cur = h.claim.load(Ordering::Acquire);
        let seq = cur & SEQ_MASK;
        if n > MAX_SEQ - seq {
            return Err(PublishError::SequencesExhausted);
        }
        // Checked before the claim, so that a ring full of unread frames
        // returns `Full` without taking a sequence (as the checked path of
        // many producers does). Nearly always one load of the epoch and a
        // comparison with the cache.
        while !self.has_room(cache, seq, n) {
            if !keep_waiting() {
                return Err(PublishError::Full);
            }
            spin_loop();
        }
        let checked_epoch = cache.epoch;
        // Release: pairs with the Acquire claim-word loads of `head` and of
        // a registration (`register_gating_single`): whoever sees this
        // claim sees what we did before it.
        h.claim.store(cur + n, Ordering::Release);
        on_claimed(seq, n);
        // The store-load barrier of the Dekker pair with
        // `register_gating_single`: our claim store before our epoch load
        // below, against its epoch bump before its head load. A SeqCst
        // fence pairs with its SeqCst fence; a compiler fence is promoted
        // to a full barrier by its `registration_barrier` (membarrier).
        if single.asymmetric {
            light_fence();
        } else {
            fence(Ordering::SeqCst);
        }
        // Acquire: pairs with the SeqCst epoch bump of a registration; if we
        // see it, `has_room` below sees its table entry (stored before it).
        if h.gating_epoch.load(Ordering::Acquire) != checked_epoch {
            // A registration raced our claim: it may not have seen our
            // claim in the head it started from, so check its cursor now.
            // As for a claim racing a first registration in `claim`: wait
            // while the caller allows, then give the claim up (its
            // sequences read `Lost`, the frames in their slots stay) and
            // return `Full`.
            self.wait_for_room_or_give_up(cache, seq, n, keep_waiting, stuck)?;
        }
        Ok(seq)
    }

    /// The wait of a claim of `seq .. seq + n` taken without a check
    /// against a gating consumer that registered meanwhile (see `claim`
    /// and `claim_single`): waits for room while `keep_waiting()` allows,
    /// then gives the claim up ([`abandon`](Self::abandon) on each
    /// sequence, which keeps the frames in their slots) and returns
    /// [`PublishError::Full`].
    ///
    /// If a hook unwinds (`keep_waiting` in the wait, or either hook in
    /// the give-up's waits), the claim is still given up on the way out,
    /// as a dropped [`BatchClaim`] marks its sequences: without hooks, so
    /// waiting for an older lap still in a slot until someone else
    /// resolves it. The caller never sees a claim to drop.
    #[cold]
    fn wait_for_room_or_give_up(
        &self,
        cache: &mut GatingCache,
        seq: u64,
        n: u64,
        keep_waiting: &mut dyn FnMut() -> bool,
        stuck: &mut dyn FnMut(u64),
    ) -> Result<(), PublishError> {
        let mut giving_up = GivingUp {
            ring: self,
            next: seq,
            end: seq + n,
        };
        while !self.has_room(cache, seq, n) {
            if !keep_waiting() {
                while giving_up.next < giving_up.end {
                    self.abandon(giving_up.next, keep_waiting, stuck);
                    // Only once it is marked: if a hook unwinds in its
                    // wait, the drop marks it (`abandon` leaves a sequence
                    // already marked alone).
                    giving_up.next += 1;
                }
                return Err(PublishError::Full);
            }
            spin_loop();
        }
        // Room: the claim stands, and the caller writes it.
        core::mem::forget(giving_up);
        Ok(())
    }

    /// Whether sequences `seq .. seq + n` overwrite only slots every gating
    /// consumer has released.
    #[inline(always)]
    fn has_room(&self, cache: &mut GatingCache, seq: u64, n: u64) -> bool {
        // SeqCst: pairs with the SeqCst epoch bump in `register_gating`; a
        // producer that saw that registration's GATED flag (SeqCst, earlier in
        // this thread) sees its epoch too, and rescans.
        let epoch = self.header().gating_epoch.load(Ordering::SeqCst);
        if epoch == cache.epoch && seq + n <= cache.min.saturating_add(self.capacity) {
            return true;
        }
        cache.epoch = epoch;
        cache.min = self.min_gating();
        seq + n <= cache.min.saturating_add(self.capacity)
    }

    fn min_gating(&self) -> u64 {
        let mut min = FREE;
        for g in &self.header().gating {
            // Acquire: pairs with the Release cursor stores in `release` and
            // `try_recv`: the consumer's loads from slots below its cursor
            // happen before our stores into them.
            min = min.min(g.load(Ordering::Acquire));
        }
        min
    }

    /// Whether `cur`, a slot's stamp, says the slot is free for `seq`: the
    /// previous lap in it (`seq - capacity`) has committed or been declared
    /// lost (by its own stamp, or as one of the lost laps after an earlier
    /// one), or `seq` is the slot's first lap and it was never written.
    #[inline(always)]
    fn is_turn_of(&self, cur: u64, seq: u64) -> bool {
        match seq.checked_sub(self.capacity) {
            None => cur == NEVER_WRITTEN,
            Some(prev) => {
                cur == stamp(prev, COMMITTED)
                    || cur == stamp(prev, LOST)
                    || (lost_laps(cur) != 0 && self.latest(cur) == prev)
            }
        }
    }

    /// Whether stamp `cur` (not `NEVER_WRITTEN`) names a sequence of the slot
    /// of `seq`. Always true in a sound ring; false means corrupt memory.
    #[inline(always)]
    fn is_stamp_of_slot(&self, cur: u64, seq: u64) -> bool {
        (stamp_seq(cur) ^ seq) & self.mask == 0
    }

    /// The latest sequence a slot's stamp `cur` (not `NEVER_WRITTEN`)
    /// accounts for: its stamped sequence, plus the lost laps after it.
    #[inline(always)]
    fn latest(&self, cur: u64) -> u64 {
        stamp_seq(cur) + lost_laps(cur) * self.capacity
    }

    /// Writes `payload` into the slot of `seq` under the seqlock. While an
    /// older lap still holds the slot, spins, calling `stuck(older)` on every
    /// turn of the loop so that the caller can resolve a dead producer.
    #[inline(always)]
    fn write(
        &self,
        seq: u64,
        payload: &[u64],
        stuck: &mut dyn FnMut(u64),
    ) -> Result<(), PublishError> {
        let data = self.begin_write(seq, stuck)?;
        for (dst, src) in data[1..].iter().zip(payload.iter().skip(1)) {
            // Relaxed: ordered by `begin_write`'s fence and the commit below.
            dst.store(*src, Ordering::Relaxed);
        }
        self.finish_write(seq);
        Ok(())
    }

    /// The first half of a write: waits for `seq`'s turn in its slot, marks
    /// the slot `WRITING(seq)` and stores the sequence in payload word 0.
    /// Returns the slot's payload words; the caller stores words `1..` and
    /// ends with [`finish_write`](Self::finish_write) (or, giving up, with a
    /// `LOST(seq)` stamp, as [`SlotWrite`]'s drop does).
    #[inline(always)]
    fn begin_write(
        &self,
        seq: u64,
        stuck: &mut dyn FnMut(u64),
    ) -> Result<&[AtomicU64], PublishError> {
        let (stamp_word, data) = self.slot(seq).split_first().expect("slot has a stamp");
        // Strict hand-off: sequence `seq` may write only once the previous lap
        // in this slot is finished. That makes the writer the slot's only
        // writer (until a later lap, which waits for our commit in turn), so
        // both stamp transitions are plain stores. No locked instruction
        // touches the line that consumers poll, which roughly doubles
        // single-producer throughput against a compare-and-swap per
        // transition.
        loop {
            // Acquire: pairs with the Release commit (or the AcqRel lost
            // declaration) of the previous lap; our stores below come after
            // its stores and after its readers' validated copies.
            let cur = stamp_word.load(Ordering::Acquire);
            if self.is_turn_of(cur, seq) {
                break;
            }
            if cur != NEVER_WRITTEN && self.latest(cur) >= seq {
                // A supervisor declared `seq` lost before we started (it
                // thought us dead); consumers already skipped it, and a later
                // lap may own the slot now. Do not touch it.
                return Err(PublishError::DeclaredLost(seq));
            }
            // An older lap has not finished: a producer that claimed a full
            // ring ago is descheduled, or dead until declared lost.
            stuck(self.older_lap(cur, seq));
            spin_loop();
        }
        // Relaxed: the slot is ours alone; the Release fence below orders this
        // store before the payload stores for readers.
        stamp_word.store(stamp(seq, WRITING), Ordering::Relaxed);
        // Release fence: pairs with the Acquire fence in `try_recv`. A reader
        // whose payload loads see any store below (or any store the caller
        // makes before `finish_write`) also sees WRITING(seq) (or later) on
        // its second stamp load, and discards its copy.
        fence(Ordering::Release);
        // Relaxed: ordered by the fence above and the commit in
        // `finish_write`.
        data[0].store(seq, Ordering::Relaxed);
        Ok(data)
    }

    /// The unfinished older lap holding the slot of `seq`, if any: a
    /// producer that claimed the slot a full ring (or more) before `seq`
    /// and has not committed it (mid-write, stalled, or dead until declared
    /// lost). `None` when `seq` could take its slot now (or `seq` was
    /// already resolved). A snapshot: a producer that is about to claim
    /// asks it to wait, or give up, *before* taking a sequence it could
    /// not release again while the older lap holds the slot.
    pub fn unfinished_older_lap(&self, seq: u64) -> Option<u64> {
        // Acquire: pairs with the Release commit (or AcqRel declaration) of
        // the slot's writers, as in `begin_write`; only a hint here.
        let cur = self.slot(seq)[0].load(Ordering::Acquire);
        if self.is_turn_of(cur, seq) || (cur != NEVER_WRITTEN && self.latest(cur) >= seq) {
            return None;
        }
        Some(self.older_lap(cur, seq))
    }

    /// Takes back the in-place write of `seq` whose [`SlotWrite`] was
    /// forgotten (`mem::forget`, or leaked): `None` unless the slot is
    /// still marked being written by `seq`. The caller then stores and
    /// commits (or drops it, marking `seq` lost), as with the original.
    ///
    /// # Safety
    ///
    /// The caller must be the producer that began writing `seq`, and the
    /// original [`SlotWrite`] must never be used again (forgotten, or
    /// leaked and unreachable): two writers of one slot would race their
    /// commits, and a reader could be handed a mixed frame.
    pub unsafe fn resume_write(&self, seq: u64) -> Option<SlotWrite<'_, S>> {
        let (stamp_word, data) = self.slot(seq).split_first().expect("slot has a stamp");
        // Acquire: pairs with nothing new (our own WRITING store, or a
        // supervisor's AcqRel declaration, which we then leave alone).
        (stamp_word.load(Ordering::Acquire) == stamp(seq, WRITING)).then_some(SlotWrite {
            ring: self,
            seq,
            data,
        })
    }

    /// The second half of a write begun by `begin_write(seq)`.
    #[inline(always)]
    fn finish_write(&self, seq: u64) {
        // Release: pairs with the Acquire stamp loads in `try_recv` (publishing
        // the payload to readers) and in `begin_write` (handing the slot to
        // the next lap). A caller that must order a later load after this
        // commit (the ipc layer's check for sleeping subscribers) issues its
        // own barrier (a SeqCst fence, or the ipc layer's asymmetric one).
        self.slot(seq)[0].store(stamp(seq, COMMITTED), Ordering::Release);
    }

    // ---------------------------------------------------------------- consume

    /// A non-gating cursor starting at `start`. The ring does not know about
    /// it: it costs producers nothing, and it can be lapped.
    pub fn cursor(&self, start: Start) -> ReadCursor {
        let next = match start {
            Start::Newest => self.head(),
            Start::Oldest => self.oldest(),
            Start::At(s) => s,
        };
        ReadCursor {
            next,
            gating: None,
            manual_release: false,
            released: 0,
        }
    }

    /// Registers a gating cursor: producers will not overwrite a sequence at
    /// or after its position until it has been read.
    pub fn register_gating(&self, start: Start) -> Result<ReadCursor, GatingTableFull> {
        (0..MAX_GATING)
            .find_map(|index| self.register_gating_at(index, start))
            .ok_or(GatingTableFull)
    }

    /// [`register_gating`](Self::register_gating) in gating slot `index`
    /// (modulo [`MAX_GATING`]) only: `None` if that slot is taken. For a
    /// caller that tags slots with their owners before taking them.
    pub fn register_gating_at(&self, index: usize, start: Start) -> Option<ReadCursor> {
        if let Some(single) = self.single {
            return self.register_gating_single(single, index % MAX_GATING, start);
        }
        let h = self.header();
        let index = index % MAX_GATING;
        // A conservative first announcement: producers that see it may claim
        // up to `announce + capacity`, which only overwrites sequences below
        // `announce`, and every start chosen below is >= `announce`.
        let announce = self.head().saturating_sub(self.capacity);
        // SeqCst: ordered before the epoch bump and flag below in the
        // single total order that producers' SeqCst loads follow.
        h.gating[index]
            .compare_exchange(FREE, announce, Ordering::SeqCst, Ordering::Relaxed)
            .ok()?;
        // SeqCst: pairs with the SeqCst epoch load in `has_room`.
        h.gating_epoch.fetch_add(1, Ordering::SeqCst);
        // Sets GATED and bumps the registration generation: the claim word
        // must change, so that a producer's CAS on a value read before this
        // fails and its retry (Acquire) sees our entry and epoch (the
        // argument is in `claim`). A CAS loop, not `fetch_add`: the
        // generation wraps inside its bits instead of carrying into GATED.
        // Lock-free: a failure means a producer claimed.
        // Relaxed: only a first guess; the CAS below validates it.
        let mut cur = h.claim.load(Ordering::Relaxed);
        let head = loop {
            let next_word =
                GATED | ((cur & GEN_MASK).wrapping_add(GEN_ONE) & GEN_MASK) | (cur & SEQ_MASK);
            // SeqCst: pairs with the SeqCst claim RMWs and the Acquire claim
            // loads of producers. Every claim after this sees GATED (and our
            // entry) and checks the cursor; every claim before it took a
            // sequence below `head`, which overwrites only sequences below
            // `head - capacity`. Relaxed on failure: we only retry.
            match h
                .claim
                .compare_exchange_weak(cur, next_word, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break cur & SEQ_MASK,
                Err(actual) => cur = actual,
            }
        };
        let oldest = head.saturating_sub(self.capacity);
        let next = match start {
            Start::Newest => head,
            Start::Oldest => oldest,
            Start::At(s) => s,
        };
        // SeqCst: raising the cursor only ever frees producers.
        let held = next.max(announce);
        h.gating[index].store(held, Ordering::SeqCst);
        Some(ReadCursor {
            next,
            gating: Some(index),
            manual_release: false,
            // An `At` start below `announce` reads from there but never
            // publishes a position below what producers already saw.
            released: held,
        })
    }

    /// `register_gating_at` on a single-producer ring: the claim word is
    /// left alone; the epoch bump and the producer's claim are ordered as a
    /// Dekker pair (see `claim_single`).
    fn register_gating_single(
        &self,
        single: SingleProducer,
        index: usize,
        start: Start,
    ) -> Option<ReadCursor> {
        let h = self.header();
        // As in `register_gating_at`: producers that see this may claim up
        // to `announce + capacity`, and every start below is >= `announce`.
        let announce = self.head().saturating_sub(self.capacity);
        // SeqCst: stored before the epoch bump below, which publishes it.
        h.gating[index]
            .compare_exchange(FREE, announce, Ordering::SeqCst, Ordering::Relaxed)
            .ok()?;
        // SeqCst: pairs with the Acquire epoch loads of `claim_single` and
        // `has_room`: a producer that sees the new epoch rescans and sees
        // our entry.
        h.gating_epoch.fetch_add(1, Ordering::SeqCst);
        // The registration's half of the Dekker pair with `claim_single`:
        // a SeqCst fence (pairs with the producer's SeqCst fence), and the
        // caller's heavy barrier (promotes an asymmetric producer's
        // compiler fence to a full barrier). Either the producer's epoch
        // load after its barrier sees our bump, or its claim store before
        // its barrier is visible to our head load below.
        fence(Ordering::SeqCst);
        if !(single.registration_barrier)() {
            // Without the barrier the producer's claim is not ordered
            // against our head load: give the registration up. Freeing the
            // slot only ever frees producers, so it needs no barrier.
            // SeqCst: as the cursor store below.
            h.gating[index].store(FREE, Ordering::SeqCst);
            self.after_freeing_gating_slot();
            return None;
        }
        // Acquire: pairs with the Release claim store of `claim_single`.
        let head = h.claim.load(Ordering::Acquire) & SEQ_MASK;
        let oldest = head.saturating_sub(self.capacity);
        let next = match start {
            Start::Newest => head,
            Start::Oldest => oldest,
            Start::At(s) => s,
        };
        // SeqCst: raising the cursor only ever frees producers.
        let held = next.max(announce);
        h.gating[index].store(held, Ordering::SeqCst);
        Some(ReadCursor {
            next,
            gating: Some(index),
            manual_release: false,
            released: held,
        })
    }

    /// Takes over gating slot `index`, still held at its position by a
    /// consumer that is gone (a durable registration restarted in a new
    /// process), without ever freeing it: producers keep waiting for it
    /// throughout. The cursor starts at `start` (`Oldest`: the held
    /// position); a start past the held position releases what lies
    /// between. A start below it reads from there (frames already released
    /// and overwritten meanwhile read as `Lagged`), but the hold never moves
    /// back: the slot stays at the held position until the cursor passes
    /// it. Returns `None` if the slot is free.
    ///
    /// # Safety
    ///
    /// The caller must own the slot exclusively: its previous holder gone
    /// for good, and nobody else releasing, freeing or adopting it
    /// meanwhile. Two live cursors on one slot overwrite each other's
    /// position, so producers may overwrite frames the slower one was
    /// promised (it reads `Lagged`). Not a memory-safety contract of the
    /// ring itself, but one its callers rely on.
    pub unsafe fn adopt_gating(&self, index: usize, start: Start) -> Option<ReadCursor> {
        let index = index % MAX_GATING;
        let slot = &self.header().gating[index];
        // Acquire: pairs with the Release stores of the previous holder
        // (`release`): its reads of the released slots happen before ours.
        let held = slot.load(Ordering::Acquire);
        if held == FREE {
            return None;
        }
        let next = match start {
            Start::Newest => self.head(),
            Start::Oldest => held,
            Start::At(s) => s,
        };
        if next > held {
            // Release: pairs with the Acquire scan in `min_gating`; raising
            // the position only ever frees producers.
            slot.store(next, Ordering::Release);
        }
        Some(ReadCursor {
            next,
            gating: Some(index),
            manual_release: false,
            released: next.max(held),
        })
    }

    /// Removes a gating cursor from the table: producers stop waiting for it.
    /// A slot that no longer holds the cursor's position (freed under it,
    /// maybe taken by another consumer since) is not touched. The cursor
    /// must be this ring's (a ring may move, and the same shared ring may be
    /// mapped at several addresses, so the ring cannot check by address);
    /// another ring's cursor frees a slot there only if that slot holds
    /// exactly this cursor's position, and its holder then finds its hold
    /// gone at its next release (it becomes non-gating, and is told by
    /// `Lagged` if it is lapped), never a silent loss.
    pub fn unregister_gating(&self, cursor: &mut ReadCursor) {
        if let Some(index) = cursor.gating.take() {
            // Release on success: pairs with the Acquire scan in
            // `min_gating`, as in `free_gating_slot`. Relaxed on failure:
            // the slot is not ours, nothing to order.
            if self.header().gating[index]
                .compare_exchange(cursor.released, FREE, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                self.after_freeing_gating_slot();
            }
        }
    }

    /// Frees gating-table slot `index` whoever holds it: for a supervisor
    /// reclaiming the slot of a consumer whose process died. If it was the
    /// last gating slot held, claims become wait-free again (see
    /// [`claims_are_checked`](Self::claims_are_checked)).
    ///
    /// # Safety
    ///
    /// Not a memory-safety contract of the ring itself, but one its callers
    /// rely on: the slot's holder must be gone for good (its process dead,
    /// or its cursor dropped without touching the ring again), or be the
    /// caller. Freeing a live consumer's slot lets producers overwrite what
    /// that consumer was promised (it reads `Lagged`), and its next release
    /// would write a position into a slot that producers no longer check,
    /// or that another consumer has taken since.
    pub unsafe fn release_gating_slot(&self, index: usize) {
        self.free_gating_slot(index % MAX_GATING);
    }

    fn free_gating_slot(&self, index: usize) {
        // Release: pairs with the Acquire scan in `min_gating`; the departed
        // consumer's reads happen before producers reuse its slots. A swap,
        // not a store: a live holder's compare-and-swap in `release` then
        // either precedes it or fails (read-modify-writes are atomic with
        // each other); loom's model does not give a plain store that
        // guarantee, and found the slot resurrected with one (loom:
        // `regression_release_racing_a_free_never_resurrects_the_slot`).
        self.header().gating[index].swap(FREE, Ordering::Release);
        self.after_freeing_gating_slot();
    }

    /// After a gating slot was freed: clears GATED if it was the last.
    fn after_freeing_gating_slot(&self) {
        // SeqCst fence: pairs with the same fence of any other consumer
        // leaving at the same time. Each stores FREE, fences, then scans
        // the table; the fences are totally ordered, so the later one's scan
        // sees the earlier one's FREE and at least one of them clears the
        // flag (without the fence both could see the other still there).
        fence(Ordering::SeqCst);
        self.clear_gated_if_idle();
    }

    /// Clears [`GATED`] if no gating slot is held, so that claims go back to
    /// the wait-free `fetch_add`. Lock-free (a failed compare-and-swap means
    /// a producer claimed).
    ///
    /// Why it never clears the flag under a consumer X that registers
    /// meanwhile: let R be X's claim-word RMW in `register_gating` (it bumps
    /// the generation), and `cur` our first load below, of generation `g`.
    ///
    /// - R before the write `cur` was read from, in the claim word's
    ///   modification order (or R is that write): our load is Acquire and
    ///   every later write to the word is an RMW, so we synchronise with R,
    ///   and X's table entry (stored before R) is visible to our scan. We
    ///   see it held (or freed by X itself, which then clears in turn) and
    ///   do nothing.
    /// - R after it: our compare-and-swap accepts only a word of generation
    ///   `g` (the sequence may move: producers claim), so if R precedes it,
    ///   it fails and we stop; if R follows it, R sets GATED again after
    ///   our clear. That is a registration racing unchecked claims, which
    ///   `claim` handles as it always did (a claim that loaded the word
    ///   before R and sees GATED in its `fetch_add` result checks and
    ///   waits, or gives up). (The generation has 7 bits: an ABA needs 2^7
    ///   registrations between our load and our compare-and-swap.)
    fn clear_gated_if_idle(&self) {
        let h = self.header();
        // Acquire: pairs with the SeqCst claim-word RMW of `register_gating`
        // (see above): a registration we read from has its entry visible to
        // the scan below.
        let mut cur = h.claim.load(Ordering::Acquire);
        if cur & GATED == 0 {
            return;
        }
        let generation = cur & GEN_MASK;
        // Acquire: pairs with the SeqCst entry CAS and stores of
        // `register_gating` (ordered before its RMW R, see above).
        if h.gating.iter().any(|g| g.load(Ordering::Acquire) != FREE) {
            return;
        }
        loop {
            // SeqCst: the claim word's RMWs are all SeqCst (claims and
            // registrations); producers that read the cleared word claim
            // with `fetch_add`, which is sound as shown above. Acquire on
            // failure: we re-check the generation of what we read.
            match h.claim.compare_exchange_weak(
                cur,
                cur & !GATED,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => {
                    if actual & GATED == 0 || actual & GEN_MASK != generation {
                        // Cleared by another leaver, or a consumer registered:
                        // it (or the last to leave after it) clears later.
                        return;
                    }
                    cur = actual;
                }
            }
        }
    }

    /// Whether producers claim by the checked (compare-and-swap) path: a
    /// gating consumer is registered, or one was and the ring has not yet
    /// seen the last one leave. While false, a claim is one wait-free
    /// `fetch_add`.
    pub fn claims_are_checked(&self) -> bool {
        // Relaxed: a snapshot for monitoring and tests; producers do their
        // own ordered load.
        self.header().claim.load(Ordering::Relaxed) & GATED != 0
    }

    /// Position of gating slot `index` (every sequence below it released), or
    /// `None` if the slot is free.
    pub fn gating_position(&self, index: usize) -> Option<u64> {
        // Relaxed: a snapshot for monitoring.
        let v = self.header().gating[index % MAX_GATING].load(Ordering::Relaxed);
        (v != FREE).then_some(v)
    }

    /// Receives the next frame into `out` (up to `out.len()` words; pass at
    /// least the frame size) and returns its sequence.
    ///
    /// Copies out of the slot: an overwriting ring can only hand out a frame
    /// that is checked intact after the copy. Wait-free.
    #[inline]
    pub fn try_recv(&self, cursor: &mut ReadCursor, out: &mut [u64]) -> Result<u64, TryRecvError> {
        let result = self.recv_one(cursor, out);
        // A gating cursor publishes its position every RELEASE_EVERY frames
        // and whenever it finds nothing to read, not on every frame: a
        // producer waiting at the ring's limit reads that line, and writing
        // it per frame would bounce it between the two cores on every frame.
        // An idle consumer therefore never holds anything back; a busy one
        // holds at most RELEASE_EVERY - 1 slots it has already read.
        // Only a position that moved is stored: an idle consumer polls this
        // path continuously, and a store per poll would keep the line
        // dirty in its cache for a producer at the ring's limit to pull.
        if cursor.gating.is_some()
            && !cursor.manual_release
            && cursor.next > cursor.released
            && (cursor.next % RELEASE_EVERY == 0 || result.is_err())
        {
            self.release(cursor);
        }
        result
    }

    /// Receives frames of `frame_words` words each into `out` (as many as fit)
    /// and returns how many were read. The batch ends at the first
    /// non-frame outcome: if no frame was read, that outcome is returned;
    /// otherwise the frames are returned and the cursor stays at the event
    /// (a `Lost` or `Lagged`), so the next call reports it. No event is
    /// ever skipped, and a `Lagged` count stays exact (re-observed from the
    /// same position, it counts the same skipped sequences or, if the ring
    /// moved on, the sequences now gone too; for a non-gating cursor a
    /// `Lost` sequence overwritten in between is re-reported as a lag of
    /// the same size). A gating cursor is released once, at the end.
    pub fn recv_batch(
        &self,
        cursor: &mut ReadCursor,
        out: &mut [u64],
        frame_words: usize,
    ) -> Result<usize, TryRecvError> {
        let mut n = 0;
        let mut result = Ok(0);
        for frame in out.chunks_exact_mut(frame_words.max(1)) {
            let before = cursor.next;
            match self.recv_one(cursor, frame) {
                Ok(_) => n += 1,
                Err(e) => {
                    if n == 0 {
                        result = Err(e);
                    } else {
                        // Frames come first: step back to the event (its
                        // slot's stamp only moves forward, so the next
                        // receive finds it again). The cursor has not been
                        // released past `before`: that happens below.
                        cursor.next = before;
                    }
                    break;
                }
            }
        }
        if !cursor.manual_release {
            self.release(cursor);
        }
        if n > 0 {
            Ok(n)
        } else {
            result
        }
    }

    /// Whether sequence `next` is claimed by a producer but not committed
    /// (its slot not yet written, or mid-write). [`try_recv`](Self::try_recv)
    /// reports a slot seen mid-write as `Pending`, but reports a slot not yet
    /// touched as `Empty` without reading the claim counter; a consumer that
    /// stays empty for a while asks this to tell "nothing published" from "a
    /// producer stalled or died after its claim".
    pub fn is_pending(&self, next: u64) -> bool {
        self.head() > next
    }

    /// Tells producers a gating cursor has consumed everything below
    /// `cursor.next`. [`try_recv`](Self::try_recv) does this itself. A
    /// cursor adopted below its hold ([`adopt_gating`](Self::adopt_gating))
    /// releases nothing until it passes the hold: a position never moves
    /// back.
    ///
    /// The slot is moved only from the position this cursor last published
    /// (a compare-and-swap): if it was freed under the cursor (a
    /// supervisor's [`release_gating_slot`](Self::release_gating_slot) on a
    /// live consumer), and maybe taken by another consumer since, it is
    /// left alone, and the cursor becomes non-gating
    /// ([`ReadCursor::gating_slot`] says `None`): producers no longer wait
    /// for it, so it may be lapped (`Lagged`).
    #[inline(always)]
    pub fn release(&self, cursor: &mut ReadCursor) {
        if let Some(index) = cursor.gating {
            if cursor.next <= cursor.released {
                return;
            }
            // Release on success: pairs with the Acquire scan in
            // `min_gating`; our copies out of the released slots happen
            // before producers overwrite them. Relaxed on failure: the slot
            // is not ours any more, nothing of it is read.
            match self.header().gating[index].compare_exchange(
                cursor.released,
                cursor.next,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => cursor.released = cursor.next,
                Err(_) => cursor.gating = None,
            }
        }
    }

    #[inline(always)]
    fn recv_one(&self, cursor: &mut ReadCursor, out: &mut [u64]) -> Result<u64, TryRecvError> {
        let next = cursor.next;
        let (stamp_word, data) = self.slot(next).split_first().expect("slot has a stamp");
        let mut pending_waits = 0;
        loop {
            // Acquire: pairs with the Release commit in `write`, making the
            // committed payload visible to the loads below.
            let first = stamp_word.load(Ordering::Acquire);
            let seq = stamp_seq(first);
            if first == NEVER_WRITTEN || seq < next {
                if first != NEVER_WRITTEN
                    && self.latest(first) >= next
                    && self.is_stamp_of_slot(first, next)
                {
                    // One of the lost laps after `seq`: its producer gave
                    // its claim up (see `abandon`).
                    cursor.next = next + 1;
                    return Err(TryRecvError::Lost(next));
                }
                // Not written yet. Deliberately no look at the claim counter
                // here: a caught-up consumer polls this path constantly, and
                // reading the line every producer RMWs would bounce it between
                // cores on every publish. `is_pending` asks that separately.
                return Err(TryRecvError::Empty);
            }
            if seq > next {
                // Lapped: `seq` is a later lap of our slot, so `next` is gone.
                // Resume at the oldest sequence that can still be present.
                // `seq + 1` bounds head from below even if our view of the
                // claim counter is stale.
                //
                // A stamp whose sequence is not congruent with its slot is
                // corrupt memory (a shared segment scribbled on): it still
                // reads as a lag, of at least one, never an underflow.
                let head = self.head().max(seq + 1);
                let resume = head.saturating_sub(self.capacity).max(next + 1);
                cursor.next = resume;
                return Err(TryRecvError::Lagged(resume - next));
            }
            match stamp_state(first) {
                WRITING if pending_waits < PENDING_WAITS => {
                    // The producer is inside its write (a copy of a few
                    // cache lines). Reloading the stamp at once would pull
                    // the line it is writing back out of its cache, slowing
                    // the very write we wait for; pause for about a write's
                    // length instead, then look again. Bounded, so a
                    // receive stays wait-free.
                    pending_waits += 1;
                    for _ in 0..PENDING_PAUSES {
                        spin_loop();
                    }
                    continue;
                }
                WRITING => return Err(TryRecvError::Pending(next)),
                LOST => {
                    cursor.next = next + 1;
                    return Err(TryRecvError::Lost(next));
                }
                _ => {}
            }
            let len = out.len().min(data.len());
            for (dst, src) in out[..len].iter_mut().zip(data) {
                // Relaxed: validated by the fence and stamp re-check below.
                *dst = src.load(Ordering::Relaxed);
            }
            // Acquire fence: pairs with the Release fence in `write`. If any
            // load above saw a later writer's store, the reload below sees
            // that writer's WRITING stamp (or later).
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence.
            if stamp_word.load(Ordering::Relaxed) == first {
                cursor.next = next + 1;
                return Ok(next);
            }
            // Overwritten while we copied: re-evaluate (it is now a lap).
        }
    }

    // ---------------------------------------------------------------- recovery

    /// Declares sequence `seq` lost because its producer died between claim
    /// and commit. Consumers then see [`TryRecvError::Lost`] for it.
    ///
    /// # Safety
    ///
    /// The producer that claimed `seq` must be dead, or otherwise never
    /// write it (its claim forgotten). Declaring a live producer's sequence
    /// lies to consumers (a frame delivered after they were told it was
    /// lost) and, if the ring laps the slot inside that producer's write,
    /// can hand a consumer a torn frame that passed the seqlock check (see
    /// the module docs). The ring stays free of undefined behaviour itself,
    /// but a caller that decodes frames without validation (the frame
    /// module's unchecked access) relies on never seeing a torn one.
    pub unsafe fn declare_lost(&self, seq: u64) -> Result<Declared, DeclareError> {
        self.declare(seq)
    }

    /// [`declare_lost`](Self::declare_lost), for callers inside the ring
    /// that hold the claim themselves.
    fn declare(&self, seq: u64) -> Result<Declared, DeclareError> {
        if seq >= self.head() {
            return Err(DeclareError::NotClaimed(seq));
        }
        let stamp_word = &self.slot(seq)[0];
        // Acquire: pairs with the Release commit of the slot's previous writer.
        let mut cur = stamp_word.load(Ordering::Acquire);
        loop {
            if cur != NEVER_WRITTEN && stamp_seq(cur) > seq {
                return Ok(Declared::AlreadyOverwritten);
            }
            if cur != NEVER_WRITTEN && stamp_seq(cur) < seq && self.latest(cur) >= seq {
                // One of the lost laps after the stamped sequence.
                return Ok(Declared::AlreadyLost);
            }
            let mid_write = cur == stamp(seq, WRITING);
            if cur != NEVER_WRITTEN && stamp_seq(cur) == seq && !mid_write {
                return Ok(if stamp_state(cur) == COMMITTED {
                    Declared::AlreadyCommitted
                } else {
                    Declared::AlreadyLost
                });
            }
            if !mid_write && !self.is_turn_of(cur, seq) {
                // An older lap holds the slot. Only the lap right after a
                // finished one may be declared, exactly as only it may write.
                return Err(DeclareError::OlderWriterStuck(self.older_lap(cur, seq)));
            }
            // A sequence whose write never started leaves the previous lap's
            // frame in place: one more lost lap on its stamp (as `abandon`
            // does), so a consumer that has not read that frame yet (a
            // gating one, if `seq` raced a first registration and never
            // checked its cursor) still can. A torn write, a slot without
            // a frame, or a saturated count is stamped `LOST(seq)`.
            let new = if !mid_write
                && cur != NEVER_WRITTEN
                && stamp_state(cur) == COMMITTED
                && lost_laps(cur) < MAX_LOST_LAPS
            {
                cur + LAPS_ONE
            } else {
                stamp(seq, LOST)
            };
            // AcqRel: the Release half pairs with the Acquire stamp loads of the
            // next lap's writer (in `write`) and of readers; the Acquire half
            // keeps our view of the slot's previous writer. No payload is
            // published with the declaration (a reader copying the kept
            // frame across it sees the stamp change and copies again).
            match stamp_word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Declared::Lost),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Marks `seq`, claimed by this caller and never to be written, lost.
    /// Like a writer, it waits while an older lap still holds the slot (a
    /// producer that claimed a full ring ago is mid-write, or dead until a
    /// supervisor declares it lost), then marks: discarding the sequence
    /// while the older lap is unfinished would leave it unmarked for good,
    /// and the next lap's writer would wait for it forever. Calls
    /// `stuck(older)` on every spin, so that a supervising caller can
    /// resolve a dead older producer.
    fn mark_claim_lost(&self, seq: u64, stuck: &mut dyn FnMut(u64)) {
        loop {
            match self.declare(seq) {
                Err(DeclareError::OlderWriterStuck(older)) => {
                    stuck(older);
                    spin_loop();
                }
                // Lost, or already resolved by a supervisor (lost, or
                // overwritten after being declared). `NotClaimed` cannot
                // happen: the caller holds the claim.
                Ok(_) | Err(DeclareError::NotClaimed(_)) => return,
            }
        }
    }

    /// The unfinished lap that holds a slot whose stamp is `cur` when `seq`
    /// wants it: the writer of a `WRITING` stamp, otherwise the lap after the
    /// last finished one.
    fn older_lap(&self, cur: u64, seq: u64) -> u64 {
        if cur == NEVER_WRITTEN {
            seq & self.mask
        } else if stamp_state(cur) == WRITING {
            stamp_seq(cur)
        } else {
            self.latest(cur) + self.capacity
        }
    }

    /// Marks `seq`, claimed by this caller and never to be written, lost
    /// *without overwriting the slot's current payload*: for a claim that
    /// was never checked against the gating cursors (see `claim`), whose
    /// slot may still hold a frame a gating consumer has not read.
    ///
    /// Once the previous lap in the slot is finished (a writer waits for
    /// the same; a dead one until declared lost), it adds one to the
    /// stamp's lost-laps count: the stamped frame stays readable, `seq`
    /// reads as `Lost`, and the next lap's writer takes its turn as after a
    /// lost declaration. Only in the first lap (nothing to keep), or in the
    /// unreachable case of a saturated count once every gating consumer has
    /// released the stamped frame, is `LOST(seq)` stored instead.
    ///
    /// Waits only for an older lap's writer (or its declaration), calling
    /// `stuck(older)` on every spin so that a supervising caller can resolve
    /// a dead one; never for a consumer's reading, except in the saturated
    /// case, where it calls `keep_waiting` (answer ignored: the claim must
    /// be marked) so that the caller can reclaim a dead gating consumer.
    fn abandon(
        &self,
        seq: u64,
        keep_waiting: &mut dyn FnMut() -> bool,
        stuck: &mut dyn FnMut(u64),
    ) {
        let stamp_word = &self.slot(seq)[0];
        loop {
            // Acquire: pairs with the Release commit (or AcqRel declaration)
            // of the previous lap, as in `write`.
            let cur = stamp_word.load(Ordering::Acquire);
            if cur != NEVER_WRITTEN && self.latest(cur) >= seq {
                // Already declared lost by a supervisor (or a later lap).
                return;
            }
            if !self.is_turn_of(cur, seq) {
                // An older lap is still being written (or its producer is
                // dead until declared lost): wait like a writer.
                stuck(self.older_lap(cur, seq));
                spin_loop();
                continue;
            }
            let new = if cur == NEVER_WRITTEN {
                stamp(seq, LOST)
            } else if lost_laps(cur) < MAX_LOST_LAPS {
                cur + LAPS_ONE
            } else if self.min_gating() > stamp_seq(cur) {
                stamp(seq, LOST)
            } else {
                let _ = keep_waiting();
                spin_loop();
                continue;
            };
            // AcqRel: the Release half pairs with the Acquire stamp loads of
            // readers and of the next lap's writer (which may now take the
            // slot); the Acquire half keeps our view of the previous lap. A
            // reader copying the stamped frame across this CAS sees the
            // stamp change and copies again: the payload is untouched.
            // Relaxed on failure: the loop reloads the stamp with Acquire.
            if stamp_word
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// A claimed, not yet committed sequence (see [`Broadcast::try_claim`]): a
/// [`BatchClaim`] of one, so dropping it declares the sequence lost.
#[must_use = "dropping a claim declares its sequence lost"]
pub struct Claim<'a, S>(BatchClaim<'a, S>)
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>;

impl<S> fmt::Debug for Claim<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim").field("seq", &self.seq()).finish()
    }
}

impl<'a, S> Claim<'a, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    /// The claimed sequence.
    pub fn seq(&self) -> u64 {
        self.0.first()
    }

    /// Starts writing the claimed slot in place: waits for the slot's turn
    /// (as [`commit_with`](Self::commit_with) does, calling `stuck`), marks
    /// it being written, and returns a [`SlotWrite`] through which the
    /// caller stores the payload words and commits. Fails with
    /// [`PublishError::DeclaredLost`] if a supervisor declared the sequence
    /// lost first (the claim is consumed either way).
    pub fn begin_write(self, stuck: impl FnMut(u64)) -> Result<SlotWrite<'a, S>, PublishError> {
        let mut batch = self.0;
        batch.begin_next(stuck).expect("a claim holds one sequence")
    }

    /// Writes and commits the payload.
    /// If the payload is too large, the sequence is declared lost (the claim
    /// is consumed either way).
    pub fn commit(self, payload: &[u64]) -> Result<u64, PublishError> {
        self.commit_with(payload, |_| {})
    }

    /// Like [`commit`](Self::commit), but while an older lap still holds the
    /// slot (a producer that claimed a full ring ago and stalled or died),
    /// calls `stuck(older_seq)` on every spin, so that a supervising caller
    /// can declare a dead producer's sequence lost instead of waiting forever
    /// (and yield the CPU there: see
    /// [`Broadcast::claim_batch_wait_with`]).
    pub fn commit_with(self, payload: &[u64], stuck: impl FnMut(u64)) -> Result<u64, PublishError> {
        // The whole payload is the one frame (even an empty one).
        self.0.commit_with(payload, payload.len(), stuck)
    }
}

/// Consecutive sequences claimed together, not yet committed (see
/// [`Broadcast::claim_batch_wait`]). Dropping it marks every uncommitted
/// sequence lost; like a write, that waits while an older lap still holds a
/// slot (a producer a full ring behind, mid-write or dead until declared
/// lost), so a dropped claim is never left unmarked. A drop has no way to
/// resolve a dead older producer; a supervised caller ends every claim with
/// [`commit_with`](Self::commit_with) (which marks what it does not write
/// with its `stuck` callback) and leaves the drop to unwinding.
#[must_use = "dropping a batch claim declares its sequences lost"]
pub struct BatchClaim<'a, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    ring: &'a Broadcast<S>,
    /// First sequence not yet written.
    next: u64,
    end: u64,
}

impl<S> fmt::Debug for BatchClaim<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchClaim")
            .field("first", &self.next)
            .field("end", &self.end)
            .finish()
    }
}

impl<'a, S> BatchClaim<'a, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    /// The first claimed sequence.
    pub fn first(&self) -> u64 {
        self.next
    }

    /// Number of sequences claimed.
    pub fn len(&self) -> u64 {
        self.end - self.next
    }

    /// Whether the claim is empty.
    pub fn is_empty(&self) -> bool {
        self.next == self.end
    }

    /// Writes and commits `words` as frames of `frame_words` words, one per
    /// claimed sequence, and returns the first sequence. Sequences left
    /// without a frame (too few words given), and all of them if a frame is
    /// too large for a slot, are marked lost, each once any older lap in its
    /// slot has finished (as a write would wait). Words past the last claimed
    /// frame are ignored. While an older lap still
    /// holds a slot (a producer that claimed a full ring ago and stalled or
    /// died), calls `stuck(older_seq)` on every spin, so that a supervising
    /// caller can declare a dead producer's sequence lost. If `stuck`
    /// unwinds, the sequence it was waiting to write stays in the claim,
    /// and the drop marks it lost with the rest.
    pub fn commit_with(
        mut self,
        words: &[u64],
        frame_words: usize,
        mut stuck: impl FnMut(u64),
    ) -> Result<u64, PublishError> {
        let first = self.next;
        if let Err(e) = self.ring.check_len(frame_words) {
            self.mark_rest_lost(&mut stuck);
            return Err(e);
        }
        // `frame_words == 0`: every frame is empty (the ring still writes the
        // sequence into the header word), one per claimed sequence.
        let frames = (self.end - self.next) as usize;
        let mut result = Ok(first);
        for i in 0..frames {
            let Some(frame) = words.get(i * frame_words..(i + 1) * frame_words) else {
                break;
            };
            let seq = self.next;
            if let Err(e) = self.ring.write(seq, frame, &mut stuck) {
                result = Err(e);
            }
            // Only now (written, or declared lost before the write began):
            // if `stuck` unwinds in the write's wait, `seq` is still ours,
            // and the drop marks it lost.
            self.next = seq + 1;
        }
        self.mark_rest_lost(&mut stuck);
        result
    }

    /// Starts writing the next claimed sequence in place (see
    /// [`Claim::begin_write`]); `None` once every sequence was handed out.
    /// The sequence leaves the claim: the [`SlotWrite`] commits it, or marks
    /// it lost if dropped. If `stuck` unwinds in the wait for the slot, the
    /// sequence stays in the claim, and the drop marks it lost.
    pub fn begin_next(
        &mut self,
        mut stuck: impl FnMut(u64),
    ) -> Option<Result<SlotWrite<'a, S>, PublishError>> {
        if self.next == self.end {
            return None;
        }
        let seq = self.next;
        let begun = self.ring.begin_write(seq, &mut stuck);
        // Only now (the `SlotWrite` resolves it from here, or it was
        // declared lost before the write began): if `stuck` unwinds in the
        // wait, `seq` is still ours, and the drop marks it lost.
        self.next = seq + 1;
        Some(begun.map(|data| SlotWrite {
            ring: self.ring,
            seq,
            data,
        }))
    }

    /// Marks every sequence not yet written lost, in order (each declaration
    /// hands its slot to the next lap), resolving dead older laps through
    /// `stuck`.
    fn mark_rest_lost(&mut self, stuck: &mut dyn FnMut(u64)) {
        while self.next < self.end {
            self.ring.mark_claim_lost(self.next, stuck);
            self.next += 1;
        }
    }
}

impl<S> Drop for BatchClaim<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    fn drop(&mut self) {
        // Without a supervisor to ask, a dead older lap is waited for until
        // someone else declares it (see the type's docs).
        self.mark_rest_lost(&mut |_| {});
    }
}

/// A claimed sequence between its claim and the start of its write, in
/// [`Broadcast::publish_wait_with`] and [`Broadcast::claim_write_with`]:
/// forgotten once the write has begun (or the sequence was found resolved);
/// dropped only if a hook unwinds in between, and then marks the sequence
/// lost as a dropped [`BatchClaim`] does (waiting for an older lap still
/// in the slot).
struct Unwritten<'a, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    ring: &'a Broadcast<S>,
    seq: u64,
}

impl<S> Drop for Unwritten<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    #[cold]
    fn drop(&mut self) {
        self.ring.mark_claim_lost(self.seq, &mut |_| {});
    }
}

/// Claimed sequences `next .. end` not yet given up, in
/// [`Broadcast::wait_for_room_or_give_up`]: forgotten when the claim has
/// room after all, empty once every sequence is abandoned; left with
/// sequences only if a hook unwinds, and then abandons them as that wait
/// would (keeping the frames in their slots, for a gating consumer that
/// may still need them), without hooks.
struct GivingUp<'a, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    ring: &'a Broadcast<S>,
    next: u64,
    end: u64,
}

impl<S> Drop for GivingUp<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    #[cold]
    fn drop(&mut self) {
        while self.next < self.end {
            // Without a supervisor to ask (the hooks are what unwound), a
            // dead older lap is waited for until someone else declares it,
            // as in a dropped `BatchClaim`.
            self.ring.abandon(self.next, &mut || false, &mut |_| {});
            self.next += 1;
        }
    }
}

/// One slot being written in place (from [`Claim::begin_write`] or
/// [`BatchClaim::begin_next`]): its stamp says `WRITING(seq)`, so readers
/// discard whatever they copy from it until [`commit`](Self::commit).
/// Payload word 0 already holds the sequence; the caller stores words
/// `1 .. len()` through [`store`](Self::store) (each a Relaxed store into
/// the slot's `AtomicU64`: readers may copy concurrently, and the seqlock
/// makes that defined and detected).
///
/// Dropping it without committing stamps the slot `LOST(seq)`: readers see
/// [`TryRecvError::Lost`] for the sequence, never the partial payload, and
/// the next lap takes the slot as after any lost declaration. Callers that
/// want no loss reported commit a replacement frame instead (the ipc
/// layer's loan does).
///
/// Hold it briefly: while it lives, readers of `seq` see it pending, and a
/// producer a full ring later waits for it.
#[must_use = "dropping a slot write marks its sequence lost"]
pub struct SlotWrite<'a, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    ring: &'a Broadcast<S>,
    seq: u64,
    /// The slot's payload words (after its stamp).
    data: &'a [AtomicU64],
}

impl<S> fmt::Debug for SlotWrite<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotWrite").field("seq", &self.seq).finish()
    }
}

impl<S> SlotWrite<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    /// The sequence being written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Payload words in the slot (word 0, the sequence, included).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the slot has no payload words (never: a ring's payload holds
    /// at least the sequence word).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Stores payload word `i`. Word 0 (the sequence) and words at or past
    /// [`len`](Self::len) are not stored: the sequence stays what the ring
    /// assigned, and nothing is written outside the slot.
    #[inline(always)]
    pub fn store(&self, i: usize, word: u64) {
        if i != 0 {
            if let Some(dst) = self.data.get(i) {
                // Relaxed: ordered for readers by `begin_write`'s Release
                // fence and the Release commit stamp (the seqlock).
                dst.store(word, Ordering::Relaxed);
            }
        }
    }

    /// Commits the slot: readers see the words stored so far (unstored
    /// words hold whatever the previous lap left) as sequence
    /// [`seq`](Self::seq). Returns the sequence.
    #[inline(always)]
    pub fn commit(self) -> u64 {
        let seq = self.seq;
        // A plain store, not a compare-and-swap like the drop's: nobody else
        // changes a stamp while it says WRITING(seq), except a supervisor
        // declaring `seq` lost, which `declare_lost`'s contract forbids for
        // a live writer (the ipc layer lists every sequence it writes in
        // flight, and never declares a live publisher's). Checked in debug
        // builds. Relaxed: a check of our own stamp.
        debug_assert_eq!(
            self.ring.slot(seq)[0].load(Ordering::Relaxed),
            stamp(seq, WRITING),
            "slot of sequence {seq} is no longer being written by this SlotWrite (declared lost while live?)"
        );
        self.ring.finish_write(seq);
        core::mem::forget(self);
        seq
    }
}

impl<S> Drop for SlotWrite<'_, S>
where
    S: Storage<Header = BroadcastHeader, Elem = AtomicU64>,
{
    fn drop(&mut self) {
        // Release on success: pairs with the Acquire stamp loads of readers
        // (they skip the sequence) and of the next lap's writer (which takes
        // the slot). A compare-and-swap, not a store: if a supervisor already
        // declared the sequence lost (it took us for dead), a later lap may
        // own the slot now, and its stamp must stay. Relaxed on failure:
        // nothing to read then.
        let _ = self.ring.slot(self.seq)[0].compare_exchange(
            stamp(self.seq, WRITING),
            stamp(self.seq, LOST),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

impl core::error::Error for PublishError {}
impl core::error::Error for TryRecvError {}
impl core::error::Error for DeclareError {}
impl core::error::Error for GatingTableFull {}

#[cfg(all(test, not(zerocast_loom)))]
mod tests;
