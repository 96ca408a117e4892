//! Topics, their sizes and the namespace, from defaults or a TOML file.
//!
//! ```toml
//! namespace = "prod"            # optional; ZEROCAST_NAMESPACE overrides
//!
//! [[topic]]
//! name = "trade_events"
//! size = "10MB"                 # bytes, or a number with KB/MB/GB/TB (powers of 1024); at most 256GiB
//! kind = "trade"                # sizes the slots: trade, account, l2, heartbeat, ack, any
//! transport = "shm"             # or "iceoryx2"
//! mode = "0660"                 # optional: "0600" (default) or "0660"
//! group = "risk"                # optional: the segment's group
//! producers = "single"          # optional: "many" (default, up to 10 publishers) or "single"
//! ```
//!
//! `producers = "single"` makes the topic a single-producer topic: one
//! publisher at a time (a second is refused with the live one's pid; a
//! dead one's place is taken over), and a publish claims its sequence with
//! a plain store instead of a locked read-modify-write. The mode is
//! recorded in the segment when it is created; every opener follows the
//! segment, and one whose config says otherwise is refused.
//!
//! `mode` and `group` are applied when the segment is created. The default,
//! 0600, admits only this user. `mode = "0660"` with `group` admits every
//! member of that group: each of them can then publish to the topic,
//! subscribe, and also write anything into the segment (frames, tables),
//! so give the group only to processes trusted with the topic. (Openers
//! check every header field, so a damaged segment is an error, never
//! memory unsafety.) Other users get no bits.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zerocast_core::frame::{frame_words, MessageKind, MAX_FRAME_WORDS};

use crate::error::{Error, Result};
use crate::segment::{capacity_for, segment_size};

/// Environment variable that sets the namespace.
pub const NAMESPACE_ENV: &str = "ZEROCAST_NAMESPACE";
/// Namespace when neither the config nor the environment names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How a topic's frames travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// zerocast's own shared-memory broadcast ring.
    #[default]
    Shm,
    /// An iceoryx2 publish-subscribe service of byte slices.
    Iceoryx2,
}

/// How many publishers a topic has at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Producers {
    /// Up to [`MAX_PUBLISHERS`](crate::layout::MAX_PUBLISHERS) at once;
    /// claims are one atomic `fetch_add`.
    #[default]
    Many,
    /// One at a time; claims are a plain load and store (no locked
    /// instruction on the publish path).
    Single,
}

impl std::fmt::Display for Producers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Many => "many",
            Self::Single => "single",
        })
    }
}

/// What frames a topic's slots must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TopicKind {
    /// Trades (and heartbeats).
    Trade,
    /// Account updates (and heartbeats).
    Account,
    /// Level-2 books (and heartbeats).
    L2,
    /// Heartbeats only.
    Heartbeat,
    /// Acks (and heartbeats).
    Ack,
    /// Any kind: slots sized for the largest frame.
    #[default]
    Any,
}

impl TopicKind {
    /// Payload words a slot needs: the main kind's frame, and a heartbeat's.
    pub fn slot_words(self) -> usize {
        let main = match self {
            Self::Trade => frame_words(MessageKind::Trade),
            Self::Account => frame_words(MessageKind::Account),
            Self::L2 => frame_words(MessageKind::L2),
            Self::Heartbeat => frame_words(MessageKind::Heartbeat),
            Self::Ack => frame_words(MessageKind::Ack),
            Self::Any => MAX_FRAME_WORDS,
        };
        main.max(frame_words(MessageKind::Heartbeat))
    }
}

/// Parses a byte count with an optional unit: B, K/KB/KiB, M/MB/MiB,
/// G/GB/GiB, T/TB/TiB (all powers of 1024), as in `10MB` or `512 KiB`. The
/// one parser of sizes: the config's `size` and the program's size flags.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        "not a byte count like 65536, 64KiB or 10MB (units B, KB, MB, GB, TB: powers of 1024)"
            .to_owned()
    };
    let n: u64 = num
        .parse()
        .map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => {
                "out of range (at most 2^64 - 1 bytes)".to_owned()
            }
            _ => bad(),
        })?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "out of range (at most 2^64 - 1 bytes)".to_owned())
}

/// A topic's `size` value: a non-negative integer (bytes) or a string
/// with a unit; anything else is an error naming the topic, the value and
/// what is expected.
fn topic_size(topic: &str, value: &toml::Value) -> Result<u64> {
    let expected = "expected a byte count: a whole number of bytes like 65536, or a string with a unit like \"10MB\" (units B, KB, MB, GB, TB: powers of 1024)";
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| {
            Error::BadConfig(format!(
                "topic {topic:?}: size {n}: not a byte count (negative); {expected}"
            ))
        }),
        toml::Value::String(s) => parse_size(s)
            .map_err(|why| Error::BadConfig(format!("topic {topic:?}: size {s:?}: {why}"))),
        other => {
            let shown = match other {
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                _ => format!("(a {})", other.type_str()),
            };
            Err(Error::BadConfig(format!(
                "topic {topic:?}: size {shown}: not a byte count (a {}); {expected}",
                other.type_str()
            )))
        }
    }
}

