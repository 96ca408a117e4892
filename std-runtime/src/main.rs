//! `zerocast`: the demo feed, and tools to publish, subscribe and inspect.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use zerocast_ipc::{
    Bus, Config, GatingPolicy, Publisher, PublisherOptions, RecvError, Start, SubscriberOptions,
    WaitStrategy,
};
use zerocast_runtime::feed::{publish_synthetic, Feed};
use zerocast_runtime::progress::Progress;
use zerocast_runtime::{batch, demo, print, recorder, resume, signal, stat, wal};

#[derive(Parser, Debug)]
#[command(
    name = "zerocast",
    version,
    about = "Zero-copy market-data bus over shared memory",
    after_help = "Exit status: 0 done; 1 an error (the message says what), or, for replay, \
                  a range that could not be given in full (a warning names the missing \
                  sequences); 2 a bad flag or value on the command line (nothing was done)."
)]
struct Cli {
    /// TOML config with the namespace and topics (default: the three seed topics).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Namespace (overrides the config and ZEROCAST_NAMESPACE).
    #[arg(long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a synthetic exchange feed and several subscriber processes, with a live table.
    Demo(demo::DemoArgs),
    /// Publish synthetic frames to a topic.
    Pub(PubArgs),
    /// Print frames from a topic.
    Sub(SubArgs),
    /// Show every topic of the namespace: size, head, publishers, subscribers, stale segments.
    Stat(StatArgs),
    /// Record a topic into its write-ahead log (a gating subscriber).
    Record(RecordArgs),
    /// Print frames from a topic's write-ahead log. Exits 1 (after printing
    /// what there is) if sequences of the range asked for are not in the
    /// log: a removed or damaged segment, or a log ending before --to.
    Replay(ReplayArgs),
    /// Print a topic from a checkpoint on: WAL first, then live, resuming after restarts.
    Follow(FollowArgs),
    /// Publisher health (Healthy, Degraded, Failed), subscriber and recorder
    /// lag; --watch refreshes, --listen serves Prometheus metrics. Exits 1
    /// if a publisher is Failed or a topic cannot be read (without --watch
    /// and --listen).
    Health(zerocast_runtime::health::HealthArgs),
    /// The delayed tier: commit a topic in batches (every --interval or
    /// --max-batch frames) to SQLite or a JSON-lines file, exactly once
    /// across restarts.
    Batch(batch::BatchArgs),
    /// The real-time tier: a WebSocket gateway (/ws), a live page (/) and
    /// /healthz, with per-client backpressure and owner-only account events.
    Gateway(zerocast_runtime::gateway::GatewayArgs),
    /// The zenoh bridge: export a topic to other hosts, or import one from
    /// them, with its sequences and every loss reported exactly.
    #[cfg(feature = "bridge")]
    Bridge(zerocast_runtime::bridge::BridgeArgs),
    /// A demo subscriber process (spawned by `zerocast demo`).
    #[command(hide = true)]
    DemoSub(demo::DemoSubArgs),
}

#[derive(clap::Args, Debug)]
struct PubArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Frames to publish, at least 1 (default: until SIGINT or SIGTERM).
    #[arg(long, value_parser = parse_count)]
    count: Option<u64>,
    /// Frames per second, at least 0.001 (default: as fast as possible).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Frames per batch publish (one claim per batch; 1 to the ring's
    /// capacity).
    #[arg(long, default_value_t = 1, value_parser = parse_batch)]
    batch: usize,
    /// Fail instead of waiting when a gating subscriber is behind.
    #[arg(long, conflicts_with = "gating_wait_ms")]
    no_wait: bool,
    /// How long one publish waits for a gating subscriber that is behind
    /// (e.g. a recorder restarting) before failing, in milliseconds.
    #[arg(long, default_value_t = 100)]
    gating_wait_ms: u64,
    /// With --rate, between frames: send a heartbeat when no frame was
    /// published for this many milliseconds (0: never), so that `zerocast
    /// health` sees a slow publisher alive; keep it at most half of the
    /// health interval.
    #[arg(long, default_value_t = 250, value_parser = parse_heartbeat_ms, value_name = "MS")]
    heartbeat_ms: u64,
    /// Publisher name in the topic's table.
    #[arg(long, default_value = "")]
    name: String,
    /// Test support: after this many frames, claim one more sequence and die
    /// by SIGKILL before committing it.
    #[arg(long, hide = true)]
    crash_after: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Wait {
    Spin,
    Yield,
    Block,
}

impl From<Wait> for WaitStrategy {
    fn from(w: Wait) -> Self {
        match w {
            Wait::Spin => WaitStrategy::BusySpin,
            Wait::Yield => WaitStrategy::SpinThenYield { spins: 1000 },
            Wait::Block => WaitStrategy::default(),
        }
    }
}

