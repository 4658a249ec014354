//! What each owner compiles to: a subnet's gateway (ARP, ping, conntrack, routing), a bound
//! port (port security, DHCP, ARP answer, L2 and routed delivery, its group set, output), and
//! a group set (its egress and ingress rules). Table roles: [`super::tables`].

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::tables::*;
use super::{Flow, SetKey, Topology};
use crate::ipam::{fnv, port_masks};
use crate::model::{fmt_mac, Direction, Protocol, Remote, SgRule};

/// DHCP lease handed out, seconds (a day, as dnsmasq's and Neutron's defaults are of that
/// order; the address never changes while the port lives, so renewals are cheap).
pub const DHCP_LEASE_SECS: u32 = 86_400;

/// The MTU DHCP hands out: 1500 less the 50 bytes of VXLAN over IPv4, so tenant traffic fits
/// an underlay of 1500 when it crosses nodes.
pub const DHCP_MTU: u16 = 1450;

fn prefix_mask(p: u8) -> Ipv4Addr {
    Ipv4Addr::from(if p == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(p))
    })
}

pub(super) fn subnet(topo: &Topology, id: &str) -> Vec<Flow> {
    let Some(s) = topo.subnets.get(id) else {
        return Vec::new();
    };
    let Some(net) = topo.networks.get(&s.network) else {
        return Vec::new();
    };
    let k = s.key;
    let gw = s.gateway;
    let gmac = fmt_mac(&s.gateway_mac);
    let who = format!("subnet {} ({})", s.name, s.cidr);
    let mut out = vec![
        Flow::new(
            T_LOCAL,
            100,
            &format!("metadata={k:#x},arp,arp_op=1,arp_tpa={gw}"),
            &format!("arp_reply:{gmac},in_port"),
            &format!("{who}: its gateway {gw} answers ARP"),
        ),
        Flow::new(
            T_LOCAL,
            100,
            &format!("metadata={k:#x},icmp,icmp_type=8,nw_dst={gw}"),
            "icmp_echo_reply,in_port",
            &format!("{who}: its gateway {gw} answers ping"),
        ),
        Flow::new(
            T_CT,
            100,
            &format!("metadata={k:#x},ip"),
            &format!("ct(zone={},table={T_FWD})", net.zone),
            &format!(
                "network {}: connection tracking in zone {}",
                net.name, net.zone
            ),
        ),
        Flow::new(
            T_FWD,
            1,
            &format!("metadata={k:#x}"),
            "drop",
            &format!("{who}: no port has that MAC"),
        ),
    ];
    // Routing, only when a router connects the subnet to others.
    let peers: Vec<&crate::model::Subnet> = topo
        .routers
        .values()
        .filter(|r| r.network == s.network && r.subnets.iter().any(|x| x == id))
        .flat_map(|r| r.subnets.iter())
        .filter(|x| *x != id)
        .filter_map(|x| topo.subnets.get(x))
        .collect();
    if !peers.is_empty() {
        for ttl in [0, 1] {
            out.push(Flow::new(
                T_FWD,
                300,
                &format!("metadata={k:#x},dl_dst={gmac},ip,nw_ttl={ttl}"),
                &format!("icmp_error(type=11,code=0,src={gw}),in_port"),
                &format!("{who}: router, TTL expired (ICMP time exceeded)"),
            ));
        }
        for p in &peers {
            out.push(Flow::new(
                T_FWD,
                200,
                &format!("metadata={k:#x},dl_dst={gmac},ip,nw_dst={}", p.cidr),
                &format!(
                    "dec_ttl,set_field:{}->eth_src,write_metadata:{:#x},goto_table:{T_NEIGH}",
                    fmt_mac(&p.gateway_mac),
                    p.key
                ),
                &format!("{who}: routed to subnet {} ({})", p.name, p.cidr),
            ));
        }
    }
    // Out through the router's external leg, for what no inside subnet holds.
    let leg = topo
        .routers
        .values()
        .filter(|r| r.subnets.iter().any(|x| x == id))
        .find_map(|r| r.gateway.as_ref().map(|g| (r, g)));
    if let Some((r, g)) = leg {
        if let Some(x) = topo.subnets.get(&g.subnet) {
            // Above "no route" (150), below the inside routes (200).
            out.push(Flow::new(
                T_FWD,
                175,
                &format!("metadata={k:#x},dl_dst={gmac},ip"),
                &format!(
                    "dec_ttl,set_field:{}->eth_src,set_field:{}->reg4,write_metadata:{:#x},goto_table:{T_SNAT}",
                    fmt_mac(&g.mac),
                    g.zone,
                    x.key
                ),
                &format!("{who}: out through router {} to the external network", r.name),
            ));
        }
    }
    out.push(Flow::new(
        T_FWD,
        150,
        &format!("metadata={k:#x},dl_dst={gmac},ip"),
        &format!("icmp_error(type=3,code=0,src={gw}),in_port"),
        &format!("{who}: no route (ICMP network unreachable)"),
    ));
    out
}

