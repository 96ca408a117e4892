//! The benchmark harness: latency, fan-out and throughput across processes on
//! pinned cores, zerocast beside iceoryx2, measured in the same run.
//!
//! `cargo run --release -p zerocast-benches --bin harness -- all`
//! (`--smoke` for tiny counts; CI runs that and checks the JSON is complete).
//!
//! Every run first measures, on the same two pinned cores, the core-to-core
//! floor (one cache line ping-ponged), iceoryx2's own ping-pong method
//! (mean and p50 of RTT/2, 160 B trade frames) for zerocast and plain
//! iceoryx2, and the wake-ups with no spin (bare futex, zerocast
//! blocking with no spin, iceoryx2's Listener): see `zerocast_benches::pingpong`.
//! Every latency is also given as a multiple of the floor, and the run
//! draws `latency.svg` (percentile distribution) and `fanout.svg` (publish
//! cost against subscribers) beside `results.json`. `--pairs-only` runs
//! just the two-core cases. With the throughput cases it runs the broadcast
//! ring against rtrb between two threads (`zerocast_benches::rings`), and
//! every report judges issue 14's targets on its own figures
//! (`zerocast_benches::criteria`: `criteria` in the JSON, the first table
//! of the markdown).
//!
//! Latency is receive time minus the *scheduled* send time (CLOCK_MONOTONIC,
//! shared by all processes), so a stalled publisher shows up in the figures
//! instead of being hidden (no coordinated omission).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use iceoryx2::prelude::*;
use serde_json::{json, Value};
use zerocast_benches::pingpong::{self, MAX_ROUNDS};
use zerocast_benches::plot::{Chart, Series};
use zerocast_benches::{cores, criteria};
use zerocast_core::broadcast::{GatingCache, Start as RingStart, TryRecvError};
use zerocast_core::frame::{
    self, id::id, Body, Direction, FrameBuf, Level, MarketL2, TradeEvent, L2_DEPTH,
};
use zerocast_ipc::{
    Bus, Config, GatingPolicy, Producers, Publisher, PublisherOptions, RecvError, Segment, Start,
    SubscriberOptions, TopicConfig, TopicKind, Transport, WaitStrategy,
};

#[derive(Parser, Debug)]
#[command(name = "harness", about = "zerocast benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the whole suite and write JSON and markdown results.
    All(AllArgs),
    /// The delayed tier: rows/s into SQLite, publish-to-commit latency, size.
    Delayed(zerocast_benches::delayed::DelayedArgs),
    /// The real-time tier: WebSocket clients on loopback, publish-to-client latency.
    Gateway(zerocast_benches::gateway_load::GatewayLoadArgs),
    /// The zenoh bridge over loopback TCP beside the local bus: trades/s, latency.
    Bridge(zerocast_benches::bridge_load::BridgeLoadArgs),
    /// A subscriber process (spawned by the harness).
    #[command(hide = true)]
    Child(ChildArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct AllArgs {
    /// Tiny counts: checks the harness works, not the timings.
    #[arg(long)]
    smoke: bool,
    /// Directory for results.json, results.md, latency.svg and fanout.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Paced send rate for latency runs, frames/s.
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    /// Frames per latency run (after warm-up).
    #[arg(long, default_value_t = 500_000)]
    frames: u64,
    /// Largest iceoryx2 fan-out to run.
    #[arg(long, default_value_t = 100)]
    iox_fanout_max: usize,
    /// Directory for the durability benchmarks' WALs (on the disk to measure).
    #[arg(long, default_value = "target/bench-wal")]
    wal_dir: PathBuf,
    /// Skip the bus suites, run only durability.
    #[arg(long)]
    durability_only: bool,
    /// Skip the durability suite.
    #[arg(long)]
    no_durability: bool,
    /// Run only the two-core cases (floor, ping-pong, wake-up): a short
    /// run that checks our figures against iceoryx2's own method.
    #[arg(long, conflicts_with = "durability_only")]
    pairs_only: bool,
    /// Run only the throughput cases (the raw ring beside the publish API,
    /// iceoryx2): a short run for the publish path's ratio to the ring.
    #[arg(long, conflicts_with_all = ["durability_only", "pairs_only"])]
    throughput_only: bool,
    /// Round trips of the floor and ping-pong cases (busy-polling; 10 to
    /// 100,000,000, a tenth of them warm-up; each counted one is kept, 8
    /// bytes).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(10..=MAX_ROUNDS))]
    pingpong_rounds: u64,
    /// Round trips of the wake-up cases (no spin: a side sleeps unless its
    /// answer is already there; 10 to 100,000,000).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(10..=MAX_ROUNDS))]
    wake_rounds: u64,
    /// Interleaved rounds, run with the throughput cases, of the broadcast
    /// ring against rtrb (two threads, trade frames) and of the publish API
    /// against the raw ring (1 -> 1 process); 1 with --smoke.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    interleaved_rounds: u64,
}

#[derive(clap::Args, Debug, Clone)]
struct ChildArgs {
    /// latency or count.
    #[arg(long)]
    role: String,
    /// shm, shm-gating, shm-single (a single-producer topic), shm-at and shm-single-at (subscribed as shm and shm-single; their publisher uses `publish_at`), shm-single-tsc (x86_64: `publish_at` with a bare TSC read for the time), iox (zerocast's adapter) or iox-plain.
    #[arg(long)]
    transport: String,
    /// trade or l2.
    #[arg(long)]
    kind: String,
    /// spin, yield or block.
    #[arg(long)]
    wait: String,
    #[arg(long)]
    namespace: String,
    /// Core id to pin to.
    #[arg(long)]
    core: usize,
    /// Subscriber threads in this process (count role).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Subscribers of the whole case (all processes): plain iceoryx2's
    /// service is sized for exactly these.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
}

// ------------------------------------------------------------------ clock

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pin_to(core: usize) {
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    assert!(ok, "failed to pin to core {core}");
}

// ------------------------------------------------------------------ frames

/// Marks carried in the body: `timestamp` = scheduled send time; a negative
/// volume marks warm-up frames, a negative price the stop frame.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Warmup,
    Measure,
    Stop,
}

fn trade(scheduled: u64, mark: Mark) -> TradeEvent {
    TradeEvent {
        trade_id: id("T-000000000001").unwrap(),
        order_id: id("O-000000000001").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: if mark == Mark::Stop { -1.0 } else { 64_000.0 },
        volume: if mark == Mark::Warmup { -1.0 } else { 0.5 },
        direction: Direction::Buy,
        timestamp: scheduled as i64,
    }
}

fn book(scheduled: u64, mark: Mark) -> MarketL2 {
    let mut bids = [Level {
        price: 100.0,
        volume: 1.0,
    }; L2_DEPTH];
    let asks = [Level {
        price: 101.0,
        volume: 1.0,
    }; L2_DEPTH];
    if mark == Mark::Stop {
        bids[0].price = -1.0;
    }
    if mark == Mark::Warmup {
        bids[0].volume = -1.0;
    }
    MarketL2 {
        instrument_id: id("BTC-USDT").unwrap(),
        bids,
        asks,
        timestamp: scheduled as i64,
    }
}

/// (header sequence, scheduled, mark) from a frame's bytes, validated.
fn read_mark(kind: &str, bytes: &[u8]) -> Option<(u64, u64, Mark)> {
    let classify = |price: f64, volume: f64| {
        if price < 0.0 {
            Mark::Stop
        } else if volume < 0.0 {
            Mark::Warmup
        } else {
            Mark::Measure
        }
    };
    if kind == "l2" {
        let (h, b) = frame::decode::<MarketL2>(bytes).ok()?;
        Some((
            h.seq.to_native(),
            b.timestamp.to_native() as u64,
            classify(b.bids[0].price.to_native(), b.bids[0].volume.to_native()),
        ))
    } else {
        let (h, t) = frame::decode::<TradeEvent>(bytes).ok()?;
        Some((
            h.seq.to_native(),
            t.timestamp.to_native() as u64,
            classify(t.price.to_native(), t.volume.to_native()),
        ))
    }
}

// ------------------------------------------------------------------ transports

fn bus_for(namespace: &str, transport: &str, kind: &str) -> Bus {
    let k = if kind == "l2" {
        TopicKind::L2
    } else {
        TopicKind::Trade
    };
    let mut topic = TopicConfig::new("bench", 16 << 20, k);
    topic.transport = if transport.starts_with("iox") {
        Transport::Iceoryx2
    } else {
        Transport::Shm
    };
    // "shm-single", "shm-single-at", "shm-single-tsc": a single-producer
    // topic (claims by plain store).
    if transport.starts_with("shm-single") {
        topic.producers = Producers::Single;
    }
    Bus::new(Config {
        namespace: namespace.to_owned(),
        topics: vec![topic],
    })
}

fn plain_service_name(namespace: &str) -> String {
    format!("zerocast-harness-plain/{namespace}")
}

/// Plain iceoryx2's publish-subscribe service, set up per case the way its
/// own benchmarks set it up: one publisher, exactly the case's subscribers
/// (and a node each, plus the publisher's), a buffer of 256 samples with
/// safe overflow, no history.
fn plain_service(
    node: &Node<ipc::Service>,
    namespace: &str,
    subscribers: usize,
) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u64], ()> {
    let name: ServiceName = plain_service_name(namespace)
        .as_str()
        .try_into()
        .expect("service name");
    node.service_builder(&name)
        .publish_subscribe::<[u64]>()
        .enable_safe_overflow(true)
        .subscriber_max_buffer_size(PLAIN_BUFFER)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(subscribers)
        .max_nodes(subscribers + 1)
        .open_or_create()
        .expect("plain iceoryx2 service")
}

/// Samples a plain iceoryx2 subscriber buffers (its own benchmarks' size).
const PLAIN_BUFFER: usize = 256;

/// Plain iceoryx2's event service, for the "block" rows: the subscriber
/// waits on a Listener, the publisher notifies after every send.
fn plain_event(
    node: &Node<ipc::Service>,
    namespace: &str,
    subscribers: usize,
) -> iceoryx2::service::port_factory::event::PortFactory<ipc::Service> {
    let name: ServiceName = format!("{}/event", plain_service_name(namespace))
        .as_str()
        .try_into()
        .expect("event service name");
    node.service_builder(&name)
        .event()
        .max_notifiers(1)
        .max_listeners(subscribers)
        .max_nodes(subscribers + 1)
        .open_or_create()
        .expect("plain iceoryx2 event service")
}

/// The throughput table's rows per subscriber count: (transport, batch).
/// A transport ending in `-at` publishes with `Publisher::publish_at`, the
/// trade's own time for the frame's, reading no clock; one ending in
/// `-tsc` with `publish_at` and a bare TSC read (batch 1 only, both).
const THROUGHPUT_ROWS: &[(&str, usize)] = &[
    ("shm-raw", 1),
    ("shm", 1),
    ("shm", 32),
    ("shm-at", 1),
    ("shm-gating", 1),
    ("shm-gating", 32),
    ("shm-single", 1),
    ("shm-single", 32),
    ("shm-single-at", 1),
    #[cfg(target_arch = "x86_64")]
    ("shm-single-tsc", 1),
    ("iox", 1),
    ("iox", 32),
    ("iox-plain", 1),
];

/// Polls before a blocking subscriber sleeps, on every transport.
const BLOCK_SPINS: u32 = 100;

/// What a wait strategy really does on a transport, for the report.
fn wait_does(transport: &str, wait: &str) -> &'static str {
    match (transport, wait) {
        (_, "spin") => "busy-polls, never pauses",
        (_, "yield") => "polls 100 times, then yields the CPU between polls",
        (
            "shm" | "shm-gating" | "shm-single" | "shm-at" | "shm-single-at" | "shm-single-tsc",
            "block",
        ) => {
            "polls 100 times, then sleeps on the segment's futex (re-checks every 20 ms); the publisher wakes it with futex_wake"
        }
        ("iox", "block") => {
            "polls 100 times, then waits on an iceoryx2 Listener; zerocast's adapter notifies after each publish"
        }
        ("iox-plain", "block") => {
            "polls 100 times, then waits on an iceoryx2 Listener; the publisher notifies after each send"
        }
        _ => "unknown",
    }
}

