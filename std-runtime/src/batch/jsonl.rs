//! The JSON-lines sink: one object per line, appended batch by batch, the
//! file fdatasynced after each batch.
//!
//! Lines: a frame as `zerocast sub --json` prints it (`seq`, `kind`,
//! `publish_ns`, `publisher_id`, every body field); `{"seq":S,"event":"lost"}`;
//! `{"seq":S,"event":"invalid"}`; `{"event":"missing","from":A,"to":B}`.
//!
//! The first line is a header naming the stream and the bus segment:
//! `{"zerocast":"batch","topic":T,"name":N,"segment":S}`. Opening a file
//! whose header names another stream, or (in the batcher) another segment
//! (the bus was reset), is refused; a file without one is not ours and is
//! never written to or cut.
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
    topic: String,
    name: String,
    /// The file's header (None until it is written).
    header: Option<Header>,
}

/// How a file starts: the header's first bytes.
const HEADER_START: &str = "{\"zerocast\":\"batch\"";

/// The longest line the sink reads back (a header, or the last line).
const MAX_LINE: u64 = 1 << 20;

/// The first line of a file:
/// `{"zerocast":"batch","topic":T,"name":N,"segment":S}` (`segment`: the
/// identity of the bus segment its sequences came from, see
/// [`super::segment_identity`]; null if unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    topic: String,
    name: String,
    segment: Option<String>,
}

fn parse_header(line: &[u8]) -> Result<Header, String> {
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|_| "its first line is not a zerocast batch header".to_owned())?;
    let field = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (field("zerocast").as_deref(), field("topic"), field("name")) {
        (Some("batch"), Some(topic), Some(name)) => Ok(Header {
            topic,
            name,
            segment: field("segment"),
        }),
        _ => Err("its first line is not a zerocast batch header".to_owned()),
    }
}

fn header_line(h: &Header) -> Vec<u8> {
    let mut line = serde_json::to_vec(
        &json!({"zerocast": "batch", "topic": h.topic, "name": h.name, "segment": h.segment}),
    )
    .unwrap_or_default();
    line.push(b'\n');
    line
}

/// The sequence a line records as written (`to` for a missing range).
fn line_seq(line: &[u8]) -> Result<u64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("last line is not JSON: {e}"))?;
    let seq = v
        .get("to")
        .or_else(|| v.get("seq"))
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "last line has no \"seq\" (not written by zerocast batch?)".to_owned())?;
    // No bus hands out a sequence past MAX_SEQ: such a line was damaged or
    // edited, and the position after it would not exist (u64::MAX wrapped
    // to 0, and the batcher batched the whole topic again).
    if seq > crate::wal::format::MAX_SEQ {
        return Err(format!(
            "last line's sequence {seq} is past the largest a bus hands out ({})",
            crate::wal::format::MAX_SEQ
        ));
    }
    Ok(seq)
}

impl JsonlSink {
    /// Opens (or creates) `path` for `topic`'s stream `name`: checks the
    /// header line, cuts a partial last line, and reads the position from
    /// the last complete one. A file that is not ours (no header), or that
    /// holds another stream, is refused and left as it is.
    pub fn open(path: &Path, topic: &str, name: &str) -> Result<Self, SinkError> {
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
        let refuse = |why: String| {
            SinkError::new(
                label.clone(),
                "open",
                format!("{why}; not a file zerocast batch wrote, so it is left as it is (use another file)"),
            )
        };
        // The first line: the header naming the stream. A file that does
        // not start with one is not ours, and no byte of it is cut.
        let mut header = None;
        let mut header_end = 0u64;
        if size > 0 {
            let mut head = vec![0u8; size.min(MAX_LINE) as usize];
            file.read_exact_at(&mut head, 0).map_err(io("read"))?;
            match head.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    header = Some(parse_header(&head[..i]).map_err(refuse)?);
                    header_end = i as u64 + 1;
                }
                None => {
                    // A header cut short by a kill while the file was
                    // created: nothing else was written after it.
                    // Only a file that starts as ours is cut.
                    if size >= MAX_LINE || !head.starts_with(HEADER_START.as_bytes()) {
                        return Err(refuse(
                            "its first line is not a zerocast batch header".to_owned(),
                        ));
                    }
                }
            }
        }
        if let Some(h) = &header {
            if h.topic != topic || h.name != name {
                return Err(SinkError::new(
                    label.clone(),
                    "open",
                    format!(
                        "the file holds topic {:?} name {:?}, not topic {topic:?} name {name:?}; \
                         a file holds one stream (use another file)",
                        h.topic, h.name
                    ),
                ));
            }
        }
        // The last complete line after the header, from at most the last
        // MAX_LINE bytes (read once: no rescans).
        let mut end_of_complete = header_end;
        let mut committed = None;
        if size > header_end {
            let from = header_end.max(size - MAX_LINE.min(size));
            let mut tail = vec![0u8; (size - from) as usize];
            file.read_exact_at(&mut tail, from).map_err(io("read"))?;
            if let Some(last) = tail.iter().rposition(|&b| b == b'\n') {
                let line_start = match tail[..last].iter().rposition(|&b| b == b'\n') {
                    Some(prev) => prev + 1,
                    None if from == header_end => 0,
                    None => {
                        return Err(refuse(format!(
                            "its last line is longer than {MAX_LINE} bytes"
                        )))
                    }
                };
                committed = Some(line_seq(&tail[line_start..last]).map_err(refuse)?);
                end_of_complete = from + last as u64 + 1;
            } else if from != header_end {
                return Err(refuse(format!(
                    "its last line is longer than {MAX_LINE} bytes"
                )));
            }
        }
        if end_of_complete < size {
            // A partial line from a batch cut short (after the header and
            // a complete line of ours): not written.
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
            topic: topic.to_owned(),
            name: name.to_owned(),
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the header (a new file) and syncs it.
    fn write_header(&mut self, segment: Option<&str>) -> Result<(), SinkError> {
        let h = Header {
            topic: self.topic.clone(),
            name: self.name.clone(),
            segment: segment.map(str::to_owned),
        };
        let line = header_line(&h);
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(&line, 0))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(0);
            return Err(SinkError::new(self.label.clone(), "write the header", e));
        }
        self.len = line.len() as u64;
        self.header = Some(h);
        Ok(())
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

    fn bind_segment(&mut self, segment: &str) -> Result<(), SinkError> {
        match self.header.as_ref().map(|h| h.segment.as_deref()) {
            // A new file, or one with nothing written after its header.
            None => self.write_header(Some(segment)),
            Some(_) if self.committed.is_none() => self.write_header(Some(segment)),
            Some(None) => Ok(()),
            Some(Some(s)) if s == segment => Ok(()),
            Some(Some(s)) => Err(SinkError::new(
                self.label.clone(),
                "open",
                super::reset_message(s, segment),
            )),
        }
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first_seq(), batch.last_seq()) else {
            return Ok(());
        };
        if self.header.is_none() {
            self.write_header(None)?;
        }
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
