//! Flow rules in the syntax of `ovs-ofctl` (add-flow, dump-flows, trace packet descriptions).
//!
//! ```text
//! table=0,priority=100,ip,nw_dst=10.0.0.0/24,actions=output:tap1
//! priority=10,in_port=1,dl_vlan=10,actions=strip_vlan,goto_table:1
//! tcp,tp_dst=80,actions=set_field:10.0.0.5->nw_dst,output:2
//! ```
//!
//! Fields are separated by commas or whitespace; everything after `actions=` is the action
//! list (comma separated; commas inside an action's parentheses, as in
//! `icmp_error(type=11,code=0,src=10.0.0.1)`, belong to that action). Port references are numbers or names resolved through a
//! [`PortNames`] table given by the caller. [`format_flow`] prints a rule back so that
//! `parse_flow(format_flow(r)) == r`; [`format_flow_stats`] prints the `dump-flows` form, whose
//! extra `duration=`, `n_packets=` and `n_bytes=` fields the parser accepts and ignores.
//!
//! Errors name the offending token and carry a stable code ([`FlowParseError::code`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ct_syntax;
use crate::flow::{Action, FlowRule, RuleError, SetField, DEFAULT_PRIORITY};
use crate::key::{ethertype, fmt_mac, ipproto, mac_from_bytes, Field, Match, PortNo};
use crate::key::{VLAN_PCP_MASK, VLAN_PRESENT, VLAN_VID_MASK};
use crate::respond::DhcpConfig;
pub use crate::types::{FlowFilter, FlowStats};

/// Port name ⇄ number table supplied by the caller (the switch's port list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortNames {
    by_name: BTreeMap<String, PortNo>,
    by_no: BTreeMap<PortNo, String>,
}

impl PortNames {
    /// An empty table (only numeric ports resolve).
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a name.
    pub fn insert(&mut self, name: &str, no: PortNo) {
        self.by_name.insert(name.to_string(), no);
        self.by_no.insert(no, name.to_string());
    }
    /// Number of a named port.
    pub fn port_no(&self, name: &str) -> Option<PortNo> {
        self.by_name.get(name).copied()
    }
    /// Name of a port number.
    pub fn name(&self, no: PortNo) -> Option<&str> {
        self.by_no.get(&no).map(String::as_str)
    }
}

/// A flow-syntax error. Every variant names the token it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowParseError {
    /// A `key=value` whose key is not a known field.
    #[error("unknown field `{token}`")]
    UnknownField {
        /// The token.
        token: String,
    },
    /// A field given without a value.
    #[error("field `{field}` needs a value")]
    MissingValue {
        /// The field.
        field: String,
    },
    /// A field value that does not parse.
    #[error("bad value `{value}` for `{field}`: {reason}")]
    BadValue {
        /// The field.
        field: String,
        /// The value text.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// The same field given twice.
    #[error("field `{field}` given more than once")]
    DuplicateField {
        /// The field.
        field: String,
    },
    /// An action that does not exist.
    #[error("unknown action `{token}`")]
    UnknownAction {
        /// The token.
        token: String,
    },
    /// An action argument that does not parse.
    #[error("bad argument `{arg}` for action `{action}`: {reason}")]
    BadActionArg {
        /// The action.
        action: String,
        /// The argument.
        arg: String,
        /// Why.
        reason: &'static str,
    },
    /// A port name not in the port table.
    #[error("unknown port `{name}`")]
    UnknownPort {
        /// The name.
        name: String,
    },
    /// `add-flow` text without `actions=`.
    #[error("flow has no `actions=`")]
    MissingActions,
    /// The parsed rule breaks a rule constraint (prerequisites, goto).
    #[error(transparent)]
    Rule(#[from] RuleError),
}

impl FlowParseError {
    /// Stable error code, for the API and CLI.
    pub fn code(&self) -> &'static str {
        match self {
            FlowParseError::UnknownField { .. } => "unknown_field",
            FlowParseError::MissingValue { .. } => "missing_value",
            FlowParseError::BadValue { .. } => "bad_value",
            FlowParseError::DuplicateField { .. } => "duplicate_field",
            FlowParseError::UnknownAction { .. } => "unknown_action",
            FlowParseError::BadActionArg { .. } => "bad_action_argument",
            FlowParseError::UnknownPort { .. } => "unknown_port",
            FlowParseError::MissingActions => "missing_actions",
            FlowParseError::Rule(e) => e.code(),
        }
    }
}

type R<T> = Result<T, FlowParseError>;

fn bad(field: &str, value: &str, reason: &'static str) -> FlowParseError {
    FlowParseError::BadValue {
        field: field.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// Parses an unsigned integer in decimal or `0x` hex.
fn parse_uint(field: &str, s: &str, max: u64) -> R<u64> {
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        s.parse::<u64>()
    }
    .map_err(|_| bad(field, s, "not a number"))?;
    if v > max {
        return Err(bad(field, s, "out of range"));
    }
    Ok(v)
}

/// `value` or `value/mask`.
fn parse_uint_masked(field: &str, s: &str, max: u64) -> R<(u64, u64)> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_uint(field, v, max)?, parse_uint(field, m, max)?)),
        None => Ok((parse_uint(field, s, max)?, max)),
    }
}

fn parse_mac(field: &str, s: &str) -> R<u64> {
    let mut b = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.is_empty() || part.len() > 2 {
            return Err(bad(field, s, "not a MAC address"));
        }
        b[n] = u8::from_str_radix(part, 16).map_err(|_| bad(field, s, "not a MAC address"))?;
        n += 1;
    }
    if n != 6 {
        return Err(bad(field, s, "not a MAC address"));
    }
    Ok(mac_from_bytes(b))
}

fn parse_mac_masked(field: &str, s: &str) -> R<(u64, u64)> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_mac(field, v)?, parse_mac(field, m)?)),
        None => Ok((parse_mac(field, s)?, 0xffff_ffff_ffff)),
    }
}

fn parse_v4(field: &str, s: &str) -> R<Ipv4Addr> {
    s.parse().map_err(|_| bad(field, s, "not an IPv4 address"))
}

