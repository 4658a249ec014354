//! Virtual switches: ports, flows, trace.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AnyOfBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;
use crate::net;

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn port_name() -> Object {
    text(PORT_NAME_PATTERN, 15, false)
}
fn vni() -> Object {
    int(0, VNI_MAX, true)
}
fn vlan() -> Object {
    int(VLAN_MIN, VLAN_MAX, true)
}
fn udp_port() -> Object {
    int(UDP_PORT_MIN, UDP_PORT_MAX, true)
}
fn flow() -> Object {
    text(FLOW_PATTERN, FLOW_MAX_LEN, false)
}
fn flow_match() -> Object {
    text(FLOW_MATCH_PATTERN, FLOW_MAX_LEN, false)
}
fn packet() -> Object {
    text(PACKET_PATTERN, PACKET_MAX_LEN, false)
}
fn ipv4(nullable: bool) -> Object {
    text(IPV4_PATTERN, 15, nullable)
}
fn null() -> Object {
    ObjectBuilder::new().schema_type(Type::Null).build()
}

/// `POST /v1/switches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateSwitch {
    /// Name.
    #[schema(schema_with = name)]
    pub name: String,
}

impl Check for CreateSwitch {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)
    }
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A TAP interface (the default).
    Tap,
    /// The switch's own interface.
    Internal,
    /// A veth pair: the host end is the port, the peer goes to a container.
    Veth,
    /// A VXLAN tunnel to a remote VTEP.
    Vxlan,
}

impl PortKind {
    fn as_str(self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::Internal => "internal",
            PortKind::Veth => "veth",
            PortKind::Vxlan => "vxlan",
        }
    }
}

/// A switch port, as requested (`POST /v1/switches/{name}/ports`) and as stored. Its schema
/// (the `PartialSchema` below) states the rules between fields: a TAP, internal or veth port
/// takes a VNI or a VLAN (not both), only a veth port takes `peer`, a VXLAN port needs
/// `remote` and takes no VLAN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchPort {
    /// Port (and, for TAP, internal and veth ports, interface) name.
    pub name: String,
    /// Kind (default `tap`).
    pub kind: Option<PortKind>,
    /// veth: the peer's interface name (default: the port name + "p").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// VXLAN network: the port's isolation domain (or a VXLAN port's fixed VNI).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub vni: Option<u32>,
    /// VLAN: the port's isolation domain (access port); not with `vni`.
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub vlan: Option<u16>,
    /// VXLAN remote VTEP (VXLAN ports need it).
    pub remote: Option<Ipv4Addr>,
    /// VXLAN local VTEP (default: any).
    pub local: Option<Ipv4Addr>,
    /// VXLAN UDP port (default 4789).
    #[serde(default, deserialize_with = "super::whole::opt")]
    pub dstport: Option<u16>,
}

/// One branch of [`SwitchPort`]'s schema.
fn port_branch(
    kinds: &[Option<&str>],
    vni: Object,
    vlan: Object,
    remote: Object,
    peer: Object,
    required: &[&str],
) -> Object {
    let kind = ObjectBuilder::new()
        .schema_type(if kinds.contains(&None) {
            SchemaType::from_iter([Type::String, Type::Null])
        } else {
            Type::String.into()
        })
        .enum_values(Some(kinds.iter().map(|k| match k {
            Some(k) => serde_json::Value::from(*k),
            None => serde_json::Value::Null,
        })))
        .build();
    let mut b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("name", port_name())
        .property("kind", kind)
        .property("peer", peer)
        .property("vni", vni)
        .property("vlan", vlan)
        .property("remote", remote)
        .property("local", ipv4(true))
        .property("dstport", udp_port());
    for r in required {
        b = b.required(*r);
    }
    b.build()
}

impl utoipa::PartialSchema for SwitchPort {
    fn schema() -> RefOr<Schema> {
        let local = [Some("tap"), Some("internal"), None];
        let veth = [Some("veth")];
        let peer = || text(PORT_NAME_PATTERN, 15, true);
        RefOr::T(Schema::AnyOf(
            AnyOfBuilder::new()
                .description(Some(
                    "A TAP (the default) or internal port in a VXLAN network (`vni`) or a VLAN \
                     (`vlan`), not both; a veth port (`kind: veth`, the same domains) with an \
                     optional `peer` name (default: the name + \"p\"); or a VXLAN tunnel port \
                     (`kind: vxlan`) to `remote`, with an optional fixed `vni`, `local` \
                     address and `dstport` (4789).",
                ))
                .item(port_branch(
                    &local,
                    vni(),
                    null(),
                    ipv4(true),
                    null(),
                    &["name"],
                ))
                .item(port_branch(
                    &local,
                    null(),
                    vlan(),
                    ipv4(true),
                    null(),
                    &["name"],
                ))
                .item(port_branch(
                    &veth,
                    vni(),
                    null(),
                    null(),
                    peer(),
                    &["name", "kind"],
                ))
                .item(port_branch(
                    &veth,
                    null(),
                    vlan(),
                    null(),
                    peer(),
                    &["name", "kind"],
                ))
                .item(port_branch(
                    &[Some("vxlan")],
                    vni(),
                    null(),
                    ipv4(false),
                    null(),
                    &["name", "kind", "remote"],
                ))
                .build(),
        ))
    }
}
impl ToSchema for SwitchPort {
    fn name() -> std::borrow::Cow<'static, str> {
        "SwitchPort".into()
    }
}

