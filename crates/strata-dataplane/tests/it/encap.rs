//! What leaves on the underlay: the outer UDP source port of every VXLAN packet is the inner
//! flow's hash mapped into the configured range (RFC 7348 section 5), checked on a capture of
//! the underlay while several TCP flows cross to the kernel's vxlan device; and outer packets
//! larger than the underlay MTU are fragmented so the kernel still takes them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_dataplane::{Dataplane, DataplaneConfig, PortSpec};
use strata_net::vxlan::SourcePorts;
use strata_net::Domain;

use crate::netenv::{require, run, unique, veth, Netns};

/// An inner TCP connection, one direction: (source IP, source port, destination IP, port).
type Tcp4 = (u32, u16, u32, u16);

/// Outer UDP source port and inner TCP 4-tuple (or None for other inner traffic) of every
/// VXLAN packet in a pcap file (Ethernet link type, outer IPv4).
fn outer_ports(pcap: &[u8]) -> Vec<(u16, Option<Tcp4>)> {
    assert!(pcap.len() >= 24, "pcap header");
    assert_eq!(
        &pcap[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian pcap, microseconds"
    );
    let rd32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let be32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let n = rd32(pcap, at + 8) as usize;
        let p = &pcap[at + 16..(at + 16 + n).min(pcap.len())];
        at += 16 + n;
        if p.len() < 14 + 20 + 8 + 8 || be16(p, 12) != 0x0800 || p[23] != 17 {
            continue;
        }
        let l4 = 14 + (p[14] & 0x0f) as usize * 4;
        let sport = be16(p, l4);
        let inner = &p[l4 + 16..];
        let tcp = (inner.len() >= 14 + 20 + 4 && be16(inner, 12) == 0x0800 && inner[23] == 6).then(
            || {
                let l4i = 14 + (inner[14] & 0x0f) as usize * 4;
                (
                    be32(inner, 26),
                    be16(inner, l4i),
                    be32(inner, 30),
                    be16(inner, l4i + 2),
                )
            },
        );
        out.push((sport, tcp));
    }
    out
}

