//! `zerocast health`: the monitor's table, once or refreshed, state changes
//! on the health topic, and `/metrics`.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{Bus, RecvError, SubscriberOptions};

use super::{
    metrics, HealthEvent, HealthEvents, HealthMonitor, HealthOptions, Report, HEALTH_TOPIC,
};
use crate::signal;

/// Arguments of `zerocast health`.
#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// Refresh the table every interval until Ctrl-C, publishing state
    /// changes on the `health` topic (without it: print once, after two
    /// samples one interval apart, and exit 1 if a publisher is Failed or
    /// a topic cannot be read).
    #[arg(long)]
    pub watch: bool,
    /// Heartbeat interval publishers keep, in milliseconds (1 to 3600000):
    /// Degraded after one interval without a heartbeat or progress,
    /// Failed after two. Also the refresh period.
    #[arg(long, default_value_t = 1000, value_parser = parse_interval_ms, value_name = "MS")]
    pub interval: u64,
    /// Serve Prometheus metrics on http://ADDR/metrics until Ctrl-C
    /// (port 0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// WAL root directory (as given to `record --wal`): adds each topic's
    /// WAL bytes.
    #[arg(long, value_name = "DIR")]
    pub wal: Option<PathBuf>,
    /// Reclaim the entries of dead processes (their in-flight sequences
    /// declared lost, gating holds released, durable holds orphaned).
    /// Off by default: a monitor that cannot see a process (another PID
    /// namespace) would take it for dead.
    #[arg(long)]
    pub reclaim: bool,
    /// Print the state changes published on the `health` topic (by any
    /// monitor running with --watch or --listen) as they arrive, until
    /// Ctrl-C; one JSON object per line.
    #[arg(long, conflicts_with_all = ["watch", "listen"])]
    pub events: bool,
}

fn parse_interval_ms(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=3_600_000).contains(&n) => Ok(n),
        Ok(_) => Err("must be 1 to 3600000 milliseconds".to_owned()),
        Err(_) => Err("not a number of milliseconds".to_owned()),
    }
}

/// A monitor with what every poll does besides reading: publish the
/// transitions, count the reclaimed entries.
struct Watch {
    monitor: HealthMonitor,
    events: Option<HealthEvents>,
    reclaimed_total: u64,
    last: Option<Report>,
}

impl Watch {
    fn tick(&mut self) -> &Report {
        let report = self.monitor.poll(now_ns());
        self.reclaimed_total += report
            .topics
            .iter()
            .map(|t| t.reclaimed.len() as u64)
            .sum::<u64>()
            + report.counters.iter().filter(|c| c.reclaimed).count() as u64;
        if let Some(events) = &mut self.events {
            for t in &report.transitions {
                if let Err(e) = events.publish(t) {
                    tracing::warn!(target: "zerocast::health", "could not publish {t}: {e}");
                }
            }
        }
        self.last.insert(report)
    }
}

/// Sleeps `d` in short steps; false if a stop was requested (a signal,
/// or `done`).
fn pause(d: Duration, done: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    // Relaxed: a stop flag; the join after setting it synchronises.
    while !signal::stopped() && !done.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    false
}