/// The largest topic `size`: 256 GiB. A segment lives in memory
/// (`/dev/shm`), reserved whole when it is created.
pub const MAX_TOPIC_SIZE: u64 = 256 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    /// A byte count or a string with a unit; any TOML value, so that a
    /// wrong one (-5, 1.5, true) is reported with its topic and what is
    /// expected (see `topic_size`), not as serde's "did not match any
    /// variant".
    size: toml::Value,
    #[serde(default)]
    kind: Option<TopicKind>,
    #[serde(default)]
    transport: Transport,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    producers: Producers,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    namespace: Option<String>,
    #[serde(default, rename = "topic")]
    topics: Vec<RawTopic>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Name (1-64 of `A-Z a-z 0-9 _ -`).
    pub name: String,
    /// Segment size in bytes; the ring capacity is the largest power of two
    /// that fits.
    pub size: u64,
    /// What the slots must hold.
    pub kind: TopicKind,
    /// Transport.
    pub transport: Transport,
    /// Who may open the segment: mode and group applied at creation.
    pub access: Access,
    /// One publisher at a time, or many (recorded in the segment at
    /// creation).
    pub producers: Producers,
}

/// A segment's permission bits and group, applied when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// 0o600 (this user) or 0o660 (and the group).
    pub mode: u32,
    /// The group id to give the segment (`None`: the creator's).
    pub gid: Option<u32>,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            mode: 0o600,
            gid: None,
        }
    }
}

/// Parses a topic's `mode`: "0600" or "0660" (a segment is read and written
/// by every user of the topic, so no read-only or other-user bits).
pub fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    let bad = || {
        format!(
            "mode {s:?}: use \"0600\" (this user only) or \"0660\" (and the topic's group); \
             every user of a segment reads and writes it, and other users get no access"
        )
    };
    let digits = s.strip_prefix("0o").unwrap_or(s);
    // Octal digits only: `from_str_radix` would also take a sign ("+600").
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    match mode {
        0o600 | 0o660 => Ok(mode),
        _ => Err(bad()),
    }
}

/// The id of group `name`, or an error naming it.
pub fn group_id(name: &str) -> std::result::Result<u32, String> {
    let unknown = || format!("group {name:?}: no such group on this machine");
    let c = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: a plain C struct of integers and pointers: all-zero is a
    // valid value, filled in by getgrnam_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name NUL-terminated,
    // grp and out writable, buf writable for its length.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 {
        return Err(format!(
            "group {name:?}: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if out.is_null() {
        return Err(unknown());
    }
    Ok(grp.gr_gid)
}

impl TopicConfig {
    /// A topic with the slots sized for `kind`.
    pub fn new(name: &str, size: u64, kind: TopicKind) -> Self {
        Self {
            name: name.to_owned(),
            size,
            kind,
            transport: Transport::Shm,
            access: Access::default(),
            producers: Producers::Many,
        }
    }

    /// Ring capacity and payload words, or why the size is too small.
    pub fn ring_shape(&self) -> Result<(u64, usize)> {
        let words = self.kind.slot_words();
        let capacity = capacity_for(self.size, words).ok_or_else(|| Error::TopicTooSmall {
            topic: self.name.clone(),
            size: self.size,
            needed: segment_size(2, words),
        })?;
        Ok((capacity, words))
    }
}

/// The bus configuration: a namespace and its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Prefix of every segment and service name.
    pub namespace: String,
    /// Topics.
    pub topics: Vec<TopicConfig>,
}

/// Checks that `name` can be part of a file name.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_owned()))
    }
}

fn env_namespace() -> Option<String> {
    std::env::var(NAMESPACE_ENV).ok().filter(|s| !s.is_empty())
}

impl Config {
    /// The seed's topics: `trade_events` 10 MB, `account_events` 10 MB,
    /// `market_l2` 50 MB, in the namespace from `ZEROCAST_NAMESPACE` or
    /// `default`.
    ///
    /// The namespace is not checked here; an invalid one (say
    /// `ZEROCAST_NAMESPACE=../x`) makes every topic of the bus an error
    /// ([`Config::topic`]). [`Config::try_default_topics`] checks it at once.
    pub fn default_topics() -> Self {
        Self {
            namespace: env_namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            topics: vec![
                TopicConfig::new("trade_events", 10 << 20, TopicKind::Trade),
                TopicConfig::new("account_events", 10 << 20, TopicKind::Account),
                TopicConfig::new("market_l2", 50 << 20, TopicKind::L2),
            ],
        }
    }

