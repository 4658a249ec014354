//! Start: [`Controller::open`] reconciles the store with the engine after whatever a crash
//! interrupted.
//!
//! # Invariants
//! - Every `creating` record is finished (the engine has the volume) or undone; every
//!   `deleting` record is finished.
//! - QoS limits are applied to the engine again; a recorded size the engine does not have is
//!   carried out, or the engine's size kept when it cannot be.
//! - Usage is derived state: it is recounted from the records, and so is the pool's
//!   provisioned figure (`pools.rs`).
//! - Attachments are reloaded into the export set; stored switches are rebuilt.

use strata_block::Pool;
use strata_state::{Store, Txn};

use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// The node name of a controller opened without one (tests, tools).
pub const LOCAL_NODE: &str = "local";

impl Controller {
    /// Wraps a store and the pool as node [`LOCAL_NODE`], finishing what a crash interrupted.
    pub fn open(store: Box<dyn Store>, pool: Pool) -> Result<Controller, ControlError> {
        Self::open_node(store, pool, LOCAL_NODE)
    }

    /// Wraps a store and the pool as node `node` (its pools are `/nodes/{node}/pools/`),
    /// finishing what a crash interrupted.
    pub fn open_node(
        store: Box<dyn Store>,
        pool: Pool,
        node: &str,
    ) -> Result<Controller, ControlError> {
        super::store::validate_name("node", node)?;
        let c = Controller {
            store: std::sync::Arc::from(store),
            node: node.to_string(),
            legacy_node: Default::default(),
            pool,
            switches: Default::default(),
            nbd_socket: Default::default(),
            exports: Default::default(),
            nbd_tcp: Default::default(),
            nbd: Default::default(),
            tenant_pipes: Default::default(),
            allocation: Default::default(),
            vpc: Default::default(),
            storage: Default::default(),
            sets: Default::default(),
            scrubs: Default::default(),
            drains: Default::default(),
            rounds: Default::default(),
            snapcopies: Default::default(),
            data_dir: Default::default(),
            pool_lock: Default::default(),
            gates: Default::default(),
            events: Default::default(),
            schedules: Default::default(),
            liveness: Default::default(),
            node_port: Default::default(),
        };
        c.load_events()?;
        c.migrate_node_records()?;
        let default = c.pool.clone();
        c.open_storage(&default)?;
        c.recover()?;
        c.switches.restore(c.store.as_ref())?;
        c.restore_networks()?;
        // Job slices use the networks and volumes: settled once both are back.
        c.recover_job_slices()?;
        Ok(c)
    }

    /// Finishes or undoes volume changes a crash interrupted, and reloads the attachments.
    pub(super) fn recover(&self) -> Result<(), ControlError> {
        for (_, a) in self.list::<Attachment>("/attachments/", None, 0)? {
            self.exports.write().insert(a.export);
        }
        let r = self
            .recover_shares()
            .and_then(|()| self.recover_volumes())
            .and_then(|()| self.recover_groups());
        // Copies a crash left that no record names (an interrupted rebuild or move) free their
        // room; a failure here only keeps them until the next start.
        if r.is_ok() {
            if let Err(e) = self.sweep_orphans() {
                tracing::warn!(error = %e, "orphan copies not swept");
            }
        }
        // Usage is derived state: recount it from the records, whatever a crash left behind.
        self.recount_usage()?;
        r
    }

    /// Sets every tenant's usage to what its volume, snapshot, schedule, job, network and port
    /// records add up to.
    pub(super) fn recount_usage(&self) -> Result<(), ControlError> {
        let mut counted: std::collections::HashMap<String, Usage> = Default::default();
        let mut provisioned: std::collections::BTreeMap<String, u128> = Default::default();
        for (_, v) in self.list::<Volume>("/volumes/", None, 0)? {
            // Every record was charged with checked sums, so these fit; saturate all the same
            // rather than wrap on records edited by hand.
            let u = counted.entry(v.tenant.clone()).or_default();
            u.capacity_bytes = u.capacity_bytes.saturating_add(v.size);
            u.volumes = u.volumes.saturating_add(1);
            u.iops = u.iops.saturating_add(v.qos.iops_limit.unwrap_or(0));
            // A pool's provisioned figure counts this node's volumes only (its pools).
            if self.is_local(&v) {
                *provisioned.entry(v.pool.clone()).or_default() +=
                    u128::from(super::volumes::provisioned(&v));
            }
        }
        // And the copies this node holds for other nodes' volumes.
        for (pool, bytes) in self.held_provisioned()? {
            *provisioned.entry(pool).or_default() += u128::from(bytes);
        }
        self.set_provisioned(provisioned)?;
        for (_, s) in self.list::<Snapshot>("/snapshots/", None, 0)? {
            let u = counted.entry(s.tenant.clone()).or_default();
            u.snapshots = u.snapshots.saturating_add(1);
        }
        for (tenant, gpus) in self.job_gpus()? {
            let u = counted.entry(tenant).or_default();
            u.gpus = u.gpus.saturating_add(gpus);
        }
        for (_, s) in self.list::<SnapshotSchedule>("/snapshot-schedules/", None, 0)? {
            let u = counted.entry(s.tenant.clone()).or_default();
            u.snapshot_schedules = u.snapshot_schedules.saturating_add(1);
        }
        for (tenant, networks, ports) in self.network_counts()? {
            let u = counted.entry(tenant).or_default();
            u.networks = networks;
            u.ports = ports;
        }
        for (_, t) in self.list::<Tenant>("/tenants/", None, 0)? {
            let want = counted.remove(&t.name).unwrap_or_default();
            if t.usage != want {
                tracing::warn!(tenant = %t.name, "recounting usage");
                self.with_tenant(&t.name, |t| {
                    t.usage = want.clone();
                    Ok((Txn::new(), ()))
                })?;
            }
        }
        Ok(())
    }

    pub(super) fn recover_volumes(&self) -> Result<(), ControlError> {
        // Another node's volumes are that node's to finish (`node_scope.rs`).
        for (_, v) in self.local_volumes()? {
            match v.state {
                VolumeState::Available => {
                    // Limits are desired state: the engine learns them again at every start.
                    self.apply_io(&v)?;
                    // A resize or rollback recorded but not carried out before a crash:
                    // carry it out, or keep the engine's size if it cannot be.
                    for c in self.reachable_copies(&v) {
                        let have = c.pool.volume(c.volume)?.size;
                        if have != v.size && c.pool.resize_volume(c.volume, v.size).is_err() {
                            tracing::warn!(volume = %v.id, device = %c.device,
                                "keeping the engine's size");
                            self.set_size(&v, have, false)?;
                        }
                    }
                }
                VolumeState::Creating => {
                    // Available only when every copy was made; otherwise the copies made go.
                    let all = v.copy_devices().iter().all(|d| {
                        self.device_engine(d)
                            .is_some_and(|p| p.volume_id(&v.id).is_ok())
                    });
                    if all {
                        self.set_state(&v, VolumeState::Available)?;
                    } else {
                        tracing::warn!(volume = %v.id, "undoing an interrupted create");
                        self.drop_copies(&v);
                        self.forget_volume(&v)?;
                    }
                }
                VolumeState::Deleting => {
                    tracing::warn!(volume = %v.id, "finishing an interrupted delete");
                    self.finish_delete(&v)?;
                }
            }
        }
        Ok(())
    }
}
