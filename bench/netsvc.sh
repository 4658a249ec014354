#!/usr/bin/env bash
# Tenant networks through `strata serve` (the path users run), beside their peers in one run:
#   1. scale: one tenant's layout through the REST API — NETS networks (two subnets and a
#      router each), NETS x PORTS ports bound to TAPs, NETS x NGROUPS security groups of RULES
#      rules (default 10 x 100 ports, 100 groups x 100 rules = 1,000 ports, 10,000 rules) —
#      the time to apply it, then one rule add and one rule delete at that scale (median and
#      p99 of SAMPLES), from the API call to the flows in the switch (examples/netbench checks
#      the switch's flows after every change). Peer: OVN 23.03 (ovn-northd and ovn-controller
#      on a private OVS with the userspace datapath), the same layout as logical switches,
#      routers, port groups and ACLs, every port bound to an OVS internal interface;
#      `ovn-nbctl --wait=hv` is API-to-flows-on-the-hypervisor;
#   2. conntrack: new TCP connections per second (netbench connect/close loop, THREADS
#      clients) between two namespaces through (a) a Strata tenant network (two ports of one
#      subnet, a security group allowing the port: every connection passes ct and commit),
#      (b) a Linux bridge with nftables conntrack (br_netfilter, forward chain
#      `ct state established,related accept; tcp dport P ct state new accept; policy drop`),
#      (c) the OVS userspace datapath with ct() flows;
#   3. throughput: iperf3 TCP, 1 and 4 streams, L2 within a subnet and routed between two
#      subnets through a Strata router, and to a load balancer's VIP with one backend (each
#      as a ratio to L2), the Linux bridge for scale.
# The switch's CPU (the daemon's, ovs-vswitchd's; the kernel's work is not attributable) per
# connection and per Gbit is printed beside.
#
# Everything runs in namespaces this script makes (the daemon and ovs-vswitchd too, so their
# TAPs and interfaces never appear in the host's namespace); OVS and OVN are private instances
# with their databases and sockets in the temporary dir; all of it goes on exit, also on
# failure. The user's CLI config is never touched (STRATA_CONFIG points into the temp dir).
#
# Usage: sudo bash bench/netsvc.sh [--secs S] [--threads N] [--nets N] [--ports N]
#            [--groups N] [--rules N] [--samples N] [--ovn-samples N] [--rounds N]
#            [--skip-scale] [--skip-ovn] [--skip-traffic]
# Needs: iproute2, iperf3, ethtool, nftables, openvswitch-switch, ovn-central, ovn-host, jq.
set -euo pipefail
export NO_COLOR=1
cd "$(dirname "$0")/.."

SECS=4 THREADS=4 NETS=10 PORTS=100 NGROUPS=10 RULES=100 SAMPLES=50 OVN_SAMPLES=20 ROUNDS=1
SCALE=1 OVN=1 TRAFFIC=1
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --nets) NETS=$2; shift 2 ;;
    --ports) PORTS=$2; shift 2 ;;
    --groups) NGROUPS=$2; shift 2 ;;
    --rules) RULES=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --ovn-samples) OVN_SAMPLES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --skip-scale) SCALE=0; shift ;;
    --skip-ovn) OVN=0; shift ;;
    --skip-traffic) TRAFFIC=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for t in ip iperf3 ethtool nft jq ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl \
         ovn-northd ovn-controller ovn-nbctl; do
  command -v "$t" >/dev/null || {
    echo "missing $t (apt-get install iproute2 iperf3 ethtool nftables jq openvswitch-switch ovn-central ovn-host)" >&2
    exit 1
  }
done

cargo build --release -q -p strata --bin strata
cargo build --release -q -p strata-control --example netbench
BIN="${CARGO_TARGET_DIR:-target}/release"
STRATA="$BIN/strata" NB="$BIN/examples/netbench"

P="nsv$$"                    # prefix of every namespace this script makes
H="${P}h"                    # the switch's namespace: the daemon, the bridge, ovs-vswitchd
NSS=()                       # namespaces made
BG=()                        # background processes started (servers, daemons)
DPID=""                      # the strata daemon
dir=$(mktemp -d)
export STRATA_CONFIG="$dir/config.yaml"

stop_bg() {
  local p
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
  BG=()
}
stop_daemon() {
  [ -n "$DPID" ] || return 0
  kill "$DPID" 2>/dev/null || true
  wait "$DPID" 2>/dev/null || true
  DPID=""
}
del_namespaces() {
  local n pid
  for n in "${NSS[@]}"; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  NSS=()
}
cleanup() {
  set +e
  stop_bg
  stop_daemon
  del_namespaces
  rm -rf "$dir"
}
trap cleanup EXIT

