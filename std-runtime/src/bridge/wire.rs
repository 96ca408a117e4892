//! What one zenoh message of the bridge carries: a version byte, the
//! origin's segment identity ([`Origin`]: its creation time in ns and its
//! creator's owner word, `u64` each, little-endian), then entries, each a
//! tag byte and little-endian fields.
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

/// The version byte of every message. Version 2 added the [`Origin`]
/// after it; a message of another version is refused, naming both.
pub const VERSION: u8 = 2;

/// Bytes before the first entry: the version and the [`Origin`].
const PREFIX: usize = 1 + 16;

/// The identity of the origin topic's segment a message's sequences count
/// in: a topic removed and created again (its sequences restarting at 0)
/// has another. The one segment identity of the runtime.
pub use crate::checkpoint_segment::SegmentIdentity as Origin;

/// The error for a message of another version than [`VERSION`] (`None`
/// for this version, or an empty message): a peer running another
/// zerocast, which no retry mends.
pub fn version_mismatch(bytes: &[u8]) -> Option<String> {
    match bytes.first() {
        Some(&v) if v != VERSION => Some(format!(
            "bridge message version {v}, this build speaks version {VERSION}: run the same \
             zerocast release on both sides of the bridge"
        )),
        _ => None,
    }
}

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

impl Message {
    /// An empty message (just the version and the origin's identity) of
    /// the origin topic's segment `origin`.
    pub fn new(origin: Origin) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.push(VERSION);
        buf.extend_from_slice(&origin.creation_ns.to_le_bytes());
        buf.extend_from_slice(&origin.creator.to_le_bytes());
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
        self.buf.truncate(PREFIX);
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

/// Decodes a message: its origin's identity, and its entries, calling `f`
/// for each in order. Stops at the first malformed entry with an error
/// naming it and its offset (entries before it were already handed to
/// `f`).
pub fn decode<'a>(bytes: &'a [u8], mut f: impl FnMut(Entry<'a>)) -> Result<Origin, String> {
    if bytes.is_empty() {
        return Err("empty bridge message (no version byte)".to_owned());
    }
    if let Some(e) = version_mismatch(bytes) {
        return Err(e);
    }
    let mut at = 1;
    let origin = Origin {
        creation_ns: u64::from_le_bytes(take(bytes, &mut at, "origin identity")?),
        creator: u64::from_le_bytes(take(bytes, &mut at, "origin identity")?),
    };
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
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: Origin = Origin {
        creation_ns: 1_700_000_000_123_456_789,
        creator: 0xabcd_0000_1234,
    };

    fn all(bytes: &[u8]) -> Result<Vec<Entry<'_>>, String> {
        let mut v = Vec::new();
        assert_eq!(decode(bytes, |e| v.push(e))?, ORIGIN);
        Ok(v)
    }

    #[test]
    fn origin_identity_round_trips_as_text() {
        let text = ORIGIN.to_string();
        assert_eq!(text, "1700000000123456789-0000abcd00001234");
        assert_eq!(text.parse::<Origin>().unwrap(), ORIGIN);
        assert!("12".parse::<Origin>().unwrap_err().contains("\"12\""));
    }

    #[test]
    fn round_trip() {
        let mut m = Message::new(ORIGIN);
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
        let e = all(&[1, 3, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(e.contains("version 1") && e.contains("version 2"), "{e}");
        assert_eq!(version_mismatch(&[1]), Some(e));
        assert_eq!(version_mismatch(&[VERSION]), None);
        assert!(all(&[VERSION, 0, 0])
            .unwrap_err()
            .contains("origin identity at byte 1"));
        let mut m = Message::new(ORIGIN);
        m.buf.push(42);
        assert!(all(m.bytes())
            .unwrap_err()
            .contains("unknown entry tag 42 at byte 17"));
        let mut m = Message::new(ORIGIN);
        m.frame(1, &[0; 40]);
        let cut = &m.bytes()[..m.len() - 1];
        assert!(all(cut).unwrap_err().contains("frame of sequence 1"));
        let mut m = Message::new(ORIGIN);
        m.buf.extend_from_slice(&[TAG_HEAD, 0]);
        assert!(all(m.bytes()).unwrap_err().contains("head at byte 18"));
        let mut m = Message::new(ORIGIN);
        m.lost(5, 4);
        assert!(all(m.bytes())
            .unwrap_err()
            .contains("ends (4) before it starts (5)"));
    }
}
