//! The real-time tier's load figures (`harness gateway`): many WebSocket
//! clients on loopback receiving every trade from `zerocast gateway`, with
//! and without one client that never reads.
//!
//! Latency is client receive time minus the frame header's `publish_ns`
//! (both CLOCK_REALTIME, one process), for every trade every client gets,
//! in an HDR histogram. The publisher is paced by its schedule. Gateway and
//! load generator share this process (and the machine's cores): CPU is
//! split by thread (`gw-*` bus readers and the gateway's tokio workers vs
//! the `loadgen` threads); RSS is the whole process.
//!
//! The issue's two rules are checked and printed as verdicts: each client
//! count runs several rounds, with and without the never-reading client
//! interleaved (the order alternating), so both see the same machine; the
//! median p99 of each side is compared ("the never-reading client moves the
//! others' p99 by at most 10%"), and the process's anonymous memory growth
//! over each case is compared with clients x budget.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use zerocast_core::frame::{id::id, Direction, TradeEvent};
use zerocast_ipc::{Bus, Config, TopicConfig, TopicKind};
use zerocast_runtime::gateway::{Gateway, GatewayOptions};

/// `harness gateway`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayLoadArgs {
    /// Tiny counts: checks the cases run, not the figures.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for gateway.json and gateway.md.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Seconds each case publishes for.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds per client count (each one case without the never-reading
    /// client and one with it, interleaved).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// CPU seconds of this process's threads, split into (gateway, load generator).
fn cpu_by_side() -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (mut gw, mut gen) = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" closing the command: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // tokio names its workers `tokio-rt-worker` (older releases
        // `tokio-runtime-worker`); the load generator's are `loadgen`.
        if comm.starts_with("gw-") || comm.starts_with("tokio-r") {
            gw += t / tick;
        } else if comm.starts_with("loadgen") || comm.starts_with("publisher") {
            gen += t / tick;
        }
    }
    (gw, gen)
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `RssAnon`).
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn trade(n: u64) -> TradeEvent {
    TradeEvent {
        trade_id: id(&format!("T-{n}")).unwrap_or([0; 40]),
        order_id: id("O-1").unwrap_or([0; 40]),
        instrument_id: id("BTC-USDT").unwrap_or([0; 16]),
        price: 64_000.0,
        volume: 0.5,
        direction: Direction::Buy,
        timestamp: 1,
    }
}

