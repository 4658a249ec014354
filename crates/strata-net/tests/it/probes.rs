//! The switch's own probes through a whole switch: a probe leaves the port as a valid echo
//! request, the endpoint's answer is taken (never forwarded, never counted as tenant
//! traffic), and the round trip is the time between the two.

use std::net::Ipv4Addr;
use std::time::Duration;

use strata_net::csum;
use strata_net::probe::{ProbeTarget, FRAME_LEN};
use strata_net::switch::Disposition;
use strata_net::{Effects, PortConfig, Switch, SwitchConfig};

fn target() -> ProbeTarget {
    ProbeTarget {
        src_mac: [2, 0, 0, 0, 0, 1],
        src_ip: Ipv4Addr::new(10, 1, 0, 1),
        dst_mac: [2, 0, 0, 0, 0, 9],
        dst_ip: Ipv4Addr::new(10, 1, 0, 9),
    }
}

/// The endpoint's answer: what an IP stack makes of an echo request.
fn answer(req: &[u8]) -> Vec<u8> {
    let mut r = req.to_vec();
    r[0..6].copy_from_slice(&req[6..12]);
    r[6..12].copy_from_slice(&req[0..6]);
    r[26..30].copy_from_slice(&req[30..34]);
    r[30..34].copy_from_slice(&req[26..30]);
    r[34] = 0;
    r[36..38].copy_from_slice(&[0, 0]);
    let ic = !csum::fold(csum::ones_sum(&r[34..], 0));
    r[36..38].copy_from_slice(&ic.to_be_bytes());
    r
}

#[test]
fn a_probe_goes_out_and_its_answer_is_taken_with_its_round_trip() {
    let mut sw = Switch::new(SwitchConfig::default());
    let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
    let b = sw.add_port(PortConfig::tap("b", None)).unwrap();
    // Everything else floods: a probe answer that were not taken would reach b.
    sw.add_flow(Duration::ZERO, "priority=0,actions=flood")
        .unwrap();
    let t0 = Duration::from_secs(3);
    let mut fx = Effects::new();
    assert!(sw.probe(t0, a, &target(), &mut fx));
    let outs: Vec<(u32, Vec<u8>)> = fx.iter().map(|(p, f)| (p, f.to_vec())).collect();
    assert_eq!(outs.len(), 1);
    let (port, req) = &outs[0];
    assert_eq!((*port, req.len()), (a, FRAME_LEN));
    assert_eq!(&req[0..6], &target().dst_mac);
    let before = sw.port_stats(a).unwrap();
    assert_eq!((before.probes.sent, before.probes.answered), (1, 0));
    assert_eq!(before.tx_packets, 0, "a probe is not tenant traffic");

    let reply = answer(req);
    let mut fx = Effects::new();
    let d = sw.receive(t0 + Duration::from_micros(250), a, &reply, &mut fx);
    assert_eq!(d, Disposition::Probe);
    assert!(fx.is_empty(), "an answer is never forwarded");
    let after = sw.port_stats(a).unwrap();
    assert_eq!((after.probes.answered, after.probes.rtt.sum_us), (1, 250));
    assert_eq!((after.rx_packets, after.rx_dropped), (0, 0));

    // The same bytes on a port never probed are tenant traffic like any other.
    let mut fx = Effects::new();
    let d = sw.receive(t0, b, &reply, &mut fx);
    assert_eq!(d, Disposition::Forwarded(1));
    assert_eq!(sw.port_stats(b).unwrap().rx_packets, 1);
    assert_eq!(sw.port_stats(b).unwrap().probes.answered, 0);
    // An unknown port cannot be probed.
    assert!(!sw.probe(t0, 999, &target(), &mut Effects::new()));
}
