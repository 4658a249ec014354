//! Offload hints (`offload.rs`): which results the engine says may be repeated without it,
//! when `Switch::generation` moves, and how counts given back land in rules, ports and the
//! MAC table.

use std::net::Ipv4Addr;
use std::time::Duration;

use strata_net::key::{Field, FlowKey};
use strata_net::packet::build_frame;
use strata_net::probe::ProbeTarget;
use strata_net::{Effects, OffloadCredit, PortConfig, Switch};

use crate::tcp_key;

const A: u64 = 0x0200_0000_000a;
const B: u64 = 0x0200_0000_000b;

fn ab() -> FlowKey {
    tcp_key(
        A,
        B,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        80,
    )
}

fn ba() -> FlowKey {
    tcp_key(
        B,
        A,
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 1),
        40000,
    )
}

/// A switch with ports a (1), b (2), c (3) and the given flows.
fn switch(flows: &[&str]) -> Switch {
    let mut sw = Switch::default();
    for p in ["a", "b", "c"] {
        sw.add_port(PortConfig::tap(p, None)).unwrap();
    }
    for f in flows {
        sw.add_flow(Duration::ZERO, f).unwrap();
    }
    sw
}

fn hinted(sw: &mut Switch, port: u32, k: &FlowKey) -> Option<strata_net::Offload> {
    let mut fx = Effects::new();
    fx.set_offload_hints(true);
    sw.receive(Duration::from_secs(1), port, &build_frame(k, 10), &mut fx);
    fx.offload().cloned()
}

#[test]
fn an_explicit_output_with_rewrites_is_hinted() {
    let mut sw = switch(&["tcp,actions=set_field:10.9.9.9->nw_dst,mod_vlan_vid:7,output:b"]);
    let o = hinted(&mut sw, 1, &ab()).expect("a hint");
    assert_eq!((o.in_port, o.out_port), (1, 2));
    assert_eq!(o.key.nw_dst(), Ipv4Addr::new(10, 0, 0, 2), "as parsed");
    assert_eq!(o.out_key.nw_dst(), Ipv4Addr::new(10, 9, 9, 9), "as it left");
    assert_eq!(o.out_key.vlan_vid(), Some(7));
    assert_eq!(o.out_tpid, 0x8100);
    assert_eq!(o.rules.len(), 1);
    assert_eq!(o.learn, None);
    assert_eq!(o.generation, sw.generation());
    // Without asking, no hint.
    let mut fx = Effects::new();
    sw.receive(Duration::ZERO, 1, &build_frame(&ab(), 10), &mut fx);
    assert!(fx.offload().is_none());
}

#[test]
fn an_output_to_a_vxlan_port_is_hinted_with_its_encapsulation() {
    let mut sw = Switch::default();
    let vni = Some(strata_net::Domain::Vni(77));
    sw.add_port(PortConfig::tap("a", vni).with_number(11))
        .unwrap();
    let t = strata_net::vxlan::VxlanTunnel::new(
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(192, 0, 2, 2),
    );
    sw.add_port(PortConfig::vxlan("vx", t, Some(77)).with_number(12))
        .unwrap();
    sw.add_flow(Duration::ZERO, "tcp,actions=output:vx")
        .unwrap();
    let o = hinted(&mut sw, 11, &ab()).expect("a hint");
    assert_eq!(o.out_port, 12);
    let e = o.encap.expect("the encapsulation");
    assert_eq!((e.vni, e.tunnel), (77, t));
    // The same flow hash every time: the port layer derives the same source port from it.
    let again = hinted(&mut sw, 11, &ab()).unwrap().encap.unwrap();
    assert_eq!(again.flow_hash, e.flow_hash);
    // A plain output has none.
    let mut sw = switch(&["tcp,actions=output:b"]);
    assert_eq!(hinted(&mut sw, 1, &ab()).unwrap().encap, None);
}

#[test]
fn normal_is_hinted_once_the_destination_is_learned() {
    let mut sw = switch(&["actions=normal"]);
    assert!(hinted(&mut sw, 1, &ab()).is_none(), "b unknown: a flood");
    let o = hinted(&mut sw, 2, &ba()).expect("a learned");
    assert_eq!(o.out_port, 1);
    assert_eq!(o.learn, Some((None, B)), "the source it keeps teaching");
    assert!(hinted(&mut sw, 1, &ab()).is_some());
}

