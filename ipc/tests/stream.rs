//! The tokio stream (feature `tokio`).
#![cfg(feature = "tokio")]

use std::time::Duration;

use zerocast_core::frame::{id::id, Heartbeat};
use zerocast_ipc::{Bus, Config, RecvError, SubscriberOptions, TopicConfig, TopicKind};

#[tokio::test]
async fn stream_yields_published_frames_in_order() {
    let bus = Bus::new(Config {
        namespace: format!("st{}", std::process::id()),
        topics: vec![TopicConfig::new("beats", 1 << 18, TopicKind::Heartbeat)],
    });
    bus.remove_segments();
    let mut stream =
        zerocast_ipc::stream::subscribe(&bus, "beats", SubscriberOptions::default(), 64).unwrap();
    let mut publisher = bus.publisher("beats").unwrap();
    for i in 0..10 {
        publisher
            .publish(&Heartbeat {
                publisher_id: id("p").unwrap(),
                sequence: i,
                timestamp: 0,
            })
            .unwrap();
    }
    for expected in 0..10u64 {
        let next = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
        });
        let item: Result<_, RecvError> = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("frame within 5s")
            .expect("stream open");
        let frame = item.unwrap();
        assert_eq!(frame.seq, expected);
        let (_, hb) = zerocast_core::frame::decode::<Heartbeat>(frame.bytes()).unwrap();
        assert_eq!(hb.sequence, expected);
    }
    bus.remove_segments();
}
