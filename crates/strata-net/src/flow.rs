//! Flow rules: a match, a priority, a table, and a list of actions.
//!
//! Actions run in order, in the style of OVS's `actions=` (OpenFlow 1.3 "apply-actions"): an
//! `output` sends the packet as it is *at that point*, later `set_field`s do not affect it.
//! `goto_table` must be the last action and must go to a higher table, so a pipeline walk visits
//! at most 255 tables and can never loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::key::{ethertype, ipproto, Field, FlowKey, Match, PortNo, VLAN_PRESENT};
use crate::respond::{icmp::error_type_ok, DhcpConfig};

/// Highest table id (tables are 0..=254, as in OpenFlow where 255 means "all").
pub const MAX_TABLE: u8 = 254;
/// Default flow priority (OpenFlow's `OFP_DEFAULT_PRIORITY`).
pub const DEFAULT_PRIORITY: u16 = 0x8000;

/// A field value written by `set_field` (and the `mod_*` aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetField {
    /// Ethernet source (numeric MAC).
    EthSrc(u64),
    /// Ethernet destination (numeric MAC).
    EthDst(u64),
    /// IPv4 source.
    NwSrc(Ipv4Addr),
    /// IPv4 destination.
    NwDst(Ipv4Addr),
    /// IPv6 source.
    Ipv6Src(Ipv6Addr),
    /// IPv6 destination.
    Ipv6Dst(Ipv6Addr),
    /// TCP/UDP source port.
    TpSrc(u16),
    /// TCP/UDP destination port.
    TpDst(u16),
    /// VLAN id of an existing tag (OpenFlow 1.3 semantics: no effect on untagged packets).
    VlanVid(u16),
    /// VLAN priority of an existing tag.
    VlanPcp(u8),
    /// Tunnel id.
    TunId(u64),
    /// Register `reg0..reg7`.
    Reg(u8, u32),
    /// Metadata (all 64 bits; use `write_metadata` for a masked write).
    Metadata(u64),
}

/// One action. An empty action list means drop.
///
/// Not `Copy`: `dhcp_reply` carries its configuration (lists, a name) in a box, so the enum
/// stays five words (the size of `ct(...)`'s inline arguments).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send to a port (never back to the input port: use [`Action::OutputInPort`] for that).
    Output(PortNo),
    /// Send back out of the input port.
    OutputInPort,
    /// Send to every port of the packet's isolation domain except the input port.
    Flood,
    /// MAC learning switch behaviour: learn the source, then forward to the learned port of the
    /// destination, or flood within the domain if unknown or multicast.
    Normal,
    /// Learn the source MAC only (our explicit name for OVS's `learn(...)` MAC-learning idiom).
    LearnMac,
    /// Write a field.
    SetField(SetField),
    /// Push an 802.1Q tag with this TPID (VID 0, PCP 0 unless a tag was present: then copied).
    PushVlan(u16),
    /// Remove the outer VLAN tag (`strip_vlan` is an alias).
    PopVlan,
    /// Set the VLAN id, pushing a tag first if the packet has none (OVS `mod_vlan_vid`).
    ModVlanVid(u16),
    /// Set the VLAN priority, pushing a tag first if the packet has none.
    ModVlanPcp(u8),
    /// Set the tunnel id (VNI) used when the packet is output to a VXLAN port.
    SetTunnel(u64),
    /// `metadata = (metadata & !mask) | (value & mask)`.
    WriteMetadata {
        /// Bits to write.
        value: u64,
        /// Which bits.
        mask: u64,
    },
    /// Continue in a higher-numbered table (must be the last action).
    GotoTable(u8),
    /// Connection tracking, OVS `ct(...)`: see [`CtAction`] and docs/net-engine.md.
    Ct(CtAction),
    /// IPv4 TTL / IPv6 hop limit minus one; a TTL of 0 or 1 drops the packet (`ttl_expired`).
    DecTtl,
    /// Turn the packet into an ICMP error sent back to its source, from `src` (a reply
    /// action: see [`Action::is_reply`]): ICMPv4 if `src` is IPv4, ICMPv6 if it is IPv6.
    IcmpError {
        /// ICMP type (v4: 3 or 11; v6: 1 or 3).
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// Source of the error (the router's address); its family is the packet's.
        src: IpAddr,
    },
    /// Turn an ICMPv4 echo request into its reply (a reply action).
    IcmpEchoReply,
    /// Turn an ARP request into the reply from this MAC (a reply action).
    ArpReply(u64),
    /// Answer a DHCP request as this server (a reply action).
    DhcpReply(Box<DhcpConfig>),
    /// Run the packet through meter N (`meter:N`, ids from 1): over its rate, the packet is
    /// dropped here and the rest of the list does not run (see `meter.rs`).
    Meter(u32),
}

