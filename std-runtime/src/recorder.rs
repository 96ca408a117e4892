//! The recorder: a gating subscriber that writes a topic to its WAL.
//!
//! It holds its gating position until the frames it read are written to the
//! WAL file, then releases them. So a frame is always either still in the
//! ring or already readable from the WAL: nothing published is lost while the
//! recorder keeps up, and when it cannot, the publishers' gating policy (wait
//! or fail) decides, not the recorder.

use std::path::Path;
use std::time::Duration;

use zerocast_core::frame::FrameRef;
use zerocast_ipc::counters::{self, CounterKind};
use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{
    Bus, Received, RecvError, Start, Subscriber, SubscriberOptions, Transport, WaitStrategy,
};

use crate::wal::{Recovery, Wal, WalError, WalOptions};

/// Counts of a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Frames written.
    pub frames: u64,
    /// Lost markers written (sequences the bus declared lost).
    pub lost: u64,
    /// Sequences the recorder itself missed (it was lapped: only possible if
    /// its gating slot was reclaimed); written as one missed-range record per
    /// lap and reported.
    pub missed: u64,
    /// Frames that failed validation, written as invalid-frame records.
    pub invalid: u64,
}

/// Length of the frame at the start of a slot's bytes (header + body, as
/// the header says; all of `bytes` if shorter).
pub fn frame_len(bytes: &[u8]) -> usize {
    zerocast_core::frame::FrameHeader::read(bytes)
        .map_or(bytes.len(), |h| h.frame_len().min(bytes.len()))
}

/// Why recording stopped.
#[derive(Debug)]
pub enum RecordError {
    /// The bus refused.
    Bus(zerocast_ipc::Error),
    /// The WAL refused (e.g. a full disk).
    Wal(WalError),
    /// The log holds another bus segment's sequences (the bus was reset):
    /// what happened and how to start over; or the log's binding to its
    /// segment could not be read or written (the error names the file).
    Reset(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "{e}"),
            Self::Wal(e) => write!(f, "{e}"),
            Self::Reset(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Opens the WAL of `topic` under `wal_root/<topic>`.
pub fn open_wal(
    wal_root: &Path,
    topic: &str,
    options: WalOptions,
) -> Result<(Wal, Recovery), WalError> {
    Wal::open(&wal_root.join(topic), topic, options)
}

/// Records `topic` into `wal` until `stop()` returns true. Starts after the
/// WAL's last sequence (sequences the ring no longer holds become one
/// missed-range record), or at the oldest frame in the ring for a new WAL.
/// Idle, it makes what it holds durable within the fsync interval and
/// sleeps on the ring. While it records, the WAL's records, record bytes
/// and fsyncs (count and latency) are counted in a [`CounterKind::Wal`]
/// entry (topic `topic`, name `recorder`) of the namespace's counters
/// table, for `zerocast health` ([`Wal::set_counters`]).
pub fn record(
    bus: &Bus,
    topic: &str,
    wal: &mut Wal,
    stop: impl Fn() -> bool,
) -> Result<RecorderStats, RecordError> {
    // The log counts in one bus segment's sequences: after a bus reset it
    // is refused, before the subscriber's durable hold is placed.
    // (An iceoryx2 topic has no zerocast segment: nothing to bind.) The
    // segment checked is held until the subscriber has joined, so that it
    // joins that one: a mapped segment is never removed (see
    // `zerocast_ipc::segment::remove_unused`).
    let shm = bus
        .config()
        .topic(topic)
        .map_err(RecordError::Bus)?
        .transport
        == Transport::Shm;
    let checked = if shm {
        let segment = bus.segment(topic).map_err(RecordError::Bus)?;
        crate::checkpoint_segment::bind_log(wal.dir(), topic, &segment, wal.last_seq())
            .map_err(RecordError::Reset)?;
        Some(segment)
    } else {
        None
    };
    let start = match wal.last_seq() {
        Some(last) => Start::At(last + 1),
        None => Start::Oldest,
    };
    let mut sub = bus
        .subscriber(
            topic,
            SubscriberOptions {
                name: format!("recorder-{topic}"),
                start,
                gating: true,
                durable: true,
                manual_release: true,
                wait: WaitStrategy::Blocking { spins: 1_000 },
                ..Default::default()
            },
        )
        .map_err(RecordError::Bus)?;
    drop(checked);
    // What only the recorder knows (record bytes, fsync latency), where
    // health monitors read it. Metrics are not worth a stopped recording:
    // a counters file that cannot be used is a warning.
    let counters = match counters::claim(bus.config(), CounterKind::Wal, topic, "recorder") {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(topic, "recording without WAL metrics: {e}");
            None
        }
    };
    let before = wal.set_counters(counters);
    let result = record_from(&mut sub, topic, wal, stop);
    wal.set_counters(before);
    result
}

/// Records from `sub` into `wal` until `stop()` returns true. [`record`]
/// calls it with its gating, manually released subscriber; with any other
/// subscriber (a test's non-gating one, say) the log holds what that
/// subscriber received, holes included.
pub fn record_from(
    sub: &mut Subscriber,
    topic: &str,
    wal: &mut Wal,
    stop: impl Fn() -> bool,
) -> Result<RecorderStats, RecordError> {
    let mut w = Writer {
        wal,
        topic,
        stats: RecorderStats::default(),
        expected: None,
    };
    w.expected = w.wal.last_seq().map(|s| s + 1);
    while !stop() {
        let now = now_ns();
        // Where the subscriber stands before this receive: a lap skips from
        // here (its first read included, when nothing was recorded yet).
        let mut pos = sub.next_seq().or(w.expected);
        let mut failed = None;
        let batch = sub.recv_batch(4096, |f| {
            if failed.is_none() {
                pos = Some(f.seq + 1);
                failed = w.frame(f, now).err();
            }
        });
        if let Some(e) = failed {
            return Err(RecordError::Wal(e));
        }
        match batch {
            Ok(n) if n > 0 => {}
            // Nothing there (`recv_batch` says so with `Ok(0)`): make what
            // was read readable and, on the group-commit clock, durable;
            // release it to the publishers; then sleep until a frame comes.
            Ok(_) | Err(RecvError::Empty) => {
                w.wal.flush().map_err(RecordError::Wal)?;
                sub.release();
                w.wal.tick().map_err(RecordError::Wal)?;
                let pos = sub.next_seq().or(w.expected);
                let now = now_ns();
                let wait = w.wal.sync_due_in().map_or(IDLE_WAIT, |d| d.min(IDLE_WAIT));
                match sub.recv_timeout(wait) {
                    Ok(f) => w.frame(f, now),
                    Err(e) => w.event(e, pos, now),
                }
                .map_err(RecordError::Wal)?;
            }
            Err(e) => w.event(e, pos, now).map_err(RecordError::Wal)?,
        }
        // Written to the file, then released: a frame leaves the ring only
        // once it can be read from the WAL.
        w.wal.flush().map_err(RecordError::Wal)?;
        sub.release();
    }
    w.wal.sync().map_err(RecordError::Wal)?;
    sub.release();
    Ok(w.stats)
}

/// How long an idle recorder sleeps on the ring before it checks `stop`
/// again (less when a group commit falls due sooner); a frame arriving
/// wakes it at once.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// What the recorder writes, and its counts.
struct Writer<'w> {
    wal: &'w mut Wal,
    topic: &'w str,
    stats: RecorderStats,
    /// The sequence after the last one written.
    expected: Option<u64>,
}

