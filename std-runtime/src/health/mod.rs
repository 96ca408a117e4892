//! The health monitor: publisher states, subscriber lag, recorder lag, from
//! nothing but what the topic segments and the namespace's counters table
//! ([`zerocast_ipc::counters`]) hold.
//!
//! [`HealthMonitor::poll`] reads every topic segment of a namespace and
//! returns a [`Report`]: each publisher with its [`PublisherState`] and its
//! gating waits, each subscriber with its lag and lag trend, the recorder's
//! lag, the state [`Transition`]s since the previous poll, and every entry
//! of the counters table ([`CounterReport`]: the recorders' WAL records,
//! bytes and fsync latency, the batchers' rows, batches and commit
//! latency, with a rate). The monitor keeps only what it
//! needs to compare one poll with the last (when each publisher last showed
//! progress, each subscriber's last lag), so it is driven by explicit times
//! and tests can step it.
//!
//! # State rules
//!
//! A publisher's *last sign of life* is the latest of its heartbeat stamp
//! (`PublisherEntry::heartbeat_ns`, written by `send_heartbeat`; 0 until
//! the first), the freshest heartbeat stamp of any publisher entry of the
//! same process (same owner word: pid and start time) on any topic of the
//! namespace (so [`zerocast_ipc::spawn_heartbeat`], which beats through an
//! entry of its own, keeps the idle publishers of its process alive), and
//! the last poll that saw its `published` counter grow; the
//! first poll that sees a publisher counts as a sign of life, so a
//! publisher that never sent a heartbeat is judged from when the monitor
//! first saw it.
//! With `interval` the heartbeat interval the monitor is given:
//!
//! - **Failed**: its process is gone ([`owner_alive`], the workspace's one
//!   liveness check: pid and start time), or `2 * interval` or more passed
//!   since its last sign of life.
//! - **Degraded**: more than `interval` passed since its last sign of life,
//!   or a live subscriber of its topic has had a growing lag, above 1% of
//!   the ring's capacity, for [`HealthOptions::lag_growth_samples`] samples
//!   in a row.
//! - **Healthy**: otherwise.
//!
//! Publishers on the [`HEALTH_TOPIC`] (health monitors themselves, which
//! publish only when something changes) are judged by liveness alone.
//!
//! A publisher should therefore send a heartbeat (or publish) at least
//! twice per interval, or share a process with an entry that does
//! ([`zerocast_ipc::spawn_heartbeat`] does it on a thread). A publisher
//! slower than one frame per interval that does neither is judged
//! Degraded, then Failed, while it waits.

mod command;
mod counters;
mod events;
pub mod metrics;
mod serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zerocast_ipc::layout::{
    is_tombstone, load_name, owner_alive, owner_pid, stored_name, FLAG_DURABLE, FREE, ORPHAN,
};
use zerocast_ipc::segment::Reaped;
use zerocast_ipc::{Bus, Segment};

pub use command::{run, table, HealthArgs};
pub use counters::CounterReport;
pub use events::{HealthEvent, HealthEvents, HEALTH_PUBLISHER};
pub use serve::serve_metrics;
pub use zerocast_ipc::config::HEALTH_TOPIC;

/// What a monitor judges by.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// The heartbeat interval publishers keep: Degraded after one interval
    /// without a sign of life, Failed after two (at least 1 ms).
    pub interval: Duration,
    /// Consecutive lag samples (taken at most every `interval / 2`) in
    /// which a live subscriber's lag grew, above 1% of the ring's capacity,
    /// before its topic's publishers are Degraded (at least 1).
    pub lag_growth_samples: u32,
    /// Reclaim the entries of dead processes ([`Segment::reap_entries`]:
    /// in-flight sequences declared lost, gating holds released, durable
    /// holds orphaned; and their counters-table entries) when a poll finds
    /// them. Off by default: a monitor
    /// that cannot see a process (another PID namespace) takes it for
    /// dead.
    pub reclaim: bool,
    /// WAL root directory (`record --wal DIR`): reports each topic's WAL
    /// bytes.
    pub wal: Option<PathBuf>,
}