fn parse_v4_masked(field: &str, s: &str) -> R<(u32, u32)> {
    match s.split_once('/') {
        Some((a, m)) => {
            let a = u32::from(parse_v4(field, a)?);
            let mask = if m.contains('.') {
                u32::from(parse_v4(field, m)?)
            } else {
                let p: u32 = m.parse().map_err(|_| bad(field, s, "bad prefix length"))?;
                if p > 32 {
                    return Err(bad(field, s, "prefix length above 32"));
                }
                if p == 0 {
                    0
                } else {
                    u32::MAX << (32 - p)
                }
            };
            Ok((a, mask))
        }
        None => Ok((u32::from(parse_v4(field, s)?), u32::MAX)),
    }
}

fn parse_v6(field: &str, s: &str) -> R<Ipv6Addr> {
    s.parse().map_err(|_| bad(field, s, "not an IPv6 address"))
}

fn parse_v6_masked(field: &str, s: &str) -> R<(u128, u128)> {
    match s.split_once('/') {
        Some((a, m)) => {
            let a = u128::from(parse_v6(field, a)?);
            let mask = if m.contains(':') {
                u128::from(parse_v6(field, m)?)
            } else {
                let p: u32 = m.parse().map_err(|_| bad(field, s, "bad prefix length"))?;
                if p > 128 {
                    return Err(bad(field, s, "prefix length above 128"));
                }
                if p == 0 {
                    0
                } else {
                    u128::MAX << (128 - p)
                }
            };
            Ok((a, mask))
        }
        None => Ok((u128::from(parse_v6(field, s)?), u128::MAX)),
    }
}

fn parse_port(field: &str, s: &str, names: Option<&PortNames>) -> R<PortNo> {
    if s.bytes().all(|c| c.is_ascii_digit()) || s.starts_with("0x") {
        let v = parse_uint(field, s, 0xffff_ff00)?;
        return Ok(v as PortNo);
    }
    names
        .and_then(|n| n.port_no(s))
        .ok_or_else(|| FlowParseError::UnknownPort {
            name: s.to_string(),
        })
}

/// Splits `s` into top-level tokens (commas or whitespace), returning the match part tokens and
/// the text after `actions=` if present.
fn split_flow(s: &str) -> (Vec<&str>, Option<&str>) {
    let s = s.trim();
    let (head, actions) = match find_actions(s) {
        Some(i) => (&s[..i], Some(s[i + "actions=".len()..].trim())),
        None => (s, None),
    };
    let toks = head
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    (toks, actions)
}

