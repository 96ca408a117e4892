//! Frames: a fixed header followed by one archived message body.
//!
//! A frame is stored as 8-byte words so that the rings can copy it through
//! `AtomicU64`s. Bytes `0..32` are the archived [`FrameHeader`], bytes
//! `32..32 + body_len` the archived body. The ring writes the topic sequence
//! into word 0 when it publishes, so the bytes in a slot are always a complete
//! frame.
//!
//! Timestamps (`publish_ns` and the bodies' `timestamp`) are nanoseconds since
//! the Unix epoch on `CLOCK_REALTIME`, which every process on a host shares.
//!
//! Reading bytes that came from outside (a file, a foreign segment) goes
//! through [`decode`] / [`FrameRef::parse`], which validate length, alignment,
//! kind and every field (e.g. the [`Direction`] discriminant) and say which
//! check failed. [`decode_unchecked`] skips every check and is only for bytes
//! the caller knows to be a valid frame (see its safety section: a matching
//! segment layout hash is not enough).

mod body;
pub mod id;

// `FrameHeader::to_words`/`from_words` and `Body::archived_words` build the
// archived (little-endian) bytes as native `u64` words, and frames are
// stored and read as native words: only on a little-endian target are those
// the bytes rkyv encodes and `decode` validates. Refuse to build elsewhere
// rather than write frames that decode as something else.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "zerocast frames are built as native words equal to rkyv's little-endian bytes: big-endian targets are not supported"
);

pub use body::*;

use rkyv::api::low::{LowSerializer, LowValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::writer::Buffer;
use rkyv::{Archive, Deserialize, Portable, Serialize};

/// Kind of message a frame carries (`FrameHeader::kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageKind {
    /// [`TradeEvent`].
    Trade = 1,
    /// [`AccountUpdate`].
    Account = 2,
    /// [`MarketL2`].
    L2 = 3,
    /// [`Heartbeat`].
    Heartbeat = 4,
    /// [`Ack`].
    Ack = 5,
}

impl MessageKind {
    /// All kinds, in discriminant order.
    pub const ALL: [MessageKind; 5] = [
        Self::Trade,
        Self::Account,
        Self::L2,
        Self::Heartbeat,
        Self::Ack,
    ];

    /// The kind with this discriminant, if any.
    pub const fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::Trade),
            2 => Some(Self::Account),
            3 => Some(Self::L2),
            4 => Some(Self::Heartbeat),
            5 => Some(Self::Ack),
            _ => None,
        }
    }

    /// Archived body size in bytes.
    pub const fn body_len(self) -> usize {
        match self {
            Self::Trade => core::mem::size_of::<TradeEvent>(),
            Self::Account => core::mem::size_of::<AccountUpdate>(),
            Self::L2 => core::mem::size_of::<MarketL2>(),
            Self::Heartbeat => core::mem::size_of::<Heartbeat>(),
            Self::Ack => core::mem::size_of::<Ack>(),
        }
    }

    /// Short lower-case name (`trade`, `account`, `l2`, `heartbeat`, `ack`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Trade => "trade",
            Self::Account => "account",
            Self::L2 => "l2",
            Self::Heartbeat => "heartbeat",
            Self::Ack => "ack",
        }
    }
}

/// The fixed header of every frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct FrameHeader {
    /// Topic sequence: gapless, assigned by the ring at publish.
    pub seq: u64,
    /// Publish time, ns since the Unix epoch (`CLOCK_REALTIME`).
    pub publish_ns: u64,
    /// Id of the publishing process's slot on the topic.
    pub publisher_id: u32,
    /// [`MessageKind`] discriminant.
    pub kind: u16,
    /// Length of the archived body in bytes.
    pub body_len: u16,
    /// Retransmission mark, its one meaning on every transport: 0 for an
    /// original frame, `s + 1` for a retransmission of sequence `s` (see
    /// [`FrameHeader::retransmit_of`]).
    pub retransmit: u64,
}