pub(super) fn port(topo: &Topology, id: &str, set: u32) -> Vec<Flow> {
    let (Some(p), Some(&of)) = (topo.ports.get(id), topo.bound.get(id)) else {
        return Vec::new();
    };
    let Some(s) = topo.subnets.get(&p.subnet) else {
        return Vec::new();
    };
    let k = s.key;
    let mac = fmt_mac(&p.mac);
    let ip = p.ip;
    let who = format!("port {} ({ip}, {mac})", p.name);
    let enter = format!(
        "{}write_metadata:{k:#x},set_field:{of}->reg6,goto_table:{T_LOCAL}",
        super::Compiler::meters_of(topo, p)
    );
    let mut out = vec![
        Flow::new(
            T_PORT,
            100,
            &format!("in_port={of},dl_src={mac},ip,nw_src={ip}"),
            &enter,
            &format!("{who}: port security, IPv4 from its own address"),
        ),
        Flow::new(
            T_PORT,
            100,
            &format!("in_port={of},dl_src={mac},arp,arp_spa={ip},arp_sha={mac}"),
            &enter,
            &format!("{who}: port security, ARP from its own address"),
        ),
        Flow::new(
            T_LOCAL,
            110,
            &format!("reg6={of},arp,arp_tpa={ip}"),
            "drop",
            &format!("{who}: its own ARP probes get no answer"),
        ),
        Flow::new(
            T_LOCAL,
            100,
            &format!("metadata={k:#x},arp,arp_op=1,arp_tpa={ip}"),
            &format!("arp_reply:{mac},in_port"),
            &format!("{who}: ARP answered by the switch"),
        ),
        Flow::new(
            T_FWD,
            100,
            &format!("metadata={k:#x},dl_dst={mac}"),
            &format!("set_field:{of}->reg7,goto_table:{T_EGRESS_SET}"),
            &format!("{who}: delivered on its subnet"),
        ),
        Flow::new(
            T_NEIGH,
            100,
            &format!("metadata={k:#x},ip,nw_dst={ip}"),
            &format!("set_field:{mac}->eth_dst,set_field:{of}->reg7,goto_table:{T_EGRESS_SET}"),
            &format!("{who}: routed to"),
        ),
        Flow::new(
            T_EGRESS_SET,
            100,
            &format!("reg6={of}"),
            &format!("set_field:{set}->reg5,goto_table:{T_EGRESS}"),
            &format!("{who}: its security groups, egress"),
        ),
        Flow::new(
            T_INGRESS_SET,
            100,
            &format!("reg7={of}"),
            &format!("set_field:{set}->reg5,goto_table:{T_INGRESS}"),
            &format!("{who}: its security groups, ingress"),
        ),
        Flow::new(
            T_OUT,
            100,
            &format!("reg7={of}"),
            &format!("output:{of}"),
            &format!("{who}: output"),
        ),
    ];
    // From the other nodes of its network: the tunnel's VNI and its MAC. The sender's node ran
    // the sender's egress rules; this node runs the port's ingress rules, in the network's
    // zone (so its conntrack sees both directions of the port's connections: its replies
    // leave through here too), with `nat` so a load balancer's replies from a backend on
    // another node get the VIP back here, where the balancing was done.
    if let Some(net) = topo
        .networks
        .get(&p.network)
        .filter(|_| topo.has_remote(&p.network))
    {
        out.push(Flow::new(
            T_PORT,
            100,
            &format!("tun_id={:#x},dl_dst={mac}", net.vni),
            &format!(
                "write_metadata:{k:#x},set_field:{of}->reg7,ct(zone={},nat,table={T_INGRESS_SET})",
                net.zone
            ),
            &format!("{who}: from another node of network {}", net.name),
        ));
    }
    if s.dhcp {
        out.push(Flow::new(
            T_PORT,
            100,
            &format!("in_port={of},dl_src={mac},udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67"),
            &enter,
            &format!("{who}: port security, DHCP before it has an address"),
        ));
        let mut a = format!(
            "dhcp_reply(yiaddr={ip},netmask={},router={},lease={DHCP_LEASE_SECS},mtu={DHCP_MTU},server={},server_mac={}",
            prefix_mask(s.cidr.prefix_len()),
            s.gateway,
            s.gateway,
            fmt_mac(&s.gateway_mac)
        );
        if !s.dns.is_empty() {
            let dns: Vec<String> = s.dns.iter().map(ToString::to_string).collect();
            let _ = write!(a, ",dns={}", dns.join(";"));
        }
        a.push_str("),in_port");
        out.push(Flow::new(
            T_LOCAL,
            200,
            &format!("reg6={of},udp,tp_src=68,tp_dst=67"),
            &a,
            &format!("{who}: DHCP answered by the switch"),
        ));
    }
    out
}

