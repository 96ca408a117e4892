//! `zerocast bridge import`: frames from zenoh republished into a local
//! topic, with the origin's sequences.
//!
//! The importer is the local topic's only publisher, and the local ring's
//! sequence equals the origin's: origin frame `s` is local frame `s`, with
//! the origin's publish timestamp, publisher id and retransmission mark in
//! its header (the archived frame is copied whole; the ring writes the
//! sequence, which is the same). A sequence the origin lost, or that
//! neither the exporter's ring nor its WAL holds, is claimed and marked
//! lost locally ([`ShmPublisher::publish_lost`]), so local subscribers get
//! [`RecvError::Lost`](zerocast_ipc::RecvError::Lost) for each, never a
//! silent hole. At start the importer goes on from the local ring's head,
//! asking the exporter for everything from there; a hole in the live
//! stream (a cut, an exporter restart, a lagging exporter) is asked for
//! the same way.
//!
//! Every message names the origin topic's segment its sequences count in
//! ([`Origin`]). The importer records the one it follows in
//! [`origin_record_path`] (beside the far-side segment in `/dev/shm`,
//! bound to that segment's identity, so that a restarted importer still
//! knows it, and a recreated far side starts afresh), and stops with an
//! error on a message of another: the origin topic was recreated and its
//! sequences restarted at 0, which the far side cannot take without
//! skipping or mis-ordering them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use zenoh::query::ConsolidationMode;
use zenoh::{Session, Wait};
use zerocast_core::frame::{words_as_bytes_mut, FrameBuf, FrameRef, MAX_FRAME_LEN};
use zerocast_ipc::layout::{owner_alive, owner_pid};
use zerocast_ipc::{
    Bus, Error as IpcError, GatingPolicy, Publisher, PublisherOptions, ShmPublisher,
};

use super::wire::{decode, version_mismatch, Entry, Origin, VERSION};

/// Settings of an importer.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The local topic.
    pub topic: String,
    /// The zenoh key (`zerocast/<origin namespace>/<topic>`).
    pub key: String,
    /// How long one query for a missing range waits for the exporter.
    pub query_timeout: Duration,
    /// Unanswered queries at start before the importer goes live anyway
    /// (and, for a known hole, before it warns that it keeps asking).
    pub query_attempts: u32,
}

impl ImportOptions {
    /// Defaults for `topic` under `key`.
    pub fn new(topic: &str, key: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            key: key.to_owned(),
            query_timeout: Duration::from_secs(2),
            query_attempts: 3,
        }
    }
}

/// Counts of an importer run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Frames republished (live and queried).
    pub frames: u64,
    /// Frames republished from query replies.
    pub queried: u64,
    /// Sequences published as lost.
    pub lost: u64,
    /// Frames received again (already published) and skipped.
    pub duplicates: u64,
    /// Queries sent.
    pub queries: u64,
    /// Messages that failed to decode (skipped; their sequences are asked
    /// for again).
    pub bad_messages: u64,
    /// Most live messages queued at once while a query waited.
    pub pending_peak: u64,
    /// Queued live messages dropped (the oldest, past [`MAX_PENDING`] or
    /// [`MAX_PENDING_BYTES`]); what they held is asked for again.
    pub pending_dropped: u64,
}

/// Most live messages queued while a query waits; past it (or past
/// [`MAX_PENDING_BYTES`]) the oldest are dropped, and the hole they leave
/// is asked for like any other.
pub const MAX_PENDING: usize = 4096;

/// Most bytes of live messages queued while a query waits.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// The error a run ends with when `stop()` interrupts it mid-way (the
/// caller turns it into a clean return).
const STOPPED: &str = "stopped";

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Live,
    Query,
}

/// The live subscription's receiving end.
type Live = zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>;

pub use crate::bridge_records::{origin_record_path, origin_records};

