//! What load balancers compile to: a VIP that answers ARP, listeners that send new
//! connections through the engine's Maglev group (`ct(commit,zone=Z,lb(id=G),table=33)`),
//! delivery of the translated packet to its backend through the usual security-group and
//! output tables, replies translated back, and the network's health-check monitor let in.
//!
//! | table | flow | owner |
//! |---|---|---|
//! | 10 | ARP for the VIP on its subnet, answered with the subnet's gateway MAC | the balancer |
//! | 20 (110) | per listener, on the VIP's subnet and every subnet routed to it: `proto,nw_dst=VIP,tp_dst=P` → `set_field:G->reg3,ct(commit,zone=Z,lb(id=G),table=33)` | the balancer |
//! | 32 (150) | per listener and router leg of the VIP's subnet (a floating IP on the VIP): the same, after the router's DNAT | the balancer |
//! | 33 (100) | per backend: `reg3=G,proto,nw_dst=B,tp_dst=BP` → the backend subnet's gateway MAC as source, its `metadata`, table 35 | the balancer |
//! | 33 (200) | hairpin (`nw_src=B,nw_dst=B`): dropped, see below | the balancer |
//! | 20 (105) | per backend of the network: `metadata=KB,proto,nw_src=B,tp_src=BP` → `ct(zone=Z,nat,table=30)`, replies get the VIP back | the network's balancers |
//! | 51 (250) | per probed backend: from the monitor port (`reg6`) to `B:BP`, not a reply → commit, output | the network's balancers |
//!
//! # Invariants
//! - A balancer's flows all carry its VIP (or its groups' `reg3`) in their match, so two
//!   balancers never emit the same (table, priority, match); what several balancers of a
//!   network may share (a backend's reply flow, a monitor allow) is owned by the network's
//!   [`Owner::Balancers`](super::Owner) and emitted once.
//! - Every group a flow names is on the switch before the flow (`Delta::set_lb_groups` is
//!   applied first) and leaves after it (`remove_lb_groups` last); a group is set again only
//!   when its own balancer changed, so a weight change rewrites that group alone.
//! - Hairpin (a backend reaching its own VIP and being chosen) is dropped with an explained
//!   cookie: delivered, the packet would come back to the backend from its own address, which
//!   its kernel discards as a martian; serving it needs a second translation of the source
//!   (OVN's hairpin SNAT), not done.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::tables::*;
use super::{Compiler, Delta, Flow, Owner, Topology};
use crate::model::{fmt_mac, LbProtocol, LoadBalancer, Subnet};

/// A group as the switch should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbGroupSpec {
    /// Backends: address, port, weight.
    pub backends: Vec<(Ipv4Addr, u16, u32)>,
    /// Session affinity (hash of the source address only).
    pub affinity: bool,
}

/// The subnet of `lb`'s network holding `ip`.
fn subnet_of<'a>(topo: &'a Topology, network: &str, ip: Ipv4Addr) -> Option<&'a Subnet> {
    topo.subnets
        .values()
        .find(|s| s.network == network && s.cidr.contains(&ip))
}

/// The subnets whose ports reach the VIP: its own and those a router connects it to.
fn reaching<'a>(topo: &'a Topology, lb: &LoadBalancer) -> Vec<&'a Subnet> {
    let mut ids: BTreeSet<&str> = BTreeSet::from([lb.subnet.as_str()]);
    for r in topo
        .routers
        .values()
        .filter(|r| r.subnets.contains(&lb.subnet))
    {
        ids.extend(r.subnets.iter().map(String::as_str));
    }
    ids.into_iter()
        .filter_map(|s| topo.subnets.get(s))
        .collect()
}

