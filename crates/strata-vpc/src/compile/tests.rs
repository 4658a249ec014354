use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::model::*;

fn network(id: &str, cidr: &str, zone: u16) -> Network {
    Network {
        id: id.into(),
        tenant: "t".into(),
        name: id.into(),
        cidr: cidr.parse().unwrap(),
        vni: 1000 + u32::from(zone),
        zone,
        external: false,
        cap_bps: None,
        created: 0,
        generation: 1,
    }
}

fn subnet(id: &str, net: &str, cidr: &str, key: u32) -> Subnet {
    let c: ipnet::Ipv4Net = cidr.parse().unwrap();
    Subnet {
        id: id.into(),
        tenant: "t".into(),
        network: net.into(),
        name: id.into(),
        cidr: c,
        gateway: crate::ipam::default_gateway(c),
        gateway_mac: [2, 0x53, 0xff, 0, 0, key as u8],
        dhcp: true,
        dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
        key,
        created: 0,
        generation: 1,
    }
}

fn port(id: &str, s: &Subnet, host: u8, groups: &[&str]) -> Port {
    let ip = Ipv4Addr::from(u32::from(s.cidr.network()) + u32::from(host));
    Port {
        veth_peer: None,
        id: id.into(),
        tenant: "t".into(),
        network: s.network.clone(),
        subnet: s.id.clone(),
        name: id.into(),
        mac: [2, 0x53, 0, 0, s.key as u8, host],
        ip,
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
        device: format!("tap-{id}"),
        cap_bps: None,
        min_bps: None,
        created: 0,
        generation: 1,
        node: None,
    }
}

fn rule(
    id: &str,
    dir: Direction,
    proto: Protocol,
    ports: Option<(u16, u16)>,
    remote: Remote,
) -> SgRule {
    SgRule {
        id: id.into(),
        spec: RuleSpec {
            direction: dir,
            protocol: proto,
            ports,
            remote,
        },
    }
}

fn group(id: &str, rules: Vec<SgRule>) -> SecurityGroup {
    SecurityGroup {
        id: id.into(),
        tenant: "t".into(),
        name: id.into(),
        rules,
        reevaluate_existing: false,
        created: 0,
        generation: 1,
    }
}

fn base() -> Topology {
    let mut t = Topology::default();
    t.networks
        .insert("n1".into(), network("n1", "10.1.0.0/16", 1));
    t.networks
        .insert("n2".into(), network("n2", "10.1.0.0/16", 2));
    let mut ext = network("ext", "203.0.113.0/24", 9);
    ext.external = true;
    t.networks.insert("ext".into(), ext);
    for s in [
        subnet("sx", "ext", "203.0.113.0/24", 9),
        subnet("s1", "n1", "10.1.1.0/24", 1),
        subnet("s2", "n1", "10.1.2.0/24", 2),
        subnet("s3", "n2", "10.1.1.0/24", 3),
    ] {
        t.subnets.insert(s.id.clone(), s);
    }
    t.groups.insert(
        "web".into(),
        group(
            "web",
            vec![
                rule(
                    "r1",
                    Direction::Ingress,
                    Protocol::Tcp,
                    Some((80, 80)),
                    Remote::Any,
                ),
                rule(
                    "r2",
                    Direction::Ingress,
                    Protocol::Tcp,
                    Some((8000, 8099)),
                    Remote::Group("db".into()),
                ),
                rule("r3", Direction::Egress, Protocol::Any, None, Remote::Any),
            ],
        ),
    );
    t.groups.insert(
        "db".into(),
        group(
            "db",
            vec![
                rule(
                    "r1",
                    Direction::Ingress,
                    Protocol::Tcp,
                    Some((5432, 5432)),
                    Remote::Group("web".into()),
                ),
                rule(
                    "r2",
                    Direction::Egress,
                    Protocol::Any,
                    None,
                    Remote::Cidr("10.1.0.0/16".parse().unwrap()),
                ),
            ],
        ),
    );
    t
}

