//! Receiving frames from a topic.
//!
//! # What is copied
//!
//! A shared-memory subscriber copies each frame once, out of the ring slot
//! into its own aligned buffer (a `TradeEvent` frame is 160 bytes), and hands
//! out zero-copy views of that buffer ([`Received::parse`], [`Received::body`]
//! through rkyv). The copy is what makes an overwriting ring safe: a slot can
//! be rewritten by a publisher at any time, so a reader may only use bytes it
//! has checked intact after copying them (the per-slot seqlock). Reading in
//! place would hand the caller bytes that can change under it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_core::broadcast::{ReadCursor, Start, TryRecvError};
use zerocast_core::frame::{
    self, ArchivedFrameHeader, Body, FrameBuf, FrameError, FrameHeader, FrameRef, MessageKind,
    MAX_FRAME_WORDS,
};

use crate::config::Producers;
use crate::error::{Error, Result};
use crate::layout::{
    current_owner, is_tombstone, name_is, now_ns, owner_alive, owner_pid, store_name, tombstone,
    tombstone_taker, SubscriberEntry, FLAG_DURABLE, FREE, ORPHAN,
};
use crate::publisher::{fork_count, forks_now, is_forked_copy};
use crate::segment::{Segment, DURABLE_WAIT};
use crate::wait::{futex_wait, sleeper_barrier, WaitStrategy, UNBARRIERED_SLICE};

/// Options of a subscriber.
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    /// Name shown in the topic's subscriber table.
    pub name: String,
    /// Where to start.
    pub start: Start,
    /// Register as gating: publishers never overwrite what this subscriber
    /// has not read (they wait or fail, by their policy).
    pub gating: bool,
    /// How to wait in [`Subscriber::recv`](crate::Subscriber::recv) and
    /// [`Subscriber::run`](crate::Subscriber::run).
    pub wait: WaitStrategy,
    /// How long a sequence may stay claimed-but-uncommitted before the
    /// subscriber checks whether its publisher died and, if so, declares it
    /// lost.
    pub stall_bound: Duration,
    /// A gating subscriber that releases slots only when
    /// [`Subscriber::release`](crate::Subscriber::release) is called (e.g.
    /// after storing what it read), not on every receive.
    pub manual_release: bool,
    /// A named, persistent gating registration (requires `gating` and a
    /// non-empty `name`, unique per topic among durable subscribers). When
    /// its process dies or drops it, its gating hold is not released: the
    /// entry stays as an orphaned hold at the last released position
    /// (dropped without `manual_release`: after everything it read;
    /// dropped while its thread unwinds: where its receives left it, which
    /// release on receipt every `RELEASE_EVERY` frames, so the frame whose
    /// processing panicked may be released already: a subscriber that must
    /// not lose one releases by hand, `manual_release`), and
    /// publishers keep waiting for it (by their gating policy). The next
    /// durable subscriber of the same name takes the hold over, without it
    /// ever being released in between: it starts at `start` (`Oldest`:
    /// the held position; `At(s)` past the hold releases what lies
    /// between, as a recorder that resumes after its log's last sequence
    /// does). An orphaned hold is dropped only by
    /// [`Segment::release_durable`](crate::Segment::release_durable)
    /// (`zerocast stat --release-durable NAME`). Registering a durable
    /// subscriber waits (up to [`DURABLE_WAIT`]) while another process
    /// registers one or a live reaper holds an entry of the same name, then
    /// fails with [`Error::DurableBusy`].
    pub durable: bool,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        Self {
            name: String::new(),
            start: Start::Newest,
            gating: false,
            wait: WaitStrategy::default(),
            stall_bound: crate::segment::STALL_BOUND,
            manual_release: false,
            durable: false,
        }
    }
}

/// Why no frame was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing new (only from the non-blocking calls, or a timeout).
    Empty,
    /// This many frames were overwritten before this subscriber read them;
    /// it continues with the oldest frame still in the ring.
    Lagged(u64),
    /// This sequence was lost: its publisher died between claim and commit
    /// (or marked it lost: [`ShmPublisher::publish_lost`](crate::ShmPublisher::publish_lost),
    /// which `zerocast bridge import` uses for a loss at the origin).
    Lost(u64),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("no frame"),
            Self::Lagged(n) => write!(f, "lagged: {n} frames overwritten before they were read"),
            Self::Lost(s) => write!(f, "sequence {s} lost: its publisher died mid-publish"),
        }
    }
}

impl std::error::Error for RecvError {}

/// A received frame: its sequence and its bytes (in the subscriber's buffer,
/// valid until the next receive).
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Topic sequence.
    pub seq: u64,
    /// The frame: header and archived body.
    pub bytes: &'a [u8],
}

impl<'a> Received<'a> {
    /// Validated view of the header and body, whatever the kind.
    pub fn parse(&self) -> Result<(&'a ArchivedFrameHeader, FrameRef<'a>), FrameError> {
        FrameRef::parse(self.bytes)
    }

