//! Tenant-network ports made as veth pairs (`strata network add-port ... --veth`), through the
//! daemon as a user runs it (fast path on, the default): the peer moved into a namespace the
//! test makes, ping and a TCP stream through the tenant's security groups, most of the
//! stream's packets carried by the kernel fast path (its `/metrics` counters), a denied
//! connection still denied, refusals that change nothing, the pair gone with its port, and the
//! pair made again after a restart.

use crate::common::*;
use serde_json::Value;

/// Whether interface `dev` exists in this namespace.
pub(crate) fn link_exists(dev: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", dev])
        .output()
        .unwrap()
        .status
        .success()
}

/// A counter of the admin's `/metrics` (0 if absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A port's rx and tx packet counts from `network stats`.
fn port_packets(cli: &Cli<'_>, network: &str, port: &str) -> u64 {
    let v = cli.json(&["network", "stats", network]);
    let p = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("{port} in {v}"))
        .clone();
    p["rx_packets"].as_u64().unwrap() + p["tx_packets"].as_u64().unwrap()
}

#[test]
fn veth_ports_of_a_tenant_network_go_through_the_kernel_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let tag = format!("{}", std::process::id() % 100_000);
    let peer_a = format!("tv{tag}a");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    cli.ok(&["network", "create", "n1", "--cidr", "10.71.0.0/16"]);
    cli.ok(&["subnet", "create", "n1", "a", "--cidr", "10.71.1.0/24"]);
    // p3's group lets in only TCP 80: pings and other ports to it die in its ingress rules.
    cli.ok(&["security-group", "create", "web"]);
    cli.ok(&[
        "security-group",
        "add-rule",
        "web",
        "--protocol",
        "tcp",
        "--port",
        "80",
    ]);
    let p1 = cli.json(&[
        "network", "add-port", "n1", "p1", "--subnet", "a", "--veth", "--peer", &peer_a,
    ]);
    assert_eq!(s(&p1, "veth_peer"), peer_a, "{p1}");
    let p2 = cli.json(&["network", "add-port", "n1", "p2", "--subnet", "a", "--veth"]);
    let peer_b = format!("{}p", s(&p2, "device"));
    assert_eq!(s(&p2, "veth_peer"), peer_b, "the default peer name: {p2}");
    let p3 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "p3",
        "--subnet",
        "a",
        "--veth",
        "--security-group",
        "web",
    ]);
    let peer_c = s(&p3, "veth_peer");
    for p in [&p1, &p2, &p3] {
        assert!(link_exists(&s(p, "device")), "host end of {p}");
    }
    assert!(link_exists(&peer_a) && link_exists(&peer_b) && link_exists(&peer_c));
    // The table says where to plug in.
    let (ok, table) = cli.run(&["network", "ports", "n1"]);
    assert!(
        ok && table.contains("PEER") && table.contains(&peer_a),
        "{table}"
    );

    // Refusals change nothing: a peer name taken (by p1, or by the host), a bad name, a
    // peer without --veth.
    let before = cli.json(&["network", "ports", "n1"])["items"]
        .as_array()
        .unwrap()
        .len();
    for (args, code) in [
        (vec!["--veth", "--peer", peer_a.as_str()], "address_in_use"),
        (vec!["--veth", "--peer", "lo"], "address_in_use"),
        (vec!["--veth", "--peer", "bad/name"], "invalid_argument"),
        (
            vec!["--veth", "--peer", "a-name-far-too-long"],
            "invalid_argument",
        ),
    ] {
        let mut a = vec!["network", "add-port", "n1", "px", "--subnet", "a"];
        a.extend(args.iter().copied());
        let (ok, out) = cli.run(&a);
        assert!(!ok && out.contains(code), "{a:?}: {out}");
    }
    let (ok, out) = cli.run(&[
        "network", "add-port", "n1", "px", "--subnet", "a", "--peer", "x1",
    ]);
    assert!(
        !ok && out.contains("--veth"),
        "clap refuses --peer alone: {out}"
    );
    let after = cli.json(&["network", "ports", "n1"])["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before, "a refused port leaves nothing");

    let ns: Vec<Netns> = ["a", "b", "c"]
        .iter()
        .map(|x| Netns::new(&format!("tv{tag}n{x}")))
        .collect();
    for (n, (peer, port)) in ns
        .iter()
        .zip([(&peer_a, &p1), (&peer_b, &p2), (&peer_c, &p3)])
    {
        n.adopt_bare(peer, &s(port, "mac"));
        n.sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", s(port, "ip")),
            "dev",
            peer,
        ]);
    }
    let (ip2, ip3) = (s(&p2, "ip"), s(&p3, "ip"));
    assert!(ns[0].ping(&ip2), "p1 to p2 (default group: members talk)");
    assert!(!ns[0].ping(&ip3), "p3's group lets no ping in");

    // A TCP stream p1 -> p2: counted exactly on both ports, mostly in the kernel.
    let srv = std::process::Command::new("ip")
        .args(["netns", "exec", &ns[1].0, "iperf3", "-s", "-1", "-B", &ip2])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        let (_, out) = ns[1].run(&["ss", "-Hltn", "sport", "=", ":5201"]);
        if out.contains("5201") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let m0 = d.metrics();
    let k0 = metric(
        &m0,
        "strata_network_fastpath_packets_total{path=\"kernel\"}",
    );
    let c0 = port_packets(&cli, "n1", "p1") + port_packets(&cli, "n1", "p2");
    let (ok, out) = ns[0].run(&["iperf3", "-c", &ip2, "-t", "2"]);
    let mut srv = srv;
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{out}");
    let m1 = d.metrics();
    assert!(
        m1.contains("strata_network_fastpath_entries"),
        "the fast path is loaded: {m1}"
    );
    let kernel = metric(
        &m1,
        "strata_network_fastpath_packets_total{path=\"kernel\"}",
    ) - k0;
    // Each packet is counted once as rx on its sender's port and once as tx on its
    // receiver's: two counts per packet.
    let counted = (port_packets(&cli, "n1", "p1") + port_packets(&cli, "n1", "p2") - c0) / 2;
    assert!(
        kernel > 1000 && kernel * 10 >= counted * 8,
        "the kernel forwarded {kernel} of the stream's {counted} packets"
    );
    // A connection p3's group does not let in stays refused (the kernel repeats only what
    // the engine allowed).
    let (ok, _) = ns[0].run(&["iperf3", "-c", &ip3, "-t", "1", "--connect-timeout", "1000"]);
    assert!(!ok, "TCP 5201 into p3 is denied");

    // Deleting a port deletes both ends of its pair.
    cli.ok(&["network", "del-port", s(&p2, "id").as_str()]);
    assert!(!link_exists(&s(&p2, "device")));
    assert!(!ns[1].run(&["ip", "link", "show", "dev", &peer_b]).0);

    // After a restart the pair is made again; its peer is back in this namespace (a
    // container it was given to has to be given it again).
    d.stop();
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    assert!(link_exists(&s(&p1, "device")) && link_exists(&peer_a));
    let ports: Value = cli.json(&["network", "ports", "n1"]);
    assert_eq!(ports["items"].as_array().unwrap().len(), 2, "{ports}");
    d.stop();
}
