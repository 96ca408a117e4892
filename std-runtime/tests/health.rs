//! The health monitor against real processes: `zerocast pub` and `sub`
//! stopped, continued and killed with signals; `zerocast health` run as a
//! program; its `/metrics` fetched over 127.0.0.1 and parsed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_ipc::layout::{load_name, now_ns, FREE};
use zerocast_ipc::{
    Bus, Config, PublisherOptions, RecvError, ShmPublisher, ShmSubscriber, Start, SubscriberOptions,
};
use zerocast_runtime::health::{
    HealthMonitor, HealthOptions, PublisherReport, PublisherState, Report, SubscriberReport,
};

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

/// The heartbeat interval of these tests.
const INTERVAL: Duration = Duration::from_millis(100);
/// How long anything that should happen within a few intervals may take on
/// a loaded 2-core machine before the test gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// A namespace of its own whose `trade_events` ring has 64 slots; its
/// segments are removed on drop.
struct Ns {
    name: String,
    config: PathBuf,
}

impl Ns {
    fn new(test: &str) -> Self {
        let name = format!("ht{}-{test}", std::process::id());
        let config = std::env::temp_dir().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            "[[topic]]\nname = \"trade_events\"\nsize = 81920\nkind = \"trade\"\n",
        )
        .unwrap();
        Self { name, config }
    }

    fn bus(&self) -> Bus {
        let mut config = Config::load(&self.config).unwrap();
        config.namespace = self.name.clone();
        Bus::new(config)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("ZEROCAST_NAMESPACE");
        c.env("ZEROCAST_LOG", "warn");
        c.args(["--namespace", &self.name]);
        c.arg("--config").arg(&self.config);
        c.args(args);
        c
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn zerocast")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run zerocast")
    }

    fn monitor(&self) -> HealthMonitor {
        HealthMonitor::new(
            self.bus(),
            HealthOptions {
                interval: INTERVAL,
                reclaim: true,
                ..HealthOptions::default()
            },
        )
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let prefix = format!("zerocast.{}.", self.name);
        for e in std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Kills a child process on drop (a failed assertion leaves no process).
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet waited for.
        let rc = unsafe { libc::kill(self.0.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.0.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publisher<'a>(r: &'a Report, name: &str) -> Option<&'a PublisherReport> {
    r.topics
        .iter()
        .flat_map(|t| &t.publishers)
        .find(|p| p.name == name)
}

fn subscriber<'a>(r: &'a Report, name: &str) -> Option<&'a SubscriberReport> {
    r.topics
        .iter()
        .flat_map(|t| &t.subscribers)
        .find(|s| s.name == name)
}

/// Polls every 5 ms until `done` (given each report and the time just
/// before the poll took its timestamp) says so; returns that report and
/// when it was taken.
fn poll_until(
    m: &mut HealthMonitor,
    what: &str,
    mut done: impl FnMut(&Report, Instant) -> bool,
) -> (Report, Instant) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let before = Instant::now();
        let r = m.poll(now_ns());
        let at = Instant::now();
        if done(&r, before) {
            return (r, at);
        }
        assert!(at < deadline, "never {what}: {r:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn state_of(r: &Report, name: &str) -> Option<PublisherState> {
    publisher(r, name).map(|p| p.state)
}

/// A `zerocast pub` that publishes 1000 frames/s (it sends no heartbeats:
/// its progress is its sign of life), a monitor that has seen it Healthy,
/// settled, and the time just before the last poll that saw its counter
/// move.
fn running_publisher(ns: &Ns, name: &str) -> (Proc, HealthMonitor, Instant) {
    let p = Proc(ns.spawn(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "100000000",
        "--rate",
        "1000",
        "--no-wait",
        "--name",
        name,
    ]));
    let mut m = ns.monitor();
    let mut healthy = 0;
    let mut progress = Progress::default();
    poll_until(&mut m, "Healthy three polls in a row", |r, before| {
        progress.see(r, name, before);
        healthy = if state_of(r, name) == Some(PublisherState::Healthy) {
            healthy + 1
        } else {
            0
        };
        healthy >= 3 && progress.at.is_some()
    });
    (p, m, progress.at.unwrap())
}

/// When a poll last saw a publisher's counter move.
#[derive(Default)]
struct Progress {
    published: Option<u64>,
    /// Just before the poll that saw it move (no later than the time the
    /// monitor records for that progress).
    at: Option<Instant>,
}

impl Progress {
    fn see(&mut self, r: &Report, name: &str, before: Instant) {
        let Some(p) = publisher(r, name) else { return };
        if self.published.is_some_and(|old| old != p.published) {
            self.at = Some(before);
        }
        self.published = Some(p.published);
    }
}