/// Size of the archived header in 8-byte words.
pub const HEADER_WORDS: usize = HEADER_LEN / 8;

impl FrameHeader {
    /// The header of a frame carrying a body of `kind`, not a
    /// retransmission, with `seq` 0 (the ring writes the sequence).
    pub const fn new(kind: MessageKind, publisher_id: u32, publish_ns: u64) -> Self {
        Self {
            seq: 0,
            publish_ns,
            publisher_id,
            kind: kind as u16,
            body_len: kind.body_len() as u16,
            retransmit: 0,
        }
    }

    /// The archived header as little-endian words, exactly the bytes
    /// [`encode`] writes (word 0 `seq`, word 1 `publish_ns`, word 2
    /// `publisher_id | kind << 32 | body_len << 48`, word 3 `retransmit`).
    pub const fn to_words(&self) -> [u64; HEADER_WORDS] {
        [
            self.seq,
            self.publish_ns,
            self.publisher_id as u64 | (self.kind as u64) << 32 | (self.body_len as u64) << 48,
            self.retransmit,
        ]
    }

    /// The header from its archived words (the inverse of
    /// [`to_words`](Self::to_words)). Every bit pattern is a header; whether
    /// its kind and length are valid is [`decode`]'s business.
    pub const fn from_words(words: [u64; HEADER_WORDS]) -> Self {
        Self {
            seq: words[0],
            publish_ns: words[1],
            publisher_id: words[2] as u32,
            kind: (words[2] >> 32) as u16,
            body_len: (words[2] >> 48) as u16,
            retransmit: words[3],
        }
    }

    /// The header at the start of `bytes` (any alignment), or `None` if
    /// `bytes` is shorter than [`HEADER_LEN`]. The one reader of header
    /// fields from raw bytes: nothing outside this module knows their
    /// offsets.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let head = bytes.get(..HEADER_LEN)?;
        let mut words = [0u64; HEADER_WORDS];
        for (w, b) in words.iter_mut().zip(head.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            *w = u64::from_le_bytes(le);
        }
        Some(Self::from_words(words))
    }

    /// The header in the first [`HEADER_WORDS`] of `words`, or `None` if
    /// there are fewer.
    pub fn read_words(words: &[u64]) -> Option<Self> {
        let head = words.get(..HEADER_WORDS)?;
        let mut w = [0u64; HEADER_WORDS];
        w.copy_from_slice(head);
        Some(Self::from_words(w))
    }

    /// The header's kind, if it names a known one.
    pub const fn message_kind(&self) -> Option<MessageKind> {
        MessageKind::from_u16(self.kind)
    }

    /// The sequence this frame retransmits, if it is a retransmission.
    pub const fn retransmit_of(&self) -> Option<u64> {
        self.retransmit.checked_sub(1)
    }

    /// Marks the header as a retransmission of sequence `original`.
    pub const fn with_retransmit_of(mut self, original: u64) -> Self {
        self.retransmit = original.wrapping_add(1);
        self
    }

    /// Header plus body length in bytes, as the header says (not checked
    /// against the kind).
    pub const fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}

/// Size of the archived header in bytes.
pub const HEADER_LEN: usize = 32;
const _: () = assert!(core::mem::size_of::<FrameHeader>() == HEADER_LEN);
const _: () = assert!(core::mem::size_of::<ArchivedFrameHeader>() == HEADER_LEN);

/// Largest body of any kind, in bytes.
pub const MAX_BODY_LEN: usize = {
    let mut max = 0;
    let mut i = 0;
    while i < MessageKind::ALL.len() {
        let len = MessageKind::ALL[i].body_len();
        if len > max {
            max = len;
        }
        i += 1;
    }
    max
};

/// Largest frame of any kind, in 8-byte words: the one payload size limit
/// of the bus (a segment's slots hold at most this many payload words, a
/// WAL record at most [`MAX_FRAME_LEN`] bytes of frame).
pub const MAX_FRAME_WORDS: usize = (HEADER_LEN + MAX_BODY_LEN).div_ceil(8);

