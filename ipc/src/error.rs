//! Errors of the ipc layer. Each names what was wrong and where.

use std::path::PathBuf;

use zerocast_core::broadcast::{GatingTableFull, LayoutError, PublishError};

/// Everything that can go wrong attaching to or using a topic.
///
/// Non-exhaustive: a later version may add variants (a new check names a
/// new problem) without breaking a caller's `match`, which needs a
/// wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call on a segment file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a zerocast segment (wrong magic number).
    NotZerocast {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes found.
        found_magic: u64,
    },
    /// The segment was written by a zerocast with another layout.
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// Layout version in the segment.
        found_version: u32,
        /// Layout hash in the segment.
        found_hash: u64,
        /// Layout version of this build.
        expected_version: u32,
        /// Layout hash of this build.
        expected_hash: u64,
    },
    /// The users of a segment or ack channel run in another pid namespace
    /// than this process, and at least one of them still maps it: this process
    /// would see their pids as other processes' (or none) and take them
    /// for dead (reap a live publisher's claims, take over a
    /// single-producer topic's live publisher, remove the segment as
    /// stale).
    ForeignPidNamespace {
        /// The segment or ack channel file.
        path: PathBuf,
        /// The pid namespace the file records (`pid:[N]`).
        theirs: u64,
        /// This process's pid namespace.
        ours: u64,
    },
    /// A long-lived monitor (`health`: [`Segment::observe`](crate::Segment::observe))
    /// was asked to read a segment whose users run, or ran, in another pid
    /// namespace. It neither judges that namespace's pids nor takes the
    /// segment over (its own namespace recorded, the topic's own
    /// processes, restarted, would be refused for as long as it ran).
    ForeignPidNamespaceObserved {
        /// The segment file.
        path: PathBuf,
        /// The pid namespace the file records (`pid:[N]`).
        theirs: u64,
        /// This process's pid namespace.
        ours: u64,
        /// Whether a process mapped the file when the monitor looked.
        in_use: bool,
    },
    /// The file is too small to hold what its header describes.
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Size needed.
        needed: u64,
    },
    /// A header field is out of range or inconsistent with the others or
    /// with the file (a corrupt or hostile segment).
    BadHeader {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it must be.
        why: String,
    },
    /// The segment file is open to other users, or belongs to another
    /// user without sharing it with one of our groups: refused.
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Our effective uid.
        our_uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// An existing segment has another ring shape than the config asks for
    /// (it was created from a config with another size or kind).
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// Topic name.
        topic: String,
        /// Slots of the existing segment.
        found_capacity: u64,
        /// Payload bytes per slot of the existing segment.
        found_slot_bytes: u64,
        /// Bytes of the existing segment file.
        found_size: u64,
        /// Slots the config asks for.
        asked_capacity: u64,
        /// Payload bytes per slot the config asks for.
        asked_slot_bytes: u64,
        /// Bytes of the segment the config asks for.
        asked_size: u64,
    },
    /// A publish found the ring full: a gating subscriber has not released
    /// the slot it needs, and the publisher's policy gave up waiting.
    RingFull {
        /// Topic name.
        topic: String,
        /// The gating registration furthest behind, if one was found.
        behind: Option<crate::segment::DurableHold>,
    },
    /// A publish would take a slot that a live publisher has claimed a
    /// full ring earlier and not committed (it holds a loan, or stalls
    /// mid-publish), and the publisher's gating policy gave up waiting.
    /// Nothing was claimed.
    StuckBehind {
        /// Topic name.
        topic: String,
        /// Pid of the publisher holding the slot.
        pid: u32,
        /// The sequence it has not committed.
        seq: u64,
    },
    /// Subscriber options that do not go together.
    BadOptions(String),
    /// An environment variable zerocast reads holds a value it does not
    /// accept (checked when a publisher is created).
    BadSetting {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The values accepted, and what each means.
        expected: &'static str,
    },
    /// A durable subscriber of this name is already attached and alive.
    DurableNameTaken {
        /// Topic name.
        topic: String,
        /// The name.
        name: String,
        /// Pid of the live holder.
        pid: u32,
    },
    /// Another process kept registering a durable subscriber (or kept a
    /// same-name durable entry taken) for longer than the wait allows.
    DurableBusy {
        /// Topic name.
        topic: String,
        /// The name.
        name: String,
        /// Pid of the process that kept it.
        pid: u32,
    },
    /// The creator did not finish initialising the segment in time.
    NotReady {
        /// The file.
        path: PathBuf,
    },
    /// A configured topic size cannot hold the header and two slots.
    TopicTooSmall {
        /// Topic name.
        topic: String,
        /// Configured size in bytes.
        size: u64,
        /// Smallest size that works.
        needed: u64,
    },
    /// A single-producer topic already has a live publisher.
    SinglePublisherTaken {
        /// Topic name.
        topic: String,
        /// Pid of the live publisher (0 if a reaper holds its entry).
        pid: u32,
    },
    /// The segment was created for another producer mode than the config
    /// asks for.
    ProducersMismatch {
        /// The segment file.
        path: PathBuf,
        /// Topic name.
        topic: String,
        /// The mode the segment records.
        found: crate::config::Producers,
        /// The mode the config asks for.
        asked: crate::config::Producers,
    },
    /// A gating subscriber of a single-producer topic needs
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which was refused to
    /// this process (a seccomp filter, or a kernel without `membarrier`:
    /// the two look alike from inside).
    NoRegistrationBarrier {
        /// Topic name.
        topic: String,
    },
    /// A publisher was used in a process forked from the one that created
    /// it: it is its creator's (on a single-producer topic a second
    /// producer would corrupt the ring).
    PublisherInheritedByFork {
        /// Topic name.
        topic: String,
        /// Pid of the process that created the publisher.
        creator: u32,
    },
    /// All publisher slots of the topic are taken.
    PublisherTableFull {
        /// Topic name.
        topic: String,
    },
    /// All subscriber slots of the topic are taken.
    SubscriberTableFull {
        /// Topic name.
        topic: String,
    },
    /// All gating slots of the topic's ring are taken.
    GatingTableFull {
        /// Topic name.
        topic: String,
    },
    /// The topic is not in the configuration.
    UnknownTopic(String),
    /// A topic or namespace name that cannot be a file name.
    BadName(String),
    /// The configuration file is invalid.
    BadConfig(String),
    /// The ring rejected the publish.
    Publish(PublishError),
    /// The ring layout in the segment is invalid.
    Ring {
        /// The file.
        path: PathBuf,
        /// What the ring said.
        source: LayoutError,
    },
    /// The frame is larger than the topic's slots.
    FrameTooLarge {
        /// Topic name.
        topic: String,
        /// Frame size in bytes.
        frame: usize,
        /// Slot payload size in bytes.
        slot: usize,
    },
    /// An error from the iceoryx2 transport.
    Iceoryx(String),
    /// A file at an ack channel's path that this build cannot use as one.
    BadAckChannel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Every entry of an ack channel is named by a subscriber.
    AckTableFull {
        /// The ack channel file.
        path: PathBuf,
    },
    /// A file at a counters table's path that this build cannot use as one.
    BadCounters {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Every entry of a counters table is owned by a live process.
    CountersTableFull {
        /// The counters file.
        path: PathBuf,
    },
    /// Another live process acks under this subscriber name.
    AckerNameTaken {
        /// The ack channel file.
        path: PathBuf,
        /// The subscriber name.
        name: String,
        /// The process acking under it.
        pid: u32,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io {
                path,
                action,
                source,
            } => write!(f, "{}: {action}: {source}", path.display()),
            Self::NotZerocast { path, found_magic } => write!(
                f,
                "{}: not a zerocast segment (magic {found_magic:#018x}, expected {:#018x})",
                path.display(),
                crate::layout::MAGIC
            ),
            Self::LayoutMismatch {
                path,
                found_version,
                found_hash,
                expected_version,
                expected_hash,
            } => {
                write!(
                    f,
                    "{}: segment layout v{found_version} (hash {found_hash:#018x}) does not match this build's layout v{expected_version} (hash {expected_hash:#018x}): another zerocast build made it, and this build's processes cannot use the topic while it exists; stop that build's processes (its recorder cleanly, so that it logs what it holds), then ",
                    path.display()
                )?;
                if *found_version >= crate::layout::FIRST_LOCKED_LAYOUT {
                    write!(f, "`zerocast stat --remove-other-layouts` removes it once no process maps it (its frames go with it)")
                } else {
                    write!(f, "delete the file (a build of a layout before v{} does not lock the segments it maps, so no tool can tell whether one still uses it)", crate::layout::FIRST_LOCKED_LAYOUT)
                }
            }
            Self::ForeignPidNamespace { path, theirs, ours } => write!(
                f,
                "{}: its users run in pid namespace pid:[{theirs}] and this process in pid:[{ours}], and a process still maps it: zerocast tells live processes from dead ones by pid, which differ between pid namespaces, so from here it would take them for dead; run every process of the topic in one pid namespace (Kubernetes: shareProcessNamespace: true; Docker: --pid=host or --pid=container:NAME). Once none of them maps it, a process of another namespace takes it over",
                path.display()
            ),
            Self::ForeignPidNamespaceObserved {
                path,
                theirs,
                ours,
                in_use,
            } => write!(
                f,
                "{}: its users run in pid namespace pid:[{theirs}] and this monitor in pid:[{ours}] ({}): a monitor that keeps running neither judges another namespace's processes (zerocast tells live from dead by pid) nor takes the segment over (the topic's own processes, restarted, would be refused while it ran); run it in the topic's pid namespace (Kubernetes: shareProcessNamespace: true; Docker: --pid=host or --pid=container:NAME){}",
                path.display(),
                if *in_use {
                    "a process, perhaps another monitor, holds it now"
                } else {
                    "no process maps it now"
                },
                if *in_use {
                    ""
                } else {
                    ". The topic's next publisher or subscriber here takes it over, and `zerocast stat` (which lets go at once) reads it; do not delete the file: its frames and durable holds go with it"
                }
            ),
            Self::Truncated { path, size, needed } => write!(
                f,
                "{}: segment file is {size} bytes, its header needs {needed}",
                path.display()
            ),
            Self::BadHeader {
                path,
                field,
                value,
                why,
            } => write!(
                f,
                "{}: corrupt segment header: {field} is {value}; {why}",
                path.display()
            ),
            Self::Untrusted {
                path,
                uid,
                our_uid,
                mode,
            } => write!(
                f,
                "segment {} is owned by uid {uid} (we are {our_uid}) / mode {mode:04o}: refusing (a segment must be ours, or shared with one of our groups by mode 0660, and never open to other users; remove it if it is not zerocast's)",
                path.display()
            ),
            Self::ShapeMismatch {
                path,
                topic,
                found_capacity,
                found_slot_bytes,
                found_size,
                asked_capacity,
                asked_slot_bytes,
                asked_size,
            } => write!(
                f,
                "topic {topic}: segment {} has {found_capacity} slots of {found_slot_bytes} bytes \
                 ({found_size} bytes), but the config asks for {asked_capacity} slots of \
                 {asked_slot_bytes} bytes ({asked_size} bytes): it was created from another \
                 config; use that config, or stop the topic's processes and remove the segment \
                 (`zerocast stat --remove-stale` once they are gone)",
                path.display()
            ),
            Self::StuckBehind { topic, pid, seq } => write!(
                f,
                "topic {topic}: the publisher with pid {pid} has not committed sequence {seq}, whose slot the next publish needs (a loan held or leaked, or a stalled publish); gave up waiting by the gating policy"
            ),
            Self::RingFull { topic, behind } => {
                write!(f, "topic {topic}: ring full: ")?;
                match behind {
                    Some(b) if b.orphaned => write!(
                        f,
                        "the durable hold {:?} (its subscriber is gone) has not released position {}; restart that subscriber, or drop the hold (`zerocast stat --release-durable {}`)",
                        b.name,
                        b.position.unwrap_or(0),
                        b.name
                    ),
                    Some(b) => write!(
                        f,
                        "gating subscriber {:?} (pid {}) has not released position {}",
                        b.name,
                        b.pid,
                        b.position.unwrap_or(0)
                    ),
                    None => f.write_str("a gating subscriber has not released the oldest slot"),
                }
            }
            Self::BadOptions(m) => write!(f, "bad subscriber options: {m}"),
            Self::BadSetting {
                var,
                value,
                expected,
            } => write!(
                f,
                "environment variable {var}={value}: expected {expected}; set it so, or unset it"
            ),
            Self::DurableNameTaken { topic, name, pid } => write!(
                f,
                "topic {topic}: durable subscriber {name:?} is already attached (pid {pid})"
            ),
            Self::DurableBusy { topic, name, pid } => write!(
                f,
                "topic {topic}: cannot register durable subscriber {name:?}: pid {pid} kept the durable registration busy (still registering, or taking over an entry of that name); try again"
            ),
            Self::NotReady { path } => write!(
                f,
                "{}: segment creator did not finish initialising it",
                path.display()
            ),
            Self::TopicTooSmall { topic, size, needed } => write!(
                f,
                "topic {topic}: size {size} bytes is too small, at least {needed} needed"
            ),
            Self::SinglePublisherTaken { topic, pid: 0 } => write!(
                f,
                "topic {topic} is a single-producer topic (producers = \"single\") and its one publisher entry is busy: a process is reaping a dead publisher from it, or it was freed just now; retry"
            ),
            Self::SinglePublisherTaken { topic, pid } => write!(
                f,
                "topic {topic} is a single-producer topic (producers = \"single\") and already has a live publisher (pid {pid}); stop that one first, or make the topic producers = \"many\""
            ),
            Self::ProducersMismatch {
                path,
                topic,
                found,
                asked,
            } => write!(
                f,
                "topic {topic}: segment {} was created with producers = \"{found}\", the config says \"{asked}\"; remove the segment (when nobody uses it) to recreate it, or change the config",
                path.display()
            ),
            Self::NoRegistrationBarrier { topic } => write!(
                f,
                "topic {topic} is a single-producer topic: a gating subscriber needs membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which was refused to this process (a seccomp filter? or a kernel built without membarrier); allow it, or make the topic producers = \"many\""
            ),
            Self::PublisherInheritedByFork { topic, creator } => write!(
                f,
                "topic {topic}: this publisher was created by process {creator} and inherited through fork and publishes only there; create a new publisher in this process"
            ),
            Self::PublisherTableFull { topic } => write!(
                f,
                "topic {topic}: all {} publisher slots are taken",
                crate::layout::MAX_PUBLISHERS
            ),
            Self::SubscriberTableFull { topic } => write!(
                f,
                "topic {topic}: all {} subscriber slots are taken",
                crate::layout::MAX_SUBSCRIBERS
            ),
            Self::GatingTableFull { topic } => write!(
                f,
                "topic {topic}: {}",
                GatingTableFull
            ),
            Self::UnknownTopic(t) => write!(f, "unknown topic {t:?}"),
            Self::BadName(n) => write!(
                f,
                "bad name {n:?}: use 1-64 characters from A-Z a-z 0-9 _ -"
            ),
            Self::BadConfig(m) => write!(f, "bad config: {m}"),
            Self::Publish(e) => write!(f, "publish failed: {e}"),
            Self::Ring { path, source } => write!(f, "{}: {source}", path.display()),
            Self::FrameTooLarge { topic, frame, slot } => write!(
                f,
                "topic {topic}: frame of {frame} bytes exceeds its {slot}-byte slots"
            ),
            Self::Iceoryx(m) => write!(f, "iceoryx2: {m}"),
            Self::BadAckChannel { path, problem } => {
                write!(f, "{}: bad ack channel: {problem}", path.display())
            }
            Self::BadCounters { path, problem } => {
                write!(f, "{}: bad counters table: {problem}", path.display())
            }
            Self::CountersTableFull { path } => write!(
                f,
                "{}: all {} entries of the counters table are owned by live processes",
                path.display(),
                crate::counters::MAX_COUNTERS
            ),
            Self::AckTableFull { path } => write!(
                f,
                "{}: all {} subscriber entries of the ack channel are named; remove the file while no publisher or acker uses it",
                path.display(),
                crate::acks::MAX_ACKERS
            ),
            Self::AckerNameTaken { path, name, pid } => write!(
                f,
                "{}: subscriber {name:?} already acks from live process {pid}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Self {
        Self::Publish(e)
    }
}

/// Maps an I/O error on `path` during `action` to [`Error::Io`].
pub(crate) fn io<'a>(
    path: &'a std::path::Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
