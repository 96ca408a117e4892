//! Conformance tests, run against every storage.

extern crate alloc;
use alloc::vec::Vec;
use std::sync::Arc;
use std::thread;

use super::*;
use crate::storage::{Heap, Inline, Raw};

const PAYLOAD: usize = 5;
const CAPACITY: usize = 64;
const INLINE_WORDS: usize = words_needed(CAPACITY, PAYLOAD);

fn iters(n: u64) -> u64 {
    if cfg!(miri) {
        (n / 100).max(50)
    } else {
        n
    }
}

fn frame(seq: u64) -> [u64; PAYLOAD] {
    // Word 0 is overwritten with the sequence by the ring.
    [0, seq ^ 0xA5A5, seq.wrapping_mul(3), !seq, seq + 7]
}

fn check_frame(seq: u64, out: &[u64]) {
    let mut expected = frame(seq);
    expected[0] = seq;
    assert_eq!(out, expected, "torn or stale frame for seq {seq}");
}

/// Runs `f` against a ring of `capacity` slots in every storage.
fn each_storage(capacity: usize, f: impl Fn(&dyn Ring)) {
    let heap = Broadcast::with_capacity(capacity, PAYLOAD).unwrap();
    f(&heap);

    // Inline storage has its size in its type: the suite uses one capacity.
    assert_eq!(capacity, CAPACITY);
    let words = words_needed(capacity, PAYLOAD);
    let inline = Inline::new(
        BroadcastHeader::new(),
        [const { AtomicU64::new(0) }; INLINE_WORDS],
    );
    f(&Broadcast::init(inline, capacity as u64, PAYLOAD as u64).unwrap());

    let size = Raw::<BroadcastHeader, AtomicU64>::region_size(words);
    let mut backing: Vec<u128> = alloc::vec![0; size.div_ceil(16) + 16];
    let base = backing.as_mut_ptr().cast::<u8>();
    let align = Raw::<BroadcastHeader, AtomicU64>::region_align();
    let offset = base.align_offset(align);
    // SAFETY: `backing` outlives the ring (dropped at the end of this fn),
    // zeroed memory is valid for the header and the atomics, and the region
    // stays inside the allocation (16 spare u128s cover the alignment).
    let raw = unsafe {
        Raw::<BroadcastHeader, AtomicU64>::from_region(base.add(offset), size, words).unwrap()
    };
    let ring = Broadcast::init(raw, capacity as u64, PAYLOAD as u64).unwrap();
    f(&ring);
    // A second handle attached to the same region sees the same ring.
    // SAFETY: same region as above, already initialised.
    let raw2 = unsafe {
        Raw::<BroadcastHeader, AtomicU64>::from_region(base.add(offset), size, words).unwrap()
    };
    let attached = Broadcast::attach(raw2).unwrap();
    assert_eq!(attached.capacity(), capacity as u64);
    assert_eq!(attached.head(), ring.head());
    // The rings are not used past this point; `backing` is freed last.
    drop(backing);
}

/// [`Broadcast::declare_lost`] for these tests, which declare only
/// sequences whose claims they forgot (dead producers), or, in
/// `a_claim_declared_lost_before_its_write_fails_and_leaves_the_slot_alone`,
/// a claim held on the declaring thread before its write starts (the benign
/// case the contract describes: the commit then fails and writes nothing).
trait DeclareDead {
    fn declare_dead(&self, seq: u64) -> Result<Declared, DeclareError>;
}

impl<S: Storage<Header = BroadcastHeader, Elem = AtomicU64>> DeclareDead for Broadcast<S> {
    fn declare_dead(&self, seq: u64) -> Result<Declared, DeclareError> {
        // SAFETY: see the trait: no live producer writes `seq` concurrently.
        unsafe { self.declare_lost(seq) }
    }
}

/// Object-safe view of a ring over any storage, for the conformance suite.
trait Ring: Sync {
    fn publish(&self, cache: &mut GatingCache, payload: &[u64]) -> Result<u64, PublishError>;
    fn recv(&self, c: &mut ReadCursor, out: &mut [u64]) -> Result<u64, TryRecvError>;
    fn cursor(&self, s: Start) -> ReadCursor;
    fn gating(&self, s: Start) -> Result<ReadCursor, GatingTableFull>;
    fn unregister(&self, c: &mut ReadCursor);
    fn claim_and_forget(&self) -> u64;
    fn claim_and_drop(&self) -> u64;
    fn declare(&self, s: u64) -> Result<Declared, DeclareError>;
    fn batch(&self, cache: &mut GatingCache, words: &[u64], fw: usize)
        -> Result<u64, PublishError>;
    fn head(&self) -> u64;
    fn pending(&self, next: u64) -> bool;
}

impl<S: Storage<Header = BroadcastHeader, Elem = AtomicU64> + Sync> Ring for Broadcast<S> {
    fn publish(&self, cache: &mut GatingCache, payload: &[u64]) -> Result<u64, PublishError> {
        self.try_publish(cache, payload)
    }
    fn recv(&self, c: &mut ReadCursor, out: &mut [u64]) -> Result<u64, TryRecvError> {
        self.try_recv(c, out)
    }
    fn cursor(&self, s: Start) -> ReadCursor {
        Broadcast::cursor(self, s)
    }
    fn gating(&self, s: Start) -> Result<ReadCursor, GatingTableFull> {
        self.register_gating(s)
    }
    fn unregister(&self, c: &mut ReadCursor) {
        self.unregister_gating(c)
    }
    fn claim_and_forget(&self) -> u64 {
        let claim = self.try_claim(&mut GatingCache::default()).unwrap();
        let seq = claim.seq();
        core::mem::forget(claim);
        seq
    }
    fn claim_and_drop(&self) -> u64 {
        self.try_claim(&mut GatingCache::default()).unwrap().seq()
    }
    fn declare(&self, s: u64) -> Result<Declared, DeclareError> {
        self.declare_dead(s)
    }
    fn batch(
        &self,
        cache: &mut GatingCache,
        words: &[u64],
        fw: usize,
    ) -> Result<u64, PublishError> {
        self.try_publish_batch(cache, words, fw)
    }
    fn head(&self) -> u64 {
        Broadcast::head(self)
    }
    fn pending(&self, next: u64) -> bool {
        self.is_pending(next)
    }
}

#[test]
fn frames_arrive_in_order_with_their_sequences() {
    each_storage(64, |ring| {
        let mut cache = GatingCache::default();
        let mut c = ring.cursor(Start::Newest);
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.recv(&mut c, &mut out), Err(TryRecvError::Empty));
        for s in 0..40 {
            assert_eq!(ring.publish(&mut cache, &frame(s)), Ok(s));
        }
        for s in 0..40 {
            assert_eq!(ring.recv(&mut c, &mut out), Ok(s));
            check_frame(s, &out);
        }
        assert_eq!(ring.recv(&mut c, &mut out), Err(TryRecvError::Empty));
    });
}

