//! The zenoh bridge between two namespaces on this machine, over loopback
//! TCP: the `zerocast bridge export` and `import` processes, killed with
//! SIGKILL and restarted mid-stream. The origin publisher and the far-side
//! reader are this test, through the library.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zerocast_core::frame::{id::id, id::id_str, Direction, FrameHeader, TradeEvent};
use zerocast_ipc::{
    Bus, Config, GatingPolicy, Publisher, PublisherOptions, RecvError, Start, SubscriberOptions,
};

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");
const TOPIC: &str = "trade_events";

/// One side of the bridge: a namespace with one trade topic of `size`
/// bytes, its config file, and its segments removed at the end.
struct Side {
    ns: String,
    config: PathBuf,
    bus: Bus,
}

impl Side {
    fn new(test: &str, side: &str, size: u64) -> Self {
        Self::of_kind(test, side, size, "trade")
    }

    /// A side whose topic is of `kind`.
    fn of_kind(test: &str, side: &str, size: u64, kind: &str) -> Self {
        let ns = format!("br{}-{test}-{side}", std::process::id());
        let text = format!("[[topic]]\nname = \"{TOPIC}\"\nsize = {size}\nkind = \"{kind}\"\n");
        let config = std::env::temp_dir().join(format!("{ns}.toml"));
        std::fs::write(&config, &text).unwrap();
        let mut c = Config::from_toml(&text).unwrap();
        c.namespace = ns.clone();
        let bus = Bus::new(c);
        bus.remove_segments();
        Self { ns, config, bus }
    }

    fn capacity(&self) -> u64 {
        self.bus.segment(TOPIC).unwrap().ring().capacity()
    }

    fn head(&self) -> u64 {
        self.bus.segment(TOPIC).unwrap().ring().head()
    }

    /// Starts `zerocast --namespace NS --config FILE bridge ARGS`.
    fn bridge(&self, args: &[&str]) -> Proc {
        self.bridge_in(None, args)
    }