/// A port on another node: answered and forwarded to like a bound one, through the tunnel to
/// its node with its network's VNI. Its ingress rules run there (the source's egress rules ran
/// here), so here the connection is committed after egress and the frame leaves.
pub(super) fn remote_port(topo: &Topology, id: &str) -> Vec<Flow> {
    let (Some(p), Some(&tun)) = (topo.ports.get(id), topo.remote.get(id)) else {
        return Vec::new();
    };
    let (Some(s), Some(net)) = (topo.subnets.get(&p.subnet), topo.networks.get(&p.network)) else {
        return Vec::new();
    };
    let (k, vni) = (s.key, net.vni);
    let mac = fmt_mac(&p.mac);
    let ip = p.ip;
    let node = p.node.as_deref().unwrap_or("?");
    let who = format!("port {} ({ip}, {mac}) on node {node}", p.name);
    let to = format!("set_field:{vni:#x}->tun_id,set_field:{tun}->reg7,goto_table:{T_EGRESS_SET}");
    let here = format!("reg7={tun},tun_id={vni:#x},dl_dst={mac}");
    vec![
        Flow::new(
            T_LOCAL,
            100,
            &format!("metadata={k:#x},arp,arp_op=1,arp_tpa={ip}"),
            &format!("arp_reply:{mac},in_port"),
            &format!("{who}: ARP answered by the switch"),
        ),
        Flow::new(
            T_FWD,
            100,
            &format!("metadata={k:#x},dl_dst={mac}"),
            &to,
            &format!("{who}: delivered on its subnet, through the tunnel to its node"),
        ),
        Flow::new(
            T_NEIGH,
            100,
            &format!("metadata={k:#x},ip,nw_dst={ip}"),
            &format!("set_field:{mac}->eth_dst,{to}"),
            &format!("{who}: routed to, through the tunnel to its node"),
        ),
        Flow::new(
            T_INGRESS_SET,
            100,
            &here,
            &format!("ct(commit,zone={}),goto_table:{T_OUT}", net.zone),
            &format!("{who}: its ingress rules run on its node"),
        ),
        Flow::new(
            T_OUT,
            100,
            &here,
            &format!("output:{tun}"),
            &format!("{who}: output to the tunnel to node {node}"),
        ),
    ]
}

/// The match of a rule's protocol and destination port range: one string per masked range.
fn proto_matches(r: &SgRule) -> Vec<String> {
    let base = match r.spec.protocol {
        Protocol::Any => "ip",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    };
    match (r.spec.protocol, r.spec.ports) {
        (Protocol::Tcp | Protocol::Udp, Some((lo, hi))) => port_masks(lo, hi)
            .into_iter()
            .map(|(v, m)| {
                if m == 0xffff {
                    format!("{base},tp_dst={v}")
                } else {
                    format!("{base},tp_dst={v:#x}/{m:#x}")
                }
            })
            .collect(),
        _ => vec![base.to_string()],
    }
}

