//! `zerocast`: the demo feed, and tools to publish, subscribe and inspect.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use zerocast_ipc::{
    Bus, Config, GatingPolicy, Publisher, PublisherOptions, RecvError, Start, SubscriberOptions,
    WaitStrategy,
};
use zerocast_runtime::feed::{publish_synthetic, Feed};
use zerocast_runtime::{demo, print, signal, stat};

#[derive(Parser, Debug)]
#[command(
    name = "zerocast",
    version,
    about = "Zero-copy market-data bus over shared memory"
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
    /// A demo subscriber process (spawned by `zerocast demo`).
    #[command(hide = true)]
    DemoSub(demo::DemoSubArgs),
}

#[derive(clap::Args, Debug)]
struct PubArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Frames to publish.
    #[arg(long)]
    count: u64,
    /// Frames per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Frames per batch publish (one claim per batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Fail instead of waiting when a gating subscriber is behind.
    #[arg(long)]
    no_wait: bool,
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
    /// Exit after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Where to start: newest, oldest, or a sequence number.
    #[arg(long, default_value = "newest")]
    from: String,
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
    #[arg(long)]
    timeout: Option<f64>,
    /// Subscriber name in the topic's table.
    #[arg(long, default_value = "")]
    name: String,
}

#[derive(clap::Args, Debug)]
struct StatArgs {
    /// Remove segments whose creator and users are all dead.
    #[arg(long)]
    remove_stale: bool,
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

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "newest" => Ok(Start::Newest),
        "oldest" => Ok(Start::Oldest),
        n => n
            .parse()
            .map(Start::At)
            .map_err(|_| format!("--from {n:?}: expected newest, oldest or a sequence number")),
    }
}

fn run_pub(bus: &Bus, args: &PubArgs) -> Result<(), String> {
    let kind = bus
        .config()
        .topic(&args.topic)
        .map_err(|e| e.to_string())?
        .kind;
    let mut publisher = bus
        .publisher_with(
            &args.topic,
            PublisherOptions {
                name: args.name.clone(),
                gating: if args.no_wait {
                    GatingPolicy::Fail
                } else {
                    GatingPolicy::default()
                },
            },
        )
        .map_err(|e| e.to_string())?;
    let mut feed = Feed::new(16, 0x5EED ^ u64::from(std::process::id()));
    let start = Instant::now();
    let (mut sent, mut first, mut last) = (0u64, None, 0u64);
    let batch = args.batch.max(1) as u64;
    while sent < args.count {
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
            while Instant::now() < due {
                std::thread::sleep(Duration::from_micros(50).min(due - Instant::now()));
            }
        }
        let n = batch.min(args.count - sent);
        let seq = publish_synthetic(&mut publisher, &mut feed, kind, n as usize)
            .map_err(|e| e.to_string())?;
        first.get_or_insert(seq);
        last = seq + n - 1;
        sent += n;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {sent} frames to {} (seq {}..={last}) in {secs:.3}s, {:.0} frames/s",
        args.topic,
        first.unwrap_or(0),
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn run_sub(bus: &Bus, args: &SubArgs) -> Result<(), String> {
    let start = parse_start(&args.from)?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZEROCAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    signal::install();
    let result = load_config(cli.config.as_ref(), cli.namespace.as_ref())
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let bus = Bus::new(config);
            match &cli.command {
                Command::Demo(args) => demo::run(bus, cli.config.as_ref(), args),
                Command::Pub(args) => run_pub(&bus, args),
                Command::Sub(args) => run_sub(&bus, args),
                Command::Stat(args) => stat::run(&bus, args.remove_stale),
                Command::DemoSub(args) => demo::run_child(&bus, args),
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
