//! The five message bodies of the bus.
//!
//! Each is `#[repr(C)]` plain data whose size and alignment are fixed by
//! `const` assertions, archived with rkyv 0.8. Their archived forms have the
//! same size, so a frame's body occupies a fixed number of bytes.

use rkyv::{Archive, Deserialize, Serialize};

/// Side of a trade.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum Direction {
    /// Buyer-initiated.
    Buy = 0,
    /// Seller-initiated.
    Sell = 1,
}

/// One executed trade, from the matching engine.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct TradeEvent {
    /// Trade id, NUL-padded ASCII/UTF-8 (see [`crate::frame::id`]).
    pub trade_id: [u8; 40],
    /// Order id, NUL-padded.
    pub order_id: [u8; 40],
    /// Instrument id, NUL-padded.
    pub instrument_id: [u8; 16],
    /// Price.
    pub price: f64,
    /// Volume.
    pub volume: f64,
    /// Side.
    pub direction: Direction,
    /// Event time, ns since the Unix epoch (the engine's clock).
    pub timestamp: i64,
}

/// A change to one account, from the account system.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct AccountUpdate {
    /// User id, NUL-padded.
    pub user_id: [u8; 32],
    /// Balance.
    pub balance: f64,
    /// Available balance.
    pub available: f64,
    /// Margin in use.
    pub margin: f64,
    /// Event time, ns since the Unix epoch.
    pub timestamp: i64,
}

/// One price level of a book side.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct Level {
    /// Price.
    pub price: f64,
    /// Volume at that price.
    pub volume: f64,
}

/// Number of levels on each side of a [`MarketL2`] book.
pub const L2_DEPTH: usize = 10;

/// A Level-2 book snapshot: ten bid and ten ask levels.
///
/// The seed describes levels as `(f64, f64)` tuples; [`Level`] has the same
/// layout with named fields.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct MarketL2 {
    /// Instrument id, NUL-padded.
    pub instrument_id: [u8; 16],
    /// Bids, best first.
    pub bids: [Level; L2_DEPTH],
    /// Asks, best first.
    pub asks: [Level; L2_DEPTH],
    /// Event time, ns since the Unix epoch.
    pub timestamp: i64,
}

/// Liveness beacon from a publisher.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct Heartbeat {
    /// Publisher id, NUL-padded.
    pub publisher_id: [u8; 16],
    /// The publisher's heartbeat counter.
    pub sequence: u64,
    /// Send time, ns since the Unix epoch.
    pub timestamp: i64,
}

/// Cumulative acknowledgement from a subscriber: every sequence up to and
/// including `sequence` was processed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[repr(C)]
pub struct Ack {
    /// Highest sequence processed.
    pub sequence: u64,
    /// Subscriber id, NUL-padded.
    pub subscriber_id: [u8; 16],
    /// Ack time, ns since the Unix epoch.
    pub timestamp: i64,
}

macro_rules! assert_layout {
    ($t:ty, $archived:ty, $size:expr, $align:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::align_of::<$t>() == $align);
        const _: () = assert!(core::mem::size_of::<$archived>() == $size);
        const _: () = assert!(core::mem::align_of::<$archived>() <= $align);
    };
}

assert_layout!(TradeEvent, ArchivedTradeEvent, 128, 8);
assert_layout!(AccountUpdate, ArchivedAccountUpdate, 64, 8);
assert_layout!(Level, ArchivedLevel, 16, 8);
assert_layout!(MarketL2, ArchivedMarketL2, 344, 8);
assert_layout!(Heartbeat, ArchivedHeartbeat, 32, 8);
assert_layout!(Ack, ArchivedAck, 32, 8);
const _: () = assert!(core::mem::size_of::<ArchivedDirection>() == 1);
