//! iceoryx2's own event benchmark, ported to run here: the wake-up
//! comparison of issue 14 (both sides asleep in the kernel) checked against
//! the method iceoryx2 publishes its figures with.
//!
//! Ported from eclipse-iceoryx/iceoryx2, `benchmarks/event/src/main.rs` at
//! commit 0d4237471 (the last before 0.10; its API matches the 0.10.0 this
//! workspace uses). Upstream: Copyright (c) 2023 Contributors to the Eclipse
//! Foundation, SPDX-License-Identifier: Apache-2.0 OR MIT; this port is
//! under the same terms.
//!
//! The same as upstream: event services `a2b` and `b2a` (1 + additional
//! notifiers and listeners, `event_id_max_value`), one node, the threads
//! built with `iceoryx2_bb_posix::thread::ThreadBuilder` (pinned, priority
//! 255), the two barriers, each participant's loop (`blocking_wait` until
//! at least one notification, then `notify`), the timing and the output
//! line (latency = time / (2 x iterations), integer ns). What differs: the
//! arguments are parsed by hand (same names and defaults, `--help` lists
//! them) instead of by clap, and the service names get the process id
//! appended.
//!
//! ```sh
//! cargo run --release -p zerocast-benches --example iox_own_event -- --bench-ipc
//! ```

use std::process::ExitCode;

use iceoryx2::prelude::*;
use iceoryx2_bb_posix::barrier::*;
use iceoryx2_bb_posix::clock::Time;
use iceoryx2_bb_posix::thread::ThreadBuilder;

