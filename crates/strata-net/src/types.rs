//! The crate's vocabulary: ids, domains, translations, filters, and what crosses the boundary
//! between the engine and the port layer ([`Ingress`] in, [`Encap`] out).
//!
//! Invariant: this file imports only the leaf modules `key`, `flow` and `vxlan` (which import
//! no other engine file but `csum` and `packet`), so every other file may import it without an
//! import loop. Types are re-exported where they were first defined (`pipeline::RuleId`,
//! `switch::Domain`, ...) so paths stay stable.

use std::time::Duration;

use crate::flow::Action;
use crate::key::{FlowKey, Match, PortNo};
use crate::vxlan::VxlanTunnel;

/// A tenant isolation domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// A VLAN (802.1Q VLAN id).
    Vlan(u16),
    /// A VXLAN network (VNI).
    Vni(u32),
}

/// Handle of an installed rule (slot plus generation, so a stale handle never aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl RuleId {
    #[cfg(test)]
    pub(crate) fn new_for_test(n: u32) -> Self {
        RuleId { slot: n, gen: 0 }
    }
}

/// One table visited during translation.
#[derive(Debug, Clone)]
pub struct Visit {
    /// The table.
    pub table: u8,
    /// The key as the table saw it (after earlier tables' actions).
    pub key_in: FlowKey,
    /// The winning rule, or `None` for a table miss.
    pub hit: Option<ClsEntry>,
}

/// What the pipeline decided for a key.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Actions to execute in order (no `GotoTable`).
    pub ops: Vec<Action>,
    /// Rules hit, in table order (their counters advance per packet).
    pub hits: Vec<RuleId>,
    /// Key bits consulted (the megaflow mask).
    pub mask: FlowKey,
    /// Tables visited.
    pub visits: Vec<Visit>,
}

/// A rule as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClsEntry {
    /// The rule.
    pub id: RuleId,
    /// Its priority.
    pub priority: u16,
    /// Installation sequence number (lower = earlier).
    pub seq: u64,
}

impl ClsEntry {
    /// True if `self` wins over `other`.
    #[inline]
    pub fn beats(&self, other: &ClsEntry) -> bool {
        self.priority > other.priority || (self.priority == other.priority && self.seq < other.seq)
    }
}

/// A `del-flows`/`dump-flows` filter: table, match, optional priority (strict) and cookie.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowFilter {
    /// Only this table (None = all).
    pub table: Option<u8>,
    /// Non-strict: rules whose match is covered by this one. Strict: exactly this match.
    pub matches: Match,
    /// Strict mode: the priority that must be equal.
    pub priority: Option<u16>,
    /// Only rules with this cookie.
    pub cookie: Option<u64>,
}

/// Per-flow counters as dump-flows shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Packets that hit the flow.
    pub n_packets: u64,
    /// Bytes of those packets.
    pub n_bytes: u64,
    /// Time since installation.
    pub duration: Duration,
}

/// Where a frame entered the switch, and what the port layer already learnt from its device.
///
/// This is the single ingress of [`crate::Switch::receive`]. `vni` is `None` for a frame as
/// the device gave it: an Ethernet frame on a TAP, or a whole outer Ethernet/IPv4/UDP/VXLAN
/// frame on a VXLAN port over a raw or TAP underlay (the switch decapsulates it). `vni` is
/// `Some` for an inner frame that the port layer decapsulated itself (a datagram read from the
/// VXLAN UDP socket); that is only valid on a VXLAN port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingress {
    /// The input port.
    pub port: PortNo,
    /// The VNI the port layer read from the VXLAN header, if it stripped the outer headers.
    pub vni: Option<u32>,
}

impl Ingress {
    /// A frame as read from the device of `port`.
    pub fn port(port: PortNo) -> Self {
        Ingress { port, vni: None }
    }
    /// An inner frame received on VXLAN port `port` with `vni` (outer headers already gone).
    pub fn vxlan(port: PortNo, vni: u32) -> Self {
        Ingress {
            port,
            vni: Some(vni),
        }
    }
}

impl From<PortNo> for Ingress {
    fn from(port: PortNo) -> Self {
        Ingress::port(port)
    }
}

/// The encapsulation an output to a VXLAN port asks for. The engine emits the inner frame and
/// this intent; the port layer writes the outer headers (it is their one owner), and derives
/// the outer UDP source port from `flow_hash` within its configured range (RFC 7348 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// VNI to carry.
    pub vni: u32,
    /// Hash of the inner flow (MACs, EtherType, IP addresses, protocol, ports): equal for
    /// every frame of one flow, so the flow keeps one underlay path.
    pub flow_hash: u64,
    /// The tunnel of the output port (addresses, UDP destination port, DF, TTL).
    pub tunnel: VxlanTunnel,
}
