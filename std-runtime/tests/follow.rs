//! `zerocast follow` run as a process.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zerocast_runtime::wal::Checkpoints;

const BIN: &str = env!("CARGO_BIN_EXE_zerocast");

/// `follow --until SEQ` whose checkpoint is already at or past SEQ has
/// nothing left to do: it exits at once instead of waiting for frames.
#[test]
fn regression_follow_until_exits_when_checkpoint_is_already_past() {
    let ns = format!("fu{}", std::process::id());
    let wal: PathBuf = std::env::temp_dir().join(format!("zc-follow-{ns}"));
    let _ = std::fs::remove_dir_all(&wal);
    Checkpoints::new(&wal.join("trade_events").join("checkpoints"))
        .unwrap()
        .store("f", 10)
        .unwrap();
    let mut child = Command::new(BIN)
        .env_remove("ZEROCAST_NAMESPACE")
        .env("ZEROCAST_LOG", "warn")
        .args(["--namespace", &ns, "follow", "--topic", "trade_events"])
        .arg("--wal")
        .arg(&wal)
        .args(["--name", "f", "--until", "5"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("zerocast.{ns}."))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir_all(&wal);
    let status = status.expect("follow --until 5 with checkpoint 10 did not exit within 10 s");
    assert!(status.success(), "{status}");
}
