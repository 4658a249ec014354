//! VXLAN output on the fast path (docs/net-engine.md, "Step 2, part B"): a veth port's flows
//! out a VXLAN port to the kernel's own vxlan device in another namespace, with the fast path
//! on and off. The kernel path encapsulates with the port's outer headers, so the underlay
//! frames are the slow path's bytes but for the fields each sending stack picks per packet
//! (the outer and inner IPv4 identification and header checksum).

use std::time::Duration;

use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneStats, PortSpec};
use strata_net::Domain;

use crate::fastpath::{without_ip_id, Capture};
use crate::netenv::{require, unique, veth, Netns};

const A_MAC: &str = "02:00:00:00:0a:51";
/// The inner IPv4 header's offset in an underlay frame (outer Ethernet, IPv4, UDP, VXLAN and
/// the inner Ethernet header before it).
const INNER_IP: usize = 14 + 36 + 14;

/// The dataplane in `h` with a veth port (peer in `a`) and a VXLAN port over a veth underlay
/// to `k`, where the kernel's vxlan device `vx0` (VNI 77) is the far end.
struct VxBed {
    a: Netns,
    k: Netns,
    dp: Dataplane,
    va: String,
    /// The underlay's end in `k`.
    uk: String,
    _h: Netns,
}

impl VxBed {
    fn new(fastpath: bool) -> VxBed {
        require(&["ip", "sh", "ping", "ethtool", "iperf3", "python3"]);
        let (h, k, a) = (Netns::new("vh"), Netns::new("vk"), Netns::new("va"));
        let (uh, uk) = veth(&h, "192.168.83.1/24", &k, "192.168.83.2/24");
        // Over a veth underlay a checksum left partial stays partial up to the receiver, which
        // accepts it but whose capture shows the pseudo-header sum. With TX checksum offload
        // off the device completes it, as a NIC would on the wire: the kernel's vxlan device
        // (k's replies) and the fast path's encapsulated frames (h's side) both hand it
        // partial checksums.
        k.exec(&["ethtool", "-K", &uk, "tx", "off"]);
        h.exec(&["ethtool", "-K", &uh, "tx", "off"]);
        // Fixed underlay MACs, so that two beds' underlay frames compare whole.
        h.exec(&["ip", "link", "set", &uh, "address", "02:00:00:00:0d:01"]);
        k.exec(&["ip", "link", "set", &uk, "address", "02:00:00:00:0d:02"]);
        k.exec(&[
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "77",
            "local",
            "192.168.83.2",
            "remote",
            "192.168.83.1",
            "dstport",
            "4789",
        ]);
        k.exec(&["ip", "link", "set", "vx0", "address", "02:00:00:00:0c:51"]);
        k.exec(&["ip", "addr", "add", "10.83.0.2/24", "dev", "vx0"]);
        k.exec(&["ip", "link", "set", "vx0", "up"]);
        let dp = Dataplane::spawn(DataplaneConfig {
            netns: Some(h.path()),
            fastpath,
            ..DataplaneConfig::default()
        })
        .unwrap();
        let va = unique("xa");
        dp.add_port(PortSpec::veth(&va, Some(Domain::Vni(77))))
            .unwrap();
        dp.add_port(PortSpec::vxlan(
            "vx",
            "192.168.83.1".parse().unwrap(),
            "192.168.83.2".parse().unwrap(),
            Some(77),
        ))
        .unwrap();
        h.exec(&["ip", "link", "set", &format!("{va}p"), "address", A_MAC]);
        a.adopt(&h, &format!("{va}p"), "10.83.0.1/24", None);
        VxBed {
            a,
            k,
            dp,
            va,
            uk,
            _h: h,
        }
    }

    fn stats(&self) -> DataplaneStats {
        self.dp.stats().unwrap()
    }
}

/// The flows of every test: ICMP and UDP from the veth port out the tunnel by their own
/// rule, everything else (ARP, the way back) a learning switch.
fn flows(bed: &VxBed) {
    bed.dp
        .add_flow(&format!(
            "priority=10,icmp,in_port={},actions=output:vx",
            bed.va
        ))
        .unwrap();
    bed.dp
        .add_flow(&format!(
            "priority=10,udp,in_port={},actions=output:vx",
            bed.va
        ))
        .unwrap();
    bed.dp.add_flow("priority=0,actions=normal").unwrap();
}

/// Five UDP datagrams from a kernel socket in `a` (checksum left partial: offloads on).
fn send_udp(a: &Netns) {
    a.exec(&[
        "python3",
        "-c",
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('10.83.0.1', 4000))\n\
         for i in range(5):\n    s.sendto(b'strata vxlan fast path ' * 4, ('10.83.0.2', 7777)); time.sleep(0.05)\n",
    ]);
}

