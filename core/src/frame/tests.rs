use super::id::id;
use super::*;

fn trade() -> TradeEvent {
    TradeEvent {
        trade_id: id("T-000001").unwrap(),
        order_id: id("O-424242").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 64_000.5,
        volume: 0.25,
        direction: Direction::Sell,
        timestamp: 1_700_000_000_000_000_000,
    }
}

fn encoded<B: Body>(body: &B) -> FrameBuf {
    let mut buf = FrameBuf::default();
    encode(body, 9, 123, &mut buf.0).unwrap();
    buf
}

#[test]
fn every_kind_round_trips() {
    let buf = encoded(&trade());
    let (h, b) = decode::<TradeEvent>(buf.bytes()).unwrap();
    assert_eq!(
        (h.publisher_id.to_native(), h.publish_ns.to_native()),
        (9, 123)
    );
    assert_eq!(b.price.to_native(), 64_000.5);
    assert_eq!(b.direction, ArchivedDirection::Sell);
    assert_eq!(id::id_str(&b.instrument_id), Ok("BTC-USDT"));

    let acct = AccountUpdate {
        user_id: id("user-1").unwrap(),
        balance: 10.0,
        available: 7.5,
        margin: 2.5,
        timestamp: 5,
    };
    let buf = encoded(&acct);
    let (_, b) = decode::<AccountUpdate>(buf.bytes()).unwrap();
    assert_eq!(b.available.to_native(), 7.5);

    let mut book = MarketL2 {
        instrument_id: id("ETH-USDT").unwrap(),
        bids: [Level::default(); L2_DEPTH],
        asks: [Level::default(); L2_DEPTH],
        timestamp: 6,
    };
    book.asks[9] = Level {
        price: 3001.0,
        volume: 4.0,
    };
    let buf = encoded(&book);
    let (h, b) = decode::<MarketL2>(buf.bytes()).unwrap();
    assert_eq!(h.body_len.to_native() as usize, 344);
    assert_eq!(b.asks[9].price.to_native(), 3001.0);

    let hb = Heartbeat {
        publisher_id: id("engine").unwrap(),
        sequence: 77,
        timestamp: 8,
    };
    let buf = encoded(&hb);
    assert_eq!(decode::<Heartbeat>(buf.bytes()).unwrap().1.sequence, 77);

    let ack = Ack {
        sequence: 99,
        subscriber_id: id("risk").unwrap(),
        timestamp: 9,
    };
    let buf = encoded(&ack);
    match FrameRef::parse(buf.bytes()).unwrap().1 {
        FrameRef::Ack(a) => assert_eq!(a.sequence, 99),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn truncated_bytes_are_rejected() {
    let buf = encoded(&trade());
    let len = HEADER_LEN + 128;
    assert_eq!(
        decode::<TradeEvent>(&buf.bytes()[..len - 1]).unwrap_err(),
        FrameError::Truncated {
            needed: len,
            got: len - 1
        }
    );
    assert_eq!(
        decode::<TradeEvent>(&buf.bytes()[..10]).unwrap_err(),
        FrameError::Truncated {
            needed: HEADER_LEN,
            got: 10
        }
    );
}

#[test]
fn misaligned_bytes_are_rejected() {
    let buf = encoded(&trade());
    let err = decode::<TradeEvent>(&buf.bytes()[1..]).unwrap_err();
    assert!(matches!(err, FrameError::Misaligned { .. }), "{err:?}");
}

#[test]
fn wrong_and_unknown_kinds_are_rejected() {
    let mut buf = encoded(&trade());
    assert_eq!(
        decode::<AccountUpdate>(buf.bytes()).unwrap_err(),
        FrameError::WrongKind {
            expected: MessageKind::Account,
            found: MessageKind::Trade
        }
    );
    // kind is the u16 at byte 20 of the header.
    words_as_bytes_mut(&mut buf.0)[20] = 42;
    assert_eq!(
        FrameRef::parse(buf.bytes()).unwrap_err(),
        FrameError::UnknownKind(42)
    );
}

#[test]
fn bad_body_length_is_rejected() {
    let mut buf = encoded(&trade());
    words_as_bytes_mut(&mut buf.0)[22] = 1; // body_len low byte
    assert!(matches!(
        decode::<TradeEvent>(buf.bytes()).unwrap_err(),
        FrameError::BadBodyLength {
            kind: MessageKind::Trade,
            body_len: 1
        }
    ));
}

#[test]
fn bad_discriminant_is_rejected() {
    let mut buf = encoded(&trade());
    // direction sits at body offset 112 (after three ids and two f64s).
    words_as_bytes_mut(&mut buf.0)[HEADER_LEN + 112] = 7;
    assert_eq!(
        decode::<TradeEvent>(buf.bytes()).unwrap_err(),
        FrameError::InvalidBody(MessageKind::Trade)
    );
}

#[test]
fn buffer_too_small_is_an_error() {
    let mut small = [0u64; 4];
    assert!(matches!(
        encode(&trade(), 0, 0, &mut small),
        Err(FrameError::BufferTooSmall { .. })
    ));
}

#[test]
fn unchecked_view_matches_checked() {
    let buf = encoded(&trade());
    // SAFETY: `buf` was written by `encode` with a TradeEvent.
    let (_, fast) = unsafe { decode_unchecked::<TradeEvent>(buf.bytes()) };
    let (_, slow) = decode::<TradeEvent>(buf.bytes()).unwrap();
    assert_eq!(fast.volume, slow.volume);
}
