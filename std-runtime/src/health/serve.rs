//! `/metrics` over HTTP/1.1 (axum on a single-threaded tokio runtime: the
//! stack the WebSocket gateway will serve `/metrics` with too).

use std::future::{Future as _, IntoFuture as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

use super::metrics;

/// How long connections still open at a stop may finish before the server
/// drops them (a client that half-sent a request would hold a graceful
/// shutdown open for ever).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `GET /metrics` on `listener` until `stop()` returns true (checked
/// every 50 ms); each request's body is `render()`. Blocks the calling
/// thread. Other paths get 404. At a stop, requests in progress get
/// [`SHUTDOWN_GRACE`] to finish; then every connection is dropped.
pub fn serve_metrics(
    listener: std::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    stop: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let render = Arc::new(render);
    let stopping = Arc::new(AtomicBool::new(false));
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move { ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], render()) }
            }),
        );
        let flag = Arc::clone(&stopping);
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                while !stop() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Relaxed: only read by the grace timer below, on this
                // same thread.
                flag.store(true, Ordering::Relaxed);
            })
            .into_future();
        let grace = async {
            // Relaxed: see above.
            while !stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let mut serve = std::pin::pin!(serve);
        let mut grace = std::pin::pin!(grace);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = serve.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if grace.as_mut().poll(cx).is_ready() {
                // Connections still open past the grace: dropped with the
                // runtime below.
                return Poll::Ready(Ok(()));
            }
            Poll::Pending
        })
        .await
    });
    // Drops the connection tasks that did not finish.
    drop(runtime);
    served
}