#[test]
fn lapped_consumer_gets_exact_lag_then_oldest() {
    each_storage(64, |ring| {
        let mut cache = GatingCache::default();
        let mut c = ring.cursor(Start::Newest);
        let published = 64 * 3 + 5;
        for s in 0..published {
            ring.publish(&mut cache, &frame(s)).unwrap();
        }
        let mut out = [0u64; PAYLOAD];
        let (mut received, mut lagged) = (0, 0);
        let mut first_after_lag = None;
        loop {
            match ring.recv(&mut c, &mut out) {
                Ok(s) => {
                    check_frame(s, &out);
                    first_after_lag.get_or_insert(s);
                    received += 1;
                }
                Err(TryRecvError::Lagged(n)) => lagged += n,
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(received + lagged, published);
        assert_eq!(lagged, published - 64);
        assert_eq!(first_after_lag, Some(published - 64));
    });
}

#[test]
fn start_at_an_overwritten_sequence_reports_the_gap() {
    each_storage(64, |ring| {
        let mut cache = GatingCache::default();
        for s in 0..100 {
            ring.publish(&mut cache, &frame(s)).unwrap();
        }
        let mut c = ring.cursor(Start::At(10));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(
            ring.recv(&mut c, &mut out),
            Err(TryRecvError::Lagged(100 - 64 - 10))
        );
        assert_eq!(ring.recv(&mut c, &mut out), Ok(36));
        let mut oldest = ring.cursor(Start::Oldest);
        assert_eq!(ring.recv(&mut oldest, &mut out), Ok(36));
    });
}

#[test]
fn payload_larger_than_slot_is_rejected() {
    each_storage(64, |ring| {
        let big = [0u64; PAYLOAD + 1];
        assert_eq!(
            ring.publish(&mut GatingCache::default(), &big),
            Err(PublishError::TooLarge {
                len: PAYLOAD + 1,
                max: PAYLOAD
            })
        );
        assert_eq!(ring.head(), 0, "a rejected publish claims nothing");
    });
}

#[test]
fn dead_producer_is_pending_until_declared_lost_then_a_gap_of_one() {
    each_storage(64, |ring| {
        let mut cache = GatingCache::default();
        let mut c = ring.cursor(Start::Newest);
        let mut out = [0u64; PAYLOAD];
        ring.publish(&mut cache, &frame(0)).unwrap();
        let dead = ring.claim_and_forget(); // producer "killed" mid-publish
        ring.publish(&mut cache, &frame(2)).unwrap();
        assert_eq!(ring.recv(&mut c, &mut out), Ok(0));
        // Claimed, never written: empty to a poll, pending to the explicit check.
        assert_eq!(ring.recv(&mut c, &mut out), Err(TryRecvError::Empty));
        assert!(ring.pending(dead));
        assert!(!ring.pending(dead + 2));
        assert_eq!(ring.declare(dead), Ok(Declared::Lost));
        assert_eq!(ring.declare(dead), Ok(Declared::AlreadyLost));
        assert_eq!(ring.declare(0), Ok(Declared::AlreadyCommitted));
        assert_eq!(ring.declare(99), Err(DeclareError::NotClaimed(99)));
        assert_eq!(ring.recv(&mut c, &mut out), Err(TryRecvError::Lost(dead)));
        assert_eq!(ring.recv(&mut c, &mut out), Ok(2));
        check_frame(2, &out);
        // The slot is reusable on the next lap.
        for s in 3..3 + 64 {
            ring.publish(&mut cache, &frame(s)).unwrap();
        }
    });
}

#[test]
fn a_producer_lapping_a_stalled_claim_waits_and_names_it() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let stalled = ring.try_claim(&mut cache).unwrap();
    assert_eq!(stalled.seq(), 0);
    core::mem::forget(stalled); // its producer dies before writing
    for s in 1..4 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    // Sequence 4 needs slot 0, still held by the dead claim of 0. The writer
    // reports that on every spin; declaring 0 lost hands the slot over.
    let lapping = ring.try_claim(&mut cache).unwrap();
    let mut reported = Vec::new();
    let committed = lapping.commit_with(&frame(4), |older| {
        reported.push(older);
        assert_eq!(ring.declare_dead(older), Ok(Declared::Lost));
    });
    assert_eq!(committed, Ok(4));
    assert_eq!(reported, [0]);
    let mut c = ring.cursor(Start::At(4));
    let mut out = [0u64; PAYLOAD];
    assert_eq!(ring.try_recv(&mut c, &mut out), Ok(4));
    check_frame(4, &out);
}

#[test]
fn only_the_lap_after_a_finished_one_can_be_declared_lost() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    core::mem::forget(ring.try_claim(&mut cache).unwrap()); // 0 dies
    for s in 1..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    core::mem::forget(ring.try_claim(&mut cache).unwrap()); // 4 dies too
                                                            // 4 cannot be declared while 0, the lap before it, is unresolved.
    assert_eq!(ring.declare_dead(4), Err(DeclareError::OlderWriterStuck(0)));
    assert_eq!(ring.declare_dead(0), Ok(Declared::Lost));
    assert_eq!(ring.declare_dead(4), Ok(Declared::Lost));
    assert_eq!(ring.declare_dead(0), Ok(Declared::AlreadyOverwritten));
    // The slot moves on: 8 is written and read.
    for s in 5..9 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    let mut c = ring.cursor(Start::At(4));
    let mut out = [0u64; PAYLOAD];
    assert_eq!(
        ring.try_recv(&mut c, &mut out),
        Err(TryRecvError::Lagged(1))
    );
    for s in 5..9 {
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
        check_frame(s, &out);
    }
}

#[test]
fn a_claim_declared_lost_before_its_write_fails_and_leaves_the_slot_alone() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let slow = ring.try_claim(&mut cache).unwrap();
    assert_eq!(ring.declare_dead(0), Ok(Declared::Lost));
    for s in 1..5 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    // 4 took slot 0 after the declaration; the late commit must not touch it.
    assert_eq!(slow.commit(&frame(0)), Err(PublishError::DeclaredLost(0)));
    let mut c = ring.cursor(Start::At(4));
    let mut out = [0u64; PAYLOAD];
    assert_eq!(ring.try_recv(&mut c, &mut out), Ok(4));
    check_frame(4, &out);
}

#[test]
fn a_batch_claim_commits_what_it_is_given_and_declares_the_rest_lost() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let claim = ring.claim_batch_wait(&mut cache, 3, || false).unwrap();
    assert_eq!((claim.first(), claim.len()), (0, 3));
    // Two frames for three sequences: the third is declared lost.
    let words: Vec<u64> = (0..2).flat_map(frame).collect();
    assert_eq!(claim.commit_with(&words, PAYLOAD, |_| {}), Ok(0));
    // A batch claim dropped without a commit: all of it is lost.
    drop(ring.claim_batch_wait(&mut cache, 2, || false).unwrap());
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD];
    for s in 0..2 {
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
        check_frame(s, &out);
    }
    for s in 2..5 {
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(s)));
    }
    assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Empty));
    assert_eq!(
        ring.claim_batch_wait(&mut cache, 9, || false).unwrap_err(),
        PublishError::BatchTooLarge {
            len: 9,
            capacity: 8
        }
    );
}

#[test]
fn dropped_claim_is_declared_lost_at_once() {
    each_storage(64, |ring| {
        let mut c = ring.cursor(Start::Newest);
        let seq = ring.claim_and_drop();
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.recv(&mut c, &mut out), Err(TryRecvError::Lost(seq)));
        assert_eq!(ring.recv(&mut c, &mut out), Err(TryRecvError::Empty));
    });
}

#[test]
fn gating_consumer_makes_publish_full_instead_of_overwriting() {
    each_storage(64, |ring| {
        let mut cache = GatingCache::default();
        let mut g = ring.gating(Start::Newest).unwrap();
        let mut out = [0u64; PAYLOAD];
        for s in 0..64 {
            ring.publish(&mut cache, &frame(s)).unwrap();
        }
        assert_eq!(
            ring.publish(&mut cache, &frame(64)),
            Err(PublishError::Full)
        );
        assert_eq!(ring.head(), 64, "a Full publish claims nothing");
        // A busy gating consumer releases every RELEASE_EVERY frames.
        for s in 0..63 {
            assert_eq!(ring.recv(&mut g, &mut out), Ok(s));
            check_frame(s, &out);
        }
        assert_eq!(
            ring.publish(&mut cache, &frame(64)),
            Err(PublishError::Full)
        );
        assert_eq!(ring.recv(&mut g, &mut out), Ok(63));
        assert_eq!(ring.publish(&mut cache, &frame(64)), Ok(64));
        assert_eq!(ring.recv(&mut g, &mut out), Ok(64));
        check_frame(64, &out);
        ring.unregister(&mut g);
        for s in 65..65 + 200 {
            assert_eq!(ring.publish(&mut cache, &frame(s)), Ok(s));
        }
    });
}

#[test]
fn idle_gating_consumer_releases_everything_it_read() {
    let ring = Broadcast::with_capacity(64, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut g = ring.register_gating(Start::Newest).unwrap();
    let slot = g.gating_slot().unwrap();
    let mut out = [0u64; PAYLOAD];
    for s in 0..3 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    for s in 0..3 {
        assert_eq!(ring.try_recv(&mut g, &mut out), Ok(s));
    }
    assert_eq!(ring.gating_position(slot), Some(0), "held while busy");
    assert_eq!(ring.try_recv(&mut g, &mut out), Err(TryRecvError::Empty));
    assert_eq!(ring.gating_position(slot), Some(3), "released when idle");
}

/// Regression (issue 13, item 4): the claim word's GATED flag was sticky,
/// so once any gating consumer had registered, every later claim on the
/// ring took the compare-and-swap path, although the README promised a
/// wait-free claim without gating consumers. The last one to leave
/// (unregistered, or its slot released by a supervisor) now clears it, and
/// the ring still gates whoever registers after.
#[test]
fn regression_last_gating_consumer_leaving_restores_wait_free_claims() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    assert!(!ring.claims_are_checked());
    let mut a = ring.register_gating(Start::Newest).unwrap();
    let mut b = ring.register_gating(Start::Newest).unwrap();
    assert!(ring.claims_are_checked());
    ring.unregister_gating(&mut a);
    assert!(ring.claims_are_checked(), "b still gates");
    ring.unregister_gating(&mut b);
    assert!(
        !ring.claims_are_checked(),
        "nobody gates: claims are wait-free again"
    );
    for s in 0..20 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    // A consumer registering after the flag was cleared gates again.
    let mut c = ring.register_gating(Start::Oldest).unwrap();
    assert!(ring.claims_are_checked());
    for s in 20..24 {
        assert_eq!(
            ring.try_publish(&mut cache, &frame(s)),
            Err(PublishError::Full),
            "{s}"
        );
    }
    let mut out = [0u64; PAYLOAD];
    for s in 12..20 {
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
        check_frame(s, &out);
    }
    assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Empty));
    assert_eq!(ring.try_publish(&mut cache, &frame(20)), Ok(20));
    // A supervisor releasing the last (dead) consumer's slot clears it too.
    let slot = c.gating_slot().unwrap();
    // SAFETY: `c` is never used again: its holder is gone.
    unsafe { ring.release_gating_slot(slot) };
    assert!(!ring.claims_are_checked());
}

