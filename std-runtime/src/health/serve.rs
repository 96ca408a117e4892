//! `/metrics` over HTTP/1.1 (axum on a single-threaded tokio runtime,
//! served by the program's one HTTP loop, [`crate::http::serve`], the same
//! one the WebSocket gateway uses).

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;

use super::metrics;

/// Serves `GET /metrics` on `listener` until `stop()` returns true (checked
/// every 50 ms); each request's body is `render()`. Blocks the calling
/// thread. Other paths get 404. At a stop, requests in progress get
/// [`crate::http::SHUTDOWN_GRACE`] to finish; then every connection is dropped. A
/// connection waiting [`crate::http::REQUEST_TIMEOUT`] for a request (new,
/// or idle after its last answer) is closed, and so is one whose request
/// headers, begun, are not complete within [`crate::http::HEADER_TIMEOUT`],
/// or whose answer has not moved for the request timeout (a client not
/// reading it).
pub fn serve_metrics(
    listener: std::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    stop: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<()> {
    serve_metrics_with_timeout(listener, render, stop, crate::http::REQUEST_TIMEOUT)
}

/// [`serve_metrics`] with its bound on waiting for a request's headers.
pub fn serve_metrics_with_timeout(
    listener: std::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    stop: impl Fn() -> bool + Send + 'static,
    request_timeout: Duration,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let render = Arc::new(render);
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move { ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], render()) }
            }),
        );
        let stop = async move {
            while !stop() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        crate::http::serve(
            listener,
            app,
            request_timeout,
            crate::http::HEADER_TIMEOUT.min(request_timeout),
            stop,
        )
        .await;
        std::io::Result::Ok(())
    });
    // Drops the connection tasks that did not finish.
    drop(runtime);
    served
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A client that asked once on a keep-alive connection and then idled
    /// held it open for ever (axum's `serve` sets no hyper timer).
    #[test]
    fn regression_idle_keep_alive_metrics_connection_is_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let server = std::thread::spawn(move || {
            serve_metrics_with_timeout(
                listener,
                || "x 1\n".to_owned(),
                // Relaxed: a stop flag; joining the thread orders the rest.
                move || s.load(Ordering::Relaxed),
                Duration::from_millis(300),
            )
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"x 1\n") {
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).expect("no answer to GET /metrics");
            assert!(n > 0, "closed before answering: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        let mut buf = [0u8; 64];
        let closed = c.read(&mut buf);
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap().unwrap();
        assert!(
            matches!(closed, Ok(0)),
            "an idle keep-alive connection still open 3 s after its answer: {closed:?}"
        );
    }
}