fn find_actions(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("actions=") {
        let at = from + i;
        let ok = at == 0 || s[..at].ends_with(|c: char| c == ',' || c.is_whitespace());
        if ok {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// What the head of a flow (everything but actions) may contain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// add-flow: table, priority, cookie, timeouts, match.
    Rule,
    /// trace packet description / del-flows filter: table, priority, cookie, match.
    Filter,
}

fn parse_head(toks: &[&str], names: Option<&PortNames>, mode: Mode) -> R<FlowRule> {
    let mut r = FlowRule::default();
    let mut seen: Vec<&str> = Vec::new();
    for tok in toks {
        let (k, v) = match tok.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (tok.trim(), None),
        };
        // Shorthands.
        let short: Option<(u16, Option<u8>)> = match k {
            "ip" => Some((ethertype::IPV4, None)),
            "ipv6" => Some((ethertype::IPV6, None)),
            "arp" => Some((ethertype::ARP, None)),
            "tcp" => Some((ethertype::IPV4, Some(ipproto::TCP))),
            "udp" => Some((ethertype::IPV4, Some(ipproto::UDP))),
            "icmp" => Some((ethertype::IPV4, Some(ipproto::ICMP))),
            "tcp6" => Some((ethertype::IPV6, Some(ipproto::TCP))),
            "udp6" => Some((ethertype::IPV6, Some(ipproto::UDP))),
            "icmp6" => Some((ethertype::IPV6, Some(ipproto::ICMPV6))),
            _ => None,
        };
        if let Some((et, proto)) = short {
            if v.is_some() {
                return Err(FlowParseError::BadValue {
                    field: k.to_string(),
                    value: v.unwrap_or_default().to_string(),
                    reason: "a protocol shorthand takes no value",
                });
            }
            if seen.contains(&"dl_type") || (proto.is_some() && seen.contains(&"nw_proto")) {
                return Err(FlowParseError::DuplicateField {
                    field: k.to_string(),
                });
            }
            seen.push("dl_type");
            r.matches.set_exact(Field::EthType, et as u64);
            if let Some(p) = proto {
                seen.push("nw_proto");
                r.matches.set_exact(Field::NwProto, p as u64);
            }
            continue;
        }
        // Stats fields printed by dump-flows are accepted and ignored.
        if matches!(
            k,
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age"
        ) {
            continue;
        }
        let canon = canonical_field(k).ok_or_else(|| FlowParseError::UnknownField {
            token: tok.to_string(),
        })?;
        let v = v
            .filter(|v| !v.is_empty())
            .ok_or_else(|| FlowParseError::MissingValue {
                field: k.to_string(),
            })?;
        if seen.contains(&canon) {
            return Err(FlowParseError::DuplicateField {
                field: k.to_string(),
            });
        }
        seen.push(canon);
        let m = &mut r.matches;
        match canon {
            "table" => r.table = parse_uint(k, v, 254)? as u8,
            "priority" => r.priority = parse_uint(k, v, 0xffff)? as u16,
            "cookie" => r.cookie = parse_uint_masked(k, v, u64::MAX)?.0,
            "idle_timeout" | "hard_timeout" if mode == Mode::Rule => {
                let t = parse_uint(k, v, 0xffff)? as u16;
                if canon == "idle_timeout" {
                    r.idle_timeout = t;
                } else {
                    r.hard_timeout = t;
                }
            }
            "idle_timeout" | "hard_timeout" => {
                return Err(FlowParseError::UnknownField {
                    token: tok.to_string(),
                })
            }
            "in_port" => m.set_exact(Field::InPort, parse_port(k, v, names)? as u64),
            "dl_src" => {
                let (a, b) = parse_mac_masked(k, v)?;
                m.set_masked(Field::EthSrc, a, b)
            }
            "dl_dst" => {
                let (a, b) = parse_mac_masked(k, v)?;
                m.set_masked(Field::EthDst, a, b)
            }
            "arp_sha" => {
                let (a, b) = parse_mac_masked(k, v)?;
                m.set_masked(Field::ArpSha, a, b)
            }
            "arp_tha" => {
                let (a, b) = parse_mac_masked(k, v)?;
                m.set_masked(Field::ArpTha, a, b)
            }
            "dl_type" => m.set_exact(Field::EthType, parse_uint(k, v, 0xffff)?),
            "dl_vlan" => {
                let vid = parse_uint(k, v, 0xffff)?;
                if vid == 0xffff {
                    // OVS: "no VLAN tag".
                    m.set_masked(Field::VlanTci, 0, 0xffff);
                } else if vid > VLAN_VID_MASK as u64 {
                    return Err(bad(k, v, "VLAN id above 4095"));
                } else {
                    m.set_masked(
                        Field::VlanTci,
                        VLAN_PRESENT as u64 | vid,
                        (VLAN_PRESENT | VLAN_VID_MASK) as u64,
                    );
                }
            }
            "dl_vlan_pcp" => {
                let p = parse_uint(k, v, 7)?;
                m.set_masked(
                    Field::VlanTci,
                    VLAN_PRESENT as u64 | (p << 13),
                    (VLAN_PRESENT | VLAN_PCP_MASK) as u64,
                );
            }
            "vlan_tci" => {
                let (a, b) = parse_uint_masked(k, v, 0xffff)?;
                m.set_masked(Field::VlanTci, a, b);
            }
            "nw_src" | "nw_dst" => {
                let (a, b) = parse_v4_masked(k, v)?;
                let f = if canon == "nw_src" {
                    Field::NwSrc
                } else {
                    Field::NwDst
                };
                m.set_masked(f, a as u64, b as u64);
            }
            "ipv6_src" | "ipv6_dst" => {
                let (a, b) = parse_v6_masked(k, v)?;
                let (hi, lo) = if canon == "ipv6_src" {
                    (Field::Ipv6SrcHi, Field::Ipv6SrcLo)
                } else {
                    (Field::Ipv6DstHi, Field::Ipv6DstLo)
                };
                m.set_masked(hi, (a >> 64) as u64, (b >> 64) as u64);
                m.set_masked(lo, a as u64, b as u64);
            }
            "nw_proto" => m.set_exact(Field::NwProto, parse_uint(k, v, 0xff)?),
            "nw_tos" => m.set_exact(Field::NwTos, parse_uint(k, v, 0xff)?),
            "nw_ttl" => m.set_exact(Field::NwTtl, parse_uint(k, v, 0xff)?),
            "tp_src" | "tp_dst" => {
                let (a, b) = parse_uint_masked(k, v, 0xffff)?;
                let f = if canon == "tp_src" {
                    Field::TpSrc
                } else {
                    Field::TpDst
                };
                m.set_masked(f, a, b);
            }
            "arp_op" => m.set_exact(Field::ArpOp, parse_uint(k, v, 0xffff)?),
            "tun_id" => {
                let (a, b) = parse_uint_masked(k, v, u64::MAX)?;
                m.set_masked(Field::TunId, a, b);
            }
            "metadata" => {
                let (a, b) = parse_uint_masked(k, v, u64::MAX)?;
                m.set_masked(Field::Metadata, a, b);
            }
            "ct_state" => {
                let (a, b) = ct_syntax::parse_ct_state(v).map_err(|(t, r)| bad(k, &t, r))?;
                m.set_masked(Field::CtState, a as u64, b as u64);
            }
            "ct_zone" => {
                let (a, b) = parse_uint_masked(k, v, 0xffff)?;
                m.set_masked(Field::CtZone, a, b);
            }
            "ct_mark" => {
                let (a, b) = parse_uint_masked(k, v, u32::MAX as u64)?;
                m.set_masked(Field::CtMark, a, b);
            }
            reg if reg.starts_with("reg") => {
                let n = reg[3..].parse::<u8>().unwrap_or(0);
                let (a, b) = parse_uint_masked(k, v, u32::MAX as u64)?;
                m.set_masked(Field::Reg(n), a, b);
            }
            _ => {
                return Err(FlowParseError::UnknownField {
                    token: tok.to_string(),
                })
            }
        }
    }
    Ok(r)
}

/// Maps accepted field spellings to one canonical name.
fn canonical_field(k: &str) -> Option<&'static str> {
    Some(match k {
        "table" => "table",
        "priority" => "priority",
        "cookie" => "cookie",
        "idle_timeout" => "idle_timeout",
        "hard_timeout" => "hard_timeout",
        "in_port" => "in_port",
        "dl_src" | "eth_src" => "dl_src",
        "dl_dst" | "eth_dst" => "dl_dst",
        "dl_type" | "eth_type" => "dl_type",
        "dl_vlan" => "dl_vlan",
        "dl_vlan_pcp" => "dl_vlan_pcp",
        "vlan_tci" => "vlan_tci",
        "nw_src" | "ip_src" | "arp_spa" => "nw_src",
        "nw_dst" | "ip_dst" | "arp_tpa" => "nw_dst",
        "ipv6_src" => "ipv6_src",
        "ipv6_dst" => "ipv6_dst",
        "nw_proto" | "ip_proto" => "nw_proto",
        "nw_tos" => "nw_tos",
        "nw_ttl" => "nw_ttl",
        "tp_src" | "tcp_src" | "udp_src" | "icmp_type" | "icmpv6_type" => "tp_src",
        "tp_dst" | "tcp_dst" | "udp_dst" | "icmp_code" | "icmpv6_code" => "tp_dst",
        "arp_op" => "arp_op",
        "arp_sha" => "arp_sha",
        "arp_tha" => "arp_tha",
        "tun_id" | "tunnel_id" => "tun_id",
        "metadata" => "metadata",
        "reg0" => "reg0",
        "reg1" => "reg1",
        "reg2" => "reg2",
        "reg3" => "reg3",
        "reg4" => "reg4",
        "reg5" => "reg5",
        "reg6" => "reg6",
        "reg7" => "reg7",
        "ct_state" => "ct_state",
        "ct_zone" => "ct_zone",
        "ct_mark" => "ct_mark",
        _ => return None,
    })
}

