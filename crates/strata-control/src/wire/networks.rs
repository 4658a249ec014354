//! Tenant networks: networks, subnets, ports, routers and security groups.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object};
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;

/// An IPv4 prefix `A.B.C.D/N`.
pub const CIDR_PATTERN: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}\
(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$";
/// A network or subnet range: an IPv4 prefix of length 0 to 30 (a /31 or /32 holds no host
/// besides its network and broadcast addresses). Host bits are cleared.
pub const NET_CIDR_PATTERN: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}\
(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|30)$";
/// A unicast MAC `aa:bb:cc:dd:ee:ff` (the first octet even). All zeros is refused as taken.
pub const MAC_PATTERN: &str = "^[0-9A-Fa-f][02468AaCcEe](:[0-9A-Fa-f]{2}){5}$";
/// Most DNS servers a subnet hands out, groups a port has, subnets a router connects.
pub const LIST_MAX: usize = 16;

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn opt_name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, true)
}
fn cidr() -> Object {
    text(NET_CIDR_PATTERN, 18, false)
}
fn opt_cidr() -> Object {
    text(CIDR_PATTERN, 18, true)
}
fn opt_ip() -> Object {
    text(IPV4_PATTERN, 15, true)
}
fn opt_ifname() -> Object {
    text(PORT_NAME_PATTERN, 15, true)
}
fn opt_mac() -> Object {
    text(MAC_PATTERN, 17, true)
}
fn names() -> Array {
    ArrayBuilder::new()
        .items(name())
        .max_items(Some(LIST_MAX))
        .build()
}
fn ips() -> Array {
    ArrayBuilder::new()
        .items(text(IPV4_PATTERN, 15, false))
        .max_items(Some(LIST_MAX))
        .build()
}
fn port_no() -> Object {
    int(1, 65535, true)
}

fn parse_cidr(field: &'static str, s: &str) -> Result<ipnet::Ipv4Net, ControlError> {
    check_text(field, s, CIDR_PATTERN)?;
    s.parse()
        .map_err(|_| ControlError::invalid(field, format!("{s:?} is not A.B.C.D/N")))
}

fn parse_ip(field: &'static str, s: &str) -> Result<std::net::Ipv4Addr, ControlError> {
    check_text(field, s, IPV4_PATTERN)?;
    s.parse()
        .map_err(|_| ControlError::invalid(field, format!("{s:?} is not A.B.C.D")))
}

fn check_list(
    field: &'static str,
    v: &[String],
    pattern: &'static str,
) -> Result<(), ControlError> {
    if v.len() > LIST_MAX {
        return Err(ControlError::invalid(field, format!("at most {LIST_MAX}")));
    }
    v.iter().try_for_each(|x| check_text(field, x, pattern))
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Name, unique within the tenant.
    #[schema(schema_with = name)]
    pub name: String,
    /// Address space of its subnets (`10.0.0.0/16`).
    #[schema(schema_with = cidr)]
    pub cidr: String,
    /// Tenant (admins; others create in their own).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub tenant: Option<String>,
    /// An external network (admins): it stands for the outside; routers take a leg on it,
    /// floating IPs come from it, its ports are not filtered.
    #[serde(default)]
    pub external: bool,
}

impl Check for CreateNetwork {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        check_text("cidr", &self.cidr, NET_CIDR_PATTERN)?;
        parse_cidr("cidr", &self.cidr)?;
        if let Some(t) = &self.tenant {
            check_text("tenant", t, NAME_PATTERN)?;
        }
        Ok(())
    }
}

impl CreateNetwork {
    /// The range, parsed (after `check`).
    pub fn range(&self) -> Result<ipnet::Ipv4Net, ControlError> {
        parse_cidr("cidr", &self.cidr)
    }
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Address space.
    pub cidr: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Stands for the outside.
    pub external: bool,
    /// Cap on what its ports send together, bits per second.
    pub cap_bps: Option<u64>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

impl From<strata_vpc::Network> for Network {
    fn from(n: strata_vpc::Network) -> Self {
        Network {
            id: n.id,
            tenant: n.tenant,
            name: n.name,
            cidr: n.cidr.to_string(),
            vni: n.vni,
            external: n.external,
            cap_bps: n.cap_bps,
            created: n.created,
        }
    }
}

/// Networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkList {
    /// Items.
    pub items: Vec<Network>,
}

