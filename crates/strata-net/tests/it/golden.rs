//! Golden tests of pipeline decisions, with exact counter deltas after each step.

use std::net::Ipv4Addr;
use std::time::Duration;

use strata_net::key::Field;
use strata_net::packet::{build_frame, parse_frame};
use strata_net::switch::{Disposition, Domain, DropReason, Effects, PortConfig, Switch};

use crate::{eth_frame, tcp_key};

const A: u64 = 0x0200_0000_000a;
const B: u64 = 0x0200_0000_000b;
const C: u64 = 0x0200_0000_000c;
const BCAST: u64 = 0xffff_ffff_ffff;

/// Time in seconds, exact to the millisecond (no float rounding in comparisons).
fn t(s: f64) -> Duration {
    Duration::from_millis((s * 1000.0).round() as u64)
}

fn send(sw: &mut Switch, now: Duration, port: u32, frame: &[u8]) -> (Disposition, Vec<u32>) {
    let mut fx = Effects::new();
    let d = sw.receive(now, port, frame, &mut fx);
    (d, fx.ports())
}

#[test]
fn mac_learning_switch_floods_then_unicasts() {
    let mut sw = Switch::default();
    let p1 = sw.add_port(PortConfig::tap("tap1", None)).unwrap();
    let p2 = sw.add_port(PortConfig::tap("tap2", None)).unwrap();
    let p3 = sw.add_port(PortConfig::tap("tap3", None)).unwrap();
    let rule = sw.add_flow(t(0.0), "actions=normal").unwrap();

    let ab = eth_frame(A, B);
    let ba = eth_frame(B, A);
    // First packet: B unknown, flood to everyone but the input.
    assert_eq!(
        send(&mut sw, t(1.0), p1, &ab),
        (Disposition::Forwarded(2), vec![p2, p3])
    );
    // Reply: A was learned on tap1, unicast.
    assert_eq!(
        send(&mut sw, t(1.1), p2, &ba),
        (Disposition::Forwarded(1), vec![p1])
    );
    // Now B is known too: no more flooding.
    assert_eq!(
        send(&mut sw, t(1.2), p1, &ab),
        (Disposition::Forwarded(1), vec![p2])
    );
    assert_eq!(
        send(&mut sw, t(1.3), p1, &ab),
        (Disposition::Forwarded(1), vec![p2])
    );

    let len = ab.len() as u64;
    let s1 = sw.port_stats(p1).unwrap();
    let s2 = sw.port_stats(p2).unwrap();
    let s3 = sw.port_stats(p3).unwrap();
    assert_eq!((s1.rx_packets, s1.tx_packets, s1.rx_bytes), (3, 1, 3 * len));
    assert_eq!((s2.rx_packets, s2.tx_packets), (1, 3));
    assert_eq!(
        (s3.rx_packets, s3.tx_packets),
        (0, 1),
        "tap3 saw only the first flood"
    );
    assert_eq!(sw.pipeline().rule_counters(rule), Some((4, 4 * len)));
    // One rule, one megaflow (normal does not consult any field): one miss, then cache hits.
    let ps = sw.pipeline_stats();
    assert_eq!(ps.misses, 1);
    assert_eq!(ps.emc_hits + ps.megaflow_hits, 3);

    // A broadcast still floods.
    let bc = eth_frame(A, BCAST);
    assert_eq!(send(&mut sw, t(2.0), p1, &bc).1, vec![p2, p3]);
    // MAC entries age out (300 s default): B unknown again, flood.
    assert_eq!(send(&mut sw, t(400.0), p1, &ab).1, vec![p2, p3]);
}

