//! The delayed tier: a resumable subscriber that collects a topic's events
//! for an interval (100 ms by default) or up to a number of frames, and
//! hands each batch to a [`Sink`] in one call.
//!
//! **Exactly once across crashes.** A sink stores the last sequence of a
//! batch together with the batch, all or nothing (the SQLite sink in the
//! same transaction; the JSON-lines sink as the sequence of the file's last
//! complete line). On start the batcher asks the sink for that sequence and
//! resumes right after it: from the write-ahead log while the log has it,
//! then live from the ring ([`crate::resume::Resumable`]). However often the
//! process is killed, every sequence reaches the sink once. Sequences the
//! bus lost, or that neither the log nor the ring holds, reach the sink as
//! [`Event::Lost`] / [`Event::Missing`], never skipped silently.
//!
//! **Errors lose nothing.** A failed [`Sink::write_batch`] (disk full, a
//! locked database, a constraint) stops the loop with the sink's error; the
//! sink's sequence stays at its last committed batch, so the next start
//! delivers the failed batch again. (The SQLite sink first tries a batch
//! again for a bounded time when another connection holds the database or
//! the disk is full for a moment; see [`sqlite`].)
//!
//! Progress: the loop blocks (waiting for frames, and in the sink); a
//! crashed publisher costs it nothing (its sequence arrives as `Lost`).

pub mod cli;
pub mod jsonl;
pub mod sqlite;

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zerocast_ipc::counters::{self, CounterKind, Counters};
use zerocast_ipc::Bus;

use crate::resume::{Event, Resumable};

pub use cli::{parse_interval, run_cli, BatchArgs};
pub use jsonl::JsonlSink;
pub use sqlite::SqliteSink;

/// One item of a [`Batch`]; frame bytes live in the batch's buffer.
#[derive(Debug, Clone, Copy)]
enum Item {
    Frame { seq: u64, at: usize, len: usize },
    Invalid { seq: u64, at: usize, len: usize },
    Lost(u64),
    Missing { from: u64, to: u64 },
}

/// The events of one batch, in sequence order, with their bytes copied out
/// of the ring or the log (one buffer for all, reused from batch to batch).
///
/// ```
/// use zerocast_runtime::batch::Batch;
/// use zerocast_runtime::resume::Event;
/// let mut batch = Batch::new();
/// batch.push(Event::Frame { seq: 7, bytes: &[1, 2, 3] });
/// batch.push(Event::Missing { from: 8, to: 9 });
/// assert_eq!((batch.first_seq(), batch.last_seq()), (Some(7), Some(9)));
/// assert_eq!(batch.events().next(), Some(Event::Frame { seq: 7, bytes: &[1, 2, 3] }));
/// ```
#[derive(Debug, Default)]
pub struct Batch {
    items: Vec<Item>,
    bytes: Vec<u8>,
    opened: Option<Instant>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of events (a missing range counts as one).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there is no event.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends an event; its sequences must follow the last event's.
    pub fn push(&mut self, event: Event<'_>) {
        debug_assert!(self.last_seq().is_none_or(|l| first_seq(&event) > l));
        let mut copy = |bytes: &[u8]| {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(bytes);
            (at, bytes.len())
        };
        let item = match event {
            Event::Frame { seq, bytes } => {
                let (at, len) = copy(bytes);
                Item::Frame { seq, at, len }
            }
            Event::Invalid { seq, bytes } => {
                let (at, len) = copy(bytes);
                Item::Invalid { seq, at, len }
            }
            Event::Lost(seq) => Item::Lost(seq),
            Event::Missing { from, to } => Item::Missing { from, to },
        };
        self.opened.get_or_insert_with(Instant::now);
        self.items.push(item);
    }

