//! Tenant networks through the daemon and the CLI, with real packets between namespaces:
//! DHCP with a real client, routing between subnets, security groups (allow, deny,
//! established, remote group, a rule change at once), and isolation between networks with
//! exact drop counters.

use crate::common::*;
use serde_json::Value;

/// An HTTP server in a namespace; its log (one line per request, client address first).
struct Http {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Http {
    fn start(ns: &Netns, bind: &str, log: std::path::PathBuf) -> Http {
        let f = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                bind,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(800));
        Http { child, log }
    }
    fn clients(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The packet count of the one flow of table 30 whose line contains `needle`.
fn flow_packets(flows: &Value, needle: &str) -> u64 {
    let lines: Vec<&str> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|l| l.contains("table=30,") && l.contains(needle))
        .collect();
    assert_eq!(lines.len(), 1, "one flow with {needle:?}: {lines:?}");
    let n = lines[0].split("n_packets=").nth(1).unwrap();
    n.split(',').next().unwrap().parse().unwrap()
}

#[test]
fn tenant_networks_with_dhcp_routing_security_groups_and_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    let tag = format!("{}", std::process::id() % 100_000);

    let n1 = cli.json(&["network", "create", "n1", "--cidr", "10.60.0.0/16"]);
    assert!(n1["vni"].as_u64().unwrap() >= 10_000, "{n1}");
    cli.ok(&[
        "subnet",
        "create",
        "n1",
        "a",
        "--cidr",
        "10.60.1.0/24",
        "--dns",
        "10.60.0.53",
    ]);
    cli.ok(&["subnet", "create", "n1", "b", "--cidr", "10.60.2.0/24"]);
    let r = cli.json(&[
        "router", "create", "n1", "r", "--subnet", "a", "--subnet", "b",
    ]);
    assert_eq!(r["subnets"].as_array().unwrap().len(), 2, "{r}");
    cli.ok(&["security-group", "create", "web"]);
    cli.ok(&["security-group", "add-rule", "web", "--protocol", "icmp"]);
    cli.ok(&[
        "security-group",
        "add-rule",
        "web",
        "--protocol",
        "tcp",
        "--port",
        "5201",
    ]);
    let p1 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "p1",
        "--subnet",
        "a",
        "--security-group",
        "web",
    ]);
    let p2 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "p2",
        "--subnet",
        "b",
        "--security-group",
        "web",
    ]);
    let p3 = cli.json(&["network", "add-port", "n1", "p3", "--subnet", "a"]);
    assert_eq!(s(&p1, "ip"), "10.60.1.2", "{p1}");
    assert_eq!(s(&p2, "ip"), "10.60.2.2", "{p2}");
    // The table form says what to plug where.
    let (ok, text) = cli.run(&["network", "show-port", "p1"]);
    assert!(ok && text.contains(&s(&p1, "device")), "{text}");

    let ns: Vec<Netns> = (1..=4)
        .map(|i| Netns::new(&format!("tn{tag}n{i}")))
        .collect();

    // p1 by DHCP, with a real client.
    ns[0].adopt_bare(&s(&p1, "device"), &s(&p1, "mac"));
    let script = dir.path().join("udhcpc.sh");
    let got = dir.path().join("dhcp.out");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/$subnet\" dev \"$interface\"\n\
             ip route add default via \"$router\" dev \"$interface\"\n\
             echo \"ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu\" > {}\n",
            got.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let dev1 = s(&p1, "device");
    let (ok, out) = ns[0].run(&[
        "busybox",
        "udhcpc",
        "-i",
        &dev1,
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(ok, "udhcpc: {out}");
    let lease = std::fs::read_to_string(&got).unwrap();
    assert!(
        lease.contains("ip=10.60.1.2 ")
            && lease.contains("subnet=255.255.255.0")
            && lease.contains("router=10.60.1.1")
            && lease.contains("dns=10.60.0.53")
            && lease.contains("mtu=1450"),
        "{lease}"
    );
    let (_, addr) = ns[0].run(&["ip", "-4", "addr", "show", "dev", &dev1]);
    assert!(addr.contains("10.60.1.2/24"), "{addr}");

    plug(&ns[1], &p2, 24, "10.60.2.1");
    plug(&ns[2], &p3, 24, "10.60.1.1");

    // The gateway answers ARP and ping; the router routes between the subnets.
    assert!(ns[0].ping("10.60.1.1"), "gateway ping");
    assert!(ns[0].ping("10.60.2.2"), "routed a -> b");
    assert!(ns[1].ping("10.60.1.2"), "routed b -> a");
    let (_, ttl) = ns[0].run(&["ping", "-c", "1", "-W", "1", "10.60.2.2"]);
    assert!(
        ttl.contains("ttl=63"),
        "one router hop decrements the TTL: {ttl}"
    );

    // Security groups: p3 is in `default` (ingress only from its members), p1 and p2 in `web`.
    assert!(
        !ns[0].ping("10.60.1.3"),
        "default group denies icmp from a non-member"
    );
    assert!(ns[2].ping("10.60.1.2"), "web allows icmp from anywhere");
    // TCP 5201 is allowed (and its replies, established); 7000 is not, until a rule says so.
    let mut server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns[1].0, "iperf3", "-s", "-1", "-p", "5201",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (ok, out) = ns[0].run(&["iperf3", "-c", "10.60.2.2", "-p", "5201", "-t", "1"]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        ok,
        "iperf3 through the router and the security groups: {out}"
    );
    let listen = |ns: &Netns, port: &str| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "nc", "-l", "-k", port])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut l = listen(&ns[1], "7000");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, _) = ns[0].run(&["nc", "-z", "-w", "2", "10.60.2.2", "7000"]);
    assert!(!ok, "tcp 7000 has no rule");
    cli.ok(&[
        "security-group",
        "add-rule",
        "web",
        "--protocol",
        "tcp",
        "--port",
        "7000-7001",
    ]);
    let (ok, out) = ns[0].run(&["nc", "-z", "-w", "2", "10.60.2.2", "7000"]);
    assert!(ok, "a new rule applies to new connections at once: {out}");
    let _ = l.kill();
    let _ = l.wait();
    // A remote-group rule: `default` admits ingress from its own members only, so p1 reaches
    // p3 once it is a member too.
    cli.ok(&["network", "set-groups", "p1", "web", "default"]);
    assert!(
        ns[0].ping("10.60.1.3"),
        "a member of default reaches default's port"
    );

    // Isolation: another network with an overlapping subnet cannot reach n1's ports, even
    // aimed at p1's MAC; each frame dies in its own subnet's table, counted exactly.
    cli.ok(&["network", "create", "n2", "--cidr", "10.60.0.0/16"]);
    cli.ok(&["subnet", "create", "n2", "q", "--cidr", "10.60.1.0/24"]);
    let q1 = cli.json(&[
        "network",
        "add-port",
        "n2",
        "q1",
        "--subnet",
        "q",
        "--ip",
        "10.60.1.99",
    ]);
    plug(&ns[3], &q1, 24, "10.60.1.1");
    let dev4 = s(&q1, "device");
    ns[3].sh(&[
        "ip",
        "neigh",
        "add",
        "10.60.1.2",
        "lladdr",
        &s(&p1, "mac"),
        "dev",
        &dev4,
    ]);
    // Subnet keys go in creation order: a=1, b=2, q=3; q's "no port has that MAC" drop is
    // the flow every frame of n2 aimed at another MAC ends in.
    let q_drop = "priority=1,metadata=0x3 ";
    let before = flow_packets(&cli.json(&["network", "flows"]), q_drop);
    assert!(
        !ns[3].ping("10.60.1.2"),
        "another network must not reach p1"
    );
    let after = flow_packets(&cli.json(&["network", "flows"]), q_drop);
    assert_eq!(
        after - before,
        2,
        "both echo requests die in n2's own table"
    );
    // The figures say the same: q1's frames died by a drop flow, per reason.
    let st = cli.json(&["network", "stats", "n2"]);
    let q = &st["ports"][0];
    assert_eq!(q["port"], "q1", "{st}");
    assert!(q["drops"]["drop_action"].as_u64().unwrap_or(0) >= 2, "{st}");
    let st1 = cli.json(&["network", "stats", "n1"]);
    let ports = st1["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 3, "{st1}");
    let p1s = ports.iter().find(|p| p["port"] == "p1").unwrap();
    assert!(p1s["rx_packets"].as_u64().unwrap() >= 10, "{st1}");
    assert!(p1s["tx_bytes"].as_u64().unwrap() > 0, "{st1}");
    let sum: u64 = ports
        .iter()
        .map(|p| p["rx_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(st1["total"]["rx_packets"].as_u64().unwrap(), sum, "{st1}");
    let (ok, table) = cli.run(&["network", "stats", "n1"]);
    assert!(
        ok && table.contains("(total)") && table.contains("DROPS"),
        "{table}"
    );
    // And /metrics, as Prometheus text promtool accepts.
    let text = d.metrics();
    let q1 = "tenant=\"default\",network=\"n2\",port=\"q1\"";
    assert!(
        text.contains(&format!(
            "strata_network_port_drops_total{{{q1},reason=\"drop_action\"}}"
        )),
        "{text}"
    );
    let p1 = "tenant=\"default\",network=\"n1\",port=\"p1\"";
    assert!(text.contains(&format!(
        "strata_network_port_bytes_total{{{p1},dir=\"rx\"}}"
    )));
    promtool_check(&text);
    // Deleting what is in use is refused with a stable code; emptied, it all goes.
    let (ok, out) = cli.run(&["network", "delete", "n2"]);
    assert!(!ok && out.contains("network_not_empty"), "{out}");
    cli.ok(&["network", "del-port", "q1"]);
    cli.ok(&["subnet", "delete", "q"]);
    cli.ok(&["network", "delete", "n2"]);
    let nets = cli.json(&["network", "list"]);
    assert_eq!(nets["items"].as_array().unwrap().len(), 1, "{nets}");
}

/// SNAT of a tenant subnet to the outside (an external network the admin made, its port in a
/// namespace), and a floating IP: reachable from outside at its address, and the port's own
/// traffic leaves with it.
#[test]
fn snat_to_the_outside_and_a_floating_ip_inbound() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    let tag = format!("{}", std::process::id() % 100_000);

    let ext = cli.json(&[
        "network",
        "create",
        "ext",
        "--cidr",
        "203.0.113.0/24",
        "--external",
    ]);
    assert_eq!(ext["external"], true, "{ext}");
    cli.ok(&[
        "subnet",
        "create",
        "ext",
        "out",
        "--cidr",
        "203.0.113.0/24",
        "--no-dhcp",
    ]);
    let up = cli.json(&["network", "add-port", "ext", "uplink", "--subnet", "out"]);
    assert_eq!(s(&up, "ip"), "203.0.113.2", "{up}");
    assert!(up["security_groups"].as_array().unwrap().is_empty(), "{up}");
    cli.ok(&["network", "create", "n1", "--cidr", "10.61.0.0/16"]);
    cli.ok(&["subnet", "create", "n1", "a", "--cidr", "10.61.1.0/24"]);
    cli.ok(&["router", "create", "n1", "r", "--subnet", "a"]);
    let r = cli.json(&["router", "set-gateway", "r", "ext"]);
    assert_eq!(r["gateway"]["ip"], "203.0.113.3", "{r}");
    cli.ok(&["security-group", "create", "web"]);
    cli.ok(&[
        "security-group",
        "add-rule",
        "web",
        "--protocol",
        "tcp",
        "--port",
        "8080",
    ]);
    let p1 = cli.json(&["network", "add-port", "n1", "p1", "--subnet", "a"]);
    let p2 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "p2",
        "--subnet",
        "a",
        "--security-group",
        "web",
    ]);
    let fip = cli.json(&["floating-ip", "create", "ext", "--port", "p2"]);
    assert_eq!(s(&fip, "ip"), "203.0.113.4", "{fip}");
    // A port that already has one cannot take another; the error is stable.
    let (ok, out) = cli.run(&["floating-ip", "create", "ext", "--port", "p2"]);
    assert!(!ok && out.contains("address_in_use"), "{out}");

    let ns: Vec<Netns> = (1..=3)
        .map(|i| Netns::new(&format!("tx{tag}n{i}")))
        .collect();
    plug_on_link(&ns[0], &up, 24);
    plug(&ns[1], &p1, 24, "10.61.1.1");
    plug(&ns[2], &p2, 24, "10.61.1.1");

    // SNAT: p1 reaches the outside, which sees the router's address.
    let outside = Http::start(&ns[0], "203.0.113.2", dir.path().join("outside.log"));
    let (ok, out) = ns[1].run(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "http://203.0.113.2:8080/",
    ]);
    if !ok {
        let (_, trace) = cli.run(&[
            "network",
            "trace",
            "p1",
            "--to",
            "203.0.113.2",
            "--protocol",
            "tcp",
            "--port-number",
            "8080",
        ]);
        let (_, flows) = cli.run(&["network", "flows"]);
        panic!("curl from p1 to the outside: {out}\n{trace}\n{flows}");
    }
    let seen = outside.clients();
    assert!(
        seen.contains("203.0.113.3 "),
        "the outside sees the router's address: {seen}"
    );
    assert!(
        !seen.contains("10.61.1."),
        "no inside address leaks out: {seen}"
    );
    // p2 leaves with its floating IP.
    let (ok, out) = ns[2].run(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "http://203.0.113.2:8080/",
    ]);
    assert!(ok, "curl from p2 to the outside: {out}");
    assert!(
        outside.clients().contains("203.0.113.4 "),
        "{}",
        outside.clients()
    );
    drop(outside);

    // Inbound to the floating IP: DNAT to p2, whose group allows tcp 8080.
    let inside = Http::start(&ns[2], "0.0.0.0", dir.path().join("inside.log"));
    let (ok, out) = ns[0].run(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "http://203.0.113.4:8080/",
    ]);
    assert!(ok, "curl from the outside to the floating IP: {out}");
    assert!(
        inside.clients().contains("203.0.113.2 "),
        "{}",
        inside.clients()
    );
    // The router's own address forwards nothing inbound, and p1 has no floating IP.
    let (ok, _) = ns[0].run(&[
        "curl",
        "-s",
        "-m",
        "2",
        "-o",
        "/dev/null",
        "http://203.0.113.3:8080/",
    ]);
    assert!(!ok, "nothing is forwarded to the router's address");
    drop(inside);

    // Freed of its port, the floating IP forwards nothing; deleting the port frees it too.
    cli.ok(&["floating-ip", "disassociate", "203.0.113.4"]);
    let _inside = Http::start(&ns[2], "0.0.0.0", dir.path().join("inside2.log"));
    let (ok, _) = ns[0].run(&[
        "curl",
        "-s",
        "-m",
        "2",
        "-o",
        "/dev/null",
        "http://203.0.113.4:8080/",
    ]);
    assert!(!ok, "a free floating IP forwards nothing");
    cli.ok(&["floating-ip", "associate", "203.0.113.4", "p2"]);
    cli.ok(&["network", "del-port", "p2"]);
    let f = cli.json(&["floating-ip", "show", "203.0.113.4"]);
    assert!(f["port"].is_null(), "{f}");
    let (ok, out) = cli.run(&["router", "clear-gateway", "r"]);
    assert!(ok, "{out}");
}

