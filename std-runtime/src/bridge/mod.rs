//! The zenoh bridge (`zerocast bridge export` / `zerocast bridge import`):
//! a topic carried between hosts with its sequences, every loss reported
//! exactly, and resume after a cut or a restart. See `docs/bridge.md`.
//!
//! The exporter reads a local topic and publishes its frames to the zenoh
//! key `zerocast/<namespace>/<topic>` ([`wire`] says what a message holds),
//! batching the frames that are ready into one message (never waiting to
//! fill one). It also answers queries on that key for a range of
//! sequences, from the origin's ring or its WAL. The importer republishes
//! into a local topic with the origin's sequences ([`import`] says how),
//! asks for every hole it sees, and marks lost what no source holds.
//!
//! zenoh runs in peer mode with scouting (multicast and gossip) off and
//! the endpoints given (`--listen`, `--connect`); `--zenoh-config FILE`
//! replaces all of that for routed set-ups. Only zenoh's TCP transport is
//! built in.

pub mod export;
pub mod import;
pub mod wire;

use std::path::{Path, PathBuf};

use zenoh::{Session, Wait};
use zerocast_ipc::Bus;

/// `zerocast bridge`.
#[derive(clap::Args, Debug)]
pub struct BridgeArgs {
    #[command(subcommand)]
    command: BridgeCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BridgeCommand {
    /// Publish a local topic to zenoh (key zerocast/<namespace>/<topic>)
    /// and answer the importer's queries for missed ranges.
    Export(ExportArgs),
    /// Republish a topic from zenoh into the local topic of the same name,
    /// with the origin's sequences; losses become Lost, exactly.
    Import(ImportArgs),
}

/// What both sides take.
#[derive(clap::Args, Debug)]
struct ZenohArgs {
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// zenoh config file (json5) for routed set-ups; replaces the defaults
    /// (peer mode, scouting off). --listen and --connect still apply.
    #[arg(long, value_name = "FILE")]
    zenoh_config: Option<PathBuf>,
    /// Accept zenoh connections here (repeatable), e.g. tcp/0.0.0.0:7447.
    #[arg(long, value_name = "tcp/ADDR", value_parser = parse_endpoint)]
    listen: Vec<String>,
    /// Connect to a zenoh peer or router here (repeatable), e.g.
    /// tcp/10.0.0.2:7447; retried until it answers, and after a cut.
    #[arg(long, value_name = "tcp/ADDR", value_parser = parse_endpoint)]
    connect: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    zenoh: ZenohArgs,
    /// Read the topic as a durable gating subscriber of this name: the
    /// topic's publishers never overwrite what the bridge has not sent
    /// (they wait or fail by their policy, also while the bridge is down),
    /// and a restarted exporter goes on from where it stopped.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    gating: Option<String>,
    /// The recorder's WAL root (the log of TOPIC in DIR/TOPIC): ranges the
    /// ring no longer holds are served from it.
    #[arg(long, value_name = "DIR")]
    wal: Option<PathBuf>,
    /// Most frames in one zenoh message (1 to 4096); frames are sent as
    /// soon as they are read, several together only when several are ready.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    max_batch: u16,
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    zenoh: ZenohArgs,
    /// The namespace of the origin (the key is zerocast/<NS>/<topic>;
    /// default: this side's namespace).
    #[arg(long, value_name = "NS", value_parser = parse_name)]
    origin_namespace: Option<String>,
    /// How long one query for a missing range waits for the exporter, in
    /// milliseconds; an unanswered one is asked again (never reported lost).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    query_timeout_ms: u64,
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    match s.strip_prefix("tcp/") {
        Some(addr) if !addr.is_empty() => {
            // HOST:PORT (HOST may be [v6]); the port must be a port, so a
            // typo is a bad flag (exit 2), not a zenoh error at open.
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(_))) if !host.is_empty() => Ok(s.to_owned()),
                Some((_, Err(_))) => Err(format!(
                    "the port of {addr:?} is not a number from 0 to 65535"
                )),
                _ => Err(
                    "expected tcp/HOST:PORT (only zenoh's TCP transport is built in)".to_owned(),
                ),
            }
        }
        _ => Err("expected tcp/HOST:PORT (only zenoh's TCP transport is built in)".to_owned()),
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    zerocast_ipc::config::check_name(s)
        .map(|()| s.to_owned())
        .map_err(|_| "use 1-64 characters from A-Z a-z 0-9 _ -".to_owned())
}

/// The zenoh key of `topic` in `namespace`.
pub fn key(namespace: &str, topic: &str) -> String {
    format!("zerocast/{namespace}/{topic}")
}

/// The largest zenoh message a side accepts without a config file: the
/// bridge's own are a few MB at most (4096 frames), where zenoh's default
/// is 1 GiB from any peer.
pub const MAX_MESSAGE_SIZE: usize = 32 << 20;

