//! Publishing frames to a topic.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_core::broadcast::{GatingCache, PublishError, SlotWrite};
use zerocast_core::frame::{self, Body, FrameHeader, Heartbeat, HEADER_WORDS};
use zerocast_core::storage::Raw;

use crate::config::Producers;
use crate::error::{Error, Result};
use crate::layout::{
    current_owner, now_ns, owner_pid, store_name, tombstone, PublisherEntry, FREE,
    INFLIGHT_CLAIMING, MAX_PUBLISHERS,
};
use crate::segment::{Segment, STALL_BOUND};
use crate::wait::futex_wake;

/// What a publish does when a gating subscriber has not released the slot it
/// would overwrite. Without gating subscribers, publishing never waits for
/// a subscriber.
///
/// The same limit (at least a millisecond, also for `Fail`) applies when
/// the slot is still held by another live publisher's sequence a full ring
/// older, not yet committed (a loan held, or one forgotten by a publisher
/// that has not published since): the publish then fails with
/// [`Error::StuckBehind`] without claiming. An older sequence of a dead
/// publisher is waited for until it is resolved as lost (the stall bound).
/// The check is made before the claim; a publish that raced other
/// publishers to a held slot after it waits for that sequence unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatingPolicy {
    /// Return [`Error::RingFull`] at once (after one check for dead gating
    /// subscribers to reclaim).
    Fail,
    /// Spin up to this long for the slowest gating subscriber, then fail.
    /// While it waits, the publisher checks about every millisecond whether
    /// the gating subscribers it waits for are alive, and reclaims the dead
    /// ones (not durable holds, which it keeps waiting for).
    Wait(Duration),
}

impl Default for GatingPolicy {
    fn default() -> Self {
        Self::Wait(Duration::from_millis(100))
    }
}

/// The heartbeats a publisher sends: its name as a 16-byte id (cut to 16
/// bytes) and a counter. Shared by both transports.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatSource {
    id: [u8; 16],
    count: u64,
}

impl HeartbeatSource {
    pub(crate) fn new(name: &str) -> Self {
        let mut id = [0u8; 16];
        let n = name.len().min(16);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Self { id, count: 0 }
    }

    /// The next heartbeat, stamped now.
    pub(crate) fn next(&mut self) -> Heartbeat {
        self.count += 1;
        Heartbeat {
            publisher_id: self.id,
            sequence: self.count,
            timestamp: now_ns() as i64,
        }
    }
}

/// Options of a publisher.
#[derive(Debug, Clone, Default)]
pub struct PublisherOptions {
    /// Name shown in the topic's publisher table (and in heartbeats).
    pub name: String,
    /// What to do when a gating subscriber is behind.
    pub gating: GatingPolicy,
}

/// Publishes frames to one topic over shared memory. Up to
/// [`MAX_PUBLISHERS`] per topic; all share one gapless sequence.
///
/// A publisher belongs to the process that created it: a forked child
/// that publishes through one it inherited gets
/// [`Error::PublisherInheritedByFork`] (on a single-producer topic it would
/// be a second producer), and dropping it there leaves the parent's entry
/// alone.
pub struct ShmPublisher {
    seg: Arc<Segment>,
    entry: usize,
    /// Our owner word in the publisher table (`current_owner()` at
    /// creation): names the process the entry belongs to.
    owner: u64,
    /// [`FORKS`] when this publisher was created: a different count means
    /// we are a copy in a forked child, which must not publish.
    forks: u32,
    cache: GatingCache,
    policy: GatingPolicy,
    heartbeats: HeartbeatSource,
    published: u64,
    /// The sequence of the loan lent last, until it is committed or
    /// dropped. Still set when this publisher is next used (every use needs
    /// `&mut self`, which the loan borrowed) means the loan was forgotten
    /// (`mem::forget`, or leaked): its slot is still being written by us,
    /// and [`finish_forgotten_loan`](Self::finish_forgotten_loan) fills it.
    open_loan: Option<u64>,
}

impl std::fmt::Debug for ShmPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmPublisher")
            .field("topic", &self.seg.topic())
            .field("entry", &self.entry)
            .finish_non_exhaustive()
    }
}

impl ShmPublisher {
    /// Registers a publisher in `seg`'s publisher table.
    pub fn new(seg: Arc<Segment>, options: &PublisherOptions) -> Result<Self> {
        // Refused before anything is registered.
        crate::wait::check_wake_fence_setting()?;
        // Before our first publish: from here on our wake check needs no
        // fence (see `wake`).
        crate::wait::register_publisher();
        // The frame clock's one-time set-up, here rather than in a publish.
        crate::clock::prepare()?;
        seg.reap();
        let pid = std::process::id();
        let me = current_owner();
        let h = seg.header();
        // A single-producer topic has one publisher entry, the first: taking
        // it is what makes a publisher the only one (a dead holder's entry
        // was freed by `reap` above, so its place is taken over).
        let single = seg.producers() == Producers::Single;
        let usable = if single { 1 } else { MAX_PUBLISHERS };
        let entry = h.publishers[..usable]
            .iter()
            .position(|p| {
                // AcqRel: claims the entry; pairs with the Acquire owner
                // loads of readers of the table, and with the Release store
                // of FREE by its previous holder: on a single-producer
                // topic, that holder's claims happen before ours. Only a
                // FREE entry: never one a reaper holds.
                p.pid
                    .compare_exchange(FREE, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| {
                if single {
                    Error::SinglePublisherTaken {
                        topic: seg.topic().to_owned(),
                        // Relaxed: only named in the error.
                        pid: owner_pid(h.publishers[0].pid.load(Ordering::Relaxed)),
                    }
                } else {
                    Error::PublisherTableFull {
                        topic: seg.topic().to_owned(),
                    }
                }
            })?;
        let e = &h.publishers[entry];
        // Release: pairs with the Acquire fence of monitors that read an
        // entry's fields and then load its owner word again (`zerocast
        // health`, `zerocast stat`): one that reads any store of ours
        // below also sees our word, not the previous owner's.
        fence(Ordering::Release);
        // Our own entry now; normally clear already (a drop and a reaper
        // clear it before FREE), cleared again as the new owner's reset:
        // nothing in flight, length 1, counts 0, heartbeat 0 (`zerocast
        // stat` says "never"), the name stored below.
        e.clear_for_next_owner();
        let name = if options.name.is_empty() {
            format!("pub-{pid}")
        } else {
            options.name.clone()
        };
        store_name(&e.name, &name);
        Ok(Self {
            seg,
            entry,
            owner: me,
            forks: fork_count(),
            cache: GatingCache::default(),
            policy: options.gating,
            heartbeats: HeartbeatSource::new(&name),
            published: 0,
            open_loan: None,
        })
    }

    fn entry(&self) -> &PublisherEntry {
        &self.seg.header().publishers[self.entry]
    }

    /// This publisher's id (its slot in the topic's table), carried in every
    /// frame header.
    pub fn id(&self) -> u32 {
        self.entry as u32
    }

    /// The segment.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Publishes one body and returns its topic sequence: a
    /// [`loan`](Self::loan) written with `body` and committed, so the body
    /// is stored once, field by field, straight into the ring slot.
    #[inline]
    pub fn publish<B: Body>(&mut self, body: &B) -> Result<u64> {
        Ok(self.loan::<B>()?.write(body).commit())
    }

    /// [`publish`](Self::publish) with the frame time given: the frame's
    /// `publish_ns` is `publish_ns`, and no clock is read. For a thread
    /// that has the time already (a matching engine that stamped the trade
    /// it is about to publish, or a thread that answers a frame it has
    /// just received): skipping the frame clock takes a
    /// [`publish`](Self::publish) back to back from 19.5 to 14.4 ns (the
    /// raw ring's publish 8.6 ns), and a ping-pong's one-way time from 70
    /// to 55 ns at the near vCPU placement (410 to 236 ns at the far one),
    /// on the AMD EPYC family 26 guest (see the README's "Timestamps").
    ///
    /// The time is the caller's and is not checked: subscribers, the
    /// delayed tier and every tool read a frame's `publish_ns` as
    /// nanoseconds since the Unix epoch on `CLOCK_REALTIME`. Give such a
    /// time, or the delayed tier's batch deadlines move by the difference
    /// (a time in the future is taken for "just published", one at least
    /// a batch interval old for a backlog), and latencies printed from it
    /// mean nothing. The caller's times may go back by any amount from
    /// one frame to the next (the frame clock's only on a step of the
    /// wall clock). A time of 0 reads back as
    /// [`Received::publish_ns`](crate::Received::publish_ns) gives it for
    /// bytes with no header.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("zc-at-doc-{}", std::process::id()));
    /// # let seg = std::sync::Arc::new(zerocast_ipc::Segment::create(&dir, "doc", 8, 32)?);
    /// use zerocast_core::frame::{id::id, Direction, TradeEvent};
    /// use zerocast_ipc::{layout::now_ns, PublisherOptions, ShmPublisher};
    /// # let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default())?;
    /// # let mut sub = zerocast_ipc::ShmSubscriber::new(seg, &Default::default())?;
    /// let matched_ns = now_ns(); // the engine's own clock reading
    /// let trade = TradeEvent {
    ///     trade_id: id("T-1").unwrap(),
    ///     order_id: id("O-1").unwrap(),
    ///     instrument_id: id("BTC-USDT").unwrap(),
    ///     price: 64_000.5,
    ///     volume: 0.25,
    ///     direction: Direction::Buy,
    ///     timestamp: matched_ns as i64,
    /// };
    /// let seq = publisher.publish_at(&trade, matched_ns)?; // no second clock read
    /// # let got = sub.poll().unwrap();
    /// # assert_eq!((got, sub.last(got).publish_ns()), (seq, matched_ns));
    /// # std::fs::remove_file(&dir).ok();
    /// # Ok::<(), zerocast_ipc::Error>(())
    /// ```
    #[inline]
    pub fn publish_at<B: Body>(&mut self, body: &B, publish_ns: u64) -> Result<u64> {
        Ok(self.loan_at::<B>(publish_ns)?.write(body).commit())
    }

    /// Publishes `body` as a retransmission of sequence `original`: the
    /// frame header's retransmission mark
    /// ([`FrameHeader::retransmit_of`]) names `original`, so subscribers
    /// can recognise a frame they already processed
    /// ([`Received::retransmit_of`](crate::Received::retransmit_of)).
    pub fn publish_retransmit<B: Body>(&mut self, body: &B, original: u64) -> Result<u64> {
        let mut loan = self.loan::<B>()?.write(body);
        loan.0.retransmit_of = Some(original);
        Ok(loan.commit())
    }

    /// Lends the slot of the topic's next sequence for one `B` frame: the
    /// zero-copy publish. The sequence is claimed (waiting by the gating
    /// policy, as [`publish`](Self::publish) does) and the slot marked being
    /// written; [`LoanUninit::write`] stores the body's archived words
    /// straight into the slot's atomics (no intermediate buffer), and
    /// [`Loan::commit`] publishes it. The frame's header carries the time
    /// of the loan (the clock is read before the claim, so that the slot's
    /// write window holds only stores): a loan that waited for room (a
    /// gating subscriber, by the gating policy, or an older lap's writer)
    /// carries the time it began waiting, as [`publish_batch`](Self::publish_batch)'s
    /// frames do, so frames of different publishers can carry times out of
    /// sequence order by up to that wait.
    ///
    /// Dropping the loan, written or not, without committing loses nothing
    /// and wedges nothing: the slot is filled with a [`Heartbeat`] of this
    /// publisher instead (the topic sequence is gapless, so the claimed
    /// sequence must carry a frame; subscribers already pass heartbeats
    /// by), and no subscriber sees `Lost` or a gap. A process killed while
    /// it holds a loan is a publisher dead mid-publish: its sequence is
    /// recorded in flight, and after the stall bound reads `Lost`.
    ///
    /// While the loan lives, subscribers reading its sequence wait for it
    /// (they see nothing new), and a publisher a full ring later waits too
    /// (by its gating policy, then fails with [`Error::StuckBehind`]): hold
    /// it as briefly as a publish. A loan forgotten (`mem::forget`) or
    /// leaked is filled with a heartbeat, as a dropped one, when this
    /// publisher next publishes (or lends) or is dropped; until then its
    /// sequence stays unfinished.
    ///
    /// Progress: as [`publish`](Self::publish) up to the loan's return;
    /// writing and committing are wait-free.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("zc-loan-doc-{}", std::process::id()));
    /// # let seg = std::sync::Arc::new(zerocast_ipc::Segment::create(&dir, "doc", 8, 32)?);
    /// use zerocast_core::frame::{id::id, Direction, TradeEvent};
    /// use zerocast_ipc::{PublisherOptions, ShmPublisher};
    /// # let mut publisher = ShmPublisher::new(seg, &PublisherOptions::default())?;
    /// let trade = TradeEvent {
    ///     trade_id: id("T-1").unwrap(),
    ///     order_id: id("O-1").unwrap(),
    ///     instrument_id: id("BTC-USDT").unwrap(),
    ///     price: 64_000.5,
    ///     volume: 0.25,
    ///     direction: Direction::Buy,
    ///     timestamp: 1,
    /// };
    /// let loan = publisher.loan::<TradeEvent>()?; // claims the next slot
    /// let seq = loan.write(&trade).commit(); // written in place, published
    /// assert_eq!(seq, 0);
    /// # std::fs::remove_file(&dir).ok();
    /// # Ok::<(), zerocast_ipc::Error>(())
    /// ```
    // Inlined into every caller (`publish` above among them): out of line,
    // it hands its loan back through memory (a `Result` of about 100
    // bytes), and a publish(&T) back to back cost 52 ns instead of 39
    // (AMD EPYC guest), which a change elsewhere in this crate (new error
    // variants, a larger `Drop`) was enough to bring about.
    #[inline(always)]
    pub fn loan<B: Body>(&mut self) -> Result<LoanUninit<'_, B>> {
        // The header's time is read here, before the claim, not at the
        // commit. Between the slot's WRITING stamp and its commit a
        // caught-up subscriber polls the slot's first line, and each look
        // pulls the line back out of this core's cache while the frame is
        // being stored into it; a clock read (tens of ns) inside that
        // window made a ping-pong's one-way time 386 ns where it is 120 ns
        // with the clock read first (`pingpong_parts`, AMD EPYC guest,
        // floor 55 ns).
        self.loan_at(crate::clock::frame_ns())
    }

    /// [`loan`](Self::loan) with the frame time given: the frame's
    /// `publish_ns` is `publish_ns`, and no clock is read (see
    /// [`publish_at`](Self::publish_at) for what the time must be). A
    /// loan dropped uncommitted publishes its heartbeat with that time
    /// too; one forgotten (`mem::forget`) and filled later, with the
    /// frame clock's time of the fill.
    // Inlined for the reason `loan` is.
    #[inline(always)]
    pub fn loan_at<B: Body>(&mut self, publish_ns: u64) -> Result<LoanUninit<'_, B>> {
        let words = frame::frame_words(B::KIND);
        self.check_fits(words)?;
        if self.open_loan.is_some() {
            self.finish_forgotten_loan();
        }
        check_older_laps(&self.seg, self.policy, 1)?;
        let seg: &Segment = &self.seg;
        let entry = &seg.header().publishers[self.entry];
        let mut waiting = WaitLimit::new(seg, entry, self.policy);
        // One stall timer for the claim's give-up wait and the write's wait
        // behind an older lap (never both: see `claim_and_commit`).
        let mut stuck = StuckWait::new(seg);
        mark_claiming(entry, seg);
        let slot = match seg.producer_ring().claim_write_with(
            &mut self.cache,
            || waiting.keep_waiting(),
            |seq| record_claim(entry, seq),
            |older| stuck.check(older),
        ) {
            Ok(slot) => slot,
            Err(e) => {
                clear_claim(entry);
                return Err(publish_error(seg, e));
            }
        };
        self.open_loan = Some(slot.seq());
        Ok(LoanUninit(
            LoanSlot {
                open: &mut self.open_loan,
                slot: Some(slot),
                seg,
                entry,
                id: self.entry as u32,
                published: &mut self.published,
                heartbeats: &mut self.heartbeats,
                retransmit_of: None,
                lent_ns: publish_ns,
            },
            std::marker::PhantomData,
        ))
    }

