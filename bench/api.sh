#!/usr/bin/env bash
# The API under load, against a fresh `strata serve` (release build) on a temporary data dir:
#   1. one client: volume create/delete round trips, list latency at 1,000 and 10,000 volumes;
#   2. 64 concurrent clients creating and deleting volumes for SECS seconds (default 60):
#      latency percentiles, errors by code (goal 0), nothing left half-deleted;
#   3. flows: add latency at 1K, 5K, ..., 20K flows in one switch, 4 concurrent adders, and the
#      store file's size (goal < 50 MiB at 20,000 flows).
# Usage: bash bench/api.sh [--secs S] [--clients N] [--flows N]
set -euo pipefail
export NO_COLOR=1
cd "$(dirname "$0")/.."
SECS=60 CLIENTS=64 FLOWS=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --flows) FLOWS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p strata --bin strata
cargo build --release -q -p strata-control --example apibench --example apiload
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; rm -rf "$dir"; }
trap cleanup EXIT
# The daemons here are temporary: their first start must not save them as the user's daemon.
export STRATA_CONFIG="$dir/config.yaml"
start() {
  rm -rf "$dir/data" "$dir/log"
  target/release/strata serve --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --default-pool-size 64G 2> "$dir/log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q "strata serving" "$dir/log" 2>/dev/null && break; sleep 0.1; done
  addr=$(grep -o 'listen=[0-9.:]*' "$dir/log" | head -1 | cut -d= -f2)
  token=$(cat "$dir/data/admin.token")
  # The list figures need 10,000 volumes, far past the default 4x overcommit of the pool.
  target/release/strata --endpoint "http://$addr" --token "$token" \
    pool set default --overcommit unlimited > /dev/null
}
stop() { kill "$pid"; wait "$pid" || true; pid=; }

start
target/release/examples/apibench "http://$addr" "$token" "${ROUNDS:-300}"
stop
echo
start
target/release/examples/apiload "http://$addr" "$token" clients "$CLIENTS" "$SECS"
stop
echo
start
target/release/examples/apiload "http://$addr" "$token" flows "$FLOWS" "$dir/data"
stop
