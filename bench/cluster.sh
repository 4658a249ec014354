#!/usr/bin/env bash
# Copies across nodes, through `strata serve`, in one run: three daemons on one etcd on this
# machine (n1 and n2 with node ports, n3 without), and fio over NBD on n1's plain volume, on
# n1's 2-copy volume whose second copy is on n2 (every write crosses n2's node port: NBD over
# mutual TLS on loopback), and on n3's 2-copy volume with both copies on its own two devices,
# the peer a cross-node copy is measured against (issue 14's goal: at least 0.7x it). 4 KiB
# random write and read at iodepth 32, 1 MiB sequential write and read at iodepth 8, each
# volume written in full first, the kinds interleaved for ROUNDS rounds (median). Then the
# API: volume create latency (p50, p99 of 200) on etcd (n3) beside a fourth daemon on the
# embedded redb store; then a tenant network with ports on n1 and n2 (iperf3 through the
# VXLAN tunnel between the nodes) beside two ports on n1 and beside the kernel's bridge and
# vxlan devices between namespaces; then the failover time: kill -9 of n1, the serving
# node of the cross-node volume, to the first successful read through n2 after its takeover;
# and last the rebuild of the copy n1 took with it, by n2 onto a fourth node n4 (started
# after the volumes were placed), in MiB/s beside the volume's 1 MiB write rate across nodes.
#
# Devices are sparse files in a tmpfs (/dev/shm): the figures are the software's cost, and
# the three "nodes" share the same 2 cores and memory, so a remote copy competes with its
# serving node for CPU where real nodes would not: the report prints that caveat.
#
# Usage: sudo bash bench/cluster.sh [--secs 5] [--size-mib 512] [--rounds 3] [--dir /dev/shm]
# Needs: etcd (etcd-server), fio, iperf3, iproute2, python3; root (namespaces). About 5
# minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=5
SIZE_MIB=512
ROUNDS=3
BASE=/dev/shm
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) SECS=$2; shift 2 ;;
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --dir) BASE=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
for t in etcd fio iperf3 ip python3 cargo; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y etcd-server fio python3)" >&2; exit 1; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p strata
BIN="$CARGO_TARGET_DIR/release/strata"
export PYTHONDONTWRITEBYTECODE=1

WORK=$(mktemp -d "$BASE/strata-cluster-bench.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
    [ $rc = 0 ] || echo "bench/cluster.sh failed (exit $rc); daemons, etcd and $WORK removed" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

CP=$(free_port); PP=$(free_port)
etcd --name b --data-dir "$WORK/etcd" \
    --listen-client-urls "http://127.0.0.1:$CP" --advertise-client-urls "http://127.0.0.1:$CP" \
    --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
    --initial-cluster "b=http://127.0.0.1:$PP" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$CP/health')" 2>/dev/null && break
    sleep 0.1
done
STORE="etcd://127.0.0.1:$CP"
( umask 077; head -c 32 /dev/urandom | base64 >"$WORK/join.secret" ); chmod 0600 "$WORK/join.secret"

start_node() { # name, extra serve arguments; sets URL_<name>
    local n=$1; shift
    local log="$WORK/$n.log"
    STRATA_CONFIG="$WORK/config.yaml" RUST_LOG=info NO_COLOR=1 "$BIN" serve \
        --listen 127.0.0.1:0 --data-dir "$WORK/$n" --store "$STORE" --node "$n" "$@" 2>"$log" &
    PIDS+=($!)
    local pid=$!
    eval "PID_$n=$pid"
    for _ in $(seq 600); do
        if grep -q "strata serving" "$log"; then
            eval "URL_$n=http://$(grep "strata serving" "$log" | sed 's/.*listen=\([^ ]*\).*/\1/')"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "strata serve ($n) exited" >&2; return 1; }
        sleep 0.1
    done
    echo "strata serve ($n) did not start" >&2
    return 1
}

# Each node its own address (as on real machines): each binds its own VXLAN socket (UDP 4789).
start_node n1 --advertise "127.0.0.11:$(free_port)" --join-secret-file "$WORK/join.secret"
# n2 rebuilds a lost copy 2 s after it faulted (after it took the cross-node volume over).
start_node n2 --advertise "127.0.0.12:$(free_port)" --join-secret-file "$WORK/join.secret" \
    --rebuild-after 2s
start_node n3
# The one-machine peer of the API figure: a daemon on the embedded store (redb).
STRATA_CONFIG="$WORK/solo.yaml" RUST_LOG=info NO_COLOR=1 "$BIN" serve \
    --listen 127.0.0.1:0 --data-dir "$WORK/solo" 2>"$WORK/solo.log" &
PIDS+=($!)
for _ in $(seq 600); do grep -q "strata serving" "$WORK/solo.log" && break; sleep 0.1; done
URL_solo="http://$(grep "strata serving" "$WORK/solo.log" | sed 's/.*listen=\([^ ]*\).*/\1/')"
export WORK SECS SIZE_MIB ROUNDS URL_n1 URL_n2 URL_n3 URL_solo PID_n1 BIN STORE
export STRATA_TOKEN=$(cat "$WORK/n1/admin.token")
export STRATA_TOKEN_SOLO=$(cat "$WORK/solo/admin.token")
python3 bench/cluster/driver.py
