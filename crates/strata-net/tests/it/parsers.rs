//! Parser properties: no input panics; what we print we parse back identically.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;
use strata_net::flow::{Action, FlowRule, SetField};
use strata_net::key::{Field, FlowKey, Match, FRAG_ANY, FRAG_LATER, VLAN_PRESENT};
use strata_net::packet::{build_frame, parse_frame};
use strata_net::switch::{Domain, Effects, PortConfig, Switch};
use strata_net::syntax::{format_flow, parse_filter, parse_flow, parse_packet_spec, PortNames};
use strata_net::vxlan::{decap_ipv4, decap_payload, VxlanTunnel, VXLAN_PORT};

fn names() -> PortNames {
    let mut n = PortNames::new();
    n.insert("tap1", 1);
    n.insert("tap2", 2);
    n.insert("vx1", 10);
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn packet_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_frame(&bytes, 1);
        let _ = decap_ipv4(&bytes, VXLAN_PORT);
        let _ = decap_payload(&bytes);
    }

    /// Mutated valid frames reach deeper than random bytes.
    #[test]
    fn mutated_frames_never_panic_the_switch(
        et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100]),
        proto in prop::sample::select(vec![1u8, 6, 17, 58, 0]),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut k = FlowKey::ZERO;
        k.set(Field::EthType, et as u64);
        k.set(Field::NwProto, proto as u64);
        let mut f = build_frame(&k, 20);
        for (i, v) in flips {
            let i = i.index(f.len());
            f[i] = v;
        }
        let n = cut.index(f.len() + 1);
        f.truncate(n);
        let mut sw = Switch::default();
        sw.add_port(PortConfig::tap("a", None)).unwrap();
        sw.add_port(PortConfig::tap("b", Some(Domain::Vlan(5)))).unwrap();
        sw.add_port(PortConfig::vxlan("vx", VxlanTunnel::new(
            Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(1, 1, 1, 2)), None)).unwrap();
        sw.add_flow(Duration::ZERO, "priority=5,actions=set_field:7->reg0,normal").unwrap();
        sw.add_flow(Duration::ZERO,
            "priority=9,tcp,actions=set_field:1.2.3.4->ip_dst,set_field:9->tp_dst,output:2,set_tunnel:0,output:3").unwrap();
        let mut fx = Effects::new();
        for port in 1..=3 {
            let _ = sw.receive(Duration::ZERO, port, &f, &mut fx);
        }
    }

    #[test]
    fn flow_parser_never_panics(s in "[a-z0-9_=,:./>\\- ]{0,80}") {
        let n = names();
        let _ = parse_flow(&s, Some(&n));
        let _ = parse_filter(&s, Some(&n), false);
        let _ = parse_packet_spec(&s, Some(&n));
    }

    #[test]
    fn flow_parser_never_panics_on_near_valid_text(
        parts in prop::collection::vec(prop::sample::select(vec![
            "table=", "priority=", "ip", "tcp", "udp6", "arp", "nw_dst=", "10.0.0.0/", "24",
            "ipv6_src=", "::1/", "129", "tp_dst=", "0x50/0xfff0", "dl_vlan=", "4096", "0xffff",
            "actions=", "output:", "tap1", "goto_table:", "set_field:", "->", "nw_dst", "reg9",
            "write_metadata:", "0x1/", ",", "=", ":", "/", "dl_src=", "02:00:00:00:00:01",
            "push_vlan:", "mod_vlan_vid:", "learn_mac", "normal", "in_port=", "drop", " ",
        ]), 0..16),
    ) {
        let s: String = parts.concat();
        let n = names();
        if let Ok(r) = parse_flow(&s, Some(&n)) {
            // Anything accepted prints and parses back to itself.
            let f = format_flow(&r, Some(&n));
            prop_assert_eq!(parse_flow(&f, Some(&n)).ok(), Some(r));
        }
    }

    #[test]
    fn format_then_parse_is_identity(r in rule_strategy(), use_names in any::<bool>()) {
        let n = names();
        let names_opt = use_names.then_some(&n);
        let s = format_flow(&r, names_opt);
        let back = parse_flow(&s, names_opt);
        prop_assert_eq!(back.as_ref(), Ok(&r), "text: {}", s);
    }

    #[test]
    fn build_then_parse_is_identity(k in key_strategy()) {
        let f = build_frame(&k, 7);
        let (p, _) = parse_frame(&f, k.in_port()).unwrap();
        prop_assert_eq!(p, k);
    }
}

