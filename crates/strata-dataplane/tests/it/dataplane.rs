//! The dataplane against real peers: namespaces with ping and iperf3 joined by TAP ports, two
//! Strata switches joined by VXLAN over a veth underlay, and a Strata switch talking VXLAN to
//! the kernel's vxlan device. Needs root; each test makes and deletes its own namespaces.

use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneStats, PortSpec};
use strata_net::Domain;

use crate::netenv::{require, unique, veth, Netns};

fn dataplane_in(host: &Netns) -> Dataplane {
    Dataplane::spawn(DataplaneConfig {
        netns: Some(host.path()),
        ..DataplaneConfig::default()
    })
    .expect("dataplane starts")
}

fn dataplane_threads(host: &Netns, threads: usize) -> Dataplane {
    Dataplane::spawn(DataplaneConfig {
        netns: Some(host.path()),
        threads,
        ..DataplaneConfig::default()
    })
    .expect("dataplane starts")
}

/// Counters of every flow (by text) and every port's rx_packets, read in one step under the
/// switch lock, so no frame falls between the two.
fn snapshot(dp: &Dataplane) -> (Vec<(String, u64)>, u64) {
    dp.with_switch(|sw, now| {
        let flows = sw
            .dump_flows(now)
            .iter()
            .map(|d| {
                (
                    strata_net::format_flow(&d.rule, Some(sw.port_names())),
                    d.stats.n_packets,
                )
            })
            .collect();
        let rx = sw.ports().map(|(_, _, st)| st.rx_packets).sum();
        (flows, rx)
    })
    .unwrap()
}

/// Waits until no frame has moved for 300 ms (the TCP connections of a finished test close),
/// so that counters read in separate steps agree.
fn settle(dp: &Dataplane) {
    let mut last = snapshot(dp);
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = snapshot(dp);
        if now == last {
            return;
        }
        last = now;
    }
    panic!("traffic did not stop");
}

fn flow_packets(flows: &[(String, u64)], prefix: &str) -> u64 {
    flows
        .iter()
        .filter(|(f, _)| f.starts_with(prefix))
        .map(|(_, n)| *n)
        .sum()
}

/// Counter delta of one port field between two snapshots.
fn delta(
    a: &DataplaneStats,
    b: &DataplaneStats,
    port: &str,
    f: fn(&strata_net::switch::PortStats) -> u64,
) -> u64 {
    f(&b.port(port).expect("port").stats) - f(&a.port(port).expect("port").stats)
}