#[test]
fn gating_table_full_is_an_error() {
    let ring = Broadcast::with_capacity(8, 1).unwrap();
    let mut held: Vec<_> = (0..MAX_GATING)
        .map(|_| ring.register_gating(Start::Newest).unwrap())
        .collect();
    assert_eq!(ring.register_gating(Start::Newest), Err(GatingTableFull));
    ring.unregister_gating(&mut held[3]);
    assert!(ring.register_gating(Start::Newest).is_ok());
}

#[test]
fn batch_gets_consecutive_sequences() {
    each_storage(64, |ring| {
        let mut cache = GatingCache::default();
        let mut c = ring.cursor(Start::Newest);
        let words: Vec<u64> = (0..10).flat_map(frame).collect();
        assert_eq!(ring.batch(&mut cache, &words, PAYLOAD), Ok(0));
        assert_eq!(ring.head(), 10);
        let mut out = [0u64; PAYLOAD];
        for s in 0..10 {
            assert_eq!(ring.recv(&mut c, &mut out), Ok(s));
            check_frame(s, &out);
        }
        let too_many: Vec<u64> = (0..65).flat_map(frame).collect();
        assert!(matches!(
            ring.batch(&mut cache, &too_many, PAYLOAD),
            Err(PublishError::BatchTooLarge { .. })
        ));
    });
}

#[test]
fn bad_layouts_are_rejected() {
    assert_eq!(
        Broadcast::with_capacity(3, 4).unwrap_err(),
        LayoutError::BadCapacity(3)
    );
    assert_eq!(
        Broadcast::with_capacity(4, 0).unwrap_err(),
        LayoutError::BadPayload(0)
    );
    let storage = Heap::new(BroadcastHeader::new(), 10, |_| AtomicU64::new(0));
    assert!(matches!(
        Broadcast::init(storage, 4, 4).unwrap_err(),
        LayoutError::WrongLength {
            needed: 32,
            found: 10
        }
    ));
}

/// Two producers, two lapping consumers: every frame either arrives intact or
/// is counted in a lag, and sequences only increase.
#[test]
fn concurrent_producers_and_lapped_consumers_never_tear() {
    let ring = Arc::new(Broadcast::with_capacity(16, PAYLOAD).unwrap());
    let per_producer = iters(20_000);
    let total = 2 * per_producer;
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let ring = Arc::clone(&ring);
            let mut c = ring.cursor(Start::Oldest);
            thread::spawn(move || {
                let mut out = [0u64; PAYLOAD];
                let (mut received, mut lagged, mut last) = (0u64, 0u64, None);
                while c.next() < total {
                    match ring.try_recv(&mut c, &mut out) {
                        Ok(s) => {
                            check_frame(s, &out);
                            assert!(last.is_none_or(|l| s > l));
                            last = Some(s);
                            received += 1;
                        }
                        Err(TryRecvError::Lagged(n)) => lagged += n,
                        Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                (received, lagged)
            })
        })
        .collect();
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut cache = GatingCache::default();
                for _ in 0..per_producer {
                    // The payload depends on the sequence, which is only known
                    // after the claim: use the two-phase API.
                    let claim = ring.try_claim(&mut cache).unwrap();
                    let seq = claim.seq();
                    claim.commit(&frame(seq)).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for c in consumers {
        let (received, lagged) = c.join().unwrap();
        assert_eq!(received + lagged, total);
    }
}

/// A gating consumer running beside a fast producer sees every sequence.
#[test]
fn gating_consumer_never_misses_a_frame_across_threads() {
    let ring = Arc::new(Broadcast::with_capacity(8, PAYLOAD).unwrap());
    let total = iters(50_000);
    let mut g = ring.register_gating(Start::Newest).unwrap();
    let consumer = {
        let ring = Arc::clone(&ring);
        thread::spawn(move || {
            let mut out = [0u64; PAYLOAD];
            let mut expected = 0;
            while expected < total {
                match ring.try_recv(&mut g, &mut out) {
                    Ok(s) => {
                        assert_eq!(s, expected);
                        check_frame(s, &out);
                        expected += 1;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                    Err(e) => panic!("gating consumer saw {e:?}"),
                }
            }
        })
    };
    let mut cache = GatingCache::default();
    for _ in 0..total {
        loop {
            let claim = match ring.try_claim(&mut cache) {
                Ok(c) => c,
                Err(PublishError::Full) => {
                    thread::yield_now();
                    continue;
                }
                Err(e) => panic!("{e:?}"),
            };
            let seq = claim.seq();
            claim.commit(&frame(seq)).unwrap();
            break;
        }
    }
    consumer.join().unwrap();
}

#[test]
fn manual_release_holds_producers_until_released() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut g = ring.register_gating(Start::Newest).unwrap();
    g.set_manual_release(true);
    let mut out = [0u64; PAYLOAD];
    for s in 0..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    for s in 0..4 {
        assert_eq!(ring.try_recv(&mut g, &mut out), Ok(s));
    }
    // Read but not released: the producer still may not overwrite.
    assert_eq!(
        ring.try_publish(&mut cache, &frame(4)),
        Err(PublishError::Full)
    );
    ring.release(&mut g);
    assert_eq!(ring.try_publish(&mut cache, &frame(4)), Ok(4));
}

#[test]
fn regression_heap_ring_slots_start_on_a_cache_line() {
    // A boxed slice of AtomicU64 is only 8-byte aligned, so a heap ring's
    // slots, padded to whole cache lines, could straddle them: a consumer
    // polling one slot's stamp then shared a line with the tail of the slot
    // before, which halved one-producer throughput depending on where the
    // allocator happened to put the ring. Allocate around other sizes so the
    // allocator's state varies.
    // (Miri checks the same alignment on small rings; large ones are slow
    // to build there.)
    let capacities: &[usize] = if cfg!(miri) {
        &[2, 64, 8]
    } else {
        &[2, 64, 4096, 8, 1024]
    };
    for (i, &capacity) in capacities.iter().enumerate() {
        let filler: Vec<u8> = alloc::vec![0; 24 + i * 40];
        let ring = Broadcast::with_capacity(capacity, PAYLOAD + i).unwrap();
        let at = ring.storage().elems().as_ptr() as usize;
        assert_eq!(at % crate::storage::LINE_ALIGN, 0, "slots at {at:#x}");
        drop(filler);
    }
}

#[test]
fn a_batch_claim_of_empty_frames_commits_each_sequence() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let claim = ring.claim_batch_wait(&mut cache, 2, || false).unwrap();
    assert_eq!(claim.commit_with(&[7, 8, 9], 0, |_| {}), Ok(0));
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD];
    for s in 0..2 {
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
        assert_eq!(
            out[1..],
            [0; PAYLOAD - 1],
            "an empty frame carries no words"
        );
    }
    assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Empty));
}

#[test]
fn regression_recv_batch_keeps_lost_after_frames() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    ring.try_publish(&mut cache, &frame(0)).unwrap();
    drop(ring.try_claim(&mut cache).unwrap()); // 1 is declared lost
    ring.try_publish(&mut cache, &frame(2)).unwrap();
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD * 4];
    // The batch ends at the loss, which the next call returns.
    assert_eq!(ring.recv_batch(&mut c, &mut out, PAYLOAD), Ok(1));
    check_frame(0, &out[..PAYLOAD]);
    assert_eq!(
        ring.recv_batch(&mut c, &mut out, PAYLOAD),
        Err(TryRecvError::Lost(1))
    );
    assert_eq!(ring.recv_batch(&mut c, &mut out, PAYLOAD), Ok(1));
    check_frame(2, &out[..PAYLOAD]);
}

#[test]
fn regression_recv_batch_keeps_lagged_after_frames() {
    // A batch that reads frames and is then lapped must return the frames,
    // then the exact lag on the next call: frames + lag count every
    // sequence. A lap inside a batch needs a concurrent producer, so this
    // races one against a small ring and checks the accounting.
    let ring = Arc::new(Broadcast::with_capacity(4, PAYLOAD).unwrap());
    let total = iters(200_000);
    let producer = {
        let ring = Arc::clone(&ring);
        thread::spawn(move || {
            let mut cache = GatingCache::default();
            for s in 0..total {
                ring.try_publish(&mut cache, &frame(s)).unwrap();
            }
        })
    };
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD * 4];
    let (mut received, mut lagged) = (0u64, 0u64);
    let mut last = None;
    while c.next() < total {
        let before = c.next();
        match ring.recv_batch(&mut c, &mut out, PAYLOAD) {
            Ok(n) => {
                for (i, f) in out.chunks_exact(PAYLOAD).take(n).enumerate() {
                    let seq = before + i as u64;
                    assert!(last.is_none_or(|l| seq > l), "out of order");
                    assert_eq!(f[0], seq, "batch frames are consecutive");
                    last = Some(seq);
                }
                received += n as u64;
            }
            Err(TryRecvError::Lagged(n)) => lagged += n,
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(received + lagged, c.next(), "a lag was dropped");
    }
    producer.join().unwrap();
    assert_eq!(received + lagged, total);
}