fn parse_set_field(arg: &str, names: Option<&PortNames>) -> R<SetField> {
    let _ = names;
    let err = |reason| FlowParseError::BadActionArg {
        action: "set_field".into(),
        arg: arg.to_string(),
        reason,
    };
    let (v, f) = arg
        .split_once("->")
        .ok_or_else(|| err("expected VALUE->FIELD"))?;
    let (v, f) = (v.trim(), f.trim());
    Ok(match f {
        "eth_src" | "dl_src" => SetField::EthSrc(parse_mac(f, v)?),
        "eth_dst" | "dl_dst" => SetField::EthDst(parse_mac(f, v)?),
        "ip_src" | "nw_src" => SetField::NwSrc(parse_v4(f, v)?),
        "ip_dst" | "nw_dst" => SetField::NwDst(parse_v4(f, v)?),
        "ipv6_src" => SetField::Ipv6Src(parse_v6(f, v)?),
        "ipv6_dst" => SetField::Ipv6Dst(parse_v6(f, v)?),
        "tp_src" | "tcp_src" | "udp_src" => SetField::TpSrc(parse_uint(f, v, 0xffff)? as u16),
        "tp_dst" | "tcp_dst" | "udp_dst" => SetField::TpDst(parse_uint(f, v, 0xffff)? as u16),
        "vlan_vid" => SetField::VlanVid(parse_uint(f, v, 0x0fff)? as u16),
        "vlan_pcp" => SetField::VlanPcp(parse_uint(f, v, 7)? as u8),
        "tun_id" | "tunnel_id" => SetField::TunId(parse_uint(f, v, u64::MAX)?),
        "metadata" => SetField::Metadata(parse_uint(f, v, u64::MAX)?),
        r if r.len() == 4 && r.starts_with("reg") && (b'0'..=b'7').contains(&r.as_bytes()[3]) => {
            SetField::Reg(
                r.as_bytes()[3] - b'0',
                parse_uint(f, v, u32::MAX as u64)? as u32,
            )
        }
        _ => return Err(err("unknown or unsettable field")),
    })
}

/// The actions written `name(key=value,...)`: `icmp_error(...)` and `dhcp_reply(...)`.
/// `Ok(None)` if `tok` is not of that form.
fn parse_paren_action(tok: &str) -> R<Option<Action>> {
    let Some(open) = tok.find('(') else {
        return Ok(None);
    };
    if tok.find(':').is_some_and(|c| c < open) {
        return Ok(None);
    }
    let name = tok[..open].trim();
    let err = |arg: &str, reason| FlowParseError::BadActionArg {
        action: name.to_string(),
        arg: arg.to_string(),
        reason,
    };
    let inner = tok[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| err(tok, "unbalanced parentheses"))?;
    let mut args: Vec<(&str, &str)> = Vec::new();
    for a in inner.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| err(a, "expected key=value"))?;
        let k = k.trim();
        if args.iter().any(|(x, _)| *x == k) {
            return Err(err(a, "argument given twice"));
        }
        args.push((k, v.trim()));
    }
    let get = |k: &str| args.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
    let v4 = |k: &str| -> R<Option<Ipv4Addr>> {
        get(k)
            .map(|v| v.parse().map_err(|_| err(v, "not an IPv4 address")))
            .transpose()
    };
    let num = |k: &str, max: u64| -> R<Option<u64>> {
        get(k)
            .map(|v| parse_uint(k, v, max).map_err(|_| err(v, "not a number in range")))
            .transpose()
    };
    let known = |allowed: &[&str]| -> R<()> {
        match args.iter().find(|(k, _)| !allowed.contains(k)) {
            Some((k, _)) => Err(err(k, "unknown argument")),
            None => Ok(()),
        }
    };
    let required = |k: &'static str| err(k, "required argument missing");
    let a = match name {
        "icmp_error" => {
            known(&["type", "code", "src"])?;
            Action::IcmpError {
                icmp_type: num("type", 0xff)?.ok_or_else(|| required("type"))? as u8,
                code: num("code", 0xff)?.unwrap_or(0) as u8,
                src: get("src")
                    .ok_or_else(|| required("src"))?
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| err("src", "not an IP address"))?,
            }
        }
        "dhcp_reply" => {
            known(&[
                "yiaddr",
                "netmask",
                "prefix",
                "router",
                "dns",
                "lease",
                "server",
                "server_mac",
                "mtu",
                "domain",
            ])?;
            let server_mac = get("server_mac").ok_or_else(|| required("server_mac"))?;
            let mut c = DhcpConfig::new(
                v4("yiaddr")?.ok_or_else(|| required("yiaddr"))?,
                v4("server")?.ok_or_else(|| required("server"))?,
                parse_mac("server_mac", server_mac).map_err(|_| err(server_mac, "not a MAC"))?,
            );
            c.netmask = v4("netmask")?;
            if let Some(p) = num("prefix", 32)? {
                if c.netmask.is_some() {
                    return Err(err("prefix", "give netmask or prefix, not both"));
                }
                c.netmask = Some(Ipv4Addr::from(
                    u32::MAX.checked_shl(32 - p as u32).unwrap_or(0),
                ));
            }
            c.router = v4("router")?;
            if let Some(d) = get("dns") {
                for a in d.split(';') {
                    c.dns.push(
                        a.trim()
                            .parse()
                            .map_err(|_| err(a, "not an IPv4 address"))?,
                    );
                }
            }
            c.lease = num("lease", u32::MAX as u64)?.unwrap_or(c.lease as u64) as u32;
            c.mtu = num("mtu", 0xffff)?.map(|m| m as u16);
            c.domain = get("domain").map(str::to_string);
            Action::DhcpReply(Box::new(c))
        }
        _ => {
            return Err(FlowParseError::UnknownAction {
                token: tok.to_string(),
            })
        }
    };
    Ok(Some(a))
}

fn format_dhcp(out: &mut String, c: &DhcpConfig) -> std::fmt::Result {
    write!(out, "dhcp_reply(yiaddr={}", c.yiaddr)?;
    if let Some(m) = c.netmask {
        write!(out, ",netmask={m}")?;
    }
    if let Some(r) = c.router {
        write!(out, ",router={r}")?;
    }
    for (i, d) in c.dns.iter().enumerate() {
        write!(out, "{}{d}", if i == 0 { ",dns=" } else { ";" })?;
    }
    write!(
        out,
        ",lease={},server={},server_mac={}",
        c.lease,
        c.server,
        fmt_mac(c.server_mac)
    )?;
    if let Some(m) = c.mtu {
        write!(out, ",mtu={m}")?;
    }
    if let Some(d) = &c.domain {
        write!(out, ",domain={d}")?;
    }
    out.push(')');
    Ok(())
}

