//! Reliable publishing: publish, then wait for acks from named subscribers or
//! a quorum, retransmitting after a timeout, failing after a bounded number of
//! retries. Built beside the ordinary publisher, which it does not slow down:
//! `publish` never looks at the ack channel.
//!
//! Subscribers ack cumulatively with an [`Acker`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_core::frame::{id::id, Body};
use zerocast_ipc::acks::AckChannel;
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
    /// Highest cumulative ack seen per subscriber id.
    acked: HashMap<[u8; 16], u64>,
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
        Ok(Self {
            publisher,
            acks,
            acked: HashMap::new(),
        })
    }

    /// The plain publisher, for ordinary publishes.
    pub fn publisher(&mut self) -> &mut ShmPublisher {
        &mut self.publisher
    }

    fn drain(&mut self) {
        let acked = &mut self.acked;
        self.acks.drain(|a| {
            let v = acked.entry(a.subscriber).or_insert(a.seq);
            *v = (*v).max(a.seq);
        });
    }

    fn satisfied(&self, seq: u64, quorum: &[[u8; 16]], at_least: usize) -> bool {
        if quorum.is_empty() {
            self.acked.values().filter(|&&a| a >= seq).count() >= at_least
        } else {
            quorum
                .iter()
                .all(|id| self.acked.get(id).is_some_and(|&a| a >= seq))
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
            let deadline = Instant::now() + options.timeout;
            loop {
                self.drain();
                if self.satisfied(seq, &ids, at_least) {
                    return Ok(seq);
                }
                if Instant::now() >= deadline {
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
                self.acked.values().filter(|&&a| a >= seq).count()
            )
        } else {
            let names: Vec<String> = match quorum {
                Quorum::All(names) => names
                    .iter()
                    .zip(&ids)
                    .filter(|(_, id)| self.acked.get(*id).is_none_or(|&a| a < seq))
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
#[derive(Debug)]
pub struct Acker {
    acks: Arc<AckChannel>,
    id: [u8; 16],
    processed_originals: std::collections::BTreeSet<u64>,
}

impl Acker {
    /// An acker for subscriber `name` on `topic`.
    pub fn new(bus: &Bus, topic: &str, name: &str) -> Result<Self, ReliableError> {
        Ok(Self {
            acks: bus.acks(topic).map_err(ReliableError::Bus)?,
            id: sub_id(name)?,
            processed_originals: Default::default(),
        })
    }

    /// Whether `frame` is a retransmission of one already processed (then
    /// skip processing, but still call [`handled`](Self::handled)).
    pub fn is_duplicate(&self, frame: &Received<'_>) -> bool {
        frame
            .retransmit_of()
            .is_some_and(|o| self.processed_originals.contains(&o))
    }

    /// Records `frame` as handled and acks its sequence cumulatively.
    pub fn handled(&mut self, frame: &Received<'_>) {
        let original = frame.retransmit_of().unwrap_or(frame.seq);
        self.processed_originals.insert(original);
        // Keep the set small: only recent originals can be retransmitted.
        while self.processed_originals.len() > 65_536 {
            self.processed_originals.pop_first();
        }
        self.acks.ack(self.id, frame.seq, Duration::from_millis(10));
    }

    /// Acks `seq` directly.
    pub fn ack(&self, seq: u64) -> bool {
        self.acks.ack(self.id, seq, Duration::from_millis(10))
    }
}
