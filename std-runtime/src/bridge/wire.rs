//! What one zenoh message of the bridge carries: a version byte, then
//! entries, each a tag byte and little-endian fields.
//!
//! | tag | entry | fields |
//! |---|---|---|
//! | 1 | [`Entry::Frame`] | origin sequence `u64`, length `u16`, the archived frame (header and body) |
//! | 2 | [`Entry::Lost`] | first `u64`, last `u64` (inclusive): sequences the origin lost, or that neither the exporter's ring nor its WAL holds |
//! | 3 | [`Entry::Head`] | `u64`: everything before it was sent (live), or is covered by this reply (query) |
//!
//! A live message holds one or more entries in sequence order; a query
//! reply holds the entries of the range asked for, then one `Head`.
//! Bytes from the network are not trusted: [`decode`] checks every length
//! and names what is wrong; the frames themselves are validated by the
//! importer ([`zerocast_core::frame::FrameRef::parse`]).

/// The version byte of every message.
pub const VERSION: u8 = 1;

const TAG_FRAME: u8 = 1;
const TAG_LOST: u8 = 2;
const TAG_HEAD: u8 = 3;

/// One entry of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A frame with its origin sequence.
    Frame {
        /// Origin topic sequence.
        seq: u64,
        /// The archived frame as the origin ring held it.
        bytes: &'a [u8],
    },
    /// Sequences `from ..= to` are lost at the origin or held by no source.
    Lost {
        /// First lost sequence.
        from: u64,
        /// Last lost sequence.
        to: u64,
    },
    /// Everything before this sequence was sent (or, in a query reply, is
    /// covered by the reply).
    Head(u64),
}

/// A message being built.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Vec<u8>,
    entries: usize,
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

impl Message {
    /// An empty message (just the version byte).
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.push(VERSION);
        Self { buf, entries: 0 }
    }

    /// Appends a frame. Frames are at most a few hundred bytes; a longer
    /// one (more than `u16::MAX`) is cut to that length, and the importer
    /// then finds it invalid.
    pub fn frame(&mut self, seq: u64, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
        self.buf.push(TAG_FRAME);
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf
            .extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(bytes);
        self.entries += 1;
    }

    /// Appends a lost range (`from ..= to`).
    pub fn lost(&mut self, from: u64, to: u64) {
        self.buf.push(TAG_LOST);
        self.buf.extend_from_slice(&from.to_le_bytes());
        self.buf.extend_from_slice(&to.to_le_bytes());
        self.entries += 1;
    }

    /// Appends a head mark.
    pub fn head(&mut self, next: u64) {
        self.buf.push(TAG_HEAD);
        self.buf.extend_from_slice(&next.to_le_bytes());
        self.entries += 1;
    }

    /// Entries appended since the last [`clear`](Self::clear).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no entry was appended.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The encoded message.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the message for reuse.
    pub fn clear(&mut self) {
        self.buf.truncate(1);
        self.entries = 0;
    }
}

/// Reads `N` bytes at `*at`, or says which entry was cut short.
fn take<const N: usize>(bytes: &[u8], at: &mut usize, what: &str) -> Result<[u8; N], String> {
    let end = at.checked_add(N).filter(|&e| e <= bytes.len());
    let Some(end) = end else {
        return Err(format!(
            "bridge message cut short: {what} at byte {} needs {N} bytes, {} left",
            *at,
            bytes.len().saturating_sub(*at)
        ));
    };
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[*at..end]);
    *at = end;
    Ok(out)
}

/// Decodes a message into its entries, calling `f` for each in order.
/// Stops at the first malformed entry with an error naming it and its
/// offset (entries before it were already handed to `f`).
pub fn decode<'a>(bytes: &'a [u8], mut f: impl FnMut(Entry<'a>)) -> Result<(), String> {
    match bytes.first() {
        None => return Err("empty bridge message (no version byte)".to_owned()),
        Some(&VERSION) => {}
        Some(&v) => {
            return Err(format!(
                "bridge message version {v}, this build speaks version {VERSION}"
            ))
        }
    }
    let mut at = 1;
    while at < bytes.len() {
        let tag = bytes[at];
        let start = at;
        at += 1;
        let entry = match tag {
            TAG_FRAME => {
                let seq = u64::from_le_bytes(take(bytes, &mut at, "frame sequence")?);
                let len = usize::from(u16::from_le_bytes(take(bytes, &mut at, "frame length")?));
                let Some(frame) = bytes.get(at..at + len) else {
                    return Err(format!(
                        "bridge message cut short: frame of sequence {seq} at byte {start} \
                         says {len} bytes, {} left",
                        bytes.len() - at
                    ));
                };
                at += len;
                Entry::Frame { seq, bytes: frame }
            }
            TAG_LOST => {
                let from = u64::from_le_bytes(take(bytes, &mut at, "lost range start")?);
                let to = u64::from_le_bytes(take(bytes, &mut at, "lost range end")?);
                if to < from {
                    return Err(format!(
                        "bridge message: lost range at byte {start} ends ({to}) before it starts ({from})"
                    ));
                }
                Entry::Lost { from, to }
            }
            TAG_HEAD => Entry::Head(u64::from_le_bytes(take(bytes, &mut at, "head")?)),
            t => {
                return Err(format!(
                    "bridge message: unknown entry tag {t} at byte {start}"
                ))
            }
        };
        f(entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Result<Vec<Entry<'_>>, String> {
        let mut v = Vec::new();
        decode(bytes, |e| v.push(e))?;
        Ok(v)
    }

    #[test]
    fn round_trip() {
        let mut m = Message::new();
        m.frame(7, &[1, 2, 3]);
        m.lost(8, 10);
        m.head(11);
        assert_eq!(m.entries(), 3);
        assert_eq!(
            all(m.bytes()).unwrap(),
            vec![
                Entry::Frame {
                    seq: 7,
                    bytes: &[1, 2, 3]
                },
                Entry::Lost { from: 8, to: 10 },
                Entry::Head(11)
            ]
        );
        m.clear();
        assert!(m.is_empty());
        assert_eq!(all(m.bytes()).unwrap(), vec![]);
    }

    #[test]
    fn bad_input_is_named() {
        assert!(all(&[]).unwrap_err().contains("empty"));
        assert!(all(&[9]).unwrap_err().contains("version 9"));
        assert!(all(&[VERSION, 42])
            .unwrap_err()
            .contains("unknown entry tag 42"));
        let mut m = Message::new();
        m.frame(1, &[0; 40]);
        let cut = &m.bytes()[..m.len() - 1];
        assert!(all(cut).unwrap_err().contains("frame of sequence 1"));
        assert!(all(&[VERSION, TAG_HEAD, 0])
            .unwrap_err()
            .contains("head at byte 2"));
        let mut m = Message::new();
        m.lost(5, 4);
        assert!(all(m.bytes())
            .unwrap_err()
            .contains("ends (4) before it starts (5)"));
    }
}
