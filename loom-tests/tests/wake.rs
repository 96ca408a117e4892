//! loom model of the wake-up protocol between publishers and blocking
//! subscribers (`ipc/src/wait.rs`): `sleepers`, `wake_seq` and the
//! sleeper's re-check of the ring.
//!
//! Run with the ring models:
//! `RUSTFLAGS="--cfg zerocast_loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p zerocast-loom-tests --profile loom --target-dir target/loom`
//!
//! What loom can and cannot show. The publisher issues only a compiler
//! fence between its commit and its load of `sleepers`; a subscriber about
//! to sleep calls `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which makes
//! every CPU running a registered publisher execute a full barrier at some
//! point while the call lasts. loom has no model of a barrier that one
//! thread forces onto another, nor of a compiler fence as distinct from a
//! CPU one. What the membarrier guarantees is that the publisher's
//! compiler fence behaves, against this sleeper, as a `SeqCst` fence would
//! (the publisher's program order around it is split by a full barrier
//! that is ordered with the sleeper's syscall); that equivalence is the
//! kernel's documented contract (membarrier(2)) and is argued in
//! `ipc/src/wait.rs`, not checked here. So the model gives the publisher a
//! `SeqCst` fence where the code has the promoted compiler fence, and the
//! sleeper a `SeqCst` fence where the code has the membarrier (which is
//! also literally what runs when the kernel lacks the command: both sides
//! fence). Given that, loom checks the rest of the protocol: the order of
//! the increment, the `wake_seq` read, the re-check and the futex wait, and
//! that no interleaving or weak-memory outcome leaves a sleeper waiting on
//! a frame that was published. The negative model shows that the sleeper's
//! barrier is needed: without it, loom finds the lost wake.
#![cfg(zerocast_loom)]

use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// The shared words of one topic that the protocol uses: the ring reduced
/// to one slot's commit, and the segment header's `sleepers` and
/// `wake_seq`.
#[derive(Default)]
struct Topic {
    committed: AtomicU64,
    sleepers: AtomicU32,
    wake_seq: AtomicU32,
}

/// `ShmPublisher`'s commit and `wake`. Returns whether it woke.
fn publish(t: &Topic, seq: u64) -> bool {
    // The ring's commit: a Release stamp store.
    t.committed.store(seq, Ordering::Release);
    // `publisher_fence`: the compiler fence promoted by the sleeper's
    // membarrier (or the SeqCst fence of an unregistered publisher).
    fence(Ordering::SeqCst);
    if t.sleepers.load(Ordering::Relaxed) != 0 {
        t.wake_seq.fetch_add(1, Ordering::SeqCst);
        // FUTEX_WAKE follows: it wakes a sleeper that is in FUTEX_WAIT
        // already; one that is not yet there finds `wake_seq` changed.
        return true;
    }
    false
}

/// `ShmSubscriber::sleep` up to the futex wait: `Ok(seq)` when the re-check
/// found the frame, `Err(observed)` when it goes into FUTEX_WAIT expecting
/// `wake_seq == observed`.
fn go_to_sleep(t: &Topic, want: u64, barrier: bool) -> Result<u64, u32> {
    t.sleepers.fetch_add(1, Ordering::SeqCst);
    let observed = t.wake_seq.load(Ordering::SeqCst);
    if barrier {
        // `sleeper_barrier`: SeqCst fence plus membarrier.
        fence(Ordering::SeqCst);
    }
    let seen = t.committed.load(Ordering::Acquire);
    if seen >= want {
        return Ok(seen);
    }
    Err(observed)
}

/// After both sides are done: a sleeper that went into FUTEX_WAIT expecting
/// `observed` is woken (or never sleeps) iff `wake_seq` moved past it:
/// FUTEX_WAIT returns at once on a changed word, and a bump after its check
/// is followed by a FUTEX_WAKE. An unchanged word with a frame published is
/// a lost wake: the sleeper would sleep out its whole timeout.
fn assert_no_lost_wake(t: &Topic, outcome: Result<u64, u32>) {
    if let Err(observed) = outcome {
        assert_ne!(
            t.wake_seq.load(Ordering::SeqCst),
            observed,
            "lost wake: the frame was committed, the sleeper missed it and nobody woke it"
        );
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(f);
}

#[test]
fn wake_protocol_never_loses_a_wake() {
    model(|| {
        let t = Arc::new(Topic::default());
        let p = {
            let t = t.clone();
            thread::spawn(move || {
                publish(&t, 1);
            })
        };
        let outcome = go_to_sleep(&t, 1, true);
        p.join().unwrap();
        assert_no_lost_wake(&t, outcome);
    });
}

/// Two publishers (the second may be the one whose commit the sleeper
/// wants) and a sleeper that sleeps twice: every commit it waits for wakes
/// it.
#[test]
fn wake_protocol_two_publishers_never_lose_a_wake() {
    model(|| {
        let t = Arc::new(Topic::default());
        let spawn = |seq| {
            let t = t.clone();
            thread::spawn(move || {
                publish(&t, seq);
            })
        };
        let a = spawn(1);
        let b = spawn(2);
        let first = go_to_sleep(&t, 1, true);
        a.join().unwrap();
        b.join().unwrap();
        assert_no_lost_wake(&t, first);
    });
}

/// The sleeper's barrier is what makes the protocol sound: with only the
/// publisher's fence, loom finds an execution where the publisher reads
/// `sleepers == 0` and the sleeper's re-check misses the commit.
#[test]
#[should_panic(expected = "lost wake")]
fn wake_protocol_without_the_sleeper_barrier_loses_a_wake() {
    model(|| {
        let t = Arc::new(Topic::default());
        let p = {
            let t = t.clone();
            thread::spawn(move || {
                publish(&t, 1);
            })
        };
        let outcome = go_to_sleep(&t, 1, false);
        p.join().unwrap();
        assert_no_lost_wake(&t, outcome);
    });
}
