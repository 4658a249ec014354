//! VXLAN between two switches, and VNI enforcement on tunnel ports.

use std::net::Ipv4Addr;
use std::time::Duration;

use strata_net::switch::{Disposition, Domain, DropReason, Effects, PortConfig, Switch};
use strata_net::vxlan::{self, VxlanTunnel, VXLAN_OVERHEAD_V4};

use crate::eth_frame;

const A: u64 = 0x0200_0000_000a;
const B: u64 = 0x0200_0000_000b;
const BCAST: u64 = 0xffff_ffff_ffff;

fn host(local: Ipv4Addr, remote: Ipv4Addr, vni: Option<u32>) -> Switch {
    let mut sw = Switch::default();
    sw.add_port(PortConfig::tap("tap1", Some(Domain::Vni(100))))
        .unwrap();
    sw.add_port(PortConfig::vxlan(
        "vx1",
        VxlanTunnel::new(local, remote),
        vni,
    ))
    .unwrap();
    sw.add_flow(Duration::ZERO, "actions=normal").unwrap();
    sw
}

#[test]
fn two_switches_over_vxlan() {
    let h1 = Ipv4Addr::new(192, 168, 0, 1);
    let h2 = Ipv4Addr::new(192, 168, 0, 2);
    let mut s1 = host(h1, h2, Some(100));
    let mut s2 = host(h2, h1, None); // flow-based tunnel port: VNI from the packet
    let now = Duration::from_secs(1);
    let inner = eth_frame(A, BCAST);
    let mut fx = Effects::new();
    assert_eq!(
        s1.receive(now, 1, &inner, &mut fx),
        Disposition::Forwarded(1)
    );
    let (p, outer) = fx.iter().next().unwrap();
    assert_eq!(p, 2);
    let outer = outer.to_vec();
    assert_eq!(outer.len(), inner.len() + VXLAN_OVERHEAD_V4);
    let d = vxlan::decap_ipv4(&outer, 4789).unwrap();
    assert_eq!((d.vni, d.inner, d.src_ip), (100, &inner[..], h1));
    assert!(d.src_port >= 49152);
    assert_eq!(&outer[46..49], &[0, 0, 100]);

    fx.clear();
    assert_eq!(
        s2.receive(now, 2, &outer, &mut fx),
        Disposition::Forwarded(1)
    );
    let (p, got) = fx.iter().next().unwrap();
    assert_eq!((p, got), (1, &inner[..]));
    // The reply is unicast back through the tunnel (B learned A behind vx1).
    fx.clear();
    let reply = eth_frame(B, A);
    assert_eq!(
        s2.receive(now, 1, &reply, &mut fx),
        Disposition::Forwarded(1)
    );
    let (p, outer2) = fx.iter().next().unwrap();
    assert_eq!(p, 2);
    let d2 = vxlan::decap_ipv4(outer2, 4789).unwrap();
    assert_eq!((d2.vni, d2.inner), (100, &reply[..]));
    let sport = d2.src_port;
    // Same flow, same source port (ECMP stability).
    fx.clear();
    s2.receive(now, 1, &reply, &mut fx);
    let d3 = vxlan::decap_ipv4(fx.iter().next().unwrap().1, 4789).unwrap();
    assert_eq!(d3.src_port, sport);
}

#[test]
fn tunnel_ports_enforce_vni() {
    let h1 = Ipv4Addr::new(10, 9, 0, 1);
    let h2 = Ipv4Addr::new(10, 9, 0, 2);
    let mut sw = host(h1, h2, Some(100));
    let now = Duration::ZERO;
    let mut outer = Vec::new();
    let t = VxlanTunnel::new(h2, h1);
    vxlan::encap_ipv4(&t, 200, 50000, 1, &eth_frame(A, BCAST), &mut outer).unwrap();
    let mut fx = Effects::new();
    assert_eq!(
        sw.receive(now, 2, &outer, &mut fx),
        Disposition::Dropped(DropReason::Isolation)
    );
    assert_eq!(sw.stats().isolation_drops, 1);
    // The UDP-socket path (outer headers already stripped) behaves the same.
    assert_eq!(
        sw.receive_vxlan(now, 2, 200, &eth_frame(A, BCAST), &mut fx),
        Disposition::Dropped(DropReason::Isolation)
    );
    assert_eq!(
        sw.receive_vxlan(now, 2, 100, &eth_frame(A, BCAST), &mut fx),
        Disposition::Forwarded(1)
    );
    // Garbage on a tunnel port is an rx error, not a panic.
    assert!(matches!(
        sw.receive(now, 2, &[0u8; 30], &mut fx),
        Disposition::Dropped(DropReason::Tunnel(_))
    ));
    assert_eq!(sw.port_stats(2).unwrap().rx_errors, 1);
}

#[test]
fn set_tunnel_cannot_move_a_packet_to_another_vni() {
    let mut sw = Switch::default();
    sw.add_port(PortConfig::tap("tap1", Some(Domain::Vni(100))))
        .unwrap();
    sw.add_port(PortConfig::vxlan(
        "vx1",
        VxlanTunnel::new(Ipv4Addr::new(1, 0, 0, 1), Ipv4Addr::new(1, 0, 0, 2)),
        None,
    ))
    .unwrap();
    sw.add_flow(Duration::ZERO, "actions=set_tunnel:200,output:vx1")
        .unwrap();
    let mut fx = Effects::new();
    assert_eq!(
        sw.receive(Duration::ZERO, 1, &eth_frame(A, B), &mut fx),
        Disposition::Dropped(DropReason::Isolation)
    );
    sw.add_flow(Duration::ZERO, "actions=set_tunnel:100,output:vx1")
        .unwrap();
    assert_eq!(
        sw.receive(Duration::ZERO, 1, &eth_frame(A, B), &mut fx),
        Disposition::Forwarded(1)
    );
}
