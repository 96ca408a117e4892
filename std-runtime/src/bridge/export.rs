//! `zerocast bridge export`: a local topic's frames published to zenoh,
//! and a queryable that serves ranges the importer missed.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zenoh::qos::CongestionControl;
use zenoh::query::Query;
use zenoh::{Session, Wait};
use zerocast_ipc::{Bus, RecvError, Start, SubscriberOptions, WaitStrategy};

use super::wire::{Message, Origin, VERSION};
use crate::recorder::frame_len;
use crate::resume::{Event, Resumable};

/// How often a gating exporter checks that an importer is subscribed.
const CHECK_MATCHING: Duration = Duration::from_millis(50);

/// Settings of an exporter.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The local topic.
    pub topic: String,
    /// The zenoh key (`zerocast/<namespace>/<topic>`).
    pub key: String,
    /// Read the topic as a durable gating subscriber of this name: the
    /// origin's publishers never overwrite what the exporter has not sent,
    /// and a restarted exporter goes on from where it stopped. `None`: a
    /// plain subscriber that starts at the newest frame; what it misses is
    /// served to the importer by query.
    pub gating: Option<String>,
    /// The recorder's WAL root (`DIR/<topic>/`): queries for ranges older
    /// than the ring are served from it.
    pub wal: Option<PathBuf>,
    /// Most frames in one zenoh message.
    pub max_batch: usize,
    /// Most frames in one query reply.
    pub max_reply: u64,
    /// An idle exporter sends its position this often, so that the
    /// importer learns of frames it missed without waiting for new ones.
    pub head_every: Duration,
}

impl ExportOptions {
    /// Defaults for `topic` under `key`.
    pub fn new(topic: &str, key: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            key: key.to_owned(),
            gating: None,
            wal: None,
            max_batch: 64,
            max_reply: 4096,
            head_every: Duration::from_millis(500),
        }
    }
}

/// Counts of an exporter run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Frames sent live.
    pub frames: u64,
    /// Lost sequences sent live.
    pub lost: u64,
    /// zenoh messages sent live (frames / messages is the batching).
    pub messages: u64,
    /// Queries answered.
    pub queries: u64,
}

/// Runs the exporter until `stop()`: reads `options.topic` and publishes
/// its frames, several per message when more are ready (never waiting to
/// fill a batch), and answers range queries from the ring or the WAL on a
/// second thread.
pub fn export(
    bus: &Bus,
    session: &Session,
    options: &ExportOptions,
    stop: impl Fn() -> bool + Sync,
) -> Result<ExportStats, String> {
    let zerr = |what: &str, e: zenoh::Error| format!("zenoh: {what} on {}: {e}", options.key);
    // Refused before anything is declared or created (the queries would
    // read an empty shared-memory segment made for an iceoryx2 topic).
    crate::resume::refuse_iceoryx2(bus, &options.topic, "bridge export")?;
    let publisher = session
        .declare_publisher(options.key.clone())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| zerr("declaring the publisher", e))?;
    let queryable = session
        .declare_queryable(options.key.clone())
        .wait()
        .map_err(|e| zerr("declaring the queryable", e))?;
    let mut sub = bus
        .subscriber(&options.topic, subscriber_options(options))
        .map_err(|e| format!("topic {}: {e}", options.topic))?;
    // The identity of the segment the subscriber reads, sent with every
    // message: an importer that followed another (the topic was recreated,
    // its sequences restarted at 0) stops instead of skipping them. Taken
    // from the subscriber's own segment: a second open by name could find
    // a topic recreated since the subscriber joined, and label the old
    // segment's sequences with the new one's identity.
    let origin = Origin::of(
        sub.segment()
            .ok_or_else(|| format!("topic {}: not a shared-memory subscriber", options.topic))?,
    );
    tracing::info!(
        topic = options.topic,
        key = options.key,
        gating = options.gating.is_some(),
        %origin,
        "bridge export started"
    );
    // Set when either half ends (by error too), so that the other does.
    let done = AtomicBool::new(false);
    // Relaxed: a flag polled in loops; nothing else is published through it.
    let stop = || stop() || done.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        let served = s.spawn(|| {
            let r = serve_queries(bus, &queryable, options, &stop);
            // Relaxed: as above.
            done.store(true, Ordering::Relaxed);
            r
        });
        let mut stats = ExportStats::default();
        let mut msg = Message::new(origin);
        let mut last_sent = Instant::now();
        // Gating: frames read are released to the origin's publishers once
        // sent (below), and none is read while no importer would receive it.
        let mut matched: Option<Instant> = None;
        let result = loop {
            if stop() {
                break Ok(());
            }
            if options.gating.is_some() && matched.is_none_or(|t| t.elapsed() > CHECK_MATCHING) {
                match publisher.matching_status().wait() {
                    Ok(m) if m.matching() => matched = Some(Instant::now()),
                    Ok(_) => {
                        matched = None;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(e) => break Err(zerr("reading the matching status", e)),
                }
            }
            msg.clear();
            let mut lagged = false;
            // Block for the first, then take what else is ready.
            let mut wait = Some(Duration::from_millis(20));
            while msg.entries() < options.max_batch {
                let got = match wait.take() {
                    Some(t) => sub.recv_timeout(t),
                    None => sub.try_recv(),
                };
                match got {
                    Ok(frame) => {
                        msg.frame(frame.seq, &frame.bytes[..frame_len(frame.bytes)]);
                        stats.frames += 1;
                    }
                    Err(RecvError::Lost(seq)) => {
                        msg.lost(seq, seq);
                        stats.lost += 1;
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Not sent as lost: the importer sees the hole and
                        // asks for it; the WAL may still hold it.
                        tracing::warn!(topic = options.topic, n, "bridge export lagged");
                        lagged = true;
                        break;
                    }
                    Err(RecvError::Empty) => break,
                }
            }
            let idle_head = msg.is_empty() && last_sent.elapsed() >= options.head_every;
            if lagged || idle_head {
                if let Some(next) = sub.next_seq() {
                    msg.head(next);
                }
            }
            if msg.is_empty() {
                continue;
            }
            if let Err(e) = publisher.put(msg.bytes().to_vec()).wait() {
                break Err(zerr("publishing", e));
            }
            // Gating: what this message carries is sent; only now may the
            // origin's publishers overwrite it (a no-op without --gating).
            sub.release();
            stats.messages += 1;
            last_sent = Instant::now();
        };
        // Relaxed: as above.
        done.store(true, Ordering::Relaxed);
        let queries = served
            .join()
            .map_err(|_| "the query thread panicked".to_owned())?;
        result?;
        stats.queries = queries?;
        Ok(stats)
    })
}