    /// Empties the batch (keeping its buffers).
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
        self.opened = None;
    }

    /// The events, in sequence order.
    pub fn events(&self) -> impl Iterator<Item = Event<'_>> + '_ {
        self.items.iter().map(|item| match *item {
            Item::Frame { seq, at, len } => Event::Frame {
                seq,
                bytes: &self.bytes[at..at + len],
            },
            Item::Invalid { seq, at, len } => Event::Invalid {
                seq,
                bytes: &self.bytes[at..at + len],
            },
            Item::Lost(seq) => Event::Lost(seq),
            Item::Missing { from, to } => Event::Missing { from, to },
        })
    }

    /// The first sequence the batch covers.
    pub fn first_seq(&self) -> Option<u64> {
        self.items.first().map(|i| match *i {
            Item::Frame { seq, .. } | Item::Invalid { seq, .. } | Item::Lost(seq) => seq,
            Item::Missing { from, .. } => from,
        })
    }

    /// The last sequence the batch covers: what a sink records as committed
    /// with it.
    pub fn last_seq(&self) -> Option<u64> {
        self.items.last().map(|i| match *i {
            Item::Frame { seq, .. } | Item::Invalid { seq, .. } | Item::Lost(seq) => seq,
            Item::Missing { to, .. } => to,
        })
    }

    /// Bytes of frames it holds.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// When the first event was added.
    pub fn opened(&self) -> Option<Instant> {
        self.opened
    }
}

/// The first sequence an event covers.
pub fn first_seq(event: &Event<'_>) -> u64 {
    match *event {
        Event::Frame { seq, .. } | Event::Invalid { seq, .. } | Event::Lost(seq) => seq,
        Event::Missing { from, .. } => from,
    }
}

/// The last sequence an event covers.
pub fn last_seq(event: &Event<'_>) -> u64 {
    match *event {
        Event::Frame { seq, .. } | Event::Invalid { seq, .. } | Event::Lost(seq) => seq,
        Event::Missing { to, .. } => to,
    }
}

/// A sink failed: which sink, what it was doing, and why.
#[derive(Debug)]
pub struct SinkError {
    /// The sink, e.g. `sqlite:/var/lib/trades.db`.
    pub sink: String,
    /// What it was doing, e.g. `commit batch 100 to 199`.
    pub action: String,
    /// The underlying error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SinkError {
    /// A sink error from its parts.
    pub fn new(
        sink: impl Into<String>,
        action: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            sink: sink.into(),
            action: action.into(),
            source: source.into(),
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.sink, self.action, self.source)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Where batches go. Implement it to plug in your own store.
///
/// The contract that makes restarts exactly once: `write_batch` stores the
/// batch and its [`Batch::last_seq`] all or nothing, and `committed`
/// returns the last sequence so stored, also after the process was killed
/// at any point.
pub trait Sink {
    /// The last sequence stored (None: nothing yet). The batcher delivers
    /// from the one after it.
    fn committed(&mut self) -> Result<Option<u64>, SinkError>;

    /// Stores every event of `batch` and records its last sequence as
    /// committed, all or nothing. On an error nothing of the batch may count
    /// as committed: the batcher stops, and the next start delivers the
    /// batch again.
    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError>;

    /// Binds the sink to the bus segment its sequences come from
    /// (`segment`: [`segment_identity`]). A sink that recorded another
    /// segment must refuse ([`reset_message`]): the bus was reset, its
    /// sequences restarted at 0, and resuming at the recorded position
    /// would skip the new bus's first sequences with no gap. The batcher
    /// calls it before [`Sink::committed`]. The default records nothing
    /// and accepts any.
    fn bind_segment(&mut self, segment: &str) -> Result<(), SinkError> {
        let _ = segment;
        Ok(())
    }
}

/// The identity of `topic`'s segment on `bus` (opening it, or creating it
/// if it does not exist): its creation time (ns since the Unix epoch) and
/// its creator's owner word, `CREATION_NS-CREATOR` with the creator in hex.
/// A segment removed and created again (a bus reset, which restarts the
/// sequences at 0) has another.
pub fn segment_identity(bus: &Bus, topic: &str) -> Result<String, String> {
    let segment = bus.segment(topic).map_err(|e| e.to_string())?;
    Ok(crate::checkpoint_segment::SegmentIdentity::of(&segment).to_string())
}

/// The error of a sink whose recorded segment is not the bus's.
pub fn reset_message(recorded: &str, now: &str) -> String {
    use crate::checkpoint_segment::created;
    format!(
        "the bus was reset: the sink's position belongs to a segment created at {} ns \
         (identity {recorded}), but the topic's segment now was created at {} ns (identity {now}), \
         and its sequences restarted at 0; resuming would skip them. Batch the new bus into \
         another file (or move this one away)",
        created(recorded),
        created(now)
    )
}

/// How to cut batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// A batch is handed to the sink this long after its first frame was
    /// published (or, for a frame published longer ago than this, as when
    /// catching up from the log, or a lost or missing range, this long
    /// after the batcher took it).
    pub interval: Duration,
    /// Or once it holds this many events (at least 1), whichever first.
    pub max_batch: usize,
    /// Or once its frames hold this many bytes (the batch's memory: frames
    /// are copied out of the ring), whichever first. Default 64 MiB.
    pub max_bytes: usize,
    /// Stop once this sequence is committed.
    pub until: Option<u64>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            max_batch: 65_536,
            max_bytes: 64 << 20,
            until: None,
        }
    }
}

