//! Which bus a `follow` checkpoint counts in: the identity of the topic's
//! segment ([`crate::batch::segment_identity`]) kept beside the checkpoint,
//! in `<name>.segment`.
//!
//! A checkpoint is a sequence number, and sequences count from 0 in each
//! segment. After a bus reset (the segment removed and created again, as
//! after a reboot or a `stat --remove-stale` of a stopped bus) a resumed
//! follower would take the new bus's sequences up to its checkpoint for
//! ones it had processed (skipping them), or wait for a sequence the new
//! bus reaches only much later. So, as the batcher does with its sinks, a
//! checkpoint bound to another segment is refused, naming both.

use std::path::{Path, PathBuf};

use zerocast_ipc::{Bus, Transport};

/// The file holding the identity of the segment `name`'s checkpoint in
/// `checkpoint_dir` counts in.
pub fn path(checkpoint_dir: &Path, name: &str) -> PathBuf {
    checkpoint_dir.join(format!("{name}.segment"))
}

/// Binds `name`'s checkpoint (in `checkpoint_dir`, at sequence
/// `checkpointed`) to `topic`'s segment on `bus`, before any event is
/// processed:
///
/// - no checkpoint yet: records the segment whose sequences it reads
///   first: the one its log (in `wal_dir`) was recorded from, if the log
///   is bound ([`LOG_BINDING_FILE`]), else the bus's now. After a bus
///   reset whose old log is still in place, a new follower reads the old
///   log first, and its checkpoint counts in the old bus: bound to the new
///   one, a checkpoint stored as the follower stopped at the log's end
///   (refused there) would later be taken for a position on the new bus
///   and skip its first sequences;
/// - a checkpoint and the segment it was recorded on: Ok if that is the
///   segment now, else an error naming the checkpoint, both segments and
///   how to start over;
/// - a checkpoint with no recorded segment (written by an older zerocast):
///   records the segment now (it cannot be checked).
///
/// iceoryx2 topics have no zerocast segment: nothing is checked.
///
/// `log_only`: the follower ends within the log in `wal_dir` (see
/// [`log_reaches`]) and never joins the bus. Then a missing segment is not
/// created (that would leave a segment of the topic's size in /dev/shm for
/// nobody), and only a bound log's segment is recorded. Every sequence then comes from the
/// log: a log bound to the segment it was recorded from (its
/// [`LOG_BINDING_FILE`]) is what the checkpoint is held against, so an old
/// log can be read to its end under the follower's own name after a
/// reset; a log with no binding (an older zerocast's) cannot say, and the
/// checkpoint is held against the bus's segment if there is one.
pub fn bind(
    bus: &Bus,
    topic: &str,
    wal_dir: &Path,
    checkpoint_dir: &Path,
    name: &str,
    checkpointed: Option<u64>,
    log_only: bool,
) -> Result<(), String> {
    let config = bus.config().topic(topic).map_err(|e| e.to_string())?;
    if config.transport != Transport::Shm {
        return Ok(());
    }
    // The segment the log was recorded from, if it is bound.
    let logged = read_binding(&wal_dir.join(LOG_BINDING_FILE))?;
    if log_only {
        if let Some(logged) = logged {
            return bind_log_only(wal_dir, checkpoint_dir, name, checkpointed, &logged);
        }
    }
    let Some(now) = identity(bus, topic, !log_only)? else {
        return Ok(());
    };
    let file = path(checkpoint_dir, name);
    let recorded = read_binding(&file)?;
    match (checkpointed, recorded) {
        (Some(_), Some(r)) if r == now => Ok(()),
        (Some(seq), Some(r)) => {
            let checkpoint = checkpoint_dir.join(format!("{name}.ckpt"));
            Err(format!(
                "the bus was reset: checkpoint {} (sequence {seq}) counts in topic {topic}'s \
                 segment created at {} ns (identity {r}, in {}), but the segment now was \
                 created at {} ns (identity {now}) and its sequences restarted at 0; resuming \
                 would skip or mis-order them. To follow the new bus from its start, remove \
                 {} and {} (and the --out file), or follow under another --name",
                checkpoint.display(),
                created(&r),
                file.display(),
                created(&now),
                checkpoint.display(),
                file.display(),
            ))
        }
        // A new checkpoint, or one with no binding (an older zerocast's,
        // which cannot be checked): held from here on against the segment
        // whose sequences it reads first.
        (None, _) | (Some(_), None) => store(&file, logged.as_deref().unwrap_or(&now)),
    }
}

