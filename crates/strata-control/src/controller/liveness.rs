//! Liveness and the leader (`docs/cluster.md`, step 2): on etcd, each node holds one lease
//! and keeps `/nodes/{n}/alive` on it; the holder of `/leader` (put with its lease) is the
//! leader and records nodes going down and coming back.
//!
//! # Store layout
//! - `/nodes/{n}/alive`: the node's [`Alive`] record, put with its lease (TTL [`LEASE_TTL`]):
//!   etcd deletes it when the node stops renewing (crash, partition) or revokes it (a clean
//!   stop).
//! - `/leader`: the leader's node name, put with its lease by a transaction that holds only
//!   when the key is absent (mod revision 0), so one node holds it until its lease ends.
//!
//! # Invariants
//! - A node is `up` when its alive key exists, `down` otherwise; on the embedded store (one
//!   machine, no leases) the local node is always `up` and is the leader.
//! - The lease is renewed every [`RENEW_EVERY`] by [`Controller::liveness_tick`] (a daemon
//!   thread); a renewal answered "gone" grants a new lease and puts the keys again at once.
//! - Only the leader emits `node.down` / `node.up` for other nodes, once per change it sees.
//! - A failed store call changes nothing here: the next tick tries again (a node that cannot
//!   reach etcd for a TTL is `down` to the others, which is the truth they can see).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_state::{LeaseId, Txn};

use super::events::EventKind;
use super::store::*;
use super::Controller;
use crate::error::ControlError;

/// How long a node's alive key outlives its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the lease is renewed (a third of the TTL: two renewals may be lost).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The leader's key.
pub(super) const LEADER_KEY: &str = "/leader";

pub(super) fn alive_key(node: &str) -> String {
    format!("/nodes/{node}/alive")
}

/// What a node's alive key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// The node.
    pub node: String,
    /// When this lease's keys were put, seconds since the epoch.
    pub since: u64,
}

/// This node's lease and what the leader last saw.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    state: parking_lot::Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    lease: Option<LeaseId>,
    leader: bool,
    /// The nodes the leader saw up at its last tick (`None` before its first).
    seen_up: Option<BTreeSet<String>>,
    stopped: bool,
}

/// Who is up and who leads, as read from the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Nodes with an alive key (on the embedded store: the local node).
    pub up: BTreeSet<String>,
    /// The leader, if any node holds the key.
    pub leader: Option<String>,
}

impl Controller {
    /// Who is up and who leads now.
    pub fn cluster_view(&self) -> Result<ClusterView, ControlError> {
        if self.store.leases().is_none() {
            return Ok(ClusterView {
                up: [self.node.clone()].into(),
                leader: Some(self.node.clone()),
            });
        }
        let (kvs, _) = self.store.range("/nodes/", None, 0)?;
        let up = kvs
            .iter()
            .filter_map(|kv| {
                let rest = kv.key.strip_prefix("/nodes/")?;
                let (node, what) = rest.split_once('/')?;
                (what == "alive").then(|| node.to_string())
            })
            .collect();
        let leader = self
            .get::<String>(LEADER_KEY)?
            .map(|(n, _)| n)
            .filter(|n| !n.is_empty());
        Ok(ClusterView { up, leader })
    }

    /// One liveness step (call every [`RENEW_EVERY`]): renew or take the lease and the alive
    /// key, try for the leader's key, and as leader record who went down or came back.
    /// Nothing to do on the embedded store. Returns whether this node leads.
    pub fn liveness_tick(&self) -> bool {
        let Some(leases) = self.store.leases() else {
            return true;
        };
        let mut st = self.liveness.state.lock();
        if st.stopped {
            return false;
        }
        if let Some(id) = st.lease {
            match leases.keep_alive(id) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(node = %self.node, "lease expired: taking a new one");
                    st.lease = None;
                    st.leader = false;
                }
                Err(e) => tracing::warn!(node = %self.node, error = %e, "lease not renewed"),
            }
        }
        if st.lease.is_none() {
            match self.take_lease() {
                Ok(id) => st.lease = Some(id),
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "no lease: this node shows down");
                    return false;
                }
            }
        }
        let Some(id) = st.lease else { return false };
        let was = st.leader;
        st.leader = match self.claim_leader(id) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "leader key not read");
                was
            }
        };
        if st.leader && !was {
            tracing::info!(node = %self.node, "this node is the leader");
        }
        if !st.leader {
            st.seen_up = None;
            return false;
        }
        if let Ok(view) = self.cluster_view() {
            let before = st.seen_up.replace(view.up.clone());
            drop(st);
            self.record_node_changes(before.as_ref(), &view.up);
        }
        true
    }

    /// This node's lease, once it holds one (keys put with it go when the node dies).
    pub(super) fn node_lease(&self) -> Option<LeaseId> {
        self.liveness.state.lock().lease
    }

    /// Grants a lease and puts the alive key with it.
    fn take_lease(&self) -> Result<LeaseId, ControlError> {
        let leases = self.store.leases().expect("checked by the caller");
        let id = leases.grant(LEASE_TTL)?;
        let rec = Alive {
            node: self.node.clone(),
            since: now(),
        };
        self.store
            .txn(Txn::new().put_leased(alive_key(&self.node), enc(&rec), id))?;
        Ok(id)
    }

    /// Takes `/leader` when nobody holds it; whether this node holds it now.
    fn claim_leader(&self, id: LeaseId) -> Result<bool, ControlError> {
        if let Some((holder, _)) = self.get::<String>(LEADER_KEY)? {
            return Ok(holder == self.node);
        }
        let r = self.store.txn(Txn::new().when(LEADER_KEY, 0).put_leased(
            LEADER_KEY,
            enc(&self.node),
            id,
        ))?;
        Ok(r.succeeded)
    }

    /// The leader's record of nodes that went down (alive key gone) or came back, from the
    /// set it saw last (at its first tick as leader: the nodes already down, once).
    fn record_node_changes(&self, before: Option<&BTreeSet<String>>, up: &BTreeSet<String>) {
        let Ok(nodes) = self.node_records() else {
            return;
        };
        for r in nodes.iter().filter(|r| !r.hypothetical) {
            let name = &r.node.name;
            let is_up = up.contains(name);
            // At the first tick as leader every node counts as up before: the ones already
            // down are recorded once (unless their last event says so).
            let was_up = before.is_none_or(|b| b.contains(name));
            let last_down =
                self.last_node_state(name).as_deref() == Some(EventKind::NodeDown.name());
            if was_up && !is_up && !last_down {
                self.event(
                    EventKind::NodeDown,
                    name,
                    None,
                    format!(
                        "node {name} down: its liveness lease ended (no renewal for {} s)",
                        LEASE_TTL.as_secs()
                    ),
                );
            } else if !was_up && is_up && before.is_some() && last_down {
                self.event(
                    EventKind::NodeUp,
                    name,
                    None,
                    format!("node {name} up: its liveness key is back"),
                );
            }
        }
    }

    /// A clean stop: the lease is revoked, so the alive key and a held `/leader` go at once
    /// (the others see this node down, and elect, without waiting for the TTL).
    pub fn leave_cluster(&self) {
        let Some(leases) = self.store.leases() else {
            return;
        };
        let mut st = self.liveness.state.lock();
        st.stopped = true;
        if let Some(id) = st.lease.take() {
            if let Err(e) = leases.revoke(id) {
                tracing::warn!(error = %e, "lease not revoked: it expires by itself");
            }
        }
    }
}
