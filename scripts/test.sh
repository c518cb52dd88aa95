#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the Python tools it needs, then
# format and lint checks, the release build of the image's binary, every cargo test
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

step "release build of media-ws (the binary the image ships, same profile)"
cargo build --locked --release --bin media-ws
ls -l target/release/media-ws

step "cargo test"
cargo test --locked

step "deployment lints"
bash scripts/lint-deploy.sh