/// What a batch loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches committed.
    pub batches: u64,
    /// Frames committed.
    pub frames: u64,
    /// Sequences committed as lost by the bus.
    pub lost: u64,
    /// Sequences committed as missing (in neither the log nor the ring).
    pub missing: u64,
    /// Invalid frames committed.
    pub invalid: u64,
    /// The sink's last committed sequence.
    pub committed: Option<u64>,
}

/// Why a batch loop stopped with an error.
#[derive(Debug)]
pub enum BatchError {
    /// The sink failed; nothing after its last committed sequence counts as
    /// written.
    Sink(SinkError),
    /// Reading the topic (its log or its ring) failed.
    Source(String),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Sink(e) => write!(f, "{e} (nothing after the last committed batch was kept; a restart delivers it again)"),
            BatchError::Source(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for BatchError {}

impl From<SinkError> for BatchError {
    fn from(e: SinkError) -> Self {
        BatchError::Sink(e)
    }
}

/// The delayed subscriber of one topic.
#[derive(Debug, Clone)]
pub struct Batcher {
    bus: Bus,
    topic: String,
    wal_dir: Option<PathBuf>,
    name: String,
    options: BatchOptions,
}

impl Batcher {
    /// A batcher of `topic` named `name`, reading the topic's write-ahead
    /// log in `wal_dir` (the directory of the topic's segments; without it,
    /// only the ring, so what a restart finds overwritten is recorded as
    /// missing).
    pub fn new(
        bus: &Bus,
        topic: &str,
        wal_dir: Option<&Path>,
        name: &str,
        options: BatchOptions,
    ) -> Self {
        Self {
            bus: bus.clone(),
            topic: topic.to_owned(),
            wal_dir: wal_dir.map(Path::to_owned),
            name: name.to_owned(),
            options,
        }
    }

    /// Delivers batches to `sink` from its committed sequence on, until
    /// `stop()` is true (then what is collected is committed first) or
    /// [`BatchOptions::until`] is committed. `on_commit` sees each batch
    /// right after the sink committed it.
    ///
    /// While it runs, its commits are counted in a [`CounterKind::Batch`]
    /// entry (topic, name) of the namespace's counters table, where
    /// `zerocast health` reads them: rows (frames) committed, batches,
    /// lost, missing and invalid sequences, the last committed sequence,
    /// and each batch's commit latency (the sink's `write_batch`).
    ///
    /// Blocking: waits for frames, and in the sink; `stop` is polled at
    /// least every `interval / 4` (at most 50 ms).
    pub fn run(
        &self,
        sink: &mut dyn Sink,
        stop: impl Fn() -> bool,
        mut on_commit: impl FnMut(&Batch),
    ) -> Result<BatchStats, BatchError> {
        let max_batch = self.options.max_batch.max(1);
        let max_bytes = self.options.max_bytes.max(1);
        let interval = self.options.interval;
        let until = self.options.until;
        // Before the identity, which would make a shared-memory segment
        // for an iceoryx2 topic.
        crate::resume::refuse_iceoryx2(&self.bus, &self.topic, "batch")
            .map_err(BatchError::Source)?;
        let segment = segment_identity(&self.bus, &self.topic).map_err(BatchError::Source)?;
        sink.bind_segment(&segment)?;
        let committed = sink.committed()?;
        // No bus hands out a sequence past MAX_SEQ: a position past it is
        // damaged or edited (a SQLite `last_seq` of -1 reads as 2^64 - 1),
        // and the one after it would not exist (u64::MAX + 1 wrapped to 0
        // in a release build, and the whole topic was batched again).
        if let Some(c) = committed.filter(|&c| c > crate::wal::format::MAX_SEQ) {
            return Err(BatchError::Source(format!(
                "the sink's position, sequence {c}, is past the largest a bus hands out ({}): \
                 a damaged or edited position; the sink is left as it is",
                crate::wal::format::MAX_SEQ
            )));
        }
        let stats = BatchStats {
            committed,
            ..Default::default()
        };
        if until.is_some_and(|u| committed.is_some_and(|c| c >= u)) {
            return Ok(stats);
        }
        // No log: a directory that does not exist reads as an empty log.
        let no_wal = PathBuf::new();
        let wal_dir = self.wal_dir.as_deref().unwrap_or(&no_wal);
        let mut reader = Resumable::open_at(
            &self.bus,
            &self.topic,
            wal_dir,
            &self.name,
            committed.map_or(0, |c| c + 1),
        );
        reader.set_poll((interval / 4).clamp(Duration::from_millis(1), Duration::from_millis(50)));
        // The sink's position counts in this segment: the reader refuses
        // another where it joins the bus (a reset since the check above).
        reader.expect_segment(&segment);
        // Rows, batches and commit latency, where health monitors read
        // them; metrics are not worth a stopped batcher, so a counters
        // file that cannot be used is a warning.
        let counters = match counters::claim(
            self.bus.config(),
            CounterKind::Batch,
            &self.topic,
            &self.name,
        ) {
            Ok(c) => {
                if let Some(last) = committed {
                    c.set(
                        zerocast_ipc::counters::batch::COMMITTED_SEQ,
                        last.saturating_add(1),
                    );
                }
                Some(c)
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, name = %self.name, "batching without metrics: {e}");
                None
            }
        };

        struct State<'s, F> {
            batch: Batch,
            /// When the batch is due (None while it is empty).
            due: Option<Instant>,
            sink: &'s mut dyn Sink,
            stats: BatchStats,
            error: Option<SinkError>,
            done: bool,
            on_commit: F,
            until: Option<u64>,
            /// Where the commits are counted for health monitors.
            counters: Option<Counters>,
        }
        impl<F: FnMut(&Batch)> State<'_, F> {
            /// Commits the batch; on an error keeps it for the caller.
            fn flush(&mut self) -> Result<(), String> {
                if self.batch.is_empty() {
                    return Ok(());
                }
                let started = Instant::now();
                if let Err(e) = self.sink.write_batch(&self.batch) {
                    let message = e.to_string();
                    self.error = Some(e);
                    return Err(message);
                }
                let took = started.elapsed();
                let before = self.stats;
                for e in self.batch.events() {
                    match e {
                        Event::Frame { .. } => self.stats.frames += 1,
                        Event::Invalid { .. } => self.stats.invalid += 1,
                        Event::Lost(_) => self.stats.lost += 1,
                        Event::Missing { from, to } => self.stats.missing += to - from + 1,
                    }
                }
                self.stats.batches += 1;
                self.stats.committed = self.batch.last_seq();
                if let Some(c) = &self.counters {
                    use zerocast_ipc::counters::batch;
                    c.add(batch::ROWS, self.stats.frames - before.frames);
                    c.add(batch::INVALID, self.stats.invalid - before.invalid);
                    c.add(batch::LOST, self.stats.lost - before.lost);
                    c.add(batch::MISSING, self.stats.missing - before.missing);
                    c.add(batch::BATCHES, 1);
                    if let Some(last) = self.stats.committed {
                        c.set(batch::COMMITTED_SEQ, last.saturating_add(1));
                    }
                    c.observe_ns(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                }
                (self.on_commit)(&self.batch);
                if self
                    .until
                    .is_some_and(|u| self.stats.committed.is_some_and(|c| c >= u))
                {
                    self.done = true;
                }
                self.batch.clear();
                self.due = None;
                Ok(())
            }
        }
        let state = RefCell::new(State {
            batch: Batch::new(),
            due: None,
            sink,
            stats,
            error: None,
            done: false,
            on_commit: &mut on_commit,
            until,
            counters,
        });
        let read = reader.try_run(
            |event| {
                let mut s = state.borrow_mut();
                let last = last_seq(&event);
                if s.due.is_none() {
                    s.due = Some(Instant::now() + interval.saturating_sub(age(&event, interval)));
                }
                s.batch.push(event);
                if s.batch.len() >= max_batch
                    || s.batch.byte_len() >= max_bytes
                    || until.is_some_and(|u| last >= u)
                {
                    s.flush()?;
                }
                Ok(if s.done {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
            || {
                if stop() {
                    return true;
                }
                let mut s = state.borrow_mut();
                if s.due.is_some_and(|t| Instant::now() >= t) && s.flush().is_err() {
                    return true;
                }
                s.done
            },
        );
        let mut s = state.into_inner();
        if let Some(e) = s.error {
            return Err(BatchError::Sink(e));
        }
        read.map_err(BatchError::Source)?;
        // Stopped: commit what was collected.
        if s.flush().is_err() {
            if let Some(e) = s.error {
                return Err(BatchError::Sink(e));
            }
        }
        Ok(s.stats)
    }
}

/// How long ago a frame was published, if less than `interval`; zero for a
/// frame published longer ago (a backlog: its batch gets a whole interval)
/// and for other events. Both clocks are CLOCK_REALTIME.
fn age(event: &Event<'_>, interval: Duration) -> Duration {
    let Event::Frame { bytes, .. } = event else {
        return Duration::ZERO;
    };
    let Ok((header, _)) = zerocast_core::frame::FrameRef::parse(bytes) else {
        return Duration::ZERO;
    };
    let now = zerocast_ipc::layout::now_ns();
    let age = Duration::from_nanos(now.saturating_sub(header.publish_ns.to_native()));
    if age < interval {
        age
    } else {
        Duration::ZERO
    }
}

/// A `--sink` value: `sqlite:FILE` or `jsonl:FILE`.
///
/// ```
/// use zerocast_runtime::batch::SinkSpec;
/// assert_eq!("sqlite:t.db".parse(), Ok(SinkSpec::Sqlite("t.db".into())));
/// assert!("csv:t".parse::<SinkSpec>().unwrap_err().contains("unknown sink"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A JSON-lines file.
    Jsonl(PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, path) = s.split_once(':').ok_or("use sqlite:FILE or jsonl:FILE")?;
        if path.is_empty() {
            return Err(format!("{kind}: no file named; use {kind}:FILE"));
        }
        match kind {
            "sqlite" => Ok(SinkSpec::Sqlite(path.into())),
            "jsonl" => Ok(SinkSpec::Jsonl(path.into())),
            other => Err(format!(
                "unknown sink {other:?}; use sqlite:FILE or jsonl:FILE"
            )),
        }
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            SinkSpec::Jsonl(p) => write!(f, "jsonl:{}", p.display()),
        }
    }
}

