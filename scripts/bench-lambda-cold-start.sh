#!/usr/bin/env bash
# Cold start of the release media-lambda: N fresh processes against a Lambda Runtime API on
# loopback (crates/test-support/src/lambda/runtime_api.rs), secrets from moto on loopback and, for
# comparison, as plain values. Prints a Markdown table (median, p90, min, max) for
#   ready       = process spawn -> first GET /2018-06-01/runtime/invocation/next
#   first event = event handed out -> response posted (POST /token)
# and the binary sizes.
#
#   scripts/bench-lambda-cold-start.sh [RUNS]     (default 20; needs moto_server)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=${1:-20}
target=${CARGO_TARGET_DIR:-target}

echo "==> machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "==> cargo build --release --bin media-lambda"
cargo build --locked --release --bin media-lambda
# Bench a copy: `cargo test --release` below may relink target/release/media-lambda with the
# dev-dependencies' feature set, and the figures must be for the binary that ships.
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
cp "${target}/release/media-lambda" "${tmp}/media-lambda"
bin="${tmp}/media-lambda"
echo "==> release binary: $(stat -c %s "${bin}") bytes"

echo "==> ${runs} runs per row"
MEDIA_LAMBDA_BIN="${bin}" BENCH_RUNS="${runs}" \
  cargo test --locked --release --test it lambda_cold_start -- --ignored --nocapture --test-threads 1