    /// [`default_topics`](Self::default_topics), or an error naming
    /// `ZEROCAST_NAMESPACE` if it holds an invalid namespace.
    pub fn try_default_topics() -> Result<Self> {
        let config = Self::default_topics();
        config.check_namespace()?;
        Ok(config)
    }

    /// Checks that the namespace can be part of a file name.
    pub fn check_namespace(&self) -> Result<()> {
        check_name(&self.namespace).map_err(|_| {
            Error::BadConfig(format!(
                "namespace {:?} (from {NAMESPACE_ENV}, the config file or the program): use 1-64 characters from A-Z a-z 0-9 _ -",
                self.namespace
            ))
        })
    }

    /// Parses a TOML configuration. `ZEROCAST_NAMESPACE` overrides its
    /// namespace.
    pub fn from_toml(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::BadConfig(e.to_string()))?;
        let from_env = env_namespace();
        let source = if from_env.is_some() {
            format!("{NAMESPACE_ENV}=")
        } else {
            "namespace ".to_owned()
        };
        let namespace = from_env
            .or(raw.namespace)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        check_name(&namespace).map_err(|_| {
            Error::BadConfig(format!(
                "{source}{namespace:?}: use 1-64 characters from A-Z a-z 0-9 _ -"
            ))
        })?;
        let mut topics = Vec::new();
        for t in raw.topics {
            check_name(&t.name).map_err(|_| {
                Error::BadConfig(format!(
                    "topic name {:?}: use 1-64 characters from A-Z a-z 0-9 _ -",
                    t.name
                ))
            })?;
            if topics.iter().any(|x: &TopicConfig| x.name == t.name) {
                return Err(Error::BadConfig(format!(
                    "topic {:?} is defined twice",
                    t.name
                )));
            }
            let size = topic_size(&t.name, &t.size)?;
            if size > MAX_TOPIC_SIZE {
                return Err(Error::BadConfig(format!(
                    "topic {:?}: size {size} bytes is more than the {MAX_TOPIC_SIZE} bytes (256GiB) a topic may have (its segment is reserved in memory, in /dev/shm)",
                    t.name
                )));
            }
            let kind = t.kind.unwrap_or(match t.name.as_str() {
                "trade_events" => TopicKind::Trade,
                "account_events" => TopicKind::Account,
                "market_l2" => TopicKind::L2,
                _ => TopicKind::Any,
            });
            let topic_err = |why: String| Error::BadConfig(format!("topic {:?}: {why}", t.name));
            let mode = t
                .mode
                .as_deref()
                .map(parse_mode)
                .transpose()
                .map_err(topic_err)?;
            let gid = t
                .group
                .as_deref()
                .map(group_id)
                .transpose()
                .map_err(topic_err)?;
            if gid.is_some() && mode != Some(0o660) {
                return Err(topic_err(
                    "a group without mode = \"0660\" gives that group no access".to_owned(),
                ));
            }
            let topic = TopicConfig {
                access: Access {
                    mode: mode.unwrap_or(0o600),
                    gid,
                },
                name: t.name,
                size,
                kind,
                transport: t.transport,
                producers: t.producers,
            };
            topic.ring_shape()?;
            topics.push(topic);
        }
        if topics.is_empty() {
            return Err(Error::BadConfig("no [[topic]] defined".to_owned()));
        }
        Ok(Self { namespace, topics })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            action: "read config",
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::BadConfig(m) => Error::BadConfig(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The topic called `name`; an error too if the namespace is invalid
    /// (every use of a topic goes through here, so no segment or service
    /// is ever named after an invalid namespace).
    /// [`HEALTH_TOPIC`] is always known: [`health_topic`] unless the
    /// configuration defines it.
    pub fn topic(&self, name: &str) -> Result<&TopicConfig> {
        self.check_namespace()?;
        self.topics
            .iter()
            .find(|t| t.name == name)
            .or_else(|| (name == HEALTH_TOPIC).then(health_topic))
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// The segment file of topic `name` in this namespace.
    pub fn segment_path(&self, name: &str) -> PathBuf {
        shm_dir().join(format!("{}{}.{}", SEGMENT_PREFIX, self.namespace, name))
    }
}

impl Config {
    /// The ack channel file of topic `name` in this namespace.
    pub fn ack_path(&self, name: &str) -> PathBuf {
        shm_dir().join(format!("zerocast-acks.{}.{}", self.namespace, name))
    }
}

/// The topic health monitors publish publisher state changes on
/// (`zerocast health`). Every configuration has it: [`health_topic`]
/// unless a `[[topic]]` of that name says otherwise. It is not in
/// [`Config::topics`], so commands that walk the configured topics (the
/// demo) leave it alone.
pub const HEALTH_TOPIC: &str = "health";

/// The [`HEALTH_TOPIC`] of a configuration that does not define it: 1 MiB,
/// heartbeat-sized slots (its events travel as heartbeat frames).
pub fn health_topic() -> &'static TopicConfig {
    static TOPIC: std::sync::OnceLock<TopicConfig> = std::sync::OnceLock::new();
    TOPIC.get_or_init(|| TopicConfig::new(HEALTH_TOPIC, 1 << 20, TopicKind::Heartbeat))
}

/// Prefix of every segment file name: `zerocast.<namespace>.<topic>`.
pub const SEGMENT_PREFIX: &str = "zerocast.";

/// Where segments live: `/dev/shm`.
pub fn shm_dir() -> PathBuf {
    PathBuf::from("/dev/shm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1TB"), Ok(1 << 40));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("99999999999TB")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn config_file_round_trip() {
        let c = Config::from_toml(
            r#"
            namespace = "testns"
            [[topic]]
            name = "trades"
            size = "1MB"
            kind = "trade"
            [[topic]]
            name = "books"
            size = 2097152
            kind = "l2"
            transport = "iceoryx2"
            "#,
        )
        .unwrap();
        if std::env::var(NAMESPACE_ENV).is_err() {
            assert_eq!(c.namespace, "testns");
        }
        assert_eq!(c.topic("trades").unwrap().size, 1 << 20);
        assert_eq!(c.topic("books").unwrap().transport, Transport::Iceoryx2);
        let (cap, words) = c.topic("trades").unwrap().ring_shape().unwrap();
        assert!(cap.is_power_of_two() && cap >= 2048, "{cap}");
        assert_eq!(words, 20);
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let err = |t: &str| Config::from_toml(t).unwrap_err().to_string();
        assert!(err("[[topic]]\nname = \"a b\"\nsize = 100000").contains("topic name \"a b\""));
        assert!(err("[[topic]]\nname = \"t\"\nsize = \"lots\"").contains("size \"lots\""));
        assert!(err("[[topic]]\nname = \"t\"\nsize = 100").contains("too small"));
        assert!(err("[[topic]]\nname = \"t\"\nsize = 100000\ncolour = 1").contains("colour"));
        assert!(err("namespace = \"x\"").contains("no [[topic]]"));
        assert!(err(
            "[[topic]]\nname = \"t\"\nsize = 100000\n[[topic]]\nname = \"t\"\nsize = 100000"
        )
        .contains("defined twice"));
    }

