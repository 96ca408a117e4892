//! The real-time tier: a WebSocket gateway (`zerocast gateway`).
//!
//! One bus reader thread per topic encodes each frame once to JSON and
//! offers the shared text to every client's bounded queue; each client's
//! writer task sends what queued up, several messages per WebSocket message
//! (joined by `\n`). A client over its byte budget loses trades (told by an
//! exact gap message), gets books conflated to the latest per instrument,
//! and is disconnected ("slow consumer") rather than lose an account event.
//! The protocol is described in `docs/gateway.md`.

pub mod auth;
pub mod client;
pub mod hub;
pub mod protocol;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use zerocast_ipc::Bus;

use hub::Hub;

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct Shared {
    hub: Arc<Hub>,
    secret: Option<Vec<u8>>,
    origins: Vec<String>,
    ping_every: Duration,
    pong_timeout: Duration,
    max_clients: usize,
    request_timeout: Duration,
    header_timeout: Duration,
    /// WebSocket connections upgraded or being upgraded.
    connections: std::sync::atomic::AtomicUsize,
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Topics to serve (empty: every configured topic).
    pub topics: Vec<String>,
    /// The recorder's WAL root (`DIR/TOPIC/`), for resumes older than the ring.
    pub wal: Option<PathBuf>,
    /// Per-client byte budget for unsent data.
    pub budget: usize,
    /// Browser origins allowed besides the gateway's own.
    pub origins: Vec<String>,
    /// Token secret (None: no client can authenticate).
    pub secret: Option<Vec<u8>>,
    /// SO_SNDBUF of accepted sockets (None: the system's default); tests
    /// shrink it to make a slow client show quickly.
    pub send_buffer: Option<usize>,
    /// WebSocket ping interval (20 s).
    pub ping_every: Duration,
    /// A connection without a pong for this long is closed (60 s).
    pub pong_timeout: Duration,
    /// Most WebSocket clients at once; more are refused with 503 (10 000).
    pub max_clients: usize,
    /// A connection waiting this long for a request's headers is closed
    /// (30 s): a new one that sends nothing or trickles its headers
    /// (slowloris), and a keep-alive one idle after its last answer. An
    /// upgraded WebSocket is not bound by it (pings keep it honest). An
    /// answer that has not moved this long (a client not reading it)
    /// closes its connection too.
    pub request_timeout: Duration,
    /// A request whose headers, begun, are not complete this long after
    /// their first byte closes its connection (5 s).
    pub header_timeout: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            wal: None,
            budget: 1 << 20,
            origins: Vec::new(),
            secret: None,
            send_buffer: None,
            ping_every: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(60),
            max_clients: 10_000,
            request_timeout: crate::http::REQUEST_TIMEOUT,
            header_timeout: crate::http::HEADER_TIMEOUT,
        }
    }
}

/// A bound gateway, not yet serving.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
}

impl Gateway {
    /// Binds `addr` and checks the topics.
    pub fn bind(bus: &Bus, addr: &str, options: GatewayOptions) -> Result<Self, String> {
        let topics = if options.topics.is_empty() {
            bus.config().topics.iter().map(|t| t.name.clone()).collect()
        } else {
            options.topics.clone()
        };
        let hub = Hub::new(bus, &topics, options.wal.clone(), options.budget.max(1))?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("gateway: binding {addr}: {e}"))?;
        if let Some(size) = options.send_buffer {
            set_send_buffer(&listener, size);
        }
        Ok(Self {
            shared: Arc::new(Shared {
                hub,
                secret: options.secret,
                origins: options.origins,
                ping_every: options.ping_every.max(Duration::from_millis(1)),
                pong_timeout: options.pong_timeout,
                max_clients: options.max_clients,
                request_timeout: options.request_timeout,
                header_timeout: options.header_timeout,
                connections: std::sync::atomic::AtomicUsize::new(0),
            }),
            listener,
        })
    }

    /// The bound address (the port, when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.listener.local_addr().map_err(|e| e.to_string())
    }

    /// Serves until `stop()` returns true (checked every 50 ms). Blocks.
    pub fn serve(self, stop: impl Fn() -> bool + Send + 'static) -> Result<(), String> {
        let readers = self.shared.hub.start_readers()?;
        self.listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let shared = Arc::clone(&self.shared);
        let hub = Arc::clone(&self.shared.hub);
        let listener = self.listener;
        let result = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (timeout, header) = (shared.request_timeout, shared.header_timeout);
            let sessions = Arc::clone(&shared);
            let app = Router::new()
                .route("/", get(ws::page))
                .route("/healthz", get(ws::healthz))
                .route("/ws", get(ws::upgrade))
                .with_state(shared);
            let stop = async move {
                while !stop() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // WebSocket sessions are not the server's to wait for: they
                // are told to close (their final flush is bounded to 1 s).
                hub.close_all(1001, "gateway stopping");
            };
            // Connections still open a second after the stop (a client
            // stuck half-way through a request, one that never reads) do
            // not hold the process: the runtime's shutdown drops them.
            crate::http::serve(listener, app, timeout, header, stop).await;
            // WebSocket sessions left the HTTP loop at their upgrade: they
            // get the same grace to send their close frames.
            let grace = tokio::time::Instant::now() + crate::http::SHUTDOWN_GRACE;
            // Relaxed: a count polled until it drains; nothing else is read
            // through it.
            while sessions.connections.load(Ordering::Relaxed) > 0
                && tokio::time::Instant::now() < grace
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::io::Result::Ok(())
        });
        // Relaxed: the readers poll it; joining them below waits for them.
        self.shared.hub.stop.store(true, Ordering::Relaxed);
        for r in readers {
            let _ = r.join();
        }
        runtime.shutdown_timeout(Duration::from_millis(100));
        result.map_err(|e| format!("gateway: {e}"))
    }
}