impl Action {
    /// True for the actions that turn the packet into an answer to its sender. Only outputs
    /// may follow one in a rule, so no later table ever matches on an answer.
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            Action::IcmpError { .. }
                | Action::IcmpEchoReply
                | Action::ArpReply(_)
                | Action::DhcpReply(_)
        )
    }
}

/// `ct(commit,zone=N,table=T,exec(set_field:V/M->ct_mark),nat(...)|lb(id=N))`.
///
/// The packet is looked up in `zone` (and committed with `commit`). With `table`, a copy is
/// recirculated: it is classified again from table `table` with `ct_state`, `ct_zone` and
/// `ct_mark` from the verdict (and NAT applied); the current action list goes on with the key
/// as it was (OVS's fork). Without `table`, only NAT (if any) changes the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtAction {
    /// Create the connection if the packet is new (and set the mark).
    pub commit: bool,
    /// Conntrack zone.
    pub zone: u16,
    /// Recirculate to this table.
    pub table: Option<u8>,
    /// `exec(set_field:V/M->ct_mark)`: bits written into the connection's mark on commit.
    pub mark: Option<(u32, u32)>,
    /// Address translation.
    pub nat: Option<CtNat>,
}

/// NAT inside `ct` (IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtNat {
    /// `nat`: apply the connection's translation, if it has one (both directions).
    Existing,
    /// `nat(src=IP[-IP][:PORT[-PORT]])`: source translation of new connections.
    Src(NatRange),
    /// `nat(dst=IP[-IP][:PORT[-PORT]])`: destination translation of new connections.
    Dst(NatRange),
    /// `lb(id=N)`: destination translation to a backend of load-balancer group N, chosen by
    /// Maglev hashing of the connection's 5-tuple.
    Lb(u32),
}

/// Addresses and ports a NAT may use. `port_lo == 0` means "keep the port if free".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatRange {
    /// First address.
    pub ip_lo: Ipv4Addr,
    /// Last address (inclusive, `>= ip_lo`).
    pub ip_hi: Ipv4Addr,
    /// First port (0: none given).
    pub port_lo: u16,
    /// Last port (inclusive).
    pub port_hi: u16,
}

/// A flow rule as `add-flow` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRule {
    /// Table id (0..=254).
    pub table: u8,
    /// Priority; higher wins.
    pub priority: u16,
    /// Opaque controller cookie.
    pub cookie: u64,
    /// Seconds without a hit before removal (0 = never).
    pub idle_timeout: u16,
    /// Seconds after installation before removal (0 = never).
    pub hard_timeout: u16,
    /// What packets the rule matches.
    pub matches: Match,
    /// What it does (empty = drop).
    pub actions: Vec<Action>,
}

impl Default for FlowRule {
    fn default() -> Self {
        FlowRule {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            matches: Match::ANY,
            actions: Vec::new(),
        }
    }
}