fn parse_actions(s: &str, names: Option<&PortNames>) -> R<Vec<Action>> {
    let mut out = Vec::new();
    for raw in ct_syntax::split_top(s) {
        let tok = raw.trim();
        if tok.is_empty() {
            continue;
        }
        if let Some(args) = tok.strip_prefix("ct(").and_then(|t| t.strip_suffix(')')) {
            let ct = ct_syntax::parse_ct(args).map_err(|(arg, reason)| {
                FlowParseError::BadActionArg {
                    action: "ct".into(),
                    arg,
                    reason,
                }
            })?;
            out.push(Action::Ct(ct));
            continue;
        }
        if let Some(a) = parse_paren_action(tok)? {
            out.push(a);
            continue;
        }
        let (name, arg) = match tok.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (tok, None),
        };
        let need = |what: &str| -> R<&str> {
            arg.filter(|a| !a.is_empty())
                .ok_or_else(|| FlowParseError::BadActionArg {
                    action: what.to_string(),
                    arg: String::new(),
                    reason: "missing argument",
                })
        };
        let num = |what: &str, max: u64| -> R<u64> {
            let a = need(what)?;
            parse_uint(what, a, max).map_err(|_| FlowParseError::BadActionArg {
                action: what.to_string(),
                arg: a.to_string(),
                reason: "not a number in range",
            })
        };
        let no_arg = |a: Action| -> R<Action> {
            match arg {
                None => Ok(a),
                Some(x) => Err(FlowParseError::BadActionArg {
                    action: name.to_string(),
                    arg: x.to_string(),
                    reason: "takes no argument",
                }),
            }
        };
        let a = match name {
            "output" => {
                let p = need(name)?;
                if p == "in_port" {
                    Action::OutputInPort
                } else {
                    Action::Output(parse_port(name, p, names)?)
                }
            }
            "in_port" => no_arg(Action::OutputInPort)?,
            "flood" | "FLOOD" => no_arg(Action::Flood)?,
            "normal" | "NORMAL" => no_arg(Action::Normal)?,
            "learn_mac" | "learn" => no_arg(Action::LearnMac)?,
            "drop" => {
                no_arg(Action::Flood)?; // argument check only
                continue;
            }
            "strip_vlan" | "pop_vlan" => no_arg(Action::PopVlan)?,
            "push_vlan" => {
                let t = num(name, 0xffff)? as u16;
                if t != ethertype::VLAN && t != ethertype::QINQ {
                    return Err(FlowParseError::BadActionArg {
                        action: name.into(),
                        arg: need(name)?.into(),
                        reason: "TPID must be 0x8100 or 0x88a8",
                    });
                }
                Action::PushVlan(t)
            }
            "mod_vlan_vid" => Action::ModVlanVid(num(name, 0x0fff)? as u16),
            "mod_vlan_pcp" => Action::ModVlanPcp(num(name, 7)? as u8),
            "set_tunnel" | "set_tunnel64" => Action::SetTunnel(num(name, u64::MAX)?),
            "goto_table" => Action::GotoTable(num(name, 254)? as u8),
            "write_metadata" => {
                let a = need(name)?;
                let (v, m) = parse_uint_masked(name, a, u64::MAX).map_err(|_| {
                    FlowParseError::BadActionArg {
                        action: name.into(),
                        arg: a.into(),
                        reason: "expected VALUE[/MASK]",
                    }
                })?;
                Action::WriteMetadata {
                    value: v & m,
                    mask: m,
                }
            }
            "set_field" | "load" => Action::SetField(parse_set_field(need(name)?, names)?),
            "mod_dl_src" => Action::SetField(SetField::EthSrc(parse_mac(name, need(name)?)?)),
            "mod_dl_dst" => Action::SetField(SetField::EthDst(parse_mac(name, need(name)?)?)),
            "mod_nw_src" => Action::SetField(SetField::NwSrc(parse_v4(name, need(name)?)?)),
            "mod_nw_dst" => Action::SetField(SetField::NwDst(parse_v4(name, need(name)?)?)),
            "mod_tp_src" => Action::SetField(SetField::TpSrc(num(name, 0xffff)? as u16)),
            "mod_tp_dst" => Action::SetField(SetField::TpDst(num(name, 0xffff)? as u16)),
            "dec_ttl" => no_arg(Action::DecTtl)?,
            "icmp_echo_reply" => no_arg(Action::IcmpEchoReply)?,
            "arp_reply" => Action::ArpReply(parse_mac(name, need(name)?)?),
            "meter" => match num(name, u32::MAX as u64)? {
                0 => {
                    return Err(FlowParseError::BadActionArg {
                        action: name.into(),
                        arg: "0".into(),
                        reason: "meter ids start at 1",
                    })
                }
                n => Action::Meter(n as u32),
            },
            _ => {
                // A bare port number is `output:N`, as in ovs-ofctl.
                if tok.bytes().all(|c| c.is_ascii_digit()) {
                    Action::Output(parse_port("output", tok, names)?)
                } else {
                    return Err(FlowParseError::UnknownAction {
                        token: tok.to_string(),
                    });
                }
            }
        };
        out.push(a);
    }
    Ok(out)
}

/// Parses an `add-flow` rule. `actions=` is required (`actions=drop` or `actions=` drop).
pub fn parse_flow(s: &str, names: Option<&PortNames>) -> Result<FlowRule, FlowParseError> {
    let (toks, actions) = split_flow(s);
    let mut r = parse_head(&toks, names, Mode::Rule)?;
    let actions = actions.ok_or(FlowParseError::MissingActions)?;
    r.actions = parse_actions(actions, names)?;
    r.validate()?;
    Ok(r)
}