impl SinkSpec {
    /// Opens the sink for `topic`'s stream `name`.
    pub fn open(&self, topic: &str, name: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkSpec::Sqlite(path) => Box::new(SqliteSink::open(path, topic, name)?),
            SinkSpec::Jsonl(path) => Box::new(JsonlSink::open(path, topic, name)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocast_core::frame::{encode, words_as_bytes, FrameBuf, Heartbeat};

    fn frame_published(ago: Duration) -> Vec<u8> {
        let hb = Heartbeat {
            publisher_id: [0; 16],
            sequence: 1,
            timestamp: 0,
        };
        let publish_ns = zerocast_ipc::layout::now_ns() - ago.as_nanos() as u64;
        let mut buf = FrameBuf::default();
        let words = encode(&hb, 1, publish_ns, &mut buf.0).unwrap();
        words_as_bytes(&buf.0[..words]).to_vec()
    }

    /// A batch is due one interval after its first frame was *published*:
    /// a batcher that took the frame late (behind by a commit) must not
    /// add its own delay to the interval. A backlog frame (published longer
    /// ago than the interval) gets the whole interval, so catching up still
    /// makes full batches.
    #[test]
    fn regression_batch_due_counts_from_the_first_frames_publish_time() {
        let interval = Duration::from_millis(100);
        let recent = frame_published(Duration::from_millis(40));
        let a = age(
            &Event::Frame {
                seq: 0,
                bytes: &recent,
            },
            interval,
        );
        assert!(a >= Duration::from_millis(40) && a < interval, "{a:?}");
        let old = frame_published(Duration::from_secs(5));
        assert_eq!(
            age(
                &Event::Frame {
                    seq: 0,
                    bytes: &old
                },
                interval
            ),
            Duration::ZERO
        );
        assert_eq!(age(&Event::Lost(3), interval), Duration::ZERO);
    }
}