#[derive(clap::Args, Debug)]
struct SubArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Exit after this many frames (at least 1).
    #[arg(long, value_parser = parse_count)]
    count: Option<u64>,
    /// Where to start: newest, oldest, or a sequence number.
    #[arg(long, default_value = "newest", value_parser = parse_start)]
    from: Start,
    /// One JSON object per frame (and per lag or loss).
    #[arg(long)]
    json: bool,
    /// Register as a gating subscriber (publishers never overwrite what it has not read).
    #[arg(long)]
    gating: bool,
    /// Wait strategy.
    #[arg(long, value_enum, default_value = "block")]
    wait: Wait,
    /// Give up (exit 1) if no frame arrives for this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    timeout: Option<f64>,
    /// Subscriber name in the topic's table.
    #[arg(long, default_value = "")]
    name: String,
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// WAL root directory (the topic's log goes in DIR/<topic>).
    #[arg(long)]
    wal: PathBuf,
    /// fdatasync policy: always, never, N (records; at most 1 s apart while
    /// records wait), Nms, Nus, or N,Nms.
    #[arg(long, default_value = "65536,10ms", value_parser = parse_fsync)]
    fsync: wal::FsyncPolicy,
    /// Segment file size in bytes, 64KiB to 16GiB (units: KB, MB, GB;
    /// powers of 1024).
    #[arg(long, default_value_t = 64 << 20, value_parser = parse_segment_size)]
    segment_size: u64,
    /// Keep at most this many bytes of sealed segments (units: KB, MB, GB,
    /// TB).
    #[arg(long, value_parser = parse_bytes)]
    retain_bytes: Option<u64>,
    /// Remove sealed segments older than this many seconds.
    #[arg(long)]
    retain_secs: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// WAL root directory.
    #[arg(long)]
    wal: PathBuf,
    /// First sequence (default: the log's first).
    #[arg(long, value_parser = parse_seq)]
    from: Option<u64>,
    /// Last sequence (inclusive; default: the log's end).
    #[arg(long, value_parser = parse_seq)]
    to: Option<u64>,
    /// One JSON object per frame.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct FollowArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// WAL root directory (checkpoints go in DIR/<topic>/checkpoints).
    #[arg(long)]
    wal: PathBuf,
    /// Subscriber name (its checkpoint's name; 1-64 characters from
    /// A-Z a-z 0-9 _ -).
    #[arg(long, value_parser = parse_name)]
    name: String,
    /// Checkpoint after this many events (at least 1), or after
    /// --checkpoint-ms, whichever comes first. Safe at any setting: a
    /// restart after a crash or kill delivers again the events after the
    /// last checkpoint (at most this many, or --checkpoint-ms of them);
    /// with --out they are first cut from the file, so it holds each
    /// sequence exactly once; on stdout they are printed again.
    #[arg(long, default_value_t = 10_000, value_parser = parse_count)]
    checkpoint_every: u64,
    /// Checkpoint at least this often, in milliseconds (at least 1), while
    /// events arrive or the follower waits for them.
    #[arg(long, default_value_t = 100, value_parser = parse_count)]
    checkpoint_ms: u64,
    /// One JSON object per frame.
    #[arg(long)]
    json: bool,
    /// Exit once this sequence has been processed.
    #[arg(long, value_parser = parse_seq)]
    until: Option<u64>,
    /// Append each processed sequence (8 bytes LE) to FILE instead of
    /// printing; at start the file is cut back to the checkpoint (and its
    /// directory fsynced), and it is fdatasynced before each checkpoint, so
    /// the file holds every sequence exactly once however often this is
    /// killed, machine crashes included.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct StatArgs {
    /// Remove segments whose creator and users are all dead and that no process maps.
    #[arg(long)]
    remove_stale: bool,
    /// After an upgrade: remove segments a build of another layout made, once no process maps them (with any frames a killed recorder of that build had not logged).
    #[arg(long)]
    remove_other_layouts: bool,
    /// Drop the orphaned durable gating hold of this name (a durable
    /// subscriber, e.g. a recorder, that is gone and will not come back).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["remove_stale", "remove_other_layouts"])]
    release_durable: Option<String>,
}

/// Loads the config, then applies `--namespace`.
pub fn load_config(
    config: Option<&PathBuf>,
    namespace: Option<&String>,
) -> zerocast_ipc::Result<Config> {
    let mut c = match config {
        Some(path) => Config::load(path)?,
        None => Config::default_topics(),
    };
    if let Some(ns) = namespace {
        zerocast_ipc::config::check_name(ns)?;
        c.namespace = ns.clone();
    }
    Ok(c)
}

// Value parsers: each runs while the command line is parsed, before any
// work, and says what is wrong without repeating the value (the error line
// names the flag and the value: see `value_error`).

