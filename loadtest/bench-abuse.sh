#!/usr/bin/env bash
# The abuse scenarios with and without their abusers, alternately, against
# a standalone edge with its default limits (docs/BENCHMARKS.md, "Abuse").
# Usage: loadtest/bench-abuse.sh [pairs] [scenario…]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
pairs=${1:-3}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(abuse abuse_im)
export SWITCHBOARD_JWT_SECRET=${SWITCHBOARD_JWT_SECRET:-benchsecret}
out=$target/bench-abuse
mkdir -p "$out"
# Ports apart from the usual ones, which other local runs tend to hold.
port=${ABUSE_PORT:-18080}
"$target/release/switchboard" --addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$((port + 2))" \
  --router-api-addr "127.0.0.1:$((port + 1))" --router-admin-addr "127.0.0.1:$((port + 3))" \
  >"$out/edge.log" 2>&1 &
edge=$!
trap 'kill "$edge" 2>/dev/null || true' EXIT
# Ready once the admin port answers /readyz with 200.
ready=
for _ in $(seq 100); do
  kill -0 "$edge" 2>/dev/null || { cat "$out/edge.log"; exit 1; }
  if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 2))" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 &&
    head -1 <&3 | grep -q ' 200 ') 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "edge not ready; see $out/edge.log"; exit 1; }
for s in "${scenarios[@]}"; do
  "$target/release/loadtest" run "loadtest/scenarios/$s.toml" --pairs "$pairs" --quiet \
    --target "ws://127.0.0.1:$port" --watch-pid "$edge" --metrics "http://127.0.0.1:$((port + 2))/metrics" --out "$out/$s.json" \
    | tee "$out/$s.txt"
done
