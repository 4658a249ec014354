//! Networks across nodes (issue 14 step 5, `docs/cluster.md`): which ports are this node's,
//! the VXLAN tunnels to the nodes that hold the others, and following the other nodes'
//! changes in the store.
//!
//! # Invariants
//! - A port is this node's when its record names this node (or no node, or the store is of
//!   one machine): its device is opened here and it is in `Topology::bound`. A port of
//!   another node is in `Topology::remote`, behind the tunnel to that node, once both nodes
//!   recorded a node port (`--advertise`: the tunnel runs between their addresses); until
//!   then it has no flows here, and the next pass tries again.
//! - One flow-keyed VXLAN port per remote node (`vx-{node}`), made when the first port there
//!   needs it and removed with the last: frames carry their network's VNI, and the compiled
//!   flows alone decide where a frame from a tunnel goes (only to a port of the network of
//!   its VNI, at that port's MAC).
//! - On a shared store, every network call and the agent's pass first bring the topology up
//!   to the store (`sync`), under the network mutex: a change made through another node's
//!   API is compiled here before anything is read or decided here. Nothing is synced on the
//!   embedded store: this daemon is its only writer.
//! - On a shared store, a network change holds the cluster's network lock ([`LOCK_KEY`], put
//!   with the node's lease, so a dead holder's lock goes with its lease) from before its sync
//!   to after its store write ([`VpcWrite`]): what it allocates (VNIs, zones, subnet keys,
//!   addresses, MACs) is chosen against every change another node committed, so two nodes
//!   never hand out the same one. Changes are serialized across the cluster as they are
//!   within a node; reads take no lock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use parking_lot::MutexGuard;
use strata_dataplane::PortSpec;

use super::*;
use crate::controller::cluster_copies::NodeEndpoint;

/// The cluster's network lock: held by a node (its name, put with its lease) while it
/// changes the networks.
pub const LOCK_KEY: &str = "/vpc-lock";

/// How long a network change waits for the cluster's network lock before it answers busy
/// (a change takes milliseconds; a dead holder's lease ends within its TTL, 6 s).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The network state for a change: the node's mutex and, on a shared store, the cluster's
/// network lock, released when dropped.
pub(in crate::controller) struct VpcWrite<'a> {
    st: MutexGuard<'a, VpcState>,
    ctl: &'a Controller,
    /// The lock key's revision, while this change holds it.
    held: Option<u64>,
}

impl std::ops::Deref for VpcWrite<'_> {
    type Target = VpcState;
    fn deref(&self) -> &VpcState {
        &self.st
    }
}

impl std::ops::DerefMut for VpcWrite<'_> {
    fn deref_mut(&mut self) -> &mut VpcState {
        &mut self.st
    }
}

impl Drop for VpcWrite<'_> {
    fn drop(&mut self) {
        if let Some(rev) = self.held.take() {
            // Only the lock this change put: a lock that expired and was taken by another
            // node stays.
            let r = self
                .ctl
                .store
                .txn(Txn::new().when(LOCK_KEY, rev).delete(LOCK_KEY));
            if let Err(e) = r {
                tracing::warn!(%e, "releasing the network lock (it goes with the lease)");
            }
        }
    }
}

/// The switch port name of the tunnel to `node`.
fn tunnel_name(node: &str) -> String {
    format!("vx-{node}")
}

impl Controller {
    /// Whether the store is shared with other nodes (then other nodes' API calls change the
    /// networks too).
    fn shared_store(&self) -> bool {
        self.store.leases().is_some()
    }

    /// Whether port `p`'s device is on this node.
    pub(super) fn is_here(&self, p: &Port) -> bool {
        !self.shared_store() || p.node.as_deref().is_none_or(|n| n == self.node)
    }

