//! The veth fast path against real packets: two veth ports whose peers are in namespaces
//! the test makes, frames sent by real stacks (ping, a UDP socket, iperf3) and crafted ones
//! (a raw packet socket), captured at the receiving end. Needs root, `python3`, `ping`,
//! `iperf3`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_dataplane::{Dataplane, DataplaneConfig, DataplaneStats, PortSpec};
use strata_net::key::{Field, FlowKey};
use strata_net::packet::build_frame;
use strata_net::switch::PortConfig;
use strata_net::{Effects, Switch};

use crate::netenv::{require, unique, Netns};

const A_MAC: &str = "02:00:00:00:0a:01";
const B_MAC: &str = "02:00:00:00:0b:01";
/// An address nobody has: a flow sends what is addressed to it to b, rewritten.
const VIP: &str = "10.61.0.99";
const VIP_MAC: &str = "02:00:00:00:09:09";

/// Two namespaces with a veth port's peer each (fixed MACs), and the dataplane in a third.
pub(crate) struct Bed {
    pub(crate) a: Netns,
    pub(crate) b: Netns,
    pub(crate) dp: Dataplane,
    pub(crate) va: String,
    pub(crate) vb: String,
    // Dropped last: the dataplane lives in it.
    _host: Netns,
}

impl Bed {
    fn new(fastpath: bool, bpf_object: Option<std::path::PathBuf>) -> Bed {
        Bed::with_config(DataplaneConfig {
            fastpath,
            bpf_object,
            ..DataplaneConfig::default()
        })
    }

    /// A bed whose dataplane has `cfg` (its namespace set here).
    pub(crate) fn with_config(cfg: DataplaneConfig) -> Bed {
        require(&["ip", "sh", "ping", "iperf3", "ss", "python3"]);
        let (host, a, b) = (Netns::new("h"), Netns::new("a"), Netns::new("b"));
        let dp = Dataplane::spawn(DataplaneConfig {
            netns: Some(host.path()),
            ..cfg
        })
        .unwrap();
        let (va, vb) = (unique("fa"), unique("fb"));
        dp.add_port(PortSpec::veth(&va, None)).unwrap();
        dp.add_port(PortSpec::veth(&vb, None)).unwrap();
        for (dev, mac) in [(format!("{va}p"), A_MAC), (format!("{vb}p"), B_MAC)] {
            host.exec(&["ip", "link", "set", &dev, "address", mac]);
        }
        a.adopt(&host, &format!("{va}p"), "10.61.0.1/24", None);
        b.adopt(&host, &format!("{vb}p"), "10.61.0.2/24", None);
        a.exec(&[
            "ip",
            "neigh",
            "replace",
            VIP,
            "lladdr",
            VIP_MAC,
            "dev",
            &format!("{va}p"),
        ]);
        Bed {
            a,
            b,
            dp,
            va,
            vb,
            _host: host,
        }
    }

    /// Flows: what is sent to the VIP goes to b with b's MAC and address; b's answers to a
    /// come from the VIP; everything else is a learning switch.
    fn rewrite_flows(&self) {
        let (va, vb) = (&self.va, &self.vb);
        self.dp
            .add_flow(&format!(
                "priority=10,ip,in_port={va},nw_dst={VIP},actions=set_field:{B_MAC}->eth_dst,\
                 set_field:10.61.0.2->nw_dst,output:{vb}"
            ))
            .unwrap();
        self.dp
            .add_flow(&format!(
                "priority=10,ip,in_port={vb},nw_src=10.61.0.2,nw_dst=10.61.0.1,\
                 actions=set_field:{VIP}->nw_src,output:{va}"
            ))
            .unwrap();
        self.dp.add_flow("priority=0,actions=normal").unwrap();
    }

    pub(crate) fn stats(&self) -> DataplaneStats {
        self.dp.stats().unwrap()
    }
}

/// A capture of the IPv4 frames arriving on `dev` inside `ns` (an AF_PACKET socket in
/// python), until `n` frames or `secs` seconds.
pub(crate) struct Capture {
    child: Child,
}

const CAPTURE: &str = r#"
import socket, sys, time, select
dev, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((dev, 0))
print("ready", flush=True)
end, got = time.time() + secs, 0
while got < n:
    left = end - time.time()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        break
    f, addr = s.recvfrom(70000)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    print(f.hex(), flush=True)
    got += 1
"#;

