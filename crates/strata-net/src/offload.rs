//! What the engine tells a port layer that can forward packets without it (the veth fast
//! path of `strata-dataplane`, docs/net-engine.md "Fast path"), and how the counts of the
//! packets it forwarded come back.
//!
//! The engine only states facts: [`Offload`] says that the packet just processed took a path
//! that is a pure function of its key and of the switch's state at
//! [`crate::Switch::generation`] — one pass, one explicit output (or `normal` to a learned
//! address), rewrites only, no meter, conntrack, responder, flood, tunnel or refusal, and no
//! rule whose idle timeout the engine must see — so every later packet with the same key gets
//! the same frame out of the same port until the generation moves. Whether the port layer can
//! carry such a result (which ports, protocols and rewrites) is its own decision.
//!
//! [`OffloadCredit`] brings back what the port layer forwarded, so rule, port and MAC state
//! stay as if the engine had seen every packet ([`crate::Switch::credit_offloaded`]).
//!
//! Invariant: this file imports only the vocabulary (`key`, `types`), like `types.rs`.

use std::time::Duration;

use crate::key::{FlowKey, PortNo};
use crate::types::{Domain, RuleId};

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
    /// Rules hit, in table order (each counts every packet).
    pub rules: Vec<RuleId>,
    /// The source MAC the packet taught the MAC table (`normal`, `learn_mac`), with its
    /// domain: later packets would keep teaching it.
    pub learn: Option<(Option<Domain>, u64)>,
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
    /// Switch time of the last of these packets.
    pub last_used: Duration,
}