impl Default for HealthOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            lag_growth_samples: 3,
            reclaim: false,
            wal: None,
        }
    }
}

/// A publisher's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PublisherState {
    /// Alive and on time.
    Healthy = 1,
    /// Late by an interval, or its subscribers fall further behind.
    Degraded = 2,
    /// Two intervals silent, or its process is gone.
    Failed = 3,
}

impl PublisherState {
    /// All states, in order.
    pub const ALL: [Self; 3] = [Self::Healthy, Self::Degraded, Self::Failed];

    /// Lower-case name (`healthy`, `degraded`, `failed`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
        }
    }

    /// The state with this code (`self as u8`), if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u8 == code)
    }
}

impl std::fmt::Display for PublisherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
            Self::Failed => "Failed",
        })
    }
}

/// Which way a subscriber's lag went since the previous sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagTrend {
    /// First sample: nothing to compare with.
    Unknown,
    /// Larger than at the previous sample.
    Growing,
    /// The same.
    Steady,
    /// Smaller.
    Shrinking,
}

impl LagTrend {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "-",
            Self::Growing => "growing",
            Self::Steady => "steady",
            Self::Shrinking => "shrinking",
        }
    }
}

/// One publisher entry as a poll saw it.
#[derive(Debug, Clone)]
pub struct PublisherReport {
    /// Index in the topic's publisher table (the frames' publisher id).
    pub index: usize,
    /// Name in the table.
    pub name: String,
    /// Pid of its process.
    pub pid: u32,
    /// Whether its process is alive ([`owner_alive`]).
    pub alive: bool,
    /// Its state.
    pub state: PublisherState,
    /// Why it is in that state (empty when Healthy).
    pub reason: String,
    /// Time since its last heartbeat stamp (registration stamps it too).
    pub heartbeat_age: Option<Duration>,
    /// Time since its last sign of life (heartbeat or observed progress).
    pub silent_for: Duration,
    /// Frames published through this entry.
    pub published: u64,
    /// Publishes that had to wait for a gating subscriber (or, under
    /// `GatingPolicy::Fail`, found the ring full on one).
    pub gating_waits: u64,
    /// Time those publishes waited, in total.
    pub gating_wait: Duration,
    /// Frames per second since the previous sample (`None` on the first).
    pub rate: Option<f64>,
    /// Sequences it has claimed and not committed.
    pub inflight: Option<std::ops::Range<u64>>,
    /// Its entry is gone from the table (reclaimed after its process
    /// died): kept as Failed, as last seen, for [`KEEP_GONE_FOR`] or until a
    /// publisher of the same name registers on the topic.
    pub gone: bool,
}

/// How long a Failed publisher whose entry was reclaimed stays in the
/// reports (as Failed), so that a scrape or a table after the reclaiming
/// poll still shows the failure.
pub const KEEP_GONE_FOR: Duration = Duration::from_secs(60);

/// One subscriber entry as a poll saw it.
#[derive(Debug, Clone)]
pub struct SubscriberReport {
    /// Index in the topic's subscriber table.
    pub index: usize,
    /// Name in the table.
    pub name: String,
    /// Pid of its process (0 for an orphaned durable hold).
    pub pid: u32,
    /// Whether its process is alive.
    pub alive: bool,
    /// A durable registration (a recorder's, say).
    pub durable: bool,
    /// A durable hold whose process is gone.
    pub orphaned: bool,
    /// Next sequence it will read.
    pub cursor: u64,
    /// Head minus cursor: frames published that it has not read.
    pub lag: u64,
    /// Direction of `lag` since the previous sample.
    pub trend: LagTrend,
    /// Samples in a row in which `lag` grew and was above 1% of the ring's
    /// capacity.
    pub growing_samples: u32,
    /// The position its gating hold keeps (publishers never overwrite a
    /// sequence at or above it), if it is gating.
    pub gating_position: Option<u64>,
    /// Frames it lost to lapping, in total.
    pub lagged_total: u64,
    /// Time since it last read or polled (refreshed every 256 calls,
    /// see [`zerocast_ipc::layout::SubscriberEntry::last_seen_ns`]).
    pub last_seen_age: Option<Duration>,
}