    /// [`bridge`](Self::bridge) in network namespace `netns`, if given.
    fn bridge_in(&self, netns: Option<&str>, args: &[&str]) -> Proc {
        let mut cmd = match netns {
            // `ip netns exec` execs the program: the child is zerocast.
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .env_remove("ZEROCAST_NAMESPACE")
            .env(
                "ZEROCAST_LOG",
                std::env::var("BRIDGE_TEST_LOG").unwrap_or_else(|_| "warn,zenoh=error".to_owned()),
            )
            .args(["--namespace", &self.ns, "--config"])
            .arg(&self.config)
            .arg("bridge")
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn zerocast bridge");
        Proc(child)
    }

    /// Waits until the topic's head reaches `n` (at most 20 s).
    fn wait_head(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let head = self.head();
            if head >= n {
                assert_eq!(head, n, "{}: more sequences than were published", self.ns);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: head {head} after 20 s, waiting for {n}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.bus.remove_segments();
        // Half-built segments of bridge processes killed while creating
        // one (dropped, hence reaped, before their side).
        for path in self.bus.abandoned_init_files() {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(&self.config);
        // The importer's record of the origin it follows, and the `.tmp`
        // an importer killed while writing it leaves.
        for (_, path) in zerocast_runtime::bridge::import::origin_records(self.bus.config()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A bridge process, killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Proc {
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback TCP port (bound, then released for zenoh to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two zenoh sessions linked over loopback TCP on a free port: the origin
/// side's (listening; the test plays the exporter on it) and the
/// importer's (connecting).
fn loopback_sessions() -> (zenoh::Session, zenoh::Session) {
    use zerocast_runtime::bridge::open_session;
    let endpoint = vec![format!("tcp/127.0.0.1:{}", free_port())];
    let origin = open_session(None, &endpoint, &[]).unwrap();
    let importer = open_session(None, &[], &endpoint).unwrap();
    (origin, importer)
}

fn trade(n: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id(&format!("t{n}")).unwrap(),
        order_id: id(&format!("o{n}")).unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 100.0 + n as f64,
        volume: 1.0,
        direction: Direction::Buy,
        timestamp: n as i64,
    }
}

/// Publishes trades `from .. to` at the origin; trade `n` gets sequence
/// `n` (this is the topic's only publisher).
fn publish(p: &mut Publisher, from: u64, to: u64) {
    for n in from..to {
        assert_eq!(p.publish(&trade(n)).unwrap(), n);
    }
}

/// What the far side holds for a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// A frame: its bytes.
    Frame(Vec<u8>),
    Lost,
}

/// Reads sequences `0 .. n` of `side`'s topic, in order, each exactly once
/// (a frame or a loss); panics on anything else.
fn read_all(side: &Side, n: u64) -> Vec<Got> {
    let mut sub = side
        .bus
        .subscriber(
            TOPIC,
            SubscriberOptions {
                start: Start::At(0),
                ..Default::default()
            },
        )
        .unwrap();
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        let expected = got.len() as u64;
        match sub.recv_timeout(Duration::from_secs(10)) {
            Ok(f) => {
                assert_eq!(f.seq, expected, "{}: out of order", side.ns);
                let len = f.header().unwrap().frame_len();
                got.push(Got::Frame(f.bytes[..len].to_vec()));
            }
            Err(RecvError::Lost(seq)) => {
                assert_eq!(seq, expected, "{}: loss out of order", side.ns);
                got.push(Got::Lost);
            }
            Err(e) => panic!("{}: at sequence {expected}: {e}", side.ns),
        }
    }
    got
}

/// Checks that frame `seq` is trade `seq` as the origin published it.
fn check_frame(seq: u64, bytes: &[u8]) {
    let header = FrameHeader::read(bytes).unwrap();
    assert_eq!(header.seq, seq);
    assert_ne!(header.publish_ns, 0, "the origin's publish time is kept");
    let words = aligned(bytes);
    let bytes = &zerocast_core::frame::words_as_bytes(&words)[..bytes.len()];
    let (_, body) = zerocast_core::frame::decode::<TradeEvent>(bytes).unwrap();
    assert_eq!(id_str(&body.trade_id).unwrap(), format!("t{seq}"));
    assert_eq!(body.timestamp.to_native(), seq as i64);
}

/// The bytes in 8-byte-aligned words (frames are read in place).
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    zerocast_core::frame::words_as_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

#[test]
fn bridge_carries_frames_complete_and_in_order() {
    let origin = Side::new("order", "a", 4 << 20);
    let far = Side::new("order", "b", 4 << 20);
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let _export = origin.bridge(&["export", "--topic", TOPIC, "--listen", &listen]);
    let _import = far.bridge(&[
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
    ]);
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    let n = 2_000;
    publish(&mut p, 0, n);
    far.wait_head(n);
    let far_frames = read_all(&far, n);
    let origin_frames = read_all(&origin, n);
    // Byte for byte what the origin's ring holds: header (sequence,
    // publish time, publisher id) and body.
    assert_eq!(far_frames, origin_frames);
    for (seq, g) in far_frames.iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => panic!("sequence {seq} lost"),
        }
    }
}

#[test]
fn bridge_kill_and_restart_every_sequence_delivered_or_reported_exactly() {
    // The origin's ring is small, so frames published while the exporter
    // is down are partly overwritten: exactly those are reported lost.
    let origin = Side::new("kill", "a", 80_000);
    let far = Side::new("kill", "b", 4 << 20);
    let cap = origin.capacity();
    assert!(cap < 200, "the test needs a small origin ring, got {cap}");
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let export_args = ["export", "--topic", TOPIC, "--listen", &listen];
    let import_args = [
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
        "--query-timeout-ms",
        "500",
    ];
    let export = origin.bridge(&export_args);
    let import = far.bridge(&import_args);
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    // 1. Live, paced so that the ring never laps the exporter.
    for chunk in 0..10 {
        publish(&mut p, chunk * 30, chunk * 30 + 30);
        far.wait_head(chunk * 30 + 30);
    }
    let mut n = 300;

    // 2. The importer killed; the ring still holds what is published
    //    meanwhile: the restarted importer fetches all of it.
    import.kill();
    publish(&mut p, n, n + cap / 2);
    n += cap / 2;
    let import = far.bridge(&import_args);
    far.wait_head(n);

    // 3. The exporter killed; the ring laps while it is down: the
    //    restarted exporter serves the last `cap` frames, and the
    //    sequences before them are reported lost, exactly.
    export.kill();
    let down_from = n;
    publish(&mut p, n, n + 5 * cap);
    n += 5 * cap;
    let export = origin.bridge(&export_args);
    far.wait_head(n);
    let lost_range = down_from..n - cap;

    // 4. Both restarted: live again (paced as in 1).
    for _ in 0..4 {
        publish(&mut p, n, n + 30);
        n += 30;
        far.wait_head(n);
    }

    let got = read_all(&far, n);
    for (seq, g) in got.iter().enumerate() {
        let seq = seq as u64;
        match g {
            Got::Frame(bytes) => {
                assert!(
                    !lost_range.contains(&seq),
                    "sequence {seq} was overwritten at the origin yet delivered"
                );
                check_frame(seq, bytes);
            }
            Got::Lost => assert!(
                lost_range.contains(&seq),
                "sequence {seq} reported lost; only {lost_range:?} were overwritten"
            ),
        }
    }
    let lost = got.iter().filter(|g| **g == Got::Lost).count() as u64;
    assert_eq!(lost, lost_range.end - lost_range.start);
    drop((export, import));
}

/// Waits until a durable gating subscriber named `name` holds `side`'s
/// topic (a recorder or a gating exporter has registered).
fn wait_hold(side: &Side, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let seg = side.bus.segment(TOPIC).unwrap();
    while !seg
        .durable_holds()
        .iter()
        .any(|h| h.name == name && !h.orphaned)
    {
        assert!(Instant::now() < deadline, "{name} did not register in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most 20 s) until the live durable hold `name` on `side`'s
/// topic has released every sequence below `at`.
fn wait_hold_at(side: &Side, name: &str, at: u64) {
    let seg = side.bus.segment(TOPIC).unwrap();
    wait_for(&format!("{name}'s hold released up to {at}"), || {
        seg.durable_holds()
            .iter()
            .any(|h| h.name == name && !h.orphaned && h.position.is_some_and(|p| p >= at))
    });
}

/// Starts `zerocast record` on `side`'s topic into `wal`.
fn recorder(side: &Side, wal: &std::path::Path) -> Proc {
    let child = Command::new(BIN)
        .env_remove("ZEROCAST_NAMESPACE")
        .env(
            "ZEROCAST_LOG",
            std::env::var("BRIDGE_TEST_LOG").unwrap_or_else(|_| "warn,zenoh=error".to_owned()),
        )
        .args(["--namespace", &side.ns, "--config"])
        .arg(&side.config)
        .args(["record", "--topic", TOPIC, "--wal"])
        .arg(wal)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn zerocast record");
    Proc(child)
}

#[test]
fn bridge_exporter_down_while_ring_laps_serves_the_rest_from_the_wal() {
    let origin = Side::new("wal", "a", 80_000);
    let far = Side::new("wal", "b", 4 << 20);
    let cap = origin.capacity();
    let wal = TempDir(std::env::temp_dir().join(format!("{}-wal", origin.ns)));
    let _ = std::fs::remove_dir_all(&wal.0);
    let wal = &wal.0;
    let _recorder = recorder(&origin, wal);
    wait_hold(&origin, &format!("recorder-{TOPIC}"));
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let wal_arg = wal.to_str().unwrap();
    let export_args = [
        "export", "--topic", TOPIC, "--listen", &listen, "--wal", wal_arg,
    ];
    let export = origin.bridge(&export_args);
    let _import = far.bridge(&[
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
        "--query-timeout-ms",
        "500",
    ]);
    // Waits for the recorder (a gating subscriber) rather than fail.
    let mut p = origin
        .bus
        .publisher_with(
            TOPIC,
            PublisherOptions {
                gating: GatingPolicy::Wait(Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .unwrap();
    publish(&mut p, 0, 30);
    far.wait_head(30);
    // The exporter down while the ring laps five times: the recorder has
    // it all, and the restarted exporter serves it from the WAL.
    export.kill();
    let mut n = 30;
    publish(&mut p, n, n + 5 * cap);
    n += 5 * cap;
    let _export = origin.bridge(&export_args);
    far.wait_head(n);
    let got = read_all(&far, n);
    for (seq, g) in got.iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => panic!("sequence {seq} reported lost; the WAL holds it"),
        }
    }
}

#[test]
fn bridge_gating_exporter_restarts_where_it_stopped() {
    // A durable gating exporter: the origin never overwrites what it has
    // not sent, so a restarted one sends the rest live; nothing is lost.
    let origin = Side::new("gating", "a", 80_000);
    let far = Side::new("gating", "b", 4 << 20);
    let cap = origin.capacity();
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let export_args = [
        "export",
        "--topic",
        TOPIC,
        "--listen",
        &listen,
        "--gating",
        "bridge-gw",
    ];
    let export = origin.bridge(&export_args);
    wait_hold(&origin, "bridge-gw");
    let _import = far.bridge(&[
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
    ]);
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    publish(&mut p, 0, 30);
    far.wait_head(30);
    // The exporter releases what it sent right after the send: the far
    // side can have it first (killed in between, the hold stays at 0 and
    // the ring holds too little for the publishes below).
    wait_hold_at(&origin, "bridge-gw", 30);
    export.kill();
    // The hold outlives the exporter: the ring fills up to it, and no
    // further (a publish then fails rather than overwrite).
    let mut n = 30;
    publish(&mut p, n, n + cap / 2);
    n += cap / 2;
    let _export = origin.bridge(&export_args);
    far.wait_head(n);
    // More than the ring holds, now that the exporter is back to release it.
    for _ in 0..4 {
        publish(&mut p, n, n + cap / 2);
        n += cap / 2;
        far.wait_head(n);
    }
    let got = read_all(&far, n);
    for (seq, g) in got.iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => panic!("sequence {seq} reported lost behind a gating exporter"),
        }
    }
    origin
        .bus
        .segment(TOPIC)
        .unwrap()
        .release_durable("bridge-gw");
}

/// Two network namespaces joined by a veth pair, removed when dropped.
struct NetPair {
    a: String,
    b: String,
    /// The veth end in `a`.
    link_a: String,
    addr_a: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetPair {
    /// The pair, or why it cannot be made here (not root, no `ip`, no
    /// network namespaces).
    fn new() -> Result<Self, String> {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            return Err("not root (network namespaces need CAP_NET_ADMIN)".into());
        }
        let tag = std::process::id() % 100_000;
        let net = Self {
            a: format!("zcb{tag}a"),
            b: format!("zcb{tag}b"),
            link_a: format!("zcb{tag}va"),
            addr_a: format!("10.231.{}.1", tag % 250),
        };
        let link_b = format!("zcb{tag}vb");
        let addr_b = format!("10.231.{}.2", tag % 250);
        ip(&["netns", "add", &net.a])?;
        ip(&["netns", "add", &net.b])?;
        ip(&[
            "link",
            "add",
            &net.link_a,
            "netns",
            &net.a,
            "type",
            "veth",
            "peer",
            "name",
            &link_b,
            "netns",
            &net.b,
        ])?;
        for (ns, link, addr) in [
            (&net.a, &net.link_a, &net.addr_a),
            (&net.b, &link_b, &addr_b),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", link])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Takes the link down (`false`) or up (`true`), in namespace `a`.
    fn link(&self, up: bool) {
        ip(&[
            "-n",
            &self.a,
            "link",
            "set",
            &self.link_a,
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

#[test]
fn bridge_network_cut_between_two_network_namespaces_loses_nothing() {
    let net = match NetPair::new() {
        Ok(net) => net,
        Err(why) => {
            eprintln!(
                "SKIPPED bridge_network_cut_between_two_network_namespaces_loses_nothing: {why}"
            );
            return;
        }
    };
    // A ring of 100-odd frames: the cut's cap / 2 frames and the 20 after
    // it stay in it (with segment layout 4's larger header, 80 000 bytes
    // left 32 slots, and the first frames of the cut were overwritten).
    let origin = Side::new("cut", "a", 160_000);
    let far = Side::new("cut", "b", 4 << 20);
    let cap = origin.capacity();
    assert!(
        cap >= 64,
        "the test needs a ring of 64 frames or more, got {cap}"
    );
    let endpoint = format!("tcp/{}:7447", net.addr_a);
    // A lease of 1 s, so that the cut below outlasts it: the zenoh session
    // breaks and what was published meanwhile must be fetched by query
    // (with the default 10 s lease TCP alone would carry a short cut).
    let zconf = std::env::temp_dir().join(format!("{}-zenoh.json5", origin.ns));
    std::fs::write(
        &zconf,
        r#"{ mode: "peer",
             scouting: { multicast: { enabled: false }, gossip: { enabled: false } },
             connect: { retry: { period_init_ms: 200, period_max_ms: 500, period_increase_factor: 2 } },
             transport: { link: { tx: { lease: 1000, keep_alive: 4 } } } }"#,
    )
    .unwrap();
    let _zconf = TempFile(zconf.clone());
    let zconf = zconf.to_str().unwrap();
    let _export = origin.bridge_in(
        Some(&net.a),
        &[
            "export",
            "--topic",
            TOPIC,
            "--zenoh-config",
            zconf,
            "--listen",
            &endpoint,
        ],
    );
    let _import = far.bridge_in(
        Some(&net.b),
        &[
            "import",
            "--topic",
            TOPIC,
            "--origin-namespace",
            &origin.ns,
            "--zenoh-config",
            zconf,
            "--connect",
            &endpoint,
            "--query-timeout-ms",
            "500",
        ],
    );
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    let mut n = 0;
    for _ in 0..3 {
        publish(&mut p, n, n + 30);
        n += 30;
        far.wait_head(n);
    }
    // The link down past the lease while the origin publishes (less than
    // its ring holds): the session breaks, and the rest is fetched by
    // query after the cut.
    net.link(false);
    publish(&mut p, n, n + cap / 2);
    n += cap / 2;
    std::thread::sleep(Duration::from_millis(2_500));
    net.link(true);
    for _ in 0..3 {
        publish(&mut p, n, n + 20);
        n += 20;
        far.wait_head(n);
    }
    let got = read_all(&far, n);
    for (seq, g) in got.iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => panic!("sequence {seq} reported lost; the origin ring held it"),
        }
    }
}

#[test]
fn bridge_burst_past_the_exporter_every_sequence_delivered_or_lost() {
    // A burst of 50 rings' worth into a small origin ring: the exporter
    // lags, the importer asks for what it missed, and what the ring no
    // longer holds arrives as Lost; every sequence exactly once, in order.
    let origin = Side::new("burst", "a", 80_000);
    let far = Side::new("burst", "b", 4 << 20);
    let cap = origin.capacity();
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let _export = origin.bridge(&["export", "--topic", TOPIC, "--listen", &listen]);
    let _import = far.bridge(&[
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
        "--query-timeout-ms",
        "500",
    ]);
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    publish(&mut p, 0, 30);
    far.wait_head(30);
    let n = 30 + 50 * cap;
    publish(&mut p, 30, n);
    far.wait_head(n);
    let got = read_all(&far, n);
    let mut lost = 0;
    for (seq, g) in got.iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => lost += 1,
        }
    }
    // The last ring-full is still at the origin when the importer asks.
    for (seq, g) in got.iter().enumerate().skip((n - cap) as usize) {
        assert!(
            matches!(g, Got::Frame(_)),
            "sequence {seq} lost; the ring holds it"
        );
    }
    eprintln!("burst: {lost} of {n} lost (overwritten before the exporter read them)");
}

#[test]
fn bridge_bad_arguments_are_named() {
    let side = Side::new("args", "a", 80_000);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .env_remove("ZEROCAST_NAMESPACE")
            .args(["--namespace", &side.ns, "--config"])
            .arg(&side.config)
            .arg("bridge")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["export", "--topic", TOPIC, "--listen", "udp/127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen") && err.contains("tcp/HOST:PORT"),
        "{err}"
    );
    let out = run(&["import", "--topic", "nope", "--connect", "tcp/127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nope"), "{err}");
    let missing = std::env::temp_dir().join(format!("{}-none.json5", side.ns));
    let out = run(&[
        "export",
        "--topic",
        TOPIC,
        "--zenoh-config",
        missing.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("zenoh config") && err.contains("none.json5"),
        "{err}"
    );
}

/// A port out of range is a bad flag (exit 2, naming the flag and the
/// port), not a zenoh error after the session started (exit 1).
#[test]
fn regression_a_port_out_of_range_is_a_bad_flag() {
    let side = Side::new("port", "a", 80_000);
    for (cmd, flag) in [("export", "--listen"), ("import", "--connect")] {
        let out = Command::new(BIN)
            .env_remove("ZEROCAST_NAMESPACE")
            .args(["--namespace", &side.ns, "--config"])
            .arg(&side.config)
            .args(["bridge", cmd, "--topic", TOPIC, flag, "tcp/127.0.0.1:99999"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd} {flag}: {err}");
        assert!(err.contains(flag) && err.contains("99999"), "{err}");
    }
}

/// Waits until `cond` holds (at most 20 s).
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not after 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the threads run under [`LogCapture::subscriber`] logged at WARN
/// and above: how a test waits for a library thread to reach a state it
/// only logs (the importer's bound on queued live messages).
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// A subscriber writing here, for `tracing::subscriber::with_default`.
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let out = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish()
    }

    fn contains(&self, text: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).contains(text)
    }
}

/// An importer of `key` into `far` on its own thread, its warnings in the
/// returned log, until `stop` is set.
fn logged_importer(
    far: &Side,
    session: zenoh::Session,
    key: &str,
    query_timeout: Duration,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    std::thread::JoinHandle<Result<zerocast_runtime::bridge::import::ImportStats, String>>,
    LogCapture,
) {
    use zerocast_runtime::bridge::import;
    let log = LogCapture::default();
    let (bus, stop) = (far.bus.clone(), stop.clone());
    let mut o = import::ImportOptions::new(TOPIC, key);
    o.query_timeout = query_timeout;
    let subscriber = log.subscriber();
    let importer = std::thread::spawn(move || {
        tracing::subscriber::with_default(subscriber, || {
            import::import(&bus, &session, &o, || {
                stop.load(std::sync::atomic::Ordering::Relaxed)
            })
        })
    });
    (importer, log)
}

#[test]
fn bridge_kills_mid_stream_with_a_wal_lose_nothing() {
    // The origin publishes steadily while the importer, then the exporter,
    // are killed and restarted; a recorder and --wal hold everything the
    // small ring loses meanwhile.
    let origin = Side::new("midstream", "a", 80_000);
    let far = Side::new("midstream", "b", 4 << 20);
    let wal = TempDir(std::env::temp_dir().join(format!("{}-wal", origin.ns)));
    let _ = std::fs::remove_dir_all(&wal.0);
    let _recorder = recorder(&origin, &wal.0);
    wait_hold(&origin, &format!("recorder-{TOPIC}"));
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let wal_arg = wal.0.to_str().unwrap();
    let export_args = [
        "export", "--topic", TOPIC, "--listen", &listen, "--wal", wal_arg,
    ];
    let import_args = [
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
        "--query-timeout-ms",
        "500",
    ];
    let export = origin.bridge(&export_args);
    let import = far.bridge(&import_args);
    let n: u64 = 4_000;
    let bus = origin.bus.clone();
    let publisher = std::thread::spawn(move || {
        let mut p = bus
            .publisher_with(
                TOPIC,
                PublisherOptions {
                    gating: GatingPolicy::Wait(Duration::from_secs(10)),
                    ..Default::default()
                },
            )
            .unwrap();
        let start = Instant::now();
        for i in 0..n {
            // About 4000 trades a second, for about a second.
            while start.elapsed() < Duration::from_micros(250 * i) {
                std::thread::yield_now();
            }
            assert_eq!(p.publish(&trade(i)).unwrap(), i);
        }
    });
    wait_for("the far side at 500", || far.head() >= 500);
    import.kill();
    wait_for("the origin at 1200", || origin.head() >= 1200);
    let import = far.bridge(&import_args);
    wait_for("the far side at 1800", || far.head() >= 1800);
    export.kill();
    wait_for("the origin at 2600", || origin.head() >= 2600);
    let export = origin.bridge(&export_args);
    publisher.join().unwrap();
    far.wait_head(n);
    let got = read_all(&far, n);
    let mut lost = Vec::new();
    for (seq, g) in got.iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => lost.push(seq),
        }
    }
    // At most the one sequence the importer may have been killed between
    // claiming and committing (see docs/bridge.md, Limits); the WAL holds
    // everything else.
    assert!(lost.len() <= 1, "lost {lost:?}; the WAL holds them");
    drop((export, import));
}

/// The origin identity a test's stand-in exporter sends.
const FAKE_ORIGIN: zerocast_runtime::bridge::wire::Origin =
    zerocast_runtime::bridge::wire::Origin {
        creation_ns: 1_700_000_000_000_000_000,
        creator: 0x1234,
    };

/// Trade `seq` as the origin's ring holds it: archived, with its sequence.
fn frame_bytes(seq: u64) -> Vec<u8> {
    let mut buf = zerocast_core::frame::FrameBuf::default();
    let n = zerocast_core::frame::encode(&trade(seq), 0, 1_000 + seq, &mut buf.0).unwrap();
    buf.0[0] = seq;
    zerocast_core::frame::words_as_bytes(&buf.0[..n]).to_vec()
}

#[test]
fn regression_hole_while_no_exporter_answers_waits_instead_of_reporting_lost() {
    // The importer sees a hole (frame 5 first) while nothing answers its
    // queries (the exporter died right after sending): it must keep asking
    // until an exporter answers, not report 0..=4 lost after three
    // unanswered queries.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::{import, wire::Message};

    let far = Side::new("unanswered", "b", 4 << 20);
    let key = "zerocast/unanswered/trade_events";
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    let importer = {
        let (bus, stop) = (far.bus.clone(), stop.clone());
        let mut o = import::ImportOptions::new(TOPIC, key);
        o.query_timeout = Duration::from_millis(100);
        std::thread::spawn(move || {
            import::import(&bus, &session, &o, || stop.load(Ordering::Relaxed))
        })
    };
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    let mut m = Message::new(FAKE_ORIGIN);
    m.frame(5, &frame_bytes(5));
    publisher.put(m.bytes().to_vec()).wait().unwrap();
    // Several query timeouts (100 ms) with nobody answering. Deliberate:
    // time must pass with nothing happening, which no event shows (on a
    // loaded machine fewer may pass: the test then proves less, never
    // fails wrongly).
    std::thread::sleep(Duration::from_millis(600));
    // An exporter back: answers every query with what it asks for.
    let queryable = origin.declare_queryable(key).wait().unwrap();
    let answered = std::thread::spawn(move || {
        let Some(q) = queryable.recv_timeout(Duration::from_secs(5)).unwrap() else {
            return; // nothing asked: the hole was (wrongly) given up
        };
        let from: u64 = q.parameters().get("from").unwrap().parse().unwrap();
        let to: u64 = q.parameters().get("to").unwrap().parse().unwrap();
        let mut m = Message::new(FAKE_ORIGIN);
        for s in from..=to {
            m.frame(s, &frame_bytes(s));
        }
        m.head(to + 1);
        q.reply(key, m.bytes().to_vec()).wait().unwrap();
    });
    far.wait_head(6);
    answered.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    importer.join().unwrap().unwrap();
    for (seq, g) in read_all(&far, 6).iter().enumerate() {
        assert!(matches!(g, Got::Frame(_)), "sequence {seq} reported lost");
    }
}

#[test]
fn regression_lost_range_to_the_last_sequence_neither_panics_nor_ignores_stop() {
    // Bytes from the network are not trusted: a live message saying
    // `Lost { 0 ..= u64::MAX }` once overflowed the importer's count (a
    // panic in a debug build, `publish_lost(0)` in release), and a long
    // lost range was marked without looking at `stop`, so the importer did
    // not stop for hours. It must stay stoppable and return cleanly.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::{import, wire::Message};

    let far = Side::new("lostmax", "b", 1 << 20);
    let key = "zerocast/lostmax/trade_events";
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let (bus, stop) = (far.bus.clone(), stop.clone());
        let mut o = import::ImportOptions::new(TOPIC, key);
        o.query_timeout = Duration::from_millis(100);
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                import::import(&bus, &session, &o, || stop.load(Ordering::Relaxed))
            }));
            let _ = done_tx.send(r.map_err(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            }));
        });
    }
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    let mut m = Message::new(FAKE_ORIGIN);
    m.lost(0, u64::MAX);
    publisher.put(m.bytes().to_vec()).wait().unwrap();
    let cap = far.capacity();
    let deadline = Instant::now() + Duration::from_secs(10);
    while far.head() < 2 * cap && Instant::now() < deadline {
        if let Ok(r) = done_rx.try_recv() {
            panic!("the importer ended before it was stopped: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let r = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the importer did not stop within 5 s of stop()");
    let stats = r
        .expect("the importer panicked")
        .expect("the importer failed");
    assert!(stats.lost >= 2 * cap, "{stats:?}");
}

#[test]
fn regression_empty_query_reply_for_a_hole_is_asked_again_not_reported_lost() {
    // An exporter stopping (or past its deadline) while it serves a query
    // replies with a head mark and nothing else. For a known hole that is
    // no answer: the importer must ask again, not report the whole hole
    // lost although the exporter's ring or WAL holds it.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::{import, wire::Message};

    let far = Side::new("emptyreply", "b", 4 << 20);
    let key = "zerocast/emptyreply/trade_events";
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    // The exporter's queryable: a query without `to` (the importer's start)
    // finds an empty topic; the first for a hole gets only a head mark (an
    // interrupted reply), later ones what they ask for.
    let queryable = origin.declare_queryable(key).wait().unwrap();
    let served = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut hole_queries = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(q)) = queryable.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let from: u64 = q.parameters().get("from").unwrap().parse().unwrap();
                let mut m = Message::new(FAKE_ORIGIN);
                if let Some(to) = q.parameters().get("to") {
                    let to: u64 = to.parse().unwrap();
                    hole_queries += 1;
                    if hole_queries > 1 {
                        for s in from..=to {
                            m.frame(s, &frame_bytes(s));
                        }
                        m.head(to + 1);
                    } else {
                        m.head(from);
                    }
                } else {
                    m.head(from);
                }
                q.reply(key, m.bytes().to_vec()).wait().unwrap();
            }
            hole_queries
        })
    };
    let importer = {
        let (bus, stop) = (far.bus.clone(), stop.clone());
        let mut o = import::ImportOptions::new(TOPIC, key);
        o.query_timeout = Duration::from_millis(500);
        std::thread::spawn(move || {
            import::import(&bus, &session, &o, || stop.load(Ordering::Relaxed))
        })
    };
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    let mut m = Message::new(FAKE_ORIGIN);
    m.frame(5, &frame_bytes(5));
    publisher.put(m.bytes().to_vec()).wait().unwrap();
    far.wait_head(6);
    stop.store(true, Ordering::Relaxed);
    importer.join().unwrap().unwrap();
    assert!(served.join().unwrap() >= 1);
    for (seq, g) in read_all(&far, 6).iter().enumerate() {
        assert!(matches!(g, Got::Frame(_)), "sequence {seq} reported lost");
    }
}