/// A participant that could not be spawned: upstream would wait at the
/// barrier forever, so the process ends with the reason instead.
fn spawn_failed(
    e: iceoryx2_bb_posix::thread::ThreadSpawnError,
) -> iceoryx2_bb_posix::thread::Thread {
    eprintln!("iox_own_event: failed to spawn a participant thread: {e:?}");
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
        .event()
        .max_notifiers(1 + args.number_of_additional_notifiers)
        .max_listeners(1 + args.number_of_additional_listeners)
        .event_id_max_value(args.max_event_id)
        .create()?;

    let service_b2a = node
        .service_builder(&service_name_b2a)
        .event()
        .max_notifiers(1 + args.number_of_additional_notifiers)
        .max_listeners(1 + args.number_of_additional_listeners)
        .event_id_max_value(args.max_event_id)
        .create()?;

    let mut additional_notifiers = Vec::new();
    let mut additional_listeners = Vec::new();

    for _ in 0..args.number_of_additional_notifiers {
        additional_notifiers.push(service_a2b.notifier_builder().create()?);
        additional_notifiers.push(service_b2a.notifier_builder().create()?);
    }

    for _ in 0..args.number_of_additional_listeners {
        additional_listeners.push(service_a2b.listener_builder().create()?);
        additional_listeners.push(service_b2a.listener_builder().create()?);
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
            let notifier_a2b = service_a2b.notifier_builder().create().unwrap();
            let listener_b2a = service_b2a.listener_builder().create().unwrap();

            startup_barrier.wait();
            start_benchmark_barrier.wait();

            notifier_a2b.notify().expect("failed to notify");

            for _ in 0..args.iterations {
                while listener_b2a.blocking_wait(|_| {}).unwrap() == 0 {}
                notifier_a2b.notify().expect("failed to notify");
            }
        })
        .unwrap_or_else(spawn_failed);

    let t2 = ThreadBuilder::new()
        .affinity(&[args.cpu_core_participant_2])
        .priority(255)
        .spawn(|| {
            let notifier_b2a = service_b2a.notifier_builder().create().unwrap();
            let listener_a2b = service_a2b.listener_builder().create().unwrap();

            startup_barrier.wait();
            start_benchmark_barrier.wait();

            for _ in 0..args.iterations {
                while listener_a2b.blocking_wait(|_| {}).unwrap() == 0 {}
                notifier_b2a.notify().expect("failed to notify");
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
        "{} ::: MaxEventId: {}, Iterations: {}, Time: {} s, Latency: {} ns",
        core::any::type_name::<T>(),
        args.max_event_id,
        args.iterations,
        stop.as_secs_f64(),
        stop.as_nanos() / (args.iterations as u128 * 2)
    );

    Ok(())
}

const ITERATIONS: usize = 1000000;
const EVENT_ID_MAX_VALUE: usize = 128;

#[derive(Debug)]
struct Args {
    /// Number of iterations the A --> B --> A communication is repeated
    iterations: usize,
    /// Run benchmark for every service setup
    bench_all: bool,
    /// Run benchmark for the IPC zero copy setup
    bench_ipc: bool,
    /// Run benchmark for the process local setup
    bench_local: bool,
    /// The greatest supported EventId
    max_event_id: usize,
    /// Activate full log output
    debug_mode: bool,
    /// The cpu core that shall be used by participant 1
    cpu_core_participant_1: usize,
    /// The cpu core that shall be used by participant 2
    cpu_core_participant_2: usize,
    /// The number of additional notifiers per service in the setup.
    number_of_additional_notifiers: usize,
    /// The number of additional listeners per service in the setup.
    number_of_additional_listeners: usize,
}

const HELP: &str = "\
iceoryx2's benchmarks/event (commit 0d4237471), ported

Usage: iox_own_event [OPTIONS]

Options:
  -i, --iterations <N>                       Number of iterations the A --> B --> A communication is repeated [default: 1000000]
  -b, --bench-all                            Run benchmark for every service setup
      --bench-ipc                            Run benchmark for the IPC zero copy setup
      --bench-local                          Run benchmark for the process local setup
  -m, --max-event-id <N>                     The greatest supported EventId [default: 128]
  -d, --debug-mode                           Activate full log output
      --cpu-core-participant-1 <CORE>        The cpu core that shall be used by participant 1 [default: 0]
      --cpu-core-participant-2 <CORE>        The cpu core that shall be used by participant 2 [default: 1]
      --number-of-additional-notifiers <N>   The number of additional notifiers per service in the setup [default: 0]
      --number-of-additional-listeners <N>   The number of additional listeners per service in the setup [default: 0]
  -h, --help                                 Print help
";

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut args = Args {
            iterations: ITERATIONS,
            bench_all: false,
            bench_ipc: false,
            bench_local: false,
            max_event_id: EVENT_ID_MAX_VALUE,
            debug_mode: false,
            cpu_core_participant_1: 0,
            cpu_core_participant_2: 1,
            number_of_additional_notifiers: 0,
            number_of_additional_listeners: 0,
        };
        while let Some(arg) = it.next() {
            // `--name=value` and `--name value` both work, as with clap.
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |what: &str| -> Result<usize, String> {
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
                "-m" | "--max-event-id" => args.max_event_id = value(&name)?,
                "-d" | "--debug-mode" => args.debug_mode = true,
                "--cpu-core-participant-1" => args.cpu_core_participant_1 = value(&name)?,
                "--cpu-core-participant-2" => args.cpu_core_participant_2 = value(&name)?,
                "--number-of-additional-notifiers" => {
                    args.number_of_additional_notifiers = value(&name)?
                }
                "--number-of-additional-listeners" => {
                    args.number_of_additional_listeners = value(&name)?
                }
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
            eprintln!("iox_own_event: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iox_own_event: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn core::error::Error>> {
    if args.debug_mode {
        set_log_level(LogLevel::Trace);
    } else {
        set_log_level(LogLevel::Error);
    }

    let mut at_least_one_benchmark_did_run = false;

    if args.bench_ipc || args.bench_all {
        perform_benchmark::<ipc::Service>(args)?;
        perform_benchmark::<ipc_threadsafe::Service>(args)?;
        at_least_one_benchmark_did_run = true;
    }

    if args.bench_local || args.bench_all {
        perform_benchmark::<local::Service>(args)?;
        perform_benchmark::<local_threadsafe::Service>(args)?;
        at_least_one_benchmark_did_run = true;
    }

    if !at_least_one_benchmark_did_run {
        println!(
            "Please use either '--bench-all' or select a specific benchmark. See `--help` for details."
        );
    }

    Ok(())
}