impl SubscriberReport {
    /// Frames its gating hold keeps publishers from overwriting (head
    /// minus the held position), if it is gating.
    pub fn gating_hold(&self, head: u64) -> Option<u64> {
        self.gating_position.map(|p| head.saturating_sub(p))
    }
}

/// One topic as a poll saw it.
#[derive(Debug, Clone)]
pub struct TopicReport {
    /// Topic name.
    pub topic: String,
    /// Segment file.
    pub path: PathBuf,
    /// Next sequence to be published (so: sequences published so far).
    pub head: u64,
    /// Ring capacity in slots.
    pub capacity: u64,
    /// Creator and every registered process dead.
    pub stale: bool,
    /// Publisher entries.
    pub publishers: Vec<PublisherReport>,
    /// Subscriber entries (live, dead and orphaned durable holds).
    pub subscribers: Vec<SubscriberReport>,
    /// Head minus the recorder's cursor (the durable subscriber
    /// `recorder-<topic>`; for an orphaned hold, whose process is gone,
    /// head minus the held position), if there is one.
    pub recorder_lag: Option<u64>,
    /// Bytes of WAL segment files in `WAL/<topic>`, if a WAL directory was
    /// given and the topic has one.
    pub wal_bytes: Option<u64>,
    /// Entries of dead processes this poll reclaimed.
    pub reclaimed: Vec<Reaped>,
    /// Publisher transitions to Failed on this topic this monitor has seen
    /// since it started.
    pub failures_total: u64,
}

/// A publisher's change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Topic.
    pub topic: String,
    /// Publisher table index.
    pub index: usize,
    /// Publisher name.
    pub name: String,
    /// Pid of its process.
    pub pid: u32,
    /// State before.
    pub from: PublisherState,
    /// State now.
    pub to: PublisherState,
    /// Why (the new state's reason).
    pub reason: String,
    /// When the poll saw it, ns since the Unix epoch.
    pub at_ns: u64,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} publisher {} (pid {}, name {:?}): {} -> {}",
            self.topic, self.index, self.pid, self.name, self.from, self.to
        )?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// What one poll saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// Time of the poll, ns since the Unix epoch.
    pub at_ns: u64,
    /// Namespace.
    pub namespace: String,
    /// The interval states were judged by.
    pub interval: Duration,
    /// Topics, by name.
    pub topics: Vec<TopicReport>,
    /// Segments that could not be opened: (topic, why). Also the
    /// counters table, as [`COUNTERS_FILE`](zerocast_ipc::counters::COUNTERS_FILE)
    /// (`@counters`: no topic has an `@`).
    pub unreadable: Vec<(String, String)>,
    /// Segments of another pid namespace that no process maps (users all
    /// gone, or a `stat` of that namespace read them last): (topic, why).
    /// Not read, and not a failure: the topic's next publisher or
    /// subscriber takes such a segment over.
    pub idle_foreign: Vec<(String, String)>,
    /// Publisher state changes since the previous poll.
    pub transitions: Vec<Transition>,
    /// The entries of the namespace's counters table: what recorders and
    /// batchers export (WAL records, bytes and fsyncs; batch rows, batches
    /// and commit latency), live, dead, or reclaimed by this poll.
    pub counters: Vec<CounterReport>,
}

impl Report {
    /// Publishers in state Failed: (topic, publisher).
    pub fn failed(&self) -> impl Iterator<Item = (&TopicReport, &PublisherReport)> {
        self.topics.iter().flat_map(|t| {
            t.publishers
                .iter()
                .filter(|p| p.state == PublisherState::Failed)
                .map(move |p| (t, p))
        })
    }
}