fn key_strategy() -> impl Strategy<Value = FlowKey> {
    (
        any::<u32>(),
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        prop::option::of((0u16..4096, 0u16..8)),
        prop::sample::select(vec![0x0800u16, 0x86dd]),
        prop::sample::select(vec![1u8, 6, 17, 58, 99]),
        any::<u8>(),
        1u8..=255,
        any::<(u32, u32)>(),
        any::<(u128, u128)>(),
        any::<(u16, u16)>(),
        0u8..3,
    )
        .prop_map(
            |(port, src, dst, vlan, et, proto, tos, ttl, v4, v6, tp, frag)| {
                let mut k = FlowKey::ZERO;
                k.set(Field::InPort, port as u64);
                k.set(Field::EthSrc, strata_net::key::mac_from_bytes(src));
                k.set(Field::EthDst, strata_net::key::mac_from_bytes(dst));
                if let Some((vid, pcp)) = vlan {
                    k.set(Field::VlanTci, (VLAN_PRESENT | vid | (pcp << 13)) as u64);
                }
                k.set(Field::EthType, et as u64);
                let proto = if et == 0x86dd && proto == 1 {
                    58
                } else if et == 0x0800 && proto == 58 {
                    1
                } else {
                    proto
                };
                k.set(Field::NwProto, proto as u64);
                k.set(Field::NwTos, tos as u64);
                k.set(Field::NwTtl, ttl as u64);
                let mut has_l4 = true;
                if et == 0x0800 {
                    k.set(Field::NwSrc, v4.0 as u64);
                    k.set(Field::NwDst, v4.1 as u64);
                    let fl = match frag {
                        0 => 0,
                        1 => FRAG_ANY,
                        _ => FRAG_ANY | FRAG_LATER,
                    };
                    k.set(Field::NwFrag, fl as u64);
                    has_l4 = fl & FRAG_LATER == 0;
                } else {
                    k.set_ipv6_src(Ipv6Addr::from(v6.0));
                    k.set_ipv6_dst(Ipv6Addr::from(v6.1));
                }
                if has_l4 && proto != 99 {
                    let (a, b) = if proto == 1 || proto == 58 {
                        (tp.0 & 0xff, tp.1 & 0xff)
                    } else {
                        tp
                    };
                    k.set(Field::TpSrc, a as u64);
                    k.set(Field::TpDst, b as u64);
                }
                k
            },
        )
}

fn mac_strategy() -> impl Strategy<Value = u64> {
    any::<u64>().prop_map(|v| v & 0xffff_ffff_ffff)
}

fn set_field_strategy(ip: bool, v6: bool, l4: bool, tagged: bool) -> BoxedStrategy<SetField> {
    let mut opts: Vec<BoxedStrategy<SetField>> = vec![
        mac_strategy().prop_map(SetField::EthSrc).boxed(),
        mac_strategy().prop_map(SetField::EthDst).boxed(),
        any::<u64>().prop_map(SetField::TunId).boxed(),
        (0u8..8, any::<u32>())
            .prop_map(|(r, v)| SetField::Reg(r, v))
            .boxed(),
        any::<u64>().prop_map(SetField::Metadata).boxed(),
    ];
    if ip {
        opts.push(
            any::<u32>()
                .prop_map(|a| SetField::NwSrc(Ipv4Addr::from(a)))
                .boxed(),
        );
        opts.push(
            any::<u32>()
                .prop_map(|a| SetField::NwDst(Ipv4Addr::from(a)))
                .boxed(),
        );
    }
    if v6 {
        opts.push(
            any::<u128>()
                .prop_map(|a| SetField::Ipv6Src(Ipv6Addr::from(a)))
                .boxed(),
        );
        opts.push(
            any::<u128>()
                .prop_map(|a| SetField::Ipv6Dst(Ipv6Addr::from(a)))
                .boxed(),
        );
    }
    if l4 {
        opts.push(any::<u16>().prop_map(SetField::TpSrc).boxed());
        opts.push(any::<u16>().prop_map(SetField::TpDst).boxed());
    }
    if tagged {
        opts.push((0u16..4096).prop_map(SetField::VlanVid).boxed());
        opts.push((0u8..8).prop_map(SetField::VlanPcp).boxed());
    }
    prop::strategy::Union::new(opts).boxed()
}

