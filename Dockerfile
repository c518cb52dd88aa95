# syntax=docker/dockerfile:1.7
#
# media-ws: Twilio Media Streams WebSocket terminator (this repo's `media-ws` binary only).
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t <repo>:<tag> --push .
#   docker buildx build --platform linux/arm64 -t <repo>:<tag> --push .      # Graviton only
#
# Design (see infra/README.md for the deployment side):
# - Cross-compile instead of emulating. Every build stage runs on the builder's own
#   architecture (--platform=$BUILDPLATFORM); cargo-zigbuild uses zig as the C compiler
#   and linker for the musl targets, so the C parts of the dependency graph (aws-lc-sys,
#   ring) build for either architecture without QEMU and without a per-arch gcc. An
#   arm64 build under QEMU would be several times slower for the same result.
# - Static musl binary (x86_64-/aarch64-unknown-linux-musl) on distroless/static:
#   no libc, no shell, no curl, no package manager. Base ~2 MB + the stripped binary,
#   which keeps the image under the 30 MB target (check with `docker image ls`).
#   distroless/cc (glibc) alone is ~20 MB uncompressed and would not leave room.
# - Dependencies are compiled in their own layer against stub sources
#   (scripts/cargo-stub-targets.sh), keyed only on Cargo.toml and Cargo.lock, so an
#   edit under src/ rebuilds only this crate.
# - Runs as distroless' `nonroot` user (65532). Exec-form ENTRYPOINT so the binary is
#   PID 1 and receives SIGTERM directly (ECS stop, `docker stop`) and can drain.
# - No secrets at build time: the image carries none, and at run time secret variables
#   hold `ssm:/...` references that the app resolves itself.

ARG RUST_IMAGE=rust:1-bookworm
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

# ---------------------------------------------------------------------------------------
# zig + cargo-zigbuild, both static executables shipped as hash-pinned PyPI wheels.
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS zigbuild
COPY docker/zigbuild-requirements.txt /tmp/zigbuild-requirements.txt
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps \
        --only-binary=:all: --require-hashes \
        --target /opt/zigbuild -r /tmp/zigbuild-requirements.txt

# ---------------------------------------------------------------------------------------
FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]

COPY --from=zigbuild /opt/zigbuild /opt/zigbuild
ENV PATH="/opt/zigbuild/bin:/opt/zigbuild/ziglang:${PATH}" \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
RUN rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl \
    && zig version \
    && cargo zigbuild --version

WORKDIR /build

# Map the image platform to a Rust target triple (read back by the cargo steps below).
ARG TARGETARCH
RUN case "${TARGETARCH}" in \
        amd64) echo x86_64-unknown-linux-musl ;; \
        arm64) echo aarch64-unknown-linux-musl ;; \
        *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target

# 1. Dependencies only: the manifest, the lockfile and a `fn main() {}` stub per target.
COPY --chmod=0755 scripts/cargo-stub-targets.sh /usr/local/bin/cargo-stub-targets
COPY Cargo.toml Cargo.lock ./
# The workspace's other member (media-sim): Cargo reads its manifest to resolve the
# workspace; stubs stand in for its sources, which the image never builds.
COPY sim/Cargo.toml sim/Cargo.toml
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo-stub-targets Cargo.toml \
    && cargo-stub-targets sim/Cargo.toml \
    && cargo zigbuild --release --locked --bin media-ws --target "$(cat /rust-target)" \
    && rm -rf src benches examples tests

# 2. The real sources. COPY keeps the files' own mtimes, which are older than the stub
#    build, so touch them or cargo would consider the stub artifacts fresh.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && cargo zigbuild --release --locked --bin media-ws --target "$(cat /rust-target)" \
    && install -D -m 0555 "target/$(cat /rust-target)/release/media-ws" /out/media-ws \
    && if readelf -lW /out/media-ws | grep -q 'program interpreter'; then \
        echo "media-ws is dynamically linked; distroless/static has no libc" >&2; exit 1; \
    fi

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="media-ws" \
      org.opencontainers.image.description="Twilio Media Streams WebSocket terminator (media-orchestrator)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/media-ws /media-ws

# Defaults only; the ECS task definition (infra/media-ws.yaml) sets the full environment.
ENV PORT=8080 \
    LOG_FORMAT=json

EXPOSE 8080
USER 65532:65532
STOPSIGNAL SIGTERM

# `media-ws healthcheck` probes http://127.0.0.1:$PORT/health (200 → exit 0, else 1);
# it reports unhealthy while draining. ECS uses its own copy of this check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/media-ws", "healthcheck"]

ENTRYPOINT ["/media-ws"]
