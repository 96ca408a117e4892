//! The recorder: a gating subscriber that writes a topic to its WAL.
//!
//! It holds its gating position until the frames it read are written to the
//! WAL file, then releases them. So a frame is always either still in the
//! ring or already readable from the WAL: nothing published is lost while the
//! recorder keeps up, and when it cannot, the publishers' gating policy (wait
//! or fail) decides, not the recorder.

use std::path::Path;
use std::time::Duration;

use zerocast_ipc::layout::now_ns;
use zerocast_ipc::{Bus, RecvError, Start, SubscriberOptions, WaitStrategy};

use crate::wal::{Recovery, Wal, WalError, WalOptions};

/// Counts of a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Frames written.
    pub frames: u64,
    /// Lost markers written (sequences the bus declared lost).
    pub lost: u64,
    /// Sequences the recorder itself missed (it was lapped: only possible if
    /// its gating slot was reclaimed); written as lost markers and reported.
    pub missed: u64,
}

/// Length of the frame at the start of a slot's bytes (header + body).
pub fn frame_len(bytes: &[u8]) -> usize {
    let body = u16::from_le_bytes([bytes[22], bytes[23]]) as usize;
    (zerocast_core::frame::HEADER_LEN + body).min(bytes.len())
}

/// Why recording stopped.
#[derive(Debug)]
pub enum RecordError {
    /// The bus refused.
    Bus(zerocast_ipc::Error),
    /// The WAL refused (e.g. a full disk).
    Wal(WalError),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bus(e) => write!(f, "{e}"),
            Self::Wal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Opens the WAL of `topic` under `wal_root/<topic>`.
pub fn open_wal(
    wal_root: &Path,
    topic: &str,
    options: WalOptions,
) -> Result<(Wal, Recovery), WalError> {
    Wal::open(&wal_root.join(topic), topic, options)
}

/// Records `topic` into `wal` until `stop()` returns true. Starts after the
/// WAL's last sequence if the ring still holds it, else at the oldest frame
/// in the ring.
pub fn record(
    bus: &Bus,
    topic: &str,
    wal: &mut Wal,
    stop: impl Fn() -> bool,
) -> Result<RecorderStats, RecordError> {
    let start = match wal.last_seq() {
        Some(last) => Start::At(last + 1),
        None => Start::Oldest,
    };
    let mut sub = bus
        .subscriber(
            topic,
            SubscriberOptions {
                name: format!("recorder-{topic}"),
                start,
                gating: true,
                durable: true,
                manual_release: true,
                wait: WaitStrategy::Blocking { spins: 1_000 },
                ..Default::default()
            },
        )
        .map_err(RecordError::Bus)?;
    let mut stats = RecorderStats::default();
    let mut expected = wal.last_seq().map(|s| s + 1);
    while !stop() {
        let now = now_ns();
        let mut failed = None;
        let batch = sub.recv_batch(4096, |f| {
            if failed.is_some() {
                return;
            }
            if let Err(e) = wal.append(f.seq, now, &f.bytes[..frame_len(f.bytes)]) {
                failed = Some(e);
            }
            expected = Some(f.seq + 1);
        });
        if let Some(e) = failed {
            return Err(RecordError::Wal(e));
        }
        match batch {
            Ok(n) => stats.frames += n as u64,
            Err(RecvError::Lost(seq)) => {
                wal.append_lost(seq, now).map_err(RecordError::Wal)?;
                stats.lost += 1;
                expected = Some(seq + 1);
            }
            Err(RecvError::Lagged(n)) => {
                // Only if our gating slot was taken from us (a supervisor
                // thought we were dead). Keep the log honest: mark the hole.
                let from = expected.unwrap_or(0);
                tracing::error!(
                    topic,
                    from,
                    count = n,
                    "recorder was lapped: {n} frames are not in the WAL"
                );
                for seq in from..from + n {
                    wal.append_lost(seq, now).map_err(RecordError::Wal)?;
                }
                stats.missed += n;
                expected = Some(from + n);
            }
            Err(RecvError::Empty) => {
                wal.flush().map_err(RecordError::Wal)?;
                sub.release();
                wal.tick().map_err(RecordError::Wal)?;
                match sub.recv_timeout(Duration::from_millis(5)) {
                    Ok(f) => {
                        let (seq, len) = (f.seq, frame_len(f.bytes));
                        wal.append(seq, now_ns(), &f.bytes[..len])
                            .map_err(RecordError::Wal)?;
                        stats.frames += 1;
                        expected = Some(seq + 1);
                    }
                    Err(RecvError::Lost(seq)) => {
                        wal.append_lost(seq, now_ns()).map_err(RecordError::Wal)?;
                        stats.lost += 1;
                        expected = Some(seq + 1);
                    }
                    Err(RecvError::Lagged(n)) => {
                        let from = expected.unwrap_or(0);
                        for seq in from..from + n {
                            wal.append_lost(seq, now_ns()).map_err(RecordError::Wal)?;
                        }
                        stats.missed += n;
                        expected = Some(from + n);
                    }
                    Err(RecvError::Empty) => {}
                }
                continue;
            }
        }
        // Written to the file, then released: a frame leaves the ring only
        // once it can be read from the WAL.
        wal.flush().map_err(RecordError::Wal)?;
        sub.release();
    }
    wal.sync().map_err(RecordError::Wal)?;
    sub.release();
    Ok(stats)
}