    /// Validated view of a body of kind `B`.
    pub fn body<B: Body>(&self) -> Result<&'a B::Archived, FrameError> {
        frame::decode::<B>(self.bytes).map(|(_, b)| b)
    }

    /// The frame's header, if the bytes hold one (only a corrupt segment
    /// has a slot too short for it). Not validated: see
    /// [`parse`](Self::parse) for that.
    pub fn header(&self) -> Option<FrameHeader> {
        FrameHeader::read(self.bytes)
    }

    /// The frame's kind, if the header names a known one.
    pub fn kind(&self) -> Option<MessageKind> {
        self.header()?.message_kind()
    }

    /// The sequence this frame retransmits, if it is a retransmission (see
    /// `ShmPublisher::publish_retransmit`; iceoryx2 publishers never mark
    /// one).
    pub fn retransmit_of(&self) -> Option<u64> {
        self.header()?.retransmit_of()
    }

    /// Publish time from the header, ns since the Unix epoch (0 if the
    /// bytes hold no header).
    pub fn publish_ns(&self) -> u64 {
        self.header().map_or(0, |h| h.publish_ns)
    }
}

/// Receives frames from one topic over shared memory.
///
/// A subscriber belongs to the process that registered it. A copy inherited
/// by a forked child detaches at its first use there: it reads on from the
/// parent's position at the fork as a non-gating subscriber of its own (so
/// publishers do not wait for it, and it may be lapped: `Lagged`), and it
/// never writes the parent's gating slot nor its entry in the subscriber
/// table (monitors see only the parent). A child that must gate, or be
/// seen by monitors, opens a new subscriber. (Detection relies on a
/// `pthread_atfork` handler: a raw `clone` syscall bypasses it. Where the
/// handler could not be installed, ENOMEM, every poll compares the
/// creator's pid with `getpid()` instead: a system call per poll.)
pub struct ShmSubscriber {
    seg: Arc<Segment>,
    entry: usize,
    cursor: ReadCursor,
    buf: FrameBuf,
    words: usize,
    stall_bound: Duration,
    empty_polls: u32,
    /// Receives and empty polls since `last_seen` was last refreshed.
    calls_unseen: u32,
    empty_since: Option<Instant>,
    /// Stall checks run (tests watch when they run).
    #[cfg(test)]
    stall_checks: u32,
    lagged: u64,
    durable: bool,
    /// The process that registered us: a copy inherited by a forked child
    /// leaves the entry alone when dropped.
    pid: u32,
    /// The process's fork count (`publisher::fork_count`) when we were
    /// registered: another count means we are a copy in a forked child.
    forks: u32,
    /// Set once a copy in a forked child has dropped the parent's gating
    /// slot from its cursor (never freeing it); from then on nothing is
    /// stored into the parent's entry.
    detached: bool,
}

impl std::fmt::Debug for ShmSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmSubscriber")
            .field("topic", &self.seg.topic())
            .field("next", &self.cursor.next())
            .finish_non_exhaustive()
    }
}

/// Empty polls between clock reads in the stall check.
const POLLS_PER_CLOCK: u32 = 256;

/// Empty polls between stall checks once a check has seen the next
/// sequence pending (until it is committed or resolved).
const STALL_RECHECK_POLLS: u32 = 16;

impl ShmSubscriber {
    /// Registers a subscriber in `seg`'s table (and, if gating, in its ring).
    /// A durable subscriber first takes over the orphaned hold of its name,
    /// if there is one (see [`SubscriberOptions::durable`]).
    pub fn new(seg: Arc<Segment>, options: &SubscriberOptions) -> Result<Self> {
        if options.durable && (!options.gating || options.name.is_empty()) {
            return Err(Error::BadOptions(
                "a durable subscriber must be gating and have a name".to_owned(),
            ));
        }
        seg.reap();
        let me = current_owner();
        let h = seg.header();
        let name = if options.name.is_empty() {
            format!("sub-{}", std::process::id())
        } else {
            options.name.clone()
        };
        // Durable names are unique: looking for the name and registering it
        // happen under the segment's durable-name lock.
        let mut lock = if options.durable {
            Some(seg.lock_durable(&name)?)
        } else {
            None
        };
        let adopted = if options.durable {
            Self::adopt(&seg, &mut lock, &name, me, options.start)?
        } else {
            None
        };
        let (entry, mut cursor) = match adopted {
            Some(found) => found,
            None => Self::register(&seg, &name, me, options)?,
        };
        let e = &h.subscribers[entry];
        cursor.set_manual_release(options.manual_release);
        // Relaxed: hints for monitors, published with the entry below.
        e.gating.store(
            cursor.gating_slot().map_or(0, |g| g as u32 + 1),
            Ordering::Relaxed,
        );
        // Relaxed: as above.
        e.cursor.store(cursor.next(), Ordering::Relaxed);
        // Relaxed: as above.
        e.lagged.store(0, Ordering::Relaxed);
        // Relaxed: as above.
        e.last_seen_ns.store(now_ns(), Ordering::Relaxed);
        // Release: publishes the entry (name, flags, hints) to monitors and
        // to a reaper that takes it after we die, whose Acquire CAS on the
        // owner word pairs with this store. The entry is already ours
        // (claimed from FREE, or held as our tombstone while adopting);
        // only we write its owner word while we live.
        e.pid.store(me, Ordering::Release);
        drop(lock);
        let words = seg.ring().payload_words().min(MAX_FRAME_WORDS);
        Ok(Self {
            seg,
            entry,
            cursor,
            buf: FrameBuf::default(),
            words,
            stall_bound: options.stall_bound,
            empty_polls: 0,
            calls_unseen: 0,
            empty_since: None,
            #[cfg(test)]
            stall_checks: 0,
            lagged: 0,
            durable: options.durable,
            pid: std::process::id(),
            forks: fork_count(),
            detached: false,
        })
    }