ns_add() { # NAME: a namespace with lo up and no IPv6 chatter
  ip netns add "$1"
  NSS+=("$1")
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$1" link set lo up
}
fresh() { # NAME...: delete every namespace made so far, then make these
  stop_bg
  del_namespaces
  local n
  for n in "$@"; do ns_add "$n"; done
}

# CPU seconds (user + system, all threads) a process used so far.
cpu_of() { awk '{ printf "%.2f\n", ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
per() { awk -v a="$1" -v b="$2" -v k="$3" 'BEGIN { if (b > 0) printf "%.1f", a * k / b; else print "n/a" }'; }
val() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

start_daemon() { # the daemon in namespace $H, fresh data dir; sets DPID ADDR TOKEN
  rm -rf "$dir/data" "$dir/log"
  ip netns exec "$H" "$STRATA" serve --data-dir "$dir/data" --listen 127.0.0.1:0 \
    --default-pool-size 1G 2> "$dir/log" &
  DPID=$!
  for _ in $(seq 1 200); do grep -q "strata serving" "$dir/log" 2>/dev/null && break; sleep 0.1; done
  grep -q "strata serving" "$dir/log" || { cat "$dir/log" >&2; exit 1; }
  ADDR=$(grep -o 'listen=[0-9.:]*' "$dir/log" | head -1 | cut -d= -f2)
  TOKEN=$(cat "$dir/data/admin.token")
}
cli() { ip netns exec "$H" "$STRATA" --endpoint "http://$ADDR" --token "$TOKEN" "$@"; }

# Private OVS: its database, sockets and logs in $dir/ovs, ovs-vswitchd in namespace $H.
OVS="$dir/ovs"
ovs_env() {
  export OVS_RUNDIR="$OVS" OVS_LOGDIR="$OVS" OVS_DBDIR="$OVS"
  export OVN_RUNDIR="$OVS" OVN_LOGDIR="$OVS" OVN_DBDIR="$OVS"
  export OVS_VSCTL_DB="unix:$OVS/db.sock" OVN_NB_DB="unix:$OVS/nb.sock"
}
vsctl() { ovs-vsctl --db="unix:$OVS/db.sock" "$@"; }
start_ovs() {
  rm -rf "$OVS"; mkdir -p "$OVS"
  ovs_env
  ovsdb-tool create "$OVS/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$OVS/conf.db" --remote="punix:$OVS/db.sock" --unixctl="$OVS/db.ctl" \
    --log-file="$OVS/db.log" 2>/dev/null &
  BG+=($!)
  for _ in $(seq 50); do [ -S "$OVS/db.sock" ] && break; sleep 0.1; done
  vsctl --no-wait init
  ip netns exec "$H" ovs-vswitchd "unix:$OVS/db.sock" --unixctl="$OVS/vswitchd.ctl" \
    --log-file="$OVS/vswitchd.log" 2>/dev/null &
  VSPID=$!
  BG+=($VSPID)
  for _ in $(seq 50); do [ -S "$OVS/vswitchd.ctl" ] && break; sleep 0.1; done
}
start_ovn() {
  local db
  for db in nb sb; do
    ovsdb-tool create "$OVS/$db.db" "/usr/share/ovn/ovn-$db.ovsschema"
    ovsdb-server "$OVS/$db.db" --remote="punix:$OVS/$db.sock" --unixctl="$OVS/$db.ctl" \
      --log-file="$OVS/$db.log" 2>/dev/null &
    BG+=($!)
  done
  for _ in $(seq 50); do [ -S "$OVS/nb.sock" ] && [ -S "$OVS/sb.sock" ] && break; sleep 0.1; done
  ovn-nbctl init
  ovn-northd --ovnnb-db="unix:$OVS/nb.sock" --ovnsb-db="unix:$OVS/sb.sock" \
    --unixctl="$OVS/northd.ctl" --log-file="$OVS/northd.log" 2>/dev/null &
  BG+=($!)
  vsctl set open . external_ids:system-id=nsvbench external_ids:ovn-remote="unix:$OVS/sb.sock" \
    external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip=127.0.0.1 \
    external_ids:ovn-bridge-datapath-type=netdev external_ids:ovn-bridge=nsvint
  ip netns exec "$H" ovn-controller "unix:$OVS/db.sock" --log-file="$OVS/controller.log" 2>/dev/null &
  BG+=($!)
  for _ in $(seq 100); do vsctl br-exists nsvint 2>/dev/null && break; sleep 0.1; done
  ovn-nbctl --wait=hv --timeout=60 sync
}

declare -A R                 # results, by name
echo "bench/netsvc.sh: secs=$SECS threads=$THREADS layout=${NETS}x${PORTS} ports, $((NETS * NGROUPS))x${RULES} rules, samples=$SAMPLES/$OVN_SAMPLES" >&2

# ---------------------------------------------------------------- 1. scale
if [ "$SCALE" = 1 ]; then
  fresh "$H"
  start_daemon
  echo "== scale: Strata ($STRATA serve, API on $ADDR in $H)" >&2
  C0=$(cpu_of "$DPID")
  ip netns exec "$H" "$NB" strata "http://$ADDR" "$TOKEN" "$NETS" "$PORTS" "$NGROUPS" "$RULES" \
    "$SAMPLES" > "$dir/strata.scale"
  R[s_cpu]=$(sub "$(cpu_of "$DPID")" "$C0")
  stop_daemon
  for k in apply_s apply_rules_s apply_ports_s port_first_p50_ms port_last_p50_ms flows calls add_p50_ms add_p99_ms del_p50_ms del_p99_ms; do
    R[s_$k]=$(val "$k" "$dir/strata.scale")
  done
  if [ "$OVN" = 1 ]; then
    fresh "$H"
    start_ovs
    start_ovn
    echo "== scale: OVN (ovn-northd + ovn-controller, OVS userspace datapath in $H)" >&2
    "$NB" ovn "$NETS" "$PORTS" "$NGROUPS" "$RULES" "$OVN_SAMPLES" nsvint > "$dir/ovn.scale"
    for k in apply_s wait_s flows sync_p50_ms add_p50_ms add_p99_ms del_p50_ms del_p99_ms; do
      R[o_$k]=$(val "$k" "$dir/ovn.scale")
    done
    fresh
  fi
fi

# ---------------------------------------------------------------- 2, 3. traffic
# cps NS_CLIENT NS_SERVER IP PID_OF_SWITCH(or empty) -> CPS CPU(s of the switch) FAILED
cps() {
  ip netns exec "$2" "$NB" listen "$3:7000" 2 > "$dir/listen" &
  local lpid=$!
  BG+=($lpid)
  for _ in $(seq 50); do grep -q listening "$dir/listen" 2>/dev/null && break; sleep 0.1; done
  local c0=0 best=0 out
  CPS_CPU=0 CPS_N=0 CPS_FAILED=0
  for _ in $(seq "$ROUNDS"); do
    [ -n "$4" ] && c0=$(cpu_of "$4")
    ip netns exec "$1" "$NB" connect "$3:7000" "$SECS" "$THREADS" > "$dir/cps"
    out=$(val cps "$dir/cps")
    if awk -v a="$out" -v b="$best" 'BEGIN { exit !(a > b) }'; then
      best=$out
      CPS_CPU=0
      [ -n "$4" ] && CPS_CPU=$(sub "$(cpu_of "$4")" "$c0")
      CPS_N=$(val conns "$dir/cps")
      CPS_FAILED=$(val failed "$dir/cps")
    fi
  done
  CPS=$best
  kill "$lpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
}
# iperf NS_CLIENT NS_SERVER IP STREAMS PID_OF_SWITCH [SERVER_IP] -> GBPS CPU
# (SERVER_IP: where the server listens when the client connects elsewhere, a VIP)
iperf() {
  local best=0 c0=0 out g
  IPERF_CPU=0
  for _ in $(seq "$ROUNDS"); do
    ip netns exec "$2" iperf3 -s -1 -B "${6:-$3}" >/dev/null 2>&1 &
    local srv=$!
    for _ in $(seq 50); do ip netns exec "$2" ss -Hltn 'sport = :5201' | grep -q 5201 && break; sleep 0.1; done
    [ -n "$5" ] && c0=$(cpu_of "$5")
    if out=$(ip netns exec "$1" iperf3 -c "$3" -t "$SECS" -P "$4" -f g 2>&1); then
      g=$(echo "$out" | awk '/receiver/ { v = $(NF-2) } END { print v }')
    else
      echo "$out" >&2; g=0
    fi
    wait "$srv" 2>/dev/null || true
    if awk -v a="$g" -v b="$best" 'BEGIN { exit !(a > b) }'; then
      best=$g
      IPERF_CPU=0
      [ -n "$5" ] && IPERF_CPU=$(sub "$(cpu_of "$5")" "$c0")
    fi
  done
  GBPS=$best
}
# plug NS PORT_JSON PREFIX GATEWAY: a Strata port's TAP into a namespace, static address
plug() {
  local dev mac ip
  dev=$(jq -r .device <<< "$2"); mac=$(jq -r .mac <<< "$2"); ip=$(jq -r .ip <<< "$2")
  ip -n "$H" link set "$dev" netns "$1"
  ip -n "$1" link set "$dev" address "$mac"
  ip -n "$1" addr add "$ip/$3" dev "$dev"
  ip -n "$1" link set "$dev" up
  ip -n "$1" route add default via "$4" dev "$dev"
}

if [ "$TRAFFIC" = 1 ]; then
  A="${P}a" B="${P}b" C="${P}c"
  # (a) Strata: one network, subnets a and b, a router; ports a1, a2 in a, b1 in b.
  fresh "$H" "$A" "$B" "$C"
  start_daemon
  echo "== traffic: Strata tenant network" >&2
  cli network create t --cidr 10.70.0.0/16 > /dev/null
  cli subnet create t a --cidr 10.70.1.0/24 > /dev/null
  cli subnet create t b --cidr 10.70.2.0/24 > /dev/null
  cli router create t r --subnet a --subnet b > /dev/null
  cli security-group create srv > /dev/null
  cli security-group add-rule srv --protocol tcp --port 5201 > /dev/null
  cli security-group add-rule srv --protocol tcp --port 7000 > /dev/null
  cli security-group add-rule srv --protocol icmp > /dev/null
  pa1=$(cli -o json network add-port t a1 --subnet a --security-group srv)
  pa2=$(cli -o json network add-port t a2 --subnet a --security-group srv)
  pb1=$(cli -o json network add-port t b1 --subnet b --security-group srv)
  plug "$A" "$pa1" 24 10.70.1.1
  plug "$B" "$pa2" 24 10.70.1.1
  plug "$C" "$pb1" 24 10.70.2.1
  IPA2=$(jq -r .ip <<< "$pa2") IPB1=$(jq -r .ip <<< "$pb1")
  ip netns exec "$A" ping -c 1 -W 2 "$IPA2" > /dev/null || { echo "no L2 path through Strata" >&2; exit 1; }
  ip netns exec "$A" ping -c 1 -W 2 "$IPB1" > /dev/null || { echo "no routed path through Strata" >&2; exit 1; }
  cps "$A" "$B" "$IPA2" "$DPID"
  R[sc_cps]=$CPS R[sc_cpu]=$CPS_CPU R[sc_n]=$CPS_N R[sc_failed]=$CPS_FAILED
  for s in 1 4; do
    iperf "$A" "$B" "$IPA2" "$s" "$DPID"; R[sl2_$s]=$GBPS R[sl2cpu_$s]=$IPERF_CPU
    iperf "$A" "$C" "$IPB1" "$s" "$DPID"; R[srt_$s]=$GBPS R[srtcpu_$s]=$IPERF_CPU
  done
  # Through a load balancer: VIP:5201 on subnet a, one backend (a2), beside L2 to a2.
  lb=$(cli -o json load-balancer create lb --network t --subnet a --listener tcp:5201 --backend a2)
  VIP=$(jq -r .vip <<< "$lb")
  for s in 1 4; do
    iperf "$A" "$B" "$VIP" "$s" "$DPID" "$IPA2"; R[slb_$s]=$GBPS R[slbcpu_$s]=$IPERF_CPU
  done
  cli network flows -o json | jq -r '.flows[]' | grep -E 'table=(20|50|51),' | \
    grep -v 'n_packets=0,' | sed 's/^/    /' > "$dir/ctflows" || true
  stop_daemon

  # (b) Linux bridge over veth in $H; nftables conntrack on the bridge (br_netfilter).
  fresh "$H" "$A" "$B"
  echo "== traffic: Linux bridge, nftables conntrack" >&2
  ip -n "$H" link add br0 type bridge
  ip -n "$H" link set br0 up
  for side in a b; do
    ns=$([ $side = a ] && echo "$A" || echo "$B")
    ip -n "$H" link add "h$side" type veth peer name "n$side" netns "$ns"
    ip -n "$H" link set "h$side" master br0 up
  done
  ip -n "$A" addr add 10.50.0.1/24 dev na; ip -n "$A" link set na up
  ip -n "$B" addr add 10.50.0.2/24 dev nb; ip -n "$B" link set nb up
  for s in 1 4; do iperf "$A" "$B" 10.50.0.2 "$s" ""; R[br_$s]=$GBPS; done
  ip netns exec "$H" sysctl -qw net.bridge.bridge-nf-call-iptables=1
  ip netns exec "$H" nft -f - <<'EOF'
table inet nsvbench {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    tcp dport 7000 ct state new accept
  }
}
EOF
  cps "$A" "$B" 10.50.0.2 ""
  R[nf_cps]=$CPS R[nf_failed]=$CPS_FAILED
  NF_CT=$(ip netns exec "$H" nft list ruleset | grep -c 'ct state' || true)

  # (c) OVS userspace datapath with ct() flows, veth ports, TX checksum off (MEASURE.md).
  fresh "$H" "$A" "$B"
  echo "== traffic: OVS userspace datapath, ct() flows" >&2
  start_ovs
  vsctl add-br ctbr -- set bridge ctbr datapath_type=netdev
  for side in a b; do
    ns=$([ $side = a ] && echo "$A" || echo "$B")
    no=$([ $side = a ] && echo 1 || echo 2)
    ip -n "$H" link add "o$side" type veth peer name "n$side" netns "$ns"
    ip -n "$H" link set "o$side" up
    vsctl add-port ctbr "o$side" -- set interface "o$side" ofport_request=$no
    ip netns exec "$ns" ethtool -K "n$side" tx off > /dev/null
  done
  ip -n "$A" addr add 10.50.0.1/24 dev na; ip -n "$A" link set na up
  ip -n "$B" addr add 10.50.0.2/24 dev nb; ip -n "$B" link set nb up
  ovs-ofctl del-flows ctbr
  ovs-ofctl add-flows ctbr - <<'EOF'