pub(super) fn balancer(topo: &Topology, id: &str) -> Vec<Flow> {
    let Some(lb) = topo.load_balancers.get(id) else {
        return Vec::new();
    };
    let (Some(net), Some(s)) = (topo.networks.get(&lb.network), topo.subnets.get(&lb.subnet))
    else {
        return Vec::new();
    };
    let (vip, z) = (lb.vip, net.zone);
    let who = format!("load balancer {} ({vip})", lb.name);
    let mut out = vec![Flow::new(
        T_LOCAL,
        100,
        &format!("metadata={:#x},arp,arp_op=1,arp_tpa={vip}", s.key),
        &format!("arp_reply:{},in_port", fmt_mac(&s.gateway_mac)),
        &format!("{who}: its VIP answers ARP"),
    )];
    let legs: Vec<(&str, u16)> = topo
        .routers
        .values()
        .filter(|r| r.subnets.contains(&lb.subnet))
        .filter_map(|r| r.gateway.as_ref().map(|g| (r.name.as_str(), g.zone)))
        .collect();
    for l in &lb.listeners {
        let (proto, port, g) = (l.protocol.as_str(), l.port, l.group);
        let to_group = format!("set_field:{g}->reg3,ct(commit,zone={z},lb(id={g}),table={T_LB})");
        let what = format!("{who}: listener {proto} {port}");
        for c in reaching(topo, lb) {
            out.push(Flow::new(
                T_CT,
                110,
                &format!("metadata={:#x},{proto},nw_dst={vip},tp_dst={port}", c.key),
                &to_group,
                &format!(
                    "{what}, new connections to a backend (from subnet {})",
                    c.name
                ),
            ));
        }
        for (router, zr) in &legs {
            out.push(Flow::new(
                T_DNAT,
                150,
                &format!("reg4={zr},{proto},nw_dst={vip},tp_dst={port}"),
                &format!(
                    "dec_ttl,set_field:{}->eth_src,write_metadata:{:#x},{to_group}",
                    fmt_mac(&s.gateway_mac),
                    s.key
                ),
                &format!("{what}, in through router {router}'s floating IP"),
            ));
        }
        for b in &l.backends {
            let Some(bs) = subnet_of(topo, &lb.network, b.ip) else {
                continue;
            };
            let (bip, bp) = (b.ip, b.target_port);
            out.push(Flow::new(
                T_LB,
                100,
                &format!("reg3={g},{proto},nw_dst={bip},tp_dst={bp}"),
                &format!(
                    "set_field:{}->eth_src,write_metadata:{:#x},goto_table:{T_NEIGH}",
                    fmt_mac(&bs.gateway_mac),
                    bs.key
                ),
                &format!("{what}: to backend {bip}:{bp}"),
            ));
            out.push(Flow::new(
                T_LB,
                200,
                &format!("reg3={g},{proto},nw_src={bip},nw_dst={bip},tp_dst={bp}"),
                "drop",
                &format!(
                    "{what}: backend {bip} chosen for its own connection (hairpin, not served)"
                ),
            ));
        }
    }
    out
}

