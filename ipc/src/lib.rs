//! zerocast across processes.
//!
//! A [`Bus`] maps each configured topic to a shared-memory segment in
//! `/dev/shm` (`zerocast.<namespace>.<topic>`, mode 0600) holding a header
//! (magic, layout version and hash, publisher and subscriber tables, a futex
//! word) and a `zerocast-core` broadcast ring. Processes that open the same
//! topic in the same namespace share the ring: no broker; on the publish
//! side the body is written once, field by field, straight into the ring
//! slot (no intermediate buffer); one copy out of the slot on the receive
//! side (see [`subscriber`] for why).
//!
//! Publishing without a copy in between: [`Publisher::loan`] lends the
//! ring slot of the next sequence, [`LoanUninit::write`] stores the body's
//! archived words straight into it, and [`Loan::commit`] publishes it
//! (dropping the loan instead publishes a heartbeat in its place: no loss,
//! no gap). [`Publisher::publish`] does the same in one call.
//!
//! ```
//! use zerocast_ipc::{Bus, Config, SubscriberOptions, Start, TopicConfig, TopicKind};
//! use zerocast_core::frame::{TradeEvent, Direction, id::id};
//!
//! # let namespace = format!("doc{}", std::process::id());
//! let bus = Bus::new(Config {
//!     namespace,
//!     topics: vec![TopicConfig::new("trade_events", 1 << 20, TopicKind::Trade)],
//! });
//! let mut sub = bus.subscriber("trade_events", SubscriberOptions {
//!     start: Start::Oldest,
//!     ..Default::default()
//! })?;
//! let mut publisher = bus.publisher("trade_events")?;
//! let trade = TradeEvent {
//!     trade_id: id("T-1")?, order_id: id("O-1")?, instrument_id: id("BTC-USDT")?,
//!     price: 64_000.5, volume: 0.25, direction: Direction::Buy, timestamp: 0,
//! };
//! let loan = publisher.loan::<TradeEvent>()?;   // claims the next slot of the ring
//! let seq = loan.write(&trade).commit();         // archived in place, then published
//! let frame = sub.recv()?;                       // one copy out of the slot
//! assert_eq!(frame.seq, seq);
//! assert_eq!(frame.body::<TradeEvent>()?.price.to_native(), 64_000.5);
//! # bus.remove_segments();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A topic can instead use iceoryx2 ([`config::Transport::Iceoryx2`]) behind
//! the same [`Publisher`] / [`Subscriber`] API.
//!
//! ```no_run
//! use zerocast_ipc::{Bus, Config, SubscriberOptions};
//! use zerocast_core::frame::{Heartbeat, id::id};
//! let bus = Bus::new(Config::default_topics());
//! let mut publisher = bus.publisher("trade_events")?;
//! let mut subscriber = bus.subscriber("trade_events", SubscriberOptions::default())?;
//! publisher.send_heartbeat()?;
//! let frame = subscriber.recv()?;
//! println!("{} {:?}", frame.seq, frame.kind());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod acks;
pub mod clock;
pub mod config;
pub mod counters;
pub mod error;
#[cfg(feature = "iceoryx2")]
pub mod iox;
pub mod layout;
pub mod publisher;
pub mod segment;
mod shm_file;
#[cfg(feature = "tokio")]
pub mod stream;
pub mod subscriber;
#[cfg(test)]
mod test_child;
pub mod wait;

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The README's Rust examples, compiled as doc tests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use config::{Config, Producers, TopicConfig, TopicKind, Transport};
pub use error::{Error, Result};
pub use publisher::{GatingPolicy, Loan, LoanUninit, PublisherOptions, ShmPublisher};
pub use segment::Segment;
pub use subscriber::{Received, RecvError, ShmSubscriber, SubscriberOptions};
pub use wait::WaitStrategy;
pub use zerocast_core::broadcast::Start;
use zerocast_core::frame::Body;

/// The error for an iceoryx2 topic in a build without the transport.
#[cfg(not(feature = "iceoryx2"))]
fn no_iceoryx2() -> Error {
    Error::Iceoryx("this build has no iceoryx2 transport (feature `iceoryx2`)".to_owned())
}

/// Entry point: a configuration, and the topics it names.
#[derive(Debug, Clone)]
pub struct Bus {
    config: Config,
}