/// The unsigned integer right after `key` in `line`.
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One case: `clients` readers (plus one that never reads if `stuck`), a
/// paced publisher at `rate` trades/s for `seconds`.
fn case(tag: &str, clients: usize, rate: f64, seconds: f64, stuck: bool) -> Value {
    let ns = format!("gwload{tag}{}", std::process::id());
    let bus = Bus::new(Config {
        namespace: ns,
        topics: vec![TopicConfig::new("trade_events", 64 << 20, TopicKind::Trade)],
    });
    bus.remove_segments();
    let budget = 1 << 20;
    // Anonymous memory only: the ring's shared pages are not the gateway's
    // queues. The growth includes the load generator's clients, so it
    // bounds the gateway's from above.
    let anon0 = status_bytes("RssAnon");
    let gw = Gateway::bind(
        &bus,
        "127.0.0.1:0",
        GatewayOptions {
            budget,
            ..Default::default()
        },
    )
    .expect("bind gateway")
    .spawn()
    .expect("start gateway");
    let url = format!("ws://{}/ws", gw.addr);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("load generator runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, stop, ready) = (url.clone(), Arc::clone(&stop), Arc::clone(&ready));
        tasks.push(rt.spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true)
                .await
                .expect("connect");
            ws.send(Message::Text(
                r#"{"op":"subscribe","topics":["trade_events"]}"#.into(),
            ))
            .await
            .expect("subscribe");
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let (mut got, mut gaps) = (0u64, 0u64);
            let mut counted = false;
            // Relaxed: a flag polled between messages.
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(m))) =
                    tokio::time::timeout(Duration::from_millis(100), ws.next()).await
                else {
                    continue;
                };
                let Message::Text(t) = m else { continue };
                let now = zerocast_ipc::layout::now_ns();
                for line in t.as_str().split('\n') {
                    // A cheap scan, not a JSON parse: the load generator
                    // must not be the bottleneck it measures.
                    if line.contains("\"type\":\"data\"") {
                        got += 1;
                        let sent = number_after(line, "\"publish_ns\":").unwrap_or(now);
                        let _ = hist.record(now.saturating_sub(sent).max(1));
                    } else if line.contains("\"type\":\"gap\"") {
                        gaps += number_after(line, "\"count\":").unwrap_or(0);
                    } else if !counted && line.contains("\"type\":\"subscribed\"") {
                        counted = true;
                        // Relaxed: a count the publisher polls.
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (hist, got, gaps)
        }));
    }
    let stuck_conn = stuck.then(|| {
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().expect("socket");
            let _ = sock.set_recv_buffer_size(4096);
            let stream = sock.connect(gw.addr).await.expect("connect");
            let req = url.as_str().into_client_request().expect("request");
            let (mut ws, _) = tokio_tungstenite::client_async(
                req,
                tokio_tungstenite::MaybeTlsStream::Plain(stream),
            )
            .await
            .expect("handshake");
            ws.send(Message::Text(
                r#"{"op":"subscribe","topics":["trade_events"]}"#.into(),
            ))
            .await
            .expect("subscribe");
            ws // kept, never read
        })
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    // Relaxed: a count; the subscriptions it counts are ordered by the gateway.
    while ready.load(Ordering::Relaxed) < clients as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100)); // the stuck client's subscribe lands
    let (gw0, gen0) = cpu_by_side();
    let total = (rate * seconds) as u64;
    let publisher = {
        let bus = bus.clone();
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let mut p = bus.publisher("trade_events").expect("publisher");
                let start = Instant::now();
                for n in 0..total {
                    let due = start + Duration::from_secs_f64(n as f64 / rate);
                    while Instant::now() < due {
                        std::thread::sleep(due - Instant::now());
                    }
                    p.publish(&trade(n)).expect("publish");
                }
                start.elapsed()
            })
            .expect("publisher thread")
    };
    let elapsed = publisher.join().expect("publisher");
    std::thread::sleep(Duration::from_millis(300)); // drain
    let (gw1, gen1) = cpu_by_side();
    let rss = status_bytes("VmRSS");
    let anon_growth = status_bytes("RssAnon").saturating_sub(anon0);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let (mut delivered, mut skipped) = (0u64, 0u64);
    for t in tasks {
        let (h, got, gaps) = rt.block_on(t).expect("client task");
        hist.add(&h).expect("merge");
        delivered += got;
        skipped += gaps;
    }
    drop(stuck_conn);
    drop(gw);
    rt.shutdown_timeout(Duration::from_secs(1));
    bus.remove_segments();
    let secs = elapsed.as_secs_f64();
    json!({
        "clients": clients,
        "stuck_client": stuck,
        "rate": rate,
        "published": total,
        "delivered": delivered,
        "expected": total * clients as u64,
        "skipped_by_readers": skipped,
        "deliveries_per_s": delivered as f64 / secs,
        "p50_us": hist.value_at_quantile(0.5) as f64 / 1e3,
        "p99_us": hist.value_at_quantile(0.99) as f64 / 1e3,
        "p999_us": hist.value_at_quantile(0.999) as f64 / 1e3,
        "max_us": hist.max() as f64 / 1e3,
        "gateway_cpu_s": gw1 - gw0,
        "loadgen_cpu_s": gen1 - gen0,
        "wall_s": secs,
        "process_rss_bytes": rss,
        "anon_growth_bytes": anon_growth,
        "budget_bound_bytes": (clients + usize::from(stuck)) * budget,
        "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The issue's rules for one client count, from its interleaved rounds.
fn verdicts(clients: usize, cases: &[Value]) -> Value {
    let p99 = |stuck: bool| {
        median(
            cases
                .iter()
                .filter(|c| c["stuck_client"] == stuck)
                .filter_map(|c| c["p99_us"].as_f64())
                .collect(),
        )
    };
    let (without, with) = (p99(false), p99(true));
    let ratio = with / without;
    let memory_ok = cases.iter().all(|c| {
        c["anon_growth_bytes"].as_u64().unwrap_or(u64::MAX)
            <= c["budget_bound_bytes"].as_u64().unwrap_or(0)
    });
    let max_growth = cases
        .iter()
        .filter_map(|c| c["anon_growth_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    json!({
        "clients": clients,
        "rounds": cases.len() / 2,
        "median_p99_us_without": without,
        "median_p99_us_with": with,
        "p99_ratio": ratio,
        "p99_within_10_percent": ratio <= 1.10,
        "max_anon_growth_bytes": max_growth,
        "memory_within_budget": memory_ok,
        "complete": cases.iter().all(|c| {
            c["delivered"].as_f64().unwrap_or(0.0) >= 0.99 * c["expected"].as_f64().unwrap_or(0.0)
        }),
    })
}

/// Runs every case, `rounds` interleaved rounds per client count; returns
/// the report with the verdicts.
pub fn run(smoke: bool, seconds: f64, rounds: usize) -> Value {
    let (seconds, rounds, cases): (f64, usize, &[(usize, f64)]) = if smoke {
        (0.5, 1, &[(10, 1_000.0)])
    } else {
        (seconds, rounds.max(1), &[(100, 10_000.0), (1000, 1_000.0)])
    };
    let mut out = Vec::new();
    let mut verdict = Vec::new();
    for &(clients, rate) in cases {
        let mut these = Vec::new();
        for round in 0..rounds {
            // Alternate which goes first, so neither side always runs on a
            // machine warmed (or loaded) by the other.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for stuck in order {
                let tag = format!("{clients}r{round}{}", if stuck { "s" } else { "" });
                let mut r = case(&tag, clients, rate, seconds, stuck);
                r["round"] = json!(round);
                eprintln!("{r}");
                these.push(r);
            }
        }
        verdict.push(verdicts(clients, &these));
        out.extend(these);
    }
    json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "cases": out,
        "verdicts": verdict,
    })
}