/// Largest frame of any kind, in bytes ([`MAX_FRAME_WORDS`] words).
pub const MAX_FRAME_LEN: usize = MAX_FRAME_WORDS * 8;

/// Frame size in 8-byte words for a body kind.
pub const fn frame_words(kind: MessageKind) -> usize {
    (HEADER_LEN + kind.body_len()).div_ceil(8)
}

/// The serializer bodies are written with: a fixed buffer, no allocator.
pub type BodySerializer<'a> = LowSerializer<Buffer<'a>, SubAllocator<'a>, Failure>;

/// A message body that can travel in a frame.
///
/// Sealed: only this crate's message types are bodies. A body has two
/// encodings that must agree (rkyv's, which [`decode`] validates, and
/// [`archived_words`](Body::archived_words), which the loan path stores
/// unvalidated), and [`decode_unchecked`] trusts frames written by
/// either; an outside implementation could make them disagree.
///
/// regression_body_is_sealed (review finding: a downstream impl whose
/// `archived_words` disagrees with rkyv made `decode_unchecked` UB):
///
/// ```compile_fail,E0277
/// use zerocast_core::frame::{Body, MessageKind};
/// #[derive(Clone, Copy, rkyv::Archive, rkyv::Serialize)]
/// struct Mine {
///     word: u64,
/// }
/// impl Body for Mine {
///     const KIND: MessageKind = MessageKind::Heartbeat;
///     fn archived_words(&self, _store: impl FnMut(usize, u64)) {}
/// }
/// ```
pub trait Body:
    sealed::Sealed
    + Archive<Archived: Portable + for<'a> CheckBytes<LowValidator<'a, Failure>>>
    + for<'a> Serialize<BodySerializer<'a>>
    + Copy
{
    /// Its kind.
    const KIND: MessageKind;

    /// Calls `store(i, word)` once for each word `i` in
    /// `0 .. body_words(Self::KIND)` with the archived body's word `i`:
    /// the bytes [`encode`] writes after the header, as little-endian words,
    /// padding zero. Computed field by field with no buffer, so that a
    /// caller can store each word straight into a ring slot's atomics (the
    /// loan path of the ipc publisher).
    fn archived_words(&self, store: impl FnMut(usize, u64));
}

mod sealed {
    /// Seals [`Body`](super::Body): implemented for this crate's bodies only.
    pub trait Sealed {}
    impl Sealed for super::TradeEvent {}
    impl Sealed for super::AccountUpdate {}
    impl Sealed for super::MarketL2 {}
    impl Sealed for super::Heartbeat {}
    impl Sealed for super::Ack {}
}

/// Stores the words of a NUL-padded id (a multiple of 8 bytes long) from
/// word `at` on; returns the word after it.
#[inline(always)]
fn id_words<const N: usize>(id: &[u8; N], at: usize, store: &mut impl FnMut(usize, u64)) -> usize {
    const { assert!(N % 8 == 0) };
    let mut i = at;
    for chunk in id.chunks_exact(8) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        store(i, u64::from_le_bytes(le));
        i += 1;
    }
    i
}

// The word layouts below follow each body's `#[repr(C)]` field order (the
// archived form has the same layout, little-endian); the test
// `archived_words_equal_rkyv_encoding` checks them against rkyv's bytes.

impl Body for TradeEvent {
    const KIND: MessageKind = MessageKind::Trade;

    #[inline]
    fn archived_words(&self, mut store: impl FnMut(usize, u64)) {
        let i = id_words(&self.trade_id, 0, &mut store);
        let i = id_words(&self.order_id, i, &mut store);
        let i = id_words(&self.instrument_id, i, &mut store);
        store(i, self.price.to_bits());
        store(i + 1, self.volume.to_bits());
        // One discriminant byte, seven padding bytes (zero).
        store(i + 2, self.direction as u8 as u64);
        store(i + 3, self.timestamp as u64);
    }
}
impl Body for AccountUpdate {
    const KIND: MessageKind = MessageKind::Account;