/// The zenoh configuration: `file`, or peer mode with scouting off, no
/// endpoint but those given and messages of at most [`MAX_MESSAGE_SIZE`]; then the endpoints given. Connections are retried from 200 ms up to every
/// second, so that a bridge is back soon after a cut.
pub fn zenoh_config(
    file: Option<&Path>,
    listen: &[String],
    connect: &[String],
) -> Result<zenoh::Config, String> {
    let set = |c: &mut zenoh::Config, k: &str, v: &str| {
        c.insert_json5(k, v)
            .map_err(|e| format!("zenoh config {k} = {v}: {e}"))
    };
    let mut c = match file {
        Some(path) => zenoh::Config::from_file(path)
            .map_err(|e| format!("zenoh config {}: {e}", path.display()))?,
        None => {
            let mut c = zenoh::Config::default();
            set(&mut c, "mode", r#""peer""#)?;
            set(&mut c, "scouting/multicast/enabled", "false")?;
            set(&mut c, "scouting/gossip/enabled", "false")?;
            set(
                &mut c,
                "transport/link/rx/max_message_size",
                &MAX_MESSAGE_SIZE.to_string(),
            )?;
            set(
                &mut c,
                "connect/retry",
                r#"{ period_init_ms: 200, period_max_ms: 1000, period_increase_factor: 2 }"#,
            )?;
            c
        }
    };
    let list = |v: &[String]| serde_json::to_string(v).expect("a list of strings is JSON");
    // Without a file, only the endpoints given: a zenoh peer otherwise
    // listens on every interface at a random port.
    if !listen.is_empty() || file.is_none() {
        set(&mut c, "listen/endpoints", &list(listen))?;
    }
    if !connect.is_empty() {
        set(&mut c, "connect/endpoints", &list(connect))?;
    }
    Ok(c)
}

/// Opens a zenoh session with [`zenoh_config`].
pub fn open_session(
    file: Option<&Path>,
    listen: &[String],
    connect: &[String],
) -> Result<Session, String> {
    let config = zenoh_config(file, listen, connect)?;
    zenoh::open(config)
        .wait()
        .map_err(|e| format!("zenoh: opening the session: {e}"))
}

fn open(z: &ZenohArgs) -> Result<Session, String> {
    open_session(z.zenoh_config.as_deref(), &z.listen, &z.connect)
}

/// Runs `zerocast bridge ...` until `stop()`.
pub fn run_cli(bus: &Bus, args: &BridgeArgs, stop: fn() -> bool) -> Result<(), String> {
    match &args.command {
        BridgeCommand::Export(a) => {
            bus.config()
                .topic(&a.zenoh.topic)
                .map_err(|e| e.to_string())?;
            let mut options = export::ExportOptions::new(
                &a.zenoh.topic,
                &key(&bus.config().namespace, &a.zenoh.topic),
            );
            options.gating = a.gating.clone();
            options.wal = a.wal.clone();
            options.max_batch = usize::from(a.max_batch);
            let session = open(&a.zenoh)?;
            let stats = export::export(bus, &session, &options, stop)?;
            tracing::info!(?stats, "bridge export stopped");
            Ok(())
        }
        BridgeCommand::Import(a) => {
            bus.config()
                .topic(&a.zenoh.topic)
                .map_err(|e| e.to_string())?;
            let ns = a
                .origin_namespace
                .clone()
                .unwrap_or_else(|| bus.config().namespace.clone());
            let mut options = import::ImportOptions::new(&a.zenoh.topic, &key(&ns, &a.zenoh.topic));
            options.query_timeout = std::time::Duration::from_millis(a.query_timeout_ms);
            let session = open(&a.zenoh)?;
            let stats = import::import(bus, &session, &options, stop)?;
            tracing::info!(?stats, "bridge import stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_no_listen_flag_means_no_listener() {
        // A zenoh peer listens on every interface at a random port unless
        // told otherwise; the bridge listens only where --listen says.
        let c = zenoh_config(None, &[], &["tcp/127.0.0.1:1".to_owned()]).unwrap();
        let listen = c.get_json("listen/endpoints").unwrap();
        assert_eq!(listen.replace([' ', '\n'], ""), "[]", "{listen}");
        let c = zenoh_config(None, &["tcp/127.0.0.1:2".to_owned()], &[]).unwrap();
        let listen = c.get_json("listen/endpoints").unwrap();
        assert!(listen.contains("tcp/127.0.0.1:2"), "{listen}");
    }

    #[test]
    fn regression_default_config_bounds_message_size() {
        // zenoh accepts messages of up to 1 GiB from any peer by default;
        // the bridge's largest is a few MB (4096 frames).
        let c = zenoh_config(None, &[], &[]).unwrap();
        let max = c.get_json("transport/link/rx/max_message_size").unwrap();
        assert_eq!(max, MAX_MESSAGE_SIZE.to_string());
    }

    #[test]
    fn scouting_is_off_by_default() {
        let c = zenoh_config(None, &[], &[]).unwrap();
        assert_eq!(c.get_json("scouting/multicast/enabled").unwrap(), "false");
        assert_eq!(c.get_json("scouting/gossip/enabled").unwrap(), "false");
        assert_eq!(c.get_json("mode").unwrap(), "\"peer\"");
    }
}
