//! The HTTP side: `/ws` sessions (a reader task and a writer task per
//! client), `/healthz` and the live page.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};

use super::client::Client;
use super::hub::Hub;
use super::protocol::{self, Request, MAX_INSTRUMENTS};
use super::{auth, Shared};

/// Bad requests a client may send before it is disconnected.
pub const MAX_ERRORS: u32 = 10;
/// Largest WebSocket frame and message accepted from a client (requests
/// over [`protocol::MAX_REQUEST`] but within this get an error message; a
/// larger one closes the connection).
pub const MAX_FRAME: usize = 64 << 10;
/// How long a client has to send its token.
pub const AUTH_WINDOW: Duration = Duration::from_secs(5);

/// `GET /ws`.
pub async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o == host);
        if !same && !shared.origins.iter().any(|o| o == origin) {
            return (
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed (see --allow-origin)\n"),
            )
                .into_response();
        }
    }
    let Some(slot) = Slot::take(&shared) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the gateway serves {} WebSocket clients at most; try again later\n",
                shared.max_clients
            ),
        )
            .into_response();
    };
    // Both limits: a frame's header announcing more is refused before any
    // of its payload is read (the message limit alone is checked only once
    // a whole frame, up to 16 MiB by default, has been buffered).
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            session(shared, socket).await;
            drop(slot);
        })
}