/// What the balancers of network `net` share: each backend's replies translated back, and
/// the monitor's probes admitted by the backends' groups.
pub(super) fn shared(topo: &Topology, net: &str) -> Vec<Flow> {
    let Some(n) = topo.networks.get(net) else {
        return Vec::new();
    };
    let z = n.zone;
    let mut replies: BTreeMap<(u32, LbProtocol, Ipv4Addr, u16), ()> = BTreeMap::new();
    let mut probed: BTreeMap<(u32, Ipv4Addr, u16), ()> = BTreeMap::new();
    for lb in topo.load_balancers.values().filter(|l| l.network == net) {
        let mon = lb
            .monitor
            .as_ref()
            .filter(|_| lb.health.active())
            .and_then(|m| topo.bound.get(m));
        for l in &lb.listeners {
            for b in &l.backends {
                let Some(bs) = subnet_of(topo, net, b.ip) else {
                    continue;
                };
                replies.insert((bs.key, l.protocol, b.ip, b.target_port), ());
                if let (Some(&of), LbProtocol::Tcp) = (mon, l.protocol) {
                    probed.insert((of, b.ip, b.target_port), ());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (k, proto, ip, port) in replies.keys() {
        let proto = proto.as_str();
        out.push(Flow::new(
            T_CT,
            105,
            &format!("metadata={k:#x},{proto},nw_src={ip},tp_src={port}"),
            &format!("ct(zone={z},nat,table={T_FWD})"),
            &format!(
                "network {}: load-balancer backend {ip}:{port}, replies get the VIP back",
                n.name
            ),
        ));
    }
    for (of, ip, port) in probed.keys() {
        out.push(Flow::new(
            T_INGRESS,
            250,
            &format!("reg6={of},ct_state=-rpl+trk,tcp,nw_dst={ip},tp_dst={port}"),
            &format!("ct(commit,zone={z}),goto_table:{T_OUT}"),
            &format!(
                "network {}: health checks of load-balancer backend {ip}:{port} admitted",
                n.name
            ),
        ));
    }
    out
}

impl Compiler {
    /// A load balancer changed: its own flows, its network's shared ones (old and new
    /// network), router legs (a floating IP may name its VIP), and its groups.
    pub(super) fn lb_touch(&mut self, topo: &Topology, id: &str, touched: &mut BTreeSet<Owner>) {
        touched.insert(Owner::Balancer(id.to_string()));
        let old = self.lb_networks.remove(id);
        let new = topo.load_balancers.get(id).map(|l| l.network.clone());
        for n in old.iter().chain(new.iter()) {
            touched.insert(Owner::Balancers(n.clone()));
        }
        if let Some(n) = new {
            self.lb_networks.insert(id.to_string(), n);
        }
        if topo
            .floating_ips
            .values()
            .any(|f| f.load_balancer.as_deref() == Some(id))
        {
            for r in topo.routers.values().filter(|r| r.gateway.is_some()) {
                touched.insert(Owner::Router(r.id.clone()));
            }
        }
        self.lb_dirty.insert(id.to_string());
    }

    /// A network, or a subnet or router of it, changed: every balancer of it.
    pub(super) fn lb_touch_network(
        &mut self,
        topo: &Topology,
        net: &str,
        touched: &mut BTreeSet<Owner>,
    ) {
        let mut any = false;
        for (id, n) in &self.lb_networks {
            if n == net {
                touched.insert(Owner::Balancer(id.clone()));
                any = true;
            }
        }
        if any || topo.load_balancers.values().any(|l| l.network == net) {
            touched.insert(Owner::Balancers(net.to_string()));
        }
    }

    /// The networks of a router's subnets when last seen (a deleted router's too).
    pub(super) fn router_networks(&self, topo: &Topology, id: &str) -> Vec<String> {
        let subnets = self.router_subnets.get(id).into_iter().flatten();
        let mut out: Vec<String> = subnets
            .filter_map(|s| topo.subnets.get(s).map(|s| s.network.clone()))
            .collect();
        out.dedup();
        out
    }

    /// A port changed: if it is a monitor, its network's shared flows name its number.
    pub(super) fn lb_touch_port(
        &mut self,
        topo: &Topology,
        id: &str,
        touched: &mut BTreeSet<Owner>,
    ) {
        for lb in topo.load_balancers.values() {
            if lb.monitor.as_deref() == Some(id) {
                touched.insert(Owner::Balancers(lb.network.clone()));
            }
        }
    }

    /// The groups of the balancers that changed, against those on the switch.
    pub(super) fn lb_group_delta(&mut self, topo: &Topology, d: &mut Delta) {
        let dirty = std::mem::take(&mut self.lb_dirty);
        let mut released = Vec::new();
        let mut claimed = BTreeSet::new();
        for id in dirty {
            released.extend(self.lb_group_ids.remove(&id).unwrap_or_default());
            let mut new = Vec::new();
            if let Some(lb) = topo.load_balancers.get(&id) {
                for l in &lb.listeners {
                    let spec = LbGroupSpec {
                        backends: l
                            .backends
                            .iter()
                            .map(|b| (b.ip, b.target_port, b.weight))
                            .collect(),
                        affinity: lb.session_affinity,
                    };
                    if self.lb_groups.get(&l.group) != Some(&spec) {
                        d.set_lb_groups.push((l.group, spec.clone()));
                    }
                    self.lb_groups.insert(l.group, spec);
                    claimed.insert(l.group);
                    new.push(l.group);
                }
            }
            if !new.is_empty() {
                self.lb_group_ids.insert(id, new);
            }
        }
        // A group a balancer let go and none took (in this change) leaves the switch.
        for g in released {
            if !claimed.contains(&g) && self.lb_groups.remove(&g).is_some() {
                d.remove_lb_groups.push(g);
            }
        }
    }
}
