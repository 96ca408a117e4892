//! The monitor's view of the namespace's counters table
//! ([`zerocast_ipc::counters`]): what the recorders (WAL records, bytes,
//! fsync latency) and batchers (rows, batches, commit latency) export, with
//! a rate per entry computed between polls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use zerocast_ipc::counters::{
    batch, counters_path, wal, CounterKind, CounterSnapshot, CountersTable, COUNTERS_FILE,
};
use zerocast_ipc::Bus;

/// One entry of the counters table as a poll saw it.
#[derive(Debug, Clone)]
pub struct CounterReport {
    /// The entry: kind, labels, owner, liveness, values, histogram.
    pub entry: CounterSnapshot,
    /// Per second since the previous sample of the entry's main count
    /// (WAL records, batch rows); `None` on the first.
    pub rate: Option<f64>,
    /// Its process is gone and this poll freed the entry
    /// ([`super::HealthOptions::reclaim`]).
    pub reclaimed: bool,
}

impl CounterReport {
    /// The entry's main count: records for a WAL, rows for a batcher.
    pub fn main_count(&self) -> u64 {
        match self.entry.kind {
            CounterKind::Wal => self.entry.values[wal::RECORDS],
            CounterKind::Batch => self.entry.values[batch::ROWS],
        }
    }
}

/// The mapped table (re-opened when the file is re-created) and the rate
/// samples.
#[derive(Default)]
pub(super) struct CountersView {
    table: Option<(Arc<CountersTable>, u64)>,
    /// (time ns, main count, rate) at the last sample, by (index, owner
    /// word).
    samples: HashMap<(usize, u64), (u64, u64, Option<f64>)>,
}

impl CountersView {
    /// Reads every claimed entry of `bus`'s namespace at `now_ns`; frees
    /// dead owners' entries if `reclaim`. A counters file this build
    /// cannot read is reported as `(COUNTERS_FILE, why)` in `unreadable`
    /// (`@counters`: no topic has an `@`).
    pub(super) fn poll(
        &mut self,
        bus: &Bus,
        now_ns: u64,
        sample_every_ns: u64,
        reclaim: bool,
        unreadable: &mut Vec<(String, String)>,
    ) -> Vec<CounterReport> {
        use std::os::unix::fs::MetadataExt;
        let path: PathBuf = counters_path(bus.config());
        let Ok(meta) = std::fs::metadata(&path) else {
            self.table = None;
            self.samples.clear();
            return Vec::new();
        };
        if self
            .table
            .as_ref()
            .is_none_or(|(_, ino)| *ino != meta.ino())
        {
            match CountersTable::open(&path) {
                Ok(t) => self.table = Some((Arc::new(t), meta.ino())),
                Err(e) => {
                    self.table = None;
                    unreadable.push((COUNTERS_FILE.to_owned(), e.to_string()));
                    return Vec::new();
                }
            }
        }
        let Some((table, _)) = &self.table else {
            return Vec::new();
        };
        let freed = if reclaim {
            table.reclaim_dead()
        } else {
            Vec::new()
        };
        for s in &freed {
            tracing::warn!(
                target: "zerocast::health",
                "reclaimed the {} counters of {} {:?} (pid {}, gone)",
                s.kind.name(),
                s.topic,
                s.name,
                s.pid
            );
        }
        let mut seen = std::collections::HashSet::new();
        // What this poll freed is still reported, once, as dead and
        // reclaimed, with its last values: else a killed recorder would
        // vanish without ever being shown dead.
        let mut reports: Vec<CounterReport> = table
            .snapshot()
            .into_iter()
            .map(|entry| (entry, false))
            .chain(freed.into_iter().map(|entry| (entry, true)))
            .map(|(entry, reclaimed)| CounterReport {
                entry,
                rate: None,
                reclaimed,
            })
            .collect();
        for r in &mut reports {
            if r.reclaimed {
                continue;
            }
            let key = (r.entry.index, r.entry.owner);
            let count = r.main_count();
            let sample = self.samples.entry(key).or_insert((now_ns, count, None));
            if now_ns.saturating_sub(sample.0) >= sample_every_ns.max(1) {
                let dt = (now_ns - sample.0) as f64 / 1e9;
                sample.2 = Some(count.saturating_sub(sample.1) as f64 / dt);
                sample.0 = now_ns;
                sample.1 = count;
            }
            r.rate = sample.2;
            seen.insert(key);
        }
        self.samples.retain(|k, _| seen.contains(k));
        reports.sort_by_key(|r| r.entry.index);
        reports
    }
}