table=0,priority=10,arp,in_port=1,actions=output:2
table=0,priority=10,arp,in_port=2,actions=output:1
table=0,priority=100,ip,actions=ct(table=1)
table=1,priority=100,ct_state=+trk+new,tcp,tp_dst=7000,in_port=1,actions=ct(commit),output:2
table=1,priority=90,ct_state=+trk+est,in_port=1,actions=output:2
table=1,priority=90,ct_state=+trk+est,in_port=2,actions=output:1
table=1,priority=90,ct_state=+trk+rel,in_port=1,actions=output:2
table=1,priority=90,ct_state=+trk+rel,in_port=2,actions=output:1
table=1,priority=1,actions=drop
EOF
  cps "$A" "$B" 10.50.0.2 "$VSPID"
  R[ov_cps]=$CPS R[ov_cpu]=$CPS_CPU R[ov_n]=$CPS_N R[ov_failed]=$CPS_FAILED
  ovs-ofctl dump-flows ctbr table=1 | grep -v 'n_packets=0,' | sed 's/^/    /' > "$dir/ovsflows" || true
  fresh
fi

# ---------------------------------------------------------------- report
us_per() { per "$1" "$2" 1000000; }        # CPU s / count -> us each
ms_per_gbit() { per "$1" "$(awk -v g="$2" -v s="$SECS" 'BEGIN { print g * s }')" 1000; }
echo
if [ "$SCALE" = 1 ]; then
  echo "### 1. Apply and rule-change latency: $((NETS * PORTS)) ports, $((NETS * NGROUPS * RULES)) security-group rules"
  echo "($NETS networks x 2 subnets + router, $PORTS ports each; $((NETS * NGROUPS)) groups x $RULES rules; each port in one group)"
  echo
  echo "| | Strata (REST, one call per object) | OVN (ovn-nbctl, batched; --wait=hv) | OVN / Strata (>1: Strata faster) |"
  echo "|---|---:|---:|---:|"
  echo "| apply all, s | ${R[s_apply_s]} (${R[s_calls]} calls; rules ${R[s_apply_rules_s]}, ports ${R[s_apply_ports_s]}) | ${R[o_apply_s]:-n/a} (of which --wait=hv sync ${R[o_wait_s]:-n/a}) | $(ratio "${R[o_apply_s]:-0}" "${R[s_apply_s]}") |"
  echo "| port add p50, first / last tenth, ms | ${R[s_port_first_p50_ms]} / ${R[s_port_last_p50_ms]} | | |"
  echo "| flows in the switch | ${R[s_flows]} | ${R[o_flows]:-n/a} | |"
  echo "| one rule add, p50 / p99 ms | ${R[s_add_p50_ms]} / ${R[s_add_p99_ms]} | ${R[o_add_p50_ms]:-n/a} / ${R[o_add_p99_ms]:-n/a} | $(ratio "${R[o_add_p50_ms]:-0}" "${R[s_add_p50_ms]}") (p50) |"
  echo "| one rule delete, p50 / p99 ms | ${R[s_del_p50_ms]} / ${R[s_del_p99_ms]} | ${R[o_del_p50_ms]:-n/a} / ${R[o_del_p99_ms]:-n/a} | $(ratio "${R[o_del_p50_ms]:-0}" "${R[s_del_p50_ms]}") (p50) |"
  echo "| daemon CPU for all of it, s | ${R[s_cpu]} | | |"
  [ -n "${R[o_sync_p50_ms]:-}" ] && echo "OVN --wait=hv sync with nothing to do (the floor of its wait): p50 ${R[o_sync_p50_ms]} ms. Samples: Strata $SAMPLES, OVN $OVN_SAMPLES."
  echo "Goal: a rule change under 10 ms from the API call to flows in the switch."
  echo
