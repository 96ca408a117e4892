//! A [`Report`] in the Prometheus / OpenMetrics text exposition format
//! (prometheus-client's encoder), for `/metrics`.
//!
//! Every number is read from the segments and the counters table at the
//! poll (counters they hold are exported as they are, not accumulated
//! here), so two monitors scraping the same namespace report the same
//! values. Metric
//! names (counters get `_total` appended by the encoder):
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `zerocast_topic_head` | gauge | topic | next sequence to be published |
//! | `zerocast_topic_capacity_slots` | gauge | topic | ring capacity |
//! | `zerocast_topic_stale` | gauge | topic | 1 if creator and users are all dead |
//! | `zerocast_publisher_published_total` | counter | topic, index, name, pid | frames published through the entry |
//! | `zerocast_publisher_gating_waits_total` | counter | topic, index, name, pid | publishes that waited for a gating subscriber |
//! | `zerocast_publisher_gating_wait_seconds_total` | counter | topic, index, name, pid | time those publishes waited |
//! | `zerocast_publisher_heartbeat_age_seconds` | gauge | topic, index, name, pid | time since the heartbeat stamp |
//! | `zerocast_publisher_silent_seconds` | gauge | topic, index, name, pid | time since the last heartbeat or progress |
//! | `zerocast_publisher_rate_per_second` | gauge | topic, index, name, pid | frames/s over the last sample |
//! | `zerocast_publisher_alive` | gauge | topic, index, name, pid | process alive (pid and start time) |
//! | `zerocast_publisher_state` | gauge | topic, index, name, pid, state | 1 for the current state, 0 for the others |
//! | `zerocast_subscriber_lag` | gauge | topic, index, name, pid | head minus cursor |
//! | `zerocast_subscriber_lagged_total` | counter | topic, index, name, pid | frames lost to lapping |
//! | `zerocast_subscriber_gating_hold` | gauge | topic, index, name, pid | frames its gating hold keeps (gating only) |
//! | `zerocast_subscriber_alive` | gauge | topic, index, name, pid | process alive |
//! | `zerocast_subscriber_last_seen_seconds` | gauge | topic, index, name, pid | time since it last read or polled (refreshed every 256 calls and before every sleep) |
//! | `zerocast_recorder_lag` | gauge | topic | head minus the recorder's position |
//! | `zerocast_wal_bytes` | gauge | topic | bytes of WAL segment files on disk, preallocated (`--wal`) |
//! | `zerocast_wal_records_total` | counter | topic, name, pid | records the recorder appended |
//! | `zerocast_wal_record_bytes_total` | counter | topic, name, pid | bytes of those records (headers included) |
//! | `zerocast_wal_fsyncs_total` | counter | topic, name, pid | fdatasyncs of the active segment |
//! | `zerocast_wal_fsync_seconds` | histogram | topic, name, pid | fdatasync latency, buckets 50 µs .. 1 s |
//! | `zerocast_wal_last_sequence` | gauge | topic, name, pid | last sequence appended |
//! | `zerocast_wal_records_per_second` | gauge | topic, name, pid | records/s over the last sample |
//! | `zerocast_batch_rows_total` | counter | topic, name, pid | frames (sink rows) committed |
//! | `zerocast_batch_batches_total` | counter | topic, name, pid | batches committed |
//! | `zerocast_batch_lost_total` | counter | topic, name, pid | sequences committed as lost |
//! | `zerocast_batch_missing_total` | counter | topic, name, pid | sequences committed as missing |
//! | `zerocast_batch_invalid_total` | counter | topic, name, pid | invalid frames committed |
//! | `zerocast_batch_committed_sequence` | gauge | topic, name, pid | last committed sequence |
//! | `zerocast_batch_rows_per_second` | gauge | topic, name, pid | rows/s over the last sample |
//! | `zerocast_batch_commit_seconds` | histogram | topic, name, pid | the sink's commit of one batch, buckets 50 µs .. 1 s |
//! | `zerocast_counters_alive` | gauge | kind, topic, name, pid | 1 if the process owning a counters entry is alive |
//! | `zerocast_health_reclaimed_entries_total` | counter | | entries of dead processes this monitor reclaimed (topic tables and counters table) |
//! | `zerocast_publisher_failures_total` | counter | topic | publisher transitions to Failed this monitor saw |
//!
//! The `zerocast_wal_*` (but `zerocast_wal_bytes`) and `zerocast_batch_*`
//! metrics come from the namespace's counters table
//! ([`zerocast_ipc::counters`]), where each recorder and batcher counts
//! while it runs; `name` is `recorder` for a WAL, the stream name for a
//! batcher. An entry whose process died is exported with
//! `zerocast_counters_alive` 0 (and its last values) until a restarted
//! process of the same kind and labels takes it over or a reclaiming
//! monitor frees it (that poll still exports it, dead).
//!
//! A Failed publisher whose entry was reclaimed stays in the publisher
//! metrics, as Failed, for [`super::KEEP_GONE_FOR`] (60 s) or until a
//! publisher of the same name registers on the topic.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use zerocast_ipc::counters::{batch, wal, CounterKind, HistogramSnapshot, BUCKET_BOUNDS_NS};

