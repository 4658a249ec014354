//! Tenant networks: networks, subnets, ports, routers and security groups, stored as records,
//! held in memory as one [`Topology`], compiled to the node's integration switch by the
//! incremental compiler of `strata-vpc`.
//!
//! # Invariants
//! - One mutex ([`Vpc`]) serializes every network change on this node: validate against the
//!   topology, write the store (counted objects through the tenant's quota transaction), then
//!   change the topology and apply the compiler's delta to the switch. A refusal changes
//!   nothing; a store failure leaves the topology and the switch as they were (a port's TAP,
//!   opened before the store write so that a device that cannot be opened refuses the port, is
//!   closed again).
//! - The switch holds exactly the compiled flows of the topology: at start the topology is
//!   read from the store and compiled whole into a new switch; afterwards only deltas.
//! - Network names are unique per tenant; subnet, port and router names per network; group
//!   names per tenant. VNIs are unique in the store, zones and subnet keys too.
//! - A network is deleted only when it has no subnets, ports or routers; a subnet only when no
//!   port or router uses it; a group only when no port uses it and no other group's rule names
//!   it.
//! - Every port has at least one security group: a port created without any gets the
//!   tenant's `default` group (made on first use, as Neutron's: all egress, and ingress from
//!   the group's own members).
//! - Ports of an external network are not filtered; a floating IP maps to at most one port and
//!   a port has at most one; a port's guarantee is a share of its network's cap.
//!
//! # Files
//! - `mod.rs`: the state ([`Vpc`]), the switch and how deltas reach it, lookups, addresses.
//! - `topology.rs`: networks, subnets, routers. `ports.rs`: ports. `groups.rs`: security
//!   groups and rules. `outside.rs`: router legs (SNAT) and floating IPs. `bandwidth.rs`: caps
//!   and guarantees. `balancers.rs`: load balancers, their monitor port and health. `trace.rs`: the tenant-terms trace. `figures.rs`: stats, `/metrics`,
//!   flows, recounts.

mod balancers;
mod bandwidth;
mod figures;
mod groups;
mod mesh;
mod outside;
mod ports;
mod topology;
mod trace;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_dataplane::{Dataplane, DataplaneConfig, PortSpec};
use strata_state::Txn;
use strata_vpc::ipam::{self, IpamError};
use strata_vpc::model::fmt_mac;
use strata_vpc::{
    Change, Compiler, Delta, Direction, FloatingIp, Network, Port, Protocol, Remote, Router,
    RouterGateway, RuleSpec, SecurityGroup, SgRule, Subnet, Topology,
};

pub use balancers::{
    health_check, monitor_namespace, LbProbeSet, MonitorSpec, NewBackend, NewBalancer, NewListener,
    MONITOR_PORT,
};

use super::auth::Principal;
use super::store::*;
use super::tenants::{charge, Charge};
use super::{Controller, DEFAULT_TENANT};
use crate::error::{ControlError, InUse, Resource};
use crate::model::Role;

/// First VNI handed to a network (below it: the range admins use on hand-made switches).
pub const VNI_FIRST: u32 = 10_000;
/// Last VNI (24 bits).
pub const VNI_LAST: u32 = (1 << 24) - 1;
/// Name of the group a port gets when it names none.
pub const DEFAULT_GROUP: &str = "default";

/// The node's tenant-network state: the topology, its compiler, and the switch.
#[derive(Default)]
pub struct Vpc {
    inner: Mutex<VpcState>,
}

impl std::fmt::Debug for Vpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vpc").finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(in crate::controller) struct VpcState {
    topo: Topology,
    compiler: Compiler,
    dp: Option<Dataplane>,
    /// Load-balancer backends the health checks took out (re-marked after a group is set).
    lb_down: BTreeSet<strata_vpc::health::Target>,
    /// Tunnels to the other nodes of this node's networks: node to (switch port, its address)
    /// (`mesh.rs`).
    tunnels: std::collections::BTreeMap<String, (u32, Ipv4Addr)>,
    /// The store revision the topology was last brought up to (`mesh.rs`).
    synced: u64,
}

fn ipam_err(field: &'static str, e: IpamError) -> ControlError {
    match e {
        IpamError::InUse(_) | IpamError::Exhausted(_) | IpamError::Overlaps(..) => {
            ControlError::InUse {
                what: InUse::AddressInUse,
                message: e.to_string(),
            }
        }
        _ => conflict(format!("{field}: {e}")),
    }
}