/// The origin recorded for the far-side segment `far`, if any.
fn read_record(path: &std::path::Path, far: Origin) -> Result<Option<Origin>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = || {
        format!(
            "{}: expected one line `far=IDENTITY origin=IDENTITY`, found {text:?} (remove it \
             if the far-side topic holds nothing of an earlier origin)",
            path.display()
        )
    };
    let mut fields = text.split_whitespace();
    let (Some(f), Some(o), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(bad());
    };
    let (Some(f), Some(o)) = (f.strip_prefix("far="), o.strip_prefix("origin=")) else {
        return Err(bad());
    };
    let (f, o): (Origin, Origin) = (f.parse()?, o.parse()?);
    // A record of an earlier far-side segment: that topic was recreated.
    Ok((f == far).then_some(o))
}

/// Writes the record atomically ([`crate::wal::write_file_atomically`],
/// mode 0600; its temporary file has a fixed name, so a killed importer
/// leaves at most one, overwritten by the next).
fn write_record(path: &std::path::Path, far: Origin, origin: Origin) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    crate::wal::write_file_atomically(
        std::path::Path::new(&tmp),
        path,
        format!("far={far} origin={origin}\n").as_bytes(),
        0o600,
    )
    .map_err(|e| e.to_string())
}

struct Importer<'a, S: Fn() -> bool> {
    publisher: ShmPublisher,
    /// The origin segment the far side's sequences count in (`None`:
    /// none recorded yet; the first message's is recorded).
    origin: Option<Origin>,
    /// The far-side segment's identity (the record is bound to it).
    far: Origin,
    /// Where the origin is recorded ([`origin_record_path`]).
    record: PathBuf,
    session: &'a Session,
    live: &'a Live,
    /// Live messages taken off the subscription while a query waited (so
    /// that zenoh never blocks delivering them, which would hold up the
    /// query's reply too), applied before newer ones.
    pending: VecDeque<Vec<u8>>,
    /// Bytes in `pending`.
    pending_bytes: usize,
    /// The error the exporter answered the last query with, if it did
    /// (a query it could not serve: its log bound to a reset bus, an I/O
    /// error): logged when it first comes and named while the importer
    /// keeps asking, instead of "no answer".
    exporter_error: Option<String>,
    options: &'a ImportOptions,
    /// The next origin sequence to publish: the local ring's head.
    next: u64,
    stats: ImportStats,
    buf: Box<FrameBuf>,
    stop: &'a S,
}

/// Whether a query's error reply is zenoh's own for a query that timed out
/// (its payload is `Timeout`), rather than an exporter's.
fn is_zenoh_timeout(error: &str) -> bool {
    error == "Timeout"
}

/// Runs the importer until `stop()`.
pub fn import(
    bus: &Bus,
    session: &Session,
    options: &ImportOptions,
    stop: impl Fn() -> bool,
) -> Result<ImportStats, String> {
    let publisher = bus
        .publisher_with(
            &options.topic,
            PublisherOptions {
                name: "bridge-import".to_owned(),
                gating: GatingPolicy::Wait(Duration::from_millis(100)),
            },
        )
        .map_err(|e| format!("topic {}: {e}", options.topic))?;
    // Without the iceoryx2 feature the pattern is irrefutable.
    #[allow(irrefutable_let_patterns)]
    let Publisher::Shm(publisher) = publisher
    else {
        return Err(format!(
            "topic {}: bridge import republishes with the origin's sequences, which needs a \
             shared-memory topic (this one is configured with transport = \"iceoryx2\")",
            options.topic
        ));
    };
    refuse_other_publishers(&publisher, &options.topic)?;
    let subscriber = session
        .declare_subscriber(options.key.clone())
        .wait()
        .map_err(|e| format!("zenoh: declaring the subscriber on {}: {e}", options.key))?;
    let next = publisher.segment().ring().head();
    let far = Origin::of(publisher.segment());
    let record = origin_record_path(bus.config(), &options.topic);
    let origin = read_record(&record, far)?;
    tracing::info!(
        topic = options.topic,
        key = options.key,
        next,
        origin = origin.map(|o| o.to_string()),
        "bridge import started"
    );
    let mut imp = Importer {
        publisher,
        origin,
        far,
        record,
        session,
        live: &subscriber,
        pending: VecDeque::new(),
        pending_bytes: 0,
        exporter_error: None,
        options,
        next,
        stats: ImportStats::default(),
        buf: Box::default(),
        stop: &stop,
    };
    match imp.run(&subscriber) {
        Err(e) if e == STOPPED => Ok(imp.stats),
        r => r.map(|()| imp.stats),
    }
}

