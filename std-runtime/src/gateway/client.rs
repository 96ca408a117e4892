//! One client's state: its subscriptions, its owned accounts, and its
//! queue of unsent messages with the backpressure rules.
//!
//! The bus readers and the client's writer task share it behind one short
//! mutex: a bus reader only appends (or drops, conflates, records a gap) and
//! never waits for the network, so a slow client cannot slow the bus.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// What a frame is, for the backpressure rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A trade: over budget it is skipped, and the client told the exact count.
    Trade,
    /// A full book: over budget it is conflated to the latest per instrument.
    Book,
    /// An account event: never dropped; over budget the client is disconnected.
    Account,
}

/// A frame encoded once by a bus reader, shared by every client's queue.
#[derive(Debug)]
pub struct Frame {
    /// Topic name.
    pub topic: Arc<str>,
    /// Bus sequence.
    pub seq: u64,
    /// What backpressure does with it.
    pub class: Class,
    /// Instrument (trades, books) or owner account (account events).
    pub key: String,
    /// The JSON message, shared by every queue it is in and, when it is a
    /// batch of its own, handed to the socket without a copy.
    pub text: Utf8Bytes,
}

/// A run of one topic's messages skipped or lost, not yet told to the
/// client (a *pending gap*): queued once a batch taken frees room in the
/// budget for it (or its queue drains), before the topic's next data
/// message, or before the reply to a subscription replacing the topic's;
/// never before a held message of its topic with an older sequence (see
/// `State::release`). Later skips and losses of the topic extend the
/// topic's newest pending gap while no held message comes after it
/// (`count` summed), so a client that does not read is owed at most one
/// gap more than it has messages held (see [`Backlog`]), not one message
/// per loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    from: u64,
    to: u64,
    count: u64,
}

/// One subscribed topic.
#[derive(Debug, Default)]
pub struct Sub {
    /// Only these instruments (None: all).
    pub instruments: Option<HashSet<String>>,
    /// The next sequence this client may be given (older ones are
    /// duplicates of what a resume already delivered).
    pub next: u64,
    /// While a resume catches up: live frames (and what the gateway's own
    /// reader lost) held back until it reaches them.
    pub resuming: Option<VecDeque<Held>>,
    /// After a failed resume with nothing held: sequences from here up to
    /// the next live frame are told as a gap. A subscription replacing
    /// this one carries it over, unless it resumes from here or earlier
    /// ([`State::carried_lost_from`]).
    pub lost_from: Option<u64>,
    /// Bytes of the live frames in `resuming`.
    pub held_bytes: usize,
    /// The id of the resume serving this subscription (0: none); a resume
    /// whose subscription was replaced or removed stops.
    pub resume: u64,
    /// The highest sequence queued for the client on this topic (a data
    /// message, or the end of a gap message): a private topic's heartbeat
    /// reports it rather than the bus's last sequence, which moves with
    /// every account's events.
    pub told: Option<u64>,
}

/// What a resume holds back: a live frame, or a run the live reader lost.
#[derive(Debug)]
pub enum Held {
    /// A live frame.
    Frame(Arc<Frame>),
    /// `count` sequences `from..=to` the gateway's bus reader lost.
    Lost {
        /// First lost sequence.
        from: u64,
        /// Last lost sequence.
        to: u64,
        /// How many.
        count: u64,
    },
}

impl Sub {
    /// Holds `h` back for the resume; the oldest held entries go once the
    /// hold exceeds [`RESUME_HOLD`] entries or `budget` bytes (the resume
    /// reads those from the ring or the WAL itself).
    fn hold(&mut self, h: Held, budget: usize) {
        let Some(hold) = &mut self.resuming else {
            return;
        };
        if let Held::Frame(f) = &h {
            self.held_bytes += f.text.len();
        }
        hold.push_back(h);
        while hold.len() > 1 && (hold.len() > RESUME_HOLD || self.held_bytes > budget) {
            if let Some(Held::Frame(f)) = hold.pop_front() {
                self.held_bytes -= f.text.len();
            }
        }
    }
}

impl Held {
    fn first(&self) -> u64 {
        match self {
            Held::Frame(f) => f.seq,
            Held::Lost { from, .. } => *from,
        }
    }
}

/// Live frames a resume holds back at most (older ones are dropped from the
/// hold; the resume reads them from the ring or WAL itself).
const RESUME_HOLD: usize = 65_536;

/// What one topic holds back for a client over its budget, in sequence
/// order: held data messages (books conflated to the latest per
/// instrument, and trades that fit in the budget waiting behind an older
/// held book) and pending gaps between them.
///
/// Invariants: no gap's range `from..=to` contains a held message's
/// sequence, and between two consecutive held messages (and before the
/// first, and after the last) lies at most one gap; so the messages and
/// the gaps interleave in one sequence order, and there are at most
/// `frames + 1` gaps. Held books are bounded by the topic's instruments,
/// held trades by the budget (their bytes count in it, see
/// [`State::admit`]). Found by instrument (to conflate) and in sequence
/// order (to release the oldest first) without looking at the rest.
#[derive(Debug, Default)]
struct Backlog {
    /// Held book's sequence per instrument.
    by_key: HashMap<String, u64>,
    /// Held messages (books and trades) by sequence.
    frames: BTreeMap<u64, Arc<Frame>>,
    /// Bytes of the held trades (counted in the client's queued bytes).
    trade_bytes: usize,
    /// Pending gaps by their `from`.
    gaps: BTreeMap<u64, Gap>,
}

/// The oldest message a topic holds back.
#[derive(Debug)]
enum Oldest {
    Gap(Gap),
    Frame(Arc<Frame>),
}

impl Backlog {
    /// Holds `book` (newer than everything held); true if it replaced
    /// (conflated) an older one of its instrument. The gaps on either side
    /// of the replaced book then merge when no held trade separates them:
    /// nothing is sent between them any more, so one gap (range covering
    /// both, counts summed; the conflated book is not counted in it) keeps
    /// the invariants.
    fn hold(&mut self, book: &Arc<Frame>) -> bool {
        let old = self.by_key.insert(book.key.clone(), book.seq);
        if let Some(old) = old {
            self.frames.remove(&old);
            self.merge_around(old);
        }
        self.frames.insert(book.seq, Arc::clone(book));
        old.is_some()
    }

    /// Holds `trade` (newer than everything held) behind the older held
    /// messages.
    fn hold_trade(&mut self, trade: &Arc<Frame>) {
        self.trade_bytes += trade.text.len();
        self.frames.insert(trade.seq, Arc::clone(trade));
    }

    /// Merges the gap just before `seq` with the one just after it when no
    /// held message separates them any more (the book at `seq` was
    /// removed). O(log n).
    fn merge_around(&mut self, seq: u64) {
        let prev = self.frames.range(..seq).next_back().map(|(&q, _)| q);
        let next = self.frames.range(seq..).next().map(|(&q, _)| q);
        let before = self
            .gaps
            .range(..seq)
            .next_back()
            .map(|(&f, _)| f)
            .filter(|&f| prev.is_none_or(|p| f > p));
        let after = self
            .gaps
            .range(seq..)
            .next()
            .map(|(&f, _)| f)
            .filter(|&f| next.is_none_or(|n| f < n));
        if let (Some(before), Some(after)) = (before, after) {
            if let Some(a) = self.gaps.remove(&after) {
                if let Some(g) = self.gaps.get_mut(&before) {
                    g.to = g.to.max(a.to);
                    g.count += a.count;
                }
            }
        }
    }

    /// Removes the held message of sequence `seq`.
    fn remove(&mut self, seq: u64) -> Option<Arc<Frame>> {
        let f = self.frames.remove(&seq)?;
        match f.class {
            Class::Trade => self.trade_bytes -= f.text.len(),
            _ => {
                if self.by_key.get(&f.key) == Some(&seq) {
                    self.by_key.remove(&f.key);
                }
            }
        }
        Some(f)
    }

    /// Owes `count` sequences `from..=to`: extends the newest pending gap
    /// if no held message comes after it, else starts a gap after the
    /// newest held message. Returns how many held messages it dropped:
    /// losses come in sequence order (everything held is older than
    /// `from`), so none; a range reaching back over held messages (not
    /// expected) drops them and counts them in the gap, which keeps the
    /// order and the count exact.
    fn pend(&mut self, from: u64, to: u64, count: u64) -> u64 {
        let mut dropped = 0u64;
        while let Some((&q, _)) = self.frames.range(from..).next() {
            self.remove(q);
            dropped += 1;
        }
        // Every gap after the newest held message (at most one, unless
        // messages were dropped above) merges with this one.
        let after = self
            .frames
            .last_key_value()
            .map_or(0, |(&q, _)| q.saturating_add(1));
        let mut g = Gap {
            from,
            to,
            count: count + dropped,
        };
        // One at a time, no list: this runs in the bus reader, once per
        // loss told to a client over its budget.
        while let Some((&f, _)) = self.gaps.range(after..).next() {
            if let Some(m) = self.gaps.remove(&f) {
                g.from = g.from.min(m.from);
                g.to = g.to.max(m.to);
                g.count += m.count;
            }
        }
        self.gaps.insert(g.from, g);
        dropped
    }

    /// The oldest message held.
    fn oldest(&self) -> Option<Oldest> {
        let gap = self.gaps.first_key_value().map(|(_, g)| *g);
        let frame = self.frames.first_key_value().map(|(_, f)| f);
        match (gap, frame) {
            (Some(g), Some(f)) if g.from < f.seq => Some(Oldest::Gap(g)),
            (_, Some(f)) => Some(Oldest::Frame(Arc::clone(f))),
            (Some(g), None) => Some(Oldest::Gap(g)),
            (None, None) => None,
        }
    }

    /// Removes the oldest message held (the one [`oldest`](Self::oldest)
    /// returned).
    fn pop_oldest(&mut self, oldest: &Oldest) {
        match oldest {
            Oldest::Gap(g) => {
                self.gaps.remove(&g.from);
            }
            Oldest::Frame(f) => {
                self.remove(f.seq);
            }
        }
    }

