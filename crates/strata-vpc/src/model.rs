//! The objects of a tenant network, as stored. Plain data: nothing here decides anything.
//!
//! # Invariants (kept by the control plane, which validates before it stores)
//! - A subnet's CIDR lies inside its network's CIDR and overlaps no other subnet of it; its
//!   gateway is a host address of the subnet.
//! - A port's IP is a host address of its subnet, unique in the network, not the gateway; its
//!   MAC is unicast and unique on the node.
//! - A router connects subnets of one network; a subnet is on at most one router.
//! - `vni`, `zone` (the connection-tracking zone) and `key` (the subnet's logical-switch
//!   number, the flows' `metadata`) are allocated by the control plane and unique.
//! - A security group's rules have ids unique within it; a rule's remote group is a group of
//!   the same tenant.
//! - A load balancer's VIP is a host address of its subnet held by no port and no other VIP;
//!   its backends are addresses of its network's subnets; its listeners' groups are unique on
//!   the node; a floating IP maps to a port or to a load balancer, never both.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A tenant's virtual private network: an address space and a VNI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// Address space of its subnets.
    pub cidr: Ipv4Net,
    /// VXLAN network identifier (allocated, unique in the cluster).
    pub vni: u32,
    /// Connection-tracking zone of its traffic (allocated, unique on the node).
    pub zone: u16,
    /// An external network (admin-made): it stands for the outside. Routers take their
    /// gateway address on it, floating IPs come from it, and its ports are not filtered.
    #[serde(default)]
    pub external: bool,
    /// Cap on what all its ports send together, bits per second; also the capacity its
    /// ports' guarantees share.
    #[serde(default)]
    pub cap_bps: Option<u64>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

/// A router's leg on an external network: its address there, SNAT behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGateway {
    /// External network id.
    pub network: String,
    /// External subnet id the address is from.
    pub subnet: String,
    /// The router's address on it (the SNAT address of its subnets).
    pub ip: Ipv4Addr,
    /// The router's MAC on it.
    pub mac: [u8; 6],
    /// Conntrack zone of the router's NAT (allocated, unique on the node).
    pub zone: u16,
}

/// A floating IP: an external address mapped 1:1 to a port (DNAT in, SNAT out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// External network id.
    pub network: String,
    /// External subnet id the address is from.
    pub subnet: String,
    /// The external address.
    pub ip: Ipv4Addr,
    /// The port it maps to (None: allocated, not associated).
    #[serde(default)]
    pub port: Option<String>,
    /// Or the load balancer whose VIP it maps to (never both with `port`).
    #[serde(default)]
    pub load_balancer: Option<String>,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

/// An IPv4 subnet of a network: one L2 segment with a gateway and, optionally, DHCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Network id.
    pub network: String,
    /// Name, unique within the network.
    pub name: String,
    /// Its addresses.
    pub cidr: Ipv4Net,
    /// The gateway (router interface) address.
    pub gateway: Ipv4Addr,
    /// The gateway's MAC (allocated).
    pub gateway_mac: [u8; 6],
    /// Whether the switch answers DHCP for the subnet's ports.
    pub dhcp: bool,
    /// DNS servers handed out by DHCP.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Logical-switch number: the flows' `metadata` for this subnet (allocated, unique).
    pub key: u32,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

/// A port: one interface on a subnet, bound to a device on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Network id.
    pub network: String,
    /// Subnet id.
    pub subnet: String,
    /// Name, unique within the network.
    pub name: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Security groups (ids); traffic to and from the port passes their rules.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// The device on the node, what a VM or namespace plugs into: a TAP the switch opened,
    /// or (with `veth_peer`) the host end of a veth pair.
    pub device: String,
    /// A veth port: the peer's interface name, the end a container gets (`ip link set PEER
    /// netns X`). None: the device is a TAP (every port stored before veth ports existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth_peer: Option<String>,
    /// Cap on what the port sends, bits per second.
    #[serde(default)]
    pub cap_bps: Option<u64>,
    /// Guarantee of what the port may send under contention, bits per second, within its
    /// network's cap (work-conserving: idle guarantees are lent out).
    #[serde(default)]
    pub min_bps: Option<u64>,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
    /// The node its device is on (the node whose API made it). None: a port stored before
    /// ports named their node, the node of a single-machine daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A router: routes between the subnets attached to it (on every node, locally).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Network id.
    pub network: String,
    /// Name, unique within the network.
    pub name: String,
    /// Subnet ids attached (each router interface is the subnet's gateway).
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Its leg on an external network, if it has one.
    #[serde(default)]
    pub gateway: Option<RouterGateway>,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

/// Which way a rule looks: traffic arriving at a port, or leaving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the port.
    Ingress,
    /// From the port.
    Egress,
}