#[test]
fn taps_learning_and_tenant_isolation() {
    require(&["ip", "sh", "ping", "iperf3", "ss"]);
    let host = Netns::new("h");
    let (n1, n2, n3, obs) = (
        Netns::new("a"),
        Netns::new("b"),
        Netns::new("c"),
        Netns::new("o"),
    );
    let dp = dataplane_in(&host);
    let (t1, t2, t3, t4) = (unique("ta"), unique("tb"), unique("tc"), unique("to"));
    let vni100 = Some(Domain::Vni(100));
    dp.add_port(PortSpec::tap(&t1, vni100)).unwrap();
    dp.add_port(PortSpec::tap(&t2, vni100)).unwrap();
    dp.add_port(PortSpec::tap(&t3, Some(Domain::Vni(200))))
        .unwrap();
    // An observer in VNI 100 with no address: it sends nothing, so its tx counter counts
    // exactly the frames flooded in VNI 100.
    dp.add_port(PortSpec::tap(&t4, vni100)).unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    n1.adopt(&host, &t1, "10.0.0.1/24", None);
    n2.adopt(&host, &t2, "10.0.0.2/24", None);
    n3.adopt(&host, &t3, "10.0.0.3/24", None);
    obs.adopt(&host, &t4, "", None);
    std::thread::sleep(std::time::Duration::from_millis(300));

    // First exchange: one ARP request flooded (to t2 and the observer, never to VNI 200),
    // then ARP reply, echo request and echo reply all unicast.
    let s0 = dp.stats().unwrap();
    assert!(n1.ping("10.0.0.2", 1, 56), "first ping through the switch");
    let s1 = dp.stats().unwrap();
    let tx = |p: &strata_net::switch::PortStats| p.tx_packets;
    let rx = |p: &strata_net::switch::PortStats| p.rx_packets;
    assert_eq!(delta(&s0, &s1, &t4, tx), 1, "one flood: the ARP request");
    assert_eq!(delta(&s0, &s1, &t1, rx), 2, "ARP request + echo request");
    assert_eq!(delta(&s0, &s1, &t2, tx), 2);
    assert_eq!(delta(&s0, &s1, &t2, rx), 2, "ARP reply + echo reply");
    assert_eq!(delta(&s0, &s1, &t1, tx), 2);
    assert_eq!(delta(&s0, &s1, &t3, tx), 0, "nothing crosses into VNI 200");

    // Learned: no more flooding.
    assert!(n1.ping("10.0.0.2", 3, 56));
    let s2 = dp.stats().unwrap();
    assert_eq!(
        delta(&s1, &s2, &t4, tx),
        0,
        "flooding stopped after learning"
    );
    assert_eq!(delta(&s1, &s2, &t1, rx), 3);
    assert_eq!(delta(&s1, &s2, &t2, tx), 3);
    assert_eq!(delta(&s1, &s2, &t2, rx), 3);
    assert_eq!(delta(&s1, &s2, &t1, tx), 3);
    assert_eq!(delta(&s1, &s2, &t1, |p| p.rx_dropped), 0);

    // TCP: 64 KiB TSO frames pass whole between the two offloading TAPs.
    let srv = n2.iperf_server("10.0.0.2");
    let got = n1
        .iperf_client("10.0.0.2", 2, false)
        .expect("iperf3 TCP through Strata");
    drop(srv);
    assert!(got > 10 << 20, "only {got} bytes received");
    let s3 = dp.stats().unwrap();
    let io = |s: &DataplaneStats, p: &str| s.port(p).unwrap().io;
    assert!(io(&s3, &t2).tx_gso > 0, "GSO frames forwarded whole");
    assert_eq!(
        io(&s3, &t2).tx_segments,
        0,
        "nothing segmented between offloading TAPs"
    );
    assert_eq!(
        delta(&s2, &s3, &t4, tx),
        0,
        "TCP between known MACs floods nothing"
    );

    // Another tenant (VNI 200, same subnet) reaches neither: its ARP requests are dropped.
    let srv = n2.iperf_server("10.0.0.2");
    let before = dp.stats().unwrap();
    assert!(
        !n3.ping("10.0.0.1", 2, 56),
        "VNI 200 must not reach VNI 100"
    );
    assert!(!n3.ping("10.0.0.2", 1, 56));
    assert!(
        n3.iperf_client("10.0.0.2", 1, false).is_none(),
        "TCP across tenants"
    );
    drop(srv);
    let after = dp.stats().unwrap();
    let dropped = delta(&before, &after, &t3, |p| p.rx_dropped);
    assert!(dropped > 0, "drops counted on the other tenant's port");
    assert_eq!(
        dropped,
        delta(&before, &after, &t3, rx),
        "every frame from VNI 200 dropped"
    );
    for t in [&t1, &t2, &t4] {
        assert_eq!(
            delta(&before, &after, t, tx),
            0,
            "{t} got nothing from VNI 200"
        );
    }
}