#[test]
fn what_the_engine_must_see_is_not_hinted() {
    for flows in [
        &["actions=flood"][..],
        &["actions=output:b,output:c"],
        &["ip,actions=ct(commit),output:b"],
        &["actions=meter:1,output:b"],
        &["ip,actions=dec_ttl,output:b"],
        &["idle_timeout=60,actions=output:b"],
        &["actions=in_port"],
        &["actions=drop"],
    ] {
        let mut sw = switch(flows);
        assert!(hinted(&mut sw, 1, &ab()).is_none(), "{flows:?}");
    }
    // A hard timeout is fine: the rule's removal moves the generation.
    let mut sw = switch(&["hard_timeout=60,actions=output:b"]);
    assert!(hinted(&mut sw, 1, &ab()).is_some());
}

#[test]
fn a_probed_ports_echo_replies_are_not_hinted() {
    let mut sw = switch(&["actions=output:b"]);
    let mut reply = FlowKey::ZERO;
    reply.set(Field::EthType, 0x0800);
    reply.set(Field::NwProto, 1);
    reply.set(Field::NwTtl, 64);
    reply.set(Field::NwSrc, 0x0a00_0001);
    reply.set(Field::NwDst, 0x0a00_0002);
    assert!(hinted(&mut sw, 1, &reply).is_some(), "not probed yet");
    let g = sw.generation();
    let t = ProbeTarget {
        src_mac: [2, 0, 0, 0, 0, 1],
        src_ip: Ipv4Addr::new(10, 0, 0, 254),
        dst_mac: [2, 0, 0, 0, 0, 9],
        dst_ip: Ipv4Addr::new(10, 0, 0, 1),
    };
    assert!(sw.probe(Duration::ZERO, 1, &t, &mut Effects::new()));
    assert!(sw.generation() > g, "the first probe voids earlier hints");
    assert!(hinted(&mut sw, 1, &reply).is_none());
}

#[test]
fn the_generation_moves_with_rules_ports_and_moved_addresses_only() {
    let mut sw = switch(&["actions=normal"]);
    hinted(&mut sw, 1, &ab());
    hinted(&mut sw, 2, &ba());
    let g = sw.generation();
    hinted(&mut sw, 1, &ab());
    assert_eq!(
        sw.generation(),
        g,
        "forwarding and refreshing change nothing"
    );
    sw.expire(Duration::from_secs(2));
    assert_eq!(sw.generation(), g, "nothing expired");
    // B appears on c: a move.
    hinted(&mut sw, 3, &ba());
    assert!(sw.generation() > g);
    let g = sw.generation();
    sw.add_flow(Duration::ZERO, "priority=9,udp,actions=drop")
        .unwrap();
    assert!(sw.generation() > g, "a rule");
    let g = sw.generation();
    sw.del_flows("udp", false).unwrap();
    assert!(sw.generation() > g, "a deletion");
    let g = sw.generation();
    sw.add_port(PortConfig::tap("d", None)).unwrap();
    assert!(sw.generation() > g, "a port");
    let g = sw.generation();
    sw.expire(Duration::from_secs(400));
    assert!(sw.generation() > g, "addresses aged out");
}