/// Pings with a fixed payload (no timestamp) and identifier: the same frames every run.
fn fixed_pings(a: &Netns, n: u32) -> bool {
    a.try_exec(&[
        "ping",
        "-c",
        &n.to_string(),
        "-i",
        "0.2",
        "-W",
        "1",
        "-s",
        "8",
        "-p",
        "5a",
        "-e",
        "4343",
        "10.83.0.2",
    ])
    .status
    .success()
}

/// An underlay frame with the outer and inner IPv4 identification and header checksum zeroed.
fn without_ids(f: Vec<u8>) -> Vec<u8> {
    let mut f = without_ip_id(f);
    if f.len() >= INNER_IP + 20 {
        f[INNER_IP + 4..INNER_IP + 6].fill(0);
        f[INNER_IP + 10..INNER_IP + 12].fill(0);
    }
    f
}

/// What one run gives: the underlay frames from h and the inner frames vx0 received, for
/// 4 pings and 5 UDP datagrams after a warm-up that installs the entries.
fn run(bed: &VxBed) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    assert!(bed.a.ping("10.83.0.2", 2, 56), "warm up: ARP both ways");
    assert!(fixed_pings(&bed.a, 1), "the ping entry");
    send_udp(&bed.a);
    std::thread::sleep(Duration::from_millis(200));
    let outer = Capture::start(&bed.k, &bed.uk, 9, 6);
    let inner = Capture::start(&bed.k, "vx0", 9, 6);
    assert!(fixed_pings(&bed.a, 4), "pings over the tunnel");
    send_udp(&bed.a);
    let outer = outer
        .frames()
        .into_iter()
        .filter(|f| f.len() > INNER_IP && f[23] == 17)
        .map(without_ids)
        .collect();
    let inner = inner.frames().into_iter().map(without_ip_id).collect();
    (outer, inner)
}

/// The same flows give the same bytes with the fast path on and off: the whole underlay
/// frame (outer headers from the port's encoder, its UDP source port included) but the IPv4
/// identifications and checksums, and the inner frames the kernel's vxlan device delivers.
/// With the fast path on the kernel carried them.
#[test]
fn vxlan_output_gives_the_same_frames_on_both_paths() {
    let slow = VxBed::new(false);
    flows(&slow);
    let (so, si) = run(&slow);
    drop(slow);
    let fast = VxBed::new(true);
    flows(&fast);
    let s0 = fast.stats();
    let (fo, fi) = run(&fast);
    let s1 = fast.stats();
    assert_eq!(
        so.len(),
        9,
        "slow path: 4 pings and 5 datagrams on the underlay"
    );
    assert_eq!(si.len(), 9, "slow path: 9 inner frames");
    assert_eq!(fo, so, "underlay frames");
    assert_eq!(fi, si, "inner frames");
    let f0 = s0.fastpath.expect("the fast path is loaded");
    let f1 = s1.fastpath.unwrap();
    assert!(f1.installs >= 2, "{f1:?}");
    assert_eq!(f1.errors, 0, "{f1:?}");
    let va = |s: &DataplaneStats| s.port(&fast.va).unwrap().io.fast_rx_packets;
    assert!(
        va(&s1) - va(&s0) >= 9,
        "the kernel carried them: {f0:?} -> {f1:?}"
    );
}

/// N pings once the entry is in: the veth port's receive, the VXLAN port's send (frames
/// with their 50 bytes of outer headers) and the rule move by exactly N, all carried by the
/// kernel; packets of the flow that would exceed the underlay MTU take the slow path.
#[test]
fn vxlan_counters_stay_exact_on_the_fast_path() {
    let bed = VxBed::new(true);
    flows(&bed);
    assert!(bed.a.ping("10.83.0.2", 3, 56), "warm up");
    std::thread::sleep(Duration::from_millis(200));
    let icmp_rule = |dump: &str| -> u64 {
        let line = dump.lines().find(|l| l.contains("icmp")).unwrap();
        let at = line.find("n_packets=").unwrap() + "n_packets=".len();
        line[at..].split(',').next().unwrap().parse().unwrap()
    };
    let s0 = bed.stats();
    let r0 = icmp_rule(&bed.dp.dump_flows().unwrap());
    let n = 10u64;
    assert!(bed.a.ping("10.83.0.2", n as u32, 56));
    let s1 = bed.stats();
    let r1 = icmp_rule(&bed.dp.dump_flows().unwrap());
    let p = |s: &DataplaneStats, name: &str| s.port(name).unwrap().clone();
    let (a0, a1) = (p(&s0, &bed.va), p(&s1, &bed.va));
    let (x0, x1) = (p(&s0, "vx"), p(&s1, "vx"));
    assert_eq!(a1.stats.rx_packets - a0.stats.rx_packets, n, "{a1:?}");
    assert_eq!(a1.stats.rx_bytes - a0.stats.rx_bytes, n * 98);
    assert_eq!(
        a1.io.fast_rx_packets - a0.io.fast_rx_packets,
        n,
        "in the kernel"
    );
    assert_eq!(x1.stats.tx_packets - x0.stats.tx_packets, n, "{x1:?}");
    assert_eq!(
        x1.stats.tx_bytes - x0.stats.tx_bytes,
        n * (98 + 50),
        "with the outer headers"
    );
    assert_eq!(x1.io.fast_tx_packets - x0.io.fast_tx_packets, n);
    assert_eq!(r1 - r0, n, "the rule counts each request once");
    let (f0, f1) = (s0.fastpath.unwrap(), s1.fastpath.unwrap());
    assert_eq!(f1.forwarded - f0.forwarded, n);
    let t = bed
        .dp
        .trace(&format!(
            "in_port={},icmp,dl_src={A_MAC},dl_dst=02:00:00:00:0c:51,nw_src=10.83.0.1,\
             nw_dst=10.83.0.2,icmp_type=8,icmp_code=0",
            bed.va
        ))
        .unwrap()
        .unwrap();
    assert!(t.contains("Fast path: served in the kernel"), "{t}");
    // Pings of the same flow too large for the underlay once encapsulated (1514-byte inner
    // frames make 1550-byte outer packets over a 1500 MTU) hit the entry but are left to the
    // slow path, which fragments them; the kernel's vxlan device reassembles them.
    assert!(bed.a.ping("10.83.0.2", 3, 1472), "1500-byte inner packets");
    let s2 = bed.stats();
    let (a2, x2) = (p(&s2, &bed.va), p(&s2, "vx"));
    assert_eq!(
        a2.io.fast_rx_packets, a1.io.fast_rx_packets,
        "none in the kernel"
    );
    assert_eq!(x2.stats.tx_packets - x1.stats.tx_packets, 3);
    assert_eq!(s2.fastpath.unwrap().errors, 0);
}

