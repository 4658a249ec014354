#!/usr/bin/env bash
# Strata's storage engine beside plain pread/pwrite on a file of the same size, in one run,
# with an encrypted volume beside the plain one (its ratio to plain is the cost of encryption).
# Usage: bash bench/block.sh [--size-mib 1024] [--secs 4] [--dir /var/tmp]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p strata-block --example blockbench
exec target/release/examples/blockbench --secs 4 "$@"