#[test]
fn vlan_access_ports_are_isolated() {
    let mut sw = Switch::default();
    let a10 = sw
        .add_port(PortConfig::tap("a10", Some(Domain::Vlan(10))))
        .unwrap();
    let b10 = sw
        .add_port(PortConfig::tap("b10", Some(Domain::Vlan(10))))
        .unwrap();
    let c20 = sw
        .add_port(PortConfig::tap("c20", Some(Domain::Vlan(20))))
        .unwrap();
    let trunk = sw.add_port(PortConfig::tap("trunk", None)).unwrap();
    sw.add_flow(t(0.0), "actions=normal").unwrap();

    // Broadcast from VLAN 10: b10 untagged, trunk tagged 10, never c20.
    let mut fx = Effects::new();
    sw.receive(t(1.0), a10, &eth_frame(A, BCAST), &mut fx);
    let outs: Vec<(u32, Option<u16>)> = fx
        .iter()
        .map(|(p, f)| (p, parse_frame(f, p).unwrap().0.vlan_vid()))
        .collect();
    assert_eq!(outs, vec![(b10, None), (trunk, Some(10))]);

    // A frame tagged 20 on the trunk reaches only c20, untagged.
    let mut k = tcp_key(
        C,
        BCAST,
        Ipv4Addr::new(1, 1, 1, 1),
        Ipv4Addr::new(2, 2, 2, 2),
        1,
    );
    k.set(Field::VlanTci, 0x1000 | 20);
    let f20 = build_frame(&k, 0);
    fx.clear();
    sw.receive(t(1.0), trunk, &f20, &mut fx);
    let outs: Vec<(u32, Option<u16>)> = fx
        .iter()
        .map(|(p, f)| (p, parse_frame(f, p).unwrap().0.vlan_vid()))
        .collect();
    assert_eq!(outs, vec![(c20, None)]);

    // A frame tagged 20 arriving on the VLAN 10 access port is refused at ingress.
    let before = sw.stats().isolation_drops;
    assert_eq!(
        send(&mut sw, t(1.0), a10, &f20).0,
        Disposition::Dropped(DropReason::Isolation)
    );
    assert_eq!(sw.stats().isolation_drops, before + 1);

    // Even an explicit rule cannot cross: counted on the output port and switch-wide.
    sw.add_flow(t(2.0), "priority=40000,in_port=a10,actions=output:c20")
        .unwrap();
    let c20_before = sw.port_stats(c20).unwrap();
    let a10_before = sw.port_stats(a10).unwrap();
    assert_eq!(
        send(&mut sw, t(2.0), a10, &eth_frame(A, C)).0,
        Disposition::Dropped(DropReason::Isolation)
    );
    assert_eq!(sw.stats().isolation_drops, before + 2);
    assert_eq!(
        sw.port_stats(c20).unwrap().tx_dropped,
        c20_before.tx_dropped + 1
    );
    assert_eq!(
        sw.port_stats(c20).unwrap().tx_packets,
        c20_before.tx_packets
    );
    assert_eq!(
        sw.port_stats(a10).unwrap().rx_dropped,
        a10_before.rx_dropped + 1
    );
}

#[test]
fn vni_tenants_never_reach_each_other() {
    let mut sw = Switch::default();
    let a = sw
        .add_port(PortConfig::tap("a", Some(Domain::Vni(100))))
        .unwrap();
    let b = sw
        .add_port(PortConfig::tap("b", Some(Domain::Vni(100))))
        .unwrap();
    let x = sw
        .add_port(PortConfig::tap("x", Some(Domain::Vni(200))))
        .unwrap();
    sw.add_flow(t(0.0), "actions=normal").unwrap();

    assert_eq!(send(&mut sw, t(1.0), a, &eth_frame(A, BCAST)).1, vec![b]);
    assert_eq!(send(&mut sw, t(1.0), b, &eth_frame(B, A)).1, vec![a]);
    // Tenant 200 floods and unicasts to tenant 100's MACs: nothing is delivered, drops rise.
    for (i, dst) in [BCAST, A, B].into_iter().enumerate() {
        let (d, outs) = send(&mut sw, t(2.0), x, &eth_frame(C, dst));
        assert_eq!(d, Disposition::Dropped(DropReason::NoOutput));
        assert!(outs.is_empty());
        assert_eq!(sw.port_stats(x).unwrap().rx_dropped, i as u64 + 1);
    }
    // The same MAC in two tenants is two entries.
    send(&mut sw, t(2.5), x, &eth_frame(A, BCAST));
    assert_eq!(
        sw.mac_table().lookup(Some(Domain::Vni(100)), A, t(2.5)),
        Some(a)
    );
    assert_eq!(
        sw.mac_table().lookup(Some(Domain::Vni(200)), A, t(2.5)),
        Some(x)
    );
    // A hostile rule in tenant 200's favour is refused by the engine and counted.
    sw.add_flow(
        t(3.0),
        "priority=40000,in_port=x,actions=output:a,output:b,flood",
    )
    .unwrap();
    let iso = sw.stats().isolation_drops;
    let (d, outs) = send(&mut sw, t(3.0), x, &eth_frame(C, A));
    assert_eq!(d, Disposition::Dropped(DropReason::Isolation));
    assert!(outs.is_empty());
    assert_eq!(sw.stats().isolation_drops, iso + 2);
    assert_eq!(sw.port_stats(a).unwrap().tx_dropped, 1);
    assert_eq!(sw.port_stats(b).unwrap().tx_dropped, 1);
}