/// [`bind`] for a follower that ends within the log in `wal_dir`, which
/// was recorded from segment `logged`: its checkpoint, if bound, must
/// count in that segment. A checkpoint with no binding yet is bound to
/// the log's segment (only the binding file is written: no segment is
/// created), so that a later run that joins the bus holds it against the
/// segment its sequences count in, never the bus's after a reset.
fn bind_log_only(
    wal_dir: &Path,
    checkpoint_dir: &Path,
    name: &str,
    checkpointed: Option<u64>,
    logged: &str,
) -> Result<(), String> {
    let file = path(checkpoint_dir, name);
    let log = wal_dir.join(LOG_BINDING_FILE);
    match (checkpointed, read_binding(&file)?) {
        (Some(seq), Some(ours)) if ours != logged => Err(format!(
            "checkpoint {} (sequence {seq}) counts in segment {ours} (in {}), but the log in \
             {} was recorded from segment {logged} (in {}): another bus's log, whose \
             sequences are not the checkpoint's. Follow it under another --name, or read it \
             with `zerocast replay`",
            checkpoint_dir.join(format!("{name}.ckpt")).display(),
            file.display(),
            wal_dir.display(),
            log.display(),
        )),
        (_, None) => store(&file, logged),
        _ => Ok(()),
    }
}

/// The most bytes a binding file may hold: an identity is about 40.
const MAX_BINDING_BYTES: u64 = 1024;