/// A rule change, and the VXLAN port's removal, end the kernel's carrying at once: the entry
/// is stale (generation) and deleted, the next packets take the slow path.
#[test]
fn a_rule_or_tunnel_port_change_invalidates_the_vxlan_entry() {
    let bed = VxBed::new(true);
    flows(&bed);
    assert!(bed.a.ping("10.83.0.2", 3, 56), "warm up");
    let fwd = |b: &VxBed| b.stats().fastpath.unwrap().forwarded;
    let entries = |b: &VxBed| b.stats().fastpath.unwrap().entries;
    assert!(entries(&bed) >= 1, "installed");
    // Deleting the rule: the entry goes at once; `normal` still sends the pings to vx0,
    // its result installed anew by the first of them.
    let before = fwd(&bed);
    bed.dp
        .del_flows(&format!("icmp,in_port={}", bed.va), false)
        .unwrap();
    assert_eq!(entries(&bed), 0, "the fold deleted the stale entry");
    assert!(bed.a.ping("10.83.0.2", 1, 56), "normal still reaches vx0");
    assert_eq!(
        fwd(&bed),
        before,
        "the first packet after the change took the slow path"
    );
    assert!(bed.a.ping("10.83.0.2", 3, 56));
    assert!(fwd(&bed) > before, "normal's result is carried again");
    // Removing the tunnel port deletes its entries; nothing reaches vx0 any more.
    let rx = |ns: &Netns| crate::fastpath::rx_packets(ns, "vx0");
    bed.dp.remove_port("vx").unwrap();
    assert_eq!(entries(&bed), 0);
    let r0 = rx(&bed.k);
    assert!(!bed.a.ping("10.83.0.2", 2, 56), "no tunnel, no answer");
    assert_eq!(
        rx(&bed.k),
        r0,
        "nothing was carried to the removed port's remote"
    );
}

/// A TCP stream through the tunnel (the peer's TSO frames, segmented after encapsulation):
/// the transfer works and the kernel carries nearly all of it, every packet counted once.
#[test]
fn a_tcp_stream_over_vxlan_rides_the_fast_path() {
    let bed = VxBed::new(true);
    bed.dp.add_flow("priority=0,actions=normal").unwrap();
    assert!(bed.a.ping("10.83.0.2", 2, 56), "warm up");
    let srv = bed.k.iperf_server("10.83.0.2");
    let s0 = bed.stats();
    let got = bed
        .a
        .iperf_client("10.83.0.2", 2, false)
        .expect("TCP over VXLAN");
    drop(srv);
    let s1 = bed.stats();
    assert!(got > 10 << 20, "only {got} bytes");
    let va = |s: &DataplaneStats| s.port(&bed.va).unwrap().clone();
    let (p0, p1) = (va(&s0), va(&s1));
    let rx = p1.stats.rx_packets - p0.stats.rx_packets;
    let fast = p1.io.fast_rx_packets - p0.io.fast_rx_packets;
    assert!(
        fast * 10 >= rx * 9,
        "the kernel carried {fast} of {rx} packets"
    );
    let vx = |s: &DataplaneStats| s.port("vx").unwrap().stats.tx_packets;
    assert_eq!(
        vx(&s1) - vx(&s0),
        rx,
        "each frame in left by the tunnel once"
    );
    assert_eq!(s1.fastpath.unwrap().errors, 0);
}
