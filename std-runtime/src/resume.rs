//! The resumable subscriber: loads its checkpoint, replays the WAL from the
//! next sequence, then joins the live ring without a gap or a duplicate, even
//! while publishers keep publishing.
//!
//! How the switch stays gapless: it replays the WAL to its end, then reads the
//! ring from the next sequence. If the ring has already overwritten that
//! sequence (`Lagged`), the recorder has already written it to the WAL (the
//! recorder releases ring slots only after writing them), so it goes back to
//! the WAL and tries again; each round it catches up by what the WAL gained.
//! Sequences seen twice (in the WAL and the ring) are delivered once.
//!
//! Exactly once across crashes: the checkpoint records the last sequence the
//! caller's processing finished. On restart everything after it is delivered
//! again; a caller whose processing leaves output should, like
//! `zerocast follow --out`, cut that output back to the checkpoint first,
//! and, to hold across a machine crash too, make the output durable before
//! each checkpoint ([`Resumable::before_checkpoint`]).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zerocast_ipc::{Bus, RecvError, Start, SubscriberOptions, WaitStrategy};

use zerocast_core::frame::FrameRef;

use crate::recorder::frame_len;
use crate::wal::format::{KIND_FRAME, KIND_LOST, KIND_MISSED};
use crate::wal::{Checkpoints, Entry, Replay, WalError};

/// What the resumable subscriber delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A frame (from the WAL or the ring).
    Frame {
        /// Topic sequence.
        seq: u64,
        /// The frame bytes.
        bytes: &'a [u8],
    },
    /// The bus declared this sequence lost (its publisher died mid-write).
    Lost(u64),
    /// What the bus carried for `seq` is not a valid frame (the recorder
    /// kept the bytes; `zerocast_core::frame::FrameRef::parse` says why).
    Invalid {
        /// Topic sequence.
        seq: u64,
        /// The bytes as recorded or received.
        bytes: &'a [u8],
    },
    /// These sequences are in neither the WAL nor the ring (the WAL starts
    /// later, the recorder was lapped or not running, or a segment was
    /// removed while this read it): they cannot be recovered.
    Missing {
        /// First missing sequence.
        from: u64,
        /// Last missing sequence.
        to: u64,
    },
}

/// When to checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many events (1: after every one).
    pub every_events: u64,
    /// Or after this long, whichever first.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_events: 1,
            every: Duration::from_millis(100),
        }
    }
}

/// What runs before each checkpoint is stored, given the sequence it will
/// record (see [`Resumable::before_checkpoint`]).
pub type BeforeCheckpoint = Box<dyn FnMut(u64) -> Result<(), WalError> + Send>;

/// The optional [`BeforeCheckpoint`] hook (a closure has no `Debug`).
#[derive(Default)]
struct Hook(Option<BeforeCheckpoint>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(hook)"
        } else {
            "None"
        })
    }
}

/// A subscriber that survives restarts.
#[derive(Debug)]
pub struct Resumable {
    bus: Bus,
    topic: String,
    wal_dir: PathBuf,
    /// None: the caller keeps the position itself ([`Resumable::open_at`]).
    checkpoints: Option<Checkpoints>,
    name: String,
    policy: CheckpointPolicy,
    next: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpointed: Option<u64>,
    before_checkpoint: Hook,
    /// How long the live loop waits for a frame before it looks at `stop`
    /// again.
    poll: Duration,
    stored: u64,
    /// The identity of the bus segment this reader's position counts in
    /// ([`expect_segment`](Self::expect_segment)), if its caller bound it.
    segment: Option<String>,
    /// The first checkpoint failure, if one failed: see
    /// [`checkpoint`](Self::checkpoint).
    checkpoint_failed: Option<String>,
}

impl Resumable {
    /// Opens `name`'s position on `topic`: its checkpoint in `checkpoint_dir`
    /// (a damaged one is an error), else sequence 0.
    pub fn open(
        bus: &Bus,
        topic: &str,
        wal_dir: &Path,
        checkpoint_dir: &Path,
        name: &str,
        policy: CheckpointPolicy,
    ) -> Result<Self, WalError> {
        let checkpoints = Checkpoints::new(checkpoint_dir)?;
        let checkpointed = checkpoints.load(name)?;
        Ok(Self {
            bus: bus.clone(),
            topic: topic.to_owned(),
            wal_dir: wal_dir.to_owned(),
            checkpoints: Some(checkpoints),
            name: name.to_owned(),
            policy,
            next: checkpointed.map_or(0, |c| c + 1),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpointed,
            before_checkpoint: Hook::default(),
            poll: Duration::from_millis(50),
            stored: 0,
            segment: None,
            checkpoint_failed: None,
        })
    }

