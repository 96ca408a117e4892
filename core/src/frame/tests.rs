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

/// Every body's field-by-field words (the loan path) are exactly the bytes
/// rkyv archives (the `encode` path), and the header's words are its
/// archived bytes.
#[test]
fn archived_words_equal_rkyv_encoding() {
    fn check<B: Body>(body: &B) {
        let buf = encoded(body);
        let mut words = [u64::MAX; MAX_FRAME_WORDS];
        let header = FrameHeader::new(B::KIND, 9, 123);
        words[..HEADER_WORDS].copy_from_slice(&header.to_words());
        let mut stored = 0;
        body.archived_words(|i, w| {
            words[HEADER_WORDS + i] = w;
            stored += 1;
        });
        assert_eq!(stored, body_words(B::KIND), "{:?}", B::KIND);
        let n = frame_words(B::KIND);
        assert_eq!(words[..n], buf.0[..n], "{:?}", B::KIND);
        assert_eq!(FrameHeader::read(buf.bytes()), Some(header));
        assert_eq!(FrameHeader::read_words(&buf.0), Some(header));
    }
    check(&trade());
    check(&TradeEvent {
        direction: Direction::Buy,
        price: -0.0,
        ..trade()
    });
    check(&AccountUpdate {
        user_id: id("user-1").unwrap(),
        balance: 10.0,
        available: 7.5,
        margin: 2.5,
        timestamp: -5,
    });
    let mut l2 = MarketL2 {
        instrument_id: id("ETH-USDT").unwrap(),
        bids: [Level::default(); L2_DEPTH],
        asks: [Level::default(); L2_DEPTH],
        timestamp: 77,
    };
    for i in 0..L2_DEPTH {
        l2.bids[i] = Level {
            price: 100.0 - i as f64,
            volume: i as f64,
        };
        l2.asks[i] = Level {
            price: 101.0 + i as f64,
            volume: 2.0 * i as f64,
        };
    }
    check(&l2);
    check(&Heartbeat {
        publisher_id: id("engine-1").unwrap(),
        sequence: 7,
        timestamp: 1,
    });
    check(&Ack {
        sequence: 42,
        subscriber_id: id("sub-1").unwrap(),
        timestamp: 3,
    });
}

/// Header accessors: every field through words and bytes, the
/// retransmission mark, and a short slice with no header at all.
#[test]
fn header_accessors_round_trip() {
    let h = FrameHeader {
        seq: 0x0102_0304_0506_0708,
        publish_ns: 99,
        publisher_id: 0xdead_beef,
        kind: MessageKind::L2 as u16,
        body_len: MessageKind::L2.body_len() as u16,
        retransmit: 0,
    };
    assert_eq!(FrameHeader::from_words(h.to_words()), h);
    assert_eq!(h.message_kind(), Some(MessageKind::L2));
    assert_eq!(h.retransmit_of(), None);
    assert_eq!(h.with_retransmit_of(5).retransmit_of(), Some(5));
    assert_eq!(h.frame_len(), HEADER_LEN + MessageKind::L2.body_len());
    let words = h.with_retransmit_of(0).to_words();
    let bytes = words_as_bytes(&words);
    assert_eq!(FrameHeader::read(bytes).unwrap().retransmit_of(), Some(0));
    assert_eq!(FrameHeader::read(&bytes[..HEADER_LEN - 1]), None);
    assert_eq!(FrameHeader::read_words(&words[..HEADER_WORDS - 1]), None);
    // Unaligned bytes read the same.
    let mut shifted = [0u8; HEADER_LEN + 1];
    shifted[1..].copy_from_slice(bytes);
    assert_eq!(FrameHeader::read(&shifted[1..]), FrameHeader::read(bytes));
}