    /// Whether it holds something a free room in the budget should let go
    /// (a pending gap, or a trade, whose bytes count already): not only
    /// books, which may wait for the queue to drain or the topic's next
    /// message.
    fn waiting(&self) -> bool {
        !self.gaps.is_empty() || self.trade_bytes > 0
    }

    fn has_gap(&self) -> bool {
        !self.gaps.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.gaps.is_empty()
    }
}

/// What room [`State::release`] needs to queue each held message.
#[derive(Debug, Clone, Copy)]
enum Room {
    /// Each fits in the budget (or the queue is empty).
    Fit,
    /// A data message of this many bytes of the topic follows: each book
    /// fits with room left for it; pending gaps, owed before the topic's
    /// next data message, go whatever the room, and held trades (counted
    /// in the budget already) too.
    Before(usize),
    /// Whatever the room (the queue drained).
    Any,
}

/// Why and how the connection is to be closed.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// Per-client counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Messages handed to the socket.
    pub sent: u64,
    /// Book messages held back and never sent: replaced by a newer book of
    /// their instrument, or dropped with their subscription (replaced or
    /// removed; a replacing one's snapshot has the latest book).
    pub conflated: u64,
    /// Messages skipped, each told in a gap message: trades over budget
    /// (and trades held behind a book when their subscription ends).
    pub skipped: u64,
}

/// FNV-1a, for the subscription map: a bus reader looks a topic up in
/// every client's map for every frame, and SipHash was a tenth of its
/// profile. The keys are the gateway's own topic names (a request naming
/// another is refused before it reaches the map), so there is nothing to
/// flood.
#[derive(Debug, Clone, Copy)]
pub struct TopicHasher(u64);

impl Default for TopicHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for TopicHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Subscriptions by topic name.
pub type Subs = HashMap<Arc<str>, Sub, BuildHasherDefault<TopicHasher>>;

/// The shared part of a client, behind [`Client::lock`].
#[derive(Debug, Default)]
pub struct State {
    /// Subscribed topics.
    pub subs: Subs,
    /// Accounts this client owns (from its token).
    pub accounts: HashSet<String>,
    /// When its token expires (seconds since the Unix epoch): no account
    /// event is delivered from then on.
    pub expires: Option<u64>,
    queue: VecDeque<Utf8Bytes>,
    bytes: usize,
    budget: usize,
    /// Per topic, what it holds back: held (conflated) books, the latest
    /// per instrument, trades waiting behind them, and pending gaps
    /// between them (see [`Backlog`]).
    held: BTreeMap<Arc<str>, Backlog>,
    /// Counters.
    pub counters: Counters,
    /// Set when the connection is to be closed.
    pub close: Option<CloseRequest>,
}

/// A connected client.
#[derive(Debug)]
pub struct Client {
    /// Id, unique within the gateway.
    pub id: u64,
    state: Mutex<State>,
    /// Woken when there is something to send or the connection is to close.
    pub wake: Notify,
    /// Times a resume of this client began waiting for room (tests only:
    /// they tell a resume that waits from one replaced before its first
    /// frame).
    #[cfg(test)]
    pub(super) room_waits: AtomicU64,
}

/// Control messages (replies, errors, gaps) may exceed the data budget by
/// this much; a client that lets them pile up beyond it is disconnected.
pub const CONTROL_SLACK: usize = 64 << 10;

/// Largest batch of queued messages joined into one WebSocket message.
const BATCH_BYTES: usize = 64 << 10;

impl Client {
    /// A client with a byte budget for unsent data.
    pub fn new(id: u64, budget: usize) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                budget,
                ..Default::default()
            }),
            wake: Notify::new(),
            #[cfg(test)]
            room_waits: AtomicU64::new(0),
        }
    }

    /// The state (a poisoned lock is taken over: every update keeps it
    /// consistent at each step).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the writer to close the connection (the first request wins).
    pub fn close(&self, code: u16, reason: &str) {
        let mut s = self.lock();
        if s.close.is_none() {
            s.close = Some(CloseRequest {
                code,
                reason: reason.to_owned(),
            });
        }
        drop(s);
        self.wake.notify_one();
    }

    /// A live frame from a bus reader: filtered, held for a resume, or
    /// queued by the backpressure rules. Never blocks on the network.
    pub fn offer(&self, frame: &Arc<Frame>) {
        let mut s = self.lock();
        let budget = s.budget;
        let Some(sub) = s.subs.get_mut(&frame.topic) else {
            return;
        };
        if sub.resuming.is_some() {
            sub.hold(Held::Frame(Arc::clone(frame)), budget);
            return;
        }
        // Only a queue that was empty needs a wake: the writer takes until
        // the queue is empty before it waits again (one wake per burst, not
        // one per frame per client).
        let was_empty = s.queue.is_empty();
        if s.admit(frame) {
            drop(s);
            if was_empty {
                self.wake.notify_one();
            }
        }
    }

    /// Takes the next batch to send: queued messages joined by `\n`, then,
    /// once the queue is empty, pending gap messages and held messages,
    /// each topic's in sequence order (while it is not, pending gaps and
    /// held trades that fit in the room the batch freed are queued behind
    /// it, after the older held books of their topic, which must fit too).
    pub fn take(&self) -> Option<(Utf8Bytes, u64)> {
        // Only the shared handles are taken under the lock; the copying
        // into one message happens after it, so a bus reader offering the
        // next frame never waits for a writer's memcpy.
        let mut parts: Vec<Utf8Bytes> = Vec::new();
        let mut len = 0usize;
        {
            let mut s = self.lock();
            while len < BATCH_BYTES {
                let Some(m) = s.queue.pop_front() else { break };
                s.bytes -= m.len();
                len += m.len() + 1;
                parts.push(m);
            }
            if !s.queue.is_empty() {
                // Room freed: pending gaps that now fit are queued behind
                // what is left (every earlier message of their topic), so a
                // queue kept full by one topic does not hold back another
                // topic's gap until it drains.
                s.queue_pending_gaps();
            } else {
                // Drained: every topic's held messages go, each topic's in
                // sequence order (its held books and its pending gaps
                // interleaved by sequence).
                let s = &mut *s;
                let topics: Vec<Arc<str>> = s.held.keys().cloned().collect();
                for topic in topics {
                    s.release(&topic, Room::Any);
                }
                while let Some(m) = s.queue.pop_front() {
                    s.bytes -= m.len();
                    parts.push(m);
                }
            }
            s.counters.sent += parts.len() as u64;
        }
        let n = parts.len() as u64;
        if n <= 1 {
            // A batch of one (the common case of a client keeping up): the
            // shared bytes themselves, not a copy.
            return parts.pop().map(|m| (m, n));
        }
        let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for p in &parts {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(p);
        }
        Some((Utf8Bytes::from(out), n))
    }

    /// `count` sequences `from..=to` of `topic` the gateway's own bus reader
    /// lost (it was lapped by the ring).
    pub fn lost_live(&self, topic: &str, from: u64, to: u64, count: u64) {
        let mut s = self.lock();
        let budget = s.budget;
        let Some(sub) = s.subs.get_mut(topic) else {
            return;
        };
        if sub.resuming.is_some() {
            // Told at the hand-over unless the resume delivers them itself
            // (a hole in the hold would otherwise pass silently).
            sub.hold(Held::Lost { from, to, count }, budget);
            return;
        }
        s.lost(topic, from, to, count);
        drop(s);
        self.wake.notify_one();
    }

    /// A resume of `topic` asks whether the live frames held back reach
    /// its position; if so they are handed over (queued) and the topic is
    /// live. True when the resume is to stop.
    pub fn hand_over(&self, topic: &str, resume: u64) -> bool {
        let mut s = self.lock();
        if s.close.is_some() {
            return true;
        }
        let st = &mut *s;
        let Some(sub) = st.subs.get_mut(topic).filter(|s| s.resume == resume) else {
            return true;
        };
        let next = sub.next;
        let Some(hold) = &mut sub.resuming else {
            return true;
        };
        if hold.front().is_none_or(|h| h.first() > next) {
            return false;
        }
        let hold = std::mem::take(hold);
        sub.resuming = None;
        sub.held_bytes = 0;
        for h in hold {
            match h {
                Held::Frame(f) => {
                    st.admit(&f);
                }
                Held::Lost { from, to, count } => {
                    let next = st.subs.get(topic).map_or(u64::MAX, |s| s.next);
                    if to >= next {
                        // The resume delivered `from..next` already.
                        let from2 = from.max(next);
                        let count = if from2 > from { to - from2 + 1 } else { count };
                        st.lost(topic, from2, to, count);
                    }
                }
            }
        }
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Resume `resume` of `topic` failed (told to the client already): the
    /// subscription goes live, and what neither the resume nor the hold
    /// delivers is a gap.
    pub fn resume_failed(&self, topic: &str, resume: u64) {
        let mut s = self.lock();
        let st = &mut *s;
        let Some(sub) = st.subs.get_mut(topic).filter(|s| s.resume == resume) else {
            return;
        };
        let Some(hold) = &sub.resuming else {
            return;
        };
        let next = sub.next;
        // A gap the subscription carried over from one it replaced starts
        // earlier, and covers this one.
        let lost_from = Some(sub.lost_from.map_or(next, |l| l.min(next)));
        match hold.front().map(Held::first) {
            Some(first) if first > next => {
                // `next..first` is lost: told as a gap when the next frame
                // is admitted (on a private topic, the client's own next
                // event, never another account's) or merged into a loss.
                sub.lost_from = lost_from;
                sub.next = first;
            }
            Some(_) => {}
            None => {
                sub.resuming = None;
                sub.held_bytes = 0;
                sub.lost_from = lost_from;
                return;
            }
        }
        drop(s);
        self.hand_over(topic, resume);
    }

    /// Whether resume `resume` of `topic` is still wanted (its subscription
    /// is neither replaced nor removed, and the connection is not closing).
    pub fn resume_wanted(&self, topic: &str, resume: u64) -> bool {
        let s = self.lock();
        s.close.is_none()
            && s.subs
                .get(topic)
                .is_some_and(|s| s.resume == resume && s.resuming.is_some())
    }

    /// Queues a control message (an error, a reply), outside the
    /// budget, up to [`CONTROL_SLACK`] beyond it (then the client is
    /// disconnected as a slow consumer).
    pub fn push_control(&self, text: String) {
        let mut s = self.lock();
        s.push_control(text);
        drop(s);
        self.wake.notify_one();
    }
}