/// Fields that contradict each other or the objects they name: a 409 (the schema cannot say
/// it), never a 400 for a body the document accepts.
fn conflict(message: impl Into<String>) -> ControlError {
    ControlError::InUse {
        what: InUse::NetworkSpecConflict,
        message: message.into(),
    }
}

fn dp_err(e: strata_dataplane::DataplaneError) -> ControlError {
    ControlError::internal(format!("integration switch: {e}"))
}

fn key(kind: &str, id: &str) -> String {
    format!("/vpc/{kind}/{id}")
}
fn name_key(kind: &str, scope: &str, name: &str) -> String {
    format!("/vpc-names/{kind}/{scope}/{name}")
}

/// What `create_subnet` is asked.
#[derive(Debug, Clone)]
pub struct NewSubnet {
    /// Name.
    pub name: String,
    /// Range.
    pub cidr: Ipv4Net,
    /// Gateway (default: the first host).
    pub gateway: Option<Ipv4Addr>,
    /// DHCP on.
    pub dhcp: bool,
    /// DNS servers handed out.
    pub dns: Vec<Ipv4Addr>,
}

/// What `create_port` is asked.
#[derive(Debug, Clone)]
pub struct NewPort {
    /// Name.
    pub name: String,
    /// Subnet (id or name).
    pub subnet: String,
    /// Address (default: the lowest free).
    pub ip: Option<Ipv4Addr>,
    /// MAC (default: allocated).
    pub mac: Option<String>,
    /// Security groups (ids or names; default: the tenant's `default`).
    pub security_groups: Option<Vec<String>>,
    /// The device: a TAP (None) or a veth pair whose peer has this name (`Some("")`: the
    /// device's name + "p").
    pub veth_peer: Option<String>,
    /// The node whose switch gets the port's device (None: this node). Another node only on
    /// a store shared by nodes; that node's agent opens the device.
    pub node: Option<String>,
}

/// What `trace_network_port` traces.
#[derive(Debug, Clone)]
pub struct TraceFrom {
    /// Destination address.
    pub to: Ipv4Addr,
    /// Protocol (any: an ICMP echo).
    pub protocol: Protocol,
    /// Destination port (tcp 80, udp 53 by default).
    pub port: Option<u16>,
    /// The state conntrack steps give (`+new`, `+est`...).
    pub ct_state: Option<String>,
}

/// One line of a tenant-terms trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Table.
    pub table: u8,
    /// What the rule stands for.
    pub what: String,
}

/// A packet's way through the tenant's network, in its terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkTrace {
    /// The packet traced.
    pub packet: String,
    /// Each rule it met.
    pub steps: Vec<TraceLine>,
    /// Where it ends.
    pub verdict: String,
    /// Ports it reaches.
    pub delivered_to: Vec<String>,
}

/// One port's figures (or a network's sums).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortFigures {
    /// Port name (empty for sums).
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
    /// Bits per second in, over the last second.
    pub rx_bps_1s: u64,
    /// Bits per second in, over the last 10 seconds.
    pub rx_bps_10s: u64,
    /// Bits per second out, over the last second.
    pub tx_bps_1s: u64,
    /// Bits per second out, over the last 10 seconds.
    pub tx_bps_10s: u64,
    /// Drops by reason (the input port's reasons for what it sent, the output's for what it
    /// was sent).
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Round trips from the switch to the port's endpoint in the TCP handshakes it took part
    /// in (conntrack, passive), since the port was bound.
    pub handshake_rtt: strata_net::latency::RttHistogram,
    /// The switch's probes to the port's endpoint and their answers (active).
    pub probes: strata_net::probe::ProbeStats,
}

/// One port's answer to `probe_network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortProbe {
    /// Port name.
    pub port: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Probes sent.
    pub sent: u64,
    /// Answers taken.
    pub answered: u64,
    /// Their round trips.
    pub rtt: strata_net::latency::RttHistogram,
}

/// A network's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStats {
    /// Network name.
    pub network: String,
    /// Per port.
    pub ports: Vec<PortFigures>,
    /// Sums over its ports.
    pub total: PortFigures,
}

/// A rule as asked for.
#[derive(Debug, Clone)]
pub struct NewRule {
    /// Direction.
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// Port range.
    pub ports: Option<(u16, u16)>,
    /// Remote CIDR.
    pub remote_cidr: Option<Ipv4Net>,
    /// Remote group (id or name).
    pub remote_group: Option<String>,
}

impl Controller {
    fn vpc_put<T: Serialize>(txn: Txn, kind: &str, id: &str, v: &T) -> Txn {
        txn.put(key(kind, id), enc(v))
    }