#[test]
fn stopped_publisher_goes_degraded_then_failed_and_healthy_again_when_continued() {
    let ns = Ns::new("stop");
    let (p, mut m, last) = running_publisher(&ns, "feed");
    p.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    // The publisher may have been descheduled well before the stop on a
    // loaded machine: bounds count from the last progress a poll saw.
    let mut progress = Progress {
        published: None,
        at: Some(last),
    };
    let mut degraded = None;
    let (r, failed) = poll_until(&mut m, "Failed", |r, before| {
        progress.see(r, "feed", before);
        for t in &r.transitions {
            if t.to == PublisherState::Degraded {
                degraded.get_or_insert(Instant::now());
            }
        }
        state_of(r, "feed") == Some(PublisherState::Failed)
    });
    let degraded = degraded.expect("Degraded before Failed");
    let f = publisher(&r, "feed").unwrap();
    assert!(f.alive, "a stopped process is alive: {f:?}");
    assert!(
        f.reason.contains("no heartbeat or progress"),
        "{}",
        f.reason
    );
    // Degraded no sooner than an interval after the last progress a poll
    // saw, Failed no sooner than two.
    let progress = progress.at.unwrap();
    assert!(
        degraded.duration_since(progress) >= INTERVAL,
        "Degraded {:?} after the last progress",
        degraded.duration_since(progress)
    );
    assert!(
        failed.duration_since(progress) >= 2 * INTERVAL,
        "Failed {:?} after the last progress",
        failed.duration_since(progress)
    );
    assert!(failed.duration_since(stopped) < 2 * INTERVAL + PATIENCE);
    assert!(degraded < failed);

    p.signal(libc::SIGCONT);
    let (r, _) = poll_until(&mut m, "Healthy again", |r, _| {
        state_of(r, "feed") == Some(PublisherState::Healthy)
    });
    let t = r.transitions.iter().find(|t| t.name == "feed").unwrap();
    assert_eq!(
        (t.from, t.to),
        (PublisherState::Failed, PublisherState::Healthy)
    );
}

#[test]
fn killed_publisher_is_failed_and_its_entry_reclaimed() {
    let ns = Ns::new("kill");
    let (mut p, mut m, _) = running_publisher(&ns, "feed");
    let pid = p.0.id();
    p.signal(libc::SIGKILL);
    // Not waited for: a zombie is not alive either.
    let (r, _) = poll_until(&mut m, "Failed", |r, _| {
        state_of(r, "feed") == Some(PublisherState::Failed)
    });
    let f = publisher(&r, "feed").unwrap();
    assert_eq!(
        (f.alive, f.pid, f.reason.as_str()),
        (false, pid, "process gone")
    );
    let t = r.transitions.iter().find(|t| t.name == "feed").unwrap();
    assert_eq!(t.to, PublisherState::Failed);
    let topic = &r.topics.iter().find(|t| t.topic == "trade_events").unwrap();
    assert!(
        topic
            .reclaimed
            .iter()
            .any(|x| x.publisher && x.pid == pid && x.index == f.index),
        "{:?}",
        topic.reclaimed
    );
    let seg = ns.bus().open_segment("trade_events").unwrap();
    // Acquire: pairs with the reaper's Release store that frees the entry.
    assert_eq!(
        seg.header().publishers[f.index].pid.load(Ordering::Acquire),
        FREE
    );
    // Its entry is free, and it stays reported as Failed (gone).
    let r = m.poll(now_ns());
    let f = publisher(&r, "feed").unwrap();
    assert_eq!((f.state, f.gone), (PublisherState::Failed, true));
    let topic = &r.topics.iter().find(|t| t.topic == "trade_events").unwrap();
    assert_eq!(topic.failures_total, 1);
    p.0.wait().unwrap();
}