impl Bus {
    /// A bus over `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Opens topic `name`'s segment, creating it if it does not exist.
    pub fn segment(&self, name: &str) -> Result<Arc<Segment>> {
        let topic = self.config.topic(name)?;
        let (capacity, words) = topic.ring_shape()?;
        let path = self.config.segment_path(name);
        Ok(Arc::new(Segment::open_or_create_for(
            &path,
            name,
            capacity,
            words,
            topic.access,
            topic.producers,
        )?))
    }

    /// Opens topic `name`'s segment only if it already exists.
    pub fn open_segment(&self, name: &str) -> Result<Arc<Segment>> {
        let topic = self.config.topic(name)?;
        Ok(Arc::new(Segment::open_with(
            &self.config.segment_path(name),
            name,
            topic.access,
        )?))
    }

    /// A publisher on topic `name` with default options.
    pub fn publisher(&self, name: &str) -> Result<Publisher> {
        self.publisher_with(name, PublisherOptions::default())
    }

    /// A publisher on topic `name`.
    pub fn publisher_with(&self, name: &str, options: PublisherOptions) -> Result<Publisher> {
        let topic = self.config.topic(name)?;
        Ok(match topic.transport {
            Transport::Shm => Publisher::Shm(ShmPublisher::new(self.segment(name)?, &options)?),
            #[cfg(feature = "iceoryx2")]
            Transport::Iceoryx2 => Publisher::Iox(Box::new(iox::IoxPublisher::new(
                &self.config.namespace,
                topic,
                &options,
            )?)),
            #[cfg(not(feature = "iceoryx2"))]
            Transport::Iceoryx2 => return Err(no_iceoryx2()),
        })
    }

    /// A subscriber on topic `name`.
    pub fn subscriber(&self, name: &str, options: SubscriberOptions) -> Result<Subscriber> {
        let topic = self.config.topic(name)?;
        let inner = match topic.transport {
            Transport::Shm => SubInner::Shm(ShmSubscriber::new(self.segment(name)?, &options)?),
            #[cfg(feature = "iceoryx2")]
            Transport::Iceoryx2 => SubInner::Iox(Box::new(iox::IoxSubscriber::new(
                &self.config.namespace,
                topic,
                &options,
            )?)),
            #[cfg(not(feature = "iceoryx2"))]
            Transport::Iceoryx2 => return Err(no_iceoryx2()),
        };
        Ok(Subscriber {
            inner,
            wait: options.wait,
            held: None,
        })
    }

    /// Topic `name`'s ack channel (created if needed).
    pub fn acks(&self, name: &str) -> Result<Arc<acks::AckChannel>> {
        self.config.topic(name)?;
        Ok(Arc::new(acks::AckChannel::open_or_create(
            &self.config.ack_path(name),
        )?))
    }

    /// Removes every configured topic's segment file and ack channel, and
    /// the namespace's counters file ([`counters`]), those that exist,
    /// unconditionally: for tests and benchmarks that own their namespace.
    /// A process still mapping one goes on with a file nobody else can
    /// open (what it publishes reaches nobody), and new openers get new
    /// ones; to remove a topic's files only while no process maps them, use
    /// [`segment::remove_unused`] (as `zerocast stat --remove-stale` does).
    pub fn remove_segments(&self) -> Vec<std::path::PathBuf> {
        let mut removed = Vec::new();
        for t in &self.config.topics {
            let path = self.config.segment_path(&t.name);
            if std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
            let acks = self.config.ack_path(&t.name);
            if std::fs::remove_file(&acks).is_ok() {
                removed.push(acks);
            }
        }
        let counters = counters::counters_path(&self.config);
        if std::fs::remove_file(&counters).is_ok() {
            removed.push(counters);
        }
        removed
    }