/// Runs `f` on a thread and fails (instead of hanging) if it does not finish
/// within `secs` seconds.
fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(()) => handle.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: re-raise its panic.
            handle.join().unwrap();
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {secs} s: a slot is wedged")
        }
    }
}

/// A ring of 4 whose sequence 0 is held by a claim still unwritten (a slow
/// producer), and 1..4 published: the claim of 4 is behind a slow older lap.
fn ring_with_a_slow_older_lap() -> (Arc<Broadcast<Heap<BroadcastHeader, AtomicU64>>>, u64) {
    let ring = Arc::new(Broadcast::with_capacity(4, PAYLOAD).unwrap());
    let mut cache = GatingCache::default();
    let slow = ring.try_claim(&mut cache).unwrap();
    let slow_seq = slow.seq();
    core::mem::forget(slow);
    for s in 1..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    (ring, slow_seq)
}

/// The claim of 4 is dropped (or fails) while 0 is still unwritten; the
/// slow producer of 0 then finishes. 4 must end up marked lost, so that the
/// next lap (8) can be written and a reader sees Lost(4), not a hang.
fn check_dropped_claim_behind_slow_lap(
    fail: impl FnOnce(BatchClaim<'_, Heap<BroadcastHeader, AtomicU64>>) + Send + 'static,
) {
    within(60, move || {
        let (ring, slow_seq) = ring_with_a_slow_older_lap();
        let dropper = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let claim = ring
                    .claim_batch_wait(&mut GatingCache::default(), 1, || false)
                    .unwrap();
                assert_eq!(claim.first(), 4);
                fail(claim);
            })
        };
        // Give the dropper a bounded chance to give up on 4 first (it
        // finishes at once if the drop forgets 4; a fixed drop waits for 0).
        // Either order must end with 4 marked.
        for _ in 0..1_000 {
            if dropper.is_finished() {
                break;
            }
            thread::yield_now();
        }
        // The slow producer of 0 finishes its write late.
        ring.write(slow_seq, &frame(slow_seq), &mut |_| {}).unwrap();
        let mut cache = GatingCache::default();
        dropper.join().unwrap();
        for s in 5..8 {
            ring.try_publish(&mut cache, &frame(s)).unwrap();
        }
        // The next lap of slot 0 is writable: 4 was marked.
        ring.try_publish(&mut cache, &frame(8)).unwrap();
        let mut c = ring.cursor(Start::At(4));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(
            ring.try_recv(&mut c, &mut out),
            Err(TryRecvError::Lagged(1))
        );
        let mut c = ring.cursor(Start::At(5));
        for s in 5..9 {
            assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
        }
    });
}

#[test]
fn regression_dropped_claim_behind_a_slow_older_lap_is_marked_lost() {
    check_dropped_claim_behind_slow_lap(|claim| drop(claim));
}

#[test]
fn regression_commit_with_too_few_words_behind_a_slow_older_lap_is_marked_lost() {
    check_dropped_claim_behind_slow_lap(|claim| {
        assert_eq!(claim.commit_with(&[], PAYLOAD, |_| {}), Ok(4));
    });
}

#[test]
fn regression_commit_with_an_oversized_frame_behind_a_slow_older_lap_is_marked_lost() {
    check_dropped_claim_behind_slow_lap(|claim| {
        let words = [0u64; PAYLOAD + 1];
        assert_eq!(
            claim.commit_with(&words, PAYLOAD + 1, |_| {}),
            Err(PublishError::TooLarge {
                len: PAYLOAD + 1,
                max: PAYLOAD
            })
        );
    });
}

#[test]
fn an_abandoned_claim_keeps_the_frame_in_its_slot_and_reads_as_lost() {
    // What a claim that raced the first gating registration does when its
    // caller stops waiting (`claim`): its sequence reads as lost, but the
    // frame of the lap before it, which a gating consumer may still need,
    // stays readable.
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    for s in 0..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    let claim = ring.try_claim(&mut cache).unwrap();
    assert_eq!(claim.seq(), 4);
    core::mem::forget(claim);
    let mut gating = ring.register_gating(Start::At(0)).unwrap();
    ring.abandon(4, &mut || false, &mut |_| {});
    assert_eq!(ring.declare_dead(4), Ok(Declared::AlreadyLost));
    assert_eq!(ring.declare_dead(0), Ok(Declared::AlreadyCommitted));
    let mut out = [0u64; PAYLOAD];
    for s in 0..4 {
        assert_eq!(ring.try_recv(&mut gating, &mut out), Ok(s));
        check_frame(s, &out);
    }
    assert_eq!(
        ring.try_recv(&mut gating, &mut out),
        Err(TryRecvError::Lost(4))
    );
    let mut plain = ring.cursor(Start::At(4));
    assert_eq!(
        ring.try_recv(&mut plain, &mut out),
        Err(TryRecvError::Lost(4))
    );
    // The next lap of the slot takes its turn as after a lost declaration.
    for s in 5..9 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    for s in 5..9 {
        assert_eq!(ring.try_recv(&mut gating, &mut out), Ok(s));
        check_frame(s, &out);
    }
    assert_eq!(ring.declare_dead(4), Ok(Declared::AlreadyOverwritten));
    ring.unregister_gating(&mut gating);
}

// ------------------------------------------------ review findings (5 to 8)

#[test]
fn regression_corrupt_claim_word_is_an_error_not_a_panic() {
    // A claim word of all ones (a corrupt segment): GATED set, the sequence
    // field at its maximum. Debug builds used to overflow on `cur + n`.
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    // Relaxed: single-threaded test.
    ring.header().claim.store(u64::MAX, Ordering::Relaxed);
    let mut cache = GatingCache::default();
    assert_eq!(
        ring.try_publish(&mut cache, &frame(0)),
        Err(PublishError::SequencesExhausted)
    );
    assert_eq!(ring.header().claim.load(Ordering::Relaxed), u64::MAX);
}

#[test]
fn regression_claims_past_max_seq_are_refused() {
    // Without a gating consumer the claim was a bare fetch_add: past MAX_SEQ
    // it carried into the generation bits.
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    // Relaxed: single-threaded test.
    ring.header().claim.store(MAX_SEQ - 1, Ordering::Relaxed);
    let mut cache = GatingCache::default();
    assert_eq!(
        ring.claim_batch_wait(&mut cache, 2, || false).map(|c| {
            let first = c.first();
            core::mem::forget(c);
            first
        }),
        Err(PublishError::SequencesExhausted)
    );
    let claim = ring.try_claim(&mut cache).unwrap();
    assert_eq!(claim.seq(), MAX_SEQ - 1);
    core::mem::forget(claim);
    assert_eq!(
        ring.try_claim(&mut cache).map(|c| {
            let seq = c.seq();
            core::mem::forget(c);
            seq
        }),
        Err(PublishError::SequencesExhausted)
    );
    assert_eq!(ring.header().claim.load(Ordering::Relaxed), MAX_SEQ);
    assert_eq!(ring.head(), MAX_SEQ);
}

#[test]
fn regression_stamp_not_congruent_with_its_slot_reads_without_underflow() {
    // Slot 0 of a ring of 8 stamped with sequence 3 (corrupt memory): a
    // reader at 0 computed `head - capacity` with head 4 and underflowed.
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    // Relaxed: single-threaded test.
    ring.slot(0)[0].store(stamp(3, COMMITTED), Ordering::Relaxed);
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD];
    let r = ring.try_recv(&mut c, &mut out);
    assert!(matches!(r, Err(TryRecvError::Lagged(n)) if n >= 1), "{r:?}");
    assert!(c.next() > 0, "the cursor must move past the corrupt slot");
    // A stamp behind the cursor but not congruent: not a frame either.
    ring.slot(1)[0].store(stamp(2, COMMITTED), Ordering::Relaxed);
    let mut c = ring.cursor(Start::At(9));
    assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Empty));
}

/// A ring of 4 whose sequence 0 was claimed by a producer that died before
/// writing it, 1..4 published, and 4 claimed by the caller.
fn ring_with_a_dead_older_lap() -> (Broadcast<Heap<BroadcastHeader, AtomicU64>>, u64) {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let dead = ring.try_claim(&mut cache).unwrap();
    let dead_seq = dead.seq();
    core::mem::forget(dead);
    for s in 1..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    (ring, dead_seq)
}