/// Flows with each set's register value replaced by the set's groups, so two compilers that
/// numbered their sets in another order compare equal.
fn normalized(c: &Compiler) -> Vec<String> {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    for (k, v) in &c.set_ids {
        names.insert(*v, format!("[{}:{}]", k.network, k.groups.join("+")));
    }
    let mut out: Vec<String> = c
        .flows()
        .into_iter()
        .map(|f| {
            let mut f = f;
            for (v, n) in &names {
                f = f.replace(&format!("reg5={v},"), &format!("reg5={n},"));
                f = f.replace(&format!("reg5={v}\n"), &format!("reg5={n}\n"));
                f = f.replace(
                    &format!("set_field:{v}->reg5"),
                    &format!("set_field:{n}->reg5"),
                );
            }
            f
        })
        .collect();
    out.sort();
    out
}

/// A switch's table as the deltas leave it: head (table, priority, match) to the flow.
fn apply(table: &mut BTreeMap<String, String>, d: &Delta) {
    for (id, m) in &d.set_meters {
        table.insert(format!("meter {id}"), format!("{m:?}"));
    }
    for id in &d.remove_meters {
        assert!(
            table.remove(&format!("meter {id}")).is_some(),
            "removes meter {id}"
        );
    }
    for (id, g) in &d.set_lb_groups {
        table.insert(format!("lb {id}"), format!("{g:?}"));
    }
    for f in &d.add {
        let head = f.split(",cookie=").next().unwrap().to_string();
        table.insert(head, f.clone());
    }
    for r in &d.remove {
        assert!(
            table.remove(r).is_some(),
            "removes a flow that is not there: {r}"
        );
    }
    for id in &d.remove_lb_groups {
        assert!(
            table.remove(&format!("lb {id}")).is_some(),
            "removes lb group {id}"
        );
    }
}