impl Capture {
    pub(crate) fn start(ns: &Netns, dev: &str, n: usize, secs: u32) -> Capture {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", CAPTURE, dev])
            .arg(n.to_string())
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 capture");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.as_mut().unwrap());
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "capture did not start");
        Capture { child }
    }

    pub(crate) fn frames(self) -> Vec<Vec<u8>> {
        let o = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect()
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(s: &str) -> u64 {
    s.split(':')
        .fold(0, |m, x| (m << 8) | u64::from_str_radix(x, 16).unwrap())
}

/// A TCP PSH+ACK segment from a to the VIP, with complete checksums.
fn crafted_tcp(payload: usize) -> Vec<u8> {
    let mut k = FlowKey::ZERO;
    k.set(Field::EthSrc, mac(A_MAC));
    k.set(Field::EthDst, mac(VIP_MAC));
    k.set(Field::EthType, 0x0800);
    k.set(Field::NwProto, 6);
    k.set(Field::NwTtl, 64);
    k.set(Field::NwSrc, 0x0a3d_0001);
    k.set(Field::NwDst, 0x0a3d_0063);
    k.set(Field::TpSrc, 4001);
    k.set(Field::TpDst, 80);
    build_frame(&k, payload)
}

/// What the engine itself makes of `frame` with the bed's flows: the oracle for the bytes.
fn engine_output(frame: &[u8]) -> Vec<u8> {
    let mut sw = Switch::default();
    let (va, vb) = ("va", "vb");
    sw.add_port(PortConfig::tap(va, None)).unwrap();
    sw.add_port(PortConfig::tap(vb, None)).unwrap();
    sw.add_flow(
        Duration::ZERO,
        &format!(
            "priority=10,ip,in_port={va},nw_dst={VIP},actions=set_field:{B_MAC}->eth_dst,\
             set_field:10.61.0.2->nw_dst,output:{vb}"
        ),
    )
    .unwrap();
    let mut fx = Effects::new();
    sw.receive(Duration::ZERO, 1, frame, &mut fx);
    let (_, out) = fx.iter().next().expect("the engine forwards it");
    out.to_vec()
}

/// Sends raw frames from `dev` in `ns`, 50 ms apart.
fn send_raw(ns: &Netns, dev: &str, frames: &[Vec<u8>]) {
    let mut args = vec![
        "python3".to_string(),
        "-c".into(),
        "import socket, sys, time\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind((sys.argv[1], 0))\n\
         for h in sys.argv[2:]:\n    s.send(bytes.fromhex(h)); time.sleep(0.05)\n"
            .into(),
        dev.to_string(),
    ];
    args.extend(frames.iter().map(|f| hex(f)));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.exec(&a);
}

/// Five UDP datagrams from a kernel socket in `ns` to the VIP (the checksum is left partial
/// for the device: offloads on).
fn send_udp(ns: &Netns) {
    ns.exec(&[
        "python3",
        "-c",
        "import socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('10.61.0.1', 4000))\n\
         for i in range(5):\n    s.sendto(b'strata fast path ' * 4, ('10.61.0.99', 7777)); time.sleep(0.05)\n",
    ]);
}

/// The IPv4 identification and header checksum zeroed: the two fields the sending stack
/// picks per packet, which no switch touches.
pub(crate) fn without_ip_id(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() >= 34 {
        f[18..20].fill(0);
        f[24..26].fill(0);
    }
    f
}

/// Everything the receiving namespace sees for one run: crafted TCP frames (exact bytes),
/// kernel UDP with partial checksums and pings through the rewrite flow.
fn run_frames(bed: &Bed) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (ap, bp) = (format!("{}p", bed.va), format!("{}p", bed.vb));
    assert!(bed.a.ping("10.61.0.2", 1, 56), "a reaches b");
    let crafted: Vec<Vec<u8>> = (0..4).map(|_| crafted_tcp(100)).collect();
    let cap = Capture::start(&bed.b, &bp, 4, 5);
    send_raw(&bed.a, &ap, &crafted);
    let tcp = cap.frames();
    let cap = Capture::start(&bed.b, &bp, 8, 5);
    send_udp(&bed.a);
    let (ok, _) = (
        bed.a
            .try_exec(&[
                "ping", "-c", "3", "-i", "0.2", "-W", "1", "-s", "8", "-p", "5a", "-e", "4242", VIP,
            ])
            .status
            .success(),
        (),
    );
    assert!(ok, "ping through the rewrite flows");
    let rest = cap.frames().into_iter().map(without_ip_id).collect();
    (tcp, rest)
}