#[test]
fn vxlan_between_two_strata_switches() {
    require(&["ip", "sh", "ping", "iperf3", "ss"]);
    let (ha, hb, ta, tb) = (
        Netns::new("ha"),
        Netns::new("hb"),
        Netns::new("ta"),
        Netns::new("tb"),
    );
    veth(&ha, "192.168.77.1/24", &hb, "192.168.77.2/24");
    let (a_ip, b_ip) = (
        "192.168.77.1".parse().unwrap(),
        "192.168.77.2".parse().unwrap(),
    );
    let (dpa, dpb) = (dataplane_in(&ha), dataplane_in(&hb));
    let (tapa, tapb) = (unique("tx"), unique("ty"));
    let vni = Some(Domain::Vni(4242));
    dpa.add_port(PortSpec::tap(&tapa, vni)).unwrap();
    dpa.add_port(PortSpec::vxlan("vx", a_ip, b_ip, Some(4242)))
        .unwrap();
    dpb.add_port(PortSpec::tap(&tapb, vni)).unwrap();
    dpb.add_port(PortSpec::vxlan("vx", b_ip, a_ip, Some(4242)))
        .unwrap();
    for dp in [&dpa, &dpb] {
        dp.add_flow("priority=0,actions=normal").unwrap();
    }
    ta.adopt(&ha, &tapa, "10.1.0.1/24", Some(1450));
    tb.adopt(&hb, &tapb, "10.1.0.2/24", Some(1450));

    assert!(
        ta.ping("10.1.0.2", 3, 56),
        "ping over Strata-to-Strata VXLAN"
    );
    assert!(tb.ping("10.1.0.1", 2, 1400));
    let srv = tb.iperf_server("10.1.0.2");
    let got = ta
        .iperf_client("10.1.0.2", 2, false)
        .expect("iperf3 over VXLAN");
    drop(srv);
    assert!(got > 1 << 20, "only {got} bytes received");
    let sa = dpa.stats().unwrap();
    let sb = dpb.stats().unwrap();
    assert!(
        sa.port("vx").unwrap().io.tx_segments > 0,
        "TSO frames segmented for the tunnel"
    );
    assert!(sb.port("vx").unwrap().stats.rx_packets > 100);
    assert_eq!(sa.unknown_tunnel_remote + sb.unknown_tunnel_remote, 0);
}

#[test]
fn vxlan_interoperates_with_the_kernel() {
    require(&["ip", "sh", "ping", "iperf3", "ss", "ethtool"]);
    let (h, k, t) = (Netns::new("sh"), Netns::new("kh"), Netns::new("st"));
    let (_, uk) = veth(&h, "192.168.78.1/24", &k, "192.168.78.2/24");
    // Over a veth underlay the kernel hands the encapsulated frame to our UDP socket with the
    // inner TCP checksum still partial (CHECKSUM_PARTIAL crosses veth as is; a physical NIC
    // would fill it in). Turn TX checksum offload off on the kernel side so it completes it.
    k.exec(&["ethtool", "-K", &uk, "tx", "off"]);
    k.exec(&[
        "ip",
        "link",
        "add",
        "vxk",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "192.168.78.2",
        "remote",
        "192.168.78.1",
        "dstport",
        "4789",
    ]);
    k.exec(&["ip", "addr", "add", "10.2.0.2/24", "dev", "vxk"]);
    k.exec(&["ip", "link", "set", "vxk", "up"]);
    let dp = dataplane_in(&h);
    let tap = unique("tk");
    dp.add_port(PortSpec::tap(&tap, Some(Domain::Vni(42))))
        .unwrap();
    dp.add_port(PortSpec::vxlan(
        "vxk",
        "192.168.78.1".parse().unwrap(),
        "192.168.78.2".parse().unwrap(),
        Some(42),
    ))
    .unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    t.adopt(&h, &tap, "10.2.0.1/24", Some(1450));

    assert!(
        t.ping("10.2.0.2", 3, 1400),
        "Strata -> kernel vxlan, 1400 bytes"
    );
    assert!(
        k.ping("10.2.0.1", 3, 1400),
        "kernel vxlan -> Strata, 1400 bytes"
    );
    assert!(
        t.ping("10.2.0.2", 3, 3000),
        "Strata -> kernel, fragmenting payload"
    );
    assert!(
        k.ping("10.2.0.1", 3, 3000),
        "kernel -> Strata, fragmenting payload"
    );

    let srv = k.iperf_server("10.2.0.2");
    let up = t
        .iperf_client("10.2.0.2", 2, false)
        .expect("TCP Strata -> kernel vxlan");
    drop(srv);
    let srv = k.iperf_server("10.2.0.2");
    let down = t
        .iperf_client("10.2.0.2", 2, true)
        .expect("TCP kernel vxlan -> Strata");
    drop(srv);
    assert!(up > 1 << 20 && down > 1 << 20, "up {up} down {down} bytes");
    let s = dp.stats().unwrap();
    let vx = s.port("vxk").unwrap();
    assert_eq!(vx.stats.rx_errors + vx.io.rx_errors, 0);
    assert_eq!(s.unknown_tunnel_remote, 0);
}

