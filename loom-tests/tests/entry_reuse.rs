//! loom model of a publisher entry's reuse after its owner died or
//! dropped its publisher (`ipc/src/segment.rs`: `Segment::reap_entries`
//! and `live_owner_record`; `ipc/src/publisher.rs`: `ShmPublisher::new`,
//! `ShmPublisher::drop`, `mark_claiming`): a reaper (or the dropping owner)
//! frees the entry, a new publisher takes it, and a supervisor reads the
//! entry to decide whether a live publisher may hold a sequence.
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
//!
//! The other direction, with the same reads: a supervisor that saw a
//! sequence claimed always finds its claimer, the entry's new owner, live
//! and claiming or listing it (the marker stored before the claim is what
//! makes it so; the negative model drops it).
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

/// The two words of a publisher entry the protocol uses. Every ordering
/// below is the real code's, with its pairing stated there:
/// `Segment::reap_entries` (the reaper's take, clear and FREE store),
/// `ShmPublisher::new` (the registration), `mark_claiming` /
/// `record_claim` (the markers), `live_owner_record` (the supervisor's
/// loads).
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

/// `mark_claiming` (if `mark`), the claim (`Ring::claim`'s SeqCst
/// `fetch_add` on the claim word) and `record_claim`, by the new owner if
/// it took the entry (one try, as in `register_and_mark`).
fn register_claim_and_record(e: &Entry, head: &AtomicU64, mark: bool) {
    if e.pid
        .compare_exchange(FREE, NEW, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    e.inflight.store(0, Ordering::Relaxed);
    // `Ring::head`: Acquire.
    let from = head.load(Ordering::Acquire);
    if mark {
        e.inflight.store(CLAIMING | from, Ordering::Release);
    }
    let seq = head.fetch_add(1, Ordering::SeqCst);
    e.inflight.store(seq + 1, Ordering::Release);
}

/// A supervisor checks sequence 1, which the new owner of a reused entry
/// claims (the dead owner claimed 0, head 1, and died with its marker up;
/// a reaper frees its entry), after it saw 1 claimed.
fn claimer_model(mark: bool) {
    loom::model(move || {
        let e = Arc::new(Entry {
            pid: AtomicU64::new(DEAD),
            inflight: AtomicU64::new(DEAD_MARK),
        });
        let head = Arc::new(AtomicU64::new(1));
        let reaper = {
            let e = e.clone();
            thread::spawn(move || reap(&e, true))
        };
        let owner = {
            let (e, head) = (e.clone(), head.clone());
            thread::spawn(move || register_claim_and_record(&e, &head, mark))
        };
        // A thread of its own: with this load on the model's main thread,
        // loom's search never ran the claim before it (the assertion was
        // never reached, even with the marker left out).
        let supervisor = thread::spawn(move || {
            // `Segment::resolve_stalled`'s caller saw sequence 1 claimed.
            if head.load(Ordering::Acquire) > 1 {
                let (word, record) = read(&e, true);
                let claiming_from = (record & CLAIMING != 0).then_some(record & !CLAIMING);
                let held = claiming_from.is_some_and(|from| from <= 1) || record == 2;
                assert!(
                    word == NEW && held,
                    "missed live claimer: owner word {word}, record {record:#x}"
                );
            }
        });
        supervisor.join().unwrap();
        reaper.join().unwrap();
        owner.join().unwrap();
    });
}

/// The other half of the argument (`Segment::in_flight_in_a_live_publisher`,
/// "why a live claimer of `seq` is always found"), with the owner word read
/// first: a supervisor that saw sequence 1 claimed (the claim word, an
/// Acquire load, past it) reads the entry of its claimer, the new owner,
/// with the owner's word and its marker or its listing of 1, so it never
/// declares that live claim lost.
#[test]
fn a_live_claimer_of_a_reused_entry_is_found_by_a_supervisor_that_saw_its_claim() {
    claimer_model(true);
}

/// Without the marker before the claim (the record only after it), a
/// supervisor that saw the claim can read the new owner's entry before
/// its record: a live claim would be declared lost.
#[test]
#[should_panic(expected = "missed live claimer")]
fn a_claimer_without_its_marker_is_missed() {
    claimer_model(false);
}

/// The previous owner's word, when it drops its publisher itself.
const OLD: u64 = 4;
/// `tombstone(OLD)`: the dropping owner's hold on its entry.
const OLD_TOMBSTONE: u64 = 5;
/// The dropping owner's claiming marker, left by a publish that unwound.
const OLD_MARK: u64 = CLAIMING | 1;

/// `ShmPublisher::drop` after a publish that unwound with its marker up
/// (`mark_claiming`'s Release store): take the entry under its own
/// tombstone (a Relaxed CAS), clear the record if `clear`
/// (`clear_for_next_owner`), free it (Release).
fn drop_own(e: &Entry, clear: bool) {
    e.inflight.store(OLD_MARK, Ordering::Release);
    if e.pid
        .compare_exchange(OLD, OLD_TOMBSTONE, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    if clear {
        e.inflight.store(0, Ordering::Relaxed);
    }
    e.pid.store(FREE, Ordering::Release);
}

fn drop_model(clear: bool) {
    loom::model(move || {
        let e = Arc::new(Entry {
            pid: AtomicU64::new(OLD),
            inflight: AtomicU64::new(0),
        });
        let dropper = {
            let e = e.clone();
            thread::spawn(move || drop_own(&e, clear))
        };
        let owner = {
            let e = e.clone();
            thread::spawn(move || register_and_mark(&e))
        };
        let (word, record) = read(&e, true);
        dropper.join().unwrap();
        owner.join().unwrap();
        assert!(
            !(word == NEW && record == OLD_MARK),
            "stale record: the live new owner read with the dropped owner's claiming marker"
        );
    });
}

/// A publisher dropped with its record up (after a publish that unwound)
/// frees its entry as the reaper does: its record is never read with the
/// next owner's word.
#[test]
fn a_dropped_publishers_entry_never_shows_its_record_with_the_new_owner() {
    drop_model(true);
}

/// Without the drop's clear (as before), it is.
#[test]
#[should_panic(expected = "stale record")]
fn a_dropped_publishers_entry_without_the_clear_shows_its_record() {
    drop_model(false);
}

/// A monitor's reading of a publisher entry (`zerocast health`'s
/// `poll_topic`, `zerocast stat`) while its owner drops it: the owner word
/// (Acquire), the fields (here the published count, non-zero while the
/// owner lives), then, if `fences`, an Acquire fence and the owner word
/// again; a reading whose owner word changed is dropped. The drop takes
/// the entry under its tombstone (Relaxed CAS), then, if `fences`, a
/// Release fence, clears the count, and frees the entry (Release).
/// Asserts the monitor never reports the live owner `OLD` with the
/// drop's cleared count.
fn monitor_model(fences: bool) {
    loom::model(move || {
        let e = Arc::new(Entry {
            pid: AtomicU64::new(OLD),
            // The published count: 7 while OLD owns the entry.
            inflight: AtomicU64::new(7),
        });
        let dropper = {
            let e = e.clone();
            thread::spawn(move || {
                if e.pid
                    .compare_exchange(OLD, OLD_TOMBSTONE, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    return;
                }
                if fences {
                    loom::sync::atomic::fence(Ordering::Release);
                }
                e.inflight.store(0, Ordering::Relaxed);
                e.pid.store(FREE, Ordering::Release);
            })
        };
        let word = e.pid.load(Ordering::Acquire);
        let reported = if word == OLD {
            let published = e.inflight.load(Ordering::Relaxed);
            if fences {
                loom::sync::atomic::fence(Ordering::Acquire);
            }
            (e.pid.load(Ordering::Relaxed) == word).then_some(published)
        } else {
            None
        };
        dropper.join().unwrap();
        assert_ne!(
            reported,
            Some(0),
            "cleared reading: the live owner reported with the drop's cleared count"
        );
    });
}

/// Regression (health reported a publisher dropped during its poll as a
/// live one with no name that had published nothing): with the drop's
/// Release fence after its tombstone and the monitor's Acquire fence
/// before loading the owner word again, a cleared field is never reported
/// under the live owner's word.
#[test]
fn a_monitor_never_reports_a_dropping_publishers_cleared_fields_as_live() {
    monitor_model(true);
}

/// Without the fences (the reload alone is not ordered after the field
/// reads, nor the clears after the tombstone), it can be.
#[test]
#[should_panic(expected = "cleared reading")]
fn a_monitor_without_the_fences_reports_cleared_fields() {
    monitor_model(false);
}
