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
struct VpcState {
    topo: Topology,
    compiler: Compiler,
    dp: Option<Dataplane>,
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

    /// Reads the topology from the store and compiles it whole onto a new switch (at start).
    pub(super) fn restore_networks(&self) -> Result<(), ControlError> {
        let mut st = self.vpc.inner.lock();
        let mut topo = Topology::default();
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
        st.topo = topo;
        if st.topo.ports.is_empty() {
            return Ok(());
        }
        let ports: Vec<Port> = st.topo.ports.values().cloned().collect();
        for p in ports {
            match Self::open_device(&mut st, &p.device) {
                Ok(of) => {
                    st.topo.bound.insert(p.id.clone(), of);
                }
                Err(e) => tracing::error!(port = %p.name, %e, "cannot open the port's device"),
            }
        }
        let VpcState { topo, compiler, dp } = &mut *st;
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

    fn open_device(st: &mut VpcState, device: &str) -> Result<u32, ControlError> {
        let dp = Self::dataplane(st)?;
        let no = dp
            .add_port(PortSpec::Tap {
                name: device.to_string(),
                domain: None,
                offload: true,
            })
            .map_err(|e| ControlError::internal(format!("opening the port's device: {e}")))?;
        Ok(no)
    }

    fn apply_delta(dp: &Dataplane, delta: Delta) -> Result<(), ControlError> {
        if delta.is_empty() {
            return Ok(());
        }
        let r = dp
            .with_switch(move |sw, now| -> Result<(), String> {
                // Links and meters first, so no flow ever names a missing one; removals last.
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
                Ok(())
            })
            .map_err(dp_err)?;
        // A compiled flow the engine refuses is a compiler bug, not the caller's.
        r.map_err(|e| ControlError::internal(format!("compiled flow refused: {e}")))
    }

    /// Applies `changes` (the topology already updated) to the switch.
    fn recompile(st: &mut VpcState, changes: &[Change]) -> Result<(), ControlError> {
        let VpcState { topo, compiler, dp } = st;
        let delta = compiler.changed(topo, changes);
        match dp {
            Some(dp) => Self::apply_delta(dp, delta),
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
        let t = &st.topo;
        t.networks
            .get(id)
            .or_else(|| {
                t.networks
                    .values()
                    .find(|n| n.name == id && p.tenant.as_deref().is_none_or(|own| own == n.tenant))
            })
            .filter(|n| Self::sees(p, &n.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::Network, id))
    }

    fn find_subnet<'a>(
        st: &'a VpcState,
        p: &Principal,
        net: Option<&str>,
        id: &str,
    ) -> Result<&'a Subnet, ControlError> {
        st.topo
            .subnets
            .get(id)
            .or_else(|| {
                st.topo.subnets.values().find(|s| {
                    s.name == id
                        && net.is_none_or(|n| n == s.network)
                        && p.tenant.as_deref().is_none_or(|own| own == s.tenant)
                })
            })
            .filter(|s| Self::sees(p, &s.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::Subnet, id))
    }