#[test]
fn regression_commit_with_too_few_words_behind_a_dead_older_lap_resolves_it() {
    // The sequences left without a frame used to be marked lost in Drop,
    // which waited for the dead older lap with no `stuck` callback: forever.
    within(20, || {
        let (ring, dead) = ring_with_a_dead_older_lap();
        let claim = ring
            .claim_batch_wait(&mut GatingCache::default(), 1, || false)
            .unwrap();
        assert_eq!(claim.first(), 4);
        let mut asked = Vec::new();
        let r = claim.commit_with(&[], PAYLOAD, |older| {
            asked.push(older);
            let _ = ring.declare_dead(older);
        });
        assert_eq!(r, Ok(4));
        assert_eq!(asked.first(), Some(&dead));
        let mut out = [0u64; PAYLOAD];
        let mut c = ring.cursor(Start::At(4));
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(4)));
    });
}

#[test]
fn regression_abandon_behind_a_dead_older_lap_resolves_it() {
    // `abandon` (a claim that raced the first gating registration, given
    // up) waited for a dead older lap with no way out.
    within(20, || {
        let (ring, dead) = ring_with_a_dead_older_lap();
        let claim = ring.try_claim(&mut GatingCache::default()).unwrap();
        assert_eq!(claim.seq(), 4);
        core::mem::forget(claim);
        let mut asked = Vec::new();
        ring.abandon(4, &mut || false, &mut |older| {
            asked.push(older);
            let _ = ring.declare_dead(older);
        });
        assert_eq!(asked.first(), Some(&dead));
        let mut c = ring.cursor(Start::At(4));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(4)));
    });
}

#[test]
fn regression_declare_lost_keeps_the_previous_lap_readable() {
    // A claim that was never checked against the gating cursors (it raced
    // the first registration) declared lost by a supervisor: LOST(seq) used
    // to replace the previous lap's frame, which a gating consumer that
    // had not read it yet then lost (Lagged).
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    for s in 0..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
    }
    let claim = ring.try_claim(&mut cache).unwrap();
    core::mem::forget(claim);
    let mut gating = ring.register_gating(Start::At(0)).unwrap();
    assert_eq!(ring.declare_dead(4), Ok(Declared::Lost));
    assert_eq!(ring.declare_dead(4), Ok(Declared::AlreadyLost));
    let mut out = [0u64; PAYLOAD];
    for s in 0..4 {
        assert_eq!(ring.try_recv(&mut gating, &mut out), Ok(s));
        check_frame(s, &out);
    }
    assert_eq!(
        ring.try_recv(&mut gating, &mut out),
        Err(TryRecvError::Lost(4))
    );
    // The next lap takes its turn.
    for s in 5..9 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    for s in 5..9 {
        assert_eq!(ring.try_recv(&mut gating, &mut out), Ok(s));
    }
    ring.unregister_gating(&mut gating);
}

#[test]
fn regression_racing_claim_reports_its_sequences_before_it_waits() {
    // `on_claimed` runs once per successful claim, before any wait, with
    // the sequences taken (the ipc layer records them in flight there).
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut seen = None;
    let claim = ring
        .claim_batch_wait_with(
            &mut cache,
            3,
            || false,
            |first, n| seen = Some((first, n)),
            |_| {},
        )
        .unwrap();
    assert_eq!(seen, Some((0, 3)));
    assert_eq!(claim.commit_with(&[0; 3 * PAYLOAD], PAYLOAD, |_| {}), Ok(0));
    let _g = ring.register_gating(Start::Newest).unwrap();
    let mut seen = None;
    let claim = ring
        .claim_wait_with(
            &mut cache,
            || false,
            |first, n| seen = Some((first, n)),
            |_| {},
        )
        .unwrap();
    assert_eq!(seen, Some((3, 1)));
    drop(claim);
}

#[test]
fn regression_adopt_gating_below_the_held_position_never_moves_it_back() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut old = ring.register_gating(Start::Newest).unwrap();
    let index = old.gating_slot().unwrap();
    let mut out = [0u64; PAYLOAD];
    for s in 0..4 {
        ring.try_publish(&mut cache, &frame(s)).unwrap();
        assert_eq!(ring.try_recv(&mut old, &mut out), Ok(s));
    }
    assert_eq!(ring.try_recv(&mut old, &mut out), Err(TryRecvError::Empty));
    assert_eq!(ring.gating_position(index), Some(4));
    // The holder is gone without unregistering (its process died).
    // A restarted durable consumer that re-reads from 1 (what it stored
    // last): it reads 1.., but the hold stays at 4 until it passes it.
    // SAFETY: `old` is never used again (its holder is gone); nobody else
    // touches the slot.
    let mut adopted = unsafe { ring.adopt_gating(index, Start::At(1)) }.unwrap();
    assert_eq!(adopted.next(), 1);
    let mut batch = [0u64; 2 * PAYLOAD];
    assert_eq!(ring.recv_batch(&mut adopted, &mut batch, PAYLOAD), Ok(2));
    assert_eq!(ring.gating_position(index), Some(4), "the hold moved back");
    assert_eq!(ring.try_recv(&mut adopted, &mut out), Ok(3));
    assert_eq!(ring.gating_position(index), Some(4), "the hold moved back");
    assert_eq!(
        ring.try_recv(&mut adopted, &mut out),
        Err(TryRecvError::Empty)
    );
    assert_eq!(ring.gating_position(index), Some(4));
    ring.try_publish(&mut cache, &frame(4)).unwrap();
    assert_eq!(ring.try_recv(&mut adopted, &mut out), Ok(4));
    assert_eq!(
        ring.try_recv(&mut adopted, &mut out),
        Err(TryRecvError::Empty)
    );
    assert_eq!(ring.gating_position(index), Some(5));
    ring.unregister_gating(&mut adopted);
}

/// A slot written in place and committed reads back exactly, sequence in
/// word 0 and the stored words after it.
#[test]
fn slot_write_in_place_delivers_the_stored_words() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut cursor = ring.cursor(Start::Oldest);
    for round in 0..iters(20) {
        let w = ring
            .try_claim(&mut cache)
            .unwrap()
            .begin_write(|_| {})
            .unwrap();
        assert_eq!(w.len(), PAYLOAD);
        let seq = w.seq();
        // Out-of-range and sequence-word stores are ignored.
        w.store(0, 12345);
        w.store(PAYLOAD, 1);
        for (i, word) in frame(seq).iter().enumerate().skip(1) {
            w.store(i, *word);
        }
        assert_eq!(w.commit(), round);
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(seq));
        check_frame(seq, &out);
    }
}

/// A slot write dropped half-way reads as `Lost` (never as a torn frame),
/// and the slot passes to the next lap: publishing continues through it.
#[test]
fn slot_write_dropped_reads_lost_and_the_next_lap_writes() {
    let ring = Broadcast::with_capacity(2, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut cursor = ring.cursor(Start::Oldest);
    let w = ring
        .try_claim(&mut cache)
        .unwrap()
        .begin_write(|_| {})
        .unwrap();
    w.store(1, 0xBAD);
    let mut out = [0u64; PAYLOAD];
    assert_eq!(
        ring.try_recv(&mut cursor, &mut out),
        Err(TryRecvError::Pending(0))
    );
    drop(w);
    assert_eq!(
        ring.try_recv(&mut cursor, &mut out),
        Err(TryRecvError::Lost(0))
    );
    for seq in 1..5 {
        assert_eq!(ring.try_publish(&mut cache, &frame(seq)), Ok(seq));
        assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(seq));
        check_frame(seq, &out);
    }
}

/// A batch written slot by slot in place: every frame in order, and a
/// batch claim dropped after handing out some slots marks only the rest.
#[test]
fn batch_claim_written_in_place_slot_by_slot() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut cursor = ring.cursor(Start::Oldest);
    let mut claim = ring.claim_batch_wait(&mut cache, 3, || false).unwrap();
    for _ in 0..2 {
        let w = claim.begin_next(|_| {}).unwrap().unwrap();
        let seq = w.seq();
        for (i, word) in frame(seq).iter().enumerate().skip(1) {
            w.store(i, *word);
        }
        w.commit();
    }
    drop(claim);
    let mut out = [0u64; PAYLOAD];
    for seq in 0..2 {
        assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(seq));
        check_frame(seq, &out);
    }
    assert_eq!(
        ring.try_recv(&mut cursor, &mut out),
        Err(TryRecvError::Lost(2))
    );
    assert_eq!(ring.try_publish(&mut cache, &frame(3)), Ok(3));
}

/// Review finding: `SlotWrite::commit` stores COMMITTED plainly, relying on
/// nobody having declared a live writer's sequence lost meanwhile (the
/// ipc layer's in-flight list sees to that). A broken promise is caught
/// in debug builds instead of silently restamping the slot.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "no longer being written")]
fn regression_slot_write_commit_asserts_its_slot_is_still_being_written() {
    let ring = Broadcast::with_capacity(4, 2).unwrap();
    let mut cache = GatingCache::default();
    let slot = ring
        .try_claim(&mut cache)
        .unwrap()
        .begin_write(|_| {})
        .unwrap();
    // SAFETY: the test breaks the contract on purpose (the writer of 0
    // is live); the ring itself stays sound, and the commit must notice.
    let declared = unsafe { ring.declare_lost(0) };
    assert_eq!(declared, Ok(Declared::Lost));
    slot.commit();
}