/// A gap message: `count` messages of `topic` between `from` and `to`
/// (inclusive) will never be sent.
pub fn gap_json(topic: &str, from: u64, to: u64, count: u64) -> String {
    serde_json::json!({"type": "gap", "topic": topic, "from": from, "to": to, "count": count})
        .to_string()
}

/// The length of [`gap_json`]'s message, computed without building it: a
/// pending gap is measured against the room each time its topic's backlog
/// is released.
pub fn gap_json_len(topic: &str, from: u64, to: u64, count: u64) -> usize {
    /// Counts the bytes written to it.
    struct Counted(usize);
    impl std::io::Write for Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn digits(n: u64) -> usize {
        n.checked_ilog10().map_or(1, |d| d as usize + 1)
    }
    // The topic as a JSON string (quotes and escapes), as `gap_json`
    // writes it; writing a string to a counter cannot fail.
    let mut topic_len = Counted(0);
    let written = serde_json::to_writer(&mut topic_len, topic);
    debug_assert!(written.is_ok());
    // Every other byte of the message: its keys, punctuation and type.
    r#"{"count":,"from":,"to":,"topic":,"type":"gap"}"#.len()
        + digits(count)
        + digits(from)
        + digits(to)
        + topic_len.0
}

impl State {
    fn push(&mut self, text: Utf8Bytes) {
        self.bytes += text.len();
        self.queue.push_back(text);
    }

    /// [`Client::push_control`] under the caller's lock (which then sets
    /// the gauge and wakes the writer): a reply queued in the same lock
    /// hold as the state change it answers goes before anything that
    /// change lets in.
    pub fn push_control(&mut self, text: String) {
        self.push_control_owing(text, 0);
    }

    /// [`push_control`](Self::push_control) for a reply queued right after
    /// `owed` bytes of gap messages the client was owed anyway (the pending
    /// gaps [`tell_pending_gap`](Self::tell_pending_gap) moved ahead of
    /// it): those do not count against the slack, so a request is refused
    /// (and the client closed) exactly when it would have been had the gaps
    /// stayed pending, not because they were told earlier.
    pub fn push_control_owing(&mut self, text: String, owed: usize) {
        let queued = self.bytes.saturating_sub(owed);
        if queued + text.len() > self.budget.saturating_add(CONTROL_SLACK) {
            // A client that keeps sending requests but does not read their
            // replies: disconnected, not queued for without bound.
            if self.close.is_none() {
                self.close = Some(CloseRequest {
                    code: 1008,
                    reason: "slow consumer".into(),
                });
            }
            return;
        }
        self.push(Utf8Bytes::from(text));
    }

    /// Unsent bytes.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the client's token has expired; if so the connection is
    /// marked for closing.
    pub fn expired(&mut self) -> bool {
        let expired = self
            .expires
            .is_some_and(|exp| super::auth::now_secs() >= exp);
        if expired && self.close.is_none() {
            self.close = Some(CloseRequest {
                code: 1008,
                reason: "token expired".into(),
            });
        }
        expired
    }

    /// Whether `frame` passes the topic's instrument filter and ownership.
    fn wants(&mut self, frame: &Frame) -> bool {
        match frame.class {
            Class::Account => self.accounts.contains(&frame.key) && !self.expired(),
            _ => self
                .subs
                .get(&frame.topic)
                .and_then(|s| s.instruments.as_ref())
                .is_none_or(|set| set.contains(&frame.key)),
        }
    }

    /// Queues `frame` by the backpressure rules (a subscribed, live topic);
    /// true if something was queued.
    pub fn admit(&mut self, frame: &Arc<Frame>) -> bool {
        let Some(sub) = self.subs.get_mut(&frame.topic) else {
            return false;
        };
        if frame.seq < sub.next {
            return false; // already delivered by a resume
        }
        sub.next = frame.seq.saturating_add(1);
        let wanted = self.wants(frame);
        // On a private topic the gap a failed resume left waits for the
        // client's own next event: ending it at another account's event
        // would tell when that account had one. (Every sequence up to the
        // own event could have been the client's, so the gap covers them.)
        let mut owed_gap = false;
        if wanted || frame.class != Class::Account {
            let lost_from = self
                .subs
                .get_mut(&frame.topic)
                .and_then(|sub| sub.lost_from.take());
            if let Some(from) = lost_from.filter(|&f| f < frame.seq) {
                // What a failed resume did not deliver.
                let to = frame.seq - 1;
                self.gap(&frame.topic, from, to, to - from + 1);
                owed_gap = true;
            }
        }
        if !wanted || self.close.is_some() {
            // A gap queued (or pending) above still wants the writer.
            return owed_gap;
        }
        let len = frame.text.len();
        // What the topic holds back (older books and trades, pending gaps)
        // goes first, in sequence order; if it does not all fit, this frame
        // is held back too.
        if self.bytes + len <= self.budget && self.release(&frame.topic, Room::Before(len)) {
            self.push(frame.text.clone());
            if let Some(sub) = self.subs.get_mut(&frame.topic) {
                sub.told = Some(frame.seq);
            }
            return true;
        }
        match frame.class {
            Class::Trade if self.bytes + len <= self.budget => {
                // It fits in the budget, but an older held book of its
                // topic does not fit before it: it waits behind that book
                // (its bytes counted now, so the queue and the held trades
                // stay within the budget) and goes in order.
                self.bytes += len;
                self.held
                    .entry(Arc::clone(&frame.topic))
                    .or_default()
                    .hold_trade(frame);
            }
            Class::Trade => {
                self.pend(&frame.topic, frame.seq, frame.seq, 1);
                self.counters.skipped += 1;
            }
            Class::Book => {
                if self
                    .held
                    .entry(Arc::clone(&frame.topic))
                    .or_default()
                    .hold(frame)
                {
                    self.counters.conflated += 1;
                }
            }
            Class::Account => {
                self.close = Some(CloseRequest {
                    code: 1008,
                    reason: "slow consumer".into(),
                });
            }
        }
        true
    }

    /// Tells the client that `count` sequences `from..=to` of `topic` are
    /// lost (the gateway's own reader was lapped, or neither the ring nor
    /// the WAL holds them).
    pub fn lost(&mut self, topic: &str, from: u64, to: u64, count: u64) {
        if let Some(sub) = self.subs.get_mut(topic) {
            sub.next = sub.next.max(to.saturating_add(1));
            // A failed resume's gap still pending starts before this loss:
            // one gap covering both, told now (its end is the loss's, told
            // to every subscriber alike, so it names no account's event).
            let (from, count) = match sub.lost_from.take() {
                Some(l) if l < from => (l, count + (from - l)),
                Some(l) if l <= to => (from, count),
                // Past this loss (cannot happen: a pending gap ends at the
                // next frame): still pending.
                other => {
                    sub.lost_from = other;
                    (from, count)
                }
            };
            self.gap(topic, from, to, count);
        }
    }

    /// Queues the pending backpressure gaps of `topic` now, ahead of their
    /// turn (told once room frees), as one gap (range covering them, counts
    /// summed): a subscription replacing the one that lost those messages
    /// tells it before its own reply, where it is the old one's loss, not
    /// after it, where it would name sequences a resume of the new one then
    /// sends. The replaced subscription's held books are dropped (counted
    /// conflated): the new one's snapshot, after the reply, has the latest
    /// book of each instrument it wants; its held trades are lost with it
    /// (counted in that gap and `skipped`). Returns the bytes of the gap
    /// message it queued.
    pub(super) fn tell_pending_gap(&mut self, topic: &str) -> usize {
        let Some(held) = self.held.remove(topic) else {
            return 0;
        };
        self.bytes -= held.trade_bytes;
        let before = self.bytes;
        // Held trades are lost with the subscription: counted in the
        // gap (skipped); held books conflated.
        let mut told: Option<Gap> = None;
        let mut owe = |from: u64, to: u64, count: u64| {
            let g = told.get_or_insert(Gap { from, to, count: 0 });
            g.from = g.from.min(from);
            g.to = g.to.max(to);
            g.count += count;
        };
        for f in held.frames.values() {
            if f.class == Class::Trade {
                owe(f.seq, f.seq, 1);
                self.counters.skipped += 1;
            } else {
                self.counters.conflated += 1;
            }
        }
        for g in held.gaps.values() {
            owe(g.from, g.to, g.count);
        }
        if let Some(g) = told {
            self.tell(topic, g.from, g.to, g.count);
        }
        self.bytes - before
    }

    /// Where the gap of a failed resume that the subscription to `topic`
    /// still owes starts ([`Sub::lost_from`], pending until its next
    /// frame), for the subscription replacing it, resuming from `resume`
    /// (None: live), to carry over: told at the new one's first frame, as
    /// it would have been at the old one's, from there up to that frame.
    /// None if there is none, or if the new one resumes from its start or
    /// earlier (it delivers those sequences itself).
    pub(super) fn carried_lost_from(&self, topic: &str, resume: Option<u64>) -> Option<u64> {
        let from = self.subs.get(topic)?.lost_from?;
        resume.is_none_or(|r| r > from).then_some(from)
    }

