//! loom models of every zerocast ring.
//!
//! Run with:
//! `RUSTFLAGS="--cfg zerocast_loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p zerocast-loom-tests --profile loom --target-dir target/loom`
//! (the cfg has the project's own name: plain `--cfg loom` would also change
//! other crates).
#![cfg(zerocast_loom)]

use loom::sync::Arc;
use loom::thread;

use zerocast_core::broadcast::{
    Broadcast, DeclareError, Declared, GatingCache, PublishError, SingleProducer, Start,
    TryRecvError,
};
use zerocast_core::mpmc::Mpmc;
use zerocast_core::spsc::{PopError, PushError, Spsc};

/// Runs a loom model. Consumers in these models poll with `yield_now`, which
/// loom counts as branches: allow more than its default of 1000. Preemptions
/// come from `LOOM_MAX_PREEMPTIONS` (CI uses 3).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(f);
}

/// Payload of three words whose last two depend on the first (the sequence,
/// written by the ring), so a torn copy is visible.
fn frame(seq: u64) -> [u64; 3] {
    [0, seq * 10 + 1, seq * 10 + 2]
}

fn assert_intact(seq: u64, out: &[u64; 3]) {
    assert_eq!(out, &[seq, seq * 10 + 1, seq * 10 + 2], "torn frame");
}

/// Publishes one frame whose payload depends on its sequence.
fn publish(
    ring: &Broadcast<impl BroadcastStorage>,
    cache: &mut GatingCache,
) -> Result<u64, PublishError> {
    let claim = ring.try_claim(cache)?;
    let seq = claim.seq();
    claim.commit(&frame(seq))
}

trait BroadcastStorage:
    zerocast_core::storage::Storage<
    Header = zerocast_core::broadcast::BroadcastHeader,
    Elem = loom::sync::atomic::AtomicU64,
>
{
}
impl<T> BroadcastStorage for T where
    T: zerocast_core::storage::Storage<
        Header = zerocast_core::broadcast::BroadcastHeader,
        Elem = loom::sync::atomic::AtomicU64,
    >
{
}

/// Reads until the cursor passes `total`; returns (received, lagged).
fn drain(ring: &Broadcast<impl BroadcastStorage>, start: Start, total: u64) -> (u64, u64) {
    let mut cursor = ring.cursor(start);
    let mut out = [0u64; 3];
    let (mut received, mut lagged) = (0, 0);
    let mut last = None;
    while cursor.next() < total {
        match ring.try_recv(&mut cursor, &mut out) {
            Ok(seq) => {
                assert_intact(seq, &out);
                assert!(last.is_none_or(|l| seq > l), "out of order");
                last = Some(seq);
                received += 1;
            }
            Err(TryRecvError::Lagged(n)) => lagged += n,
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
            Err(TryRecvError::Lost(s)) => panic!("nothing was declared lost, got Lost({s})"),
        }
    }
    (received, lagged)
}

/// A consumer's running count, one receive at a time.
struct Tally {
    cursor: zerocast_core::broadcast::ReadCursor,
    received: u64,
    lagged: u64,
    last: Option<u64>,
}

impl Tally {
    fn new(ring: &Broadcast<impl BroadcastStorage>, start: Start) -> Self {
        Self {
            cursor: ring.cursor(start),
            received: 0,
            lagged: 0,
            last: None,
        }
    }

    /// One receive; false if nothing was there (Empty or Pending).
    fn step(&mut self, ring: &Broadcast<impl BroadcastStorage>) -> bool {
        let mut out = [0u64; 3];
        match ring.try_recv(&mut self.cursor, &mut out) {
            Ok(seq) => {
                assert_intact(seq, &out);
                assert!(self.last.is_none_or(|l| seq > l), "out of order");
                self.last = Some(seq);
                self.received += 1;
                true
            }
            Err(TryRecvError::Lagged(n)) => {
                self.lagged += n;
                true
            }
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => false,
            Err(TryRecvError::Lost(s)) => panic!("nothing was declared lost, got Lost({s})"),
        }
    }
}