/// Parses a `del-flows` filter (`""` means every flow). With `strict`, `priority=` is honoured
/// and matches must be equal, as `ovs-ofctl --strict del-flows`.
pub fn parse_filter(
    s: &str,
    names: Option<&PortNames>,
    strict: bool,
) -> Result<FlowFilter, FlowParseError> {
    let (toks, actions) = split_flow(s);
    if let Some(a) = actions {
        return Err(FlowParseError::UnknownField {
            token: format!("actions={a}"),
        });
    }
    let r = parse_head(&toks, names, Mode::Filter)?;
    let has = |k: &str| {
        toks.iter()
            .any(|t| t.split('=').next().map(str::trim) == Some(k))
    };
    Ok(FlowFilter {
        table: has("table").then_some(r.table),
        matches: r.matches,
        priority: (strict || has("priority")).then_some(r.priority),
        cookie: has("cookie").then_some(r.cookie),
    })
}

/// Parses a packet description for `trace` (`in_port=tap1,tcp,nw_src=10.0.0.1,tp_dst=80`):
/// a match whose values become the packet's fields.
pub fn parse_packet_spec(s: &str, names: Option<&PortNames>) -> Result<Match, FlowParseError> {
    let (toks, actions) = split_flow(s);
    if let Some(a) = actions {
        return Err(FlowParseError::UnknownField {
            token: format!("actions={a}"),
        });
    }
    let r = parse_head(&toks, names, Mode::Filter)?;
    FlowRule {
        matches: r.matches,
        ..Default::default()
    }
    .validate()?;
    Ok(r.matches)
}

fn port_str(p: PortNo, names: Option<&PortNames>) -> String {
    names
        .and_then(|n| n.name(p))
        .map(str::to_string)
        .unwrap_or_else(|| p.to_string())
}

fn fmt_v4(out: &mut String, name: &str, v: u64, m: u64) {
    let (v, m) = (v as u32, m as u32);
    if m == 0 {
        return;
    }
    let a = Ipv4Addr::from(v);
    if m == u32::MAX {
        let _ = write!(out, ",{name}={a}");
    } else if m.leading_ones() + m.trailing_zeros() == 32 {
        let _ = write!(out, ",{name}={a}/{}", m.leading_ones());
    } else {
        let _ = write!(out, ",{name}={a}/{}", Ipv4Addr::from(m));
    }
}

fn fmt_v6(out: &mut String, name: &str, v: u128, m: u128) {
    if m == 0 {
        return;
    }
    let a = Ipv6Addr::from(v);
    if m == u128::MAX {
        let _ = write!(out, ",{name}={a}");
    } else if m.leading_ones() + m.trailing_zeros() == 128 {
        let _ = write!(out, ",{name}={a}/{}", m.leading_ones());
    } else {
        let _ = write!(out, ",{name}={a}/{}", Ipv6Addr::from(m));
    }
}

fn fmt_mac_field(out: &mut String, name: &str, v: u64, m: u64) {
    if m == 0 {
        return;
    }
    if m == 0xffff_ffff_ffff {
        let _ = write!(out, ",{name}={}", fmt_mac(v));
    } else {
        let _ = write!(out, ",{name}={}/{}", fmt_mac(v), fmt_mac(m));
    }
}

fn fmt_hex_masked(out: &mut String, name: &str, v: u64, m: u64, full: u64) {
    if m == 0 {
        return;
    }
    if m == full {
        let _ = write!(out, ",{name}={v:#x}");
    } else {
        let _ = write!(out, ",{name}={v:#x}/{m:#x}");
    }
}

fn fmt_dec_masked(out: &mut String, name: &str, v: u64, m: u64, full: u64) {
    if m == 0 {
        return;
    }
    if m == full {
        let _ = write!(out, ",{name}={v}");
    } else {
        let _ = write!(out, ",{name}={v:#x}/{m:#x}");
    }
}