    fn vpc_all<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, ControlError> {
        Ok(self
            .list::<T>(&format!("/vpc/{kind}/"), None, 0)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Reads every network record into `topo` (its objects; no bindings).
    fn read_topology(&self, topo: &mut Topology) -> Result<(), ControlError> {
        for n in self.vpc_all::<Network>("networks")? {
            topo.networks.insert(n.id.clone(), n);
        }
        for s in self.vpc_all::<Subnet>("subnets")? {
            topo.subnets.insert(s.id.clone(), s);
        }
        for p in self.vpc_all::<Port>("ports")? {
            topo.ports.insert(p.id.clone(), p);
        }
        for r in self.vpc_all::<Router>("routers")? {
            topo.routers.insert(r.id.clone(), r);
        }
        for g in self.vpc_all::<SecurityGroup>("groups")? {
            topo.groups.insert(g.id.clone(), g);
        }
        for f in self.vpc_all::<FloatingIp>("floating-ips")? {
            topo.floating_ips.insert(f.id.clone(), f);
        }
        for l in self.vpc_all::<strata_vpc::LoadBalancer>("load-balancers")? {
            topo.load_balancers.insert(l.id.clone(), l);
        }
        Ok(())
    }

    /// Reads the topology from the store and compiles it whole onto a new switch (at start):
    /// this node's ports get their devices, other nodes' ports the tunnels to their nodes
    /// (`mesh.rs`).
    pub(in crate::controller) fn restore_networks(&self) -> Result<(), ControlError> {
        let mut st = self.vpc.inner.lock();
        let rev = self.store.revision()?;
        let mut topo = Topology::default();
        self.read_topology(&mut topo)?;
        st.topo = topo;
        st.synced = rev;
        if st.topo.ports.is_empty() {
            return Ok(());
        }
        let ports: Vec<Port> = st.topo.ports.values().cloned().collect();
        for p in ports {
            match self.bind_port(&mut st, &p) {
                Ok(_) => {}
                Err(e) => tracing::error!(port = %p.name, %e, "cannot open the port's device"),
            }
        }
        let VpcState {
            topo, compiler, dp, ..
        } = &mut *st;
        let delta = compiler.full(topo);
        if let Some(dp) = dp {
            Self::apply_delta(dp, delta)?;
        }
        Ok(())
    }

    fn dataplane(st: &mut VpcState) -> Result<&Dataplane, ControlError> {
        if st.dp.is_none() {
            let dp = Dataplane::spawn(DataplaneConfig::default()).map_err(dp_err)?;
            // A new switch has no flows: the whole topology goes on it.
            let mut fresh = Compiler::new();
            let delta = fresh.full(&st.topo);
            Self::apply_delta(&dp, delta)?;
            st.compiler = fresh;
            st.dp = Some(dp);
        }
        Ok(st.dp.as_ref().expect("just set"))
    }

    /// Opens a port's device on the integration switch: its TAP, or its veth pair (made
    /// here; a pair left by a daemon that died is deleted and made again, so its peer comes
    /// back in this namespace: a container it was moved into has to be given it again).
    fn open_device(st: &mut VpcState, port: &Port) -> Result<u32, ControlError> {
        let dp = Self::dataplane(st)?;
        let spec = match &port.veth_peer {
            None => PortSpec::Tap {
                name: port.device.clone(),
                domain: None,
                offload: true,
            },
            Some(peer) => PortSpec::Veth {
                name: port.device.clone(),
                peer: Some(peer.clone()),
                domain: None,
                vnet_hdr: true,
            },
        };
        let mut r = dp.add_port(spec.clone());
        if let (Err(strata_dataplane::DataplaneError::DeviceExists(_)), Some(_)) =
            (&r, &port.veth_peer)
        {
            if strata_dataplane::sys::delete_link(&port.device).is_ok() {
                tracing::warn!(port = %port.name, device = %port.device, "a stale veth pair was deleted and made again");
                r = dp.add_port(spec);
            }
        }
        r.map_err(|e| match e {
            strata_dataplane::DataplaneError::DeviceExists(n) => ControlError::InUse {
                what: InUse::AddressInUse,
                message: format!("interface name {n} is taken on this node"),
            },
            e => ControlError::internal(format!("opening the port's device: {e}")),
        })
    }

    fn apply_delta(dp: &Dataplane, delta: Delta) -> Result<(), ControlError> {
        if delta.is_empty() {
            return Ok(());
        }
        let r = dp
            .with_switch(move |sw, now| -> Result<(), String> {
                // Links, meters and lb groups first, so no flow ever names a missing one;
                // removals last.
                balancers::set_groups(sw, &delta);
                for (id, c) in &delta.set_links {
                    sw.set_link(*id, *c)
                        .map_err(|e| format!("link {id}: {e}"))?;
                }
                for (id, m) in &delta.set_meters {
                    let mut cfg = strata_net::meter::MeterConfig::cap(m.rate_bps);
                    if let Some((min, link)) = m.min {
                        cfg = cfg.with_guarantee(min, link);
                    }
                    sw.set_meter(*id, cfg)
                        .map_err(|e| format!("meter {id}: {e}"))?;
                }
                for f in &delta.add {
                    sw.add_flow(now, f).map_err(|e| format!("{f}: {e}"))?;
                }
                for f in &delta.remove {
                    sw.del_flows(f, true).map_err(|e| format!("{f}: {e}"))?;
                }
                for id in &delta.remove_meters {
                    sw.remove_meter(*id);
                }
                for id in &delta.remove_links {
                    sw.remove_link(*id).map_err(|e| format!("link {id}: {e}"))?;
                }
                balancers::remove_groups(sw, &delta);
                Ok(())
            })
            .map_err(dp_err)?;
        // A compiled flow the engine refuses is a compiler bug, not the caller's.
        r.map_err(|e| ControlError::internal(format!("compiled flow refused: {e}")))
    }

    /// Applies `changes` (the topology already updated) to the switch.
    fn recompile(st: &mut VpcState, changes: &[Change]) -> Result<(), ControlError> {
        let VpcState {
            topo,
            compiler,
            dp,
            lb_down,
            ..
        } = st;
        let delta = compiler.changed(topo, changes);
        let regrouped = balancers::regrouped(&delta, lb_down);
        match dp {
            Some(dp) => {
                Self::apply_delta(dp, delta)?;
                balancers::remark_down(dp, regrouped)
            }
            None => Ok(()),
        }
    }

    fn creating_tenant(&self, p: &Principal, tenant: Option<&str>) -> Result<String, ControlError> {
        Self::require(p, Role::Member)?;
        let requested = match (p.role, tenant) {
            (Role::Admin, None) => Some(DEFAULT_TENANT),
            (_, t) => t,
        };
        let t = self.acting_tenant(p, requested)?;
        self.visible_tenant(p, &t)?;
        Ok(t)
    }

    fn sees(p: &Principal, tenant: &str) -> bool {
        p.role == Role::Admin || p.tenant.as_deref() == Some(tenant)
    }

    fn find_network<'a>(
        st: &'a VpcState,
        p: &Principal,
        id: &str,
    ) -> Result<&'a Network, ControlError> {
        lookup(&st.topo.networks, p, None, id, |_| true, Resource::Network)
    }