#[test]
fn spsc_keeps_order_with_backpressure() {
    model(|| {
        let q = Arc::new(Spsc::<u64, _>::with_capacity(2).unwrap());
        let producer_q = Arc::clone(&q);
        let producer = thread::spawn(move || {
            // SAFETY: the only producer handle of this queue.
            let mut p = unsafe { producer_q.producer() };
            for i in 0..3 {
                let mut v = i;
                while let Err(PushError::Full(back)) = p.push(v) {
                    v = back;
                    thread::yield_now();
                }
            }
        });
        // SAFETY: the only consumer handle of this queue.
        let mut c = unsafe { q.consumer() };
        let mut expected = 0;
        while expected < 3 {
            match c.pop() {
                Ok(v) => {
                    assert_eq!(v, expected);
                    expected += 1;
                }
                Err(PopError::Empty) => thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn spsc_chunks_publish_once_and_stay_ordered() {
    model(|| {
        let q = Arc::new(Spsc::<u64, _>::with_capacity(4).unwrap());
        let producer_q = Arc::clone(&q);
        let producer = thread::spawn(move || {
            // SAFETY: the only producer handle.
            let mut p = unsafe { producer_q.producer() };
            let items = [10, 11, 12];
            let mut sent = 0;
            while sent < items.len() {
                sent += p.push_slice(&items[sent..]);
                if sent < items.len() {
                    thread::yield_now();
                }
            }
        });
        // SAFETY: the only consumer handle.
        let mut c = unsafe { q.consumer() };
        let mut got = Vec::new();
        let mut buf = [0u64; 2];
        while got.len() < 3 {
            let n = c.pop_into(&mut buf);
            got.extend_from_slice(&buf[..n]);
            if n == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, [10, 11, 12]);
        producer.join().unwrap();
    });
}

#[test]
fn mpmc_two_producers_two_consumers_lose_nothing() {
    // Two producers and two consumers race; each consumer makes one attempt
    // while the producers run (an unbounded poll loop would make the state
    // space explode), then whatever is left is drained after the joins.
    model(|| {
        let q = Arc::new(Mpmc::<u64, _>::with_capacity(2).unwrap());
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.push(p + 1).unwrap())
            })
            .collect();
        let consumer_q = Arc::clone(&q);
        let consumer = thread::spawn(move || consumer_q.pop().ok());
        let mut got: Vec<u64> = q.pop().ok().into_iter().collect();
        got.extend(consumer.join().unwrap());
        for p in producers {
            p.join().unwrap();
        }
        while let Ok(v) = q.pop() {
            got.push(v);
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

#[test]
fn broadcast_one_producer_lapped_consumer_counts_every_frame() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let total = 3;
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            for _ in 0..total {
                publish(&producer_ring, &mut cache).unwrap();
            }
        });
        let (received, lagged) = drain(&ring, Start::At(0), total);
        assert_eq!(received + lagged, total);
        producer.join().unwrap();
    });
}

#[test]
fn broadcast_two_producers_never_tear_and_count_every_frame() {
    // Two producers lap a 2-slot ring (3 frames) while a consumer makes a
    // bounded number of reads; the rest is drained after the joins.
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let total = 3;
        let producers: Vec<_> = [2u64, 1]
            .into_iter()
            .map(|n| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut cache = GatingCache::default();
                    for _ in 0..n {
                        publish(&ring, &mut cache).unwrap();
                    }
                })
            })
            .collect();
        let mut tally = Tally::new(&ring, Start::At(0));
        for _ in 0..2 {
            tally.step(&ring);
        }
        for p in producers {
            p.join().unwrap();
        }
        while tally.cursor.next() < total {
            assert!(
                tally.step(&ring),
                "all frames are committed after the joins"
            );
        }
        assert_eq!(tally.received + tally.lagged, total);
    });
}

#[test]
fn broadcast_gating_consumer_never_misses_a_frame() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cursor = ring.register_gating(Start::Newest).unwrap();
        let total = 3;
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            let mut sent = 0;
            while sent < total {
                match publish(&producer_ring, &mut cache) {
                    Ok(_) => sent += 1,
                    Err(PublishError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        let mut out = [0u64; 3];
        let mut expected = 0;
        while expected < total {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer saw {e:?}"),
            }
        }
        producer.join().unwrap();
    });
}

/// Regression: a producer on the checked claim path learned that gating was
/// on from a Relaxed load of the claim word, so its following loads of the
/// gating epoch and cursors could be stale; it validated against an empty
/// table and overwrote a slot the just-registered consumer still needed (the
/// consumer saw `Lagged(1)`). Found at LOOM_MAX_PREEMPTIONS=3.
#[test]
fn regression_gated_claim_must_see_the_registration() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            let mut sent = 0;
            while sent < 3 {
                // Waits for room rather than give a racing claim up (which
                // is `regression_claim_racing_the_first_registration_is_bounded`).
                let published = producer_ring
                    .claim_wait(&mut cache, || true)
                    .and_then(|claim| {
                        let seq = claim.seq();
                        claim.commit(&frame(seq))
                    });
                match published {
                    Ok(_) => sent += 1,
                    Err(PublishError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        // Registers while the producer runs; from its start on, nothing may
        // be overwritten before it reads it.
        let mut cursor = ring.register_gating(Start::Oldest).unwrap();
        let mut out = [0u64; 3];
        let mut expected = cursor.next();
        while expected < 3 {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer saw {e:?}"),
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn broadcast_dead_producer_declared_lost_is_a_gap_of_one() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(4, 3).unwrap());
        let mut cache = GatingCache::default();
        // A producer claims sequence 0 and dies before writing.
        let dead = ring.try_claim(&mut cache).unwrap();
        assert_eq!(dead.seq(), 0);
        core::mem::forget(dead);

        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            publish(&producer_ring, &mut cache).unwrap()
        });
        let supervisor_ring = Arc::clone(&ring);
        // SAFETY: the claim of 0 was forgotten: its producer is dead.
        let supervisor = thread::spawn(move || unsafe { supervisor_ring.declare_lost(0) }.unwrap());

        let mut cursor = ring.cursor(Start::At(0));
        let mut out = [0u64; 3];
        let mut lost = 0;
        let mut received = 0;
        while cursor.next() < 2 {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, 1);
                    assert_intact(seq, &out);
                    received += 1;
                }
                Err(TryRecvError::Lost(seq)) => {
                    assert_eq!(seq, 0);
                    lost += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((lost, received), (1, 1));
        assert_eq!(producer.join().unwrap(), 1);
        assert_eq!(supervisor.join().unwrap(), Declared::Lost);
    });
}

