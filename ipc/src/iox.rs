//! The iceoryx2 transport: the same publisher/subscriber API over an
//! iceoryx2 (0.10) publish-subscribe service of `[u8]` slices with safe
//! overflow, and its event service for blocking waits.
//!
//! Service names are `zerocast/<namespace>/<topic>` (and `.../event`), so
//! namespaces never share services.
//!
//! Differences from the shared-memory transport, stated plainly:
//! - Sequences are counted per publisher (iceoryx2 has no shared topic
//!   counter); with one publisher per topic they are the topic sequence.
//! - Lag is detected from gaps in a publisher's sequence after iceoryx2's safe
//!   overflow dropped the oldest samples, including before the first frame
//!   seen from a publisher that started after the subscriber connected (each
//!   sample carries its publisher's start time in its iceoryx2 user header,
//!   outside the frame: the frame header means the same on both transports).
//! - Subscribers copy each sample into their aligned frame buffer (iceoryx2
//!   `[u8]` payloads are only byte-aligned), like the shm transport does.
//! - A blocking subscriber creates an event listener; publishers notify only
//!   while some listener exists.
//! - Each subscriber has its own queue of at most 256 frames (iceoryx2 sizes
//!   the publisher's memory by subscribers times depth); the shm ring is one
//!   shared buffer of the whole topic size.

use std::time::Duration;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use zerocast_core::frame::{self, Body, FrameBuf, FrameHeader, HEADER_WORDS, MAX_FRAME_WORDS};

/// The iceoryx2 user header of every sample: its publisher's start time,
/// ns since the Unix epoch.
type StartedNs = u64;

use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::layout::now_ns;
use crate::publisher::{HeartbeatSource, PublisherOptions};
use crate::subscriber::{Received, RecvError, SubscriberOptions};

// The thread-safe flavour: ports can move to another thread, so `Publisher`
// and `Subscriber` stay `Send` whatever their transport.
type Service = ipc_threadsafe::Service;

fn iox_err(what: &str) -> impl FnOnce(&dyn std::fmt::Debug) -> Error + '_ {
    move |e| Error::Iceoryx(format!("{what}: {e:?}"))
}

/// Per-subscriber buffer depth (frames) of a service. iceoryx2 gives every
/// subscriber its own queue and sizes the publisher's memory by
/// `max_subscribers * depth`, so the depth is capped lower than the shm ring.
fn buffer_size(topic: &TopicConfig) -> usize {
    topic
        .ring_shape()
        .map(|(cap, _)| cap as usize)
        .unwrap_or(256)
        .clamp(16, 256)
}

/// Subscribers an iceoryx2 topic admits (the shm transport admits 1000).
pub const MAX_IOX_SUBSCRIBERS: usize = 1024;

struct Services {
    node: Node<Service>,
    pubsub:
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], StartedNs>,
    event: iceoryx2::service::port_factory::event::PortFactory<Service>,
    words: usize,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("words", &self.words)
            .finish_non_exhaustive()
    }
}

fn open_services(namespace: &str, topic: &TopicConfig) -> Result<Services> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    // iceoryx2 logs a warning when no config file exists; keep errors only
    // unless IOX2_LOG_LEVEL says otherwise.
    QUIET.call_once(|| set_log_level_from_env_or(LogLevel::Error));
    let (_, words) = topic.ring_shape()?;
    let node = NodeBuilder::new()
        .create::<Service>()
        .map_err(|e| iox_err("create node")(&e))?;
    let name = format!("zerocast/{namespace}/{}", topic.name);
    let service_name: ServiceName = name
        .as_str()
        .try_into()
        .map_err(|e| iox_err("service name")(&e))?;
    let pubsub = node
        .service_builder(&service_name)
        .publish_subscribe::<[u8]>()
        .user_header::<StartedNs>()
        .enable_safe_overflow(true)
        .subscriber_max_buffer_size(buffer_size(topic))
        .history_size(0)
        .max_publishers(crate::layout::MAX_PUBLISHERS)
        .max_subscribers(MAX_IOX_SUBSCRIBERS)
        // Every Subscriber and Publisher here owns its own node (so each can
        // stand alone and be dropped alone): allow as many nodes as ports.
        .max_nodes(MAX_IOX_SUBSCRIBERS + crate::layout::MAX_PUBLISHERS + 16)
        .open_or_create()
        .map_err(|e| iox_err("open publish-subscribe service")(&e))?;
    let event_name: ServiceName = format!("{name}/event")
        .as_str()
        .try_into()
        .map_err(|e| iox_err("event service name")(&e))?;
    let event = node
        .service_builder(&event_name)
        .event()
        .max_nodes(MAX_IOX_SUBSCRIBERS + crate::layout::MAX_PUBLISHERS + 16)
        .max_listeners(MAX_IOX_SUBSCRIBERS)
        .max_notifiers(crate::layout::MAX_PUBLISHERS + 16)
        .open_or_create()
        .map_err(|e| iox_err("open event service")(&e))?;
    Ok(Services {
        node,
        pubsub,
        event,
        words,
    })
}