/// A sequence number: a u64, with "out of range" past 2^64 - 1.
fn parse_seq(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => {
            format!("out of range (sequences go up to {})", u64::MAX)
        }
        _ => "not a sequence number".to_owned(),
    })
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "newest" => Ok(Start::Newest),
        "oldest" => Ok(Start::Oldest),
        n => parse_seq(n)
            .map(Start::At)
            .map_err(|e| match n.parse::<u64>() {
                Err(_) if e.starts_with("out of range") => e,
                _ => "expected newest, oldest or a sequence number".to_owned(),
            }),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match parse_seq(s).map_err(|e| e.replace("sequence number", "count"))? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// The lowest `--rate`: one frame every 1000 s.
const MIN_RATE: f64 = 1e-3;

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| "not a number".to_owned())?;
    if r.is_finite() && r >= MIN_RATE {
        Ok(r)
    } else {
        Err(format!(
            "frames per second must be a finite number of at least {MIN_RATE} (leave --rate out for as fast as possible)"
        ))
    }
}

/// Seconds: finite, not negative, and at most a year (a `Duration` holds it).
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| "not a number of seconds".to_owned())?;
    if v.is_finite() && (0.0..=365.0 * 86_400.0).contains(&v) {
        Ok(v)
    } else {
        Err("seconds must be a number from 0 to 31536000".to_owned())
    }
}

/// The longest `pub --heartbeat-ms`: an hour (health's longest interval).
const MAX_HEARTBEAT_MS: u64 = 3_600_000;

fn parse_heartbeat_ms(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(v) if v <= MAX_HEARTBEAT_MS => Ok(v),
        _ => Err(format!(
            "milliseconds must be from 0 (no heartbeats) to {MAX_HEARTBEAT_MS}"
        )),
    }
}

fn parse_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a frame count".to_owned()),
    }
}

/// A byte count, with an optional unit: B, KB, MB, GB, TB (all powers of
/// 1024); the config's parser (`zerocast_ipc::config::parse_size`).
fn parse_bytes(s: &str) -> Result<u64, String> {
    zerocast_ipc::config::parse_size(s)
}

/// The smallest `--segment-size`: a segment must hold many records, or the
/// log becomes a file per record.
const MIN_SEGMENT_SIZE: u64 = 64 << 10;

/// The largest `--segment-size`: each segment file is preallocated whole.
const MAX_SEGMENT_SIZE: u64 = 16 << 30;

fn parse_segment_size(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s)?;
    if v > MAX_SEGMENT_SIZE {
        return Err(format!(
            "{v} bytes: a segment may be at most {MAX_SEGMENT_SIZE} bytes (16GiB; each is preallocated whole)"
        ));
    }
    if v < MIN_SEGMENT_SIZE {
        return Err(format!(
            "{v} bytes: a segment must be at least {MIN_SEGMENT_SIZE} bytes (64KiB)"
        ));
    }
    Ok(v)
}

fn parse_fsync(s: &str) -> Result<wal::FsyncPolicy, String> {
    let p: wal::FsyncPolicy = s.parse()?;
    match p {
        wal::FsyncPolicy::Group { records: 0, .. } => {
            Err("a sync every 0 records means nothing; use always (every record) or N >= 1".into())
        }
        wal::FsyncPolicy::Group { interval, .. } if interval.is_zero() => Err(
            "a zero interval means nothing; use always (every record) or a positive interval"
                .into(),
        ),
        p => Ok(p),
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    zerocast_ipc::config::check_name(s)
        .map(|()| s.to_owned())
        .map_err(|_| "use 1-64 characters from A-Z a-z 0-9 _ - (it names a file)".to_owned())
}

/// A bad value on the command line as one line:
/// `zerocast: error: --rate "0": frames per second must be ...`; `None` for
/// other parse errors (missing arguments, help), which clap reports itself.
fn value_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let text = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let flag = text(ContextKind::InvalidArg)?;
    let flag = flag.split(' ').next().unwrap_or(&flag).to_owned();
    let value = text(ContextKind::InvalidValue).unwrap_or_default();
    let why = std::error::Error::source(e).map_or_else(
        || match e.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(v)) => format!("expected one of {}", v.join(", ")),
            _ => "invalid value".to_owned(),
        },
        ToString::to_string,
    );
    Some(format!("{flag} {value:?}: {why}"))
}

/// Checks between flags that clap's value parsers cannot make (each sees
/// one value): a bad combination is a bad command line, exit status 2 like
/// clap's own errors, before any work.
fn check_command_line(command: &Command) -> Result<(), String> {
    if let Command::Replay(ReplayArgs {
        from: Some(from),
        to: Some(to),
        ..
    }) = command
    {
        if from > to {
            return Err(format!(
                "--from {from} is after --to {to}: nothing to replay"
            ));
        }
    }
    Ok(())
}

