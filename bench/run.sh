#!/usr/bin/env bash
# The im benchmark, in one command (see bench/README.md):
#
#   bench/run.sh                # full run (about 20 minutes on 2 cores)
#   bench/run.sh --quick        # smoke test (under 5 minutes)
#   bench/run.sh --only raw,im-embedded --scenario room-1000x1
#
# Builds the release binaries, installs Socket.IO into bench/socketio
# (git-ignored node_modules) when node and npm are present, raises the
# open-file limit as far as allowed, runs the load generator and writes
# bench/out/<timestamp>/{results.md,results.json,chart.svg,logs/}. Every
# argument is passed on to the load generator (`loadgen --help`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

# Cargo's target directory (CARGO_TARGET_DIR if set, as for any cargo
# command): the binaries are taken from its release/ folder.
target_dir="${CARGO_TARGET_DIR:-$root/target}"

echo "== building release binaries (im-server with redis,postgres; im-bench)"
cargo build --release -p im-server --features redis,postgres -p im-bench

if command -v node >/dev/null && command -v npm >/dev/null; then
  echo "== installing Socket.IO (npm, into bench/socketio/node_modules)"
  if [ -f "$here/socketio/package-lock.json" ]; then
    (cd "$here/socketio" && npm ci --no-audit --no-fund --loglevel=error)
  else
    (cd "$here/socketio" && npm install --no-audit --no-fund --loglevel=error)
  fi
else
  echo "== node or npm not found: the Socket.IO server will be skipped (the report says so)"
fi

# Redis for the cluster scenario: start a throwaway one if none answers.
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    echo "== starting redis-server on 127.0.0.1:6379 (no persistence)"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    sleep 0.5
  fi
fi

# As many file descriptors as allowed: the idle scenario opens as many
# connections as this limit permits (servers inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== open-file limit: $(ulimit -n)"

stamp="$(date -u +%Y%m%d-%H%M%S)"
out="$here/out/$stamp"
mkdir -p "$out"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]; then
  commit="$commit (with uncommitted changes)"
fi

echo "== running the load generator; report in $out"
"$target_dir/release/loadgen" \
  --out "$out" \
  --im-server "$target_dir/release/im-server" \
  --raw-server "$target_dir/release/raw-server" \
  --socketio-dir "$here/socketio" \
  --commit "$commit" \
  "$@"