    /// A resumable subscriber without a checkpoint file, for a caller that
    /// keeps its position with its own output (the delayed tier's sinks
    /// commit the last sequence in the same transaction as the rows):
    /// delivers from `next` on. [`checkpoint`](Self::checkpoint) then only
    /// runs the [`before_checkpoint`](Self::before_checkpoint) hook.
    pub fn open_at(bus: &Bus, topic: &str, wal_dir: &Path, name: &str, next: u64) -> Self {
        Self {
            bus: bus.clone(),
            topic: topic.to_owned(),
            wal_dir: wal_dir.to_owned(),
            checkpoints: None,
            name: name.to_owned(),
            policy: CheckpointPolicy {
                every_events: u64::MAX,
                every: Duration::MAX,
            },
            next,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpointed: next.checked_sub(1),
            before_checkpoint: Hook::default(),
            poll: Duration::from_millis(50),
            stored: 0,
            segment: None,
            checkpoint_failed: None,
        }
    }

    /// How long the live loop waits for a frame before it calls `stop`
    /// again (default 50 ms): the longest an idle caller waits to act on
    /// its own timer (the delayed tier flushes a due batch from `stop`).
    pub fn set_poll(&mut self, poll: Duration) {
        self.poll = poll.max(Duration::from_micros(100));
    }

    /// Binds the reader's position to the bus segment of identity
    /// `identity` ([`SegmentIdentity`](crate::checkpoint_segment::SegmentIdentity)
    /// as a string): where it joins the bus, a segment of another identity
    /// (the topic removed and made again since the caller took the
    /// identity: a bus reset, whose sequences restarted at 0) is refused,
    /// naming the reset, instead of read from the caller's position on.
    /// The delayed tier binds its sink's segment this way: a reset between
    /// its check of the sink and the reader's join went unnoticed when it
    /// reads no log (the log's binding is checked otherwise).
    pub fn expect_segment(&mut self, identity: &str) {
        self.segment = Some(identity.to_owned());
    }

    /// The last checkpointed sequence when opened or since.
    pub fn checkpointed(&self) -> Option<u64> {
        self.checkpointed
    }

    /// Checkpoints stored since this was opened.
    pub fn checkpoints_stored(&self) -> u64 {
        self.stored
    }

    /// Next sequence to deliver.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    fn delivered(&mut self, last: u64) -> Result<(), WalError> {
        self.next = last + 1;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.policy.every_events
            || self.last_checkpoint.elapsed() >= self.policy.every
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// What `f` made of an event: its flow, or (processing failed) the
    /// error, after checkpointing what was processed before it.
    fn processed(&mut self, r: Result<ControlFlow<()>, String>) -> Result<ControlFlow<()>, String> {
        r.or_else(|e| {
            self.checkpoint().map_err(|c| format!("{e}; and {c}"))?;
            Err(e)
        })
    }

    /// Runs `hook` before each checkpoint is stored, with the sequence the
    /// checkpoint will record; if it fails, the checkpoint is not stored and
    /// its error is returned. For output that must be durable before the
    /// checkpoint says it was processed: `zerocast follow --out` syncs its
    /// file here (once per checkpoint, not per event), so exactly-once
    /// holds across a machine crash too.
    pub fn before_checkpoint(
        &mut self,
        hook: impl FnMut(u64) -> Result<(), WalError> + Send + 'static,
    ) {
        self.before_checkpoint = Hook(Some(Box::new(hook)));
    }