/// The same flows give the same bytes at the receiver with the fast path on and off: crafted
/// TCP segments exactly as the engine computes them, and the kernel's UDP (partial
/// checksums) and ICMP through a MAC and IPv4 rewrite. With it on, the kernel carried them.
#[test]
fn fast_and_slow_paths_deliver_the_same_bytes() {
    let want = engine_output(&crafted_tcp(100));
    let mut runs = Vec::new();
    for fast in [false, true] {
        let bed = Bed::new(fast, None);
        bed.rewrite_flows();
        let s0 = bed.stats();
        assert_eq!(s0.fastpath.is_some(), fast, "{:?}", s0.fastpath_error);
        let (tcp, rest) = run_frames(&bed);
        assert_eq!(tcp.len(), 4, "fast={fast}");
        for f in &tcp {
            assert_eq!(hex(f), hex(&want), "fast={fast}: the engine's bytes");
        }
        assert_eq!(rest.len(), 8, "5 UDP + 3 ICMP, fast={fast}");
        if fast {
            let f = bed.stats().fastpath.unwrap();
            // The first of each flow takes the slow path; the others the kernel.
            assert!(f.forwarded >= 3 + 4 + 2, "{f:?}");
            assert_eq!(f.errors, 0, "{f:?}");
        }
        runs.push((tcp, rest));
    }
    assert_eq!(runs[0].1.len(), runs[1].1.len());
    for (i, (s, f)) in runs[0].1.iter().zip(&runs[1].1).enumerate() {
        assert_eq!(hex(s), hex(f), "frame {i}: slow path vs fast path");
    }
}

/// N pings with the fast path on: every port and rule counter moves by exactly N, the
/// kernel carried them (the slow path read none of them), and `trace` says so.
#[test]
fn counters_stay_exact_on_the_fast_path() {
    let bed = Bed::new(true, None);
    bed.dp.add_flow("priority=0,actions=normal").unwrap();
    assert!(
        bed.a.ping("10.61.0.2", 2, 56),
        "warm up: neighbours, MACs, entries"
    );
    std::thread::sleep(Duration::from_millis(300));
    let rule = |st: &str| -> u64 {
        let at = st.find("n_packets=").unwrap() + "n_packets=".len();
        st[at..].split(',').next().unwrap().parse().unwrap()
    };
    let s0 = bed.stats();
    let r0 = rule(&bed.dp.dump_flows().unwrap());
    let n = 10;
    assert!(bed.a.ping("10.61.0.2", n, 56));
    let s1 = bed.stats();
    let r1 = rule(&bed.dp.dump_flows().unwrap());
    let d = |port: &str, f: fn(&strata_dataplane::PortCounters) -> u64| {
        f(s1.port(port).unwrap()) - f(s0.port(port).unwrap())
    };
    let n = n as u64;
    for p in [&bed.va, &bed.vb] {
        assert_eq!(d(p, |c| c.stats.rx_packets), n, "{p} rx: {:?}", s1.port(p));
        assert_eq!(d(p, |c| c.stats.tx_packets), n, "{p} tx");
        assert_eq!(
            d(p, |c| c.stats.rx_bytes),
            n * 98,
            "{p}: 98-byte echo frames"
        );
        assert_eq!(
            d(p, |c| c.io.fast_rx_packets),
            n,
            "{p}: carried in the kernel"
        );
    }
    assert_eq!(r1 - r0, 2 * n, "the rule counts both directions");
    let slow: u64 =
        s1.thread_rx_frames.iter().sum::<u64>() - s0.thread_rx_frames.iter().sum::<u64>();
    assert_eq!(slow, 0, "the slow path read none of them");
    let f0 = s0.fastpath.unwrap();
    let f1 = s1.fastpath.unwrap();
    assert_eq!(f1.forwarded - f0.forwarded, 2 * n);
    let t = bed
        .dp
        .trace(&format!(
            "in_port={},icmp,dl_src={A_MAC},dl_dst={B_MAC},nw_src=10.61.0.1,nw_dst=10.61.0.2,\
             icmp_type=8,icmp_code=0",
            bed.va
        ))
        .unwrap()
        .unwrap();
    assert!(t.contains("Fast path: served in the kernel"), "{t}");
    // A rule change makes every entry stale at once (the fold before the trace deletes
    // them): the next packets take the slow path, install again, and still count exactly.
    bed.dp.add_flow("priority=1,arp,actions=normal").unwrap();
    let t = bed
        .dp
        .trace(&format!(
            "in_port={},icmp,dl_src={A_MAC},dl_dst={B_MAC},nw_src=10.61.0.1,nw_dst=10.61.0.2,\
             icmp_type=8,icmp_code=0",
            bed.va
        ))
        .unwrap()
        .unwrap();
    assert!(t.contains("Fast path: not installed"), "{t}");
    let s2 = bed.stats();
    assert!(bed.a.ping("10.61.0.2", 3, 56));
    let s3 = bed.stats();
    let rx = |s: &DataplaneStats| s.port(&bed.va).unwrap().stats.rx_packets;
    assert_eq!(rx(&s3) - rx(&s2), 3);
}

