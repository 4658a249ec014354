//! Drop reasons as counters: every place the switch can lose a packet has a [`DropCode`] with a
//! stable name, counted per port in [`DropCounts`] (`strata network stats` shows them).
//!
//! Invariants (checked by `tests/it/meters.rs` and the switch's unit tests):
//! - A received frame that produces no output counts exactly one reason on its input port:
//!   so the input-side reasons of a port sum to its `rx_dropped + rx_errors`. When several
//!   things went wrong, the last one met wins (a refused output, a meter, a ct refusal, a
//!   responder refusal), then a table miss, then `drop_action`.
//! - An output refused at a port counts on that port (`tx_isolation`, `tx_too_big`), and these
//!   sum to its `tx_dropped`. The port layer adds its own (`tx_error`: queue full or device
//!   gone) beside them.
//! - A packet that was output somewhere and then dropped by a later action (a meter after an
//!   `output`) is not a port drop: the meter's own counters have it.
//!
//! Port security and security groups are drop flows: they count as `drop_action` here and the
//! control plane tells them apart by the flow's cookie and counters.

use crate::respond::ReplyDrop;

/// Why a packet (or one copy of it) died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCode {
    /// The frame did not parse (input port).
    ParseError,
    /// VXLAN decapsulation failed, or a VNI given on a port that is no tunnel.
    TunnelError,
    /// Refused at ingress for its VLAN/VNI, or every output it was sent to crossed domains.
    Isolation,
    /// A table had no matching rule.
    TableMiss,
    /// The rules that matched output nothing (`drop`, an empty action list, port security).
    DropAction,
    /// `flood` or `normal` found no other port in the packet's domain.
    NoFloodTarget,
    /// Output to a port number that does not exist.
    OutputToUnknownPort,
    /// `ct(commit)`: the conntrack table or the zone is full.
    CtCommitRefused,
    /// `ct(commit,nat(...))`: no free address and port.
    NatExhausted,
    /// `ct(commit,lb(...))`: no such group or no backend up.
    LbNoBackend,
    /// A recirculation not made: the packet had taken [`crate::switch::MAX_RECIRC`] passes.
    RecircLimit,
    /// `dec_ttl` or a responder refused the packet.
    Reply(ReplyDrop),
    /// Over its meter's rate (`meter:N`).
    Meter,
    /// `meter:N` names no meter.
    MeterMissing,
    /// An output refused at this port for crossing domains (output side).
    TxIsolation,
    /// An output to a tunnel too large for an outer IPv4 packet (output side).
    TxTooBig,
}

/// Number of distinct codes (the reply reasons counted one by one).
pub const N_DROP_CODES: usize = 15 + ReplyDrop::ALL.len();

impl DropCode {
    /// Every code, in counter order.
    pub const ALL: [DropCode; N_DROP_CODES] = [
        DropCode::ParseError,
        DropCode::TunnelError,
        DropCode::Isolation,
        DropCode::TableMiss,
        DropCode::DropAction,
        DropCode::NoFloodTarget,
        DropCode::OutputToUnknownPort,
        DropCode::CtCommitRefused,
        DropCode::NatExhausted,
        DropCode::LbNoBackend,
        DropCode::RecircLimit,
        DropCode::Reply(ReplyDrop::TtlExpired),
        DropCode::Reply(ReplyDrop::IcmpErrorRefused),
        DropCode::Reply(ReplyDrop::EchoRefused),
        DropCode::Reply(ReplyDrop::ArpRefused),
        DropCode::Reply(ReplyDrop::DhcpMalformed),
        DropCode::Reply(ReplyDrop::DhcpNotForUs),
        DropCode::Reply(ReplyDrop::DhcpNoReply),
        DropCode::Reply(ReplyDrop::DhcpUnexpected),
        DropCode::Meter,
        DropCode::MeterMissing,
        DropCode::TxIsolation,
        DropCode::TxTooBig,
    ];

    /// Stable name.
    pub fn code(&self) -> &'static str {
        match self {
            DropCode::ParseError => "parse_error",
            DropCode::TunnelError => "tunnel_error",
            DropCode::Isolation => "isolation",
            DropCode::TableMiss => "table_miss",
            DropCode::DropAction => "drop_action",
            DropCode::NoFloodTarget => "no_flood_target",
            DropCode::OutputToUnknownPort => "output_to_unknown_port",
            DropCode::CtCommitRefused => "ct_commit_refused",
            DropCode::NatExhausted => "nat_exhausted",
            DropCode::LbNoBackend => "lb_no_backend",
            DropCode::RecircLimit => "recirc_limit",
            DropCode::Reply(r) => r.code(),
            DropCode::Meter => "meter",
            DropCode::MeterMissing => "meter_missing",
            DropCode::TxIsolation => "tx_isolation",
            DropCode::TxTooBig => "tx_too_big",
        }
    }

    /// True for the reasons counted on the output port.
    pub fn is_tx(&self) -> bool {
        matches!(self, DropCode::TxIsolation | DropCode::TxTooBig)
    }

    fn index(&self) -> usize {
        let n_reply = ReplyDrop::ALL.len();
        match self {
            DropCode::ParseError => 0,
            DropCode::TunnelError => 1,
            DropCode::Isolation => 2,
            DropCode::TableMiss => 3,
            DropCode::DropAction => 4,
            DropCode::NoFloodTarget => 5,
            DropCode::OutputToUnknownPort => 6,
            DropCode::CtCommitRefused => 7,
            DropCode::NatExhausted => 8,
            DropCode::LbNoBackend => 9,
            DropCode::RecircLimit => 10,
            DropCode::Reply(r) => 11 + *r as usize,
            DropCode::Meter => 11 + n_reply,
            DropCode::MeterMissing => 12 + n_reply,
            DropCode::TxIsolation => 13 + n_reply,
            DropCode::TxTooBig => 14 + n_reply,
        }
    }
}

/// One counter per [`DropCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounts([u64; N_DROP_CODES]);

impl Default for DropCounts {
    fn default() -> Self {
        DropCounts([0; N_DROP_CODES])
    }
}

impl DropCounts {
    /// Counts one drop.
    pub fn count(&mut self, c: DropCode) {
        self.0[c.index()] += 1;
    }
    /// Drops of one reason.
    pub fn get(&self, c: DropCode) -> u64 {
        self.0[c.index()]
    }
    /// The reasons that counted something, with their counts, in [`DropCode::ALL`] order.
    pub fn nonzero(&self) -> Vec<(DropCode, u64)> {
        DropCode::ALL
            .iter()
            .map(|c| (*c, self.get(*c)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
    /// Sum of the input-side reasons.
    pub fn rx_total(&self) -> u64 {
        DropCode::ALL
            .iter()
            .filter(|c| !c.is_tx())
            .map(|c| self.get(*c))
            .sum()
    }
    /// Sum of the output-side reasons.
    pub fn tx_total(&self) -> u64 {
        DropCode::ALL
            .iter()
            .filter(|c| c.is_tx())
            .map(|c| self.get(*c))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_indexed_in_order() {
        for (i, c) in DropCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
            let same = DropCode::ALL
                .iter()
                .filter(|d| d.code() == c.code())
                .count();
            assert_eq!(same, 1, "{}", c.code());
        }
        let mut d = DropCounts::default();
        d.count(DropCode::Meter);
        d.count(DropCode::Meter);
        d.count(DropCode::TxIsolation);
        assert_eq!(
            d.nonzero(),
            vec![(DropCode::Meter, 2), (DropCode::TxIsolation, 1)]
        );
        assert_eq!((d.rx_total(), d.tx_total()), (2, 1));
    }
}