/// Fails if a live process other than this importer has a publisher on
/// the topic: its frames would take origin sequences (a second importer,
/// an overlapping restart, a local publisher). A snapshot at start; later
/// ones are caught by [`Importer::check_head`] at the next publish.
fn refuse_other_publishers(publisher: &ShmPublisher, topic: &str) -> Result<(), String> {
    let own = publisher.id() as usize;
    for (i, p) in publisher.segment().header().publishers.iter().enumerate() {
        // Acquire: pairs with the Release owner store of a registration.
        let word = p.pid.load(Ordering::Acquire);
        if i != own && owner_alive(word) {
            return Err(format!(
                "topic {topic}: another publisher is registered (slot {i}, pid {}): the \
                 importer must be the topic's only publisher, so that local sequences are the \
                 origin's (stop it, or import into another topic)",
                owner_pid(word)
            ));
        }
    }
    Ok(())
}

impl<S: Fn() -> bool> Importer<'_, S> {
    /// Catches up, then applies live messages until `stop()`.
    fn run(&mut self, subscriber: &Live) -> Result<(), String> {
        // Whatever the origin published since this side's head.
        self.catch_up(None)?;
        while !(self.stop)() {
            if let Some(payload) = self.pending.pop_front() {
                self.pending_bytes -= payload.len();
                self.apply_message(&payload, Via::Live)?;
                continue;
            }
            match subscriber.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(sample)) => {
                    let payload = sample.payload().to_bytes();
                    self.apply_message(&payload, Via::Live)?;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(format!(
                        "zenoh: the subscriber on {} closed: {e}",
                        self.options.key
                    ))
                }
            }
        }
        Ok(())
    }

    /// Applies every entry of a message; a message that does not decode
    /// is skipped whole (its sequences show up as a hole and are asked for).
    fn apply_message(&mut self, bytes: &[u8], via: Via) -> Result<(), String> {
        // Another release at the other end: no retry mends that.
        if let Some(e) = version_mismatch(bytes) {
            return Err(format!(
                "topic {} (key {}): {e}",
                self.options.topic, self.options.key
            ));
        }
        // Checked whole first, then applied: no copy of the entries.
        let origin = match decode(bytes, |_| {}) {
            Ok(origin) => origin,
            Err(e) => {
                self.stats.bad_messages += 1;
                tracing::warn!(key = self.options.key, "skipped a message: {e}");
                return Ok(());
            }
        };
        self.check_origin(origin)?;
        let mut result = Ok(());
        decode(bytes, |entry| {
            if result.is_ok() {
                result = self.apply(entry, via);
            }
        })?;
        result
    }

    /// Checks that `origin` is the origin segment the far side follows
    /// (recording it if none is yet): a recreated origin topic restarts
    /// its sequences at 0, and the far side's sequences are the old
    /// origin's, so the importer stops, saying what to do.
    fn check_origin(&mut self, origin: Origin) -> Result<(), String> {
        match self.origin {
            Some(o) if o == origin => Ok(()),
            Some(o) => {
                let far = self.publisher.segment().path().display().to_string();
                Err(format!(
                    "topic {topic}: the origin topic was recreated: this far side holds origin \
                     sequences 0..{next} of the origin segment created at {} ns (identity {o}), \
                     but the exporter now sends those of the origin segment created at {} ns \
                     (identity {origin}), whose sequences restarted at 0; importing them would \
                     skip or mis-order them. To follow the new origin, stop this importer and \
                     recreate the far-side topic (stop its publishers and subscribers, remove \
                     {far}, or run `zerocast stat --remove-stale` once nothing uses it), then \
                     start the importer again: far-side subscribers see the topic reset, as \
                     after any bus reset",
                    o.creation_ns,
                    origin.creation_ns,
                    topic = self.options.topic,
                    next = self.next,
                ))
            }
            None => {
                write_record(&self.record, self.far, origin)?;
                tracing::info!(
                    topic = self.options.topic,
                    %origin,
                    next = self.next,
                    "bridge import follows this origin segment"
                );
                self.origin = Some(origin);
                Ok(())
            }
        }
    }

    fn apply(&mut self, entry: Entry<'_>, via: Via) -> Result<(), String> {
        match entry {
            Entry::Frame { seq, bytes } => {
                if seq < self.next {
                    self.stats.duplicates += 1;
                    return Ok(());
                }
                self.fill_to(seq, via)?;
                self.publish_frame(seq, bytes, via)
            }
            Entry::Lost { from, to } => {
                if to < self.next {
                    return Ok(());
                }
                self.fill_to(from.max(self.next), via)?;
                self.lose(to, "lost at the origin or held by no source")
            }
            Entry::Head(n) => {
                if via == Via::Live && n > self.next {
                    self.fill_to(n, via)?;
                }
                Ok(())
            }
        }
    }

    /// Makes `next` reach `seq`: asks the exporter for what lies between
    /// (a live hole), and reports as lost what it answers it does not
    /// hold. While nobody answers, it keeps asking (an exporter restarting
    /// will): silence is not a loss.
    fn fill_to(&mut self, seq: u64, via: Via) -> Result<(), String> {
        if seq <= self.next {
            return Ok(());
        }
        if via == Via::Live {
            self.catch_up(Some(seq - 1))?;
        }
        if seq > self.next {
            let why = match via {
                Via::Live => "the exporter answered that it holds none of them",
                Via::Query => "a query reply skipped them",
            };
            self.lose(seq - 1, why)?;
        }
        Ok(())
    }

    /// Queries the exporter from `next` (to `to`, or as far as it has),
    /// applying the replies, until `next` passes `to`. Without `to` (at
    /// start), it also stops at a reply that brings nothing new, or after
    /// `query_attempts` unanswered queries; with `to` (a known hole), a
    /// reply that covers none of it counts as unanswered (it was cut
    /// short: the exporter has sent past the hole), and it asks until
    /// answered, or fails with [`STOPPED`].
    fn catch_up(&mut self, to: Option<u64>) -> Result<(), String> {
        let mut silent = 0;
        while to.is_none_or(|t| self.next <= t) {
            if (self.stop)() {
                return Err(STOPPED.to_owned());
            }
            let before = self.next;
            let selector = match to {
                Some(t) => format!("{}?v={VERSION};from={};to={t}", self.options.key, self.next),
                None => format!("{}?v={VERSION};from={}", self.options.key, self.next),
            };
            self.stats.queries += 1;
            let answered = match self.query(&selector)? {
                Some(reply) => {
                    self.apply_message(&reply, Via::Query)?;
                    if self.next == before && to.is_none() {
                        break; // the exporter has nothing more
                    }
                    // A known hole lies below what the exporter has sent,
                    // so a reply that covers none of it was cut short (the
                    // exporter stopping, or past its deadline): that is no
                    // answer, never a loss.
                    self.next != before
                }
                None => false,
            };
            if answered {
                silent = 0;
                continue;
            }
            silent += 1;
            match to {
                None if silent >= self.options.query_attempts => break,
                Some(t) if silent == self.options.query_attempts => match &self.exporter_error {
                    Some(e) => tracing::warn!(
                        topic = self.options.topic,
                        from = self.next,
                        to = t,
                        "the exporter cannot serve these sequences ({e}); asking until it can"
                    ),
                    None => tracing::warn!(
                        topic = self.options.topic,
                        from = self.next,
                        to = t,
                        "no answer from the exporter for these sequences; asking until one comes"
                    ),
                },
                _ => {}
            }
            if silent >= self.options.query_attempts {
                // Nobody there: ask again in a while, not in a spin.
                std::thread::sleep(self.options.query_timeout.min(Duration::from_millis(500)));
            }
        }
        Ok(())
    }

    /// One query; the first reply's payload, or `None` if none came.
    /// Meanwhile live messages are moved to `pending`.
    fn query(&mut self, selector: &str) -> Result<Option<Vec<u8>>, String> {
        let replies = self
            .session
            .get(selector)
            .consolidation(ConsolidationMode::None)
            .timeout(self.options.query_timeout)
            .wait()
            .map_err(|e| format!("zenoh: query {selector}: {e}"))?;
        let mut got = None;
        let mut error = None;
        loop {
            let reply = match replies.try_recv() {
                Ok(Some(reply)) => reply,
                // Finished: every reply came, or the timeout passed.
                Err(_) => break,
                Ok(None) => {
                    // A query waits up to `--query-timeout-ms` (600 s at
                    // most): stay stoppable meanwhile.
                    if (self.stop)() {
                        return Err(STOPPED.to_owned());
                    }
                    match self.live.try_recv() {
                        Ok(Some(sample)) => {
                            let payload = sample.payload().to_bytes().into_owned();
                            self.queue(payload);
                        }
                        Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                        Err(e) => {
                            return Err(format!(
                                "zenoh: the subscriber on {} closed: {e}",
                                self.options.key
                            ))
                        }
                    }
                    continue;
                }
            };
            match reply.result() {
                Ok(sample) if got.is_none() => got = Some(sample.payload().to_bytes().into_owned()),
                Ok(_) => {}
                // A timeout (zenoh's own error reply), or the exporter's
                // error: the reason it cannot serve the range, which can
                // last (a log bound to a reset bus), so it is named, not
                // taken for silence.
                Err(e) => {
                    let text = String::from_utf8_lossy(&e.payload().to_bytes()).into_owned();
                    tracing::debug!(selector, "query not answered: {text}");
                    if error.is_none() && !is_zenoh_timeout(&text) {
                        error = Some(text);
                    }
                }
            }
        }
        if got.is_none() {
            // This query's exporter error, or none (silence): a warning
            // names what the exporter said last, never an older answer.
            if let Some(e) = &error {
                if self.exporter_error.as_ref() != Some(e) {
                    tracing::warn!(
                        topic = self.options.topic,
                        selector,
                        "the exporter answered a query with an error: {e}"
                    );
                }
            }
            self.exporter_error = error;
        } else {
            self.exporter_error = None;
        }
        Ok(got)
    }

    /// Queues a live message taken off the subscription while a query
    /// waits, dropping the oldest past the bounds: the first message kept
    /// after them shows their sequences as a hole, asked for again.
    fn queue(&mut self, payload: Vec<u8>) {
        while self.pending.len() >= MAX_PENDING
            || (!self.pending.is_empty() && self.pending_bytes + payload.len() > MAX_PENDING_BYTES)
        {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= old.len();
            if self.stats.pending_dropped == 0 {
                tracing::warn!(
                    topic = self.options.topic,
                    "live messages queued while a query waits passed the bound; the oldest \
                     are dropped and asked for again"
                );
            }
            self.stats.pending_dropped += 1;
        }
        self.pending_bytes += payload.len();
        self.pending.push_back(payload);
        self.stats.pending_peak = self.stats.pending_peak.max(self.pending.len() as u64);
    }

    /// Checks that nobody else published to the local topic.
    fn check_head(&self) -> Result<(), String> {
        let head = self.publisher.segment().ring().head();
        if head != self.next {
            return Err(format!(
                "topic {}: the local head is {head} but the bridge is at origin sequence {}: \
                 something else published to it (the importer must be the topic's only \
                 publisher, so that local sequences are the origin's)",
                self.options.topic, self.next
            ));
        }
        Ok(())
    }

    fn publish_frame(&mut self, seq: u64, bytes: &[u8], via: Via) -> Result<(), String> {
        debug_assert_eq!(seq, self.next);
        let valid = bytes.len() <= MAX_FRAME_LEN && {
            self.buf.0.fill(0);
            words_as_bytes_mut(&mut self.buf.0)[..bytes.len()].copy_from_slice(bytes);
            match FrameRef::parse(&self.buf.bytes()[..bytes.len()]) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(topic = self.options.topic, seq, "invalid frame: {e}");
                    false
                }
            }
        };
        if !valid {
            return self.lose(seq, "the frame received is not valid");
        }
        self.check_head()?;
        let words = bytes.len().div_ceil(8);
        let buf = &self.buf;
        let topic = &self.options.topic;
        let local = retry(&mut self.publisher, self.stop, topic, |p| {
            p.publish_words(&buf.0[..words])
        })
        .map_err(|e| match e {
            Retry::Other(IpcError::FrameTooLarge { frame, slot, .. }) => format!(
                "topic {topic}: origin sequence {seq} is a frame of {frame} bytes, more than the \
                 far-side topic's {slot}-byte slots: configure the far-side topic with the \
                 origin's kind (and slot size)"
            ),
            e => e.message(topic),
        })?;
        if local != seq {
            // Another publisher claimed a sequence between the check and
            // this publish.
            return Err(format!(
                "topic {}: origin sequence {seq} was published as local sequence {local}: \
                 something else published to it (the importer must be the topic's only \
                 publisher)",
                self.options.topic
            ));
        }
        self.next = seq + 1;
        self.stats.frames += 1;
        if via == Via::Query {
            self.stats.queried += 1;
        }
        Ok(())
    }

    /// Publishes `next ..= to` as lost.
    fn lose(&mut self, to: u64, why: &str) -> Result<(), String> {
        if to < self.next {
            return Ok(());
        }
        tracing::warn!(
            topic = self.options.topic,
            from = self.next,
            to,
            "sequences lost: {why}"
        );
        let capacity = self.publisher.segment().ring().capacity();
        while self.next <= to {
            // A long range (a far side that starts empty, or a bogus one
            // from the network) takes a while: stay stoppable.
            if (self.stop)() {
                return Err(STOPPED.to_owned());
            }
            self.check_head()?;
            // `to` may be the last sequence (bytes from the network):
            // the count must not overflow.
            let n = (to - self.next).saturating_add(1).min(capacity);
            let first = retry(&mut self.publisher, self.stop, &self.options.topic, |p| {
                p.publish_lost(n)
            })
            .map_err(|e| e.message(&self.options.topic))?;
            if first != self.next {
                // As for a frame (`publish_frame`): another publisher
                // claimed in between, and the markers landed off by that.
                return Err(format!(
                    "topic {}: origin sequences {} to {} were marked lost from local sequence \
                     {first}: something else published to it (the importer must be the topic's \
                     only publisher)",
                    self.options.topic,
                    self.next,
                    self.next.saturating_add(n - 1),
                ));
            }
            self.stats.lost += n;
            match self.next.checked_add(n) {
                Some(next) => self.next = next,
                // Up to the last sequence there is: nothing comes after.
                None => {
                    self.next = u64::MAX;
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Why [`retry`] gave up.
enum Retry {
    /// `stop()` while gating subscribers were behind.
    Stopped,
    /// The publish failed.
    Other(IpcError),
}

impl Retry {
    fn message(self, topic: &str) -> String {
        match self {
            // A clean stop, as a stop anywhere else: what was not
            // published yet is asked for again after a restart (it goes
            // on from the local head), so nothing is lost.
            Self::Stopped => {
                tracing::info!(topic, "stopped while gating subscribers were behind");
                STOPPED.to_owned()
            }
            // Names the topic itself.
            Self::Other(e @ IpcError::FrameTooLarge { .. }) => e.to_string(),
            Self::Other(e) => format!("topic {topic}: {e}"),
        }
    }
}

/// Runs a publish, waiting while gating subscribers are behind.
fn retry<T>(
    publisher: &mut ShmPublisher,
    stop: &impl Fn() -> bool,
    topic: &str,
    mut op: impl FnMut(&mut ShmPublisher) -> zerocast_ipc::Result<T>,
) -> Result<T, Retry> {
    let mut warned = false;
    loop {
        match op(publisher) {
            Ok(v) => return Ok(v),
            Err(IpcError::RingFull { .. } | IpcError::StuckBehind { .. }) => {
                if stop() {
                    return Err(Retry::Stopped);
                }
                if !warned {
                    tracing::warn!(topic, "waiting for gating subscribers that are behind");
                    warned = true;
                }
            }
            Err(e) => return Err(Retry::Other(e)),
        }
    }
}