#[test]
fn broadcast_producer_lapping_a_dead_claim_waits_for_its_declaration() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        // A producer claims sequence 0 and dies before writing; sequence 2
        // needs the same slot and must wait for the lost declaration.
        core::mem::forget(ring.try_claim(&mut cache).unwrap());

        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            let first = publish(&producer_ring, &mut cache).unwrap();
            let second = publish(&producer_ring, &mut cache).unwrap();
            (first, second)
        });
        // The supervisor, racing the producer's wait.
        // SAFETY: the claim of 0 was forgotten: its producer is dead.
        assert_eq!(unsafe { ring.declare_lost(0) }, Ok(Declared::Lost));
        assert_eq!(producer.join().unwrap(), (1, 2));

        let mut cursor = ring.cursor(Start::At(1));
        let mut out = [0u64; 3];
        for seq in 1..3 {
            assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(seq));
            assert_intact(seq, &out);
        }
    });
}

#[test]
fn broadcast_declaring_a_live_producer_lost_never_tears_a_frame() {
    // Breaking the contract (declaring a producer that is alive) may deliver
    // the frame after all, but never a torn one, and a failed commit always
    // means consumers see the gap.
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || publish(&producer_ring, &mut GatingCache::default()));
        // SAFETY: deliberately broken: the model checks what the contract
        // says about declaring a live producer (no torn frame, no UB).
        let declared = unsafe { ring.declare_lost(0) };
        let committed = producer.join().unwrap();
        let mut cursor = ring.cursor(Start::At(0));
        let mut out = [0u64; 3];
        let seen = ring.try_recv(&mut cursor, &mut out);
        match (declared, committed) {
            (
                Ok(Declared::AlreadyCommitted | Declared::Lost) | Err(DeclareError::NotClaimed(0)),
                Ok(0),
            ) => {
                assert_eq!(seen, Ok(0));
                assert_intact(0, &out);
            }
            (Ok(Declared::Lost), Err(PublishError::DeclaredLost(0))) => {
                assert_eq!(seen, Err(TryRecvError::Lost(0)));
            }
            other => panic!("inconsistent outcome {other:?}"),
        }
    });
}

/// Regression: a second gating registration, made while GATED was already
/// set (the first consumer still registered), left the claim word unchanged. A producer that had checked
/// room against its cached minimum (from before the registration) still won
/// its compare-and-swap and overwrote the new cursor's first slot: the
/// consumer registered at `Oldest` saw `Lagged(1)`.
#[test]
fn regression_second_gating_registration_is_never_overwritten_before_it_reads() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        // Consumer A gates from 0 and ends caught up at 3; the producer's
        // cache last rescanned when A was at 2, which lets it claim 3
        // without looking at the table again.
        let mut a = ring.register_gating(Start::Newest).unwrap();
        let mut cache = GatingCache::default();
        let mut out = [0u64; 3];
        for seq in 0..3 {
            if seq == 2 {
                // Publishing 2 needs A past 0: read and release first.
                for expected in 0..2 {
                    assert_eq!(ring.try_recv(&mut a, &mut out), Ok(expected));
                }
                assert_eq!(ring.try_recv(&mut a, &mut out), Err(TryRecvError::Empty));
            }
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        assert_eq!(ring.try_recv(&mut a, &mut out), Ok(2));
        assert_eq!(ring.try_recv(&mut a, &mut out), Err(TryRecvError::Empty));
        // The ring holds 1 and 2; the producer may claim 3 (overwriting 1)
        // by its cache, unless a registration wants 1.
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || loop {
            match publish(&producer_ring, &mut cache) {
                Ok(seq) => return seq,
                Err(PublishError::Full) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        });
        let mut b = ring.register_gating(Start::Oldest).unwrap();
        let mut expected = b.next();
        while expected < 4 {
            match ring.try_recv(&mut b, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer registered at Oldest saw {e:?}"),
            }
        }
        assert_eq!(producer.join().unwrap(), 3);
        ring.unregister_gating(&mut a);
    });
}