#[test]
fn subscriber_that_stops_reading_shows_growing_lag() {
    let ns = Ns::new("lag");
    let (_p, mut m, _) = running_publisher(&ns, "feed");
    let s = Proc(ns.spawn(&["sub", "--topic", "trade_events", "--name", "reader"]));
    poll_until(&mut m, "reader registered, keeping up", |r, _| {
        subscriber(r, "reader").is_some_and(|s| s.alive && s.lag < 50)
    });
    s.signal(libc::SIGSTOP);
    let mut lags = Vec::new();
    let (r, _) = poll_until(&mut m, "reader's lag growing 3 samples", |r, _| {
        let s = subscriber(r, "reader").unwrap();
        if lags.last() != Some(&s.lag) {
            lags.push(s.lag);
        }
        s.growing_samples >= 3
    });
    assert!(lags.windows(2).all(|w| w[0] < w[1]), "{lags:?}");
    let feed = publisher(&r, "feed").unwrap();
    assert_eq!(feed.state, PublisherState::Degraded, "{feed:?}");
    assert!(
        feed.reason.contains("\"reader\" lag growing"),
        "{}",
        feed.reason
    );
    s.signal(libc::SIGCONT);
    poll_until(&mut m, "reader caught up, feed Healthy", |r, _| {
        subscriber(r, "reader").is_some_and(|s| s.lag < 50)
            && state_of(r, "feed") == Some(PublisherState::Healthy)
    });
}

