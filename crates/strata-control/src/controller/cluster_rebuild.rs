//! Rebuilding a copy that is on another node onto a third node: once a remote copy has been
//! faulted for the node's `rebuild_after` (its node down, or its device failing), the serving
//! node puts a new copy on another node that holds none of the volume's copies, and the
//! resync job copies every region to it (docs/cluster.md, "Rebuilds across nodes").
//!
//! # Invariants
//! - The set takes the new copy as new (`ReplicaSet::replace`: every region) and never as a
//!   returning one (`reattach`: the regions it missed only). Because the new node's agent
//!   makes the copy only once the volume record names it, the record changes before the set
//!   does; a pending record (`/nodes/{serving}/status/rebuilds/{volume}`, written first, gone
//!   last) says the slot's copy is new, so a crash in between makes the next scan replace,
//!   not reattach, the copy it finds there.
//! - At most one copy of a volume per node: the new node holds none of its copies.
//! - The timer is this daemon's memory: a restart of the serving node starts it again
//!   (a copy is never rebuilt sooner than asked, possibly later).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_replica::CopyState;
use strata_state::Txn;

use super::cluster_copies::{split_copy, HeldCopy};
use super::store::*;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// A rebuild across nodes whose new copy may not have joined the set yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRebuild {
    /// The slot of the volume's set.
    pub slot: usize,
    /// The new copy, `NODE:DEVICE`.
    pub copy: String,
}

pub(super) fn pending_key(node: &str, volume: &str) -> String {
    format!("/nodes/{node}/status/rebuilds/{volume}")
}

impl Controller {
    /// Sets how long a remote copy stays faulted before it is rebuilt on another node.
    pub fn set_rebuild_after(&self, d: Duration) {
        *self.node_port.rebuild_after.lock() = d;
    }