#[test]
fn tap_without_offloads_gets_segmented_frames() {
    require(&["ip", "sh", "ping", "iperf3", "ss"]);
    let (host, n1, n2) = (Netns::new("h"), Netns::new("a"), Netns::new("b"));
    let dp = dataplane_in(&host);
    let (fast, slow) = (unique("tf"), unique("ts"));
    dp.add_port(PortSpec::tap(&fast, None)).unwrap();
    dp.add_port(PortSpec::Tap {
        name: slow.clone(),
        domain: None,
        offload: false,
    })
    .unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    n1.adopt(&host, &fast, "10.3.0.1/24", None);
    n2.adopt(&host, &slow, "10.3.0.2/24", None);
    assert!(n1.ping("10.3.0.2", 2, 56));
    // Offloading side sends: its TSO frames are cut and checksummed for the other.
    let srv = n2.iperf_server("10.3.0.2");
    let got = n1
        .iperf_client("10.3.0.2", 1, false)
        .expect("TCP to a TAP without offloads");
    drop(srv);
    assert!(got > 1 << 20, "only {got} bytes");
    let s = dp.stats().unwrap();
    let io = s.port(&slow).unwrap().io;
    assert!(io.tx_segments > 0, "segmented in software: {io:?}");
    assert_eq!(
        io.tx_gso, 0,
        "no GSO frame handed to a TAP that did not negotiate it"
    );
    assert_eq!(
        s.port(&slow).unwrap().io.rx_gso,
        0,
        "the kernel sends it no GSO frames"
    );
}

#[test]
fn several_threads_share_one_switch() {
    require(&["ip", "sh", "ping", "iperf3", "ss", "ls"]);
    let (host, n1, n2) = (Netns::new("h"), Netns::new("a"), Netns::new("b"));
    // More threads than this machine may have CPUs: the design must not depend on it.
    let dp = dataplane_threads(&host, 3);
    let (t1, t2) = (unique("tm"), unique("tn"));
    dp.add_port(PortSpec::tap(&t1, None)).unwrap();
    dp.add_port(PortSpec::tap(&t2, None)).unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    n1.adopt(&host, &t1, "10.5.0.1/24", None);
    n2.adopt(&host, &t2, "10.5.0.2/24", None);
    let queues = n1.exec(&["ls", &format!("/sys/class/net/{t1}/queues")]);
    assert_eq!(
        queues
            .split_whitespace()
            .filter(|q| q.starts_with("rx-"))
            .count(),
        3,
        "one queue per thread: {queues}"
    );

    assert!(n1.ping("10.5.0.2", 3, 56), "ping through three threads");
    // Twelve connections: the kernel spreads them over the queues by flow hash (the chance
    // that all land on one of three queues is 3^-11).
    let srv = n2.iperf_server("10.5.0.2");
    let got = n1
        .iperf_client_streams("10.5.0.2", 2, 12)
        .expect("iperf3 -P 12 through three threads");
    drop(srv);
    assert!(got > 10 << 20, "only {got} bytes received");

    settle(&dp);
    let st = dp.stats().unwrap();
    assert_eq!(st.thread_rx_frames.len(), 3);
    let busy = st.thread_rx_frames.iter().filter(|&&n| n > 100).count();
    assert!(
        busy >= 2,
        "flows spread over threads: {:?}",
        st.thread_rx_frames
    );
    // Port-layer counters are the sum over the threads, engine counters are the one
    // switch's: every frame read is one the switch received.
    let rx_read: u64 = st.thread_rx_frames.iter().sum();
    let rx_switch: u64 = st.ports.iter().map(|p| p.stats.rx_packets).sum();
    assert_eq!(
        rx_read, rx_switch,
        "frames read = frames the switch received"
    );
    assert!(
        st.port(&t2).unwrap().io.tx_gso > 0,
        "TSO frames passed whole"
    );
    // Each frame hit the one rule exactly once, whichever thread carried it.
    let (flows, rx) = snapshot(&dp);
    assert_eq!(flow_packets(&flows, "table=0,priority=0,"), rx, "{flows:?}");
    // The same totals as dump-flows prints them.
    let dump = dp.dump_flows().unwrap();
    assert!(
        dump.contains(&format!("n_packets={rx},")),
        "dump-flows shows the summed count {rx}: {dump}"
    );
}