/// `?tenant=` of the network and security-group lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// Only this tenant's.
    pub tenant: Option<String>,
}

impl Check for TenantQuery {
    fn check(&self) -> Result<(), ControlError> {
        match &self.tenant {
            Some(t) => check_text("tenant", t, NAME_PATTERN),
            None => Ok(()),
        }
    }
}

/// `POST /v1/networks/{id}/subnets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubnet {
    /// Name, unique within the network.
    #[schema(schema_with = name)]
    pub name: String,
    /// Range, inside the network's.
    #[schema(schema_with = cidr)]
    pub cidr: String,
    /// Gateway address (default: the first host).
    #[serde(default)]
    #[schema(schema_with = opt_ip)]
    pub gateway: Option<String>,
    /// Answer DHCP for the subnet's ports (default true).
    #[serde(default)]
    pub dhcp: Option<bool>,
    /// DNS servers DHCP hands out.
    #[serde(default)]
    #[schema(schema_with = ips)]
    pub dns: Vec<String>,
}

impl Check for CreateSubnet {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        check_text("cidr", &self.cidr, NET_CIDR_PATTERN)?;
        parse_cidr("cidr", &self.cidr)?;
        if let Some(g) = &self.gateway {
            parse_ip("gateway", g)?;
        }
        check_list("dns", &self.dns, IPV4_PATTERN)
    }
}

impl CreateSubnet {
    /// The controller's form (after `check`).
    pub fn into_new(self) -> Result<crate::controller::NewSubnet, ControlError> {
        Ok(crate::controller::NewSubnet {
            cidr: parse_cidr("cidr", &self.cidr)?,
            gateway: self
                .gateway
                .as_deref()
                .map(|g| parse_ip("gateway", g))
                .transpose()?,
            dhcp: self.dhcp.unwrap_or(true),
            dns: self
                .dns
                .iter()
                .map(|d| parse_ip("dns", d))
                .collect::<Result<_, _>>()?,
            name: self.name,
        })
    }
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subnet {
    /// Id.
    pub id: String,
    /// Network id.
    pub network: String,
    /// Name.
    pub name: String,
    /// Range.
    pub cidr: String,
    /// Gateway address.
    pub gateway: String,
    /// Gateway MAC.
    pub gateway_mac: String,
    /// DHCP on.
    pub dhcp: bool,
    /// DNS servers handed out.
    pub dns: Vec<String>,
    /// Creation time.
    pub created: u64,
}

impl From<strata_vpc::Subnet> for Subnet {
    fn from(s: strata_vpc::Subnet) -> Self {
        Subnet {
            id: s.id,
            network: s.network,
            name: s.name,
            cidr: s.cidr.to_string(),
            gateway: s.gateway.to_string(),
            gateway_mac: strata_vpc::model::fmt_mac(&s.gateway_mac),
            dhcp: s.dhcp,
            dns: s.dns.iter().map(ToString::to_string).collect(),
            created: s.created,
        }
    }
}

/// Subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubnetList {
    /// Items.
    pub items: Vec<Subnet>,
}

/// `POST /v1/networks/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetworkPort {
    /// Name, unique within the network.
    #[schema(schema_with = name)]
    pub name: String,
    /// Subnet (id or name).
    #[schema(schema_with = name)]
    pub subnet: String,
    /// Address (default: the lowest free one).
    #[serde(default)]
    #[schema(schema_with = opt_ip)]
    pub ip: Option<String>,
    /// MAC (default: allocated).
    #[serde(default)]
    #[schema(schema_with = opt_mac)]
    pub mac: Option<String>,
    /// Security groups, ids or names (default: the tenant's `default` group).
    #[serde(default)]
    #[schema(schema_with = names)]
    pub security_groups: Vec<String>,
    /// Make the port's device a veth pair instead of a TAP: the host end stays with the
    /// switch, the peer is what a container gets (`ip link set PEER netns X`). Flows
    /// between veth ports are carried by the kernel fast path once established.
    #[serde(default)]
    pub veth: Option<VethSettings>,
    /// The node whose switch gets the port's device (default: the node answering). Another
    /// node only on a cluster store; that node opens the device.
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub node: Option<String>,
}

