//! Frames as JSON objects or compact lines, for `zerocast sub` (and later
//! `zerocast replay`).

use serde_json::{json, Map, Value};
use zerocast_core::frame::{id::id_str, ArchivedDirection, ArchivedLevel, FrameError, FrameRef};

fn ident(bytes: &[u8]) -> Value {
    match id_str(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::String(
            String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_owned(),
        ),
    }
}

fn levels(levels: &[ArchivedLevel]) -> Value {
    Value::Array(
        levels
            .iter()
            .map(|l| json!([l.price.to_native(), l.volume.to_native()]))
            .collect(),
    )
}

/// One JSON object: `seq`, `kind`, `publish_ns`, `publisher_id`, and every
/// body field by name.
pub fn frame_json(seq: u64, bytes: &[u8]) -> Result<Value, FrameError> {
    let (header, body) = FrameRef::parse(bytes)?;
    let mut obj = Map::new();
    obj.insert("seq".into(), json!(seq));
    obj.insert("kind".into(), json!(body.kind().name()));
    obj.insert("publish_ns".into(), json!(header.publish_ns.to_native()));
    obj.insert(
        "publisher_id".into(),
        json!(header.publisher_id.to_native()),
    );
    let fields = match body {
        FrameRef::Trade(t) => json!({
            "trade_id": ident(&t.trade_id),
            "order_id": ident(&t.order_id),
            "instrument_id": ident(&t.instrument_id),
            "price": t.price.to_native(),
            "volume": t.volume.to_native(),
            "direction": match t.direction { ArchivedDirection::Buy => "buy", ArchivedDirection::Sell => "sell" },
            "timestamp": t.timestamp.to_native(),
        }),
        FrameRef::Account(a) => json!({
            "user_id": ident(&a.user_id),
            "balance": a.balance.to_native(),
            "available": a.available.to_native(),
            "margin": a.margin.to_native(),
            "timestamp": a.timestamp.to_native(),
        }),
        FrameRef::L2(b) => json!({
            "instrument_id": ident(&b.instrument_id),
            "bids": levels(&b.bids),
            "asks": levels(&b.asks),
            "timestamp": b.timestamp.to_native(),
        }),
        FrameRef::Heartbeat(h) => json!({
            "publisher_id": ident(&h.publisher_id),
            "sequence": h.sequence.to_native(),
            "timestamp": h.timestamp.to_native(),
        }),
        FrameRef::Ack(a) => json!({
            "sequence": a.sequence.to_native(),
            "subscriber_id": ident(&a.subscriber_id),
            "timestamp": a.timestamp.to_native(),
        }),
    };
    if let Value::Object(f) = fields {
        for (k, v) in f {
            // The heartbeat's publisher_id string wins over the header's.
            obj.insert(k, v);
        }
    }
    Ok(Value::Object(obj))
}

/// Decimals of every price in a text line (trades and books alike).
const PRICE: usize = 4;
/// Decimals of every volume in a text line.
const VOLUME: usize = 4;

/// One compact line; prices with [`PRICE`] decimals, volumes with
/// [`VOLUME`].
pub fn frame_line(seq: u64, bytes: &[u8]) -> Result<String, FrameError> {
    let (_, body) = FrameRef::parse(bytes)?;
    let s = |b: &[u8]| id_str(b).unwrap_or("?").to_owned();
    Ok(match body {
        FrameRef::Trade(t) => format!(
            "{seq} trade {} {} {} @ {:.PRICE$} x {:.VOLUME$}",
            s(&t.trade_id),
            s(&t.instrument_id),
            match t.direction {
                ArchivedDirection::Buy => "buy",
                ArchivedDirection::Sell => "sell",
            },
            t.price.to_native(),
            t.volume.to_native()
        ),
        FrameRef::Account(a) => format!(
            "{seq} account {} balance {:.2} available {:.2} margin {:.2}",
            s(&a.user_id),
            a.balance.to_native(),
            a.available.to_native(),
            a.margin.to_native()
        ),
        FrameRef::L2(b) => format!(
            "{seq} l2 {} bid {:.PRICE$} x {:.VOLUME$} ask {:.PRICE$} x {:.VOLUME$}",
            s(&b.instrument_id),
            b.bids[0].price.to_native(),
            b.bids[0].volume.to_native(),
            b.asks[0].price.to_native(),
            b.asks[0].volume.to_native()
        ),
        FrameRef::Heartbeat(h) => format!(
            "{seq} heartbeat {} #{}",
            s(&h.publisher_id),
            h.sequence.to_native()
        ),
        FrameRef::Ack(a) => format!(
            "{seq} ack {} up to {}",
            s(&a.subscriber_id),
            a.sequence.to_native()
        ),
    })
}