    /// Every segment file of this namespace in `/dev/shm`: (topic, path).
    pub fn list_segments(&self) -> Vec<(String, std::path::PathBuf)> {
        let prefix = format!("{}{}.", config::SEGMENT_PREFIX, self.config.namespace);
        let mut found: Vec<_> = std::fs::read_dir(config::shm_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let topic = name.strip_prefix(&prefix)?.to_owned();
                // Not a topic: a segment still being built, or abandoned by a
                // creator that died while building it; the counters table.
                if topic.contains(segment::INIT_MARK) || topic == counters::COUNTERS_FILE {
                    return None;
                }
                Some((topic, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    /// Files of this namespace in `/dev/shm` that a creator was still
    /// building (named `<segment or ack file>.init-<pid>-<n>`) when it died:
    /// its pid (read from the name) is gone. A file whose pid is alive, or
    /// whose name does not parse, is never listed: it may be mid-build.
    pub fn abandoned_init_files(&self) -> Vec<std::path::PathBuf> {
        let ns = &self.config.namespace;
        let prefixes = [
            format!("{}{ns}.", config::SEGMENT_PREFIX),
            format!("zerocast-acks.{ns}."),
        ];
        let mut found: Vec<_> = std::fs::read_dir(config::shm_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                    return None;
                }
                let (_, tail) = name.rsplit_once(segment::INIT_MARK)?;
                let pid: u32 = tail.split('-').next()?.parse().ok()?;
                // Gone (no such process, or a zombie: either way it builds
                // nothing more). A reused pid keeps the file: the safe side,
                // it is only left behind. A segment's creator holds a lock
                // on it from the start: a creator of another pid namespace
                // (whose pid means nothing here) is seen by its lock.
                (!layout::owner_alive(layout::owner_word(pid, 0)) && !locked(&e.path()))
                    .then(|| e.path())
            })
            .collect();
        found.sort();
        found
    }
}

/// Whether some process holds a `flock` on the regular file at `path`
/// (what a creator makes, and locks). Anything else (a link, a FIFO) is
/// nobody's half-built file: not locked; a file gone meanwhile counts as
/// locked (there is nothing to remove). Opened with `O_NOFOLLOW` and
/// `O_NONBLOCK`, so that a file swapped for a link or a FIFO meanwhile is
/// never followed or waited on; a regular file that cannot be opened
/// counts as locked (left alone).
fn locked(path: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return false,
        // Gone (published or removed meanwhile): nothing to remove.
        Err(_) => return true,
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_or(true, |f| {
            shm_file::flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_err()
        })
}

/// Publishes frames to a topic, over whichever transport it is configured
/// with.
// The iceoryx2 variant is boxed, so the shm variant (the hot path) stays
// small and inline.
#[derive(Debug)]
pub enum Publisher {
    /// zerocast shared memory.
    Shm(ShmPublisher),
    /// iceoryx2 (boxed: its ports are large, and this keeps the shm variant,
    /// the hot one, small).
    #[cfg(feature = "iceoryx2")]
    Iox(Box<iox::IoxPublisher>),
}

impl Publisher {
    /// Publishes one body; returns its topic sequence.
    #[inline]
    pub fn publish<B: Body>(&mut self, body: &B) -> Result<u64> {
        match self {
            Self::Shm(p) => p.publish(body),
            #[cfg(feature = "iceoryx2")]
            Self::Iox(p) => p.publish(body),
        }
    }

    /// Publishes one body with the frame time given, reading no clock (see
    /// [`ShmPublisher::publish_at`]: the time must be `CLOCK_REALTIME`
    /// nanoseconds since the Unix epoch, and is not checked); returns its
    /// topic sequence.
    #[inline]
    pub fn publish_at<B: Body>(&mut self, body: &B, publish_ns: u64) -> Result<u64> {
        match self {
            Self::Shm(p) => p.publish_at(body, publish_ns),
            #[cfg(feature = "iceoryx2")]
            Self::Iox(p) => p.publish_at(body, publish_ns),
        }
    }

    /// Lends the next slot of a shared-memory topic for one `B` frame,
    /// written in place and committed (see [`ShmPublisher::loan`]). An
    /// iceoryx2 topic has no ring slot to lend: use
    /// [`publish`](Self::publish) there.
    pub fn loan<B: Body>(&mut self) -> Result<LoanUninit<'_, B>> {
        match self {
            Self::Shm(p) => p.loan(),
            #[cfg(feature = "iceoryx2")]
            Self::Iox(_) => Err(Error::Iceoryx(
                "loan is for shared-memory topics; publish to an iceoryx2 topic with publish()"
                    .to_owned(),
            )),
        }
    }

    /// [`loan`](Self::loan) with the frame time given, reading no clock
    /// (see [`ShmPublisher::loan_at`]).
    pub fn loan_at<B: Body>(&mut self, publish_ns: u64) -> Result<LoanUninit<'_, B>> {
        match self {
            Self::Shm(p) => p.loan_at(publish_ns),
            #[cfg(feature = "iceoryx2")]
            Self::Iox(_) => Err(Error::Iceoryx(
                "loan_at is for shared-memory topics; publish to an iceoryx2 topic with publish_at()"
                    .to_owned(),
            )),
        }
    }

