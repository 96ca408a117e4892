//! loom model of a publisher entry's reuse after its owner died
//! (`ipc/src/segment.rs`: `Segment::reap_entries` and `live_owner_record`;
//! `ipc/src/publisher.rs`: `ShmPublisher::new`, `mark_claiming`): a reaper
//! frees a dead owner's entry, a new publisher takes it, and a supervisor
//! reads the entry to decide whether a live publisher may hold a sequence.
//!
//! Run with the ring models:
//! `RUSTFLAGS="--cfg zerocast_loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p zerocast-loom-tests --profile loom --target-dir target/loom`
//!
//! The property: a supervisor never reads the new (live) owner's word
//! together with the dead owner's in-flight record (here its claiming
//! marker), which would make it hold up declarations for a claim nobody
//! alive has. It rests on two orders: the reaper clears the record before
//! its Release store of FREE (a Relaxed clear, published by that store),
//! and the supervisor loads the owner word (Acquire) before the record.
//! The negative models show each is needed.
#![cfg(zerocast_loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// `FREE` of the owner word.
const FREE: u64 = 0;
/// The dead owner's word.
const DEAD: u64 = 1;
/// A tombstone naming the reaper.
const TOMBSTONE: u64 = 2;
/// The new owner's word.
const NEW: u64 = 3;
/// `INFLIGHT_CLAIMING`.
const CLAIMING: u64 = 1 << 63;
/// The dead owner's claiming marker (it read head 0, then died).
const DEAD_MARK: u64 = CLAIMING;
/// The new owner's claiming marker (it read head 5).
const NEW_MARK: u64 = CLAIMING | 5;

/// The two words of a publisher entry the protocol uses.
struct Entry {
    pid: AtomicU64,
    inflight: AtomicU64,
}

/// `reap_entries` on the dead owner's entry: take it, (declare what it
/// lists: nothing, it was claiming), clear its record if `clear`, free it.
fn reap(e: &Entry, clear: bool) {
    if e.pid
        .compare_exchange(DEAD, TOMBSTONE, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    if clear {
        e.inflight.store(0, Ordering::Relaxed);
    }
    e.pid.store(FREE, Ordering::Release);
}

/// `ShmPublisher::new` taking the entry (one try), then its first publish's
/// marker.
fn register_and_mark(e: &Entry) {
    if e.pid
        .compare_exchange(FREE, NEW, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        e.inflight.store(0, Ordering::Relaxed);
        e.inflight.store(NEW_MARK, Ordering::Release);
    }
}

/// A supervisor's read of the entry: (owner word, record), the owner word
/// first (`live_owner_record`) or, as before the fix, the record first.
fn read(e: &Entry, owner_first: bool) -> (u64, u64) {
    if owner_first {
        let owner = e.pid.load(Ordering::Acquire);
        (owner, e.inflight.load(Ordering::Acquire))
    } else {
        let record = e.inflight.load(Ordering::Acquire);
        (e.pid.load(Ordering::Acquire), record)
    }
}

fn model(clear: bool, owner_first: bool) {
    loom::model(move || {
        let e = Arc::new(Entry {
            pid: AtomicU64::new(DEAD),
            inflight: AtomicU64::new(DEAD_MARK),
        });
        let reaper = {
            let e = e.clone();
            thread::spawn(move || reap(&e, clear))
        };
        let owner = {
            let e = e.clone();
            thread::spawn(move || register_and_mark(&e))
        };
        let (word, record) = read(&e, owner_first);
        reaper.join().unwrap();
        owner.join().unwrap();
        assert!(
            !(word == NEW && record == DEAD_MARK),
            "stale record: the live new owner read with the dead owner's claiming marker"
        );
    });
}

#[test]
fn a_reused_entry_never_shows_its_dead_owners_record_with_the_new_owner() {
    model(true, true);
}

/// Without the reaper's clear, the new owner's word is read with the dead
/// owner's marker until the new owner's first store.
#[test]
#[should_panic(expected = "stale record")]
fn a_reused_entry_without_the_reapers_clear_shows_the_dead_record() {
    model(false, true);
}

/// Reading the record before the owner word, the record can be the dead
/// owner's, read just before the reaper cleared and freed the entry, and
/// the owner word the new owner's.
#[test]
#[should_panic(expected = "stale record")]
fn a_record_read_before_the_owner_word_can_be_the_dead_owners() {
    model(true, false);
}
