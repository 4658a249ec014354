//! veth ports against real peers: the dataplane makes the pairs in its namespace, the peers
//! move into namespaces that ping and run iperf3 through the switch. Needs root.

use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneError, PortSpec};

use crate::netenv::{require, unique, Netns};

fn link_exists(ns: &Netns, dev: &str) -> bool {
    ns.try_exec(&["ip", "link", "show", dev]).status.success()
}

/// Two veth ports (with and without virtio-net headers), the peers in two namespaces: ping
/// with exact counters, TCP both ways, a TAP port reaching both; a taken name fails with the
/// typed error; removal and stop delete the pairs.
#[test]
fn veth_ports_forward_and_clean_up() {
    require(&["ip", "sh", "ping", "iperf3", "ss", "ethtool"]);
    let (host, a, b, c) = (
        Netns::new("h"),
        Netns::new("a"),
        Netns::new("b"),
        Netns::new("c"),
    );
    let dp = Dataplane::spawn(DataplaneConfig {
        netns: Some(host.path()),
        ..DataplaneConfig::default()
    })
    .unwrap();
    let (va, vb, t) = (unique("ve"), unique("ve"), unique("tp"));
    dp.add_port(PortSpec::veth(&va, None)).unwrap();
    dp.add_port(PortSpec::Veth {
        name: vb.clone(),
        peer: Some(format!("{vb}q")),
        domain: None,
        vnet_hdr: false,
    })
    .unwrap();
    dp.add_port(PortSpec::tap(&t, None)).unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    assert!(link_exists(&host, &va) && link_exists(&host, &format!("{va}p")));
    assert!(link_exists(&host, &format!("{vb}q")), "the peer name given");
    a.adopt(&host, &format!("{va}p"), "10.61.0.1/24", None);
    b.adopt(&host, &format!("{vb}q"), "10.61.0.2/24", None);
    // The port without vnet headers cannot say "checksum partial": its peer completes them.
    b.exec(&["ethtool", "-K", &format!("{vb}q"), "tx", "off"]);
    c.adopt(&host, &t, "10.61.0.3/24", None);
    assert!(a.ping("10.61.0.2", 2, 56), "veth to veth");
    assert!(a.ping("10.61.0.3", 2, 56), "veth to TAP");
    assert!(c.ping("10.61.0.2", 2, 56), "TAP to veth");
    // Exact counters: neighbours are known now, so 5 pings are 5 frames each way.
    let s0 = dp.stats().unwrap();
    assert!(a.ping("10.61.0.2", 5, 56));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let s1 = dp.stats().unwrap();
    let d = |port: &str, f: fn(&strata_net::switch::PortStats) -> u64| {
        f(&s1.port(port).unwrap().stats) - f(&s0.port(port).unwrap().stats)
    };
    assert_eq!(d(&va, |s| s.rx_packets), 5, "{s1:?}");
    assert_eq!(d(&va, |s| s.tx_packets), 5);
    assert_eq!(d(&vb, |s| s.rx_packets), 5);
    assert_eq!(d(&vb, |s| s.tx_packets), 5);
    assert_eq!(d(&t, |s| s.tx_packets), 0, "learned: nothing flooded");
    // TCP from the vnet-header port: GSO frames come in whole and are cut for the other.
    let srv = b.iperf_server("10.61.0.2");
    let got = a.iperf_client("10.61.0.2", 1, false).expect("TCP a -> b");
    drop(srv);
    assert!(got > 1 << 20, "only {got} bytes");
    let s = dp.stats().unwrap();
    assert!(s.port(&va).unwrap().io.rx_gso > 0, "{:?}", s.port(&va));
    assert!(s.port(&vb).unwrap().io.tx_segments > 0, "{:?}", s.port(&vb));
    assert_eq!(s.port(&vb).unwrap().io.rx_gso, 0);
    // And from the TAP to the vnet-header veth: offloaded frames pass whole.
    let srv = a.iperf_server("10.61.0.1");
    let got = c.iperf_client("10.61.0.1", 1, false).expect("TCP c -> a");
    drop(srv);
    assert!(got > 1 << 20, "only {got} bytes");
    assert!(dp.stats().unwrap().port(&va).unwrap().io.tx_gso > 0);
    // A taken name: the typed error, and nothing changes.
    let e = dp.add_port(PortSpec::veth(&va, None)).unwrap_err();
    assert!(matches!(e, DataplaneError::Port(_)), "{e:?}");
    let other = unique("ve");
    let e = dp
        .add_port(PortSpec::Veth {
            name: other.clone(),
            peer: Some("lo".into()),
            domain: None,
            vnet_hdr: true,
        })
        .unwrap_err();
    assert!(
        matches!(&e, DataplaneError::DeviceExists(n) if n == "lo"),
        "{e:?}"
    );
    assert!(
        !link_exists(&host, &other),
        "a taken peer name makes no host end"
    );
    // A peer named as the port itself.
    let e = dp
        .add_port(PortSpec::Veth {
            name: other.clone(),
            peer: Some(other.clone()),
            domain: None,
            vnet_hdr: true,
        })
        .unwrap_err();
    assert!(
        matches!(&e, DataplaneError::DeviceExists(n) if *n == other),
        "{e:?}"
    );
    // An interface the host already has under the port's name (made by someone else).
    let theirs = format!("{other}z");
    host.exec(&[
        "ip", "link", "add", &other, "type", "veth", "peer", "name", &theirs,
    ]);
    let e = dp.add_port(PortSpec::veth(&other, None)).unwrap_err();
    assert!(
        matches!(&e, DataplaneError::DeviceExists(n) if *n == other),
        "{e:?}"
    );
    assert_eq!(e.code(), "port_exists");
    assert!(
        !link_exists(&host, &format!("{other}p")),
        "no half-made pair left"
    );
    assert!(
        link_exists(&host, &theirs),
        "someone else's interface is left alone"
    );
    // Removal deletes the pair, the peer in its namespace included.
    dp.remove_port(&va).unwrap();
    assert!(!link_exists(&host, &va));
    assert!(!link_exists(&a, &format!("{va}p")), "the peer went with it");
    // Stop deletes the rest.
    drop(dp);
    assert!(!link_exists(&b, &format!("{vb}q")));
}