/// A network port's veth pair (`veth` in the body that creates the port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VethSettings {
    /// The peer's interface name (default: the port's device name + "p"); free on this node.
    #[serde(default)]
    #[schema(schema_with = opt_ifname)]
    pub peer: Option<String>,
}

impl Check for CreateNetworkPort {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        check_text("subnet", &self.subnet, NAME_PATTERN)?;
        if let Some(ip) = &self.ip {
            parse_ip("ip", ip)?;
        }
        if let Some(m) = &self.mac {
            check_text("mac", m, MAC_PATTERN)?;
        }
        if let Some(peer) = self.veth.as_ref().and_then(|v| v.peer.as_ref()) {
            check_text("peer", peer, PORT_NAME_PATTERN)?;
        }
        if let Some(n) = &self.node {
            check_text("node", n, NAME_PATTERN)?;
        }
        check_list("security_groups", &self.security_groups, NAME_PATTERN)
    }
}

impl CreateNetworkPort {
    /// The controller's form (after `check`).
    pub fn into_new(self) -> Result<crate::controller::NewPort, ControlError> {
        Ok(crate::controller::NewPort {
            ip: self.ip.as_deref().map(|i| parse_ip("ip", i)).transpose()?,
            security_groups: Some(self.security_groups),
            veth_peer: self.veth.map(|v| v.peer.unwrap_or_default()),
            name: self.name,
            subnet: self.subnet,
            mac: self.mac,
            node: self.node,
        })
    }
}

/// A port of a tenant network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkPort {
    /// Id.
    pub id: String,
    /// Network id.
    pub network: String,
    /// Subnet id.
    pub subnet: String,
    /// Name.
    pub name: String,
    /// MAC.
    pub mac: String,
    /// IPv4 address.
    pub ip: String,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// The device on its node: a TAP that a VM or namespace plugs into, or the host end of
    /// a veth pair.
    pub device: String,
    /// The node the device is on (the node whose API made the port); null for a port made
    /// before ports named their node.
    #[serde(default)]
    pub node: Option<String>,
    /// A veth port's peer, the interface a container gets (null: the device is a TAP).
    pub veth_peer: Option<String>,
    /// Cap on what it sends, bits per second.
    pub cap_bps: Option<u64>,
    /// Guarantee under contention, bits per second (a share of the network's cap).
    pub min_bps: Option<u64>,
    /// Creation time.
    pub created: u64,
}

impl From<strata_vpc::Port> for NetworkPort {
    fn from(p: strata_vpc::Port) -> Self {
        NetworkPort {
            id: p.id,
            network: p.network,
            subnet: p.subnet,
            name: p.name,
            mac: strata_vpc::model::fmt_mac(&p.mac),
            ip: p.ip.to_string(),
            security_groups: p.security_groups,
            device: p.device,
            node: p.node,
            veth_peer: p.veth_peer,
            cap_bps: p.cap_bps,
            min_bps: p.min_bps,
            created: p.created,
        }
    }
}

/// Ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkPortList {
    /// Items.
    pub items: Vec<NetworkPort>,
}

/// `PUT /v1/network-ports/{id}/security-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecurityGroups {
    /// Group ids or names (empty: the tenant's `default`).
    #[schema(schema_with = names)]
    pub security_groups: Vec<String>,
}

impl Check for SetSecurityGroups {
    fn check(&self) -> Result<(), ControlError> {
        check_list("security_groups", &self.security_groups, NAME_PATTERN)
    }
}

/// `POST /v1/networks/{id}/routers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRouter {
    /// Name, unique within the network.
    #[schema(schema_with = name)]
    pub name: String,
    /// Subnets it connects (ids or names).
    #[serde(default)]
    #[schema(schema_with = names)]
    pub subnets: Vec<String>,
}

impl Check for CreateRouter {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        check_list("subnets", &self.subnets, NAME_PATTERN)
    }
}