#[test]
fn regression_second_importer_on_a_topic_is_refused_at_start() {
    // Two importers on one far-side topic (an overlapping restart, a
    // second `bridge import` by mistake) both publish origin sequences
    // into one ring: local sequences stop being the origin's. The second
    // must refuse to start, naming the publisher already there.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::{import, open_session};

    let far = Side::new("twoimporters", "b", 1 << 20);
    let key = "zerocast/twoimporters/trade_events";
    let endpoint = vec![format!("tcp/127.0.0.1:{}", free_port())];
    let origin = open_session(None, &endpoint, &[]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut o = import::ImportOptions::new(TOPIC, key);
    o.query_timeout = Duration::from_millis(100);
    let first = {
        let (bus, stop, o) = (far.bus.clone(), stop.clone(), o.clone());
        let session = open_session(None, &[], &endpoint).unwrap();
        std::thread::spawn(move || {
            import::import(&bus, &session, &o, || stop.load(Ordering::Relaxed))
        })
    };
    // The first importer is subscribed: its publisher is registered.
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the first importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    let session = open_session(None, &[], &endpoint).unwrap();
    let t0 = Instant::now();
    let second = import::import(&far.bus, &session, &o, || {
        t0.elapsed() > Duration::from_millis(1500)
    });
    stop.store(true, Ordering::Relaxed);
    first.join().unwrap().unwrap();
    let e = second.expect_err("a second importer on the topic ran");
    assert!(e.contains("another publisher") && e.contains(TOPIC), "{e}");
}

#[test]
fn regression_live_messages_queued_during_a_slow_query_stay_bounded() {
    // While a query waits, live messages are taken off the subscription
    // into the importer's memory. A reply that takes long while the origin
    // publishes fast once grew that queue without bound; it must stay
    // within `MAX_PENDING` messages (those dropped are asked for again as
    // a hole), and every frame must still arrive.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use zenoh::qos::CongestionControl;
    use zenoh::Wait;
    use zerocast_runtime::bridge::{import, wire::Message};

    let n: u64 = import::MAX_PENDING as u64 + 2_000;
    let far = Side::new("pending", "b", 4 << 20);
    let key = "zerocast/pending/trade_events";
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    let (asked_tx, asked_rx) = mpsc::channel();
    let (published_tx, published_rx) = mpsc::channel::<()>();
    let queryable = origin.declare_queryable(key).wait().unwrap();
    let served = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut first_hole = true;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(q)) = queryable.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let from: u64 = q.parameters().get("from").unwrap().parse().unwrap();
                let mut m = Message::new(FAKE_ORIGIN);
                match q.parameters().get("to") {
                    // The importer's start: an empty topic.
                    None => m.head(from),
                    Some(to) => {
                        if first_hole {
                            // Hold the reply until the origin published.
                            first_hole = false;
                            asked_tx.send(()).unwrap();
                            published_rx.recv().unwrap();
                        }
                        let to: u64 = to.parse().unwrap();
                        for s in from..=to {
                            m.frame(s, &frame_bytes(s));
                        }
                        m.head(to + 1);
                    }
                }
                q.reply(key, m.bytes().to_vec()).wait().unwrap();
            }
        })
    };
    let log = LogCapture::default();
    let importer = {
        let (bus, stop) = (far.bus.clone(), stop.clone());
        let mut o = import::ImportOptions::new(TOPIC, key);
        o.query_timeout = Duration::from_secs(20);
        let subscriber = log.subscriber();
        std::thread::spawn(move || {
            tracing::subscriber::with_default(subscriber, || {
                import::import(&bus, &session, &o, || stop.load(Ordering::Relaxed))
            })
        })
    };
    let publisher = origin
        .declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    // Frame 1 first: a hole at 0, whose query is held.
    let send = |s: u64| {
        let mut m = Message::new(FAKE_ORIGIN);
        m.frame(s, &frame_bytes(s));
        publisher.put(m.bytes().to_vec()).wait().unwrap();
    };
    send(1);
    asked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    for s in 2..n {
        send(s);
    }
    // Until the importer, taking them off the subscription, has passed its
    // bound (it says so once); the reply is held until then.
    wait_for("the importer's queue passed its bound", || {
        log.contains("passed the bound")
    });
    published_tx.send(()).unwrap();
    far.wait_head(n);
    stop.store(true, Ordering::Relaxed);
    let stats = importer.join().unwrap().unwrap();
    served.join().unwrap();
    assert!(
        stats.pending_peak <= import::MAX_PENDING as u64,
        "{stats:?}: more than {} messages queued",
        import::MAX_PENDING
    );
    assert!(
        stats.pending_dropped > 0,
        "{stats:?}: the bound was not reached"
    );
    for (seq, g) in read_all(&far, n).iter().enumerate() {
        assert!(matches!(g, Got::Frame(_)), "sequence {seq} reported lost");
    }
}