    /// A subnet by id, or by name within `net` if given.
    fn find_subnet<'a>(
        st: &'a VpcState,
        p: &Principal,
        net: Option<&str>,
        id: &str,
    ) -> Result<&'a Subnet, ControlError> {
        let in_net = |s: &Subnet| net.is_none_or(|n| n == s.network);
        lookup(&st.topo.subnets, p, None, id, in_net, Resource::Subnet)
    }

    fn find_port<'a>(st: &'a VpcState, p: &Principal, id: &str) -> Result<&'a Port, ControlError> {
        lookup(&st.topo.ports, p, None, id, |_| true, Resource::NetworkPort)
    }

    fn find_router<'a>(
        st: &'a VpcState,
        p: &Principal,
        id: &str,
    ) -> Result<&'a Router, ControlError> {
        lookup(&st.topo.routers, p, None, id, |_| true, Resource::Router)
    }

    /// A group of `tenant` named by a rule or a port. One the caller sees in another tenant
    /// is a contradiction of the request (409), not an absence: only its own tenant's groups
    /// may be named.
    fn tenant_group(
        st: &VpcState,
        p: &Principal,
        tenant: &str,
        id: &str,
    ) -> Result<String, ControlError> {
        match Self::find_group(st, p, Some(tenant), id) {
            Ok(g) => Ok(g.id.clone()),
            Err(e) => match Self::find_group(st, p, None, id) {
                Ok(g) => Err(conflict(format!(
                    "security group {} is tenant {}'s; name one of tenant {tenant}",
                    g.name, g.tenant
                ))),
                Err(_) => Err(e),
            },
        }
    }

    /// A group by id or name, of `tenant` if given (rules and ports name their own tenant's).
    fn find_group<'a>(
        st: &'a VpcState,
        p: &Principal,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<&'a SecurityGroup, ControlError> {
        lookup(
            &st.topo.groups,
            p,
            tenant,
            id,
            |_| true,
            Resource::SecurityGroup,
        )
    }
}