impl Check for SwitchPort {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, PORT_NAME_PATTERN)?;
        if let Some(p) = &self.peer {
            check_text("peer", p, PORT_NAME_PATTERN)?;
        }
        if let Some(v) = self.vni {
            check_int("vni", v.into(), 0, VNI_MAX)?;
        }
        if let Some(v) = self.vlan {
            check_int("vlan", v.into(), VLAN_MIN, VLAN_MAX)?;
        }
        if let Some(p) = self.dstport {
            check_int("dstport", p.into(), UDP_PORT_MIN, UDP_PORT_MAX)?;
        }
        Ok(())
    }
}

impl From<SwitchPort> for net::PortRecord {
    fn from(p: SwitchPort) -> Self {
        net::PortRecord {
            name: p.name,
            kind: p.kind.map(|k| k.as_str().to_string()),
            peer: p.peer,
            vni: p.vni,
            vlan: p.vlan,
            remote: p.remote,
            local: p.local,
            dstport: p.dstport,
        }
    }
}

impl From<net::PortRecord> for SwitchPort {
    fn from(p: net::PortRecord) -> Self {
        SwitchPort {
            kind: match p.kind.as_deref() {
                Some("internal") => Some(PortKind::Internal),
                Some("veth") => Some(PortKind::Veth),
                Some("vxlan") => Some(PortKind::Vxlan),
                Some(_) => Some(PortKind::Tap),
                None => None,
            },
            name: p.name,
            peer: p.peer,
            vni: p.vni,
            vlan: p.vlan,
            remote: p.remote,
            local: p.local,
            dstport: p.dstport,
        }
    }
}

/// A switch's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Switch {
    /// Name.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Ports in the order they were added.
    pub ports: Vec<SwitchPort>,
    /// Flows in `ovs-ofctl` syntax.
    pub flows: Vec<String>,
}

impl From<net::SwitchRecord> for Switch {
    fn from(s: net::SwitchRecord) -> Self {
        Switch {
            name: s.name,
            created: s.created,
            ports: s.ports.into_iter().map(Into::into).collect(),
            flows: s.flows,
        }
    }
}

/// The switches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SwitchList {
    /// Switches.
    pub items: Vec<Switch>,
}

/// Counters of one port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortCounters {
    /// Port name.
    pub name: String,
    /// Kind (`tap`, `internal`, `veth`, `vxlan`).
    #[serde(default)]
    pub kind: String,
    /// veth: the peer's interface name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Port number.
    pub number: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets not sent.
    pub tx_dropped: u64,
    /// GSO super-frames received.
    pub rx_gso: u64,
    /// GSO super-frames sent.
    pub tx_gso: u64,
    /// Segments sent.
    pub tx_segments: u64,
}

/// The counters of a switch's ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortCounterList {
    /// Ports.
    pub items: Vec<PortCounters>,
    /// Packets dropped between isolation domains.
    pub isolation_drops: u64,
}

/// `POST /v1/switches/{name}/flows`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddFlow {
    /// A flow in `ovs-ofctl` syntax, e.g. `priority=10,in_port=1,actions=output:2`.
    #[schema(schema_with = flow)]
    pub flow: String,
}

impl Check for AddFlow {
    fn check(&self) -> Result<(), ControlError> {
        check_len("flow", &self.flow, FLOW_MAX_LEN)
    }
}

/// A switch's flows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlowList {
    /// Flows in `ovs-ofctl` syntax.
    pub flows: Vec<String>,
}

/// `POST /v1/switches/{name}/flows/delete`: deletes the flows a match selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeleteFlows {
    /// A match in `ovs-ofctl` syntax (empty: every flow).
    #[serde(default, rename = "match")]
    #[schema(schema_with = flow_match)]
    pub filter: String,
    /// Only flows with exactly this match and priority.
    #[serde(default)]
    pub strict: bool,
}

impl Check for DeleteFlows {
    fn check(&self) -> Result<(), ControlError> {
        check_len("match", &self.filter, FLOW_MAX_LEN)
    }
}

/// How many flows were deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// Flows deleted.
    pub deleted: u64,
}

/// `POST /v1/switches/{name}/trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TraceRequest {
    /// A packet description, e.g. `in_port=1,dl_dst=ff:ff:ff:ff:ff:ff`.
    #[schema(schema_with = packet)]
    pub packet: String,
}

impl Check for TraceRequest {
    fn check(&self) -> Result<(), ControlError> {
        check_len("packet", &self.packet, PACKET_MAX_LEN)
    }
}

/// What the pipeline did with the packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Trace {
    /// The trace, one step a line.
    pub trace: String,
}