/// How the exporter reads its topic: with `--gating`, a durable gating
/// subscriber that releases a frame to the origin's publishers only after
/// the message carrying it was handed to zenoh (`manual_release`), so a
/// SIGKILL or a failed send between reading and sending never lets a
/// publisher overwrite a frame the bridge has not sent.
fn subscriber_options(options: &ExportOptions) -> SubscriberOptions {
    SubscriberOptions {
        name: options
            .gating
            .clone()
            .unwrap_or_else(|| "bridge-export".to_owned()),
        start: if options.gating.is_some() {
            Start::Oldest
        } else {
            Start::Newest
        },
        gating: options.gating.is_some(),
        durable: options.gating.is_some(),
        manual_release: options.gating.is_some(),
        wait: WaitStrategy::Blocking { spins: 1_000 },
        ..Default::default()
    }
}

/// Answers queries until `stop()`; returns how many.
fn serve_queries(
    bus: &Bus,
    queryable: &zenoh::query::Queryable<zenoh::handlers::FifoChannelHandler<Query>>,
    options: &ExportOptions,
    stop: &(impl Fn() -> bool + Sync),
) -> Result<u64, String> {
    let mut answered = 0;
    while !stop() {
        let query = match queryable.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(q)) => q,
            Ok(None) => continue,
            Err(e) => {
                return Err(format!(
                    "zenoh: the queryable on {} closed: {e}",
                    options.key
                ))
            }
        };
        let params = query.parameters();
        let from = params.get("from").map(str::parse::<u64>);
        let to = params.get("to").map(str::parse::<u64>);
        let version = params.get("v").unwrap_or("1");
        let reply = match (from, to) {
            // An importer of another release (version 1 sent no `v`).
            _ if version != VERSION.to_string() => Err(format!(
                "an importer speaking bridge version {version} asked {:?}; this exporter \
                 speaks version {VERSION}: run the same zerocast release on both sides",
                params.as_str()
            )),
            (Some(Ok(from)), None) => {
                serve_range(bus, options, from, u64::MAX, &stop).map(|m| m.bytes().to_vec())
            }
            (Some(Ok(from)), Some(Ok(to))) => {
                serve_range(bus, options, from, to, &stop).map(|m| m.bytes().to_vec())
            }
            _ => Err(format!(
                "bad query parameters {:?}: expected v=VERSION;from=SEQ and optionally to=SEQ",
                params.as_str()
            )),
        };
        let sent = match reply {
            Ok(bytes) => query.reply(options.key.clone(), bytes).wait(),
            Err(e) => {
                tracing::warn!(key = options.key, "bridge export: {e}");
                query.reply_err(e).wait()
            }
        };
        if let Err(e) = sent {
            tracing::warn!(key = options.key, "bridge export: reply not sent: {e}");
        }
        answered += 1;
    }
    Ok(answered)
}