    /// Claims a free entry and, if gating, a ring gating slot tagged with
    /// it. The entry's owner word is `me` on return (the caller publishes
    /// the entry with a Release store of it).
    fn register(
        seg: &Segment,
        name: &str,
        me: u64,
        options: &SubscriberOptions,
    ) -> Result<(usize, ReadCursor)> {
        if options.gating
            && seg.producers() == Producers::Single
            && !crate::wait::registration_barrier_works()
        {
            // The publisher may claim with only a compiler fence, trusting
            // every registration to run the barrier (see `wait`).
            return Err(Error::NoRegistrationBarrier {
                topic: seg.topic().to_owned(),
            });
        }
        let h = seg.header();
        let entry = h
            .subscribers
            .iter()
            .position(|s| {
                // AcqRel: claims the entry; Acquire pairs with the Release
                // store of FREE by its previous holder (its stores to the
                // entry happen before ours). Only a FREE entry is claimed:
                // never a tombstone or an orphaned durable hold.
                s.pid
                    .compare_exchange(FREE, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| Error::SubscriberTableFull {
                topic: seg.topic().to_owned(),
            })?;
        let e = &h.subscribers[entry];
        store_name(&e.name, name);
        // Relaxed: published by our Release store of the owner word; a
        // reaper of a half-registered entry (we died) treats a durable one
        // as an orphan and frees any other, both recoverable.
        e.flags.store(
            if options.durable { FLAG_DURABLE } else { 0 },
            Ordering::Relaxed,
        );
        if !options.gating {
            return Ok((entry, seg.ring().cursor(options.start)));
        }
        match seg.register_gating_for(entry, options.start) {
            Some(cursor) => Ok((entry, cursor)),
            None => {
                // Relaxed: published by the Release store below.
                e.flags.store(0, Ordering::Relaxed);
                // Release: frees the entry we claimed.
                e.pid.store(FREE, Ordering::Release);
                if seg.producers() == Producers::Single
                    && !crate::wait::registration_barrier_works()
                {
                    // The ring gave the registration up: the barrier failed.
                    return Err(Error::NoRegistrationBarrier {
                        topic: seg.topic().to_owned(),
                    });
                }
                Err(Error::GatingTableFull {
                    topic: seg.topic().to_owned(),
                })
            }
        }
    }

    /// A durable subscriber named `name` (the caller holds the durable-name
    /// lock): refuses if a live one holds the name; takes over an orphaned
    /// hold of that name if there is one (the entry passes ORPHAN ->
    /// tombstone -> `me`, and its gating slot stays held throughout). A
    /// same-name entry whose owner died unreaped, or whose taker died, is
    /// reaped first; one a live process has taken (a reaper, or
    /// `release_durable`) is waited for. `None`: no hold to take over.
    /// On `Some`, the entry is still our tombstone: the caller publishes it.
    fn adopt<'s>(
        seg: &'s Segment,
        lock: &mut Option<crate::segment::DurableLock<'s>>,
        name: &str,
        me: u64,
        start: Start,
    ) -> Result<Option<(usize, ReadCursor)>> {
        let h = seg.header();
        let deadline = Instant::now() + DURABLE_WAIT;
        'scan: loop {
            let mut busy = None;
            let mut orphan = None;
            for (index, e) in h.subscribers.iter().enumerate() {
                // Acquire: pairs with the Release owner stores.
                let word = e.pid.load(Ordering::Acquire);
                // Relaxed: ordered after the Acquire load above.
                if word == FREE
                    || e.flags.load(Ordering::Relaxed) & FLAG_DURABLE == 0
                    || !name_is(&e.name, name)
                {
                    continue;
                }
                if word == ORPHAN {
                    orphan.get_or_insert(index);
                    continue;
                }
                let owner = if is_tombstone(word) {
                    tombstone_taker(word)
                } else {
                    word
                };
                if owner_alive(owner) {
                    if is_tombstone(word) {
                        busy = Some(owner_pid(owner));
                        continue;
                    }
                    return Err(Error::DurableNameTaken {
                        topic: seg.topic().to_owned(),
                        name: name.to_owned(),
                        pid: owner_pid(word),
                    });
                }
                // Dead owner not yet reaped, or dead taker: finish it (an
                // orphan or a free entry), then look again.
                seg.reap_subscriber(index, word);
                busy = Some(owner_pid(owner));
                if Instant::now() >= deadline {
                    break;
                }
                continue 'scan;
            }
            if let Some(pid) = busy {
                if Instant::now() >= deadline {
                    return Err(Error::DurableBusy {
                        topic: seg.topic().to_owned(),
                        name: name.to_owned(),
                        pid,
                    });
                }
                // Not under the lock: a wait for this name must not hold
                // up durable subscribers of other names. Taken again before
                // the next scan.
                *lock = None;
                std::thread::sleep(Duration::from_millis(1));
                *lock = Some(seg.lock_durable(name)?);
                continue;
            }
            let Some(index) = orphan else {
                return Ok(None);
            };
            let e = &h.subscribers[index];
            // AcqRel: takes the orphan; Acquire pairs with the Release store
            // of ORPHAN (the previous owner's stores are visible).
            if e.pid
                .compare_exchange(ORPHAN, tombstone(me), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                // Taken meanwhile (`release_durable`): look again.
                continue;
            }
            // Checked again under the tombstone: the entry may have changed
            // hands between the name check and the swap.
            // Relaxed: we hold the tombstone.
            let durable = e.flags.load(Ordering::Relaxed) & FLAG_DURABLE != 0;
            if !durable || !name_is(&e.name, name) {
                // Release: gives it back untouched.
                e.pid.store(ORPHAN, Ordering::Release);
                continue;
            }
            let adopted = seg.gating_slots_of(index).find_map(|slot| {
                // SAFETY: we hold the entry's tombstone, and the slot is
                // tagged with the entry: its previous holder is gone (the
                // entry was orphaned) and nobody else frees or takes it
                // while the tag names the entry.
                unsafe { seg.ring().adopt_gating(slot, start) }
            });
            let Some(cursor) = adopted else {
                // Its hold is gone: nothing to take over; free the entry.
                seg.settle_subscriber(index, e);
                continue;
            };
            return Ok(Some((index, cursor)));
        }
    }