/// Review finding: `unregister_gating` with another ring's cursor (a
/// broken contract in safe code) freed this ring's slot of the same index
/// under a live consumer, which then resurrected it unseen by producers.
/// It can still free a slot that holds exactly its position, but the
/// holder finds out at its next release (it becomes non-gating) and a lap
/// reads as `Lagged`, never as a silent loss.
#[test]
fn regression_unregister_with_another_rings_cursor_is_never_a_silent_loss() {
    let a = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let b = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut victim = a.register_gating(Start::Oldest).unwrap();
    let mut other = b.register_gating(Start::Oldest).unwrap();
    assert_eq!(victim.gating_slot(), other.gating_slot());
    a.unregister_gating(&mut other);
    let mut cache = GatingCache::default();
    let mut out = [0u64; PAYLOAD];
    a.try_publish(&mut cache, &frame(0)).unwrap();
    assert_eq!(a.try_recv(&mut victim, &mut out), Ok(0));
    a.release(&mut victim);
    assert_eq!(victim.gating_slot(), None, "the victim sees its hold gone");
    for i in 1..=8 {
        a.try_publish(&mut cache, &frame(i)).unwrap();
    }
    assert!(matches!(
        a.try_recv(&mut victim, &mut out),
        Err(TryRecvError::Lagged(_))
    ));
    b.unregister_gating(&mut other);
}

/// Review finding: a consumer whose gating slot was freed under it (a
/// broken `release_gating_slot` contract) plain-stored its next position
/// into the FREE slot, resurrecting it unseen by producers (GATED clear).
/// Now it never writes into a slot that is not at its own last position:
/// the cursor becomes non-gating instead, which it can see.
#[test]
fn regression_release_never_resurrects_a_freed_gating_slot() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut out = [0u64; PAYLOAD];
    let mut victim = ring.register_gating(Start::Oldest).unwrap();
    let index = victim.gating_slot().unwrap();
    ring.try_publish(&mut cache, &frame(0)).unwrap();
    // SAFETY: the contract is broken on purpose (the holder is live); the
    // ring stays sound, and what the victim then does is under test.
    unsafe { ring.release_gating_slot(index) };
    assert!(!ring.claims_are_checked());
    assert_eq!(ring.try_recv(&mut victim, &mut out), Ok(0));
    assert_eq!(
        ring.try_recv(&mut victim, &mut out),
        Err(TryRecvError::Empty)
    );
    assert_eq!(
        ring.gating_position(index),
        None,
        "the freed slot was written"
    );
    assert_eq!(
        victim.gating_slot(),
        None,
        "the cursor still thinks it gates"
    );
    // A slot freed and taken by another consumer is not the victim's either.
    let mut victim = ring.register_gating(Start::Newest).unwrap();
    // SAFETY: as above, broken on purpose.
    unsafe { ring.release_gating_slot(index) };
    let mut taker = ring.register_gating_at(index, Start::Oldest).unwrap();
    let taken = ring.gating_position(index);
    ring.try_publish(&mut cache, &frame(1)).unwrap();
    assert_eq!(ring.try_recv(&mut victim, &mut out), Ok(1));
    assert_eq!(
        ring.try_recv(&mut victim, &mut out),
        Err(TryRecvError::Empty)
    );
    assert_eq!(
        ring.gating_position(index),
        taken,
        "another's slot was written"
    );
    ring.unregister_gating(&mut victim);
    assert_eq!(
        ring.gating_position(index),
        taken,
        "another's slot was freed"
    );
    ring.unregister_gating(&mut taker);
    assert_eq!(ring.gating_position(index), None);
}

/// Review of the ring-identity check: a gating cursor remembered its ring
/// by the header's address, so a ring moved after the registration (an
/// inline ring moved into a box; or, across processes, the same segment
/// mapped at another address) ignored the cursor: it could neither release
/// nor unregister, and producers waited for it forever. A ring is a value
/// that may move; the cursor must keep working with it.
#[test]
fn regression_gating_cursor_works_after_its_ring_moved() {
    let inline = Inline::new(
        BroadcastHeader::new(),
        [const { AtomicU64::new(0) }; INLINE_WORDS],
    );
    let ring = Broadcast::init(inline, CAPACITY as u64, PAYLOAD as u64).unwrap();
    let mut cursor = ring.register_gating(Start::Oldest).unwrap();
    let index = cursor.gating_slot().unwrap();
    let moved = alloc::boxed::Box::new(ring);
    let mut cache = GatingCache::default();
    let mut out = [0u64; PAYLOAD];
    moved.try_publish(&mut cache, &frame(0)).unwrap();
    assert_eq!(moved.try_recv(&mut cursor, &mut out), Ok(0));
    moved.release(&mut cursor);
    assert_eq!(
        moved.gating_position(index),
        Some(1),
        "release after the move"
    );
    moved.unregister_gating(&mut cursor);
    assert_eq!(
        moved.gating_position(index),
        None,
        "unregister after the move"
    );
    assert!(!moved.claims_are_checked());
}

fn single_producer(
    mut ring: Broadcast<Heap<BroadcastHeader, AtomicU64>>,
    asymmetric: bool,
) -> Broadcast<Heap<BroadcastHeader, AtomicU64>> {
    // SAFETY: each test using it has one producer, and only this handle.
    unsafe {
        ring.set_single_producer(SingleProducer {
            asymmetric,
            // Nothing to force. Sound only when not asymmetric (the
            // registration's own SeqCst fence pairs with the producer's),
            // or when the producer runs on the registering thread: an
            // asymmetric producer on another thread needs a real
            // membarrier here (tested in the ipc crate, which has one).
            registration_barrier: || true,
        })
    };
    ring
}

#[test]
fn single_producer_ring_publishes_laps_and_gates_without_claim_flags() {
    let ring = single_producer(Broadcast::with_capacity(8, PAYLOAD).unwrap(), true);
    let mut cache = GatingCache::default();
    let mut out = [0u64; PAYLOAD];
    let mut lagging = ring.cursor(Start::Oldest);
    for s in 0..20 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    assert_eq!(ring.head(), 20);
    assert_eq!(
        ring.try_recv(&mut lagging, &mut out),
        Err(TryRecvError::Lagged(12))
    );
    assert_eq!(ring.try_recv(&mut lagging, &mut out), Ok(12));
    check_frame(12, &out);
    // A gating consumer: Full without claiming, as with many producers.
    let mut g = ring.register_gating(Start::Newest).unwrap();
    assert!(
        !ring.claims_are_checked(),
        "the claim word carries no flag in this mode"
    );
    for s in 20..28 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    assert_eq!(
        ring.try_publish(&mut cache, &frame(28)),
        Err(PublishError::Full)
    );
    assert_eq!(ring.head(), 28, "a Full publish claims nothing");
    for s in 20..28 {
        assert_eq!(ring.try_recv(&mut g, &mut out), Ok(s));
        check_frame(s, &out);
    }
    assert_eq!(ring.try_recv(&mut g, &mut out), Err(TryRecvError::Empty));
    assert_eq!(
        ring.try_publish_batch(&mut cache, &[frame(28), frame(29)].concat(), PAYLOAD),
        Ok(28)
    );
    assert_eq!(ring.try_recv(&mut g, &mut out), Ok(28));
    assert_eq!(ring.try_recv(&mut g, &mut out), Ok(29));
    ring.unregister_gating(&mut g);
    for s in 30..50 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
}