/// The verdicts, one line per rule and client count: PASS or FAIL.
pub fn verdict_lines(r: &Value) -> String {
    let mut s = String::new();
    for v in r["verdicts"].as_array().into_iter().flatten() {
        let pass = |k: &str| if v[k] == true { "PASS" } else { "FAIL" };
        s += &format!(
            "{}: {} clients: the never-reading client moves the others' p99 by at most 10% \
             (median p99 over {} rounds: {:.0} µs without, {:.0} µs with, x{:.2})\n",
            pass("p99_within_10_percent"),
            v["clients"],
            v["rounds"],
            v["median_p99_us_without"].as_f64().unwrap_or(f64::NAN),
            v["median_p99_us_with"].as_f64().unwrap_or(f64::NAN),
            v["p99_ratio"].as_f64().unwrap_or(f64::NAN),
        );
        if v["complete"] != true {
            s += &format!(
                "WARNING: {} clients: some case delivered under 99% of its trades before the end \
                 (the machine could not keep up): its p99 leaves out what never arrived\n",
                v["clients"]
            );
        }
        s += &format!(
            "{}: {} clients: memory growth <= clients x budget (largest anonymous-memory \
             growth of a case, load generator included: {:.0} MiB)\n",
            pass("memory_within_budget"),
            v["clients"],
            v["max_anon_growth_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
        );
    }
    s
}

/// The report as a markdown table.
pub fn markdown(r: &Value) -> String {
    let mut s = String::from(
        "| clients | round | never-reading client | trades/s | delivered/s | delivered of expected | p50 | p99 | p99.9 | gateway CPU | load-gen CPU | RSS (process) | anon growth | clients x budget |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in r["cases"].as_array().into_iter().flatten() {
        let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
        let wall = f("wall_s").max(1e-9);
        s += &format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.4} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0}% | {:.0}% | {:.0} MiB | {:.0} MiB | {:.0} MiB |\n",
            c["clients"],
            c["round"],
            if c["stuck_client"] == true { "yes" } else { "no" },
            f("rate"),
            f("deliveries_per_s"),
            f("delivered") / f("expected").max(1.0),
            f("p50_us"),
            f("p99_us"),
            f("p999_us"),
            100.0 * f("gateway_cpu_s") / wall,
            100.0 * f("loadgen_cpu_s") / wall,
            f("process_rss_bytes") / f64::from(1 << 20),
            f("anon_growth_bytes") / f64::from(1 << 20),
            f("budget_bound_bytes") / f64::from(1 << 20),
        );
    }
    s
}

/// `harness gateway`.
pub fn main(args: GatewayLoadArgs) {
    let report = run(args.smoke, args.seconds, args.rounds);
    std::fs::create_dir_all(&args.out).expect("create output directory");
    std::fs::write(
        args.out.join("gateway.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write gateway.json");
    let md = format!("{}\n{}", markdown(&report), verdict_lines(&report));
    std::fs::write(args.out.join("gateway.md"), &md).expect("write gateway.md");
    println!("{md}");
    if args.smoke {
        for c in report["cases"].as_array().into_iter().flatten() {
            assert!(
                c["delivered"].as_u64().unwrap_or(0) > 0,
                "smoke check: nothing delivered in {c}"
            );
        }
        eprintln!("smoke check: gateway results complete");
    }
}