    #[inline]
    fn archived_words(&self, mut store: impl FnMut(usize, u64)) {
        let i = id_words(&self.user_id, 0, &mut store);
        store(i, self.balance.to_bits());
        store(i + 1, self.available.to_bits());
        store(i + 2, self.margin.to_bits());
        store(i + 3, self.timestamp as u64);
    }
}
impl Body for MarketL2 {
    const KIND: MessageKind = MessageKind::L2;

    #[inline]
    fn archived_words(&self, mut store: impl FnMut(usize, u64)) {
        let mut i = id_words(&self.instrument_id, 0, &mut store);
        for level in self.bids.iter().chain(&self.asks) {
            store(i, level.price.to_bits());
            store(i + 1, level.volume.to_bits());
            i += 2;
        }
        store(i, self.timestamp as u64);
    }
}
impl Body for Heartbeat {
    const KIND: MessageKind = MessageKind::Heartbeat;

    #[inline]
    fn archived_words(&self, mut store: impl FnMut(usize, u64)) {
        let i = id_words(&self.publisher_id, 0, &mut store);
        store(i, self.sequence);
        store(i + 1, self.timestamp as u64);
    }
}
impl Body for Ack {
    const KIND: MessageKind = MessageKind::Ack;

    #[inline]
    fn archived_words(&self, mut store: impl FnMut(usize, u64)) {
        store(0, self.sequence);
        let i = id_words(&self.subscriber_id, 1, &mut store);
        store(i, self.timestamp as u64);
    }
}

/// Words of the archived body of `kind` (its bytes rounded up to words).
pub const fn body_words(kind: MessageKind) -> usize {
    kind.body_len().div_ceil(8)
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header (or header plus body) needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The bytes do not start at an 8-byte boundary.
    Misaligned {
        /// Address of the bytes.
        address: usize,
    },
    /// The header's kind is not one of [`MessageKind`].
    UnknownKind(u16),
    /// The header's kind is valid but not the one asked for.
    WrongKind {
        /// Kind asked for.
        expected: MessageKind,
        /// Kind in the header.
        found: MessageKind,
    },
    /// The header's body length does not match its kind.
    BadBodyLength {
        /// Kind in the header.
        kind: MessageKind,
        /// Length in the header.
        body_len: u16,
    },
    /// A field of the body is invalid (e.g. a bad enum discriminant).
    InvalidBody(MessageKind),
    /// The output buffer is too small to encode the frame.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { needed, got } => {
                write!(f, "truncated frame: {got} bytes, {needed} needed")
            }
            Self::Misaligned { address } => {
                write!(f, "misaligned frame at {address:#x}: 8-byte alignment needed")
            }
            Self::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Self::WrongKind { expected, found } => write!(
                f,
                "wrong message kind: expected {}, found {}",
                expected.name(),
                found.name()
            ),
            Self::BadBodyLength { kind, body_len } => write!(
                f,
                "body length {body_len} does not match kind {} ({} bytes)",
                kind.name(),
                kind.body_len()
            ),
            Self::InvalidBody(kind) => write!(
                f,
                "invalid {} body: a field holds a value its type does not allow (e.g. a bad discriminant)",
                kind.name()
            ),
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "frame of {needed} bytes does not fit a {available}-byte buffer"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// Views words as bytes.
pub fn words_as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u8 has alignment 1 and no invalid bit patterns; the length is the
    // same memory measured in bytes.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

/// Views words as mutable bytes.
pub fn words_as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `words_as_bytes`; every byte pattern is a valid u64, so
    // writes through the byte view cannot produce invalid words.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

