//! Fuzz the recognition of probe answers (`strata_net::probe::reply_sent_at`), alone and as a
//! frame received on a probed port of a whole switch: never a panic, and a frame taken as an
//! answer is never forwarded nor counted as tenant traffic.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_net::probe::{reply_sent_at, ProbeTarget};
use strata_net::switch::Disposition;
use strata_net::{Effects, PortConfig, Switch, SwitchConfig};

fuzz_target!(|data: &[u8]| {
    let _ = reply_sent_at(data);
    let mut sw = Switch::new(SwitchConfig::default());
    let a = sw.add_port(PortConfig::tap("a", None)).unwrap();
    let _ = sw.add_port(PortConfig::tap("b", None)).unwrap();
    sw.add_flow(Duration::ZERO, "priority=0,actions=flood").unwrap();
    let t = ProbeTarget {
        src_mac: [2, 0, 0, 0, 0, 1],
        src_ip: Ipv4Addr::new(10, 0, 0, 1),
        dst_mac: [2, 0, 0, 0, 0, 2],
        dst_ip: Ipv4Addr::new(10, 0, 0, 2),
    };
    assert!(sw.probe(Duration::from_secs(1), a, &t, &mut Effects::new()));
    let mut fx = Effects::new();
    let d = sw.receive(Duration::from_secs(2), a, data, &mut fx);
    let st = sw.port_stats(a).unwrap();
    if d == Disposition::Probe {
        assert!(fx.is_empty());
        assert_eq!((st.rx_packets, st.probes.answered), (0, 1));
    } else {
        assert_eq!((st.rx_packets, st.probes.answered), (1, 0));
    }
});
