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