/// Describes a rule as a person would say it.
pub(crate) fn describe(group: &str, r: &SgRule) -> String {
    let dir = match r.spec.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let proto = match r.spec.protocol {
        Protocol::Any => "any",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    };
    let ports = match r.spec.ports {
        Some((lo, hi)) if lo == hi => format!(" port {lo}"),
        Some((lo, hi)) => format!(" ports {lo}-{hi}"),
        None => String::new(),
    };
    let (word, remote) = match (&r.spec.direction, &r.spec.remote) {
        (Direction::Ingress, Remote::Any) => ("from", "anywhere".to_string()),
        (Direction::Egress, Remote::Any) => ("to", "anywhere".to_string()),
        (Direction::Ingress, Remote::Cidr(c)) => ("from", c.to_string()),
        (Direction::Egress, Remote::Cidr(c)) => ("to", c.to_string()),
        (Direction::Ingress, Remote::Group(g)) => ("from", format!("group {g}")),
        (Direction::Egress, Remote::Group(g)) => ("to", format!("group {g}")),
    };
    format!(
        "security group {group} rule {}: {dir} {proto}{ports} {word} {remote}",
        r.id
    )
}

pub(super) fn set(topo: &Topology, k: &SetKey, set: u32) -> Vec<Flow> {
    let Some(net) = topo.networks.get(&k.network) else {
        return Vec::new();
    };
    let groups: Vec<_> = k.groups.iter().filter_map(|g| topo.groups.get(g)).collect();
    let reevaluate = groups.iter().any(|g| g.reevaluate_existing);
    // The set's generation: a hash of its rules, so a connection committed under other rules
    // carries another mark.
    let mut text = String::new();
    for g in &groups {
        for r in &g.rules {
            let _ = write!(text, "{}/{}:{:?};", g.id, r.id, r.spec);
        }
    }
    let mark = (fnv(&text) as u32 & 0x7fff_ffff) | 1;
    let mut out = Vec::new();
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let who = format!("group set [{}]", names.join(", "));
    if reevaluate {
        out.push(Flow::new(
            T_INGRESS,
            300,
            &format!("reg5={set},ct_state=+est+trk,ct_mark={mark:#x}"),
            &format!("goto_table:{T_OUT}"),
            &format!("{who}: established under the current rules"),
        ));
    } else {
        out.push(Flow::new(
            T_INGRESS,
            300,
            &format!("reg5={set},ct_state=+est+trk"),
            &format!("goto_table:{T_OUT}"),
            &format!("{who}: established"),
        ));
    }
    if net.external {
        // The outside is not filtered: everything in, everything out, still tracked.
        out.push(Flow::new(
            T_EGRESS,
            200,
            &format!("reg5={set},ct_state=+new+trk,ip"),
            &format!("goto_table:{T_INGRESS_SET}"),
            &format!("{who}: external network, unfiltered"),
        ));
        out.push(Flow::new(
            T_INGRESS,
            200,
            &format!("reg5={set},ct_state=+new+trk,ip"),
            &format!("ct(commit,zone={}),goto_table:{T_OUT}", net.zone),
            &format!("{who}: external network, unfiltered"),
        ));
        return out;
    }
    let commit = format!(
        "ct(commit,zone={},exec(set_field:{mark:#x}->ct_mark)),goto_table:{T_OUT}",
        net.zone
    );
    for g in &groups {
        for r in &g.rules {
            let why = describe(&g.name, r);
            let remotes: Vec<String> = match &r.spec.remote {
                Remote::Any => vec![String::new()],
                Remote::Cidr(c) => vec![c.to_string()],
                Remote::Group(gid) => topo
                    .ports
                    .values()
                    .filter(|p| p.network == k.network && p.security_groups.contains(gid))
                    .map(|p| p.ip.to_string())
                    .collect(),
            };
            let (table, state, field, actions) = match r.spec.direction {
                Direction::Egress => (
                    T_EGRESS,
                    "+new+trk",
                    "nw_dst",
                    format!("goto_table:{T_INGRESS_SET}"),
                ),
                Direction::Ingress if reevaluate => {
                    (T_INGRESS, "-rpl+trk", "nw_src", commit.clone())
                }
                Direction::Ingress => (T_INGRESS, "+new+trk", "nw_src", commit.clone()),
            };
            for pm in proto_matches(r) {
                for remote in &remotes {
                    let mut m = format!("reg5={set},ct_state={state},{pm}");
                    if !remote.is_empty() {
                        let _ = write!(m, ",{field}={remote}");
                    }
                    out.push(Flow::new(table, 200, &m, &actions, &why));
                }
            }
        }
    }
    out
}