/// `PUT /v1/routers/{id}/subnets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRouterSubnets {
    /// Subnets it connects (ids or names).
    #[schema(schema_with = names)]
    pub subnets: Vec<String>,
}

impl Check for SetRouterSubnets {
    fn check(&self) -> Result<(), ControlError> {
        check_list("subnets", &self.subnets, NAME_PATTERN)
    }
}

/// A router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkRouter {
    /// Id.
    pub id: String,
    /// Network id.
    pub network: String,
    /// Name.
    pub name: String,
    /// Subnet ids it connects.
    pub subnets: Vec<String>,
    /// Its leg on an external network.
    pub gateway: Option<RouterGatewayInfo>,
    /// Creation time.
    pub created: u64,
}

/// A router's leg on an external network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouterGatewayInfo {
    /// External network id.
    pub network: String,
    /// The router's address there (its subnets' SNAT address).
    pub ip: String,
}

/// `PUT /v1/routers/{id}/gateway`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRouterGateway {
    /// External network (id or name); null takes the leg away.
    #[schema(schema_with = opt_name)]
    pub network: Option<String>,
}

impl Check for SetRouterGateway {
    fn check(&self) -> Result<(), ControlError> {
        match &self.network {
            Some(n) => check_text("network", n, NAME_PATTERN),
            None => Ok(()),
        }
    }
}

/// `POST /v1/floating-ips`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFloatingIp {
    /// External network (id or name).
    #[schema(schema_with = name)]
    pub network: String,
    /// Port to map it to (id or name).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub port: Option<String>,
    /// Tenant (admins).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub tenant: Option<String>,
}

impl Check for CreateFloatingIp {
    fn check(&self) -> Result<(), ControlError> {
        check_text("network", &self.network, NAME_PATTERN)?;
        for (f, v) in [("port", &self.port), ("tenant", &self.tenant)] {
            if let Some(v) = v {
                check_text(f, v, NAME_PATTERN)?;
            }
        }
        Ok(())
    }
}

/// `PUT /v1/floating-ips/{id}/port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociateFloatingIp {
    /// Port (id or name); null frees the address of its port.
    #[schema(schema_with = opt_name)]
    pub port: Option<String>,
    /// Or a load balancer (id or name): the floating IP maps to its VIP.
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub load_balancer: Option<String>,
}

impl Check for AssociateFloatingIp {
    fn check(&self) -> Result<(), ControlError> {
        for (f, v) in [("port", &self.port), ("load_balancer", &self.load_balancer)] {
            if let Some(n) = v {
                check_text(f, n, NAME_PATTERN)?;
            }
        }
        Ok(())
    }
}

/// A floating IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FloatingIp {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// External network id.
    pub network: String,
    /// The external address.
    pub ip: String,
    /// The port it maps to.
    pub port: Option<String>,
    /// Or the load balancer whose VIP it maps to.
    pub load_balancer: Option<String>,
    /// Creation time.
    pub created: u64,
}

impl From<strata_vpc::FloatingIp> for FloatingIp {
    fn from(f: strata_vpc::FloatingIp) -> Self {
        FloatingIp {
            id: f.id,
            tenant: f.tenant,
            network: f.network,
            ip: f.ip.to_string(),
            port: f.port,
            load_balancer: f.load_balancer,
            created: f.created,
        }
    }
}

/// Floating IPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FloatingIpList {
    /// Items.
    pub items: Vec<FloatingIp>,
}

impl From<strata_vpc::Router> for NetworkRouter {
    fn from(r: strata_vpc::Router) -> Self {
        NetworkRouter {
            id: r.id,
            network: r.network,
            name: r.name,
            subnets: r.subnets,
            gateway: r.gateway.map(|g| RouterGatewayInfo {
                network: g.network,
                ip: g.ip.to_string(),
            }),
            created: r.created,
        }
    }
}

/// Routers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkRouterList {
    /// Items.
    pub items: Vec<NetworkRouter>,
}

/// `POST /v1/security-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityGroup {
    /// Name, unique within the tenant.
    #[schema(schema_with = name)]
    pub name: String,
    /// Tenant (admins; others create in their own).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub tenant: Option<String>,
    /// Judge open connections again when the rules change (default false: they keep flowing).
    #[serde(default)]
    pub reevaluate_existing: bool,
}

