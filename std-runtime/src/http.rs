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
//! complete: it bounds a silent client, an idle keep-alive connection and
//! a slowloris alike (the request timeout, 30 s by default). A tighter bound
//! on the header bytes themselves (5 s by default) is kept by the socket
//! wrapper here: once the first byte of a request arrives, its head must be
//! complete (the service called) within the header timeout. The wrapper
//! also fails a write that has made no progress for the request timeout
//! (hyper has no write timeout: a client that pipelined requests and never
//! read the answers held its connection for ever). An upgraded connection
//! (a WebSocket) is not timed here: the gateway pings it, and its writer
//! has its own slow-consumer rules.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default bound from a request's first byte to the end of its
/// headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a connection is, as its socket wrapper sees it.
#[derive(Debug, Default)]
struct Phase(AtomicU8);

/// Between requests: no byte of the next one yet.
const IDLE: u8 = 0;
/// A request's head is arriving: the header deadline runs.
const HEAD: u8 = 1;
/// A request is being answered.
const BUSY: u8 = 2;
/// Upgraded (a WebSocket): no deadline any more.
const UPGRADED: u8 = 3;

impl Phase {
    fn get(&self) -> u8 {
        // Relaxed: the socket wrapper and the service both run on the
        // connection's one task, which orders them (after an upgrade the
        // socket moves to the session's task through hyper's upgrade
        // channel, which orders the last store before it); nothing else
        // is published with it.
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, p: u8) {
        // Relaxed: see `get`.
        self.0.store(p, Ordering::Relaxed);
    }
}

/// An accepted socket whose reads fail once a request's head, begun, is
/// not complete within the header timeout, and whose writes fail once one
/// has made no progress for the stall timeout (a client that does not
/// take its answers).
struct Guarded {
    tcp: tokio::net::TcpStream,
    phase: Arc<Phase>,
    header: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    stall: Duration,
    write_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    /// Bounds a write that is waiting for the client: `r` is the socket's
    /// answer; a write still pending `stall` after the last progress
    /// fails. An upgraded connection is not timed (the gateway's writer
    /// has its own slow-consumer rules).
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() || self.phase.get() == UPGRADED {
            self.write_deadline = None;
            return r;
        }
        let stall = self.stall;
        let d = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        // Polling it registers the writer's waker, so a client that never
        // reads again is still woken for.
        if d.as_mut().poll(cx).is_ready() {
            self.write_deadline = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no answer bytes in time",
            )));
        }
        Poll::Pending
    }
}

impl tokio::io::AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let phase = self.phase.get();
        if phase != HEAD {
            self.deadline = None;
        } else if let Some(d) = &mut self.deadline {
            // Polling the deadline registers the reader's waker with it, so
            // a client that sends nothing more is still woken for.
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request headers not complete in time",
                )));
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if phase == IDLE && matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.set(HEAD);
            let mut d = Box::pin(tokio::time::sleep(self.header));
            // Registers the waker now (it cannot be due yet).
            let _ = d.as_mut().poll(cx);
            self.deadline = Some(d);
        }
        r
    }
}

impl tokio::io::AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.bound_write(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.tcp).poll_flush(cx);
        self.bound_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.bound_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting,
/// asks every connection to close once its request in progress is
/// answered, and returns when they have or after [`SHUTDOWN_GRACE`]
/// (what is still open then is dropped with the caller's runtime).
///
/// A connection waiting longer than `request_timeout` for a request's
/// headers (a fresh one, or a keep-alive one after its last response) is
/// closed, and so is one whose request, begun, has not completed its
/// headers within `header_timeout`, and so is one whose answer has not
/// moved for `request_timeout` (a client that does not read it: a
/// slow-read slowloris). Accepted sockets get `TCP_NODELAY`.
/// WebSocket upgrades work (`with_upgrades`) and are not timed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    request_timeout: Duration,
    header_timeout: Duration,
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
        let phase = Arc::new(Phase::default());
        let io = Guarded {
            tcp,
            phase: Arc::clone(&phase),
            header: header_timeout,
            deadline: None,
            stall: request_timeout,
            write_deadline: None,
        };
        let inner = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |req| {
            // The head is complete: its deadline is over.
            phase.set(BUSY);
            let answer = hyper::service::Service::call(&inner, req);
            let phase = Arc::clone(&phase);
            async move {
                let r = answer.await;
                let upgraded = r
                    .as_ref()
                    .is_ok_and(|resp| resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS);
                phase.set(if upgraded { UPGRADED } else { IDLE });
                r
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(io), service)
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
