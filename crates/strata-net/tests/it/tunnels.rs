//! VXLAN between two switches, and VNI enforcement on tunnel ports.

use std::net::Ipv4Addr;
use std::time::Duration;

use strata_net::switch::{Disposition, Domain, DropReason, Effects, PortConfig, Switch};
use strata_net::vxlan::{self, VxlanTunnel, VXLAN_OVERHEAD_V4};
use strata_net::{Encap, Ingress};

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

/// The one output of `fx`, encapsulated as its intent says: what the port layer of a raw or
/// TAP underlay puts on the wire (source port from the default range, IP id 1).
fn wire(fx: &Effects) -> (u32, Vec<u8>, Encap) {
    let mut outs = fx.outputs();
    let o = outs.next().expect("one output");
    assert!(outs.next().is_none(), "exactly one output");
    let e = o.encap.expect("a tunnel output carries its encapsulation");
    let mut outer = Vec::new();
    let sport = vxlan::source_port(e.flow_hash);
    vxlan::encap_ipv4(&e.tunnel, e.vni, sport, 1, o.head, &mut outer).unwrap();
    (o.port, outer, e)
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
    let (_, sent) = fx.iter().next().unwrap();
    assert_eq!(
        sent,
        &inner[..],
        "the engine emits the inner frame, unchanged"
    );
    let (p, outer, e) = wire(&fx);
    assert_eq!(p, 2);
    assert_eq!(
        (e.vni, e.tunnel.local_ip, e.tunnel.remote_ip),
        (100, h1, h2)
    );
    assert_eq!(outer.len(), inner.len() + VXLAN_OVERHEAD_V4);
    assert_eq!(
        s1.port_stats(2).unwrap().tx_bytes,
        outer.len() as u64,
        "a tunnel port counts what the underlay carries"
    );
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
    let (p, outer2, e2) = wire(&fx);
    assert_eq!(p, 2);
    let d2 = vxlan::decap_ipv4(&outer2, 4789).unwrap();
    assert_eq!((d2.vni, d2.inner), (100, &reply[..]));
    let sport = d2.src_port;
    // Same flow, same flow hash, so the same source port (ECMP stability).
    fx.clear();
    s2.receive(now, 1, &reply, &mut fx);
    let (_, outer3, e3) = wire(&fx);
    assert_eq!(e3.flow_hash, e2.flow_hash);
    let d3 = vxlan::decap_ipv4(&outer3, 4789).unwrap();
    assert_eq!(d3.src_port, sport);
    // Another flow (other MACs) asks for another hash.
    fx.clear();
    s2.receive(now, 1, &eth_frame(B, BCAST), &mut fx);
    assert_ne!(wire(&fx).2.flow_hash, e2.flow_hash);
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
        sw.receive(now, Ingress::vxlan(2, 200), &eth_frame(A, BCAST), &mut fx),
        Disposition::Dropped(DropReason::Isolation)
    );
    assert_eq!(
        sw.receive(now, Ingress::vxlan(2, 100), &eth_frame(A, BCAST), &mut fx),
        Disposition::Forwarded(1)
    );
    // Garbage on a tunnel port is an rx error, not a panic.
    assert!(matches!(
        sw.receive(now, 2, &[0u8; 30], &mut fx),
        Disposition::Dropped(DropReason::Tunnel(_))
    ));
    assert_eq!(sw.port_stats(2).unwrap().rx_errors, 1);
    // A VNI given for a frame of a port that is no tunnel is refused the same way.
    assert!(matches!(
        sw.receive(now, Ingress::vxlan(1, 100), &eth_frame(A, BCAST), &mut fx),
        Disposition::Dropped(DropReason::Tunnel(_))
    ));
    assert_eq!(sw.port_stats(1).unwrap().rx_errors, 1);
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

/// A flow-keyed tunnel (the control plane's tunnels between nodes): what it receives has no
/// domain and carries its VNI in `tun_id`, so only a flow matching that VNI delivers it to a
/// port without a domain; a trunk tunnel's packets keep their `Vni` domain and never reach
/// such a port.
#[test]
fn a_flow_keyed_tunnel_delivers_by_the_flows_and_the_vni_alone() {
    for keyed in [true, false] {
        let mut sw = Switch::default();
        sw.add_port(PortConfig::tap("tap1", None)).unwrap();
        let mut t = VxlanTunnel::new(Ipv4Addr::new(1, 0, 0, 1), Ipv4Addr::new(1, 0, 0, 2));
        t.flow_keyed = keyed;
        sw.add_port(PortConfig::vxlan("vx1", t, None)).unwrap();
        sw.add_flow(Duration::ZERO, "in_port=2,tun_id=100,actions=output:1")
            .unwrap();
        // To the tunnel: the VNI the flow sets.
        sw.add_flow(
            Duration::ZERO,
            "in_port=1,actions=set_field:300->tun_id,output:2",
        )
        .unwrap();
        let mut fx = Effects::new();
        let got = sw.receive(
            Duration::ZERO,
            Ingress::vxlan(2, 100),
            &eth_frame(A, B),
            &mut fx,
        );
        if keyed {
            assert_eq!(got, Disposition::Forwarded(1));
        } else {
            assert_eq!(got, Disposition::Dropped(DropReason::Isolation));
        }
        // Another VNI matches no flow: dropped either way.
        fx.clear();
        let other = sw.receive(
            Duration::ZERO,
            Ingress::vxlan(2, 200),
            &eth_frame(A, B),
            &mut fx,
        );
        assert!(
            !matches!(other, Disposition::Forwarded(_)),
            "keyed {keyed}: {other:?}"
        );
        fx.clear();
        assert_eq!(
            sw.receive(Duration::ZERO, 1, &eth_frame(B, A), &mut fx),
            Disposition::Forwarded(1)
        );
        assert_eq!(wire(&fx).2.vni, 300);
    }
}