fi
if [ "$TRAFFIC" = 1 ]; then
  echo "### 2. Conntrack: new TCP connections per second ($THREADS clients, ${SECS} s, connect / server closes / close; best of $ROUNDS)"
  echo
  echo "| path | conn/s | failed | switch CPU us/conn | Strata / it |"
  echo "|---|---:|---:|---:|---:|"
  echo "| Strata tenant network (ct + commit per connection, security group) | ${R[sc_cps]} | ${R[sc_failed]} | $(us_per "${R[sc_cpu]}" "${R[sc_n]}") | |"
  echo "| Linux bridge + nftables conntrack ($NF_CT ct rules, br_netfilter) | ${R[nf_cps]} | ${R[nf_failed]} | in kernel | $(ratio "${R[sc_cps]}" "${R[nf_cps]}") |"
  echo "| OVS userspace datapath, ct() flows | ${R[ov_cps]} | ${R[ov_failed]} | $(us_per "${R[ov_cpu]}" "${R[ov_n]}") | $(ratio "${R[sc_cps]}" "${R[ov_cps]}") |"
  echo "Goal: Strata ahead of OVS userspace."
  echo
  echo "### 3. Throughput, iperf3 TCP ${SECS} s (best of $ROUNDS)"
  echo
  echo "| path | 1 stream Gbit/s | 4 streams Gbit/s | switch CPU ms/Gbit (1 / 4) |"
  echo "|---|---:|---:|---:|"
  echo "| Strata L2, one subnet | ${R[sl2_1]} | ${R[sl2_4]} | $(ms_per_gbit "${R[sl2cpu_1]}" "${R[sl2_1]}") / $(ms_per_gbit "${R[sl2cpu_4]}" "${R[sl2_4]}") |"
  echo "| Strata routed, two subnets through the router | ${R[srt_1]} | ${R[srt_4]} | $(ms_per_gbit "${R[srtcpu_1]}" "${R[srt_1]}") / $(ms_per_gbit "${R[srtcpu_4]}" "${R[srt_4]}") |"
  echo "| Strata through a load balancer (VIP, one backend) | ${R[slb_1]} | ${R[slb_4]} | $(ms_per_gbit "${R[slbcpu_1]}" "${R[slb_1]}") / $(ms_per_gbit "${R[slbcpu_4]}" "${R[slb_4]}") |"
  echo "| Linux bridge over veth (scale) | ${R[br_1]} | ${R[br_4]} | in kernel |"
  echo "| routed / L2 (goal >= 0.9x) | $(ratio "${R[srt_1]}" "${R[sl2_1]}") | $(ratio "${R[srt_4]}" "${R[sl2_4]}") | |"
  echo "| load balancer / L2 (goal >= 0.9x) | $(ratio "${R[slb_1]}" "${R[sl2_1]}") | $(ratio "${R[slb_4]}" "${R[sl2_4]}") | |"
  echo "| Strata L2 / Linux bridge | $(ratio "${R[sl2_1]}" "${R[br_1]}") | $(ratio "${R[sl2_4]}" "${R[br_4]}") | |"
  echo
  echo "Strata's conntrack flows that saw packets (tables 20, 50, 51):"
  cat "$dir/ctflows"
  echo "OVS ct() flows that saw packets:"
  cat "$dir/ovsflows"
fi
