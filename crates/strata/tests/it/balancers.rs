//! Load balancers through the daemon and the CLI, with real servers in namespaces behind TAP
//! ports: the spread over weights, failover within 3 s by the daemon's health checks and
//! recovery, the VIP from a routed subnet, session affinity, tenant isolation, refusals, and
//! the VIP through a floating IP from an outside namespace.

use std::collections::BTreeMap;

use crate::common::*;

/// A backend's HTTP server: `GET /id` answers its name.
pub(crate) struct Server {
    child: Option<std::process::Child>,
    ns: String,
    dir: std::path::PathBuf,
}

impl Server {
    pub(crate) fn start(ns: &Netns, name: &str, root: &std::path::Path) -> Server {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("id"), name).unwrap();
        let mut s = Server {
            child: None,
            ns: ns.0.clone(),
            dir,
        };
        s.restart();
        s
    }
    fn restart(&mut self) {
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "python3",
                "-m",
                "http.server",
                "8080",
            ])
            .arg("--directory")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `n` new connections (one GET /id each) from `ns` to `url`, for at most `secs`
/// seconds, one every `gap_ms`; each line of the answer: milliseconds since the start, and
/// the backend's name or `ERR`.
const CLIENT: &str = r#"
import socket, sys, time
host, port, n, secs, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
t0 = time.time()
for i in range(n):
    if time.time() - t0 > secs:
        break
    t = time.time()
    who = "ERR"
    try:
        s = socket.create_connection((host, port), timeout=0.5)
        s.settimeout(1.0)
        s.sendall(b"GET /id HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        body = data.split(b"\r\n\r\n", 1)
        if len(body) == 2 and data.startswith(b"HTTP/1.0 200"):
            who = body[1].decode()
    except Exception:
        pass
    print("%d %s" % (int((t - t0) * 1000), who), flush=True)
    if gap > 0:
        time.sleep(gap / 1000.0)
"#;

pub(crate) fn connections(
    ns: &Netns,
    host: &str,
    port: u16,
    n: usize,
    secs: f64,
    gap_ms: u64,
) -> Vec<(u64, String)> {
    let (ok, out) = ns.run(&[
        "python3",
        "-c",
        CLIENT,
        host,
        &port.to_string(),
        &n.to_string(),
        &secs.to_string(),
        &gap_ms.to_string(),
    ]);
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| {
            let (t, w) = l.split_once(' ')?;
            Some((t.parse().ok()?, w.to_string()))
        })
        .collect()
}

pub(crate) fn counts(v: &[(u64, String)]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, w) in v {
        *m.entry(w.clone()).or_insert(0) += 1;
    }
    m
}

/// The health the daemon shows for backend `ip` of the first listener.
fn health_of(cli: &Cli<'_>, lb: &str, ip: &str) -> String {
    let v = cli.json(&["load-balancer", "show", lb]);
    v["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == ip)
        .map(|b| s(b, "health"))
        .unwrap_or_default()
}

/// Deletes the monitor namespace the daemon made for network `id`.
fn drop_monitor_ns(id: &str) {
    let short: String = id.chars().filter(|c| *c != '-').take(12).collect();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &format!("strata-mon-{short}")])
        .status();
}