/// A router's external leg: its address and floating IPs answered and translated on the
/// external subnet, SNAT of its subnets out, and the way back in.
pub(super) fn router(topo: &Topology, id: &str) -> Vec<Flow> {
    let Some(r) = topo.routers.get(id) else {
        return Vec::new();
    };
    let Some(g) = &r.gateway else {
        return Vec::new();
    };
    let Some(x) = topo.subnets.get(&g.subnet) else {
        return Vec::new();
    };
    let (kx, z, rip) = (x.key, g.zone, g.ip);
    let rmac = fmt_mac(&g.mac);
    let who = format!("router {} ({rip} on {})", r.name, x.name);
    let inside: Vec<&crate::model::Subnet> = r
        .subnets
        .iter()
        .filter_map(|s| topo.subnets.get(s))
        .collect();
    let mut out = vec![
        Flow::new(
            T_LOCAL,
            100,
            &format!("metadata={kx:#x},arp,arp_op=1,arp_tpa={rip}"),
            &format!("arp_reply:{rmac},in_port"),
            &format!("{who}: its external address answers ARP"),
        ),
        Flow::new(
            T_FWD,
            200,
            &format!("metadata={kx:#x},dl_dst={rmac},ip,nw_dst={rip}"),
            &format!("set_field:{z}->reg4,ct(zone={z},nat,table={T_DNAT})"),
            &format!("{who}: replies to its SNAT, translated back"),
        ),
    ];
    for sub in &inside {
        out.push(Flow::new(
            T_SNAT,
            100,
            &format!("reg4={z},ip,nw_src={}", sub.cidr),
            &format!("ct(commit,zone={z},nat(src={rip}:1024-65535),table={T_NEIGH})"),
            &format!("{who}: SNAT of subnet {} to {rip}", sub.name),
        ));
        out.push(Flow::new(
            T_DNAT,
            100,
            &format!("reg4={z},ip,nw_dst={}", sub.cidr),
            &format!(
                "dec_ttl,set_field:{}->eth_src,write_metadata:{:#x},goto_table:{T_NEIGH}",
                fmt_mac(&sub.gateway_mac),
                sub.key
            ),
            &format!("{who}: in to subnet {}", sub.name),
        ));
    }
    for f in topo.floating_ips.values() {
        // A port's address, or a load balancer's VIP (then its listeners take it on, table 32).
        let to_port = f.port.as_ref().and_then(|p| topo.ports.get(p));
        let to_lb = f
            .load_balancer
            .as_ref()
            .and_then(|l| topo.load_balancers.get(l));
        let (pip, subnet, what) = match (to_port, to_lb) {
            (Some(p), _) => (p.ip, &p.subnet, format!("port {}", p.name)),
            (None, Some(l)) => (l.vip, &l.subnet, format!("load balancer {}", l.name)),
            (None, None) => continue,
        };
        if f.network != g.network || !r.subnets.contains(subnet) {
            continue;
        }
        let fip = f.ip;
        let why = format!("{who}: floating IP {fip} of {what}");
        out.push(Flow::new(
            T_LOCAL,
            100,
            &format!("metadata={kx:#x},arp,arp_op=1,arp_tpa={fip}"),
            &format!("arp_reply:{rmac},in_port"),
            &why,
        ));
        out.push(Flow::new(
            T_FWD,
            200,
            &format!("metadata={kx:#x},dl_dst={rmac},ip,nw_dst={fip}"),
            &format!("set_field:{z}->reg4,ct(commit,zone={z},nat(dst={pip}),table={T_DNAT})"),
            &why,
        ));
        out.push(Flow::new(
            T_SNAT,
            200,
            &format!("reg4={z},ip,nw_src={pip}"),
            &format!("ct(commit,zone={z},nat(src={fip}),table={T_NEIGH})"),
            &why,
        ));
    }
    out
}
