//! Networks across nodes (`docs/cluster.md`, step 5): a tenant network with veth ports on two
//! nodes of one etcd, each port made through its own node's API; ping and a TCP stream
//! across the VXLAN tunnel the nodes set up by themselves; a security group enforced on the
//! destination's node; routing between subnets on different nodes; ARP answered on each
//! node (nothing flooded); a load balancer with backends on both nodes; a port deleted
//! through the other node's API is closed on its own.
//!
//! Real daemons on a real three-member etcd, real packets between network namespaces the
//! test makes. The nodes' underlay is loopback: each node advertises its own 127.0.0.x
//! address, so each binds its own VXLAN socket.

use std::time::Duration;

use crate::balancers::{connections, counts, Server};
use crate::cluster::etcd_cluster::EtcdCluster;
use crate::cluster::*;
use crate::common::*;
use crate::tenant_veth::link_exists;

/// Plugs a veth port's peer into `ns` with the port's MAC and address, gateway `gw`.
fn plug_peer(ns: &Netns, port: &serde_json::Value, gw: &str) {
    let peer = s(port, "veth_peer");
    ns.adopt_bare(&peer, &s(port, "mac"));
    ns.sh(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", s(port, "ip")),
        "dev",
        &peer,
    ]);
    ns.sh(&["ip", "route", "add", "default", "via", gw]);
}