/// Publishes frames through iceoryx2.
pub struct IoxPublisher {
    services: Services,
    publisher: Publisher<Service, [u8], StartedNs>,
    notifier: Notifier<Service>,
    buf: FrameBuf,
    next_seq: u64,
    id: u32,
    /// When this publisher started (ns since the epoch): carried in every
    /// sample's user header so subscribers can tell whether they should
    /// have seen its sequence 0.
    started_ns: u64,
    heartbeats: HeartbeatSource,
}

impl std::fmt::Debug for IoxPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxPublisher")
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl IoxPublisher {
    /// Opens (or creates) the topic's services and a publisher port.
    pub fn new(namespace: &str, topic: &TopicConfig, options: &PublisherOptions) -> Result<Self> {
        crate::clock::prepare()?;
        let services = open_services(namespace, topic)?;
        let publisher = services
            .pubsub
            .publisher_builder()
            .initial_max_slice_len(services.words * 8)
            .create()
            .map_err(|e| iox_err("create publisher")(&e))?;
        let notifier = services
            .event
            .notifier_builder()
            .create()
            .map_err(|e| iox_err("create notifier")(&e))?;
        let name = if options.name.is_empty() {
            format!("iox-{}", std::process::id())
        } else {
            options.name.clone()
        };
        Ok(Self {
            services,
            publisher,
            notifier,
            buf: FrameBuf::default(),
            next_seq: 0,
            id: std::process::id(),
            started_ns: now_ns(),
            heartbeats: HeartbeatSource::new(&name),
        })
    }

    /// Publishes one body; returns its (per-publisher) sequence.
    pub fn publish<B: Body>(&mut self, body: &B) -> Result<u64> {
        self.publish_at(body, crate::clock::frame_ns())
    }

    /// Publishes one body with the frame time given (see
    /// `ShmPublisher::publish_at`); returns its (per-publisher) sequence.
    pub fn publish_at<B: Body>(&mut self, body: &B, publish_ns: u64) -> Result<u64> {
        let seq = self.send_one(body, publish_ns)?;
        self.notify();
        Ok(seq)
    }

    fn send_one<B: Body>(&mut self, body: &B, publish_ns: u64) -> Result<u64> {
        let words = frame::encode(body, self.id, publish_ns, &mut self.buf.0)
            .expect("FrameBuf holds any frame");
        if words > self.services.words {
            return Err(Error::FrameTooLarge {
                topic: String::new(),
                frame: words * 8,
                slot: self.services.words * 8,
            });
        }
        let seq = self.next_seq;
        let mut header = FrameHeader::read_words(&self.buf.0).expect("encoded above");
        header.seq = seq;
        self.buf.0[..HEADER_WORDS].copy_from_slice(&header.to_words());
        let bytes = frame::words_as_bytes(&self.buf.0[..words]);
        let mut sample = self
            .publisher
            .loan_slice_uninit(bytes.len())
            .map_err(|e| iox_err("loan")(&e))?;
        *sample.user_header_mut() = self.started_ns;
        sample
            .write_from_slice(bytes)
            .send()
            .map_err(|e| iox_err("send")(&e))?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Publishes bodies one after another (iceoryx2 has no batch claim);
    /// notifies once. Returns the first sequence.
    pub fn publish_batch<B: Body>(&mut self, bodies: &[B]) -> Result<u64> {
        let first = self.next_seq;
        for b in bodies {
            self.send_one(b, crate::clock::frame_ns())?;
        }
        self.notify();
        Ok(first)
    }

    /// Publishes a heartbeat.
    pub fn send_heartbeat(&mut self) -> Result<u64> {
        let hb = self.heartbeats.next();
        self.publish(&hb)
    }

    fn notify(&self) {
        if self.services.event.dynamic_config().number_of_listeners() > 0 {
            let _ = self.notifier.notify();
        }
    }
}

/// Receives frames through iceoryx2.
pub struct IoxSubscriber {
    services: Services,
    subscriber: Subscriber<Service, [u8], StartedNs>,
    listener: Option<Listener<Service>>,
    buf: FrameBuf,
    words: usize,
    /// Next expected sequence per publisher id, to detect overflow drops.
    expected: Vec<(u32, u64)>,
    /// A frame already in `buf`, held back while its gap was reported.
    stashed: Option<u64>,
    /// When this subscriber connected (ns since the epoch).
    created_ns: u64,
    /// Samples skipped as too short for the frame they declare.
    rejected: u64,
}

impl std::fmt::Debug for IoxSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxSubscriber").finish_non_exhaustive()
    }
}