#[test]
fn one_shot_exits_1_naming_a_failed_publisher_and_0_once_it_is_reclaimed() {
    let ns = Ns::new("oneshot");
    let out = ns.run(&[
        "pub",
        "--topic",
        "trade_events",
        "--count",
        "10",
        "--crash-after",
        "5",
        "--name",
        "doomed",
    ]);
    assert!(!out.status.success());
    let out = ns.run(&["health", "--interval", "50", "--reclaim"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
    assert!(text.contains("doomed") && text.contains("Failed"), "{text}");
    assert!(text.contains("process gone"), "{text}");
    assert!(text.contains("reclaimed publisher"), "{text}");
    assert!(
        err.contains("1 publisher(s) Failed: trade_events publisher"),
        "{err}"
    );
    let out = ns.run(&["health", "--interval", "50", "--reclaim"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = ns.run(&["health", "--interval", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--interval"));
}

#[path = "support/exposition.rs"]
mod exposition;
use exposition::{find, parse_exposition};

fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}

#[test]
fn metrics_endpoint_parses_and_matches_the_segment_counters() {
    let ns = Ns::new("metrics");
    let bus = ns.bus();
    let seg = bus.segment("trade_events").unwrap();
    let opts = PublisherOptions {
        name: "engine".into(),
        ..PublisherOptions::default()
    };
    let mut p = ShmPublisher::new(Arc::clone(&seg), &opts).unwrap();
    let sub_opts = |name: &str| SubscriberOptions {
        name: name.into(),
        start: Start::Oldest,
        ..SubscriberOptions::default()
    };
    let mut lapped = ShmSubscriber::new(Arc::clone(&seg), &sub_opts("lapped")).unwrap();
    let mut reader = ShmSubscriber::new(Arc::clone(&seg), &sub_opts("reader")).unwrap();
    let trade = zerocast_runtime::feed::Feed::new(1, 3).trade();
    // 200 frames through a 64-slot ring: `lapped` loses the oldest.
    // A publisher's heartbeat age exists once it has sent one (its stamp
    // is 0, "never", until then).
    p.send_heartbeat().unwrap();
    for _ in 0..200 {
        p.publish(&trade).unwrap();
    }
    assert!(matches!(lapped.poll(), Err(RecvError::Lagged(_))));
    for _ in 0..10 {
        let _ = reader.poll();
    }

    let mut server = Proc(
        // A long interval: "engine" must be Healthy at the scrape however
        // late a loaded machine gets to it (its last sign of life is the
        // heartbeat before the scrape).
        ns.cmd(&["health", "--interval", "30000", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    p.send_heartbeat().unwrap();
    let (head, body) = get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let samples = parse_exposition(&body);

    let h = seg.header();
    let head_seq = seg.ring().head();
    let topic = ("topic", "trade_events");
    assert_eq!(
        find(&samples, "zerocast_topic_head", &[topic]).value,
        head_seq as f64
    );
    assert_eq!(
        find(&samples, "zerocast_topic_capacity_slots", &[topic]).value,
        64.0
    );
    let e = &h.publishers[p.id() as usize];
    assert_eq!(load_name(&e.name), "engine");
    let engine = [topic, ("name", "engine")];
    // Relaxed (the counter loads below): every writer of these words is
    // this thread or has stopped writing; the values are settled.
    assert_eq!(
        find(&samples, "zerocast_publisher_published_total", &engine).value,
        e.published.load(Ordering::Relaxed) as f64
    );
    assert_eq!(
        find(
            &samples,
            "zerocast_publisher_state",
            &[topic, ("name", "engine"), ("state", "healthy")]
        )
        .value,
        1.0
    );
    assert_eq!(
        find(&samples, "zerocast_publisher_alive", &engine).value,
        1.0
    );
    let age = find(
        &samples,
        "zerocast_publisher_heartbeat_age_seconds",
        &engine,
    )
    .value;
    assert!((0.0..PATIENCE.as_secs_f64()).contains(&age), "{age}");
    for name in ["lapped", "reader"] {
        let entry = h
            .subscribers
            .iter()
            // Acquire: pairs with the Release owner store of registration.
            .find(|s| s.pid.load(Ordering::Acquire) != FREE && load_name(&s.name) == name)
            .unwrap();
        let labels = [topic, ("name", name)];
        assert_eq!(
            find(&samples, "zerocast_subscriber_lag", &labels).value,
            head_seq.saturating_sub(entry.cursor.load(Ordering::Relaxed)) as f64,
            "{name}"
        );
        assert_eq!(
            find(&samples, "zerocast_subscriber_lagged_total", &labels).value,
            entry.lagged.load(Ordering::Relaxed) as f64,
            "{name}"
        );
        assert_eq!(
            find(&samples, "zerocast_subscriber_alive", &labels).value,
            1.0
        );
    }
    assert!(
        find(
            &samples,
            "zerocast_subscriber_lagged_total",
            &[("name", "lapped")]
        )
        .value
            > 0.0
    );
    // The monitor's own entry on the health topic.
    find(&samples, "zerocast_publisher_alive", &[("topic", "health")]);
    let (head, _) = get(&addr, "/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    server.signal(libc::SIGTERM);
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Lines of a child's stdout, read on a thread (a test never blocks on a
/// child that does not print).
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line satisfying `want`, within [`PATIENCE`].
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {what}: {e}"),
        }
    }
}

#[test]
fn watch_publishes_state_changes_that_events_prints() {
    let ns = Ns::new("events");
    let mut events = Proc(ns.spawn(&["health", "--events"]));
    let event_lines = lines_of(&mut events.0);
    let mut m = ns.monitor();
    poll_until(&mut m, "the events follower registered", |r, _| {
        subscriber(r, "health-events").is_some()
    });
    let (feed, _m, _) = running_publisher(&ns, "feed");
    let mut watch = Proc(ns.spawn(&["health", "--watch", "--interval", "100"]));
    let table = lines_of(&mut watch.0);
    // Three tables with the feed Healthy: the watcher's view is settled.
    for _ in 0..3 {
        wait_line(&table, "feed Healthy", |l| {
            l.contains(" feed ") && l.contains("Healthy")
        });
    }
    feed.signal(libc::SIGKILL);
    let pid = feed.0.id();
    wait_line(&table, "the transition", |l| {
        l.contains("Healthy -> Failed") && l.contains("process gone")
    });
    let line = wait_line(&event_lines, "an event", |l| {
        l.contains("\"to\":\"failed\"")
    });
    let e: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["topic"], "trade_events", "{line}");
    assert_eq!(e["pid"], pid, "{line}");
    assert_eq!(e["from"], "healthy", "{line}");
    for p in [&watch, &events] {
        p.signal(libc::SIGTERM);
    }
    assert!(watch.0.wait().unwrap().success());
    assert!(events.0.wait().unwrap().success());
}

/// --listen on an address that cannot be bound fails at once, naming it
/// (it does not leave the polling thread running).
#[test]
fn listen_on_a_taken_address_fails_naming_it() {
    let ns = Ns::new("taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = Proc(
        ns.cmd(&["health", "--interval", "50", "--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running with {addr} taken");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("--listen {addr}")), "{err}");
}

/// `zerocast_ipc::spawn_heartbeat` beats through a publisher entry of its
/// own; the idle data publisher beside it, in the same live process, was
/// judged Failed. The freshest heartbeat of any entry of the same process
/// is that process's sign of life.
#[test]
fn regression_idle_publisher_beside_spawn_heartbeat_is_not_failed() {
    let bus = Bus::new(Config {
        namespace: format!("hl{}idlehb", std::process::id()),
        topics: vec![zerocast_ipc::TopicConfig::new(
            "trades",
            1 << 20,
            zerocast_ipc::TopicKind::Trade,
        )],
    });
    bus.remove_segments();
    let interval = Duration::from_millis(200);
    let mut engine = bus.publisher("trades").unwrap();
    engine.send_heartbeat().unwrap();
    let hb = zerocast_ipc::spawn_heartbeat(&bus, "trades", "engine-hb", interval / 4).unwrap();
    let mut monitor = HealthMonitor::new(
        bus.clone(),
        HealthOptions {
            interval,
            ..Default::default()
        },
    );
    monitor.poll(now_ns());
    // Three intervals: the engine's own stamp is stale for good. Deliberate:
    // the test needs time to pass (a stamp ageing past the bound), not an
    // event, while the heartbeat thread keeps beating.
    std::thread::sleep(interval * 3);
    let report = monitor.poll(now_ns());
    let publishers = &report.topics[0].publishers;
    assert_eq!(publishers.len(), 2, "{publishers:?}");
    for p in publishers {
        assert_ne!(
            p.state,
            PublisherState::Failed,
            "{} is Failed though its process heartbeats: {}",
            p.name,
            p.reason
        );
    }
    drop(hb);
    drop(engine);
    bus.remove_segments();
}

/// A client that half-sent a request kept `zerocast health --listen` alive
/// after SIGTERM for ever (the graceful shutdown waited for its
/// connection). Connections get a second to finish, then are dropped.
#[test]
fn regression_half_sent_request_does_not_keep_health_listen_alive() {
    let ns = Ns::new("halfsent");
    let mut server = Proc(
        ns.cmd(&["health", "--interval", "100", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A full request on another connection: the server has accepted both.
    let (head, _) = get(&addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    server.signal(libc::SIGTERM);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "still running {PATIENCE:?} after SIGTERM with a half-sent request open"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    drop(half);
}

/// `zerocast health --watch | head` never exited: writes to the closed
/// pipe failed silently and the watch went on. A write error stops it.
#[test]
fn regression_watch_stops_when_its_stdout_is_closed() {
    let ns = Ns::new("epipe");
    let mut watch = Proc(
        ns.cmd(&["health", "--watch", "--interval", "50"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = watch.0.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out); // `head` exits.
    let start = Instant::now();
    while watch.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < PATIENCE,
            "--watch still running {PATIENCE:?} after its stdout was closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A one-shot `zerocast health` (a liveness probe) that could read no
/// topic, here because it ran in another pid namespace than the topic's
/// live processes (review of the monitors' pid-namespace check), listed
/// the topic as unreadable and exited 0: the probe passed while seeing
/// nothing. It exits 1 now, naming the topic. (An idle segment of another
/// namespace, which nobody maps, is listed and passes: the topic's next
/// user takes it over.)
#[test]
fn regression_a_one_shot_health_that_read_no_topic_exited_0() {
    use std::os::unix::fs::FileExt;
    let ns = Ns::new("unreadable");
    let bus = ns.bus();
    drop(bus.publisher("trade_events").unwrap());
    let out = ns.run(&["health", "--interval", "50"]);
    assert!(
        out.status.success(),
        "a readable topic: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The header's pid-namespace word, now another namespace's.
    let path = bus.config().segment_path("trade_events");
    let ours = zerocast_ipc::layout::pid_namespace();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(
            &(ours ^ 0x5a5a).to_le_bytes(),
            std::mem::offset_of!(zerocast_ipc::layout::SegmentHeader, pid_namespace) as u64,
        )
        .unwrap();
    // Idle (nobody maps it): listed, and the check passes. Tried until
    // so: a process another test of this binary forks holds a copy of
    // every descriptor, a locked one too, until it execs.
    let idle = |out: &Output| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("not read (idle)")
    };
    let mut out = ns.run(&["health", "--interval", "50"]);
    for _ in 0..20 {
        if idle(&out) {
            break;
        }
        out = ns.run(&["health", "--interval", "50"]);
    }
    assert!(
        idle(&out),
        "an idle foreign segment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A process of that namespace maps it (holds its shared lock).
    let user = std::fs::File::open(&path).unwrap();
    // SAFETY: flock on a descriptor this test owns; no memory passed.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&user), libc::LOCK_SH) };
    assert_eq!(locked, 0);
    let out = ns.run(&["health", "--interval", "50"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("trade_events") && err.contains("could not be read"),
        "{err}"
    );
}

/// Review of the one-shot exit: the counters table's line in the report
/// was marked `counters`, a name a topic may have, so an unreadable topic
/// named `counters` did not fail the check. The table is `@counters` now.
#[test]
fn regression_an_unreadable_topic_named_counters_passed_the_check() {
    let ns = Ns::new("counters-topic");
    let bus = ns.bus();
    drop(bus.publisher("trade_events").unwrap());
    // A segment file of topic `counters` that is not a segment.
    let path = std::path::Path::new("/dev/shm").join(format!("zerocast.{}.counters", ns.name));
    std::fs::write(&path, [0x5au8; 4096]).unwrap();
    let out = ns.run(&["health", "--interval", "50"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not be read") && err.contains("counters"),
        "{err}"
    );
}
