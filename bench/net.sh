#!/usr/bin/env bash
# Switching between two network namespaces: iperf3 TCP, one stream and four (-P 4), through
#   (a) Strata (examples/switchd, release build; TAP ports with IFF_VNET_HDR + TSO offloads;
#       its default of one forwarding thread per CPU, each reading one queue of every
#       multi-queue TAP; STRATA_THREADS=N overrides),
#   (b) Open vSwitch's userspace datapath (datapath_type=netdev, veth ports),
#   (c) the Linux bridge over veth,
# all in this one run, and prints Gbit/s and Strata's ratio to each peer.
#
# Offloads: Strata and the Linux bridge run with the namespaces' default offloads (TSO and TX
# checksum on). OVS netdev stalls TCP unless TX checksum offload is off on the namespace side
# (MEASURE.md), so it runs with `ethtool -K tx off`; the Linux bridge is measured both ways.
# No kernel tunable (RPS, busy polling, IRQ affinity, sysctls) is changed for any peer.
#
# Usage: sudo bash bench/net.sh [--secs 5]      (needs root, iperf3, iproute2, ethtool,
#                                                 openvswitch-switch)
# Env: CARGO_TARGET_DIR (where switchd is built), SKIP_OVS=1 to leave OVS out,
#      STRATA_THREADS=N (switchd --threads; default one per CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    *) echo "usage: $0 [--secs N]" >&2; exit 2 ;;
  esac
done

for t in ip iperf3 ethtool; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install iproute2 iperf3 ethtool)" >&2; exit 1; }
done
[ "${SKIP_OVS:-0}" = 1 ] || command -v ovs-vsctl >/dev/null ||
  { echo "missing ovs-vsctl (apt-get install openvswitch-switch), or SKIP_OVS=1" >&2; exit 1; }

cargo build --release -q -p strata-dataplane --example switchd
SWITCHD="${CARGO_TARGET_DIR:-target}/release/examples/switchd"

P="bn$$"                 # prefix of every namespace and link this script makes
H="${P}h" A="${P}a" B="${P}b"
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
  ip link del "${P}oa" 2>/dev/null
  ip link del "${P}ob" 2>/dev/null
}
trap cleanup EXIT

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

# run_iperf STREAMS -> prints Gbit/s received
run_iperf() {
  ip netns exec "$B" iperf3 -s -1 -B 10.50.0.2 >/dev/null 2>&1 &
  local srv=$!
  for _ in $(seq 50); do
    ip netns exec "$B" ss -Hltn 'sport = :5201' | grep -q 5201 && break
    sleep 0.1
  done
  local out
  out=$(ip netns exec "$A" iperf3 -c 10.50.0.2 -t "$SECS" -P "$1" -f g 2>&1) || { echo "$out" >&2; echo 0; return; }
  wait "$srv" 2>/dev/null || true
  echo "$out" | awk '/receiver/ { v = $(NF-2) } END { print v }'
}

measure() { # label -> fills R1 R4
  R1=$(run_iperf 1)
  R4=$(run_iperf 4)
  printf '  %-44s %6s %6s Gbit/s\n' "$1" "$R1" "$R4" >&2
}

echo "iperf3 TCP, ${SECS} s, 1 and 4 streams, between two namespaces" >&2

# (a) Strata: switchd in its own namespace, one TAP moved into each side.
fresh_namespaces
"$SWITCHD" --netns "$H" --tap "${P}ta" --tap "${P}tb" ${STRATA_THREADS:+--threads "$STRATA_THREADS"} \
  >"/tmp/${P}.switchd" 2>&1 &
SWPID=$!
for _ in $(seq 50); do grep -q ready "/tmp/${P}.switchd" 2>/dev/null && break; sleep 0.1; done
grep -q ready "/tmp/${P}.switchd" || { cat "/tmp/${P}.switchd" >&2; exit 1; }
ip -n "$H" link set "${P}ta" netns "$A"; addr "${P}ta" "$A" 10.50.0.1/24
ip -n "$H" link set "${P}tb" netns "$B"; addr "${P}tb" "$B" 10.50.0.2/24
measure "Strata (TAP, vnet_hdr + TSO)"; S1=$R1 S4=$R4
kill -TERM "$SWPID"; wait "$SWPID" || true; SWPID=""
echo "  switchd counters:" >&2; sed 's/^/    /' "/tmp/${P}.switchd" | grep -v ready >&2
rm -f "/tmp/${P}.switchd"

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
measure "Linux bridge, veth, default offloads"; L1=$R1 L4=$R4
ip netns exec "$A" ethtool -K na tx off >/dev/null 2>&1
ip netns exec "$B" ethtool -K nb tx off >/dev/null 2>&1
measure "Linux bridge, veth, tx off"; LT1=$R1 LT4=$R4

# (b) OVS userspace datapath, veth ports, TX checksum off on the namespace side.
O1=0 O4=0
if [ "${SKIP_OVS:-0}" != 1 ]; then
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
  measure "OVS userspace (netdev), veth, tx off"; O1=$R1 O4=$R4
fi
cleanup

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }
echo
echo "| path | 1 stream Gbit/s | 4 streams Gbit/s |"
echo "|---|---:|---:|"
echo "| Strata (TAP, vnet_hdr + TSO) | $S1 | $S4 |"
echo "| Linux bridge, veth, default offloads | $L1 | $L4 |"
echo "| Linux bridge, veth, tx off | $LT1 | $LT4 |"
echo "| OVS userspace (netdev), veth, tx off | $O1 | $O4 |"
echo "| Strata / Linux bridge (default) | $(ratio "$S1" "$L1") | $(ratio "$S4" "$L4") |"
echo "| Strata / OVS userspace | $(ratio "$S1" "$O1") | $(ratio "$S4" "$O4") |"