    /// Publishes an encoded frame (see [`frame::encode`]); word 0 is replaced
    /// by the sequence. The words are copied into the slot: with the
    /// encoding, two copies of the body, where [`publish`](Self::publish)
    /// and [`loan`](Self::loan) make one.
    #[inline]
    pub fn publish_words(&mut self, words: &[u64]) -> Result<u64> {
        self.check_fits(words.len())?;
        if self.open_loan.is_some() {
            self.finish_forgotten_loan();
        }
        check_older_laps(&self.seg, self.policy, 1)?;
        let result = claim_and_commit(&self.seg, self.entry, &mut self.cache, self.policy, words);
        if result.is_ok() {
            self.published += 1;
            after_publish(&self.seg, self.entry(), self.published);
        }
        result
    }

    /// Publishes `bodies` with one claim of consecutive sequences; returns the
    /// first. Subscribers see them in order with nothing between. Each body
    /// is written in place into its slot, as [`loan`](Self::loan) writes
    /// one: no intermediate buffer.
    ///
    /// An empty `bodies` claims and publishes nothing of its own (a
    /// forgotten loan is filled first, as by every publish) and returns
    /// the ring's head, the sequence the next frame gets unless another
    /// publisher claims first (as the core ring's `try_publish_batch`
    /// does): not a sequence this publisher holds. It is still refused
    /// where a publish would be (a `B` frame too large for the slots, a
    /// copy inherited through fork). More bodies than the ring's capacity
    /// are refused before anything is claimed: [`Error::Publish`] with
    /// [`PublishError::BatchTooLarge`]; so are more than `u32::MAX` (only a
    /// ring of 2^32 slots holds as many), with [`Error::BadOptions`].
    pub fn publish_batch<B: Body>(&mut self, bodies: &[B]) -> Result<u64> {
        let words = frame::frame_words(B::KIND);
        self.check_fits(words)?;
        check_batch_len(bodies.len(), self.seg.ring().capacity())?;
        if self.open_loan.is_some() {
            self.finish_forgotten_loan();
        }
        if bodies.is_empty() {
            // No marker, no claim, no listing: a claim of zero sequences
            // would list the head (a length of 0 reads as 1), a sequence
            // we never took, and hold up its declaration meanwhile.
            return Ok(self.seg.producer_ring().head());
        }
        check_older_laps(&self.seg, self.policy, bodies.len() as u64)?;
        let header =
            FrameHeader::new(B::KIND, self.entry as u32, crate::clock::frame_ns()).to_words();
        let seg: &Segment = &self.seg;
        let ring = seg.producer_ring();
        let entry = &seg.header().publishers[self.entry];
        let mut waiting = WaitLimit::new(seg, entry, self.policy);
        let mut giving_up = StuckWait::new(seg);
        mark_claiming(entry, seg);
        let mut claim = match ring.claim_batch_wait_with(
            &mut self.cache,
            bodies.len(),
            || waiting.keep_waiting(),
            |first, n| record_inflight(entry, first, n),
            |older| giving_up.check(older),
        ) {
            Ok(claim) => claim,
            Err(e) => {
                clear_inflight(entry);
                return Err(publish_error(seg, e));
            }
        };
        let first = claim.first();
        let mut stuck = StuckWait::new(seg);
        let mut result = Ok(first);
        for body in bodies {
            // Every claimed sequence is begun here (one per body), so the
            // claim's drop has nothing left to mark; a slot a supervisor
            // declared lost first is skipped, as `commit_with` would.
            let Some(slot) = claim.begin_next(|older| stuck.check(older)) else {
                break;
            };
            match slot {
                Ok(slot) => {
                    store_frame(&slot, &header, body);
                    slot.commit();
                }
                Err(e) => result = Err(Error::from(e)),
            }
        }
        drop(claim);
        clear_inflight(entry);
        let first = result?;
        self.published += bodies.len() as u64;
        after_publish(seg, entry, self.published);
        Ok(first)
    }

    /// Claims `count` consecutive sequences (1 to the ring's capacity, at
    /// most `u32::MAX`) and marks them lost without writing them; returns
    /// the first. Subscribers see [`RecvError::Lost`](crate::RecvError::Lost)
    /// for each, as for a publisher that died mid-write. For a relay that
    /// republishes another ring's sequences one for one (`zerocast bridge
    /// import`): a loss there stays a loss here, with its exact count,
    /// never a silent hole. Claims wait for gating subscribers as
    /// [`publish_batch`](Self::publish_batch) does.
    pub fn publish_lost(&mut self, count: u64) -> Result<u64> {
        check_lost_count(count, self.seg.ring().capacity())?;
        // No frame words; the fork check every publish path makes.
        self.check_fits(0)?;
        if self.open_loan.is_some() {
            self.finish_forgotten_loan();
        }
        check_older_laps(&self.seg, self.policy, count)?;
        let seg: &Segment = &self.seg;
        let ring = seg.producer_ring();
        let entry = &seg.header().publishers[self.entry];
        let mut waiting = WaitLimit::new(seg, entry, self.policy);
        let mut giving_up = StuckWait::new(seg);
        mark_claiming(entry, seg);
        let claim = match ring.claim_batch_wait_with(
            &mut self.cache,
            count as usize,
            || waiting.keep_waiting(),
            |first, n| record_inflight(entry, first, n),
            |older| giving_up.check(older),
        ) {
            Ok(claim) => claim,
            Err(e) => {
                clear_inflight(entry);
                return Err(publish_error(seg, e));
            }
        };
        let first = claim.first();
        let mut stuck = StuckWait::new(seg);
        // No frame words: every claimed sequence is marked lost, each once
        // an older lap in its slot has finished (as a write would wait).
        let result = claim.commit_with(&[], 1, |older| stuck.check(older));
        clear_inflight(entry);
        result.map_err(Error::from)?;
        wake(seg);
        Ok(first)
    }

    /// Publishes a [`Heartbeat`] and records its time in the publisher table.
    pub fn send_heartbeat(&mut self) -> Result<u64> {
        let hb = self.heartbeats.next();
        let seq = self.publish(&hb)?;
        // Relaxed: a timestamp for monitors.
        self.entry().heartbeat_ns.store(now_ns(), Ordering::Relaxed);
        Ok(seq)
    }

    /// Fault injection for crash tests: claims the next sequence, records it
    /// in flight, and kills this process with SIGKILL before committing it,
    /// which is what a crash between claim and commit looks like to everyone
    /// else. Only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn crash_mid_publish(&mut self) -> ! {
        mark_claiming(self.entry(), &self.seg);
        let claim = self
            .seg
            .producer_ring()
            .try_claim(&mut self.cache)
            .expect("claim before crash");
        record_claim(self.entry(), claim.seq());
        std::mem::forget(claim);
        // SAFETY: raising a signal on ourselves has no memory effects.
        unsafe { libc::raise(libc::SIGKILL) };
        unreachable!("SIGKILL does not return")
    }

    /// Fills the slot of a forgotten loan (see `open_loan`) with a
    /// heartbeat and commits it, as the loan's drop would have.
    #[cold]
    fn finish_forgotten_loan(&mut self) {
        let Some(seq) = self.open_loan.take() else {
            return;
        };
        let seg: &Segment = &self.seg;
        let entry = &seg.header().publishers[self.entry];
        // SAFETY: we began writing `seq` (`loan_at` set `open_loan` after
        // `begin_write`), and its `SlotWrite` sits in a loan that was never
        // dropped nor committed (either clears `open_loan`) yet no longer
        // borrows `self`: forgotten, or leaked and unreachable (it borrowed
        // `self` mutably for as long as it could be used).
        match unsafe { seg.producer_ring().resume_write(seq) } {
            // Dropping the loan slot publishes the heartbeat.
            Some(slot) => drop(LoanSlot {
                open: &mut self.open_loan,
                slot: Some(slot),
                seg,
                entry,
                id: self.entry as u32,
                published: &mut self.published,
                heartbeats: &mut self.heartbeats,
                retransmit_of: None,
                lent_ns: crate::clock::frame_ns(),
            }),
            // Declared lost meanwhile (nobody should have: we are alive and
            // list it in flight); nothing of ours left in the slot.
            None => clear_inflight(entry),
        }
    }

    /// Also refuses a publisher inherited through fork (every publish
    /// path starts here): it is its creator's.
    #[inline(always)]
    fn check_fits(&self, words: usize) -> Result<()> {
        // A Relaxed load: bumped in this process only by the fork handler,
        // which ran before anything else in a forked child (see `FORKS`).
        if forks_now() != self.forks && is_forked_copy(self.forks, owner_pid(self.owner)) {
            return Err(Error::PublisherInheritedByFork {
                topic: self.seg.topic().to_owned(),
                creator: owner_pid(self.owner),
            });
        }
        if words > self.seg.ring().payload_words() {
            return Err(Error::FrameTooLarge {
                topic: self.seg.topic().to_owned(),
                frame: words * 8,
                slot: self.seg.slot_bytes(),
            });
        }
        Ok(())
    }
}

impl Drop for ShmPublisher {
    fn drop(&mut self) {
        if owner_pid(self.owner) != std::process::id() {
            // A copy inherited by a forked child: the entry (and any open
            // loan) is the parent's, which still publishes through it.
            return;
        }
        // A forgotten loan is finished while the entry is still ours.
        self.finish_forgotten_loan();
        let entry = self.entry();
        // Freed as the reaper frees a dead owner's entry: taken under a
        // tombstone, cleared, then FREE; so what we leave in it (an
        // in-flight record, after a publish that unwound; our counts) is
        // never read with the next owner's word (`clear_for_next_owner`).
        // A CAS: an entry no longer ours (reaped) is someone else's.
        // Relaxed: only makes the entry ours to clear (it was ours: our
        // own stores to it precede in program order); the Release FREE
        // store below publishes them and the clears. While it is a
        // tombstone of ours, supervisors take its record for nobody's
        // (`owner_alive`), and reapers leave it alone (we are alive).
        if entry
            .pid
            .compare_exchange(
                self.owner,
                tombstone(self.owner),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        // Release: pairs with the Acquire fence of monitors that read the
        // entry's fields and then load the owner word again (`zerocast
        // health`, `zerocast stat`): one that reads any of the clears below
        // also sees the tombstone (or a later word), and drops its reading.
        fence(Ordering::Release);
        entry.clear_for_next_owner();
        // Release: pairs with the Acquire owner loads of registrations and
        // other readers; our last frames were committed, and the entry
        // cleared, before it is freed.
        entry.pid.store(FREE, Ordering::Release);
    }
}

const _: () = assert!(MAX_PUBLISHERS <= u32::MAX as usize);

/// How many times this process's ancestry forked since the first
/// publisher or subscriber was created in it: bumped in the child by a `pthread_atfork`
/// handler, so a publisher inherited through `fork` sees a count other
/// than the one it was created with and refuses to publish (two processes
/// publishing through one entry; on a single-producer topic, two
/// producers), and a subscriber so inherited detaches from its parent's
/// gating slot and table entry. A raw `clone` syscall bypasses the handler; `posix_spawn`
/// and `fork` + `exec` need none.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_fork() {
    // Relaxed: run in the forked child's only thread before fork returns;
    // its later threads are spawned after it (spawning synchronises).
    // Wraps below `FORKS_UNTRACKED`, which the count never holds.
    let next = (FORKS.load(Ordering::Relaxed) + 1) % FORKS_UNTRACKED;
    // Relaxed: as above (the child's only thread).
    FORKS.store(next, Ordering::Relaxed);
}

