#!/usr/bin/env bash
# Strata's NBD export beside nbdkit (file plugin) and qemu-nbd (raw, --cache=writeback), in one
# run, same image size, Unix sockets, page cache warm (every image is written in full first).
# fio --ioengine=nbd, one job (one connection): 4 KiB random read and write at iodepth 32,
# 1 MiB sequential read and write at iodepth 8. Prints IOPS, MiB/s and Strata's ratio to each.
#
# Usage: bash bench/nbd.sh [--size-mib 1024] [--secs 8] [--rounds 3] [--dir /var/tmp]
# Needs: fio, nbdkit, qemu-nbd (apt-get install -y fio nbdkit qemu-utils), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=1024
SECS=8
ROUNDS=3
BASE=/var/tmp
while [ $# -gt 0 ]; do
    case "$1" in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --secs) SECS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
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

# name rw bs iodepth -> "IOPS MiBps client-CPU%" from fio's JSON. The client's CPU share
# tells when fio itself is the limit (on 2 cores it takes one, at 4 KiB random near 100%).
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
print("%.0f %.1f %.0f" % (side["iops"], side["bw_bytes"] / 2**20, j["usr_cpu"] + j["sys_cpu"]))' "$WORK/fio.json"
}

fill() { # uri: write the whole export once so reads hit data and the page cache is warm
    fio --name=fill --ioengine=nbd --uri="$1" --rw=write --bs=1M --iodepth=8 \
        --size="${SIZE_MIB}M" >/dev/null 2>&1
}

# name rw bs iodepth. Sequential first, on the freshly written image; the last row reads
# sequentially again after the random writes (a redirect-on-write volume is fragmented then).
WORKLOADS=("seq-read read 1M 8" "seq-write write 1M 8" "rand-read randread 4k 32"
    "rand-write randwrite 4k 32" "seq-read-after-rand read 1M 8")
declare -A RES URI

# All three servers run side by side (idle but one), and each workload runs on the three
# back to back, ROUNDS times: a disturbance on a shared machine then hits all three alike
# instead of one server's whole turn. Each figure is the median of its rounds.

# Strata: pool on a sparse file sized 2x the volume plus 64 MiB.
S="$WORK/strata.sock"
"$SERVE" --dir "$WORK/strata" --socket "$S" --size-mib "$SIZE_MIB" --volume vol &
PIDS+=($!)
URI[strata]="nbd+unix:///vol?socket=$S"

# nbdkit file plugin.
truncate -s "${SIZE_MIB}M" "$WORK/nbdkit.img"
K="$WORK/nbdkit.sock"
nbdkit --foreground -U "$K" file "$WORK/nbdkit.img" &
PIDS+=($!)
URI[nbdkit]="nbd+unix:///?socket=$K"

# qemu-nbd raw, writeback cache.
truncate -s "${SIZE_MIB}M" "$WORK/qemu.img"
Q="$WORK/qemu.sock"
qemu-nbd -f raw -k "$Q" -t "$WORK/qemu.img" --cache=writeback &
PIDS+=($!)
URI[qemu-nbd]="nbd+unix:///?socket=$Q"

SERVERS=(strata nbdkit qemu-nbd)
for sock in "$S" "$K" "$Q"; do wait_sock "$sock"; done
for r in $(seq "$ROUNDS"); do
    # Every round starts from a freshly written image (the previous round's random writes
    # fragment a redirect-on-write volume; the last row measures that on purpose).
    for srv in "${SERVERS[@]}"; do fill "${URI[$srv]}"; done
    for w in "${WORKLOADS[@]}"; do
        set -- $w
        for srv in "${SERVERS[@]}"; do
            RES["$srv $1"]+="$(run_fio "${URI[$srv]}" "$2" "$3" "$4");"
        done
    done
done

median() { # "a b c;a b c;..." -> per-column medians
    python3 -c '
import statistics, sys
rows = [list(map(float, r.split())) for r in sys.argv[1].split(";") if r.strip()]
print(" ".join(str(round(m)) if m >= 1000 else "%.1f" % m for m in map(statistics.median, zip(*rows))))' "$1"
}
if [ "${VERBOSE:-0}" = 1 ]; then # every round's figures
    for k in "${!RES[@]}"; do echo "$k: ${RES[$k]}"; done | sort
fi
for k in "${!RES[@]}"; do RES[$k]=$(median "${RES[$k]}"); done

echo
echo "fio --ioengine=nbd, 1 job, ${SIZE_MIB} MiB, ${SECS} s per run, median of $ROUNDS rounds, Unix sockets, page cache warm"
printf '%-30s %14s %14s %14s %10s %10s   %s\n' workload strata nbdkit qemu-nbd "vs nbdkit" "vs qemu" \
    "fio CPU% (strata/nbdkit/qemu)"
for w in "${WORKLOADS[@]}"; do
    set -- $w
    key="$1 $3 qd$4"
    read -r si sb sc <<<"${RES[strata $1]}"
    read -r ki kb kc <<<"${RES[nbdkit $1]}"
    read -r qi qb qc <<<"${RES[qemu-nbd $1]}"
    cpu="$sc/$kc/$qc"
    if [ "$3" = 4k ]; then
        printf '%-30s %9s IOPS %9s IOPS %9s IOPS %9.2fx %9.2fx   %s\n' "$key" "$si" "$ki" "$qi" \
            "$(python3 -c "print($si/$ki)")" "$(python3 -c "print($si/$qi)")" "$cpu"
    else
        printf '%-30s %8s MiB/s %8s MiB/s %8s MiB/s %9.2fx %9.2fx   %s\n' "$key" "$sb" "$kb" "$qb" \
            "$(python3 -c "print($sb/$kb)")" "$(python3 -c "print($sb/$qb)")" "$cpu"
    fi
done