/// iperf3 through the rewrite flows (partial checksums of TSO frames rewritten in the kernel):
/// the transfer works, the kernel carries nearly all of it, and every packet counts on the
/// rules exactly once.
#[test]
fn tcp_through_a_rewrite_is_carried_by_the_kernel() {
    let bed = Bed::new(true, None);
    bed.rewrite_flows();
    assert!(bed.a.ping("10.61.0.2", 1, 56));
    assert!(bed.a.ping(VIP, 1, 56), "through the rewrite");
    let srv = bed.b.iperf_server("0.0.0.0");
    let s0 = bed.stats();
    let (rx0, h0) = snapshot(&bed.dp);
    let got = bed.a.iperf_client(VIP, 2, false).expect("TCP to the VIP");
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
    // Every packet in either direction hit exactly one rule: the received and the counted,
    // read in one step (the fast path's counts are folded in before it).
    let (rx, hits) = snapshot(&bed.dp);
    assert_eq!(hits - h0, rx - rx0, "{}", bed.dp.dump_flows().unwrap());
    assert_eq!(s1.fastpath.unwrap().errors, 0);
}

/// Packets received on all ports, and packets counted on all rules, at one instant.
pub(crate) fn snapshot(dp: &Dataplane) -> (u64, u64) {
    dp.with_switch(|sw, now| {
        let rx = sw.ports().map(|(_, _, st)| st.rx_packets).sum();
        let hits = sw.dump_flows(now).iter().map(|d| d.stats.n_packets).sum();
        (rx, hits)
    })
    .unwrap()
}

/// Reads `/sys/class/net/DEV/statistics/rx_packets` inside `ns`.
pub(crate) fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    ns.exec(&[
        "cat",
        &format!("/sys/class/net/{dev}/statistics/rx_packets"),
    ])
    .trim()
    .parse()
    .unwrap()
}

/// A flow deleted under iperf3: packets stop arriving at once (within a second), though the
/// kernel was carrying them.
#[test]
fn a_deleted_flow_stops_within_a_second() {
    let bed = Bed::new(true, None);
    let (va, vb) = (&bed.va, &bed.vb);
    bed.dp.add_flow("priority=5,arp,actions=normal").unwrap();
    bed.dp
        .add_flow(&format!("priority=5,ip,in_port={va},actions=output:{vb}"))
        .unwrap();
    bed.dp
        .add_flow(&format!("priority=5,ip,in_port={vb},actions=output:{va}"))
        .unwrap();
    assert!(bed.a.ping("10.61.0.2", 1, 56));
    let _srv = bed.b.iperf_server("10.61.0.2");
    let client = Command::new("ip")
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
    let bp = format!("{vb}p");
    std::thread::sleep(Duration::from_secs(2));
    let before = bed.stats().fastpath.unwrap().forwarded;
    assert!(before > 1000, "the kernel carries the stream: {before}");
    bed.dp
        .del_flows(&format!("ip,in_port={va}"), false)
        .unwrap();
    let deleted = Instant::now();
    // When did packets from a last arrive at b?
    let mut last = rx_packets(&bed.b, &bp);
    let mut last_change = deleted;
    while deleted.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
        let now = rx_packets(&bed.b, &bp);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let mut client = client;
    let _ = client.kill();
    let _ = client.wait();
    let stopped = last_change.duration_since(deleted);
    assert!(
        stopped < Duration::from_secs(1),
        "packets kept arriving for {stopped:?}"
    );
}

/// A fast path that cannot load (a bogus object) leaves the ports on the slow path: they
/// forward, the reason is reported, and nothing is carried in the kernel.
#[test]
fn a_fast_path_that_cannot_load_falls_back() {
    let bogus = std::env::temp_dir().join(format!("strata-bogus-{}.o", std::process::id()));
    std::fs::write(&bogus, b"not an ELF object").unwrap();
    let bed = Bed::new(true, Some(bogus.clone()));
    let _ = std::fs::remove_file(&bogus);
    bed.dp.add_flow("priority=0,actions=normal").unwrap();
    assert!(bed.a.ping("10.61.0.2", 3, 56), "the slow path forwards");
    let s = bed.stats();
    assert!(s.fastpath.is_none());
    let why = s.fastpath_error.clone().expect("the reason is kept");
    assert!(why.contains("strata-bogus"), "{why}");
    assert_eq!(s.port(&bed.va).unwrap().io.fast_rx_packets, 0);
    let srv = bed.b.iperf_server("10.61.0.2");
    assert!(bed.a.iperf_client("10.61.0.2", 1, false).is_some());
    drop(srv);
}
