//! Tests that rerun themselves alone in a fresh process of the test binary.

/// Runs the unit test `name` (its full path) alone in a fresh process of
/// this test binary with `env` set to "1", and fails unless it ran and
/// passed there.
pub(crate) fn rerun_alone_with(name: &str, env: &str) {
    rerun_alone_with_value(name, env, "1");
}

/// [`rerun_alone_with`], with `env` set to `value`.
pub(crate) fn rerun_alone_with_value(name: &str, env: &str, value: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child run failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
}