/// The sequences of `from ..= to` (at most `max_reply` frames, and only
/// what the topic has published), from the WAL then the ring, as one reply: frames,
/// lost ranges for what the origin lost or neither source holds, then the
/// head mark (the first sequence the reply does not cover).
fn serve_range(
    bus: &Bus,
    options: &ExportOptions,
    from: u64,
    to: u64,
    stop: &impl Fn() -> bool,
) -> Result<Message, String> {
    let segment = bus
        .segment(&options.topic)
        .map_err(|e| format!("topic {}: {e}", options.topic))?;
    let head = segment.ring().head();
    let mut msg = Message::new(Origin::of(&segment));
    // A lost range costs one entry whatever its length; frames are
    // limited to `max_reply` per reply.
    let last = to.min(head.saturating_sub(1));
    if head == 0 || from > last {
        msg.head(from);
        return Ok(msg);
    }
    let wal = options.wal.as_ref().map_or_else(
        || Path::new("/nonexistent").to_owned(),
        |w| w.join(&options.topic),
    );
    let mut r = Resumable::open_at(bus, &options.topic, &wal, "bridge-query", from);
    r.set_poll(Duration::from_millis(5));
    // A sequence claimed but never committed resolves (as lost) within the
    // stall bound; give up on the rest of the range well after that.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut covered = from;
    let mut frames = 0;
    // Consecutive losses, sent as one range (a ring-full of them is one
    // entry, not one each).
    let mut lost: Option<(u64, u64)> = None;
    r.run(
        |event| {
            let (first, end) = match event {
                Event::Frame { seq, bytes } => {
                    if let Some((a, b)) = lost.take() {
                        msg.lost(a, b);
                    }
                    msg.frame(seq, bytes);
                    frames += 1;
                    covered = seq + 1;
                    return if seq >= last || frames >= options.max_reply {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    };
                }
                Event::Lost(seq) | Event::Invalid { seq, .. } => (seq, seq),
                Event::Missing { from, to } => (from, to.min(last)),
            };
            lost = match lost {
                Some((a, b)) if b.checked_add(1) == Some(first) => Some((a, end)),
                Some((a, b)) => {
                    msg.lost(a, b);
                    Some((first, end))
                }
                None => Some((first, end)),
            };
            covered = end + 1;
            if end >= last || frames >= options.max_reply {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        || stop() || Instant::now() > deadline,
    )?;
    if let Some((a, b)) = lost {
        msg.lost(a, b);
    }
    msg.head(covered);
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gating exporter released each frame to the origin's publishers as
    /// soon as it read it, before the message carrying it was sent: a
    /// SIGKILL or a failed `put` in between let publishers overwrite frames
    /// the bridge never sent (and a restarted exporter went on after them).
    #[test]
    fn regression_a_gating_exporter_releases_only_what_it_sent() {
        let mut options = ExportOptions::new("trade_events", "zerocast/ns/trade_events");
        assert!(!subscriber_options(&options).gating);
        options.gating = Some("bridge-a".to_owned());
        let sub = subscriber_options(&options);
        assert!(sub.gating && sub.durable);
        assert!(
            sub.manual_release,
            "a gating exporter must release frames only after sending them"
        );
    }
    use zerocast_ipc::{Config, Publisher, TopicConfig, TopicKind};

    #[test]
    fn regression_a_reply_carries_consecutive_losses_as_one_range() {
        // A ring-full of lost sequences (a relay's far side exported again,
        // a WAL of losses) once made one entry per sequence: a reply bounded
        // only by the query's 3 s deadline. Consecutive losses are one range.
        let bus = Bus::new(Config {
            namespace: format!("brx{}-coalesce", std::process::id()),
            topics: vec![TopicConfig::new("t", 128 << 10, TopicKind::Trade)],
        });
        bus.remove_segments();
        #[allow(irrefutable_let_patterns)]
        let Publisher::Shm(mut p) = bus.publisher("t").unwrap() else {
            panic!("a shared-memory topic");
        };
        let cap = p.segment().ring().capacity();
        assert_eq!(p.publish_lost(cap).unwrap(), 0);
        let options = ExportOptions::new("t", "zerocast/x/t");
        let msg = serve_range(&bus, &options, 0, u64::MAX, &|| false).unwrap();
        let mut entries = Vec::new();
        super::super::wire::decode(msg.bytes(), |e| entries.push(format!("{e:?}"))).unwrap();
        bus.remove_segments();
        assert_eq!(
            entries,
            vec![
                format!(
                    "{:?}",
                    super::super::wire::Entry::Lost {
                        from: 0,
                        to: cap - 1
                    }
                ),
                format!("{:?}", super::super::wire::Entry::Head(cap)),
            ],
            "{} entries",
            msg.entries()
        );
    }
}
