//! Responders: the actions that turn a packet into the answer to it, so that a controller can
//! answer ARP, ping, DHCP and the ICMP errors of a router from flows, with nothing flooded and
//! nothing sent to a controller process. Also `dec_ttl`, the router's hop.
//!
//! Two kinds, by what they change:
//! - **Key rewrites** (`dec_ttl`, `arp_reply`, `icmp_echo_reply`): the answer has the layout of
//!   the question, so the action only changes the [`FlowKey`] and the switch's frame rewriting
//!   (`switch::materialize`) writes the bytes, with incremental checksums. No copy of the
//!   payload, and a split (large) frame stays split.
//! - **Frame builders** (`icmp_error`, `dhcp_reply`): the answer is a new packet, written into a
//!   buffer the switch owns and reuses (no allocation per packet once it has grown).
//!
//! Invariants:
//! - Pure: bytes and keys in, bytes or a key out; no I/O, no clock, no state.
//! - Never panics on any input: every read is bounds-checked (the DHCP parser is fuzzed,
//!   `fuzz/fuzz_targets/net_dhcp.rs`).
//! - A responder that refuses a packet returns a [`ReplyDrop`]; the switch drops the packet,
//!   runs none of the following actions and counts the reason in [`ReplyStats`].
//! - Execution and `trace` call the same functions, so a trace shows what the switch does.

pub mod arp;
pub mod dhcp;
pub mod icmp;

pub use dhcp::DhcpConfig;

use crate::key::{Field, FlowKey};

/// Why `dec_ttl` or a responder dropped a packet (a drop reason with its own counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyDrop {
    /// `dec_ttl` on a packet whose TTL (hop limit) was 0 or 1.
    TtlExpired,
    /// `icmp_error` refused: the packet is an ICMP error, a later fragment, was sent to a
    /// broadcast or multicast address, or its source is not one host (RFC 1122 3.2.2).
    IcmpErrorRefused,
    /// `icmp_echo_reply` refused: not an unfragmented ICMPv4 echo request to a unicast address.
    EchoRefused,
    /// `arp_reply` refused: not an Ethernet/IPv4 ARP request from a unicast sender.
    ArpRefused,
    /// `dhcp_reply` on something that is not a well-formed DHCP request.
    DhcpMalformed,
    /// A DHCPREQUEST naming another server (the client chose someone else's offer).
    DhcpNotForUs,
    /// DHCPRELEASE or DHCPDECLINE: understood, nothing to send (the binding is static).
    DhcpNoReply,
    /// A DHCP message type a server never answers (OFFER, ACK, NAK, unknown, none).
    DhcpUnexpected,
}

impl ReplyDrop {
    /// Every reason, in counter order.
    pub const ALL: [ReplyDrop; 8] = [
        ReplyDrop::TtlExpired,
        ReplyDrop::IcmpErrorRefused,
        ReplyDrop::EchoRefused,
        ReplyDrop::ArpRefused,
        ReplyDrop::DhcpMalformed,
        ReplyDrop::DhcpNotForUs,
        ReplyDrop::DhcpNoReply,
        ReplyDrop::DhcpUnexpected,
    ];

    /// Stable name, as `strata network stats` shows it.
    pub fn code(&self) -> &'static str {
        match self {
            ReplyDrop::TtlExpired => "ttl_expired",
            ReplyDrop::IcmpErrorRefused => "icmp_error_refused",
            ReplyDrop::EchoRefused => "echo_refused",
            ReplyDrop::ArpRefused => "arp_refused",
            ReplyDrop::DhcpMalformed => "dhcp_malformed",
            ReplyDrop::DhcpNotForUs => "dhcp_not_for_us",
            ReplyDrop::DhcpNoReply => "dhcp_no_reply",
            ReplyDrop::DhcpUnexpected => "dhcp_unexpected",
        }
    }
}