/// A reply action with the match kind it needs (0 ip, 1 icmp echo request, 2 arp request,
/// 3 udp to port 67).
fn reply_strategy() -> BoxedStrategy<(u8, Action)> {
    let host = (1u32..0xdfff_ffff)
        .prop_filter("a host", |a| a >> 24 != 127)
        .prop_map(Ipv4Addr::from);
    let unicast = mac_strategy()
        .prop_map(|m| (m & !0x0100_0000_0000) | 2)
        .boxed();
    let dhcp = (
        (host.clone(), host.clone(), unicast.clone()),
        (
            prop::option::of(0u32..=32),
            prop::option::of(host.clone()),
            prop::collection::vec(host.clone(), 0..4),
            1u32..,
            prop::option::of(68u16..),
            prop::option::of("[a-z0-9]{1,10}(\\.[a-z0-9-]{1,10}){0,3}"),
        ),
    )
        .prop_map(|((y, s, mac), (p, r, dns, lease, mtu, dom))| {
            let mut c = strata_net::respond::DhcpConfig::new(y, s, mac);
            c.netmask = p.map(|p| Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0)));
            c.router = r;
            c.dns = dns;
            c.lease = lease;
            c.mtu = mtu;
            c.domain = dom;
            (3u8, Action::DhcpReply(Box::new(c)))
        });
    prop_oneof![
        (
            prop::sample::select(vec![(11u8, 0u8), (11, 1), (3, 0), (3, 1), (3, 3), (3, 13)]),
            host
        )
            .prop_map(|((t, c), src)| (
                0u8,
                Action::IcmpError {
                    icmp_type: t,
                    code: c,
                    src: src.into()
                }
            )),
        (
            prop::sample::select(vec![(3u8, 0u8), (3, 1), (1, 0), (1, 4), (1, 6)]),
            any::<u128>()
        )
            .prop_map(|((t, c), src)| (
                4u8,
                Action::IcmpError {
                    icmp_type: t,
                    code: c,
                    src: Ipv6Addr::from(src).into()
                }
            )),
        Just((1u8, Action::IcmpEchoReply)),
        unicast.prop_map(|m| (2u8, Action::ArpReply(m))),
        dhcp,
    ]
    .boxed()
}

fn action_strategy(ip: bool, v6: bool, l4: bool, tagged: bool) -> BoxedStrategy<Action> {
    if ip || v6 {
        return prop_oneof![
            9 => action_strategy_base(ip, v6, l4, tagged),
            1 => Just(Action::DecTtl),
        ]
        .boxed();
    }
    action_strategy_base(ip, v6, l4, tagged)
}

fn action_strategy_base(ip: bool, v6: bool, l4: bool, tagged: bool) -> BoxedStrategy<Action> {
    prop_oneof![
        (1u32..0xffff_ff00).prop_map(Action::Output),
        Just(Action::OutputInPort),
        Just(Action::Flood),
        Just(Action::Normal),
        Just(Action::LearnMac),
        Just(Action::PopVlan),
        prop::sample::select(vec![0x8100u16, 0x88a8]).prop_map(Action::PushVlan),
        (0u16..4096).prop_map(Action::ModVlanVid),
        (0u8..8).prop_map(Action::ModVlanPcp),
        any::<u64>().prop_map(Action::SetTunnel),
        (any::<u64>(), any::<u64>()).prop_map(|(v, m)| Action::WriteMetadata {
            value: v & m,
            mask: m
        }),
        set_field_strategy(ip, v6, l4, tagged).prop_map(Action::SetField),
        ct_strategy().prop_map(Action::Ct),
        (1u32..=u32::MAX).prop_map(Action::Meter),
    ]
    .boxed()
}