impl Controller {
    /// The checks of a tenant-scoped list: a reader's call, and the tenant asked for (if any)
    /// visible to the caller (an unknown one is `tenant_not_found`, not an empty list).
    fn tenant_scope(&self, p: &Principal, tenant: Option<&str>) -> Result<(), ControlError> {
        Self::require(p, Role::Reader)?;
        if let Some(t) = tenant {
            self.visible_tenant(p, t)?;
        }
        Ok(())
    }
}

/// The objects the caller sees, of `tenant` if given.
fn seen<'a, T: Clone + 'a>(
    p: &Principal,
    tenant: Option<&str>,
    items: impl Iterator<Item = &'a T>,
    tenant_of: impl Fn(&T) -> &String,
) -> Vec<T> {
    items
        .filter(|x| {
            let own = tenant_of(x);
            Controller::sees(p, own) && tenant.is_none_or(|t| t == own)
        })
        .cloned()
        .collect()
}

/// The objects of network `id` (the network was looked up, so the caller sees them all).
fn of_network<'a, T: Clone + 'a>(
    id: &str,
    items: impl Iterator<Item = &'a T>,
    network_of: impl Fn(&T) -> &String,
) -> Vec<T> {
    items.filter(|x| network_of(x) == id).cloned().collect()
}

/// A network object as stored: its key kind, its table in the topology and the change that
/// recompiles it. [`Controller::update_record`] is the one way an existing object changes.
trait Record: Serialize + Clone {
    /// The key kind under `vpc/` (`networks`, `ports`, ...).
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn bump(&mut self);
    fn table(topo: &mut Topology) -> &mut std::collections::BTreeMap<String, Self>;
    fn change(id: String) -> Change;
}

macro_rules! record {
    ($($t:ty, $kind:literal, $table:ident, $change:ident);* $(;)?) => {$(
        impl Record for $t {
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn bump(&mut self) {
                self.generation += 1;
            }
            fn table(topo: &mut Topology) -> &mut std::collections::BTreeMap<String, Self> {
                &mut topo.$table
            }
            fn change(id: String) -> Change {
                Change::$change(id)
            }
        }
    )*};
}
record!(
    Network, "networks", networks, Network;
    Port, "ports", ports, Port;
    Router, "routers", routers, Router;
    SecurityGroup, "groups", groups, Group;
    FloatingIp, "floating-ips", floating_ips, FloatingIp;
    strata_vpc::LoadBalancer, "load-balancers", load_balancers, LoadBalancer;
);

impl Controller {
    /// Stores a changed object under a new generation, puts it in the topology and applies
    /// the flows it changes: the tail every update shares (under the caller's lock).
    fn update_record<T: Record>(&self, st: &mut VpcState, mut x: T) -> Result<T, ControlError> {
        x.bump();
        self.commit_vpc(Self::vpc_put(Txn::new(), T::KIND, x.id(), &x))?;
        let id = x.id().to_string();
        T::table(&mut st.topo).insert(id.clone(), x.clone());
        Self::recompile(st, &[T::change(id)])?;
        Ok(x)
    }
}

/// What every named tenant object has.
trait Owned {
    fn tenant(&self) -> &str;
    fn name(&self) -> &str;
}

macro_rules! owned {
    ($($t:ty),*) => {$(
        impl Owned for $t {
            fn tenant(&self) -> &str {
                &self.tenant
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
owned!(
    Network,
    Subnet,
    Port,
    Router,
    SecurityGroup,
    strata_vpc::LoadBalancer
);

/// An object by id, or by name (among those `also` admits) within `tenant` or else the
/// caller's tenant; one the caller may not see is not found, exactly as one that is absent.
fn lookup<'a, T: Owned>(
    map: &'a std::collections::BTreeMap<String, T>,
    p: &Principal,
    tenant: Option<&str>,
    id: &str,
    also: impl Fn(&T) -> bool,
    resource: Resource,
) -> Result<&'a T, ControlError> {
    let scope = tenant.or(p.tenant.as_deref());
    map.get(id)
        .or_else(|| {
            map.values()
                .find(|x| x.name() == id && also(x) && scope.is_none_or(|own| own == x.tenant()))
        })
        .filter(|x| Controller::sees(p, x.tenant()) && tenant.is_none_or(|t| t == x.tenant()))
        .ok_or_else(|| ControlError::not_found(resource, id))
}