/// Regression: a producer that loaded the claim word before the first gating
/// registration and claimed (`fetch_add`) after it holds a claim it never
/// checked. It waited, without asking `keep_waiting`, until the new consumer
/// read far enough: under the Fail policy, without bound (here the consumer
/// reads only after the producer returns, so it waited forever). Now it
/// gives up when told to, marks its claim lost without touching a slot the
/// consumer still needs, and returns `Full`.
#[test]
fn regression_claim_racing_the_first_registration_is_bounded() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        // The ring is full (0, 1); claiming 2 overwrites 0.
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            // The Fail policy: never wait for a gating consumer.
            match producer_ring.claim_wait(&mut cache, || false) {
                Ok(claim) => {
                    let seq = claim.seq();
                    claim.commit(&frame(seq)).map(Some)
                }
                Err(e) => Err(e),
            }
        });
        let mut cursor = ring.register_gating(Start::Oldest).unwrap();
        let outcome = producer.join().unwrap();
        let mut out = [0u64; 3];
        let mut expected = cursor.next();
        let (mut received, mut lost) = (0, 0);
        loop {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    received += 1;
                    expected += 1;
                }
                Err(TryRecvError::Lost(seq)) => {
                    assert_eq!(seq, expected);
                    assert_eq!(
                        outcome,
                        Err(PublishError::Full),
                        "only a given-up claim is lost"
                    );
                    lost += 1;
                    expected += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("gating consumer registered at Oldest saw {e:?}"),
            }
        }
        // Every sequence from the start to the head is accounted for.
        assert_eq!(expected, ring.head());
        assert!(received + lost >= 1);
        ring.unregister_gating(&mut cursor);
    });
}

/// Review finding 5: a claim that raced the first gating registration is
/// taken before it waits for room, so its caller must learn its sequences
/// (to record them in flight) before that wait: `on_claimed` runs before
/// any `keep_waiting`, and a claim that succeeds reported itself exactly
/// once. (Before the fix there was no hook: the ipc layer recorded the
/// claim only after `claim_wait` returned.)
#[test]
fn regression_racing_claim_reports_its_sequences_before_it_waits() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let recorded = core::cell::Cell::new(None);
            let claim = producer_ring.claim_wait_with(
                &mut cache,
                || {
                    // The only producer: a head past 2 means 2 is ours.
                    // (The checked path also asks before it claims.)
                    if producer_ring.head() > 2 {
                        assert!(recorded.get().is_some(), "waits before it is recorded");
                    }
                    false
                },
                |first, n| {
                    assert!(recorded.replace(Some((first, n))).is_none());
                },
                |_| {},
            );
            match claim {
                Ok(claim) => {
                    assert_eq!(recorded.get(), Some((claim.seq(), 1)));
                    let seq = claim.seq();
                    claim.commit(&frame(seq)).map(Some)
                }
                Err(e) => Err(e),
            }
        });
        let mut cursor = ring.register_gating(Start::Oldest).unwrap();
        let _ = producer.join().unwrap();
        ring.unregister_gating(&mut cursor);
    });
}

/// Review finding 5 (the ring's half) and the loom gap "a reader copying
/// across the declaration": a sequence declared lost before its write
/// started keeps the previous lap's frame readable, intact, even for a
/// reader whose copy straddles the declaration; the next lap's writer takes
/// its turn from the lost-laps stamp.
#[test]
fn regression_declare_lost_keeps_the_frame_a_reader_is_copying() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        // Sequence 2 (slot of 0) is claimed and never written.
        core::mem::forget(ring.try_claim(&mut cache).unwrap());
        let supervisor_ring = Arc::clone(&ring);
        // SAFETY: the claim of 2 was forgotten: its producer is dead.
        let supervisor = thread::spawn(move || unsafe { supervisor_ring.declare_lost(2) });
        let mut cursor = ring.cursor(Start::At(0));
        let mut out = [0u64; 3];
        assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(0));
        assert_intact(0, &out);
        assert_eq!(supervisor.join().unwrap(), Ok(Declared::Lost));
        // The next lap of slot 0 (4) waits for nothing: 3, then 4.
        assert_eq!(publish(&ring, &mut cache), Ok(3));
        assert_eq!(publish(&ring, &mut cache), Ok(4));
        let mut cursor = ring.cursor(Start::At(3));
        for seq in 3..5 {
            assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(seq));
            assert_intact(seq, &out);
        }
    });
}

