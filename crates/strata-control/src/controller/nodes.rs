//! The placement pool's nodes: the local node (registered by the daemon at every start with
//! the inventory it found), hypothetical nodes an admin declares for what-if planning, and
//! cordons.
//!
//! # Store layout
//! - `/nodes/NAME`: a [`NodeRecord`] (the engine's [`strata_place::Node`] and whether it is
//!   hypothetical). Keys below it (`/nodes/NAME/pools/...`, `/nodes/NAME/alive`) are the
//!   node's own records (`node_scope.rs`, `liveness.rs`), never nodes: [`Controller::node_records`]
//!   keeps the names without a further `/`.
//! - `/placement/revision`: a marker key written by every transaction that changes a node or
//!   a job; its mod revision is the *placement revision* a plan is made from and checked
//!   against (`jobs.rs`). Changes elsewhere in the store (volumes, audit) do not move it.
//!
//! # Invariants
//! - A declaration never replaces a real node (`node_exists`), and a set of nodes is stored
//!   only if the pool with it still passes `Cluster::validate` with every running job on it.
//! - The local node keeps its cordon across restarts: a re-registration takes the new
//!   inventory and the stored `cordoned` flag.
//! - Uncordoning runs admission (capacity freed); cordoning never moves what runs.

use serde::{Deserialize, Serialize};
use strata_place::{Cluster, Node};
use strata_state::Txn;

use super::auth::Principal;
use super::events::EventKind;
use super::store::*;
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::Role;

pub(super) fn node_key(name: &str) -> String {
    format!("/nodes/{name}")
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// What the node offers (the engine's model; `cordoned` included).
    pub node: Node,
    /// Declared for planning: no daemon runs there.
    pub hypothetical: bool,
    /// Last registration or declaration, seconds since the epoch.
    pub updated: u64,
}

/// A node with what the jobs placed on it take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The record.
    pub record: NodeRecord,
    /// GPUs held by running jobs.
    pub used_gpus: u32,
    /// CPU cores held.
    pub used_cpu: u32,
    /// Memory held, bytes.
    pub used_memory: u64,
    /// Running jobs with a part here.
    pub jobs: u32,
    /// Its daemon is up: its alive key exists (`liveness.rs`).
    pub up: bool,
    /// It holds the leader's key.
    pub leader: bool,
}

impl Controller {
    /// Registers the node this daemon runs on with the inventory it found (at start). Keeps a
    /// stored cordon; refuses a name a hypothetical node holds only by replacing it (a real
    /// node wins over a plan's stand-in).
    pub fn register_local_node(&self, mut node: Node) -> Result<(), ControlError> {
        let key = node_key(&node.name);
        let old = self.get::<NodeRecord>(&key)?;
        if let Some((old, _)) = &old {
            node.cordoned = old.node.cordoned;
        }
        let snap = self.placement_state()?;
        let mut cluster = snap.cluster();
        cluster.nodes.retain(|n| n.name != node.name);
        cluster.nodes.push(node.clone());
        if let Err(e) = cluster.validate() {
            // The machine changed under running jobs (a GPU gone): keep the record, loudly.
            tracing::warn!(node = %node.name, error = %e, "inventory conflicts with running jobs; keeping the stored node");
            return Ok(());
        }
        let rec = NodeRecord {
            node,
            hypothetical: false,
            updated: now(),
        };
        let name = rec.node.name.clone();
        self.store.txn(
            Txn::new()
                .put(key, enc(&rec))
                .put(PLACEMENT_REVISION_KEY, enc(&0u8)),
        )?;
        self.node_started(&name, &rec.node);
        self.reconcile_jobs()
    }

    /// Every node, with what runs there (every role: tenants plan jobs against it).
    pub fn list_nodes(&self, p: &Principal) -> Result<Vec<NodeView>, ControlError> {
        Self::require(p, Role::Reader)?;
        let snap = self.placement_state()?;
        let live = self.cluster_view()?;
        Ok(snap.nodes.iter().map(|r| snap.view(r, &live)).collect())
    }

    /// One node.
    pub fn get_node(&self, p: &Principal, name: &str) -> Result<NodeView, ControlError> {
        Self::require(p, Role::Reader)?;
        let snap = self.placement_state()?;
        let live = self.cluster_view()?;
        snap.nodes
            .iter()
            .find(|r| r.node.name == name)
            .map(|r| snap.view(r, &live))
            .ok_or_else(|| ControlError::not_found(Resource::Node, name))
    }

