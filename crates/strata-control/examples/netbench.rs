//! Tenant-network benchmark helpers, run through `bash bench/netsvc.sh`:
//! - `strata URL TOKEN NETS PORTS GROUPS RULES SAMPLES`: builds one tenant's layout through
//!   the API of a running `strata serve` (NETS networks, each with two subnets joined by a
//!   router, PORTS ports and GROUPS security groups of RULES rules each; every port in one
//!   group of its network), prints the time to apply it, then the latency of one rule add
//!   and one rule delete at that scale (SAMPLES of each, alternating, so the scale stays put).
//!   After every change it reads the switch's flows back and fails unless the rule's flow is
//!   there (after an add) or gone (after a delete): the answer must come after the flows.
//! - `ovn NETS PORTS GROUPS RULES SAMPLES BRIDGE`: the same layout in OVN (logical switches,
//!   a logical router, port groups with ACLs; `ovn-nbctl` reads `OVN_NB_DB`), every port bound
//!   to an OVS internal interface on BRIDGE (`ovs-vsctl` reads `OVS_RUNDIR`/`--db` from
//!   `OVS_VSCTL_DB`); apply time up to `--wait=hv sync`, then `ovn-nbctl --wait=hv acl-add` and
//!   `acl-del` latency (API to flows on the hypervisor).
//! - `listen ADDR THREADS`: accepts TCP connections and closes each at once.
//! - `connect ADDR SECS THREADS`: opens connections to ADDR as fast as it can for SECS seconds
//!   from THREADS threads (connect, read to the server's close, close) and prints the rate.
//!
//! Output lines `key value` (after a human-readable table on stderr) are what the script
//! reads.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The layout both systems get: the same names, addresses and rules.
#[derive(Clone, Copy)]
struct Layout {
    nets: usize,
    ports: usize,
    groups: usize,
    rules: usize,
}

/// One allow rule of the layout (ingress; egress is allowed by every group already).
enum Rule {
    Icmp,
    RemoteGroup(usize),
    TcpRange(u16, u16, String),
    Tcp(u16, Option<String>),
}

impl Layout {
    fn cidr(n: usize) -> String {
        format!("10.{}.0.0/16", 100 + n)
    }
    fn subnet_cidr(n: usize, s: usize) -> String {
        format!("10.{}.{}.0/24", 100 + n, s + 1)
    }
    /// Port `i` of network `n`: its subnet (0 or 1), address and MAC.
    fn port(n: usize, i: usize) -> (usize, String, String) {
        let s = i % 2;
        let host = 10 + i / 2;
        (
            s,
            format!("10.{}.{}.{}", 100 + n, s + 1, host),
            format!(
                "02:5b:{:02x}:{:02x}:{:02x}:{:02x}",
                n,
                s,
                host >> 8,
                host & 0xff
            ),
        )
    }
    fn group_of(&self, i: usize) -> usize {
        i % self.groups
    }
    /// Rule `r` of group `g` in network `n`: an ICMP rule, a remote-group rule (the next
    /// group), a TCP port range from the network, and single TCP ports, one in four from
    /// anywhere and the rest from one of the network's /24s.
    fn rule(&self, n: usize, g: usize, r: usize) -> Rule {
        match r {
            0 => Rule::Icmp,
            1 if self.groups > 1 => Rule::RemoteGroup((g + 1) % self.groups),
            2 => Rule::TcpRange(8000, 8099, Self::cidr(n)),
            _ => Rule::Tcp(
                1000 + r as u16,
                (!r.is_multiple_of(4)).then(|| Self::subnet_cidr(n, r % 2)),
            ),
        }
    }
}

// ----- Strata, through its REST API -----

struct Api {
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let r = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &self.token)
                .send_json(&b),
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.token)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.token)
                .call(),
            _ => unreachable!(),
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        if status >= 300 {
            panic!("{method} {path}: {status} {text}");
        }
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
    fn id(&self, path: &str, body: Value) -> String {
        self.call("POST", path, Some(body))["id"]
            .as_str()
            .expect("an id")
            .to_string()
    }
    fn flows(&self) -> Vec<String> {
        self.call("GET", "/v1/network-flows", None)["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect()
    }
}

fn rule_json(rule: &Rule, group_ids: &[String]) -> Value {
    match rule {
        Rule::Icmp => json!({"direction": "ingress", "protocol": "icmp"}),
        Rule::RemoteGroup(g) => json!({"direction": "ingress", "remote_group": group_ids[*g]}),
        Rule::TcpRange(lo, hi, c) => json!({"direction": "ingress", "protocol": "tcp",
            "port_min": lo, "port_max": hi, "remote_cidr": c}),
        Rule::Tcp(p, Some(c)) => json!({"direction": "ingress", "protocol": "tcp",
            "port_min": p, "remote_cidr": c}),
        Rule::Tcp(p, None) => json!({"direction": "ingress", "protocol": "tcp", "port_min": p}),
    }
}