#[test]
fn goto_table_and_metadata() {
    let mut sw = Switch::default();
    for n in ["p1", "p2", "p3"] {
        sw.add_port(PortConfig::tap(n, None)).unwrap();
    }
    sw.add_flow(
        t(0.0),
        "in_port=p1,actions=write_metadata:0x1/0xff,goto_table:2",
    )
    .unwrap();
    sw.add_flow(
        t(0.0),
        "in_port=p3,actions=write_metadata:0x2/0xff,goto_table:2",
    )
    .unwrap();
    sw.add_flow(
        t(0.0),
        "table=2,priority=10,metadata=0x1/0xff,actions=output:p2",
    )
    .unwrap();
    sw.add_flow(t(0.0), "table=2,priority=0,actions=drop")
        .unwrap();
    let f = eth_frame(A, B);
    assert_eq!(send(&mut sw, t(1.0), 1, &f).1, vec![2]);
    assert_eq!(
        send(&mut sw, t(1.0), 3, &f).0,
        Disposition::Dropped(DropReason::NoOutput)
    );
    // Table miss in table 0 drops.
    assert_eq!(
        send(&mut sw, t(1.0), 2, &f).0,
        Disposition::Dropped(DropReason::NoOutput)
    );
    let d = sw.dump_flows(t(1.0));
    let counts: Vec<u64> = d.iter().map(|d| d.stats.n_packets).collect();
    // Order: table 0 (two rules, priority equal: install order), then table 2 by priority.
    assert_eq!(counts, vec![1, 1, 1, 1]);
    let text = sw.dump_flows_text(t(1.0));
    assert!(text.contains("table=2, n_packets=1"), "{text}");
}

