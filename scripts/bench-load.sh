#!/usr/bin/env bash
# Macro benchmark on loopback: media-ws (agent audio pcm_16000 and ulaw_8000) and the floor
# relay (examples/floor_relay.rs, ulaw passthrough), each relaying to the echo agent that
# `media-sim load --agent-listen` plays, at 100, 200, 400… calls, doubling until real time
# breaks (a failed call, a dropped frame, p99 ≥ 20 ms, or the generator falling behind).
#
#   scripts/bench-load.sh                      # all three servers, 100 200 400 … up to 1600
#   SIZES="100 200" SERVERS="media-ws-pcm16 floor" DURATION=20 scripts/bench-load.sh
#   PREV=main SIZES=200 scripts/bench-load.sh  # also the release build of another revision
#
# PREV (a git revision) is built into a temporary worktree sharing the target directory
# (its media-ws is copied aside), so the previous release and this tree run in the same run
# as servers prev-pcm16 and prev-ulaw.
#
# Each point runs DURATION seconds of audio per call with calls started over N/100 s (at
# least 1 s); CPU is measured in the window when every call is up. JSON per point goes to
# OUT (default target/bench-load/); a table is printed at the end. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"100 200 400 800 1600"}
PREV=${PREV:-}
if [[ -n $PREV ]]; then
    SERVERS=${SERVERS:-"media-ws-pcm16 prev-pcm16 media-ws-ulaw prev-ulaw floor"}
else
    SERVERS=${SERVERS:-"media-ws-pcm16 media-ws-ulaw floor"}
fi
DURATION=${DURATION:-20}
OUT=${OUT:-target/bench-load}
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"

PREV_WS="$OUT/media-ws-prev"
if [[ -n $PREV ]]; then
    target_abs=$(cd "$TARGET" 2>/dev/null && pwd || echo "$PWD/$TARGET")
    prev_dir=$(mktemp -d)
    git worktree add --detach "$prev_dir" "$PREV" >&2
    (cd "$prev_dir" && CARGO_TARGET_DIR="$target_abs" cargo build --release --bin media-ws >&2)
    cp "$target_abs/release/media-ws" "$PREV_WS"
    git worktree remove --force "$prev_dir"
    # Cargo hashes a path package by its path inside the workspace, so the worktree's build
    # left its artefacts under this tree's names, newer than this tree's sources: clean them.
    cargo clean --release -p media-relay -p media-orchestrator >&2
fi
# After PREV: target/release/media-ws is this tree's.
cargo build --release --workspace --bins --examples >&2
SIM="$TARGET/release/media-sim"
WS="$TARGET/release/media-ws"
FLOOR="$TARGET/release/examples/floor_relay"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_server EXIT

# run_point SERVER N -> writes $OUT/SERVER-N.json; returns 1 when real time broke.
run_point() {
    local server=$1 n=$2 agent_port port format ramp
    agent_port=$(free_port)
    port=$(free_port)
    local bin=$WS
    case $server in
        *-pcm16) format=pcm_16000 ;;
        *) format=ulaw_8000 ;;
    esac
    [[ $server == prev-* ]] && bin=$PREV_WS
    local agent_url="ws://127.0.0.1:$agent_port/v1/convai/conversation"
    if [[ $server == floor ]]; then
        FLOOR_PORT=$port AGENT_URL=$agent_url "$FLOOR" >/dev/null &
    else
        env -i PATH="$PATH" PORT="$port" AGENT=elevenlabs ALLOW_UNAUTHENTICATED=true ELEVENLABS_WS_URL="$agent_url" \
            MAX_CALLS=10000 RUST_LOG=warn LOG_FORMAT=json "$bin" >"$OUT/$server-$n.log" 2>&1 &
    fi
    SERVER_PID=$!
    wait_port "$port"
    ramp=$(( n / 100 )); (( ramp < 1 )) && ramp=1
    local json="$OUT/$server-$n.json"
    "$SIM" load "ws://127.0.0.1:$port/rtm/voice" --calls "$n" --ramp "$ramp" \
        --duration "$DURATION" --agent-listen "127.0.0.1:$agent_port" --agent-format "$format" \
        --server-pid "$SERVER_PID" --json "$json" --quiet >"$OUT/$server-$n.txt" 2>&1 || true
    stop_server
    [[ -s $json ]] || { echo "$server $n: no report" >&2; return 1; }
    jq -e '.failed == 0 and .frames_dropped == 0 and .latency.p99_ms < 20 and .late_frames == 0' \
        "$json" >/dev/null
}

for server in $SERVERS; do
    for n in $SIZES; do
        echo "== $server, $n calls" >&2
        if ! run_point "$server" "$n"; then
            echo "   real time broke at $n calls" >&2
            break
        fi
    done
done

printf '\n| server | calls | ok/failed | frames sent/recv/dropped | p50 / p90 / p99 / max ms | late frames | server CPU µs/frame (user+sys) | server cores | RSS/call KiB | calls/core | generator cores |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for server in $SERVERS; do
    for n in $SIZES; do
        f="$OUT/$server-$n.json"
        [[ -s $f ]] || continue
        jq -r --arg s "$server" '"| \($s) | \(.calls) | \(.ok)/\(.failed) | \(.frames_sent)/\(.frames_received)/\(.frames_dropped) | \(.latency.p50_ms) / \(.latency.p90_ms) / \(.latency.p99_ms) / \(.latency.max_ms) | \(.late_frames) | \(.server.cpu_us_per_frame*100|round/100) (\(.server.cpu_user_us_per_frame*100|round/100) + \(.server.cpu_system_us_per_frame*100|round/100)) | \(.server.cores_busy*100|round/100) | \(.server.rss_per_call_kib*10|round/10) | \(.server.calls_per_core|round) | \(.generator.cores_busy*100|round/100) |"' "$f"
    done
done