fn set_send_buffer(listener: &std::net::TcpListener, size: usize) {
    use std::os::fd::AsRawFd;
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is the listener's, open for the call; the option value
    // is a c_int whose address and size are passed together. Accepted
    // sockets inherit SO_SNDBUF on Linux.
    unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `zerocast gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Address to serve `/ws`, `/healthz` and the live page `/` on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The recorder's WAL root, for resumes (`from`) older than the ring.
    #[arg(long)]
    pub wal: Option<PathBuf>,
    /// Per-client budget of unsent bytes (k, M suffixes allowed).
    #[arg(long, default_value = "1M", value_parser = zerocast_ipc::config::parse_size)]
    pub budget: u64,
    /// A browser origin allowed to open `/ws` besides the gateway's own
    /// (repeatable), e.g. `https://desk.example.com`.
    #[arg(long = "allow-origin")]
    pub origins: Vec<String>,
    /// Most WebSocket clients at once (more get 503).
    #[arg(long, default_value_t = 10_000)]
    pub max_clients: usize,
    /// File holding the token secret (else ZEROCAST_GATEWAY_SECRET).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Print a token for these comma-separated account ids, valid for an
    /// hour, and exit (needs the secret).
    #[arg(long, value_name = "ACCOUNTS")]
    pub mint_token: Option<String>,
}

/// Runs `zerocast gateway` until SIGINT or SIGTERM (`stop`).
pub fn run_cli(bus: &Bus, args: &GatewayArgs, stop: fn() -> bool) -> Result<(), String> {
    let secret = match &args.secret_file {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| format!("reading --secret-file {}: {e}", p.display()))?
                .trim_ascii()
                .to_vec(),
        ),
        None => std::env::var(auth::SECRET_ENV).ok().map(String::into_bytes),
    }
    .filter(|s| !s.is_empty());
    if let Some(accounts) = &args.mint_token {
        let secret = secret.ok_or_else(|| {
            format!(
                "--mint-token needs a secret: --secret-file or {}",
                auth::SECRET_ENV
            )
        })?;
        let accounts: Vec<&str> = accounts.split(',').filter(|a| !a.is_empty()).collect();
        println!(
            "{}",
            auth::sign(&secret, &accounts, auth::now_secs() + 3600)
        );
        return Ok(());
    }
    let gw = Gateway::bind(
        bus,
        &args.listen,
        GatewayOptions {
            wal: args.wal.clone(),
            budget: usize::try_from(args.budget).unwrap_or(usize::MAX),
            origins: args.origins.clone(),
            secret,
            max_clients: args.max_clients,
            ..Default::default()
        },
    )?;
    let addr = gw.local_addr()?;
    println!("gateway: http://{addr}/ (WebSocket /ws, liveness /healthz)");
    gw.serve(stop)
}

/// A gateway serving on its own thread until dropped.
#[derive(Debug)]
pub struct Spawned {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Gateway {
    /// Serves on a new thread until the returned handle is dropped.
    pub fn spawn(self) -> Result<Spawned, String> {
        let addr = self.local_addr()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("gateway".into())
            // Relaxed: a stop flag polled every 50 ms; joining orders the rest.
            .spawn(move || self.serve(move || s.load(Ordering::Relaxed)))
            .map_err(|e| e.to_string())?;
        Ok(Spawned {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Relaxed: see `Gateway::spawn`.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(_) => tracing::warn!("gateway thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// The demo's gateway on `addr` (else on any free port of 127.0.0.1);
/// None, with a warning, if neither binds or `addr` is `off`.
pub fn spawn_for_demo(bus: &Bus, addr: &str) -> Option<Spawned> {
    if addr == "off" {
        return None;
    }
    let gw = Gateway::bind(bus, addr, GatewayOptions::default())
        .or_else(|e| {
            tracing::warn!("{e}; serving the live page on a free port instead");
            Gateway::bind(bus, "127.0.0.1:0", GatewayOptions::default())
        })
        .and_then(Gateway::spawn);
    match gw {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!("no live page: {e}");
            None
        }
    }
}