impl IoxSubscriber {
    /// Opens (or creates) the topic's services and a subscriber port (and a
    /// listener if the wait strategy blocks).
    pub fn new(namespace: &str, topic: &TopicConfig, options: &SubscriberOptions) -> Result<Self> {
        let services = open_services(namespace, topic)?;
        let subscriber = services
            .pubsub
            .subscriber_builder()
            .create()
            .map_err(|e| iox_err("create subscriber")(&e))?;
        let listener = if matches!(options.wait, crate::WaitStrategy::Blocking { .. }) {
            Some(
                services
                    .event
                    .listener_builder()
                    .create()
                    .map_err(|e| iox_err("create listener")(&e))?,
            )
        } else {
            None
        };
        let words = services.words.min(MAX_FRAME_WORDS);
        Ok(Self {
            services,
            subscriber,
            listener,
            buf: FrameBuf::default(),
            words,
            expected: Vec::new(),
            stashed: None,
            created_ns: now_ns(),
            rejected: 0,
        })
    }

    /// Receives into the internal buffer; returns the sequence.
    pub fn poll(&mut self) -> Result<u64, RecvError> {
        if let Some(seq) = self.stashed.take() {
            return Ok(seq);
        }
        let (header, started_ns) = loop {
            let sample = match self.subscriber.receive() {
                Ok(Some(s)) => s,
                Ok(None) | Err(_) => return Err(RecvError::Empty),
            };
            let started_ns = *sample.user_header();
            let payload = sample.payload();
            let n = payload.len().min(self.words * 8);
            let dst = frame::words_as_bytes_mut(&mut self.buf.0[..self.words]);
            dst[..n].copy_from_slice(&payload[..n]);
            // Nothing of the previous frame may show through a shorter one.
            dst[n..].fill(0);
            drop(sample);
            // A sample must hold a header and the whole frame it declares
            // (no zerocast publisher sends less; a foreign one on the
            // service might): otherwise it is skipped and counted, never
            // read over the previous frame's bytes or as zeros.
            match FrameHeader::read(&dst[..n]) {
                Some(h) if frame::HEADER_LEN + usize::from(h.body_len) <= n => {
                    break (h, started_ns)
                }
                _ => self.rejected += 1,
            }
        };
        let (seq, publisher) = (header.seq, header.publisher_id);
        match self.expected.iter_mut().find(|(p, _)| *p == publisher) {
            None => {
                // Saturating: a foreign publisher's sequence may be the
                // last there is.
                self.expected.push((publisher, seq.saturating_add(1)));
                // A publisher that started after we connected should have
                // reached us from its sequence 0: anything before `seq` was
                // dropped by iceoryx2's overflow and must be reported.
                if started_ns >= self.created_ns && seq > 0 {
                    self.stashed = Some(seq);
                    return Err(RecvError::Lagged(seq));
                }
                Ok(seq)
            }
            Some(slot) if seq > slot.1 => {
                // iceoryx2's safe overflow dropped the frames in between:
                // report the gap now, deliver this frame on the next poll.
                let missed = seq - slot.1;
                slot.1 = seq.saturating_add(1);
                self.stashed = Some(seq);
                Err(RecvError::Lagged(missed))
            }
            Some(slot) => {
                slot.1 = seq.saturating_add(1);
                Ok(seq)
            }
        }
    }

    /// How many samples were skipped as too short for a frame header, or
    /// for the frame their header declares (no zerocast publisher sends
    /// one; a foreign publisher on the service might).
    pub fn rejected_samples(&self) -> u64 {
        self.rejected
    }