    fn entry(&self) -> &SubscriberEntry {
        &self.seg.header().subscribers[self.entry]
    }

    /// The segment.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Next sequence this subscriber will read.
    pub fn next_seq(&self) -> u64 {
        self.cursor.next()
    }

    /// Frames lost to lapping so far.
    pub fn lagged_total(&self) -> u64 {
        self.lagged
    }

    /// Receives into the internal buffer; returns the sequence.
    #[inline]
    pub fn poll(&mut self) -> Result<u64, RecvError> {
        if forks_now() != self.forks && is_forked_copy(self.forks, self.pid) {
            return self.poll_detached();
        }
        let ring = self.seg.ring();
        match ring.try_recv(&mut self.cursor, &mut self.buf.0[..self.words]) {
            Ok(seq) => {
                self.empty_polls = 0;
                self.empty_since = None;
                // A subscriber that keeps receiving may never poll empty
                // POLLS_PER_CLOCK times in a row: its `last_seen` is
                // refreshed every POLLS_PER_CLOCK calls, frames and empty
                // polls alike (a clock read, no look at the claim word).
                self.calls_unseen += 1;
                if self.calls_unseen >= POLLS_PER_CLOCK {
                    self.refresh_last_seen();
                }
                // Relaxed: a progress hint for monitors (our own cache line).
                self.entry()
                    .cursor
                    .store(self.cursor.next(), Ordering::Relaxed);
                Ok(seq)
            }
            Err(TryRecvError::Lagged(n)) => {
                // The cursor moved: whatever was seen pending is behind it.
                self.empty_since = None;
                self.lagged += n;
                let e = self.entry();
                // Relaxed: counters for monitors.
                e.lagged.store(self.lagged, Ordering::Relaxed);
                e.cursor.store(self.cursor.next(), Ordering::Relaxed);
                Err(RecvError::Lagged(n))
            }
            Err(TryRecvError::Lost(seq)) => {
                // Resolved (maybe by someone else): the next sequence's
                // stall is timed from when a check sees it pending, not
                // from when this one was first seen.
                self.empty_since = None;
                // Relaxed: as above.
                self.entry()
                    .cursor
                    .store(self.cursor.next(), Ordering::Relaxed);
                Err(RecvError::Lost(seq))
            }
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => {
                self.on_empty();
                Err(RecvError::Empty)
            }
        }
    }

    /// [`poll`](Self::poll) for a copy inherited by a forked child: reads
    /// on through a non-gating cursor, with no store into the parent's
    /// entry (see [`ShmSubscriber`]).
    #[cold]
    #[inline(never)]
    fn poll_detached(&mut self) -> Result<u64, RecvError> {
        self.detach();
        let ring = self.seg.ring();
        match ring.try_recv(&mut self.cursor, &mut self.buf.0[..self.words]) {
            Ok(seq) => {
                self.empty_polls = 0;
                self.empty_since = None;
                Ok(seq)
            }
            Err(TryRecvError::Lagged(n)) => {
                self.empty_since = None;
                self.lagged += n;
                Err(RecvError::Lagged(n))
            }
            Err(TryRecvError::Lost(seq)) => {
                self.empty_since = None;
                Err(RecvError::Lost(seq))
            }
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => {
                // The stall check still runs (resolving a dead publisher's
                // sequence is any reader's job); its `last_seen` refresh
                // is skipped once detached.
                self.on_empty();
                Err(RecvError::Empty)
            }
        }
    }