/// What protocol a rule admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Any IPv4 traffic.
    Any,
    /// TCP (ports apply).
    Tcp,
    /// UDP (ports apply).
    Udp,
    /// ICMP.
    Icmp,
}

/// Where the other end of a connection may be.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    /// Anywhere.
    Any,
    /// An address range.
    Cidr(Ipv4Net),
    /// The ports of a security group (by id).
    Group(String),
}

/// A rule as asked for (without its id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Ingress or egress.
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port range (TCP/UDP only), inclusive.
    pub ports: Option<(u16, u16)>,
    /// The other end.
    pub remote: Remote,
}

/// A rule of a security group: an allow (security groups only allow; the default denies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// Id, unique within the group.
    pub id: String,
    /// What it allows.
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// A security group: a set of allow rules, stateful (replies and related traffic pass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<SgRule>,
    /// When rules change, whether connections already open are judged again by the new
    /// rules (true) or keep flowing (false, the default, as Neutron).
    #[serde(default)]
    pub reevaluate_existing: bool,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

impl SecurityGroup {
    /// The rules a new group starts with, as Neutron's: all egress allowed, no ingress.
    pub fn default_rules() -> Vec<RuleSpec> {
        vec![RuleSpec {
            direction: Direction::Egress,
            protocol: Protocol::Any,
            ports: None,
            remote: Remote::Any,
        }]
    }
}

/// The transport a load-balancer listener carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl LbProtocol {
    /// Its name in flow syntax (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "tcp",
            LbProtocol::Udp => "udp",
        }
    }
}

/// One backend of a listener: where a new connection to the VIP may be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbBackend {
    /// The port it is (id), if it was named by port.
    #[serde(default)]
    pub port: Option<String>,
    /// Its address (a port's, in the load balancer's network).
    pub ip: Ipv4Addr,
    /// The port number the connection is translated to.
    pub target_port: u16,
    /// Relative weight (0: no new connections).
    pub weight: u32,
}

/// A listener: VIP:port over one protocol, and the backends behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbListener {
    /// Protocol.
    pub protocol: LbProtocol,
    /// The VIP's port.
    pub port: u16,
    /// The switch's group for it (allocated, unique on the node, never 0).
    pub group: u32,
    /// Backends.
    #[serde(default)]
    pub backends: Vec<LbBackend>,
}

/// How backends are probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum HealthKind {
    /// Not probed: every backend counts as up.
    None,
    /// A TCP connect to the backend's port.
    Tcp,
    /// An HTTP GET of `path`; a 2xx or 3xx status is healthy.
    Http {
        /// The path asked for.
        path: String,
    },
}

/// A load balancer's active health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// What a probe is.
    #[serde(flatten)]
    pub kind: HealthKind,
    /// Time between two probes of a backend, milliseconds.
    pub interval_ms: u32,
    /// Time a probe may take, milliseconds.
    pub timeout_ms: u32,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
}

impl HealthCheck {
    /// Default interval: with [`Self::DEFAULT_FALL`] failures and the timeout, a dead backend
    /// is out within `fall × interval + timeout` = 2.5 s (the goal is 3 s).
    pub const DEFAULT_INTERVAL_MS: u32 = 1000;
    /// Default probe timeout.
    pub const DEFAULT_TIMEOUT_MS: u32 = 500;
    /// Default rise.
    pub const DEFAULT_RISE: u32 = 2;
    /// Default fall.
    pub const DEFAULT_FALL: u32 = 2;

    /// No probing.
    pub fn none() -> HealthCheck {
        HealthCheck {
            kind: HealthKind::None,
            interval_ms: Self::DEFAULT_INTERVAL_MS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
        }
    }

    /// Whether backends are probed.
    pub fn active(&self) -> bool {
        self.kind != HealthKind::None
    }
}

/// A load balancer: a VIP on a subnet, listeners, and how backends are chosen and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Network id.
    pub network: String,
    /// The VIP's subnet id.
    pub subnet: String,
    /// Name, unique within the network.
    pub name: String,
    /// The virtual address (unique in the network: no port or other VIP holds it).
    pub vip: Ipv4Addr,
    /// Listeners (protocol and port unique within the load balancer).
    #[serde(default)]
    pub listeners: Vec<LbListener>,
    /// Session affinity: a client (source address) always lands on one backend.
    #[serde(default)]
    pub session_affinity: bool,
    /// Active health check.
    pub health: HealthCheck,
    /// The network's monitor port (id), whose address the probes come from, when health
    /// checked.
    #[serde(default)]
    pub monitor: Option<String>,
    /// Creation time.
    pub created: u64,
    /// Bumped at every change.
    pub generation: u64,
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
