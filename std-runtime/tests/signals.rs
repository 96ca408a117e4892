//! Long-running commands stop cleanly on SIGINT and SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zerocast_ipc::{Bus, Config};

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

#[path = "support/guard.rs"]
mod guard;
use guard::ChildGuard;

/// Regression: `zerocast pub` never looked at the signal flag, so SIGINT and
/// SIGTERM did nothing and only SIGKILL stopped it. It now stops within
/// about one frame, prints its summary and exits 0, like `sub`, `record`
/// and `follow`.
#[test]
fn regression_pub_stops_on_sigint_and_sigterm() {
    for (signal, name) in [(libc::SIGTERM, "term"), (libc::SIGINT, "int")] {
        let namespace = format!("sig{}-{name}", std::process::id());
        let bus = Bus::new(Config {
            namespace: namespace.clone(),
            ..Config::default_topics()
        });
        bus.remove_segments();
        // Killed and reaped however the test ends (it publishes until stopped).
        let mut child: ChildGuard = Command::new(BIN)
            .env_remove("ZEROCAST_NAMESPACE")
            .env("ZEROCAST_LOG", "warn")
            .args(["--namespace", &namespace, "pub", "--topic", "trade_events"])
            .args(["--count", "1000000000000", "--rate", "1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .into();
        // Wait until it publishes, so the signal lands inside the loop.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(segment) = bus.open_segment("trade_events") {
                if segment.ring().head() > 0 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{name}: pub never published");
            assert!(
                child.try_wait().unwrap().is_none(),
                "{name}: pub exited early"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's, not yet waited for, so it cannot have been reused.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let sent = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if sent.elapsed() > Duration::from_secs(2) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Some(status) = status else {
            child.kill().unwrap();
            child.wait().unwrap();
            bus.remove_segments();
            panic!("{name}: pub still running 2 s after the signal");
        };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            status.success(),
            "{name}: {status}, stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let published: u64 = stdout
            .strip_prefix("published ")
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no summary in {stdout:?}"));
        assert!(published > 0, "{name}: {stdout}");
        let head = bus.open_segment("trade_events").unwrap().ring().head();
        assert_eq!(
            published, head,
            "{name}: the summary counts every frame: {stdout}"
        );
        bus.remove_segments();
    }
}