/// [`FORKS`] now, without installing the handler: for the per-call check of
/// a handle that called [`fork_count`] when it was made.
#[inline(always)]
pub(crate) fn forks_now() -> u32 {
    // Relaxed: see `count_fork`.
    FORKS.load(Ordering::Relaxed)
}

/// What [`fork_count`] returns where its handler could not be installed
/// (`pthread_atfork` failed, ENOMEM): [`FORKS`] never holds it, so the
/// per-call check of such a handle always fails and sends it to
/// [`is_forked_copy`], which then compares pids.
const FORKS_UNTRACKED: u32 = u32::MAX;

/// [`FORKS`] now, with its handler installed (once per process); where the
/// installation failed, [`FORKS_UNTRACKED`]. Also used by subscribers,
/// whose copies in a forked child detach (see
/// [`ShmSubscriber`](crate::ShmSubscriber)).
pub(crate) fn fork_count() -> u32 {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        #[cfg(test)]
        if std::env::var_os(ATFORK_FAILS_ENV).is_some() {
            // Simulated ENOMEM (see the constant).
            return false;
        }
        // SAFETY: registers a child handler that only bumps an atomic
        // (async-signal-safe, as a handler run after fork must be).
        unsafe { libc::pthread_atfork(None, None, Some(count_fork)) == 0 }
    });
    if !installed {
        return FORKS_UNTRACKED;
    }
    // Relaxed: see `count_fork`.
    FORKS.load(Ordering::Relaxed)
}

/// For a handle made with fork count `forks` by process `creator`, whose
/// per-call check found [`forks_now`] different: whether it is a copy in
/// a forked child. Yes if the count moved; where the fork handler is
/// missing ([`FORKS_UNTRACKED`]), if this process is not its creator
/// (`getpid`, a system call on every use of such a handle: the price of
/// the failed registration, never paid otherwise).
#[cold]
#[inline(never)]
pub(crate) fn is_forked_copy(forks: u32, creator: u32) -> bool {
    forks != FORKS_UNTRACKED || std::process::id() != creator
}

/// Set (in a test process) to make the `pthread_atfork` registration of
/// [`fork_count`] fail, as ENOMEM would.
#[cfg(test)]
pub(crate) const ATFORK_FAILS_ENV: &str = "ZEROCAST_TEST_ATFORK_FAILS";

/// Counts frames in the publisher table (`published`, this publisher's
/// running total) and wakes sleeping subscribers.
#[inline(always)]
fn after_publish(seg: &Segment, entry: &PublisherEntry, published: u64) {
    // Relaxed: a counter for monitors.
    entry.published.store(published, Ordering::Relaxed);
    wake(seg);
}

/// Wakes subscribers sleeping on the segment's futex, if any.
///
/// Costs a compiler fence and one plain load while nobody sleeps (in a
/// process registered for the sleepers' membarrier; otherwise a `SeqCst`
/// fence): see the wake-up protocol in [`crate::wait`].
#[inline(always)]
fn wake(seg: &Segment) {
    let h = seg.header();
    // Orders our commit (a Release store) before the `sleepers` load below
    // against a sleeper's increment and re-check: a compiler fence that the
    // sleeper's membarrier promotes to a full barrier, or a SeqCst fence
    // pairing with the sleeper's (`wait::sleeper_barrier`). Either we see
    // the sleeper's increment, or its re-check after its barrier sees our
    // frame.
    crate::wait::publisher_fence();
    // Relaxed: the barrier above does the ordering (a SeqCst fence puts
    // this load after the fences' total order point; a membarrier forbids
    // the CPU to satisfy it before our commit is visible); nothing else is
    // published with the value.
    if h.sleepers.load(Ordering::Relaxed) != 0 {
        // SeqCst: a sleeper that read the old value returns from
        // FUTEX_WAIT at once.
        h.wake_seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(&h.wake_seq);
    }
}

/// A slot of a segment's ring being written in place.
type ShmSlot<'a> =
    SlotWrite<'a, Raw<zerocast_core::broadcast::BroadcastHeader, std::sync::atomic::AtomicU64>>;

/// Stores a whole frame into `slot` in place: header words 1.. (word 0 is
/// the sequence the ring stored) and the body's archived words, each one
/// Relaxed store into the slot's atomics.
#[inline(always)]
fn store_frame<B: Body>(slot: &ShmSlot<'_>, header: &[u64; HEADER_WORDS], body: &B) {
    for (i, w) in header.iter().enumerate().skip(1) {
        slot.store(i, *w);
    }
    body.archived_words(|i, w| slot.store(HEADER_WORDS + i, w));
}

/// What a loan holds, typed or not: the slot being written and the
/// publisher state its commit (or drop) updates.
struct LoanSlot<'p> {
    /// The publisher's record of this open loan, cleared on commit.
    open: &'p mut Option<u64>,
    /// `None` once committed.
    slot: Option<ShmSlot<'p>>,
    seg: &'p Segment,
    entry: &'p PublisherEntry,
    id: u32,
    published: &'p mut u64,
    heartbeats: &'p mut HeartbeatSource,
    retransmit_of: Option<u64>,
    /// The header's time: when the slot was lent.
    lent_ns: u64,
}

impl LoanSlot<'_> {
    fn seq(&self) -> u64 {
        self.slot.as_ref().map_or(0, |s| s.seq())
    }

    /// Stamps the header (with the time the slot was lent), commits, and
    /// does the publisher's bookkeeping. Returns the sequence.
    #[inline(always)]
    fn commit(&mut self, kind: frame::MessageKind) -> u64 {
        let slot = self.slot.take().expect("a loan commits once");
        let mut header = FrameHeader::new(kind, self.id, self.lent_ns);
        if let Some(original) = self.retransmit_of {
            header = header.with_retransmit_of(original);
        }
        for (i, w) in header.to_words().iter().enumerate().skip(1) {
            slot.store(i, *w);
        }
        let seq = slot.commit();
        *self.open = None;
        clear_claim(self.entry);
        *self.published += 1;
        after_publish(self.seg, self.entry, *self.published);
        seq
    }
}

impl Drop for LoanSlot<'_> {
    // Inlined: a loan dropped uncommitted fills its slot; a committed one
    // is not dropped at all (`Loan::commit` wraps it in `ManuallyDrop`,
    // which is sound only while this `Drop` is all that a committed loan
    // would run: a field with drop glue of its own added to `LoanSlot`
    // would leak on every commit).
    #[inline(always)]
    fn drop(&mut self) {
        if self.slot.is_some() {
            self.fill_with_heartbeat();
        }
    }
}

impl LoanSlot<'_> {
    #[cold]
    #[inline(never)]
    fn fill_with_heartbeat(&mut self) {
        let Some(slot) = &self.slot else {
            return;
        };
        // Not committed: the claimed sequence carries a heartbeat instead,
        // so the topic stays gapless and nobody is told of a loss. Every
        // slot holds a heartbeat (topic slots are sized for one).
        let hb = self.heartbeats.next();
        hb.archived_words(|i, w| slot.store(HEADER_WORDS + i, w));
        self.retransmit_of = None;
        self.commit(frame::MessageKind::Heartbeat);
        // Relaxed: a timestamp for monitors.
        self.entry.heartbeat_ns.store(now_ns(), Ordering::Relaxed);
    }
}

/// A slot lent by [`ShmPublisher::loan`], not yet written: write it with
/// [`write`](Self::write). Dropping it publishes a heartbeat in its place
/// (see [`ShmPublisher::loan`]).
#[must_use = "dropping a loan publishes a heartbeat in its place"]
pub struct LoanUninit<'p, B: Body>(LoanSlot<'p>, std::marker::PhantomData<fn(&B)>);

impl<B: Body> std::fmt::Debug for LoanUninit<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoanUninit")
            .field("seq", &self.seq())
            .finish()
    }
}

impl<'p, B: Body> LoanUninit<'p, B> {
    /// The topic sequence the frame will have.
    pub fn seq(&self) -> u64 {
        self.0.seq()
    }

    /// Stores `body` straight into the slot: its archived words, computed
    /// field by field ([`Body::archived_words`]), each one store into the
    /// slot's shared atomics. The one copy of the body on the publish side.
    #[inline(always)]
    pub fn write(self, body: &B) -> Loan<'p, B> {
        let mut loan = Loan(self.0, std::marker::PhantomData);
        loan.write(body);
        loan
    }
}

/// A lent slot holding a written body: publish it with
/// [`commit`](Self::commit). Dropping it publishes a heartbeat in its place
/// instead (see [`ShmPublisher::loan`]).
#[must_use = "dropping a loan publishes a heartbeat in its place"]
pub struct Loan<'p, B: Body>(LoanSlot<'p>, std::marker::PhantomData<fn(&B)>);

impl<B: Body> std::fmt::Debug for Loan<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("seq", &self.seq()).finish()
    }
}

impl<B: Body> Loan<'_, B> {
    /// The topic sequence the frame will have.
    pub fn seq(&self) -> u64 {
        self.0.seq()
    }

    /// Writes `body` over the one written before, in place.
    #[inline(always)]
    pub fn write(&mut self, body: &B) -> &mut Self {
        if let Some(slot) = &self.0.slot {
            body.archived_words(|i, w| slot.store(HEADER_WORDS + i, w));
        }
        self
    }

    /// Publishes the frame (its header carries the time the slot was
    /// lent) and returns its sequence. Wait-free.
    #[inline(always)]
    pub fn commit(self) -> u64 {
        // Committed, the loan has nothing left to drop (its `Drop` only
        // fills a slot still held): not dropping it saves the call to its
        // drop glue, which the compiler kept out of line.
        let mut this = std::mem::ManuallyDrop::new(self);
        this.0.commit(B::KIND)
    }

    /// Another name for [`commit`](Self::commit), as iceoryx2 calls it.
    #[inline]
    pub fn send(self) -> u64 {
        self.commit()
    }
}

/// How long a publish may still wait for a gating subscriber, and the
/// liveness checks while it does. The clock is read only once a wait has
/// begun, never on a publish that finds room. When it is dropped after a
/// wait, it counts the wait in the publisher's entry
/// ([`PublisherEntry::gating_waits`], [`PublisherEntry::gating_wait_ns`]):
/// from the start of its first turn to the end of its last, not up to the
/// drop, which comes after the write (and any wait behind an older lap
/// there) where the publish went on. What is left out is the claim's
/// retry after the last turn: a room check and the claim itself.
struct WaitLimit<'a> {
    seg: &'a Segment,
    entry: &'a PublisherEntry,
    limit: Option<Duration>,
    /// Set when a wait begins: `Some(None)` for a limit too far to hold.
    deadline: Option<Option<Instant>>,
    next_reap: Option<Instant>,
    /// When the wait began (the start of the first turn of
    /// `keep_waiting`) and when its latest turn ended; `None` on a publish
    /// that found room.
    waited: Option<(Instant, Instant)>,
    /// Turns waited so far, saturating: past [`OLDER_LAP_SPINS`], each
    /// further turn yields.
    turns: u32,
}

impl Drop for WaitLimit<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some((began, ended)) = self.waited {
            count_gating_wait(self.entry, ended.saturating_duration_since(began));
        }
    }
}

/// Adds one wait of `waited` to the publisher's gating-wait counters.
#[cold]
#[inline(never)]
fn count_gating_wait(entry: &PublisherEntry, waited: Duration) {
    let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
    // Relaxed (all four): the owner is the only writer of these words (a
    // publisher is used by one thread at a time: every publish takes
    // `&mut self`), so a load and a store count without a locked
    // instruction; monitors read them as snapshots and need no order with
    // anything else.
    let waits = entry.gating_waits.load(Ordering::Relaxed);
    // Wrapping: the word is in shared memory any process of this user
    // may write; a counter that wraps is what a scraper expects.
    entry
        .gating_waits
        .store(waits.wrapping_add(1), Ordering::Relaxed);
    let total = entry.gating_wait_ns.load(Ordering::Relaxed);
    entry
        .gating_wait_ns
        .store(total.saturating_add(ns), Ordering::Relaxed);
}

/// How often a waiting publisher checks that the gating subscribers it
/// waits for are alive.
const REAP_EVERY: Duration = Duration::from_millis(1);

impl<'a> WaitLimit<'a> {
    fn new(seg: &'a Segment, entry: &'a PublisherEntry, policy: GatingPolicy) -> Self {
        let limit = match policy {
            GatingPolicy::Wait(limit) => Some(limit),
            GatingPolicy::Fail => None,
        };
        Self {
            seg,
            entry,
            limit,
            deadline: None,
            next_reap: None,
            waited: None,
            turns: 0,
        }
    }