/// Whether any flow matches TCP destination `port` (the probe rules' port is unique).
fn has_port(flows: &[String], port: u16) -> bool {
    let needle = format!("tp_dst={port}");
    flows.iter().any(|f| {
        f.split([',', ' '])
            .any(|field| field == needle || field.starts_with(&format!("{needle}/")))
    })
}

fn strata(args: &[String]) {
    let api = Api {
        url: args[0].clone(),
        token: format!("Bearer {}", args[1]),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
    };
    let l = layout(&args[2..6]);
    let samples: usize = args[6].parse().expect("SAMPLES");
    api.call("POST", "/v1/tenants", Some(json!({"name": "bench"})));

    let t0 = Instant::now();
    let mut nets = Vec::new();
    for n in 0..l.nets {
        let id = api.id(
            "/v1/networks",
            json!({"name": format!("net{n}"), "cidr": Layout::cidr(n), "tenant": "bench"}),
        );
        let subnets: Vec<String> = (0..2)
            .map(|s| {
                api.id(
                    &format!("/v1/networks/{id}/subnets"),
                    json!({"name": format!("s{s}"), "cidr": Layout::subnet_cidr(n, s)}),
                )
            })
            .collect();
        api.id(
            &format!("/v1/networks/{id}/routers"),
            json!({"name": "r", "subnets": subnets}),
        );
        nets.push((id, subnets));
    }
    let t_nets = t0.elapsed();
    let t1 = Instant::now();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for n in 0..l.nets {
        groups.push(
            (0..l.groups)
                .map(|g| {
                    api.id(
                        "/v1/security-groups",
                        json!({"name": format!("n{n}g{g}"), "tenant": "bench"}),
                    )
                })
                .collect(),
        );
    }
    let mut rule_lat = Vec::new();
    for (n, ids) in groups.iter().enumerate() {
        for (g, gid) in ids.iter().enumerate() {
            for r in 0..l.rules {
                let t = Instant::now();
                api.call(
                    "POST",
                    &format!("/v1/security-groups/{gid}/rules"),
                    Some(rule_json(&l.rule(n, g, r), ids)),
                );
                rule_lat.push(t.elapsed());
            }
        }
    }
    let t_rules = t1.elapsed();
    let t2 = Instant::now();
    let mut port_lat = Vec::new();
    for (n, (nid, subnets)) in nets.iter().enumerate() {
        for i in 0..l.ports {
            let (s, ip, mac) = Layout::port(n, i);
            let t = Instant::now();
            api.call(
                "POST",
                &format!("/v1/networks/{nid}/ports"),
                Some(
                    json!({"name": format!("p{i}"), "subnet": subnets[s], "ip": ip,
                    "mac": mac, "security_groups": [groups[n][l.group_of(i)]]}),
                ),
            );
            port_lat.push(t.elapsed());
        }
    }
    let t_ports = t2.elapsed();
    let total = t0.elapsed();
    // Whether a change costs more as the layout grows: the first and the last tenth.
    let tenth = |v: &[Duration]| {
        let k = (v.len() / 10).max(1);
        let (mut a, mut b) = (v[..k].to_vec(), v[v.len() - k..].to_vec());
        (ms(pct(&mut a, 0.5)), ms(pct(&mut b, 0.5)))
    };
    let (r_first, r_last) = tenth(&rule_lat);
    let (p_first, p_last) = tenth(&port_lat);
    eprintln!(
        "  p50 of the first and last tenth: rule add {r_first:.2} -> {r_last:.2} ms, \
         port add {p_first:.2} -> {p_last:.2} ms"
    );
    println!("port_first_p50_ms {p_first:.2}");
    println!("port_last_p50_ms {p_last:.2}");
    let t = Instant::now();
    let flows = api.flows();
    let t_dump = t.elapsed();
    let calls = l.nets * 4 + l.nets * l.groups * (1 + l.rules) + l.nets * l.ports;
    eprintln!(
        "Strata: {} networks, {} ports, {} groups, {} rules: {calls} API calls, {} flows",
        l.nets,
        l.nets * l.ports,
        l.nets * l.groups,
        l.nets * l.groups * l.rules,
        flows.len()
    );
    eprintln!(
        "  networks+subnets+routers {:.2} s, groups+rules {:.2} s (rule add p50 {:.2} ms, p99 {:.2} ms), \
         ports {:.2} s (port add p50 {:.2} ms, p99 {:.2} ms), total {:.2} s; flow dump {:.0} ms",
        t_nets.as_secs_f64(),
        t_rules.as_secs_f64(),
        ms(pct(&mut rule_lat, 0.5)),
        ms(pct(&mut rule_lat, 0.99)),
        t_ports.as_secs_f64(),
        ms(pct(&mut port_lat, 0.5)),
        ms(pct(&mut port_lat, 0.99)),
        total.as_secs_f64(),
        ms(t_dump),
    );
    println!("apply_s {:.3}", total.as_secs_f64());
    println!("apply_ports_s {:.3}", t_ports.as_secs_f64());
    println!("apply_rules_s {:.3}", t_rules.as_secs_f64());
    println!("port_add_p99_ms {:.2}", ms(pct(&mut port_lat, 0.99)));
    println!("flows {}", flows.len());
    println!("calls {calls}");

    // One rule change at that scale: a new ingress port on a group with ports, then gone.
    let gid = &groups[0][0];
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for k in 0..samples {
        let port = 40000 + k as u16;
        let t = Instant::now();
        let g = api.call(
            "POST",
            &format!("/v1/security-groups/{gid}/rules"),
            Some(
                json!({"direction": "ingress", "protocol": "tcp", "port_min": port,
                "remote_cidr": "10.0.0.0/8"}),
            ),
        );
        add.push(t.elapsed());
        assert!(
            has_port(&api.flows(), port),
            "the answer to a rule add came before its flow was in the switch (port {port})"
        );
        let rid = g["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .find(|r| r.to_string().contains(&format!("{port}")))
            .and_then(|r| r["id"].as_str())
            .expect("the new rule's id")
            .to_string();
        let t = Instant::now();
        api.call(
            "DELETE",
            &format!("/v1/security-groups/{gid}/rules/{rid}"),
            None,
        );
        del.push(t.elapsed());
        assert!(
            !has_port(&api.flows(), port),
            "the answer to a rule delete came before its flow left the switch (port {port})"
        );
    }
    report("Strata", samples, &mut add, &mut del);
}

fn report(who: &str, samples: usize, add: &mut [Duration], del: &mut [Duration]) {
    eprintln!(
        "{who}: one rule change at scale ({samples} of each): add p50 {:.2} ms p99 {:.2} ms, \
         delete p50 {:.2} ms p99 {:.2} ms",
        ms(pct(add, 0.5)),
        ms(pct(add, 0.99)),
        ms(pct(del, 0.5)),
        ms(pct(del, 0.99))
    );
    println!("add_p50_ms {:.2}", ms(pct(add, 0.5)));
    println!("add_p99_ms {:.2}", ms(pct(add, 0.99)));
    println!("del_p50_ms {:.2}", ms(pct(del, 0.5)));
    println!("del_p99_ms {:.2}", ms(pct(del, 0.99)));
}

fn layout(a: &[String]) -> Layout {
    let n = |i: usize| a[i].parse::<usize>().expect("a count");
    let l = Layout {
        nets: n(0),
        ports: n(1),
        groups: n(2),
        rules: n(3),
    };
    assert!(l.groups >= 1 && l.rules >= 3 && l.ports <= 400 && l.nets <= 150);
    l
}

// ----- OVN, through ovn-nbctl -----

fn run(cmd: &str, args: &[String]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if !o.status.success() {
        panic!(
            "{cmd} {}: {}",
            args.iter().take(12).cloned().collect::<Vec<_>>().join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `ovn-nbctl` with one transaction of `cmds` (each a list of words).
fn nbctl(opts: &[&str], cmds: &[Vec<String>]) -> String {
    let mut args: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    for c in cmds {
        args.push("--".into());
        args.extend(c.iter().cloned());
    }
    run("ovn-nbctl", &args)
}

fn vsctl(cmds: &[Vec<String>]) -> String {
    let mut args: Vec<String> = Vec::new();
    if let Ok(db) = std::env::var("OVS_VSCTL_DB") {
        args.push(format!("--db={db}"));
    }
    for c in cmds {
        args.push("--".into());
        args.extend(c.iter().cloned());
    }
    run("ovs-vsctl", &args)
}

fn w(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn acl_match(pg: &str, rule: &Rule, l_net: usize, groups: usize) -> String {
    let base = format!("outport == @{pg} && ip4");
    match rule {
        Rule::Icmp => format!("{base} && icmp4"),
        Rule::RemoteGroup(g) => format!("{base} && ip4.src == $n{l_net}g{}_ip4", g % groups),
        Rule::TcpRange(lo, hi, c) => {
            format!("{base} && ip4.src == {c} && tcp.dst >= {lo} && tcp.dst <= {hi}")
        }
        Rule::Tcp(p, Some(c)) => format!("{base} && ip4.src == {c} && tcp.dst == {p}"),
        Rule::Tcp(p, None) => format!("{base} && tcp.dst == {p}"),
    }
}

fn ovn(args: &[String]) {
    let l = layout(&args[0..4]);
    let samples: usize = args[4].parse().expect("SAMPLES");
    let bridge = &args[5];
    let t0 = Instant::now();
    for n in 0..l.nets {
        let r = format!("n{n}r");
        let mut cmds = vec![w(&["lr-add", &r])];
        for s in 0..2 {
            let ls = format!("n{n}s{s}");
            let lrp = format!("n{n}r-s{s}");
            let gw = format!("10.{}.{}.1/24", 100 + n, s + 1);
            let mac = format!("02:5c:{n:02x}:{s:02x}:00:01");
            let rp = format!("n{n}s{s}-r");
            cmds.push(w(&["ls-add", &ls]));
            cmds.push(w(&["lrp-add", &r, &lrp, &mac, &gw]));
            cmds.push(w(&["lsp-add", &ls, &rp]));
            cmds.push(w(&["lsp-set-type", &rp, "router"]));
            cmds.push(w(&["lsp-set-addresses", &rp, "router"]));
            cmds.push(w(&["lsp-set-options", &rp, &format!("router-port={lrp}")]));
        }
        nbctl(&[], &cmds);
    }
    let t_nets = t0.elapsed();
    let t1 = Instant::now();
    for n in 0..l.nets {
        nbctl(
            &[],
            &(0..l.groups)
                .map(|g| w(&["pg-add", &format!("n{n}g{g}")]))
                .collect::<Vec<_>>(),
        );
    }
    for n in 0..l.nets {
        for g in 0..l.groups {
            let pg = format!("n{n}g{g}");
            // As a Strata group: all egress, no ingress but what a rule allows.
            let mut cmds = vec![
                w(&[
                    "acl-add",
                    &pg,
                    "from-lport",
                    "1000",
                    &format!("inport == @{pg} && ip4"),
                    "allow-related",
                ]),
                w(&[
                    "acl-add",
                    &pg,
                    "to-lport",
                    "900",
                    &format!("outport == @{pg} && ip4"),
                    "drop",
                ]),
            ];
            for r in 0..l.rules {
                let m = acl_match(&pg, &l.rule(n, g, r), n, l.groups);
                cmds.push(w(&[
                    "acl-add",
                    &pg,
                    "to-lport",
                    "1000",
                    &m,
                    "allow-related",
                ]));
            }
            nbctl(&[], &cmds);
        }
    }
    let t_rules = t1.elapsed();
    let t2 = Instant::now();
    for n in 0..l.nets {
        let mut cmds = Vec::new();
        let mut members: Vec<Vec<String>> = vec![Vec::new(); l.groups];
        for i in 0..l.ports {
            let (s, ip, mac) = Layout::port(n, i);
            let name = format!("n{n}p{i}");
            let addr = format!("{mac} {ip}");
            cmds.push(w(&["lsp-add", &format!("n{n}s{s}"), &name]));
            cmds.push(w(&["lsp-set-addresses", &name, &addr]));
            cmds.push(w(&["lsp-set-port-security", &name, &addr]));
            members[l.group_of(i)].push(name);
        }
        for (g, m) in members.iter().enumerate() {
            let mut c = w(&["pg-set-ports", &format!("n{n}g{g}")]);
            c.extend(m.iter().cloned());
            cmds.push(c);
        }
        nbctl(&[], &cmds);
        // Bind each port on this hypervisor, as Strata binds each to a TAP.
        let bind: Vec<Vec<String>> = (0..l.ports)
            .map(|i| {
                let name = format!("n{n}p{i}");
                w(&[
                    "add-port",
                    bridge,
                    &name,
                    "--",
                    "set",
                    "interface",
                    &name,
                    "type=internal",
                    &format!("external_ids:iface-id={name}"),
                ])
            })
            .collect();
        vsctl(&bind);
    }
    let t_ports = t2.elapsed();
    let t3 = Instant::now();
    nbctl(&["--wait=hv", "--timeout=600"], &[w(&["sync"])]);
    let t_wait = t3.elapsed();
    let total = t0.elapsed();
    let t = Instant::now();
    let flows = dump_flows(bridge);
    let t_dump = t.elapsed();
    eprintln!(
        "OVN: {} networks, {} ports, {} port groups, {} ACLs (+2 per group for the defaults), \
         batched: one ovn-nbctl transaction per network or group; {} flows on {bridge}",
        l.nets,
        l.nets * l.ports,
        l.nets * l.groups,
        l.nets * l.groups * l.rules,
        flows.lines().count()
    );
    eprintln!(
        "  switches+routers {:.2} s, port groups+ACLs {:.2} s, ports+bindings {:.2} s, \
         --wait=hv sync {:.2} s, total {:.2} s; flow dump {:.0} ms",
        t_nets.as_secs_f64(),
        t_rules.as_secs_f64(),
        t_ports.as_secs_f64(),
        t_wait.as_secs_f64(),
        total.as_secs_f64(),
        ms(t_dump),
    );
    println!("apply_s {:.3}", total.as_secs_f64());
    println!("wait_s {:.3}", t_wait.as_secs_f64());
    println!("flows {}", flows.lines().count());

    // The floor of --wait=hv: a sync with nothing to do.
    let mut sync = Vec::new();
    for _ in 0..samples.min(10) {
        let t = Instant::now();
        nbctl(&["--wait=hv"], &[w(&["sync"])]);
        sync.push(t.elapsed());
    }
    println!("sync_p50_ms {:.2}", ms(pct(&mut sync, 0.5)));
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for k in 0..samples {
        let port = 40000 + k as u16;
        let m = format!("outport == @n0g0 && ip4 && ip4.src == 10.0.0.0/8 && tcp.dst == {port}");
        let t = Instant::now();
        nbctl(
            &["--wait=hv"],
            &[w(&[
                "acl-add",
                "n0g0",
                "to-lport",
                "1000",
                &m,
                "allow-related",
            ])],
        );
        add.push(t.elapsed());
        // Checking every sample would cost a dump of the whole bridge each time: the first
        // and the last are checked.
        if k == 0 || k + 1 == samples {
            assert!(
                dump_flows(bridge).contains(&format!("tp_dst={port}")),
                "ovn-nbctl --wait=hv returned before the ACL's flow was on {bridge}"
            );
        }
        let t = Instant::now();
        nbctl(
            &["--wait=hv"],
            &[w(&["acl-del", "n0g0", "to-lport", "1000", &m])],
        );
        del.push(t.elapsed());
    }
    eprintln!(
        "  --wait=hv sync with nothing to do: p50 {:.2} ms",
        ms(pct(&mut sync, 0.5))
    );
    report("OVN", samples, &mut add, &mut del);
}

fn dump_flows(bridge: &str) -> String {
    run("ovs-ofctl", &["dump-flows".into(), bridge.into()])
}

// ----- TCP connect/close loop -----

fn listen(args: &[String]) {
    let addr: SocketAddr = args[0].parse().expect("ADDR");
    let threads: usize = args[1].parse().expect("THREADS");
    let l = TcpListener::bind(addr).expect("bind");
    println!("listening");
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let l = l.try_clone().expect("clone");
            std::thread::spawn(move || {
                for s in l.incoming() {
                    // Accept and close: the server sends its FIN first, so the client's
                    // ports leave no TIME_WAIT behind (the server keeps it).
                    drop(s);
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
}

fn connect(args: &[String]) {
    let addr: SocketAddr = args[0].parse().expect("ADDR");
    let secs: f64 = args[1].parse().expect("SECS");
    let threads: usize = args[2].parse().expect("THREADS");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(mut s) => {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                            // The server closes at once: read to its FIN, then close.
                            match s.read(&mut buf) {
                                Ok(0) => ok.fetch_add(1, Ordering::Relaxed),
                                _ => failed.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    let el = t0.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!("conns {n}");
    println!("failed {}", failed.load(Ordering::Relaxed));
    println!("cps {:.0}", n as f64 / el);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("strata") if args.len() == 8 => strata(&args[1..]),
        Some("ovn") if args.len() == 7 => ovn(&args[1..]),
        Some("listen") if args.len() == 3 => listen(&args[1..]),
        Some("connect") if args.len() == 4 => connect(&args[1..]),
        _ => {
            eprintln!(
                "usage: netbench strata URL TOKEN NETS PORTS GROUPS RULES SAMPLES\n\
                 \x20      netbench ovn NETS PORTS GROUPS RULES SAMPLES BRIDGE\n\
                 \x20      netbench listen ADDR THREADS\n\
                 \x20      netbench connect ADDR SECS THREADS"
            );
            std::process::exit(2);
        }
    }
}