/// Why a rule is not acceptable (beyond syntax).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A match field needs another field to be matched first (e.g. `nw_dst` needs `ip`).
    #[error("field `{field}` requires `{requires}` to be matched")]
    MissingPrerequisite {
        /// The field used.
        field: &'static str,
        /// What the match must also say.
        requires: &'static str,
    },
    /// `goto_table` must go to a higher table.
    #[error("goto_table:{to} from table {from}: only a higher table may follow")]
    GotoNotForward {
        /// Table of the rule.
        from: u8,
        /// Target.
        to: u8,
    },
    /// `goto_table` must be last.
    #[error("goto_table must be the last action")]
    GotoNotLast,
    /// Table id above 254.
    #[error("table {0} is out of range (0..=254)")]
    TableOutOfRange(u8),
    /// Register index above 7.
    #[error("register reg{0} does not exist (reg0..reg7)")]
    BadRegister(u8),
    /// VLAN id above 4095 or PCP above 7.
    #[error("VLAN value {0} out of range")]
    BadVlan(u16),
    /// A `ct` argument that needs `commit` (NAT to an address, `lb`, `exec`), or a NAT range
    /// whose end is before its start.
    #[error("ct: {0}")]
    BadCt(&'static str),
    /// A reply action followed by something other than `output`/`in_port`.
    #[error("{0} must be followed by outputs only")]
    ReplyNotLast(&'static str),
    /// `meter:0` (meter ids start at 1, as in OpenFlow).
    #[error("meter ids start at 1")]
    BadMeterId,
    /// A reply action's argument is not acceptable.
    #[error("bad argument for {action}: {reason}")]
    BadReplyArg {
        /// The action.
        action: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl RuleError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            RuleError::MissingPrerequisite { .. } => "missing_prerequisite",
            RuleError::GotoNotForward { .. } => "goto_not_forward",
            RuleError::GotoNotLast => "goto_not_last",
            RuleError::TableOutOfRange(_) => "table_out_of_range",
            RuleError::BadRegister(_) => "bad_register",
            RuleError::BadVlan(_) => "bad_vlan",
            RuleError::BadCt(_) => "bad_ct",
            RuleError::ReplyNotLast(_) => "reply_not_last",
            RuleError::BadReplyArg { .. } | RuleError::BadMeterId => "bad_action_argument",
        }
    }
}

fn has_eth_type(m: &Match, t: u16) -> bool {
    m.field_mask(Field::EthType) == 0xffff && m.field_value(Field::EthType) == t as u64
}

fn has_proto(m: &Match, p: u8) -> bool {
    m.field_mask(Field::NwProto) == 0xff && m.field_value(Field::NwProto) == p as u64
}

fn is_ip(m: &Match) -> bool {
    has_eth_type(m, ethertype::IPV4) || has_eth_type(m, ethertype::IPV6)
}

fn is_l4(m: &Match) -> bool {
    is_ip(m)
        && (has_proto(m, ipproto::TCP)
            || has_proto(m, ipproto::UDP)
            || has_proto(m, ipproto::ICMP)
            || has_proto(m, ipproto::ICMPV6))
}

fn is_tcp_udp(m: &Match) -> bool {
    is_ip(m) && (has_proto(m, ipproto::TCP) || has_proto(m, ipproto::UDP))
}