    /// One turn of a wait for room: whether to keep waiting. Shaped as
    /// [`StuckWait::check`]: after [`OLDER_LAP_SPINS`] turns, each further
    /// one yields the CPU (the gating subscriber waited for may need this
    /// very CPU to read and release). A wait before the claim lists
    /// nothing in flight meanwhile: the claiming marker is taken down for
    /// the turn and put back before the claim is retried (see
    /// `mark_claiming`).
    #[cold]
    fn keep_waiting(&mut self) -> bool {
        #[cfg(test)]
        // Release: pairs with the test's Acquire load; our marker (stored
        // before this wait) is up by then.
        WAITING_ENTRY.store(std::ptr::from_ref(self.entry) as usize, Ordering::Release);
        // Relaxed: our own entry's word, written only by this thread (a
        // publish takes `&mut self`). The marker is there only before the
        // claim; a wait after it (a claim that raced a first registration,
        // or its giving up) lists the claim, which stays.
        let claiming = self.entry.inflight.load(Ordering::Relaxed) & INFLIGHT_CLAIMING != 0;
        if claiming {
            clear_claim(self.entry);
        }
        let keep = self.decide();
        if keep {
            self.turns = self.turns.saturating_add(1);
            if self.turns > OLDER_LAP_SPINS {
                std::thread::yield_now();
                // A yield may last a time slice: the turn ends after it.
                self.turn_ended(Instant::now());
            }
            if claiming {
                // With the head read now: the claim retried after this turn
                // takes nothing below it, and a claim another publisher took
                // (and died with) during the wait is not held up.
                mark_claiming(self.entry, self.seg);
            }
        }
        keep
    }

    /// Notes `at` as the end of the wait's latest turn (and, on the first,
    /// as its start).
    fn turn_ended(&mut self, at: Instant) {
        match &mut self.waited {
            Some((_, ended)) => *ended = at,
            None => self.waited = Some((at, at)),
        }
    }

    /// [`keep_waiting`](Self::keep_waiting)'s answer: reclaims dead gating
    /// subscribers, and checks the policy's limit.
    fn decide(&mut self) -> bool {
        let now = Instant::now();
        // Until a later read: the rest of a turn without a yield or a
        // reap takes nanoseconds.
        self.turn_ended(now);
        // A dead gating subscriber never releases: reclaim it (the ring
        // rescans its gating table when the cached minimum is too low). The
        // first check comes at once, so even the Fail policy reclaims a
        // dead subscriber before it gives up.
        if self.next_reap.is_none_or(|t| now >= t) {
            self.next_reap = Some(now + REAP_EVERY);
            let reaped = self.seg.reap_gating() > 0;
            // The reap reads `/proc`: the turn ends after it.
            self.turn_ended(Instant::now());
            if reaped {
                return true;
            }
        }
        let Some(limit) = self.limit else {
            return false;
        };
        // A limit past what an Instant can hold (`Duration::MAX`) is no
        // limit: wait for as long as it takes.
        match *self.deadline.get_or_insert(now.checked_add(limit)) {
            Some(deadline) => now < deadline,
            None => true,
        }
    }
}

/// The error for a failed claim: a full ring names the gating subscriber
/// furthest behind.
#[cold]
fn publish_error(seg: &Segment, e: PublishError) -> Error {
    match e {
        PublishError::Full => Error::RingFull {
            topic: seg.topic().to_owned(),
            behind: seg.slowest_gating(),
        },
        e => Error::Publish(e),
    }
}

/// Claims a sequence (waiting by `policy` if a gating subscriber is behind),
/// records it in flight in the publisher table, and commits `words`.
#[inline(always)]
fn claim_and_commit(
    seg: &Segment,
    entry: usize,
    cache: &mut GatingCache,
    policy: GatingPolicy,
    words: &[u64],
) -> Result<u64> {
    let entry = &seg.header().publishers[entry];
    let mut waiting = WaitLimit::new(seg, entry, policy);
    // One stall timer serves both waits that may call it: giving up a
    // claim that raced a gating registration (then the publish fails) or,
    // otherwise, the write's wait behind an older lap; never both.
    let mut stuck = StuckWait::new(seg);
    mark_claiming(entry, seg);
    let result = seg.producer_ring().publish_wait_with(
        cache,
        words,
        || waiting.keep_waiting(),
        // Recorded before any wait: a claim that raced the first gating
        // registration waits after it is taken.
        |seq| record_claim(entry, seq),
        |older| stuck.check(older),
    );
    clear_claim(entry);
    result.map_err(|e| publish_error(seg, e))
}

// The in-flight record of a publisher entry, through a publish:
//
//   0 --mark_claiming--> CLAIMING | head --claim, record--> seq + 1
//   --commit, clear--> 0
//
// (back to 0 also when a claim fails, or is given up). Every store of
// `inflight` is Release, paired with the Acquire load of
// `PublisherEntry::inflight_state` (a plain store on x86, as Relaxed is):
//
// - `mark_claiming` before the claim: the claim (a SeqCst RMW, or a single
//   producer's Release store) publishes it to whoever sees the sequence
//   claimed (an Acquire load of the claim word, `Ring::head`), so a
//   supervisor about to declare an unlisted sequence finds this publisher
//   claiming (or past it) however long it was preempted between the claim
//   and its record (see `Segment::in_flight_in_a_live_publisher`).
// - the record after it: a supervisor that sees a batch's start also sees
//   its length, never the previous batch's (which would let it declare the
//   rest of a live batch lost).
// - the clears after a commit (and any later store, which follows it in
//   program order): a supervisor that reads them also sees the commit, so
//   a declaration it then tries finds the sequence committed.
//
// A publisher waiting for room before its claim (`WaitLimit`) lists
// nothing meanwhile: a gating wait may last as long as its policy allows,
// and a claiming marker held through it would hold up for as long every
// declaration of a dead publisher's unlisted sequence from the marker's
// head on (a supervisor declares none of those while a live publisher
// claims from there): one a publisher claimed after our marker and died
// with, which a gating subscriber we wait for may be stuck behind.

/// Marks the entry claiming, before a claim: see above. The marker names
/// the ring's head read here: the claim that follows reads the claim word
/// after this load, whose sequence only grows, so it takes nothing below
/// it, and a supervisor may still declare an older unlisted sequence (one
/// of a dead publisher) while this publisher claims.
#[inline(always)]
fn mark_claiming(entry: &PublisherEntry, seg: &Segment) {
    // Masked: `head` is below 2^56, the marker's flag is bit 63.
    let from = seg.ring().head() & !INFLIGHT_CLAIMING;
    // Release: pairs with the Acquire load of `inflight_state` (see above);
    // published to supervisors by the claim that follows.
    entry
        .inflight
        .store(INFLIGHT_CLAIMING | from, Ordering::Release);
    after_record(entry);
}

/// Records a single claim `seq` in flight, right after the claim and before
/// any wait. (`inflight_len` stays 1 between batches.)
#[inline(always)]
fn record_claim(entry: &PublisherEntry, seq: u64) {
    after_claim();
    // Release: pairs with the Acquire load of `inflight_state` (see above).
    entry.inflight.store(seq + 1, Ordering::Release);
    after_record(entry);
}

/// Clears a single claim's record (committed, or given up).
#[inline(always)]
fn clear_claim(entry: &PublisherEntry) {
    // Release: pairs with the Acquire load of `inflight_state` (see above);
    // a reader of this 0 also sees the commit before it.
    entry.inflight.store(0, Ordering::Release);
}

/// Records a batch `first .. first + n` in flight in the publisher table,
/// right after its claim and before any wait.
fn record_inflight(entry: &PublisherEntry, first: u64, n: u64) {
    after_claim();
    // At most `MAX_LISTED`: `check_batch_len`, `publish_lost`.
    debug_assert!(n <= MAX_LISTED, "a claim of {n} sequences listed");
    // Relaxed: published by the Release store of `inflight` below.
    entry.inflight_len.store(n as u32, Ordering::Relaxed);
    // Release: pairs with the Acquire load of `inflight_state` (see above).
    entry.inflight.store(first + 1, Ordering::Release);
    after_record(entry);
}

/// Back to the single-publish state: nothing in flight, length 1.
fn clear_inflight(entry: &PublisherEntry) {
    clear_claim(entry);
    // Relaxed: read only with a nonzero `inflight`, whose Release store
    // (a later record) publishes it.
    entry.inflight_len.store(1, Ordering::Relaxed);
}

/// The most sequences one claim may list in its publisher's entry:
/// `inflight_len` is 32 bits (a ring of `MAX_CAPACITY` slots holds one
/// more).
const MAX_LISTED: u64 = u32::MAX as u64;

/// Refuses a batch of `len` frames more than the ring's `capacity`, or
/// more than its entry lists ([`MAX_LISTED`]; only a ring of 2^32 slots
/// holds such a batch). Here, not only in the ring's claim: the check for
/// older laps would look more than a ring ahead, at slots "held" by
/// sequences nobody has claimed, and wait for them for good; and a batch
/// listed short would have its unlisted sequences declared lost while they
/// are written.
fn check_batch_len(len: usize, capacity: u64) -> Result<()> {
    if len as u64 > capacity {
        return Err(Error::Publish(PublishError::BatchTooLarge {
            len,
            capacity,
        }));
    }
    if len as u64 > MAX_LISTED {
        return Err(Error::BadOptions(format!(
            "a batch of {len} frames: at most {MAX_LISTED} at a time (a publisher lists \
             the length of what it has in flight in 32 bits)"
        )));
    }
    Ok(())
}

/// Refuses a [`publish_lost`](ShmPublisher::publish_lost) of `count`
/// sequences: none, more than the ring's `capacity`, or more than an entry
/// lists ([`MAX_LISTED`]).
fn check_lost_count(count: u64, capacity: u64) -> Result<()> {
    if count == 0 || count > capacity.min(MAX_LISTED) {
        return Err(Error::BadOptions(format!(
            "publish_lost: {count} sequences; 1 to the ring's capacity ({capacity}), \
             and at most {MAX_LISTED}, at a time"
        )));
    }
    Ok(())
}

/// Before claiming `n` sequences: whether the next `n` slots are free of
/// unfinished older laps. Once a sequence is claimed it cannot be given
/// back while an older lap holds its slot (marking it needs that lap
/// finished too), so a publish that is to give up must do so here, before
/// its claim. Two loads of lines the publish touches next anyway.
#[inline(always)]
fn check_older_laps(seg: &Segment, policy: GatingPolicy, n: u64) -> Result<()> {
    let ring = seg.ring();
    let head = ring.head();
    if (head..head.saturating_add(n)).all(|s| ring.unfinished_older_lap(s).is_none()) {
        return Ok(());
    }
    wait_for_older_laps(seg, policy, n)
}

/// The least a publish waits behind a live publisher's unfinished older
/// lap before its gating policy may give up (also under `Fail`).
const OLDER_LAP_GRACE: Duration = Duration::from_millis(1);

/// Spins of [`wait_for_older_laps`] before it yields the CPU on every
/// further one: the lap it waits for belongs to another publisher, which
/// may need this very CPU to finish (a 2-core machine under load).
const OLDER_LAP_SPINS: u32 = 64;

/// How often [`wait_for_older_laps`], past its limit, asks the publisher
/// table (which reads `/proc`) whether the lap it waits for has a live
/// holder: the first time at once, then at most this often per lap. Also
/// how often a [`StuckWait`] past the stall bound asks again to resolve a
/// lap that was not resolved (a live holder's).
const LIVENESS_CHECK_EVERY: Duration = Duration::from_millis(1);

/// Waits while one of the next `n` slots is held by an unfinished older
/// lap. A lap of a dead publisher is resolved after the stall bound (as
/// `StuckWait` does) however long that takes; a lap a live publisher lists
/// in flight (a loan held, forgotten by an idle publisher, or a stalled
/// publish) is waited for as the gating policy says (at least
/// `OLDER_LAP_GRACE`, also under `Fail`), then the publish fails with [`Error::StuckBehind`] naming that publisher. Nothing is
/// claimed either way.
///
/// Spins [`OLDER_LAP_SPINS`] times, then yields the CPU between checks
/// (the holder may be waiting for this CPU); the clock (the policy's limit,
/// the stall bound) is read every 1024 spins, then on every yield; past
/// the limit, the publisher table at most every [`LIVENESS_CHECK_EVERY`].
///
/// Only a snapshot: with several publishers, the sequence this one then
/// claims may be later than the head checked here, and its slot held after
/// all; that publish waits in `begin_write` until the older lap finishes
/// (or its publisher dies and is resolved).
#[cold]
fn wait_for_older_laps(seg: &Segment, policy: GatingPolicy, n: u64) -> Result<()> {
    let ring = seg.ring();
    // A live older lap is normally a write of a few cache lines, done in
    // microseconds: even `Fail` grants it a moment before giving up.
    let limit = match policy {
        GatingPolicy::Wait(limit) => limit.max(OLDER_LAP_GRACE),
        GatingPolicy::Fail => OLDER_LAP_GRACE,
    };
    let start = Instant::now();
    let mut stuck = StuckWait::new(seg);
    let mut spins = 0u32;
    // The lap last asked about in the publisher table, and when.
    let mut asked: Option<(u64, Instant)> = None;
    loop {
        let head = ring.head();
        let Some(older) = (head..head.saturating_add(n)).find_map(|s| ring.unfinished_older_lap(s))
        else {
            return Ok(());
        };
        // The clock and the publisher table (which reads /proc) are asked
        // once in a while, not on every spin; once yielding, the clock on
        // every check: a yield may cost a whole turn of another thread,
        // and 1024 of them would stretch the policy's limit (and the stall
        // bound) to seconds. The table at most once per
        // `LIVENESS_CHECK_EVERY` per lap: behind a dead holder, resolved
        // only at the stall bound, every yield would read /proc for
        // nothing.
        let yielding = spins >= OLDER_LAP_SPINS;
        if yielding || spins % 1024 == 0 {
            let now = Instant::now();
            let due = asked.is_none_or(|(lap, at)| {
                lap != older || now.duration_since(at) >= LIVENESS_CHECK_EVERY
            });
            if due && now.duration_since(start) >= limit {
                asked = Some((older, now));
                #[cfg(test)]
                LIVENESS_CHECKS.with(|c| c.set(c.get() + 1));
                if let Some(pid) = seg.live_publisher_writing(older) {
                    return Err(Error::StuckBehind {
                        topic: seg.topic().to_owned(),
                        pid,
                        seq: older,
                    });
                }
            }
        }
        // Saturating: once yielding, for good (a wrap would spin again,
        // and check the clock only every 1024 spins).
        spins = spins.saturating_add(1);
        if yielding {
            stuck.check_now(older);
            std::thread::yield_now();
        } else {
            stuck.check(older);
            std::hint::spin_loop();
        }
    }
}