/// Encodes a frame (header with `seq` 0, which the ring fills in, plus the
/// archived `body`) into `out`. Returns the frame's length in words.
///
/// ```
/// use zerocast_core::frame::{encode, decode, Heartbeat, id::id, MAX_FRAME_WORDS};
/// let hb = Heartbeat { publisher_id: id("engine-1").unwrap(), sequence: 7, timestamp: 1 };
/// let mut buf = [0u64; MAX_FRAME_WORDS];
/// let words = encode(&hb, 3, 1_000, &mut buf).unwrap();
/// let (header, body) = decode::<Heartbeat>(zerocast_core::frame::words_as_bytes(&buf[..words])).unwrap();
/// assert_eq!(header.publisher_id, 3);
/// assert_eq!(body.sequence, 7);
/// ```
pub fn encode<B: Body>(
    body: &B,
    publisher_id: u32,
    publish_ns: u64,
    out: &mut [u64],
) -> Result<usize, FrameError> {
    let words = frame_words(B::KIND);
    if out.len() < words {
        return Err(FrameError::BufferTooSmall {
            needed: words * 8,
            available: out.len() * 8,
        });
    }
    let header = FrameHeader::new(B::KIND, publisher_id, publish_ns);
    let bytes = words_as_bytes_mut(&mut out[..words]);
    let (head, rest) = bytes.split_at_mut(HEADER_LEN);
    let too_small = FrameError::BufferTooSmall {
        needed: words * 8,
        available: words * 8,
    };
    rkyv::api::low::to_bytes_in_with_alloc::<_, _, Failure>(
        &header,
        Buffer::from(head),
        SubAllocator::empty(),
    )
    .map_err(|_| too_small)?;
    rkyv::api::low::to_bytes_in_with_alloc::<_, _, Failure>(
        body,
        Buffer::from(&mut rest[..B::KIND.body_len()]),
        SubAllocator::empty(),
    )
    .map_err(|_| too_small)?;
    Ok(words)
}

fn check_header(bytes: &[u8]) -> Result<(&ArchivedFrameHeader, MessageKind), FrameError> {
    if (bytes.as_ptr() as usize) % 8 != 0 {
        return Err(FrameError::Misaligned {
            address: bytes.as_ptr() as usize,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: HEADER_LEN,
            got: bytes.len(),
        });
    }
    // The header is plain integers: every bit pattern is valid, so the check
    // cannot fail once length and alignment hold.
    let header = rkyv::api::low::access::<ArchivedFrameHeader, Failure>(&bytes[..HEADER_LEN])
        .map_err(|_| FrameError::Truncated {
            needed: HEADER_LEN,
            got: bytes.len(),
        })?;
    let raw_kind = header.kind.to_native();
    let kind = MessageKind::from_u16(raw_kind).ok_or(FrameError::UnknownKind(raw_kind))?;
    let body_len = header.body_len.to_native();
    if usize::from(body_len) != kind.body_len() {
        return Err(FrameError::BadBodyLength { kind, body_len });
    }
    let needed = HEADER_LEN + kind.body_len();
    if bytes.len() < needed {
        return Err(FrameError::Truncated {
            needed,
            got: bytes.len(),
        });
    }
    Ok((header, kind))
}

/// Validates `bytes` as a frame carrying a `B` and returns zero-copy views of
/// its header and body.
pub fn decode<B: Body>(bytes: &[u8]) -> Result<(&ArchivedFrameHeader, &B::Archived), FrameError> {
    let (header, kind) = check_header(bytes)?;
    if kind != B::KIND {
        return Err(FrameError::WrongKind {
            expected: B::KIND,
            found: kind,
        });
    }
    let body = rkyv::api::low::access::<B::Archived, Failure>(
        &bytes[HEADER_LEN..HEADER_LEN + kind.body_len()],
    )
    .map_err(|_| FrameError::InvalidBody(kind))?;
    Ok((header, body))
}