impl Check for CreateSecurityGroup {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        if let Some(t) = &self.tenant {
            check_text("tenant", t, NAME_PATTERN)?;
        }
        Ok(())
    }
}

/// Which way a rule looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleDirection {
    /// Traffic to the port.
    Ingress,
    /// Traffic from the port.
    Egress,
}

/// What protocol a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleProtocol {
    /// Any IPv4.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// `POST /v1/security-groups/{id}/rules`: an allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRule {
    /// Direction.
    pub direction: RuleDirection,
    /// Protocol (default any).
    #[serde(default)]
    pub protocol: Option<RuleProtocol>,
    /// Lowest destination port (tcp, udp).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = port_no)]
    pub port_min: Option<u64>,
    /// Highest destination port (default: port_min).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = port_no)]
    pub port_max: Option<u64>,
    /// The other end's range.
    #[serde(default)]
    #[schema(schema_with = opt_cidr)]
    pub remote_cidr: Option<String>,
    /// The other end's group (id or name).
    #[serde(default)]
    #[schema(schema_with = opt_name)]
    pub remote_group: Option<String>,
}

impl Check for CreateRule {
    fn check(&self) -> Result<(), ControlError> {
        for (f, v) in [("port_min", self.port_min), ("port_max", self.port_max)] {
            if let Some(v) = v {
                check_int(f, v, 1, 65535)?;
            }
        }
        if let Some(c) = &self.remote_cidr {
            parse_cidr("remote_cidr", c)?;
        }
        if let Some(g) = &self.remote_group {
            check_text("remote_group", g, NAME_PATTERN)?;
        }
        Ok(())
    }
}

impl CreateRule {
    /// The controller's form (after `check`).
    pub fn into_new(self) -> Result<crate::controller::NewRule, ControlError> {
        use strata_vpc::{Direction as D, Protocol as P};
        let ports = match (self.port_min, self.port_max) {
            (None, None) => None,
            (Some(lo), hi) => Some((lo as u16, hi.unwrap_or(lo) as u16)),
            (None, Some(_)) => {
                return Err(ControlError::InUse {
                    what: crate::error::InUse::NetworkSpecConflict,
                    message: "port_max needs port_min".into(),
                })
            }
        };
        Ok(crate::controller::NewRule {
            direction: match self.direction {
                RuleDirection::Ingress => D::Ingress,
                RuleDirection::Egress => D::Egress,
            },
            protocol: match self.protocol.unwrap_or(RuleProtocol::Any) {
                RuleProtocol::Any => P::Any,
                RuleProtocol::Tcp => P::Tcp,
                RuleProtocol::Udp => P::Udp,
                RuleProtocol::Icmp => P::Icmp,
            },
            ports,
            remote_cidr: self
                .remote_cidr
                .as_deref()
                .map(|c| parse_cidr("remote_cidr", c))
                .transpose()?,
            remote_group: self.remote_group,
        })
    }
}

/// A rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupRule {
    /// Id within the group.
    pub id: String,
    /// Direction.
    pub direction: RuleDirection,
    /// Protocol.
    pub protocol: RuleProtocol,
    /// Lowest destination port.
    pub port_min: Option<u16>,
    /// Highest destination port.
    pub port_max: Option<u16>,
    /// The other end's range.
    pub remote_cidr: Option<String>,
    /// The other end's group id.
    pub remote_group: Option<String>,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroup {
    /// Id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Open connections judged again when rules change.
    pub reevaluate_existing: bool,
    /// Rules (allows; anything else is denied).
    pub rules: Vec<SecurityGroupRule>,
    /// Creation time.
    pub created: u64,
}