    /// Review finding (issue 10): `size = -5` gave serde's message for an
    /// untagged enum ("data did not match any variant"), naming neither the
    /// key, the value nor what is expected.
    #[test]
    fn regression_negative_size_names_key_value_and_expectation() {
        for (value, shown) in [("-5", "-5"), ("1.5", "1.5"), ("true", "true")] {
            let e = Config::from_toml(&format!("[[topic]]\nname = \"t\"\nsize = {value}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("topic \"t\""), "{e}");
            assert!(e.contains(&format!("size {shown}")), "{e}");
            assert!(e.contains("byte count"), "{e}");
            assert!(!e.contains("variant"), "{e}");
        }
    }

    /// Review finding (issue 10): `parse_mode` took "+600" (and "0o+600")
    /// as 0600: `from_str_radix` accepts a sign.
    #[test]
    fn regression_mode_accepts_only_octal_digits() {
        for bad in ["+600", "0o+600", "+0660", " 0600", "0600 ", "-0", ""] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o660"), Ok(0o660));
    }

    #[test]
    fn health_topic_is_known_unless_configured() {
        let c = Config::default_topics();
        let t = c.topic(HEALTH_TOPIC).unwrap();
        assert_eq!(t.kind, TopicKind::Heartbeat);
        assert!(t.ring_shape().unwrap().0 >= 1024);
        assert!(c.topics.iter().all(|t| t.name != HEALTH_TOPIC));
        let c = Config::from_toml("[[topic]]\nname = \"health\"\nsize = \"2MB\"\n").unwrap();
        assert_eq!(c.topic(HEALTH_TOPIC).unwrap().size, 2 << 20);
        assert!(matches!(c.topic("healthy"), Err(Error::UnknownTopic(_))));
    }

    #[test]
    fn default_topics_fit_their_sizes() {
        let c = Config::default_topics();
        for t in &c.topics {
            let (cap, words) = t.ring_shape().unwrap();
            assert!(segment_size(cap, words) <= t.size);
            assert!(segment_size(cap * 2, words) > t.size);
        }
    }
}
