//! Where a workspace binary is, for tests of either package.

/// The workspace binary `name`, built beside the test running this (a test binary lives in
/// target/<profile>/deps/, the binaries in target/<profile>/): Cargo builds a package's binaries
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