/// `zerocast health --events`: follows the health topic.
fn follow_events(bus: &Bus) -> Result<(), String> {
    let mut sub = bus
        .subscriber(
            HEALTH_TOPIC,
            SubscriberOptions {
                name: "health-events".to_owned(),
                ..SubscriberOptions::default()
            },
        )
        .map_err(|e| format!("health topic: {e}"))?;
    let mut out = std::io::stdout().lock();
    while !signal::stopped() {
        let line = match sub.recv_timeout(Duration::from_millis(100)) {
            Ok(frame) => match HealthEvent::from_received(&frame) {
                Some(e) => serde_json::json!({
                    "seq": frame.seq,
                    "topic": e.topic,
                    "publisher": e.index,
                    "pid": e.pid,
                    "from": e.from.name(),
                    "to": e.to.name(),
                    "at_ns": e.at_ns,
                }),
                None => continue,
            },
            Err(RecvError::Empty) => continue,
            Err(RecvError::Lagged(n)) => serde_json::json!({"event": "lagged", "missed": n}),
            Err(RecvError::Lost(seq)) => serde_json::json!({"event": "lost", "seq": seq}),
        };
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

/// Runs `zerocast health`.
pub fn run(bus: &Bus, args: &HealthArgs) -> Result<(), String> {
    if args.events {
        return follow_events(bus);
    }
    let interval = Duration::from_millis(args.interval);
    let options = HealthOptions {
        interval,
        reclaim: args.reclaim,
        wal: args.wal.clone(),
        ..HealthOptions::default()
    };
    let continuous = args.watch || args.listen.is_some();
    let events = if continuous {
        Some(HealthEvents::open(bus).map_err(|e| format!("health topic: {e}"))?)
    } else {
        None
    };
    let mut watch = Watch {
        monitor: HealthMonitor::new(bus.clone(), options),
        events,
        reclaimed_total: 0,
        last: None,
    };
    if !continuous {
        // The first sample only sets the baseline for rates and trends:
        // nothing is reclaimed before the printed poll has seen it.
        watch.monitor.set_reclaim(false);
        watch.tick();
        pause(interval, &AtomicBool::new(false));
        watch.monitor.set_reclaim(args.reclaim);
        let report = watch.tick();
        print!("{}", table(report));
        let failed: Vec<String> = report
            .failed()
            .map(|(t, p)| format!("{} publisher {} (pid {})", t.topic, p.index, p.pid))
            .collect();
        // A topic it could not read fails the check too: a probe that sees
        // nothing must not pass (the counters table, metrics only, does
        // not count; nor does an idle segment of another pid namespace,
        // which the topic's next user takes over).
        let unreadable: Vec<&str> = report
            .unreadable
            .iter()
            .filter(|(what, _)| what != zerocast_ipc::counters::COUNTERS_FILE)
            .map(|(topic, _)| topic.as_str())
            .collect();
        let mut problems = Vec::new();
        if !failed.is_empty() {
            problems.push(format!(
                "{} publisher(s) Failed: {}",
                failed.len(),
                failed.join(", ")
            ));
        }
        if !unreadable.is_empty() {
            problems.push(format!(
                "{} topic(s) could not be read (see above): {}",
                unreadable.len(),
                unreadable.join(", ")
            ));
        }
        return if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        };
    }
    // Bound before anything runs: a taken address is an error at once.
    let listener = match args.listen {
        Some(addr) => {
            Some(std::net::TcpListener::bind(addr).map_err(|e| format!("--listen {addr}: {e}"))?)
        }
        None => None,
    };
    let shared = Arc::new(Mutex::new(watch));
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let shared = Arc::clone(&shared);
        let done = Arc::clone(&done);
        let print = args.watch;
        std::thread::Builder::new()
            .name("zerocast-health".to_owned())
            .spawn(move || loop {
                {
                    let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let report = w.tick();
                    if print {
                        let mut out = std::io::stdout().lock();
                        let mut written = Ok(());
                        if out.is_terminal() {
                            // Home and clear: the table refreshes in place.
                            written = write!(out, "\x1b[H\x1b[2J");
                        }
                        for t in &report.transitions {
                            written =
                                written.and_then(|()| writeln!(out, "{} {t}", clock(t.at_ns)));
                        }
                        written = written
                            .and_then(|()| write!(out, "{}", table(report)))
                            .and_then(|()| out.flush());
                        if written.is_err() {
                            // The reader went away (`| head`): stop, as
                            // a filter does, instead of watching unseen.
                            done.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                if !pause(interval, &done) {
                    break;
                }
            })
            .map_err(|e| format!("spawn the health thread: {e}"))?
    };
    let served = match listener {
        Some(listener) => {
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            println!("serving metrics on http://{addr}/metrics");
            let _ = std::io::stdout().flush();
            let shared = Arc::clone(&shared);
            let served = super::serve_metrics(
                listener,
                move || {
                    let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
                    w.tick();
                    let total = w.reclaimed_total;
                    w.last
                        .as_ref()
                        .map_or_else(String::new, |r| metrics::render(r, total))
                },
                signal::stopped,
            )
            .map_err(|e| format!("--listen {addr}: {e}"));
            // The server may have stopped on an error: stop the poller
            // with it. Relaxed: see `pause`.
            done.store(true, Ordering::Relaxed);
            served
        }
        None => Ok(()),
    };
    let _ = poller.join();
    served
}

/// `HH:MM:SS.mmm` (UTC) of a time in ns since the Unix epoch.
fn clock(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let (s, ms) = (ms / 1000, ms % 1000);
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

fn age(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()))
}

/// The report as the table `zerocast health` prints.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "namespace {} at {} UTC: {} topics, heartbeat interval {} ms",
        report.namespace,
        clock(report.at_ns),
        report.topics.len(),
        report.interval.as_millis()
    );
    for (topic, why) in &report.unreadable {
        let _ = writeln!(out, "\n{topic}: cannot open: {why}");
    }
    for (topic, why) in &report.idle_foreign {
        let _ = writeln!(out, "\n{topic}: not read (idle): {why}");
    }
    for t in &report.topics {
        let _ = write!(out, "\n{}: head {}, {} slots", t.topic, t.head, t.capacity);
        if let Some(l) = t.recorder_lag {
            let _ = write!(out, ", recorder lag {l}");
        }
        if let Some(b) = t.wal_bytes {
            let _ = write!(out, ", WAL {b} bytes");
        }
        if t.stale {
            let _ = write!(out, "  STALE (creator and users dead)");
        }
        out.push('\n');
        if !t.publishers.is_empty() {
            let _ = writeln!(
                out,
                "  {:<28} {:>7}  {:<9} {:>9} {:>9} {:>10} {:>9}  REASON",
                "PUBLISHER", "PID", "STATE", "HEARTBEAT", "SILENT", "PUBLISHED", "RATE/s"
            );
        }
        for p in &t.publishers {
            let _ = writeln!(
                out,
                "  {:<28} {:>7}  {:<9} {:>9} {:>9} {:>10} {:>9}  {}",
                format!("{} {}", p.index, p.name),
                p.pid,
                p.state.to_string(),
                age(p.heartbeat_age),
                age(Some(p.silent_for)),
                p.published,
                p.rate.map_or("-".to_owned(), |r| format!("{r:.1}")),
                p.reason
            );
            if p.gating_waits > 0 {
                let _ = writeln!(
                    out,
                    "  {:<28} waited for gating subscribers {} times, {} in all",
                    "",
                    p.gating_waits,
                    age(Some(p.gating_wait))
                );
            }
        }
        if !t.subscribers.is_empty() {
            let _ = writeln!(
                out,
                "  {:<28} {:>7}  {:<9} {:>9} {:>9} {:>10} {:>9}  SEEN",
                "SUBSCRIBER", "PID", "PROCESS", "NEXT", "LAG", "TREND", "HOLD"
            );
        }
        for s in &t.subscribers {
            let process = if s.orphaned {
                "orphaned"
            } else if s.alive {
                "alive"
            } else {
                "DEAD"
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>7}  {:<9} {:>9} {:>9} {:>10} {:>9}  {}{}",
                format!("{} {}", s.index, s.name),
                s.pid,
                process,
                s.cursor,
                s.lag,
                s.trend.name(),
                s.gating_hold(t.head)
                    .map_or("-".to_owned(), |h| h.to_string()),
                age(s.last_seen_age),
                if s.lagged_total > 0 {
                    format!(", lagged {} in total", s.lagged_total)
                } else {
                    String::new()
                }
            );
        }
        for r in &t.reclaimed {
            let _ = writeln!(out, "  reclaimed {r}");
        }
    }
    if !report.counters.is_empty() {
        let _ = writeln!(
            out,
            "\n  {:<28} {:>7}  {:<9} {:>12} {:>9} {:>9} {:>9}  DETAIL",
            "COUNTERS", "PID", "PROCESS", "COUNT", "RATE/s", "LAST SEQ", "MEAN LAT"
        );
    }
    for c in &report.counters {
        use zerocast_ipc::counters::{batch, wal, CounterKind};
        let e = &c.entry;
        let process = if c.reclaimed {
            "reclaimed"
        } else if e.alive {
            "alive"
        } else {
            "DEAD"
        };
        let (last, detail) = match e.kind {
            CounterKind::Wal => (
                e.values[wal::LAST_SEQ],
                format!(
                    "{} record bytes, {} fsyncs",
                    e.values[wal::RECORD_BYTES],
                    e.values[wal::FSYNCS]
                ),
            ),
            CounterKind::Batch => (
                e.values[batch::COMMITTED_SEQ],
                format!(
                    "{} batches, {} lost, {} missing, {} invalid",
                    e.values[batch::BATCHES],
                    e.values[batch::LOST],
                    e.values[batch::MISSING],
                    e.values[batch::INVALID]
                ),
            ),
        };
        let h = &e.histogram;
        let _ = writeln!(
            out,
            "  {:<28} {:>7}  {:<9} {:>12} {:>9} {:>9} {:>9}  {}",
            format!("{} {} {}", e.kind.name(), e.topic, e.name),
            e.pid,
            process,
            c.main_count(),
            c.rate.map_or("-".to_owned(), |r| format!("{r:.1}")),
            last.checked_sub(1)
                .map_or("-".to_owned(), |l| l.to_string()),
            if h.count > 0 {
                format!("{:.3}ms", h.sum_ns as f64 / h.count as f64 / 1e6)
            } else {
                "-".to_owned()
            },
            detail
        );
    }
    out
}
