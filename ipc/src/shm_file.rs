//! The small private shared-memory files beside the topic segments (the ack
//! channels, the counters table): one way to build, publish and open them,
//! so a fix to one (pages reserved at creation, links refused at open) is a
//! fix to all.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use memmap2::MmapMut;

use crate::error::{io, Error, Result};

/// How long [`wait_shared`] waits for a process that holds a file's lock
/// exclusively: a removal's check or a pid-namespace takeover holds it for
/// microseconds, so a longer hold is a stopped or hostile process, and no
/// open or claim may hang on it.
pub(crate) const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// `flock(operation)` on `file`, retried on `EINTR`.
pub(crate) fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    loop {
        // SAFETY: flock on a descriptor the caller owns; no memory is
        // passed.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes `file`'s shared `flock`, waiting at most [`LOCK_PATIENCE`] for a
/// process that holds it exclusively (`WouldBlock` if it still does).
pub(crate) fn wait_shared(file: &File) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match flock(file, libc::LOCK_SH | libc::LOCK_NB) {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            done => return done,
        }
    }
}

/// Whether `path` still names `file` (same device and inode). An opener
/// asks once it holds the file's shared lock: a remover
/// ([`remove_unused`]) unlinks a file only while it holds the lock
/// exclusively, so a file still linked then stays linked for as long as
/// the opener holds its lock, and one that is not was removed (or
/// replaced) between the opener's `open` and its lock, and must be opened
/// again by name: used, it would be a file nobody else can open.
pub(crate) fn still_linked(file: &File, path: &Path) -> bool {
    let Ok(ours) = file.metadata() else {
        return false;
    };
    std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev())
}

/// Whether a process maps the shared file at `path` (holds its lock): an
/// exclusive try, let go at once. `NotFound` if there is none.
pub fn in_use(path: &Path) -> std::io::Result<bool> {
    let file = open_to_lock(path)?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        // The lock goes with the descriptor, at once.
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

/// Opens `path` for its lock only: no link followed, never blocking (a
/// FIFO put under the name would block a plain open), and only a regular
/// file (anything else is `InvalidInput`, naming what it is).
fn open_to_lock(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({kind:?}): not a zerocast file"),
        ));
    }
    Ok(file)
}

/// What [`remove_unused`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Every file named was removed (those that existed).
    Removed,
    /// A process maps the file at this index of the paths given (it holds
    /// its lock): nothing was removed.
    InUse(usize),
    /// The first file is gone, or was replaced since the caller looked:
    /// nothing was removed.
    Gone,
}

/// Removes the shared files `paths` (a segment and its ack channel) only if
/// no process maps any of them: each is locked exclusively without waiting
/// (every process that maps one holds its shared lock, from before its
/// name exists to its unmapping; the kernel drops a dead process's), and
/// all are unlinked while those locks are held. A process that opened one
/// by name before and locks it after finds it unlinked and opens the name
/// again (it checks, once it holds the lock, that the name still names its file), so nobody is left publishing into, or
/// reading, a file that has no name. Files after the first that do not
/// exist are skipped. The caller must not map any of them itself (its own
/// lock would make them in use).
///
/// `first_is`: the (device, inode) of the file the caller judged
/// ([`Segment::file_id`](crate::Segment::file_id)); a different file under
/// the first name (replaced since) is [`Removal::Gone`], never removed.
pub fn remove_unused(paths: &[&Path], first_is: Option<(u64, u64)>) -> Result<Removal> {
    let mut held = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let file = match open_to_lock(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if i == 0 {
                    return Ok(Removal::Gone);
                }
                continue;
            }
            Err(e) => return Err(io(path, "open the file to remove it")(e)),
        };
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Removal::InUse(i)),
            Err(e) => return Err(io(path, "lock the file to remove it")(e)),
        }
        if !still_linked(&file, path) {
            if i == 0 {
                return Ok(Removal::Gone);
            }
            continue;
        }
        if i == 0 && first_is.is_some() {
            let m = file
                .metadata()
                .map_err(io(path, "stat the file to remove it"))?;
            if first_is != Some((m.dev(), m.ino())) {
                return Ok(Removal::Gone);
            }
        }
        held.push((path, file));
    }
    for (path, _locked) in &held {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(path, "remove the file")(e)),
        }
    }
    // The locks go with the descriptors, after every unlink.
    drop(held);
    Ok(Removal::Removed)
}

/// Creates `tmp` (mode 0600, never an existing file), reserves `len` bytes
/// of memory for it and maps it; `what` names the file in errors. On any
/// error `tmp` is removed. The file's shared `flock` is taken first thing
/// (see `segment::join_pid_namespace`), so that from its creation on a
/// process looking for abandoned half-built files sees it held.
///
/// `posix_fallocate` rather than `ftruncate`, as for segments: on tmpfs it
/// reserves the pages now, so a full `/dev/shm` is an error here instead of
/// a SIGBUS at some process's first store into the mapping.
pub(crate) fn create(tmp: &Path, len: usize, what: &'static str) -> Result<(File, MmapMut)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io(tmp, what))?;
    if let Err(e) = crate::segment::lock_shared(&file, tmp) {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    // SAFETY: plain syscall on a descriptor we own; no memory passed.
    let rc = unsafe {
        libc::posix_fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            len as libc::off_t,
        )
    };
    let built = if rc == 0 {
        Ok(())
    } else {
        Err(io(tmp, what)(std::io::Error::from_raw_os_error(rc)))
    }
    .and_then(|()| {
        // SAFETY: our fresh file, accessed only through atomics once shared.
        unsafe { MmapMut::map_mut(&file) }.map_err(io(tmp, what))
    });
    match built {
        Ok(map) => Ok((file, map)),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Publishes the fully built `tmp` under `path` with `link()` and removes
/// `tmp`: `Ok(true)` if ours is now the file, `Ok(false)` if another
/// process published one first (open that one instead).
pub(crate) fn publish(tmp: &Path, path: &Path, what: &'static str) -> Result<bool> {
    let linked = std::fs::hard_link(tmp, path);
    let _ = std::fs::remove_file(tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path, what)(e)),
    }
}

/// Opens the existing file at `path` for reading and writing and checks
/// that it is this user's and that no one else may read or write it.
/// `O_NOFOLLOW`, as for segments: a symbolic link is refused (ELOOP), not
/// followed to whatever file it names. `bad` turns a problem into the
/// caller's error, `access` says what others could do with it ("write
/// acks"); an `open` error is [`Error::Io`] (NotFound included, which
/// `open_or_create` callers rely on).
pub(crate) fn open_private(
    path: &Path,
    what: &'static str,
    access: &str,
    bad: impl Fn(String) -> Error,
) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path, what))?;
    let meta = file.metadata().map_err(io(path, what))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(bad(format!(
            "owned by uid {}, not by this user (uid {me}); another user's {what} is not trusted",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o} lets group or others {access}; expected 600",
            meta.mode() & 0o777
        )));
    }
    Ok(file)
}