    /// Publishes bodies with consecutive sequences; returns the first. An
    /// empty `bodies` publishes nothing and returns the sequence a next
    /// frame would get (on a shared-memory topic, unless another publisher
    /// claims first; see [`ShmPublisher::publish_batch`]).
    pub fn publish_batch<B: Body>(&mut self, bodies: &[B]) -> Result<u64> {
        match self {
            Self::Shm(p) => p.publish_batch(bodies),
            #[cfg(feature = "iceoryx2")]
            Self::Iox(p) => p.publish_batch(bodies),
        }
    }

    /// Publishes a heartbeat.
    pub fn send_heartbeat(&mut self) -> Result<u64> {
        match self {
            Self::Shm(p) => p.send_heartbeat(),
            #[cfg(feature = "iceoryx2")]
            Self::Iox(p) => p.send_heartbeat(),
        }
    }
}

/// Spawns a thread that publishes a heartbeat on `topic` every `interval`
/// through its own publisher entry, until the returned guard is dropped.
pub fn spawn_heartbeat(
    bus: &Bus,
    topic: &str,
    name: &str,
    interval: Duration,
) -> Result<HeartbeatThread> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let (bus, topic_name, name) = (bus.clone(), topic.to_owned(), name.to_owned());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // The publisher is made on the thread, so an error can be reported
    // before this function returns.
    let handle = std::thread::Builder::new()
        .name(format!("zerocast-heartbeat-{topic}"))
        .spawn(move || {
            let options = PublisherOptions {
                name,
                gating: GatingPolicy::Fail,
            };
            let mut publisher = match bus.publisher_with(&topic_name, options) {
                Ok(p) => {
                    let _ = ready_tx.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Relaxed: a stop flag; the join in Drop synchronises.
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = publisher.send_heartbeat();
                std::thread::park_timeout(interval);
            }
        })
        .expect("spawn heartbeat thread");
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(HeartbeatThread {
            stop,
            handle: Some(handle),
        }),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(Error::Iceoryx("heartbeat thread exited".to_owned())),
    }
}

/// Stops its heartbeat thread when dropped.
#[derive(Debug)]
pub struct HeartbeatThread {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeartbeatThread {
    fn drop(&mut self) {
        // Relaxed: the join below synchronises with the thread's exit.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

// As for `Publisher`: the shm variant's buffer stays inline on purpose.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum SubInner {
    Shm(ShmSubscriber),
    #[cfg(feature = "iceoryx2")]
    Iox(Box<iox::IoxSubscriber>),
}

/// Receives frames from a topic, over whichever transport it is configured
/// with.
#[derive(Debug)]
pub struct Subscriber {
    inner: SubInner,
    wait: WaitStrategy,
    /// A lag or loss the transport already reported that
    /// [`recv_batch`](Subscriber::recv_batch) could not return because
    /// frames came first: the next receive returns it. Held here rather than
    /// re-read from the ring, so it is counted once (the shm subscriber
    /// adds each lag to its totals when it sees it) and works the same on
    /// both transports.
    held: Option<RecvError>,
}

/// How long one futex sleep lasts at most; the subscriber then re-checks
/// (for stalled publishers) and sleeps again.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

impl Subscriber {
    #[inline]
    fn poll(&mut self) -> Result<u64, RecvError> {
        if let Some(e) = self.held.take() {
            return Err(e);
        }
        match &mut self.inner {
            SubInner::Shm(s) => s.poll(),
            #[cfg(feature = "iceoryx2")]
            SubInner::Iox(s) => s.poll(),
        }
    }

    fn last(&self, seq: u64) -> Received<'_> {
        match &self.inner {
            SubInner::Shm(s) => s.last(seq),
            #[cfg(feature = "iceoryx2")]
            SubInner::Iox(s) => s.last(seq),
        }
    }

    fn sleep(&mut self, timeout: Duration) -> Result<u64, RecvError> {
        match &mut self.inner {
            SubInner::Shm(s) => s.sleep(timeout),
            #[cfg(feature = "iceoryx2")]
            SubInner::Iox(s) => s.sleep(timeout),
        }
    }

