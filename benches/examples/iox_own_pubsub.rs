//! iceoryx2's own publish-subscribe benchmark, ported to run here, so that
//! the harness's plain-iceoryx2 rows can be checked against the method
//! iceoryx2 publishes its figures with (issue 14, "A fair harness").
//!
//! Ported from eclipse-iceoryx/iceoryx2, `benchmarks/publish-subscribe/src/main.rs`
//! at commit 0d4237471 (the last before 0.10; its API matches the 0.10.0
//! this workspace uses). Upstream: Copyright (c) 2023 Contributors to the
//! Eclipse Foundation, SPDX-License-Identifier: Apache-2.0 OR MIT; this port
//! is under the same terms.
//!
//! What is the same as upstream: the two services `a2b` and `b2a` (1 +
//! additional publishers and subscribers, history 0, subscriber buffer 1,
//! safe overflow), one node for both participants, the threads built with
//! `iceoryx2_bb_posix::thread::ThreadBuilder` (pinned by `affinity`,
//! `priority(255)`), the two `iceoryx2_bb_posix` barriers, the loop of each
//! participant (participant 1 loans its next sample right after sending,
//! before it waits for the answer; participant 2 loans before it waits;
//! `--send-copy` fills every sample of participant 2 but only the first of
//! participant 1, as upstream does), the timing (`Time::now` before the
//! start barrier, elapsed after both threads joined) and the output line
//! (latency = time / (2 x iterations), integer ns).
//!
//! What differs: the arguments are parsed by hand (same names and defaults;
//! `-h`/`--help` lists them) instead of by clap, and the service names get
//! the process id appended (`a2b-<pid>`), so that a run cannot open a
//! service left by another run.
//!
//! Not upstream, added here: `--throughput` streams samples from
//! participant 1 to participant 2 for the harness's throughput row (see
//! [`throughput`]).
//!
//! ```sh
//! cargo run --release -p zerocast-benches --example iox_own_pubsub -- --bench-ipc --payload-size 160
//! ```

use core::mem::MaybeUninit;
use std::process::ExitCode;

use iceoryx2::prelude::*;
use iceoryx2_bb_posix::barrier::*;
use iceoryx2_bb_posix::clock::Time;
use iceoryx2_bb_posix::thread::ThreadBuilder;

const ITERATIONS: u64 = 10000000;

/// A participant that could not be spawned: upstream would wait at the
/// barrier forever (the other participant is already waiting there), so
/// the process ends with the reason instead.
fn spawn_failed(
    e: iceoryx2_bb_posix::thread::ThreadSpawnError,
) -> iceoryx2_bb_posix::thread::Thread {
    eprintln!("iox_own_pubsub: failed to spawn a participant thread: {e:?}");
    std::process::exit(1)
}

fn service_name(base: &str) -> Result<ServiceName, Box<dyn core::error::Error>> {
    Ok(ServiceName::new(&format!("{base}-{}", std::process::id()))?)
}