/// What the monitor remembers of a publisher entry between polls.
#[derive(Debug)]
struct PublisherTrack {
    state: PublisherState,
    /// Whether `state` was judged with an earlier poll to compare with (a
    /// first sighting only has the heartbeat stamp; its state may change
    /// at the next poll without anything having happened).
    settled: bool,
    published: u64,
    /// Time of the last poll that saw `published` grow.
    progress_ns: u64,
    /// Rate sample: (time, published) at the last sample.
    sample: (u64, u64),
    rate: Option<f64>,
    seen: bool,
    /// Its report at the last poll that saw it.
    last: Option<PublisherReport>,
}

/// A Failed publisher whose entry left the table.
#[derive(Debug)]
struct Gone {
    topic: String,
    since_ns: u64,
    report: PublisherReport,
}

/// What the monitor remembers of a subscriber entry between polls.
#[derive(Debug)]
struct SubscriberTrack {
    sample_ns: u64,
    lag: u64,
    trend: LagTrend,
    growing: u32,
    seen: bool,
}

/// A segment the monitor keeps mapped, with the file identity it was
/// opened from (a removed and re-created topic is opened again).
struct Mapped {
    seg: Arc<Segment>,
    ino: u64,
}

/// Polls a namespace's topic segments and judges publisher health.
///
/// ```
/// use zerocast_ipc::layout::now_ns;
/// use zerocast_ipc::{Bus, Config, TopicConfig, TopicKind};
/// use zerocast_runtime::health::{HealthMonitor, HealthOptions, PublisherState};
///
/// let bus = Bus::new(Config {
///     namespace: format!("doc-health-{}", std::process::id()),
///     topics: vec![TopicConfig::new("trades", 1 << 20, TopicKind::Trade)],
/// });
/// let mut engine = bus.publisher("trades")?;
/// engine.send_heartbeat()?;
/// let mut monitor = HealthMonitor::new(bus.clone(), HealthOptions::default());
/// let report = monitor.poll(now_ns());
/// let trades = &report.topics[0];
/// assert_eq!(trades.publishers[0].state, PublisherState::Healthy);
/// // Two intervals later without a heartbeat (or a frame): Failed.
/// let report = monitor.poll(now_ns() + 2_500_000_000);
/// assert_eq!(report.topics[0].publishers[0].state, PublisherState::Failed);
/// # drop(engine);
/// # bus.remove_segments();
/// # Ok::<(), zerocast_ipc::Error>(())
/// ```
pub struct HealthMonitor {
    bus: Bus,
    options: HealthOptions,
    segments: HashMap<String, Mapped>,
    /// Keyed by (topic, index, owner word): a re-registered entry is a new
    /// publisher.
    publishers: HashMap<(String, usize, u64), PublisherTrack>,
    subscribers: HashMap<(String, usize, u64), SubscriberTrack>,
    /// The freshest heartbeat stamp of each process (owner word) over
    /// every publisher entry of the namespace, read at the start of a poll.
    process_heartbeat: HashMap<u64, u64>,
    /// Failed publishers whose entries left the table, kept for
    /// [`KEEP_GONE_FOR`].
    gone: Vec<Gone>,
    /// Transitions to Failed seen, by topic.
    failures: HashMap<String, u64>,
    /// The namespace's counters table.
    counters: counters::CountersView,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("namespace", &self.bus.config().namespace)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn ns_duration(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

/// Age at `now_ns` of a stamp (`None` if never stamped; 0 for a stamp
/// written after the poll took its time).
fn age_at(stamp_ns: u64, now_ns: u64) -> Option<Duration> {
    (stamp_ns != 0).then(|| ns_duration(now_ns.saturating_sub(stamp_ns)))
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl HealthMonitor {
    /// A monitor of every topic segment of `bus`'s namespace.
    pub fn new(bus: Bus, options: HealthOptions) -> Self {
        let mut options = options;
        options.lag_growth_samples = options.lag_growth_samples.max(1);
        // A zero interval would make every publisher Failed at once.
        options.interval = options.interval.max(Duration::from_millis(1));
        Self {
            bus,
            options,
            segments: HashMap::new(),
            publishers: HashMap::new(),
            subscribers: HashMap::new(),
            process_heartbeat: HashMap::new(),
            gone: Vec::new(),
            failures: HashMap::new(),
            counters: counters::CountersView::default(),
        }
    }

    /// Its options.
    pub fn options(&self) -> &HealthOptions {
        &self.options
    }

    /// Turns reclaiming dead entries on or off from the next poll on.
    pub fn set_reclaim(&mut self, reclaim: bool) {
        self.options.reclaim = reclaim;
    }

    /// The namespace's segments, mapped (new ones opened, removed ones
    /// dropped, re-created ones opened again).
    fn refresh_segments(
        &mut self,
        unreadable: &mut Vec<(String, String)>,
        idle_foreign: &mut Vec<(String, String)>,
    ) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let listed = self.bus.list_segments();
        let mut topics = Vec::new();
        let mut keep = std::collections::HashSet::new();
        for (topic, path) in listed {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            keep.insert(topic.clone());
            if self
                .segments
                .get(&topic)
                .is_some_and(|m| m.ino == meta.ino())
            {
                topics.push(topic);
                continue;
            }
            let access = self
                .bus
                .config()
                .topic(&topic)
                .map(|t| t.access)
                .unwrap_or_default();
            match Segment::observe(&path, &topic, access) {
                Ok(seg) => {
                    self.segments.insert(
                        topic.clone(),
                        Mapped {
                            seg: Arc::new(seg),
                            ino: meta.ino(),
                        },
                    );
                    topics.push(topic);
                }
                Err(e) => {
                    self.segments.remove(&topic);
                    match e {
                        // Removed since it was listed: gone, as above.
                        zerocast_ipc::Error::Io { ref source, .. }
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            keep.remove(&topic);
                        }
                        zerocast_ipc::Error::ForeignPidNamespaceObserved {
                            in_use: false, ..
                        } => idle_foreign.push((topic, e.to_string())),
                        e => unreadable.push((topic, e.to_string())),
                    }
                }
            }
        }
        self.segments.retain(|t, _| keep.contains(t));
        topics
    }

    /// Reads every topic at time `now_ns` (ns since the Unix epoch, the
    /// clock of heartbeat stamps: [`zerocast_ipc::layout::now_ns`] in
    /// production, any later time in a test), judges every publisher, and
    /// reclaims dead entries if [`HealthOptions::reclaim`] is set. Each
    /// transition is also logged with `tracing`.
    pub fn poll(&mut self, now_ns: u64) -> Report {
        let mut unreadable = Vec::new();
        let mut idle_foreign = Vec::new();
        let topics = self.refresh_segments(&mut unreadable, &mut idle_foreign);
        for t in self.publishers.values_mut() {
            t.seen = false;
        }
        for t in self.subscribers.values_mut() {
            t.seen = false;
        }
        // A process is alive and beating if any of its publisher entries
        // heartbeats: `spawn_heartbeat` beats through an entry of its own,
        // beside an idle data publisher of the same process.
        self.process_heartbeat.clear();
        for topic in &topics {
            for p in self.segments[topic].seg.header().publishers.iter() {
                // Acquire: pairs with the Release owner-word stores of
                // registration, as in `poll_topic`.
                let word = p.pid.load(Ordering::Acquire);
                if word == FREE || is_tombstone(word) {
                    continue;
                }
                // Relaxed: a monitoring snapshot.
                let stamp = p.heartbeat_ns.load(Ordering::Relaxed);
                // Acquire: as in `poll_topic`: a stamp the entry's next
                // owner stored (or a drop's clear) is not credited to
                // `word`.
                fence(Ordering::Acquire);
                // Relaxed: ordered by the fence above.
                if p.pid.load(Ordering::Relaxed) != word {
                    continue;
                }
                let best = self.process_heartbeat.entry(word).or_insert(0);
                *best = (*best).max(stamp);
            }
        }
        let mut report = Report {
            at_ns: now_ns,
            namespace: self.bus.config().namespace.clone(),
            interval: self.options.interval,
            topics: Vec::new(),
            unreadable,
            idle_foreign,
            transitions: Vec::new(),
            counters: Vec::new(),
        };
        for topic in topics {
            let seg = Arc::clone(&self.segments[&topic].seg);
            let t = self.poll_topic(&topic, &seg, now_ns, &mut report.transitions);
            report.topics.push(t);
        }
        self.publishers.retain(|_, t| t.seen);
        self.subscribers.retain(|_, t| t.seen);
        let interval_ns = u64::try_from(self.options.interval.as_nanos()).unwrap_or(u64::MAX);
        report.counters = self.counters.poll(
            &self.bus,
            now_ns,
            interval_ns / 2,
            self.options.reclaim,
            &mut report.unreadable,
        );
        report
    }

    fn poll_topic(
        &mut self,
        topic: &str,
        seg: &Segment,
        now_ns: u64,
        transitions: &mut Vec<Transition>,
    ) -> TopicReport {
        let h = seg.header();
        let ring = seg.ring();
        let head = ring.head();
        let interval_ns = u64::try_from(self.options.interval.as_nanos()).unwrap_or(u64::MAX);
        let sample_every = interval_ns / 2;
        let mut dead_entries = false;
        let lag_floor = ring.capacity() / 100;

        // Subscribers first: a publisher's state depends on their lag.
        let mut subscribers = Vec::new();
        for (index, e) in h.subscribers.iter().enumerate() {
            // Acquire: pairs with the Release owner-word stores of
            // registration; the entry's other words are read after it.
            let word = e.pid.load(Ordering::Acquire);
            if word == FREE || is_tombstone(word) {
                continue;
            }
            let alive = owner_alive(word);
            let orphaned = word == ORPHAN;
            dead_entries |= !alive && !orphaned;
            // Relaxed (all below): monitoring snapshots of words their
            // owner updates on its own; ordered after the Acquire above.
            let cursor = e.cursor.load(Ordering::Relaxed);
            let durable = e.flags.load(Ordering::Relaxed) & FLAG_DURABLE != 0;
            let lagged_total = e.lagged.load(Ordering::Relaxed);
            let last_seen = e.last_seen_ns.load(Ordering::Relaxed);
            let gating_position = if e.gating.load(Ordering::Relaxed) != 0 || durable {
                seg.gating_position_of_entry(index)
            } else {
                None
            };
            let lag = head.saturating_sub(cursor);
            let track = self
                .subscribers
                .entry((topic.to_owned(), index, word))
                .or_insert(SubscriberTrack {
                    sample_ns: now_ns,
                    lag,
                    trend: LagTrend::Unknown,
                    growing: 0,
                    seen: true,
                });
            track.seen = true;
            if now_ns.saturating_sub(track.sample_ns) >= sample_every.max(1) {
                track.trend = match lag.cmp(&track.lag) {
                    std::cmp::Ordering::Greater => LagTrend::Growing,
                    std::cmp::Ordering::Equal => LagTrend::Steady,
                    std::cmp::Ordering::Less => LagTrend::Shrinking,
                };
                // A lag within 1% of the ring is noise of the sampling
                // instant (a reader keeping up is a few frames behind at
                // any moment), not a reader falling behind.
                track.growing = if track.trend == LagTrend::Growing && lag > lag_floor {
                    track.growing + 1
                } else {
                    0
                };
                track.lag = lag;
                track.sample_ns = now_ns;
            }
            subscribers.push(SubscriberReport {
                index,
                name: load_name(&e.name),
                pid: owner_pid(word),
                alive,
                durable,
                orphaned,
                cursor,
                lag,
                trend: track.trend,
                growing_samples: track.growing,
                gating_position,
                lagged_total,
                last_seen_age: age_at(last_seen, now_ns),
            });
        }
        let lagging = subscribers
            .iter()
            .find(|s| s.alive && s.growing_samples >= self.options.lag_growth_samples);

        let liveness_only = topic == HEALTH_TOPIC;
        let mut publishers = Vec::new();
        for (index, p) in h.publishers.iter().enumerate() {
            // Acquire: as for subscribers.
            let word = p.pid.load(Ordering::Acquire);
            if word == FREE || is_tombstone(word) {
                continue;
            }
            #[cfg(test)]
            tests::between_publisher_reads();
            let alive = owner_alive(word);
            dead_entries |= !alive;
            // Relaxed: monitoring snapshots, as above.
            let published = p.published.load(Ordering::Relaxed);
            let gating_waits = p.gating_waits.load(Ordering::Relaxed);
            let gating_wait = ns_duration(p.gating_wait_ns.load(Ordering::Relaxed));
            let heartbeat = p.heartbeat_ns.load(Ordering::Relaxed);
            let name = load_name(&p.name);
            let inflight = p.inflight_range();
            // Acquire: pairs with the Release fence after the owner
            // word's tombstone compare-and-swap in a publisher's drop and
            // in a reap, and with the one after a registration's claiming
            // compare-and-swap: if any word read above is one their clears
            // or the next owner stored (a count of 0, an empty name), the
            // owner word is no longer `word`, and this entry's reading is
            // dropped, not
            // reported as a live publisher that published nothing. Not
            // caught: the same process dropping this publisher and
            // registering another into the same entry between the two
            // loads (the owner word is per process, so it reads the same).
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence above.
            if p.pid.load(Ordering::Relaxed) != word {
                continue;
            }
            let key = (topic.to_owned(), index, word);
            let known = self.publishers.contains_key(&key);
            let track = self.publishers.entry(key).or_insert(PublisherTrack {
                state: PublisherState::Healthy,
                settled: false,
                published,
                // A publisher's heartbeat stamp is 0 until its first
                // heartbeat, so the first poll that sees it is its first
                // sign of life: it gets its grace from there.
                progress_ns: now_ns,
                sample: (now_ns, published),
                rate: None,
                seen: true,
                last: None,
            });
            track.seen = true;
            if published > track.published {
                track.progress_ns = now_ns;
            }
            track.published = published;
            if now_ns.saturating_sub(track.sample.0) >= sample_every.max(1) {
                let dt = (now_ns - track.sample.0) as f64 / 1e9;
                track.rate = Some(published.saturating_sub(track.sample.1) as f64 / dt);
                track.sample = (now_ns, published);
            }
            let process_beat = self.process_heartbeat.get(&word).copied().unwrap_or(0);
            let last_sign = heartbeat
                .max(process_beat)
                .max(track.progress_ns)
                .min(now_ns);
            let silent = now_ns - last_sign;
            let (state, reason) = if !alive {
                (PublisherState::Failed, "process gone".to_owned())
            } else if liveness_only {
                (PublisherState::Healthy, String::new())
            } else if silent >= interval_ns.saturating_mul(2) {
                (
                    PublisherState::Failed,
                    format!("no heartbeat or progress for {}", secs(ns_duration(silent))),
                )
            } else if silent > interval_ns {
                (
                    PublisherState::Degraded,
                    format!("heartbeat late: none for {}", secs(ns_duration(silent))),
                )
            } else if let Some(s) = lagging {
                (
                    PublisherState::Degraded,
                    format!(
                        "subscriber {} {:?} lag growing ({} frames, {} samples)",
                        s.index, s.name, s.lag, s.growing_samples
                    ),
                )
            } else {
                (PublisherState::Healthy, String::new())
            };
            if known && track.settled && track.state != state {
                let tr = Transition {
                    topic: topic.to_owned(),
                    index,
                    name: name.clone(),
                    pid: owner_pid(word),
                    from: track.state,
                    to: state,
                    reason: reason.clone(),
                    at_ns: now_ns,
                };
                match tr.to {
                    PublisherState::Healthy => tracing::info!(target: "zerocast::health", "{tr}"),
                    PublisherState::Failed => {
                        *self.failures.entry(topic.to_owned()).or_insert(0) += 1;
                        tracing::warn!(target: "zerocast::health", "{tr}");
                    }
                    PublisherState::Degraded => tracing::warn!(target: "zerocast::health", "{tr}"),
                }
                transitions.push(tr);
            }
            track.settled = known;
            track.state = state;
            let report = PublisherReport {
                index,
                name,
                pid: owner_pid(word),
                alive,
                state,
                reason,
                heartbeat_age: age_at(heartbeat, now_ns),
                silent_for: ns_duration(silent),
                published,
                gating_waits,
                gating_wait,
                rate: track.rate,
                inflight,
                gone: false,
            };
            track.last = Some(report.clone());
            publishers.push(report);
        }
        // Failed publishers whose entries left the table since the last
        // poll (reclaimed, by this monitor or another process) stay
        // reported as Failed for a while: else a crash shows for one poll.
        for (key, track) in self.publishers.iter_mut() {
            if key.0 == topic && !track.seen && track.state == PublisherState::Failed {
                if let Some(mut report) = track.last.take() {
                    report.gone = true;
                    report.alive = report.alive && owner_alive(key.2);
                    report.reason = format!("{} (entry reclaimed)", report.reason);
                    self.gone.push(Gone {
                        topic: topic.to_owned(),
                        since_ns: now_ns,
                        report,
                    });
                }
            }
        }
        let keep_ns = u64::try_from(KEEP_GONE_FOR.as_nanos()).unwrap_or(u64::MAX);
        self.gone.retain(|g| {
            g.topic != topic
                || (now_ns.saturating_sub(g.since_ns) < keep_ns
                    && !publishers.iter().any(|p| p.name == g.report.name))
        });
        for g in self.gone.iter().filter(|g| g.topic == topic) {
            let mut report = g.report.clone();
            report.silent_for += ns_duration(now_ns.saturating_sub(g.since_ns));
            report.heartbeat_age = report
                .heartbeat_age
                .map(|a| a + ns_duration(now_ns.saturating_sub(g.since_ns)));
            report.rate = None;
            publishers.push(report);
        }

        let recorder = stored_name(&format!("recorder-{topic}")).to_owned();
        let recorder_lag = subscribers
            .iter()
            .find(|s| s.durable && s.name == recorder)
            .map(|s| match (s.orphaned, s.gating_position) {
                // Gone: where its successor will resume.
                (true, Some(position)) => head.saturating_sub(position),
                _ => s.lag,
            });
        let stale = seg.is_stale();
        // A stale segment's entries too: reaping declares a dead publisher's
        // in-flight sequences lost, which any later opener needs.
        let reclaimed = if self.options.reclaim && dead_entries {
            let reaped = seg.reap_entries();
            for r in &reaped {
                tracing::warn!(target: "zerocast::health", "{topic}: reclaimed {r}");
            }
            reaped
        } else {
            Vec::new()
        };
        TopicReport {
            topic: topic.to_owned(),
            path: seg.path().to_owned(),
            head,
            capacity: ring.capacity(),
            stale,
            publishers,
            subscribers,
            recorder_lag,
            wal_bytes: self
                .options
                .wal
                .as_deref()
                .and_then(|dir| wal_bytes(&dir.join(topic))),
            reclaimed,
            failures_total: self.failures.get(topic).copied().unwrap_or(0),
        }
    }
}

/// Bytes of the `*.wal` files in `dir`, if it can be read.
pub fn wal_bytes(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
    )
}

#[cfg(test)]
mod tests;