    /// Writes the checkpoint now (after the
    /// [`before_checkpoint`](Self::before_checkpoint) hook). Once a
    /// checkpoint has failed (its hook or its store), every later one fails
    /// too, naming the first failure, without running the hook again: a
    /// hook that syncs output may fail once and then succeed with the data
    /// still lost (Linux reports a failed writeback to `fsync` once), and a
    /// checkpoint stored after that would cover output that never reached
    /// the disk.
    pub fn checkpoint(&mut self) -> Result<(), WalError> {
        if let Some(first) = &self.checkpoint_failed {
            let path = self.checkpoints.as_ref().map_or_else(
                || PathBuf::from(&self.name),
                |c| c.dir().join(format!("{}.ckpt", self.name)),
            );
            return Err(WalError::Io {
                path,
                action: "checkpoint after an earlier checkpoint failed",
                source: std::io::Error::other(first.clone()),
            });
        }
        if self.next > 0 && self.checkpointed != Some(self.next - 1) {
            let mut store = || {
                if let Some(hook) = &mut self.before_checkpoint.0 {
                    hook(self.next - 1)?;
                }
                if let Some(checkpoints) = &self.checkpoints {
                    checkpoints.store(&self.name, self.next - 1)?;
                    self.stored += 1;
                }
                Ok::<(), WalError>(())
            };
            if let Err(e) = store() {
                self.checkpoint_failed = Some(e.to_string());
                return Err(e);
            }
            self.checkpointed = Some(self.next - 1);
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Delivers every event from the checkpoint on to `f`, until `f` breaks
    /// or `stop()` is true; checkpoints by the policy and on return. An
    /// event counts as processed once `f` returns, whether it breaks or not;
    /// use [`try_run`](Self::try_run) when processing can fail.
    pub fn run(
        &mut self,
        mut f: impl FnMut(Event<'_>) -> ControlFlow<()>,
        stop: impl Fn() -> bool,
    ) -> Result<(), String> {
        self.try_run(|e| Ok(f(e)), stop)
    }

    /// [`run`](Self::run) for processing that can fail: when `f` returns an
    /// error, that event is not processed (the checkpoint stays at the one
    /// before it, and a restart delivers it again), and the error is
    /// returned. Whatever ends the run, an error of its own included (a
    /// damaged log, a bus reset found where it would join the bus, a
    /// subscriber it could not make), what `f` processed before is
    /// checkpointed first.
    pub fn try_run(
        &mut self,
        f: impl FnMut(Event<'_>) -> Result<ControlFlow<()>, String>,
        stop: impl Fn() -> bool,
    ) -> Result<(), String> {
        self.run_until_done(f, stop).or_else(|e| {
            // Not after a failed checkpoint (the error says so already);
            // otherwise usually done already (`processed`), then a no-op.
            if self.checkpoint_failed.is_none() {
                self.checkpoint().map_err(|c| format!("{e}; and {c}"))?;
            }
            Err(e)
        })
    }

    fn run_until_done(
        &mut self,
        mut f: impl FnMut(Event<'_>) -> Result<ControlFlow<()>, String>,
        stop: impl Fn() -> bool,
    ) -> Result<(), String> {
        refuse_iceoryx2(
            &self.bus,
            &self.topic,
            "reading it from a position (a resume)",
        )?;
        // A reader that keeps no checkpoint of its own (the gateway's and
        // the bridge's history, the batcher: `open_at`) serves the bus's
        // sequences: a log bound to another segment than the bus's (a
        // reset whose old log is still in place) is refused before any of
        // it is read, not labelled as the new bus's frames. A follower
        // (`open`) may read an old log to its end (`follow --until`): it
        // is checked where it would join the bus.
        if self.checkpoints.is_none() {
            crate::checkpoint_segment::check_log(&self.bus, &self.topic, &self.wal_dir, None)?;
        }
        // The error `f` returned, if any.
        let mut failed: Option<String> = None;
        let replay = Replay::with_topic(&self.wal_dir, &self.topic);
        // Rounds in a row where neither the WAL nor the ring could give
        // `next`: then it is gone for good.
        let mut fruitless = 0;
        loop {
            // 1. Catch up from the WAL.
            let before = self.next;
            let mut broke = false;
            let mut err: Option<WalError> = None;
            let from = self.next;
            replay
                .read(from, u64::MAX, |entry| {
                    let (first, last, event) = match entry {
                        Entry::Record(r) => {
                            let event = match r.kind {
                                KIND_FRAME => Event::Frame {
                                    seq: r.seq,
                                    bytes: r.frame,
                                },
                                KIND_LOST => Event::Lost(r.seq),
                                KIND_MISSED => Event::Missing {
                                    from: r.seq.max(self.next),
                                    to: r.last_seq(),
                                },
                                _ => Event::Invalid {
                                    seq: r.seq,
                                    bytes: r.frame,
                                },
                            };
                            (r.seq, r.last_seq(), event)
                        }
                        Entry::Gap { from, to, .. } => (
                            from,
                            to,
                            Event::Missing {
                                from: from.max(self.next),
                                to,
                            },
                        ),
                    };
                    if last < self.next {
                        return ControlFlow::Continue(());
                    }
                    if first > self.next {
                        // Before the log's first record: not recorded.
                        let gap = Event::Missing {
                            from: self.next,
                            to: first - 1,
                        };
                        match f(gap) {
                            Ok(ControlFlow::Continue(())) => {}
                            Ok(ControlFlow::Break(())) => {
                                broke = true;
                                return ControlFlow::Break(());
                            }
                            Err(e) => {
                                failed = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    let flow = match f(event) {
                        Ok(flow) => flow,
                        Err(e) => {
                            failed = Some(e);
                            return ControlFlow::Break(());
                        }
                    };
                    if let Err(e) = self.delivered(last) {
                        err = Some(e);
                        return ControlFlow::Break(());
                    }
                    if flow.is_break() || stop() {
                        broke = true;
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                })
                .map_err(|e| e.to_string())?;
            if let Some(e) = err {
                return Err(e.to_string());
            }
            if let Some(e) = failed {
                self.checkpoint().map_err(|c| format!("{e}; and {c}"))?;
                return Err(e);
            }
            if broke || stop() {
                return self.checkpoint().map_err(|e| e.to_string());
            }
            let wal_progress = self.next > before;
            // 2. Join the ring at `next`: only a ring whose sequences the
            // log counts in (not one made again by a bus reset).
            let binding = self
                .checkpoints
                .as_ref()
                .map(|c| crate::checkpoint_segment::path(c.dir(), &self.name));
            let checked = crate::checkpoint_segment::check_log(
                &self.bus,
                &self.topic,
                &self.wal_dir,
                binding.as_deref(),
            )?;
            let mut sub = self
                .bus
                .subscriber(
                    &self.topic,
                    SubscriberOptions {
                        name: format!("resume-{}", self.name),
                        start: Start::At(self.next),
                        wait: WaitStrategy::Blocking { spins: 1_000 },
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?;
            // Joined: the subscriber maps the segment checked now.
            drop(checked);
            if let (Some(want), Some(joined)) = (&self.segment, sub.segment()) {
                let now = crate::checkpoint_segment::SegmentIdentity::of(joined).to_string();
                if *want != now {
                    return Err(format!(
                        "the bus was reset: this reader's position counts in topic {}'s segment \
                         {want}, but the segment it joined is {now}, whose sequences restarted at \
                         0; going on from its position would skip the new bus's frames up to \
                         there",
                        self.topic
                    ));
                }
            }
            let mut live_progress = false;
            loop {
                if stop() {
                    return self.checkpoint().map_err(|e| e.to_string());
                }
                match sub.recv_timeout(self.poll) {
                    Ok(frame) => {
                        if frame.seq < self.next {
                            continue; // already delivered from the WAL
                        }
                        let seq = frame.seq;
                        let bytes = &frame.bytes[..frame_len(frame.bytes)];
                        let flow = f(if FrameRef::parse(bytes).is_ok() {
                            Event::Frame { seq, bytes }
                        } else {
                            Event::Invalid {
                                seq,
                                bytes: frame.bytes,
                            }
                        });
                        let flow = self.processed(flow)?;
                        self.delivered(seq).map_err(|e| e.to_string())?;
                        live_progress = true;
                        fruitless = 0;
                        if flow.is_break() {
                            return self.checkpoint().map_err(|e| e.to_string());
                        }
                    }
                    Err(RecvError::Lost(seq)) => {
                        if seq >= self.next {
                            let flow = self.processed(f(Event::Lost(seq)))?;
                            self.delivered(seq).map_err(|e| e.to_string())?;
                            if flow.is_break() {
                                return self.checkpoint().map_err(|e| e.to_string());
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        if !wal_progress && !live_progress {
                            fruitless += 1;
                        }
                        if fruitless >= 3 {
                            // Neither source has it: report and move on.
                            let (from, to) = (self.next, self.next + n - 1);
                            let flow = self.processed(f(Event::Missing { from, to }))?;
                            self.delivered(to).map_err(|e| e.to_string())?;
                            fruitless = 0;
                            if flow.is_break() {
                                return self.checkpoint().map_err(|e| e.to_string());
                            }
                        }
                        // The recorder has written what the ring lost.
                        break;
                    }
                    Err(RecvError::Empty) => {
                        if self.last_checkpoint.elapsed() >= self.policy.every {
                            self.checkpoint().map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
        }
    }
}

/// An error for an iceoryx2 topic, for `what` (follow, batch, a resume,
/// the bridge's export) that goes by the topic's sequence: an iceoryx2
/// topic's frames count per publisher, from 0 again when one restarts,
/// and its subscribers start at the newest frame wherever a position is:
/// a reader would take a restarted publisher's frames for ones it had,
/// and skip what was published while it was away, without a word.
pub fn refuse_iceoryx2(bus: &Bus, topic: &str, what: &str) -> Result<(), String> {
    let config = bus.config().topic(topic).map_err(|e| e.to_string())?;
    if config.transport != zerocast_ipc::Transport::Shm {
        return Err(format!(
            "topic {topic} is an iceoryx2 topic: {what} needs a shared-memory topic, whose \
             frames carry the topic's sequence (an iceoryx2 topic's count per publisher, \
             from 0 again after a restart)"
        ));
    }
    Ok(())
}
