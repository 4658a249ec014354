#!/usr/bin/env bash
# The data services through `strata serve`, in one run: fio over NBD on a plain, a 2-copy, a
# 3-copy, an encrypted and a 2-copy encrypted volume of one pool of three loop devices (4 KiB
# random read and write at iodepth 32, 1 MiB sequential read and write at iodepth 8, each
# volume written in full first), with every kind's ratio to plain; then the rebuild of a
# filled 2-copy volume onto a new device after one of its devices fails, while fio reads
# another volume (its IOPS before and during), once with `--resync-rate` unset (unlimited)
# and once limited; a scrub of that pool; and beside each rebuild its limit, measured on the same
# two devices just before it: the source's sequential read and the target's sequential write
# (1 MiB, QD8, direct, and buffered for what the engine's page-cache I/O meets), with the
# rebuild's ratio to the smaller of the two. Ends with the goals of issue 11 next to the figures.
#
# The devices are loop devices over sparse files in a tmpfs (/dev/shm by default): the engine
# does buffered I/O and this machine has one virtual disk, so files on disk would measure the
# page cache plus the writeback of that one disk, shared by every copy, and fill it. In memory
# the figures are the software's cost. Either way every "device" shares the same memory
# bandwidth and the same 2 cores, so a copy competes with the others instead of adding a
# device's bandwidth: the report prints that caveat.
#
# Usage: sudo bash bench/data.sh [--secs 5] [--size-mib 512] [--rebuild-mib 512] [--rounds 3]
#        [--rebuild-rounds 2] [--rate 200M] [--dev-gib 4] [--dir /dev/shm] [--perf]
# --perf: perf record on the daemon during the 2-copy encrypted runs, the rebuilds and the scrub,
# and the hottest symbols in the report (perturbs the figures: use it for where the time goes).
# KEEP_LOGS=DIR keeps the daemon's logs and the raw figures (results.json) there.
# Needs: root (loop devices), fio, losetup, blockdev, blkdiscard, python3. About 7 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=5
SIZE_MIB=512
REBUILD_MIB=512
ROUNDS=3
REBUILD_ROUNDS=2
RATE=200M
DEV_GIB=4
BASE=/dev/shm
PERF=0
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS=$2; shift 2 ;;
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --rebuild-mib) REBUILD_MIB=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --rebuild-rounds) REBUILD_ROUNDS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --dev-gib) DEV_GIB=$2; shift 2 ;;
        --dir) BASE=$2; shift 2 ;;
        --perf) PERF=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$PERF" = 0 ] || command -v perf >/dev/null || { echo "missing perf (apt-get install -y linux-perf)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices)" >&2; exit 1; }
for t in fio losetup blockdev blkdiscard dd python3 cargo; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y fio mount util-linux)" >&2; exit 1; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p strata
BIN="$CARGO_TARGET_DIR/release/strata"
DRIVER="$PWD/bench/data/driver.py"
export PYTHONDONTWRITEBYTECODE=1

WORK=$(mktemp -d "$BASE/strata-data-bench.XXXXXX")
LOOPS=()
DAEMON=
stop_daemon() {
    [ -n "$DAEMON" ] || return 0
    kill -TERM "$DAEMON" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=
}
cleanup() {
    local rc=$?
    stop_daemon
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    if [ -n "${KEEP_LOGS:-}" ]; then # the daemon's logs and the raw figures, for a look after
        mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.log "$WORK"/*.json "$WORK"/*.txt "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
    [ $rc = 0 ] || echo "bench/data.sh failed (exit $rc); daemon, loop devices and $WORK removed" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

new_loop() { # name: a loop device over a new sparse file of DEV_GIB, in $DEV (and LOOPS)
    truncate -s "${DEV_GIB}G" "$WORK/$1.img"
    DEV=$(losetup -f --show "$WORK/$1.img")
    LOOPS+=("$DEV")
}

start_daemon() { # extra serve arguments
    local log="$WORK/serve.$(date +%s%N).log"
    STRATA_CONFIG="$WORK/config.yaml" RUST_LOG=info NO_COLOR=1 "$BIN" serve \
        --listen 127.0.0.1:0 --data-dir "$WORK/data" --default-pool-size 1G \
        --master-key-file "$WORK/master.key" "$@" 2>"$log" &
    DAEMON=$!
    for _ in $(seq 600); do
        if grep -q "strata serving" "$log"; then
            STRATA_URL="http://$(grep "strata serving" "$log" | sed 's/.*listen=\([^ ]*\).*/\1/')"
            export STRATA_URL STRATA_PID=$DAEMON
            export STRATA_TOKEN=$(cat "$WORK/data/admin.token")
            return 0
        fi
        kill -0 "$DAEMON" 2>/dev/null || { cat "$log" >&2; echo "strata serve exited" >&2; return 1; }
        sleep 0.1
    done
    echo "strata serve did not start" >&2
    return 1
}

new_loop p0; P0=$DEV; new_loop p1; P1=$DEV; new_loop p2; P2=$DEV
new_loop r0; R0=$DEV; new_loop r1; R1=$DEV
new_loop scratch; SCRATCH=$DEV
STRATA_CONFIG="$WORK/config.yaml" "$BIN" master-key create "$WORK/master.key" >/dev/null
export WORK SECS SIZE_MIB REBUILD_MIB ROUNDS PERF
export POOL_DEVS="$P0 $P1 $P2" REBUILD_DEVS="$R0 $R1" SCRATCH_DEV=$SCRATCH
echo "devices: loop devices over sparse ${DEV_GIB} GiB files in $WORK ($(df --output=fstype "$WORK" | tail -1))"

start_daemon
python3 "$DRIVER" fio
# Each rebuild round fails the volume's last copy's device and rebuilds onto a new one.
for i in $(seq "$REBUILD_ROUNDS"); do
    new_loop "n$i"; LABEL=unlimited NEW_DEV=$DEV python3 "$DRIVER" rebuild
done
python3 "$DRIVER" scrub
stop_daemon
start_daemon --resync-rate "$RATE"
for i in $(seq "$REBUILD_ROUNDS"); do
    new_loop "m$i"; LABEL="--resync-rate $RATE" NEW_DEV=$DEV python3 "$DRIVER" rebuild
done
stop_daemon
python3 "$DRIVER" report