use super::{PublisherState, Report};

type Labels = Vec<(String, String)>;
type IntGauge = Family<Labels, Gauge>;
type FloatGauge = Family<Labels, Gauge<f64, AtomicU64>>;
type IntCounter = Family<Labels, Counter>;
type FloatCounter = Family<Labels, Counter<f64, AtomicU64>>;
type Histograms = Family<Labels, BucketedHistogram>;

/// A histogram whose buckets were counted elsewhere (in a counters
/// table): set once, encoded as a Prometheus histogram.
#[derive(Debug, Default)]
struct BucketedHistogram(std::sync::OnceLock<HistogramSnapshot>);

impl TypedMetric for BucketedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BucketedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0.get().copied().unwrap_or_default();
        // Per bucket, not cumulative (the encoder sums them, with `+`),
        // and the rest above the last bound in +Inf. The words come from
        // shared memory any process of this user may write: the running
        // total saturates, and each bucket is what it adds to it, so the
        // encoder's sum never overflows (a panic in a debug build) and
        // the cumulative buckets never go down.
        let mut counted = 0u64;
        let mut buckets: Vec<(f64, u64)> = BUCKET_BOUNDS_NS
            .iter()
            .zip(h.buckets)
            .map(|(&bound, n)| {
                let before = counted;
                counted = counted.saturating_add(n);
                (bound as f64 / 1e9, counted - before)
            })
            .collect();
        buckets.push((f64::INFINITY, h.count.saturating_sub(counted)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Renders `report` (and `reclaimed_total`, the entries this monitor has
/// reclaimed since it started) as OpenMetrics text.
pub fn render(report: &Report, reclaimed_total: u64) -> String {
    let mut registry = Registry::default();
    let reg_int = |registry: &mut Registry, name: &str, help: &str| {
        let f = IntGauge::default();
        registry.register(name, help, f.clone());
        f
    };
    let reg_float = |registry: &mut Registry, name: &str, help: &str| {
        let f = FloatGauge::default();
        registry.register(name, help, f.clone());
        f
    };
    let reg_counter = |registry: &mut Registry, name: &str, help: &str| {
        let f = IntCounter::default();
        registry.register(name, help, f.clone());
        f
    };
    let head = reg_int(
        &mut registry,
        "zerocast_topic_head",
        "Next sequence to be published on the topic",
    );
    let capacity = reg_int(
        &mut registry,
        "zerocast_topic_capacity_slots",
        "Ring capacity in slots",
    );
    let stale = reg_int(
        &mut registry,
        "zerocast_topic_stale",
        "1 if the segment's creator and every registered process are dead",
    );
    let published = reg_counter(
        &mut registry,
        "zerocast_publisher_published",
        "Frames published through the publisher entry",
    );
    let gating_waits = reg_counter(
        &mut registry,
        "zerocast_publisher_gating_waits",
        "Publishes that had to wait for a gating subscriber (or found the ring full on one)",
    );
    let gating_wait = FloatCounter::default();
    registry.register(
        "zerocast_publisher_gating_wait_seconds",
        "Time publishes waited for gating subscribers, in total",
        gating_wait.clone(),
    );
    let hb_age = reg_float(
        &mut registry,
        "zerocast_publisher_heartbeat_age_seconds",
        "Time since the publisher's last heartbeat stamp",
    );
    let silent = reg_float(
        &mut registry,
        "zerocast_publisher_silent_seconds",
        "Time since the publisher's last heartbeat or observed progress",
    );
    let rate = reg_float(
        &mut registry,
        "zerocast_publisher_rate_per_second",
        "Frames per second over the last sample",
    );
    let p_alive = reg_int(
        &mut registry,
        "zerocast_publisher_alive",
        "1 if the publisher's process is alive (pid and start time)",
    );
    let state = reg_int(
        &mut registry,
        "zerocast_publisher_state",
        "1 for the publisher's current state (healthy, degraded, failed), 0 for the others",
    );
    let lag = reg_int(
        &mut registry,
        "zerocast_subscriber_lag",
        "Head minus the subscriber's cursor: frames published that it has not read",
    );
    let lagged = reg_counter(
        &mut registry,
        "zerocast_subscriber_lagged",
        "Frames the subscriber lost to lapping",
    );
    let hold = reg_int(
        &mut registry,
        "zerocast_subscriber_gating_hold",
        "Frames a gating subscriber keeps publishers from overwriting",
    );
    let s_alive = reg_int(
        &mut registry,
        "zerocast_subscriber_alive",
        "1 if the subscriber's process is alive",
    );
    let seen = reg_float(
        &mut registry,
        "zerocast_subscriber_last_seen_seconds",
        "Time since the subscriber last read or polled (refreshed every 256 calls and before every sleep)",
    );
    let recorder = reg_int(
        &mut registry,
        "zerocast_recorder_lag",
        "Head minus the position of the topic's recorder",
    );
    let wal = reg_int(
        &mut registry,
        "zerocast_wal_bytes",
        "Bytes of the topic's WAL segment files on disk (preallocated)",
    );
    let reclaimed = Counter::<u64>::default();
    registry.register(
        "zerocast_health_reclaimed_entries",
        "Table entries of dead processes this monitor reclaimed",
        reclaimed.clone(),
    );
    reclaimed.inc_by(reclaimed_total);
    let failures = reg_counter(
        &mut registry,
        "zerocast_publisher_failures",
        "Publisher transitions to Failed this monitor saw on the topic",
    );

    for t in &report.topics {
        let topic = vec![("topic".to_owned(), t.topic.clone())];
        head.get_or_create(&topic).set(int(t.head));
        capacity.get_or_create(&topic).set(int(t.capacity));
        stale.get_or_create(&topic).set(i64::from(t.stale));
        failures.get_or_create(&topic).inc_by(t.failures_total);
        if let Some(l) = t.recorder_lag {
            recorder.get_or_create(&topic).set(int(l));
        }
        if let Some(b) = t.wal_bytes {
            wal.get_or_create(&topic).set(int(b));
        }
        for p in &t.publishers {
            let labels = vec![
                ("topic".to_owned(), t.topic.clone()),
                ("index".to_owned(), p.index.to_string()),
                ("name".to_owned(), p.name.clone()),
                ("pid".to_owned(), p.pid.to_string()),
            ];
            published.get_or_create(&labels).inc_by(p.published);
            gating_waits.get_or_create(&labels).inc_by(p.gating_waits);
            gating_wait
                .get_or_create(&labels)
                .inc_by(p.gating_wait.as_secs_f64());
            if let Some(age) = p.heartbeat_age {
                hb_age.get_or_create(&labels).set(age.as_secs_f64());
            }
            silent
                .get_or_create(&labels)
                .set(p.silent_for.as_secs_f64());
            if let Some(r) = p.rate {
                rate.get_or_create(&labels).set(r);
            }
            p_alive.get_or_create(&labels).set(i64::from(p.alive));
            for s in PublisherState::ALL {
                let mut l = labels.clone();
                l.push(("state".to_owned(), s.name().to_owned()));
                state.get_or_create(&l).set(i64::from(p.state == s));
            }
        }
        for s in &t.subscribers {
            let labels = vec![
                ("topic".to_owned(), t.topic.clone()),
                ("index".to_owned(), s.index.to_string()),
                ("name".to_owned(), s.name.clone()),
                ("pid".to_owned(), s.pid.to_string()),
            ];
            lag.get_or_create(&labels).set(int(s.lag));
            lagged.get_or_create(&labels).inc_by(s.lagged_total);
            if let Some(h) = s.gating_hold(t.head) {
                hold.get_or_create(&labels).set(int(h));
            }
            s_alive.get_or_create(&labels).set(i64::from(s.alive));
            if let Some(age) = s.last_seen_age {
                seen.get_or_create(&labels).set(age.as_secs_f64());
            }
        }
    }
    render_counters(&mut registry, report);
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The metrics of the namespace's counters table: recorders' WAL counts,
/// batchers' commits.
fn render_counters(registry: &mut Registry, report: &Report) {
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let f = IntCounter::default();
        registry.register(name, help, f.clone());
        f
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let f = IntGauge::default();
        registry.register(name, help, f.clone());
        f
    };
    let rate = |registry: &mut Registry, name: &str, help: &str| {
        let f = FloatGauge::default();
        registry.register(name, help, f.clone());
        f
    };
    let histogram = |registry: &mut Registry, name: &str, help: &str| {
        let f = Histograms::default();
        registry.register(name, help, f.clone());
        f
    };
    let alive = gauge(
        registry,
        "zerocast_counters_alive",
        "1 if the process owning the counters entry is alive",
    );
    let wal_records = counter(
        registry,
        "zerocast_wal_records",
        "Records the recorder appended to the topic's WAL",
    );
    let wal_record_bytes = counter(
        registry,
        "zerocast_wal_record_bytes",
        "Bytes of the records appended to the WAL, record headers included",
    );
    let wal_fsyncs = counter(
        registry,
        "zerocast_wal_fsyncs",
        "fdatasyncs of the WAL's active segment",
    );
    let wal_fsync = histogram(
        registry,
        "zerocast_wal_fsync_seconds",
        "Latency of the WAL's fdatasyncs",
    );
    let wal_last = gauge(
        registry,
        "zerocast_wal_last_sequence",
        "Last sequence appended to the WAL",
    );
    let wal_rate = rate(
        registry,
        "zerocast_wal_records_per_second",
        "WAL records appended per second over the last sample",
    );
    let rows = counter(
        registry,
        "zerocast_batch_rows",
        "Frames the batcher committed to its sink (rows of the message tables)",
    );
    let batches = counter(registry, "zerocast_batch_batches", "Batches committed");
    let lost = counter(
        registry,
        "zerocast_batch_lost",
        "Sequences committed as lost by the bus",
    );
    let missing = counter(
        registry,
        "zerocast_batch_missing",
        "Sequences committed as missing (in neither the log nor the ring)",
    );
    let invalid = counter(
        registry,
        "zerocast_batch_invalid",
        "Invalid frames committed",
    );
    let committed = gauge(
        registry,
        "zerocast_batch_committed_sequence",
        "Last sequence the batcher committed",
    );
    let rows_rate = rate(
        registry,
        "zerocast_batch_rows_per_second",
        "Rows committed per second over the last sample",
    );
    let commit = histogram(
        registry,
        "zerocast_batch_commit_seconds",
        "Time the sink took to commit one batch",
    );
    for c in &report.counters {
        let e = &c.entry;
        let labels = vec![
            ("topic".to_owned(), e.topic.clone()),
            ("name".to_owned(), e.name.clone()),
            ("pid".to_owned(), e.pid.to_string()),
        ];
        let mut with_kind = vec![("kind".to_owned(), e.kind.name().to_owned())];
        with_kind.extend(labels.iter().cloned());
        alive.get_or_create(&with_kind).set(i64::from(e.alive));
        let v = &e.values;
        match e.kind {
            CounterKind::Wal => {
                wal_records.get_or_create(&labels).inc_by(v[wal::RECORDS]);
                wal_record_bytes
                    .get_or_create(&labels)
                    .inc_by(v[wal::RECORD_BYTES]);
                wal_fsyncs.get_or_create(&labels).inc_by(v[wal::FSYNCS]);
                let _ = wal_fsync.get_or_create(&labels).0.set(e.histogram);
                if let Some(last) = v[wal::LAST_SEQ].checked_sub(1) {
                    wal_last.get_or_create(&labels).set(int(last));
                }
                if let Some(r) = c.rate {
                    wal_rate.get_or_create(&labels).set(r);
                }
            }
            CounterKind::Batch => {
                rows.get_or_create(&labels).inc_by(v[batch::ROWS]);
                batches.get_or_create(&labels).inc_by(v[batch::BATCHES]);
                lost.get_or_create(&labels).inc_by(v[batch::LOST]);
                missing.get_or_create(&labels).inc_by(v[batch::MISSING]);
                invalid.get_or_create(&labels).inc_by(v[batch::INVALID]);
                let _ = commit.get_or_create(&labels).0.set(e.histogram);
                if let Some(last) = v[batch::COMMITTED_SEQ].checked_sub(1) {
                    committed.get_or_create(&labels).set(int(last));
                }
                if let Some(r) = c.rate {
                    rows_rate.get_or_create(&labels).set(r);
                }
            }
        }
    }
}