#[test]
fn single_producer_gating_consumer_never_misses_a_frame_across_threads() {
    // Not asymmetric: with a no-op registration barrier (the core crate
    // cannot issue membarrier), an asymmetric producer on another thread
    // is outside `set_single_producer`'s contract: its claim store and
    // epoch load may be reordered by the CPU (store buffering), and this
    // test could then fail for a reason that is not a ring bug. The ipc
    // crate tests the asymmetric claim with the real barrier.
    for asymmetric in [false] {
        let ring = Arc::new(single_producer(
            Broadcast::with_capacity(8, PAYLOAD).unwrap(),
            asymmetric,
        ));
        let total = iters(20_000);
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut cache = GatingCache::default();
                let mut seq = 0;
                while seq < total {
                    match ring.publish_wait(&mut cache, &frame(seq), || true) {
                        Ok(s) => {
                            assert_eq!(s, seq, "gapless: nothing given up while waiting");
                            seq += 1;
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        };
        // Registers while the producer runs (the race the claim-word RMW
        // resolves with many producers).
        let mut g = ring.register_gating(Start::Oldest).unwrap();
        let mut out = [0u64; PAYLOAD];
        let mut expected = g.next();
        while expected < total {
            match ring.try_recv(&mut g, &mut out) {
                Ok(s) => {
                    assert_eq!(s, expected);
                    check_frame(s, &out);
                    expected += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer saw {e:?}"),
            }
        }
        producer.join().unwrap();
    }
}

#[test]
fn single_producer_claims_past_max_seq_are_refused() {
    let ring = single_producer(Broadcast::with_capacity(4, PAYLOAD).unwrap(), false);
    // Relaxed: single-threaded test.
    ring.header().claim.store(MAX_SEQ - 1, Ordering::Relaxed);
    let mut cache = GatingCache::default();
    assert_eq!(
        ring.claim_batch_wait(&mut cache, 2, || false)
            .map(|c| c.first()),
        Err(PublishError::SequencesExhausted)
    );
    // Claims only: the slots of these sequences never held their previous
    // laps, so a write would wait for them forever.
    let claim = ring.try_claim(&mut cache).unwrap();
    assert_eq!(claim.seq(), MAX_SEQ - 1);
    core::mem::forget(claim);
    assert_eq!(
        ring.try_claim(&mut cache).map(|c| {
            let seq = c.seq();
            core::mem::forget(c);
            seq
        }),
        Err(PublishError::SequencesExhausted)
    );
    assert_eq!(ring.head(), MAX_SEQ);
}

/// A registration whose barrier failed panicked in the barrier (ipc's
/// assert) with its gating slot already announced: the slot stayed held by
/// a registration that never finished, and the producer stalled at
/// `announce + capacity` for the process's life. Now the barrier reports
/// failure and the registration is given up, its slot freed.
#[test]
fn regression_a_failed_registration_barrier_frees_the_slot() {
    let mut ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    // SAFETY: one producer (this thread), and only this handle.
    unsafe {
        ring.set_single_producer(SingleProducer {
            asymmetric: false,
            registration_barrier: || false,
        })
    };
    let mut cache = GatingCache::default();
    assert!(ring.register_gating_at(0, Start::Oldest).is_none());
    // No slot left held: the producer laps freely.
    for s in 0..40 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
}

#[test]
fn the_direct_single_publish_paths_record_their_claim_once_and_write_the_frame() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let mut seen = Vec::new();
    let published = ring.publish_wait_with(
        &mut cache,
        &frame(0),
        || false,
        |seq| seen.push(seq),
        |_| panic!("no older lap"),
    );
    assert_eq!(published, Ok(0));
    let slot = ring
        .claim_write_with(
            &mut cache,
            || false,
            |seq| seen.push(seq),
            |_| panic!("no older lap"),
        )
        .unwrap();
    assert_eq!(slot.seq(), 1);
    for (i, w) in frame(1).iter().enumerate() {
        slot.store(i, *w);
    }
    assert_eq!(slot.commit(), 1);
    assert_eq!(seen, [0, 1]);
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD];
    for s in 0..2 {
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
        check_frame(s, &out);
    }
}

#[test]
fn the_direct_publish_refuses_a_frame_too_large_before_claiming() {
    let ring = Broadcast::with_capacity(8, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    let words = [0u64; PAYLOAD + 1];
    let r = ring.publish_wait_with(
        &mut cache,
        &words,
        || false,
        |_| panic!("claimed"),
        |_| panic!("stuck"),
    );
    assert_eq!(
        r,
        Err(PublishError::TooLarge {
            len: PAYLOAD + 1,
            max: PAYLOAD
        })
    );
    assert_eq!(ring.head(), 0, "nothing claimed");
}

#[test]
fn the_direct_publish_paths_wait_behind_a_dead_older_lap_and_name_it() {
    for in_place in [false, true] {
        let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
        let mut cache = GatingCache::default();
        core::mem::forget(ring.try_claim(&mut cache).unwrap()); // 0 dies
        for s in 1..4 {
            ring.try_publish(&mut cache, &frame(s)).unwrap();
        }
        let mut reported = Vec::new();
        let mut stuck = bounded_stuck(|older| {
            reported.push(older);
            assert_eq!(ring.declare_dead(older), Ok(Declared::Lost));
        });
        if in_place {
            let slot = ring
                .claim_write_with(&mut cache, || false, |_| {}, &mut stuck)
                .unwrap();
            for (i, w) in frame(4).iter().enumerate() {
                slot.store(i, *w);
            }
            assert_eq!(slot.commit(), 4);
        } else {
            let r = ring.publish_wait_with(&mut cache, &frame(4), || false, |_| {}, &mut stuck);
            assert_eq!(r, Ok(4));
        }
        drop(stuck);
        assert_eq!(reported, [0]);
        let mut c = ring.cursor(Start::At(0));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(
            ring.try_recv(&mut c, &mut out),
            Err(TryRecvError::Lagged(1))
        );
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(1));
        c = ring.cursor(Start::At(4));
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(4));
        check_frame(4, &out);
    }
}

#[test]
fn a_direct_publish_whose_stuck_hook_unwinds_marks_its_claim_lost() {
    for in_place in [false, true] {
        let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
        let mut cache = GatingCache::default();
        core::mem::forget(ring.try_claim(&mut cache).unwrap()); // 0 dies
        for s in 1..4 {
            ring.try_publish(&mut cache, &frame(s)).unwrap();
        }
        // The hook resolves the dead lap (so the unwinding drop does not
        // wait forever) and then panics: sequence 4 was claimed and never
        // begun, and must not be left pending.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let stuck = |older| {
                assert_eq!(ring.declare_dead(older), Ok(Declared::Lost));
                panic!("supervisor hook failed");
            };
            let mut cache = GatingCache::default();
            if in_place {
                drop(ring.claim_write_with(&mut cache, || false, |_| {}, stuck));
            } else {
                let _ = ring.publish_wait_with(&mut cache, &frame(4), || false, |_| {}, stuck);
            }
        }));
        assert!(unwound.is_err());
        assert_eq!(ring.head(), 5);
        let mut c = ring.cursor(Start::At(4));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(4)));
        // The ring goes on.
        assert_eq!(ring.try_publish(&mut cache, &frame(5)), Ok(5));
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(5));
    }
}

#[test]
fn a_direct_claim_declared_lost_before_its_write_begins_is_left_resolved() {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let mut cache = GatingCache::default();
    // A supervisor took the publisher for dead right after its claim.
    let r = ring.claim_write_with(
        &mut cache,
        || false,
        |seq| assert_eq!(ring.declare_dead(seq), Ok(Declared::Lost)),
        bounded_stuck(|_| {}),
    );
    assert_eq!(r.err(), Some(PublishError::DeclaredLost(0)));
    let r = ring.publish_wait_with(
        &mut cache,
        &frame(1),
        || false,
        |seq| assert_eq!(ring.declare_dead(seq), Ok(Declared::Lost)),
        bounded_stuck(|_| {}),
    );
    assert_eq!(r, Err(PublishError::DeclaredLost(1)));
    let mut c = ring.cursor(Start::At(0));
    let mut out = [0u64; PAYLOAD];
    assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(0)));
    assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(1)));
    assert_eq!(ring.try_publish(&mut cache, &frame(2)), Ok(2));
    assert_eq!(ring.try_recv(&mut c, &mut out), Ok(2));
}

/// The most turns a test's `stuck` hook lets a wait behind an older lap
/// take: a broken build then fails with a message instead of spinning
/// forever behind a lap nothing resolves.
const MAX_STUCK_TURNS: u32 = 1_000;

/// A `stuck` hook for tests: runs `f` on each turn, and panics past
/// [`MAX_STUCK_TURNS`] turns.
fn bounded_stuck(mut f: impl FnMut(u64)) -> impl FnMut(u64) {
    let mut turns = 0u32;
    move |older| {
        turns += 1;
        assert!(
            turns <= MAX_STUCK_TURNS,
            "still behind older lap {older} after {MAX_STUCK_TURNS} turns"
        );
        f(older);
    }
}

/// A ring of 4 (single-producer if `single`) whose sequence 0 was claimed
/// by a producer that died before writing it, and 1..4 published: the next
/// claim, 4, is behind the dead lap.
fn a_dead_older_lap(single: bool) -> Broadcast<Heap<BroadcastHeader, AtomicU64>> {
    let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
    let ring = if single {
        single_producer(ring, false)
    } else {
        ring
    };
    let mut cache = GatingCache::default();
    core::mem::forget(ring.try_claim(&mut cache).unwrap()); // 0 dies
    for s in 1..4 {
        assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
    }
    ring
}

/// Stands in, on a single-producer ring, for a consumer that registered
/// at 0 after our claim's room check but before the claim was seen: run
/// from `on_claimed` (between the claim store and the epoch check), it
/// sends the claim down the give-up path.
fn register_behind_the_claim(ring: &Broadcast<Heap<BroadcastHeader, AtomicU64>>) {
    // SeqCst, as `register_gating`'s own stores: the slot before the epoch
    // bump that the claim's epoch check (SeqCst load) reads; one thread
    // here, so what matters is only that the check sees both.
    ring.header().gating[0].store(0, Ordering::SeqCst);
    ring.header().gating_epoch.fetch_add(1, Ordering::SeqCst);
}

