//! Where a workspace binary is, for tests of either package, and a child process's output
//! collected line by line.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The workspace binary `name`, built beside the test running this (a test binary lives in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`): Cargo builds a package's binaries
/// for its integration tests; another member's tests need `cargo test --workspace`.
pub fn workspace_bin(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// A child's output: every line (stdout and stderr, as they arrive) and stderr's alone.
#[derive(Clone, Default)]
pub struct Lines {
    pub all: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// Spawns `cmd` with stdin closed, stdout and stderr piped and the child killed on drop, and
/// collects its [`Lines`]; `on_stdout` sees each stdout line before it is kept.
pub fn spawn_collecting(
    cmd: &mut Command,
    mut on_stdout: impl FnMut(&str) + Send + 'static,
) -> (Child, Lines) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn the binary");
    let lines = Lines::default();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let all = Arc::clone(&lines.all);
    tokio::spawn(async move {
        let mut out = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = out.next_line().await {
            on_stdout(&line);
            all.lock().unwrap().push(line);
        }
    });
    let (all, err) = (Arc::clone(&lines.all), Arc::clone(&lines.stderr));
    tokio::spawn(async move {
        let mut out = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = out.next_line().await {
            err.lock().unwrap().push(line.clone());
            all.lock().unwrap().push(line);
        }
    });
    (child, lines)
}
