#!/usr/bin/env bash
# Placement engine (strata-place), one run, release build:
#   1. jobs onto nodes at about 1e3, 1e4 and 1e5 variables: greedy and MILP (microlp) time,
#      the MILP's method, score, the gap to the LP bound and the gain over greedy;
#   2. one admission decision over 1,000 nodes and 1,000 pending jobs (goal < 1 s);
#   3. GPUs stranded by a random job mix, Strata's admission beside first fit (the default
#      scheduler's behaviour in the issue's terms); goal: fewer stranded.
# Usage: bash bench/place.sh [--seed N] [--time-limit SECONDS]
# With STRATA_PLACE_FEATURES=highs the MILPs run on HiGHS (needs cmake and a C++ compiler to
# build; docs/placement.md, "Solver").
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
if [ -n "${STRATA_PLACE_FEATURES:-}" ]; then features=(--features "$STRATA_PLACE_FEATURES"); fi
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo run --release -q -p strata-place "${features[@]}" --example placebench -- "$@"
