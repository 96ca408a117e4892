//! What the wake-up check costs a publish: `Publisher::publish(&TradeEvent)`
//! with the membarrier protocol (a compiler fence and a plain load of
//! `sleepers`) against the same with the `SeqCst` fence
//! (`ZEROCAST_WAKE_FENCE=1`), on a many-producer and a single-producer
//! topic, in interleaved runs.
//!
//! `cargo run --release -p zerocast-benches --example publish_fence -- [runs]`
//!
//! The choice is made once per process, so each run is a child process
//! (this program again): it publishes 1,000,000 trade frames pinned to core
//! 0 while a busy-polling subscriber thread on core 1 reads them, and prints
//! the publish rate (frames per second of the publishing loop). The cases
//! take turns, run after run; the report gives median, minimum and maximum.

use std::process::Command;
use std::time::{Duration, Instant};

use zerocast_benches::{cores, pin};
use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::wait::WAKE_FENCE_ENV;
use zerocast_ipc::{
    Bus, Config, Producers, RecvError, Start, SubscriberOptions, TopicConfig, TopicKind,
    WaitStrategy,
};

const FRAMES: u64 = 1_000_000;

fn child(producers: Producers) {
    let _ = cores();
    let mut topic = TopicConfig::new("fence", 16 << 20, TopicKind::Trade);
    topic.producers = producers;
    let bus = Bus::new(Config {
        namespace: format!("fence-{}", std::process::id()),
        topics: vec![topic],
    });
    bus.remove_segments();
    let mut sub = bus
        .subscriber(
            "fence",
            SubscriberOptions {
                start: Start::Newest,
                wait: WaitStrategy::BusySpin,
                ..Default::default()
            },
        )
        .expect("subscriber");
    let trade = TradeEvent {
        trade_id: id("T").unwrap(),
        order_id: id("O").unwrap(),
        instrument_id: id("BTC-USDT").unwrap(),
        price: 1.0,
        volume: 1.0,
        direction: Direction::Buy,
        timestamp: 1,
    };
    let mut publisher = bus.publisher("fence").expect("publisher");
    let elapsed = std::thread::scope(|s| {
        s.spawn(move || {
            pin(1);
            let mut seen = 0;
            while seen < FRAMES {
                match sub.recv_timeout(Duration::from_secs(5)) {
                    Ok(_) => seen += 1,
                    Err(RecvError::Lagged(n)) => seen += n,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        pin(0);
        let t0 = Instant::now();
        for _ in 0..FRAMES {
            publisher.publish(&trade).expect("publish");
        }
        t0.elapsed()
    });
    drop(publisher);
    bus.remove_segments();
    println!("{}", FRAMES as f64 / elapsed.as_secs_f64() / 1e6);
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--child-many") => return child(Producers::Many),
        Some("--child-single") => return child(Producers::Single),
        _ => {}
    }
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("runs: a number"))
        .unwrap_or(15);
    let cases = [
        ("many producers, SeqCst wake fence", "--child-many", true),
        ("many producers, membarrier protocol", "--child-many", false),
        ("single producer, SeqCst fences", "--child-single", true),
        ("single producer, membarrier", "--child-single", false),
    ];
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for ((_, arg, fence), out) in cases.iter().zip(&mut rates) {
            let mut cmd = Command::new(std::env::current_exe().expect("own path"));
            cmd.arg(arg);
            if *fence {
                cmd.env(WAKE_FENCE_ENV, "1");
            } else {
                cmd.env_remove(WAKE_FENCE_ENV);
            }
            let o = cmd.output().expect("child run");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let rate: f64 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .expect("a rate");
            out.push(rate);
        }
    }
    println!(
        "M publishes/s of Publisher::publish(&TradeEvent), {FRAMES} per run, one busy-polling \
         subscriber thread; median over {runs} interleaved runs"
    );
    for ((name, _, _), mut r) in cases.iter().zip(rates) {
        r.sort_by(f64::total_cmp);
        println!(
            "{name:38} median {:6.2}  min {:6.2}  max {:6.2}",
            r[r.len() / 2],
            r[0],
            r[r.len() - 1]
        );
    }
}