#[test]
fn load_balancer_spread_failover_affinity_routing_isolation_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    let tag = format!("{}", std::process::id() % 100_000);

    let n1 = cli.json(&["network", "create", "n1", "--cidr", "10.62.0.0/16"]);
    cli.ok(&["subnet", "create", "n1", "a", "--cidr", "10.62.1.0/24"]);
    cli.ok(&["subnet", "create", "n1", "b", "--cidr", "10.62.2.0/24"]);
    cli.ok(&[
        "router", "create", "n1", "r", "--subnet", "a", "--subnet", "b",
    ]);
    // Backends admit only the clients' group: the health probes get in by the implicit
    // allow of the monitor, nothing else.
    cli.ok(&["security-group", "create", "clients"]);
    cli.ok(&["security-group", "create", "web"]);
    cli.ok(&[
        "security-group",
        "add-rule",
        "web",
        "--protocol",
        "tcp",
        "--port",
        "8080",
        "--remote-group",
        "clients",
    ]);
    let mut backends = Vec::new();
    for i in 1..=3 {
        let name = format!("b{i}");
        backends.push(cli.json(&[
            "network",
            "add-port",
            "n1",
            &name,
            "--subnet",
            "a",
            "--security-group",
            "web",
        ]));
    }
    let c1 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "c1",
        "--subnet",
        "a",
        "--security-group",
        "clients",
    ]);
    let c2 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "c2",
        "--subnet",
        "b",
        "--security-group",
        "clients",
    ]);

    // Refusals first: stable codes, and nothing made (no load balancer, no monitor port).
    cli.ok(&["network", "create", "other", "--cidr", "10.63.0.0/16"]);
    cli.ok(&["subnet", "create", "other", "o", "--cidr", "10.63.1.0/24"]);
    let stranger = cli.json(&["network", "add-port", "other", "x", "--subnet", "o"]);
    let ports_before = cli.json(&["network", "ports", "n1"])["items"]
        .as_array()
        .unwrap()
        .len();
    let refused: [(&[&str], &str); 3] = [
        (&["--backend", &s(&stranger, "id")], "network_spec_conflict"),
        (
            &["--backend", "b1", "--vip", "10.62.9.9"],
            "network_spec_conflict",
        ),
        (&["--backend", "b1@300"], "invalid_argument"),
    ];
    for (extra, code) in refused {
        let mut a = vec![
            "load-balancer",
            "create",
            "web",
            "--network",
            "n1",
            "--subnet",
            "a",
            "--listener",
            "tcp:80",
            "--health",
            "tcp",
        ];
        a.extend_from_slice(extra);
        let (ok, out) = cli.run(&a);
        assert!(!ok && out.contains(code), "{extra:?}: {out}");
    }
    let none = cli.json(&["load-balancer", "list", "n1"]);
    assert!(none["items"].as_array().unwrap().is_empty(), "{none}");
    let ports_after = cli.json(&["network", "ports", "n1"])["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(ports_before, ports_after, "no monitor port was made");

    let lb = cli.json(&[
        "load-balancer",
        "create",
        "web",
        "--network",
        "n1",
        "--subnet",
        "a",
        "--listener",
        "tcp:80",
        "--backend",
        "b1:8080@1",
        "--backend",
        "b2:8080@1",
        "--backend",
        "b3:8080@2",
        "--health",
        "tcp",
    ]);
    let vip = s(&lb, "vip");
    let lb_id = s(&lb, "id");
    assert!(vip.starts_with("10.62.1."), "{lb}");
    assert_eq!(lb["generation"], 1, "{lb}");
    assert!(
        lb["monitor"].is_string(),
        "a health-checked load balancer has a monitor: {lb}"
    );
    assert_eq!(lb["health_check"]["interval_ms"], 1000, "{lb}");
    // The monitor port is the daemon's: not deleted while a health-checked balancer needs
    // it, and its name is not a tenant's to take on another network.
    let (code, body) = d.call(
        "DELETE",
        &format!("/v1/network-ports/{}", s(&lb, "monitor")),
        &d.admin(),
        None,
    );
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("port_in_use")),
        "{body}"
    );
    let (code, body) = d.call(
        "POST",
        &format!("/v1/networks/{}/ports", s(&n1, "id")),
        &d.admin(),
        Some(serde_json::json!({"name": "lb-monitor", "subnet": "a"})),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["field"], "name", "{body}");

    let ns: Vec<Netns> = ["b1", "b2", "b3", "c1", "c2"]
        .iter()
        .map(|n| Netns::new(&format!("lb{tag}{n}")))
        .collect();
    for (i, b) in backends.iter().enumerate() {
        plug(&ns[i], b, 24, "10.62.1.1");
    }
    plug(&ns[3], &c1, 24, "10.62.1.1");
    plug(&ns[4], &c2, 24, "10.62.2.1");
    let mut servers: Vec<Server> = (0..3)
        .map(|i| Server::start(&ns[i], &format!("b{}", i + 1), dir.path()))
        .collect();
    // The monitor sees every backend up.
    let t0 = std::time::Instant::now();
    while ["1", "2", "3"].iter().any(|i| {
        health_of(
            &cli,
            "web",
            &s(&backends[i.parse::<usize>().unwrap() - 1], "ip"),
        ) != "up"
    }) {
        assert!(
            t0.elapsed().as_secs() < 10,
            "{}",
            cli.ok(&["load-balancer", "show", "web"])
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // (a) Spread: new connections within 10% of each backend's weight share.
    let n = 2000;
    let got = connections(&ns[3], &vip, 80, n, 120.0, 0);
    let c = counts(&got);
    assert_eq!(got.len(), n, "{c:?}");
    assert!(!c.contains_key("ERR"), "{c:?}");
    for (b, share) in [("b1", 0.25), ("b2", 0.25), ("b3", 0.5)] {
        let have = *c.get(b).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (have - share).abs() <= 0.1 * share,
            "{b}: {have} of {share}: {c:?}"
        );
    }
    eprintln!("spread over weights 1/1/2, {n} connections: {c:?}");

    // (c) The VIP from a port on the other subnet, through the router.
    let routed = counts(&connections(&ns[4], &vip, 80, 40, 30.0, 0));
    assert!(
        !routed.contains_key("ERR") && routed.values().sum::<usize>() == 40,
        "{routed:?}"
    );

    // (b) Failover: b3's server dies; within 3 s no new connection goes to it.
    let b3_ip = s(&backends[2], "ip");
    servers[2].kill();
    let timeline = connections(&ns[3], &vip, 80, 10_000, 5.0, 20);
    let last_refused = timeline
        .iter()
        .filter(|(_, w)| w == "ERR" || w == "b3")
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(0);
    let tail = counts(
        &timeline
            .iter()
            .filter(|(t, _)| *t > last_refused)
            .cloned()
            .collect::<Vec<_>>(),
    );
    eprintln!("failover: last connection to the dead backend {last_refused} ms after it died; after: {tail:?}");
    assert!(last_refused <= 3_000, "{last_refused} ms: {timeline:?}");
    assert!(tail.values().sum::<usize>() > 20, "{tail:?}");
    assert_eq!(health_of(&cli, "web", &b3_ip), "down");
    let m = d.metrics();
    promtool_check(&m);
    assert!(
        m.contains(&format!("backend=\"{b3_ip}:8080\"}} 0")),
        "{}",
        m.lines()
            .filter(|l| l.contains("strata_lb"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // It comes back when its server does.
    servers[2].restart();
    let t0 = std::time::Instant::now();
    while health_of(&cli, "web", &b3_ip) != "up" {
        assert!(t0.elapsed().as_secs() < 8, "b3 not back");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let back = counts(&connections(&ns[3], &vip, 80, 200, 30.0, 0));
    assert!(back.get("b3").copied().unwrap_or(0) > 40, "{back:?}");
    let audit = cli.ok(&["audit", "-o", "json"]);
    assert!(
        audit.contains("load_balancer.backend_health"),
        "the changes are audited"
    );

    // (e) Session affinity: one client, one backend.
    let set = cli.json(&["load-balancer", "set", "web", "--affinity", "on"]);
    assert_eq!(set["session_affinity"], true, "{set}");
    assert!(set["generation"].as_u64().unwrap() > 1, "{set}");
    let one = counts(&connections(&ns[3], &vip, 80, 60, 30.0, 0));
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(!one.contains_key("ERR"), "{one:?}");

    // A weight change: b1 to 0 takes no new connections.
    cli.ok(&[
        "load-balancer",
        "set",
        "web",
        "--affinity",
        "off",
        "--weight",
        "b1=0",
    ]);
    let w = counts(&connections(&ns[3], &vip, 80, 200, 30.0, 0));
    assert!(!w.contains_key("b1") && !w.contains_key("ERR"), "{w:?}");

    // (f) Another tenant does not see it.
    cli.ok(&["tenant", "create", "other-t"]);
    let tok = cli.json(&["token", "create", "--tenant", "other-t", "--role", "member"]);
    let (code, body) = d.call(
        "GET",
        &format!("/v1/load-balancers/{lb_id}"),
        &s(&tok, "token"),
        None,
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["code"], "load_balancer_not_found", "{body}");
    let (code, _) = d.call(
        "DELETE",
        &format!("/v1/load-balancers/{lb_id}"),
        &s(&tok, "token"),
        None,
    );
    assert_eq!(code, 404);

    // Deleted, the monitor port goes with it.
    cli.ok(&["load-balancer", "delete", "web"]);
    let ports = cli.json(&["network", "ports", "n1"]);
    assert_eq!(
        ports["items"].as_array().unwrap().len(),
        ports_before,
        "{ports}"
    );
    drop(servers);
    drop_monitor_ns(&s(&n1, "id"));
}

/// (d) The VIP through a floating IP, from a namespace on the external network.
#[test]
fn load_balancer_vip_through_a_floating_ip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let d = Daemon::start(&data);
    let cli = Cli { d: &d, data: &data };
    let tag = format!("{}", std::process::id() % 100_000);

    cli.ok(&[
        "network",
        "create",
        "ext",
        "--cidr",
        "203.0.113.0/24",
        "--external",
    ]);
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
    cli.ok(&["network", "create", "n1", "--cidr", "10.64.0.0/16"]);
    cli.ok(&["subnet", "create", "n1", "a", "--cidr", "10.64.1.0/24"]);
    cli.ok(&["router", "create", "n1", "r", "--subnet", "a"]);
    cli.ok(&["router", "set-gateway", "r", "ext"]);
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
    let b1 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "b1",
        "--subnet",
        "a",
        "--security-group",
        "web",
    ]);
    let b2 = cli.json(&[
        "network",
        "add-port",
        "n1",
        "b2",
        "--subnet",
        "a",
        "--security-group",
        "web",
    ]);
    let lb = cli.json(&[
        "load-balancer",
        "create",
        "web",
        "--network",
        "n1",
        "--subnet",
        "a",
        "--listener",
        "tcp:80",
        "--backend",
        "b1:8080",
        "--backend",
        "b2:8080",
    ]);
    assert!(lb["monitor"].is_null(), "no health check, no monitor: {lb}");
    let fip = cli.json(&["floating-ip", "create", "ext"]);
    let f = cli.json(&["load-balancer", "set-floating-ip", "web", &s(&fip, "ip")]);
    assert_eq!(f["load_balancer"], lb["id"], "{f}");
    // A floating IP on the VIP and on a port at once is refused.
    let (code, body) = d.call(
        "PUT",
        &format!("/v1/floating-ips/{}/port", s(&fip, "id")),
        &d.admin(),
        Some(serde_json::json!({"port": "b1", "load_balancer": "web"})),
    );
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("network_spec_conflict")),
        "{body}"
    );

    let ns: Vec<Netns> = ["out", "b1", "b2"]
        .iter()
        .map(|n| Netns::new(&format!("lf{tag}{n}")))
        .collect();
    ns[0].adopt_bare(&s(&up, "device"), &s(&up, "mac"));
    ns[0].sh(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", s(&up, "ip")),
        "dev",
        &s(&up, "device"),
    ]);
    plug(&ns[1], &b1, 24, "10.64.1.1");
    plug(&ns[2], &b2, 24, "10.64.1.1");
    let _servers = [
        Server::start(&ns[1], "b1", dir.path()),
        Server::start(&ns[2], "b2", dir.path()),
    ];
    let got = counts(&connections(&ns[0], &s(&fip, "ip"), 80, 100, 30.0, 0));
    eprintln!("through the floating IP: {got:?}");
    assert!(!got.contains_key("ERR"), "{got:?}");
    assert!(
        got.get("b1").is_some_and(|n| *n > 10) && got.get("b2").is_some_and(|n| *n > 10),
        "{got:?}"
    );
}
