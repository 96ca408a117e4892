//! The one HTTP serving loop of the program (the gateway and `zerocast
//! health --listen`): axum routers served over hyper's HTTP/1.1 with its
//! timer set, so no connection waits for a request for ever.
//!
//! axum 0.8's `serve` sets no hyper timer, so hyper's header-read timeout
//! never fires there: a client that sent one request and then idled on its
//! keep-alive connection (or trickled headers) held it open indefinitely.
//! Here each connection is hyper's `http1` connection with `TokioTimer` and
//! `header_read_timeout`. In hyper 1.x that timer starts whenever the
//! connection begins waiting for a request head (at accept, and again after
//! each response on a keep-alive connection) and stops once the head is
//! complete, so one bound covers a silent client, an idle keep-alive
//! connection and a slowloris. An upgraded connection (a WebSocket) leaves
//! hyper and is not timed here: the gateway pings it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// How long connections still open at a stop may finish before the server
/// drops them (a client that half-sent a request would otherwise hold a
/// graceful shutdown open for ever).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The default bound on waiting for a request head: from accept, or from
/// the previous response of a keep-alive connection, to the end of the
/// next request's headers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop` resolves; then stops accepting,
/// asks every connection to close once its request in progress is
/// answered, and returns when they have or after [`SHUTDOWN_GRACE`]
/// (what is still open then is dropped with the caller's runtime).
///
/// A connection waiting longer than `request_timeout` for a request's
/// headers (a fresh one, or a keep-alive one after its last response) is
/// closed. Accepted sockets get `TCP_NODELAY`. WebSocket upgrades work
/// (`with_upgrades`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    request_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(request_timeout.max(Duration::from_millis(1)))
        .keep_alive(true);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut stop => break,
            a = accept(&listener) => a,
        };
        // Reap what finished, so the set holds open connections only.
        while connections.try_join_next().is_some() {}
        let conn = http
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()))
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!("http: connection from {addr}: {e}");
            }
        });
    }
    let _ = stopping.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// The next connection, with `TCP_NODELAY` (a small answer or batch is
/// written at once, not held by Nagle); accept errors (out of descriptors
/// and the like) are waited out.
async fn accept(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, addr)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("http: TCP_NODELAY: {e}");
                }
                return (tcp, addr);
            }
            Err(e) => {
                tracing::warn!("http: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