/// Loom gap: the next lap's writer waiting on a slot whose previous lap is
/// being declared lost (stamped as a lost lap after the kept frame).
#[test]
fn broadcast_writer_waiting_on_a_lost_lap_takes_its_turn() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        core::mem::forget(ring.try_claim(&mut cache).unwrap());
        assert_eq!(publish(&ring, &mut cache), Ok(3));
        // 4 needs slot 0, whose lap 2 is unwritten until declared lost.
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || publish(&producer_ring, &mut cache));
        // SAFETY: the claim of 2 was forgotten: its producer is dead.
        assert_eq!(unsafe { ring.declare_lost(2) }, Ok(Declared::Lost));
        assert_eq!(producer.join().unwrap(), Ok(4));
        let mut cursor = ring.cursor(Start::At(3));
        let mut out = [0u64; 3];
        for seq in 3..5 {
            assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(seq));
            assert_intact(seq, &out);
        }
    });
}

/// Review finding 8 and the loom gap for `adopt_gating`: a consumer
/// adopting a held gating slot with a start below the hold reads from
/// there but never moves the hold back, and a producer racing the adoption
/// never overwrites a frame at or past the hold before the adopter reads it.
#[test]
fn regression_adopt_gating_never_lets_a_producer_overwrite_unread_frames() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        let mut old = ring.register_gating(Start::Newest).unwrap();
        let index = old.gating_slot().unwrap();
        let mut out = [0u64; 3];
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
            assert_eq!(ring.try_recv(&mut old, &mut out), Ok(seq));
        }
        // Releases 0 and 1; then the holder is gone (its process died).
        assert_eq!(ring.try_recv(&mut old, &mut out), Err(TryRecvError::Empty));

        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut sent = 0;
            while sent < 2 {
                match publish(&producer_ring, &mut cache) {
                    Ok(_) => sent += 1,
                    Err(PublishError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        // Re-reads from 1: frame 1 was released (the producer may overwrite
        // it: `Lagged`), 2 and 3 were not.
        // SAFETY: `old` is never used again; nobody else touches the slot.
        let mut adopted = unsafe { ring.adopt_gating(index, Start::At(1)) }.unwrap();
        let mut expected = 1;
        while expected < 4 {
            match ring.try_recv(&mut adopted, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Lagged(n)) => {
                    assert!(adopted.next() <= 2, "lagged past the hold by {n}");
                    expected = adopted.next();
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("adopted cursor saw {e:?}"),
            }
            assert!(ring.gating_position(index).unwrap() >= 2);
        }
        producer.join().unwrap();
        ring.unregister_gating(&mut adopted);
    });
}

/// Loom gaps: a supervisor declaring a claim lost while that claim (which
/// raced the first gating registration) waits or is given up (`abandon`),
/// and a gating reader copying the slot's kept frame meanwhile. The gating
/// consumer never loses a frame it has not read (no `Lagged`), and every
/// sequence reads as a frame or as lost.
#[test]
fn broadcast_declaration_racing_a_racing_claim_keeps_gated_frames() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            if let Ok(claim) = producer_ring.claim_wait(&mut cache, || false) {
                let seq = claim.seq();
                let _ = claim.commit(&frame(seq));
            }
        });
        let supervisor_ring = Arc::clone(&ring);
        let supervisor = thread::spawn(move || {
            // SAFETY: deliberately broken where the producer is alive: the
            // model checks the contract's promise (no torn frame, no loss
            // of a gated frame) for a declaration racing a racing claim.
            let _ = unsafe { supervisor_ring.declare_lost(2) };
        });
        let mut cursor = ring.register_gating(Start::Oldest).unwrap();
        let mut out = [0u64; 3];
        let mut expected = cursor.next();
        // One read racing both.
        match ring.try_recv(&mut cursor, &mut out) {
            Ok(seq) => {
                assert_eq!(seq, expected);
                assert_intact(seq, &out);
                expected += 1;
            }
            Err(TryRecvError::Lost(seq)) => {
                assert_eq!(seq, expected);
                expected += 1;
            }
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => {}
            Err(e) => panic!("gating consumer saw {e:?}"),
        }
        producer.join().unwrap();
        supervisor.join().unwrap();
        loop {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Lost(seq)) => {
                    assert_eq!(seq, expected);
                    expected += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(e) => panic!("gating consumer saw {e:?}"),
            }
        }
        assert_eq!(expected, ring.head());
        ring.unregister_gating(&mut cursor);
    });
}

/// Issue 13, item 4: the claim word's GATED flag was sticky, so a topic
/// that ever had a gating consumer claimed by compare-and-swap forever. The
/// last consumer to leave now clears it. Two leaving at once each free
/// their slot and then scan the table: each may find the other still there
/// unless the scans are ordered after both frees (the SeqCst fence in
/// `free_gating_slot`); then nobody would clear. Whatever the interleaving,
/// the flag is clear once both are gone.
#[test]
fn regression_last_gating_consumers_leaving_together_clear_the_flag() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut a = ring.register_gating(Start::Newest).unwrap();
        let mut b = ring.register_gating(Start::Newest).unwrap();
        assert!(ring.claims_are_checked());
        let other_ring = Arc::clone(&ring);
        let other = thread::spawn(move || other_ring.unregister_gating(&mut a));
        ring.unregister_gating(&mut b);
        other.join().unwrap();
        assert!(
            !ring.claims_are_checked(),
            "nobody gates, claims still checked"
        );
    });
}

