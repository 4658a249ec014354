//! The fast path with connection tracking (docs/net-engine.md, "Conntrack-established
//! flows"): security-group flows of the tenant-network compiler's shape (everything through
//! `ct` with a recirculation, new connections committed on the way out, established ones let
//! through both ways, the rest dropped) between two veth ports whose peers are in namespaces
//! the test makes. Needs root, `python3`, `ping`, `iperf3`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_dataplane::{DataplaneConfig, DataplaneStats};
use strata_net::conntrack::{ConnProto, CtCounters, TcpState};
use strata_net::SwitchConfig;

use crate::fastpath::{hex, rx_packets, snapshot, without_ip_id, Bed, Capture};
use crate::netenv::Netns;

const ZONE: u16 = 7;

impl Bed {
    /// The security group: ARP by `normal`; IPv4 through conntrack (zone 7) into table 1;
    /// there, established packets pass both ways (a's through a no-op commit, as a group's
    /// egress does), new ones from a are committed, everything else (new from b, invalid)
    /// dies.
    fn group_flows(&self) {
        let (va, vb) = (&self.va, &self.vb);
        for f in [
            "table=0,priority=5,arp,actions=normal".to_string(),
            format!("table=0,priority=100,ip,in_port={va},actions=ct(zone={ZONE},table=1)"),
            format!("table=0,priority=100,ip,in_port={vb},actions=ct(zone={ZONE},table=1)"),
            "table=0,priority=1,actions=drop".to_string(),
            format!(
                "table=1,priority=100,ct_state=+trk+est,in_port={va},\
                 actions=ct(commit,zone={ZONE}),output:{vb}"
            ),
            format!("table=1,priority=100,ct_state=+trk+est,in_port={vb},actions=output:{va}"),
            format!(
                "table=1,priority=90,ct_state=+trk+new,ip,in_port={va},\
                 actions=ct(commit,zone={ZONE}),output:{vb}"
            ),
            "table=1,priority=1,actions=drop".to_string(),
        ] {
            self.dp.add_flow(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}

fn bed(fast: bool, switch: SwitchConfig) -> Bed {
    let bed = Bed::with_config(DataplaneConfig {
        fastpath: fast,
        switch,
        ..DataplaneConfig::default()
    });
    bed.group_flows();
    assert_eq!(
        bed.stats().fastpath.is_some(),
        fast,
        "{:?}",
        bed.stats().fastpath_error
    );
    bed
}

/// Every rule's packet count, in dump order, ARP rules left out (the kernel's neighbour
/// traffic is not the test's).
fn rule_counts(bed: &Bed) -> Vec<(String, u64)> {
    bed.dp
        .dump_flows()
        .unwrap()
        .lines()
        .filter(|l| l.contains("n_packets=") && !l.contains("arp"))
        .map(|l| {
            let at = l.find("n_packets=").unwrap() + "n_packets=".len();
            let n = l[at..].split(',').next().unwrap().parse().unwrap();
            let rule = l[l.find("actions=").unwrap_or(0)..].to_string();
            let tm = l
                .split(',')
                .find(|x| x.trim().starts_with("table="))
                .unwrap_or("");
            (format!("{tm} {rule}"), n)
        })
        .collect()
}

/// Packets counted on table 1's rules.
fn table1(bed: &Bed) -> u64 {
    bed.dp
        .with_switch(|sw, now| {
            sw.dump_flows(now)
                .iter()
                .filter(|d| d.rule.table == 1)
                .map(|d| d.stats.n_packets)
                .sum()
        })
        .unwrap()
}

/// Conntrack's counters, and the sum of the packet counts of the rules with a `ct` action
/// (each hit is one packet through the tracker), read at one instant.
fn ct_books(bed: &Bed) -> (CtCounters, u64) {
    bed.dp
        .with_switch(|sw, now| {
            let through: u64 = sw
                .dump_flows(now)
                .iter()
                .filter(|d| strata_net::format_flow(&d.rule, None).contains("ct("))
                .map(|d| d.stats.n_packets)
                .sum();
            (*sw.conntrack().counters(), through)
        })
        .unwrap()
}

/// Starts `code` under python3 in `ns` and waits for it to print "ready".
fn spawn_py(ns: &Netns, code: &str) -> Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c", code])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

const ECHO_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('10.61.0.2', 7777))
s.settimeout(10)
print("ready", flush=True)
for i in range(8):
    d, a = s.recvfrom(2000)
    s.sendto(d, a)
"#;

/// Counts what one TCP connection on 10.61.0.2:9000 brings until it closes, prints it.
const STREAM_SERVER: &str = r#"
import socket
l = socket.socket()
l.bind(('10.61.0.2', 9000))
l.listen(1)
l.settimeout(10)
print("ready", flush=True)
c, _ = l.accept()
c.settimeout(10)
n = 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    n += len(d)
c.close()
print(n, flush=True)
"#;

/// Sends for 6 s on one connection, then closes it.
const STREAM_CLIENT: &str = "import socket, time\n\
s = socket.create_connection(('10.61.0.2', 9000), timeout=10)\n\
buf = b'x' * 65536\n\
end = time.time() + 6\n\
while time.time() < end:\n    s.sendall(buf)\n\
s.close()\n";

const CLIENT: &str = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('10.61.0.1', 4000))\n\
s.settimeout(2)\n\
for i in range(8):\n    s.sendto(b'strata conntrack fast path ' * 3, ('10.61.0.2', 7777)); s.recvfrom(2000)\n";

/// One UDP conversation of 8 datagrams each way through the group, with the fast path on
/// and off: b receives the same bytes, every rule and the connection count the same packets,
/// and with it on the kernel carried what it can: a's first datagram is new (the engine
/// commits it), b's first answer and a's second are the first established ones (the engine
/// installs their entries), so a's datagrams 3 to 8 and b's answers 2 to 8 can be the
/// kernel's.
#[test]
fn fast_path_carries_established_udp_with_the_slow_paths_bytes_and_counts() {
    let mut runs = Vec::new();
    for fast in [false, true] {
        let bed = bed(fast, SwitchConfig::default());
        assert!(
            bed.a.ping("10.61.0.2", 1, 56),
            "a reaches b through the group"
        );
        let f0 = bed.stats().fastpath.map(|f| f.forwarded);
        let srv = spawn_py(&bed.b, ECHO_SERVER);
        let cap = Capture::start(&bed.b, &format!("{}p", bed.vb), 8, 6);
        bed.a.exec(&["python3", "-c", CLIENT]);
        let frames: Vec<Vec<u8>> = cap.frames().into_iter().map(without_ip_id).collect();
        assert!(srv.wait_with_output().unwrap().status.success());
        assert_eq!(frames.len(), 8, "fast={fast}");
        let conn = bed
            .dp
            .with_switch(|sw, _| {
                sw.conntrack()
                    .entries()
                    .filter(|c| c.proto == ConnProto::Udp)
                    .map(|c| (c.zone, c.packets, c.bytes))
                    .collect::<Vec<_>>()
            })
            .unwrap();
        assert_eq!(conn.len(), 1, "fast={fast}: {conn:?}");
        // a's datagrams pass two ct steps each (table 0's, the commit), b's one; a's first
        // is counted only by the commit that creates the entry.
        assert_eq!(conn[0].1, [15, 8], "fast={fast}: the connection's packets");
        let (c, through) = ct_books(&bed);
        assert_eq!(
            c.new + c.established + c.related + c.invalid_total(),
            through,
            "fast={fast}: every packet through a ct rule counted once by the tracker"
        );
        assert_eq!(c.invalid_total(), 0, "fast={fast}");
        let s = bed.stats();
        let carried: Vec<u64> = [&bed.va, &bed.vb]
            .iter()
            .map(|p| s.port(p).unwrap().io.fast_rx_packets)
            .collect();
        if let (Some(f0), Some(f)) = (f0, s.fastpath) {
            // At most a's datagrams 3..8 and b's answers 2..8; a datagram may beat the entry
            // its predecessor installs (the answer is quicker than the install), so one less
            // is allowed each way.
            assert!((5..=6).contains(&carried[0]), "{carried:?}");
            assert!((6..=7).contains(&carried[1]), "{carried:?}");
            assert_eq!(f.forwarded - f0, carried[0] + carried[1], "{f:?}");
            assert_eq!(f.errors, 0);
        } else {
            assert_eq!(carried, [0, 0]);
        }
        // Counts in dump order (the actions name each bed's own ports).
        let counts: Vec<u64> = rule_counts(&bed).into_iter().map(|(_, n)| n).collect();
        runs.push((frames, counts, conn[0]));
    }
    let (slow, fast) = (&runs[0], &runs[1]);
    for (i, (s, f)) in slow.0.iter().zip(&fast.0).enumerate() {
        assert_eq!(hex(s), hex(f), "frame {i}: slow path vs fast path");
    }
    assert_eq!(slow.1, fast.1, "rule counters, slow vs fast");
    assert_eq!(
        slow.2, fast.2,
        "the connection's packets and bytes, slow vs fast"
    );
}

/// A 6 s TCP stream (one connection) through the group with a 3 s established timeout: the
/// kernel carries nearly all of it, the connections stay alive (the fold feeds their use back), every packet is
/// counted once on the rules and by the tracker, and the close that comes back to the slow
/// path is accepted (nothing invalid).
#[test]
fn a_tcp_stream_rides_the_fast_path_and_stays_tracked() {
    let mut cfg = SwitchConfig::default();
    cfg.ct.timeouts.tcp_established = Duration::from_secs(3);
    let bed = bed(true, cfg);
    assert!(bed.a.ping("10.61.0.2", 1, 56));
    let srv = spawn_py(&bed.b, STREAM_SERVER);
    let s0 = bed.stats();
    let (rx0, h0) = snapshot(&bed.dp);
    let t1_0 = table1(&bed);
    let client = Command::new("ip")
        .args(["netns", "exec", &bed.a.name, "python3", "-c", STREAM_CLIENT])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    // Past the 3 s timeout: only the fold's refresh keeps them.
    let alive = bed
        .dp
        .with_switch(|sw, now| {
            sw.conntrack()
                .entries()
                .filter(|c| {
                    c.proto == ConnProto::Tcp(TcpState::Established)
                        && c.orig.dport == 9000
                        && c.deadline > now
                })
                .count()
        })
        .unwrap();
    assert_eq!(alive, 1, "the connection is established and alive");
    let mut client = client;
    assert!(client.wait().unwrap().success(), "the transfer completes");
    let got = srv.wait_with_output().unwrap();
    assert!(got.status.success());
    let got: u64 = String::from_utf8_lossy(&got.stdout).trim().parse().unwrap();
    assert!(got > 10 << 20, "only {got} bytes");
    let s1 = bed.stats();
    let p = |s: &DataplaneStats| s.port(&bed.va).unwrap().clone();
    let rx = p(&s1).stats.rx_packets - p(&s0).stats.rx_packets;
    let fast = p(&s1).io.fast_rx_packets - p(&s0).io.fast_rx_packets;
    assert!(
        fast * 10 >= rx * 9,
        "the kernel carried {fast} of {rx} packets"
    );
    // Each received packet hit one rule of table 0, and each tracked one a rule of table 1.
    std::thread::sleep(Duration::from_millis(300));
    let (rx, hits) = snapshot(&bed.dp);
    let t1 = table1(&bed);
    assert_eq!(
        hits - h0,
        (rx - rx0) + (t1 - t1_0),
        "{}",
        bed.dp.dump_flows().unwrap()
    );
    let (c, through) = ct_books(&bed);
    assert_eq!(
        c.new + c.established + c.related + c.invalid_total(),
        through
    );
    assert_eq!(c.invalid_total(), 0, "the close was accepted: {c:?}");
    assert_eq!(s1.fastpath.unwrap().errors, 0);
}

/// Under iperf3 on the fast path, `change` is made; packets from a stop arriving at b
/// within a second.
fn stops_within_a_second(change: impl FnOnce(&Bed)) {
    let bed = bed(true, SwitchConfig::default());
    assert!(bed.a.ping("10.61.0.2", 1, 56));
    let _srv = bed.b.iperf_server("10.61.0.2");
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &bed.a.name,
            "iperf3",
            "-c",
            "10.61.0.2",
            "-t",
            "6",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let before = bed.stats().fastpath.unwrap().forwarded;
    assert!(before > 1000, "the kernel carries the stream: {before}");
    change(&bed);
    let changed = Instant::now();
    let bp = format!("{}p", bed.vb);
    let mut last = rx_packets(&bed.b, &bp);
    let mut last_change = changed;
    while changed.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
        let now = rx_packets(&bed.b, &bp);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let _ = client.kill();
    let _ = client.wait();
    let stopped = last_change.duration_since(changed);
    assert!(
        stopped < Duration::from_secs(1),
        "packets kept arriving for {stopped:?}"
    );
}

/// The group's connections are dropped (a rule change applied to existing connections
/// flushes the zone): the entries resting on them are void at once.
#[test]
fn flushing_the_connections_stops_an_offloaded_flow_within_a_second() {
    stops_within_a_second(|bed| {
        let n = bed
            .dp
            .with_switch(|sw, _| sw.conntrack_mut().flush_zone(ZONE))
            .unwrap();
        assert!(n >= 2, "{n}");
    });
}

/// A rule change that denies established traffic from a (the group's egress rule for
/// established packets replaced by a drop).
#[test]
fn a_rule_denying_established_traffic_stops_an_offloaded_flow_within_a_second() {
    stops_within_a_second(|bed| {
        bed.dp
            .add_flow(&format!(
                "table=1,priority=100,ct_state=+trk+est,in_port={},actions=drop",
                bed.va
            ))
            .unwrap();
    });
}
