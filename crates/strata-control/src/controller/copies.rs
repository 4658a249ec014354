//! A volume's copies in the engine: each copy is an engine volume named by the volume's id in
//! the engine pool of one device (`Volume::copy_devices`). Management operations that change a
//! volume's layers (create, snapshot, clone, rollback, resize) act on every copy, inside the
//! volume's write gate, so the copies' layer trees stay alike and a snapshot is one instant on
//! all of them.
//!
//! # Invariants
//! - A change to a volume's layers needs every copy reachable and in step: with one gone,
//!   resyncing or mid-move it is refused with `volume_degraded` (409) and changes nothing (a
//!   new copy is given the volume's snapshots before it joins: `snapcopy.rs`).
//! - Every copy has the volume's QoS limits and its tenant's share class: each meters the same
//!   writes, so the limit holds once (reads are metered once, by the export, on one copy).
//! - Deleting acts on every copy it reaches; a copy on a device that is away is left there
//!   and logged.

use std::sync::Arc;

use strata_block::{Pool, VolumeId};

use super::shares::class_of;
use super::Controller;
use crate::error::{ControlError, DeviceProblem};
use crate::model::*;

/// A copy being brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncView {
    /// Its index in the set.
    pub copy: usize,
    /// Its device.
    pub device: String,
    /// Bytes copied onto it so far.
    pub done: u64,
    /// Bytes to copy in all.
    pub total: u64,
    /// A whole rebuild (a new copy), not the regions a returning copy missed.
    pub rebuild: bool,
}

/// One copy of a volume: its device, engine pool and engine volume.
#[derive(Debug, Clone)]
pub(crate) struct EngineCopy {
    /// The device id.
    pub device: String,
    /// Its engine pool.
    pub pool: Pool,
    /// The copy's engine volume.
    pub volume: VolumeId,
}

fn degraded(v: &Volume, device: &str) -> ControlError {
    ControlError::device(
        DeviceProblem::Degraded,
        format!(
            "volume {} has a copy on device {device}, which is not usable: its layers cannot \
             change until the copy is rebuilt",
            v.name
        ),
    )
}

/// How many of a volume's copies are healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyHealth {
    /// Copies the volume has.
    pub copies: u8,
    /// Copies reachable and in step.
    pub healthy: u8,
}

impl CopyHealth {
    /// Fewer healthy copies than copies.
    pub fn degraded(&self) -> bool {
        self.healthy < self.copies
    }
}

impl Controller {
    /// How many of `v`'s copies are healthy.
    pub fn volume_health(&self, v: &Volume) -> CopyHealth {
        let all = v.copy_devices();
        let reachable = self.reachable_copies_indexed(v);
        // A replicated volume's copy is healthy when its device is usable and its set says
        // it is in step (not faulted, not still resyncing).
        let healthy = if all.len() > 1 {
            match self.replica_set(v) {
                Ok(set) => set
                    .copies()
                    .iter()
                    .filter(|c| {
                        c.state == strata_replica::CopyState::Healthy
                            && (reachable.iter().any(|(i, _)| *i == c.index)
                                || all.get(c.index).is_some_and(|d| {
                                    super::cluster_copies::split_copy(d).is_some()
                                }))
                    })
                    .count(),
                Err(_) => 0,
            }
        } else {
            reachable.len()
        };
        CopyHealth {
            copies: all.len() as u8,
            healthy: healthy as u8,
        }
    }

    /// The engine pool of device `id` when usable.
    pub(super) fn device_engine(&self, id: &str) -> Option<Pool> {
        self.storage.engine(id)
    }

    /// The copies of `v` that are reachable, copy order kept.
    pub(crate) fn reachable_copies(&self, v: &Volume) -> Vec<EngineCopy> {
        // Another node's device ids name none of ours (`node_scope.rs`).
        if !self.is_local(v) {
            return vec![];
        }
        v.copy_devices()
            .into_iter()
            .filter_map(|d| {
                let pool = self.device_engine(&d)?;
                let volume = pool.volume_id(&v.id).ok()?;
                Some(EngineCopy {
                    device: d,
                    pool,
                    volume,
                })
            })
            .collect()
    }

    /// The reachable copies of `v` with their index among its copies.
    pub(crate) fn reachable_copies_indexed(&self, v: &Volume) -> Vec<(usize, EngineCopy)> {
        if !self.is_local(v) {
            return vec![];
        }
        v.copy_devices()
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let pool = self.device_engine(&d)?;
                let volume = pool.volume_id(&v.id).ok()?;
                Some((
                    i,
                    EngineCopy {
                        device: d,
                        pool,
                        volume,
                    },
                ))
            })
            .collect()
    }

    /// Every copy of `v` as recorded now (callers hold the volume's gate, so the copies do
    /// not move under them), or `volume_degraded` naming the first that is not reachable, or
    /// when a copy is not in step (`snapcopy.rs`, `layers_steady`).
    pub(super) fn every_copy(&self, v: &Volume) -> Result<Vec<EngineCopy>, ControlError> {
        let v = &self.volume_record(&v.id).unwrap_or_else(|| v.clone());
        self.require_local(v)?;
        self.require_one_node(v)?;
        let mut out = vec![];
        for d in v.copy_devices() {
            let pool = self.device_engine(&d).ok_or_else(|| degraded(v, &d))?;
            let volume = pool.volume_id(&v.id).map_err(|_| {
                ControlError::internal(format!("volume {} missing from device {d}", v.id))
            })?;
            out.push(EngineCopy {
                device: d,
                pool,
                volume,
            });
        }
        self.layers_steady(v)?;
        Ok(out)
    }

    /// The first reachable copy (for figures and reads of the engine's state).
    pub(super) fn primary(&self, v: &Volume) -> Result<EngineCopy, ControlError> {
        self.reachable_copies(v)
            .into_iter()
            .next()
            .ok_or_else(|| ControlError::internal(format!("volume {}: no copy is reachable", v.id)))
    }

    /// The gate writes to `v` pass (shared) and layer changes hold (exclusive).
    pub(crate) fn write_gate(&self, volume_id: &str) -> Arc<parking_lot::RwLock<()>> {
        self.gates
            .lock()
            .entry(volume_id.to_string())
            .or_default()
            .clone()
    }

    /// Gives every reachable copy of `v` its limits and its tenant's share class.
    pub(super) fn apply_io(&self, v: &Volume) -> Result<(), ControlError> {
        for c in self.reachable_copies(v) {
            c.pool.set_qos(c.volume, v.qos.limits())?;
            c.pool
                .set_volume_class(c.volume, class_of(&v.tenant))
                .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
        }
        Ok(())
    }
}