#[test]
fn flows_changed_under_traffic_apply_on_every_thread() {
    require(&["ip", "sh", "ping", "iperf3", "ss"]);
    let (host, n1, n2) = (Netns::new("h"), Netns::new("a"), Netns::new("b"));
    let dp = dataplane_threads(&host, 2);
    let (t1, t2) = (unique("tp"), unique("tq"));
    dp.add_port(PortSpec::tap(&t1, None)).unwrap();
    dp.add_port(PortSpec::tap(&t2, None)).unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    n1.adopt(&host, &t1, "10.6.0.1/24", None);
    n2.adopt(&host, &t2, "10.6.0.2/24", None);
    assert!(n1.ping("10.6.0.2", 2, 56));

    let srv = n2.iperf_server("10.6.0.2");
    let n1_name = n1.name.clone();
    let client = std::thread::spawn(move || {
        crate::netenv::run(&[
            "ip", "netns", "exec", &n1_name, "iperf3", "-c", "10.6.0.2", "-t", "4", "-P", "8",
        ])
        .status
        .success()
    });
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // A higher-priority rule that matches everything: from the moment add_flow returns, no
    // thread may hit the old one.
    dp.add_flow("priority=100,actions=normal").unwrap();
    let (f0, _) = snapshot(&dp);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let (f1, _) = snapshot(&dp);
    let old = |f: &[(String, u64)]| flow_packets(f, "table=0,priority=0,");
    let new = |f: &[(String, u64)]| flow_packets(f, "table=0,priority=100,");
    assert!(old(&f0) > 1000, "traffic ran before the change: {f0:?}");
    assert_eq!(old(&f0), old(&f1), "no thread still uses the old rule");
    assert!(new(&f1) > new(&f0) + 100, "every thread uses the new rule");
    // Deleting it under traffic hands the traffic back to the old rule, on every thread.
    dp.del_flows("priority=100", true).unwrap();
    let (f2, _) = snapshot(&dp);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let (f3, _) = snapshot(&dp);
    assert!(old(&f3) > old(&f2) + 100, "traffic back on the old rule");
    assert_eq!(new(&f3), 0, "the deleted rule is gone");
    assert!(client.join().unwrap(), "iperf3 survived the flow changes");
    drop(srv);
    // Totals still add up after rule churn: what the remaining rule counted since it was
    // installed is at most everything received.
    let (f4, rx) = snapshot(&dp);
    assert!(old(&f4) <= rx);
}

#[test]
fn a_tap_device_that_vanishes_is_dropped_from_polling_not_spun_on() {
    require(&["ip", "sh", "ping"]);
    let (host, n1, n2) = (Netns::new("h"), Netns::new("a"), Netns::new("b"));
    let dp = dataplane_threads(&host, 2);
    let (t1, t2) = (unique("tv"), unique("tw"));
    dp.add_port(PortSpec::tap(&t1, None)).unwrap();
    dp.add_port(PortSpec::tap(&t2, None)).unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    n1.adopt(&host, &t1, "10.6.0.1/24", None);
    n2.adopt(&host, &t2, "10.6.0.2/24", None);
    assert!(n1.ping("10.6.0.2", 2, 56));
    // Deleting the namespace destroys the TAP device under the open queues.
    drop(n2);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let io = |dp: &Dataplane| dp.stats().unwrap().port(&t2).unwrap().io;
    let seen = io(&dp);
    assert!(
        (1..=2).contains(&seen.rx_errors),
        "each reading thread notes the failure once: {}",
        seen.rx_errors
    );
    // Then it stays quiet: no read loop on a device epoll reports ready forever (every
    // read attempt counts a syscall).
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let later = io(&dp);
    assert_eq!(
        later.syscalls, seen.syscalls,
        "reads after the device vanished"
    );
    assert_eq!(later.rx_errors, seen.rx_errors);
    // The switch still works for the other port and answers control requests.
    dp.add_flow("priority=10,ip,actions=normal").unwrap();
    assert!(dp.stats().unwrap().port(&t1).is_some());
}
