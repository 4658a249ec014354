#!/usr/bin/env bash
# Switching between two network namespaces: iperf3 TCP, one stream and four (-P 4), through
#   (a) Strata as users run it: `strata serve` (release build, a temp data dir, its CLI config
#       in the bench's temp dir via STRATA_CONFIG so the user's is never touched), a switch made
#       with `strata switch create` (the default `priority=0,actions=normal` flow) and
#         - two TAP ports (`strata switch add-port SW NAME`: IFF_VNET_HDR + TSO offloads),
#         - two veth ports (`add-port --veth`: AF_PACKET socket read with recvmmsg, PACKET_VNET_HDR),
#           with `strata serve --no-fastpath` (every packet through the switch in user space)
#           and as the daemon runs by default (the eBPF fast path: established flows forwarded
#           in the kernel by a TC program, bpf_redirect_peer into the other namespace),
#       the TAP or the veth peer moved into each namespace;
#   (b) the standalone examples/switchd with the same ports (kept as a row: the difference to
#       (a) is what the daemon adds), and switchd with veth ports without PACKET_VNET_HDR
#       (`--veth NAME:novnet`; the peers then need `ethtool -K tx off`);
#   (c) the Linux bridge over veth, default offloads and `ethtool -K tx off`;
#   (d) Open vSwitch's userspace datapath (datapath_type=netdev, veth ports, tx off) when
#       installed (SKIP_OVS=1 leaves it out);
# all in this one run. Prints Gbit/s, the Strata-daemon / bridge ratios, and CPU seconds per
# Gbit moved for every path; and for the daemon's veth ports and the bridge, the mean round
# trip of a TCP request/response loop (one byte each way, TCP_NODELAY, RR_N round trips on one
# connection, a python3 client and echo server: the same harness for every path, so its own
# cost is in every figure).
#
# CPU: the iperf3 pair's own figures (`iperf3 -J` cpu_utilization_percent host_total and
# remote_total: user+system of the client and of the server, times the test length) plus the
# switch process's utime+stime delta from /proc/PID/stat (all its threads; 0 for the kernel
# bridge, whose work is charged to the iperf3 pair as softirq time in their context). Work done
# in ksoftirqd or kernel threads is not counted for any path.
#
# Offloads: Strata and the Linux bridge run with the namespaces' default offloads (TSO and TX
# checksum on). OVS netdev stalls TCP unless TX checksum offload is off on the namespace side
# (MEASURE.md), so it runs with `ethtool -K tx off`; the Linux bridge is measured both ways.
# No kernel tunable (RPS, busy polling, IRQ affinity, sysctls) is changed for any peer.
#
# Usage: sudo bash bench/net.sh [--secs 5]      (needs root, iperf3, iproute2, ethtool;
#                                                 openvswitch-switch unless SKIP_OVS=1)
# Env: CARGO_TARGET_DIR (where strata and switchd are built), SKIP_OVS=1 to leave OVS out,
#      STRATA_THREADS=N (switchd --threads; default one per CPU, as the daemon), SKIP_BUILD=1
#      (use the binaries already built), SKIP_TAP=1 (no TAP rows), SKIP_SWITCHD=1 (no switchd
#      rows), SKIP_TXOFF=1 (no bridge tx-off row), RR_N (round trips, default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    *) echo "usage: $0 [--secs N]" >&2; exit 2 ;;
  esac
done

for t in ip iperf3 ethtool awk python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install iproute2 iperf3 ethtool python3)" >&2; exit 1; }
done
RR_N="${RR_N:-20000}"
OVS=1
if [ "${SKIP_OVS:-0}" = 1 ]; then
  OVS=0
elif ! command -v ovs-vsctl >/dev/null; then
  echo "note: ovs-vsctl not installed (apt-get install openvswitch-switch): OVS row left out" >&2
  OVS=0
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p strata --bin strata
  cargo build --release -q -p strata-dataplane --example switchd
fi
TARGET="${CARGO_TARGET_DIR:-target}"
STRATA="$(realpath "$TARGET/release/strata")"
SWITCHD="$(realpath "$TARGET/release/examples/switchd")"

P="bn$$"                 # prefix of every namespace and link this script makes
H="${P}h" A="${P}a" B="${P}b"
TMP=$(mktemp -d)
export STRATA_CONFIG="$TMP/cli.yaml" NO_COLOR=1
SWPID="" OVS_STARTED=0