#[test]
fn credits_count_as_forwarded_packets() {
    let mut sw = switch(&["actions=normal"]);
    hinted(&mut sw, 2, &ba());
    let o = hinted(&mut sw, 1, &ab()).unwrap();
    let before = (sw.port_stats(1).unwrap(), sw.port_stats(2).unwrap());
    let rule = |sw: &Switch| sw.dump_flows(Duration::ZERO)[0].stats;
    let r0 = rule(&sw);
    sw.credit_offloaded(&OffloadCredit {
        in_port: 1,
        out_port: 2,
        rules: &o.rules,
        packets: 7,
        rx_bytes: 700,
        tx_bytes: 728,
        learn: o.learn,
        ct: &o.ct,
        ip_bytes: 700 - 7 * 14,
        last_used: Duration::from_secs(250),
    });
    let (a, b) = (sw.port_stats(1).unwrap(), sw.port_stats(2).unwrap());
    assert_eq!(a.rx_packets - before.0.rx_packets, 7);
    assert_eq!(a.rx_bytes - before.0.rx_bytes, 700);
    assert_eq!(b.tx_packets - before.1.tx_packets, 7);
    assert_eq!(b.tx_bytes - before.1.tx_bytes, 728);
    let r1 = rule(&sw);
    assert_eq!(
        (r1.n_packets - r0.n_packets, r1.n_bytes - r0.n_bytes),
        (7, 700)
    );
    // A's address was refreshed at 250 s: still known at 500 s (ageing is 300 s).
    let g = sw.generation();
    sw.expire(Duration::from_secs(500));
    assert_eq!(
        sw.mac_table().lookup(None, A, Duration::from_secs(500)),
        Some(1)
    );
    assert!(sw.generation() > g, "B, never refreshed, aged out");
}

// Conntrack-established results (docs/net-engine.md, "Conntrack-established flows").

mod ct {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use strata_net::conntrack::{ConnProto, Dir, TcpState};
    use strata_net::csum;
    use strata_net::l4::tcp_flags::{ACK, FIN, SYN};
    use strata_net::switch::Disposition;
    use strata_net::{CtUse, Effects, Offload, OffloadCredit, Switch};