    /// In a forked child, once: swaps the cursor for a non-gating one at
    /// the same position. The gating slot stays the parent's, untouched:
    /// neither released (moved) nor freed.
    #[cold]
    fn detach(&mut self) {
        if !self.detached {
            self.detached = true;
            self.cursor = self.seg.ring().cursor(Start::At(self.cursor.next()));
        }
    }

    /// Bookkeeping for an empty poll: every few hundred in a row, read the
    /// clock, refresh `last_seen`, and resolve a sequence stalled past the
    /// bound (every few once one has been seen pending); `last_seen` is
    /// also refreshed every few hundred calls of any kind.
    #[cold]
    fn on_empty(&mut self) {
        self.empty_polls = self.empty_polls.wrapping_add(1);
        self.calls_unseen += 1;
        // Once a check has seen the next sequence pending, the next checks
        // come sooner: a sparse poller (`try_recv` once a millisecond)
        // would otherwise wait another POLLS_PER_CLOCK polls after the
        // bound passed. Only while a sequence is pending, which a live
        // publisher's never stays for long.
        let every = if self.empty_since.is_some() {
            STALL_RECHECK_POLLS
        } else {
            POLLS_PER_CLOCK
        };
        // Not on the first empty poll after a frame: a caught-up
        // subscriber polls empty a few times between every two frames, and
        // the check reads the clock and the ring's claim word, the line the
        // publisher writes on every claim. Read there, it costs the
        // publisher a cache miss on its next publish (a stall of its
        // locked claim): a round trip's worth of latency per frame.
        if self.empty_polls % every == 0 {
            self.check_stall();
        } else if self.calls_unseen >= POLLS_PER_CLOCK {
            // Frames every few empty polls: the streaks never reach a
            // check, and this call still counts as a sign of life.
            self.refresh_last_seen();
        }
    }

    /// Stores the time in the entry's `last_seen`.
    #[cold]
    fn refresh_last_seen(&mut self) {
        self.calls_unseen = 0;
        if self.detached {
            // A forked child's copy: the entry is the parent's.
            return;
        }
        // Relaxed: a liveness hint for monitors.
        self.entry().last_seen_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Refreshes `last_seen` and resolves the next sequence if it has been
    /// claimed but not committed for longer than the stall bound.
    fn check_stall(&mut self) {
        #[cfg(test)]
        {
            self.stall_checks += 1;
        }
        let now = Instant::now();
        self.refresh_last_seen();
        let next = self.cursor.next();
        if !self.seg.ring().is_pending(next) {
            self.empty_since = None;
            return;
        }
        let since = *self.empty_since.get_or_insert(now);
        if now.duration_since(since) >= self.stall_bound {
            // SAFETY: `next` has been pending for the stall bound.
            unsafe { self.seg.resolve_stalled(next) };
            self.empty_since = None;
        }
    }

    /// Releases every slot read so far to publishers (gating subscribers
    /// with manual release). If the subscriber's gating slot was freed
    /// under it (reclaimed as if it were dead), it becomes non-gating
    /// instead of writing into a slot that is no longer its own. A copy
    /// inherited by a forked child holds no slot: nothing to release.
    pub fn release(&mut self) {
        if forks_now() != self.forks && is_forked_copy(self.forks, self.pid) {
            self.detach();
            return;
        }
        self.seg.ring().release(&mut self.cursor);
    }

    /// The frame last received by [`poll`](Self::poll).
    pub fn last(&self, seq: u64) -> Received<'_> {
        Received {
            seq,
            bytes: frame::words_as_bytes(&self.buf.0[..self.words]),
        }
    }