/// What the table holds beside flows (meters, lb groups), by the prefix of its key.
fn held_of(table: &BTreeMap<String, String>, prefix: &str) -> BTreeMap<String, String> {
    table
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn a_topology_compiles_to_the_pipeline() {
    let mut t = base();
    let s1 = t.subnets["s1"].clone();
    let s2 = t.subnets["s2"].clone();
    t.ports.insert("a".into(), port("a", &s1, 10, &["web"]));
    t.ports.insert("b".into(), port("b", &s2, 20, &["db"]));
    t.bound.insert("a".into(), 1);
    t.bound.insert("b".into(), 2);
    t.routers.insert(
        "r".into(),
        Router {
            id: "r".into(),
            tenant: "t".into(),
            network: "n1".into(),
            name: "r".into(),
            subnets: vec!["s1".into(), "s2".into()],
            gateway: None,
            created: 0,
            generation: 1,
        },
    );
    let mut c = Compiler::new();
    let d = c.full(&t);
    assert!(d.remove.is_empty());
    let all = d.add.join("\n");
    // Port security, ARP answer, DHCP, delivery, output for each port.
    assert!(
        all.contains("in_port=1,dl_src=02:53:00:00:01:0a,ip,nw_src=10.1.1.10"),
        "{all}"
    );
    assert!(all.contains("arp_reply:02:53:00:00:01:0a,in_port"));
    assert!(all.contains("dhcp_reply(yiaddr=10.1.1.10,netmask=255.255.255.0,router=10.1.1.1"));
    assert!(all.contains("dns=10.0.0.53"));
    assert!(all.contains("actions=output:2"));
    // Routing both ways between the router's subnets, with TTL and unreachable errors.
    assert!(
        all.contains("metadata=0x1,dl_dst=02:53:ff:00:00:01,ip,nw_dst=10.1.2.0/24"),
        "{all}"
    );
    assert!(all.contains("metadata=0x2,dl_dst=02:53:ff:00:00:02,ip,nw_dst=10.1.1.0/24"));
    assert!(all.contains("icmp_error(type=11,code=0,src=10.1.1.1)"));
    assert!(all.contains("icmp_error(type=3,code=0,src=10.1.2.1)"));
    // The subnet of the other network has its own zone and no route.
    assert!(all.contains("metadata=0x3,ip,") && all.contains("ct(zone=2,table=30)"));
    assert!(!all.contains("metadata=0x3,dl_dst=02:53:ff:00:00:03,ip,nw_dst="));
    // web's remote-group rule names b's address; db's names a's.
    assert!(
        all.contains("tcp,tp_dst=0x1f40/0xffc0,nw_src=10.1.2.20"),
        "{all}"
    );
    assert!(all.contains("tcp,tp_dst=5432,nw_src=10.1.1.10"));
    assert_eq!(c.n_flows(), d.add.len());
    // Every cookie explains itself.
    for f in &d.add {
        let cookie = f
            .split("cookie=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let cookie = u64::from_str_radix(cookie.trim_start_matches("0x"), 16).unwrap();
        assert!(c.explain(cookie).is_some(), "{f}");
    }
    // Compiling the same topology again changes nothing.
    assert!(c
        .changed(&t, &[Change::Port("a".into()), Change::Group("web".into())])
        .is_empty());
}

#[test]
fn one_rule_change_rewrites_only_its_flows() {
    let mut t = base();
    let s1 = t.subnets["s1"].clone();
    for i in 0..50u8 {
        let id = format!("p{i}");
        t.ports.insert(id.clone(), port(&id, &s1, 10 + i, &["web"]));
        t.bound.insert(id, u32::from(i) + 1);
    }
    let mut c = Compiler::new();
    let full = c.full(&t);
    assert!(full.add.len() > 500);
    t.groups.get_mut("web").unwrap().rules.push(rule(
        "r9",
        Direction::Ingress,
        Protocol::Udp,
        Some((53, 53)),
        Remote::Any,
    ));
    let d = c.changed(&t, &[Change::Group("web".into())]);
    // The new rule, and the set's established shortcut only if marks changed (not here: the
    // group does not reevaluate); the commits carry the new mark.
    assert!(d.add.iter().any(|f| f.contains("udp,tp_dst=53")), "{d:?}");
    assert!(d.add.len() <= 8, "{d:?}");
    assert!(d.remove.len() <= 8, "{d:?}");
}

/// A load balancer on `subnet` (VIP .200), TCP 80 to backends (port id, host, weight) on
/// 8080, group 7, health-checked from port `a`.
fn balancer(id: &str, subnet: &str, backends: &[(&str, u8, u32)]) -> LoadBalancer {
    let mut health = HealthCheck::none();
    health.kind = HealthKind::Http { path: "/".into() };
    LoadBalancer {
        id: id.into(),
        tenant: "t".into(),
        network: "n1".into(),
        subnet: subnet.into(),
        name: id.into(),
        vip: Ipv4Addr::new(10, 1, 1, 200),
        listeners: vec![LbListener {
            protocol: LbProtocol::Tcp,
            port: 80,
            group: 7,
            backends: backends
                .iter()
                .map(|(p, h, w)| LbBackend {
                    port: Some(p.to_string()),
                    ip: Ipv4Addr::new(10, 1, if *p == "b" { 2 } else { 1 }, *h),
                    target_port: 8080,
                    weight: *w,
                })
                .collect(),
        }],
        session_affinity: false,
        health,
        monitor: Some("a".into()),
        created: 0,
        generation: 1,
    }
}

/// A weight change sets that balancer's group again and touches no flow; a new backend adds
/// its own flows only.
#[test]
fn a_weight_change_rewrites_only_its_group() {
    let mut t = base();
    let s1 = t.subnets["s1"].clone();
    t.ports.insert("a".into(), port("a", &s1, 10, &["web"]));
    t.ports.insert("c".into(), port("c", &s1, 30, &["web"]));
    t.bound.insert("a".into(), 1);
    t.bound.insert("c".into(), 2);
    t.load_balancers.insert(
        "lb".into(),
        balancer("lb", "s1", &[("a", 10, 1), ("c", 30, 1)]),
    );
    let mut other = balancer("lb2", "s1", &[("c", 30, 1)]);
    other.vip = Ipv4Addr::new(10, 1, 1, 201);
    other.listeners[0].group = 8;
    t.load_balancers.insert("lb2".into(), other);
    let mut c = Compiler::new();
    let d = c.full(&t);
    assert_eq!(d.set_lb_groups.len(), 2);
    assert!(
        d.add
            .iter()
            .any(|f| f.contains("reg6=1,ct_state=-rpl+trk,tcp,nw_dst=10.1.1.30,tp_dst=8080")),
        "the monitor (port a) may probe the backends: {d:?}"
    );
    t.load_balancers.get_mut("lb").unwrap().listeners[0].backends[1].weight = 5;
    let d = c.changed(&t, &[Change::LoadBalancer("lb".into())]);
    assert!(d.add.is_empty() && d.remove.is_empty(), "{d:?}");
    assert_eq!(d.set_lb_groups.len(), 1);
    assert_eq!(d.set_lb_groups[0].0, 7);
    assert_eq!(d.set_lb_groups[0].1.backends[1].2, 5);
    // Removing one balancer keeps the flows the other still shares (c's replies).
    t.load_balancers.remove("lb");
    let d = c.changed(&t, &[Change::LoadBalancer("lb".into())]);
    assert_eq!(d.remove_lb_groups, vec![7]);
    assert!(
        !d.remove
            .iter()
            .any(|f| f.contains("nw_src=10.1.1.30,tp_src=8080")),
        "{d:?}"
    );
    assert!(
        d.remove
            .iter()
            .any(|f| f.contains("nw_src=10.1.1.10,tp_src=8080")),
        "{d:?}"
    );
}

#[derive(Debug, Clone)]
enum Op {
    AddPort(u8, u8, Vec<u8>),
    DelPort(u8),
    /// Port `p`: 0 unbound, 1 bound here, 2 or 3 on another node (behind tunnel 2 or 3).
    Bind(u8, u8),
    SetGroups(u8, Vec<u8>),
    AddRule(u8, u8, u16, u8),
    DelRule(u8),
    Attach(u8, bool),
    Dhcp(u8, bool),
    Reevaluate(u8, bool),
    Gateway(bool),
    Fip(u8, Option<u8>),
    Outside(u8, bool),
    NetCap(Option<u64>),
    PortCap(u8, Option<u64>, Option<u64>),
    /// Load balancer `k`: gone, or on subnet s1/s2 with backends (port, weight), affinity,
    /// and a monitor port (health checked).
    Lb(u8, Option<LbOp>),
    FipLb(u8, Option<u8>),
}

type LbOp = (u8, Vec<(u8, u32)>, bool, Option<u8>);

fn op() -> impl Strategy<Value = Op> {
    let groups = proptest::collection::vec(0u8..3, 0..3);
    prop_oneof![
        // Ports come and bind (here or on another node) often enough that a sequence has
        // bound and remote ports of one network together.
        3 => (0u8..12, 0u8..3, groups.clone()).prop_map(|(p, s, g)| Op::AddPort(p, s, g)),
        1 => (0u8..12).prop_map(Op::DelPort),
        4 => (0u8..12, 0u8..4).prop_map(|(p, b)| Op::Bind(p, b)),
        1 => (0u8..12, groups).prop_map(|(p, g)| Op::SetGroups(p, g)),
        1 => (0u8..3, 0u8..4, 1u16..2000, 0u8..4).prop_map(|(g, k, p, r)| Op::AddRule(g, k, p, r)),
        1 => (0u8..3).prop_map(Op::DelRule),
        1 => (0u8..2, any::<bool>()).prop_map(|(s, b)| Op::Attach(s, b)),
        1 => (0u8..3, any::<bool>()).prop_map(|(s, b)| Op::Dhcp(s, b)),
        1 => (0u8..3, any::<bool>()).prop_map(|(g, b)| Op::Reevaluate(g, b)),
        1 => any::<bool>().prop_map(Op::Gateway),
        1 => (0u8..2, proptest::option::of(0u8..12)).prop_map(|(f, p)| Op::Fip(f, p)),
        1 => (0u8..2, any::<bool>()).prop_map(|(o, b)| Op::Outside(o, b)),
        1 => proptest::option::of(1u64..4).prop_map(|c| Op::NetCap(c.map(|c| c * 1_000_000_000))),
        1 => (
            0u8..12,
            proptest::option::of(1u64..4),
            proptest::option::of(1u64..4)
        )
            .prop_map(|(p, c, m)| {
                Op::PortCap(p, c.map(|c| c * 100_000_000), m.map(|m| m * 10_000_000))
            }),
        1 => (
            0u8..2,
            proptest::option::of((
                0u8..2,
                proptest::collection::vec((0u8..12, 0u32..3), 0..4),
                any::<bool>(),
                proptest::option::of(0u8..12)
            ))
        )
            .prop_map(|(k, o)| Op::Lb(k, o)),
        1 => (0u8..2, proptest::option::of(0u8..2)).prop_map(|(f, l)| Op::FipLb(f, l)),
    ]
}

const GROUPS: [&str; 3] = ["web", "db", "ops"];
const SUBNETS: [&str; 3] = ["s1", "s2", "s3"];

fn run(t: &mut Topology, op: &Op, n: &mut u32) -> Vec<Change> {
    *n += 1;
    match op {
        Op::AddPort(p, s, g) => {
            let id = format!("p{p}");
            let sub = t.subnets[SUBNETS[*s as usize]].clone();
            let gs: Vec<&str> = g.iter().map(|g| GROUPS[*g as usize]).collect();
            t.ports.insert(id.clone(), port(&id, &sub, 10 + p, &gs));
            vec![Change::Port(id)]
        }
        Op::DelPort(p) => {
            let id = format!("p{p}");
            t.ports.remove(&id);
            t.bound.remove(&id);
            t.remote.remove(&id);
            vec![Change::Port(id)]
        }
        Op::Bind(p, b) => {
            let id = format!("p{p}");
            t.bound.remove(&id);
            t.remote.remove(&id);
            if t.ports.contains_key(&id) {
                match b {
                    1 => {
                        t.bound.insert(id.clone(), u32::from(*p) + 1);
                    }
                    2 | 3 => {
                        t.remote.insert(id.clone(), 200 + u32::from(*b));
                    }
                    _ => {}
                }
            }
            vec![Change::Port(id)]
        }
        Op::SetGroups(p, g) => {
            let id = format!("p{p}");
            if let Some(port) = t.ports.get_mut(&id) {
                port.security_groups = g.iter().map(|g| GROUPS[*g as usize].to_string()).collect();
            }
            vec![Change::Port(id)]
        }
        Op::AddRule(g, kind, p, r) => {
            let gid = GROUPS[*g as usize];
            let remote = match r {
                0 => Remote::Any,
                1 => Remote::Cidr("10.1.0.0/20".parse().unwrap()),
                x => Remote::Group(GROUPS[*x as usize - 1].to_string()),
            };
            let (dir, proto) = match kind {
                0 => (Direction::Ingress, Protocol::Tcp),
                1 => (Direction::Ingress, Protocol::Udp),
                2 => (Direction::Egress, Protocol::Tcp),
                _ => (Direction::Ingress, Protocol::Icmp),
            };
            let grp = t
                .groups
                .entry(gid.to_string())
                .or_insert_with(|| group(gid, vec![]));
            grp.rules.push(rule(
                &format!("x{n}"),
                dir,
                proto,
                Some((*p, p + 7)),
                remote,
            ));
            vec![Change::Group(gid.to_string())]
        }
        Op::DelRule(g) => {
            let gid = GROUPS[*g as usize];
            if let Some(grp) = t.groups.get_mut(gid) {
                grp.rules.pop();
            }
            vec![Change::Group(gid.to_string())]
        }
        Op::Attach(s, b) => {
            let r = t.routers.entry("r".into()).or_insert_with(|| Router {
                id: "r".into(),
                tenant: "t".into(),
                network: "n1".into(),
                name: "r".into(),
                subnets: vec![],
                gateway: None,
                created: 0,
                generation: 1,
            });
            let sid = SUBNETS[*s as usize].to_string();
            r.subnets.retain(|x| x != &sid);
            if *b {
                r.subnets.push(sid);
            }
            vec![Change::Router("r".into())]
        }
        Op::Dhcp(s, b) => {
            let sid = SUBNETS[*s as usize];
            let sub = t.subnets.get_mut(sid).unwrap();
            sub.dhcp = *b;
            // A rename shows in the router peers' explanations too.
            sub.name = format!("{sid}-{b}");
            vec![Change::Subnet(sid.to_string())]
        }
        Op::Gateway(on) => {
            let r = t.routers.entry("r".into()).or_insert_with(|| Router {
                id: "r".into(),
                tenant: "t".into(),
                network: "n1".into(),
                name: "r".into(),
                subnets: vec![],
                gateway: None,
                created: 0,
                generation: 1,
            });
            r.gateway = on.then(|| RouterGateway {
                network: "ext".into(),
                subnet: "sx".into(),
                ip: Ipv4Addr::new(203, 0, 113, 3),
                mac: [2, 0x53, 0xee, 0, 0, 3],
                zone: 77,
            });
            vec![Change::Router("r".into())]
        }
        Op::Fip(f, p) => {
            let id = format!("f{f}");
            t.floating_ips.insert(
                id.clone(),
                FloatingIp {
                    id: id.clone(),
                    tenant: "t".into(),
                    network: "ext".into(),
                    subnet: "sx".into(),
                    ip: Ipv4Addr::new(203, 0, 113, 10 + f),
                    port: p.map(|p| format!("p{p}")),
                    load_balancer: None,
                    created: 0,
                    generation: 1,
                },
            );
            vec![Change::FloatingIp(id)]
        }
        Op::Outside(o, b) => {
            let id = format!("o{o}");
            if *b {
                let sx = t.subnets["sx"].clone();
                t.ports
                    .insert(id.clone(), port(&id, &sx, 100 + o, &["web"]));
                t.bound.insert(id.clone(), 100 + u32::from(*o));
            } else {
                t.ports.remove(&id);
                t.bound.remove(&id);
            }
            vec![Change::Port(id)]
        }
        Op::NetCap(c) => {
            t.networks.get_mut("n1").unwrap().cap_bps = *c;
            vec![Change::Network("n1".into())]
        }
        Op::PortCap(p, c, m) => {
            let id = format!("p{p}");
            if let Some(port) = t.ports.get_mut(&id) {
                port.cap_bps = *c;
                port.min_bps = *m;
            }
            vec![Change::Port(id)]
        }
        Op::Lb(k, None) => {
            let id = format!("lb{k}");
            t.load_balancers.remove(&id);
            vec![Change::LoadBalancer(id)]
        }
        Op::Lb(k, Some((s, backends, affinity, monitor))) => {
            let id = format!("lb{k}");
            let sub = t.subnets[SUBNETS[*s as usize]].clone();
            let vip = Ipv4Addr::from(u32::from(sub.cidr.network()) + 200 + u32::from(*k));
            let bs: Vec<LbBackend> = backends
                .iter()
                .map(|(p, w)| {
                    let pid = format!("p{p}");
                    let ip =
                        t.ports
                            .get(&pid)
                            .map(|x| x.ip)
                            .unwrap_or(Ipv4Addr::new(10, 1, 1, 10 + p));
                    LbBackend {
                        port: Some(pid),
                        ip,
                        target_port: 8080,
                        weight: *w,
                    }
                })
                .collect();
            // Groups move on at each change, so a group let go and one taken meet in a delta.
            let base = 10 * u32::from(*k) + (*n % 3);
            let listeners = vec![
                LbListener {
                    protocol: LbProtocol::Tcp,
                    port: 80,
                    group: 100 + base,
                    backends: bs.clone(),
                },
                LbListener {
                    protocol: LbProtocol::Udp,
                    port: 53,
                    group: 200 + base,
                    backends: bs,
                },
            ];
            let mut health = HealthCheck::none();
            if monitor.is_some() {
                health.kind = HealthKind::Tcp;
            }
            t.load_balancers.insert(
                id.clone(),
                LoadBalancer {
                    id: id.clone(),
                    tenant: "t".into(),
                    network: "n1".into(),
                    subnet: sub.id.clone(),
                    name: id.clone(),
                    vip,
                    listeners,
                    session_affinity: *affinity,
                    health,
                    monitor: monitor.map(|m| format!("p{m}")),
                    created: 0,
                    generation: 1,
                },
            );
            vec![Change::LoadBalancer(id)]
        }
        Op::FipLb(f, l) => {
            let id = format!("f{f}");
            t.floating_ips.insert(
                id.clone(),
                FloatingIp {
                    id: id.clone(),
                    tenant: "t".into(),
                    network: "ext".into(),
                    subnet: "sx".into(),
                    ip: Ipv4Addr::new(203, 0, 113, 10 + f),
                    port: None,
                    load_balancer: l.map(|l| format!("lb{l}")),
                    created: 0,
                    generation: 1,
                },
            );
            vec![Change::FloatingIp(id)]
        }
        Op::Reevaluate(g, b) => {
            let gid = GROUPS[*g as usize];
            let grp = t
                .groups
                .entry(gid.to_string())
                .or_insert_with(|| group(gid, vec![]));
            grp.reevaluate_existing = *b;
            vec![Change::Group(gid.to_string())]
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The model: after any sequence of changes, the incremental compiler holds exactly what a
    /// fresh compile of the topology gives, and its deltas, applied to a table, leave exactly
    /// those flows.
    #[test]
    fn incremental_equals_full(ops in proptest::collection::vec(op(), 1..40)) {
        let mut t = base();
        let mut c = Compiler::new();
        let mut table = BTreeMap::new();
        apply(&mut table, &c.full(&t));
        let mut n = 0;
        for op in &ops {
            let changes = run(&mut t, op, &mut n);
            let d = c.changed(&t, &changes);
            apply(&mut table, &d);
            let mut fresh = Compiler::new();
            fresh.full(&t);
            prop_assert_eq!(normalized(&c), normalized(&fresh), "after {:?}", op);
            let mut held: Vec<String> = table
                .iter()
                .filter(|(k, _)| !k.starts_with("meter ") && !k.starts_with("lb "))
                .map(|(_, v)| v.clone())
                .collect();
            held.sort();
            let mut want = c.flows();
            want.sort();
            prop_assert_eq!(held, want);
            // The meters held are exactly those a fresh compile asks for, and every meter a
            // flow names is there.
            let mut fresh_meters = Compiler::new();
            let fd = fresh_meters.full(&t);
            let want_m: BTreeMap<String, String> =
                fd.set_meters.iter().map(|(id, m)| (format!("meter {id}"), format!("{m:?}"))).collect();
            let have_m = held_of(&table, "meter ");
            prop_assert_eq!(&have_m, &want_m);
            // So are the load-balancer groups, and every group a flow names is there.
            let want_g: BTreeMap<String, String> =
                fd.set_lb_groups.iter().map(|(id, g)| (format!("lb {id}"), format!("{g:?}"))).collect();
            let have_g = held_of(&table, "lb ");
            prop_assert_eq!(&have_g, &want_g);
            for f in table.values() {
                if let Some(rest) = f.split("lb(id=").nth(1) {
                    let id = rest.split(')').next().unwrap();
                    prop_assert!(have_g.contains_key(&format!("lb {id}")), "{} names a missing group", f);
                }
            }
            for f in table.values() {
                for part in f.split(&[',', '='][..]) {
                    if let Some(id) = part.strip_prefix("meter:") {
                        prop_assert!(have_m.contains_key(&format!("meter {id}")), "{} names a missing meter", f);
                    }
                }
            }
        }
    }
}

/// Every flow the compiler emits is one the switch takes: it parses, passes validation
/// (prerequisites, reply actions last, ct arguments), and prints back to itself.
#[test]
fn every_compiled_flow_is_a_valid_switch_flow() {
    let mut t = base();
    let s1 = t.subnets["s1"].clone();
    let s2 = t.subnets["s2"].clone();
    t.ports.insert("a".into(), port("a", &s1, 10, &["web"]));
    t.ports
        .insert("b".into(), port("b", &s2, 20, &["db", "web"]));
    t.bound.insert("a".into(), 1);
    t.bound.insert("b".into(), 2);
    t.groups.get_mut("web").unwrap().reevaluate_existing = true;
    t.routers.insert(
        "r".into(),
        Router {
            id: "r".into(),
            tenant: "t".into(),
            network: "n1".into(),
            name: "r".into(),
            subnets: vec!["s1".into(), "s2".into()],
            gateway: None,
            created: 0,
            generation: 1,
        },
    );
    t.routers.get_mut("r").unwrap().gateway = Some(RouterGateway {
        network: "ext".into(),
        subnet: "sx".into(),
        ip: Ipv4Addr::new(203, 0, 113, 3),
        mac: [2, 0x53, 0xee, 0, 0, 3],
        zone: 77,
    });
    t.floating_ips.insert(
        "f".into(),
        FloatingIp {
            id: "f".into(),
            tenant: "t".into(),
            network: "ext".into(),
            subnet: "sx".into(),
            ip: Ipv4Addr::new(203, 0, 113, 10),
            port: Some("b".into()),
            load_balancer: None,
            created: 0,
            generation: 1,
        },
    );
    t.networks.get_mut("n1").unwrap().cap_bps = Some(1_000_000_000);
    let b = t.ports.get_mut("b").unwrap();
    b.cap_bps = Some(200_000_000);
    b.min_bps = Some(100_000_000);
    let sx = t.subnets["sx"].clone();
    t.ports.insert("o".into(), port("o", &sx, 2, &[]));
    t.bound.insert("o".into(), 3);
    t.load_balancers.insert(
        "lb".into(),
        balancer("lb", "s1", &[("a", 10, 1), ("b", 20, 2)]),
    );
    t.floating_ips.insert(
        "g".into(),
        FloatingIp {
            id: "g".into(),
            tenant: "t".into(),
            network: "ext".into(),
            subnet: "sx".into(),
            ip: Ipv4Addr::new(203, 0, 113, 11),
            port: None,
            load_balancer: Some("lb".into()),
            created: 0,
            generation: 1,
        },
    );
    let mut c = Compiler::new();
    let d = c.full(&t);
    let lbs = d.add.join("\n");
    assert!(
        lbs.contains("lb(id=7)") && lbs.contains("nat(dst=10.1.1.200)"),
        "{lbs}"
    );
    assert_eq!(
        d.set_lb_groups,
        vec![(
            7,
            LbGroupSpec {
                backends: vec![
                    (Ipv4Addr::new(10, 1, 1, 10), 8080, 1),
                    (Ipv4Addr::new(10, 1, 2, 20), 8080, 2)
                ],
                affinity: false
            }
        )]
    );
    assert!(d.add.len() > 60);
    let all = d.add.join("\n");
    assert!(all.contains("nat(src=203.0.113.3:1024-65535)"), "{all}");
    assert!(
        all.contains("actions=meter:2,meter:2147483649,write_metadata"),
        "{all}"
    );
    assert_eq!(d.set_links, vec![(network_meter(1), 1_000_000_000)]);
    assert!(d.set_meters.contains(&(
        2,
        MeterSpec {
            rate_bps: 200_000_000,
            min: Some((100_000_000, network_meter(1)))
        }
    )));
    assert!(
        all.contains("nat(dst=10.1.2.20)") && all.contains("nat(src=203.0.113.10)"),
        "{all}"
    );
    for f in &d.add {
        let r = strata_net::parse_flow(f, None).unwrap_or_else(|e| panic!("{f}: {e}"));
        r.validate().unwrap_or_else(|e| panic!("{f}: {e}"));
        let again = strata_net::parse_flow(&strata_net::format_flow(&r, None), None).unwrap();
        assert_eq!(again, r, "{f}");
    }
    t.ports.remove("b");
    t.bound.remove("b");
    let d = c.changed(&t, &[Change::Port("b".into())]);
    assert!(d.remove.len() > 5, "{d:?}");
    for f in &d.remove {
        strata_net::syntax::parse_filter(f, None, true).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn a_port_on_another_node_is_reached_through_its_tunnel() {
    let mut t = base();
    let s1 = t.subnets["s1"].clone();
    t.ports.insert("a".into(), port("a", &s1, 10, &["web"]));
    t.bound.insert("a".into(), 1);
    let mut c = Compiler::new();
    let d = c.full(&t);
    // No port elsewhere: a takes nothing from tunnels.
    assert!(!d.add.join("\n").contains("tun_id="), "{:?}", d.add);
    let mut b = port("b", &s1, 20, &["web"]);
    b.node = Some("n2".into());
    t.ports.insert("b".into(), b);
    t.remote.insert("b".into(), 7);
    let d = c.changed(&t, &[Change::Port("b".into())]);
    let all = d.add.join("\n");
    let vni = t.networks["n1"].vni;
    // b: answered here, sent through tunnel 7 with the network's VNI, committed after a's
    // egress rules (its ingress rules run on its node).
    assert!(all.contains("arp_tpa=10.1.1.20,cookie="), "{all}");
    assert!(
        all.contains(&format!(
            "set_field:{vni:#x}->tun_id,set_field:7->reg7,goto_table:40"
        )),
        "{all}"
    );
    assert!(all.contains(&format!(
        "table=60,priority=100,reg7=7,tun_id={vni:#x},dl_dst=02:53:00:00:01:14"
    )));
    assert!(
        all.contains("actions=ct(commit,zone=1),goto_table:60"),
        "{all}"
    );
    // a now takes frames from the tunnels: into its ingress rules, in the network's zone.
    assert!(
        all.contains(&format!(
            "table=0,priority=100,tun_id={vni:#x},dl_dst=02:53:00:00:01:0a"
        )),
        "{all}"
    );
    assert!(
        all.contains("set_field:1->reg7,ct(zone=1,nat,table=50)"),
        "{all}"
    );
    // b gone: its flows and a's tunnel flow go.
    t.ports.remove("b");
    t.remote.remove("b");
    let d = c.changed(&t, &[Change::Port("b".into())]);
    assert!(d.add.is_empty(), "{:?}", d.add);
    assert_eq!(d.remove.len(), 6, "{:?}", d.remove);
    let mut fresh = Compiler::new();
    fresh.full(&t);
    assert_eq!(c.flows(), fresh.flows());
}