/// Issue 13, item 4, the race the clearing must not lose: the last gating
/// consumer leaves (clearing GATED) while another registers and a producer
/// publishes. A clear that lands after the registration's flag would let
/// producers `fetch_add` past the new consumer's unread frames; the clear
/// only succeeds on a claim word of the generation it saw with an empty
/// table, so the new consumer, registered at `Oldest`, never reads
/// `Lagged`. A claim that raced the registration on the unchecked path may
/// be given up (it reads as `Lost`, and the producer publishes again).
#[test]
fn gating_registration_racing_the_last_leave_is_never_overrun() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        for seq in 0..2 {
            assert_eq!(publish(&ring, &mut cache), Ok(seq));
        }
        // A gates from 2: the producer may claim 2 (overwriting 0).
        let mut a = ring.register_gating(Start::Newest).unwrap();
        let leaver_ring = Arc::clone(&ring);
        let leaver = thread::spawn(move || leaver_ring.unregister_gating(&mut a));
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || loop {
            match publish(&producer_ring, &mut cache) {
                Ok(seq) => return seq,
                Err(PublishError::Full) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        });
        let mut b = ring.register_gating(Start::Oldest).unwrap();
        let mut out = [0u64; 3];
        let mut expected = b.next();
        let mut end = 3;
        while expected < end {
            match ring.try_recv(&mut b, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Lost(seq)) => {
                    assert_eq!(seq, expected);
                    // Only a claim given up for us: the producer retries.
                    end = seq + 2;
                    expected += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer registered at Oldest saw {e:?}"),
            }
        }
        leaver.join().unwrap();
        let last = producer.join().unwrap();
        assert_eq!(last + 1, end, "the producer's frame was read");
        assert!(ring.claims_are_checked(), "b still gates");
        ring.unregister_gating(&mut b);
        assert!(!ring.claims_are_checked());
    });
}

/// Writes the frame of a claimed sequence in place, word by word, through a
/// `SlotWrite` (the loan path of the ipc publisher), and commits it.
fn publish_in_place(
    ring: &Broadcast<impl BroadcastStorage>,
    cache: &mut GatingCache,
) -> Result<u64, PublishError> {
    let slot = ring
        .try_claim(cache)?
        .begin_write(|_| thread::yield_now())?;
    let f = frame(slot.seq());
    for (i, w) in f.iter().enumerate().skip(1) {
        slot.store(i, *w);
    }
    Ok(slot.commit())
}

#[test]
fn broadcast_in_place_writes_never_tear_a_lapped_reader() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let total = 3;
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            for _ in 0..total {
                publish_in_place(&producer_ring, &mut cache).unwrap();
            }
        });
        let (received, lagged) = drain(&ring, Start::At(0), total);
        assert_eq!(received + lagged, total);
        producer.join().unwrap();
    });
}

/// A slot write dropped half-way reads as `Lost` to a concurrent reader,
/// never as its partial words, and the next lap of its slot takes its turn.
#[test]
fn broadcast_dropped_in_place_write_reads_lost_and_hands_the_slot_on() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            let slot = producer_ring
                .try_claim(&mut cache)
                .unwrap()
                .begin_write(|_| thread::yield_now())
                .unwrap();
            slot.store(1, 0xBAD);
            drop(slot);
            // Sequence 2 takes slot 0 after the dropped write.
            for _ in 0..2 {
                publish_in_place(&producer_ring, &mut cache).unwrap();
            }
        });
        let mut cursor = ring.cursor(Start::At(0));
        let mut out = [0u64; 3];
        let (mut lost, mut seen) = (0, 0);
        while cursor.next() < 3 {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_ne!(seq, 0, "the dropped write was delivered");
                    assert_intact(seq, &out);
                    seen += 1;
                }
                Err(TryRecvError::Lost(seq)) => {
                    assert_eq!(seq, 0);
                    lost += 1;
                }
                Err(TryRecvError::Lagged(n)) => seen += n,
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
            }
        }
        assert_eq!(lost + seen, 3);
        producer.join().unwrap();
    });
}