/// Formats a match in flow syntax (no leading comma; empty string for match-all).
pub fn format_match(m: &Match, names: Option<&PortNames>) -> String {
    let mut out = String::new();
    let g = |f: Field| (m.field_value(f), m.field_mask(f));
    let (ip, ipm) = g(Field::InPort);
    if ipm != 0 {
        let _ = write!(out, ",in_port={}", port_str(ip as PortNo, names));
    }
    let (tci, tcim) = g(Field::VlanTci);
    let (tci, tcim) = (tci as u16, tcim as u16);
    if tcim != 0 {
        let present = tci & VLAN_PRESENT != 0;
        match tcim {
            0x1fff if present => {
                let _ = write!(out, ",dl_vlan={}", tci & VLAN_VID_MASK);
            }
            0xf000 if present => {
                let _ = write!(out, ",dl_vlan_pcp={}", tci >> 13);
            }
            0xffff if present => {
                let _ = write!(
                    out,
                    ",dl_vlan={},dl_vlan_pcp={}",
                    tci & VLAN_VID_MASK,
                    tci >> 13
                );
            }
            0xffff if tci == 0 => out.push_str(",dl_vlan=0xffff"),
            _ => {
                let _ = write!(out, ",vlan_tci={tci:#06x}/{tcim:#06x}");
            }
        }
    }
    let (et, etm) = g(Field::EthType);
    let (pr, prm) = g(Field::NwProto);
    let mut proto_done = false;
    let is_arp = etm == 0xffff && et == ethertype::ARP as u64;
    if etm == 0xffff {
        let short = match (et as u16, (prm == 0xff).then_some(pr as u8)) {
            (ethertype::IPV4, Some(ipproto::TCP)) => Some(("tcp", true)),
            (ethertype::IPV4, Some(ipproto::UDP)) => Some(("udp", true)),
            (ethertype::IPV4, Some(ipproto::ICMP)) => Some(("icmp", true)),
            (ethertype::IPV6, Some(ipproto::TCP)) => Some(("tcp6", true)),
            (ethertype::IPV6, Some(ipproto::UDP)) => Some(("udp6", true)),
            (ethertype::IPV6, Some(ipproto::ICMPV6)) => Some(("icmp6", true)),
            (ethertype::IPV4, _) => Some(("ip", false)),
            (ethertype::IPV6, _) => Some(("ipv6", false)),
            (ethertype::ARP, _) => Some(("arp", false)),
            _ => None,
        };
        match short {
            Some((s, p)) => {
                let _ = write!(out, ",{s}");
                proto_done = p;
            }
            None => {
                let _ = write!(out, ",dl_type={et:#06x}");
            }
        }
    } else if etm != 0 {
        // Only rules built in code can have a partial dl_type mask; print it as exact.
        let _ = write!(out, ",dl_type={et:#06x}");
    }
    let (v, mm) = g(Field::EthSrc);
    fmt_mac_field(&mut out, "dl_src", v, mm);
    let (v, mm) = g(Field::EthDst);
    fmt_mac_field(&mut out, "dl_dst", v, mm);
    let (v, mm) = g(Field::NwSrc);
    fmt_v4(&mut out, if is_arp { "arp_spa" } else { "nw_src" }, v, mm);
    let (v, mm) = g(Field::NwDst);
    fmt_v4(&mut out, if is_arp { "arp_tpa" } else { "nw_dst" }, v, mm);
    let v6 = |hi: Field, lo: Field| {
        let (a, am) = g(hi);
        let (b, bm) = g(lo);
        (
            ((a as u128) << 64) | b as u128,
            ((am as u128) << 64) | bm as u128,
        )
    };
    let (v, mm) = v6(Field::Ipv6SrcHi, Field::Ipv6SrcLo);
    fmt_v6(&mut out, "ipv6_src", v, mm);
    let (v, mm) = v6(Field::Ipv6DstHi, Field::Ipv6DstLo);
    fmt_v6(&mut out, "ipv6_dst", v, mm);
    if !proto_done && prm != 0 {
        fmt_dec_masked(&mut out, "nw_proto", pr, prm, 0xff);
    }
    let (v, mm) = g(Field::NwTos);
    fmt_dec_masked(&mut out, "nw_tos", v, mm, 0xff);
    let (v, mm) = g(Field::NwTtl);
    fmt_dec_masked(&mut out, "nw_ttl", v, mm, 0xff);
    let (v, mm) = g(Field::TpSrc);
    fmt_dec_masked(&mut out, "tp_src", v, mm, 0xffff);
    let (v, mm) = g(Field::TpDst);
    fmt_dec_masked(&mut out, "tp_dst", v, mm, 0xffff);
    let (v, mm) = g(Field::ArpOp);
    fmt_dec_masked(&mut out, "arp_op", v, mm, 0xffff);
    let (v, mm) = g(Field::ArpSha);
    fmt_mac_field(&mut out, "arp_sha", v, mm);
    let (v, mm) = g(Field::ArpTha);
    fmt_mac_field(&mut out, "arp_tha", v, mm);
    let (v, mm) = g(Field::TunId);
    fmt_hex_masked(&mut out, "tun_id", v, mm, u64::MAX);
    let (v, mm) = g(Field::Metadata);
    fmt_hex_masked(&mut out, "metadata", v, mm, u64::MAX);
    for r in 0..8u8 {
        let (v, mm) = g(Field::Reg(r));
        fmt_hex_masked(&mut out, &format!("reg{r}"), v, mm, u32::MAX as u64);
    }
    let (v, mm) = g(Field::CtState);
    if mm != 0 {
        let _ = write!(
            out,
            ",ct_state={}",
            ct_syntax::format_ct_state(v as u8, mm as u8)
        );
    }
    let (v, mm) = g(Field::CtZone);
    fmt_dec_masked(&mut out, "ct_zone", v, mm, 0xffff);
    let (v, mm) = g(Field::CtMark);
    fmt_hex_masked(&mut out, "ct_mark", v, mm, u32::MAX as u64);
    if out.starts_with(',') {
        out.remove(0);
    }
    out
}

/// Formats an action list (`drop` when empty).
pub fn format_actions(actions: &[Action], names: Option<&PortNames>) -> String {
    if actions.is_empty() {
        return "drop".to_string();
    }
    let mut out = String::new();
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = match *a {
            Action::Output(p) => write!(out, "output:{}", port_str(p, names)),
            Action::OutputInPort => write!(out, "in_port"),
            Action::Flood => write!(out, "flood"),
            Action::Normal => write!(out, "normal"),
            Action::LearnMac => write!(out, "learn_mac"),
            Action::PushVlan(t) => write!(out, "push_vlan:{t:#06x}"),
            Action::PopVlan => write!(out, "pop_vlan"),
            Action::ModVlanVid(v) => write!(out, "mod_vlan_vid:{v}"),
            Action::ModVlanPcp(p) => write!(out, "mod_vlan_pcp:{p}"),
            Action::SetTunnel(t) => write!(out, "set_tunnel:{t:#x}"),
            Action::GotoTable(t) => write!(out, "goto_table:{t}"),
            Action::Ct(ct) => {
                ct_syntax::format_ct(&mut out, &ct);
                Ok(())
            }
            Action::WriteMetadata { value, mask } => {
                if mask == u64::MAX {
                    write!(out, "write_metadata:{value:#x}")
                } else {
                    write!(out, "write_metadata:{value:#x}/{mask:#x}")
                }
            }
            Action::SetField(sf) => match sf {
                SetField::EthSrc(v) => write!(out, "set_field:{}->eth_src", fmt_mac(v)),
                SetField::EthDst(v) => write!(out, "set_field:{}->eth_dst", fmt_mac(v)),
                SetField::NwSrc(a) => write!(out, "set_field:{a}->ip_src"),
                SetField::NwDst(a) => write!(out, "set_field:{a}->ip_dst"),
                SetField::Ipv6Src(a) => write!(out, "set_field:{a}->ipv6_src"),
                SetField::Ipv6Dst(a) => write!(out, "set_field:{a}->ipv6_dst"),
                SetField::TpSrc(p) => write!(out, "set_field:{p}->tp_src"),
                SetField::TpDst(p) => write!(out, "set_field:{p}->tp_dst"),
                SetField::VlanVid(v) => write!(out, "set_field:{v}->vlan_vid"),
                SetField::VlanPcp(p) => write!(out, "set_field:{p}->vlan_pcp"),
                SetField::TunId(v) => write!(out, "set_field:{v:#x}->tun_id"),
                SetField::Reg(r, v) => write!(out, "set_field:{v:#x}->reg{r}"),
                SetField::Metadata(v) => write!(out, "set_field:{v:#x}->metadata"),
            },
            Action::DecTtl => write!(out, "dec_ttl"),
            Action::IcmpError {
                icmp_type,
                code,
                src,
            } => write!(out, "icmp_error(type={icmp_type},code={code},src={src})"),
            Action::IcmpEchoReply => write!(out, "icmp_echo_reply"),
            Action::ArpReply(m) => write!(out, "arp_reply:{}", fmt_mac(m)),
            Action::DhcpReply(ref c) => format_dhcp(&mut out, c),
            Action::Meter(n) => write!(out, "meter:{n}"),
        };
    }
    out
}