/// What a responder made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// An ARP reply.
    Arp,
    /// An ICMP echo reply.
    Echo,
    /// An ICMP error.
    IcmpError,
    /// A DHCPOFFER.
    DhcpOffer,
    /// A DHCPACK (to a REQUEST or an INFORM).
    DhcpAck,
    /// A DHCPNAK.
    DhcpNak,
}

/// Counters of the responders: one per drop reason, one per kind of answer made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyStats {
    /// Drops, indexed like [`ReplyDrop::ALL`] (read them with [`ReplyStats::drops`]).
    pub drop_counts: [u64; 8],
    /// ARP replies made.
    pub arp_replies: u64,
    /// ICMP echo replies made.
    pub echo_replies: u64,
    /// ICMP errors made.
    pub icmp_errors: u64,
    /// DHCPOFFERs made.
    pub dhcp_offers: u64,
    /// DHCPACKs made.
    pub dhcp_acks: u64,
    /// DHCPNAKs made.
    pub dhcp_naks: u64,
}

impl ReplyStats {
    /// Counts a drop.
    pub fn count_drop(&mut self, d: ReplyDrop) {
        self.drop_counts[d as usize] += 1;
    }
    /// Counts an answer made.
    pub fn count_reply(&mut self, k: ReplyKind) {
        let c = match k {
            ReplyKind::Arp => &mut self.arp_replies,
            ReplyKind::Echo => &mut self.echo_replies,
            ReplyKind::IcmpError => &mut self.icmp_errors,
            ReplyKind::DhcpOffer => &mut self.dhcp_offers,
            ReplyKind::DhcpAck => &mut self.dhcp_acks,
            ReplyKind::DhcpNak => &mut self.dhcp_naks,
        };
        *c += 1;
    }
    /// Drops of one reason.
    pub fn dropped(&self, d: ReplyDrop) -> u64 {
        self.drop_counts[d as usize]
    }
    /// Every drop reason with its count, in [`ReplyDrop::ALL`] order.
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ReplyDrop::ALL
            .iter()
            .map(|d| (d.code(), self.drop_counts[*d as usize]))
    }
}

/// `dec_ttl`: TTL (IPv4) or hop limit (IPv6) minus one. A TTL of 0 or 1 cannot be forwarded:
/// the packet is dropped (`ttl_expired`); flows are expected to catch it first with a
/// higher-priority `nw_ttl=1` / `nw_ttl=0` rule that answers `icmp_error(type=11,...)`.
pub fn dec_ttl(k: &mut FlowKey) -> Result<(), ReplyDrop> {
    let ttl = k.nw_ttl();
    if ttl <= 1 {
        return Err(ReplyDrop::TtlExpired);
    }
    k.set(Field::NwTtl, (ttl - 1) as u64);
    Ok(())
}

/// True for a group (multicast or broadcast) Ethernet address.
pub(crate) fn mac_is_group(mac: u64) -> bool {
    mac & 0x0100_0000_0000 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dec_ttl_decrements_and_refuses_one_and_zero() {
        let mut k = FlowKey::ZERO;
        k.set(Field::NwTtl, 2);
        assert_eq!(dec_ttl(&mut k), Ok(()));
        assert_eq!(k.nw_ttl(), 1);
        assert_eq!(dec_ttl(&mut k), Err(ReplyDrop::TtlExpired));
        assert_eq!(k.nw_ttl(), 1, "a refused packet keeps its key");
        k.set(Field::NwTtl, 0);
        assert_eq!(dec_ttl(&mut k), Err(ReplyDrop::TtlExpired));
    }

    #[test]
    fn drop_codes_are_unique_and_indexed_in_order() {
        let mut s = ReplyStats::default();
        for (i, d) in ReplyDrop::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
            for _ in 0..=i {
                s.count_drop(*d);
            }
        }
        let v: Vec<(&str, u64)> = s.drops().collect();
        for (i, (code, n)) in v.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1);
            assert_eq!(v.iter().filter(|(c, _)| c == code).count(), 1);
        }
    }
}