/// One of the gateway's `max_clients` connection slots, given back on drop
/// (also when the upgrade fails and the session never runs).
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        // `fetch_update` is deprecated on nightly (renamed `try_update`,
        // which the MSRV does not have): allowed, so that a future clippy
        // -D warnings does not fail on it.
        // Relaxed: a counter; the compare-and-add itself is atomic and
        // nothing else is published with it.
        #[allow(deprecated)]
        let taken = shared
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < shared.max_clients).then_some(n + 1)
            });
        taken.ok().map(|_| Slot(Arc::clone(shared)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Relaxed: see `Slot::take`.
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /`: the live page.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn session(shared: Arc<Shared>, socket: WebSocket) {
    let hub = Arc::clone(&shared.hub);
    let client = hub.register();
    let (tx, mut rx) = socket.split();
    let last_pong = Arc::new(std::sync::Mutex::new(Instant::now()));
    let writer = tokio::spawn(write_loop(
        Arc::clone(&shared),
        Arc::clone(&client),
        tx,
        Arc::clone(&last_pong),
    ));
    let opened = Instant::now();
    let mut first = true;
    let mut errors = 0u32;
    loop {
        let msg = tokio::select! {
            m = rx.next() => m,
            _ = writer_done(&client) => None,
        };
        let Some(Ok(msg)) = msg else { break };
        let result = match msg {
            Message::Text(t) => handle(&shared, &client, t.as_str(), first, opened),
            Message::Binary(_) => Err(protocol::error(
                "",
                "binary messages are not supported; send JSON text",
            )),
            Message::Pong(_) => {
                *last_pong.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                Ok(())
            }
            Message::Ping(_) => Ok(()),
            Message::Close(_) => break,
        };
        first = false;
        if let Err(e) = result {
            errors += 1;
            client.push_control(e);
            if errors >= MAX_ERRORS {
                client.close(1008, "too many bad requests");
                break;
            }
        }
    }
    client.close(1000, "bye");
    let _ = writer.await;
    hub.unregister(&client);
}

/// Resolves once the client is marked for closing.
async fn writer_done(client: &Client) {
    loop {
        if client.lock().close.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn handle(
    shared: &Shared,
    client: &Arc<Client>,
    text: &str,
    first: bool,
    opened: Instant,
) -> Result<(), String> {
    let req = protocol::parse(text).map_err(|(op, e)| protocol::error(&op, &e))?;
    match req {
        Request::Auth(token) => {
            if !first || opened.elapsed() > AUTH_WINDOW {
                return Err(protocol::error(
                    "auth",
                    "auth must be the first message, within 5 s of connecting",
                ));
            }
            let Some(secret) = &shared.secret else {
                return Err(protocol::error(
                    "auth",
                    "this gateway has no token secret (ZEROCAST_GATEWAY_SECRET or --secret-file)",
                ));
            };
            match auth::verify_with_expiry(secret, &token, auth::now_secs()) {
                Ok((accounts, exp)) => {
                    let n = accounts.len();
                    let mut s = client.lock();
                    s.accounts = accounts.into_iter().collect();
                    s.expires = Some(exp);
                    drop(s);
                    client
                        .push_control(json!({"type": "authenticated", "accounts": n}).to_string());
                    Ok(())
                }
                Err(e) => {
                    client.push_control(protocol::error("auth", &e));
                    client.close(1008, "authentication failed");
                    Ok(())
                }
            }
        }
        Request::Subscribe {
            topics,
            instruments,
            from,
            bus,
        } => {
            let hub = &shared.hub;
            // A `from` of another bus segment (a reset since the client was
            // told the segment): refused before anything else of `from` is
            // looked at, never resumed at, naming every such topic. Private
            // topics too, once authenticated (that tells only of the
            // reset); book topics start with a snapshot, whatever `from`.
            if from.is_some() {
                let authenticated = !client.lock().accounts.is_empty();
                let reset: Vec<(&str, &str)> = topics
                    .iter()
                    .filter_map(|t| hub.topic(t))
                    .filter(|topic| !topic.books && (!topic.private || authenticated))
                    .filter_map(|topic| {
                        let now = topic.bus.as_deref()?;
                        let was = bus.as_ref()?.get(&*topic.name)?;
                        (was != now).then_some((&*topic.name, now))
                    })
                    .collect();
                if !reset.is_empty() {
                    return Err(protocol::reset_error(&reset));
                }
            }
            let mut found = Vec::new();
            for t in &topics {
                let Some(topic) = hub.topic(t) else {
                    let names: Vec<&str> = hub.topics.iter().map(|t| &*t.name).collect();
                    return Err(protocol::error(
                        "subscribe",
                        &format!(
                            "unknown topic \"{t}\" (this gateway serves {})",
                            names.join(", ")
                        ),
                    ));
                };
                if topic.private && client.lock().accounts.is_empty() {
                    return Err(protocol::error(
                        "subscribe",
                        &format!("topic \"{t}\" is private: authenticate first ({{\"op\":\"auth\",\"token\":...}} as the first message)"),
                    ));
                }
                // Relaxed: a bound read once; see `Topic::head`.
                let head = topic.head.load(Ordering::Relaxed);
                if topic.private {
                    // Naming the head (or refusing at all) would tell how
                    // many account events the bus carried: a `from` beyond
                    // it starts at it instead (nothing there exists yet, so
                    // nothing is skipped).
                    found.push((topic, from.map(|f| f.min(head))));
                    continue;
                }
                if let Some(from) = from.filter(|&f| f > head && !topic.books) {
                    return Err(protocol::error(
                        "subscribe",
                        &format!(
                            "\"from\" {from} is beyond the newest sequence of \"{t}\" (the next one is {head})"
                        ),
                    ));
                }
                found.push((topic, from));
            }
            let held: usize = {
                let s = client.lock();
                s.subs
                    .iter()
                    .filter(|(t, _)| !topics.iter().any(|n| n == &***t))
                    .map(|(_, s)| s.instruments.as_ref().map_or(1, |i| i.len()))
                    .sum()
            };
            let adding = found.len() * instruments.as_ref().map_or(1, |i| i.len().max(1));
            if held + adding > MAX_INSTRUMENTS {
                return Err(protocol::error(
                    "subscribe",
                    &format!(
                        "too many subscriptions: {} topic/instrument pairs, the limit is {MAX_INSTRUMENTS}",
                        held + adding
                    ),
                ));
            }
            // The reply is queued with the subscriptions, before their data.
            // Each topic's segment, for a later resume to pass back.
            let ids: Map<String, Value> = found
                .iter()
                .filter_map(|(t, _)| Some((t.name.to_string(), json!(&**t.bus.as_ref()?))))
                .collect();
            let reply = json!({"type": "subscribed", "topics": topics, "bus": ids}).to_string();
            hub.subscribe(client, &found, instruments, reply);
            Ok(())
        }
        Request::Unsubscribe(topics) => {
            let reply = json!({"type": "unsubscribed", "topics": topics}).to_string();
            shared
                .hub
                .unsubscribe(client, &topics, reply)
                .map_err(|e| protocol::error("unsubscribe", &e))
        }
    }
}

fn heartbeat(hub: &Hub, client: &Client) -> String {
    let s = client.lock();
    let mut last = Map::new();
    for (t, sub) in &s.subs {
        if let Some(topic) = hub.topic(t) {
            // A private topic's last sequence is the last one told to this
            // client: the bus's moves with every account's events.
            let seq = if topic.private {
                sub.told
            } else {
                // Relaxed: a statistic.
                Some(topic.last.load(Ordering::Relaxed)).filter(|&s| s != u64::MAX)
            };
            last.insert(t.to_string(), seq.map_or(Value::Null, |s| json!(s)));
        }
    }
    let c = s.counters;
    json!({
        "type": "heartbeat",
        "last": last,
        "stats": {"sent": c.sent, "conflated": c.conflated, "skipped": c.skipped,
                  "queue_bytes": s.queued_bytes()},
    })
    .to_string()
}

async fn write_loop(
    shared: Arc<Shared>,
    client: Arc<Client>,
    mut tx: SplitSink<WebSocket, Message>,
    last_pong: Arc<std::sync::Mutex<Instant>>,
) {
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let hub = &shared.hub;
    let mut ping = tokio::time::interval(shared.ping_every);
    let close = loop {
        tokio::select! {
            _ = client.wake.notified() => {}
            _ = beat.tick() => {
                // A connection does not outlive its token.
                if client.lock().expired() {
                    client.wake.notify_one();
                }
                let hb = Message::Text(Utf8Bytes::from(heartbeat(hub, &client)));
                if !send_unless_closed(&mut tx, &client, hb).await && client.lock().close.is_none() {
                    return;
                }
            }
            _ = ping.tick() => {
                if last_pong.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > shared.pong_timeout {
                    client.close(1001, "no pong in time");
                } else if !send_unless_closed(&mut tx, &client, Message::Ping(Default::default())).await
                    && client.lock().close.is_none()
                {
                    return;
                }
            }
        }
        if let Some(c) = client.lock().close.clone() {
            break c;
        }
        while let Some((batch, _)) = client.take() {
            if !send_unless_closed(&mut tx, &client, Message::Text(batch)).await {
                break;
            }
        }
        if let Some(c) = client.lock().close.clone() {
            break c;
        }
    };
    // Control messages queued before the close (an auth error) go first;
    // a client that does not read gets a second at most.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if close.code != 1008 || close.reason != "slow consumer" {
            while let Some((batch, _)) = client.take() {
                if tx.send(Message::Text(batch)).await.is_err() {
                    return;
                }
            }
        }
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: close.code,
                reason: Utf8Bytes::from(close.reason),
            })))
            .await;
    })
    .await;
}

/// Sends `msg`, unless the client is marked for closing first (a send
/// stuck on a full socket gives way to the close); true if it was sent.
async fn send_unless_closed(
    tx: &mut SplitSink<WebSocket, Message>,
    client: &Client,
    msg: Message,
) -> bool {
    let mut send = tx.send(msg);
    // Most sends finish at once (room in the socket): those need no close
    // watch, whose timer cost a registration per message per client.
    if let Some(r) = futures_util::FutureExt::now_or_never(&mut send) {
        return r.is_ok();
    }
    tokio::select! {
        r = send => r.is_ok(),
        _ = writer_done(client) => false,
    }
}