fn perform_benchmark<T: Service>(args: &Args) -> Result<(), Box<dyn core::error::Error>> {
    let service_name_a2b = service_name("a2b")?;
    let service_name_b2a = service_name("b2a")?;
    let node = NodeBuilder::new().create::<T>()?;

    let service_a2b = node
        .service_builder(&service_name_a2b)
        .publish_subscribe::<[u8]>()
        .max_publishers(1 + args.number_of_additional_publishers)
        .max_subscribers(1 + args.number_of_additional_subscribers)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true)
        .create()?;

    let service_b2a = node
        .service_builder(&service_name_b2a)
        .publish_subscribe::<[u8]>()
        .max_publishers(1 + args.number_of_additional_publishers)
        .max_subscribers(1 + args.number_of_additional_subscribers)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true)
        .create()?;

    let mut additional_publishers = Vec::new();
    let mut additional_subscribers = Vec::new();

    for _ in 0..args.number_of_additional_publishers {
        additional_publishers.push(service_a2b.publisher_builder().create()?);
        additional_publishers.push(service_b2a.publisher_builder().create()?);
    }

    for _ in 0..args.number_of_additional_subscribers {
        additional_subscribers.push(service_a2b.subscriber_builder().create()?);
        additional_subscribers.push(service_b2a.subscriber_builder().create()?);
    }

    let start_benchmark_barrier_handle = BarrierHandle::new();
    let startup_barrier_handle = BarrierHandle::new();
    let startup_barrier = BarrierBuilder::new(3)
        .create(&startup_barrier_handle)
        .unwrap();
    let start_benchmark_barrier = BarrierBuilder::new(3)
        .create(&start_benchmark_barrier_handle)
        .unwrap();

    let t1 = ThreadBuilder::new()
        .affinity(&[args.cpu_core_participant_1])
        .priority(255)
        .spawn(|| {
            let sender_a2b = service_a2b
                .publisher_builder()
                .initial_max_slice_len(args.payload_size)
                .create()
                .unwrap();
            let receiver_b2a = service_b2a.subscriber_builder().create().unwrap();

            startup_barrier.wait();
            start_benchmark_barrier.wait();

            let mut sample = if args.send_copy {
                let mut sample = sender_a2b.loan_slice_uninit(args.payload_size).unwrap();
                sample.payload_mut().fill(MaybeUninit::new(0));
                // SAFETY: every byte of the payload was written just above.
                unsafe { sample.assume_init() }
            } else {
                // SAFETY: as upstream, a payload of bytes sent unwritten (the
                // receiver never reads it): the bytes are the service's
                // shared-memory data segment, mapped from the kernel
                // (zero-filled at creation, only ever written with bytes),
                // so every byte holds a value; `MaybeUninit` is the API's.
                unsafe {
                    sender_a2b
                        .loan_slice_uninit(args.payload_size)
                        .unwrap()
                        .assume_init()
                }
            };

            for _ in 0..args.iterations {
                sample.send().unwrap();
                // SAFETY: as above: mapped shared memory, every byte holds
                // a value, and the payload is never read.
                sample = unsafe {
                    sender_a2b
                        .loan_slice_uninit(args.payload_size)
                        .unwrap()
                        .assume_init()
                };
                while receiver_b2a.receive().unwrap().is_none() {}
            }
        })
        .unwrap_or_else(spawn_failed);

    let t2 = ThreadBuilder::new()
        .affinity(&[args.cpu_core_participant_2])
        .priority(255)
        .spawn(|| {
            let sender_b2a = service_b2a
                .publisher_builder()
                .initial_max_slice_len(args.payload_size)
                .create()
                .unwrap();
            let receiver_a2b = service_a2b.subscriber_builder().create().unwrap();

            startup_barrier.wait();
            start_benchmark_barrier.wait();

            for _ in 0..args.iterations {
                let sample = if args.send_copy {
                    let mut sample = sender_b2a.loan_slice_uninit(args.payload_size).unwrap();
                    sample.payload_mut().fill(MaybeUninit::new(0));
                    // SAFETY: every byte of the payload was written just above.
                    unsafe { sample.assume_init() }
                } else {
                    // SAFETY: as in the other thread: mapped shared memory,
                    // every byte holds a value, never read.
                    unsafe {
                        sender_b2a
                            .loan_slice_uninit(args.payload_size)
                            .unwrap()
                            .assume_init()
                    }
                };

                while receiver_a2b.receive().unwrap().is_none() {}

                sample.send().unwrap();
            }
        })
        .unwrap_or_else(spawn_failed);

    startup_barrier.wait();
    let start = Time::now().expect("failed to acquire time");
    start_benchmark_barrier.wait();

    drop(t1);
    drop(t2);

    let stop = start.elapsed().expect("failed to measure time");
    println!(
        "{} ::: Iterations: {}, Time: {} s, Latency: {} ns, Sample Size: {}",
        core::any::type_name::<T>(),
        args.iterations,
        stop.as_secs_f64(),
        stop.as_nanos() / (args.iterations as u128 * 2),
        args.payload_size
    );

    Ok(())
}

/// Samples the throughput mode's subscriber buffers: the harness's plain
/// iceoryx2 throughput row uses the same.
const THROUGHPUT_BUFFER: usize = 256;