cleanup() {
  set +e
  [ -n "$SWPID" ] && kill -TERM "$SWPID" 2>/dev/null && wait "$SWPID" 2>/dev/null
  SWPID=""
  if [ "$OVS_STARTED" = 1 ]; then
    ovs-vsctl --if-exists del-br "${P}br" 2>/dev/null
    /usr/share/openvswitch/scripts/ovs-ctl stop >/dev/null 2>&1
    OVS_STARTED=0
  fi
  for n in "$H" "$A" "$B"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$n" 2>/dev/null
  done
  for l in oa ob ta tb va vb vap vbp; do ip link del "${P}$l" 2>/dev/null; done
}
trap 'cleanup; rm -rf "$TMP"' EXIT

fresh_namespaces() {
  cleanup
  for n in "$H" "$A" "$B"; do
    ip netns add "$n"
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$n" link set lo up
  done
}

# addr DEV NS CIDR: address and bring up.
addr() { ip -n "$2" addr add "$3" dev "$1"; ip -n "$2" link set "$1" up; }

# CPU ticks (utime+stime, all threads) of process $1, 0 if none.
ticks() { [ -n "${1:-}" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# run_iperf STREAMS -> prints "GBITS CPU_SECONDS" (receiver Gbit/s; CPU of the iperf3 pair
# plus the switch process $SWPID)
run_iperf() {
  ip netns exec "$B" iperf3 -s -1 -B 10.50.0.2 >/dev/null 2>&1 &
  local srv=$!
  for _ in $(seq 50); do
    ip netns exec "$B" ss -Hltn 'sport = :5201' | grep -q 5201 && break
    sleep 0.1
  done
  local t0 out t1
  t0=$(ticks "$SWPID")
  out=$(ip netns exec "$A" iperf3 -c 10.50.0.2 -t "$SECS" -P "$1" -J 2>&1) || { echo "$out" | tail -3 >&2; echo "0 0"; return; }
  t1=$(ticks "$SWPID")
  wait "$srv" 2>/dev/null || true
  echo "$out" | awk -v secs="$SECS" -v sw=$((t1 - t0)) -v hz="$HZ" '
    /"sum_received"/ { inrx = 1 }
    inrx && /"bits_per_second"/ { gsub(/[,]/, ""); bps = $2; inrx = 0 }
    /"host_total"/ { gsub(/[,]/, ""); host = $2 }
    /"remote_total"/ { gsub(/[,]/, ""); remote = $2 }
    END { printf "%.2f %.2f\n", bps / 1e9, (host + remote) / 100 * secs + sw / hz }'
}

# The request/response loop: an echo server in B, a client in A timing RR_N round trips of
# one byte (after 500 unmeasured ones) and printing the mean in microseconds.
RR_SERVER='
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.50.0.2", 5301)); s.listen(1)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(64)
    if not d: break
    c.sendall(d)
'
RR_CLIENT='
import socket, sys, time
n = int(sys.argv[1])
c = socket.create_connection(("10.50.0.2", 5301)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(500):
    c.sendall(b"x"); c.recv(1)
t = time.perf_counter()
for _ in range(n):
    c.sendall(b"x"); c.recv(1)
print("%.1f" % ((time.perf_counter() - t) / n * 1e6))
'
RR_ROWS=()
run_rr() { # label -> fills RR (mean round trip, microseconds)
  ip netns exec "$B" python3 -c "$RR_SERVER" >/dev/null 2>&1 &
  local srv=$!
  for _ in $(seq 50); do
    ip netns exec "$B" ss -Hltn 'sport = :5301' | grep -q 5301 && break
    sleep 0.1
  done
  RR=$(ip netns exec "$A" python3 -c "$RR_CLIENT" "$RR_N" 2>/dev/null || echo 0)
  wait "$srv" 2>/dev/null || true
  printf '  %-52s %8s us per round trip\n' "$1" "$RR" >&2
  RR_ROWS+=("| $1 | $RR |")
}

ROWS=()
measure() { # label -> fills R1 R4 C1 C4 (Gbit/s, CPU s per Gbit)
  local a b
  read -r R1 a <<<"$(run_iperf 1)"
  read -r R4 b <<<"$(run_iperf 4)"
  C1=$(awk -v c="$a" -v g="$R1" -v s="$SECS" 'BEGIN { if (g > 0) printf "%.3f", c / (g * s); else print "n/a" }')
  C4=$(awk -v c="$b" -v g="$R4" -v s="$SECS" 'BEGIN { if (g > 0) printf "%.3f", c / (g * s); else print "n/a" }')
  printf '  %-52s %6s %6s Gbit/s   %6s %6s CPU s/Gbit\n' "$1" "$R1" "$R4" "$C1" "$C4" >&2
  ROWS+=("| $1 | $R1 | $R4 | $C1 | $C4 |")
}

echo "iperf3 TCP, ${SECS} s, 1 and 4 streams, between two namespaces" >&2

# (a) Strata through the daemon and its CLI.
start_daemon() { # extra serve arguments
  rm -rf "$TMP/d" "$STRATA_CONFIG"
  "$STRATA" serve --data-dir "$TMP/d" --listen 127.0.0.1:0 --default-pool-size 1G "$@" \
    >"$TMP/serve.log" 2>&1 &
  SWPID=$!
  for _ in $(seq 100); do grep -q "strata serving" "$TMP/serve.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "strata serving" "$TMP/serve.log" || { cat "$TMP/serve.log" >&2; exit 1; }
}
cli() { "$STRATA" "$@" --data-dir "$TMP/d" >/dev/null; }

echo "  load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
D1=0 D4=0
if [ "${SKIP_TAP:-0}" != 1 ]; then
  fresh_namespaces
  start_daemon
  cli switch create bench
  cli switch add-port bench "${P}ta"
  cli switch add-port bench "${P}tb"
  ip link set "${P}ta" netns "$A"; addr "${P}ta" "$A" 10.50.0.1/24
  ip link set "${P}tb" netns "$B"; addr "${P}tb" "$B" 10.50.0.2/24
  echo "  daemon threads: $(ls /proc/$SWPID/task | wc -l)" >&2
  measure "Strata daemon, TAP ports"; D1=$R1 D4=$R4
  cli switch del-port bench "${P}ta"; cli switch del-port bench "${P}tb"
fi
for fast in no yes; do
  fresh_namespaces
  if [ $fast = yes ]; then start_daemon; else start_daemon --no-fastpath; fi
  cli switch create bench
  cli switch add-port bench "${P}va" --veth
  cli switch add-port bench "${P}vb" --veth
  ip link set "${P}vap" netns "$A"; addr "${P}vap" "$A" 10.50.0.1/24
  ip link set "${P}vbp" netns "$B"; addr "${P}vbp" "$B" 10.50.0.2/24
  if [ $fast = yes ]; then
    grep -q "fast path loaded" "$TMP/serve.log" || { echo "the fast path did not load:" >&2; grep -i "fast path" "$TMP/serve.log" >&2; }
    measure "Strata daemon, veth ports, fast path (eBPF TC)"; F1=$R1 F4=$R4 FC1=$C1 FC4=$C4
    run_rr "Strata daemon, veth ports, fast path (eBPF TC)"; FRR=$RR
  else
    measure "Strata daemon, veth ports (AF_PACKET recvmmsg, vnet_hdr)"; V1=$R1 V4=$R4
    run_rr "Strata daemon, veth ports (AF_PACKET recvmmsg, vnet_hdr)"; VRR=$RR
  fi
  kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID=""
  ip link show "${P}va" >/dev/null 2>&1 && { echo "veth ${P}va left behind after stop" >&2; exit 1; }
done

# (b) switchd, standalone, in its own namespace.
W1=0 W4=0
switchd() {
  # The user-space switch alone: its veth rows measure the socket, not the fast path.
  "$SWITCHD" --netns "$H" --no-fastpath ${STRATA_THREADS:+--threads "$STRATA_THREADS"} "$@" >"$TMP/switchd" 2>&1 &
  SWPID=$!
  for _ in $(seq 50); do grep -q ready "$TMP/switchd" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$TMP/switchd" || { cat "$TMP/switchd" >&2; exit 1; }
}
[ "${SKIP_SWITCHD:-0}" = 1 ] || {
fresh_namespaces
switchd --tap "${P}ta" --tap "${P}tb"
ip -n "$H" link set "${P}ta" netns "$A"; addr "${P}ta" "$A" 10.50.0.1/24
ip -n "$H" link set "${P}tb" netns "$B"; addr "${P}tb" "$B" 10.50.0.2/24
measure "switchd, TAP ports"; W1=$R1 W4=$R4
kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID=""
for vnet in "" ":novnet"; do
  fresh_namespaces
  switchd --veth "${P}va$vnet" --veth "${P}vb$vnet"
  ip -n "$H" link set "${P}vap" netns "$A"; addr "${P}vap" "$A" 10.50.0.1/24
  ip -n "$H" link set "${P}vbp" netns "$B"; addr "${P}vbp" "$B" 10.50.0.2/24
  if [ -n "$vnet" ]; then
    ip netns exec "$A" ethtool -K "${P}vap" tx off >/dev/null
    ip netns exec "$B" ethtool -K "${P}vbp" tx off >/dev/null
    measure "switchd, veth ports, no vnet_hdr (peers tx off)"
  else
    measure "switchd, veth ports (vnet_hdr)"
  fi
  kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID=""
done
}

# (c) Linux bridge over veth, default offloads, then TX checksum off.
fresh_namespaces
ip -n "$H" link add br0 type bridge
ip -n "$H" link set br0 up
for side in a b; do
  ns=$([ $side = a ] && echo "$A" || echo "$B")
  ip -n "$H" link add "h$side" type veth peer name "n$side" netns "$ns"
  ip -n "$H" link set "h$side" master br0 up
done
addr na "$A" 10.50.0.1/24
addr nb "$B" 10.50.0.2/24
measure "Linux bridge, veth, default offloads"; L1=$R1 L4=$R4 LC1=$C1 LC4=$C4
run_rr "Linux bridge, veth, default offloads"; LRR=$RR
if [ "${SKIP_TXOFF:-0}" != 1 ]; then
  ip netns exec "$A" ethtool -K na tx off >/dev/null 2>&1
  ip netns exec "$B" ethtool -K nb tx off >/dev/null 2>&1
  measure "Linux bridge, veth, tx off"
fi

# (d) OVS userspace datapath, veth ports, TX checksum off on the namespace side.
O1=0 O4=0
if [ "$OVS" = 1 ]; then
  fresh_namespaces
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null
  OVS_STARTED=1
  ovs-vsctl add-br "${P}br" -- set bridge "${P}br" datapath_type=netdev
  for side in a b; do
    ns=$([ $side = a ] && echo "$A" || echo "$B")
    ip link add "${P}o$side" type veth peer name "n$side" netns "$ns"
    ip link set "${P}o$side" up
    ovs-vsctl add-port "${P}br" "${P}o$side"
    ip netns exec "$ns" ethtool -K "n$side" tx off >/dev/null
  done
  addr na "$A" 10.50.0.1/24
  addr nb "$B" 10.50.0.2/24
  SWPID=$(cat /var/run/openvswitch/ovs-vswitchd.pid 2>/dev/null || true)
  measure "OVS userspace (netdev), veth, tx off"; O1=$R1 O4=$R4
  SWPID=""
fi
cleanup

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
echo
echo "| path | 1 stream Gbit/s | 4 streams Gbit/s | CPU s/Gbit, 1 | CPU s/Gbit, 4 |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "| ratio | 1 stream | 4 streams |"
echo "|---|---:|---:|"
echo "| Strata daemon TAP / Linux bridge (default) | $(ratio "$D1" "$L1") | $(ratio "$D4" "$L4") |"
echo "| Strata daemon veth / Linux bridge (default) | $(ratio "$V1" "$L1") | $(ratio "$V4" "$L4") |"
echo "| Strata daemon veth, fast path / Linux bridge (default) | $(ratio "$F1" "$L1") | $(ratio "$F4" "$L4") |"
echo "| CPU s/Gbit: fast path / Linux bridge | $(ratio "$FC1" "$LC1") | $(ratio "$FC4" "$LC4") |"
echo "| Strata daemon TAP / switchd TAP | $(ratio "$D1" "$W1") | $(ratio "$D4" "$W4") |"
[ "$OVS" = 1 ] && echo "| Strata daemon TAP / OVS userspace | $(ratio "$D1" "$O1") | $(ratio "$D4" "$O4") |"
echo
echo "| path | TCP request/response, mean round trip (us, $RR_N round trips) |"
echo "|---|---:|"
printf '%s\n' "${RR_ROWS[@]}"
echo "| fast path / Linux bridge | $(ratio "$FRR" "$LRR") |"
echo "| slow path (recvmmsg) / Linux bridge | $(ratio "$VRR" "$LRR") |"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit 0