    /// Removes the subscription to `topic`; None if there is none. Its
    /// pending gaps are queued now (ahead of the caller's reply) and its
    /// held books dropped (no data of it after the reply; counted
    /// conflated), as [`tell_pending_gap`](Self::tell_pending_gap) does.
    /// A failed resume's gap still pending ([`Sub::lost_from`]) is told
    /// too, up to `read_to`, the last sequence the gateway's reader read of
    /// the topic: none of those reached the client (a frame offered since
    /// the failure would have told the gap, and one offered after this is
    /// not delivered). The caller passes None for a private topic, whose
    /// reader's position would tell the client when other accounts had
    /// events: that gap is then dropped untold. A subscription still
    /// resuming (one that carried the gap over, [`carried_lost_from`](Self::carried_lost_from))
    /// owes it only up to where its resume stands: what comes after is the
    /// resume's to deliver (in the ring or the WAL), ended by this
    /// unsubscribe, not lost, as for any resume unsubscribed. Returns the
    /// bytes of the gaps queued, owed to the client whatever it asked.
    pub(super) fn unsubscribe(&mut self, topic: &str, read_to: Option<u64>) -> Option<usize> {
        let sub = self.subs.get(topic)?;
        let lost_from = sub.lost_from;
        // While resuming, `next` is where the resume stands: a pending
        // gap means it delivered nothing since (its first frame would
        // have told it), only passed sequences it does not forward.
        // (`u64::MAX`: the reader read nothing yet.)
        let read_to = read_to.filter(|&to| to != u64::MAX);
        let read_to = match &sub.resuming {
            Some(_) => read_to.and_then(|to| Some(to.min(sub.next.checked_sub(1)?))),
            None => read_to,
        };
        let mut told = self.tell_pending_gap(topic);
        if let (Some(from), Some(to)) = (lost_from, read_to) {
            if to >= from {
                let before = self.bytes;
                self.tell(topic, from, to, to - from + 1);
                told += self.bytes - before;
            }
        }
        self.subs.remove(topic);
        Some(told)
    }

    /// Owes the client a gap of `count` sequences `from..=to` of `topic`.
    /// A gap still pending for the topic (told once room frees) comes
    /// before it: the newest is extended if no held message follows it
    /// (else this one is pending after the newest held message), so gaps
    /// stay in order. Otherwise the gap message is queued if it fits in the
    /// budget (or the queue is empty) and no older message of the topic is
    /// held back (those go first, if they fit), else it becomes a pending
    /// gap: a client that does not read is owed at most one gap per held
    /// message and one more per topic, however many losses it misses, and
    /// is told all of them (the ranges covering, the counts exact) once it
    /// reads.
    fn gap(&mut self, topic: &str, from: u64, to: u64, count: u64) {
        let pending = self.held.get(topic).is_some_and(Backlog::has_gap);
        self.pend(topic, from, to, count);
        if !pending {
            self.release(topic, Room::Fit);
        }
    }

    /// Owes `count` sequences `from..=to` of `topic` as a pending gap (see
    /// [`Backlog::pend`]): the newest pending gap extended over them, or a
    /// new one after the newest held message, which keeps its place.
    fn pend(&mut self, topic: &str, from: u64, to: u64, count: u64) {
        let dropped = match self.held.get_mut(topic) {
            Some(held) => {
                let trade_bytes = held.trade_bytes;
                let dropped = held.pend(from, to, count);
                // Held trades dropped (not expected, see `Backlog::pend`)
                // no longer count in the queued bytes.
                self.bytes -= trade_bytes - held.trade_bytes;
                dropped
            }
            None => {
                let mut held = Backlog::default();
                let dropped = held.pend(from, to, count);
                self.held.insert(Arc::from(topic), held);
                dropped
            }
        };
        self.counters.skipped += dropped;
    }

    /// Queues each topic's pending gaps and held trades that fit in the
    /// budget, behind the held books of its topic older than each (which
    /// must fit too), each topic up to its first message that does not
    /// fit. A topic that stops there does not stop the others: its held
    /// book may be larger than the room another topic's gap needs.
    fn queue_pending_gaps(&mut self) {
        let topics: Vec<Arc<str>> = self
            .held
            .iter()
            .filter(|(_, h)| h.waiting())
            .map(|(t, _)| Arc::clone(t))
            .collect();
        for topic in topics {
            self.release(&topic, Room::Fit);
        }
    }

    /// Queues what `topic` holds back (its held books and its pending
    /// gaps) in sequence order while `room` lets each in; stops at the
    /// first it does not, so nothing of the topic ever overtakes an older
    /// message of it. True when nothing of the topic is held any more.
    /// Looks only at the oldest held message each turn (O(log n) per
    /// message it queues, not O(n) per call: the bus reader calls this per
    /// frame).
    fn release(&mut self, topic: &str, room: Room) -> bool {
        loop {
            let Some(oldest) = self.held.get(topic).and_then(Backlog::oldest) else {
                self.held.remove(topic);
                return true;
            };
            let fits = match &oldest {
                Oldest::Gap(g) => match room {
                    Room::Fit => self.fits(gap_json_len(topic, g.from, g.to, g.count)),
                    // Owed before the topic's next data message, whatever
                    // the room (as small as a gap message is).
                    Room::Before(_) | Room::Any => true,
                },
                // A held trade's bytes count in the budget already.
                Oldest::Frame(f) if f.class == Class::Trade => true,
                Oldest::Frame(b) => {
                    scanned(1);
                    match room {
                        Room::Fit => self.fits(b.text.len()),
                        Room::Before(len) => self.bytes + b.text.len() + len <= self.budget,
                        Room::Any => true,
                    }
                }
            };
            if !fits {
                return false;
            }
            if let Some(held) = self.held.get_mut(topic) {
                held.pop_oldest(&oldest);
                if held.is_empty() {
                    self.held.remove(topic);
                }
            }
            match oldest {
                Oldest::Gap(g) => self.tell(topic, g.from, g.to, g.count),
                Oldest::Frame(b) => {
                    if b.class == Class::Trade {
                        self.bytes -= b.text.len(); // counted again by `push`
                    }
                    self.push(b.text.clone());
                    if let Some(sub) = self.subs.get_mut(topic) {
                        sub.told = sub.told.max(Some(b.seq));
                    }
                }
            }
        }
    }

    /// Whether a message of `len` bytes fits in the budget now (or the
    /// queue is empty: a message larger than the budget still goes).
    fn fits(&self, len: usize) -> bool {
        self.queue.is_empty() || self.bytes + len <= self.budget
    }