/// The segment identity a binding file (`NAME.segment`, a log's
/// [`LOG_BINDING_FILE`]) holds, trimmed; `None` if there is none. Only a
/// regular file of at most [`MAX_BINDING_BYTES`] is read: anything else
/// (a FIFO, whose open would block for a writer; a device; a file grown
/// past the limit) is an error naming the file, never a wait or a match.
fn read_binding(file: &Path) -> Result<Option<String>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut text = String::new();
    let read = std::fs::OpenOptions::new()
        .read(true)
        // Never blocks in the open (a FIFO with no writer would).
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .and_then(|f| {
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            f.take(MAX_BINDING_BYTES + 1).read_to_string(&mut text)
        });
    match read {
        Ok(n) if n as u64 > MAX_BINDING_BYTES => Err(format!(
            "{}: more than {MAX_BINDING_BYTES} bytes, not a segment identity",
            file.display()
        )),
        Ok(_) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

/// The creation time (ns) an identity names: its part before the `-`.
pub(crate) fn created(identity: &str) -> &str {
    identity.split('-').next().unwrap_or("?")
}

/// The identity of `topic`'s segment, in the form of
/// [`crate::batch::segment_identity`] (creation time in ns, creator owner
/// word in hex), opening it, and creating it only if it does not exist and
/// `create` (a create builds a whole segment file under a temporary name
/// first, not worth doing, or possible under a tight file-size limit, when
/// one exists). `None`: no segment, and not created.
fn identity(bus: &Bus, topic: &str, create: bool) -> Result<Option<String>, String> {
    let segment = match bus.open_segment(topic) {
        Ok(segment) => segment,
        Err(zerocast_ipc::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            if !create {
                return Ok(None);
            }
            bus.segment(topic).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(Some(SegmentIdentity::of(&segment).to_string()))
}

/// The file in a topic's WAL directory naming the bus segment whose
/// sequences the log holds (written by the recorder).
pub const LOG_BINDING_FILE: &str = "bus.segment";

/// Binds the WAL in `wal_dir`, whose last sequence is `last` (`None`: an
/// empty log), to `segment`, the topic's segment on the bus, before the
/// recorder writes anything into it: a log counts in the sequences of one
/// segment, and after a bus reset (the segment removed and created again:
/// a reboot clears `/dev/shm`, `stat --remove-stale` removes a stopped
/// bus's) the new segment's sequences restart at 0. A recorder that
/// resumed after `last` there skipped every frame of the new bus up to
/// `last` without a word, then went on logging the new bus's frames as if
/// they followed the old ones.
///
/// - the log is bound to this segment: Ok;
/// - bound to another: an error naming both and how to start over;
/// - not bound (empty, or written by an older zerocast): a log that holds
///   sequences the segment has not reached yet (`last` at or past its
///   head: the same segment's head is past every sequence logged from it),
///   or whose last record was written before the segment was created (the
///   same segment was created before any frame was read from it), is of
///   another segment: the same error; otherwise bound now. (A wall clock
///   stepped back by more than the time between the segment's creation
///   and the log's last record makes the second check refuse a log of the
///   same segment: a refusal that says how to go on, never a skip.)
pub fn bind_log(
    wal_dir: &Path,
    topic: &str,
    segment: &zerocast_ipc::Segment,
    last: Option<u64>,
) -> Result<(), String> {
    let now = SegmentIdentity::of(segment).to_string();
    let file = wal_dir.join(LOG_BINDING_FILE);
    let recorded = read_binding(&file)?;
    let head = segment.ring().head();
    let reset = match (&recorded, last) {
        (Some(r), Some(_)) => *r != now,
        (None, Some(_)) => unbound_log_is_another(newest_record(wal_dir)?, segment),
        (_, None) => false,
    };
    if !reset {
        return if recorded.as_deref() == Some(now.as_str()) {
            Ok(())
        } else {
            store(&file, &now)
        };
    }
    let was = recorded.map_or_else(
        || "another segment (the log predates this check)".to_owned(),
        |r| format!("the segment created at {} ns (identity {r})", created(&r)),
    );
    Err(format!(
        "the bus was reset: the log in {} holds topic {topic}'s sequences up to {} of {was}, \
         but the segment now was created at {} ns (identity {now}) and its sequences \
         restarted at 0 (next {head}); recording after {} would skip the new bus's frames up \
         to there and log the rest as if they followed the old ones. Keep the old log under \
         another WAL root (`mkdir -p {root}.before-reset && mv {} {root}.before-reset/`; \
         `zerocast replay --wal {root}.before-reset --topic {topic}` reads it there) and \
         record again: the log starts anew in {}",
        wal_dir.display(),
        last.unwrap_or(0),
        created(&now),
        last.unwrap_or(0),
        wal_dir.display(),
        wal_dir.display(),
        root = wal_dir.parent().unwrap_or(Path::new(".")).display(),
    ))
}

/// The last record of the WAL in `wal_dir`: the last sequence it covers
/// and when it was written, from the newest file that has a record (a
/// rotation cut short, or a torn tail cut back, can leave the newest
/// empty); `None` for a log with no record.
fn newest_record(wal_dir: &Path) -> Result<Option<(u64, u64)>, String> {
    let files = crate::wal::list_segments(wal_dir).map_err(|e| e.to_string())?;
    for file in files.iter().rev() {
        let last = crate::wal::reader::last_record_of(&file.path).map_err(|e| e.to_string())?;
        if last.is_some() {
            return Ok(last);
        }
    }
    Ok(None)
}

/// Whether a log with no binding (an older zerocast's), whose last record
/// is `newest` ([`newest_record`]), holds another segment's sequences than
/// `segment`'s: it holds sequences the segment has not reached (the same
/// segment's head is past every sequence logged from it), or its last
/// record was written before the segment was created (the same segment
/// exists before anything is logged from it). A wall clock stepped back
/// by more than the time between the two makes the second say yes for the
/// same segment: a refusal that says how to go on, never a skip.
fn unbound_log_is_another(newest: Option<(u64, u64)>, segment: &zerocast_ipc::Segment) -> bool {
    newest.is_some_and(|(last, ts)| {
        last >= segment.ring().head() || segment.header().creation_ns > ts
    })
}

/// Before a reader of the WAL in `wal_dir` goes on from the log's end on
/// the bus (a resumed follower): an error if the recorder bound the log
/// to another segment than `topic`'s on the bus now ([`bind_log`]), or if
/// the reader's own checkpoint is bound to another (`checkpoint`: its
/// `NAME.segment`, see [`bind`]; a follower checks it when it starts, and
/// a long replay of the log may end after a reset). After a bus reset the
/// new bus's sequences restart at 0, and a reader that joined it after the
/// old log's end skipped its frames up to there without a word. A log with
/// no binding (an older zerocast's) is judged as the recorder judges it
/// ([`bind_log`]); a reader without a checkpoint binding has only the
/// log's checked. An iceoryx2 topic is not checked, nor a reader with no
/// log (an empty `wal_dir`).
///
/// Returns the segment checked, if any: the caller holds it until its
/// subscriber has joined, so that the segment it joins is the one checked
/// (a mapped segment is never removed: see `zerocast_ipc::segment::remove_unused`).
pub fn check_log(
    bus: &Bus,
    topic: &str,
    wal_dir: &Path,
    checkpoint: Option<&Path>,
) -> Result<Option<std::sync::Arc<zerocast_ipc::Segment>>, String> {
    let config = bus.config().topic(topic).map_err(|e| e.to_string())?;
    if config.transport != Transport::Shm || wal_dir.as_os_str().is_empty() {
        return Ok(None);
    }
    let log = wal_dir.join(LOG_BINDING_FILE);
    let mut bindings = Vec::new();
    for file in std::iter::once(log.as_path()).chain(checkpoint) {
        if let Some(recorded) = read_binding(file)? {
            bindings.push((file, recorded));
        }
    }
    // A log with no binding (an older zerocast's) is judged as the
    // recorder judges it (`bind_log`): after a reset the recorder refuses
    // it and binds nothing, and a reader must not go on from its end.
    let unbound = if bindings.first().is_some_and(|(f, _)| *f == log.as_path()) {
        None
    } else {
        newest_record(wal_dir)?
    };
    if bindings.is_empty() && unbound.is_none() {
        return Ok(None);
    }
    let segment = bus.segment(topic).map_err(|e| e.to_string())?;
    let now = SegmentIdentity::of(&segment).to_string();
    let Some((file, recorded)) = bindings.into_iter().find(|(_, r)| *r != now) else {
        if unbound_log_is_another(unbound, &segment) {
            return Err(format!(
                "the bus was reset: the log in {} (written before logs were bound to their bus \
                 segment) holds topic {topic}'s sequences of another segment than the bus's now \
                 ({now}, whose sequences restarted at 0); going on from the log's end on it would \
                 skip its frames up to there. The old log stays readable with `zerocast replay \
                 --from SEQ`; follow the new bus with a new log (see `zerocast record`'s error \
                 after a reset)",
                wal_dir.display(),
            ));
        }
        return Ok(Some(segment));
    };
    let what = if file == log.as_path() {
        format!("the log in {} was recorded from", wal_dir.display())
    } else {
        "this reader's checkpoint counts in".to_owned()
    };
    Err(format!(
        "the bus was reset: {what} topic {topic}'s segment {recorded} (in {}), but the \
         segment now is {now}, whose sequences restarted at 0; going on from the log's end \
         on it would skip its frames up to there. The rest of the old log stays readable with \
         `zerocast replay --from SEQ`; follow the new bus with a new log (see `zerocast \
         record`'s error after a reset)",
        file.display(),
    ))
}

/// Whether the WAL in `wal_dir` (one topic's directory) already holds
/// sequence `seq`: a follower that stops there never joins the bus. Reads
/// the newest file that has a record ([`newest_record`]): a rotation cut
/// short leaves an empty newest file, and the log still reaches what the
/// file before it holds. False when it cannot tell (no log, no record, an
/// unreadable file).
pub fn log_reaches(wal_dir: &Path, seq: u64) -> bool {
    newest_record(wal_dir).is_ok_and(|r| r.is_some_and(|(last, _)| last >= seq))
}

/// Writes `identity` to `file` atomically (as checkpoints are written:
/// [`crate::wal::write_file_atomically`], mode 0600), creating its
/// directory.
fn store(file: &Path, identity: &str) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: create directory: {e}", dir.display()))?;
    crate::wal::write_file_atomically(
        &file.with_extension("segment.tmp"),
        file,
        format!("{identity}\n").as_bytes(),
        crate::wal::CHECKPOINT_MODE,
    )
    .map_err(|e| e.to_string())
}

/// The identity of a topic's segment: its creation time and its creator's
/// owner word. A segment removed and created again (a bus reset, which
/// restarts the sequences at 0) has another. Written as
/// `CREATION_NS-CREATOR`, the creator in hex (checkpoint bindings, sinks,
/// the bridge's origin record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentIdentity {
    /// The segment's creation time, ns since the Unix epoch.
    pub creation_ns: u64,
    /// Its creator's owner word.
    pub creator: u64,
}

impl SegmentIdentity {
    /// The identity of `segment`.
    pub fn of(segment: &zerocast_ipc::Segment) -> Self {
        let h = segment.header();
        Self {
            creation_ns: h.creation_ns,
            creator: h.creator,
        }
    }
}

impl std::fmt::Display for SegmentIdentity {
    /// `CREATION_NS-CREATOR`, the creator in hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:016x}", self.creation_ns, self.creator)
    }
}

