//! veth ports through the daemon and the CLI: `strata switch add-port SW NAME --veth`, the
//! peers moved into namespaces the test makes, ping and iperf3 between them, a TAP on the same
//! switch, exact counters, a taken name, and the pair deleted with its port and its switch;
//! and the eBPF fast path as the daemon runs it (on by default): exact counters, `trace`.

use crate::common::*;
use serde_json::Value;

fn link_exists(dev: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", dev])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn veth_ports_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // The slow path's offloads are what this test checks (GSO frames whole through the ring):
    // the fast path would carry most of them (`veth_fast_path_through_the_daemon`).
    let d = Daemon::start_with(&data, &["--no-fastpath"]);
    let tag = format!("{}", std::process::id() % 100_000);
    let run = |args: &[&str]| {
        strata()
            .args(args)
            .arg("--endpoint")
            .arg(&d.url)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    let cli = |args: &[&str]| -> String {
        let o = run(args);
        assert!(
            o.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (va, vb, t) = (
        format!("vc{tag}a"),
        format!("vc{tag}b"),
        format!("vc{tag}t"),
    );
    let peer_b = format!("vc{tag}ctr");
    let ns: Vec<Netns> = ["a", "b", "t"]
        .iter()
        .map(|s| Netns::new(&format!("vc{tag}n{s}")))
        .collect();
    cli(&["switch", "create", "vsw"]);
    let out = cli(&["switch", "add-port", "vsw", &va, "--veth", "--vni", "9"]);
    assert!(out.contains(&format!("peer {va}p")), "{out}");
    cli(&[
        "switch", "add-port", "vsw", &vb, "--veth", "--peer", &peer_b, "--vni", "9",
    ]);
    cli(&["switch", "add-port", "vsw", &t, "--vni", "9"]);
    assert!(link_exists(&va) && link_exists(&format!("{va}p")) && link_exists(&peer_b));
    ns[0].adopt(&format!("{va}p"), "10.62.0.1/24");
    ns[1].adopt(&peer_b, "10.62.0.2/24");
    ns[2].adopt(&t, "10.62.0.3/24");
    for n in &ns {
        let _ = n.run(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        ]);
    }
    assert!(ns[0].ping("10.62.0.2"), "veth to veth");
    assert!(ns[0].ping("10.62.0.3"), "veth to TAP");
    assert!(ns[2].ping("10.62.0.2"), "TAP to veth");
    // Kind and peer in the listing, in JSON and in the table.
    let ports = || -> Value {
        serde_json::from_str(&cli(&["switch", "ports", "vsw", "-o", "json"])).unwrap()
    };
    let port = |v: &Value, n: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    let p0 = ports();
    assert_eq!(port(&p0, &va)["kind"], "veth", "{p0}");
    assert_eq!(port(&p0, &va)["peer"], format!("{va}p"));
    assert_eq!(port(&p0, &vb)["peer"], peer_b.as_str());
    assert_eq!(port(&p0, &t)["kind"], "tap");
    let table = cli(&["switch", "ports", "vsw"]);
    assert!(
        table.lines().next().unwrap_or_default().contains("PEER") && table.contains(&peer_b),
        "{table}"
    );
    // Exact deltas: 2 pings from a to b are 2 frames each way, none to the TAP.
    let (ok, _) = ns[0].run(&["ping", "-q", "-c", "2", "-i", "0.2", "-W", "1", "10.62.0.2"]);
    assert!(ok);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let p1 = ports();
    let delta =
        |n: &str, f: &str| port(&p1, n)[f].as_u64().unwrap() - port(&p0, n)[f].as_u64().unwrap();
    assert_eq!(delta(&va, "rx_packets"), 2, "{p1}");
    assert_eq!(delta(&va, "tx_packets"), 2, "{p1}");
    assert_eq!(delta(&vb, "rx_packets"), 2, "{p1}");
    assert_eq!(delta(&vb, "tx_packets"), 2, "{p1}");
    assert_eq!(delta(&t, "tx_packets"), 0, "learned, not flooded: {p1}");
    // TCP between the two containers' ends, offloads whole.
    let srv = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns[1].0,
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.62.0.2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        let (_, s) = ns[1].run(&["ss", "-Hltn", "sport", "=", ":5201"]);
        if s.contains("5201") {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok, "iperf3 server did not listen");
    let (ok, out) = ns[0].run(&["iperf3", "-c", "10.62.0.2", "-t", "1", "-J"]);
    let mut srv = srv;
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{out}");
    let p2 = ports();
    assert!(port(&p2, &va)["rx_gso"].as_u64().unwrap() > 0, "{p2}");
    assert!(port(&p2, &vb)["tx_gso"].as_u64().unwrap() > 0, "{p2}");
    // A name taken on the host: the typed error, nothing added.
    let o = run(&[
        "switch",
        "add-port",
        "vsw",
        "lo",
        "--veth",
        "--peer",
        &format!("vc{tag}x"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("port_exists") && err.contains("lo"), "{err}");
    assert!(!link_exists(&format!("vc{tag}x")), "no half-made pair");
    // The names the kernel keeps for itself are taken too (`default` once answered a 500).
    for reserved in ["default", "all"] {
        let o = run(&["switch", "add-port", "vsw", reserved, "--veth"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("port_exists"), "{err}");
        let o = run(&["switch", "add-port", "vsw", reserved]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("port_exists"), "{err}");
    }
    assert_eq!(ports()["items"].as_array().unwrap().len(), 3);
    // Removal deletes the pair, the end in the namespace too.
    cli(&["switch", "del-port", "vsw", &va]);
    assert!(!link_exists(&va));
    let (ok, _) = ns[0].run(&["ip", "link", "show", &format!("{va}p")]);
    assert!(!ok, "the peer went with its port");
    // Deleting the switch deletes the rest.
    cli(&["switch", "delete", "vsw"]);
    let (ok, _) = ns[1].run(&["ip", "link", "show", &peer_b]);
    assert!(!ok, "the switch's veth pairs are deleted with it");
    d.stop();
}

/// The fast path through the daemon: established flows between two veth ports are carried
/// in the kernel, yet `switch ports` and `dump-flows` move by exactly what was sent, `trace`
/// says the flow is served in the kernel, and iperf3 runs.
#[test]
fn veth_fast_path_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let tag = format!("{}", std::process::id() % 100_000);
    let cli = |args: &[&str]| -> String {
        let o = strata()
            .args(args)
            .arg("--endpoint")
            .arg(&d.url)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (va, vb) = (format!("vf{tag}a"), format!("vf{tag}b"));
    let ns: Vec<Netns> = ["a", "b"]
        .iter()
        .map(|s| Netns::new(&format!("vf{tag}n{s}")))
        .collect();
    cli(&["switch", "create", "fsw"]);
    cli(&["switch", "add-port", "fsw", &va, "--veth"]);
    cli(&["switch", "add-port", "fsw", &vb, "--veth"]);
    ns[0].adopt(&format!("{va}p"), "10.63.0.1/24");
    ns[1].adopt(&format!("{vb}p"), "10.63.0.2/24");
    for n in &ns {
        n.sh(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        ]);
    }
    assert!(
        ns[0].ping("10.63.0.2"),
        "warm up: neighbours, MACs, entries"
    );
    let ports = || -> Value {
        serde_json::from_str(&cli(&["switch", "ports", "fsw", "-o", "json"])).unwrap()
    };
    let count = |v: &Value, n: &str, f: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()[f]
            .as_u64()
            .unwrap()
    };
    let rule = |flows: &str| -> u64 {
        let at = flows.find("n_packets=").unwrap() + "n_packets=".len();
        flows[at..]
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (p0, r0) = (ports(), rule(&cli(&["switch", "dump-flows", "fsw"])));
    let (ok, _) = ns[0].run(&[
        "ping",
        "-q",
        "-c",
        "10",
        "-i",
        "0.2",
        "-W",
        "1",
        "10.63.0.2",
    ]);
    assert!(ok);
    let (p1, r1) = (ports(), rule(&cli(&["switch", "dump-flows", "fsw"])));
    for n in [&va, &vb] {
        for f in ["rx_packets", "tx_packets"] {
            assert_eq!(count(&p1, n, f) - count(&p0, n, f), 10, "{n} {f}: {p1}");
        }
    }
    assert_eq!(r1 - r0, 20, "the learning rule counts both directions");
    let mac = |n: &Netns, dev: &str| {
        let (ok, m) = n.run(&["cat", &format!("/sys/class/net/{dev}/address")]);
        assert!(ok);
        m.trim().to_string()
    };
    let (a_mac, b_mac) = (
        mac(&ns[0], &format!("{va}p")),
        mac(&ns[1], &format!("{vb}p")),
    );
    let trace = cli(&[
        "switch",
        "trace",
        "fsw",
        &format!(
            "in_port={va},icmp,dl_src={a_mac},dl_dst={b_mac},nw_src=10.63.0.1,\
             nw_dst=10.63.0.2,icmp_type=8,icmp_code=0"
        ),
    ]);
    assert!(trace.contains("Fast path: served in the kernel"), "{trace}");
    let srv = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns[1].0,
            "iperf3",
            "-s",
            "-1",
            "-B",
            "10.63.0.2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        let (_, s) = ns[1].run(&["ss", "-Hltn", "sport", "=", ":5201"]);
        if s.contains("5201") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = ns[0].run(&["iperf3", "-c", "10.63.0.2", "-t", "1"]);
    let mut srv = srv;
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{out}");
    cli(&["switch", "delete", "fsw"]);
    d.stop();
}