    /// The frame last received.
    pub fn last(&self, seq: u64) -> Received<'_> {
        Received {
            seq,
            bytes: frame::words_as_bytes(&self.buf.0[..self.words]),
        }
    }

    /// Waits on the event service until notified or `timeout`.
    pub fn sleep(&mut self, timeout: Duration) -> Result<u64, RecvError> {
        let r = self.poll();
        if r != Err(RecvError::Empty) {
            return r;
        }
        if let Some(l) = &self.listener {
            let _ = l.timed_wait(|_| {}, timeout);
        } else {
            std::thread::sleep(timeout.min(Duration::from_micros(50)));
        }
        let _ = &self.services.node;
        self.poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicKind;
    use zerocast_core::frame::Heartbeat;

    /// Sends `bytes` as one raw sample on `p`'s port, with user header
    /// `started_ns`: what a foreign (non-zerocast) iceoryx2 publisher on the
    /// service could send.
    fn raw(p: &IoxPublisher, bytes: &[u8], started_ns: u64) {
        let mut sample = p.publisher.loan_slice_uninit(bytes.len()).unwrap();
        *sample.user_header_mut() = started_ns;
        sample.write_from_slice(bytes).send().unwrap();
    }

    /// Review finding: a sample shorter than a frame header was read over
    /// the previous frame's bytes still in the buffer, so it was delivered
    /// as a duplicate of the previous sequence; and a foreign sequence of
    /// `u64::MAX` overflowed `seq + 1`.
    #[test]
    fn regression_short_or_foreign_samples_are_not_duplicates_nor_panics() {
        let ns = format!("ioxshort{}", std::process::id());
        let topic = TopicConfig::new("t", 128 << 10, TopicKind::Trade);
        let mut sub = IoxSubscriber::new(&ns, &topic, &SubscriberOptions::default()).unwrap();
        let mut p = IoxPublisher::new(&ns, &topic, &PublisherOptions::default()).unwrap();
        let hb = Heartbeat {
            publisher_id: [7; 16],
            sequence: 1,
            timestamp: 1,
        };
        assert_eq!(p.publish(&hb).unwrap(), 0);
        raw(&p, &[0xab; 8], p.started_ns);
        // A whole header that promises a longer body than the sample holds.
        let header = FrameHeader::new(frame::MessageKind::Heartbeat, p.id, 1).to_words();
        raw(&p, frame::words_as_bytes(&header), p.started_ns);
        assert_eq!(p.publish(&hb).unwrap(), 1);
        assert_eq!(sub.poll(), Ok(0));
        assert_eq!(sub.poll(), Ok(1), "a short sample was delivered");
        assert!(sub.last(1).body::<Heartbeat>().is_ok());
        assert_eq!(sub.poll(), Err(RecvError::Empty));
        assert_eq!(sub.rejected_samples(), 2);
        // A foreign publisher's frame with the last sequence there is.
        let mut words = FrameBuf::default();
        let n = frame::encode(&hb, 99, 1, &mut words.0).unwrap();
        words.0[0] = u64::MAX;
        raw(&p, frame::words_as_bytes(&words.0[..n]), 0);
        assert_eq!(sub.poll(), Ok(u64::MAX));
    }

    /// An iceoryx2 publisher is refused under a frame clock setting the
    /// clock does not know, as a shared-memory one is
    /// (`clock::tests::regression_an_unknown_frame_clock_setting_was_taken_for_auto`),
    /// before it opens any service.
    #[test]
    fn an_iox_publisher_is_refused_under_an_unknown_frame_clock_setting() {
        use crate::clock::FRAME_CLOCK_ENV;
        if std::env::var_os(FRAME_CLOCK_ENV).is_none_or(|v| v != "1") {
            // Alone in a child process with ZEROCAST_FRAME_CLOCK=1: the
            // setting is read once per process.
            crate::test_child::rerun_alone_with(
                "iox::tests::an_iox_publisher_is_refused_under_an_unknown_frame_clock_setting",
                FRAME_CLOCK_ENV,
            );
            return;
        }
        let ns = format!("ioxclock{}", std::process::id());
        let topic = TopicConfig::new("t", 128 << 10, TopicKind::Trade);
        let err = IoxPublisher::new(&ns, &topic, &PublisherOptions::default())
            .expect_err("an iceoryx2 publisher under an unknown frame clock");
        assert!(
            matches!(err, Error::BadSetting { var, ref value, .. } if var == FRAME_CLOCK_ENV && value == "1"),
            "{err}"
        );
        assert!(err.to_string().contains("ZEROCAST_FRAME_CLOCK=1"), "{err}");
    }
}