/// Waits (at most 10 s) for `child` to exit; its status and stderr.
fn wait_exit(mut child: Proc) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            child
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            panic!(
                "the importer still runs 10 s after the origin was recreated: it went on silently"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn regression_recreated_origin_is_never_skipped_silently() {
    // The origin topic recreated (segment removed and created again, its
    // sequences restarting at 0) while the far side is at 10: the importer
    // once took the new origin's frames 0..5 for duplicates and skipped
    // them, telling far-side subscribers nothing. It must stop with an
    // error naming the topic and both origin identities, also after a
    // restart; once the far side is recreated, it follows the new origin.
    let origin = Side::new("recreated", "a", 1 << 20);
    let far = Side::new("recreated", "b", 1 << 20);
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let export_args = ["export", "--topic", TOPIC, "--listen", &listen];
    let import_args = [
        "import",
        "--topic",
        TOPIC,
        "--origin-namespace",
        &origin.ns,
        "--connect",
        &listen,
        "--query-timeout-ms",
        "300",
    ];
    // Killed and reaped however the test ends (a `Proc`).
    let importer = |far: &Side| {
        Proc(
            Command::new(BIN)
                .env_remove("ZEROCAST_NAMESPACE")
                .env("ZEROCAST_LOG", "warn,zenoh=error")
                .args(["--namespace", &far.ns, "--config"])
                .arg(&far.config)
                .arg("bridge")
                .args(import_args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let export = origin.bridge(&export_args);
    let import = importer(&far);
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    publish(&mut p, 0, 10);
    far.wait_head(10);
    let old_identity = {
        let h = origin.bus.segment(TOPIC).unwrap();
        format!("{}-{:016x}", h.header().creation_ns, h.header().creator)
    };

    // The origin recreated: its sequences restart at 0.
    export.kill();
    drop(p);
    origin.bus.remove_segments();
    let mut p = origin.bus.publisher(TOPIC).unwrap();
    publish(&mut p, 0, 5);
    let new_identity = {
        let h = origin.bus.segment(TOPIC).unwrap();
        format!("{}-{:016x}", h.header().creation_ns, h.header().creator)
    };
    assert_ne!(old_identity, new_identity);
    let _export = origin.bridge(&export_args);
    let (status, err) = wait_exit(import);
    assert!(!status.success(), "{status}: {err}");
    for word in [TOPIC, &old_identity, &new_identity, "recreate"] {
        assert!(
            err.contains(word),
            "the error does not name {word:?}: {err}"
        );
    }
    assert_eq!(far.head(), 10, "the far side changed");

    // A restarted importer knows the origin it followed.
    let (status, err) = wait_exit(importer(&far));
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains(&new_identity), "{err}");

    // The far side recreated: the importer follows the new origin.
    far.bus.remove_segments();
    let mut import = importer(&far);
    far.wait_head(5);
    assert!(
        import.0.try_wait().unwrap().is_none(),
        "the importer stopped"
    );
    drop(import);
    for (seq, g) in read_all(&far, 5).iter().enumerate() {
        match g {
            Got::Frame(bytes) => check_frame(seq as u64, bytes),
            Got::Lost => panic!("sequence {seq} lost"),
        }
    }
}

/// Runs an importer of `far`'s topic against a stand-in exporter on the
/// key `key` that answers every query with `reply` and sends `live` once
/// the importer is subscribed; the importer's result (it is stopped
/// after 5 s).
fn import_against(
    far: &Side,
    key: &'static str,
    reply: Vec<u8>,
    live: Vec<u8>,
) -> Result<zerocast_runtime::bridge::import::ImportStats, String> {
    use zenoh::Wait;
    use zerocast_runtime::bridge::import;

    let (origin, session) = loopback_sessions();
    let queryable = origin.declare_queryable(key).wait().unwrap();
    let publisher = origin.declare_publisher(key).wait().unwrap();
    let served = std::thread::spawn(move || {
        while let Ok(Some(q)) = queryable.recv_timeout(Duration::from_secs(6)) {
            q.reply(key, reply.clone()).wait().unwrap();
        }
    });
    let sent = std::thread::spawn(move || {
        wait_for("the importer subscribed", || {
            publisher.matching_status().wait().unwrap().matching()
        });
        publisher.put(live).wait().unwrap();
    });
    let mut o = import::ImportOptions::new(TOPIC, key);
    o.query_timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    let r = import::import(&far.bus, &session, &o, || {
        t0.elapsed() > Duration::from_secs(5)
    });
    sent.join().unwrap();
    drop(origin);
    let _ = served.join();
    r
}

#[test]
fn regression_peer_of_another_wire_version_is_an_error_naming_both() {
    // A message of wire version 1 (an exporter of an earlier release, no
    // origin identity) was skipped as malformed and its sequences asked
    // for again, forever: it must stop the importer, naming both versions.
    use zerocast_runtime::bridge::wire::{Message, VERSION};

    let far = Side::new("oldpeer", "b", 1 << 20);
    let mut reply = Message::new(FAKE_ORIGIN);
    reply.head(0);
    // Version 1: the version byte, then a frame entry.
    let mut live = vec![1u8, 1];
    live.extend_from_slice(&0u64.to_le_bytes());
    let frame = frame_bytes(0);
    live.extend_from_slice(&(frame.len() as u16).to_le_bytes());
    live.extend_from_slice(&frame);
    let e = import_against(
        &far,
        "zerocast/oldpeer/trade_events",
        reply.bytes().to_vec(),
        live,
    )
    .expect_err("the importer took a version-1 message");
    assert_eq!(VERSION, 2);
    assert!(
        e.contains("version 1") && e.contains("version 2") && e.contains(TOPIC),
        "{e}"
    );
    assert_eq!(far.head(), 0);
}

#[test]
fn regression_frame_larger_than_the_local_slot_names_topic_sequence_and_sizes() {
    // A far-side topic of a smaller kind than the origin's (heartbeat
    // slots, trade frames): the importer must stop with an error naming
    // the topic, the origin sequence and both sizes.
    use zerocast_runtime::bridge::wire::Message;

    let far = Side::of_kind("toolarge", "b", 1 << 20, "heartbeat");
    let mut reply = Message::new(FAKE_ORIGIN);
    reply.head(0);
    let mut live = Message::new(FAKE_ORIGIN);
    live.frame(0, &frame_bytes(0));
    let e = import_against(
        &far,
        "zerocast/toolarge/trade_events",
        reply.bytes().to_vec(),
        live.bytes().to_vec(),
    )
    .expect_err("the importer took a frame larger than its slots");
    let frame = frame_bytes(0).len();
    assert!(
        e.contains(TOPIC)
            && e.contains("origin sequence 0")
            && e.contains(&format!("{frame} bytes"))
            && e.contains("-byte slots"),
        "{e}"
    );
    assert_eq!(far.head(), 0);
}

#[test]
fn regression_query_of_another_wire_version_is_answered_with_an_error() {
    // An importer of an earlier release asks without `v=2`: the exporter
    // must answer with an error naming both versions, not a reply the
    // importer cannot read.
    use zenoh::Wait;
    use zerocast_runtime::bridge::open_session;

    let origin = Side::new("oldquery", "a", 1 << 20);
    let port = free_port();
    let listen = format!("tcp/127.0.0.1:{port}");
    let _export = origin.bridge(&["export", "--topic", TOPIC, "--listen", &listen]);
    let session = open_session(None, &[], &[listen]).unwrap();
    let key = format!("zerocast/{}/{TOPIC}", origin.ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        assert!(
            Instant::now() < deadline,
            "no answer from the exporter in 10 s"
        );
        let replies = session
            .get(format!("{key}?from=0"))
            .timeout(Duration::from_millis(500))
            .wait()
            .unwrap();
        if let Ok(reply) = replies.recv() {
            match reply.result() {
                Ok(_) => panic!("the exporter answered a version-1 query with data"),
                Err(e) => break String::from_utf8_lossy(&e.payload().to_bytes()).into_owned(),
            }
        }
    };
    assert!(e.contains("version 1") && e.contains("version 2"), "{e}");
}

/// Review finding: the exporter took an iceoryx2 topic (the importer
/// refuses one). Its frames carry each publisher's own count, which
/// restarts at 0 with the publisher: the importer dropped the restarted
/// publisher's frames as ones it already had, uncounted, and queries read
/// an empty shared-memory segment the exporter created for the topic.
#[cfg(feature = "iceoryx2")]
#[test]
fn regression_the_exporter_took_an_iceoryx2_topic() {
    use zerocast_ipc::{TopicConfig, TopicKind};
    use zerocast_runtime::bridge::{export, open_session};
    let mut topic = TopicConfig::new(TOPIC, 1 << 20, TopicKind::Trade);
    topic.transport = zerocast_ipc::Transport::Iceoryx2;
    let bus = Bus::new(Config {
        namespace: format!("brx{}-iox", std::process::id()),
        topics: vec![topic],
    });
    let endpoint = vec![format!("tcp/127.0.0.1:{}", free_port())];
    let session = open_session(None, &endpoint, &[]).unwrap();
    let options = export::ExportOptions::new(TOPIC, "zerocast/iox/trade_events");
    let t0 = Instant::now();
    let result = export::export(&bus, &session, &options, || {
        t0.elapsed() > Duration::from_millis(500)
    });
    let e = result.expect_err("an iceoryx2 topic was exported");
    assert!(e.contains("iceoryx2") && e.contains(TOPIC), "{e}");
    assert!(
        !bus.config().segment_path(TOPIC).exists(),
        "the exporter created a shared-memory segment for an iceoryx2 topic"
    );
}

/// Review finding: an exporter's error reply to a query (one it cannot
/// serve, such as its log bound to a reset bus) was logged at debug level
/// and taken for silence: the importer kept asking with a warning that
/// nobody answered, and the cause was nowhere an operator would look.
#[test]
fn regression_an_exporter_error_reply_was_taken_for_silence() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::wire::Message;

    let far = Side::new("errreply", "b", 4 << 20);
    let key = "zerocast/errreply/trade_events";
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    let queryable = origin.declare_queryable(key).wait().unwrap();
    let answering = Arc::new(AtomicBool::new(true));
    let server = {
        let answering = answering.clone();
        std::thread::spawn(move || {
            while answering.load(Ordering::Relaxed) {
                if let Ok(Some(q)) = queryable.recv_timeout(Duration::from_millis(50)) {
                    q.reply_err("the bus was reset: a test's exporter")
                        .wait()
                        .unwrap();
                }
            }
        })
    };
    let (importer, log) = logged_importer(&far, session, key, Duration::from_millis(200), &stop);
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    // A hole at 0..=4, which the exporter answers with its error.
    let mut m = Message::new(FAKE_ORIGIN);
    m.frame(5, &frame_bytes(5));
    publisher.put(m.bytes().to_vec()).wait().unwrap();
    wait_for("the exporter's error in the importer's warnings", || {
        log.contains("the bus was reset: a test's exporter")
    });
    stop.store(true, Ordering::Relaxed);
    answering.store(false, Ordering::Relaxed);
    let _ = importer.join().unwrap();
    server.join().unwrap();
}

/// Review finding: an importer stopped while far-side gating subscribers
/// held its ring full returned an error ("stopped while ... behind"), so
/// `bridge import` exited 1 on SIGTERM there, where a stop anywhere else
/// is clean; nothing is lost either way (a restart goes on from the local
/// head).
#[test]
fn regression_a_stop_while_gating_subscribers_were_behind_was_an_error() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::wire::Message;

    let far = Side::new("stopbehind", "b", 128 << 10);
    let capacity = far.capacity();
    let key = "zerocast/stopbehind/trade_events";
    // A gating subscriber that never reads: the importer's ring fills.
    let _held = far
        .bus
        .subscriber(
            TOPIC,
            SubscriberOptions {
                name: "slow".into(),
                gating: true,
                start: Start::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    let (importer, log) = logged_importer(&far, session, key, Duration::from_millis(100), &stop);
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    let mut m = Message::new(FAKE_ORIGIN);
    for s in 0..capacity + 8 {
        m.frame(s, &frame_bytes(s));
    }
    publisher.put(m.bytes().to_vec()).wait().unwrap();
    wait_for("the importer waiting for the gating subscriber", || {
        log.contains("waiting for gating subscribers that are behind")
    });
    stop.store(true, Ordering::Relaxed);
    let stats = importer
        .join()
        .unwrap()
        .expect("a stop while gating subscribers were behind was an error");
    assert_eq!(stats.frames, capacity, "{stats:?}");
}

/// Review of the change above: the exporter error the importer names while
/// it keeps asking must be the last answer's, not an older one: an
/// exporter that answered with an error and then went silent (it died) was
/// still said to be unable to serve the range.
#[test]
fn regression_an_old_exporter_error_was_named_after_the_exporter_went_silent() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use zenoh::Wait;
    use zerocast_runtime::bridge::wire::Message;

    let far = Side::new("errsilent", "b", 4 << 20);
    let key = "zerocast/errsilent/trade_events";
    let (origin, session) = loopback_sessions();
    let stop = Arc::new(AtomicBool::new(false));
    let queryable = origin.declare_queryable(key).wait().unwrap();
    let (importer, log) = logged_importer(&far, session, key, Duration::from_millis(200), &stop);
    // The first query (the importer's start) gets an error; then the
    // exporter is gone.
    let q = queryable
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("no query at the importer's start");
    q.reply_err("the bus was reset: a test's exporter")
        .wait()
        .unwrap();
    drop(q);
    queryable.undeclare().wait().unwrap();
    wait_for("the exporter's error in the importer's warnings", || {
        log.contains("the bus was reset: a test's exporter")
    });
    let publisher = origin.declare_publisher(key).wait().unwrap();
    wait_for("the importer subscribed", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    let mut m = Message::new(FAKE_ORIGIN);
    m.frame(5, &frame_bytes(5));
    publisher.put(m.bytes().to_vec()).wait().unwrap();
    wait_for("the importer's warning that nobody answers", || {
        log.contains("no answer from the exporter for these sequences")
            || log.contains("cannot serve these sequences")
    });
    stop.store(true, Ordering::Relaxed);
    let _ = importer.join().unwrap();
    assert!(
        !log.contains("cannot serve these sequences"),
        "an old exporter error was named for a silent exporter"
    );
}