impl std::str::FromStr for SegmentIdentity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad segment identity {s:?}: expected CREATION_NS-CREATOR(hex)");
        let (c, o) = s.trim().split_once('-').ok_or_else(bad)?;
        Ok(Self {
            creation_ns: c.parse().map_err(|_| bad())?,
            creator: u64::from_str_radix(o, 16).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    /// Review finding: a FIFO at a binding file's path blocked the open
    /// for ever (a follow, a recorder or a reader hung), and a file padded
    /// with whitespace past 1 KiB was read as its first identity.
    #[test]
    fn regression_a_fifo_or_an_oversized_binding_file_hung_or_matched() {
        let dir = std::env::temp_dir().join(format!("zc-binding-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.segment");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(super::read_binding(&f)).ok());
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO binding file blocked");
        assert!(got.is_err_and(|e| e.contains("fifo.segment")));
        let big = dir.join("big.segment");
        let mut text = "123-abc\n".to_string();
        text.push_str(&" ".repeat(1100));
        text.push_str("tail");
        std::fs::write(&big, text).unwrap();
        assert!(super::read_binding(&big).is_err_and(|e| e.contains("more than")));
        let ok = dir.join("ok.segment");
        std::fs::write(&ok, "123-abc\n").unwrap();
        assert_eq!(super::read_binding(&ok), Ok(Some("123-abc".into())));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Review finding: `log_reaches` looked at the newest WAL file only,
    /// so after a rotation cut short (the next file created, nothing in
    /// it yet) a `follow --until` inside the log was taken for one past
    /// its end: after a bus reset such a follower was refused instead of
    /// finishing the old log.
    #[test]
    fn regression_log_reaches_missed_the_log_behind_an_empty_newest_file() {
        use crate::wal::{segment_name, FsyncPolicy, Wal, WalOptions};
        use zerocast_core::frame::{encode, FrameBuf};
        let dir = std::env::temp_dir().join(format!("zc-reaches-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = WalOptions {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        };
        let (mut wal, _) = Wal::open(&dir, "trades", opts).unwrap();
        let mut feed = crate::feed::Feed::new(4, 7);
        for seq in 0..10 {
            let mut buf = FrameBuf::default();
            let words = encode(&feed.trade(), 1, 2, &mut buf.0).unwrap();
            buf.0[0] = seq;
            wal.append(seq, 0, &buf.bytes()[..words * 8]).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        assert!(super::log_reaches(&dir, 9));
        assert!(!super::log_reaches(&dir, 10));
        // The rotation cut short: the next file exists, empty.
        std::fs::write(dir.join(segment_name(10)), b"").unwrap();
        assert!(
            super::log_reaches(&dir, 9),
            "an empty newest file hid the log's sequences 0..=9"
        );
        assert!(!super::log_reaches(&dir, 10));
        std::fs::remove_dir_all(&dir).ok();
    }
}