    /// Queues a gap message now, whatever the room (a pending gap whose
    /// turn came), and records its end as told.
    fn tell(&mut self, topic: &str, from: u64, to: u64, count: u64) {
        self.push(Utf8Bytes::from(gap_json(topic, from, to, count)));
        if let Some(sub) = self.subs.get_mut(topic) {
            sub.told = sub.told.max(Some(to));
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Held books `State::release` looked at (this thread's, for tests).
    static SCANNED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts `n` held books looked at by `State::release` (tests only).
#[inline]
fn scanned(_n: u64) {
    #[cfg(test)]
    SCANNED.with(|c| c.set(c.get() + _n));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(seq: u64) -> Arc<Frame> {
        Arc::new(Frame {
            topic: Arc::from("t"),
            seq,
            class: Class::Trade,
            key: "AAA".into(),
            text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    fn sent(c: &Client) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some((batch, _)) = c.take() {
            out.extend(batch.split('\n').map(|l| serde_json::from_str(l).unwrap()));
        }
        out
    }

    /// What the client was sent, as "SEQ" and "gap FROM..TO xCOUNT".
    /// Subscribes `c` to `topic` with a resume (number `resume`) under way
    /// from `next`, nothing held yet.
    fn resuming(c: &Client, topic: &str, next: u64, resume: u64) {
        c.lock().subs.insert(
            Arc::from(topic),
            Sub {
                next,
                resuming: Some(VecDeque::new()),
                resume,
                ..Default::default()
            },
        );
    }

    fn script(c: &Client) -> Vec<String> {
        sent(c)
            .iter()
            .map(|v| match v.get("type") {
                Some(t) if t == "gap" => format!("gap {}..{} x{}", v["from"], v["to"], v["count"]),
                _ => v["seq"].to_string(),
            })
            .collect()
    }

    #[test]
    fn regression_a_reader_loss_during_a_backpressure_gap_is_told_in_order() {
        // Room for two trades.
        let one = trade(0).text.len();
        let c = Client::new(1, 2 * one);
        c.lock().subs.insert(Arc::from("t"), Sub::default());
        for seq in 0..4 {
            c.offer(&trade(seq)); // 2 and 3 skipped: over budget
        }
        c.lost_live("t", 4, 5, 2); // the reader was lapped over 4..=5
        c.offer(&trade(6)); // still over budget: skipped
        let first = script(&c);
        c.offer(&trade(7));
        let mut all = first;
        all.extend(script(&c));
        // Every gap starts right after what came before it.
        let mut expect = 0u64;
        for m in &all {
            if let Some(g) = m.strip_prefix("gap ") {
                let (from, rest) = g.split_once("..").unwrap();
                let to = rest.split_once(' ').unwrap().0;
                assert_eq!(from.parse::<u64>().unwrap(), expect, "{all:?}");
                expect = to.parse::<u64>().unwrap() + 1;
            } else {
                assert_eq!(m.parse::<u64>().unwrap(), expect, "{all:?}");
                expect += 1;
            }
        }
        assert_eq!(expect, 8, "{all:?}");
    }

    fn book(seq: u64) -> Arc<Frame> {
        Arc::new(Frame {
            topic: Arc::from("b"),
            seq,
            class: Class::Book,
            key: "AAA".into(),
            text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    /// Losses of the gateway's own bus reader were queued as one gap
    /// message each whatever the client's queue held: on a books topic
    /// (no backpressure gap to merge into) a client that does not read
    /// collected one message per loss without limit.
    #[test]
    fn regression_reader_losses_for_a_stalled_client_queued_gap_messages_without_bound() {
        // Room for two books.
        let one = book(0).text.len();
        let c = Client::new(1, 2 * one);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        for seq in 0..4 {
            c.offer(&book(seq)); // 2 and 3 conflated: over budget
        }
        let before = c.lock().queue.len();
        const LOSSES: u64 = 1000;
        for i in 0..LOSSES {
            // Two sequences lost, then a book (conflated) after each.
            let from = 4 + 3 * i;
            c.lost_live("b", from, from + 1, 2);
            c.offer(&book(from + 2));
        }
        let queued = c.lock().queue.len() - before;
        assert!(
            queued <= 1,
            "{LOSSES} losses of a stalled client queued {queued} gap messages"
        );
        // Held back: the latest book and one gap before it (each book
        // replaced merged the gaps on either side of it).
        {
            let s = c.lock();
            let held = &s.held["b"];
            assert_eq!((held.frames.len(), held.gaps.len()), (1, 1), "{held:?}");
        }
        // Nothing of what was lost goes untold: one gap covering every
        // loss, then the latest book. The books replaced in between are
        // conflated, not counted in the gap.
        let last = 4 + 3 * (LOSSES - 1);
        assert_eq!(
            script(&c),
            [
                "0".to_owned(),
                "1".to_owned(),
                format!("gap 4..{} x{}", last + 1, 2 * LOSSES),
                format!("{}", last + 2),
            ]
        );
        let s = c.lock();
        assert_eq!((s.counters.skipped, s.counters.conflated), (0, LOSSES + 1));
        drop(s);
        // A client keeping up is told each loss at once, on its own.
        c.lost_live("b", 5000, 5001, 2);
        assert_eq!(script(&c), ["gap 5000..5001 x2"]);
    }

    /// A topic's pending gap was told only once the whole queue drained
    /// (or before the topic's next data message): a client kept over its
    /// budget by a busy topic, whose queue never drains, was never told
    /// what a quiet topic lost, however much room each batch freed.
    #[test]
    fn regression_a_quiet_topics_pending_gap_is_told_when_room_frees() {
        let big = |topic: &str, seq: u64| {
            Arc::new(Frame {
                topic: Arc::from(topic),
                seq,
                class: Class::Trade,
                key: "AAA".into(),
                text: Utf8Bytes::from(format!(
                    "{{\"seq\":{seq},\"pad\":\"{}\"}}",
                    "x".repeat(1000)
                )),
            })
        };
        // Room for several batches, so taking one leaves the queue full.
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("busy"), Sub::default());
        c.lock().subs.insert(Arc::from("quiet"), Sub::default());
        let mut seq = 0;
        let mut fill = |c: &Client| {
            while c.lock().queued_bytes() + big("busy", 0).text.len() <= budget {
                c.offer(&big("busy", seq));
                seq += 1;
            }
            // One more: skipped, a pending gap of the busy topic.
            c.offer(&big("busy", seq));
            seq += 1;
        };
        fill(&c);
        // Control messages fill the last bytes: the gap does not fit.
        let room = budget - c.lock().queued_bytes();
        if room >= 2 {
            c.push_control(format!("\"{}\"", "y".repeat(room - 2)));
        }
        // The quiet topic's bus reader loses 7..=9 while the queue is full.
        c.lost_live("quiet", 7, 9, 3);
        let told = told_between_reads(&c, "quiet", if cfg!(miri) { 2 } else { 5 }, |c| {
            // The busy topic fills the room again: the queue never drains.
            fill(c);
            assert!(c.lock().queued_bytes() > 0);
        });
        assert_eq!(told, [gap_json("quiet", 7, 9, 3)], "the quiet topic's loss");
    }

    /// The lines about `topic` in `reads` batches the writer takes from
    /// `c`, calling `after` after each read.
    fn told_between_reads(
        c: &Client,
        topic: &str,
        reads: usize,
        mut after: impl FnMut(&Client),
    ) -> Vec<String> {
        let needle = format!("\"{topic}\"");
        let mut told = Vec::new();
        for _ in 0..reads {
            let (batch, _) = c.take().unwrap();
            told.extend(
                batch
                    .split('\n')
                    .filter(|l| l.contains(&needle))
                    .map(str::to_owned),
            );
            after(c);
        }
        told
    }

    /// Room freed by a batch let pending gaps (and held trades) go topic by
    /// topic, but stopped at the first topic whose release stopped: a
    /// topic blocked by a held book larger than the room kept every later
    /// topic's gap waiting, which (with a busy topic keeping the queue from
    /// draining) was never told, though it fitted.
    #[test]
    fn regression_a_topic_blocked_by_a_held_book_kept_other_topics_gaps_waiting() {
        let frame = |topic: &str, seq: u64, class: Class, pad: usize| {
            Arc::new(Frame {
                topic: Arc::from(topic),
                seq,
                class,
                key: "AAA".into(),
                text: Utf8Bytes::from(format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(pad))),
            })
        };
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        for t in ["a", "b", "c"] {
            c.lock().subs.insert(Arc::from(t), Sub::default());
        }
        let mut seq = 0;
        let mut fill = |c: &Client| {
            // The busy topic "c" fills the budget, one more skipped.
            while c.lock().queued_bytes() + frame("c", 0, Class::Trade, 1000).text.len() <= budget {
                c.offer(&frame("c", seq, Class::Trade, 1000));
                seq += 1;
            }
            c.offer(&frame("c", seq, Class::Trade, 1000));
            seq += 1;
        };
        fill(&c);
        // Topic "a" (first in order): a book larger than the room a batch
        // frees is held, a loss after it pending behind it.
        c.offer(&frame("a", 10, Class::Book, 2 * BATCH_BYTES));
        c.lost_live("a", 11, 12, 2);
        // Control messages fill the last bytes: "b"'s gap does not fit now.
        let room = budget - c.lock().queued_bytes();
        if room >= 2 {
            c.push_control(format!("\"{}\"", "y".repeat(room - 2)));
        }
        c.lost_live("b", 7, 9, 3);
        let told = told_between_reads(&c, "b", if cfg!(miri) { 2 } else { 4 }, |c| {
            fill(c);
            assert!(c.lock().held.contains_key("a"), "the big book still held");
        });
        assert_eq!(told, [gap_json("b", 7, 9, 3)], "the quiet topic's loss");
    }

    /// A client of books topic "b" with `budget` bytes: books 100 and 101
    /// of AAA queued, 110 of BBB held (over the budget when it is room for
    /// two books).
    fn two_books_and_one_held(budget: usize) -> Client {
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        c.offer(&book_of(100, "AAA"));
        c.offer(&book_of(101, "AAA"));
        c.offer(&book_of(110, "BBB"));
        c
    }

    fn book_of(seq: u64, key: &str) -> Arc<Frame> {
        Arc::new(Frame {
            topic: Arc::from("b"),
            seq,
            class: Class::Book,
            key: key.into(),
            // Larger than a gap message.
            text: Utf8Bytes::from(format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(200))),
        })
    }

    /// Asserts that the messages of `script` (one topic) go in sequence
    /// order: each data message and gap starts after the end of the one
    /// before it.
    fn assert_in_order(script: &[String]) {
        let mut last: Option<u64> = None;
        for m in script {
            let (first, end) = match m.strip_prefix("gap ") {
                Some(g) => {
                    let (from, rest) = g.split_once("..").unwrap();
                    let to = rest.split_once(' ').unwrap().0;
                    (from.parse::<u64>().unwrap(), to.parse::<u64>().unwrap())
                }
                None => {
                    let seq = m.parse::<u64>().unwrap();
                    (seq, seq)
                }
            };
            assert!(
                last.is_none_or(|l| first > l),
                "{m} came after {last:?}: {script:?}"
            );
            last = Some(end);
        }
    }

    /// A held (conflated) book went out only once the queue drained, while
    /// a gap of its topic with later sequences could be queued (or told)
    /// before it: the client read the gap, then a book older than it
    /// (sequences going backwards).
    #[test]
    fn regression_a_held_book_older_than_a_gap_came_after_it() {
        // Room for two books.
        let one = book_of(100, "AAA").text.len();
        let c = two_books_and_one_held(2 * one);
        c.lost_live("b", 121, 130, 10); // the reader was lapped
        let got = script(&c);
        assert_in_order(&got);
        assert_eq!(got, ["100", "101", "110", "gap 121..130 x10"]);

        // A gap that fits in the budget, a book held before it.
        let c = two_books_and_one_held(2 * one + gap_json("b", 121, 130, 10).len());
        c.lost_live("b", 121, 130, 10);
        c.offer(&book_of(131, "CCC"));
        let got = script(&c);
        assert_in_order(&got);
        assert_eq!(got, ["100", "101", "110", "gap 121..130 x10", "131"]);

        // A book that fits once room frees goes after the older books held
        // of its topic (a queue kept over several batches, so taking one
        // does not drain it).
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        let mut seq = 0;
        while c.lock().queued_bytes() + one <= budget {
            c.offer(&book_of(seq, "AAA"));
            seq += 1;
        }
        c.offer(&book_of(seq, "BBB")); // over budget: held
        let held = seq;
        c.take().unwrap(); // room frees, the queue does not drain
        assert!(c.lock().queued_bytes() > 0);
        c.offer(&book_of(seq + 1, "CCC"));
        let got = script(&c);
        assert_in_order(&got);
        assert_eq!(
            got[got.len() - 2..],
            [held.to_string(), (held + 1).to_string()]
        );
    }

    /// A pending gap extended past a held book's sequence dropped that
    /// book (counted in the gap and `skipped`) to keep the order: the
    /// instrument's book at the client then stayed old until it next
    /// updated, with nothing saying which instrument was stale. Now each
    /// held book keeps its place between the gaps around it.
    #[test]
    fn regression_a_gap_extended_past_a_held_book_dropped_it_and_left_the_clients_book_stale() {
        let one = book_of(100, "AAA").text.len();
        let c = Client::new(1, 2 * one);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        c.offer(&book_of(100, "AAA"));
        c.offer(&book_of(101, "AAA"));
        c.lost_live("b", 105, 109, 5); // pending: no room
        c.offer(&book_of(110, "BBB")); // held, after the gap
        c.offer(&book_of(111, "CCC")); // held, after the gap
        c.lost_live("b", 112, 120, 9); // a loss after the held books
        c.offer(&book_of(121, "BBB")); // replaces 110 (conflated)
        let got = script(&c);
        assert_in_order(&got);
        assert_eq!(
            got,
            [
                "100",
                "101",
                "gap 105..109 x5",
                "111",
                "gap 112..120 x9",
                "121"
            ]
        );
        let s = c.lock();
        assert_eq!(s.counters.skipped, 0, "no book dropped");
        assert_eq!(s.counters.conflated, 1, "110, replaced by 121");
        drop(s);

        // A replaced book's neighbouring gaps merge into one (exact count,
        // the conflated book not in it).
        let c = Client::new(1, 2 * one);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        c.offer(&book_of(100, "AAA"));
        c.offer(&book_of(101, "AAA"));
        c.lost_live("b", 105, 109, 5); // pending: no room
        c.offer(&book_of(110, "AAA")); // held
        c.lost_live("b", 111, 115, 5); // a second gap, after 110
        c.offer(&book_of(116, "BBB")); // held
        c.lost_live("b", 117, 119, 3); // a third gap, after 116
        c.offer(&book_of(121, "AAA")); // replaces 110: 105..109 and 111..115 merge
        {
            let s = c.lock();
            let held = &s.held["b"];
            assert_eq!((held.frames.len(), held.gaps.len()), (2, 2), "{held:?}");
        }
        let got = script(&c);
        assert_in_order(&got);
        assert_eq!(
            got,
            [
                "100",
                "101",
                "gap 105..115 x10",
                "116",
                "gap 117..119 x3",
                "121"
            ]
        );
        let s = c.lock();
        assert_eq!((s.counters.skipped, s.counters.conflated), (0, 1));
    }

    /// `unsubscribe` dropped the topic's held books without counting them
    /// anywhere: `sent + conflated + skipped` fell short of what the
    /// client was offered.
    #[test]
    fn regression_unsubscribe_dropped_held_books_without_counting_them_conflated() {
        let one = book_of(100, "AAA").text.len();
        let c = two_books_and_one_held(2 * one);
        c.offer(&book_of(111, "CCC")); // held too
        let told = c.lock().unsubscribe("b", None);
        assert_eq!(told, Some(0), "no gap owed");
        assert_eq!(script(&c), ["100", "101"]);
        let s = c.lock();
        assert_eq!(s.counters.conflated, 2, "the two held books dropped");
        assert!(s.held.is_empty());
    }

    /// A slow client of a topic carrying trades and books of a few
    /// instruments, under random losses, offers and partial reads (a fixed
    /// pseudo-random script): what it receives is in sequence order, every
    /// instrument's last book received is its latest offered (none left
    /// stale), every offered frame is sent, conflated or counted in a gap
    /// (and every lost sequence counted), and the pending gaps never
    /// outnumber the held books + 1.
    #[test]
    fn a_slow_client_gets_every_instruments_latest_book_and_exact_gaps_in_order() {
        let one = book_of(0, "K0").text.len();
        let c = Client::new(1, 3 * one);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut got = Vec::new();
        let mut latest: HashMap<String, u64> = HashMap::new();
        let (mut offered, mut lost) = (0u64, 0u64);
        let mut seq = 0u64;
        let (mut most_gaps, mut held_trades) = (0, false);
        for _ in 0..if cfg!(miri) { 200 } else { 5_000 } {
            match next() % 8 {
                0..=3 => {
                    let key = format!("K{}", next() % 5);
                    latest.insert(key.clone(), seq);
                    c.offer(&book_of(seq, &key));
                    offered += 1;
                    seq += 1;
                }
                4 | 5 => {
                    c.offer(&Arc::new(Frame {
                        topic: Arc::from("b"),
                        seq,
                        class: Class::Trade,
                        key: "T".into(),
                        text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
                    }));
                    offered += 1;
                    seq += 1;
                }
                6 => {
                    let n = 1 + next() % 4;
                    c.lost_live("b", seq, seq + n - 1, n);
                    lost += n;
                    seq += n;
                }
                _ => {
                    if let Some((batch, _)) = c.take() {
                        got.extend(batch.split('\n').map(str::to_owned));
                    }
                }
            }
            let s = c.lock();
            if let Some(h) = s.held.get("b") {
                assert!(h.gaps.len() <= h.frames.len() + 1, "{h:?}");
                assert!(h.by_key.len() <= 5, "{h:?}");
                most_gaps = most_gaps.max(h.gaps.len());
                held_trades |= h.trade_bytes > 0;
            }
        }
        while let Some((batch, _)) = c.take() {
            got.extend(batch.split('\n').map(str::to_owned));
        }
        let got: Vec<serde_json::Value> = got
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let script: Vec<String> = got
            .iter()
            .map(|v| match v.get("type") {
                Some(t) if t == "gap" => format!("gap {}..{} x{}", v["from"], v["to"], v["count"]),
                _ => v["seq"].to_string(),
            })
            .collect();
        assert_in_order(&script);
        let data: HashSet<u64> = got
            .iter()
            .filter(|v| v.get("type").is_none())
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        for (key, last) in &latest {
            assert!(data.contains(last), "{key}'s latest book {last} never sent");
        }
        let gapped: u64 = got
            .iter()
            .filter(|v| v.get("type").is_some_and(|t| t == "gap"))
            .map(|v| v["count"].as_u64().unwrap())
            .sum();
        let s = c.lock();
        assert!(
            s.counters.conflated > 0 && s.counters.skipped > 0,
            "{:?}",
            s.counters
        );
        assert!(most_gaps >= 2, "never more than {most_gaps} gap pending");
        assert!(held_trades, "no trade ever waited behind a held book");
        assert_eq!(
            gapped,
            lost + s.counters.skipped,
            "every gap counted exactly"
        );
        assert_eq!(
            data.len() as u64 + s.counters.conflated + s.counters.skipped,
            offered,
            "every offered frame sent, conflated or skipped"
        );
    }

    /// A slow client of two topics (books and trades of a few instruments
    /// on one, trades on the other) with a budget of several batches, so
    /// most reads take part of the queue: under random offers, losses,
    /// control messages, re-subscriptions and stalls (fixed pseudo-random
    /// scripts), every step keeps the queued bytes equal to the queue's
    /// plus the held trades' (held trades within the budget, no gap over a
    /// held message, gaps at most held + 1); at the end the queue is empty
    /// with 0 bytes, what each topic sent is in sequence order, every
    /// offered frame was sent, conflated or skipped, every gap's count is
    /// exact, and every instrument's latest book was sent.
    #[test]
    fn a_slow_client_of_several_topics_read_in_part_keeps_order_counts_and_bytes() {
        let seeds = if cfg!(miri) { 1 } else { 6 };
        let steps = if cfg!(miri) { 300 } else { 3_000 };
        let (mut partial, mut held_trades) = (0, false);
        for seed in 1..=seeds {
            let (p, h) = several_topics_read_in_part(seed, steps);
            partial += p;
            held_trades |= h;
        }
        // The paths this is for were taken.
        assert!(partial > 0, "no read left part of the queue");
        assert!(
            cfg!(miri) || held_trades,
            "no trade ever waited behind a book"
        );
    }

    /// One script of the test above: how many reads left part of the
    /// queue, and whether a trade waited behind a held book.
    fn several_topics_read_in_part(seed: u64, steps: u64) -> (usize, bool) {
        let frame = |topic: &str, seq: u64, class: Class, key: &str, pad: usize| {
            Arc::new(Frame {
                topic: Arc::from(topic),
                seq,
                class,
                key: key.into(),
                text: Utf8Bytes::from(format!(
                    "{{\"seq\":{seq},\"topic\":\"{topic}\",\"pad\":\"{}\"}}",
                    "x".repeat(pad)
                )),
            })
        };
        let topics = ["b", "t"];
        let c = Client::new(1, 2 * BATCH_BYTES);
        for t in topics {
            c.lock().subs.insert(Arc::from(t), Sub::default());
        }
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut seq, mut offered, mut lost) = ([0u64; 2], 0u64, 0u64);
        let mut latest: HashMap<String, u64> = HashMap::new();
        let mut lines: Vec<String> = Vec::new();
        let (mut partial, mut held_trades) = (0, false);
        for step in 0..steps {
            // Stalls: a quarter of the time the client does not read.
            let stalled = (step / 250) % 2 == 1;
            let ti = (next() % 2) as usize;
            let topic = topics[ti];
            match next() % 32 {
                0..=23 => {
                    let (class, key) = if ti == 0 && next() % 2 == 0 {
                        let key = format!("K{}", next() % 6);
                        latest.insert(key.clone(), seq[ti]);
                        (Class::Book, key)
                    } else {
                        (Class::Trade, "T".to_owned())
                    };
                    let pad = 500 + (next() % 4000) as usize;
                    c.offer(&frame(topic, seq[ti], class, &key, pad));
                    offered += 1;
                    seq[ti] += 1;
                }
                24 | 25 => {
                    let n = 1 + next() % 4;
                    c.lost_live(topic, seq[ti], seq[ti] + n - 1, n);
                    lost += n;
                    seq[ti] += n;
                }
                26 => c.push_control(format!(
                    "{{\"type\":\"ctl\",\"pad\":\"{}\"}}",
                    "y".repeat((next() % 3000) as usize)
                )),
                27 if next() % 8 == 0 => {
                    // What `Hub::subscribe` does for a replaced subscription
                    // (no snapshot here: its held books are conflated).
                    let mut s = c.lock();
                    let owed = s.tell_pending_gap(topic);
                    s.subs.insert(
                        Arc::from(topic),
                        Sub {
                            next: seq[ti],
                            ..Default::default()
                        },
                    );
                    s.push_control_owing("{\"type\":\"ctl\"}".into(), owed);
                    if ti == 0 {
                        latest.clear();
                    }
                }
                _ if stalled => {}
                _ => {
                    if let Some((batch, _)) = c.take() {
                        lines.extend(batch.split('\n').map(str::to_owned));
                        partial += usize::from(!c.lock().queue.is_empty());
                    }
                }
            }
            let s = c.lock();
            let queued: usize = s.queue.iter().map(|m| m.len()).sum();
            let trades: usize = s.held.values().map(|h| h.trade_bytes).sum();
            assert_eq!(s.queued_bytes(), queued + trades, "seed {seed} step {step}");
            // Data (not gaps or replies, which may exceed it) stays
            // within the budget, held trades included.
            let data: usize = s
                .queue
                .iter()
                .filter(|m| m.starts_with("{\"seq\""))
                .map(|m| m.len())
                .sum();
            assert!(data + trades <= s.budget, "seed {seed} step {step}");
            for h in s.held.values() {
                let held: Vec<&u64> = h.frames.keys().collect();
                let gaps = &h.gaps;
                assert!(
                    gaps.len() <= held.len() + 1,
                    "seed {seed}: {held:?} {gaps:?}"
                );
                for g in h.gaps.values() {
                    let over = h.frames.range(g.from..=g.to).next();
                    assert!(over.is_none(), "seed {seed}: {held:?} {gaps:?}");
                }
            }
            held_trades |= trades > 0;
        }
        while let Some((batch, _)) = c.take() {
            lines.extend(batch.split('\n').map(str::to_owned));
        }
        let s = c.lock();
        assert_eq!(s.queued_bytes(), 0, "seed {seed}");
        assert!(s.held.is_empty(), "seed {seed}");
        let mut last: [Option<u64>; 2] = [None, None];
        let (mut books, mut data, mut gapped) = (HashSet::new(), 0u64, 0u64);
        for l in &lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ti = usize::from(v["topic"] != "b");
            let (first, end) = match v.get("type").and_then(|t| t.as_str()) {
                Some("ctl") => continue,
                Some("gap") => {
                    gapped += v["count"].as_u64().unwrap();
                    (v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap())
                }
                _ => {
                    data += 1;
                    let q = v["seq"].as_u64().unwrap();
                    if ti == 0 {
                        books.insert(q);
                    }
                    (q, q)
                }
            };
            let l_ = last[ti];
            assert!(
                l_.is_none_or(|l| first > l),
                "seed {seed}: {l} after {l_:?}"
            );
            last[ti] = Some(end);
        }
        assert_eq!(gapped, lost + s.counters.skipped, "seed {seed}");
        assert_eq!(
            data + s.counters.conflated + s.counters.skipped,
            offered,
            "seed {seed}"
        );
        for (key, q) in &latest {
            assert!(books.contains(q), "seed {seed}: {key}'s latest book {q}");
        }
        (partial, held_trades)
    }

    /// On a topic carrying trades and books, a trade that fitted in the
    /// budget but not behind the topic's oldest held book was skipped
    /// (told in a gap) although nothing forced a loss: it can wait behind
    /// the book, its bytes counted in the budget, and go in order.
    #[test]
    fn regression_a_trade_that_fits_the_budget_behind_a_held_book_was_skipped() {
        let one = book_of(0, "K0").text.len();
        let trade_of = |seq: u64| {
            Arc::new(Frame {
                topic: Arc::from("b"),
                seq,
                class: Class::Trade,
                key: "T".into(),
                text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
            })
        };
        let budget = 3 * one + 20;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        for seq in 0..4 {
            c.offer(&book_of(seq, &format!("K{seq}"))); // the last held
        }
        c.offer(&trade_of(4)); // fits the budget, not behind book 3
        let q = c.lock().queued_bytes();
        assert!(q <= budget, "queued {q} of a budget of {budget}");
        assert_eq!(script(&c), ["0", "1", "2", "3", "4"]);
        assert_eq!(c.lock().counters.skipped, 0);

        // Unsubscribed while it waits: the trade is told lost (before the
        // reply), the book conflated, and its bytes no longer queued.
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        for seq in 0..4 {
            c.offer(&book_of(seq, &format!("K{seq}")));
        }
        c.offer(&trade_of(4));
        let told = c.lock().unsubscribe("b", None).unwrap();
        assert_eq!(told, gap_json("b", 4, 4, 1).len());
        assert_eq!(script(&c), ["0", "1", "2", "gap 4..4 x1"]);
        let s = c.lock();
        assert_eq!((s.counters.conflated, s.counters.skipped), (1, 1));
        assert_eq!(s.queued_bytes(), 0);
    }

    /// Trades held behind a held book go as soon as a batch frees room for
    /// the book (the queue not drained), in order behind it; their bytes,
    /// counted in the budget while held, are counted once when queued, so
    /// the queued bytes return to 0 once everything is taken.
    #[test]
    fn held_trades_go_when_room_frees_and_the_queued_bytes_return_to_zero() {
        let one = book_of(0, "K0").text.len();
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        let mut seq = 0;
        while c.lock().queued_bytes() + one <= budget {
            c.offer(&book_of(seq, &format!("K{seq}")));
            seq += 1;
        }
        let held_book = seq;
        c.offer(&book_of(seq, "H")); // over budget: held
        seq += 1;
        let first_trade = seq;
        for _ in 0..3 {
            c.offer(&Arc::new(Frame {
                topic: Arc::from("b"),
                seq,
                class: Class::Trade,
                key: "T".into(),
                text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
            }));
            seq += 1;
        }
        {
            let s = c.lock();
            let trade_bytes = s.held["b"].trade_bytes;
            assert!(trade_bytes > 0, "the trades wait behind the held book");
            let queued: usize = s.queue.iter().map(|m| m.len()).sum();
            assert_eq!(s.queued_bytes(), queued + trade_bytes);
            assert!(s.queued_bytes() <= budget);
        }
        let (first, _) = c.take().unwrap(); // room frees, the queue does not drain
        assert!(c.lock().queued_bytes() > 0);
        assert!(c.lock().held.is_empty(), "the book and the trades went");
        let mut got: Vec<String> = first
            .split('\n')
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].to_string())
            .collect();
        got.extend(script(&c));
        assert_in_order(&got);
        let tail: Vec<String> = (held_book..first_trade + 3)
            .map(|q| q.to_string())
            .collect();
        assert_eq!(got[got.len() - 4..], tail);
        let s = c.lock();
        assert_eq!(s.queued_bytes(), 0, "bytes left counted after a drain");
        assert_eq!((s.counters.skipped, s.counters.conflated), (0, 0));
    }

    /// A frame that fits in the budget, behind a held book that fits but
    /// not together with it: the book is not queued ahead of it (which
    /// would take the queue over the budget); the frame waits behind it.
    #[test]
    fn held_books_go_ahead_of_a_frame_only_with_room_left_for_it() {
        let padded = |topic: &str, seq: u64, class: Class, pad: usize| {
            Arc::new(Frame {
                topic: Arc::from(topic),
                seq,
                class,
                key: "H".into(),
                text: Utf8Bytes::from(format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(pad))),
            })
        };
        let one = book_of(0, "K0").text.len();
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        c.lock().subs.insert(Arc::from("t"), Sub::default());
        let mut seq = 0;
        while c.lock().queued_bytes() + one <= budget {
            c.offer(&book_of(seq, &format!("K{seq}")));
            seq += 1;
        }
        let held = seq;
        c.offer(&book_of(seq, "H")); // over budget: held
        seq += 1;
        c.take().unwrap(); // room frees, the queue does not drain
        assert!(c.lock().queued_bytes() > 0);
        assert!(c.lock().held.contains_key("b"), "a held book alone waits");
        // Topic "t" fills the room up to the held book and half the
        // small frame of "b" that follows.
        let small = padded("b", seq + 1, Class::Trade, 0);
        let target = one + small.text.len() / 2;
        let mut t = 0;
        loop {
            let room = budget - c.lock().queued_bytes();
            let base = padded("t", t, Class::Trade, 0).text.len();
            let pad = (room - target).saturating_sub(base).min(1000);
            c.offer(&padded("t", t, Class::Trade, pad));
            t += 1;
            if budget - c.lock().queued_bytes() <= target {
                break;
            }
        }
        assert_eq!(budget - c.lock().queued_bytes(), target);
        c.offer(&small);
        let q = c.lock().queued_bytes();
        assert!(q <= budget, "queued {q} of a budget of {budget}");
        let got: Vec<String> = script(&c)
            .into_iter()
            .filter(|m| m.parse::<u64>().is_ok_and(|q| q >= held))
            .collect();
        // "t"'s sequences are below `held`'s; "b"'s in order.
        assert_eq!(got, [held.to_string(), (seq + 1).to_string()]);
    }

    /// A subscription replacing a books topic's told the topic's pending
    /// gap ahead of its reply but left the old subscription's held books
    /// held: they went after the gap (older sequences after it) and after
    /// the reply.
    #[test]
    fn regression_a_replaced_subscriptions_held_books_came_after_its_gap() {
        let one = book_of(100, "AAA").text.len();
        let c = two_books_and_one_held(2 * one);
        // Pending: no room. Then what `Hub::subscribe` does for the
        // replaced subscription.
        c.lost_live("b", 121, 130, 10);
        c.lock().tell_pending_gap("b");
        let got = script(&c);
        assert_in_order(&got);
        assert_eq!(got, ["100", "101", "gap 121..130 x10"]);
        assert_eq!(c.lock().counters.conflated, 1, "the dropped book");
    }

    /// `State::release` copied and sorted every held book of the topic on
    /// each call (each frame that fits, each batch taken with a gap
    /// pending), however few it then sent: with many instruments held,
    /// O(instruments) work per frame in the bus reader.
    #[test]
    fn regression_release_looks_only_at_the_books_it_sends() {
        let one = book_of(0, "K0").text.len();
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        let held = if cfg!(miri) { 50 } else { 2_000 };
        let mut seq = 0;
        while c.lock().queued_bytes() + one <= budget {
            c.offer(&book_of(seq, &format!("K{seq}")));
            seq += 1;
        }
        for _ in 0..held {
            c.offer(&book_of(seq, &format!("K{seq}"))); // over budget: held
            seq += 1;
        }
        c.take().unwrap(); // room frees, the queue does not drain
        assert!(c.lock().queued_bytes() > 0);
        SCANNED.with(|s| s.set(0));
        let sent_before = c
            .lock()
            .held
            .values()
            .map(|b| b.by_key.len())
            .sum::<usize>();
        // Small frames of the topic, each fitting: each releases the held
        // books that fit before it.
        let calls = 100;
        for i in 0..calls {
            c.offer(&Arc::new(Frame {
                topic: Arc::from("b"),
                seq: seq + i,
                class: Class::Trade,
                key: "T".into(),
                text: Utf8Bytes::from(format!("{{\"seq\":{}}}", seq + i)),
            }));
        }
        let left = c
            .lock()
            .held
            .values()
            .map(|b| b.by_key.len())
            .sum::<usize>();
        let released = (sent_before - left) as u64;
        let scanned = SCANNED.with(|s| s.get());
        assert!(released > 0 && left > 0, "released {released}, left {left}");
        assert!(
            scanned <= released + calls,
            "looked at {scanned} held books to send {released} in {calls} calls"
        );
    }

    /// Held books released ahead of a frame that fits leave room for it:
    /// the queue stays within the budget; and a pending gap queued as a
    /// batch frees room (the queue not drained) still waits behind the
    /// older held books of its topic.
    #[test]
    fn held_books_released_as_room_frees_keep_the_budget_and_the_order() {
        let one = book_of(0, "K0").text.len();
        let budget = 4 * BATCH_BYTES;
        let c = Client::new(1, budget);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        let mut seq = 0;
        while c.lock().queued_bytes() + one <= budget {
            c.offer(&book_of(seq, &format!("K{seq}")));
            seq += 1;
        }
        let first_held = seq;
        for _ in 0..3 {
            c.offer(&book_of(seq, &format!("K{seq}"))); // over budget: held
            seq += 1;
        }
        c.lost_live("b", seq, seq + 4, 5); // pending: no room
        let gap = format!("gap {seq}..{} x5", seq + 4);
        seq += 5;
        c.take().unwrap(); // room frees, the queue does not drain
        assert!(c.lock().queued_bytes() > 0);
        // The pending gap went behind the held books, which fit.
        let s = c.lock();
        assert!(s.held.is_empty(), "all released");
        drop(s);
        // Fill again up to the budget, then hold books of a next round.
        while c.lock().queued_bytes() + one <= budget {
            c.offer(&book_of(seq, &format!("K{seq}")));
            seq += 1;
        }
        c.offer(&book_of(seq, "H")); // over budget: held
        seq += 1;
        c.take().unwrap();
        // Each frame that fits releases the held book first; never over.
        for _ in 0..4 {
            c.offer(&book_of(seq, &format!("K{seq}")));
            seq += 1;
            let q = c.lock().queued_bytes();
            assert!(q <= budget, "queued {q} of a budget of {budget}");
        }
        let got = script(&c);
        assert_in_order(&got);
        let at = got
            .iter()
            .position(|m| *m == first_held.to_string())
            .unwrap();
        assert_eq!(
            got[at..at + 4],
            [
                first_held.to_string(),
                (first_held + 1).to_string(),
                (first_held + 2).to_string(),
                gap
            ]
        );

        // Room for a small frame but not for it and the held book: the
        // frame waits behind the book (held, counted in the budget), the
        // budget holds.
        let c = Client::new(1, 3 * one + 20);
        c.lock().subs.insert(Arc::from("b"), Sub::default());
        for seq in 0..4 {
            c.offer(&book_of(seq, &format!("K{seq}"))); // the last held
        }
        c.offer(&Arc::new(Frame {
            topic: Arc::from("b"),
            seq: 4,
            class: Class::Trade,
            key: "T".into(),
            text: Utf8Bytes::from("{\"seq\":4}"),
        }));
        let q = c.lock().queued_bytes();
        assert!(
            q <= 3 * one + 20,
            "queued {q} of a budget of {}",
            3 * one + 20
        );
        assert_eq!(script(&c), ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn regression_a_resume_hold_is_bounded_by_the_budget() {
        let one = trade(1000).text.len();
        let c = Client::new(1, 20 * one);
        resuming(&c, "t", 10, 7);
        for seq in 1000..3000 {
            c.offer(&trade(seq));
        }
        let held = c.lock().subs["t"].resuming.as_ref().unwrap().len();
        assert!(held <= 20, "{held} frames held for a budget of 20");
        // What was dropped from the hold the resume reads itself: no
        // hand-over before it reaches the oldest frame still held.
        assert!(!c.hand_over("t", 7));
    }

    #[test]
    fn regression_a_failed_resume_goes_live_with_a_gap() {
        let c = Client::new(1, 1 << 20);
        resuming(&c, "t", 10, 7);
        c.offer(&trade(20));
        c.offer(&trade(21));
        // The resume fails at 10 (a WAL it cannot read, no thread).
        c.resume_failed("t", 7);
        c.offer(&trade(22));
        assert_eq!(script(&c), ["gap 10..19 x10", "20", "21", "22"]);
        // Failing with nothing held: the gap runs to the next live frame.
        resuming(&c, "t", 30, 8);
        c.resume_failed("t", 8);
        c.offer(&trade(40));
        assert_eq!(script(&c), ["gap 30..39 x10", "40"]);
    }

    /// A failed resume's pending gap (from 10) is carried over by a
    /// subscription replacing it (`Hub::subscribe`) unless that one resumes
    /// from 10 or earlier; a resume that carries it tells it at its first
    /// frame, and, failing too, keeps its start (the older one).
    #[test]
    fn a_failed_resumes_gap_carried_to_a_replacing_resume_is_told_from_its_start() {
        let c = Client::new(1, 1 << 20);
        resuming(&c, "t", 10, 7);
        c.resume_failed("t", 7);
        {
            let s = c.lock();
            assert_eq!(s.carried_lost_from("t", None), Some(10));
            assert_eq!(s.carried_lost_from("t", Some(15)), Some(10));
            assert_eq!(s.carried_lost_from("t", Some(10)), None);
            assert_eq!(s.carried_lost_from("t", Some(3)), None);
            assert_eq!(s.carried_lost_from("other", None), None);
        }
        // Replaced by a resume from 15 carrying it: told before the
        // resume's first frame.
        let carrying = |resume| Sub {
            next: 15,
            resuming: Some(VecDeque::new()),
            resume,
            lost_from: Some(10),
            ..Default::default()
        };
        c.lock().subs.insert(Arc::from("t"), carrying(8));
        c.lock().admit(&trade(15));
        assert_eq!(script(&c), ["gap 10..14 x5", "15"]);
        // That resume failing too (at 15, nothing held): one gap from 10.
        c.lock().subs.insert(Arc::from("t"), carrying(9));
        c.resume_failed("t", 9);
        c.offer(&trade(20));
        assert_eq!(script(&c), ["gap 10..19 x10", "20"]);
    }

    /// `release` measures a pending gap with `gap_json_len` (no message
    /// built): the length must be the message's own.
    #[test]
    fn the_measured_gap_length_is_the_gap_messages_length() {
        let numbers = [0, 1, 9, 10, 99, 100, 12_345, u64::MAX / 10, u64::MAX];
        for topic in [
            "t",
            "trade_events",
            "a\"b\\c",
            "tab\tnew\nline",
            "\u{1}\u{7f}",
            "ünï-ĉödé",
        ] {
            for (i, &from) in numbers.iter().enumerate() {
                let to = numbers[(i + 3) % numbers.len()];
                let count = numbers[(i + 5) % numbers.len()];
                assert_eq!(
                    gap_json_len(topic, from, to, count),
                    gap_json(topic, from, to, count).len(),
                    "{:?}",
                    gap_json(topic, from, to, count)
                );
            }
        }
    }

    fn account_event(seq: u64, user: &str) -> Arc<Frame> {
        Arc::new(Frame {
            topic: Arc::from("acct"),
            seq,
            class: Class::Account,
            key: user.into(),
            text: Utf8Bytes::from(format!("{{\"seq\":{seq}}}")),
        })
    }

    /// After a failed resume on a private topic, the gap ran up to the next
    /// live frame of any account, so its end told A when B had an event.
    #[test]
    fn regression_a_private_gap_does_not_end_at_another_accounts_event() {
        let c = Client::new(1, 1 << 20);
        c.lock().accounts.insert("A".into());
        resuming(&c, "acct", 10, 7);
        c.resume_failed("acct", 7);
        c.offer(&account_event(20, "B"));
        assert_eq!(script(&c), Vec::<String>::new(), "B's event at 20 showed");
        c.offer(&account_event(25, "A"));
        c.offer(&account_event(26, "B"));
        assert_eq!(script(&c), ["gap 10..24 x15", "25"]);
    }

    /// A failed resume with live frames held told its gap up to the first
    /// held frame, on a private topic another account's event: its end
    /// told A that B had an event there (the rule the empty-hold case
    /// keeps: the gap waits for A's own next event).
    #[test]
    fn regression_a_private_failed_resume_with_a_hold_does_not_end_its_gap_at_another_accounts_event(
    ) {
        let c = Client::new(1, 1 << 20);
        c.lock().accounts.insert("A".into());
        resuming(&c, "acct", 10, 7);
        c.offer(&account_event(20, "B")); // held for the resume
        c.resume_failed("acct", 7);
        assert_eq!(
            script(&c),
            Vec::<String>::new(),
            "B's held event at 20 showed"
        );
        c.offer(&account_event(25, "A"));
        assert_eq!(script(&c), ["gap 10..24 x15", "25"]);
    }

    /// A bus loss while a failed resume's gap was still pending was told on
    /// its own, and the pending gap later covered it again: two gaps out of
    /// order, the loss counted twice.
    #[test]
    fn regression_a_bus_loss_during_a_pending_failed_resume_gap_is_told_once_in_order() {
        let c = Client::new(1, 1 << 20);
        c.lock().accounts.insert("A".into());
        resuming(&c, "acct", 10, 7);
        c.resume_failed("acct", 7); // nothing held: the gap is pending
        c.lost_live("acct", 30, 34, 5);
        c.offer(&account_event(36, "B"));
        c.offer(&account_event(40, "A"));
        assert_eq!(script(&c), ["gap 10..34 x25", "40"]);
        // The same on a public topic.
        resuming(&c, "t", 10, 8);
        c.resume_failed("t", 8);
        c.lost_live("t", 30, 34, 5);
        c.offer(&trade(35));
        assert_eq!(script(&c), ["gap 10..34 x25", "35"]);
    }

    #[test]
    fn regression_a_lapped_reader_during_a_resume_is_told_as_a_gap_at_hand_over() {
        let c = Client::new(1, 1 << 20);
        resuming(&c, "t", 10, 7);
        // Live frames held while the resume catches up; the gateway's own
        // reader is lapped over 12..=14 meanwhile.
        c.offer(&trade(10));
        c.offer(&trade(11));
        c.lost_live("t", 12, 14, 3);
        c.offer(&trade(15));
        assert!(c.hand_over("t", 7));
        let got = sent(&c);
        let seqs: Vec<String> = got
            .iter()
            .map(|v| match v.get("type") {
                Some(t) if t == "gap" => format!("gap {}..{} x{}", v["from"], v["to"], v["count"]),
                _ => v["seq"].to_string(),
            })
            .collect();
        assert_eq!(seqs, ["10", "11", "gap 12..14 x3", "15"]);
    }
}