impl From<strata_vpc::SecurityGroup> for SecurityGroup {
    fn from(g: strata_vpc::SecurityGroup) -> Self {
        use strata_vpc::{Direction as D, Protocol as P, Remote as R};
        SecurityGroup {
            id: g.id,
            tenant: g.tenant,
            name: g.name,
            reevaluate_existing: g.reevaluate_existing,
            rules: g
                .rules
                .into_iter()
                .map(|r| SecurityGroupRule {
                    id: r.id,
                    direction: match r.spec.direction {
                        D::Ingress => RuleDirection::Ingress,
                        D::Egress => RuleDirection::Egress,
                    },
                    protocol: match r.spec.protocol {
                        P::Any => RuleProtocol::Any,
                        P::Tcp => RuleProtocol::Tcp,
                        P::Udp => RuleProtocol::Udp,
                        P::Icmp => RuleProtocol::Icmp,
                    },
                    port_min: r.spec.ports.map(|p| p.0),
                    port_max: r.spec.ports.map(|p| p.1),
                    remote_cidr: match &r.spec.remote {
                        R::Cidr(c) => Some(c.to_string()),
                        _ => None,
                    },
                    remote_group: match r.spec.remote {
                        R::Group(g) => Some(g),
                        _ => None,
                    },
                })
                .collect(),
            created: g.created,
        }
    }
}

/// Security groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupList {
    /// Items.
    pub items: Vec<SecurityGroup>,
}

/// A conntrack state for a trace: `+new`, `+est`, `+est+rpl`, ...
pub const CT_STATE_PATTERN: &str = "^([+-](new|est|rel|rpl|inv|trk|snat|dnat))+$";

fn opt_ct_state() -> Object {
    text(CT_STATE_PATTERN, 64, true)
}

/// `POST /v1/network-ports/{id}/trace`: a packet from the port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceNetworkPacket {
    /// Destination address.
    #[schema(schema_with = ip)]
    pub to: String,
    /// Protocol (default any: an ICMP echo request).
    #[serde(default)]
    pub protocol: Option<RuleProtocol>,
    /// Destination port (tcp: 80, udp: 53 unless given).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = port_no)]
    pub port: Option<u64>,
    /// The state every conntrack step is taken to give (default `+new`).
    #[serde(default)]
    #[schema(schema_with = opt_ct_state)]
    pub ct_state: Option<String>,
}

fn ip() -> Object {
    text(IPV4_PATTERN, 15, false)
}

impl Check for TraceNetworkPacket {
    fn check(&self) -> Result<(), ControlError> {
        parse_ip("to", &self.to)?;
        if let Some(p) = self.port {
            check_int("port", p, 1, 65535)?;
        }
        if let Some(c) = &self.ct_state {
            check_text("ct_state", c, CT_STATE_PATTERN)?;
        }
        Ok(())
    }
}

impl TraceNetworkPacket {
    /// The controller's form (after `check`).
    pub fn into_trace(self) -> Result<crate::controller::TraceFrom, ControlError> {
        use strata_vpc::Protocol as P;
        Ok(crate::controller::TraceFrom {
            to: parse_ip("to", &self.to)?,
            protocol: match self.protocol.unwrap_or(RuleProtocol::Any) {
                RuleProtocol::Any => P::Any,
                RuleProtocol::Tcp => P::Tcp,
                RuleProtocol::Udp => P::Udp,
                RuleProtocol::Icmp => P::Icmp,
            },
            port: self.port.map(|p| p as u16),
            ct_state: self.ct_state,
        })
    }
}

/// One rule a traced packet met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkTraceStep {
    /// Table.
    pub table: u8,
    /// What the rule stands for: the port, subnet, router or security-group rule it came from.
    pub what: String,
}

/// A packet's way through a tenant network, in the tenant's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkTrace {
    /// The packet.
    pub packet: String,
    /// The rules it met, in order.
    pub steps: Vec<NetworkTraceStep>,
    /// Where it ends: delivered, answered by the switch, or dropped and by what.
    pub verdict: String,
    /// Ports it reaches.
    pub delivered_to: Vec<String>,
}

impl From<crate::controller::NetworkTrace> for NetworkTrace {
    fn from(t: crate::controller::NetworkTrace) -> Self {
        NetworkTrace {
            packet: t.packet,
            steps: t
                .steps
                .into_iter()
                .map(|s| NetworkTraceStep {
                    table: s.table,
                    what: s.what,
                })
                .collect(),
            verdict: t.verdict,
            delivered_to: t.delivered_to,
        }
    }
}

