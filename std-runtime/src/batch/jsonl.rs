//! The JSON-lines sink: one object per line, appended batch by batch, the
//! file fdatasynced after each batch.
//!
//! Lines: a frame as `zerocast sub --json` prints it (`seq`, `kind`,
//! `publish_ns`, `publisher_id`, every body field); `{"seq":S,"event":"lost"}`;
//! `{"seq":S,"event":"invalid"}`; `{"event":"missing","from":A,"to":B}`.
//!
//! Its position is the file itself: the sequence of the last complete line
//! (`to` for a missing range). A process killed mid-batch leaves complete
//! lines, which count as written, and perhaps a partial last line, which
//! [`JsonlSink::open`] cuts off; the restart resumes after the last
//! complete line, so every sequence is in the file once.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::json;

/// How long opening waits for the file's lock before it reports another
/// batcher.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

use super::{Batch, Sink, SinkError};
use crate::print::frame_json;
use crate::resume::Event;

/// The JSON-lines sink. See the module docs for the format.
#[derive(Debug)]
pub struct JsonlSink {
    file: File,
    path: PathBuf,
    label: String,
    /// Bytes of complete, synced lines.
    len: u64,
    committed: Option<u64>,
    buf: Vec<u8>,
}

/// The sequence a line records as written (`to` for a missing range).
fn line_seq(line: &[u8]) -> Result<u64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("last line is not JSON: {e}"))?;
    v.get("to")
        .or_else(|| v.get("seq"))
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "last line has no \"seq\" (not written by zerocast batch?)".to_owned())
}

impl JsonlSink {
    /// Opens (or creates) `path`: cuts a partial last line, and reads the
    /// position from the last complete one.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let label = format!("jsonl:{}", path.display());
        let io = |action: &'static str| {
            let label = label.clone();
            move |e: std::io::Error| SinkError::new(label, action, e)
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(io("open"))?;
        // One writer per file: a second batcher appending to it would
        // interleave lines. The kernel drops the lock when the process
        // dies, so a killed batcher never blocks its restart.
        // The lock belongs to the open file, which a child forked by
        // another thread of a process that held it (any `Command::spawn`)
        // shares until its exec: a lock still held is tried again for
        // `LOCK_WAIT`, so a reopen right after a close is not refused.
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock || start.elapsed() >= LOCK_WAIT {
                return Err(SinkError::new(
                    label,
                    "lock",
                    format!("{e} (another batcher writes this file)"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
        let size = file.metadata().map_err(io("stat"))?.len();
        // Find the last two newlines from the end, a chunk at a time.
        let mut end_of_complete = 0u64; // bytes up to and including the last '\n'
        let mut last_line: Vec<u8> = Vec::new();
        let mut pos = size;
        let mut tail: Vec<u8> = Vec::new(); // bytes from `pos` to `size`
        let chunk = 64 * 1024u64;
        'scan: while pos > 0 {
            let start = pos.saturating_sub(chunk);
            let mut piece = vec![0u8; (pos - start) as usize];
            file.read_exact_at(&mut piece, start).map_err(io("read"))?;
            piece.extend_from_slice(&tail);
            tail = piece;
            pos = start;
            let newlines: Vec<usize> = tail
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i)
                .collect();
            match newlines.as_slice() {
                [] => {}
                [only] if pos > 0 => {
                    // The line before it starts in an earlier chunk.
                    let _ = only;
                }
                [.., prev, last] => {
                    end_of_complete = pos + *last as u64 + 1;
                    last_line = tail[prev + 1..*last].to_vec();
                    break 'scan;
                }
                [only] => {
                    end_of_complete = pos + *only as u64 + 1;
                    last_line = tail[..*only].to_vec();
                    break 'scan;
                }
            }
        }
        let committed = if end_of_complete == 0 {
            None
        } else {
            Some(
                line_seq(&last_line)
                    .map_err(|e| SinkError::new(label.clone(), "read position", e))?,
            )
        };
        if end_of_complete < size {
            // A partial line from a batch cut short: not written.
            file.set_len(end_of_complete)
                .map_err(io("cut a partial last line"))?;
            file.sync_data().map_err(io("fdatasync"))?;
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            label,
            len: end_of_complete,
            committed,
            buf: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn encode(&mut self, batch: &Batch) {
        self.buf.clear();
        for event in batch.events() {
            let line = match event {
                Event::Frame { seq, bytes } => frame_json(seq, bytes).unwrap_or_else(
                    |e| json!({"seq": seq, "event": "invalid", "error": e.to_string()}),
                ),
                Event::Invalid { seq, .. } => json!({"seq": seq, "event": "invalid"}),
                Event::Lost(seq) => json!({"seq": seq, "event": "lost"}),
                Event::Missing { from, to } => json!({"event": "missing", "from": from, "to": to}),
            };
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.buf, &line);
            self.buf.push(b'\n');
        }
    }
}

impl Sink for JsonlSink {
    fn committed(&mut self) -> Result<Option<u64>, SinkError> {
        Ok(self.committed)
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first_seq(), batch.last_seq()) else {
            return Ok(());
        };
        self.encode(batch);
        let written = self
            .file
            .write_all_at(&self.buf, self.len)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Take back what reached the file: the position stays at the
            // last batch (if even this fails, the next open cuts a partial
            // line, and complete lines stand as written).
            let _ = self.file.set_len(self.len);
            return Err(SinkError::new(
                self.label.clone(),
                format!("write batch {first} to {last}"),
                e,
            ));
        }
        self.len += self.buf.len() as u64;
        self.committed = Some(last);
        Ok(())
    }
}
