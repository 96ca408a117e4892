//! Publisher state changes as frames on the [`HEALTH_TOPIC`].
//!
//! An event travels as a [`Heartbeat`] body with this meaning (no new
//! message kind, so every reader of frames, the WAL and the printers,
//! already handles it):
//!
//! | field          | holds                                                    |
//! |----------------|----------------------------------------------------------|
//! | `publisher_id` | the topic's name, NUL-padded (cut to 16 bytes)           |
//! | `sequence`     | `pid << 32 \| 0xE5 << 24 \| index << 16 \| from << 8 \| to` |
//! | `timestamp`    | when the monitor saw the change, ns since the Unix epoch |
//!
//! `index` is the publisher's slot in the topic's table (the `publisher_id`
//! in its frames' headers), `from` and `to` are [`PublisherState`] codes
//! (1 Healthy, 2 Degraded, 3 Failed), `0xE5` is [`EVENT_MARK`].
//! [`HealthEvent::decode`] reverses it, and takes a heartbeat for an event
//! only with the mark, a pid other than 0, an index below 256 and state
//! codes: a plain heartbeat on the health topic (a monitor's
//! `send_heartbeat`, say) is never read as an event.

use zerocast_core::frame::Heartbeat;
use zerocast_ipc::config::HEALTH_TOPIC;
use zerocast_ipc::{Bus, GatingPolicy, Publisher, PublisherOptions};

use super::{PublisherState, Transition};

/// The mark in bits 24 to 31 of an event's `sequence`.
pub const EVENT_MARK: u8 = 0xE5;

/// Name of a monitor's publisher entry on the health topic.
pub const HEALTH_PUBLISHER: &str = "health-monitor";

/// A publisher state change as it travels on the health topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// Topic name (its first 16 bytes).
    pub topic: String,
    /// Publisher table index.
    pub index: u16,
    /// Pid of the publisher's process.
    pub pid: u32,
    /// State before.
    pub from: PublisherState,
    /// State now.
    pub to: PublisherState,
    /// When the monitor saw it, ns since the Unix epoch.
    pub at_ns: u64,
}

impl HealthEvent {
    /// The event of a transition.
    pub fn of(t: &Transition) -> Self {
        let mut end = t.topic.len().min(16);
        while !t.topic.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            topic: t.topic[..end].to_owned(),
            // Below MAX_PUBLISHERS (10): fits the 8 bits it travels in.
            index: u16::try_from(t.index.min(255)).unwrap_or(255),
            pid: t.pid,
            from: t.from,
            to: t.to,
            at_ns: t.at_ns,
        }
    }

    /// As a heartbeat body.
    pub fn encode(&self) -> Heartbeat {
        let mut publisher_id = [0u8; 16];
        let bytes = self.topic.as_bytes();
        let n = bytes.len().min(16);
        publisher_id[..n].copy_from_slice(&bytes[..n]);
        Heartbeat {
            publisher_id,
            sequence: u64::from(self.pid) << 32
                | u64::from(EVENT_MARK) << 24
                | u64::from(self.index & 0xFF) << 16
                | (self.from as u64) << 8
                | self.to as u64,
            timestamp: i64::try_from(self.at_ns).unwrap_or(i64::MAX),
        }
    }

    /// The event a heartbeat body from the health topic carries, or `None`
    /// if it is not an event (no [`EVENT_MARK`], pid 0, or state codes that
    /// are not states).
    pub fn decode(publisher_id: &[u8; 16], sequence: u64, timestamp: i64) -> Option<Self> {
        let end = publisher_id.iter().position(|&b| b == 0).unwrap_or(16);
        let pid = (sequence >> 32) as u32;
        if (sequence >> 24) as u8 != EVENT_MARK || pid == 0 {
            return None;
        }
        Some(Self {
            topic: String::from_utf8_lossy(&publisher_id[..end]).into_owned(),
            index: u16::from((sequence >> 16) as u8),
            pid,
            from: PublisherState::from_code((sequence >> 8) as u8)?,
            to: PublisherState::from_code(sequence as u8)?,
            at_ns: u64::try_from(timestamp).ok()?,
        })
    }
}

impl HealthEvent {
    /// The event a frame received from the health topic carries, or
    /// `None` if it is not one (not a valid heartbeat frame, or state codes
    /// that are not states).
    pub fn from_received(frame: &zerocast_ipc::Received<'_>) -> Option<Self> {
        let hb = frame.body::<Heartbeat>().ok()?;
        Self::decode(
            &hb.publisher_id,
            hb.sequence.to_native(),
            hb.timestamp.to_native(),
        )
    }
}

impl std::fmt::Display for HealthEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} publisher {} (pid {}): {} -> {}",
            self.topic, self.index, self.pid, self.from, self.to
        )
    }
}

/// Publishes transitions on the health topic.
#[derive(Debug)]
pub struct HealthEvents {
    publisher: Publisher,
}

impl HealthEvents {
    /// A publisher on `bus`'s health topic ([`HEALTH_TOPIC`]). It never
    /// waits for a gating subscriber of the health topic: an event that
    /// cannot be published is an error to log, not a reason to stall the
    /// monitor.
    pub fn open(bus: &Bus) -> zerocast_ipc::Result<Self> {
        let publisher = bus.publisher_with(
            HEALTH_TOPIC,
            PublisherOptions {
                name: HEALTH_PUBLISHER.to_owned(),
                gating: GatingPolicy::Fail,
            },
        )?;
        Ok(Self { publisher })
    }

    /// Publishes `t`; returns its sequence on the health topic.
    pub fn publish(&mut self, t: &Transition) -> zerocast_ipc::Result<u64> {
        self.publisher.publish(&HealthEvent::of(t).encode())
    }
}
