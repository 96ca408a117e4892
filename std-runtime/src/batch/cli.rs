//! `zerocast batch`: its arguments, checked before any work, and a thin
//! layer over [`Batcher`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use zerocast_ipc::Bus;

use super::{BatchOptions, Batcher, SinkSpec};

/// A duration such as `100ms`, `2s`, `1500us` (1 ms to 3600 s).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| {
        "use a whole number with a unit us, ms or s, from 1ms to 3600s: 100ms, 2s, 1500us"
            .to_owned()
    })?;
    let d =
        match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "us" => Duration::from_micros(n),
            _ => return Err(
                "use a whole number with a unit us, ms or s, from 1ms to 3600s: 100ms, 2s, 1500us"
                    .into(),
            ),
        };
    if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
        return Err(format!(
            "{s} is out of range; use 1ms to 3600s (1000us to 3600000000us)"
        ));
    }
    Ok(d)
}

fn parse_max_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err("use a whole number from 1 to 10000000".into()),
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    if (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(s.to_owned())
    } else {
        Err("use 1-64 characters from A-Z a-z 0-9 _ -".into())
    }
}

/// `zerocast batch`'s arguments.
#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// Topic name.
    #[arg(long)]
    pub topic: String,
    /// Where batches go: sqlite:FILE (one table per message kind) or
    /// jsonl:FILE (one JSON object per line).
    #[arg(long, value_parser = parse_sink)]
    pub sink: SinkSpec,
    /// Commit a batch this long after its first frame was published (a
    /// backlog frame: after the batcher took it); 1ms to 3600s, units us,
    /// ms, s.
    #[arg(long, default_value = "100ms", value_parser = parse_interval)]
    pub interval: Duration,
    /// Or once it holds this many frames.
    #[arg(long, default_value_t = 65_536, value_parser = parse_max_batch)]
    pub max_batch: usize,
    /// Stream name: the sink keeps its position under (topic, name).
    #[arg(long, default_value = "batch", value_parser = parse_name)]
    pub name: String,
    /// WAL root directory (the recorder's `--wal`): a restart catches up
    /// from the log. Without it only the ring is read, and what a restart
    /// finds overwritten is recorded as missing. It must exist.
    #[arg(long, value_parser = parse_wal)]
    pub wal: Option<PathBuf>,
    /// Exit once this sequence is committed.
    #[arg(long)]
    pub until: Option<u64>,
}

/// A `--wal` directory: one that does not exist (a typo) would read as an
/// empty log, and what the ring no longer holds would be recorded as
/// missing for good.
fn parse_wal(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(format!("{s} is not a directory")),
        Err(e) => Err(format!("{s}: {e} (give the recorder's --wal directory)")),
    }
}

fn parse_sink(s: &str) -> Result<SinkSpec, String> {
    s.parse()
}

/// Runs `zerocast batch`: prints one line per 10 s of progress on stderr
/// (tracing) and a summary on stdout at the end.
pub fn run_cli(bus: &Bus, args: &BatchArgs, stop: fn() -> bool) -> Result<(), String> {
    bus.config().topic(&args.topic).map_err(|e| e.to_string())?;
    // Before the sink is opened (which may make its file).
    crate::resume::refuse_iceoryx2(bus, &args.topic, "batch")?;
    let mut sink = args
        .sink
        .open(&args.topic, &args.name)
        .map_err(|e| e.to_string())?;
    let wal_dir = args.wal.as_ref().map(|w| w.join(&args.topic));
    if let Some(dir) = wal_dir.as_deref().filter(|d| !d.is_dir()) {
        // The recorder may not have started yet: it creates the directory.
        tracing::warn!(
            "{} does not exist (yet): no log of {} to catch up from; what the ring no longer \
             holds is recorded as missing",
            dir.display(),
            args.topic
        );
    }
    let batcher = Batcher::new(
        bus,
        &args.topic,
        wal_dir.as_deref(),
        &args.name,
        BatchOptions {
            interval: args.interval,
            max_batch: args.max_batch,
            until: args.until,
            ..BatchOptions::default()
        },
    );
    tracing::info!(topic = %args.topic, sink = %args.sink, committed = ?sink.committed().ok().flatten(), "batching");
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut rows = 0u64;
    let stats = batcher
        .run(&mut *sink, stop, |b| {
            rows += b.len() as u64;
            if last_report.elapsed() >= Duration::from_secs(10) {
                tracing::info!(rows, last_seq = ?b.last_seq(), "committed");
                last_report = Instant::now();
            }
        })
        .map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "committed {} batches of {} ({} frames, {} lost, {} missing, {} invalid) in {secs:.3}s; last sequence {}",
        stats.batches,
        args.topic,
        stats.frames,
        stats.lost,
        stats.missing,
        stats.invalid,
        stats
            .committed
            .map_or_else(|| "none".to_owned(), |s| s.to_string())
    );
    Ok(())
}
