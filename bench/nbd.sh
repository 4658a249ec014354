#!/usr/bin/env bash
# Strata's NBD export beside nbdkit (file plugin) and qemu-nbd (raw, --cache=writeback), in one
# run, same image size, Unix sockets, page cache warm (every image is written in full first).
# fio --ioengine=nbd, one job (one connection): 4 KiB random read and write at iodepth 32,
# 1 MiB sequential read and write at iodepth 8. Prints IOPS, MiB/s and Strata's ratio to each.
#
# Usage: bash bench/nbd.sh [--size-mib 1024] [--secs 8] [--dir /var/tmp]
# Needs: fio, nbdkit, qemu-nbd (apt-get install -y fio nbdkit qemu-utils), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=1024
SECS=8
BASE=/var/tmp
while [ $# -gt 0 ]; do
    case "$1" in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --secs) SECS=$2; shift 2 ;;
        --dir) BASE=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
for t in fio nbdkit qemu-nbd python3; do
    command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p strata-nbd --example nbdserve
SERVE="$CARGO_TARGET_DIR/release/examples/nbdserve"

WORK=$(mktemp -d "$BASE/strata-nbd-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_sock() {
    for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "server did not create $1" >&2; exit 1
}

# name rw bs iodepth -> "IOPS MiBps" from fio's JSON
run_fio() {
    local uri=$1 rw=$2 bs=$3 qd=$4
    fio --name=b --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="${SIZE_MIB}M" --runtime="$SECS" --time_based --output-format=json \
        --output="$WORK/fio.json" >/dev/null 2>&1 || true
    python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
err = j["error"]
if err:
    sys.exit("fio error %d" % err)
side = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print("%.0f %.1f" % (side["iops"], side["bw_bytes"] / 2**20))' "$WORK/fio.json"
}

fill() { # uri: write the whole export once so reads hit data and the page cache is warm
    fio --name=fill --ioengine=nbd --uri="$1" --rw=write --bs=1M --iodepth=8 \
        --size="${SIZE_MIB}M" >/dev/null 2>&1
}

# name rw bs iodepth. Sequential first, on the freshly written image; the last row reads
# sequentially again after the random writes (a redirect-on-write volume is fragmented then).
WORKLOADS=("seq-read read 1M 8" "seq-write write 1M 8" "rand-read randread 4k 32"
    "rand-write randwrite 4k 32" "seq-read-after-rand read 1M 8")
declare -A RES

bench() { # label uri
    fill "$2"
    for w in "${WORKLOADS[@]}"; do
        set -- "$1" "$2" $w
        RES["$1 $3"]=$(run_fio "$2" "$4" "$5" "$6")
        set -- "$1" "$2"
    done
}

# Strata: pool on a sparse file sized 2x the volume plus 64 MiB.
S="$WORK/strata.sock"
"$SERVE" --dir "$WORK/strata" --socket "$S" --size-mib "$SIZE_MIB" --volume vol &
PIDS+=($!)
wait_sock "$S"
bench strata "nbd+unix:///vol?socket=$S"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; rm -rf "$WORK/strata"

# nbdkit file plugin.
truncate -s "${SIZE_MIB}M" "$WORK/nbdkit.img"
K="$WORK/nbdkit.sock"
nbdkit --foreground -U "$K" file "$WORK/nbdkit.img" &
PIDS+=($!)
wait_sock "$K"
bench nbdkit "nbd+unix:///?socket=$K"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; rm -f "$WORK/nbdkit.img"

# qemu-nbd raw, writeback cache.
truncate -s "${SIZE_MIB}M" "$WORK/qemu.img"
Q="$WORK/qemu.sock"
qemu-nbd -f raw -k "$Q" -t "$WORK/qemu.img" --cache=writeback &
PIDS+=($!)
wait_sock "$Q"
bench qemu-nbd "nbd+unix:///?socket=$Q"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo
echo "fio --ioengine=nbd, 1 job, ${SIZE_MIB} MiB, ${SECS} s per run, Unix sockets, page cache warm"
printf '%-30s %14s %14s %14s %10s %10s\n' workload strata nbdkit qemu-nbd "vs nbdkit" "vs qemu"
for w in "${WORKLOADS[@]}"; do
    set -- $w
    key="$1 $3 qd$4"
    read -r si sb <<<"${RES[strata $1]}"
    read -r ki kb <<<"${RES[nbdkit $1]}"
    read -r qi qb <<<"${RES[qemu-nbd $1]}"
    if [ "$3" = 4k ]; then
        printf '%-30s %9s IOPS %9s IOPS %9s IOPS %9.2fx %9.2fx\n' "$key" "$si" "$ki" "$qi" \
            "$(python3 -c "print($si/$ki)")" "$(python3 -c "print($si/$qi)")"
    else
        printf '%-30s %8s MiB/s %8s MiB/s %8s MiB/s %9.2fx %9.2fx\n' "$key" "$sb" "$kb" "$qb" \
            "$(python3 -c "print($sb/$kb)")" "$(python3 -c "print($sb/$qb)")"
    fi
done