    /// Sleeps on the segment's futex until a publisher wakes it or `timeout`
    /// passes, unless a frame arrives first (then it is in the buffer).
    pub fn sleep(&mut self, timeout: Duration) -> Result<u64, RecvError> {
        let h = self.seg.header();
        // SeqCst: ordered before the re-check below by the barrier after
        // it (see `wait::sleeper_barrier`); a publisher whose `sleepers`
        // load comes after that barrier sees it.
        h.sleepers.fetch_add(1, Ordering::SeqCst);
        // SeqCst: read before the re-check, so a wake after it changes it.
        let observed = h.wake_seq.load(Ordering::SeqCst);
        // The sleeper's half of the wake-up protocol (`crate::wait`):
        // orders the increment above before the re-check below against
        // every publisher's commit and its `sleepers` load.
        let barriered = sleeper_barrier();
        let result = self.poll();
        if result == Err(RecvError::Empty) {
            // A sleeper polls rarely: check for a stalled publisher on every
            // sleep, not every few hundred polls.
            self.check_stall();
            let mut slice = timeout.min(self.stall_bound);
            if !barriered {
                // A publisher may have missed our increment: sleep briefly.
                slice = slice.min(UNBARRIERED_SLICE);
            }
            futex_wait(&self.seg.header().wake_seq, observed, slice);
        }
        // SeqCst: pairs with nothing (publishers load `sleepers` Relaxed);
        // a count still seen after we woke costs one needless wake.
        self.seg.header().sleepers.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl Drop for ShmSubscriber {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A copy inherited by a forked child: the entry and its gating
            // hold are the parent's, which still reads through them.
            return;
        }
        if self.durable {
            // The hold stays where it was last released (a recorder
            // releases only what its log has); the next durable subscriber
            // of this name takes it over. One that releases automatically
            // releases what it read first: its receives release in steps
            // (every `RELEASE_EVERY` frames, and on an empty poll), and a
            // drop between two left the next owner up to 63 frames this
            // one had already read. Not while unwinding: a frame taken by
            // a receive whose processing panicked was not processed, and
            // is the next owner's again, unless that receive was one of
            // the steps, which release on receipt (see `durable`).
            if !self.cursor.manual_release() && !std::thread::panicking() {
                self.seg.ring().release(&mut self.cursor);
            }
            // Release: pairs with the Acquire loads of `adopt` and of the
            // monitors; our last release happened before.
            self.entry().pid.store(ORPHAN, Ordering::Release);
            return;
        }
        let e = self.entry();
        // Relaxed: a hint; the entry is freed by the Release store below.
        e.gating.store(0, Ordering::Relaxed);
        if let Some(slot) = self.cursor.gating_slot() {
            // Frees the ring slot, then its owner tag: killed in between,
            // the tag keeps the slot ours until a reaper of this entry
            // finishes (nobody else can take the slot meanwhile).
            self.seg.release_gating_slot_of(self.entry, slot);
        }
        // Relaxed: published by the Release store below.
        e.flags.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire owner loads (CAS) of registration.
        e.pid.store(FREE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PublisherOptions, ShmPublisher};
    use zerocast_core::frame::Heartbeat;

    /// Regression: the stall check (a clock read and a load of the ring's
    /// claim word) ran on the first empty poll after every frame, so a
    /// caught-up subscriber pulled the publisher's claim line into its
    /// cache between every two frames and the publisher's next claim
    /// waited for it: about a cross-core round trip added to every
    /// one-way latency (ping-pong one-way 626 ns against 336 ns without,
    /// `pingpong_parts`, AMD EPYC guest). The check now runs once every
    /// `POLLS_PER_CLOCK` empty polls, the first after that many. Counted
    /// by `stall_checks` (test builds only): `last_seen`, which this test
    /// first watched, is now also refreshed every `POLLS_PER_CLOCK` calls
    /// of any kind.
    #[test]
    fn regression_stall_check_ran_on_the_first_empty_poll_after_every_frame() {
        let path = std::env::temp_dir().join(format!("zc-stallpoll-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "stallpoll", 64, 32).unwrap());
        let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut sub = ShmSubscriber::new(seg.clone(), &SubscriberOptions::default()).unwrap();
        for round in 0..3 {
            publisher
                .publish(&Heartbeat {
                    publisher_id: [0; 16],
                    sequence: round,
                    timestamp: 0,
                })
                .unwrap();
            assert!(sub.poll().is_ok(), "round {round}: the frame");
            let checks = sub.stall_checks;
            for poll in 1..POLLS_PER_CLOCK {
                assert_eq!(sub.poll(), Err(RecvError::Empty));
                assert_eq!(
                    sub.stall_checks, checks,
                    "round {round}: empty poll {poll} ran the stall check"
                );
            }
            assert_eq!(sub.poll(), Err(RecvError::Empty));
            assert_eq!(
                sub.stall_checks,
                checks + 1,
                "round {round}: the stall check never ran in {POLLS_PER_CLOCK} empty polls"
            );
        }
        drop((publisher, sub));
        std::fs::remove_file(&path).unwrap();
    }

    /// Regression: `last_seen` ("last time it read or polled", exported as
    /// `zerocast_subscriber_last_seen_seconds`) was refreshed only by
    /// empty polls, so a subscriber that kept receiving showed as unseen
    /// since it registered. It is now refreshed every `POLLS_PER_CLOCK`
    /// frames too.
    #[test]
    fn regression_a_busy_subscriber_never_refreshed_last_seen() {
        let path = std::env::temp_dir().join(format!("zc-busyseen-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let frames = u64::from(POLLS_PER_CLOCK) * 2;
        let seg = Arc::new(Segment::create(&path, "busyseen", 1024, 32).unwrap());
        let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut sub = ShmSubscriber::new(seg.clone(), &SubscriberOptions::default()).unwrap();
        // Relaxed: single-threaded test.
        let entry = &seg.header().subscribers[sub.entry];
        entry.last_seen_ns.store(0, Ordering::Relaxed);
        for i in 0..frames {
            let hb = Heartbeat {
                publisher_id: [0; 16],
                sequence: i,
                timestamp: 0,
            };
            publisher.publish(&hb).unwrap();
            // Never empty: a frame on every poll.
            assert!(sub.poll().is_ok(), "frame {i}");
        }
        // Relaxed: single-threaded test.
        assert_ne!(
            entry.last_seen_ns.load(Ordering::Relaxed),
            0,
            "{frames} frames received without an empty poll, last_seen never refreshed"
        );
        drop((publisher, sub));
        std::fs::remove_file(&path).unwrap();
    }

    /// A segment in the temp dir, a subscriber at its next sequence with a
    /// 20 ms stall bound, and the segment's path (to remove).
    fn stall_fixture(tag: &str) -> (Arc<Segment>, ShmSubscriber, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("zc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, tag, 64, 32).unwrap());
        let sub = ShmSubscriber::new(
            seg.clone(),
            &SubscriberOptions {
                stall_bound: Duration::from_millis(20),
                ..Default::default()
            },
        )
        .unwrap();
        (seg, sub, path)
    }

    /// Claims the ring's next sequence and abandons it, as a publisher
    /// that dies right after its claim (nothing records it in flight).
    fn abandon_a_claim(seg: &Segment) -> u64 {
        let claim = seg
            .ring()
            .try_claim(&mut zerocast_core::broadcast::GatingCache::default())
            .unwrap();
        let seq = claim.seq();
        std::mem::forget(claim);
        seq
    }

    /// Review of the stall-check change (6de126f): `last_seen` was
    /// refreshed only every 256 frames or 256 empty polls *in a row*, so a
    /// subscriber whose frames come every few hundred polls (a 5 Hz topic
    /// polled every millisecond: 200 empty polls between frames) refreshed
    /// it only every 256 frames (51 s there), and the health report showed
    /// a subscriber polling a thousand times a second as unseen for most
    /// of a minute. Every call now counts toward the refresh.
    #[test]
    fn regression_last_seen_went_stale_when_frames_came_every_few_hundred_polls() {
        let path = std::env::temp_dir().join(format!("zc-sparseseen-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "sparseseen", 64, 32).unwrap());
        let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut sub = ShmSubscriber::new(seg.clone(), &SubscriberOptions::default()).unwrap();
        // Relaxed: single-threaded test.
        seg.header().subscribers[sub.entry]
            .last_seen_ns
            .store(0, Ordering::Relaxed);
        let (rounds, empties) = (8, 200);
        for round in 0..rounds {
            let hb = Heartbeat {
                publisher_id: [0; 16],
                sequence: round,
                timestamp: 0,
            };
            publisher.publish(&hb).unwrap();
            assert!(sub.poll().is_ok(), "round {round}: the frame");
            for _ in 0..empties {
                assert_eq!(sub.poll(), Err(RecvError::Empty));
            }
        }
        assert_ne!(
            sub_entry_last_seen(&seg),
            0,
            "{} calls ({rounds} frames, {empties} empty polls after each) never refreshed last_seen",
            rounds * (empties + 1)
        );
        drop((publisher, sub));
        std::fs::remove_file(&path).unwrap();
    }

    /// Review of the stall-check change (6de126f): the check that first
    /// sees a sequence pending now runs at the 256th empty poll (it ran at
    /// the first), and the next one, which may resolve it, 256 polls
    /// later: a subscriber that polls sparsely (`try_recv` once a
    /// millisecond) took about 512 ms to get past a dead publisher with a
    /// 50 ms stall bound, twice as long as before. Once a sequence is
    /// seen pending, the check now runs every 16 empty polls until it is
    /// resolved or committed.
    #[test]
    fn regression_a_sparse_poller_waited_a_whole_check_interval_to_resolve_a_stall() {
        let (seg, mut sub, path) = stall_fixture("sparsestall");
        let dead = abandon_a_claim(&seg);
        assert_eq!(sub.next_seq(), dead);
        for _ in 0..POLLS_PER_CLOCK {
            assert_eq!(sub.poll(), Err(RecvError::Empty));
        }
        // The check at the 256th poll saw it pending; the bound passes
        // (what is under test is time passing, not an ordering).
        std::thread::sleep(Duration::from_millis(30));
        let resolved_at = (1..=32).find(|_| sub.poll() == Err(RecvError::Lost(dead)));
        assert!(
            resolved_at.is_some_and(|n| n <= STALL_RECHECK_POLLS + 1),
            "a sequence pending past its stall bound was resolved at poll {resolved_at:?} after it \
             (want at most {})",
            STALL_RECHECK_POLLS + 1
        );
        drop(sub);
        std::fs::remove_file(&path).unwrap();
    }

    /// Review (pre-existing, made reachable by the sparser checks): a
    /// sequence resolved by someone else (another subscriber, a waiting
    /// publisher, a reaper) reached this subscriber as `Lost` without
    /// resetting the time it first saw it pending, so the next pending
    /// sequence, claimed an instant ago, was declared lost at the next
    /// check as if it had been pending since: `resolve_stalled` called
    /// against its contract (a live publisher between its claim and its
    /// in-flight record would be told its frame is lost).
    #[test]
    fn regression_a_sequence_resolved_elsewhere_left_the_stall_clock_running() {
        let (seg, mut sub, path) = stall_fixture("stalestall");
        let first = abandon_a_claim(&seg);
        for _ in 0..POLLS_PER_CLOCK {
            assert_eq!(sub.poll(), Err(RecvError::Empty));
        }
        std::thread::sleep(Duration::from_millis(30));
        // SAFETY: the claim was abandoned (its producer "died") more than
        // a stall bound ago.
        assert!(unsafe { seg.resolve_stalled(first) }.is_some());
        // A fresh claim: pending for an instant only.
        let fresh = abandon_a_claim(&seg);
        assert_eq!(sub.poll(), Err(RecvError::Lost(first)));
        for poll in 1..=POLLS_PER_CLOCK * 2 {
            assert_eq!(
                sub.poll(),
                Err(RecvError::Empty),
                "empty poll {poll}: sequence {fresh}, claimed an instant ago, declared lost"
            );
        }
        drop(sub);
        std::fs::remove_file(&path).unwrap();
    }

    /// Regression: a `ShmSubscriber` inherited through `fork` is the same
    /// value in the child, and polling it there released (CAS) the
    /// parent's gating slot to the child's position and stored the child's
    /// progress into the parent's table entry: publishers could overwrite
    /// frames the gating parent never read, and monitors showed the
    /// child's position as the parent's. A forked child's copy now reads
    /// on as a non-gating subscriber and never writes either.
    #[test]
    fn regression_a_forked_subscriber_copy_moved_the_parents_gating_slot() {
        let path = std::env::temp_dir().join(format!("zc-forksub-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "forksub", 64, 32).unwrap());
        let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut sub = ShmSubscriber::new(
            seg.clone(),
            &SubscriberOptions {
                gating: true,
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
        let slot = sub.cursor.gating_slot().expect("a gating subscriber");
        for i in 0..3 {
            publisher
                .publish(&Heartbeat {
                    publisher_id: [0; 16],
                    sequence: i,
                    timestamp: 0,
                })
                .unwrap();
        }
        let entry = &seg.header().subscribers[sub.entry];
        // Relaxed: single-threaded until the fork; read back after waitpid.
        entry.last_seen_ns.store(0, Ordering::Relaxed);
        let before = seg.ring().gating_position(slot);
        // SAFETY: the child only polls the subscriber (loads and stores in
        // the shared mapping, no allocation, no lock) and leaves with
        // _exit, reporting through its exit code.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let mut frames = 0;
            // Past POLLS_PER_CLOCK empty polls: the stall check's
            // `last_seen` refresh runs too.
            for _ in 0..2 * POLLS_PER_CLOCK {
                if sub.poll().is_ok() {
                    frames += 1;
                }
            }
            // SAFETY: ends the child without running the test harness.
            unsafe { libc::_exit(if frames == 3 { 0 } else { 10 + frames }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        let after = seg.ring().gating_position(slot);
        // Relaxed: the child is gone (waitpid).
        let (cursor, last_seen) = (
            entry.cursor.load(Ordering::Relaxed),
            entry.last_seen_ns.load(Ordering::Relaxed),
        );
        // The parent still reads every frame.
        let mut parent = Vec::new();
        while let Ok(seq) = sub.poll() {
            parent.push(seq);
        }
        drop((publisher, sub));
        std::fs::remove_file(&path).unwrap();
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child's copy did not read the 3 frames (10 + frames read)"
        );
        assert_eq!(
            after, before,
            "the child's copy moved the parent's gating slot"
        );
        assert_eq!(
            cursor, 0,
            "the child's copy stored its cursor in the parent's entry"
        );
        assert_eq!(
            last_seen, 0,
            "the child's copy refreshed the parent's last_seen"
        );
        assert_eq!(parent, [0, 1, 2], "the parent lost frames it never read");
    }

    /// Review: the fork detection of a subscriber copy rests on a
    /// `pthread_atfork` handler, and a failed registration (ENOMEM) was
    /// ignored: a forked child's copy then looked like the parent's own
    /// and moved the parent's gating slot, as before the detection
    /// existed. Where the handler is missing, a handle now compares its
    /// creator's pid with `getpid()` on the branch the count check sends
    /// it to. Reruns itself in a fresh process where the registration is
    /// made to fail (`ATFORK_FAILS_ENV`), then runs the fork test there.
    #[test]
    fn regression_a_forked_subscriber_copy_did_not_detach_when_atfork_registration_failed() {
        if std::env::var_os(crate::publisher::ATFORK_FAILS_ENV).is_some() {
            regression_a_forked_subscriber_copy_moved_the_parents_gating_slot();
            return;
        }
        crate::test_child::rerun_alone_with(
            "subscriber::tests::regression_a_forked_subscriber_copy_did_not_detach_when_atfork_registration_failed",
            crate::publisher::ATFORK_FAILS_ENV,
        );
    }

    fn sub_entry_last_seen(seg: &Segment) -> u64 {
        // Relaxed: single-threaded test.
        seg.header()
            .subscribers
            .iter()
            .find(|e| e.pid.load(Ordering::Relaxed) != FREE)
            .map(|e| e.last_seen_ns.load(Ordering::Relaxed))
            .expect("the subscriber's entry")
    }
}