/// Everything a tenant network is comes back after a restart: the objects, each port's
/// device, and the same compiled flows.
#[test]
fn tenant_networks_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let flows = |cli: &Cli<'_>| -> Vec<String> {
        let v = cli.json(&["network", "flows"]);
        let mut f: Vec<String> = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .map(|l| {
                // The rule without its counters and age.
                let t = l.split("table=").nth(1).unwrap_or("");
                let rest = l.split("n_bytes=").nth(1).unwrap_or("");
                let rest = rest.split_once(", ").map_or("", |x| x.1);
                // Switch port and group-set numbers are handed out again at start, in
                // another order: compare the rules with them blanked (the trace below checks
                // the wiring end to end).
                let mut r = format!("{}|{rest}", t.split(',').next().unwrap_or(""));
                for reg in ["reg5", "reg6", "reg7"] {
                    r = blank_number(&r, &format!("{reg}=0x"), "");
                    r = blank_number(&r, "set_field:0x", &format!("->{reg}"));
                }
                r
            })
            .collect();
        f.sort();
        f
    };
    let (before, device) = {
        let d = Daemon::start(&data);
        let cli = Cli { d: &d, data: &data };
        cli.ok(&["network", "create", "n1", "--cidr", "10.62.0.0/16"]);
        cli.ok(&["subnet", "create", "n1", "a", "--cidr", "10.62.1.0/24"]);
        cli.ok(&["subnet", "create", "n1", "b", "--cidr", "10.62.2.0/24"]);
        cli.ok(&[
            "router", "create", "n1", "r", "--subnet", "a", "--subnet", "b",
        ]);
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
        let p = cli.json(&[
            "network",
            "add-port",
            "n1",
            "p1",
            "--subnet",
            "a",
            "--security-group",
            "web",
        ]);
        cli.ok(&["network", "add-port", "n1", "p2", "--subnet", "b"]);
        let f = flows(&cli);
        assert!(f.len() > 40, "{f:?}");
        d.stop();
        (f, s(&p, "device"))
    };
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    assert_eq!(flows(&cli), before, "the same flows after a restart");
    let ports = cli.json(&["network", "ports", "n1"]);
    assert_eq!(ports["items"].as_array().unwrap().len(), 2, "{ports}");
    let st = std::process::Command::new("ip")
        .args(["link", "show", "dev", &device])
        .output()
        .unwrap();
    assert!(st.status.success(), "the port's device is open again");
    let (ok, t) = cli.run(&[
        "network",
        "trace",
        "p2",
        "--to",
        "10.62.1.2",
        "--protocol",
        "tcp",
        "--port-number",
        "80",
    ]);
    assert!(ok && t.contains("delivered to p1"), "{t}");
}

