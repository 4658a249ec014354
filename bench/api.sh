#!/usr/bin/env bash
# Volume create/delete round trips and list latency at 1,000 and 10,000 volumes against a
# fresh `strata serve` (release build) on a temporary data dir.
set -euo pipefail
export NO_COLOR=1
cd "$(dirname "$0")/.."
cargo build --release -q -p strata --bin strata
cargo build --release -q -p strata-control --example apibench
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
target/release/strata serve --data-dir "$dir/data" --listen 127.0.0.1:0 --default-pool-size 64G \
  2> "$dir/log" &
pid=$!
for _ in $(seq 1 100); do grep -q "strata serving" "$dir/log" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'listen=[0-9.:]*' "$dir/log" | head -1 | cut -d= -f2)
target/release/examples/apibench "http://$addr" "$(cat "$dir/data/admin.token")" "${ROUNDS:-300}"
