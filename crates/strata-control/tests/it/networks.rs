//! Tenant networks on the controller: tenancy (a tenant sees only its own objects, another's
//! answer 404), quotas on counts, refusals with stable codes that change nothing, and the
//! topology coming back after a reopen.

use strata_control::{NewPort, NewRule, NewSubnet, Quota, Role};
use strata_vpc::{Direction, Protocol};

use crate::fixture::*;

fn subnet(name: &str, cidr: &str) -> NewSubnet {
    NewSubnet {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        gateway: None,
        dhcp: true,
        dns: vec![],
    }
}

#[test]
fn tenants_see_only_their_networks_and_quotas_count_them() {
    let f = Fixture::new();
    let q = Quota {
        networks: Some(1),
        ..Quota::default()
    };
    f.c.create_tenant(&f.admin, "acme", q).unwrap();
    f.c.create_tenant(&f.admin, "umbrella", Quota::default())
        .unwrap();
    let a = f.token("acme", Role::Member);
    let b = f.token("umbrella", Role::Member);
    let ra = f.token("acme", Role::Reader);
    let n =
        f.c.create_network(&a, None, "n1", "10.9.0.0/16".parse().unwrap(), false)
            .unwrap();
    assert!(n.vni >= 10_000);
    // The quota: a second network is refused, and nothing is left of it.
    let r =
        f.c.create_network(&a, None, "n2", "10.8.0.0/16".parse().unwrap(), false);
    assert_eq!(code(r), "quota_exceeded");
    assert_eq!(f.c.list_networks(&a, None).unwrap().len(), 1);
    assert_eq!(f.c.get_tenant(&f.admin, "acme").unwrap().usage.networks, 1);
    // Another tenant: 404 by id and by name, empty lists, and no way to add to it.
    assert_eq!(code(f.c.get_network(&b, &n.id)), "network_not_found");
    assert_eq!(code(f.c.get_network(&b, "n1")), "network_not_found");
    assert!(f.c.list_networks(&b, None).unwrap().is_empty());
    assert_eq!(
        code(f.c.create_subnet(&b, &n.id, subnet("s", "10.9.1.0/24"))),
        "network_not_found"
    );
    // A reader sees but does not change.
    assert_eq!(f.c.get_network(&ra, "n1").unwrap().id, n.id);
    assert_eq!(
        code(f.c.create_subnet(&ra, "n1", subnet("s", "10.9.1.0/24"))),
        "forbidden"
    );
    // Only admins make external networks.
    let r =
        f.c.create_network(&b, None, "ext", "192.0.2.0/24".parse().unwrap(), true);
    assert_eq!(code(r), "forbidden");
    // The same name in another tenant is another network.
    f.c.create_network(&b, None, "n1", "10.9.0.0/16".parse().unwrap(), false)
        .unwrap();
    // Groups: another tenant's group cannot be named by a rule or a port.
    let ga = f.c.create_security_group(&a, None, "web", false).unwrap();
    let gb = f.c.create_security_group(&b, None, "web", false).unwrap();
    let rule = |g: &str| NewRule {
        direction: Direction::Ingress,
        protocol: Protocol::Tcp,
        ports: Some((80, 80)),
        remote_cidr: None,
        remote_group: Some(g.into()),
    };
    assert_eq!(
        code(f.c.add_security_group_rule(&a, &ga.id, rule(&gb.id))),
        "reference_not_found",
        "not visible, as if absent"
    );
    let g = f.c.add_security_group_rule(&a, "web", rule("web")).unwrap();
    // A tenant with network objects is not deleted: a group alone counts too.
    f.c.create_tenant(&f.admin, "solo", Quota::default())
        .unwrap();
    let solo = f.token("solo", Role::Member);
    f.c.create_security_group(&solo, None, "g", false).unwrap();
    assert_eq!(
        code(f.c.delete_tenant(&f.admin, "solo")),
        "tenant_not_empty"
    );
    f.c.delete_security_group(&solo, "g").unwrap();
    f.c.delete_tenant(&f.admin, "solo").unwrap();
    assert_eq!(g.rules.len(), 2, "the starting egress rule and the new one");
    assert_eq!(
        code(f.c.delete_security_group_rule(&a, "web", "r9")),
        "security_group_rule_not_found"
    );
}

#[test]
fn bad_ranges_and_addresses_are_refused_with_stable_codes_and_change_nothing() {
    let f = Fixture::new();
    let p = &f.admin;
    f.c.create_tenant(p, "acme", Quota::default()).unwrap();
    let t = Some("acme");
    let r =
        f.c.create_network(p, t, "n", "10.0.0.1/16".parse().unwrap(), false);
    assert_eq!(
        r.unwrap().cidr.to_string(),
        "10.0.0.0/16",
        "host bits are cleared"
    );
    let r =
        f.c.create_network(p, t, "n", "10.1.0.0/16".parse().unwrap(), false);
    assert_eq!(code(r), "network_exists");
    f.c.create_subnet(p, "n", subnet("a", "10.0.1.0/24"))
        .unwrap();
    assert_eq!(
        code(f.c.create_subnet(p, "n", subnet("b", "10.0.1.128/25"))),
        "address_in_use",
        "overlaps a"
    );
    assert_eq!(
        code(f.c.create_subnet(p, "n", subnet("c", "10.7.0.0/24"))),
        "network_spec_conflict",
        "outside the network"
    );
    assert_eq!(
        code(f.c.create_subnet(p, "n", subnet("a", "10.0.2.0/24"))),
        "subnet_exists"
    );
    assert_eq!(f.c.list_subnets(p, "n").unwrap().len(), 1);
    // A port asking for the gateway's address, or one outside its subnet, is refused before
    // any device is made.
    let port = |ip: &str| NewPort {
        name: "p".into(),
        subnet: "a".into(),
        ip: Some(ip.parse().unwrap()),
        mac: None,
        security_groups: None,
        veth_peer: None,
        node: None,
    };
    assert_eq!(
        code(f.c.create_port(p, "n", port("10.0.1.1"))),
        "address_in_use"
    );
    assert_eq!(
        code(f.c.create_port(p, "n", port("10.0.2.5"))),
        "network_spec_conflict"
    );
    // Objects the body names that are not there: the request contradicts the state (409,
    // with the field), while the network of the path was found.
    let mut ghost = port("10.0.1.5");
    ghost.subnet = "nope".into();
    assert_eq!(
        code(f.c.create_port(p, "n", ghost.clone())),
        "reference_not_found"
    );
    assert_eq!(named(f.c.create_port(p, "n", ghost)), "subnet");
    let mut ghost = port("10.0.1.5");
    ghost.security_groups = Some(vec!["nope".into()]);
    assert_eq!(named(f.c.create_port(p, "n", ghost)), "security_groups");
    assert_eq!(
        named(f.c.create_router(p, "n", "r", &["nope".into()])),
        "subnets"
    );
    assert_eq!(
        code(f.c.create_port(p, "nope", port("10.0.1.5"))),
        "network_not_found"
    );
    assert!(f.c.list_ports(p, "n").unwrap().is_empty());
    assert!(f.c.list_routers(p, "n").unwrap().is_empty());
    // A network with a subnet is not deleted; emptied, it is.
    assert_eq!(code(f.c.delete_network(p, "n")), "network_not_empty");
    f.c.delete_subnet(p, "a").unwrap();
    f.c.delete_network(p, "n").unwrap();
    assert!(f.c.list_networks(p, None).unwrap().is_empty());
    assert_eq!(f.c.get_tenant(p, "acme").unwrap().usage.networks, 0);
}
