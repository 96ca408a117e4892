//! Reliable publishing: publish, then wait for acks from named subscribers or
//! a quorum, retransmitting after a timeout, failing after a bounded number of
//! retries. Built beside the ordinary publisher, which it does not slow down:
//! `publish` never looks at the ack channel.
//!
//! Subscribers ack cumulatively with an [`Acker`], each into its own "acked
//! up to" word of the topic's ack channel ([`zerocast_ipc::acks`]); the
//! publisher reads the words. No queue sits between them, so an acker killed
//! at any point cannot stop the others' acks from arriving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_core::frame::{id::id, Body};
use zerocast_ipc::acks::{AckChannel, AckSender};
use zerocast_ipc::{Bus, Publisher, PublisherOptions, Received, ShmPublisher};

/// Whose acks a reliable publish waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quorum {
    /// Every one of these subscriber ids.
    All(Vec<String>),
    /// At least this many distinct subscribers.
    AtLeast(usize),
}

/// Timeout and retries of a reliable publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableOptions {
    /// How long each attempt waits for acks (the timer restarts with every
    /// attempt).
    pub timeout: Duration,
    /// Retransmissions after the first attempt.
    pub max_retries: u32,
}

impl Default for ReliableOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            max_retries: 3,
        }
    }
}

/// Why a reliable publish failed.
#[derive(Debug)]
pub enum ReliableError {
    /// The bus refused.
    Bus(zerocast_ipc::Error),
    /// An id longer than 16 bytes.
    BadId(String),
    /// Not acked after every attempt.
    NotAcked {
        /// The sequence first published.
        seq: u64,
        /// Attempts made (1 + retries).
        attempts: u32,
        /// Who did not ack (for `All`), or how many acked (for `AtLeast`).
        missing: String,
    },
}

impl std::fmt::Display for ReliableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "{e}"),
            Self::BadId(s) => write!(f, "subscriber id {s:?} does not fit 16 bytes"),
            Self::NotAcked {
                seq,
                attempts,
                missing,
            } => {
                write!(
                    f,
                    "sequence {seq} not acked after {attempts} attempts: {missing}"
                )
            }
        }
    }
}

impl std::error::Error for ReliableError {}

fn sub_id(name: &str) -> Result<[u8; 16], ReliableError> {
    id(name).map_err(|_| ReliableError::BadId(name.to_owned()))
}

/// A publisher with `publish_reliable`.
#[derive(Debug)]
pub struct ReliablePublisher {
    publisher: ShmPublisher,
    acks: Arc<AckChannel>,
}

impl ReliablePublisher {
    /// A reliable publisher on shared-memory topic `topic`.
    pub fn new(bus: &Bus, topic: &str, options: PublisherOptions) -> Result<Self, ReliableError> {
        let publisher = match bus
            .publisher_with(topic, options)
            .map_err(ReliableError::Bus)?
        {
            Publisher::Shm(p) => p,
            #[allow(unreachable_patterns)]
            _ => {
                return Err(ReliableError::Bus(zerocast_ipc::Error::Iceoryx(
                    "reliable publishing needs a shared-memory topic".into(),
                )))
            }
        };
        let acks = bus.acks(topic).map_err(ReliableError::Bus)?;
        Ok(Self { publisher, acks })
    }

    /// The plain publisher, for ordinary publishes.
    pub fn publisher(&mut self) -> &mut ShmPublisher {
        &mut self.publisher
    }

    /// How many of the named subscribers have acked `seq` (for `All`), or
    /// how many distinct subscribers have (for `AtLeast`, `ids` empty).
    /// A word above `seq` means its [`Acker`] handled every frame up to
    /// `seq` or a retransmission that closed its gap over them (the words
    /// never pass a gap), so "at or above" is exact.
    fn acked_count(&self, seq: u64, ids: &[[u8; 16]]) -> usize {
        let table = self.acks.acked();
        // A name may hold more than one entry (registered twice at once):
        // its highest word counts.
        let up_to = |id: &[u8; 16]| {
            table
                .iter()
                .filter(|a| &a.subscriber == id)
                .map(|a| a.acked_up_to)
                .max()
                .unwrap_or(0)
        };
        if ids.is_empty() {
            let mut names: Vec<[u8; 16]> = table
                .iter()
                .filter(|a| a.acked_up_to > seq)
                .map(|a| a.subscriber)
                .collect();
            names.sort_unstable();
            names.dedup();
            names.len()
        } else {
            ids.iter().filter(|id| up_to(id) > seq).count()
        }
    }

    fn satisfied(&self, seq: u64, ids: &[[u8; 16]], at_least: usize) -> bool {
        let n = self.acked_count(seq, ids);
        if ids.is_empty() {
            n >= at_least
        } else {
            n == ids.len()
        }
    }