fn ct_strategy() -> impl Strategy<Value = strata_net::flow::CtAction> {
    use strata_net::flow::{CtAction, CtNat, NatRange};
    let range = (any::<u32>(), 0u32..4, 0u16..3, any::<u16>(), any::<u16>()).prop_map(
        |(ip, n, kind, p, q)| {
            let ip_lo = std::net::Ipv4Addr::from(ip.min(u32::MAX - 4));
            let ip_hi = std::net::Ipv4Addr::from(u32::from(ip_lo) + n);
            let (port_lo, port_hi) = match kind {
                0 => (0, 0),
                _ => (p.clamp(1, q.max(1)), q.max(p).max(1)),
            };
            NatRange {
                ip_lo,
                ip_hi,
                port_lo,
                port_hi,
            }
        },
    );
    let nat = prop_oneof![
        Just(None),
        Just(Some(CtNat::Existing)),
        range.clone().prop_map(|r| Some(CtNat::Src(r))),
        range.prop_map(|r| Some(CtNat::Dst(r))),
        any::<u32>().prop_map(|g| Some(CtNat::Lb(g))),
    ];
    (
        any::<bool>(),
        any::<u16>(),
        prop::option::of(0u8..=254),
        prop::option::of((any::<u32>(), any::<u32>())),
        nat,
    )
        .prop_map(|(commit, zone, table, mark, nat)| {
            // exec, nat(src|dst=) and lb need commit.
            let needs =
                mark.is_some() || matches!(nat, Some(CtNat::Src(_) | CtNat::Dst(_) | CtNat::Lb(_)));
            CtAction {
                commit: commit || needs,
                zone,
                table,
                mark: mark.map(|(v, m)| (v & m, m)),
                nat,
            }
        })
}

fn prefix_mask32(p: u32) -> u32 {
    if p == 0 {
        0
    } else {
        u32::MAX << (32 - p)
    }
}

