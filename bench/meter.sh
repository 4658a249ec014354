#!/usr/bin/env bash
# Bandwidth caps: TCP goodput through a Strata meter beside Linux tbf (same rate, same bucket
# depth), over a sweep of depths. The figures behind the meters' default burst
# (docs/net-engine.md, "Default burst"). Needs root, iperf3 and tc.
#   sudo bash bench/meter.sh [--secs N] [--bursts 10,50,...]
set -euo pipefail
cd "$(dirname "$0")/.."
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) export STRATA_METER_SECS="$2"; shift 2 ;;
    --bursts) export STRATA_BURST_MS="$2"; shift 2 ;;
    *) echo "usage: $0 [--secs N] [--bursts MS,MS,...]" >&2; exit 2 ;;
  esac
done
cargo build -q --release -p strata-dataplane --example meterburst
exec ./target/release/examples/meterburst