    /// The network state, brought up to the store first on a shared store.
    pub(in crate::controller) fn vpc_lock(&self) -> MutexGuard<'_, VpcState> {
        let mut st = self.vpc.inner.lock();
        if self.shared_store() {
            if let Err(e) = self.sync(&mut st) {
                tracing::warn!(%e, "networks: following the store failed");
            }
        }
        st
    }

    /// The network state for a change: on a shared store the cluster's network lock is taken
    /// first, then the topology brought up to the store. A lock not had within
    /// [`LOCK_WAIT`] is `busy` (HTTP 409; try again); the change has not started.
    pub(in crate::controller) fn vpc_write(&self) -> Result<VpcWrite<'_>, ControlError> {
        let st = self.vpc.inner.lock();
        let mut held = None;
        if self.shared_store() {
            let deadline = std::time::Instant::now() + LOCK_WAIT;
            loop {
                if let Some(lease) = self.node_lease() {
                    let r = self.store.txn(Txn::new().when(LOCK_KEY, 0).put_leased(
                        LOCK_KEY,
                        enc(&self.node),
                        lease,
                    ))?;
                    if r.succeeded {
                        held = Some(r.revision);
                        break;
                    }
                }
                if std::time::Instant::now() >= deadline {
                    return Err(ControlError::Busy(
                        "another node is changing the networks (or this node has no lease \
                         yet): try again"
                            .into(),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let mut w = VpcWrite {
            st,
            ctl: self,
            held,
        };
        if w.held.is_some() {
            // After the lock: every change another node committed is in the store now.
            self.sync(&mut w.st)?;
        }
        Ok(w)
    }

    /// The agent's pass over the networks: the other nodes' changes compiled here, and the
    /// ports of other nodes that could not be reached yet tried again.
    pub fn network_agent_pass(&self) {
        drop(self.vpc_lock());
    }

    /// Opens port `p` where it is: its device here, or the tunnel to its node. Returns
    /// whether it is now bound or reached (an unreachable remote port is left for the next
    /// pass).
    pub(super) fn bind_port(&self, st: &mut VpcState, p: &Port) -> Result<bool, ControlError> {
        if self.is_here(p) {
            let of = Self::open_device(st, p)?;
            st.topo.bound.insert(p.id.clone(), of);
            return Ok(true);
        }
        let node = p.node.clone().unwrap_or_default();
        match self.tunnel_to(st, &node)? {
            Some(of) => {
                st.topo.remote.insert(p.id.clone(), of);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Closes what [`Controller::bind_port`] opened for port `p` (the topology no longer
    /// has it): its device, or the tunnel once no port of its node is left.
    pub(super) fn unbind_port(st: &mut VpcState, p: &Port) {
        st.topo.bound.remove(&p.id);
        if st.topo.remote.remove(&p.id).is_some() {
            let node = p.node.clone().unwrap_or_default();
            let used = st
                .topo
                .remote
                .keys()
                .filter_map(|id| st.topo.ports.get(id))
                .any(|x| x.node.as_deref() == Some(node.as_str()));
            if !used {
                if let (Some(dp), Some(_)) = (&st.dp, st.tunnels.remove(&node)) {
                    if let Err(e) = dp.remove_port(&tunnel_name(&node)) {
                        tracing::warn!(%node, %e, "removing the tunnel");
                    }
                }
            }
            return;
        }
        if let Some(dp) = &st.dp {
            if let Err(e) = dp.remove_port(&p.device) {
                tracing::warn!(port = %p.name, %e, "closing the port's device");
            }
        }
    }

    /// The address of node `n`'s node port, if it recorded one.
    fn node_address(&self, n: &str) -> Result<Option<Ipv4Addr>, ControlError> {
        let Some((ep, _)) = self.get::<NodeEndpoint>(&format!("/nodes/{n}/endpoint"))? else {
            return Ok(None);
        };
        Ok(match ep.copies.parse::<std::net::SocketAddr>() {
            Ok(std::net::SocketAddr::V4(a)) => Some(*a.ip()),
            _ => None,
        })
    }

    /// The switch port of the tunnel to `node`, made if missing; None while either end has
    /// no node port address.
    fn tunnel_to(&self, st: &mut VpcState, node: &str) -> Result<Option<u32>, ControlError> {
        if let Some(&(of, _)) = st.tunnels.get(node) {
            return Ok(Some(of));
        }
        let (Some(local), Some(remote)) =
            (self.node_address(&self.node)?, self.node_address(node)?)
        else {
            return Ok(None);
        };
        let dp = Self::dataplane(st)?;
        let of = dp
            .add_port(PortSpec::Vxlan {
                name: tunnel_name(node),
                local,
                remote,
                vni: None,
                dst_port: strata_net::vxlan::VXLAN_PORT,
                flow_keyed: true,
            })
            .map_err(|e| ControlError::internal(format!("the tunnel to node {node}: {e}")))?;
        tracing::info!(%node, %local, %remote, "tunnel to a node of a network");
        st.tunnels.insert(node.to_string(), (of, remote));
        Ok(Some(of))
    }

    /// Brings the topology up to the store: what other nodes changed since the last sync is
    /// compiled here, and remote ports not reached yet are tried again.
    fn sync(&self, st: &mut VpcState) -> Result<(), ControlError> {
        let rev = self.store.revision()?;
        let changed = st.synced == 0
            || !matches!(self.store.changes("/vpc/", st.synced, 1), Ok(e) if e.is_empty());
        let mut changes: Vec<Change> = Vec::new();
        if changed {
            let mut fresh = Topology::default();
            self.read_topology(&mut fresh)?;
            diff(
                &st.topo.networks,
                &fresh.networks,
                Change::Network,
                &mut changes,
            );
            diff(
                &st.topo.subnets,
                &fresh.subnets,
                Change::Subnet,
                &mut changes,
            );
            diff(
                &st.topo.routers,
                &fresh.routers,
                Change::Router,
                &mut changes,
            );
            diff(&st.topo.groups, &fresh.groups, Change::Group, &mut changes);
            diff(
                &st.topo.floating_ips,
                &fresh.floating_ips,
                Change::FloatingIp,
                &mut changes,
            );
            diff(
                &st.topo.load_balancers,
                &fresh.load_balancers,
                Change::LoadBalancer,
                &mut changes,
            );
            let mut ports = Vec::new();
            diff(&st.topo.ports, &fresh.ports, |id| id, &mut ports);
            let Topology {
                networks,
                subnets,
                routers,
                groups,
                floating_ips,
                load_balancers,
                ports: fresh_ports,
                ..
            } = fresh;
            st.topo.networks = networks;
            st.topo.subnets = subnets;
            st.topo.routers = routers;
            st.topo.groups = groups;
            st.topo.floating_ips = floating_ips;
            st.topo.load_balancers = load_balancers;
            for id in ports {
                let old = st.topo.ports.get(&id).cloned();
                let new = fresh_ports.get(&id).cloned();
                match (&old, &new) {
                    (Some(o), None) => {
                        st.topo.ports.remove(&id);
                        Self::unbind_port(st, o);
                    }
                    (None, Some(n)) => {
                        st.topo.ports.insert(id.clone(), n.clone());
                    }
                    (Some(_), Some(n)) => {
                        st.topo.ports.insert(id.clone(), n.clone());
                    }
                    (None, None) => continue,
                }
                changes.push(Change::Port(id));
            }
        }
        // Ports not opened yet: this node's made through another node's API (the agent
        // opens their devices), other nodes' new ones, and those whose node had no address.
        let waiting: Vec<Port> = st
            .topo
            .ports
            .values()
            .filter(|p| {
                if self.is_here(p) {
                    !st.topo.bound.contains_key(&p.id)
                } else {
                    !st.topo.remote.contains_key(&p.id)
                }
            })
            .cloned()
            .collect();
        for p in waiting {
            match self.bind_port(st, &p) {
                Ok(true) => changes.push(Change::Port(p.id.clone())),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(port = %p.name, %e, "a port of the network cannot be opened")
                }
            }
        }
        st.synced = rev;
        changes.sort();
        changes.dedup();
        if changes.is_empty() {
            return Ok(());
        }
        Self::recompile(st, &changes)
    }
}

/// The ids whose value differs between `old` and `new` (added, removed or changed), as
/// changes.
fn diff<T: PartialEq, C>(
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    f: impl Fn(String) -> C,
    out: &mut Vec<C>,
) {
    for (id, v) in new {
        if old.get(id) != Some(v) {
            out.push(f(id.clone()));
        }
    }
    for id in old.keys() {
        if !new.contains_key(id) {
            out.push(f(id.clone()));
        }
    }
}