fn run_pub(bus: &Bus, args: &PubArgs) -> Result<(), String> {
    let topic = bus.config().topic(&args.topic).map_err(|e| e.to_string())?;
    let kind = topic.kind;
    if topic.transport == zerocast_ipc::Transport::Shm {
        let (capacity, _) = topic.ring_shape().map_err(|e| e.to_string())?;
        if args.batch as u64 > capacity {
            return Err(format!(
                "--batch {}: larger than topic {}'s ring ({capacity} slots)",
                args.batch, args.topic
            ));
        }
    }
    let mut publisher = bus
        .publisher_with(
            &args.topic,
            PublisherOptions {
                name: args.name.clone(),
                gating: if args.no_wait {
                    GatingPolicy::Fail
                } else {
                    // Waited in slices so that SIGINT/SIGTERM are seen
                    // while a gating subscriber holds the ring (below).
                    GatingPolicy::Wait(Duration::from_millis(
                        args.gating_wait_ms.min(PUB_WAIT_SLICE_MS),
                    ))
                },
            },
        )
        .map_err(|e| e.to_string())?;
    let mut feed = Feed::new(16, 0x5EED ^ u64::from(std::process::id()));
    let start = Instant::now();
    let (mut sent, mut first, mut last) = (0u64, None, 0u64);
    // Heartbeats while idle between paced frames (as the demo's feed and
    // `spawn_heartbeat` do): the health monitor then sees this publisher's
    // heartbeat stamp move although frames are rare.
    let heartbeat_every = (args.heartbeat_ms > 0).then(|| Duration::from_millis(args.heartbeat_ms));
    let (mut heartbeats, mut last_activity) = (0u64, Instant::now());
    let batch = args.batch as u64;
    let mut progress = Progress::new("pub");
    // SIGINT and SIGTERM stop the loop between publishes; the summary below
    // then counts what was published and the exit status is 0, as for
    // `sub`, `record` and `follow`.
    while args.count.is_none_or(|c| sent < c) && !signal::stopped() {
        if let Some(n) = args.crash_after {
            if sent >= n {
                std::io::stdout().flush().ok();
                match &mut publisher {
                    Publisher::Shm(p) => p.crash_mid_publish(),
                    #[allow(unreachable_patterns)]
                    _ => return Err("--crash-after needs a shm topic".into()),
                }
            }
        }
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            while Instant::now() < due && !signal::stopped() {
                if heartbeat_every.is_some_and(|h| last_activity.elapsed() >= h) {
                    // A heartbeat that cannot go out (the ring full behind
                    // a gating subscriber) is not an error of the run: the
                    // monitor then rightly sees this publisher held up.
                    if publisher.send_heartbeat().is_ok() {
                        heartbeats += 1;
                    }
                    last_activity = Instant::now();
                }
                std::thread::sleep(
                    Duration::from_micros(50).min(due.saturating_duration_since(Instant::now())),
                );
            }
            if signal::stopped() {
                break;
            }
        }
        let n = args.count.map_or(batch, |c| batch.min(c - sent));
        // A publish that found the ring full behind a gating subscriber
        // took no sequence: try again, slice by slice, until
        // --gating-wait-ms is spent or a signal stops the loop.
        let wait_started = Instant::now();
        let published = loop {
            let r = publish_synthetic(&mut publisher, &mut feed, kind, n as usize);
            match r {
                Err(zerocast_ipc::Error::RingFull { .. })
                    if !args.no_wait
                        && !signal::stopped()
                        && wait_started.elapsed() < Duration::from_millis(args.gating_wait_ms) =>
                {
                    continue
                }
                r => break r,
            }
        };
        if published.is_err() && signal::stopped() {
            break;
        }
        let seq = published.map_err(|e| {
            // Say how far it got: the frames before this one are on the ring.
            let range = first.map_or_else(String::new, |f| format!(" (seq {f} to {last})"));
            let waited = match e {
                zerocast_ipc::Error::RingFull { .. } if !args.no_wait => {
                    format!(
                        " after waiting {} ms (--gating-wait-ms)",
                        args.gating_wait_ms
                    )
                }
                _ => String::new(),
            };
            format!("{e}; published {sent} frames{range} before giving up{waited}")
        })?;
        first.get_or_insert(seq);
        last = seq + n - 1;
        sent += n;
        last_activity = Instant::now();
        progress.update(|t| {
            let of = args.count.map_or_else(String::new, |c| format!(" of {c}"));
            format!(
                "{sent}{of} frames, {:.0} frames/s",
                sent as f64 / t.max(1e-9)
            )
        });
    }
    progress.clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {sent} frames to {} (seq {} to {last}) in {secs:.3}s, {:.0} frames/s{}",
        args.topic,
        first.unwrap_or(0),
        sent as f64 / secs.max(1e-9),
        if heartbeats > 0 {
            format!("; and {heartbeats} heartbeats while idle (--heartbeat-ms)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The longest single wait of `pub` behind a gating subscriber before it
/// looks at SIGINT/SIGTERM again.
const PUB_WAIT_SLICE_MS: u64 = 50;

fn run_sub(bus: &Bus, args: &SubArgs) -> Result<(), String> {
    let start = args.from;
    let mut sub = bus
        .subscriber(
            &args.topic,
            SubscriberOptions {
                name: args.name.clone(),
                start,
                gating: args.gating,
                wait: args.wait.into(),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut frames = 0u64;
    let mut last_frame = Instant::now();
    let slice = Duration::from_millis(100);
    while args.count.is_none_or(|c| frames < c) && !signal::stopped() {
        let line = match sub.recv_timeout(slice) {
            Ok(f) => {
                frames += 1;
                last_frame = Instant::now();
                if args.json {
                    print::frame_json(f.seq, f.bytes).map(|v| v.to_string())
                } else {
                    print::frame_line(f.seq, f.bytes)
                }
                .unwrap_or_else(|e| format!("{{\"seq\":{},\"error\":\"{e}\"}}", f.seq))
            }
            Err(RecvError::Lagged(n)) => {
                if args.json {
                    format!("{{\"event\":\"lagged\",\"count\":{n}}}")
                } else {
                    format!("LAGGED {n} frames overwritten before they were read")
                }
            }
            Err(RecvError::Lost(s)) => {
                if args.json {
                    format!("{{\"event\":\"lost\",\"seq\":{s}}}")
                } else {
                    format!("LOST {s}: its publisher died mid-publish")
                }
            }
            Err(RecvError::Empty) => {
                out.flush().ok();
                if let Some(t) = args.timeout {
                    if last_frame.elapsed().as_secs_f64() > t {
                        return Err(format!("no frame on {} for {t}s", args.topic));
                    }
                }
                continue;
            }
        };
        if writeln!(out, "{line}").is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
    }
    out.flush().ok();
    Ok(())
}

fn run_record(bus: &Bus, args: &RecordArgs) -> Result<(), String> {
    bus.config().topic(&args.topic).map_err(|e| e.to_string())?;
    let options = wal::WalOptions {
        segment_size: args.segment_size,
        fsync: args.fsync,
        retain_bytes: args.retain_bytes,
        retain_age: args.retain_secs.map(Duration::from_secs),
        ..Default::default()
    };
    let (mut log, recovery) =
        recorder::open_wal(&args.wal, &args.topic, options).map_err(|e| e.to_string())?;
    if let Some(t) = &recovery.truncated {
        tracing::warn!("repaired WAL: {t}");
    }
    if let Some(p) = &recovery.removed_empty_segment {
        tracing::warn!(
            "removed a segment whose header was never written: {}",
            p.display()
        );
    }
    tracing::info!(
        topic = %args.topic,
        "recording after {}",
        log.last_seq()
            .map_or_else(|| "an empty log".to_owned(), |s| format!("sequence {s}"))
    );
    let stats =
        recorder::record(bus, &args.topic, &mut log, signal::stopped).map_err(|e| e.to_string())?;
    println!(
        "recorded {} frames of {} ({} lost on the bus, {} missed by the recorder, {} invalid); {}",
        stats.frames,
        args.topic,
        stats.lost,
        stats.missed,
        stats.invalid,
        log.last_seq().map_or_else(
            || "the log is empty".to_owned(),
            |s| format!("last sequence {s}")
        )
    );
    Ok(())
}

fn run_replay(bus: &Bus, args: &ReplayArgs) -> Result<(), String> {
    bus.config().topic(&args.topic).map_err(|e| e.to_string())?;
    let dir = args.wal.join(&args.topic);
    if !dir.is_dir() {
        return Err(format!(
            "no WAL of topic {} at {} (is --wal the root that `record --wal` was given?)",
            args.topic,
            dir.display()
        ));
    }
    let segments = wal::list_segments(&dir).map_err(|e| e.to_string())?;
    let Some(first) = segments.first() else {
        return Err(format!(
            "{}: no segment in the WAL directory: nothing was recorded",
            dir.display()
        ));
    };
    // Without --from: from the log's oldest segment on (sequences removed
    // by retention before it are not asked for).
    let from = args.from.unwrap_or(first.first_seq);
    let to = args.to.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    let mut gaps = Vec::new();
    let mut stopped_at = None;
    // Beside the frames on a terminal, the frames are the progress.
    let mut progress = Progress::with(
        "replay",
        std::io::stderr().is_terminal() && !std::io::stdout().is_terminal(),
    );
    let mut entries = 0u64;
    let stats = wal::Replay::with_topic(&dir, &args.topic)
        .read(from, to, |entry| {
            let last = match &entry {
                wal::Entry::Gap { to, .. } => *to,
                wal::Entry::Record(r) => r.last_seq(),
            };
            if let wal::Entry::Gap { from, to, path } = &entry {
                gaps.push((*from, *to, path.clone()));
            }
            let line = replay_line(&entry, args.json);
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
                return std::ops::ControlFlow::Break(());
            }
            entries += 1;
            progress.update(|t| {
                format!(
                    "{entries} entries, at sequence {last}, {:.0}/s",
                    entries as f64 / t.max(1e-9)
                )
            });
            // SIGINT or SIGTERM: stop after this entry (the statistics
            // count what was printed), with the summary below.
            if signal::stopped() {
                stopped_at = Some(last);
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    out.flush().ok();
    progress.clear();
    if write_err.is_some() {
        return Ok(()); // stdout closed (e.g. piped into head)
    }
    eprintln!(
        "replayed {} frames, {} lost markers, {} sequences missed by the recorder, \
         {} invalid frames, {} sequences missing from the log, {} bytes",
        stats.frames, stats.lost, stats.missed, stats.invalid, stats.gap, stats.bytes
    );
    if let Some(seq) = stopped_at {
        // Stopped on request: what was not printed was not asked for any
        // more, so no incomplete-range warnings and exit status 0.
        eprintln!("replay stopped by a signal after sequence {seq}");
        return Ok(());
    }
    // What was asked for and could not be given: each a warning with its
    // range, and exit status 1.
    let mut incomplete = Vec::new();
    for (a, b, path) in &gaps {
        eprintln!(
            "zerocast: warning: sequences {a} to {b} are missing from the log ({} removed or damaged)",
            path.display()
        );
        incomplete.push(format!("{a} to {b}"));
    }
    if let Some(to) = args.to {
        let end = stats.last_seq;
        if end.is_none_or(|e| e < to) {
            let a = end.map_or(from, |e| e + 1).max(from);
            eprintln!(
                "zerocast: warning: sequences {a} to {to} are not in the log: it ends {} (not recorded yet, or a torn tail)",
                end.map_or_else(|| "before --from".to_owned(), |e| format!("at sequence {e}"))
            );
            incomplete.push(format!("{a} to {to}"));
        }
    }
    if incomplete.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "replay incomplete: sequences {} of the range asked for are not in the log",
            incomplete.join(", ")
        ))
    }
}

/// One line of `zerocast replay` for a record or a gap of the log.
fn replay_line(entry: &wal::Entry<'_>, json: bool) -> String {
    use wal::format::{KIND_FRAME, KIND_LOST, KIND_MISSED};
    let r = match entry {
        wal::Entry::Gap { from, to, path } => {
            return if json {
                serde_json::json!({"event": "missing", "from": from, "to": to, "path": path.display().to_string()})
                    .to_string()
            } else {
                format!(
                    "MISSING {from} to {to}: not in the log ({} removed or damaged)",
                    path.display()
                )
            };
        }
        wal::Entry::Record(r) => r,
    };
    match r.kind {
        KIND_FRAME if json => print::frame_json(r.seq, r.frame)
            .map(|v| v.to_string())
            .unwrap_or_default(),
        KIND_FRAME => print::frame_line(r.seq, r.frame).unwrap_or_default(),
        KIND_LOST if json => format!("{{\"event\":\"lost\",\"seq\":{}}}", r.seq),
        KIND_LOST => format!("LOST {}: its publisher died mid-publish", r.seq),
        KIND_MISSED if json => format!(
            "{{\"event\":\"missed\",\"from\":{},\"to\":{}}}",
            r.seq,
            r.last_seq()
        ),
        KIND_MISSED => format!(
            "MISSED {} to {}: the recorder was lapped; these frames are not in the log",
            r.seq,
            r.last_seq()
        ),
        _ => {
            let why = zerocast_core::frame::FrameRef::parse(r.frame)
                .err()
                .map_or_else(|| "unknown".to_owned(), |e| e.to_string());
            if json {
                serde_json::json!({"event": "invalid", "seq": r.seq, "error": why, "bytes": r.frame.len()})
                    .to_string()
            } else {
                format!(
                    "INVALID {}: not a valid frame ({why}); {} bytes kept in the log",
                    r.seq,
                    r.frame.len()
                )
            }
        }
    }
}

/// Cuts `out` back to the entries up to and including `checkpoint`.
fn cut_output(path: &std::path::Path, checkpoint: Option<u64>) -> Result<std::fs::File, String> {
    // No file yet: nothing to keep. Any other read error is an error: taken
    // for an empty file, it would cut the output to nothing.
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let keep = match checkpoint {
        None => 0,
        Some(c) => {
            // The file holds increasing sequences: an entry not above the
            // one before is a tail that never reached the disk (zeros after
            // a machine crash), not output.
            let mut prev: Option<u64> = None;
            data.chunks_exact(8)
                .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")))
                .take_while(|&v| {
                    let keep = v <= c && prev.is_none_or(|p| v > p);
                    prev = Some(v);
                    keep
                })
                .count()
                * 8
        }
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(keep as u64)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(f)
}

/// fsyncs the directory holding `path` (its entry in it, once created).
fn sync_parent_dir(path: &std::path::Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    zerocast_runtime::wal::fsync_dir(dir).map_err(|e| format!("fsync the directory of --out: {e}"))
}

fn run_follow(bus: &Bus, args: &FollowArgs) -> Result<(), String> {
    bus.config().topic(&args.topic).map_err(|e| e.to_string())?;
    // Before anything is made (the checkpoint directory, the --out file).
    resume::refuse_iceoryx2(bus, &args.topic, "follow")?;
    let wal_dir = args.wal.join(&args.topic);
    let checkpoint_dir = wal_dir.join("checkpoints");
    let mut follower = resume::Resumable::open(
        bus,
        &args.topic,
        &wal_dir,
        &checkpoint_dir,
        &args.name,
        resume::CheckpointPolicy {
            every_events: args.checkpoint_every,
            every: Duration::from_millis(args.checkpoint_ms),
        },
    )
    .map_err(|e| e.to_string())?;
    // A checkpoint counts in one bus segment: after a bus reset it is
    // refused, not resumed (before anything is cut or written). A follow
    // that ends within the log does not create the bus's segment for it.
    let log_only = args.until.is_some_and(|u| {
        follower.checkpointed().is_some_and(|c| c >= u)
            || zerocast_runtime::checkpoint_segment::log_reaches(&wal_dir, u)
    });
    zerocast_runtime::checkpoint_segment::bind(
        bus,
        &args.topic,
        &wal_dir,
        &checkpoint_dir,
        &args.name,
        follower.checkpointed(),
        log_only,
    )?;
    let mut sink: Box<dyn Write> = match &args.out {
        Some(path) => {
            use std::io::Seek;
            let mut f = cut_output(path, follower.checkpointed())?;
            // The file's directory entry reaches the disk before any
            // checkpoint does: a power loss could otherwise keep the
            // checkpoint and lose the (new) file.
            sync_parent_dir(path)?;
            f.seek(std::io::SeekFrom::End(0))
                .map_err(|e| e.to_string())?;
            // The output reaches the disk before a checkpoint says it was
            // processed: a machine crash then loses no output the
            // checkpoint covers (and the restart cuts what it does not).
            let synced = f
                .try_clone()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let path = path.clone();
            follower.before_checkpoint(move |_| {
                synced.sync_data().map_err(|source| wal::WalError::Io {
                    path: path.clone(),
                    action: "fdatasync output",
                    source,
                })
            });
            Box::new(f)
        }
        None => {
            // Flushed before each checkpoint: a checkpoint never covers a
            // line still in this process's buffer, so a crash loses no line
            // it covers (the lines after it are printed again at restart).
            let out = SharedOut::default();
            let flushed = out.clone();
            follower.before_checkpoint(move |_| {
                flushed.flush_now().map_err(|source| wal::WalError::Io {
                    path: PathBuf::from("stdout"),
                    action: "flush output",
                    source,
                })
            });
            Box::new(out)
        }
    };
    let binary = args.out.is_some();
    let until = args.until;
    if until.is_some_and(|u| follower.checkpointed().is_some_and(|c| c >= u)) {
        // Already processed up to `until` before: nothing left to do.
        return Ok(());
    }
    let out_name = args
        .out
        .as_ref()
        .map_or("stdout".to_owned(), |p| p.display().to_string());
    let from = follower.next_seq();
    let mut events = 0u64;
    // A status line on a terminal, unless the frames are printed there.
    let mut progress = Progress::with(
        "follow",
        std::io::stderr().is_terminal() && (binary || !std::io::stdout().is_terminal()),
    );
    let result = follower.try_run(
        |event| {
            let (seq, line) = match event {
                resume::Event::Frame { seq, bytes } => (
                    seq,
                    if args.json {
                        print::frame_json(seq, bytes)
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    } else {
                        print::frame_line(seq, bytes).unwrap_or_default()
                    },
                ),
                resume::Event::Lost(seq) if args.json => {
                    (seq, format!("{{\"event\":\"lost\",\"seq\":{seq}}}"))
                }
                resume::Event::Lost(seq) => {
                    (seq, format!("LOST {seq}: its publisher died mid-publish"))
                }
                resume::Event::Invalid { seq, .. } if args.json => {
                    (seq, format!("{{\"event\":\"invalid\",\"seq\":{seq}}}"))
                }
                resume::Event::Invalid { seq, bytes } => (
                    seq,
                    format!("INVALID {seq}: not a valid frame; {} bytes", bytes.len()),
                ),
                resume::Event::Missing { from, to } if args.json => (
                    to,
                    format!("{{\"event\":\"missing\",\"from\":{from},\"to\":{to}}}"),
                ),
                resume::Event::Missing { from, to } => (
                    to,
                    format!("MISSING {from} to {to}: in neither the log nor the ring"),
                ),
            };
            // Processing = writing the output; it completes before the
            // checkpoint that follows the event is stored.
            let written = if binary {
                // Only frames: a lost or missing sequence must show up as
                // absent, not as processed.
                match event {
                    resume::Event::Frame { seq, .. } => sink.write_all(&seq.to_le_bytes()),
                    _ => Ok(()),
                }
            } else {
                writeln!(sink, "{line}")
            };
            // A failed write is not processed: the checkpoint stays before it.
            written.map_err(|e| format!("{out_name}: write sequence {seq}: {e}"))?;
            events += 1;
            progress.update(|t| {
                format!(
                    "{events} events, at sequence {seq}, {:.0}/s",
                    events as f64 / t.max(1e-9)
                )
            });
            if until.is_some_and(|u| seq >= u) {
                return Ok(std::ops::ControlFlow::Break(()));
            }
            Ok(std::ops::ControlFlow::Continue(()))
        },
        signal::stopped,
    );
    progress.clear();
    eprintln!(
        "followed {events} events of {} from sequence {from}; {} checkpoints stored{}",
        args.topic,
        follower.checkpoints_stored(),
        follower.checkpointed().map_or_else(
            || " (no checkpoint yet)".to_owned(),
            |c| format!(", the last at sequence {c}")
        )
    );
    result?;
    sink.flush().map_err(|e| format!("{out_name}: flush: {e}"))
}

/// Buffered stdout that a checkpoint hook can flush.
#[derive(Clone)]
struct SharedOut(std::sync::Arc<std::sync::Mutex<std::io::BufWriter<std::io::Stdout>>>);

impl Default for SharedOut {
    fn default() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(
            std::io::BufWriter::with_capacity(64 << 10, std::io::stdout()),
        )))
    }
}

impl SharedOut {
    fn flush_now(&self) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("output lock poisoned"))?
            .flush()
    }
}

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("output lock poisoned"))?
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_now()
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match value_error(&e) {
            Some(line) => {
                eprintln!("zerocast: error: {line}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    if let Err(line) = check_command_line(&cli.command) {
        eprintln!("zerocast: error: {line}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZEROCAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal that takes them (not
        // TERM=dumb), never into files or pipes, and not with NO_COLOR.
        .with_ansi(zerocast_runtime::progress::stderr_colour())
        .init();
    signal::install();
    let result = load_config(cli.config.as_ref(), cli.namespace.as_ref())
        .map_err(|e| e.to_string())
        .and_then(|config| {
            // Every command but the demo (which uses its own namespace)
            // refuses an invalid one before touching any file.
            if !matches!(cli.command, Command::Demo(_)) {
                config.check_namespace().map_err(|e| e.to_string())?;
            }
            let bus = Bus::new(config);
            match &cli.command {
                Command::Demo(args) => {
                    demo::run(bus, cli.namespace.as_ref(), cli.config.as_ref(), args)
                }
                Command::Pub(args) => run_pub(&bus, args),
                Command::Sub(args) => run_sub(&bus, args),
                Command::Stat(args) => {
                    // A listing: a reader that goes away (`stat | head`)
                    // ends it quietly by SIGPIPE, as it ends `ls`, instead
                    // of a panic on the failed print. What `--remove-stale`
                    // had done by then stays done; each step is recoverable.
                    // SAFETY: restoring the default disposition of one
                    // signal; no handler is involved.
                    unsafe {
                        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                    }
                    match &args.release_durable {
                        Some(name) => stat::release_durable(&bus, name),
                        None => stat::run_with(&bus, args.remove_stale, args.remove_other_layouts),
                    }
                }
                Command::DemoSub(args) => demo::run_child(&bus, args),
                Command::Record(args) => run_record(&bus, args),
                Command::Replay(args) => run_replay(&bus, args),
                Command::Follow(args) => run_follow(&bus, args),
                Command::Health(args) => zerocast_runtime::health::run(&bus, args),
                Command::Batch(args) => batch::run_cli(&bus, args, signal::stopped),
                Command::Gateway(args) => {
                    zerocast_runtime::gateway::run_cli(&bus, args, signal::stopped)
                }
                #[cfg(feature = "bridge")]
                Command::Bridge(args) => {
                    zerocast_runtime::bridge::run_cli(&bus, args, signal::stopped)
                }
            }
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zerocast: error: {e}");
            ExitCode::FAILURE
        }
    }
}