impl Writer<'_> {
    /// Writes a received frame: validated first, so that one bad frame is
    /// one invalid record, not a log that replay rejects.
    fn frame(&mut self, f: Received<'_>, now: u64) -> Result<(), WalError> {
        self.fill_to(f.seq, now)?;
        let bytes = &f.bytes[..frame_len(f.bytes)];
        match FrameRef::parse(bytes) {
            Ok(_) => {
                self.wal.append(f.seq, now, bytes)?;
                self.stats.frames += 1;
            }
            Err(e) => {
                tracing::warn!(
                    topic = self.topic,
                    seq = f.seq,
                    "recording an invalid frame as such: {e}"
                );
                self.wal.append_invalid(f.seq, now, f.bytes)?;
                self.stats.invalid += 1;
            }
        }
        self.expected = Some(f.seq + 1);
        Ok(())
    }

    /// Keeps the log contiguous should the subscriber skip sequences
    /// without reporting a lap (it never should): what lies between the last
    /// sequence written and `seq` is written as missed.
    fn fill_to(&mut self, seq: u64, now: u64) -> Result<(), WalError> {
        if let Some(expected) = self.expected.filter(|&e| seq > e) {
            tracing::error!(
                topic = self.topic,
                from = expected,
                to = seq - 1,
                "the subscriber skipped sequences without reporting a lap; recorded as missed"
            );
            self.wal.append_missed(expected, seq - expected, now)?;
            self.stats.missed += seq - expected;
        }
        Ok(())
    }

    /// Writes a loss or a lap; `pos` is where the subscriber stood before
    /// the receive that reported it.
    fn event(&mut self, e: RecvError, pos: Option<u64>, now: u64) -> Result<(), WalError> {
        match e {
            RecvError::Empty => {}
            RecvError::Lost(seq) => {
                self.fill_to(seq, now)?;
                self.wal.append_lost(seq, now)?;
                self.stats.lost += 1;
                self.expected = Some(seq + 1);
            }
            RecvError::Lagged(n) => {
                // Only if our gating slot was taken from us (a supervisor
                // thought we were dead). Keep the log honest: one record
                // for the whole hole, which readers tell from a bus loss.
                self.stats.missed += n;
                let Some(from) = pos else {
                    tracing::error!(
                        topic = self.topic,
                        count = n,
                        "recorder was lapped at an unknown position: {n} frames are not in the WAL"
                    );
                    return Ok(());
                };
                tracing::error!(
                    topic = self.topic,
                    from,
                    count = n,
                    "recorder was lapped: {n} frames are not in the WAL"
                );
                self.wal.append_missed(from, n, now)?;
                self.expected = Some(from + n);
            }
        }
        Ok(())
    }
}
