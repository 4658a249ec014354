//! Latency figures of tenant networks through the daemon and the CLI, with real TCP between
//! namespaces: each TCP handshake gives the server's port and the client's port one round
//! trip each (conntrack, passive), active probes are answered by a live endpoint and lost to
//! one whose link is down, bad probe requests change nothing, and `/metrics` carries both as
//! Prometheus histograms promtool accepts.

use crate::common::*;
use serde_json::Value;

fn port_of<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["port"] == name)
        .unwrap_or_else(|| panic!("no port {name} in {v}"))
}

#[test]
fn handshakes_and_probes_give_each_port_its_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    let tag = format!("{}", std::process::id() % 100_000);
    for a in [
        &["network", "create", "n1", "--cidr", "10.64.0.0/16"][..],
        &["subnet", "create", "n1", "a", "--cidr", "10.64.1.0/24"],
        &["security-group", "create", "web"],
        &[
            "security-group",
            "add-rule",
            "web",
            "--protocol",
            "tcp",
            "--port",
            "8080",
        ],
    ] {
        let (ok, out) = cli.run(a);
        assert!(ok, "{a:?}: {out}");
    }
    let ports: Vec<Value> = ["p1", "p2", "p3"]
        .iter()
        .map(|n| {
            cli.json(&[
                "network",
                "add-port",
                "n1",
                n,
                "--subnet",
                "a",
                "--security-group",
                "web",
            ])
        })
        .collect();
    let ns: Vec<Netns> = (1..=3)
        .map(|i| Netns::new(&format!("lt{tag}n{i}")))
        .collect();
    for (n, p) in ns.iter().zip(&ports) {
        plug_on_link(n, p, 24);
    }
    // p3's endpoint goes away: its link is down, nothing answers there.
    ns[2].sh(&[
        "ip",
        "link",
        "set",
        ports[2]["device"].as_str().unwrap(),
        "down",
    ]);

    let server_ip = ports[1]["ip"].as_str().unwrap().to_string();
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns[1].0,
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            &server_ip,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the server listens (a fixed wait failed on a loaded machine).
    for _ in 0..100 {
        if ns[1]
            .run(&["ss", "-Hltn", "sport", "=", ":8080"])
            .1
            .contains("8080")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for _ in 0..3 {
        let (ok, out) = ns[0].run(&[
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            &format!("http://{server_ip}:8080/"),
        ]);
        assert!(ok, "curl through the network: {out}");
    }
    let _ = server.kill();
    let _ = server.wait();

    // Three handshakes: the server's port answered three SYNs, the client's three SYN-ACKs.
    let st = cli.json(&["network", "stats", "n1"]);
    for p in ["p1", "p2"] {
        let h = &port_of(&st, p)["handshake_rtt"];
        assert_eq!(h["samples"], 3, "{p}: one half of each handshake: {st}");
        let mean = h["mean_us"].as_u64().unwrap();
        let p99 = h["p99_us"].as_u64().unwrap();
        assert!(mean < 1_000_000 && p99 >= mean, "{p}: {h}");
    }
    assert_eq!(port_of(&st, "p3")["handshake_rtt"]["samples"], 0);
    assert_eq!(st["total"]["handshake_rtt"]["samples"], 6, "{st}");

    // Active probes: the live endpoints answer every one, the one that is down none.
    let pr = cli.json(&[
        "network",
        "probe",
        "n1",
        "--count",
        "5",
        "--interval-ms",
        "20",
    ]);
    for p in ["p1", "p2"] {
        let r = port_of(&pr, p);
        assert_eq!(
            (r["sent"].as_u64(), r["answered"].as_u64()),
            (Some(5), Some(5)),
            "{pr}"
        );
        assert_eq!(r["loss_ppm"], 0, "{pr}");
        assert_eq!(r["rtt"]["samples"], 5, "{pr}");
        assert!(r["rtt"]["mean_us"].as_u64().unwrap() < 1_000_000, "{pr}");
    }
    let r3 = port_of(&pr, "p3");
    assert_eq!(
        (r3["sent"].as_u64(), r3["answered"].as_u64()),
        (Some(5), Some(0)),
        "{pr}"
    );
    assert_eq!(r3["loss_ppm"], 1_000_000, "{pr}");
    // The probes' counters stay with the port, apart from its tenant traffic.
    let st2 = cli.json(&["network", "stats", "n1"]);
    let p1 = port_of(&st2, "p1");
    assert_eq!(
        (p1["probes_sent"].as_u64(), p1["probes_answered"].as_u64()),
        (Some(5), Some(5)),
        "{st2}"
    );
    let (ok, table) = cli.run(&[
        "network",
        "probe",
        "n1",
        "--count",
        "1",
        "--interval-ms",
        "10",
    ]);
    assert!(
        ok && table.contains("LOSS") && table.contains("100.0%"),
        "{table}"
    );

    // Bad requests: refused with a stable code, nothing sent.
    for (count, interval) in [("0", "100"), ("21", "100"), ("5", "5"), ("5", "201")] {
        let (ok, out) = cli.run(&[
            "network",
            "probe",
            "n1",
            "--count",
            count,
            "--interval-ms",
            interval,
        ]);
        assert!(
            !ok && out.contains("invalid_argument"),
            "{count}/{interval}: {out}"
        );
    }
    let (ok, out) = cli.run(&["network", "probe", "nosuch"]);
    assert!(!ok && out.contains("not_found"), "{out}");
    let st3 = cli.json(&["network", "stats", "n1"]);
    assert_eq!(
        port_of(&st3, "p1")["probes_sent"],
        6,
        "only the good calls sent: {st3}"
    );

    // /metrics: the histograms, as promtool accepts them.
    let text = d.metrics();
    let p1l = "tenant=\"default\",network=\"n1\",port=\"p1\"";
    assert!(
        text.contains(&format!(
            "strata_network_port_handshake_rtt_seconds_count{{{p1l}}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "strata_network_port_handshake_rtt_seconds_bucket{{{p1l},le=\"+Inf\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "strata_network_port_probes_total{{{p1l},result=\"answered\"}} 6"
        )),
        "{text}"
    );
    promtool_check(&text);
}