/// One TCP connection from `from` to `to:port` (source port `sport`) carrying `msg`, with an
/// `nc` listener on the far side: true if the listener printed exactly `msg`.
fn nc_flow(from: &Netns, to: &Netns, addr: &str, port: u16, sport: u16, msg: &str) -> bool {
    let p = port.to_string();
    let listener = Command::new("ip")
        .args([
            "netns", "exec", &to.name, "timeout", "10", "nc", "-l", addr, &p,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nc -l");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let o = to.try_exec(&["ss", "-Hltn", "sport", "=", &format!(":{port}")]);
        if String::from_utf8_lossy(&o.stdout).contains(&p) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let send = format!("echo {msg} | nc -N -w 3 -p {sport} {addr} {port}");
    let sent = from.try_exec(&["sh", "-c", &send]).status.success();
    let got = listener.wait_with_output().expect("nc -l ends");
    sent && String::from_utf8_lossy(&got.stdout) == format!("{msg}\n")
}

#[test]
fn each_flow_leaves_from_its_own_source_port_in_the_range() {
    require(&[
        "ip", "sh", "ping", "ss", "ethtool", "tcpdump", "nc", "timeout", "kill",
    ]);
    let (h, k, t) = (Netns::new("eh"), Netns::new("ek"), Netns::new("et"));
    let (_, uk) = veth(&h, "192.168.79.1/24", &k, "192.168.79.2/24");
    // As in the kernel interop test: the kernel completes inner checksums over veth.
    k.exec(&["ethtool", "-K", &uk, "tx", "off"]);
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
        "192.168.79.2",
        "remote",
        "192.168.79.1",
        "dstport",
        "4789",
    ]);
    k.exec(&["ip", "link", "set", "vx0", "mtu", "1500"]);
    k.exec(&["ip", "addr", "add", "10.7.0.2/24", "dev", "vx0"]);
    k.exec(&["ip", "link", "set", "vx0", "up"]);
    // A range outside the default one, so the test sees the configuration applied.
    let range = SourcePorts::new(40000, 40999).unwrap();
    let dp = Dataplane::spawn(DataplaneConfig {
        netns: Some(h.path()),
        vxlan_src_ports: range,
        ..DataplaneConfig::default()
    })
    .expect("dataplane starts");
    let tap = unique("te");
    dp.add_port(PortSpec::tap(&tap, Some(Domain::Vni(77))))
        .unwrap();
    dp.add_port(PortSpec::vxlan(
        "vx",
        "192.168.79.1".parse().unwrap(),
        "192.168.79.2".parse().unwrap(),
        Some(77),
    ))
    .unwrap();
    dp.add_flow("priority=0,actions=normal").unwrap();
    t.adopt(&h, &tap, "10.7.0.1/24", None);

    let file = std::env::temp_dir().join(format!("{}.pcap", unique("cap")));
    let path = file.to_string_lossy().into_owned();
    let mut cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            &k.name,
            "tcpdump",
            "-i",
            &uk,
            "-n",
            // Without immediate mode libpcap hands packets over in ring blocks that retire on
            // a timeout (1 s): a capture stopped sooner after the traffic loses them all.
            "--immediate-mode",
            "-U",
            "-w",
            &path,
            "udp dst port 4789 and src host 192.168.79.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpdump");
    let mut line = String::new();
    BufReader::new(cap.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "tcpdump: {line}");

    assert!(t.ping("10.7.0.2", 2, 56), "ping Strata -> kernel vxlan");
    // Four TCP flows (different inner source ports), each received by the kernel's side.
    for i in 0..4u16 {
        assert!(
            nc_flow(&t, &k, "10.7.0.2", 7001 + i, 6001 + i, &format!("flow{i}")),
            "TCP flow {i} through the kernel vxlan device"
        );
    }
    // Outer packets above the underlay MTU (1514-byte inner frames make 1550 bytes) are
    // fragmented by the port layer and reassembled by the kernel.
    assert!(
        t.ping("10.7.0.2", 2, 1472),
        "1500-byte inner packets over a 1500 MTU"
    );
    std::thread::sleep(Duration::from_millis(300));
    run(&["kill", "-TERM", &cap.id().to_string()]);
    let _ = cap.wait();
    let pcap = std::fs::read(&file).expect("capture file");
    let _ = std::fs::remove_file(&file);

    let pkts = outer_ports(&pcap);
    assert!(
        pkts.len() > 20,
        "captured {} packets ({} bytes of pcap)",
        pkts.len(),
        pcap.len()
    );
    for (sport, _) in &pkts {
        assert!(
            (range.lo..=range.hi).contains(sport),
            "source port {sport} outside {range:?}"
        );
    }
    let mut by_flow: BTreeMap<Tcp4, BTreeSet<u16>> = BTreeMap::new();
    for (sport, tcp) in &pkts {
        if let Some(f) = tcp {
            by_flow.entry(*f).or_default().insert(*sport);
        }
    }
    let mut per_flow = BTreeSet::new();
    for i in 0..4u16 {
        let ports: Vec<&BTreeSet<u16>> = by_flow
            .iter()
            .filter(|(f, _)| f.1 == 6001 + i && f.3 == 7001 + i)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(ports.len(), 1, "flow {i} captured: {by_flow:?}");
        assert_eq!(
            ports[0].len(),
            1,
            "flow {i} always leaves from one port: {ports:?}"
        );
        per_flow.insert(*ports[0].iter().next().unwrap());
    }
    assert!(
        per_flow.len() >= 2,
        "different flows leave from different source ports: {per_flow:?}"
    );
    let s = dp.stats().unwrap();
    let vx = s.port("vx").unwrap();
    assert_eq!(vx.io.tx_errors, 0, "{:?}", vx.io);
    assert_eq!(vx.stats.rx_errors + vx.io.rx_errors, 0);
}
