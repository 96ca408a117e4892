//! A [`Report`] in the Prometheus / OpenMetrics text exposition format
//! (prometheus-client's encoder), for `/metrics`.
//!
//! Every number is read from the segments at the poll (counters the
//! segments hold are exported as they are, not accumulated here), so two
//! monitors scraping the same namespace report the same values. Metric
//! names (counters get `_total` appended by the encoder):
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `zerocast_topic_head` | gauge | topic | next sequence to be published |
//! | `zerocast_topic_capacity_slots` | gauge | topic | ring capacity |
//! | `zerocast_topic_stale` | gauge | topic | 1 if creator and users are all dead |
//! | `zerocast_publisher_published_total` | counter | topic, index, name, pid | frames published through the entry |
//! | `zerocast_publisher_heartbeat_age_seconds` | gauge | topic, index, name, pid | time since the heartbeat stamp |
//! | `zerocast_publisher_silent_seconds` | gauge | topic, index, name, pid | time since the last heartbeat or progress |
//! | `zerocast_publisher_rate_per_second` | gauge | topic, index, name, pid | frames/s over the last sample |
//! | `zerocast_publisher_alive` | gauge | topic, index, name, pid | process alive (pid and start time) |
//! | `zerocast_publisher_state` | gauge | topic, index, name, pid, state | 1 for the current state, 0 for the others |
//! | `zerocast_subscriber_lag` | gauge | topic, index, name, pid | head minus cursor |
//! | `zerocast_subscriber_lagged_total` | counter | topic, index, name, pid | frames lost to lapping |
//! | `zerocast_subscriber_gating_hold` | gauge | topic, index, name, pid | frames its gating hold keeps (gating only) |
//! | `zerocast_subscriber_alive` | gauge | topic, index, name, pid | process alive |
//! | `zerocast_subscriber_last_seen_seconds` | gauge | topic, index, name, pid | time since it last read or polled |
//! | `zerocast_recorder_lag` | gauge | topic | head minus the recorder's position |
//! | `zerocast_wal_bytes` | gauge | topic | bytes of WAL segment files (`--wal`) |
//! | `zerocast_health_reclaimed_entries_total` | counter | | entries of dead processes this monitor reclaimed |
//! | `zerocast_publisher_failures_total` | counter | topic | publisher transitions to Failed this monitor saw |
//!
//! A Failed publisher whose entry was reclaimed stays in the publisher
//! metrics, as Failed, for [`super::KEEP_GONE_FOR`] (60 s) or until a
//! publisher of the same name registers on the topic.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::{PublisherState, Report};

type Labels = Vec<(String, String)>;
type IntGauge = Family<Labels, Gauge>;
type FloatGauge = Family<Labels, Gauge<f64, AtomicU64>>;
type IntCounter = Family<Labels, Counter>;

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
        "Time since the subscriber last read or polled",
    );
    let recorder = reg_int(
        &mut registry,
        "zerocast_recorder_lag",
        "Head minus the position of the topic's recorder",
    );
    let wal = reg_int(
        &mut registry,
        "zerocast_wal_bytes",
        "Bytes of the topic's WAL segment files",
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
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}