/// Takes down the consumer of [`register_behind_the_claim`].
fn unregister_behind_the_claim(ring: &Broadcast<Heap<BroadcastHeader, AtomicU64>>) {
    // SeqCst: as in `register_behind_the_claim`.
    ring.header().gating[0].store(FREE, Ordering::SeqCst);
    ring.header().gating_epoch.fetch_add(1, Ordering::SeqCst);
}

/// Review of the direct publish: `BatchClaim::commit_with` and
/// `begin_next` (so `Claim::commit_with` and `Claim::begin_write`)
/// advanced the claim past a sequence before its write's wait behind an
/// older lap, so a `stuck` hook that unwound there left the sequence to
/// the drop neither written nor marked lost: it read `Empty` for good
/// (`Lost` expected) and the next lap of its slot waited on it forever.
#[test]
fn regression_a_claim_whose_write_wait_unwound_left_its_sequence_unmarked() {
    for in_place in [false, true] {
        let ring = a_dead_older_lap(false);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Resolves the dead lap (so the unwinding drop does not wait
            // for it forever), then fails.
            let stuck = |older| {
                assert_eq!(ring.declare_dead(older), Ok(Declared::Lost));
                panic!("supervisor hook failed");
            };
            let claim = ring.try_claim(&mut GatingCache::default()).unwrap();
            assert_eq!(claim.seq(), 4);
            if in_place {
                drop(claim.begin_write(stuck));
            } else {
                let _ = claim.commit_with(&frame(4), stuck);
            }
        }));
        assert!(unwound.is_err());
        let mut c = ring.cursor(Start::At(4));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(
            ring.try_recv(&mut c, &mut out),
            Err(TryRecvError::Lost(4)),
            "in place: {in_place}"
        );
        // The slot's next lap takes its turn.
        let mut cache = GatingCache::default();
        assert_eq!(ring.try_publish(&mut cache, &frame(5)), Ok(5));
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(5));
    }
}

/// Review of the direct publish: a claim that raced a gating registration
/// and was being given up (`abandon`, in `claim` / `claim_single`) was
/// left claimed, neither written nor marked lost, when a hook unwound in
/// the give-up's wait behind an older lap: subscribers waited on it. Here
/// the direct paths and a batch of two on a single-producer ring, where
/// `on_claimed` stands in for the racing registration.
#[test]
fn regression_a_claim_given_up_when_a_hook_unwound_was_left_unmarked() {
    for path in ["publish", "in place", "batch"] {
        let ring = a_dead_older_lap(true);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut cache = GatingCache::default();
            let stuck = |older| {
                assert_eq!(ring.declare_dead(older), Ok(Declared::Lost));
                panic!("supervisor hook failed");
            };
            match path {
                "publish" => {
                    let on_claimed = |_| register_behind_the_claim(&ring);
                    let r =
                        ring.publish_wait_with(&mut cache, &frame(4), || false, on_claimed, stuck);
                    panic!("returned {r:?}");
                }
                "in place" => {
                    let on_claimed = |_| register_behind_the_claim(&ring);
                    let r = ring.claim_write_with(&mut cache, || false, on_claimed, stuck);
                    panic!("returned {r:?}");
                }
                _ => {
                    let on_claimed = |_, _| register_behind_the_claim(&ring);
                    let r = ring.claim_batch_wait_with(&mut cache, 2, || false, on_claimed, stuck);
                    panic!("returned {r:?}");
                }
            }
        }));
        let message = unwound.unwrap_err();
        assert_eq!(
            message.downcast_ref::<&str>(),
            Some(&"supervisor hook failed"),
            "{path}"
        );
        let claimed = if path == "batch" { 2 } else { 1 };
        assert_eq!(ring.head(), 4 + claimed);
        let mut c = ring.cursor(Start::At(0));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(0)));
        // The frames the racing consumer still needs are kept.
        for s in 1..4 {
            assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s), "{path}");
            check_frame(s, &out);
        }
        for s in 4..4 + claimed {
            assert_eq!(
                ring.try_recv(&mut c, &mut out),
                Err(TryRecvError::Lost(s)),
                "{path}"
            );
        }
        unregister_behind_the_claim(&ring);
        let mut cache = GatingCache::default();
        assert_eq!(
            ring.try_publish(&mut cache, &frame(4 + claimed)),
            Ok(4 + claimed)
        );
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(4 + claimed));
    }
}

/// Review of the direct publish: under a gating consumer that holds the
/// whole ring, both direct paths wait as `keep_waiting` allows and fail
/// with `Full` having claimed nothing (no hook called); once it releases,
/// they claim and write.
#[test]
fn direct_paths_full_under_gating_claim_nothing() {
    for single in [false, true] {
        for in_place in [false, true] {
            let ring = Broadcast::with_capacity(4, PAYLOAD).unwrap();
            let ring = if single {
                single_producer(ring, false)
            } else {
                ring
            };
            let mut cursor = ring.register_gating(Start::Newest).unwrap();
            let mut cache = GatingCache::default();
            for s in 0..4 {
                assert_eq!(ring.try_publish(&mut cache, &frame(s)), Ok(s));
            }
            let mut asked = 0;
            let keep = || {
                asked += 1;
                asked < 3
            };
            let r = if in_place {
                ring.claim_write_with(&mut cache, keep, |_| panic!("claimed"), |_| panic!("stuck"))
                    .map(|s| s.commit())
            } else {
                ring.publish_wait_with(
                    &mut cache,
                    &frame(4),
                    keep,
                    |_| panic!("claimed"),
                    |_| panic!("stuck"),
                )
            };
            assert_eq!(r, Err(PublishError::Full));
            assert_eq!(asked, 3);
            assert_eq!(ring.head(), 4, "nothing claimed");
            let mut out = [0u64; PAYLOAD];
            for s in 0..4 {
                assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(s));
            }
            ring.release(&mut cursor);
            let mut seen = Vec::new();
            let r = if in_place {
                ring.claim_write_with(&mut cache, || false, |q| seen.push(q), |_| panic!("stuck"))
                    .map(|s| {
                        for (i, w) in frame(4).iter().enumerate() {
                            s.store(i, *w);
                        }
                        s.commit()
                    })
            } else {
                ring.publish_wait_with(
                    &mut cache,
                    &frame(4),
                    || false,
                    |q| seen.push(q),
                    |_| panic!("stuck"),
                )
            };
            assert_eq!(r, Ok(4));
            assert_eq!(seen, [4]);
            assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(4));
            check_frame(4, &out);
            ring.unregister_gating(&mut cursor);
        }
    }
}

/// Review of the direct publish: the give-up path of a claim that raced a
/// registration (simulated on a single-producer ring, see
/// [`register_behind_the_claim`]) with a dead older lap in the slot: the
/// claim's `stuck` is the caller's (it resolves the dead lap), the claim
/// is recorded once, before the wait, the sequence reads `Lost`, the
/// frames the consumer still needs stay, and the write's wait never runs.
#[test]
fn direct_paths_give_up_a_racing_claim_behind_a_dead_lap() {
    for in_place in [false, true] {
        let ring = a_dead_older_lap(true);
        let mut cache = GatingCache::default();
        let mut claimed = Vec::new();
        let mut stuck_calls = Vec::new();
        let mut asked = 0;
        let on_claimed = |seq| {
            claimed.push(seq);
            register_behind_the_claim(&ring);
        };
        let keep = || {
            asked += 1;
            false
        };
        let stuck = bounded_stuck(|older| {
            stuck_calls.push(older);
            let _ = ring.declare_dead(older);
        });
        let r = if in_place {
            ring.claim_write_with(&mut cache, keep, on_claimed, stuck)
                .map(|s| s.commit())
        } else {
            ring.publish_wait_with(&mut cache, &frame(4), keep, on_claimed, stuck)
        };
        assert_eq!(r, Err(PublishError::Full));
        assert_eq!(claimed, [4]);
        assert!(asked >= 1);
        assert!(
            !stuck_calls.is_empty() && stuck_calls.iter().all(|&o| o == 0),
            "{stuck_calls:?}"
        );
        assert_eq!(ring.head(), 5);
        let mut c = ring.cursor(Start::At(0));
        let mut out = [0u64; PAYLOAD];
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(0)));
        for s in 1..4 {
            assert_eq!(ring.try_recv(&mut c, &mut out), Ok(s));
            check_frame(s, &out);
        }
        assert_eq!(ring.try_recv(&mut c, &mut out), Err(TryRecvError::Lost(4)));
        unregister_behind_the_claim(&ring);
        assert_eq!(ring.try_publish(&mut cache, &frame(5)), Ok(5));
        assert_eq!(ring.try_recv(&mut c, &mut out), Ok(5));
    }
}