    use super::{switch, A, B};
    use crate::ct_util;

    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const S: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// The shape the tenant-network compiler gives a security group: everything through
    /// conntrack with a recirculation, established traffic through both ways, new TCP
    /// connections from a to port 80 committed, the rest dropped (invalid packets included).
    const SG: &[&str] = &[
        "table=0,priority=100,ip,actions=ct(zone=7,table=1)",
        "table=0,priority=10,actions=drop",
        "table=1,priority=100,ct_state=+trk+est,in_port=a,actions=ct(commit,zone=7),output:b",
        "table=1,priority=100,ct_state=+trk+est,in_port=b,actions=output:a",
        "table=1,priority=90,ct_state=+trk+new,in_port=a,tcp,tp_dst=80,actions=ct(commit,zone=7),output:b",
        "table=1,priority=1,actions=drop",
    ];

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        smac: u64,
        dmac: u64,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: usize,
    ) -> Vec<u8> {
        let l4 = ct_util::tcp(sport, dport, seq, ack, flags, 65535, &[], payload);
        let ip = ct_util::ip(IpAddr::V4(src), IpAddr::V4(dst), 6, &l4);
        let mut f = Vec::new();
        f.extend_from_slice(&dmac.to_be_bytes()[2..]);
        f.extend_from_slice(&smac.to_be_bytes()[2..]);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        let hc = csum::ipv4_header_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&hc.to_be_bytes());
        assert!(csum::fill_l4_checksum(&mut f, 14, 34));
        f
    }

    fn out(sw: &mut Switch, now: Duration, port: u32, f: &[u8]) -> (Disposition, Option<Offload>) {
        let mut fx = Effects::new();
        fx.set_offload_hints(true);
        let d = sw.receive(now, port, f, &mut fx);
        (d, fx.offload().cloned())
    }

    const T: Duration = Duration::from_secs(1);

    /// A switch with the group's flows and one connection a:40000 -> b:80 established
    /// (client's next sequence 101, server's 501).
    fn established() -> Switch {
        let mut sw = switch(SG);
        let syn = tcp(A, B, C, 40000, S, 80, 100, 0, SYN, 0);
        let (d, o) = out(&mut sw, T, 1, &syn);
        assert_eq!(d, Disposition::Forwarded(1));
        assert!(o.is_none(), "a SYN commits: not hinted");
        let synack = tcp(B, A, S, 80, C, 40000, 500, 101, SYN | ACK, 0);
        assert!(out(&mut sw, T, 2, &synack).1.is_none(), "SYN-ACK: syn_recv");
        sw
    }

    fn conn(sw: &Switch) -> strata_net::conntrack::ConnInfo {
        let v: Vec<_> = sw.conntrack().entries().collect();
        assert_eq!(v.len(), 1);
        v[0]
    }

    #[test]
    fn established_results_are_hinted_with_their_connections_over_every_pass() {
        let mut sw = established();
        let ack = tcp(A, B, C, 40000, S, 80, 101, 501, ACK, 0);
        let (d, o) = out(&mut sw, T, 1, &ack);
        assert_eq!(d, Disposition::Forwarded(1));
        let o = o.expect("the handshake's last ACK establishes it: hinted");
        let id = conn(&sw).id;
        assert_eq!(
            o.ct,
            vec![
                CtUse {
                    zone: 7,
                    id,
                    dir: Dir::Original
                },
                CtUse {
                    zone: 7,
                    id,
                    dir: Dir::Original
                },
            ],
            "both ct steps (table 0's and the no-op commit)"
        );
        assert_eq!(
            o.rules.len(),
            2,
            "table 0's rule and table 1's: {:?}",
            o.rules
        );
        assert_eq!(o.out_port, 2);
        let data = tcp(B, A, S, 80, C, 40000, 501, 101, ACK, 100);
        let o = out(&mut sw, T, 2, &data).1.expect("a reply: hinted");
        assert_eq!(
            o.ct,
            vec![CtUse {
                zone: 7,
                id,
                dir: Dir::Reply
            }]
        );
        assert_eq!(o.out_port, 1);
        assert_eq!(conn(&sw).proto, ConnProto::Tcp(TcpState::Established));
    }

    #[test]
    fn what_conntrack_must_see_is_not_hinted() {
        // New UDP (unanswered): committed, not hinted; answered: hinted both ways.
        let mut sw = switch(&[
            "table=0,priority=100,ip,actions=ct(zone=3,table=1)",
            "table=1,priority=100,ct_state=+trk+est,actions=normal",
            "table=1,priority=90,ct_state=+trk+new,in_port=a,actions=ct(commit,zone=3),normal",
            "table=1,priority=1,actions=drop",
            "table=0,priority=1,actions=normal",
        ]);
        let udp = |smac, dmac, src, sport, dst, dport| {
            let l4 = ct_util::udp(sport, dport, 20);
            let ip = ct_util::ip(IpAddr::V4(src), IpAddr::V4(dst), 17, &l4);
            let mut f = Vec::new();
            f.extend_from_slice(&u64::to_be_bytes(dmac)[2..]);
            f.extend_from_slice(&u64::to_be_bytes(smac)[2..]);
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&ip);
            let hc = csum::ipv4_header_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&hc.to_be_bytes());
            f
        };
        let q = udp(A, B, C, 5000, S, 53);
        let r = udp(B, A, S, 53, C, 5000);
        assert!(out(&mut sw, T, 1, &q).1.is_none(), "new: commits");
        assert!(out(&mut sw, T, 1, &q).1.is_none(), "still new (unanswered)");
        assert!(
            out(&mut sw, T, 2, &r).1.is_some(),
            "the answer: established"
        );
        assert!(
            out(&mut sw, T, 1, &q).1.is_some(),
            "now established both ways"
        );
        // A mark change on an established packet is not hinted (the next one is).
        let mut sw = switch(&[
            "table=0,priority=100,ip,actions=ct(zone=3,table=1)",
            "table=1,priority=100,ct_state=+trk+est,ct_mark=0x2,actions=normal",
            "table=1,priority=90,ct_state=+trk+est,actions=ct(commit,zone=3,exec(set_field:0x2->ct_mark)),normal",
            "table=1,priority=80,ct_state=+trk+new,actions=ct(commit,zone=3),normal",
            "table=0,priority=1,actions=normal",
        ]);
        out(&mut sw, T, 1, &q);
        assert!(
            out(&mut sw, T, 2, &r).1.is_none(),
            "the mark changes: not hinted"
        );
        let o = out(&mut sw, T, 1, &q)
            .1
            .expect("the mark is current: hinted");
        assert_eq!(o.rules.len(), 2);
        // ICMP echo: the key does not name the connection (no echo id).
        let mut sw = switch(&[
            "table=0,priority=100,ip,actions=ct(zone=3,table=1)",
            "table=1,priority=100,ct_state=+trk,actions=ct(commit,zone=3),normal",
            "table=0,priority=1,actions=normal",
        ]);
        let echo = |smac, dmac, src, dst, ty: u8| {
            let mut l4 = ct_util::echo(false, ty == 8, 0x1234);
            let c = csum::fold(csum::ones_sum(&l4, 0));
            l4[2..4].copy_from_slice(&(!c).to_be_bytes());
            let ip = ct_util::ip(IpAddr::V4(src), IpAddr::V4(dst), 1, &l4);
            let mut f = Vec::new();
            f.extend_from_slice(&u64::to_be_bytes(dmac)[2..]);
            f.extend_from_slice(&u64::to_be_bytes(smac)[2..]);
            f.extend_from_slice(&[0x08, 0x00]);
            f.extend_from_slice(&ip);
            f
        };
        out(&mut sw, T, 1, &echo(A, B, C, S, 8));
        out(&mut sw, T, 2, &echo(B, A, S, C, 0));
        assert_eq!(sw.conntrack().len(), 1);
        assert!(out(&mut sw, T, 1, &echo(A, B, C, S, 8)).1.is_none());
    }

    #[test]
    fn credits_count_on_the_connection_and_keep_it_alive() {
        let mut sw = established();
        let ack = tcp(A, B, C, 40000, S, 80, 101, 501, ACK, 0);
        let o = out(&mut sw, T, 1, &ack).1.unwrap();
        let before = conn(&sw);
        let est0 = sw.conntrack().counters().established;
        let last = Duration::from_secs(5000);
        sw.credit_offloaded(&OffloadCredit {
            in_port: 1,
            out_port: 2,
            rules: &o.rules,
            packets: 5,
            rx_bytes: 5 * 154,
            tx_bytes: 5 * 154,
            learn: o.learn,
            ct: &o.ct,
            ip_bytes: 5 * 140,
            last_used: last,
        });
        let after = conn(&sw);
        // Two ct steps per packet, as the engine counts them.
        assert_eq!(after.packets[0] - before.packets[0], 10);
        assert_eq!(after.bytes[0] - before.bytes[0], 1400);
        assert_eq!(after.packets[1], before.packets[1]);
        assert_eq!(sw.conntrack().counters().established - est0, 10);
        let est = sw.conntrack().config().timeouts.tcp_established;
        assert_eq!(after.deadline, last + est, "refreshed from the last packet");
        // A credit for a connection that is gone counts nothing and does not panic.
        sw.conntrack_mut().flush_zone(7);
        sw.credit_offloaded(&OffloadCredit {
            in_port: 1,
            out_port: 2,
            rules: &o.rules,
            packets: 1,
            rx_bytes: 154,
            tx_bytes: 154,
            learn: None,
            ct: &o.ct,
            ip_bytes: 140,
            last_used: last,
        });
        assert!(sw.conntrack().is_empty());
    }

    /// After packets went by in the kernel, the sequence numbers moved unseen: the close
    /// that comes back through the engine must still be accepted (and is not for a
    /// connection never offloaded: the window check calls it invalid).
    #[test]
    fn the_close_after_offloaded_data_is_accepted() {
        for credited in [false, true] {
            let mut sw = established();
            let ack = tcp(A, B, C, 40000, S, 80, 101, 501, ACK, 0);
            let r = tcp(B, A, S, 80, C, 40000, 501, 101, ACK, 0);
            if !credited {
                // No hints: the connection is never offloaded.
                let mut fx = Effects::new();
                sw.receive(T, 1, &ack, &mut fx);
                fx.clear();
                sw.receive(T, 2, &r, &mut fx);
            } else {
                let o = out(&mut sw, T, 1, &ack).1.unwrap();
                let ob = out(&mut sw, T, 2, &r).1.unwrap();
                for (h, p) in [(&o, 3000u64), (&ob, 1500)] {
                    sw.credit_offloaded(&OffloadCredit {
                        in_port: h.in_port,
                        out_port: h.out_port,
                        rules: &h.rules,
                        packets: p,
                        rx_bytes: p * 1514,
                        tx_bytes: p * 1514,
                        learn: h.learn,
                        ct: &h.ct,
                        ip_bytes: p * 1500,
                        last_used: Duration::from_secs(2),
                    });
                }
            }
            // The client sent 3000 full segments (1448 bytes each) the engine never saw.
            let far = 101u32.wrapping_add(3000 * 1448);
            let fin = tcp(A, B, C, 40000, S, 80, far, 501, FIN | ACK, 0);
            let (d, _) = out(&mut sw, Duration::from_secs(3), 1, &fin);
            let fin_b = tcp(B, A, S, 80, C, 40000, 501, far + 1, FIN | ACK, 0);
            let (d2, _) = out(&mut sw, Duration::from_secs(3), 2, &fin_b);
            let last = tcp(A, B, C, 40000, S, 80, far + 1, 502, ACK, 0);
            let (d3, _) = out(&mut sw, Duration::from_secs(3), 1, &last);
            if credited {
                assert_eq!(d, Disposition::Forwarded(1), "FIN from a");
                assert_eq!(d2, Disposition::Forwarded(1), "FIN from b");
                assert_eq!(d3, Disposition::Forwarded(1), "the last ACK");
                assert_eq!(conn(&sw).proto, ConnProto::Tcp(TcpState::TimeWait));
                assert_eq!(sw.conntrack().counters().invalid_total(), 0);
            } else {
                assert!(matches!(d, Disposition::Dropped(_)), "out of window: {d:?}");
            }
        }
    }

    #[test]
    fn changes_of_an_offloaded_connection_move_the_generation() {
        let mut sw = established();
        let ack = tcp(A, B, C, 40000, S, 80, 101, 501, ACK, 0);
        let o = out(&mut sw, T, 1, &ack).1.unwrap();
        let g = sw.generation();
        assert_eq!(o.generation, g, "establishing it changed nothing offloaded");
        // Another connection's opening moves nothing (not offloaded yet), its close does
        // (its established ACK was hinted).
        let syn = tcp(A, B, C, 40001, S, 80, 7, 0, SYN, 0);
        out(&mut sw, T, 1, &syn);
        let synack = tcp(B, A, S, 80, C, 40001, 70, 8, SYN | ACK, 0);
        out(&mut sw, T, 2, &synack);
        let (_, o2) = out(&mut sw, T, 1, &tcp(A, B, C, 40001, S, 80, 8, 71, ACK, 0));
        assert!(o2.is_some());
        assert_eq!(sw.generation(), g, "openings change nothing offloaded");
        out(
            &mut sw,
            T,
            1,
            &tcp(A, B, C, 40001, S, 80, 8, 71, FIN | ACK, 0),
        );
        assert_eq!(sw.generation(), g + 1, "an offloaded connection closing");
        let g = sw.generation();
        // Data on the offloaded one: no state change.
        out(
            &mut sw,
            T,
            1,
            &tcp(A, B, C, 40000, S, 80, 101, 501, ACK, 10),
        );
        assert_eq!(sw.generation(), g);
        // Its FIN: the state moves, so does the generation.
        out(
            &mut sw,
            T,
            1,
            &tcp(A, B, C, 40000, S, 80, 111, 501, FIN | ACK, 0),
        );
        assert!(sw.generation() > g, "FIN_WAIT");
        // Removal of an offloaded connection.
        let mut sw = established();
        let o = out(&mut sw, T, 1, &ack).1.unwrap();
        assert!(sw.conntrack_mut().remove(o.ct[0].id));
        assert!(sw.generation() > o.generation, "removed");
        // Expiry of an offloaded connection.
        let mut sw = established();
        let o = out(&mut sw, T, 1, &ack).1.unwrap();
        let est = sw.conntrack().config().timeouts.tcp_established;
        sw.conntrack_mut().expire(T + est + Duration::from_secs(1));
        assert!(sw.conntrack().is_empty());
        assert!(sw.generation() > o.generation, "expired");
        // A mark set on it.
        let mut sw = established();
        let o = out(&mut sw, T, 1, &ack).1.unwrap();
        let m = strata_net::conntrack::CtMark { mark: 9, label: 0 };
        assert!(sw.conntrack_mut().set_mark(o.ct[0].id, m));
        assert!(sw.generation() > o.generation, "new mark");
    }
}