/// `text` with the hex digits after each `before` (and ending just before `after`, if given)
/// replaced by `N`.
fn blank_number(text: &str, before: &str, after: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(before) {
        let (head, tail) = rest.split_at(i + before.len());
        let n = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if after.is_empty() || tail[n..].starts_with(after) {
            out.push_str(head);
            out.push('N');
            rest = &tail[n..];
        } else {
            out.push_str(head);
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// Mbit/s an iperf3 client in `ns` sent to `to:port` over `secs` (its own JSON report).
fn iperf_mbit(ns: &Netns, to: &str, port: &str, secs: &str) -> f64 {
    let (ok, out) = ns.run(&["iperf3", "-c", to, "-p", port, "-t", secs, "-J"]);
    assert!(ok, "iperf3 to {to}:{port}: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_sent"]["bits_per_second"].as_f64().unwrap() / 1e6
}

fn iperf_server(ns: &Netns, port: &str) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "iperf3", "-s", "-p", port])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Bandwidth slices through the API: a port's cap holds TCP near it (meter drops counted by
/// reason), and under contention two ports each get at least their guarantee within the
/// network's cap. Refusals (a guarantee without a network cap, guarantees above it) are 409s.
#[test]
fn port_caps_and_guarantees_shape_real_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    let tag = format!("{}", std::process::id() % 100_000);
    cli.ok(&["network", "create", "n1", "--cidr", "10.63.0.0/16"]);
    cli.ok(&["subnet", "create", "n1", "a", "--cidr", "10.63.1.0/24"]);
    cli.ok(&["security-group", "create", "perf"]);
    cli.ok(&[
        "security-group",
        "add-rule",
        "perf",
        "--protocol",
        "tcp",
        "--port",
        "5201-5202",
    ]);
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
                "perf",
            ])
        })
        .collect();
    let ns: Vec<Netns> = (1..=3)
        .map(|i| Netns::new(&format!("tb{tag}n{i}")))
        .collect();
    for (n, p) in ns.iter().zip(&ports) {
        plug(n, p, 24, "10.63.1.1");
    }
    let mut servers = vec![iperf_server(&ns[1], "5201"), iperf_server(&ns[1], "5202")];
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Refusals change nothing.
    let (ok, out) = cli.run(&["network", "set-port-bandwidth", "p1", "--min", "100M"]);
    assert!(
        !ok && out.contains("network_spec_conflict"),
        "a guarantee needs a network cap: {out}"
    );
    let (ok, out) = cli.run(&[
        "network",
        "set-port-bandwidth",
        "p1",
        "--cap",
        "100M",
        "--min",
        "200M",
    ]);
    assert!(!ok && out.contains("network_spec_conflict"), "{out}");

    // A cap of 200 Mbit/s on what p1 sends.
    let p = cli.json(&["network", "set-port-bandwidth", "p1", "--cap", "200M"]);
    assert_eq!(p["cap_bps"], 200_000_000, "{p}");
    let got = iperf_mbit(&ns[0], "10.63.1.3", "5201", "4");
    assert!(
        (150.0..=215.0).contains(&got),
        "p1 capped at 200 Mbit/s sent {got:.1}"
    );
    let st = cli.json(&["network", "stats", "n1"]);
    let p1 = st["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["port"] == "p1")
        .unwrap()
        .clone();
    assert!(
        p1["drops"]["meter"].as_u64().unwrap_or(0) > 0,
        "the cap's drops by reason: {st}"
    );

    // Guarantees within a network cap of 240 Mbit/s: p1 160, p3 40, both sending at once.
    // Rates well below what the switch carries even on a loaded CI machine: at 600/400/100
    // the whole suite on 2 cores starved the TAP path below the cap (about 490 Mbit/s in
    // all, split evenly), so the meters, which this test is about, decided nothing.
    cli.ok(&["network", "set-bandwidth", "n1", "--cap", "240M"]);
    let (ok, out) = cli.run(&["network", "set-port-bandwidth", "p3", "--min", "300M"]);
    assert!(
        !ok && out.contains("network_spec_conflict"),
        "guarantees above the cap: {out}"
    );
    cli.ok(&["network", "set-port-bandwidth", "p1", "--min", "160M"]);
    cli.ok(&["network", "set-port-bandwidth", "p3", "--min", "40M"]);
    let race = || {
        std::thread::scope(|s| {
            let h = s.spawn(|| iperf_mbit(&ns[2], "10.63.1.3", "5202", "4"));
            let a = iperf_mbit(&ns[0], "10.63.1.3", "5201", "4");
            (a, h.join().unwrap())
        })
    };
    // Two TCP streams racing for 4 s share by the meters only while the switch keeps up:
    // with the whole suite running on 2 cores, a run can be starved of CPU and split evenly
    // below the guarantees (seen once in CI as 285 + 287). One more run is allowed; both
    // failing fails the test.
    let mut a = race();
    if a.0 < 0.9 * 160.0 || a.1 < 0.9 * 40.0 {
        eprintln!("first run {:.1} + {:.1}: running again", a.0, a.1);
        a = race();
    }
    let (p1_mbit, p3_mbit) = a;
    eprintln!(
        "cap 200: {got:.1} Mbit/s; guarantees 160/40 under a 240 cap: {p1_mbit:.1} + {p3_mbit:.1}"
    );
    assert!(
        p1_mbit >= 0.9 * 160.0,
        "p1 guaranteed 160 got {p1_mbit:.1} (p3 {p3_mbit:.1})"
    );
    assert!(
        p3_mbit >= 0.9 * 40.0,
        "p3 guaranteed 40 got {p3_mbit:.1} (p1 {p1_mbit:.1})"
    );
    assert!(
        p1_mbit + p3_mbit <= 1.15 * 240.0,
        "the network cap: {p1_mbit:.1} + {p3_mbit:.1}"
    );
    // Clearing the cap while guarantees stand is refused.
    let (ok, out) = cli.run(&["network", "set-bandwidth", "n1", "--cap", "none"]);
    assert!(!ok && out.contains("network_spec_conflict"), "{out}");
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}