    /// Declares hypothetical nodes from a YAML inventory (admin; `strata_place::inventory`'s
    /// format): new names are added, hypothetical ones of the same name replaced.
    pub fn declare_nodes(
        &self,
        p: &Principal,
        inventory: &str,
    ) -> Result<Vec<NodeView>, ControlError> {
        Self::require(p, Role::Admin)?;
        let nodes = strata_place::inventory::nodes_from_yaml(inventory)
            .map_err(|e| ControlError::InventoryInvalid(crate::error::clip(&e.to_string())))?;
        if nodes.is_empty() {
            return Err(ControlError::InventoryInvalid("no nodes declared".into()));
        }
        let snap = self.placement_state()?;
        let mut cluster = snap.cluster();
        for n in &nodes {
            if let Some(old) = snap.nodes.iter().find(|r| r.node.name == n.name) {
                if !old.hypothetical {
                    return Err(ControlError::exists(Resource::Node, &n.name));
                }
            }
            cluster.nodes.retain(|c| c.name != n.name);
            cluster.nodes.push(n.clone());
        }
        cluster
            .validate()
            .map_err(|e| ControlError::invalid("inventory", crate::error::clip(&e.to_string())))?;
        let mut txn = Txn::new().when(PLACEMENT_REVISION_KEY, snap.revision);
        for n in &nodes {
            let rec = NodeRecord {
                node: n.clone(),
                hypothetical: true,
                updated: now(),
            };
            txn = txn.put(node_key(&n.name), enc(&rec));
        }
        let r = self.store.txn(txn.put(PLACEMENT_REVISION_KEY, enc(&0u8)))?;
        if !r.succeeded {
            return Err(ControlError::Busy(
                "the placement state changed meanwhile; retry".into(),
            ));
        }
        for n in &nodes {
            self.event(
                EventKind::NodeDeclared,
                &n.name,
                None,
                format!(
                    "node {} declared for planning (no daemon runs there)",
                    n.name
                ),
            );
        }
        self.reconcile_jobs()?;
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let snap = self.placement_state()?;
        let live = self.cluster_view()?;
        Ok(snap
            .nodes
            .iter()
            .filter(|r| names.contains(&r.node.name.as_str()))
            .map(|r| snap.view(r, &live))
            .collect())
    }

    /// Cordons (no new work) or uncordons a node (admin); uncordoning admits waiting jobs.
    pub fn set_cordon(
        &self,
        p: &Principal,
        name: &str,
        cordoned: bool,
    ) -> Result<NodeView, ControlError> {
        Self::require(p, Role::Admin)?;
        let key = node_key(name);
        let (mut rec, rev) = self
            .get::<NodeRecord>(&key)?
            .ok_or_else(|| ControlError::not_found(Resource::Node, name))?;
        rec.node.cordoned = cordoned;
        let r = self.store.txn(
            Txn::new()
                .when(key.clone(), rev)
                .put(key, enc(&rec))
                .put(PLACEMENT_REVISION_KEY, enc(&0u8)),
        )?;
        if !r.succeeded {
            return Err(ControlError::Busy(
                "the node changed meanwhile; retry".into(),
            ));
        }
        let (kind, what) = if cordoned {
            (EventKind::NodeCordoned, "cordoned: no new jobs start there")
        } else {
            (
                EventKind::NodeUncordoned,
                "uncordoned: jobs may start there again",
            )
        };
        self.event(kind, name, None, format!("node {name} {what}"));
        if !cordoned {
            self.reconcile_jobs()?;
        }
        self.get_node(p, name)
    }
}

/// The nodes and jobs read at one placement revision.
pub(super) struct PlacementState {
    /// The placement revision (mod revision of [`PLACEMENT_REVISION_KEY`], 0 before any).
    pub revision: u64,
    /// Nodes, in name order.
    pub nodes: Vec<NodeRecord>,
    /// Jobs, in key order.
    pub jobs: Vec<super::jobs::JobRecord>,
}

impl PlacementState {
    /// The engine's snapshot: every node, the running jobs.
    pub fn cluster(&self) -> Cluster {
        Cluster {
            revision: self.revision,
            nodes: self.nodes.iter().map(|r| r.node.clone()).collect(),
            running: self.jobs.iter().filter_map(|j| j.placement()).collect(),
        }
    }

    fn view(&self, r: &NodeRecord, live: &super::ClusterView) -> NodeView {
        let name = &r.node.name;
        let mut v = NodeView {
            up: !r.hypothetical && live.up.contains(name),
            leader: live.leader.as_ref() == Some(name),
            record: r.clone(),
            used_gpus: 0,
            used_cpu: 0,
            used_memory: 0,
            jobs: 0,
        };
        for j in &self.jobs {
            for part in j.parts.iter().filter(|p| p.node == r.node.name) {
                v.used_gpus += part.gpus.len() as u32;
                v.used_cpu += part.cpu_cores;
                v.used_memory += part.memory_bytes;
                v.jobs += 1;
            }
        }
        v
    }
}

impl Controller {
    /// Reads nodes and jobs at one placement revision (read again when a change landed
    /// between the reads).
    pub(super) fn placement_state(&self) -> Result<PlacementState, ControlError> {
        loop {
            let before = self.placement_revision()?;
            let nodes = self.node_records()?;
            let jobs = self
                .list::<super::jobs::JobRecord>("/jobs/", None, 0)?
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            if self.placement_revision()? == before {
                return Ok(PlacementState {
                    revision: before,
                    nodes,
                    jobs,
                });
            }
        }
    }

    /// Every node record (`/nodes/{n}`), in name order: the records under a node
    /// (`/nodes/{n}/pools/...`, `/nodes/{n}/alive`) are not nodes.
    pub(super) fn node_records(&self) -> Result<Vec<NodeRecord>, ControlError> {
        let (kvs, _) = self.store.range("/nodes/", None, 0)?;
        kvs.into_iter()
            .filter(|kv| !kv.key["/nodes/".len()..].contains('/'))
            .map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|e| {
                    ControlError::internal(format!("record {} is damaged: {e}", kv.key))
                })
            })
            .collect()
    }

    /// The current placement revision.
    pub(super) fn placement_revision(&self) -> Result<u64, ControlError> {
        Ok(self
            .store
            .get(PLACEMENT_REVISION_KEY)?
            .map_or(0, |kv| kv.mod_revision))
    }
}
