//! `/metrics` over HTTP/1.1 (axum on a single-threaded tokio runtime: the
//! stack the WebSocket gateway will serve `/metrics` with too).

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

use super::metrics;

/// Serves `GET /metrics` on `listener` until `stop()` returns true (checked
/// every 50 ms); each request's body is `render()`. Blocks the calling
/// thread. Other paths get 404.
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
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move { ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], render()) }
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                while !stop() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
    })
}