/// Zero-copy views of a frame whose bytes are trusted, with no check at all
/// (in debug builds, only the length is asserted).
///
/// # Safety
///
/// The caller must guarantee all of:
///
/// - `bytes` starts at an 8-byte aligned address;
/// - `bytes.len() >= HEADER_LEN + B::KIND.body_len()`;
/// - the first `HEADER_LEN` bytes are an archived [`FrameHeader`] and the
///   next `B::KIND.body_len()` bytes a valid archived `B` (every field valid
///   for its type: e.g. a [`Direction`] byte of 0 or 1; an invalid enum
///   discriminant is undefined behaviour);
/// - nothing writes to those bytes while the returned references live.
///
/// In practice: bytes this process produced with [`encode`]`::<B>` (or
/// validated with [`decode`]`::<B>`) and has not let anyone modify since.
///
/// What is *not* enough: a segment whose layout hash matched. The hash
/// proves only that the creator's build had the same layout version, sizes
/// and constants (header and body sizes, ring and table sizes); it says
/// nothing about the bytes of any one frame. Any process that can write the
/// segment can publish arbitrary words (a frame of another kind, an unknown
/// kind, an invalid discriminant), and a corrupt or hostile segment can hold
/// anything. Bytes from a segment, a file or a socket go through [`decode`]
/// or [`FrameRef::parse`].
pub unsafe fn decode_unchecked<B: Body>(bytes: &[u8]) -> (&ArchivedFrameHeader, &B::Archived) {
    debug_assert!(bytes.len() >= HEADER_LEN + B::KIND.body_len());
    // SAFETY: the caller guarantees a valid, aligned archived header ...
    let header = unsafe { rkyv::access_unchecked::<ArchivedFrameHeader>(&bytes[..HEADER_LEN]) };
    // SAFETY: ... followed by a valid archived `B`.
    let body = unsafe {
        rkyv::access_unchecked::<B::Archived>(&bytes[HEADER_LEN..HEADER_LEN + B::KIND.body_len()])
    };
    (header, body)
}

/// A validated frame of any kind.
#[derive(Debug)]
pub enum FrameRef<'a> {
    /// A trade.
    Trade(&'a ArchivedTradeEvent),
    /// An account update.
    Account(&'a ArchivedAccountUpdate),
    /// A Level-2 book.
    L2(&'a ArchivedMarketL2),
    /// A heartbeat.
    Heartbeat(&'a ArchivedHeartbeat),
    /// An ack.
    Ack(&'a ArchivedAck),
}

impl<'a> FrameRef<'a> {
    /// Validates `bytes` as a frame of any kind.
    pub fn parse(bytes: &'a [u8]) -> Result<(&'a ArchivedFrameHeader, FrameRef<'a>), FrameError> {
        let (_, kind) = check_header(bytes)?;
        Ok(match kind {
            MessageKind::Trade => decode::<TradeEvent>(bytes).map(|(h, b)| (h, Self::Trade(b)))?,
            MessageKind::Account => {
                decode::<AccountUpdate>(bytes).map(|(h, b)| (h, Self::Account(b)))?
            }
            MessageKind::L2 => decode::<MarketL2>(bytes).map(|(h, b)| (h, Self::L2(b)))?,
            MessageKind::Heartbeat => {
                decode::<Heartbeat>(bytes).map(|(h, b)| (h, Self::Heartbeat(b)))?
            }
            MessageKind::Ack => decode::<Ack>(bytes).map(|(h, b)| (h, Self::Ack(b)))?,
        })
    }

    /// The frame's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Trade(_) => MessageKind::Trade,
            Self::Account(_) => MessageKind::Account,
            Self::L2(_) => MessageKind::L2,
            Self::Heartbeat(_) => MessageKind::Heartbeat,
            Self::Ack(_) => MessageKind::Ack,
        }
    }
}

/// An 8-byte-aligned buffer that holds any frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct FrameBuf(pub [u64; MAX_FRAME_WORDS]);

impl Default for FrameBuf {
    fn default() -> Self {
        Self([0; MAX_FRAME_WORDS])
    }
}

impl FrameBuf {
    /// The buffer as bytes.
    pub fn bytes(&self) -> &[u8] {
        words_as_bytes(&self.0)
    }
}

#[cfg(test)]
mod tests;