    /// The scan's step for a faulted remote copy `i` of `v`: bring a pending new copy into
    /// the set, or reattach the old one when its node is up, or, once it has been faulted
    /// long enough, start a rebuild on another node. Returns whether a rebuild started.
    pub(super) fn remote_copy_faulted(
        &self,
        v: &Volume,
        set: &strata_replica::ReplicaSet,
        i: usize,
        copy: &str,
    ) -> bool {
        match self.get::<PendingRebuild>(&pending_key(&self.node, &v.id)) {
            Ok(Some((p, _))) if p.slot == i && p.copy == copy => {
                self.join_new_remote(v, set, i, copy);
                return false;
            }
            Ok(Some(_)) => {
                // A pending record the volume's record does not follow (a crash before it
                // changed): the slot keeps its old copy.
                let _ = self
                    .store
                    .txn(Txn::new().delete(pending_key(&self.node, &v.id)));
            }
            Ok(None) => {}
            Err(_) => return false,
        }
        let since = *self
            .node_port
            .faulted_since
            .lock()
            .entry((v.id.clone(), i))
            .or_insert_with(Instant::now);
        let (n, _) = split_copy(copy).unwrap_or_default();
        if self.node_is_up(n) {
            self.reattach_remote(v, set, i, copy);
            if set.copies().get(i).map(|c| c.state) != Some(CopyState::Faulted) {
                return false;
            }
        }
        if since.elapsed() < *self.node_port.rebuild_after.lock() {
            return false;
        }
        match self.start_remote_rebuild(v, set, i, copy) {
            Ok(Some(to)) => {
                self.audit_event(
                    Some(&v.tenant),
                    "volume.rebuild",
                    &v.id,
                    &format!("copy {i} from {copy} to {to}"),
                );
                self.volume_event(
                    super::events::EventKind::RebuildStarted,
                    &v.id,
                    format!(
                        "copy {i} of volume {} rebuilding on {to} ({copy} faulted for {}s)",
                        v.name,
                        since.elapsed().as_secs()
                    ),
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(volume = %v.id, copy = i, error = %e,
                    "no rebuild on another node: the volume stays degraded");
                false
            }
        }
    }

    /// Forgets the fault timers of copies that are no longer faulted.
    pub(super) fn remote_copy_fine(&self, v: &Volume, i: usize) {
        self.node_port
            .faulted_since
            .lock()
            .remove(&(v.id.clone(), i));
    }

    /// Names a new copy on another node in `v`'s record (pending first); the copy joins the
    /// set in a later scan, once that node's agent has made it.
    fn start_remote_rebuild(
        &self,
        v: &Volume,
        _set: &strata_replica::ReplicaSet,
        i: usize,
        copy: &str,
    ) -> Result<Option<String>, ControlError> {
        let (_, dev) = split_copy(copy).unwrap_or_default();
        let class = self
            .get::<PoolRecord>(&format!(
                "/nodes/{}/pools/{}",
                split_copy(copy).map_or("", |c| c.0),
                v.pool
            ))?
            .and_then(|(p, _)| p.devices.into_iter().find(|d| d.id == dev))
            .map(|d| d.class);
        let holding: Vec<String> = v
            .copy_devices()
            .iter()
            .map(|c| split_copy(c).map_or(self.node.clone(), |(n, _)| n.to_string()))
            .collect();
        let Some((n, d)) = self
            .copy_candidates(&v.pool, class.as_deref(), &v.id)?
            .into_iter()
            .find(|(n, _)| !holding.contains(n))
        else {
            return Ok(None);
        };
        let to = format!("{n}:{d}");
        let p = PendingRebuild {
            slot: i,
            copy: to.clone(),
        };
        self.store
            .txn(Txn::new().put(pending_key(&self.node, &v.id), enc(&p)))?;
        self.set_copy_device(v, i, &to)?;
        tracing::info!(volume = %v.id, copy = i, from = %copy, to = %to,
            "rebuilding a copy on another node");
        Ok(Some(to))
    }

    /// Wakes the rebuild scan when a pending rebuild's new copy has been made by its node (its
    /// held-copy record exists), so it joins the set now rather than at the scan's next
    /// period (5 s). Called at every copy-agent pass; nothing is read but the pending records
    /// when none waits.
    pub(super) fn wake_for_made_copies(&self) -> Result<(), ControlError> {
        let prefix = pending_key(&self.node, "");
        for (k, p) in self.list::<PendingRebuild>(&prefix, None, 0)? {
            let Some(vol) = k.strip_prefix(&prefix) else {
                continue;
            };
            let Some((n, _)) = split_copy(&p.copy) else {
                continue;
            };
            if self
                .get::<HeldCopy>(&super::cluster_copies::held_key(n, vol))?
                .is_some()
            {
                self.wake_rebuilds();
                break;
            }
        }
        Ok(())
    }

    /// The pending new copy `copy` of slot `i` joins the set as new (every region), once its
    /// node's agent has made it; then the pending record goes.
    fn join_new_remote(&self, v: &Volume, set: &strata_replica::ReplicaSet, i: usize, copy: &str) {
        let Some((n, _)) = split_copy(copy) else {
            return;
        };
        if !matches!(
            self.get::<HeldCopy>(&super::cluster_copies::held_key(n, &v.id)),
            Ok(Some(_))
        ) {
            return;
        }
        let Some(t) = self.remote_target(v, copy) else {
            return;
        };
        match set.replace(i, t) {
            Ok(()) => {
                let _ = self
                    .store
                    .txn(Txn::new().delete(pending_key(&self.node, &v.id)));
                self.remote_copy_fine(v, i);
                if let Some(nv) = self.volume_record(&v.id) {
                    if let Err(e) = self.refresh_handle(&nv) {
                        tracing::warn!(volume = %v.id, error = %e,
                            "exports not pointed at the new copy");
                    }
                }
                self.sets.signals.raise_work();
                tracing::info!(volume = %v.id, copy = i, to = %copy, "new copy joined: rebuilding");
            }
            Err(e) => {
                tracing::warn!(volume = %v.id, copy = i, error = %e, "new copy not joined yet")
            }
        }
    }
}
