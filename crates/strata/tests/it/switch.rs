//! Virtual switches through the CLI, with network namespaces.

use crate::common::*;
use serde_json::Value;

/// The switch through the daemon and the CLI, with real packets: two namespaces on VNI 100
/// ping each other, a third on VNI 200 reaches neither and its frames are dropped; flows,
/// counters, trace, and the switch coming back after a restart.
#[test]
fn switch_through_the_cli_with_namespaces() {
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
    let ns: Vec<Netns> = (1..=3)
        .map(|i| Netns::new(&format!("sc{tag}n{i}")))
        .collect();
    let taps: Vec<String> = (1..=3).map(|i| format!("sc{tag}t{i}")).collect();
    cli(&["switch", "create", "br0"]);
    cli(&["switch", "add-port", "br0", &taps[0], "--vni", "100"]);
    cli(&["switch", "add-port", "br0", &taps[1], "--vni", "100"]);
    cli(&["switch", "add-port", "br0", &taps[2], "--vni", "200"]);
    for (i, (n, t)) in ns.iter().zip(&taps).enumerate() {
        n.adopt(t, &format!("10.77.0.{}/24", i + 1));
    }
    assert!(ns[0].ping("10.77.0.2"), "same VNI must reach");
    assert!(ns[1].ping("10.77.0.1"));
    assert!(!ns[2].ping("10.77.0.1"), "another VNI must not reach");
    assert!(!ns[0].ping("10.77.0.3"));
    let ports: Value =
        serde_json::from_str(&cli(&["switch", "ports", "br0", "-o", "json"])).unwrap();
    let port = |n: &str| {
        ports["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    assert!(port(&taps[0])["tx_packets"].as_u64().unwrap() >= 3);
    assert!(
        port(&taps[2])["rx_dropped"].as_u64().unwrap() >= 1,
        "{ports}"
    );
    assert_eq!(
        port(&taps[2])["tx_packets"],
        0,
        "nothing may reach the other tenant: {ports}"
    );
    assert!(port(&taps[0]).get("rx_errors").is_some(), "{ports}");
    // The table shows rx_errors too.
    let table = cli(&["switch", "ports", "br0"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.contains("RX ERR"), "{table}");
    let flows = cli(&["switch", "dump-flows", "br0"]);
    assert!(
        flows.contains("actions=normal") && flows.contains("n_packets="),
        "{flows}"
    );
    // A flow that drops ICMP between the two: ping stops; deleting it restores it.
    cli(&[
        "switch",
        "add-flow",
        "br0",
        "priority=40000,icmp,actions=drop",
    ]);
    assert!(!ns[0].ping("10.77.0.2"));
    let trace = cli(&[
        "switch",
        "trace",
        "br0",
        &format!("in_port={},icmp,nw_src=10.77.0.1,nw_dst=10.77.0.2", taps[0]),
    ]);
    assert!(trace.contains("drop"), "{trace}");
    // The same match and priority again replaces the rule (one stored flow, not two).
    cli(&[
        "switch",
        "add-flow",
        "br0",
        "priority=40000,icmp,actions=drop",
    ]);
    cli(&[
        "switch",
        "add-flow",
        "br0",
        "table=1,priority=7,arp,actions=normal",
    ]);
    let before = rules(&cli(&["switch", "dump-flows", "br0"]));
    // Restart: the switch, its ports and flows come back (the TAPs are reopened).
    d.stop();
    let d2 = Daemon::start(&data);
    let o = strata()
        .args([
            "switch",
            "dump-flows",
            "br0",
            "--endpoint",
            &d2.url,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let flows = String::from_utf8_lossy(&o.stdout);
    assert!(
        flows.contains("priority=40000") && flows.contains("icmp"),
        "{flows}"
    );
    assert_eq!(
        rules(&flows),
        before,
        "restart must restore exactly the same rules"
    );
    d2.stop();
}

/// `dump-flows` lines without what changes with time and traffic (duration, counters).
fn rules(dump: &str) -> Vec<String> {
    dump.lines()
        .map(|l| {
            l.split(", ")
                .filter(|f| {
                    !f.trim_start().starts_with("duration=")
                        && !f.starts_with("n_packets=")
                        && !f.starts_with("n_bytes=")
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}