fn rule_strategy() -> impl Strategy<Value = FlowRule> {
    (
        prop::sample::select(vec![
            None,
            Some(0x0800u16),
            Some(0x86dd),
            Some(0x0806),
            Some(0x88cc),
        ]),
        prop::sample::select(vec![None, Some(6u8), Some(17), Some(1), Some(58), Some(47)]),
        any::<bool>(),
    )
        .prop_flat_map(|(et, proto, tagged)| {
            let ip = matches!(et, Some(0x0800) | Some(0x86dd));
            let proto = if ip { proto } else { None };
            let l4 = ip && matches!(proto, Some(6) | Some(17) | Some(1) | Some(58));
            let tcpudp = ip && matches!(proto, Some(6) | Some(17));
            let v4ish = matches!(et, Some(0x0800) | Some(0x0806));
            let v6 = et == Some(0x86dd);
            (
                (
                    0u8..=254,
                    any::<u16>(),
                    any::<u64>(),
                    any::<u16>(),
                    any::<u16>(),
                ),
                (
                    prop::option::of(1u32..0xffff_ff00),
                    prop::option::of((
                        mac_strategy(),
                        prop::sample::select(vec![
                            0xffff_ffff_ffffu64,
                            0x0100_0000_0000,
                            0xffff_ff00_0000,
                        ]),
                    )),
                    prop::option::of(mac_strategy()),
                    prop::option::of((0u16..4096, prop::option::of(0u16..8))),
                    prop::option::of((any::<u32>(), 0u32..=32, any::<bool>())),
                    prop::option::of((any::<u128>(), 0u32..=128)),
                    prop::option::of((
                        any::<u16>(),
                        prop::sample::select(vec![0xffffu16, 0xff00, 0x0001]),
                    )),
                    prop::option::of((any::<u64>(), any::<u64>())),
                    prop::option::of((0u8..8, any::<u32>())),
                    prop::option::of(any::<u64>()),
                ),
                prop::collection::vec(
                    action_strategy(v4ish && et == Some(0x0800), v6, tcpudp, tagged),
                    0..4,
                ),
                prop::option::of(any::<u8>()),
                Just((et, proto, tagged, ip, l4, v4ish, v6)),
                prop::option::weighted(0.2, reply_strategy()),
            )
        })
        .prop_map(
            |((table, prio, cookie, idle, hard), fields, mut actions, goto, flags, reply)| {
                let (et, proto, tagged, ip, l4, v4ish, v6) = flags;
                let (port, src, dst, vlan, nw, v6addr, tp, meta, reg, tun) = fields;
                let mut m = Match::ANY;
                if let Some(p) = port {
                    m.set_exact(Field::InPort, p as u64);
                }
                if let Some((a, mask)) = src {
                    m.set_masked(Field::EthSrc, a, mask);
                }
                if let Some(a) = dst {
                    m.set_exact(Field::EthDst, a);
                }
                if tagged {
                    let (vid, pcp) = vlan.unwrap_or((7, None));
                    m.set_masked(Field::VlanTci, (VLAN_PRESENT | vid) as u64, 0x1fff);
                    if let Some(p) = pcp {
                        m.set_masked(Field::VlanTci, (VLAN_PRESENT | (p << 13)) as u64, 0xf000);
                    }
                } else if vlan.is_some() {
                    m.set_masked(Field::VlanTci, 0, 0xffff);
                }
                if let Some(et) = et {
                    m.set_exact(Field::EthType, et as u64);
                }
                if let Some(p) = proto {
                    m.set_exact(Field::NwProto, p as u64);
                }
                if v4ish {
                    if let Some((a, plen, dst)) = nw {
                        let f = if dst { Field::NwDst } else { Field::NwSrc };
                        m.set_masked(f, a as u64, prefix_mask32(plen) as u64);
                    }
                }
                if v6 {
                    if let Some((a, plen)) = v6addr {
                        let mask = if plen == 0 {
                            0
                        } else {
                            u128::MAX << (128 - plen)
                        };
                        m.set_masked(Field::Ipv6DstHi, (a >> 64) as u64, (mask >> 64) as u64);
                        m.set_masked(Field::Ipv6DstLo, a as u64, mask as u64);
                    }
                }
                if l4 {
                    if let Some((v, mask)) = tp {
                        m.set_masked(Field::TpDst, v as u64, mask as u64);
                    }
                }
                let _ = ip;
                if let Some((v, mask)) = meta {
                    m.set_masked(Field::Metadata, v, mask);
                }
                if let Some((r, v)) = reg {
                    m.set_exact(Field::Reg(r), v as u64);
                }
                if let Some(t) = tun {
                    m.set_exact(Field::TunId, t);
                }
                if let Some(g) = goto {
                    if g > table && g <= 254 {
                        actions.push(Action::GotoTable(g));
                    }
                }
                if let Some((kind, a)) = reply {
                    // The reply's prerequisites, outputs around it.
                    let mut r = Match::ANY;
                    if let Some(p) = port {
                        r.set_exact(Field::InPort, p as u64);
                    }
                    let (et, proto, field) = match kind {
                        0 => (0x0800, None, None),
                        4 => (0x86dd, None, None),
                        1 => (0x0800, Some(1), Some((Field::TpSrc, 8))),
                        2 => (0x0806, None, Some((Field::ArpOp, 1))),
                        _ => (0x0800, Some(17), Some((Field::TpDst, 67))),
                    };
                    r.set_exact(Field::EthType, et);
                    if let Some(p) = proto {
                        r.set_exact(Field::NwProto, p);
                    }
                    if let Some((f, v)) = field {
                        r.set_exact(f, v);
                    }
                    m = r;
                    actions.retain(|a| matches!(a, Action::Output(_) | Action::OutputInPort));
                    actions.push(a);
                    actions.push(Action::OutputInPort);
                }
                FlowRule {
                    table,
                    priority: prio,
                    cookie,
                    idle_timeout: idle,
                    hard_timeout: hard,
                    matches: m,
                    actions,
                }
            },
        )
        .prop_filter("valid rules only", |r| r.validate().is_ok())
}
