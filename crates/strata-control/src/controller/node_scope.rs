//! Which records are this node's: pools and scrub records live under the node that owns their
//! devices, and a volume belongs to the node whose pool holds its copies (`docs/cluster.md`).
//!
//! # Store layout
//! - `/nodes/{node}/pools/{pool}`: a [`PoolRecord`], written by that node only.
//! - `/nodes/{node}/scrubs/{pool}`: the pool's last scrub, written by that node only.
//! - `/cluster/legacy-node`: the node that took a one-node install's records over at its
//!   first start with node-scoped records (see migration below); a volume record without
//!   `node` is that node's.
//!
//! # Invariants
//! - A daemon opens, scrubs, drains, rebuilds and recovers only what its own node's records
//!   name: every scan of pools lists `/nodes/{local}/pools/`, every scan of volumes that acts on
//!   devices keeps [`Controller::is_local`] ones. Device ids are unique per node only (two
//!   nodes both have `default-d0`), so a device id is meaningful only beside its node.
//! - A request that would act on another node's volume (delete, resize, snapshot, clone,
//!   rollback, attach) is refused with `volume_on_other_node` and changes nothing: until
//!   remote copies exist (step 3), only the owning node reaches the copies.
//! - Migration is one compare-revision transaction: every old `/pools/{p}` and `/scrubs/{p}`
//!   key moves under the local node only if none changed meanwhile and no new key exists;
//!   the first node to win it becomes `/cluster/legacy-node`. A crash before it leaves the old
//!   keys (migrated at the next start); after it, nothing is left to do.

use strata_state::Txn;

use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// The node that owns volume records written before volumes named their node.
pub(super) const LEGACY_NODE_KEY: &str = "/cluster/legacy-node";

/// Where a one-node install kept its pools, before node-scoped records.
const LEGACY_POOLS: &str = "/pools/";
/// Where a one-node install kept its pools' scrubs.
const LEGACY_SCRUBS: &str = "/scrubs/";

impl Controller {
    /// This daemon's node name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The key of this node's pool `pool`.
    pub(super) fn pool_key(&self, pool: &str) -> String {
        format!("/nodes/{}/pools/{pool}", self.node)
    }

    /// The key of this node's last scrub of `pool`.
    pub(super) fn scrub_key(&self, pool: &str) -> String {
        format!("/nodes/{}/scrubs/{pool}", self.node)
    }

    /// This node's pools, in name order.
    pub(super) fn local_pools(&self) -> Result<Vec<PoolRecord>, ControlError> {
        Ok(self
            .list::<PoolRecord>(&format!("/nodes/{}/pools/", self.node), None, 0)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Whether `v`'s copies are on this node's devices.
    pub(crate) fn is_local(&self, v: &Volume) -> bool {
        if v.node.is_empty() {
            // Written before volumes named their node: the legacy node's (a store that was
            // never migrated has no other node).
            self.legacy_node
                .read()
                .as_deref()
                .is_none_or(|n| n == self.node)
        } else {
            v.node == self.node
        }
    }

    /// The node a volume's copies are on.
    pub(crate) fn volume_node(&self, v: &Volume) -> String {
        if v.node.is_empty() {
            self.legacy_node
                .read()
                .clone()
                .unwrap_or_else(|| self.node.clone())
        } else {
            v.node.clone()
        }
    }

    /// Refuses a change of a volume whose copies are on another node.
    pub(super) fn require_local(&self, v: &Volume) -> Result<(), ControlError> {
        if self.is_local(v) {
            return Ok(());
        }
        Err(ControlError::OtherNode {
            node: self.volume_node(v),
            message: format!(
                "volume {} is on node {}: ask that node's API (this is node {})",
                v.name,
                self.volume_node(v),
                self.node
            ),
        })
    }

    /// Every volume record whose copies are on this node.
    pub(super) fn local_volumes(&self) -> Result<Vec<(String, Volume)>, ControlError> {
        let mut all = self.list::<Volume>("/volumes/", None, 0)?;
        all.retain(|(_, v)| self.is_local(v));
        Ok(all)
    }

    /// Moves a one-node install's pool and scrub records under this node (see the module's
    /// invariants), then reads which node owns the volume records that name none.
    pub(super) fn migrate_node_records(&self) -> Result<(), ControlError> {
        for _ in 0..8 {
            let (pools, _) = self.store.range(LEGACY_POOLS, None, 0)?;
            let (scrubs, _) = self.store.range(LEGACY_SCRUBS, None, 0)?;
            if pools.is_empty() && scrubs.is_empty() {
                break;
            }
            let mut txn = Txn::new();
            for kv in &pools {
                let to = self.pool_key(&kv.key[LEGACY_POOLS.len()..]);
                txn = txn
                    .when(kv.key.clone(), kv.mod_revision)
                    .when(to.clone(), 0)
                    .put(to, kv.value.clone())
                    .delete(kv.key.clone());
            }
            for kv in &scrubs {
                let to = self.scrub_key(&kv.key[LEGACY_SCRUBS.len()..]);
                txn = txn
                    .when(kv.key.clone(), kv.mod_revision)
                    .when(to.clone(), 0)
                    .put(to, kv.value.clone())
                    .delete(kv.key.clone());
            }
            if self.store.get(LEGACY_NODE_KEY)?.is_none() {
                txn = txn
                    .when(LEGACY_NODE_KEY, 0)
                    .put(LEGACY_NODE_KEY, super::store::enc(&self.node));
            }
            if self.store.txn(txn)?.succeeded {
                tracing::info!(node = %self.node, pools = pools.len(), scrubs = scrubs.len(),
                    "records of a one-node install moved under this node");
                break;
            }
            // Another node migrated them, or a record changed meanwhile: look again.
            if let Some(clash) = pools.iter().find(|kv| {
                self.store
                    .get(&self.pool_key(&kv.key[LEGACY_POOLS.len()..]))
                    .is_ok_and(|k| k.is_some())
            }) {
                return Err(ControlError::internal(format!(
                    "record {} cannot move under node {}: the node already has that pool",
                    clash.key, self.node
                )));
            }
        }
        *self.legacy_node.write() = self.get::<String>(LEGACY_NODE_KEY)?.map(|(n, _)| n);
        Ok(())
    }
}
