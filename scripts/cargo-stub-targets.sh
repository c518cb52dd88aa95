#!/bin/sh
# Write a `fn main() {}` stub for every build target a Cargo manifest names, so
# `cargo build` can compile (and the image build can cache) the dependency graph
# before the real sources are copied in. Used by the Dockerfile only.
#
#   usage: cargo-stub-targets.sh [path/to/Cargo.toml]   (paths relative to that manifest)
#
# It covers [lib] and every [[bin]], [[bench]], [[example]] and [[test]] table:
# the explicit `path = "..."` when there is one, Cargo's default path otherwise.
# Stubs never overwrite an existing file. Only top-level `key = "value"` lines of
# those tables are read; dependency tables are ignored.
set -eu

manifest="${1:-Cargo.toml}"
[ -f "$manifest" ] || { echo "cargo-stub-targets: $manifest not found" >&2; exit 1; }
# Target paths are relative to the package: work from the manifest's directory.
cd "$(dirname "$manifest")"
manifest=$(basename "$manifest")

awk '
  function value(line) {
    sub(/^[^"]*"/, "", line)
    sub(/".*$/, "", line)
    return line
  }
  function flush() {
    if (section == "[lib]") {
      print (path != "" ? path : "src/lib.rs"); targets++
    } else if (section == "[[bin]]") {
      print (path != "" ? path : "src/bin/" name ".rs"); targets++
    } else if (section == "[[bench]]") {
      print (path != "" ? path : "benches/" name ".rs")
    } else if (section == "[[example]]") {
      print (path != "" ? path : "examples/" name ".rs")
    } else if (section == "[[test]]") {
      print (path != "" ? path : "tests/" name ".rs")
    }
    section = ""; name = ""; path = ""
  }
  /^[[:space:]]*\[/ {
    flush()
    section = $0
    gsub(/[[:space:]]/, "", section)
    sub(/#.*$/, "", section)
    next
  }
  /^[[:space:]]*name[[:space:]]*=/ { name = value($0); next }
  /^[[:space:]]*path[[:space:]]*=/ { path = value($0); next }
  END {
    flush()
    # No [lib] and no [[bin]]: Cargo falls back to src/main.rs.
    if (targets == 0) print "src/main.rs"
  }
' "$manifest" | while IFS= read -r target; do
  case "$target" in
    "" | /* | *..*) echo "cargo-stub-targets: refusing path '$target'" >&2; exit 1 ;;
  esac
  if [ ! -e "$target" ]; then
    mkdir -p "$(dirname "$target")"
    printf 'fn main() {}\n' > "$target"
    echo "stub: $target"
  fi
done