/// A supervisor declares a live in-place writer's sequence lost (it took
/// the writer for dead) and the next lap takes the slot before the writer
/// gives up: the writer's drop must leave the next lap's stamp alone (a
/// compare-and-swap, not a store), or readers of that lap would wait on a
/// stale stamp forever.
#[test]
fn broadcast_dropped_write_never_clobbers_the_next_lap() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        let slot = ring
            .try_claim(&mut cache)
            .unwrap()
            .begin_write(|_| thread::yield_now())
            .unwrap();
        assert_eq!(slot.seq(), 0);
        let other_ring = Arc::clone(&ring);
        let other = thread::spawn(move || {
            let mut cache = GatingCache::default();
            // Lost, or AlreadyLost if the writer's drop came first.
            // SAFETY: the model treats the writer as dead on purpose: it
            // only drops its slot after this point and never commits, which
            // is exactly the contract's "will never write again".
            let declared = unsafe { other_ring.declare_lost(0) };
            assert!(matches!(
                declared,
                Ok(Declared::Lost | Declared::AlreadyLost)
            ));
            assert_eq!(publish(&other_ring, &mut cache), Ok(1));
            assert_eq!(publish(&other_ring, &mut cache), Ok(2));
        });
        drop(slot);
        other.join().unwrap();
        let mut cursor = ring.cursor(Start::At(2));
        let mut out = [0u64; 3];
        assert_eq!(ring.try_recv(&mut cursor, &mut out), Ok(2));
        assert_intact(2, &out);
    });
}

/// Review finding (loan/gating review, item 2): a gating slot freed under a
/// live consumer (a supervisor taking it for dead) was plain-stored into by
/// the consumer's next release, resurrecting it while GATED stayed clear.
/// The release now moves the slot only from the consumer's own last
/// position: whatever the interleaving with the free, the slot ends FREE,
/// claims go back to the unchecked path, and the cursor, if its release
/// came second, is no longer gating.
#[test]
fn regression_release_racing_a_free_never_resurrects_the_slot() {
    model(|| {
        let ring = Arc::new(Broadcast::with_capacity(2, 3).unwrap());
        let mut cache = GatingCache::default();
        let mut victim = ring.register_gating(Start::Oldest).unwrap();
        let index = victim.gating_slot().unwrap();
        assert_eq!(publish(&ring, &mut cache), Ok(0));
        let other_ring = Arc::clone(&ring);
        // SAFETY: the contract is broken on purpose (the holder is live);
        // the ring stays sound, and the victim's release is under test.
        let other = thread::spawn(move || unsafe { other_ring.release_gating_slot(index) });
        let mut out = [0u64; 3];
        assert_eq!(ring.try_recv(&mut victim, &mut out), Ok(0));
        assert_eq!(
            ring.try_recv(&mut victim, &mut out),
            Err(TryRecvError::Empty)
        );
        other.join().unwrap();
        assert_eq!(ring.gating_position(index), None, "freed slot resurrected");
        assert!(!ring.claims_are_checked(), "nobody gates, claims checked");
    });
}

/// A ring in single-producer mode (claims by plain store). Under loom the
/// producer's compiler fence is modelled as the full fence the
/// registration's membarrier makes it (`sync::light_fence`); the
/// registration barrier itself is then the registration's own SeqCst fence.
fn single_producer_ring(capacity: usize) -> Broadcast<impl BroadcastStorage> {
    let mut ring = Broadcast::with_capacity(capacity, 3).unwrap();
    // SAFETY: each model has one producer thread, and every handle is this
    // one, in single-producer mode.
    unsafe {
        ring.set_single_producer(SingleProducer {
            asymmetric: true,
            registration_barrier: || true,
        })
    };
    ring
}

/// Single-producer mode: a gating consumer registering at `Oldest` while
/// the producer claims by plain store (the race the claim-word RMW resolves
/// for many producers, resolved here by the claim/epoch Dekker pair) never
/// finds a frame from its start on overwritten.
#[test]
fn single_producer_gating_registration_never_misses_a_frame() {
    model(|| {
        let ring = Arc::new(single_producer_ring(2));
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            let mut sent = 0;
            while sent < 3 {
                let published = producer_ring
                    .claim_wait(&mut cache, || true)
                    .and_then(|claim| {
                        let seq = claim.seq();
                        claim.commit(&frame(seq))
                    });
                match published {
                    Ok(seq) => {
                        assert_eq!(seq, sent, "a single producer's sequences are gapless");
                        sent += 1;
                    }
                    Err(PublishError::Full) => thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        let mut cursor = ring.register_gating(Start::Oldest).unwrap();
        let mut out = [0u64; 3];
        let mut expected = cursor.next();
        while expected < 3 {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    assert_intact(seq, &out);
                    expected += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer saw {e:?}"),
            }
        }
        producer.join().unwrap();
        assert!(!ring.claims_are_checked(), "the claim word keeps no flag");
    });
}

/// Single-producer mode with a producer that never waits (`try_publish`):
/// a claim racing the registration is given up (its sequence reads `Lost`,
/// the producer gets `Full`), and otherwise the gating consumer gets every
/// frame from its start on; nothing is ever `Lagged` for it.
#[test]
fn single_producer_claim_racing_a_registration_is_given_up_not_overwritten() {
    model(|| {
        let ring = Arc::new(single_producer_ring(2));
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            let mut outcomes = [None; 3];
            for o in &mut outcomes {
                *o = Some(publish(&producer_ring, &mut cache));
            }
            outcomes
        });
        let mut cursor = ring.register_gating(Start::Oldest).unwrap();
        let outcomes = producer.join().unwrap();
        let mut out = [0u64; 3];
        let end = ring.head();
        while cursor.next() < end {
            match ring.try_recv(&mut cursor, &mut out) {
                Ok(seq) => assert_intact(seq, &out),
                Err(TryRecvError::Lost(s)) => assert!(
                    outcomes.contains(&Some(Err(PublishError::Full))),
                    "Lost({s}) without a claim given up"
                ),
                Err(TryRecvError::Empty | TryRecvError::Pending(_)) => thread::yield_now(),
                Err(e) => panic!("gating consumer saw {e:?}"),
            }
        }
    });
}