    /// The shared-memory segment this subscriber reads: the one it joined
    /// when it was made, whatever the topic's name maps to since (a topic
    /// removed and created again is another segment). `None` on an
    /// iceoryx2 topic.
    pub fn segment(&self) -> Option<&Arc<Segment>> {
        match &self.inner {
            SubInner::Shm(s) => Some(s.segment()),
            #[cfg(feature = "iceoryx2")]
            SubInner::Iox(_) => None,
        }
    }

    /// The next frame if there is one. Never blocks.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Received<'_>, RecvError> {
        let seq = self.poll()?;
        Ok(self.last(seq))
    }

    /// Waits (by the wait strategy) for the next frame, a lag or a loss.
    pub fn recv(&mut self) -> Result<Received<'_>, RecvError> {
        let seq = self.wait_until(None)?;
        Ok(self.last(seq))
    }

    /// Like [`recv`](Self::recv), giving up with [`RecvError::Empty`] after
    /// `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Received<'_>, RecvError> {
        // The clock is read only once the topic is found empty: a
        // subscriber that keeps up calls this once per frame, and a clock
        // read per frame (tens of ns) would cost more than the receive.
        let seq = match self.poll() {
            Err(RecvError::Empty) => {
                // A timeout past what an Instant can hold is no timeout.
                self.wait_until(Instant::now().checked_add(timeout))?
            }
            other => other?,
        };
        Ok(self.last(seq))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<u64, RecvError> {
        let mut polls: u32 = 0;
        loop {
            match self.poll() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            polls = polls.saturating_add(1);
            if polls % 1024 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RecvError::Empty);
            }
            match self.wait {
                WaitStrategy::BusySpin => std::hint::spin_loop(),
                WaitStrategy::SpinThenYield { spins } => {
                    if polls < spins {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                WaitStrategy::Blocking { spins } => {
                    if polls < spins {
                        std::hint::spin_loop();
                        continue;
                    }
                    let slice = match deadline {
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return Err(RecvError::Empty);
                            }
                            (d - now).min(SLEEP_SLICE)
                        }
                        None => SLEEP_SLICE,
                    };
                    match self.sleep(slice) {
                        Err(RecvError::Empty) => {}
                        other => return other,
                    }
                }
            }
        }
    }

    /// Receives up to `max` frames that are already there, calling `f` for
    /// each; returns how many. A lag or loss ends the batch: it is returned
    /// if it comes first, and otherwise by the next receive (this one's
    /// frames come first), so no event is ever skipped.
    pub fn recv_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(Received<'_>),
    ) -> Result<usize, RecvError> {
        let mut n = 0;
        while n < max {
            match self.poll() {
                Ok(seq) => {
                    f(self.last(seq));
                    n += 1;
                }
                Err(RecvError::Empty) => break,
                Err(e) if n == 0 => return Err(e),
                Err(e) => {
                    // Frames first, the event on the next receive.
                    self.held = Some(e);
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Runs `f` for every frame, lag and loss, waiting by the wait strategy,
    /// until `f` returns [`std::ops::ControlFlow::Break`].
    pub fn run(
        &mut self,
        mut f: impl FnMut(Result<Received<'_>, RecvError>) -> std::ops::ControlFlow<()>,
    ) {
        loop {
            let step = match self.wait_until(None) {
                Ok(seq) => f(Ok(self.last(seq))),
                Err(e) => f(Err(e)),
            };
            if step.is_break() {
                return;
            }
        }
    }

    /// Releases what was read to publishers, for a gating subscriber with
    /// `manual_release` (a no-op otherwise and on iceoryx2 topics).
    pub fn release(&mut self) {
        match &mut self.inner {
            SubInner::Shm(s) => s.release(),
            #[cfg(feature = "iceoryx2")]
            SubInner::Iox(_) => {}
        }
    }

    /// Next sequence this subscriber will read (shared-memory topics). With
    /// a lag or loss held for the next receive, the first sequence that
    /// event covers.
    pub fn next_seq(&self) -> Option<u64> {
        match &self.inner {
            SubInner::Shm(s) => Some(match self.held {
                Some(RecvError::Lost(seq)) => seq,
                Some(RecvError::Lagged(n)) => s.next_seq() - n,
                _ => s.next_seq(),
            }),
            #[cfg(feature = "iceoryx2")]
            SubInner::Iox(_) => None,
        }
    }
}
