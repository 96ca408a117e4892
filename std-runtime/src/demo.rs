//! `zerocast demo`: a synthetic exchange publishing to every topic from this
//! process, subscriber processes of different kinds, a live table every
//! second, and a summary at the end.
//!
//! Each subscriber process checks its own sequence: every jump it sees must
//! be explained by a `Lagged(n)` or `Lost(seq)` the bus reported; anything
//! else is an unexplained gap and fails the demo.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{
    Bus, GatingPolicy, Publisher, PublisherOptions, RecvError, Start, SubscriberOptions, TopicKind,
    WaitStrategy,
};

use crate::feed::Feed;
use crate::signal;

/// Options of `zerocast demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Seconds to run (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Instruments in the synthetic feed (1 to 65536).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub instruments: u32,
    /// Frames per second over all topics (1 to 100000000).
    #[arg(long, default_value_t = 100_000.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Frames per batch publish (1 to 1024).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
    /// Serve the live page and /ws here (a free port if it is taken; `off`:
    /// no gateway).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| "not a number of seconds".to_owned())?;
    if v.is_finite() && v > 0.0 && v <= 365.0 * 86_400.0 {
        Ok(v)
    } else {
        Err(
            "seconds must be more than 0 and at most 31536000 (leave --duration out to run until Ctrl-C)"
                .to_owned(),
        )
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| "not a number".to_owned())?;
    if v.is_finite() && (1.0..=1e8).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s}: frames per second must be from 1 to 100000000"
        ))
    }
}

/// Options of the hidden `zerocast demo-sub` child.
#[derive(clap::Args, Debug)]
pub struct DemoSubArgs {
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Name.
    #[arg(long)]
    pub name: String,
    /// block, yield or spin.
    #[arg(long, default_value = "block")]
    pub wait: String,
    /// Gating subscriber.
    #[arg(long)]
    pub gating: bool,
}

struct SubPlan {
    topic: String,
    name: String,
    wait: &'static str,
    gating: bool,
}

fn plan(bus: &Bus) -> Vec<SubPlan> {
    let topics = &bus.config().topics;
    let mut plan = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        let short = t.name.split('_').next().unwrap_or(&t.name).to_owned();
        let gating = i + 1 == topics.len() && topics.len() > 1;
        plan.push(SubPlan {
            topic: t.name.clone(),
            name: format!("{short}-{}", if gating { "gating" } else { "block" }),
            wait: "block",
            gating,
        });
        if i == 0 {
            plan.push(SubPlan {
                topic: t.name.clone(),
                name: format!("{short}-yield"),
                wait: "yield",
                gating: false,
            });
        }
    }
    plan
}

fn weight(kind: TopicKind) -> f64 {
    match kind {
        TopicKind::Trade => 6.0,
        TopicKind::L2 => 3.0,
        _ => 1.0,
    }
}

struct Feeding {
    topic: String,
    kind: TopicKind,
    publisher: Publisher,
    share: f64,
    sent: u64,
    full: u64,
    last_sent: u64,
}

fn us(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.1}µs", ns / 1e3)
    }
}

