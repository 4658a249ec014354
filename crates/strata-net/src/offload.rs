//! What the engine tells a port layer that can forward packets without it (the veth fast
//! path of `strata-dataplane`, docs/net-engine.md "Fast path"), and how the counts of the
//! packets it forwarded come back.
//!
//! The engine only states facts: [`Offload`] says that the packet just processed took a path
//! that is a pure function of its key, of the switch's state at [`crate::Switch::generation`]
//! and of the connections it names being established — one explicit output (or `normal` to a
//! learned address, possibly a VXLAN port: then [`Offload::encap`] is the encapsulation),
//! rewrites only, no meter, responder, flood or refusal, no rule
//! whose idle timeout the engine must see, and `ct` steps only where they found an
//! established TCP or UDP connection and changed nothing of it (recirculations included: the
//! hint covers every pass) — so every later packet with the same key gets the same frame out
//! of the same port until the generation moves. Whether the port layer can carry such a
//! result (which ports, protocols and rewrites) is its own decision.
//!
//! [`OffloadCredit`] brings back what the port layer forwarded, so rule, port and MAC state
//! stay as if the engine had seen every packet ([`crate::Switch::credit_offloaded`]).
//!
//! Invariant: this file imports only the vocabulary (`key`, `types`, `conntrack::types`),
//! like `types.rs`.

use std::time::Duration;

use crate::conntrack::types::{CtId, Dir};
use crate::key::{FlowKey, PortNo};
use crate::types::{Domain, Encap, RuleId};

/// A connection an offloaded result depends on: a `ct` step of it found this connection
/// established, in this direction. The result holds while the connection lives with its mark
/// and TCP state ([`crate::conntrack::Conntrack::offload_changes`] moves the generation
/// otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtUse {
    /// Zone of the `ct` step.
    pub zone: u16,
    /// The connection.
    pub id: CtId,
    /// The packet's direction in it.
    pub dir: Dir,
}

/// A result the engine would give every packet with this key until the generation changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offload {
    /// Input port.
    pub in_port: PortNo,
    /// The packet's key as parsed from the frame (before ingress set `tun_id`).
    pub key: FlowKey,
    /// TPID of the received frame's VLAN tag (0 if untagged).
    pub in_tpid: u16,
    /// The one output port.
    pub out_port: PortNo,
    /// Key of the frame as it left (after the actions and the port's VLAN adaptation).
    pub out_key: FlowKey,
    /// TPID of the tag the frame left with (meaningful when `out_key` has a tag).
    pub out_tpid: u16,
    /// The encapsulation when the output is a VXLAN port: VNI, inner flow hash and tunnel,
    /// as the port layer was given them with the frame (so a port layer that carries the
    /// flow itself writes the same outer headers, source port included).
    pub encap: Option<Encap>,
    /// Rules hit, in table order (each counts every packet).
    pub rules: Vec<RuleId>,
    /// The source MAC the packet taught the MAC table (`normal`, `learn_mac`), with its
    /// domain: later packets would keep teaching it.
    pub learn: Option<(Option<Domain>, u64)>,
    /// The connections its `ct` steps found established, in the order they ran (empty
    /// without `ct`). Each later packet is to be counted on them
    /// ([`OffloadCredit::ct`]).
    pub ct: Vec<CtUse>,
    /// [`crate::Switch::generation`] when the packet was processed.
    pub generation: u64,
}

/// Packets a port layer forwarded by an [`Offload`], to be counted as if the switch had.
#[derive(Debug, Clone, Copy)]
pub struct OffloadCredit<'a> {
    /// Input port (its `rx_packets`, `rx_bytes`).
    pub in_port: PortNo,
    /// Output port (its `tx_packets`, `tx_bytes`).
    pub out_port: PortNo,
    /// Rules to count the packets on.
    pub rules: &'a [RuleId],
    /// Packets.
    pub packets: u64,
    /// Their bytes as received (the frame the switch would have been given).
    pub rx_bytes: u64,
    /// Their bytes as sent.
    pub tx_bytes: u64,
    /// The source MAC to keep learned on `in_port`.
    pub learn: Option<(Option<Domain>, u64)>,
    /// The connections to count the packets on ([`Offload::ct`]).
    pub ct: &'a [CtUse],
    /// Their IP bytes (the frames without their Ethernet header and VLAN tag), as the
    /// tracker counts them.
    pub ip_bytes: u64,
    /// Switch time of the last of these packets.
    pub last_used: Duration,
}