#[test]
fn a_network_with_ports_on_two_nodes_carries_ping_tcp_groups_and_routes_across_them() {
    let Some(etcd) = EtcdCluster::start(3) else {
        return;
    };
    let url = store_url(&etcd);
    let dir = tempfile::tempdir().unwrap();
    let secret = join_secret(dir.path());
    let tag = format!("{}", std::process::id() % 100_000);
    let node = |i: usize| {
        let adv = format!("127.0.0.{}:{}", 21 + i, free_port());
        Daemon::start_with(
            &dir.path().join(NAMES[i]),
            &[
                "--store",
                &url,
                "--node",
                NAMES[i],
                "--advertise",
                &adv,
                "--join-secret-file",
                secret.to_str().unwrap(),
            ],
        )
    };
    let d1 = node(0);
    let d2 = node(1);
    // The admin token is the cluster's: the first node's file serves both.
    let data = dir.path().join(NAMES[0]);
    let c1 = Cli {
        d: &d1,
        data: &data,
    };
    let c2 = Cli {
        d: &d2,
        data: &data,
    };

    c1.ok(&["network", "create", "m1", "--cidr", "10.73.0.0/16"]);
    c1.ok(&["subnet", "create", "m1", "a", "--cidr", "10.73.1.0/24"]);
    c1.ok(&["subnet", "create", "m1", "b", "--cidr", "10.73.2.0/24"]);
    c1.ok(&[
        "router", "create", "m1", "r", "--subnet", "a", "--subnet", "b",
    ]);
    // web lets in only TCP 80: p3 takes no ping and no TCP 5201, from anywhere.
    c1.ok(&["security-group", "create", "web"]);
    c1.ok(&[
        "security-group",
        "add-rule",
        "web",
        "--protocol",
        "tcp",
        "--port",
        "80",
    ]);
    let p1 = c1.json(&[
        "network",
        "add-port",
        "m1",
        "p1",
        "--subnet",
        "a",
        "--veth",
        "--peer",
        &format!("mh{tag}a"),
    ]);
    // The second node's API makes its own ports: it follows the first node's objects.
    let p2 = c2.json(&[
        "network",
        "add-port",
        "m1",
        "p2",
        "--subnet",
        "a",
        "--veth",
        "--peer",
        &format!("mh{tag}b"),
    ]);
    let p3 = c2.json(&[
        "network",
        "add-port",
        "m1",
        "p3",
        "--subnet",
        "a",
        "--veth",
        "--peer",
        &format!("mh{tag}c"),
        "--security-group",
        "web",
    ]);
    let p4 = c2.json(&[
        "network",
        "add-port",
        "m1",
        "p4",
        "--subnet",
        "b",
        "--veth",
        "--peer",
        &format!("mh{tag}d"),
    ]);
    assert_eq!(s(&p1, "node"), "n1", "{p1}");
    assert_eq!(s(&p2, "node"), "n2", "{p2}");
    // Both nodes list all four ports, with where each is.
    for c in [&c1, &c2] {
        let v = c.json(&["network", "ports", "m1"]);
        assert_eq!(v["items"].as_array().unwrap().len(), 4, "{v}");
        let table = c.ok(&["network", "ports", "m1"]);
        assert!(table.contains("NODE"), "{table}");
        let p4_row = table
            .lines()
            .find(|l| l.starts_with("p4 "))
            .unwrap_or_default();
        assert!(p4_row.contains(" n2 "), "{table}");
    }

    let ns: Vec<Netns> = ["a", "b", "c", "d"]
        .iter()
        .map(|x| Netns::new(&format!("mh{tag}n{x}")))
        .collect();
    for (n, (p, gw)) in ns.iter().zip([
        (&p1, "10.73.1.1"),
        (&p2, "10.73.1.1"),
        (&p3, "10.73.1.1"),
        (&p4, "10.73.2.1"),
    ]) {
        plug_peer(n, p, gw);
    }
    let (ip2, ip3, ip4) = (s(&p2, "ip"), s(&p3, "ip"), s(&p4, "ip"));
    // The tunnel comes up once n1 follows n2's ports (its agent pass, or its next call).
    poll(
        Duration::from_secs(15),
        "p1 pings p2 across the nodes",
        || ns[0].ping(&ip2),
    );
    assert!(ns[1].ping(&s(&p1, "ip")), "p2 pings p1 back");
    assert!(
        !ns[0].ping(&ip3),
        "p3's group takes no ping (enforced on n2)"
    );
    assert!(
        ns[0].ping(&ip4),
        "p1 (subnet a, n1) pings p4 (subnet b, n2) through the router"
    );

    // A TCP stream p1 -> p2 across the tunnel, and its replies back through n1's conntrack.
    let srv = std::process::Command::new("ip")
        .args(["netns", "exec", &ns[1].0, "iperf3", "-s", "-1", "-B", &ip2])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    poll(Duration::from_secs(5), "iperf3 listens", || {
        ns[1]
            .run(&["ss", "-Hltn", "sport", "=", ":5201"])
            .1
            .contains("5201")
    });
    let (ok, out) = ns[0].run(&["iperf3", "-c", &ip2, "-t", "2", "-J"]);
    let mut srv = srv;
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    eprintln!(
        "iperf3 across two nodes: {:.2} Gbit/s, {} retransmits",
        bps / 1e9,
        v["end"]["sum_sent"]["retransmits"]
    );
    assert!(bps > 10e6, "{bps} bit/s");
    // TCP 5201 into p3 is denied on its node.
    let (ok, _) = ns[0].run(&["iperf3", "-c", &ip3, "-t", "1", "--connect-timeout", "1000"]);
    assert!(!ok, "TCP 5201 into p3 is denied");

    // A load balancer on n1's API with a backend on each node: connections from p1 (n1)
    // reach both, the remote one's replies translated back to the VIP on n1.
    let p5 = c1.json(&[
        "network",
        "add-port",
        "m1",
        "p5",
        "--subnet",
        "a",
        "--veth",
        "--peer",
        &format!("mh{tag}e"),
    ]);
    let ns5 = Netns::new(&format!("mh{tag}ne"));
    plug_peer(&ns5, &p5, "10.73.1.1");
    let web = dir.path().join("web");
    let _b2 = Server::start(&ns[1], "p2", &web);
    let _b5 = Server::start(&ns5, "p5", &web);
    let lb = c1.json(&[
        "load-balancer",
        "create",
        "web",
        "--network",
        "m1",
        "--subnet",
        "a",
        "--listener",
        "tcp:80",
        "--backend",
        "p2:8080",
        "--backend",
        "p5:8080",
    ]);
    let vip = s(&lb, "vip");
    poll(Duration::from_secs(10), "n2 follows the balancer", || {
        c2.json(&["load-balancer", "list", "m1"])["items"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let got = counts(&connections(&ns[0], &vip, 80, 30, 20.0, 0));
    assert_eq!(got.get("ERR"), None, "{got:?}");
    assert!(
        got.get("p2").is_some_and(|&n| n > 0) && got.get("p5").is_some_and(|&n| n > 0),
        "both backends, on both nodes, take connections: {got:?}"
    );
    drop(ns5);

    // Ports made at once through both nodes' APIs get distinct addresses and MACs: the
    // cluster's network lock orders the allocations.
    let made: Vec<serde_json::Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = [&c1, &c2]
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                sc.spawn(move || {
                    (0..4)
                        .map(|k| {
                            let name = format!("q{i}{k}");
                            c.json(&["network", "add-port", "m1", &name, "--subnet", "b"])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let ips: std::collections::BTreeSet<String> = made.iter().map(|p| s(p, "ip")).collect();
    let macs: std::collections::BTreeSet<String> = made.iter().map(|p| s(p, "mac")).collect();
    assert_eq!((ips.len(), macs.len()), (8, 8), "{made:?}");
    for p in &made {
        c1.ok(&["network", "del-port", s(p, "id").as_str()]);
    }

    // A port made through n1's API on n2 (`--node n2`): n2's agent opens its device, and it
    // talks to p1 across the nodes. A node nobody registered is refused, and changes nothing.
    let (ok, err) = c1.run(&[
        "network", "add-port", "m1", "p9", "--subnet", "a", "--node", "nowhere",
    ]);
    assert!(!ok && err.contains("node_not_found"), "{err}");
    let p6 = c1.json(&[
        "network",
        "add-port",
        "m1",
        "p6",
        "--subnet",
        "a",
        "--veth",
        "--peer",
        &format!("mh{tag}f"),
        "--node",
        "n2",
    ]);
    assert_eq!(s(&p6, "node"), "n2", "{p6}");
    poll(Duration::from_secs(10), "n2 opens p6's device", || {
        link_exists(&s(&p6, "veth_peer"))
    });
    let ns6 = Netns::new(&format!("mh{tag}nf"));
    plug_peer(&ns6, &p6, "10.73.1.1");
    poll(Duration::from_secs(15), "p1 pings p6 on n2", || {
        ns[0].ping(&s(&p6, "ip"))
    });
    assert!(ns6.ping(&s(&p1, "ip")), "p6 pings p1 back");
    // n2's switch carried p6's packets; n1's has no device for it.
    let admin = d1.admin();
    let rx = |d: &Daemon| -> u64 {
        let out = std::process::Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {admin}")])
            .arg(format!("{}/metrics", d.url))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET /metrics: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find(|l| {
                l.starts_with("strata_network_port_packets_total{")
                    && l.contains("port=\"p6\"")
                    && l.contains("dir=\"rx\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(rx(&d2) > 0, "n2 received p6's packets");
    assert_eq!(rx(&d1), 0, "n1 has no device for p6");
    drop(ns6);
    c2.ok(&["network", "del-port", s(&p6, "id").as_str()]);
    poll(Duration::from_secs(10), "n2 closes p6's device", || {
        !link_exists(&s(&p6, "device"))
    });

    // A port deleted through the other node's API: its node closes its device.
    c1.ok(&["network", "del-port", s(&p4, "id").as_str()]);
    poll(Duration::from_secs(10), "n2 closes p4's device", || {
        !link_exists(&s(&p4, "device"))
    });
    assert!(!ns[0].ping(&ip4), "p4 is gone");
    assert!(ns[0].ping(&ip2), "the others still talk");
    for c in [&c1, &c2] {
        let v = c.json(&["network", "ports", "m1"]);
        assert_eq!(
            v["items"].as_array().unwrap().len(),
            4,
            "p1, p2, p3, p5: {v}"
        );
    }
    drop(ns);
    d2.stop();
    d1.stop();
}