/// Runs the demo, in namespace `namespace` when given on the command line
/// (`--namespace`), else in its own `demo-<pid>`: `ZEROCAST_NAMESPACE` and
/// the config file's namespace are ignored, so that a demo never publishes
/// into a namespace that production processes use by accident.
///
/// At the end it removes the segments it used, except any that another
/// live process still uses (their subscribers would be left on orphaned
/// rings); it says which it left.
pub fn run(
    bus: Bus,
    namespace: Option<&String>,
    config: Option<&PathBuf>,
    args: &DemoArgs,
) -> Result<(), String> {
    let mut c = bus.config().clone();
    c.namespace = match namespace {
        Some(ns) => ns.clone(),
        None => format!("demo-{}", std::process::id()),
    };
    let bus = Bus::new(c);
    let namespace = bus.config().namespace.clone();
    // Demos killed by SIGKILL leave their segments (tens of MB in memory):
    // each demo removes those nobody uses any more.
    let dead = remove_dead_demo_segments(&bus);
    if !dead.is_empty() {
        println!(
            "removed the segments left by dead demos: {}",
            dead.iter()
                .map(|(ns, n)| format!("{ns} ({n} files)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for t in &bus.config().topics {
        let users = other_users(&bus, &t.name);
        if users > 0 {
            tracing::warn!(
                "namespace {namespace}: topic {} already has {users} live users or durable holds; the demo publishes synthetic frames to them",
                t.name
            );
        }
        bus.segment(&t.name).map_err(|e| e.to_string())?;
    }
    let gateway = crate::gateway::spawn_for_demo(&bus, &args.gateway);
    if let Some(g) = &gateway {
        println!("live page: http://{}/", g.addr);
    }
    let result = run_inner(&bus, config, args);
    drop(gateway);
    let (removed, left) = remove_unused_segments(&bus);
    for path in &removed {
        tracing::debug!("removed {}", path.display());
    }
    if left.is_empty() {
        println!("removed the segments of namespace {namespace}");
    } else {
        println!(
            "removed the unused segments of namespace {namespace}; left {} (still used by other live processes, processes that map them, or durable holds)",
            left.join(", ")
        );
    }
    result
}

/// Removes the segments, ack channels and half-built files of namespaces
/// `demo-<pid>` (other than `bus`'s) whose demo process is gone and whose
/// segments no live process uses or holds ([`Segment::is_stale`], as
/// `zerocast stat --remove-stale` decides): (namespace, files removed) for
/// each namespace it removed files of. A segment it cannot open, or still
/// in use, is left alone.
fn remove_dead_demo_segments(bus: &Bus) -> Vec<(String, usize)> {
    let prefix = format!("{}demo-", zerocast_ipc::config::SEGMENT_PREFIX);
    let mut namespaces: Vec<String> = std::fs::read_dir(zerocast_ipc::config::shm_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid = name.strip_prefix(&prefix)?.split('.').next()?;
            // A pid made of digits only: the demo's own naming.
            let parsed: u32 = pid
                .parse()
                .ok()
                .filter(|_| pid.bytes().all(|b| b.is_ascii_digit()))?;
            (!process_alive(parsed)).then(|| format!("demo-{pid}"))
        })
        .filter(|ns| *ns != bus.config().namespace)
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut removed = Vec::new();
    for ns in namespaces {
        let mut c = bus.config().clone();
        c.namespace = ns.clone();
        let dead = Bus::new(c);
        let mut n = 0;
        for (topic, path) in dead.list_segments() {
            let access = dead
                .config()
                .topic(&topic)
                .map(|t| t.access)
                .unwrap_or_default();
            let Ok(seg) = zerocast_ipc::Segment::open_with(&path, &topic, access) else {
                continue;
            };
            if !seg.is_stale() {
                continue;
            }
            // Unmapped first: our own lock would keep it in use. Removed
            // only while no process maps it (or its ack channel), and only
            // the file judged here.
            let identity = seg.file_id();
            drop(seg);
            let acks = dead.config().ack_path(&topic);
            let had_acks = acks.exists();
            if let Ok(zerocast_ipc::segment::Removal::Removed) =
                zerocast_ipc::segment::remove_unused(&[&path, &acks], Some(identity))
            {
                n += 1 + usize::from(had_acks);
            }
        }
        for p in dead.abandoned_init_files() {
            if std::fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
        // Its counters table, once no live process uses it (the check
        // `stat --remove-stale` makes).
        let counters = zerocast_ipc::counters::counters_path(dead.config());
        if let Ok(true) = zerocast_ipc::counters::CountersTable::remove_if_stale(&counters) {
            n += 1;
        }
        if n > 0 {
            removed.push((ns, n));
        }
    }
    removed
}

/// Whether process `pid` exists (signal 0: permission denied means it does).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true; // never a demo's pid: leave it alone
    }
    // SAFETY: signal 0 checks only that the process exists; nothing is sent.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Users of `topic`'s segment other than this process: live processes and
/// durable holds waiting for their subscriber (0 if it has no segment).
fn other_users(bus: &Bus, topic: &str) -> usize {
    let Ok(seg) = bus.open_segment(topic) else {
        return 0;
    };
    seg.users_except(std::process::id())
}

/// Removes the segments (and ack channels) of `bus`'s topics that no other
/// live process uses: (paths removed, topics left in place).
fn remove_unused_segments(bus: &Bus) -> (Vec<PathBuf>, Vec<String>) {
    let (mut removed, mut left) = (Vec::new(), Vec::new());
    for t in &bus.config().topics {
        let others = other_users(bus, &t.name);
        if others > 0 {
            left.push(format!("{} ({others} users)", t.name));
            continue;
        }
        // Only while no process maps them (a monitor, a process of the
        // namespace opening it now: one the pid tables above do not show).
        let (seg, acks) = (
            bus.config().segment_path(&t.name),
            bus.config().ack_path(&t.name),
        );
        let had = [seg.exists(), acks.exists()];
        // The gateway's history threads (a page resuming when the demo
        // stopped) let go of theirs within moments of the stop: a mapped
        // segment is looked at again for up to a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let removal = loop {
            match zerocast_ipc::segment::remove_unused(&[&seg, &acks], None) {
                Ok(zerocast_ipc::segment::Removal::InUse(_))
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match removal {
            Ok(zerocast_ipc::segment::Removal::Removed) => {
                removed.extend(
                    [seg, acks]
                        .into_iter()
                        .zip(had)
                        .filter(|(_, h)| *h)
                        .map(|(p, _)| p),
                );
            }
            Ok(zerocast_ipc::segment::Removal::InUse(_)) => {
                left.push(format!("{} (a process maps it)", t.name));
            }
            Ok(zerocast_ipc::segment::Removal::Gone) => {}
            Err(e) => left.push(format!("{} ({e})", t.name)),
        }
    }
    (removed, left)
}

fn run_inner(bus: &Bus, config: Option<&PathBuf>, args: &DemoArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let plan = plan(bus);
    let reports: Arc<Mutex<Vec<Option<Value>>>> = Arc::new(Mutex::new(vec![None; plan.len()]));
    // Stopped on every way out of this function: an error (`?`) or a
    // panic after the first child started included.
    let mut children = Children::default();
    for (i, p) in plan.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.args([
            "--namespace",
            &bus.config().namespace,
            "demo-sub",
            "--topic",
            &p.topic,
            "--name",
            &p.name,
            "--wait",
            p.wait,
        ]);
        if p.gating {
            cmd.arg("--gating");
        }
        cmd.env(PARENT_ENV, std::process::id().to_string());
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start subscriber process {}: {e}", p.name))?;
        let stdout = child.stdout.take().expect("piped");
        let reports = Arc::clone(&reports);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    reports.lock().expect("reports lock")[i] = Some(v);
                }
            }
        });
        children.0.push(child);
    }
    // Wait until every subscriber has registered, so none misses the start.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while reports
        .lock()
        .expect("reports lock")
        .iter()
        .any(Option::is_none)
    {
        if signal::stopped() {
            children.stop();
            println!("stopped before the feed started");
            return Ok(());
        }
        if Instant::now() > ready_by {
            children.stop();
            return Err("subscriber processes did not start within 10s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "zerocast demo: namespace {}, {} topics, {} subscriber processes, {:.0} frames/s, {} instruments",
        bus.config().namespace,
        bus.config().topics.len(),
        plan.len(),
        args.rate,
        args.instruments
    );
    let total_weight: f64 = bus.config().topics.iter().map(|t| weight(t.kind)).sum();
    let mut feeds = Vec::new();
    for t in &bus.config().topics {
        let publisher = bus
            .publisher_with(
                &t.name,
                PublisherOptions {
                    name: "demo-feed".into(),
                    gating: GatingPolicy::Wait(Duration::from_millis(5)),
                },
            )
            .map_err(|e| e.to_string())?;
        feeds.push(Feeding {
            topic: t.name.clone(),
            kind: t.kind,
            publisher,
            share: weight(t.kind) / total_weight,
            sent: 0,
            full: 0,
            last_sent: 0,
        });
    }
    let mut feed = Feed::new(args.instruments as usize, 42);
    let start = Instant::now();
    let mut next_table = start + Duration::from_secs(1);
    let mut next_heartbeat = start;
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let batch = u64::from(args.batch);
    loop {
        let now = Instant::now();
        if signal::stopped() || end.is_some_and(|e| now >= e) {
            break;
        }
        let elapsed = now.duration_since(start).as_secs_f64();
        for f in &mut feeds {
            let due = (elapsed * args.rate * f.share) as u64;
            while f.sent < due {
                let n = batch.min(due - f.sent) as usize;
                match crate::feed::publish_synthetic(&mut f.publisher, &mut feed, f.kind, n) {
                    Ok(_) => f.sent += n as u64,
                    Err(zerocast_ipc::Error::RingFull { .. }) => {
                        f.full += 1;
                        break;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        if now >= next_heartbeat {
            for f in &mut feeds {
                let _ = f.publisher.send_heartbeat();
            }
            next_heartbeat = now + Duration::from_millis(100);
        }
        if now >= next_table {
            print_table(
                bus,
                &mut feeds,
                &reports.lock().expect("reports lock"),
                elapsed,
            );
            next_table += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the subscribers drain what is in flight, then stop them.
    std::thread::sleep(Duration::from_millis(300));
    // Only final reports count from here on (a child that already gave
    // one keeps it).
    for r in reports.lock().expect("reports lock").iter_mut() {
        if !r.as_ref().is_some_and(|v| v["final"] == true) {
            *r = None;
        }
    }
    children.stop();
    let deadline = Instant::now() + Duration::from_secs(3);
    while reports
        .lock()
        .expect("reports lock")
        .iter()
        .any(|r| !r.as_ref().is_some_and(|v| v["final"] == true))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let finals = reports.lock().expect("reports lock").clone();
    summary(&feeds, &plan, &finals, elapsed)
}

/// The demo's subscriber processes, stopped (SIGTERM, then SIGKILL after
/// 3 s) by [`Children::stop`] or, on any other way out, when dropped: a
/// demo that fails after they started must not leave them running on its
/// segments.
#[derive(Default)]
struct Children(Vec<Child>);

impl Children {
    /// Stops and reaps every child (once: a reaped child's pid may be
    /// reused, so it is never signalled again).
    fn stop(&mut self) {
        stop_children(&mut self.0);
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stop_children(children: &mut [Child]) {
    for c in children.iter() {
        // SAFETY: sending SIGTERM to our own child process, not yet reaped
        // (`Children::stop` drops each after reaping it).
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for c in children.iter_mut() {
        loop {
            if matches!(c.try_wait(), Ok(Some(_))) {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn print_table(bus: &Bus, feeds: &mut [Feeding], reports: &[Option<Value>], elapsed: f64) {
    let mut line = format!("\n[{elapsed:5.1}s] published/s:");
    for f in feeds.iter_mut() {
        line += &format!("  {} {}", f.topic, f.sent - f.last_sent);
        if f.full > 0 {
            line += &format!(" (held by gating: {})", f.full);
        }
        f.last_sent = f.sent;
    }
    println!("{line}");
    println!(
        "  {:<16} {:<16} {:>9} {:>7} {:>7} {:>5} {:>6} {:>9} {:>9}",
        "subscriber", "topic", "frames/s", "lag", "lagged", "lost", "gaps", "p50", "p99"
    );
    for r in reports.iter().flatten() {
        let topic = r["topic"].as_str().unwrap_or("?");
        let name = r["name"].as_str().unwrap_or("?");
        // Lag from the live subscriber table, not the once-a-second report.
        let lag = bus
            .open_segment(topic)
            .ok()
            .and_then(|seg| {
                let head = seg.ring().head();
                seg.header()
                    .subscribers
                    .iter()
                    // Acquire: pairs with the Release pid store of registration.
                    .filter(|s| s.pid.load(std::sync::atomic::Ordering::Acquire) != 0)
                    .find(|s| zerocast_ipc::layout::load_name(&s.name) == name)
                    // Relaxed: a monitoring snapshot.
                    .map(|s| {
                        head.saturating_sub(s.cursor.load(std::sync::atomic::Ordering::Relaxed))
                    })
            })
            .unwrap_or(0);
        println!(
            "  {:<16} {:<16} {:>9} {:>7} {:>7} {:>5} {:>6} {:>9} {:>9}",
            r["name"].as_str().unwrap_or("?"),
            topic,
            r["interval_frames"].as_u64().unwrap_or(0),
            lag,
            r["lagged"].as_u64().unwrap_or(0),
            r["lost"].as_u64().unwrap_or(0),
            r["unexplained"].as_u64().unwrap_or(0),
            us(r["p50_ns"].as_f64().unwrap_or(0.0)),
            us(r["p99_ns"].as_f64().unwrap_or(0.0)),
        );
    }
}

fn summary(
    feeds: &[Feeding],
    plan: &[SubPlan],
    reports: &[Option<Value>],
    elapsed: f64,
) -> Result<(), String> {
    println!("\n=== summary after {elapsed:.1}s ===");
    for f in feeds {
        println!(
            "published {:>10} frames to {:<16} ({:.0}/s){}",
            f.sent,
            f.topic,
            f.sent as f64 / elapsed.max(1e-9),
            if f.full > 0 {
                format!(", held by a gating subscriber {} times", f.full)
            } else {
                String::new()
            }
        );
    }
    println!(
        "{:<16} {:<16} {:>10} {:>10} {:>8} {:>5} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "subscriber",
        "topic",
        "received",
        "heartbeats",
        "lagged",
        "lost",
        "unexplained",
        "p50",
        "p99",
        "p99.9",
        "max"
    );
    let mut unexplained = 0;
    let mut missing = Vec::new();
    for (p, r) in plan.iter().zip(reports) {
        let Some(r) = r.as_ref().filter(|r| r["final"] == true) else {
            missing.push(p.name.clone());
            continue;
        };
        unexplained += r["unexplained"].as_u64().unwrap_or(0);
        println!(
            "{:<16} {:<16} {:>10} {:>10} {:>8} {:>5} {:>12} {:>9} {:>9} {:>9} {:>9}",
            p.name,
            p.topic,
            r["received"].as_u64().unwrap_or(0),
            r["heartbeats"].as_u64().unwrap_or(0),
            r["lagged"].as_u64().unwrap_or(0),
            r["lost"].as_u64().unwrap_or(0),
            r["unexplained"].as_u64().unwrap_or(0),
            us(r["p50_ns"].as_f64().unwrap_or(0.0)),
            us(r["p99_ns"].as_f64().unwrap_or(0.0)),
            us(r["p999_ns"].as_f64().unwrap_or(0.0)),
            us(r["max_ns"].as_f64().unwrap_or(0.0)),
        );
    }
    println!(
        "received: every frame read, heartbeats included (the feed sends one per topic every 100 ms; \
         \"published\" above counts data frames only)"
    );
    println!(
        "latency: receive time minus publish time (CLOCK_REALTIME), per frame, over the whole run"
    );
    if !missing.is_empty() {
        return Err(format!(
            "subscriber processes gave no final report: {}",
            missing.join(", ")
        ));
    }
    if unexplained > 0 {
        return Err(format!(
            "{unexplained} unexplained gaps: frames skipped without a Lagged or Lost report"
        ));
    }
    println!("unexplained gaps: 0");
    Ok(())
}

/// The variable through which the demo tells each subscriber process its
/// pid: a child whose parent is not that pid (the demo died before the
/// child started) stops at once instead of running forever.
const PARENT_ENV: &str = "ZEROCAST_DEMO_PARENT";

/// The demo's subscriber process: receives, checks sequences, measures
/// latency, and prints one JSON report a second (and a final one on SIGTERM).
pub fn run_child(bus: &Bus, args: &DemoSubArgs) -> Result<(), String> {
    signal::leave_interrupt_to_parent(std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok()));
    let wait = match args.wait.as_str() {
        "spin" => WaitStrategy::BusySpin,
        "yield" => WaitStrategy::SpinThenYield { spins: 200 },
        _ => WaitStrategy::Blocking { spins: 200 },
    };
    let mut sub = bus
        .subscriber(
            &args.topic,
            SubscriberOptions {
                name: args.name.clone(),
                start: Start::Newest,
                gating: args.gating,
                wait,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    let (mut total, mut interval) = (new_hist(), new_hist());
    let (mut received, mut lagged, mut lost, mut unexplained) = (0u64, 0u64, 0u64, 0u64);
    // Of `received`: the publishers' heartbeats.
    let mut heartbeats = 0u64;
    let is_heartbeat = |bytes: &[u8]| {
        matches!(
            zerocast_core::frame::FrameRef::parse(bytes),
            Ok((_, zerocast_core::frame::FrameRef::Heartbeat(_)))
        )
    };
    let mut interval_frames = 0u64;
    let mut expected: Option<u64> = sub.next_seq();
    let mut next_report = Instant::now();
    let report = |final_: bool,
                  received,
                  heartbeats,
                  interval_frames,
                  lagged,
                  lost,
                  unexplained,
                  next: Option<u64>,
                  h: &Histogram<u64>| {
        let v = json!({
            "name": args.name, "topic": args.topic, "final": final_, "ready": true,
            "received": received, "heartbeats": heartbeats, "interval_frames": interval_frames,
            "lagged": lagged, "lost": lost, "unexplained": unexplained,
            "next": next,
            "p50_ns": h.value_at_quantile(0.5), "p99_ns": h.value_at_quantile(0.99),
            "p999_ns": h.value_at_quantile(0.999), "max_ns": h.max(),
        });
        println!("{v}");
    };
    loop {
        if signal::stopped() {
            // Drain what is already there before the final report.
            while let Ok(f) = sub.try_recv() {
                received += 1;
                heartbeats += u64::from(is_heartbeat(f.bytes));
                let seq = f.seq;
                if let Some(e) = expected {
                    unexplained += seq.saturating_sub(e);
                }
                expected = Some(seq + 1);
            }
            report(
                true,
                received,
                heartbeats,
                interval_frames,
                lagged,
                lost,
                unexplained,
                expected,
                &total,
            );
            return Ok(());
        }
        match sub.recv_timeout(Duration::from_millis(50)) {
            Ok(f) => {
                let latency = now_ns().saturating_sub(f.publish_ns()).max(1);
                let _ = total.record(latency);
                let _ = interval.record(latency);
                received += 1;
                heartbeats += u64::from(is_heartbeat(f.bytes));
                interval_frames += 1;
                if let Some(e) = expected {
                    unexplained += f.seq.saturating_sub(e);
                }
                expected = Some(f.seq + 1);
            }
            Err(RecvError::Lagged(n)) => {
                lagged += n;
                expected = expected.map(|e| e + n);
            }
            Err(RecvError::Lost(s)) => {
                lost += 1;
                expected = Some(s + 1);
            }
            Err(RecvError::Empty) => {}
        }
        if Instant::now() >= next_report {
            report(
                false,
                received,
                heartbeats,
                interval_frames,
                lagged,
                lost,
                unexplained,
                expected,
                &interval,
            );
            interval.reset();
            interval_frames = 0;
            next_report += Duration::from_secs(1);
        }
    }
}
