//! The logical pipeline: which table does what, and the flows every switch has whatever the
//! tenants ask (defaults and the stateful shortcuts).
//!
//! | table | stage | sets / reads |
//! |---|---|---|
//! | 0 | port security: a frame from a port's own MAC and IP enters its subnet | writes `metadata` = subnet key, `reg6` = source port |
//! | 10 | local answers: ARP responder, DHCP, ping of the gateway; other ARP dies here | |
//! | 20 | connection tracking in the network's zone, then table 30 | `ct_state` |
//! | 30 | L2 by destination MAC, or routing at the gateway MAC (TTL, ICMP errors) | `reg7` = destination port |
//! | 35 | after routing: the destination address to its port | `eth_dst`, `reg7` |
//! | 36 | out through a router's external leg: SNAT (or a floating IP's 1:1), then table 35 on the external subnet | `reg4` = the router's NAT zone |
//! | 33 | after a load-balancer listener's conntrack: the chosen backend to its subnet (`compile/balancers.rs`) | `reg3` = the listener's group |
//! | 32 | in through a router's external leg after conntrack undid or made the NAT: routed to the inside subnet | |
//! | 40, 41 | egress security groups of the source port | `reg5` = its group set |
//! | 50, 51 | ingress security groups of the destination port; commit | `reg5`, `ct_mark` |
//! | 60 | output to the destination port | |

/// Port security.
pub const T_PORT: u8 = 0;
/// ARP, DHCP, gateway ping.
pub const T_LOCAL: u8 = 10;
/// Conntrack.
pub const T_CT: u8 = 20;
/// L2 lookup and routing.
pub const T_FWD: u8 = 30;
/// Routed address to port.
pub const T_NEIGH: u8 = 35;
/// SNAT out of a router's external leg.
pub const T_SNAT: u8 = 36;
/// In through a router's external leg, after NAT.
pub const T_DNAT: u8 = 32;
/// Table of the pass after a load-balancer listener's conntrack: the chosen backend to its
/// subnet (`balancers.rs`).
pub const T_LB: u8 = 33;
/// Egress group set of the source port.
pub const T_EGRESS_SET: u8 = 40;
/// Egress rules.
pub const T_EGRESS: u8 = 41;
/// Ingress group set of the destination port.
pub const T_INGRESS_SET: u8 = 50;
/// Ingress rules and commit.
pub const T_INGRESS: u8 = 51;
/// Output.
pub const T_OUT: u8 = 60;

use super::Flow;

/// The flows that do not depend on any object.
pub(super) fn global() -> Vec<Flow> {
    let f = Flow::new;
    vec![
        f(
            T_PORT,
            0,
            "",
            "drop",
            "port security: not from a port's own MAC and IP",
        ),
        f(
            T_LOCAL,
            50,
            "arp",
            "drop",
            "ARP for an address no port or gateway holds (never flooded)",
        ),
        f(
            T_LOCAL,
            1,
            "ip",
            "goto_table:20",
            "IPv4 on to connection tracking",
        ),
        f(
            T_LOCAL,
            0,
            "",
            "drop",
            "neither IPv4 nor ARP (IPv6 is not routed yet)",
        ),
        f(T_CT, 0, "", "drop", "no subnet for the frame"),
        f(
            T_LB,
            0,
            "",
            "drop",
            "load balancer: the chosen backend is in no subnet",
        ),
        f(T_FWD, 0, "", "drop", "no such destination"),
        f(
            T_NEIGH,
            0,
            "",
            "drop",
            "no port holds the routed-to address",
        ),
        f(T_EGRESS_SET, 0, "", "drop", "source port has no group set"),
        f(
            T_EGRESS,
            500,
            "ct_state=+inv+trk",
            "drop",
            "conntrack: invalid packet",
        ),
        f(
            T_EGRESS,
            400,
            "ct_state=+est+trk",
            "goto_table:50",
            "conntrack: established",
        ),
        f(
            T_EGRESS,
            400,
            "ct_state=+rel+trk",
            "goto_table:50",
            "conntrack: related",
        ),
        f(
            T_EGRESS,
            0,
            "",
            "drop",
            "egress: no rule of the source port's security groups allows it",
        ),
        f(
            T_INGRESS_SET,
            0,
            "",
            "drop",
            "destination port has no group set",
        ),
        f(
            T_INGRESS,
            500,
            "ct_state=+inv+trk",
            "drop",
            "conntrack: invalid packet",
        ),
        f(
            T_INGRESS,
            400,
            "ct_state=+est+rpl+trk",
            "goto_table:60",
            "conntrack: reply of an allowed connection",
        ),
        f(
            T_INGRESS,
            400,
            "ct_state=+rel+trk",
            "goto_table:60",
            "conntrack: related to an allowed connection",
        ),
        f(
            T_INGRESS,
            0,
            "",
            "drop",
            "ingress: no rule of the destination port's security groups allows it (default deny)",
        ),
        f(T_OUT, 0, "", "drop", "no output port"),
    ]
}
