//! A synthetic exchange feed: instruments with random-walk prices producing
//! trades, account updates and Level-2 books.

use zerocast_core::frame::{
    id::id, AccountUpdate, Direction, Level, MarketL2, TradeEvent, L2_DEPTH,
};
use zerocast_ipc::{Publisher, TopicKind};

/// Deterministic pseudo-random numbers (xorshift64*): no dependency, and a
/// seed reproduces a feed exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The synthetic exchange.
#[derive(Debug)]
pub struct Feed {
    rng: Rng,
    instruments: Vec<([u8; 16], f64)>,
    users: Vec<([u8; 32], f64)>,
    trades: u64,
}

impl Feed {
    /// `instruments` instruments and as many users, seeded by `seed`.
    pub fn new(instruments: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let instruments = (0..instruments.max(1))
            .map(|i| {
                let price = 10.0 + rng.unit() * 1000.0;
                (id(&format!("INST-{i:04}")).expect("fits 16 bytes"), price)
            })
            .collect::<Vec<_>>();
        let users = (0..instruments.len())
            .map(|i| {
                (
                    id(&format!("user-{i:05}")).expect("fits 32 bytes"),
                    100_000.0,
                )
            })
            .collect();
        Self {
            rng,
            instruments,
            users,
            trades: 0,
        }
    }

    fn now() -> i64 {
        zerocast_ipc::layout::now_ns() as i64
    }

    fn walk(&mut self, i: usize) -> f64 {
        let step = (self.rng.unit() - 0.5) * 0.002;
        let p = &mut self.instruments[i].1;
        *p = (*p * (1.0 + step)).max(0.01);
        *p
    }

    /// The next trade.
    pub fn trade(&mut self) -> TradeEvent {
        let i = (self.rng.next_u64() % self.instruments.len() as u64) as usize;
        let price = self.walk(i);
        self.trades += 1;
        TradeEvent {
            trade_id: id(&format!("T{:012}", self.trades)).expect("fits 40 bytes"),
            order_id: id(&format!("O{:012}", self.rng.next_u64() % 1_000_000_000_000))
                .expect("fits 40 bytes"),
            instrument_id: self.instruments[i].0,
            price,
            volume: (self.rng.unit() * 10.0 * 1000.0).round() / 1000.0,
            direction: if self.rng.next_u64() & 1 == 0 {
                Direction::Buy
            } else {
                Direction::Sell
            },
            timestamp: Self::now(),
        }
    }

    /// The next account update.
    pub fn account(&mut self) -> AccountUpdate {
        let u = (self.rng.next_u64() % self.users.len() as u64) as usize;
        let delta = (self.rng.unit() - 0.5) * 100.0;
        let balance = {
            let b = &mut self.users[u].1;
            *b += delta;
            *b
        };
        let margin = balance * 0.1 * self.rng.unit();
        AccountUpdate {
            user_id: self.users[u].0,
            balance,
            available: balance - margin,
            margin,
            timestamp: Self::now(),
        }
    }

    /// The next book snapshot.
    pub fn book(&mut self) -> MarketL2 {
        let i = (self.rng.next_u64() % self.instruments.len() as u64) as usize;
        let mid = self.walk(i);
        let tick = mid * 0.0001;
        let mut bids = [Level::default(); L2_DEPTH];
        let mut asks = [Level::default(); L2_DEPTH];
        for k in 0..L2_DEPTH {
            bids[k] = Level {
                price: mid - tick * (k as f64 + 1.0),
                volume: 1.0 + self.rng.unit() * 50.0,
            };
            asks[k] = Level {
                price: mid + tick * (k as f64 + 1.0),
                volume: 1.0 + self.rng.unit() * 50.0,
            };
        }
        MarketL2 {
            instrument_id: self.instruments[i].0,
            bids,
            asks,
            timestamp: Self::now(),
        }
    }
}

/// Publishes `n` synthetic frames of the topic's kind (a batch when n > 1);
/// returns the first sequence.
pub fn publish_synthetic(
    p: &mut Publisher,
    feed: &mut Feed,
    kind: TopicKind,
    n: usize,
) -> zerocast_ipc::Result<u64> {
    match kind {
        TopicKind::Account => {
            let v: Vec<_> = (0..n).map(|_| feed.account()).collect();
            if n == 1 {
                p.publish(&v[0])
            } else {
                p.publish_batch(&v)
            }
        }
        TopicKind::L2 => {
            let v: Vec<_> = (0..n).map(|_| feed.book()).collect();
            if n == 1 {
                p.publish(&v[0])
            } else {
                p.publish_batch(&v)
            }
        }
        TopicKind::Heartbeat => {
            let first = p.send_heartbeat()?;
            for _ in 1..n {
                p.send_heartbeat()?;
            }
            Ok(first)
        }
        TopicKind::Trade | TopicKind::Ack | TopicKind::Any => {
            let v: Vec<_> = (0..n).map(|_| feed.trade()).collect();
            if n == 1 {
                p.publish(&v[0])
            } else {
                p.publish_batch(&v)
            }
        }
    }
}