#[test]
fn set_field_and_vlan_actions_rewrite_frames() {
    let mut sw = Switch::default();
    sw.add_port(PortConfig::tap("p1", None)).unwrap();
    sw.add_port(PortConfig::tap("p2", None)).unwrap();
    sw.add_port(PortConfig::tap("p3", None)).unwrap();
    sw.add_flow(
        t(0.0),
        "tcp,tp_dst=80,actions=set_field:10.0.0.5->nw_dst,mod_dl_dst:02:00:00:00:00:99,output:2",
    )
    .unwrap();
    sw.add_flow(
        t(0.0),
        "udp,actions=push_vlan:0x8100,mod_vlan_vid:20,output:3",
    )
    .unwrap();
    let k = tcp_key(
        A,
        B,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        80,
    );
    let f = build_frame(&k, 100);
    let mut fx = Effects::new();
    sw.receive(t(1.0), 1, &f, &mut fx);
    let (p, out) = fx.iter().next().unwrap();
    assert_eq!(p, 2);
    let (ok, lay) = parse_frame(out, 2).unwrap();
    assert_eq!(ok.nw_dst(), Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(ok.get(Field::EthDst), 0x0200_0000_0099);
    assert_eq!(ok.nw_src(), k.nw_src());
    assert!(strata_net::csum::verify_l4_checksum(
        out,
        lay.l3 as usize,
        lay.l4.unwrap() as usize
    ));
    assert_eq!(
        strata_net::csum::ipv4_header_checksum(&out[14..34]),
        u16::from_be_bytes([out[24], out[25]])
    );

    fx.clear();
    sw.receive(t(1.0), 1, &eth_frame(A, B), &mut fx);
    let (p, out) = fx.iter().next().unwrap();
    assert_eq!(p, 3);
    let (ok, _) = parse_frame(out, 3).unwrap();
    assert_eq!(ok.vlan_vid(), Some(20));
    assert_eq!(out.len(), eth_frame(A, B).len() + 4);
}

#[test]
fn timeouts_expire_at_exact_times() {
    let mut sw = Switch::default();
    sw.add_port(PortConfig::tap("p1", None)).unwrap();
    sw.add_port(PortConfig::tap("p2", None)).unwrap();
    sw.add_flow(t(0.0), "priority=10,hard_timeout=60,udp,actions=output:2")
        .unwrap();
    sw.add_flow(t(0.0), "priority=10,idle_timeout=10,tcp,actions=output:2")
        .unwrap();
    let udp = eth_frame(A, B);
    let tcp = build_frame(
        &tcp_key(
            A,
            B,
            Ipv4Addr::new(1, 0, 0, 1),
            Ipv4Addr::new(1, 0, 0, 2),
            22,
        ),
        0,
    );
    // Idle: used at 5, so alive until 15 exclusive, whatever other packets do meanwhile.
    assert_eq!(send(&mut sw, t(5.0), 1, &tcp).1, vec![2]);
    assert_eq!(send(&mut sw, t(10.0), 1, &udp).1, vec![2]);
    assert_eq!(send(&mut sw, t(14.999), 1, &tcp).1, vec![2]);
    assert_eq!(send(&mut sw, t(24.998), 1, &tcp).1, vec![2]);
    assert!(
        send(&mut sw, t(34.998), 1, &tcp).1.is_empty(),
        "idle since 24.998"
    );
    // Hard: gone at 60 exactly even though it is busy.
    assert_eq!(send(&mut sw, t(59.999), 1, &udp).1, vec![2]);
    assert!(send(&mut sw, t(60.0), 1, &udp).1.is_empty());
    assert_eq!(sw.pipeline().n_rules(), 0);
    // expire() reports removals for callers that want notifications.
    sw.add_flow(t(100.0), "hard_timeout=1,actions=drop")
        .unwrap();
    assert!(sw.expire(t(100.5)).is_empty());
    assert_eq!(sw.expire(t(101.0)).len(), 1);
}

#[test]
fn rule_changes_hit_cached_flows_immediately_and_spare_unrelated_ones() {
    let mut sw = Switch::default();
    for n in ["p1", "p2", "p3", "p4", "p5"] {
        sw.add_port(PortConfig::tap(n, None)).unwrap();
    }
    sw.add_flow(t(0.0), "priority=10,in_port=1,actions=output:2")
        .unwrap();
    sw.add_flow(t(0.0), "priority=10,in_port=3,actions=output:4")
        .unwrap();
    let f = build_frame(
        &tcp_key(
            A,
            B,
            Ipv4Addr::new(1, 0, 0, 1),
            Ipv4Addr::new(1, 0, 0, 2),
            22,
        ),
        0,
    );
    // Warm both flows into the caches.
    for _ in 0..2 {
        assert_eq!(send(&mut sw, t(1.0), 1, &f).1, vec![2]);
        assert_eq!(send(&mut sw, t(1.0), 3, &f).1, vec![4]);
    }
    let s0 = sw.pipeline_stats();
    assert_eq!(s0.misses, 2);
    assert_eq!(sw.pipeline().n_megaflows(), 2);

    // A higher-priority rule overlapping port 1's flow takes effect on the very next packet.
    let id = sw
        .add_flow(t(2.0), "priority=20,in_port=1,tcp,actions=output:5")
        .unwrap();
    assert_eq!(
        sw.pipeline().n_megaflows(),
        1,
        "only the overlapping megaflow went"
    );
    assert_eq!(send(&mut sw, t(2.0), 1, &f).1, vec![5]);
    // Port 3's cached flow survived: answered from the EMC, no new miss for it.
    let before = sw.pipeline_stats();
    assert_eq!(send(&mut sw, t(2.0), 3, &f).1, vec![4]);
    let after = sw.pipeline_stats();
    assert_eq!(after.misses, before.misses);
    assert_eq!(after.emc_hits, before.emc_hits + 1);
    // A lower-priority overlapping rule changes nothing and invalidates nothing.
    let inv = after.invalidated;
    sw.add_flow(t(2.0), "priority=1,actions=output:5").unwrap();
    assert_eq!(sw.pipeline_stats().invalidated, inv);

    // Removal takes effect immediately too.
    sw.remove_rule(id).unwrap();
    assert_eq!(send(&mut sw, t(3.0), 1, &f).1, vec![2]);
    assert_eq!(send(&mut sw, t(3.0), 3, &f).1, vec![4]);
    // del-flows with a filter.
    assert_eq!(sw.del_flows("in_port=3", false).unwrap(), 1);
    assert_eq!(
        send(&mut sw, t(3.0), 3, &f).1,
        vec![5],
        "falls to the priority=1 rule"
    );
}
