//! Where a workspace binary is, for tests of either package.
#![allow(dead_code, clippy::unwrap_used)]

/// The binary `name`: `cargo_path` (Cargo's `CARGO_BIN_EXE_<name>`, set in the tests of the
/// package that owns it), else the one `cargo test --workspace` built beside the test
/// (target/<profile>/deps/<test> -> target/<profile>/<name>), for another member's tests.
pub fn workspace_bin(name: &str, cargo_path: Option<&str>) -> String {
    if let Some(bin) = cargo_path {
        return bin.to_string();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.exists(),
        "{} missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}