impl FlowRule {
    /// Checks match prerequisites (as OpenFlow/OVS define them), action prerequisites, and the
    /// goto rules. Every rule entering a pipeline passes here, whether parsed or built in code.
    pub fn validate(&self) -> Result<(), RuleError> {
        let m = &self.matches;
        if self.table > MAX_TABLE {
            return Err(RuleError::TableOutOfRange(self.table));
        }
        let pre = |f: Field, ok: bool, field, requires| {
            if m.field_mask(f) != 0 && !ok {
                Err(RuleError::MissingPrerequisite { field, requires })
            } else {
                Ok(())
            }
        };
        let v4_or_arp = has_eth_type(m, ethertype::IPV4) || has_eth_type(m, ethertype::ARP);
        pre(Field::NwSrc, v4_or_arp, "nw_src", "ip or arp")?;
        pre(Field::NwDst, v4_or_arp, "nw_dst", "ip or arp")?;
        pre(Field::NwProto, is_ip(m), "nw_proto", "ip or ipv6")?;
        pre(Field::NwTos, is_ip(m), "nw_tos", "ip or ipv6")?;
        pre(Field::NwTtl, is_ip(m), "nw_ttl", "ip or ipv6")?;
        let v6 = has_eth_type(m, ethertype::IPV6);
        for f in [
            Field::Ipv6SrcHi,
            Field::Ipv6SrcLo,
            Field::Ipv6DstHi,
            Field::Ipv6DstLo,
        ] {
            pre(f, v6, "ipv6_src/ipv6_dst", "ipv6")?;
        }
        pre(Field::TpSrc, is_l4(m), "tp_src", "tcp, udp or icmp")?;
        pre(Field::TpDst, is_l4(m), "tp_dst", "tcp, udp or icmp")?;
        let arp = has_eth_type(m, ethertype::ARP);
        pre(Field::ArpOp, arp, "arp_op", "arp")?;
        pre(Field::ArpSha, arp, "arp_sha", "arp")?;
        pre(Field::ArpTha, arp, "arp_tha", "arp")?;
        // nw_frag is never set by the parser of flow syntax, only kept for completeness.
        let tagged = m.field_mask(Field::VlanTci) as u16 & VLAN_PRESENT != 0
            && m.field_value(Field::VlanTci) as u16 & VLAN_PRESENT != 0;
        let mut reply: Option<&'static str> = None;
        for (i, a) in self.actions.iter().enumerate() {
            if let Some(r) = reply {
                if !matches!(a, Action::Output(_) | Action::OutputInPort) {
                    return Err(RuleError::ReplyNotLast(r));
                }
            }
            if a.is_reply() {
                reply = Some(validate_reply(a, m)?);
            }
            match *a {
                Action::GotoTable(t) => {
                    if i + 1 != self.actions.len() {
                        return Err(RuleError::GotoNotLast);
                    }
                    if t > MAX_TABLE {
                        return Err(RuleError::TableOutOfRange(t));
                    }
                    if t <= self.table {
                        return Err(RuleError::GotoNotForward {
                            from: self.table,
                            to: t,
                        });
                    }
                }
                Action::Ct(ct) => ct.validate()?,
                Action::Meter(0) => return Err(RuleError::BadMeterId),
                Action::ModVlanVid(v) if v > 0x0fff => return Err(RuleError::BadVlan(v)),
                Action::ModVlanPcp(p) if p > 7 => return Err(RuleError::BadVlan(p as u16)),
                Action::SetField(sf) => match sf {
                    SetField::NwSrc(_) | SetField::NwDst(_)
                        if !has_eth_type(m, ethertype::IPV4) =>
                    {
                        return Err(RuleError::MissingPrerequisite {
                            field: "set_field ip_src/ip_dst",
                            requires: "ip",
                        })
                    }
                    SetField::Ipv6Src(_) | SetField::Ipv6Dst(_) if !v6 => {
                        return Err(RuleError::MissingPrerequisite {
                            field: "set_field ipv6_src/ipv6_dst",
                            requires: "ipv6",
                        })
                    }
                    SetField::TpSrc(_) | SetField::TpDst(_) if !is_tcp_udp(m) => {
                        return Err(RuleError::MissingPrerequisite {
                            field: "set_field tp_src/tp_dst",
                            requires: "tcp or udp",
                        })
                    }
                    SetField::VlanVid(_) | SetField::VlanPcp(_) if !tagged => {
                        return Err(RuleError::MissingPrerequisite {
                            field: "set_field vlan_vid/vlan_pcp",
                            requires: "a VLAN tag (dl_vlan or vlan_tci with 0x1000)",
                        })
                    }
                    SetField::VlanVid(v) if v > 0x0fff => return Err(RuleError::BadVlan(v)),
                    SetField::VlanPcp(p) if p > 7 => return Err(RuleError::BadVlan(p as u16)),
                    SetField::Reg(r, _) if r > 7 => return Err(RuleError::BadRegister(r)),
                    _ => {}
                },
                Action::DecTtl if !is_ip(m) => {
                    return Err(RuleError::MissingPrerequisite {
                        field: "dec_ttl",
                        requires: "ip or ipv6",
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl CtAction {
    fn validate(&self) -> Result<(), RuleError> {
        if let Some(t) = self.table {
            if t > MAX_TABLE {
                return Err(RuleError::TableOutOfRange(t));
            }
        }
        if !self.commit && self.mark.is_some() {
            return Err(RuleError::BadCt("exec(...) needs commit"));
        }
        match self.nat {
            Some(CtNat::Src(r) | CtNat::Dst(r)) => {
                if !self.commit {
                    return Err(RuleError::BadCt("nat(src=|dst=) needs commit"));
                }
                if r.ip_hi < r.ip_lo
                    || r.port_hi < r.port_lo
                    || (r.port_lo == 0) != (r.port_hi == 0)
                {
                    return Err(RuleError::BadCt("NAT range ends before it starts"));
                }
            }
            Some(CtNat::Lb(_)) if !self.commit => {
                return Err(RuleError::BadCt("lb(...) needs commit"))
            }
            _ => {}
        }
        Ok(())
    }
}

fn has_exact(m: &Match, f: Field, v: u64) -> bool {
    m.field_mask(f) == f.full() && m.field_value(f) == v
}

/// Prerequisites and arguments of a reply action; returns its name.
fn validate_reply(a: &Action, m: &Match) -> Result<&'static str, RuleError> {
    let v4 = has_eth_type(m, ethertype::IPV4);
    let (name, ok, requires) = match a {
        Action::IcmpError {
            icmp_type,
            code,
            src,
        } => {
            let v6 = src.is_ipv6();
            if !error_type_ok(v6, *icmp_type, *code) {
                return Err(RuleError::BadReplyArg {
                    action: "icmp_error",
                    reason: "type/code must be 11/0-1 or 3/0-15 except 3/4 (IPv6: 3/0-1, 1/0-6)",
                });
            }
            if v6 {
                ("icmp_error", has_eth_type(m, ethertype::IPV6), "ipv6")
            } else {
                ("icmp_error", v4, "ip")
            }
        }
        Action::IcmpEchoReply => (
            "icmp_echo_reply",
            v4 && has_proto(m, ipproto::ICMP) && has_exact(m, Field::TpSrc, 8),
            "icmp,icmp_type=8",
        ),
        Action::ArpReply(mac) => {
            if mac & 0x0100_0000_0000 != 0 || *mac == 0 || mac >> 48 != 0 {
                return Err(RuleError::BadReplyArg {
                    action: "arp_reply",
                    reason: "not a unicast MAC",
                });
            }
            let arp = has_eth_type(m, ethertype::ARP) && has_exact(m, Field::ArpOp, 1);
            ("arp_reply", arp, "arp,arp_op=1")
        }
        Action::DhcpReply(c) => {
            c.check().map_err(|reason| RuleError::BadReplyArg {
                action: "dhcp_reply",
                reason,
            })?;
            let udp = v4 && has_proto(m, ipproto::UDP) && has_exact(m, Field::TpDst, 67);
            ("dhcp_reply", udp, "udp,tp_dst=67")
        }
        _ => return Ok("?"),
    };
    if !ok {
        return Err(RuleError::MissingPrerequisite {
            field: name,
            requires,
        });
    }
    Ok(name)
}

/// Applies the key-changing part of an action to `key`, returning the field(s) it wrote as a
/// mask (for wildcard tracking: a written field's original value is consulted).
///
/// This single function is used both by translation (slow path, deciding later table lookups)
/// and by execution (per packet), so both always agree.
pub fn apply_to_key(a: &Action, key: &mut FlowKey) -> Option<Field> {
    match *a {
        Action::SetField(sf) => Some(match sf {
            SetField::EthSrc(v) => set(key, Field::EthSrc, v),
            SetField::EthDst(v) => set(key, Field::EthDst, v),
            SetField::NwSrc(a) => set(key, Field::NwSrc, u32::from(a) as u64),
            SetField::NwDst(a) => set(key, Field::NwDst, u32::from(a) as u64),
            SetField::Ipv6Src(a) => {
                key.set_ipv6_src(a);
                Field::Ipv6SrcHi
            }
            SetField::Ipv6Dst(a) => {
                key.set_ipv6_dst(a);
                Field::Ipv6DstHi
            }
            SetField::TpSrc(p) => set(key, Field::TpSrc, p as u64),
            SetField::TpDst(p) => set(key, Field::TpDst, p as u64),
            SetField::VlanVid(v) => {
                let tci = key.vlan_tci();
                if tci & VLAN_PRESENT != 0 {
                    key.set(Field::VlanTci, ((tci & !0x0fff) | (v & 0x0fff)) as u64);
                }
                Field::VlanTci
            }
            SetField::VlanPcp(p) => {
                let tci = key.vlan_tci();
                if tci & VLAN_PRESENT != 0 {
                    key.set(
                        Field::VlanTci,
                        ((tci & 0x1fff) | ((p as u16 & 7) << 13)) as u64,
                    );
                }
                Field::VlanTci
            }
            SetField::TunId(v) => set(key, Field::TunId, v),
            SetField::Reg(r, v) => set(key, Field::Reg(r & 7), v as u64),
            SetField::Metadata(v) => set(key, Field::Metadata, v),
        }),
        Action::PushVlan(_) => {
            let tci = key.vlan_tci();
            // OpenFlow: a pushed tag copies VID/PCP of an existing tag, else zero.
            key.set(Field::VlanTci, (tci | VLAN_PRESENT) as u64);
            Some(Field::VlanTci)
        }
        Action::PopVlan => {
            key.set(Field::VlanTci, 0);
            Some(Field::VlanTci)
        }
        Action::ModVlanVid(v) => {
            let tci = key.vlan_tci();
            key.set(
                Field::VlanTci,
                ((tci & 0xe000) | VLAN_PRESENT | (v & 0x0fff)) as u64,
            );
            Some(Field::VlanTci)
        }
        Action::ModVlanPcp(p) => {
            let tci = key.vlan_tci();
            key.set(
                Field::VlanTci,
                ((tci & 0x0fff) | VLAN_PRESENT | ((p as u16 & 7) << 13)) as u64,
            );
            Some(Field::VlanTci)
        }
        Action::SetTunnel(v) => Some(set(key, Field::TunId, v)),
        Action::DecTtl => {
            // Translation models the forwarded packet; execution drops a TTL of 0 or 1.
            let t = key.nw_ttl();
            key.set(Field::NwTtl, t.saturating_sub(1) as u64);
            Some(Field::NwTtl)
        }
        Action::WriteMetadata { value, mask } => {
            key.set_masked(Field::Metadata, value, mask);
            Some(Field::Metadata)
        }
        _ => None,
    }
}

fn set(key: &mut FlowKey, f: Field, v: u64) -> Field {
    key.set(f, v);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goto_must_be_forward_and_last() {
        let mut r = FlowRule {
            table: 3,
            actions: vec![Action::GotoTable(2)],
            ..Default::default()
        };
        assert_eq!(
            r.validate(),
            Err(RuleError::GotoNotForward { from: 3, to: 2 })
        );
        r.actions = vec![Action::GotoTable(4), Action::Flood];
        assert_eq!(r.validate(), Err(RuleError::GotoNotLast));
        r.actions = vec![Action::Flood, Action::GotoTable(4)];
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn an_action_stays_five_words() {
        // Translations hold action lists on the fast path: dhcp_reply's box keeps them small.
        // `ct(...)` keeps its arguments inline (zone, table, mark, a NAT range: 36 bytes), as
        // a box would cost a pointer chase per tracked packet; five words is the bound.
        assert!(
            std::mem::size_of::<Action>() <= 40,
            "{}",
            std::mem::size_of::<Action>()
        );
    }

    #[test]
    fn mod_vlan_vid_pushes_when_untagged() {
        let mut k = FlowKey::ZERO;
        apply_to_key(&Action::ModVlanVid(20), &mut k);
        assert_eq!(k.vlan_vid(), Some(20));
        apply_to_key(&Action::PopVlan, &mut k);
        assert_eq!(k.vlan_vid(), None);
        // set_field on vlan_vid does nothing without a tag (OpenFlow 1.3).
        apply_to_key(&Action::SetField(SetField::VlanVid(5)), &mut k);
        assert_eq!(k.vlan_vid(), None);
    }
}
