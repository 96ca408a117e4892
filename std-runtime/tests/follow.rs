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

/// `follow --out FILE` whose writes fail (a full disk; here a file-size
/// limit) must not checkpoint the sequence it failed to write: the
/// checkpoint may claim only what the file holds.
#[test]
fn regression_follow_out_write_failure_is_not_checkpointed() {
    use std::os::unix::process::CommandExt;
    use zerocast_core::frame::{encode, FrameBuf};
    use zerocast_runtime::feed::Feed;
    use zerocast_runtime::wal::{FsyncPolicy, Wal, WalOptions};

    let ns = format!("fw{}", std::process::id());
    let wal: PathBuf = std::env::temp_dir().join(format!("zc-follow-{ns}"));
    let _ = std::fs::remove_dir_all(&wal);
    let dir = wal.join("trade_events");
    let (mut w, _) = Wal::open(
        &dir,
        "trade_events",
        WalOptions {
            segment_size: 1 << 20,
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .unwrap();
    let mut feed = Feed::new(4, 7);
    for seq in 0..100u64 {
        let mut buf = FrameBuf::default();
        let words = encode(&feed.trade(), 1, 2, &mut buf.0).unwrap();
        buf.0[0] = seq;
        w.append(seq, 0, &buf.bytes()[..words * 8]).unwrap();
    }
    drop(w);
    // The topic's segment exists before the limit applies: follow binds its
    // checkpoint to the segment's identity, and creating a segment of
    // megabytes under an 80-byte file-size limit would fail first.
    let mut config = zerocast_ipc::Config::default_topics();
    config.namespace = ns.clone();
    drop(
        zerocast_ipc::Bus::new(config)
            .segment("trade_events")
            .unwrap(),
    );
    let out = wal.join("out.bin");
    // Room for 10 entries (8 bytes each): the 11th write fails with EFBIG.
    const LIMIT: u64 = 80;
    let mut cmd = Command::new(BIN);
    cmd.env_remove("ZEROCAST_NAMESPACE")
        .env("ZEROCAST_LOG", "warn")
        .args(["--namespace", &ns, "follow", "--topic", "trade_events"])
        .arg("--wal")
        .arg(&wal)
        .args(["--name", "f", "--until", "99", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec; an
    // ignored SIGXFSZ stays ignored across exec, so a write past the limit
    // fails with EFBIG instead of killing the process.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = cmd.output().unwrap();
    for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("zerocast.{ns}."))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let written: Vec<u64> = std::fs::read(&out)
        .unwrap()
        .chunks_exact(8)
        .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
        .collect();
    let checkpoint = Checkpoints::new(&dir.join("checkpoints"))
        .unwrap()
        .load("f")
        .unwrap();
    let _ = std::fs::remove_dir_all(&wal);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "follow succeeded: {stderr}");
    assert_eq!(written, (0..10).collect::<Vec<_>>(), "{stderr}");
    assert_eq!(
        checkpoint,
        Some(9),
        "the checkpoint claims more than {} holds ({stderr})",
        out.display()
    );
}