    /// Publishes `body` once (one sequence), then waits until the quorum has
    /// acked it. After each `timeout` without enough acks it retransmits the
    /// frame (a new sequence marked as a retransmission of the first) and
    /// waits again with a fresh timer; after `max_retries` retransmissions
    /// it fails, saying who is missing. Returns the sequence that was acked.
    pub fn publish_reliable<B: Body>(
        &mut self,
        body: &B,
        quorum: &Quorum,
        options: ReliableOptions,
    ) -> Result<u64, ReliableError> {
        let (ids, at_least) = match quorum {
            Quorum::All(names) => (
                names
                    .iter()
                    .map(|n| sub_id(n))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            ),
            Quorum::AtLeast(k) => (Vec::new(), *k),
        };
        let first = self.publisher.publish(body).map_err(ReliableError::Bus)?;
        let mut seq = first;
        let attempts = options.max_retries + 1;
        for attempt in 1..=attempts {
            // A timeout past what an Instant can hold is no timeout.
            let deadline = Instant::now().checked_add(options.timeout);
            loop {
                if self.satisfied(seq, &ids, at_least) {
                    return Ok(seq);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            if attempt < attempts {
                seq = self
                    .publisher
                    .publish_retransmit(body, first)
                    .map_err(ReliableError::Bus)?;
            }
        }
        let missing = if ids.is_empty() {
            format!(
                "{} of at least {at_least} subscribers acked",
                self.acked_count(seq, &[])
            )
        } else {
            let names: Vec<String> = match quorum {
                Quorum::All(names) => names
                    .iter()
                    .zip(&ids)
                    .filter(|(_, id)| self.acks.acked_up_to(id) <= seq)
                    .map(|(n, _)| n.clone())
                    .collect(),
                Quorum::AtLeast(_) => Vec::new(),
            };
            format!("no ack from {}", names.join(", "))
        };
        Err(ReliableError::NotAcked {
            seq: first,
            attempts,
            missing,
        })
    }
}

/// A subscriber's side of acks: call [`Acker::handled`] for every frame once
/// processed; it skips retransmissions of frames already processed and acks
/// cumulatively.
///
/// # What an ack means
///
/// The acked position only ever covers frames this subscriber processed: it
/// advances to just past the last handled frame with no gap before it. A
/// gap (the subscriber lagged and was overwritten, a sequence was lost, or
/// it started after frames it never saw; a fresh name's position starts at
/// 0) holds the position at the first missed sequence, however many later
/// frames are handled, so a reliable publish of a frame inside the gap is
/// not satisfied by this subscriber. It gets the frame the way every
/// subscriber that missed one does: the reliable publisher, not satisfied
/// after its timeout, retransmits it under a new sequence marked as a
/// retransmission of the original ([`Received::retransmit_of`]). Handling a
/// retransmission closes every open gap and acks through the
/// retransmission's sequence. That is exact because a
/// [`ReliablePublisher`] has one frame outstanding at a time: a
/// retransmission handled after a gap is of the one reliable frame a
/// publisher can still be waiting for in that gap (its earlier ones were
/// resolved before it published this one). With several reliable
/// publishers on one topic, one's retransmission also closes a gap over
/// the other's frame. A subscriber that lagged over no reliable frame
/// costs the next reliable publish one retransmission.
///
/// Registers the subscriber's name in the topic's ack channel; a restarted
/// subscriber of the same name takes its entry over (once the old process is
/// dead) and its acked position carries on from where it was (frames
/// between it and the first one the new process handles are a gap). An ack
/// is one atomic `fetch_max` on the subscriber's own word: it never blocks,
/// never fails, and a process killed while acking leaves nothing for others
/// to trip on.
#[derive(Debug)]
pub struct Acker {
    sender: AckSender,
    processed_originals: std::collections::BTreeSet<u64>,
    /// The sequence after the last frame handled (at first, the name's
    /// acked position): a handled frame above it leaves a gap.
    next: u64,
    /// The first sequence of the earliest open gap; the acked position
    /// stays below it until a retransmission is handled.
    gap: Option<u64>,
}

impl Acker {
    /// An acker for subscriber `name` on `topic`. Fails if `name` does not
    /// fit 16 bytes, if a live process other than this one acks as `name`
    /// on `topic`, or if the topic's ack channel has no free entry.
    pub fn new(bus: &Bus, topic: &str, name: &str) -> Result<Self, ReliableError> {
        let acks = bus.acks(topic).map_err(ReliableError::Bus)?;
        let sender = acks.register(sub_id(name)?).map_err(ReliableError::Bus)?;
        Ok(Self {
            next: sender.acked_up_to(),
            sender,
            processed_originals: Default::default(),
            gap: None,
        })
    }

    /// Whether `frame` is a retransmission of one already processed (then
    /// skip processing, but still call [`handled`](Self::handled)).
    pub fn is_duplicate(&self, frame: &Received<'_>) -> bool {
        frame
            .retransmit_of()
            .is_some_and(|o| self.processed_originals.contains(&o))
    }

    /// Records `frame` as handled and acks cumulatively: up to `frame.seq`
    /// if no sequence before it was missed, else only up to the first
    /// missed one, until a retransmission is handled (see the type's docs).
    pub fn handled(&mut self, frame: &Received<'_>) {
        let retransmit_of = frame.retransmit_of();
        let original = retransmit_of.unwrap_or(frame.seq);
        self.processed_originals.insert(original);
        // Keep the set small: only recent originals can be retransmitted.
        while self.processed_originals.len() > 65_536 {
            self.processed_originals.pop_first();
        }
        if frame.seq > self.next && self.gap.is_none() {
            self.gap = Some(self.next);
        }
        self.next = self.next.max(frame.seq + 1);
        if retransmit_of.is_some() {
            self.gap = None;
        }
        match self.gap {
            // Acks every sequence below the gap (a no-op if already acked).
            Some(first_missed) => {
                if let Some(below) = first_missed.checked_sub(1) {
                    self.sender.ack(below);
                }
            }
            None => self.sender.ack(frame.seq),
        }
    }

    /// Acks every sequence up to and including `seq` directly, whether or
    /// not it was handled (the caller vouches for every frame up to it).
    pub fn ack(&self, seq: u64) {
        self.sender.ack(seq);
    }

    /// Sequence + 1 of the highest sequence this subscriber name has acked
    /// on the topic (by this process or an earlier one); 0 when none.
    pub fn acked_up_to(&self) -> u64 {
        self.sender.acked_up_to()
    }
}