/// One port's figures (or, with an empty name, a network's sums).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkPortStats {
    /// Port name (empty in the total).
    pub port: String,
    /// Its device.
    pub device: String,
    /// Packets the port sent into the switch.
    pub rx_packets: u64,
    /// Bytes the port sent into the switch.
    pub rx_bytes: u64,
    /// Packets the switch delivered to the port.
    pub tx_packets: u64,
    /// Bytes the switch delivered to the port.
    pub tx_bytes: u64,
    /// Bits per second in over the last second.
    pub rx_bps_1s: u64,
    /// Bits per second in over the last 10 seconds.
    pub rx_bps_10s: u64,
    /// Bits per second out over the last second.
    pub tx_bps_1s: u64,
    /// Bits per second out over the last 10 seconds.
    pub tx_bps_10s: u64,
    /// Drops by reason (`table_miss`, `drop_action`, `ct_invalid`, `ttl_expired`, `meter`,
    /// ...): where in the switch a packet died.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Round trips from the switch to the port's endpoint in the TCP handshakes it took part
    /// in (passive, from conntrack; since the port was bound).
    pub handshake_rtt: super::RoundTrips,
    /// The switch's probes to the port (`POST /v1/networks/{id}/probe`) since it was bound:
    /// sent.
    pub probes_sent: u64,
    /// Probes answered.
    pub probes_answered: u64,
    /// Round trips of the answered probes.
    pub probe_rtt: super::RoundTrips,
}

/// A network's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkStats {
    /// Network name.
    pub network: String,
    /// Per port.
    pub ports: Vec<NetworkPortStats>,
    /// Sums over its ports.
    pub total: NetworkPortStats,
}

impl From<crate::controller::PortFigures> for NetworkPortStats {
    fn from(f: crate::controller::PortFigures) -> Self {
        NetworkPortStats {
            port: f.port,
            device: f.device,
            rx_packets: f.rx_packets,
            rx_bytes: f.rx_bytes,
            tx_packets: f.tx_packets,
            tx_bytes: f.tx_bytes,
            rx_bps_1s: f.rx_bps_1s,
            rx_bps_10s: f.rx_bps_10s,
            tx_bps_1s: f.tx_bps_1s,
            tx_bps_10s: f.tx_bps_10s,
            drops: f.drops,
            handshake_rtt: (&f.handshake_rtt).into(),
            probes_sent: f.probes.sent,
            probes_answered: f.probes.answered,
            probe_rtt: (&f.probes.rtt).into(),
        }
    }
}

impl From<crate::controller::NetworkStats> for NetworkStats {
    fn from(s: crate::controller::NetworkStats) -> Self {
        NetworkStats {
            network: s.network,
            ports: s.ports.into_iter().map(Into::into).collect(),
            total: s.total.into(),
        }
    }
}

/// Most bits per second a cap or guarantee names (1 Tbit/s).
pub const BPS_MAX: u64 = 1_000_000_000_000;

fn bps() -> Object {
    int(1, BPS_MAX, true)
}

/// `PUT /v1/networks/{id}/bandwidth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNetworkBandwidth {
    /// Cap on what its ports send together, bits per second (null: none).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = bps)]
    pub cap_bps: Option<u64>,
}

impl Check for SetNetworkBandwidth {
    fn check(&self) -> Result<(), ControlError> {
        match self.cap_bps {
            Some(v) => check_int("cap_bps", v, 1, BPS_MAX),
            None => Ok(()),
        }
    }
}

/// `PUT /v1/network-ports/{id}/bandwidth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPortBandwidth {
    /// Cap on what the port sends, bits per second (null: none).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = bps)]
    pub cap_bps: Option<u64>,
    /// Guarantee under contention, bits per second, a share of the network's cap (null: none).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = bps)]
    pub min_bps: Option<u64>,
}

impl Check for SetPortBandwidth {
    fn check(&self) -> Result<(), ControlError> {
        for (f, v) in [("cap_bps", self.cap_bps), ("min_bps", self.min_bps)] {
            if let Some(v) = v {
                check_int(f, v, 1, BPS_MAX)?;
            }
        }
        Ok(())
    }
}