/// Single-producer mode, no gating: a lapped consumer counts every frame
/// (`received + lagged == sent`) and never sees a torn one.
#[test]
fn single_producer_lapped_consumer_counts_every_frame() {
    model(|| {
        let ring = Arc::new(single_producer_ring(2));
        let total = 3;
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            let mut cache = GatingCache::default();
            for seq in 0..total {
                assert_eq!(publish(&producer_ring, &mut cache), Ok(seq));
            }
        });
        let (received, lagged) = drain(&ring, Start::At(0), total);
        producer.join().unwrap();
        assert_eq!(received + lagged, total);
    });
}

/// One direct publish of the ipc layer, on its own thread, racing a first
/// gating registration at `Oldest` on `ring` (capacity 2, its two first
/// sequences published): the single publish (`publish_wait_with`) or the
/// loan (`claim_write_with`), with the hooks as the ipc layer passes them
/// (`on_claimed` records the claim, `keep_waiting` gives up at once,
/// `stuck` yields). The claim is recorded once, before any wait; the
/// publish either delivers an intact frame or gives its claim up as `Lost`
/// with `Full` (never overwriting a frame the consumer needs), and the
/// consumer accounts for every sequence from its start to the head.
fn direct_publish_racing_a_registration<S>(ring: Broadcast<S>, in_place: bool)
where
    S: BroadcastStorage + Send + Sync + 'static,
{
    let ring = Arc::new(ring);
    let mut cache = GatingCache::default();
    for seq in 0..2 {
        assert_eq!(publish(&ring, &mut cache), Ok(seq));
    }
    let producer_ring = Arc::clone(&ring);
    let producer = thread::spawn(move || {
        let recorded = core::cell::Cell::new(None);
        let keep = || {
            if producer_ring.head() > 2 {
                // A wait after the claim (it raced the registration).
                assert!(recorded.get().is_some(), "waits before it is recorded");
            }
            false
        };
        let on_claimed = |seq| assert!(recorded.replace(Some(seq)).is_none(), "recorded twice");
        let r = if in_place {
            producer_ring
                .claim_write_with(&mut cache, keep, on_claimed, |_| thread::yield_now())
                .map(|slot| {
                    let f = frame(slot.seq());
                    for (i, w) in f.iter().enumerate().skip(1) {
                        slot.store(i, *w);
                    }
                    slot.commit()
                })
        } else {
            // The only producer: the head is the sequence it claims.
            let seq = producer_ring.head();
            producer_ring.publish_wait_with(&mut cache, &frame(seq), keep, on_claimed, |_| {
                thread::yield_now()
            })
        };
        if let Ok(seq) = r {
            assert_eq!(recorded.get(), Some(seq));
        }
        r
    });
    let mut cursor = ring.register_gating(Start::Oldest).unwrap();
    let outcome = producer.join().unwrap();
    let mut out = [0u64; 3];
    let mut expected = cursor.next();
    loop {
        match ring.try_recv(&mut cursor, &mut out) {
            Ok(seq) => {
                assert_eq!(seq, expected);
                assert_intact(seq, &out);
                expected += 1;
            }
            Err(TryRecvError::Lost(seq)) => {
                assert_eq!(seq, expected);
                assert_eq!(
                    outcome,
                    Err(PublishError::Full),
                    "only a given-up claim is lost"
                );
                expected += 1;
            }
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("gating consumer registered at Oldest saw {e:?}"),
        }
    }
    assert_eq!(expected, ring.head());
    ring.unregister_gating(&mut cursor);
}

/// [`direct_publish_racing_a_registration`] on a ring of many producers:
/// the claim-word RMW against the registration's.
#[test]
fn direct_publish_racing_the_first_registration() {
    for in_place in [false, true] {
        model(move || {
            direct_publish_racing_a_registration(Broadcast::with_capacity(2, 3).unwrap(), in_place);
        });
    }
}

/// [`direct_publish_racing_a_registration`] in single-producer mode: the
/// claim store and epoch check against the registration's epoch bump and
/// head load (`claim_single`).
#[test]
fn single_producer_direct_publish_racing_a_registration() {
    for in_place in [false, true] {
        model(move || {
            direct_publish_racing_a_registration(single_producer_ring(2), in_place);
        });
    }
}