/// Not upstream: the harness's plain-iceoryx2 throughput row (1 publisher,
/// 1 subscriber) measured the way the ping-pong above is built, two pinned
/// threads of one process. One service `a2b` (1 publisher, 1 subscriber,
/// history 0, a buffer of [`THROUGHPUT_BUFFER`] with safe overflow);
/// participant 1 loans, writes `payload_size` bytes and sends,
/// `iterations` times; participant 2 polls `receive` and counts what
/// arrives. Prints the send rate (iterations / time from the start barrier
/// to the last send) and the receive rate (samples received / time from
/// the first to the last received).
fn throughput<T: Service>(args: &Args) -> Result<(), Box<dyn core::error::Error>> {
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let node = NodeBuilder::new().create::<T>()?;
    let service = node
        .service_builder(&service_name("a2b")?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(THROUGHPUT_BUFFER)
        .enable_safe_overflow(true)
        .create()?;

    let startup_barrier_handle = BarrierHandle::new();
    let startup_barrier = BarrierBuilder::new(3)
        .create(&startup_barrier_handle)
        .unwrap();
    let done = AtomicBool::new(false);
    let sent_secs = std::sync::Mutex::new(0.0f64);
    let received = std::sync::Mutex::new((0u64, 0.0f64));

    let t1 = ThreadBuilder::new()
        .affinity(&[args.cpu_core_participant_1])
        .priority(255)
        .spawn(|| {
            let sender = service
                .publisher_builder()
                .initial_max_slice_len(args.payload_size)
                .create()
                .unwrap();
            startup_barrier.wait();
            let start = Instant::now();
            for _ in 0..args.iterations {
                let mut sample = sender.loan_slice_uninit(args.payload_size).unwrap();
                sample.payload_mut().fill(MaybeUninit::new(0));
                // SAFETY: every byte of the payload was written just above.
                unsafe { sample.assume_init() }.send().unwrap();
            }
            *sent_secs.lock().unwrap() = start.elapsed().as_secs_f64();
            // Release: pairs with the Acquire load in participant 2's loop;
            // every send above happens before it stops polling.
            done.store(true, Ordering::Release);
        })
        .unwrap_or_else(spawn_failed);

    let t2 = ThreadBuilder::new()
        .affinity(&[args.cpu_core_participant_2])
        .priority(255)
        .spawn(|| {
            let receiver = service.subscriber_builder().create().unwrap();
            startup_barrier.wait();
            // The clock is read on the first sample and then only when the
            // queue is found empty after samples (as the harness's receive
            // loop does): no clock read per sample slows this reference.
            let (mut count, mut first, mut last) = (0u64, None, Instant::now());
            let mut unstamped = false;
            loop {
                if receiver.receive().unwrap().is_some() {
                    if count == 0 {
                        first = Some(Instant::now());
                    }
                    count += 1;
                    unstamped = true;
                    continue;
                }
                if unstamped {
                    last = Instant::now();
                    unstamped = false;
                }
                // Acquire: pairs with the Release store after the last
                // send; one more `receive` pass then drains what is left.
                if done.load(Ordering::Acquire) {
                    while receiver.receive().unwrap().is_some() {
                        count += 1;
                        unstamped = true;
                    }
                    if unstamped {
                        last = Instant::now();
                    }
                    break;
                }
            }
            let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
            *received.lock().unwrap() = (count, secs);
        })
        .unwrap_or_else(spawn_failed);

    startup_barrier.wait();
    drop(t1);
    drop(t2);

    let sent_secs = *sent_secs.lock().unwrap();
    let (count, secs) = *received.lock().unwrap();
    println!(
        "{} ::: Throughput: Iterations: {}, Sent: {:.3} M/s, Received: {} ({:.3} M/s), Sample Size: {}",
        core::any::type_name::<T>(),
        args.iterations,
        args.iterations as f64 / sent_secs.max(1e-9) / 1e6,
        count,
        count as f64 / secs.max(1e-9) / 1e6,
        args.payload_size
    );
    Ok(())
}

#[derive(Debug)]
struct Args {
    /// Number of iterations the A --> B --> A communication is repeated
    iterations: u64,
    /// Run benchmark for every service setup
    bench_all: bool,
    /// Run benchmark for the IPC zero copy setup
    bench_ipc: bool,
    /// Run benchmark for the process local setup
    bench_local: bool,
    /// Activate full log output
    debug_mode: bool,
    /// The cpu core that shall be used by participant 1
    cpu_core_participant_1: usize,
    /// The cpu core that shall be used by participant 2
    cpu_core_participant_2: usize,
    /// The size in bytes of the payload that shall be used
    payload_size: usize,
    /// Send a copy of the payload instead of performing true zero-copy.
    send_copy: bool,
    /// The number of additional publishers per service in the setup.
    number_of_additional_publishers: usize,
    /// The number of additional subscribers per service in the setup.
    number_of_additional_subscribers: usize,
    /// Not upstream: stream samples one way instead of the ping-pong.
    throughput: bool,
}

const HELP: &str = "\
iceoryx2's benchmarks/publish-subscribe (commit 0d4237471), ported

Usage: iox_own_pubsub [OPTIONS]

Options:
  -i, --iterations <N>                         Number of iterations the A --> B --> A communication is repeated [default: 10000000]
  -b, --bench-all                              Run benchmark for every service setup
      --bench-ipc                              Run benchmark for the IPC zero copy setup
      --bench-local                            Run benchmark for the process local setup
  -d, --debug-mode                             Activate full log output
      --cpu-core-participant-1 <CORE>          The cpu core that shall be used by participant 1 [default: 0]
      --cpu-core-participant-2 <CORE>          The cpu core that shall be used by participant 2 [default: 1]
  -p, --payload-size <BYTES>                   The size in bytes of the payload that shall be used [default: 8192]
      --send-copy                              Send a copy of the payload instead of performing true zero-copy
      --number-of-additional-publishers <N>    The number of additional publishers per service in the setup [default: 0]
      --number-of-additional-subscribers <N>   The number of additional subscribers per service in the setup [default: 0]
      --throughput                             Not upstream: stream samples 1 -> 1 (buffer 256, every payload written) and print the rates
  -h, --help                                   Print help
";

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut args = Args {
            iterations: ITERATIONS,
            bench_all: false,
            bench_ipc: false,
            bench_local: false,
            debug_mode: false,
            cpu_core_participant_1: 0,
            cpu_core_participant_2: 1,
            payload_size: 8192,
            send_copy: false,
            number_of_additional_publishers: 0,
            number_of_additional_subscribers: 0,
            throughput: false,
        };
        while let Some(arg) = it.next() {
            // `--name=value` and `--name value` both work, as with clap.
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |what: &str| -> Result<u64, String> {
                let v = inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("{what} needs a value"))?;
                v.parse()
                    .map_err(|_| format!("{what}: '{v}' is not a non-negative integer"))
            };
            match name.as_str() {
                "-h" | "--help" => return Ok(None),
                "-i" | "--iterations" => args.iterations = value(&name)?,
                "-b" | "--bench-all" => args.bench_all = true,
                "--bench-ipc" => args.bench_ipc = true,
                "--bench-local" => args.bench_local = true,
                "-d" | "--debug-mode" => args.debug_mode = true,
                "--cpu-core-participant-1" => args.cpu_core_participant_1 = value(&name)? as usize,
                "--cpu-core-participant-2" => args.cpu_core_participant_2 = value(&name)? as usize,
                "-p" | "--payload-size" => args.payload_size = value(&name)? as usize,
                "--send-copy" => args.send_copy = true,
                "--number-of-additional-publishers" => {
                    args.number_of_additional_publishers = value(&name)? as usize
                }
                "--number-of-additional-subscribers" => {
                    args.number_of_additional_subscribers = value(&name)? as usize
                }
                "--throughput" => args.throughput = true,
                other => return Err(format!("unknown argument '{other}' (see --help)")),
            }
        }
        if args.iterations == 0 {
            return Err("--iterations must be at least 1".into());
        }
        Ok(Some(args))
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("iox_own_pubsub: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iox_own_pubsub: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One benchmark of one service variant.
type Bench = fn(&Args) -> Result<(), Box<dyn core::error::Error>>;

fn run(args: &Args) -> Result<(), Box<dyn core::error::Error>> {
    if args.debug_mode {
        set_log_level(LogLevel::Trace);
    } else {
        set_log_level(LogLevel::Error);
    }

    let mut at_least_one_benchmark_did_run = false;

    let bench: [Bench; 4] = if args.throughput {
        [
            throughput::<ipc::Service>,
            throughput::<ipc_threadsafe::Service>,
            throughput::<local::Service>,
            throughput::<local_threadsafe::Service>,
        ]
    } else {
        [
            perform_benchmark::<ipc::Service>,
            perform_benchmark::<ipc_threadsafe::Service>,
            perform_benchmark::<local::Service>,
            perform_benchmark::<local_threadsafe::Service>,
        ]
    };

    if args.bench_ipc || args.bench_all {
        bench[0](args)?;
        bench[1](args)?;
        at_least_one_benchmark_did_run = true;
    }

    if args.bench_local || args.bench_all {
        bench[2](args)?;
        bench[3](args)?;
        at_least_one_benchmark_did_run = true;
    }

    if !at_least_one_benchmark_did_run {
        println!(
            "Please use either '--bench-all' or select a specific benchmark. See `--help` for details."
        );
    }

    Ok(())
}