    fn find_port<'a>(st: &'a VpcState, p: &Principal, id: &str) -> Result<&'a Port, ControlError> {
        st.topo
            .ports
            .get(id)
            .or_else(|| {
                st.topo
                    .ports
                    .values()
                    .find(|x| x.name == id && p.tenant.as_deref().is_none_or(|own| own == x.tenant))
            })
            .filter(|x| Self::sees(p, &x.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::NetworkPort, id))
    }

    fn find_router<'a>(
        st: &'a VpcState,
        p: &Principal,
        id: &str,
    ) -> Result<&'a Router, ControlError> {
        st.topo
            .routers
            .get(id)
            .or_else(|| {
                st.topo
                    .routers
                    .values()
                    .find(|x| x.name == id && p.tenant.as_deref().is_none_or(|own| own == x.tenant))
            })
            .filter(|x| Self::sees(p, &x.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::Router, id))
    }

    fn find_group<'a>(
        st: &'a VpcState,
        p: &Principal,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<&'a SecurityGroup, ControlError> {
        st.topo
            .groups
            .get(id)
            .or_else(|| {
                st.topo.groups.values().find(|g| {
                    g.name == id
                        && tenant
                            .or(p.tenant.as_deref())
                            .is_none_or(|own| own == g.tenant)
                })
            })
            .filter(|g| Self::sees(p, &g.tenant) && tenant.is_none_or(|t| t == g.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::SecurityGroup, id))
    }

    // ----- networks -----

    /// Creates a network (a VPC): its range, a VNI and a conntrack zone.
    pub fn create_network(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
        cidr: Ipv4Net,
        external: bool,
    ) -> Result<Network, ControlError> {
        if external {
            Self::require(p, Role::Admin)?;
        }
        let tenant = self.creating_tenant(p, tenant)?;
        validate_name("name", name)?;
        // `10.0.0.1/16` names `10.0.0.0/16`: host bits are cleared.
        let cidr = cidr.trunc();
        ipam::check_network(cidr).map_err(|e| ipam_err("cidr", e))?;
        let mut st = self.vpc.inner.lock();
        if st
            .topo
            .networks
            .values()
            .any(|n| n.tenant == tenant && n.name == name)
        {
            return Err(ControlError::exists(Resource::Network, name));
        }
        let vnis: BTreeSet<u32> = st.topo.networks.values().map(|n| n.vni).collect();
        let zones = Self::zones(&st.topo);
        let vni =
            ipam::lowest_free(&vnis, VNI_FIRST, VNI_LAST).ok_or_else(|| ControlError::InUse {
                what: InUse::AddressInUse,
                message: "no VNI is free".into(),
            })?;
        let zone = ipam::lowest_free(&zones, 1, u32::from(u16::MAX)).ok_or_else(|| {
            ControlError::InUse {
                what: InUse::AddressInUse,
                message: "no conntrack zone is free".into(),
            }
        })? as u16;
        let n = Network {
            id: new_id(),
            tenant: tenant.clone(),
            name: name.to_string(),
            cidr,
            vni,
            zone,
            external,
            cap_bps: None,
            created: now(),
            generation: 1,
        };
        self.with_tenant(&tenant, |t| {
            charge(
                t,
                Charge::default(),
                Charge {
                    networks: 1,
                    ..Charge::default()
                },
            )?;
            let nk = name_key("network", &tenant, name);
            let txn = Txn::new().when(nk.clone(), 0).put(nk, enc(&n.id));
            Ok((Self::vpc_put(txn, "networks", &n.id, &n), ()))
        })?;
        st.topo.networks.insert(n.id.clone(), n.clone());
        Self::recompile(&mut st, &[Change::Network(n.id.clone())])?;
        Ok(n)
    }

    /// Networks the caller sees (an admin: all, or one tenant's).
    pub fn list_networks(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<Network>, ControlError> {
        Self::require(p, Role::Reader)?;
        if let Some(t) = tenant {
            self.visible_tenant(p, t)?;
        }
        let st = self.vpc.inner.lock();
        Ok(st
            .topo
            .networks
            .values()
            .filter(|n| Self::sees(p, &n.tenant) && tenant.is_none_or(|t| t == n.tenant))
            .cloned()
            .collect())
    }

    /// A network by id or name.
    pub fn get_network(&self, p: &Principal, id: &str) -> Result<Network, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        Self::find_network(&st, p, id).cloned()
    }

    /// Deletes an empty network.
    pub fn delete_network(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, id)?.clone();
        let t = &st.topo;
        if t.subnets.values().any(|s| s.network == n.id)
            || t.routers.values().any(|r| r.network == n.id)
            || t.ports.values().any(|x| x.network == n.id)
        {
            return Err(ControlError::InUse {
                what: InUse::NetworkNotEmpty,
                message: format!("network {} still has subnets, ports or routers", n.name),
            });
        }
        self.with_tenant(&n.tenant, |t| {
            charge(
                t,
                Charge {
                    networks: 1,
                    ..Charge::default()
                },
                Charge::default(),
            )?;
            Ok((
                Txn::new()
                    .delete(key("networks", &n.id))
                    .delete(name_key("network", &n.tenant, &n.name)),
                (),
            ))
        })?;
        st.topo.networks.remove(&n.id);
        Self::recompile(&mut st, &[Change::Network(n.id)])
    }

    // ----- subnets -----

    /// Creates a subnet of a network.
    pub fn create_subnet(
        &self,
        p: &Principal,
        network: &str,
        req: NewSubnet,
    ) -> Result<Subnet, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        let mut st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?.clone();
        let t = &st.topo;
        if t.subnets
            .values()
            .any(|s| s.network == n.id && s.name == req.name)
        {
            return Err(ControlError::exists(Resource::Subnet, &req.name));
        }
        let others: Vec<Ipv4Net> = t
            .subnets
            .values()
            .filter(|s| s.network == n.id)
            .map(|s| s.cidr)
            .collect();
        let req = NewSubnet {
            cidr: req.cidr.trunc(),
            ..req
        };
        ipam::check_subnet(n.cidr, &others, req.cidr).map_err(|e| ipam_err("cidr", e))?;
        let gateway = req
            .gateway
            .unwrap_or_else(|| ipam::default_gateway(req.cidr));
        ipam::check_host(req.cidr, gateway).map_err(|e| ipam_err("gateway", e))?;
        let keys: BTreeSet<u32> = t.subnets.values().map(|s| s.key).collect();
        let macs = Self::macs(t);
        let id = new_id();
        let s = Subnet {
            id: id.clone(),
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            name: req.name.clone(),
            cidr: req.cidr,
            gateway,
            gateway_mac: ipam::allocate_mac(ipam::fnv(&id), &macs),
            dhcp: req.dhcp,
            dns: req.dns,
            key: ipam::lowest_free(&keys, 1, u32::MAX).unwrap_or(u32::MAX),
            created: now(),
            generation: 1,
        };
        let nk = name_key("subnet", &n.id, &s.name);
        let txn = Self::vpc_put(
            Txn::new().when(nk.clone(), 0).put(nk, enc(&s.id)),
            "subnets",
            &s.id,
            &s,
        );
        self.commit_vpc(txn)?;
        st.topo.subnets.insert(s.id.clone(), s.clone());
        Self::recompile(&mut st, &[Change::Subnet(s.id.clone())])?;
        Ok(s)
    }

    fn commit_vpc(&self, txn: Txn) -> Result<(), ControlError> {
        if self.store.txn(txn)?.succeeded {
            Ok(())
        } else {
            Err(ControlError::Busy(
                "the network state was changed by another writer; retry".into(),
            ))
        }
    }
    /// Conntrack zones in use: networks' and routers' NAT.
    fn zones(t: &Topology) -> BTreeSet<u32> {
        t.networks
            .values()
            .map(|n| u32::from(n.zone))
            .chain(
                t.routers
                    .values()
                    .filter_map(|r| r.gateway.as_ref().map(|g| u32::from(g.zone))),
            )
            .collect()
    }

    /// Addresses of a subnet in use: ports, router legs and floating IPs.
    fn used_ips(t: &Topology, subnet: &str) -> BTreeSet<Ipv4Addr> {
        t.ports
            .values()
            .filter(|x| x.subnet == subnet)
            .map(|x| x.ip)
            .chain(t.routers.values().filter_map(|r| {
                r.gateway
                    .as_ref()
                    .filter(|g| g.subnet == subnet)
                    .map(|g| g.ip)
            }))
            .chain(
                t.floating_ips
                    .values()
                    .filter(|f| f.subnet == subnet)
                    .map(|f| f.ip),
            )
            .collect()
    }

    fn macs(t: &Topology) -> BTreeSet<[u8; 6]> {
        t.ports
            .values()
            .map(|p| p.mac)
            .chain(t.subnets.values().map(|s| s.gateway_mac))
            .chain(
                t.routers
                    .values()
                    .filter_map(|r| r.gateway.as_ref().map(|g| g.mac)),
            )
            .collect()
    }

    /// Subnets of a network.
    pub fn list_subnets(&self, p: &Principal, network: &str) -> Result<Vec<Subnet>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(st
            .topo
            .subnets
            .values()
            .filter(|s| s.network == n.id)
            .cloned()
            .collect())
    }

    /// A subnet by id (or name within the caller's tenant).
    pub fn get_subnet(&self, p: &Principal, id: &str) -> Result<Subnet, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        Self::find_subnet(&st, p, None, id).cloned()
    }

    /// Deletes a subnet no port or router uses.
    pub fn delete_subnet(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let s = Self::find_subnet(&st, p, None, id)?.clone();
        if st.topo.ports.values().any(|x| x.subnet == s.id)
            || st.topo.routers.values().any(|r| {
                r.subnets.contains(&s.id) || r.gateway.as_ref().is_some_and(|g| g.subnet == s.id)
            })
            || st.topo.floating_ips.values().any(|f| f.subnet == s.id)
        {
            return Err(ControlError::InUse {
                what: InUse::NetworkNotEmpty,
                message: format!("subnet {} still has ports or a router", s.name),
            });
        }
        self.commit_vpc(
            Txn::new()
                .delete(key("subnets", &s.id))
                .delete(name_key("subnet", &s.network, &s.name)),
        )?;
        st.topo.subnets.remove(&s.id);
        Self::recompile(&mut st, &[Change::Subnet(s.id)])
    }

    // ----- security groups -----

    fn group_record(
        tenant: &str,
        name: &str,
        reevaluate: bool,
        specs: Vec<RuleSpec>,
    ) -> SecurityGroup {
        SecurityGroup {
            id: new_id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            rules: specs
                .into_iter()
                .enumerate()
                .map(|(i, spec)| SgRule {
                    id: format!("r{}", i + 1),
                    spec,
                })
                .collect(),
            reevaluate_existing: reevaluate,
            created: now(),
            generation: 1,
        }
    }

    /// Creates a security group with Neutron's starting rules (all egress).
    pub fn create_security_group(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: &str,
        reevaluate_existing: bool,
    ) -> Result<SecurityGroup, ControlError> {
        let tenant = self.creating_tenant(p, tenant)?;
        validate_name("name", name)?;
        let mut st = self.vpc.inner.lock();
        if st
            .topo
            .groups
            .values()
            .any(|g| g.tenant == tenant && g.name == name)
        {
            return Err(ControlError::exists(Resource::SecurityGroup, name));
        }
        let g = Self::group_record(
            &tenant,
            name,
            reevaluate_existing,
            SecurityGroup::default_rules(),
        );
        self.store_group(&g, true)?;
        st.topo.groups.insert(g.id.clone(), g.clone());
        Self::recompile(&mut st, &[Change::Group(g.id.clone())])?;
        Ok(g)
    }

    fn store_group(&self, g: &SecurityGroup, new: bool) -> Result<(), ControlError> {
        let mut txn = Txn::new();
        if new {
            let nk = name_key("group", &g.tenant, &g.name);
            txn = txn.when(nk.clone(), 0).put(nk, enc(&g.id));
        }
        self.commit_vpc(Self::vpc_put(txn, "groups", &g.id, g))
    }

    /// The tenant's `default` group, made on first use.
    fn default_group(&self, st: &mut VpcState, tenant: &str) -> Result<String, ControlError> {
        if let Some(g) = st
            .topo
            .groups
            .values()
            .find(|g| g.tenant == tenant && g.name == DEFAULT_GROUP)
        {
            return Ok(g.id.clone());
        }
        let mut g =
            Self::group_record(tenant, DEFAULT_GROUP, false, SecurityGroup::default_rules());
        g.rules.push(SgRule {
            id: format!("r{}", g.rules.len() + 1),
            spec: RuleSpec {
                direction: Direction::Ingress,
                protocol: Protocol::Any,
                ports: None,
                remote: Remote::Group(g.id.clone()),
            },
        });
        self.store_group(&g, true)?;
        let id = g.id.clone();
        st.topo.groups.insert(id.clone(), g);
        Self::recompile(st, &[Change::Group(id.clone())])?;
        Ok(id)
    }

    /// Security groups the caller sees.
    pub fn list_security_groups(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<SecurityGroup>, ControlError> {
        Self::require(p, Role::Reader)?;
        if let Some(t) = tenant {
            self.visible_tenant(p, t)?;
        }
        let st = self.vpc.inner.lock();
        Ok(st
            .topo
            .groups
            .values()
            .filter(|g| Self::sees(p, &g.tenant) && tenant.is_none_or(|t| t == g.tenant))
            .cloned()
            .collect())
    }

    /// A group by id or name.
    pub fn get_security_group(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<SecurityGroup, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        Self::find_group(&st, p, None, id).cloned()
    }

    /// Adds a rule; it applies to new connections at once (and to open ones if the group
    /// reevaluates them).
    pub fn add_security_group_rule(
        &self,
        p: &Principal,
        group: &str,
        req: NewRule,
    ) -> Result<SecurityGroup, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut g = Self::find_group(&st, p, None, group)?.clone();
        let remote = match (req.remote_cidr, &req.remote_group) {
            (Some(_), Some(_)) => {
                return Err(conflict(
                    "a rule names a remote CIDR or a remote group, not both",
                ))
            }
            (Some(c), None) => Remote::Cidr(c.trunc()),
            (None, Some(r)) => {
                Remote::Group(Self::find_group(&st, p, Some(&g.tenant), r)?.id.clone())
            }
            (None, None) => Remote::Any,
        };
        if let Some((lo, hi)) = req.ports {
            if !matches!(req.protocol, Protocol::Tcp | Protocol::Udp) {
                return Err(conflict("ports apply to tcp and udp only"));
            }
            if lo > hi || lo == 0 {
                return Err(conflict("1 <= port_min <= port_max"));
            }
        }
        let spec = RuleSpec {
            direction: req.direction,
            protocol: req.protocol,
            ports: req.ports,
            remote,
        };
        if g.rules.iter().any(|r| r.spec == spec) {
            return Ok(g);
        }
        let next = g
            .rules
            .iter()
            .filter_map(|r| r.id.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0)
            + 1;
        g.rules.push(SgRule {
            id: format!("r{next}"),
            spec,
        });
        g.generation += 1;
        self.store_group(&g, false)?;
        let id = g.id.clone();
        st.topo.groups.insert(id.clone(), g.clone());
        Self::recompile(&mut st, &[Change::Group(id)])?;
        Ok(g)
    }

    /// Removes a rule.
    pub fn delete_security_group_rule(
        &self,
        p: &Principal,
        group: &str,
        rule: &str,
    ) -> Result<SecurityGroup, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut g = Self::find_group(&st, p, None, group)?.clone();
        let before = g.rules.len();
        g.rules.retain(|r| r.id != rule);
        if g.rules.len() == before {
            return Err(ControlError::not_found(Resource::SecurityGroupRule, rule));
        }
        g.generation += 1;
        self.store_group(&g, false)?;
        let id = g.id.clone();
        st.topo.groups.insert(id.clone(), g.clone());
        Self::recompile(&mut st, &[Change::Group(id)])?;
        Ok(g)
    }

    /// Deletes a group no port uses and no other group names.
    pub fn delete_security_group(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let g = Self::find_group(&st, p, None, id)?.clone();
        let used = st
            .topo
            .ports
            .values()
            .any(|x| x.security_groups.contains(&g.id))
            || st.topo.groups.values().any(|o| {
                o.id != g.id
                    && o.rules
                        .iter()
                        .any(|r| matches!(&r.spec.remote, Remote::Group(x) if *x == g.id))
            });
        if used {
            return Err(ControlError::InUse {
                what: InUse::SecurityGroupInUse,
                message: format!(
                    "security group {} is used by ports or named by rules",
                    g.name
                ),
            });
        }
        self.commit_vpc(
            Txn::new()
                .delete(key("groups", &g.id))
                .delete(name_key("group", &g.tenant, &g.name)),
        )?;
        st.topo.groups.remove(&g.id);
        Self::recompile(&mut st, &[Change::Group(g.id)])
    }

    // ----- ports -----

    /// Creates a port on a subnet: its address and MAC, a TAP on this node, its flows.
    pub fn create_port(
        &self,
        p: &Principal,
        network: &str,
        req: NewPort,
    ) -> Result<Port, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        let mut st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?.clone();
        let s = Self::find_subnet(&st, p, Some(&n.id), &req.subnet)?.clone();
        if s.network != n.id {
            return Err(ControlError::not_found(Resource::Subnet, &req.subnet));
        }
        if st
            .topo
            .ports
            .values()
            .any(|x| x.network == n.id && x.name == req.name)
        {
            return Err(ControlError::exists(Resource::NetworkPort, &req.name));
        }
        let used = Self::used_ips(&st.topo, &s.id);
        let ip = match req.ip {
            Some(ip) => {
                ipam::check_port_ip(s.cidr, s.gateway, &used, ip).map_err(|e| ipam_err("ip", e))?;
                ip
            }
            None => ipam::allocate_ip(s.cidr, s.gateway, &used).map_err(|e| ipam_err("ip", e))?,
        };
        let macs = Self::macs(&st.topo);
        let id = new_id();
        let mac = match &req.mac {
            Some(m) => {
                let m = ipam::parse_mac(m).map_err(|e| ipam_err("mac", e))?;
                if macs.contains(&m) {
                    return Err(ControlError::InUse {
                        what: InUse::AddressInUse,
                        message: format!("MAC {} is in use", fmt_mac(&m)),
                    });
                }
                m
            }
            None => ipam::allocate_mac(ipam::fnv(&id), &macs),
        };
        let groups = match &req.security_groups {
            // The outside is not filtered (its ports stand for it).
            _ if n.external => Vec::new(),
            Some(gs) if !gs.is_empty() => {
                let mut out = Vec::new();
                for g in gs {
                    let gid = Self::find_group(&st, p, Some(&n.tenant), g)?.id.clone();
                    if !out.contains(&gid) {
                        out.push(gid);
                    }
                }
                out
            }
            _ => vec![self.default_group(&mut st, &n.tenant)?],
        };
        let port = Port {
            device: format!("sp{:08x}", ipam::fnv(&id) as u32),
            id,
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            subnet: s.id.clone(),
            name: req.name.clone(),
            mac,
            ip,
            security_groups: groups,
            cap_bps: None,
            min_bps: None,
            created: now(),
            generation: 1,
        };
        // The device first: one that cannot be opened refuses the port.
        let of = Self::open_device(&mut st, &port.device)?;
        let stored = self.with_tenant(&n.tenant, |t| {
            charge(
                t,
                Charge::default(),
                Charge {
                    ports: 1,
                    ..Charge::default()
                },
            )?;
            let nk = name_key("port", &n.id, &port.name);
            let txn = Txn::new().when(nk.clone(), 0).put(nk, enc(&port.id));
            Ok((Self::vpc_put(txn, "ports", &port.id, &port), ()))
        });
        if let Err(e) = stored {
            if let Some(dp) = &st.dp {
                let _ = dp.remove_port(&port.device);
            }
            return Err(e);
        }
        st.topo.ports.insert(port.id.clone(), port.clone());
        st.topo.bound.insert(port.id.clone(), of);
        Self::recompile(&mut st, &[Change::Port(port.id.clone())])?;
        Ok(port)
    }

    /// Ports of a network.
    pub fn list_ports(&self, p: &Principal, network: &str) -> Result<Vec<Port>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(st
            .topo
            .ports
            .values()
            .filter(|x| x.network == n.id)
            .cloned()
            .collect())
    }

    /// A port by id (or name within the caller's tenant).
    pub fn get_port(&self, p: &Principal, id: &str) -> Result<Port, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        Self::find_port(&st, p, id).cloned()
    }

    /// Sets a port's security groups.
    pub fn set_port_groups(
        &self,
        p: &Principal,
        id: &str,
        groups: &[String],
    ) -> Result<Port, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut port = Self::find_port(&st, p, id)?.clone();
        let mut ids = Vec::new();
        for g in groups {
            let gid = Self::find_group(&st, p, Some(&port.tenant), g)?.id.clone();
            if !ids.contains(&gid) {
                ids.push(gid);
            }
        }
        if ids.is_empty() {
            ids.push(self.default_group(&mut st, &port.tenant)?);
        }
        port.security_groups = ids;
        port.generation += 1;
        self.commit_vpc(Self::vpc_put(Txn::new(), "ports", &port.id, &port))?;
        st.topo.ports.insert(port.id.clone(), port.clone());
        Self::recompile(&mut st, &[Change::Port(port.id.clone())])?;
        Ok(port)
    }

    /// Deletes a port: its flows, its record, its TAP.
    pub fn delete_port(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let port = Self::find_port(&st, p, id)?.clone();
        // Its floating IPs stay allocated, no longer associated (as Neutron does).
        let fips: Vec<FloatingIp> = st
            .topo
            .floating_ips
            .values()
            .filter(|f| f.port.as_deref() == Some(port.id.as_str()))
            .map(|f| FloatingIp {
                port: None,
                generation: f.generation + 1,
                ..f.clone()
            })
            .collect();
        self.with_tenant(&port.tenant, |t| {
            charge(
                t,
                Charge {
                    ports: 1,
                    ..Charge::default()
                },
                Charge::default(),
            )?;
            let mut txn = Txn::new().delete(key("ports", &port.id)).delete(name_key(
                "port",
                &port.network,
                &port.name,
            ));
            for f in &fips {
                txn = Self::vpc_put(txn, "floating-ips", &f.id, f);
            }
            Ok((txn, ()))
        })?;
        st.topo.ports.remove(&port.id);
        st.topo.bound.remove(&port.id);
        let mut changes = vec![Change::Port(port.id.clone())];
        for f in fips {
            changes.push(Change::FloatingIp(f.id.clone()));
            st.topo.floating_ips.insert(f.id.clone(), f);
        }
        Self::recompile(&mut st, &changes)?;
        if let Some(dp) = &st.dp {
            if let Err(e) = dp.remove_port(&port.device) {
                tracing::warn!(port = %port.name, %e, "closing the port's device");
            }
        }
        Ok(())
    }

    // ----- routers -----

    fn check_router_subnets(
        st: &VpcState,
        p: &Principal,
        n: &Network,
        router: Option<&str>,
        subnets: &[String],
    ) -> Result<Vec<String>, ControlError> {
        let mut out = Vec::new();
        for s in subnets {
            let sub = Self::find_subnet(st, p, Some(&n.id), s)?;
            if sub.network != n.id {
                return Err(ControlError::not_found(Resource::Subnet, s));
            }
            if let Some(other) = st
                .topo
                .routers
                .values()
                .find(|r| Some(r.id.as_str()) != router && r.subnets.contains(&sub.id))
            {
                return Err(ControlError::InUse {
                    what: InUse::AddressInUse,
                    message: format!("subnet {} is on router {} already", sub.name, other.name),
                });
            }
            if !out.contains(&sub.id) {
                out.push(sub.id.clone());
            }
        }
        Ok(out)
    }

    /// Creates a router connecting subnets of one network.
    pub fn create_router(
        &self,
        p: &Principal,
        network: &str,
        name: &str,
        subnets: &[String],
    ) -> Result<Router, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", name)?;
        let mut st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?.clone();
        if st
            .topo
            .routers
            .values()
            .any(|r| r.network == n.id && r.name == name)
        {
            return Err(ControlError::exists(Resource::Router, name));
        }
        let subs = Self::check_router_subnets(&st, p, &n, None, subnets)?;
        let r = Router {
            id: new_id(),
            tenant: n.tenant.clone(),
            network: n.id.clone(),
            name: name.to_string(),
            subnets: subs,
            gateway: None,
            created: now(),
            generation: 1,
        };
        let nk = name_key("router", &n.id, name);
        self.commit_vpc(Self::vpc_put(
            Txn::new().when(nk.clone(), 0).put(nk, enc(&r.id)),
            "routers",
            &r.id,
            &r,
        ))?;
        st.topo.routers.insert(r.id.clone(), r.clone());
        Self::recompile(&mut st, &[Change::Router(r.id.clone())])?;
        Ok(r)
    }

    /// Sets the subnets a router connects.
    pub fn set_router_subnets(
        &self,
        p: &Principal,
        id: &str,
        subnets: &[String],
    ) -> Result<Router, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut r = Self::find_router(&st, p, id)?.clone();
        let n = st.topo.networks[&r.network].clone();
        r.subnets = Self::check_router_subnets(&st, p, &n, Some(&r.id), subnets)?;
        r.generation += 1;
        self.commit_vpc(Self::vpc_put(Txn::new(), "routers", &r.id, &r))?;
        st.topo.routers.insert(r.id.clone(), r.clone());
        Self::recompile(&mut st, &[Change::Router(r.id.clone())])?;
        Ok(r)
    }

    /// Routers of a network.
    pub fn list_routers(&self, p: &Principal, network: &str) -> Result<Vec<Router>, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?;
        Ok(st
            .topo
            .routers
            .values()
            .filter(|r| r.network == n.id)
            .cloned()
            .collect())
    }

    /// A router by id (or name within the caller's tenant).
    pub fn get_router(&self, p: &Principal, id: &str) -> Result<Router, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        Self::find_router(&st, p, id).cloned()
    }

    /// Deletes a router.
    pub fn delete_router(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let r = Self::find_router(&st, p, id)?.clone();
        self.commit_vpc(
            Txn::new()
                .delete(key("routers", &r.id))
                .delete(name_key("router", &r.network, &r.name)),
        )?;
        st.topo.routers.remove(&r.id);
        Self::recompile(&mut st, &[Change::Router(r.id)])
    } // ----- bandwidth -----

    /// Sets (or clears, `None`) a network's cap: what all its ports send together, and the
    /// capacity its ports' guarantees share.
    pub fn set_network_bandwidth(
        &self,
        p: &Principal,
        id: &str,
        cap_bps: Option<u64>,
    ) -> Result<Network, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut n = Self::find_network(&st, p, id)?.clone();
        if cap_bps == Some(0) {
            return Err(conflict(
                "a cap of 0 would stop the network: clear it instead",
            ));
        }
        let guaranteed: u64 = st
            .topo
            .ports
            .values()
            .filter(|x| x.network == n.id)
            .filter_map(|x| x.min_bps)
            .sum();
        match cap_bps {
            Some(c) if guaranteed > c => {
                return Err(conflict(format!(
                    "its ports are guaranteed {guaranteed} bit/s in all, more than {c}"
                )))
            }
            None if guaranteed > 0 => {
                return Err(conflict("its ports' guarantees need the network's cap"))
            }
            _ => {}
        }
        n.cap_bps = cap_bps;
        n.generation += 1;
        self.commit_vpc(Self::vpc_put(Txn::new(), "networks", &n.id, &n))?;
        st.topo.networks.insert(n.id.clone(), n.clone());
        Self::recompile(&mut st, &[Change::Network(n.id.clone())])?;
        Ok(n)
    }

    /// Sets a port's cap and guarantee (bits per second; `None` clears). A guarantee is a
    /// share of the network's cap: the guarantees of a network fit within it.
    pub fn set_port_bandwidth(
        &self,
        p: &Principal,
        id: &str,
        cap_bps: Option<u64>,
        min_bps: Option<u64>,
    ) -> Result<Port, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut port = Self::find_port(&st, p, id)?.clone();
        if cap_bps == Some(0) {
            return Err(conflict("a cap of 0 would stop the port: clear it instead"));
        }
        if let (Some(c), Some(m)) = (cap_bps, min_bps) {
            if m > c {
                return Err(conflict("the guarantee is above the cap"));
            }
        }
        if let Some(m) = min_bps {
            let n = &st.topo.networks[&port.network];
            let Some(cap) = n.cap_bps else {
                return Err(conflict(format!(
                    "a guarantee is a share of the network's cap: network {} has none",
                    n.name
                )));
            };
            let others: u64 = st
                .topo
                .ports
                .values()
                .filter(|x| x.network == port.network && x.id != port.id)
                .filter_map(|x| x.min_bps)
                .sum();
            if others + m > cap {
                return Err(conflict(format!(
                    "the network's ports would be guaranteed {} bit/s, more than its cap {cap}",
                    others + m
                )));
            }
        }
        port.cap_bps = cap_bps;
        port.min_bps = min_bps;
        port.generation += 1;
        self.commit_vpc(Self::vpc_put(Txn::new(), "ports", &port.id, &port))?;
        st.topo.ports.insert(port.id.clone(), port.clone());
        Self::recompile(&mut st, &[Change::Port(port.id.clone())])?;
        Ok(port)
    }

    // ----- external legs and floating IPs -----

    /// An external network (the admin's, seen by every tenant) and the subnet its addresses
    /// come from (its first).
    fn external_subnet(st: &VpcState, network: &str) -> Result<(Network, Subnet), ControlError> {
        let n = st
            .topo
            .networks
            .values()
            .find(|n| n.external && (n.id == network || n.name == network))
            .cloned()
            .ok_or_else(|| ControlError::not_found(Resource::Network, network))?;
        let s = st
            .topo
            .subnets
            .values()
            .filter(|s| s.network == n.id)
            .min_by_key(|s| (s.created, s.key))
            .cloned()
            .ok_or_else(|| conflict(format!("external network {} has no subnet", n.name)))?;
        Ok((n, s))
    }

    /// Gives a router a leg on an external network (an address there, SNAT of its subnets
    /// behind it), or takes it away (`None`).
    pub fn set_router_gateway(
        &self,
        p: &Principal,
        id: &str,
        network: Option<&str>,
    ) -> Result<Router, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut r = Self::find_router(&st, p, id)?.clone();
        r.gateway = match network {
            None => None,
            Some(net) => {
                let (n, s) = Self::external_subnet(&st, net)?;
                if r.gateway.as_ref().is_some_and(|g| g.network == n.id) {
                    return Ok(r);
                }
                let ip = ipam::allocate_ip(s.cidr, s.gateway, &Self::used_ips(&st.topo, &s.id))
                    .map_err(|e| ipam_err("network", e))?;
                let zone = ipam::lowest_free(&Self::zones(&st.topo), 1, u32::from(u16::MAX))
                    .ok_or_else(|| ControlError::InUse {
                        what: InUse::AddressInUse,
                        message: "no conntrack zone is free".into(),
                    })? as u16;
                let seed = ipam::fnv(&format!("{}-gateway", r.id));
                Some(RouterGateway {
                    network: n.id.clone(),
                    subnet: s.id.clone(),
                    ip,
                    mac: ipam::allocate_mac(seed, &Self::macs(&st.topo)),
                    zone,
                })
            }
        };
        if r.gateway.is_none() {
            let leg: Vec<&FloatingIp> = st
                .topo
                .floating_ips
                .values()
                .filter(|f| {
                    f.port
                        .as_ref()
                        .and_then(|x| st.topo.ports.get(x))
                        .is_some_and(|x| r.subnets.contains(&x.subnet))
                })
                .collect();
            if let Some(f) = leg.first() {
                return Err(ControlError::InUse {
                    what: InUse::AddressInUse,
                    message: format!("floating IP {} needs the router's leg; free it first", f.ip),
                });
            }
        }
        r.generation += 1;
        self.commit_vpc(Self::vpc_put(Txn::new(), "routers", &r.id, &r))?;
        st.topo.routers.insert(r.id.clone(), r.clone());
        Self::recompile(&mut st, &[Change::Router(r.id.clone())])?;
        Ok(r)
    }

    fn find_fip<'a>(
        st: &'a VpcState,
        p: &Principal,
        id: &str,
    ) -> Result<&'a FloatingIp, ControlError> {
        st.topo
            .floating_ips
            .get(id)
            .or_else(|| {
                st.topo.floating_ips.values().find(|f| {
                    f.ip.to_string() == id && p.tenant.as_deref().is_none_or(|own| own == f.tenant)
                })
            })
            .filter(|f| Self::sees(p, &f.tenant))
            .ok_or_else(|| ControlError::not_found(Resource::FloatingIp, id))
    }

    /// The port a floating IP of `network` may map to: the tenant's, on a subnet of a router
    /// with a leg on that network, and with no other floating IP.
    fn fip_port(
        st: &VpcState,
        p: &Principal,
        network: &str,
        tenant: &str,
        port: &str,
        this: Option<&str>,
    ) -> Result<String, ControlError> {
        let x = Self::find_port(st, p, port)?;
        if x.tenant != tenant {
            return Err(ControlError::not_found(Resource::NetworkPort, port));
        }
        let routed = st.topo.routers.values().any(|r| {
            r.subnets.contains(&x.subnet)
                && r.gateway.as_ref().is_some_and(|g| g.network == network)
        });
        if !routed {
            return Err(conflict(format!(
                "port {} is on no subnet of a router with a leg on that external network",
                x.name
            )));
        }
        if let Some(o) = st
            .topo
            .floating_ips
            .values()
            .find(|f| f.port.as_deref() == Some(x.id.as_str()) && Some(f.id.as_str()) != this)
        {
            return Err(ControlError::InUse {
                what: InUse::AddressInUse,
                message: format!("port {} has floating IP {} already", x.name, o.ip),
            });
        }
        Ok(x.id.clone())
    }

    /// Allocates a floating IP on an external network, mapped to a port if one is given.
    pub fn create_floating_ip(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        network: &str,
        port: Option<&str>,
    ) -> Result<FloatingIp, ControlError> {
        let tenant = self.creating_tenant(p, tenant)?;
        let mut st = self.vpc.inner.lock();
        let (n, s) = Self::external_subnet(&st, network)?;
        let port = port
            .map(|x| Self::fip_port(&st, p, &n.id, &tenant, x, None))
            .transpose()?;
        let ip = ipam::allocate_ip(s.cidr, s.gateway, &Self::used_ips(&st.topo, &s.id))
            .map_err(|e| ipam_err("network", e))?;
        let f = FloatingIp {
            id: new_id(),
            tenant,
            network: n.id.clone(),
            subnet: s.id.clone(),
            ip,
            port,
            created: now(),
            generation: 1,
        };
        self.commit_vpc(Self::vpc_put(
            Txn::new().when(key("floating-ips", &f.id), 0),
            "floating-ips",
            &f.id,
            &f,
        ))?;
        st.topo.floating_ips.insert(f.id.clone(), f.clone());
        Self::recompile(&mut st, &[Change::FloatingIp(f.id.clone())])?;
        Ok(f)
    }

    /// Maps a floating IP to a port, or frees it of one (`None`).
    pub fn associate_floating_ip(
        &self,
        p: &Principal,
        id: &str,
        port: Option<&str>,
    ) -> Result<FloatingIp, ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let mut f = Self::find_fip(&st, p, id)?.clone();
        f.port = port
            .map(|x| Self::fip_port(&st, p, &f.network, &f.tenant, x, Some(&f.id)))
            .transpose()?;
        f.generation += 1;
        self.commit_vpc(Self::vpc_put(Txn::new(), "floating-ips", &f.id, &f))?;
        st.topo.floating_ips.insert(f.id.clone(), f.clone());
        Self::recompile(&mut st, &[Change::FloatingIp(f.id.clone())])?;
        Ok(f)
    }

    /// Floating IPs the caller sees.
    pub fn list_floating_ips(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<FloatingIp>, ControlError> {
        Self::require(p, Role::Reader)?;
        if let Some(t) = tenant {
            self.visible_tenant(p, t)?;
        }
        let st = self.vpc.inner.lock();
        Ok(st
            .topo
            .floating_ips
            .values()
            .filter(|f| Self::sees(p, &f.tenant) && tenant.is_none_or(|t| t == f.tenant))
            .cloned()
            .collect())
    }

    /// A floating IP by id or address.
    pub fn get_floating_ip(&self, p: &Principal, id: &str) -> Result<FloatingIp, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        Self::find_fip(&st, p, id).cloned()
    }

    /// Releases a floating IP.
    pub fn delete_floating_ip(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let mut st = self.vpc.inner.lock();
        let f = Self::find_fip(&st, p, id)?.clone();
        self.commit_vpc(Txn::new().delete(key("floating-ips", &f.id)))?;
        st.topo.floating_ips.remove(&f.id);
        Self::recompile(&mut st, &[Change::FloatingIp(f.id)])
    }

    // ----- trace -----

    /// What a packet from a port would meet, told in the tenant's terms: each table's rule by
    /// the object (and security-group rule) it was compiled from, conntrack's verdict, and
    /// where the packet ends. `ct_state` (default `+new`) is the state every conntrack step
    /// is taken to give, as a trace cannot open a real connection.
    pub fn trace_network_port(
        &self,
        p: &Principal,
        port: &str,
        req: TraceFrom,
    ) -> Result<NetworkTrace, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        let from = Self::find_port(&st, p, port)?.clone();
        let Some(&of) = st.topo.bound.get(&from.id) else {
            return Err(conflict("the port is not bound on this node"));
        };
        let s =
            st.topo.subnets.get(&from.subnet).ok_or_else(|| {
                ControlError::internal(format!("port {} has no subnet", from.name))
            })?;
        // On-link: the destination port's MAC; otherwise the gateway's.
        let dst_mac = st
            .topo
            .ports
            .values()
            .find(|x| x.subnet == s.id && x.ip == req.to)
            .map_or(s.gateway_mac, |x| x.mac);
        let proto = match req.protocol {
            Protocol::Any | Protocol::Icmp => "icmp,icmp_type=8".to_string(),
            Protocol::Tcp => format!("tcp,tp_dst={}", req.port.unwrap_or(80)),
            Protocol::Udp => format!("udp,tp_dst={}", req.port.unwrap_or(53)),
        };
        let ct_state = req.ct_state.clone().unwrap_or_else(|| "+new".into());
        let spec = format!(
            "in_port={of},dl_src={},dl_dst={},{proto},nw_src={},nw_dst={},ct_state={ct_state}",
            fmt_mac(&from.mac),
            fmt_mac(&dst_mac),
            from.ip,
            req.to
        );
        let Some(dp) = &st.dp else {
            return Err(ControlError::internal("no integration switch"));
        };
        let t = dp
            .with_switch(move |sw, now| sw.trace(&spec, now))
            .map_err(dp_err)?
            .map_err(|e| ControlError::invalid("ct_state", e.to_string()))?;
        let mut steps = Vec::new();
        for (i, step) in t.steps.iter().enumerate() {
            let what = match &step.rule {
                Some((_, r)) => st
                    .compiler
                    .explain(r.cookie)
                    .map_or_else(|| format!("flow cookie {:#x}", r.cookie), str::to_string),
                None => "no flow: dropped".to_string(),
            };
            steps.push(TraceLine {
                table: step.table,
                what,
            });
            for c in t.ct.iter().filter(|c| c.after_step == i) {
                steps.push(TraceLine {
                    table: step.table,
                    what: format!("conntrack: {}", c.describe()),
                });
            }
        }
        let by_of = |n: u32| {
            st.topo
                .bound
                .iter()
                .find(|(_, &o)| o == n)
                .and_then(|(id, _)| st.topo.ports.get(id))
                .map_or_else(|| format!("switch port {n}"), |x| x.name.clone())
        };
        let delivered: Vec<String> = t.outputs.iter().map(|o| by_of(o.port)).collect();
        let verdict = if delivered.is_empty() {
            format!(
                "dropped: {}",
                steps.last().map_or("no flow", |l| l.what.as_str())
            )
        } else if delivered == [from.name.clone()] {
            format!(
                "answered by the switch: {}",
                steps.last().map_or("", |l| l.what.as_str())
            )
        } else {
            format!("delivered to {}", delivered.join(", "))
        };
        Ok(NetworkTrace {
            packet: format!("{proto} {} -> {} from port {}", from.ip, req.to, from.name),
            steps,
            verdict,
            delivered_to: delivered,
        })
    }

    // ----- figures -----

    /// A network's figures: per port (bytes, packets, rates over 1 s and 10 s, drops by
    /// reason, from the switch's counters of the port's device) and their sums. A port's
    /// counters are what its device sent into the switch (`rx`) and got from it (`tx`).
    pub fn network_stats(
        &self,
        p: &Principal,
        network: &str,
    ) -> Result<NetworkStats, ControlError> {
        Self::require(p, Role::Reader)?;
        let st = self.vpc.inner.lock();
        let n = Self::find_network(&st, p, network)?.clone();
        let counters = match &st.dp {
            Some(dp) => dp.stats().map_err(dp_err)?.ports,
            None => Vec::new(),
        };
        let mut ports: Vec<PortFigures> = Vec::new();
        for x in st.topo.ports.values().filter(|x| x.network == n.id) {
            let Some(c) = counters.iter().find(|c| c.name == x.device) else {
                continue;
            };
            let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
            for (code, k) in &c.drops {
                *drops.entry((*code).to_string()).or_default() += k;
            }
            ports.push(PortFigures {
                port: x.name.clone(),
                device: x.device.clone(),
                rx_packets: c.stats.rx_packets,
                rx_bytes: c.stats.rx_bytes,
                tx_packets: c.stats.tx_packets,
                tx_bytes: c.stats.tx_bytes,
                rx_bps_1s: c.rates.last_1s.rx_bps,
                rx_bps_10s: c.rates.last_10s.rx_bps,
                tx_bps_1s: c.rates.last_1s.tx_bps,
                tx_bps_10s: c.rates.last_10s.tx_bps,
                drops,
            });
        }
        ports.sort_by(|a, b| a.port.cmp(&b.port));
        let mut total = PortFigures::default();
        for f in &ports {
            total.rx_packets += f.rx_packets;
            total.rx_bytes += f.rx_bytes;
            total.tx_packets += f.tx_packets;
            total.tx_bytes += f.tx_bytes;
            total.rx_bps_1s += f.rx_bps_1s;
            total.rx_bps_10s += f.rx_bps_10s;
            total.tx_bps_1s += f.tx_bps_1s;
            total.tx_bps_10s += f.tx_bps_10s;
            for (k, v) in &f.drops {
                *total.drops.entry(k.clone()).or_default() += v;
            }
        }
        Ok(NetworkStats {
            network: n.name,
            ports,
            total,
        })
    }

    /// The compiled flows on this node's integration switch, and what each cookie stands
    /// for (admin: the whole switch).
    pub fn network_flows(&self, p: &Principal) -> Result<String, ControlError> {
        Self::require(p, Role::Admin)?;
        let st = self.vpc.inner.lock();
        match &st.dp {
            Some(dp) => dp.dump_flows().map_err(dp_err),
            None => Ok(String::new()),
        }
    }

    /// Tenant-network figures in Prometheus text, per port: packets and bytes each way,
    /// bandwidth over 1 s and 10 s, drops by reason (appended to `/metrics`).
    pub(super) fn network_metrics(
        &self,
        p: &Principal,
        o: &mut String,
    ) -> Result<(), ControlError> {
        use std::fmt::Write;
        let nets: Vec<Network> = self
            .vpc
            .inner
            .lock()
            .topo
            .networks
            .values()
            .cloned()
            .collect();
        let (mut pk, mut by, mut bw, mut dr) =
            (String::new(), String::new(), String::new(), String::new());
        for n in nets {
            let st = self.network_stats(p, &n.id)?;
            for f in &st.ports {
                let l = format!(
                    "tenant=\"{}\",network=\"{}\",port=\"{}\"",
                    n.tenant, n.name, f.port
                );
                let _ = writeln!(
                    pk,
                    "strata_network_port_packets_total{{{l},dir=\"rx\"}} {}",
                    f.rx_packets
                );
                let _ = writeln!(
                    pk,
                    "strata_network_port_packets_total{{{l},dir=\"tx\"}} {}",
                    f.tx_packets
                );
                let _ = writeln!(
                    by,
                    "strata_network_port_bytes_total{{{l},dir=\"rx\"}} {}",
                    f.rx_bytes
                );
                let _ = writeln!(
                    by,
                    "strata_network_port_bytes_total{{{l},dir=\"tx\"}} {}",
                    f.tx_bytes
                );
                for (dir, w, v) in [
                    ("rx", "1s", f.rx_bps_1s),
                    ("rx", "10s", f.rx_bps_10s),
                    ("tx", "1s", f.tx_bps_1s),
                    ("tx", "10s", f.tx_bps_10s),
                ] {
                    let _ = writeln!(bw, "strata_network_port_bytes_per_second{{{l},dir=\"{dir}\",window=\"{w}\"}} {}", v / 8);
                }
                for (reason, v) in &f.drops {
                    let _ = writeln!(
                        dr,
                        "strata_network_port_drops_total{{{l},reason=\"{reason}\"}} {v}"
                    );
                }
            }
        }
        let _ = write!(o, "# HELP strata_network_port_packets_total Packets a tenant port sent (rx) and was delivered (tx).\n# TYPE strata_network_port_packets_total counter\n{pk}");
        let _ = write!(o, "# HELP strata_network_port_bytes_total Bytes a tenant port sent (rx) and was delivered (tx).\n# TYPE strata_network_port_bytes_total counter\n{by}");
        let _ = write!(o, "# HELP strata_network_port_bytes_per_second Bandwidth of a tenant port over a window.\n# TYPE strata_network_port_bytes_per_second gauge\n{bw}");
        let _ = write!(o, "# HELP strata_network_port_drops_total Packets of a tenant port dropped, by where they died.\n# TYPE strata_network_port_drops_total counter\n{dr}");
        Ok(())
    }

    /// Whether the tenant still has security groups or floating IPs (not counted by a quota,
    /// but they would outlive a deleted tenant).
    pub(super) fn tenant_has_network_objects(&self, tenant: &str) -> bool {
        let st = self.vpc.inner.lock();
        st.topo.groups.values().any(|g| g.tenant == tenant)
            || st.topo.floating_ips.values().any(|f| f.tenant == tenant)
            || st.topo.networks.values().any(|n| n.tenant == tenant)
    }

    /// Counts of networks and ports per tenant, for the usage recount at start.
    pub(super) fn network_counts(&self) -> Result<Vec<(String, u64, u64)>, ControlError> {
        let mut m: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for n in self.vpc_all::<Network>("networks")? {
            m.entry(n.tenant).or_default().0 += 1;
        }
        for x in self.vpc_all::<Port>("ports")? {
            m.entry(x.tenant).or_default().1 += 1;
        }
        Ok(m.into_iter().map(|(t, (a, b))| (t, a, b)).collect())
    }

    /// Stops the integration switch (at shutdown).
    pub fn stop_networks(&self) {
        if let Some(dp) = self.vpc.inner.lock().dp.take() {
            dp.stop();
        }
    }
}