/// The publishing side of any transport.
// The plain iceoryx2 variant keeps its frame buffer inline, as the plain
// benchmark of iceoryx2 would; one value per process, never moved in a loop.
#[allow(clippy::large_enum_variant)]
enum Sender {
    Zc(Publisher),
    /// "shm-raw": the segment's broadcast ring itself, below the publish
    /// API (no frame encoding, publisher table, wake-up or counters): what
    /// `Publisher::publish` is measured against. The publisher is kept for
    /// its registration only.
    Raw {
        _publisher: Publisher,
        seg: Arc<Segment>,
        cache: GatingCache,
        buf: FrameBuf,
    },
    Plain {
        _node: Node<ipc::Service>,
        publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u64], ()>,
        /// Only in "block" cases: wakes the subscribers' Listeners.
        notifier: Option<Box<iceoryx2::port::notifier::Notifier<ipc::Service>>>,
        buf: FrameBuf,
        /// Sequence of the next frame: written into its header, so that
        /// subscribers count iceoryx2's overflow drops as gaps.
        next_seq: u64,
    },
}

impl Sender {
    fn new(namespace: &str, transport: &str, kind: &str, wait: &str, subscribers: usize) -> Self {
        if transport == "iox-plain" {
            set_log_level(LogLevel::Error);
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node");
            let service = plain_service(&node, namespace, subscribers);
            let words = if kind == "l2" {
                frame::frame_words(frame::MessageKind::L2)
            } else {
                frame::frame_words(frame::MessageKind::Trade)
            };
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(words)
                .create()
                .expect("plain publisher");
            let notifier = (wait == "block").then(|| {
                Box::new(
                    plain_event(&node, namespace, subscribers)
                        .notifier_builder()
                        .create()
                        .expect("plain notifier"),
                )
            });
            Self::Plain {
                _node: node,
                publisher,
                notifier,
                buf: FrameBuf::default(),
                next_seq: 0,
            }
        } else if transport == "shm-raw" {
            let bus = bus_for(namespace, transport, kind);
            let publisher = bus.publisher("bench").expect("publisher");
            let seg = bus.segment("bench").expect("segment");
            Self::Raw {
                _publisher: publisher,
                seg,
                cache: GatingCache::default(),
                buf: FrameBuf::default(),
            }
        } else {
            let bus = bus_for(namespace, transport, kind);
            let publisher = bus
                .publisher_with(
                    "bench",
                    PublisherOptions {
                        name: "harness".into(),
                        gating: GatingPolicy::Wait(Duration::from_secs(5)),
                    },
                )
                .expect("publisher");
            Self::Zc(publisher)
        }
    }

    #[inline]
    fn send<B: Body>(&mut self, body: &B) {
        match self {
            Self::Zc(p) => {
                p.publish(body).expect("publish");
            }
            Self::Raw {
                seg, cache, buf, ..
            } => {
                let words = frame::encode(body, 0, mono_ns(), &mut buf.0).expect("encode");
                seg.ring()
                    .try_publish(cache, &buf.0[..words])
                    .expect("raw publish");
            }
            Self::Plain {
                publisher,
                notifier,
                buf,
                next_seq,
                ..
            } => {
                let words = frame::encode(body, 0, 0, &mut buf.0).expect("encode");
                set_seq::<B>(&mut buf.0[..words], *next_seq);
                *next_seq += 1;
                let sample = publisher.loan_slice_uninit(words).expect("loan");
                sample
                    .write_from_slice(&buf.0[..words])
                    .send()
                    .expect("send");
                if let Some(n) = notifier {
                    n.notify().expect("notify");
                }
            }
        }
    }

    /// "shm-raw" only: publishes an encoded frame on the ring as it is.
    #[inline]
    fn send_words(&mut self, words: &[u64]) {
        let Self::Raw { seg, cache, .. } = self else {
            panic!("send_words is for the raw ring");
        };
        seg.ring().try_publish(cache, words).expect("raw publish");
    }

    /// `publish_at` with the trade's own time (no clock read), or with
    /// `tsc`, a bare TSC read (`rdtsc`, x86_64) right before the publish:
    /// not a wall-clock time (subscribers that read it get nonsense), but
    /// the least any clock read per frame can add to a publish.
    #[inline]
    fn send_at(&mut self, body: &TradeEvent, tsc: bool) {
        let Self::Zc(p) = self else {
            panic!("send_at is for zerocast's publishers");
        };
        let t = if tsc {
            zerocast_benches::pingpong::PathClock::Rdtsc.read()
        } else {
            body.timestamp as u64
        };
        p.publish_at(body, t).expect("publish_at");
    }

    fn send_batch<B: Body>(&mut self, bodies: &[B]) {
        match self {
            Self::Zc(p) => {
                p.publish_batch(bodies).expect("publish batch");
            }
            Self::Raw { .. } => panic!("no batches on the raw ring"),
            Self::Plain { .. } => {
                for b in bodies {
                    self.send(b);
                }
            }
        }
    }

    fn send_kind(&mut self, kind: &str, scheduled: u64, mark: Mark) {
        if kind == "l2" {
            self.send(&book(scheduled, mark));
        } else {
            self.send(&trade(scheduled, mark));
        }
    }
}

/// Writes `seq` into an encoded frame of a `B` (plain iceoryx2 has no ring
/// to assign it). `FrameHeader::seq` is the archived header's first field,
/// a little-endian u64; checked against the decoder in debug builds.
fn set_seq<B: Body>(words: &mut [u64], seq: u64) {
    words[0] = seq.to_le();
    debug_assert_eq!(
        frame::decode::<B>(frame::words_as_bytes(words))
            .ok()
            .map(|(h, _)| h.seq.to_native()),
        Some(seq)
    );
}

/// What a subscriber saw besides its frames: sequences skipped (lapped on
/// the ring, or dropped by iceoryx2's overflow) and sequences declared lost
/// (a publisher died mid-publish; shm only).
#[derive(Default, Clone, Copy)]
struct Tally {
    lagged: u64,
    lost: u64,
}

/// The receiving side of any transport: calls `f(bytes)` for each frame until
/// it returns false or nothing arrives for `idle`.
fn receive_loop(args: &ChildArgs, idle: Duration, mut f: impl FnMut(&[u8]) -> bool) -> Tally {
    let wait = match args.wait.as_str() {
        "spin" => WaitStrategy::BusySpin,
        "yield" => WaitStrategy::SpinThenYield { spins: BLOCK_SPINS },
        _ => WaitStrategy::Blocking { spins: BLOCK_SPINS },
    };
    if args.transport == "iox-plain" {
        return plain_receive_loop(args, idle, f);
    }
    if args.transport == "shm-raw" {
        return raw_receive_loop(args, idle, f);
    }
    let bus = bus_for(&args.namespace, &args.transport, &args.kind);
    let mut sub = bus
        .subscriber(
            "bench",
            SubscriberOptions {
                name: format!("harness-{}", std::process::id()),
                start: Start::Newest,
                gating: args.transport == "shm-gating",
                wait,
                ..Default::default()
            },
        )
        .expect("subscriber");
    ready();
    let mut tally = Tally::default();
    if args.wait == "spin" {
        // Busy-polls `try_recv`, reading the clock only on every 1024th
        // empty poll in a row, as the raw ring's and plain iceoryx2's loops
        // do: `recv_timeout` reads it whenever its first poll finds the
        // topic empty, which a receiver that keeps up does on nearly every
        // frame, and the shm rows' receivers would be the slower ones.
        let (mut polls, mut idle_since) = (0u32, None::<Instant>);
        loop {
            match sub.try_recv() {
                Ok(frame) => {
                    polls = 0;
                    if !f(frame.bytes) {
                        return tally;
                    }
                }
                Err(RecvError::Lagged(n)) => tally.lagged += n,
                Err(RecvError::Lost(_)) => tally.lost += 1,
                Err(RecvError::Empty) => {
                    polls = polls.wrapping_add(1);
                    if polls % 1024 == 0 {
                        let now = Instant::now();
                        match idle_since {
                            Some(t) if polls != 1024 && now - t > idle => return tally,
                            Some(_) if polls != 1024 => {}
                            _ => idle_since = Some(now),
                        }
                    }
                    std::hint::spin_loop();
                }
            }
        }
    }
    loop {
        match sub.recv_timeout(idle) {
            Ok(frame) => {
                if !f(frame.bytes) {
                    return tally;
                }
            }
            Err(RecvError::Lagged(n)) => tally.lagged += n,
            Err(RecvError::Lost(_)) => tally.lost += 1,
            Err(RecvError::Empty) => return tally,
        }
    }
}