/// Tests: the address of the publisher entry whose publish last waited for
/// room (`WaitLimit::keep_waiting`), so a test knows a publish on another
/// thread is in its wait (its claiming marker taken by then).
#[cfg(test)]
static WAITING_ENTRY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
thread_local! {
    /// A pause of this thread between a claim and its in-flight record
    /// (tests: a publisher preempted there); zero for none.
    static PAUSE_AFTER_CLAIM: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Runs between every claim and its in-flight record: in tests, the pause
/// of [`PAUSE_AFTER_CLAIM`]; otherwise nothing.
#[inline(always)]
fn after_claim() {
    #[cfg(test)]
    {
        let pause = PAUSE_AFTER_CLAIM.with(|p| p.get());
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

/// What [`PublisherEntry::inflight_state`] reads: claiming from, listed.
#[cfg(test)]
type InflightState = (Option<u64>, Option<core::ops::Range<u64>>);

#[cfg(test)]
thread_local! {
    /// Every in-flight record this thread's publishes stored in their
    /// entry (claiming markers and listings, not the clears), as a
    /// supervisor reading the entry right after each store sees it.
    static RECORDS: std::cell::RefCell<Vec<InflightState>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs after every store of a claiming marker or an in-flight listing:
/// in tests, notes what `entry` now shows in [`RECORDS`]; otherwise
/// nothing.
#[inline(always)]
fn after_record(entry: &PublisherEntry) {
    #[cfg(test)]
    RECORDS.with(|r| r.borrow_mut().push(entry.inflight_state()));
    #[cfg(not(test))]
    let _ = entry;
}

#[cfg(test)]
thread_local! {
    /// How often `wait_for_older_laps` asked the publisher table whether a
    /// live publisher holds the lap it waits for (tests watch the rate).
    static LIVENESS_CHECKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// How often a `StuckWait` asked the segment to resolve the lap it
    /// waits for (`resolve_stalled`: a reap and reads of `/proc`).
    static STALL_RESOLVES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A publish waiting for an older lap of its slot: a publisher that claimed a
/// full ring ago and has not committed. If that lasts past
/// [`STALL_BOUND`], the older sequence is resolved as subscribers resolve a
/// stall: declared lost if no live publisher has it in flight or is
/// claiming from it or earlier (see `mark_claiming`), so a live publisher
/// between its claim and its in-flight record is never mistaken for a dead
/// one.
///
/// Also the yield of the ring's waits behind an older lap (`begin_write`,
/// marking a claim lost, a claim given up): the no_std ring spins and
/// calls [`check`](Self::check) on every turn, and cannot yield itself.
/// Shaped as [`wait_for_older_laps`]: [`OLDER_LAP_SPINS`] spins, then a
/// yield on every further turn (the older lap's publisher may need this
/// very CPU), with the clock read on every yield. Past the bound, a lap
/// still unresolved (a live holder's) is asked about again at most every
/// [`LIVENESS_CHECK_EVERY`]: the resolution reaps and reads `/proc`.
struct StuckWait<'a> {
    seg: &'a Segment,
    /// Turns waited so far, saturating: once past [`OLDER_LAP_SPINS`], this
    /// wait yields for good.
    spins: u32,
    /// The older lap waited for, and when its resolution is next due (at
    /// first, the stall bound after it was first seen): each lap gets its
    /// own full stall bound.
    due: Option<(u64, Instant)>,
}

impl<'a> StuckWait<'a> {
    fn new(seg: &'a Segment) -> Self {
        Self {
            seg,
            spins: 0,
            due: None,
        }
    }

    /// One turn of a ring's wait behind `older`: the first reads the clock
    /// (the stall bound is timed from it), the next [`OLDER_LAP_SPINS`]
    /// only spin (the ring pauses after each), every later one reads the
    /// clock and yields the CPU.
    #[cold]
    fn check(&mut self, older: u64) {
        self.spins = self.spins.saturating_add(1);
        if self.spins == 1 {
            self.check_now(older);
        } else if self.spins > OLDER_LAP_SPINS {
            self.check_now(older);
            std::thread::yield_now();
        }
    }

    /// [`check`](Self::check) without its spin count: reads the clock now
    /// (for a waiter that yields between checks).
    #[cold]
    fn check_now(&mut self, older: u64) {
        let now = Instant::now();
        let due = match self.due {
            Some((lap, due)) if lap == older => due,
            _ => {
                let due = now + STALL_BOUND;
                self.due = Some((older, due));
                due
            }
        };
        if now >= due {
            // Not before the next check's time: behind a live holder,
            // which is never resolved, every yield would reap and read
            // `/proc` for nothing.
            self.due = Some((older, now + LIVENESS_CHECK_EVERY));
            #[cfg(test)]
            STALL_RESOLVES.with(|c| c.set(c.get() + 1));
            // SAFETY: `older` has held our slot for the stall bound (`due`
            // is never earlier than the bound after it was first seen).
            unsafe { self.seg.resolve_stalled(older) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::PublisherOptions;

    /// Pins the calling thread to `cpu` and runs it under `SCHED_FIFO` at
    /// priority 1; false if this process may not (no `CAP_SYS_NICE`).
    fn pin_fifo(cpu: usize) -> bool {
        // SAFETY: `set` is a plain bitmask written through the libc macros;
        // pid 0 is the calling thread for both calls, which read only the
        // structures passed.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return false;
            }
            let param = libc::sched_param { sched_priority: 1 };
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
        }
    }

    /// This thread's CPU, if a thread may be pinned there under
    /// `SCHED_FIFO` (`None`, with a note, where that is refused).
    fn fifo_cpu() -> Option<usize> {
        // SAFETY: sched_getcpu takes no arguments.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0);
        if std::thread::spawn(move || pin_fifo(cpu)).join().unwrap() {
            Some(cpu)
        } else {
            eprintln!("skipped: SCHED_FIFO or pinning refused to this process");
            None
        }
    }

    fn heartbeat(sequence: u64) -> Heartbeat {
        Heartbeat {
            publisher_id: [0; 16],
            sequence,
            timestamp: 0,
        }
    }

    /// Review: a publish that had already claimed its sequence and found
    /// the slot held by an older lap (`begin_write`, `mark_claim_lost`,
    /// the claim paths giving a claim up: every wait that calls
    /// `StuckWait::check`) spun without ever yielding, where the pre-claim
    /// `wait_for_older_laps` yields after its first spins. With several
    /// publishers a publish may claim a later sequence than the head it
    /// checked and land there; where the older lap's publisher needs the
    /// same CPU (2 cores under load), the waiter burnt its slices and
    /// starved it. Made deterministic here: both threads on one CPU under
    /// `SCHED_FIFO` at one priority, where the holder of the older lap (a
    /// live loan, which the stall bound never declares lost) runs only
    /// when the waiter yields; the waiter's claim bypasses the pre-claim
    /// check as a raced claim does. Without the yield it never returns.
    /// Skipped where `SCHED_FIFO` is refused.
    #[test]
    fn regression_a_claimed_publish_behind_an_older_lap_spun_without_yielding() {
        let Some(cpu) = fifo_cpu() else {
            return;
        };
        let path = std::env::temp_dir().join(format!("zc-claimedlap-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "claimedlap", 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let mut a = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut b = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let (lent_tx, lent_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            assert!(pin_fifo(cpu));
            let loan = a.loan::<Heartbeat>().unwrap().write(&heartbeat(0));
            lent_tx.send(loan.seq()).unwrap();
            // Blocks: the waiter runs until it sends `go`, then keeps the
            // CPU (a woken thread of the same FIFO priority does not
            // preempt it) until it yields.
            go_rx.recv().unwrap();
            let committed = loan.commit();
            drop(a);
            committed
        });
        let waiter = std::thread::spawn(move || {
            assert!(pin_fifo(cpu));
            assert_eq!(lent_rx.recv().unwrap(), 0);
            for i in 1..cap {
                assert_eq!(b.publish(&heartbeat(i)).unwrap(), i);
            }
            let mut buf = frame::FrameBuf::default();
            let n = frame::encode(&heartbeat(cap), b.entry as u32, 0, &mut buf.0).unwrap();
            go_tx.send(()).unwrap();
            // Claims `cap` without the pre-claim check, as a publish that
            // raced other publishers past the head it checked: lands on
            // the loan's slot and waits in `begin_write`.
            let result = claim_and_commit(&b.seg, b.entry, &mut b.cache, b.policy, &buf.0[..n]);
            drop(b);
            done_tx.send(result.map_err(|e| e.to_string())).unwrap();
        });
        let waited = done_rx.recv_timeout(Duration::from_secs(10));
        assert!(
            waited.is_ok(),
            "the claimed publish behind the older lap never let its holder run (10 s)"
        );
        waiter.join().unwrap();
        let committed = holder.join().unwrap();
        drop(seg);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(committed, 0);
        assert_eq!(waited.unwrap(), Ok(cap));
    }

    /// Review: once its policy's limit had passed, `wait_for_older_laps`
    /// asked the publisher table whether a live publisher holds the older
    /// lap (`live_publisher_writing`, which reads `/proc` for the holder's
    /// start time) on every yield: behind a dead holder, which is resolved
    /// only at the stall bound (50 ms), that is tens of thousands of
    /// `/proc` reads of CPU burnt for nothing (no hang). Now at most one a
    /// millisecond per lap. Here the holder is a loan whose publisher's
    /// entry names a dead process (our pid, another start time).
    #[test]
    fn regression_an_older_lap_wait_read_proc_on_every_yield_behind_a_dead_holder() {
        let path = std::env::temp_dir().join(format!("zc-deadlap-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "deadlap", 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let mut a = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        // Created before the holder "dies": a new publisher reaps dead
        // entries, which would resolve its lap at once.
        let mut b = ShmPublisher::new(
            seg.clone(),
            &PublisherOptions {
                gating: GatingPolicy::Fail,
                ..Default::default()
            },
        )
        .unwrap();
        let loan = a.loan::<Heartbeat>().unwrap().write(&heartbeat(0));
        assert_eq!(loan.seq(), 0);
        std::mem::forget(loan);
        let (pid, start) = crate::layout::owner_parts(current_owner());
        // Relaxed: single-threaded; the holder's entry now names a dead
        // process (a reused pid), its lap in flight.
        seg.header().publishers[a.entry].pid.store(
            crate::layout::owner_word(pid, start.wrapping_add(1)),
            Ordering::Relaxed,
        );
        std::mem::forget(a);
        for i in 1..cap {
            assert_eq!(b.publish(&heartbeat(i)).unwrap(), i);
        }
        LIVENESS_CHECKS.with(|c| c.set(0));
        let started = Instant::now();
        let published = b.publish(&heartbeat(cap)).map_err(|e| e.to_string());
        let waited = started.elapsed();
        let checks = LIVENESS_CHECKS.with(|c| c.get());
        drop((b, seg));
        std::fs::remove_file(&path).unwrap();
        // The dead holder's lap was resolved at the stall bound.
        assert_eq!(published, Ok(cap));
        let allowed = waited.as_millis() as u32 + 4;
        assert!(
            checks <= allowed,
            "{checks} liveness checks of the holder in {waited:?} behind a dead holder \
             (want at most one a millisecond: {allowed})"
        );
    }

    /// Review of the fix above: past the stall bound, every yield of a wait
    /// behind an older lap still asked the segment to resolve that lap
    /// (`StuckWait::check_now`, `resolve_stalled`: a reap of both tables
    /// and `/proc` reads for each live entry). Behind a live holder, which
    /// is never resolved (a held loan; a policy limit longer than the
    /// stall bound, or any wait after a claim, which cannot give up), that
    /// is a stream of `/proc` reads for as long as the loan is held. Now at
    /// most one a millisecond per lap, as the liveness check. Here the
    /// holder is a live loan of this thread and the waiter's limit 150 ms.
    #[test]
    fn regression_an_older_lap_wait_resolved_on_every_yield_behind_a_live_holder() {
        let path = std::env::temp_dir().join(format!("zc-livelap-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "livelap", 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let mut a = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut b = ShmPublisher::new(
            seg.clone(),
            &PublisherOptions {
                gating: GatingPolicy::Wait(STALL_BOUND + Duration::from_millis(100)),
                ..Default::default()
            },
        )
        .unwrap();
        let loan = a.loan::<Heartbeat>().unwrap().write(&heartbeat(0));
        assert_eq!(loan.seq(), 0);
        for i in 1..cap {
            assert_eq!(b.publish(&heartbeat(i)).unwrap(), i);
        }
        STALL_RESOLVES.with(|c| c.set(0));
        let started = Instant::now();
        let published = b.publish(&heartbeat(cap));
        let waited = started.elapsed();
        let resolves = STALL_RESOLVES.with(|c| c.get());
        let stuck_behind = matches!(published, Err(Error::StuckBehind { seq: 0, .. }));
        assert_eq!(loan.commit(), 0);
        drop((a, b, seg));
        std::fs::remove_file(&path).unwrap();
        assert!(stuck_behind, "not StuckBehind the loan: {published:?}");
        let allowed = waited.as_millis() as u32 + 4;
        assert!(
            resolves <= allowed,
            "{resolves} resolutions of a live holder's lap in {waited:?} \
             (want at most one a millisecond: {allowed})"
        );
    }

    /// Task C (issue 14's harness run under load: `publish:
    /// Publish(DeclaredLost(103826))`): a publisher records its claim in
    /// flight only after taking it; preempted in between for longer than
    /// a subscriber's stall bound, its sequence looked like a dead
    /// publisher's (claimed, listed by no live one) and was declared lost:
    /// the publish failed and the subscriber was told `Lost` for a frame
    /// of a healthy publisher. The preemption is a test-only pause there
    /// (`PAUSE_AFTER_CLAIM`), the subscriber's stall bound 2 ms; on a topic
    /// of many producers and of a single one, for a single publish and a
    /// batch. Now the frames arrive, and no `Lost`.
    #[test]
    fn regression_a_live_publisher_preempted_between_its_claim_and_its_record_was_declared_lost() {
        for (case, producers, batch) in [
            ("many", Producers::Many, false),
            ("single", Producers::Single, false),
            ("many-batch", Producers::Many, true),
            ("single-batch", Producers::Single, true),
        ] {
            let path =
                std::env::temp_dir().join(format!("zc-preempted-{case}-{}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let seg = Arc::new(
                Segment::create_for(
                    &path,
                    "preempted",
                    64,
                    32,
                    crate::config::Access::default(),
                    producers,
                )
                .unwrap(),
            );
            let mut sub = crate::subscriber::ShmSubscriber::new(
                seg.clone(),
                &crate::subscriber::SubscriberOptions {
                    stall_bound: Duration::from_millis(2),
                    ..Default::default()
                },
            )
            .unwrap();
            let mut publisher =
                ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let writer = std::thread::spawn(move || {
                // Far past the stall bound: the subscriber checks many
                // times while the claim is unrecorded.
                PAUSE_AFTER_CLAIM.with(|p| p.set(Duration::from_millis(100)));
                let result = if batch {
                    publisher.publish_batch(&[heartbeat(0), heartbeat(1)])
                } else {
                    publisher.publish(&heartbeat(0))
                };
                done_tx.send(result.map_err(|e| e.to_string())).unwrap();
                drop(publisher);
            });
            let want = if batch { 2 } else { 1 };
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while got.len() < want && Instant::now() < deadline {
                match sub.poll() {
                    Ok(seq) => got.push(Ok(seq)),
                    Err(crate::subscriber::RecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => got.push(Err(e)),
                }
            }
            let published = done_rx.recv_timeout(Duration::from_secs(5));
            writer.join().unwrap();
            drop((sub, seg));
            std::fs::remove_file(&path).unwrap();
            assert_eq!(published, Ok(Ok(0)), "{case}: the preempted publish failed");
            let expected: Vec<_> = (0..want as u64).map(Ok).collect();
            assert_eq!(got, expected, "{case}: what the subscriber received");
        }
    }

    /// Task C: a publish waiting for a gating subscriber to release a slot
    /// (`WaitLimit::keep_waiting`) spun without ever yielding, the
    /// starvation `StuckWait::check` had: where the subscriber needs the
    /// publisher's CPU to read and release, the publisher burnt its slices
    /// until its policy's limit and failed with `RingFull`. Made
    /// deterministic as in
    /// `regression_a_claimed_publish_behind_an_older_lap_spun_without_yielding`:
    /// both on one CPU under `SCHED_FIFO` at one priority, the subscriber
    /// runs only when the publisher yields. Skipped where `SCHED_FIFO` is
    /// refused.
    #[test]
    fn regression_a_publish_waiting_for_a_gating_subscriber_spun_without_yielding() {
        let Some(cpu) = fifo_cpu() else {
            return;
        };
        let path = std::env::temp_dir().join(format!("zc-gatingspin-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "gatingspin", 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let mut sub = crate::subscriber::ShmSubscriber::new(
            seg.clone(),
            &crate::subscriber::SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut publisher = ShmPublisher::new(
            seg.clone(),
            &PublisherOptions {
                gating: GatingPolicy::Wait(Duration::from_secs(2)),
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..cap {
            assert_eq!(publisher.publish(&heartbeat(i)).unwrap(), i);
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            assert!(pin_fifo(cpu));
            ready_tx.send(()).unwrap();
            // Blocks: the publisher runs until it sends `go`, then keeps
            // the CPU (a woken thread of the same FIFO priority does not
            // preempt it) until it yields.
            go_rx.recv().unwrap();
            let got = loop {
                match sub.poll() {
                    Err(crate::subscriber::RecvError::Empty) => std::hint::spin_loop(),
                    other => break other,
                }
            };
            drop(sub);
            got
        });
        let writer = std::thread::spawn(move || {
            assert!(pin_fifo(cpu));
            ready_rx.recv().unwrap();
            go_tx.send(()).unwrap();
            // The ring is full on the subscriber: waits in `keep_waiting`.
            let result = publisher
                .publish(&heartbeat(cap))
                .map_err(|e| e.to_string());
            drop(publisher);
            result
        });
        let published = writer.join().unwrap();
        let read = reader.join().unwrap();
        drop(seg);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read, Ok(0));
        assert_eq!(
            published,
            Ok(cap),
            "the publish waiting for room never let the gating subscriber run"
        );
    }

    /// Review of the direct publish: since the single publish's
    /// `WaitLimit` lives until the publish returns, the gating-wait time
    /// (`PublisherEntry::gating_wait_ns`, "spent waiting" for a gating
    /// subscriber) also counted the write after the wait, with any wait
    /// behind an older lap there. Here a publish waits for a gating
    /// subscriber (until it leaves), claims, then waits behind another
    /// publisher's live loan in its slot (its claim bypasses the pre-claim
    /// check, as a publish that raced other publishers past the head it
    /// checked) for longer than everything before its claim took. No
    /// timing margin: the counted wait lies between the publish's start and
    /// the moment this thread sees its claim listed (both read here, on
    /// the monotonic clock), and the wait behind the loan, all of it after
    /// that moment, lasts longer than that span.
    #[test]
    fn regression_the_gating_wait_time_counted_the_write_after_the_wait() {
        let path = std::env::temp_dir().join(format!("zc-gatingns-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "gatingns", 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let holder = crate::subscriber::ShmSubscriber::new(
            seg.clone(),
            &crate::subscriber::SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut lender = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut waiter = ShmPublisher::new(
            seg.clone(),
            &PublisherOptions {
                gating: GatingPolicy::Wait(Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .unwrap();
        let loan = lender.loan::<Heartbeat>().unwrap().write(&heartbeat(0));
        assert_eq!(loan.seq(), 0);
        for i in 1..cap {
            assert_eq!(waiter.publish(&heartbeat(i)).unwrap(), i);
        }
        let entry = &seg.header().publishers[waiter.entry];
        let waiting_entry = std::ptr::from_ref(entry) as usize;
        let mut buf = frame::FrameBuf::default();
        let n = frame::encode(&heartbeat(cap), waiter.entry as u32, 0, &mut buf.0).unwrap();
        let started = Instant::now();
        let publish = std::thread::spawn(move || {
            // The holder, at 0, holds the whole ring: waits for room; then
            // behind the loan in slot 0.
            let result = claim_and_commit(
                &waiter.seg,
                waiter.entry,
                &mut waiter.cache,
                waiter.policy,
                &buf.0[..n],
            );
            (result.map_err(|e| e.to_string()), waiter)
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        // Acquire: pairs with the Release store in `keep_waiting`.
        while WAITING_ENTRY.load(Ordering::Acquire) != waiting_entry {
            assert!(
                Instant::now() < deadline,
                "the publish never waited for room"
            );
            std::thread::yield_now();
        }
        // Room: the gating subscriber leaves.
        drop(holder);
        while entry.inflight_state().1 != Some(cap..cap + 1) {
            assert!(Instant::now() < deadline, "the publish never claimed");
            std::thread::yield_now();
        }
        let claimed = started.elapsed();
        // Behind the live loan (never declared lost at the stall bound: its
        // publisher lists it) for longer than all of that.
        std::thread::sleep(claimed + Duration::from_millis(20));
        assert_eq!(loan.commit(), 0);
        let (published, waiter) = publish.join().unwrap();
        // Relaxed: the publish's thread was joined.
        let waits = entry.gating_waits.load(Ordering::Relaxed);
        let waited = entry.gating_wait_ns.load(Ordering::Relaxed);
        drop((waiter, lender, seg));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(published, Ok(cap));
        assert_eq!(waits, 1);
        assert!(
            u128::from(waited) <= claimed.as_nanos(),
            "counted {waited} ns of gating wait, where the publish had claimed within {} ns",
            claimed.as_nanos()
        );
    }

    /// Review of task C: the claiming marker said only "claiming", not
    /// from where, so a supervisor declared nothing at all while any live
    /// publisher was claiming: one stopped (SIGSTOP, a debugger, a long
    /// preemption) between its marker and its claim held up, for as long
    /// as it stayed stopped, the declaration of every dead publisher's
    /// sequence, even one claimed long before. A claimer can only take a
    /// sequence at or past the head it saw before marking, so the marker
    /// now carries that head, and an older sequence is declared. Here the
    /// live publisher is this process, its marker up (as if stopped just
    /// before its claim), and the dead one's claim came before it.
    #[test]
    fn regression_a_live_claimer_held_up_the_declaration_of_an_older_dead_claim() {
        let (path, seg, mut sub) = watched_segment("olderdead");
        let live = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let mut dead = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        // Dies right after its claim: sequence 0 taken, never listed.
        let claim = seg.producer_ring().try_claim(&mut dead.cache).unwrap();
        assert_eq!(claim.seq(), 0);
        std::mem::forget(claim);
        play_dead(&seg, dead);
        // The live publisher, stopped between its marker and its claim.
        mark_claiming(live.entry(), &seg);
        let deadline = Instant::now() + Duration::from_secs(2);
        let got = loop {
            match sub.poll() {
                Err(crate::subscriber::RecvError::Empty) if Instant::now() < deadline => {
                    std::hint::spin_loop()
                }
                other => break other,
            }
        };
        clear_claim(live.entry());
        drop((sub, live, seg));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            got,
            Err(crate::subscriber::RecvError::Lost(0)),
            "the dead publisher's sequence 0, claimed before the live one's marker"
        );
    }

    /// The other side of the claiming marker: a publisher that died while
    /// claiming (its marker up, its claim taken and never listed) holds
    /// nothing up. Its reap lists nothing for it (not a huge range), and
    /// the stall check then declares the sequence lost, since no live
    /// publisher is claiming.
    #[test]
    fn a_publisher_dead_while_claiming_has_its_claim_resolved_by_the_stall_check() {
        let (path, seg, mut sub) = watched_segment("deadclaiming");
        let mut dead = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let entry = &seg.header().publishers[dead.entry];
        mark_claiming(entry, &seg);
        let claim = seg.producer_ring().try_claim(&mut dead.cache).unwrap();
        assert_eq!(claim.seq(), 0);
        std::mem::forget(claim);
        // Its entry now names a dead process (a reused pid), its marker up.
        let index = dead.entry;
        play_dead(&seg, dead);
        let reaped = seg.reap_entries();
        assert_eq!(reaped.len(), 1);
        assert_eq!(reaped[0].index, index);
        assert!(
            matches!(reaped[0].action, crate::segment::ReapAction::Freed),
            "reaped as {:?}",
            reaped[0].action
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            match sub.poll() {
                Err(crate::subscriber::RecvError::Empty) if Instant::now() < deadline => {
                    std::hint::spin_loop()
                }
                other => break other,
            }
        };
        drop((sub, seg));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got, Err(crate::subscriber::RecvError::Lost(0)));
    }

    /// Issue 14, closing note: a reaper freed a dead publisher's entry
    /// with the dead owner's in-flight record still in it, here its
    /// claiming marker (it died between its marker and its record). Until
    /// the entry's next owner made its first store, a supervisor read that
    /// live owner's word with the dead one's marker, took it for a live
    /// claimer, and held up the declaration of the dead one's claim. Here
    /// the entry is taken again (the registration's compare-and-swap)
    /// with no store after it, as a new publisher preempted right there.
    #[test]
    fn regression_a_freed_publisher_entry_kept_its_dead_owners_claiming_mark() {
        let (path, seg, sub) = watched_segment("freedmark");
        let mut dead = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        let index = dead.entry;
        let entry = &seg.header().publishers[index];
        mark_claiming(entry, &seg);
        let claim = seg.producer_ring().try_claim(&mut dead.cache).unwrap();
        assert_eq!(claim.seq(), 0);
        std::mem::forget(claim);
        play_dead(&seg, dead);
        let reaped = seg.reap_entries();
        // The next owner's registration, stopped before its first store.
        // AcqRel, as `ShmPublisher::new`'s: Acquire pairs with the reaper's
        // Release FREE store, Release with supervisors' Acquire owner load.
        let taken = entry
            .pid
            .compare_exchange(FREE, current_owner(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        let shown = entry.inflight_state();
        // SAFETY: sequence 0 is claimed (its claimer died right after),
        // and no live publisher holds it: the stall bound is vouched for
        // by this test, which stands for a supervisor past it.
        let declared = unsafe { seg.resolve_stalled(0) }.is_some();
        // Release: pairs with the Acquire loads of later registrations.
        entry.pid.store(FREE, Ordering::Release);
        drop((sub, seg));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(reaped.len(), 1, "reaped: {reaped:?}");
        assert!(taken, "the freed entry could not be taken again");
        assert_eq!(
            shown,
            (None, None),
            "the in-flight record the new owner's entry showed (claiming from, listed)"
        );
        assert!(
            declared,
            "the dead publisher's claim 0 was not declared lost: held up by the new owner"
        );
    }

    /// Review of issue 14's closing note: nothing tested that supervisors
    /// read an entry's owner word before its in-flight record
    /// (`live_owner_record`): read the other way round, the record could be
    /// a dead owner's, read just before a reaper cleared and freed the
    /// entry, and the owner word that of the entry's next, live, owner (a
    /// dead claim held up for as long as that owner lives idle, or a dead
    /// listing named as a live publisher's write). Here the entry is reaped
    /// and taken again between the supervisor's two loads, once with the
    /// dead owner's claiming marker (`in_flight_in_a_live_publisher`) and
    /// once with its listing (`live_publisher_writing`).
    #[test]
    fn regression_a_supervisor_paired_a_dead_owners_record_with_the_next_owners_word() {
        for listed in [false, true] {
            let tag = if listed {
                "ownerfirst-listed"
            } else {
                "ownerfirst-marked"
            };
            let (path, seg, sub) = watched_segment(tag);
            let mut dead = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
            let index = dead.entry;
            let entry = &seg.header().publishers[index];
            mark_claiming(entry, &seg);
            let claim = seg.producer_ring().try_claim(&mut dead.cache).unwrap();
            assert_eq!(claim.seq(), 0);
            if listed {
                record_claim(entry, 0);
            }
            std::mem::forget(claim);
            play_dead(&seg, dead);
            let other = seg.clone();
            let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let took = taken.clone();
            crate::segment::BETWEEN_OWNER_AND_RECORD.with(|h| {
                h.set(Some(Box::new(move || {
                    // Another supervisor reaps the dead owner's entry, and a
                    // new publisher (this process: alive) takes it.
                    let _ = other.reap_entries();
                    // AcqRel, as `ShmPublisher::new`'s registration (see
                    // `live_owner_record` for what it pairs with).
                    let ok = other.header().publishers[index]
                        .pid
                        .compare_exchange(
                            FREE,
                            current_owner(),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok();
                    // Relaxed: read by this thread.
                    took.store(ok, Ordering::Relaxed);
                })));
            });
            // The hook runs at the first entry read, which must be ours.
            assert_eq!(index, 0);
            let found = if listed {
                seg.live_publisher_writing(0).is_some()
            } else {
                seg.in_flight_in_a_live_publisher(0)
            };
            let hook_left = crate::segment::BETWEEN_OWNER_AND_RECORD
                .with(|h| h.take())
                .is_some();
            // Release: pairs with the Acquire loads of later registrations.
            entry.pid.store(FREE, Ordering::Release);
            drop((sub, seg));
            std::fs::remove_file(&path).unwrap();
            assert!(!hook_left, "{tag}: the supervisor never read the entry");
            // Relaxed: stored by this thread.
            assert!(
                taken.load(Ordering::Relaxed),
                "{tag}: the reaped entry could not be taken again"
            );
            assert!(
                !found,
                "{tag}: the dead owner's record was read with the next, live, owner's word"
            );
        }
    }

    /// What the next owner of the freed `entry` shows between its
    /// registration and its first store (there `ShmPublisher::new` is
    /// stopped): the in-flight record, `published`, `heartbeat_ns`, the
    /// gating-wait counts and the name, as a monitor or a supervisor that
    /// reads the new owner's word then reads them. Frees the entry again.
    fn shown_to_the_next_owner(entry: &PublisherEntry) -> (InflightState, [u64; 4], String) {
        // AcqRel, as `ShmPublisher::new`'s: Acquire pairs with the Release
        // FREE store of whoever freed the entry, Release with monitors'
        // Acquire owner loads.
        let taken = entry
            .pid
            .compare_exchange(FREE, current_owner(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        // Relaxed: after the Acquire above, as a monitor's snapshot.
        let counts = [
            entry.published.load(Ordering::Relaxed),
            entry.heartbeat_ns.load(Ordering::Relaxed),
            entry.gating_waits.load(Ordering::Relaxed),
            entry.gating_wait_ns.load(Ordering::Relaxed),
        ];
        let shown = (
            entry.inflight_state(),
            counts,
            crate::layout::load_name(&entry.name),
        );
        // Release: pairs with the Acquire loads of later registrations.
        entry.pid.store(FREE, Ordering::Release);
        assert!(taken, "the freed entry could not be taken again");
        shown
    }

    /// Review of issue 14's closing note (H1): a publisher dropped after a
    /// publish that unwound between its record and its clear (its
    /// claiming marker, or its listing, still up: stored here directly)
    /// freed its entry with the record left in it, where the reaper clears
    /// a dead owner's record before FREE. The entry's next owner, from its
    /// registration to its first store, showed the old record: a
    /// supervisor reading its (live) word with that record held up the
    /// declaration of a dead claim, or named the listing a live write.
    #[test]
    fn regression_a_dropped_publisher_left_its_in_flight_record_to_the_next_owner() {
        for listed in [false, true] {
            let tag = if listed { "droplisted" } else { "dropmarked" };
            let (path, seg, sub) = watched_segment(tag);
            let publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
            let entry = &seg.header().publishers[publisher.entry];
            mark_claiming(entry, &seg);
            if listed {
                record_inflight(entry, 0, 2);
            }
            assert_ne!(entry.inflight_state(), (None, None));
            drop(publisher);
            let (record, _, _) = shown_to_the_next_owner(entry);
            drop((sub, seg));
            std::fs::remove_file(&path).unwrap();
            assert_eq!(
                record,
                (None, None),
                "{tag}: the in-flight record (claiming from, listed) the next owner showed"
            );
        }
    }

    /// Review of issue 14's closing note (H1): an entry freed by the
    /// reaper (or by its owner's drop) kept its last owner's `published`,
    /// `heartbeat_ns`, gating-wait counts and name; the next owner clears
    /// them only after its registration, so a monitor reading the new
    /// owner's word in between (`stat`, `health`) took the old owner's
    /// count and heartbeat for the new one's: one distorted sample (a
    /// count that then falls to 0).
    #[test]
    fn regression_a_freed_publisher_entry_showed_its_last_owners_counts_to_the_next_owner() {
        for reaped in [true, false] {
            let tag = if reaped {
                "reapedcounts"
            } else {
                "droppedcounts"
            };
            let (path, seg, sub) = watched_segment(tag);
            let mut publisher = ShmPublisher::new(
                seg.clone(),
                &PublisherOptions {
                    name: "old-owner".into(),
                    ..Default::default()
                },
            )
            .unwrap();
            for _ in 0..3 {
                publisher.send_heartbeat().unwrap();
            }
            let entry = &seg.header().publishers[publisher.entry];
            // Relaxed: stored by this thread (as a wait for room would).
            entry.gating_waits.store(2, Ordering::Relaxed);
            entry.gating_wait_ns.store(5_000, Ordering::Relaxed);
            if reaped {
                play_dead(&seg, publisher);
                assert_eq!(seg.reap_entries().len(), 1);
            } else {
                drop(publisher);
            }
            let (_, counts, name) = shown_to_the_next_owner(entry);
            drop((sub, seg));
            std::fs::remove_file(&path).unwrap();
            assert_eq!(
                (counts, name.as_str()),
                ([0; 4], ""),
                "{tag}: [published, heartbeat_ns, gating_waits, gating_wait_ns] and name the \
                 next owner showed"
            );
        }
    }

    /// Issue 14, closing note: `publish_batch(&[])` ran the claim for zero
    /// bodies: it put its claiming marker up and listed the head in flight
    /// (a listing of length 0 reads as one sequence), a sequence it never
    /// claimed, which another publisher may claim and die with; a
    /// supervisor held up that declaration meanwhile. An empty batch now
    /// stores nothing in the entry, claims nothing and returns the head.
    #[test]
    fn regression_an_empty_batch_listed_a_sequence_it_never_claimed() {
        let path = std::env::temp_dir().join(format!("zc-emptybatch-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "emptybatch", 64, 32).unwrap());
        let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        for i in 0..3 {
            assert_eq!(publisher.publish(&heartbeat(i)).unwrap(), i);
        }
        RECORDS.with(|r| r.borrow_mut().clear());
        let empty = publisher
            .publish_batch::<Heartbeat>(&[])
            .map_err(|e| e.to_string());
        let stored = RECORDS.with(|r| r.take());
        let entry = publisher.entry();
        // Relaxed: this thread's own stores.
        let after = (
            entry.inflight.load(Ordering::Relaxed),
            entry.inflight_len.load(Ordering::Relaxed),
            seg.ring().head(),
            entry.published.load(Ordering::Relaxed),
        );
        // The hook sees a batch that does claim.
        let one = publisher
            .publish_batch(&[heartbeat(3)])
            .map_err(|e| e.to_string());
        let stored_one = RECORDS.with(|r| r.take());
        drop((publisher, seg));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(empty, Ok(3), "what the empty batch returned");
        assert_eq!(
            stored,
            vec![],
            "the in-flight records the empty batch stored (claiming from, listed)"
        );
        assert_eq!(
            after,
            (0, 1, 3, 3),
            "inflight, inflight_len, head and published after the empty batch"
        );
        assert_eq!(one, Ok(3));
        assert_eq!(stored_one, vec![(Some(3), None), (None, Some(3..4))]);
    }

    /// Review of issue 14's leftovers: `publish_batch` with more bodies
    /// than the ring holds, on a ring that had wrapped, never returned
    /// (even under `GatingPolicy::Fail`): its check for older laps looked
    /// a full ring and more ahead, found the slots of sequences nobody had
    /// claimed yet "held" by them, and waited for laps that no publisher
    /// lists and no supervisor can declare (they are not claimed). It is
    /// now refused before anything, as the ring refuses it on a fresh
    /// ring: `BatchTooLarge`.
    #[test]
    fn regression_a_batch_larger_than_the_ring_waited_forever_for_an_older_lap() {
        let path = std::env::temp_dir().join(format!("zc-bigbatch-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "bigbatch", 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let mut publisher = ShmPublisher::new(
            seg.clone(),
            &PublisherOptions {
                gating: GatingPolicy::Fail,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..cap + 3 {
            assert_eq!(publisher.publish(&heartbeat(i)).unwrap(), i);
        }
        let bodies: Vec<_> = (0..=cap).map(heartbeat).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        // On a thread: a hang is seen as one (a timeout far above the
        // microseconds the refusal takes), not as a hung test.
        std::thread::spawn(move || {
            let result = match publisher.publish_batch(&bodies) {
                Err(Error::Publish(PublishError::BatchTooLarge { len, capacity })) => {
                    Ok((len, capacity))
                }
                other => Err(format!("{other:?}")),
            };
            let entry = publisher.entry();
            // Relaxed: this thread's own stores.
            let record = (
                entry.inflight.load(Ordering::Relaxed),
                entry.inflight_len.load(Ordering::Relaxed),
            );
            let _ = tx.send((result, record));
        });
        let got = rx.recv_timeout(Duration::from_secs(5));
        let head = seg.ring().head();
        drop(seg);
        std::fs::remove_file(&path).unwrap();
        let (result, record) = got.expect("publish_batch of cap + 1 bodies never returned");
        assert_eq!(result, Ok((cap as usize + 1, cap)));
        assert_eq!(
            record,
            (0, 1),
            "the entry's in-flight record after the refusal"
        );
        assert_eq!(head, cap + 3, "the refused batch claimed");
    }

    /// Review of issue 14's leftovers: an entry lists a batch's length in
    /// 32 bits (`inflight_len`), and a segment's ring may have
    /// `MAX_CAPACITY`, 2^32, slots: a batch of a whole such ring (a
    /// `publish_batch` or a `publish_lost`) was accepted and listed as
    /// `n as u32`, 0, which reads as one sequence, so a supervisor could
    /// declare the rest of a live publisher's batch lost while it wrote
    /// them. (Such a ring is 256 GiB of shared memory at least: the
    /// listing of the largest batch the check accepts is tested, not a
    /// publish.)
    #[test]
    fn regression_a_batch_of_a_whole_largest_ring_was_listed_as_one_sequence() {
        let path = std::env::temp_dir().join(format!("zc-listall-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Segment::create(&path, "listall", 64, 32).unwrap();
        let cap = crate::segment::MAX_CAPACITY;
        let candidates = [cap, u64::from(u32::MAX)];
        let largest_batch = candidates
            .into_iter()
            .find(|&n| check_batch_len(n as usize, cap).is_ok());
        let largest_lost = candidates
            .into_iter()
            .find(|&n| check_lost_count(n, cap).is_ok());
        let entry = &seg.header().publishers[0];
        let listed = |largest: Option<u64>| {
            largest.map(|n| {
                record_inflight(entry, 0, n);
                let listed = entry.inflight_range();
                clear_inflight(entry);
                listed.map(|r| r.end - r.start)
            })
        };
        let (batch, lost) = (listed(largest_batch), listed(largest_lost));
        drop(seg);
        std::fs::remove_file(&path).unwrap();
        for (what, largest, listed) in [
            ("publish_batch", largest_batch, batch),
            ("publish_lost", largest_lost, lost),
        ] {
            let largest =
                largest.unwrap_or_else(|| panic!("{what}: no claim of 2^32 - 1 accepted"));
            assert_eq!(
                listed,
                Some(Some(largest)),
                "{what}: sequences listed for the largest claim accepted ({largest}) on a ring of 2^32"
            );
        }
    }

    /// The set-up of the room-wait tests: a gating `holder` that reads
    /// nothing, a `watcher` with a 2 ms stall bound, a `publisher` that
    /// waits up to 10 s for room, and `dead`, a publisher to die.
    struct RoomWait {
        path: std::path::PathBuf,
        seg: Arc<Segment>,
        cap: u64,
        holder: crate::subscriber::ShmSubscriber,
        watcher: crate::subscriber::ShmSubscriber,
        publisher: ShmPublisher,
        dead: ShmPublisher,
    }

    fn room_wait(tag: &str) -> RoomWait {
        let path = std::env::temp_dir().join(format!("zc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, tag, 64, 32).unwrap());
        let cap = seg.ring().capacity();
        let holder = crate::subscriber::ShmSubscriber::new(
            seg.clone(),
            &crate::subscriber::SubscriberOptions {
                gating: true,
                ..Default::default()
            },
        )
        .unwrap();
        let watcher = crate::subscriber::ShmSubscriber::new(
            seg.clone(),
            &crate::subscriber::SubscriberOptions {
                stall_bound: Duration::from_millis(2),
                ..Default::default()
            },
        )
        .unwrap();
        let publisher = ShmPublisher::new(
            seg.clone(),
            &PublisherOptions {
                gating: GatingPolicy::Wait(Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .unwrap();
        let dead = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        RoomWait {
            path,
            seg,
            cap,
            holder,
            watcher,
            publisher,
            dead,
        }
    }

    /// A fresh segment `tag` and a subscriber on it with a 2 ms stall
    /// bound (it resolves a stalled sequence almost at once).
    fn watched_segment(
        tag: &str,
    ) -> (
        std::path::PathBuf,
        Arc<Segment>,
        crate::subscriber::ShmSubscriber,
    ) {
        let path = std::env::temp_dir().join(format!("zc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, tag, 64, 32).unwrap());
        let sub = crate::subscriber::ShmSubscriber::new(
            seg.clone(),
            &crate::subscriber::SubscriberOptions {
                stall_bound: Duration::from_millis(2),
                ..Default::default()
            },
        )
        .unwrap();
        (path, seg, sub)
    }

    /// Makes `dead`'s entry name a dead process (our pid with another
    /// start time) and forgets the publisher, as a crash would.
    fn play_dead(seg: &Segment, dead: ShmPublisher) {
        let (pid, start) = crate::layout::owner_parts(current_owner());
        // Relaxed: the entry now names a dead process; read by this
        // thread's (or, after a spawn, a joined thread's) liveness checks.
        seg.header().publishers[dead.entry].pid.store(
            crate::layout::owner_word(pid, start.wrapping_add(1)),
            Ordering::Relaxed,
        );
        std::mem::forget(dead);
    }

    /// The gating `holder` reads up to a ring's worth (and releases it:
    /// its last receive ends at a release boundary); returns how many.
    fn read_ring(holder: &mut crate::subscriber::ShmSubscriber, cap: u64) -> u64 {
        std::iter::from_fn(|| match holder.poll() {
            Err(crate::subscriber::RecvError::Empty) => None,
            other => Some(other),
        })
        .take(cap as usize)
        .count() as u64
    }

    /// A publish waiting for room lists nothing, not even the claiming
    /// marker (which would hold up every declaration for as long as the
    /// wait may last, see `mark_claiming`): a dead publisher's unlisted
    /// claim is declared lost meanwhile. Here a gating subscriber that
    /// reads nothing holds the publish; another subscriber is stuck behind
    /// the dead publisher's sequence and must be told `Lost` before that
    /// publish ends.
    #[test]
    fn a_publisher_waiting_for_room_holds_up_no_declaration() {
        let RoomWait {
            path,
            seg,
            cap,
            mut holder,
            mut watcher,
            mut publisher,
            mut dead,
        } = room_wait("waitnodecl");
        for i in 0..5 {
            assert_eq!(publisher.publish(&heartbeat(i)).unwrap(), i);
        }
        // Dies while claiming: sequence 5 taken, never listed.
        mark_claiming(&seg.header().publishers[dead.entry], &seg);
        let claim = seg.producer_ring().try_claim(&mut dead.cache).unwrap();
        assert_eq!(claim.seq(), 5);
        std::mem::forget(claim);
        play_dead(&seg, dead);
        for i in 6..cap {
            assert_eq!(publisher.publish(&heartbeat(i)).unwrap(), i);
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            // The holder has read nothing: waits for room.
            let result = publisher
                .publish(&heartbeat(cap))
                .map_err(|e| e.to_string());
            done_tx.send(()).unwrap();
            drop(publisher);
            result
        });
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < 6 && Instant::now() < deadline {
            match watcher.poll() {
                Ok(seq) => got.push(Ok(seq)),
                Err(crate::subscriber::RecvError::Empty) => std::hint::spin_loop(),
                Err(e) => got.push(Err(e)),
            }
        }
        // Still waiting (nothing released yet) when the loss was told.
        let waiting = done_rx.try_recv().is_err();
        // Room for the waiting publish: the holder reads the ring's worth
        // (and releases it: its last receive ends at a release boundary).
        // The dead publisher's sequence reads `Lost` here too.
        let read = read_ring(&mut holder, cap);
        let published = writer.join().unwrap();
        drop((holder, watcher, seg));
        std::fs::remove_file(&path).unwrap();
        let mut expected: Vec<_> = (0..5).map(Ok).collect();
        expected.push(Err(crate::subscriber::RecvError::Lost(5)));
        assert_eq!(got, expected, "what the watcher received");
        assert_eq!(read, cap, "what the holder read");
        assert!(waiting, "the publish did not wait for room");
        assert_eq!(published, Ok(cap));
    }

    /// Review of task C: with the claiming marker naming the head its
    /// claimer read, `a_publisher_waiting_for_room_holds_up_no_declaration`
    /// (whose dead claim comes before the waiter's marker) no longer
    /// needed the marker taken down during the wait, and passed with it
    /// held. This is the case that does: a batch of two waits for room
    /// (room for one), a publisher claims that one after the batch's
    /// marker and dies; a watcher stuck behind it must be told `Lost`
    /// while the batch still waits (a held marker names that sequence).
    #[test]
    fn a_batch_waiting_for_room_holds_up_no_declaration_of_a_claim_after_its_marker() {
        let RoomWait {
            path,
            seg,
            cap,
            mut holder,
            mut watcher,
            mut publisher,
            mut dead,
        } = room_wait("waitafter");
        for i in 0..cap - 1 {
            assert_eq!(publisher.publish(&heartbeat(i)).unwrap(), i);
        }
        let waiter = publisher.entry;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            // Room for one: waits for room, its marker naming `cap - 1`.
            let result = publisher
                .publish_batch(&[heartbeat(cap), heartbeat(cap + 1)])
                .map_err(|e| e.to_string());
            done_tx.send(()).unwrap();
            drop(publisher);
            result
        });
        // The batch waits for room: it read the head (`cap - 1`) for its
        // marker before. (Its marker is up only between the turns of its
        // wait, too briefly to watch for.)
        let waiting_entry = std::ptr::from_ref(&seg.header().publishers[waiter]) as usize;
        let deadline = Instant::now() + Duration::from_secs(5);
        // Acquire: pairs with the Release store in `keep_waiting`.
        while WAITING_ENTRY.load(Ordering::Acquire) != waiting_entry {
            assert!(Instant::now() < deadline, "the batch never waited for room");
            std::thread::yield_now();
        }
        // Dies right after claiming the one slot left: `cap - 1`, unlisted.
        let claim = seg.producer_ring().try_claim(&mut dead.cache).unwrap();
        assert_eq!(claim.seq(), cap - 1);
        std::mem::forget(claim);
        play_dead(&seg, dead);
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match watcher.poll() {
                Ok(seq) if seq + 1 < cap => {}
                Err(crate::subscriber::RecvError::Empty) => std::hint::spin_loop(),
                other => {
                    last = Some(other);
                    break;
                }
            }
        }
        // Still waiting (nothing released yet) when the loss was told.
        let waiting = done_rx.try_recv().is_err();
        // Room for the batch: the holder reads the ring's worth.
        let read = read_ring(&mut holder, cap);
        let published = writer.join().unwrap();
        drop((holder, watcher, seg));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            last,
            Some(Err(crate::subscriber::RecvError::Lost(cap - 1))),
            "what the watcher got after the frames before the dead claim"
        );
        assert_eq!(read, cap, "what the holder read");
        assert!(waiting, "the batch did not wait for room");
        assert_eq!(published, Ok(cap));
    }

    /// Review: as for subscribers
    /// (`regression_a_forked_subscriber_copy_did_not_detach_when_atfork_registration_failed`):
    /// with the `pthread_atfork` registration failed, a forked child
    /// published through the publisher it inherited (on a single-producer
    /// topic, a second producer). It now gets `PublisherInheritedByFork`,
    /// by pid, and the parent still publishes. Reruns itself in a fresh
    /// process where the registration is made to fail.
    #[test]
    fn regression_a_forked_publisher_copy_published_when_atfork_registration_failed() {
        const NAME: &str = "publisher::tests::regression_a_forked_publisher_copy_published_when_atfork_registration_failed";
        if std::env::var_os(ATFORK_FAILS_ENV).is_none() {
            crate::test_child::rerun_alone_with(NAME, ATFORK_FAILS_ENV);
            return;
        }
        let path = std::env::temp_dir().join(format!("zc-forkpub-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seg = Arc::new(Segment::create(&path, "forkpub", 64, 32).unwrap());
        let mut publisher = ShmPublisher::new(seg.clone(), &PublisherOptions::default()).unwrap();
        assert_eq!(publisher.publish(&heartbeat(0)).unwrap(), 0);
        // SAFETY: the child only tries one publish (which fails before
        // touching the ring, or writes a slot of the shared mapping) and
        // leaves with _exit, reporting through its exit code.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let code = match publisher.publish(&heartbeat(1)) {
                Err(Error::PublisherInheritedByFork { .. }) => 0,
                Err(_) => 2,
                Ok(_) => 1,
            };
            // SAFETY: ends the child without running the test harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        let parent = publisher.publish(&heartbeat(1)).map_err(|e| e.to_string());
        drop((publisher, seg));
        std::fs::remove_file(&path).unwrap();
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child published through its inherited publisher (1), or failed otherwise (2)"
        );
        assert_eq!(parent, Ok(1), "the parent could no longer publish");
    }

    /// Written in the review of 4de1eb0 (a one-function `publish`, since
    /// reverted; kept as a guard on both paths): a publish by either leaves its
    /// entry as a loan's commit does (nothing in flight, counted), and one
    /// refused for a full ring (the Fail policy, a gating subscriber
    /// reading nothing) takes its record down, counts nothing, and names
    /// that subscriber in `RingFull`, as the loan path did.
    #[test]
    fn publish_and_publish_words_leave_the_entry_as_a_loans_commit_does() {
        for words in [false, true] {
            let tag = if words { "fullwords" } else { "fullpublish" };
            let path = std::env::temp_dir().join(format!("zc-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let seg = Arc::new(Segment::create(&path, tag, 8, 32).unwrap());
            let holder = crate::subscriber::ShmSubscriber::new(
                seg.clone(),
                &crate::subscriber::SubscriberOptions {
                    name: "holder".into(),
                    gating: true,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut p = ShmPublisher::new(
                seg.clone(),
                &PublisherOptions {
                    gating: GatingPolicy::Fail,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut buf = frame::FrameBuf::default();
            let mut send = |p: &mut ShmPublisher, i: u64| {
                if words {
                    let n = frame::encode(&heartbeat(i), p.id(), 0, &mut buf.0).unwrap();
                    p.publish_words(&buf.0[..n])
                } else {
                    p.publish(&heartbeat(i))
                }
            };
            let cap = seg.ring().capacity();
            for i in 0..cap {
                assert_eq!(send(&mut p, i).unwrap(), i, "{tag}");
            }
            let entry = &seg.header().publishers[p.entry];
            // Relaxed: stored by this thread.
            let counted = || entry.published.load(Ordering::Relaxed);
            assert_eq!(
                (entry.inflight_state(), counted()),
                ((None, None), cap),
                "{tag}"
            );
            let err = send(&mut p, cap).unwrap_err();
            let shown = ((entry.inflight_state(), counted()), err.to_string());
            drop((p, holder, seg));
            std::fs::remove_file(&path).unwrap();
            assert!(
                matches!(&err, Error::RingFull { behind: Some(b), .. } if b.name == "holder"),
                "{tag}: {err}"
            );
            assert_eq!(shown.0, ((None, None), cap), "{tag}: {}", shown.1);
        }
    }
}
