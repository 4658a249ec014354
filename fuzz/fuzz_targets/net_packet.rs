//! Fuzz the packet parser and the whole switch receive path (parse, classify, rewrite,
//! VXLAN encapsulation) with arbitrary frames on every kind of port.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_net::switch::{Domain, Effects, PortConfig, Switch};
use strata_net::vxlan::VxlanTunnel;

fuzz_target!(|data: &[u8]| {
    let _ = strata_net::packet::parse_frame(data, 1);
    let mut sw = Switch::default();
    sw.add_port(PortConfig::tap("trunk", None)).unwrap();
    sw.add_port(PortConfig::tap("v10", Some(Domain::Vlan(10)))).unwrap();
    sw.add_port(PortConfig::tap("n100", Some(Domain::Vni(100)))).unwrap();
    let t = VxlanTunnel::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    sw.add_port(PortConfig::vxlan("vx", t, None)).unwrap();
    let now = Duration::ZERO;
    sw.add_flow(now, "priority=1,actions=normal").unwrap();
    sw.add_flow(now, "priority=9,tcp,actions=set_field:10.9.9.9->ip_dst,set_field:81->tp_dst,mod_vlan_vid:10,output:1,pop_vlan,output:4").unwrap();
    sw.add_flow(now, "priority=9,tcp6,actions=set_field:fd00::9->ipv6_dst,output:1").unwrap();
    sw.add_flow(now, "priority=9,udp,actions=set_field:7->tp_src,flood").unwrap();
    let mut fx = Effects::new();
    for port in 1..=4 {
        let _ = sw.receive(now, port, data, &mut fx);
    }
    let _ = sw.receive(now, strata_net::Ingress::vxlan(4, 100), data, &mut fx);
});