/// [`receive_loop`] for "shm-raw": the segment's ring read with a cursor
/// of its own (`Broadcast::try_recv`, the copy out and the seqlock check,
/// nothing else), busy-polling. The subscriber is registered for the
/// segment's liveness only; its cursor is not used.
fn raw_receive_loop(args: &ChildArgs, idle: Duration, mut f: impl FnMut(&[u8]) -> bool) -> Tally {
    let bus = bus_for(&args.namespace, &args.transport, &args.kind);
    let _sub = bus
        .subscriber("bench", SubscriberOptions::default())
        .expect("subscriber");
    let seg = bus.segment("bench").expect("segment");
    let ring = seg.ring();
    let mut cursor = ring.cursor(RingStart::Newest);
    let words = ring.payload_words().min(frame::MAX_FRAME_WORDS);
    let mut buf = FrameBuf::default();
    ready();
    let mut tally = Tally::default();
    let mut last = Instant::now();
    let mut polls = 0u32;
    loop {
        match ring.try_recv(&mut cursor, &mut buf.0[..words]) {
            Ok(_) => {
                polls = 0;
                if !f(frame::words_as_bytes(&buf.0[..words])) {
                    return tally;
                }
            }
            Err(TryRecvError::Lagged(n)) => tally.lagged += n,
            Err(TryRecvError::Lost(_)) => tally.lost += 1,
            Err(TryRecvError::Empty | TryRecvError::Pending(_)) => {
                polls = polls.wrapping_add(1);
                if polls % 1024 == 0 {
                    let now = Instant::now();
                    if polls == 1024 {
                        last = now;
                    } else if now - last > idle {
                        return tally;
                    }
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// [`receive_loop`] for plain iceoryx2, its tightest loop: `receive` until
/// empty, then spin, yield or wait on its Listener. Frames its overflow
/// dropped are counted from the gaps in the header sequence (the
/// publisher numbers them from 0, and the subscriber exists before the
/// first is sent); drops after the last frame seen show only as
/// sent minus received, which the parent reports.
fn plain_receive_loop(args: &ChildArgs, idle: Duration, mut f: impl FnMut(&[u8]) -> bool) -> Tally {
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node");
    let service = plain_service(&node, &args.namespace, args.subscribers);
    let sub = service
        .subscriber_builder()
        .create()
        .expect("plain subscriber");
    let listener = (args.wait == "block").then(|| {
        plain_event(&node, &args.namespace, args.subscribers)
            .listener_builder()
            .create()
            .expect("plain listener")
    });
    ready();
    let mut tally = Tally::default();
    let mut expected = 0u64;
    // When the subscriber began to find nothing, read only while idle
    // (every 1024th empty poll when spinning, every slow poll otherwise),
    // never per frame: iceoryx2's own loops read no clock per sample.
    let mut idle_since: Option<Instant> = None;
    let mut polls = 0u32;
    loop {
        match sub.receive() {
            Ok(Some(sample)) => {
                idle_since = None;
                polls = 0;
                let words = sample.payload();
                // The header's seq, where `set_seq` put it (read directly:
                // a second validated decode per frame would slow iceoryx2's
                // loop below what it does alone; `f` validates the frame).
                if let Some(&word) = words.first() {
                    let seq = u64::from_le(word);
                    tally.lagged += seq.saturating_sub(expected);
                    expected = expected.max(seq + 1);
                }
                let bytes = frame::words_as_bytes(words);
                if !f(bytes) {
                    return tally;
                }
            }
            Ok(None) | Err(_) => {
                polls = polls.saturating_add(1);
                let slow = args.wait != "spin" && polls >= BLOCK_SPINS;
                if slow || polls % 1024 == 0 {
                    let now = Instant::now();
                    match idle_since {
                        Some(t) if now - t > idle => return tally,
                        Some(_) => {}
                        None => idle_since = Some(now),
                    }
                }
                match (&listener, args.wait.as_str()) {
                    (_, "spin") => std::hint::spin_loop(),
                    (Some(l), _) if polls >= BLOCK_SPINS => {
                        // Drains the notifications; `receive` above then
                        // takes every sample they announced.
                        let _ = l.timed_wait(|_| {}, Duration::from_millis(20));
                    }
                    _ if polls >= BLOCK_SPINS => std::thread::yield_now(),
                    _ => std::hint::spin_loop(),
                }
            }
        }
    }
}

/// Each subscriber thread announces itself once registered; the parent waits
/// for as many announcements as it asked for threads.
fn ready() {
    println!("{{\"ready\":true}}");
    std::io::stdout().flush().ok();
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_ns": h.value_at_quantile(0.50),
        "p90_ns": h.value_at_quantile(0.90),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "p9999_ns": h.value_at_quantile(0.9999),
        "max_ns": h.max(),
        // [quantile, ns] pairs for the percentile plot, out to p99.99.
        "curve": CURVE_QUANTILES
            .iter()
            .map(|&q| json!([q, h.value_at_quantile(q)]))
            .collect::<Vec<_>>(),
    })
}

/// The quantiles of a latency curve: x = 1 / (1 - q) on a log axis, as
/// HdrHistogram plots them.
const CURVE_QUANTILES: [f64; 11] = [
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999,
];

fn run_child(args: ChildArgs) {
    pin_to(args.core);
    let idle = Duration::from_secs(10);
    if args.role == "latency" {
        let mut h = histogram();
        let tally = receive_loop(&args, idle, |bytes| {
            let now = mono_ns();
            match read_mark(&args.kind, bytes) {
                Some((_, _, Mark::Stop)) => false,
                Some((_, scheduled, Mark::Measure)) => {
                    let _ = h.record(now.saturating_sub(scheduled).max(1));
                    true
                }
                _ => true,
            }
        });
        println!(
            "{}",
            json!({"latency": percentiles(&h), "lagged": tally.lagged, "lost": tally.lost})
        );
        return;
    }
    // count role: `threads` subscribers, each counting until the stop frame.
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| {
                let args = args.clone();
                s.spawn(move || {
                    pin_to(args.core);
                    // The clock is read at the first frame, every 1024th and
                    // at the stop frame (sent right after the last), not per
                    // frame: a clock read per frame (about 27 ns) made the
                    // receiver the bottleneck of every throughput row and
                    // hid the publish path's cost behind it.
                    // `last`: when the frames counted so far (the second
                    // field) had arrived; the rate is taken over those
                    // only, and is absent (`secs` null) when no stop frame
                    // ended the count.
                    let (mut received, mut first, mut last) = (0u64, None, None);
                    let mut stopped = false;
                    let tally = receive_loop(&args, Duration::from_secs(10), |bytes| {
                        if matches!(read_mark(&args.kind, bytes), Some((_, _, Mark::Stop))) {
                            if first.is_some() {
                                last = Some((Instant::now(), received));
                            }
                            stopped = true;
                            return false;
                        }
                        if first.is_none() {
                            first = Some(Instant::now());
                        }
                        received += 1;
                        if received % 1024 == 0 {
                            last = Some((Instant::now(), received));
                        }
                        true
                    });
                    let (secs, timed) = match (first, last) {
                        (Some(f), Some((l, n))) if stopped && l > f => {
                            (Some(l.duration_since(f).as_secs_f64()), n)
                        }
                        _ => (None, 0),
                    };
                    json!({"received": received, "timed": timed, "lagged": tally.lagged, "lost": tally.lost, "secs": secs})
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("subscriber thread"))
            .collect()
    });
    println!("{}", json!({"threads": results}));
}

// ------------------------------------------------------------------ parent

struct Children {
    procs: Vec<Child>,
    readers: Vec<std::sync::mpsc::Receiver<Value>>,
}

fn spawn_children(
    namespace: &str,
    role: &str,
    transport: &str,
    kind: &str,
    wait: &str,
    per_process: &[usize],
    sub_cores: &[usize],
) -> Children {
    let exe = std::env::current_exe().expect("own executable");
    let subscribers: usize = per_process.iter().sum();
    let mut procs = Vec::new();
    let mut readers = Vec::new();
    for (i, threads) in per_process.iter().enumerate() {
        let core = sub_cores[i % sub_cores.len()];
        let mut child = Command::new(&exe)
            .args([
                "child",
                "--role",
                role,
                "--transport",
                transport,
                "--kind",
                kind,
                "--wait",
                wait,
            ])
            .args([
                "--namespace",
                namespace,
                "--core",
                &core.to_string(),
                "--threads",
                &threads.to_string(),
                "--subscribers",
                &subscribers.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn subscriber process");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        procs.push(child);
        readers.push(rx);
    }
    // Every subscriber thread announces itself once registered.
    for (rx, threads) in readers.iter().zip(per_process) {
        for _ in 0..*threads {
            let v = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("subscriber never became ready");
            assert_eq!(v["ready"], true, "unexpected first line {v}");
        }
    }
    Children { procs, readers }
}

impl Drop for Children {
    fn drop(&mut self) {
        // A case that failed half-way leaves no subscriber behind.
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Children {
    fn results(mut self) -> Vec<Value> {
        let out = self
            .readers
            .iter()
            .map(|rx| {
                rx.recv_timeout(Duration::from_secs(60))
                    .unwrap_or(Value::Null)
            })
            .collect();
        for p in &mut self.procs {
            let _ = p.wait();
        }
        out
    }
}

/// Runs one case; a case that fails (a transport refusing, a subscriber that
/// never starts) becomes an `error` entry instead of ending the whole run.
fn guarded(what: &str, case: impl FnOnce() -> Value) -> Value {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            eprintln!("{what}: FAILED: {msg}");
            json!({"case": what, "error": msg})
        }
    }
}

fn namespace(case: &str) -> String {
    format!("h{}-{case}", std::process::id())
}

fn cleanup(ns: &str) {
    for entry in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().contains(ns) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn latency_case(
    args: &AllArgs,
    transport: &str,
    kind: &str,
    wait: &str,
    pub_core: usize,
    sub_core: usize,
) -> Value {
    let ns = namespace(&format!("lat-{transport}-{kind}-{wait}"));
    let (frames, warmup) = if args.smoke {
        (200, 50)
    } else {
        (args.frames, args.frames / 10)
    };
    let children = spawn_children(&ns, "latency", transport, kind, wait, &[1], &[sub_core]);
    pin_to(pub_core);
    let mut sender = Sender::new(&ns, transport, kind, wait, 1);
    std::thread::sleep(Duration::from_millis(50));
    let period = 1e9 / args.rate;
    let start = mono_ns() + 1_000_000;
    for i in 0..warmup + frames {
        let scheduled = start + (i as f64 * period) as u64;
        while mono_ns() < scheduled {
            std::hint::spin_loop();
        }
        sender.send_kind(
            kind,
            scheduled,
            if i < warmup {
                Mark::Warmup
            } else {
                Mark::Measure
            },
        );
    }
    for _ in 0..3 {
        sender.send_kind(kind, mono_ns(), Mark::Stop);
        std::thread::sleep(Duration::from_millis(2));
    }
    let result = children.results().pop().unwrap_or(Value::Null);
    drop(sender);
    cleanup(&ns);
    // Sent, received and missing for every transport: `received` counts
    // the measured frames the subscriber timed; `lagged` and `lost` are
    // what it was told (or, for plain iceoryx2, counted from sequence gaps)
    // over warm-up and measurement together.
    let received = result["latency"]["count"].as_u64();
    json!({
        "transport": transport, "kind": kind, "wait": wait,
        "wait_does": wait_does(transport, wait),
        "rate": args.rate, "frames": frames,
        "sent": frames,
        "received": received,
        "missing": received.map(|r| frames.saturating_sub(r)),
        "result": result,
    })
}

fn fanout_case(
    args: &AllArgs,
    transport: &str,
    subs: usize,
    pub_core: usize,
    sub_cores: &[usize],
) -> Value {
    let ns = namespace(&format!("fan-{transport}-{subs}"));
    let (frames, rate) = if args.smoke {
        (200u64, 20_000.0)
    } else {
        (20_000u64, 20_000.0)
    };
    // At most 100 subscriber threads per process.
    let per_process: Vec<usize> = (0..subs.div_ceil(100))
        .map(|i| (subs - i * 100).min(100))
        .collect();
    let children = spawn_children(
        &ns,
        "count",
        transport,
        "trade",
        "yield",
        &per_process,
        sub_cores,
    );
    pin_to(pub_core);
    let mut sender = Sender::new(&ns, transport, "trade", "yield", subs);
    let mut h = histogram();
    let period = 1e9 / rate;
    let start = mono_ns() + 1_000_000;
    for i in 0..frames {
        let scheduled = start + (i as f64 * period) as u64;
        while mono_ns() < scheduled {
            std::hint::spin_loop();
        }
        let body = trade(scheduled, Mark::Measure);
        let t0 = mono_ns();
        sender.send(&body);
        let _ = h.record((mono_ns() - t0).max(1));
    }
    let threads = finish_count_case(sender, children, &ns);
    let received: Vec<u64> = threads
        .iter()
        .map(|t| t["received"].as_u64().unwrap_or(0))
        .collect();
    json!({
        "transport": transport, "subscribers": subs, "frames": frames, "rate": rate,
        "wait": "yield", "wait_does": wait_does(transport, "yield"),
        "publish": percentiles(&h),
        "subscribers_reporting": received.len(),
        "sent": frames,
        "delivered_min": received.iter().min().copied().unwrap_or(0),
        "delivered_mean": if received.is_empty() { 0.0 } else { received.iter().sum::<u64>() as f64 / received.len() as f64 },
        "missing_max": frames.saturating_sub(received.iter().min().copied().unwrap_or(0)),
        "lagged_max": max_of(&threads, "lagged"),
        "lost_max": max_of(&threads, "lost"),
    })
}

/// The largest count `field` among subscriber threads' reports.
fn max_of(threads: &[Value], field: &str) -> u64 {
    threads
        .iter()
        .map(|t| t[field].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// Ends a counting case: sends the stop frame (a few times, since iceoryx2
/// may drop it on overflow), collects every subscriber thread's report, and
/// removes the case's shared memory.
fn finish_count_case(mut sender: Sender, children: Children, ns: &str) -> Vec<Value> {
    for _ in 0..5 {
        sender.send_kind("trade", mono_ns(), Mark::Stop);
        std::thread::sleep(Duration::from_millis(5));
    }
    let results = children.results();
    drop(sender);
    cleanup(ns);
    results
        .iter()
        .flat_map(|r| r["threads"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn throughput_case(
    args: &AllArgs,
    transport: &str,
    subs: usize,
    batch: usize,
    pub_core: usize,
    sub_cores: &[usize],
) -> Value {
    let ns = namespace(&format!("thr-{transport}-{subs}-{batch}"));
    let frames: u64 = if args.smoke { 2_000 } else { 2_000_000 };
    let per_process = vec![1; subs];
    let children = spawn_children(
        &ns,
        "count",
        transport,
        "trade",
        "spin",
        &per_process,
        sub_cores,
    );
    pin_to(pub_core);
    let mut sender = Sender::new(&ns, transport, "trade", "spin", subs);
    // The trade's own time: an engine's clock reading, made once (the
    // "-at" rows publish it as the frame's time; the others read the
    // frame clock).
    let stamped = zerocast_ipc::layout::now_ns();
    let bodies: Vec<TradeEvent> = (0..batch).map(|_| trade(stamped, Mark::Measure)).collect();
    // The raw ring publishes one frame encoded once, as it is.
    let mut one = FrameBuf::default();
    let words = frame::encode(&bodies[0], 0, 0, &mut one.0).expect("encode");
    let encoded = &one.0[..words];
    let raw = transport == "shm-raw";
    let tsc = transport.ends_with("-tsc");
    let at = transport.ends_with("-at") || tsc;
    assert!(!at || batch == 1, "{transport} is for single publishes");
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < frames {
        if raw {
            sender.send_words(encoded);
        } else if at {
            sender.send_at(&bodies[0], tsc);
        } else if batch == 1 {
            sender.send(&bodies[0]);
        } else {
            sender.send_batch(&bodies);
        }
        sent += batch as u64;
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    let threads = finish_count_case(sender, children, &ns);
    // A receiver without a timed window (no stop frame seen, or one frame
    // only) has no rate, and then neither has the row: never a count over
    // a zero interval.
    let rates: Vec<Option<f64>> = threads
        .iter()
        .map(|t| {
            let secs = t["secs"].as_f64().filter(|s| *s > 0.0)?;
            Some(t["timed"].as_f64()? / secs)
        })
        .collect();
    let receive_min = rates
        .iter()
        .try_fold(f64::INFINITY, |m, r| r.map(|r| m.min(r)))
        .filter(|m| m.is_finite());
    let received_min = threads
        .iter()
        .map(|t| t["received"].as_u64().unwrap_or(0))
        .min()
        .unwrap_or(0);
    json!({
        "transport": transport, "subscribers": subs, "batch": batch, "frames": sent,
        "wait": "spin", "wait_does": wait_does(transport, "spin"),
        "sent": sent,
        "publish_frames_per_s": sent as f64 / publish_secs,
        "received_min": received_min,
        "missing_max": sent.saturating_sub(received_min),
        "lagged_max": max_of(&threads, "lagged"),
        "lost_max": max_of(&threads, "lost"),
        // Frames read per second by the slowest receiver: delivered
        // frames only, never the sequences it skipped.
        "receive_frames_per_s_min": receive_min,
    })
}

/// The rows [`throughput_interleaved`] runs in each round, the raw ring first.
const INTERLEAVED_ROWS: [&str; 3] = ["shm-raw", "shm", "shm-single"];

/// `rounds` interleaved rounds of [`INTERLEAVED_ROWS`] (1 publisher -> 1
/// subscriber process, single publishes): each round's rate of a row is
/// the lesser of its publish and delivery rates (frames read, never
/// those a lap skipped), its ratio is to the raw ring's of the same round,
/// and the report gives every round's ratio, how many there are, and
/// their median, so that a round run while the guest changed speed shows
/// as one outlier instead of deciding the figure.
fn throughput_interleaved(
    args: &AllArgs,
    rounds: usize,
    pub_core: usize,
    sub_cores: &[usize],
) -> Value {
    let median = |v: Vec<f64>| zerocast_benches::median(&v);
    let mut rates = vec![Vec::new(); INTERLEAVED_ROWS.len()];
    for _ in 0..rounds {
        for (row, out) in INTERLEAVED_ROWS.iter().zip(&mut rates) {
            let r = throughput_case(args, row, 1, 1, pub_core, sub_cores);
            // The receiver's rate counts frames read, never the sequences a
            // lap skipped: the lesser of the two is what was delivered.
            let rate = r["publish_frames_per_s"]
                .as_f64()
                .zip(r["receive_frames_per_s_min"].as_f64())
                .map(|(p, d)| p.min(d));
            out.push(rate.unwrap_or(f64::NAN));
        }
    }
    let raw = rates[0].clone();
    let rows: serde_json::Map<String, Value> = INTERLEAVED_ROWS
        .iter()
        .zip(&rates)
        .map(|(row, rates)| {
            let ratios: Vec<f64> = rates.iter().zip(&raw).map(|(r, b)| r / b).collect();
            let mut v = json!({
                "frames_per_s_rounds": rates,
                "frames_per_s_median": median(rates.clone()),
            });
            if *row != "shm-raw" {
                v["x_raw_counted"] = json!(ratios.iter().filter(|x| x.is_finite()).count());
                v["x_raw_rounds"] = json!(ratios);
                v["x_raw_median"] = json!(median(ratios));
            }
            (row.to_string(), v)
        })
        .collect();
    json!({ "rounds": rounds, "subscribers": 1, "batch": 1, "rows": rows })
}

/// Adds to every shared-memory throughput row at batch 1 its rates as a
/// multiple of the raw ring's ("shm-raw", same subscriber count, same
/// run): `publish_x_raw`, `receive_x_raw` (the slowest receiver's).
fn with_raw_ratios(rows: &mut [Value]) {
    let raw: Vec<(u64, f64, f64)> = rows
        .iter()
        .filter(|r| r["transport"] == "shm-raw")
        .map(|r| {
            (
                r["subscribers"].as_u64().unwrap_or(0),
                r["publish_frames_per_s"].as_f64().unwrap_or(0.0),
                r["receive_frames_per_s_min"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    for r in rows.iter_mut() {
        let shm = r["transport"]
            .as_str()
            .is_some_and(|t| t.starts_with("shm") && t != "shm-raw");
        if !shm || r["batch"] != 1 {
            continue;
        }
        let subs = r["subscribers"].as_u64().unwrap_or(0);
        let Some(&(_, publish, receive)) = raw.iter().find(|(s, _, _)| *s == subs) else {
            continue;
        };
        let ratio = |x: f64, base: f64| (base > 0.0).then(|| x / base);
        r["publish_x_raw"] = json!(ratio(
            r["publish_frames_per_s"].as_f64().unwrap_or(0.0),
            publish
        ));
        r["receive_x_raw"] = json!(ratio(
            r["receive_frames_per_s_min"].as_f64().unwrap_or(0.0),
            receive
        ));
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "model_name": field("model name"),
        "cpu_family": field("cpu family"),
        "model": field("model\t"),
        // SAFETY: sysconf has no memory effects. (available_parallelism would
        // read this thread's mask, which pinning has shrunk.)
        "nproc": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        "cores_used": cores().iter().map(|c| c.id).collect::<Vec<_>>(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

fn us(v: &Value) -> String {
    match v.as_f64() {
        Some(ns) if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Some(ns) => format!("{:.2} µs", ns / 1e3),
        None => "-".into(),
    }
}

/// A latency case's percentiles as multiples of the core-to-core floor
/// (its one-way p50); null when no floor was measured.
fn x_floor(latency: &Value, floor_ns: Option<f64>) -> Value {
    let Some(floor) = floor_ns.filter(|f| *f > 0.0) else {
        return Value::Null;
    };
    let mut v = json!({});
    for p in ["p50", "p90", "p99", "p999", "p9999"] {
        v[p] = json!(latency[format!("{p}_ns")].as_f64().map(|ns| ns / floor));
    }
    v
}

/// The latency percentile distribution of every trade-frame latency case
/// (x = 1 / (1 - q), as HdrHistogram plots it), with the floor beside them.
fn latency_chart(report: &Value) -> Chart {
    let x_of = |q: f64| 1.0 / (1.0 - q);
    let mut series: Vec<Series> = report["latency"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "trade")
        .map(|r| Series {
            name: format!(
                "{} {}",
                r["transport"].as_str().unwrap_or("?"),
                r["wait"].as_str().unwrap_or("?")
            ),
            points: r["result"]["latency"]["curve"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((x_of(p[0].as_f64()?), p[1].as_f64()?)))
                .collect(),
        })
        .collect();
    if let Some(floor) = report["floor"]["one_way_p50_ns"].as_f64() {
        series.push(Series {
            name: "core-to-core floor (p50)".into(),
            points: vec![(1.0, floor), (1e4, floor)],
        });
    }
    let ticks = [
        (1.0, "p0"),
        (2.0, "p50"),
        (10.0, "p90"),
        (100.0, "p99"),
        (1e3, "p99.9"),
        (1e4, "p99.99"),
    ];
    Chart {
        title: format!(
            "One-way latency, trade frames, paced ({})",
            report["machine"]["model_name"].as_str().unwrap_or("?")
        ),
        x_label: "percentile".into(),
        y_label: "latency".into(),
        x_ticks: ticks.iter().map(|(x, l)| (*x, (*l).to_owned())).collect(),
        series,
    }
}

/// Publish cost (p50 and p99 of one call) against subscriber count, per
/// transport, from the fan-out cases.
fn fanout_chart(report: &Value) -> Chart {
    let cases: Vec<&Value> = report["fanout"].as_array().into_iter().flatten().collect();
    let mut series = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    for transport in ["shm", "iox"] {
        for (p, name) in [("p50_ns", "p50"), ("p99_ns", "p99")] {
            let points: Vec<(f64, f64)> = cases
                .iter()
                .filter(|r| r["transport"] == transport)
                .filter_map(|r| {
                    let n = r["subscribers"].as_u64()?;
                    counts.push(n);
                    Some((n as f64, r["publish"][p].as_f64()?))
                })
                .collect();
            series.push(Series {
                name: format!("{transport} publish {name}"),
                points,
            });
        }
    }
    counts.sort_unstable();
    counts.dedup();
    Chart {
        title: format!(
            "Publish cost against subscribers ({})",
            report["machine"]["model_name"].as_str().unwrap_or("?")
        ),
        x_label: "subscribers".into(),
        y_label: "one publish call".into(),
        x_ticks: counts.iter().map(|n| (*n as f64, n.to_string())).collect(),
        series,
    }
}

/// A latency in ns and, when the floor is known, its multiple of it.
fn us_x(v: &Value, floor_ns: Option<f64>) -> String {
    match (v.as_f64(), floor_ns) {
        (Some(ns), Some(f)) if f > 0.0 => format!("{} ({:.1}x)", us(v), ns / f),
        _ => us(v),
    }
}

/// Like [`us`], in whole ns below 1 µs (the floor is tens of ns).
fn fine(v: &Value) -> String {
    match v.as_f64() {
        Some(ns) if ns < 1e3 => format!("{ns:.0} ns"),
        _ => us(v),
    }
}

/// The two-core section: the floor, the ping-pongs, the wake-ups.
fn pairs_markdown(report: &Value) -> String {
    let floor = &report["floor"];
    if floor.is_null() {
        return String::new();
    }
    let mut s = format!(
        "**Core-to-core floor** (one cache line ping-ponged between the two pinned cores {}, RTT/2 over {} round trips, timed by the echoing side after each answer): p50 {}, mean {}; mean with no clock read inside the loop {}. Every latency below is also given as a multiple of this p50 (`1.0x` = the floor). Measured again after the ping-pongs: p50 {}.\n\n",
        report["machine"]["cores_used"],
        floor["rounds"],
        fine(&floor["one_way_p50_ns"]),
        fine(&floor["one_way_mean_ns"]),
        fine(&floor["one_way_mean_untimed_ns"]),
        fine(&report["floor_after"]["one_way_p50_ns"]),
    );
    s += "**Ping-pong** (the method of iceoryx2's `benchmarks/publish-subscribe`: a 160 B trade frame there and back between two pinned threads, one-way = RTT/2; the untimed mean is over as many round trips again with no clock read inside the loop, iceoryx2's own figure)\n\n| transport | method | round trips | one-way p50 | p50 / floor | one-way mean | mean / floor | untimed mean | / floor's |\n|---|---|---|---|---|---|---|---|---|\n";
    // One row of the ping-pong or wake-up table: `what` names the column
    // describing the case, `x` the ratio's base (`floor` or `futex`).
    let pair_row = |r: &Value, what: &str, x: &str| {
        format!(
            "| {} | {} | {} | {} | {:.2}x | {} | {:.2}x | {} | {:.2}x |\n",
            r["transport"].as_str().unwrap_or("?"),
            r[what].as_str().unwrap_or("?"),
            r["rounds"],
            fine(&r["one_way_p50_ns"]),
            r[format!("p50_x_{x}")].as_f64().unwrap_or(0.0),
            fine(&r["one_way_mean_ns"]),
            r[format!("mean_x_{x}")].as_f64().unwrap_or(0.0),
            fine(&r["one_way_mean_untimed_ns"]),
            r[format!("mean_untimed_x_{x}")].as_f64().unwrap_or(0.0),
        )
    };
    for r in report["pingpong"].as_array().into_iter().flatten() {
        s += &pair_row(r, "method", "floor");
    }
    s += "\n**Wake-up** (no spin: each side sleeps in the kernel unless its answer is already there when it looks; one-way = RTT/2; the bare futex pair is the floor for anything that sleeps, and says how often its waits got into the kernel at all)\n\n| transport | what it does | round trips | one-way p50 | p50 / futex | one-way mean | mean / futex | untimed mean | / futex's |\n|---|---|---|---|---|---|---|---|---|\n";
    for r in report["wake"].as_array().into_iter().flatten() {
        s += &pair_row(r, "wait_does", "futex");
    }
    s + "\n"
}

fn markdown(report: &Value) -> String {
    let m = &report["machine"];
    let mut s = format!(
        "Machine: {} ({} CPUs, family {} model {}), kernel {}. Command: `{}`.\n\n",
        m["model_name"].as_str().unwrap_or("?"),
        m["nproc"],
        m["cpu_family"].as_str().unwrap_or("?"),
        m["model"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        report["command"].as_str().unwrap_or("?"),
    );
    if report["smoke"] == true {
        s += "A `--smoke` run (tiny counts): it checks that the harness works; its figures \
              and the verdicts below say nothing about speed.\n\n";
    }
    s += &criteria::markdown(&report["criteria"]);
    s += "\n";
    s += &pairs_markdown(report);
    let rows = |key: &str| report[key].as_array().is_some_and(|a| !a.is_empty());
    let floor_ns = report["floor"]["one_way_p50_ns"].as_f64();
    // Each section only where its cases ran: a --pairs-only or
    // --throughput-only run has no latency rows (the throughput-only run's
    // table was left out with them).
    if rows("latency") {
        s += &latency_markdown(report, floor_ns);
    }
    if rows("fanout") {
        s += &fanout_markdown(report);
    }
    if rows("throughput") {
        s += &throughput_markdown(report);
    }
    if report["throughput_interleaved"]["rows"].is_object() {
        s += &interleaved_markdown(report);
    }
    if report["rings"]["cases"].is_array() {
        s += &rings_markdown(report);
    }
    s += &durability_markdown(report);
    s
}

/// The publish API against the raw ring, interleaved rounds.
fn interleaved_markdown(report: &Value) -> String {
    let t = &report["throughput_interleaved"];
    let mut s = format!(
        "\n**Throughput, interleaved** (1 publisher process -> 1 subscriber process, trade \
         frames, single publishes; {} rounds, each row once per round; a round's rate is the \
         lesser of publish and delivery, a row that lost frames has none; `x raw` is over the \
         raw ring's rate of the same round)\n\n\
         | transport | M frames/s, median | per round | x raw, median | per round |\n|---|---|---|---|---|\n",
        t["rounds"]
    );
    let list = |v: &Value, scale: f64| {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                x.as_f64()
                    .map_or("-".into(), |x| format!("{:.2}", x / scale))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for row in INTERLEAVED_ROWS {
        let r = &t["rows"][row];
        s += &format!(
            "| {row} | {} | {} | {} | {} |\n",
            r["frames_per_s_median"]
                .as_f64()
                .map_or("-".into(), |x| format!("{:.2}", x / 1e6)),
            list(&r["frames_per_s_rounds"], 1e6),
            r["x_raw_median"]
                .as_f64()
                .map_or("".into(), |x| format!("{x:.2}x")),
            list(&r["x_raw_rounds"], 1.0),
        );
    }
    s
}

/// The broadcast ring against rtrb (two threads of one process).
fn rings_markdown(report: &Value) -> String {
    let r = &report["rings"];
    let mut s = format!(
        "\n**Rings, two threads** (1 producer -> 1 consumer pinned to the two cores, {} B \
         trade frames, single publishes, {} items per run, ring of {} slots; median of {} \
         interleaved runs, M items/s delivered (read by the consumer); `lost`: sent and \
         never read, overwriting rings only; `fill`: rtrb's queue, its mean length as its \
         consumer saw it in each run (near 0: the consumer kept up, contending with the \
         producer; near the capacity: it fell behind and stayed there, each side alone on \
         its lines; rtrb's rate differs by several times between the two))\n\n\
         | case | median | min | max | x rtrb | lost median | lost max | fill per run |\n|---|---|---|---|---|---|---|---|\n",
        r["frame_bytes"], r["items_per_run"], r["capacity"], r["runs"],
    );
    for c in r["cases"].as_array().into_iter().flatten() {
        let f = |k: &str| c[k].as_f64().map_or("?".into(), |x| format!("{x:.2}"));
        let fills = c["fill_runs"].as_array().map_or(String::new(), |v| {
            v.iter()
                .map(|x| x.as_f64().map_or("?".into(), |x| format!("{x:.0}")))
                .collect::<Vec<_>>()
                .join(", ")
        });
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c["case"].as_str().unwrap_or("?"),
            f("delivered_m_per_s_median"),
            f("delivered_m_per_s_min"),
            f("delivered_m_per_s_max"),
            c["x_rtrb"]
                .as_f64()
                .map_or("?".into(), |x| format!("{x:.2}x")),
            c["lost_median"],
            c["lost_max"],
            fills,
        );
    }
    s
}

/// The paced latency table and what each wait does.
fn latency_markdown(report: &Value, floor_ns: Option<f64>) -> String {
    let mut s = String::new();
    s += "**Latency** (one-way, receive minus scheduled send, paced; in brackets, the multiple of the core-to-core floor; received / sent counts the measured frames, lagged and lost what the subscriber saw over warm-up and measurement: skipped by a lap or an iceoryx2 overflow, or declared lost)\n\n| transport | frame | wait | p50 | p90 | p99 | p99.9 | p99.99 | max | received / sent | lagged | lost |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let mut waits: Vec<(String, String)> = Vec::new();
    for r in report["latency"].as_array().into_iter().flatten() {
        let l = &r["result"]["latency"];
        let label = format!(
            "{} {}",
            r["transport"].as_str().unwrap_or("?"),
            r["wait"].as_str().unwrap_or("?")
        );
        let does = r["wait_does"].as_str().unwrap_or("?").to_owned();
        if !waits.iter().any(|(l, _)| *l == label) {
            waits.push((label, does));
        }
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r["transport"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["wait"].as_str().unwrap_or("?"),
            us_x(&l["p50_ns"], floor_ns),
            us_x(&l["p90_ns"], floor_ns),
            us_x(&l["p99_ns"], floor_ns),
            us_x(&l["p999_ns"], floor_ns),
            us_x(&l["p9999_ns"], floor_ns),
            us_x(&l["max_ns"], floor_ns),
            r["received"],
            r["sent"],
            r["result"]["lagged"],
            r["result"]["lost"],
        );
    }
    s += "\nWhat each wait does:\n\n";
    for (label, does) in &waits {
        s += &format!("- {label}: {does}\n");
    }
    s
}

/// Publish cost against subscriber count.
fn fanout_markdown(report: &Value) -> String {
    let mut s = String::new();
    s += "\n**Fan-out** (publish cost per call, paced 20k/s, trade frames; subscribers poll, then yield)\n\n| transport | subscribers | publish p50 | p99 | p99.9 | max | delivered min / sent | lagged max | lost max |\n|---|---|---|---|---|---|---|---|---|\n";
    for r in report["fanout"].as_array().into_iter().flatten() {
        let p = &r["publish"];
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |\n",
            r["transport"].as_str().unwrap_or("?"),
            r["subscribers"],
            us(&p["p50_ns"]),
            us(&p["p99_ns"]),
            us(&p["p999_ns"]),
            us(&p["max_ns"]),
            r["delivered_min"],
            r["frames"],
            r["lagged_max"],
            r["lost_max"],
        );
    }
    s
}

/// The throughput rows, each against the raw ring of its run.
fn throughput_markdown(report: &Value) -> String {
    let mut s = String::new();
    s += "\n**Throughput** (trade frames, publisher as fast as it can, subscribers busy-poll; receiver rates count frames read, not frames skipped; `shm-raw` is the segment's ring below the publish API: a pre-encoded frame published with `Broadcast::try_publish`, read with `Broadcast::try_recv`, no clock read, encoding or bookkeeping; `shm-at` and `shm-single-at` publish with `Publisher::publish_at`, the trade's own time for the frame's, no clock read; `shm-single-tsc` with `publish_at` and a bare TSC read right before each publish for the time (not a wall-clock time: the least any clock read per frame adds; x86_64 only); `/ raw ring` compares a batch-1 row with it)\n\n| transport | subscribers | batch | publish frames/s | / raw ring | slowest receiver frames/s | / raw ring | received min / sent | lagged max | lost max |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for r in report["throughput"].as_array().into_iter().flatten() {
        let x_raw = |key: &str| {
            r[key]
                .as_f64()
                .map_or_else(String::new, |x| format!("{x:.2}x"))
        };
        s += &format!(
            "| {} | {} | {} | {:.2} M | {} | {} | {} | {} / {} | {} | {} |\n",
            r["transport"].as_str().unwrap_or("?"),
            r["subscribers"],
            r["batch"],
            r["publish_frames_per_s"].as_f64().unwrap_or(0.0) / 1e6,
            x_raw("publish_x_raw"),
            // No rate without a timed window (see `throughput_case`).
            r["receive_frames_per_s_min"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |x| format!("{:.2} M", x / 1e6)),
            x_raw("receive_x_raw"),
            r["received_min"],
            r["frames"],
            r["lagged_max"],
            r["lost_max"],
        );
    }
    s
}

/// The durability section, if it ran.
fn durability_markdown(report: &Value) -> String {
    let mut s = String::new();
    let d = &report["durability"];
    if !d.is_null() {
        s += &format!("\n**Durability** (WAL in `{}`)\n\n| recorder fsync | frames | frames/s | MB/s |\n|---|---|---|---|\n", d["wal_dir"].as_str().unwrap_or("?"));
        for r in d["recorder"].as_array().into_iter().flatten() {
            s += &format!(
                "| {} | {} | {:.2} M | {:.0} |\n",
                r["fsync"].as_str().unwrap_or("?"),
                r["frames"],
                r["frames_per_s"].as_f64().unwrap_or(0.0) / 1e6,
                r["mb_per_s"].as_f64().unwrap_or(0.0)
            );
        }
        let r = &d["replay"];
        s += &format!(
            "\nReplay from page cache: {:.2} GB/s ({:.1} M frames/s) over {:.2} GB, every record's CRC and frame layout validated.\n",
            r["gb_per_s"].as_f64().unwrap_or(0.0),
            r["frames_per_s"].as_f64().unwrap_or(0.0) / 1e6,
            r["bytes"].as_f64().unwrap_or(0.0) / 1e9
        );
        let c = &d["catch_up"];
        s += &format!(
            "Catch-up: a resumable subscriber from sequence 0 over a {:.2} GB backlog ({} frames) reached the live head in {:.2} s while the publisher kept publishing at {:.0} frames/s.\n",
            c["backlog_bytes"].as_f64().unwrap_or(0.0) / 1e9,
            c["backlog_frames"],
            c["secs_to_live"].as_f64().unwrap_or(0.0),
            c["live_rate"].as_f64().unwrap_or(0.0)
        );
    }
    s
}

fn run_all(args: AllArgs) {
    let ids: Vec<usize> = cores().iter().map(|c| c.id).collect();
    assert!(
        ids.len() >= 2,
        "the harness needs at least 2 cores, found {ids:?}"
    );
    let pub_core = ids[0];
    let sub_cores: Vec<usize> = ids[1..].to_vec();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!("harness: cores {ids:?}, publisher on {pub_core}, subscribers on {sub_cores:?}");

    let pairs_only = args.pairs_only;
    let throughput_only = args.throughput_only;
    let bus_suites = !args.durability_only && !pairs_only && !throughput_only;
    // The floor, the ping-pongs and the wake-ups, on the two cores the
    // latency cases use.
    let pairs = (bus_suites || pairs_only).then(|| {
        let rounds = if args.smoke {
            pingpong::Rounds::SMOKE
        } else {
            pingpong::Rounds {
                spin: args.pingpong_rounds,
                wake: args.wake_rounds,
            }
        };
        guarded("two-core cases", || {
            pingpong::run(&namespace("pp"), [pub_core, sub_cores[0]], rounds)
        })
    });
    let floor_ns = pairs
        .as_ref()
        .and_then(|p| p["floor"]["one_way_p50_ns"].as_f64());
    let mut latency = Vec::new();
    for kind in ["trade", "l2"].into_iter().filter(|_| bus_suites) {
        for transport in ["shm", "iox", "iox-plain"] {
            for wait in ["spin", "block"] {
                eprintln!("latency {transport} {kind} {wait}");
                let mut case = latency_case(&args, transport, kind, wait, pub_core, sub_cores[0]);
                case["x_floor"] = x_floor(&case["result"]["latency"], floor_ns);
                latency.push(case);
            }
        }
    }
    let mut fanout = Vec::new();
    let counts: &[usize] = if !bus_suites {
        &[]
    } else if args.smoke {
        &[1, 10]
    } else {
        &[1, 10, 100, 1000]
    };
    for &subs in counts {
        // zerocast's iceoryx2 adapter gives every subscriber its own node
        // (one per Subscriber, so each stands alone); setting up 1000 of them did not finish in 10
        // minutes on the 2-vCPU machine, so its fan-out stops at 100 unless
        // asked for with --iox-fanout-max.
        for transport in ["shm", "iox"] {
            if transport == "iox" && subs > args.iox_fanout_max {
                continue;
            }
            eprintln!("fanout {transport} {subs}");
            fanout.push(guarded(&format!("fanout {transport} {subs}"), || {
                fanout_case(&args, transport, subs, pub_core, &sub_cores)
            }));
        }
    }
    let mut throughput = Vec::new();
    let two = [1, sub_cores.len().max(2)];
    let fan: &[usize] = if bus_suites || throughput_only {
        &two
    } else {
        &[]
    };
    for &subs in fan {
        for &(transport, batch) in THROUGHPUT_ROWS {
            eprintln!("throughput {transport} subs {subs} batch {batch}");
            throughput.push(throughput_case(
                &args, transport, subs, batch, pub_core, &sub_cores,
            ));
        }
    }
    with_raw_ratios(&mut throughput);
    // The floor before the interleaved rounds and after the rings: whether
    // the vCPUs kept their placement through the two ratio suites.
    let placement_rounds = if args.smoke { 1_000 } else { 100_000 };
    let floor_before = (bus_suites || throughput_only)
        .then(|| pingpong::cache_line_floor([pub_core, sub_cores[0]], placement_rounds));
    // The publish API against the raw ring in interleaved rounds: the
    // table's rows run once each, one after another, and this guest's
    // speed (the vCPUs' placement) can change between two rows.
    let interleaved = if bus_suites || throughput_only {
        let rounds = if args.smoke {
            1
        } else {
            args.interleaved_rounds as usize
        };
        eprintln!("throughput: raw ring against the publish API, {rounds} interleaved rounds");
        throughput_interleaved(&args, rounds, pub_core, &sub_cores)
    } else {
        Value::Null
    };
    // Issue 14's first target, in the same run: the broadcast ring against
    // rtrb between two threads of this process (pinned as the cases are).
    let rings = if bus_suites || throughput_only {
        let runs = if args.smoke {
            1
        } else {
            args.interleaved_rounds as usize
        };
        eprintln!("rings: broadcast against rtrb, {runs} interleaved runs");
        guarded("rings", || zerocast_benches::rings::compare_with_rtrb(runs))
    } else {
        Value::Null
    };
    let placement = match floor_before {
        Some(before) => {
            let after = pingpong::cache_line_floor([pub_core, sub_cores[0]], placement_rounds);
            json!({
                "floor_before_ns": before.json(None)["one_way_p50_ns"],
                "floor_after_ns": after.json(None)["one_way_p50_ns"],
            })
        }
        None => Value::Null,
    };
    let plots = if bus_suites {
        json!(["latency.svg", "fanout.svg"])
    } else {
        json!([])
    };
    let pairs = pairs.unwrap_or(Value::Null);
    let report = json!({
        "machine": machine(),
        "floor": pairs["floor"],
        "floor_after": pairs["floor_after"],
        "pingpong": pairs["pingpong"],
        "wake": pairs["wake"],
        "plots": plots,
        "command": command,
        "smoke": args.smoke,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "latency": latency,
        "fanout": fanout,
        "throughput": throughput,
        "throughput_interleaved": interleaved,
        "rings": rings,
        "ratio_placement": placement,
        "durability": if args.no_durability || pairs_only || throughput_only {
            Value::Null
        } else {
            zerocast_benches::durability::run(&args.wal_dir, args.smoke)
        },
    });
    let mut report = report;
    report["criteria"] = criteria::evaluate(&report);
    std::fs::create_dir_all(&args.out).expect("create output directory");
    let json_path = args.out.join("results.json");
    let md_path = args.out.join("results.md");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write results.json");
    for name in report["plots"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        let svg = if name == "latency.svg" {
            latency_chart(&report)
        } else {
            fanout_chart(&report)
        };
        let path = args.out.join(name);
        std::fs::write(&path, svg.svg()).expect("write a plot");
        eprintln!("wrote {}", path.display());
    }
    let md = markdown(&report);
    std::fs::write(&md_path, &md).expect("write results.md");
    println!("{md}");
    eprintln!("wrote {} and {}", json_path.display(), md_path.display());
    if args.smoke {
        check_smoke(&report, pairs_only, throughput_only, bus_suites);
    }
}

/// The `--smoke` check of whichever suites ran.
fn check_smoke(report: &Value, pairs_only: bool, throughput_only: bool, bus_suites: bool) {
    if pairs_only {
        check_pairs(report);
        eprintln!("smoke check: two-core results complete");
    } else if throughput_only {
        check_throughput(report);
        eprintln!("smoke check: throughput results complete");
    } else {
        check_complete(report, bus_suites);
    }
}

/// A number the smoke check needs: missing or not a number fails the check,
/// naming the case (a failed case holds only `case` and `error`).
fn need(case: &Value, path: &[&str]) -> u64 {
    let mut v = case;
    for key in path {
        v = &v[*key];
    }
    v.as_u64().unwrap_or_else(|| {
        panic!(
            "smoke check: field {} missing or not a count in {case}",
            path.join(".")
        )
    })
}

/// The smoke run's check: every case ran and reported every field the
/// report shows, and the cases that are lossless by construction lost
/// nothing. The shared-memory cases are lossless in a smoke run: their
/// rings (16 MiB: 32,768 `l2` or 65,536 `trade` slots) hold every frame sent
/// (250 latency, 200 fan-out, 2,000 throughput), so each of their
/// subscribers must count exactly the frames sent, none lagged or lost.
/// The iceoryx2 cases may drop frames on overflow: some must arrive, and
/// every case of every transport reports sent, received, lagged and lost,
/// and what its wait strategy does.
fn check_complete(report: &Value, bus_suites: bool) {
    if !bus_suites {
        return check_durability(report);
    }
    let shm = |r: &Value| {
        r["transport"]
            .as_str()
            .is_some_and(|t| t.starts_with("shm"))
    };
    let described = |r: &Value| {
        let does = r["wait_does"].as_str();
        assert!(
            does.is_some_and(|d| d != "unknown"),
            "smoke check: what the wait does is missing in {r}"
        );
    };
    check_pairs(report);
    let plots = report["plots"].as_array().expect("plots list");
    for name in ["latency.svg", "fanout.svg"] {
        assert!(
            plots.iter().any(|p| p == name),
            "smoke check: plot {name} missing from {plots:?}"
        );
    }
    let lat = report["latency"].as_array().expect("latency section");
    assert_eq!(lat.len(), 12, "latency cases");
    for r in lat {
        described(r);
        for p in ["p50", "p90", "p99", "p999", "p9999"] {
            need_ns(r, &["x_floor", p]);
        }
        let curve = r["result"]["latency"]["curve"].as_array();
        assert!(
            curve.is_some_and(|c| c.len() >= 2),
            "smoke check: latency curve missing in {r}"
        );
        let frames = need(r, &["frames"]);
        let count = need(r, &["result", "latency", "count"]);
        assert_eq!(need(r, &["sent"]), frames, "{r}");
        assert_eq!(need(r, &["received"]), count, "{r}");
        let (lagged, lost) = (need(r, &["result", "lagged"]), need(r, &["result", "lost"]));
        if shm(r) {
            assert_eq!(
                (count, lagged, lost),
                (frames, 0, 0),
                "a lossless shm latency case must time every frame: {r}"
            );
        } else {
            assert!(
                count > 0 && count <= frames,
                "latency case produced {count} samples of {frames}: {r}"
            );
        }
    }
    let fan = report["fanout"].as_array().expect("fanout section");
    assert_eq!(fan.len(), 4, "fanout cases");
    for r in fan {
        described(r);
        let frames = need(r, &["frames"]);
        assert_eq!(need(r, &["sent"]), frames, "{r}");
        let (lagged_max, lost_max) = (need(r, &["lagged_max"]), need(r, &["lost_max"]));
        assert_eq!(
            need(r, &["subscribers_reporting"]),
            need(r, &["subscribers"]),
            "every subscriber reports: {r}"
        );
        assert_eq!(need(r, &["publish", "count"]), frames, "{r}");
        let delivered_min = need(r, &["delivered_min"]);
        if shm(r) {
            assert_eq!(
                (delivered_min, lagged_max, lost_max),
                (frames, 0, 0),
                "every shm fan-out subscriber gets every frame: {r}"
            );
        } else {
            assert!(
                delivered_min > 0 && delivered_min <= frames,
                "a subscriber got {delivered_min} of {frames}: {r}"
            );
        }
    }
    check_throughput(report);
    check_durability(report);
}

/// The ring comparison and the criteria: every case with a rate, and every
/// target judged or saying what was missing.
fn check_rings_and_criteria(report: &Value) {
    let cases = report["rings"]["cases"]
        .as_array()
        .expect("smoke check: no ring comparison");
    assert_eq!(
        cases.len(),
        zerocast_benches::rings::HARNESS_CASES.len(),
        "ring cases"
    );
    for c in cases {
        need_ns(c, &["delivered_m_per_s_median"]);
        need_ns(c, &["x_rtrb"]);
    }
    let criteria = report["criteria"]
        .as_array()
        .expect("smoke check: no criteria");
    for c in criteria {
        assert!(
            c["met"].is_boolean() || c["missing"].as_str().is_some_and(|m| !m.is_empty()),
            "smoke check: a target neither judged nor missing: {c}"
        );
    }
    // The ring target is judged whenever the rings ran, unless the vCPUs
    // moved meanwhile (a shared CI machine may do that at any time).
    assert!(
        criteria.iter().any(|c| c["target"] == "ring_vs_rtrb"
            && (c["met"].is_boolean()
                || c["missing"]
                    .as_str()
                    .is_some_and(|m| m.contains("floor moved")))),
        "smoke check: ring_vs_rtrb not judged"
    );
}

/// The smoke check of the throughput section: every case, its counts, no
/// loss on shared memory, and each shm batch-1 row's ratios to the raw
/// ring; the interleaved rounds, the rings and the criteria.
fn check_throughput(report: &Value) {
    check_rings_and_criteria(report);
    need_ns(report, &["ratio_placement", "floor_before_ns"]);
    need_ns(report, &["ratio_placement", "floor_after_ns"]);
    for row in INTERLEAVED_ROWS {
        let r = &report["throughput_interleaved"]["rows"][row];
        need_ns(r, &["frames_per_s_median"]);
        if row != "shm-raw" {
            need_ns(r, &["x_raw_median"]);
        }
    }
    let shm = |r: &Value| {
        r["transport"]
            .as_str()
            .is_some_and(|t| t.starts_with("shm"))
    };
    let thr = report["throughput"].as_array().expect("throughput section");
    // Every row of THROUGHPUT_ROWS at 2 subscriber counts.
    assert_eq!(thr.len(), 2 * THROUGHPUT_ROWS.len(), "throughput cases");
    for r in thr {
        let does = r["wait_does"].as_str();
        assert!(
            does.is_some_and(|d| d != "unknown"),
            "smoke check: what the wait does is missing in {r}"
        );
        if shm(r) && r["transport"] != "shm-raw" && r["batch"] == 1 {
            need_ns(r, &["publish_x_raw"]);
            need_ns(r, &["receive_x_raw"]);
        }
        let frames = need(r, &["frames"]);
        assert_eq!(need(r, &["sent"]), frames, "{r}");
        let received_min = need(r, &["received_min"]);
        assert_eq!(
            need(r, &["missing_max"]),
            frames - received_min.min(frames),
            "{r}"
        );
        let lagged_max = need(r, &["lagged_max"]);
        let lost_max = need(r, &["lost_max"]);
        if shm(r) {
            assert_eq!(
                (received_min, lagged_max, lost_max),
                (frames, 0, 0),
                "every shm receiver gets every frame: {r}"
            );
        } else {
            assert!(
                received_min > 0 && received_min <= frames,
                "a receiver got {received_min} of {frames}: {r}"
            );
        }
    }
}

/// A positive, finite figure the smoke check needs (a time or a ratio).
fn need_ns(case: &Value, path: &[&str]) -> f64 {
    let mut v = case;
    for key in path {
        v = &v[*key];
    }
    v.as_f64()
        .filter(|x| *x > 0.0 && x.is_finite())
        .unwrap_or_else(|| {
            panic!(
                "smoke check: field {} missing or not a positive figure in {case}",
                path.join(".")
            )
        })
}

/// The two-core figures: the floor, a ping-pong per transport with its
/// ratios to the floor, the wake-ups (bare futex first) with their ratios
/// to the futex and the floor.
fn check_pairs(report: &Value) {
    need_ns(report, &["floor", "one_way_p50_ns"]);
    need_ns(report, &["floor", "one_way_mean_ns"]);
    need_ns(report, &["floor", "one_way_mean_untimed_ns"]);
    need_ns(report, &["floor_after", "one_way_p50_ns"]);
    assert!(need(report, &["floor", "rounds"]) > 0, "floor rounds");
    let one_way = |r: &Value, ratios: &[&str]| {
        assert!(need(r, &["rounds"]) > 0, "no round trips in {r}");
        for field in [
            "one_way_p50_ns",
            "one_way_mean_ns",
            "one_way_mean_untimed_ns",
        ]
        .iter()
        .chain(ratios)
        {
            need_ns(r, &[field]);
        }
    };
    let transports = |section: &str, want: &[&str]| {
        let cases = report[section]
            .as_array()
            .unwrap_or_else(|| panic!("smoke check: {section} section missing"));
        let got: Vec<&str> = cases
            .iter()
            .filter_map(|r| r["transport"].as_str())
            .collect();
        assert_eq!(got, want, "smoke check: {section} cases");
        cases.clone()
    };
    for r in transports("pingpong", &["shm", "shm-at", "shm-loan", "iox-plain"]) {
        one_way(&r, &["p50_x_floor", "mean_x_floor", "mean_untimed_x_floor"]);
    }
    for r in transports("wake", &["futex", "shm", "iox-plain"]) {
        one_way(
            &r,
            &[
                "p50_x_floor",
                "mean_x_floor",
                "p50_x_futex",
                "mean_x_futex",
                "mean_untimed_x_futex",
            ],
        );
        assert!(r["wait_does"].is_string(), "what the wait does: {r}");
    }
}

fn check_durability(report: &Value) {
    let d = &report["durability"];
    if !d.is_null() {
        assert_eq!(
            d["recorder"].as_array().map(Vec::len),
            Some(4),
            "recorder cases"
        );
        assert!(
            d["replay"]["frames"].as_u64().unwrap_or(0) > 0,
            "replay read nothing"
        );
        assert!(
            d["catch_up"]["delivered"].as_u64().unwrap_or(0) > 0,
            "catch-up delivered nothing"
        );
    }
    eprintln!("smoke check: results complete");
}

fn main() {
    // Take the core list before anything pins a thread.
    let _ = cores();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::All(args) => run_all(args),
        Cmd::Delayed(args) => zerocast_benches::delayed::main(args),
        Cmd::Gateway(args) => zerocast_benches::gateway_load::main(args),
        Cmd::Bridge(args) => zerocast_benches::bridge_load::main(args),
        Cmd::Child(args) => run_child(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smoke report in which every case is complete and lossless.
    fn complete_report() -> Value {
        let mut latency = Vec::new();
        for kind in ["trade", "l2"] {
            for transport in ["shm", "iox", "iox-plain"] {
                for wait in ["spin", "block"] {
                    latency.push(json!({
                        "transport": transport, "kind": kind, "wait": wait, "rate": 1000.0,
                        "wait_does": wait_does(transport, wait),
                        "frames": 200, "sent": 200, "received": 200, "missing": 0,
                        "result": {"latency": {"count": 200, "curve": [[0.5, 900], [0.99, 2000]]},
                            "lagged": 0, "lost": 0},
                        "x_floor": {"p50": 7.0, "p90": 8.0, "p99": 9.0, "p999": 10.0, "p9999": 11.0},
                    }));
                }
            }
        }
        let mut fanout = Vec::new();
        for subs in [1, 10] {
            for transport in ["shm", "iox"] {
                fanout.push(json!({
                    "transport": transport, "subscribers": subs, "frames": 200, "rate": 20000.0,
                    "publish": {"count": 200},
                    "subscribers_reporting": subs,
                    "wait": "yield", "wait_does": wait_does(transport, "yield"),
                    "sent": 200, "delivered_min": 200, "delivered_mean": 200.0,
                    "missing_max": 0, "lagged_max": 0, "lost_max": 0,
                }));
            }
        }
        let mut throughput = Vec::new();
        for _subs in [1, 2] {
            for &(transport, batch) in THROUGHPUT_ROWS {
                let mut row = json!({
                    "transport": transport, "batch": batch, "frames": 2000,
                    "wait": "spin", "wait_does": wait_does(transport, "spin"),
                    "sent": 2000, "received_min": 2000, "missing_max": 0,
                    "lagged_max": 0, "lost_max": 0,
                });
                if transport.starts_with("shm") && transport != "shm-raw" && batch == 1 {
                    row["publish_x_raw"] = json!(0.7);
                    row["receive_x_raw"] = json!(0.9);
                }
                throughput.push(row);
            }
        }
        let one_way = |extra: Value| {
            let mut v = json!({"rounds": 2000, "one_way_p50_ns": 400.0, "one_way_mean_ns": 450.0,
                "one_way_mean_untimed_ns": 440.0,
                "p50_x_floor": 3.0, "mean_x_floor": 3.2, "mean_untimed_x_floor": 3.3});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let wake = |t: &str| {
            one_way(
                json!({"transport": t, "wait_does": "sleeps", "p50_x_futex": 1.1, "mean_x_futex": 1.1,
                    "mean_untimed_x_futex": 1.2}),
            )
        };
        let rings: Vec<Value> = zerocast_benches::rings::HARNESS_CASES
            .iter()
            .map(|c| json!({"case": c, "delivered_m_per_s_median": 50.0, "x_rtrb": 1.5}))
            .collect();
        let interleaved = json!({"rounds": 1, "rows": {
            "shm-raw": {"frames_per_s_median": 6e7},
            "shm": {"frames_per_s_median": 4e7, "x_raw_median": 0.67},
            "shm-single": {"frames_per_s_median": 4.5e7, "x_raw_median": 0.75},
        }});
        let mut report = json!({
            "throughput_interleaved": interleaved,
            "ratio_placement": {"floor_before_ns": 20.0, "floor_after_ns": 21.0},
            "rings": {"cases": rings},
            "latency": latency, "fanout": fanout, "throughput": throughput, "durability": null,
            "floor": {"rounds": 2000, "one_way_p50_ns": 130.0, "one_way_mean_ns": 140.0,
                "one_way_mean_untimed_ns": 135.0},
            "floor_after": {"rounds": 2000, "one_way_p50_ns": 125.0, "one_way_mean_ns": 140.0,
                "one_way_mean_untimed_ns": 135.0},
            "pingpong": [one_way(json!({"transport": "shm"})), one_way(json!({"transport": "shm-at"})), one_way(json!({"transport": "shm-loan"})), one_way(json!({"transport": "iox-plain"}))],
            "wake": [wake("futex"), wake("shm"), wake("iox-plain")],
            "plots": ["latency.svg", "fanout.svg"],
        });
        report["criteria"] = criteria::evaluate(&report);
        report
    }

    /// The ring comparison and the verdicts are part of a complete run: a
    /// run that lost either (a case that panicked is kept as an error) is
    /// refused, and so is a target neither judged nor saying why not.
    #[test]
    fn smoke_check_refuses_a_run_without_rings_or_criteria() {
        let refused = |report: Value| {
            std::panic::catch_unwind(move || check_complete(&report, true)).is_err()
        };
        assert!(!refused(complete_report()), "a complete run refused");
        let mut r = complete_report();
        r["rings"] = json!({"case": "rings", "error": "panicked"});
        assert!(refused(r), "no ring cases");
        let mut r = complete_report();
        r["rings"]["cases"][0]["x_rtrb"] = Value::Null;
        assert!(refused(r), "a case without its ratio");
        let mut r = complete_report();
        r["criteria"][1] = json!({"target": "publish_vs_raw", "met": null});
        assert!(refused(r), "a target neither judged nor missing");
        let mut r = complete_report();
        r["throughput_interleaved"]["rows"]["shm"]["x_raw_median"] = Value::Null;
        assert!(refused(r), "an interleaved row without its ratio");
    }

    /// Review finding: the smoke check wanted the ring target judged, but
    /// a run whose vCPUs moved during the ratio suites leaves it not judged
    /// by design, which would have failed CI on a shared machine by chance.
    #[test]
    fn regression_a_smoke_run_whose_vcpus_moved_failed_its_check() {
        let mut r = complete_report();
        r["ratio_placement"] = json!({"floor_before_ns": 20.0, "floor_after_ns": 200.0});
        r["criteria"] = criteria::evaluate(&r);
        assert!(
            r["criteria"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["target"] == "ring_vs_rtrb" && c["met"].is_null()),
            "the premise: the ring target is not judged"
        );
        let r2 = r.clone();
        assert!(
            std::panic::catch_unwind(move || check_complete(&r2, true)).is_ok(),
            "a run whose vCPUs moved refused"
        );
    }

    /// The smoke check's premise: a smoke run's shm cases cannot lap their
    /// rings (at most 2,000 frames per case).
    #[test]
    fn smoke_cases_fit_their_rings() {
        for kind in [TopicKind::Trade, TopicKind::L2] {
            let (capacity, _) = TopicConfig::new("bench", 16 << 20, kind)
                .ring_shape()
                .unwrap();
            eprintln!("{kind:?}: {capacity} slots");
            assert!(capacity >= 2_000, "{kind:?}: {capacity} slots");
        }
    }

    fn passes(report: &Value) -> bool {
        std::panic::catch_unwind(|| check_complete(report, true)).is_ok()
    }

    #[test]
    fn smoke_check_accepts_a_complete_report() {
        assert!(passes(&complete_report()));
    }

    /// Review of 0ff19b4: the shm-raw rows and the `publish_x_raw` /
    /// `receive_x_raw` ratios they exist for were not checked: a run whose
    /// ratios went missing (a raw row with another subscriber count, a
    /// zero rate) passed the smoke check.
    #[test]
    fn regression_smoke_check_wants_the_raw_ring_ratios() {
        for (index, field) in [
            (1, "publish_x_raw"),
            (1, "receive_x_raw"),
            (3, "publish_x_raw"),
            // The second subscriber count's `shm-at` row.
            (THROUGHPUT_ROWS.len() + 3, "receive_x_raw"),
        ] {
            let mut report = complete_report();
            report["throughput"][index]
                .as_object_mut()
                .unwrap()
                .remove(field);
            assert!(
                !passes(&report),
                "throughput[{index}] without {field} accepted"
            );
        }
        let mut report = complete_report();
        report["throughput"][1]["publish_x_raw"] = json!(0.0);
        assert!(!passes(&report), "a zero ratio accepted");
    }

    /// Review of 0ff19b4: `harness all --throughput-only --smoke` ran
    /// only the durability check (on a null section: nothing), so a
    /// throughput-only smoke run passed whatever its rows held.
    #[test]
    fn regression_a_throughput_only_smoke_run_checked_no_throughput_case() {
        let only = |report: &Value| {
            json!({"throughput": report["throughput"].clone(), "rings": report["rings"].clone(),
                "throughput_interleaved": report["throughput_interleaved"].clone(),
                "ratio_placement": report["ratio_placement"].clone(),
                "criteria": report["criteria"].clone(), "durability": null})
        };
        let smoke = |report: Value| {
            std::panic::catch_unwind(|| check_smoke(&report, false, true, false)).is_ok()
        };
        assert!(smoke(only(&complete_report())), "a complete run refused");
        let mut report = complete_report();
        report["throughput"][0]["lost_max"] = json!(3);
        assert!(!smoke(only(&report)), "a lossy shm-raw case accepted");
        let mut report = complete_report();
        report["throughput"][1]
            .as_object_mut()
            .unwrap()
            .remove("publish_x_raw");
        assert!(!smoke(only(&report)), "a case without its ratio accepted");
        let mut report = only(&complete_report());
        report["throughput"] = json!([]);
        assert!(!smoke(report), "no throughput case accepted");
    }

    /// Regression: a lossless shm latency case passed the smoke check with
    /// any sample count above zero.
    #[test]
    fn regression_smoke_check_wants_every_frame_of_a_lossless_latency_case() {
        let mut report = complete_report();
        report["latency"][0]["result"]["latency"]["count"] = json!(1);
        assert!(!passes(&report), "1 of 200 samples accepted");
        let mut report = complete_report();
        report["latency"][0]["result"]["lagged"] = json!(199);
        assert!(!passes(&report), "a lagged shm latency case accepted");
    }

    /// Regression: a fan-out case without `subscribers_reporting` and
    /// `subscribers` passed the smoke check (the two missing fields
    /// compared equal), as did a lossy shm fan-out.
    #[test]
    fn regression_smoke_check_fails_a_fanout_case_with_missing_fields() {
        let mut report = complete_report();
        let case = report["fanout"][1].as_object_mut().unwrap();
        case.remove("subscribers_reporting");
        case.remove("subscribers");
        assert!(!passes(&report), "a fan-out case without counts accepted");
        let mut report = complete_report();
        report["fanout"][1] = json!({"case": "fanout iox 1", "error": "boom"});
        assert!(!passes(&report), "a failed fan-out case accepted");
        let mut report = complete_report();
        report["fanout"][0]["delivered_min"] = json!(150);
        assert!(!passes(&report), "a lossy shm fan-out accepted");
    }

    /// Issue 13, item 9: plain iceoryx2's loss was hard-coded to zero and
    /// the report showed no `lost` for any throughput case, nor what each
    /// wait strategy does. The smoke check now wants sent, received, lagged
    /// and lost (and the wait's description) from every case of every
    /// transport, and zero lagged and lost from the lossless shm ones.
    #[test]
    fn regression_smoke_check_wants_sent_received_and_lost_for_every_transport() {
        for (section, index, field) in [
            ("throughput", 6, "lost_max"),
            ("throughput", 6, "sent"),
            ("throughput", 4, "wait_does"),
            ("fanout", 1, "lagged_max"),
            ("fanout", 1, "lost_max"),
            ("latency", 4, "sent"),
            ("latency", 4, "received"),
            ("latency", 5, "wait_does"),
        ] {
            let mut report = complete_report();
            report[section][index]
                .as_object_mut()
                .unwrap()
                .remove(field);
            assert!(
                !passes(&report),
                "{section}[{index}] without {field} accepted"
            );
        }
        let mut report = complete_report();
        report["throughput"][0]["lost_max"] = json!(3);
        assert!(
            !passes(&report),
            "a shm throughput case that lost frames accepted"
        );
        let mut report = complete_report();
        report["fanout"][0]["lagged_max"] = json!(3);
        assert!(!passes(&report), "a lagged shm fan-out accepted");
        let mut report = complete_report();
        report["latency"][5]["wait_does"] = json!("unknown");
        assert!(!passes(&report), "an undescribed wait accepted");
    }

    /// `--pingpong-rounds 0` wrote a results.md with an empty ping-pong
    /// table and 0 ns figures, and fewer than 10 rounds had no warm-up (the
    /// first interval, from the start barrier, was counted): both counts
    /// are refused below 10, and above 100,000,000, naming the option.
    #[test]
    fn regression_pingpong_rounds_zero_wrote_empty_results() {
        for (flag, n) in [("--pingpong-rounds", "0"), ("--wake-rounds", "9")] {
            let err = Cli::try_parse_from(["harness", "all", "--pairs-only", flag, n])
                .expect_err("a count below 10 accepted");
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
        assert!(Cli::try_parse_from(["harness", "all", "--pingpong-rounds", "10"]).is_ok());
        // 2^64 - 1 rounds panicked with "capacity overflow" (the kept
        // round-trip times), after a backtrace, not a usage error.
        for (flag, n) in [
            ("--pingpong-rounds", "18446744073709551615"),
            ("--wake-rounds", "100000001"),
        ] {
            let err = Cli::try_parse_from(["harness", "all", "--pairs-only", flag, n])
                .expect_err("a count above the bound accepted");
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
        assert!(Cli::try_parse_from(["harness", "all", "--wake-rounds", "100000000"]).is_ok());
    }

    /// Issue 14, item 4: the floor, the ping-pong and wake-up figures,
    /// their ratios and the plots were not in the report; the smoke check
    /// now wants each of them, so a run that drops one fails CI.
    #[test]
    fn regression_smoke_check_wants_floor_pingpong_wake_and_plots() {
        let removals: &[&[&str]] = &[
            &["floor"],
            &["floor", "one_way_p50_ns"],
            &["floor", "one_way_mean_ns"],
            &["pingpong"],
            &["pingpong", "1"],
            &["pingpong", "0", "one_way_mean_ns"],
            &["pingpong", "1", "p50_x_floor"],
            &["pingpong", "0", "mean_x_floor"],
            &["pingpong", "2", "mean_untimed_x_floor"],
            &["wake", "1", "mean_untimed_x_futex"],
            &["floor", "one_way_mean_untimed_ns"],
            &["wake"],
            &["wake", "2"],
            &["wake", "0", "one_way_p50_ns"],
            &["wake", "1", "p50_x_futex"],
            &["wake", "2", "mean_x_futex"],
            &["wake", "1", "p50_x_floor"],
            &["latency", "3", "x_floor"],
            &["latency", "0", "x_floor", "p50"],
            &["latency", "7", "result", "latency", "curve"],
            &["plots", "1"],
        ];
        for path in removals {
            let mut report = complete_report();
            let (last, parent) = path.split_last().unwrap();
            let mut v = &mut report;
            for key in parent {
                v = match key.parse::<usize>() {
                    Ok(i) => &mut v[i],
                    Err(_) => &mut v[*key],
                };
            }
            match v {
                Value::Array(a) => {
                    a.remove(last.parse::<usize>().unwrap());
                }
                Value::Object(o) => {
                    o.remove(*last);
                }
                _ => panic!("bad path {path:?}"),
            }
            assert!(!passes(&report), "a report without {path:?} accepted");
        }
        let mut report = complete_report();
        report["floor"]["one_way_p50_ns"] = json!(0.0);
        assert!(!passes(&report), "a zero floor accepted");
        let mut report = complete_report();
        report["wake"][0]["transport"] = json!("shm");
        assert!(
            !passes(&report),
            "a wake table without the bare futex accepted"
        );
    }

    /// Latencies are stored as multiples of the floor's one-way p50, and
    /// the markdown shows the two-core tables with their ratios.
    #[test]
    fn latencies_are_reported_as_multiples_of_the_floor() {
        let x = x_floor(&json!({"p50_ns": 260, "p99_ns": 1300}), Some(130.0));
        assert_eq!(
            (x["p50"].as_f64(), x["p99"].as_f64()),
            (Some(2.0), Some(10.0))
        );
        assert!(x_floor(&json!({"p50_ns": 260}), None).is_null());
        let md = markdown(&complete_report());
        for want in [
            "Core-to-core floor",
            "| shm | sleeps | 2000 |",
            "1.10x",
            "3.00x",
        ] {
            assert!(md.contains(want), "{want:?} not in\n{md}");
        }
    }

    /// A `--throughput-only` run (no latency rows, no durability) wrote a
    /// results.md with the machine line only: the markdown returned early
    /// where a `--pairs-only` run has nothing more, and left the
    /// throughput table out (the stored AMD EPYC family 26 rounds showed
    /// it). Each section is now written where its rows are.
    #[test]
    fn regression_throughput_only_markdown_has_the_throughput_table() {
        let mut report = complete_report();
        report["latency"] = json!([]);
        report["fanout"] = json!([]);
        report["floor"] = Value::Null;
        let md = markdown(&report);
        assert!(
            md.contains("**Throughput**"),
            "no throughput table in\n{md}"
        );
        assert!(md.contains("| shm-raw | "), "no raw-ring row in\n{md}");
        assert!(md.contains("0.70x"), "no ratio to the raw ring in\n{md}");
        assert!(
            !md.contains("**Latency**") && !md.contains("**Fan-out**"),
            "{md}"
        );
        // And a --pairs-only run: the pairs, nothing after them.
        let mut report = complete_report();
        for key in ["latency", "fanout", "throughput"] {
            report[key] = json!([]);
        }
        let md = markdown(&report);
        assert!(md.contains("Core-to-core floor"), "{md}");
        assert!(
            !md.contains("**Throughput**") && !md.contains("**Latency**"),
            "{md}"
        );
    }
}
