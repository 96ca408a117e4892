//! The ack channel of a topic: subscribers push cumulative acks into an
//! `mpmc` ring in its own shared-memory file (`zerocast-acks.<ns>.<topic>`),
//! and a reliable publisher drains them. Separate from the topic segment, so
//! the ordinary publish path never touches it.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use zerocast_core::mpmc::{Mpmc, MpmcHeader, MpmcSlot, PushError};
use zerocast_core::storage::Raw;

use crate::error::{io, Error, Result};

/// One cumulative ack: `subscriber` has processed every sequence up to and
/// including `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct AckEntry {
    /// Highest sequence processed.
    pub seq: u64,
    /// Subscriber id, NUL-padded.
    pub subscriber: [u8; 16],
}

const ACK_MAGIC: u64 = u64::from_le_bytes(*b"ZCACKS01");
/// Acks the channel holds before `ack` reports it full.
pub const ACK_CAPACITY: u64 = 4096;
const HEADER: usize = 128;

type AckRing = Mpmc<AckEntry, Raw<MpmcHeader, MpmcSlot<AckEntry>>>;

fn region_size() -> usize {
    Raw::<MpmcHeader, MpmcSlot<AckEntry>>::region_size(ACK_CAPACITY as usize)
}

/// A topic's ack channel.
pub struct AckChannel {
    ring: AckRing,
    path: PathBuf,
    // Last: the ring points into it.
    _map: MmapMut,
}

impl std::fmt::Debug for AckChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckChannel")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AckChannel {
    /// Opens the channel at `path`, creating it (fully built, then published
    /// with `link()`) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        match Self::open(path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let tmp = crate::segment::init_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "create ack channel"))?;
        file.set_len((HEADER + region_size()) as u64)
            .map_err(io(&tmp, "size ack channel"))?;
        // SAFETY: our fresh file, accessed only through atomics once shared.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(&tmp, "map ack channel"))?;
        let ring = Self::ring(&mut map, path, true)?;
        // SAFETY: the map is at least HEADER bytes, page-aligned.
        let magic = unsafe { &*map.as_ptr().cast::<AtomicU64>() };
        // Release: pairs with the Acquire load in `open`; publishes the ring.
        magic.store(ACK_MAGIC, Ordering::Release);
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Self {
                ring,
                path: path.to_owned(),
                _map: map,
            }),
            // Someone else published theirs first: use it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::open(path),
            Err(e) => Err(io(path, "publish ack channel")(e)),
        }
    }

    fn ring(map: &mut MmapMut, path: &Path, init: bool) -> Result<AckRing> {
        // SAFETY: the region lies inside the mapping, which the channel keeps
        // alive as long as the ring; it holds atomics and plain-data slots
        // accessed only through the mpmc protocol.
        let raw = unsafe {
            Raw::from_region(
                map.as_mut_ptr().add(HEADER),
                map.len() - HEADER,
                ACK_CAPACITY as usize,
            )
        }
        .map_err(|_| Error::Truncated {
            path: path.to_owned(),
            size: map.len() as u64,
            needed: (HEADER + region_size()) as u64,
        })?;
        let ring = if init {
            Mpmc::init(raw)
        } else {
            Mpmc::attach(raw)
        };
        ring.map_err(|source| Error::Ring {
            path: path.to_owned(),
            source,
        })
    }

    /// Opens an existing channel.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path, "open ack channel"))?;
        let len = file.metadata().map_err(io(path, "stat ack channel"))?.len();
        if len < (HEADER + region_size()) as u64 {
            return Err(Error::Truncated {
                path: path.to_owned(),
                size: len,
                needed: (HEADER + region_size()) as u64,
            });
        }
        // SAFETY: as in `open_or_create`.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "map ack channel"))?;
        // SAFETY: at least HEADER bytes, page-aligned.
        let magic = unsafe { &*map.as_ptr().cast::<AtomicU64>() };
        // Acquire: pairs with the Release store of the creator.
        let found = magic.load(Ordering::Acquire);
        if found != ACK_MAGIC {
            return Err(Error::NotZerocast {
                path: path.to_owned(),
                found_magic: found,
            });
        }
        let ring = Self::ring(&mut map, path, false)?;
        Ok(Self {
            ring,
            path: path.to_owned(),
            _map: map,
        })
    }

    /// Pushes a cumulative ack. If the channel stays full for `wait`, the ack
    /// is dropped and `false` returned: acks are cumulative, so the next one
    /// covers it.
    pub fn ack(&self, subscriber: [u8; 16], seq: u64, wait: Duration) -> bool {
        let entry = AckEntry { seq, subscriber };
        let deadline = Instant::now() + wait;
        loop {
            match self.ring.push(entry) {
                Ok(()) => return true,
                Err(PushError::Full(_)) if Instant::now() < deadline => std::thread::yield_now(),
                Err(PushError::Full(_)) => return false,
            }
        }
    }

    /// Calls `f` for every ack waiting in the channel.
    pub fn drain(&self, mut f: impl FnMut(AckEntry)) -> usize {
        let mut n = 0;
        while let Ok(entry) = self.ring.pop() {
            f(entry);
            n += 1;
        }
        n
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_two_threads_creating_one_ack_channel_share_it() {
        // Both creators used the same temporary name (the pid) and removed
        // it before creating theirs, so one could unlink the other's
        // half-built file and publish it: the two ends then held different
        // rings and every ack was lost.
        let dir = std::env::temp_dir().join(format!("zerocast-acks-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..300u64 {
            let path = dir.join(format!("acks-{i}"));
            let start = std::sync::Barrier::new(2);
            let open = || {
                start.wait();
                AckChannel::open_or_create(&path).unwrap()
            };
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(open);
                let b = s.spawn(open);
                (a.join().unwrap(), b.join().unwrap())
            });
            assert!(a.ack([1; 16], i, Duration::ZERO));
            let mut seen = Vec::new();
            b.drain(|e| seen.push(e.seq));
            assert_eq!(seen, [i], "round {i}: the two ends hold different rings");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
