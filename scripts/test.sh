#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the Python tools it needs, then
# the deployment renderer's own checks, format and lint checks, the release build of the image's binary, every cargo test
# (debug), and the deployment lints.
#
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "python test tools"
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
command -v pyenv >/dev/null 2>&1 && pyenv rehash
hash -r

step "deployment renderer self-test (scripts/render-deploy.py, used by tests/it/as_shipped.rs)"
python3 scripts/render-deploy.py --self-test
python3 scripts/render-deploy.py > /dev/null

step "docs: every relative link resolves (scripts/check-doc-links.py)"
python3 scripts/check-doc-links.py

step "import graph (scripts/check-imports.py: no circles between modules)"
python3 scripts/check-imports.py src crates/relay/src

step "the relay crate is sans-IO: no tokio among its dependencies (cargo tree)"
if cargo tree --locked -p media-relay -e normal --prefix none | grep -Eq '^(tokio|mio|hyper) '; then
    echo "crates/relay depends on an I/O runtime:" >&2
    cargo tree --locked -p media-relay -e normal -i tokio >&2 || true
    exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo doc (intra-doc links resolve; reuses clippy's dependency metadata)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --workspace

step "release build of media-ws (the binary the image ships, same profile)"
cargo build --locked --release --bin media-ws
ls -l target/release/media-ws

step "cargo test"
cargo test --locked --workspace

step "deployment lints"
bash scripts/lint-deploy.sh