/// Formats a rule in `add-flow` syntax; `parse_flow(format_flow(r)) == r`.
pub fn format_flow(r: &FlowRule, names: Option<&PortNames>) -> String {
    let mut out = String::new();
    if r.cookie != 0 {
        let _ = write!(out, "cookie={:#x},", r.cookie);
    }
    let _ = write!(out, "table={},priority={}", r.table, r.priority);
    if r.idle_timeout != 0 {
        let _ = write!(out, ",idle_timeout={}", r.idle_timeout);
    }
    if r.hard_timeout != 0 {
        let _ = write!(out, ",hard_timeout={}", r.hard_timeout);
    }
    let m = format_match(&r.matches, names);
    if !m.is_empty() {
        out.push(',');
        out.push_str(&m);
    }
    let _ = write!(out, ",actions={}", format_actions(&r.actions, names));
    out
}

/// Formats a rule as `ovs-ofctl dump-flows` does, with counters. The parser accepts this form.
pub fn format_flow_stats(r: &FlowRule, s: &FlowStats, names: Option<&PortNames>) -> String {
    let mut out = format!(
        " cookie={:#x}, duration={}.{:03}s, table={}, n_packets={}, n_bytes={}, ",
        r.cookie,
        s.duration.as_secs(),
        s.duration.subsec_millis(),
        r.table,
        s.n_packets,
        s.n_bytes
    );
    if r.idle_timeout != 0 {
        let _ = write!(out, "idle_timeout={}, ", r.idle_timeout);
    }
    if r.hard_timeout != 0 {
        let _ = write!(out, "hard_timeout={}, ", r.hard_timeout);
    }
    let _ = write!(out, "priority={}", r.priority);
    let m = format_match(&r.matches, names);
    if !m.is_empty() {
        out.push(',');
        out.push_str(&m);
    }
    let _ = write!(out, " actions={}", format_actions(&r.actions, names));
    out
}

/// Default priority, re-exported for callers building rules.
pub const DEFAULT_FLOW_PRIORITY: u16 = DEFAULT_PRIORITY;

/// A match prints as the text it was parsed from (the `key` module leaves its `Debug` here, so
/// the key does not import its own syntax).
impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Match({})", format_match(self, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names() -> PortNames {
        let mut n = PortNames::new();
        n.insert("tap1", 1);
        n.insert("vx1", 7);
        n
    }

    #[test]
    fn examples_from_the_issue_parse() {
        let n = names();
        for s in [
            "table=0,priority=100,ip,nw_dst=10.0.0.0/24,actions=output:tap1",
            "priority=10,in_port=1,dl_vlan=10,actions=strip_vlan,goto_table:1",
            "arp,actions=flood",
            "actions=drop",
            "tcp,tp_dst=80,actions=set_field:10.0.0.5->nw_dst,output:2",
            "idle_timeout=10,hard_timeout=60,actions=normal",
            "actions=learn_mac,normal",
            "actions=push_vlan:0x8100,mod_vlan_vid:20,output:3",
            "actions=set_tunnel:100,output:vx1",
            "actions=write_metadata:0x1/0xff,goto_table:2",
            "reg0=5,actions=drop",
            "cookie=0x1234,tun_id=100,metadata=0x1/0xff,actions=output:1",
            "ipv6,ipv6_src=2001:db8::/32,actions=drop",
            "udp6,tp_src=0x1000/0xf000,actions=drop",
            "dl_src=02:00:00:00:00:01/ff:ff:ff:00:00:00,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=drop",
        ] {
            let r = parse_flow(s, Some(&n)).unwrap_or_else(|e| panic!("{s}: {e}"));
            let f = format_flow(&r, Some(&n));
            assert_eq!(parse_flow(&f, Some(&n)).unwrap(), r, "{s} -> {f}");
        }
    }

    #[test]
    fn specific_values() {
        let r = parse_flow(
            "table=0,priority=100,ip,nw_dst=10.0.0.0/24,actions=output:tap1",
            Some(&names()),
        )
        .unwrap();
        assert_eq!(r.priority, 100);
        assert_eq!(r.actions, vec![Action::Output(1)]);
        assert_eq!(r.matches.field_mask(Field::NwDst), 0xffff_ff00);
        assert_eq!(
            format_flow(&r, Some(&names())),
            "table=0,priority=100,ip,nw_dst=10.0.0.0/24,actions=output:tap1"
        );
    }

    #[test]
    fn errors_name_the_token() {
        let e = parse_flow("ip,nw_dstt=1.2.3.4,actions=drop", None).unwrap_err();
        assert_eq!(e.code(), "unknown_field");
        assert!(e.to_string().contains("nw_dstt"));
        let e = parse_flow("nw_dst=1.2.3.4,actions=drop", None).unwrap_err();
        assert_eq!(e.code(), "missing_prerequisite");
        let e = parse_flow("actions=output:nosuch", Some(&names())).unwrap_err();
        assert_eq!(
            e,
            FlowParseError::UnknownPort {
                name: "nosuch".into()
            }
        );
        let e = parse_flow("actions=frobnicate", None).unwrap_err();
        assert!(e.to_string().contains("frobnicate"));
        let e = parse_flow("ip,nw_dst=10.0.0.300,actions=drop", None).unwrap_err();
        assert_eq!(e.code(), "bad_value");
        assert!(e.to_string().contains("10.0.0.300"));
        let e = parse_flow("table=2,actions=goto_table:1", None).unwrap_err();
        assert_eq!(e.code(), "goto_not_forward");
        assert_eq!(
            parse_flow("ip", None).unwrap_err().code(),
            "missing_actions"
        );
    }

    #[test]
    fn dump_form_parses_back() {
        let r = parse_flow(
            "table=3,priority=7,idle_timeout=5,udp,tp_dst=53,actions=output:1",
            None,
        )
        .unwrap();
        let s = format_flow_stats(
            &r,
            &FlowStats {
                n_packets: 3,
                n_bytes: 300,
                duration: Duration::from_millis(1500),
            },
            None,
        );
        assert!(s.contains("n_packets=3"), "{s}");
        assert_eq!(parse_flow(&s, None).unwrap(), r);
    }
}
