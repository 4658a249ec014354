//! Draining a device before it leaves its pool: `pool remove-device` on a device that holds
//! copies marks it `draining` (it takes no new copies) and the daemon's worker moves each copy
//! to another device of the pool, then removes the device (docs/pools.md).
//!
//! # How a copy moves
//! - A copy of a **replicated** volume: the slot is taken out of the set and a new copy on
//!   another device takes it, rebuilt whole from the other copies (the rebuild's path). The
//!   volume has one copy fewer in step until the rebuild ends; a slot that is the last healthy
//!   copy is not taken out (the drain waits).
//! - A **one-copy** volume: a temporary two-copy set over the old copy and a new one carries
//!   the volume's I/O (its exports are repointed) while the resync copies everything; once the
//!   new copy is in step, the record names the new device, the exports are repointed at it
//!   alone and the old copy is deleted. Until then the record still names the old device: a
//!   crash leaves the volume where it was, and the drain starts over.
//! - A volume with snapshots moves the same way: the new copy is first given the volume's
//!   snapshots, oldest first, and takes its place in the set (or the temporary set) only once
//!   it holds all of them (`snapcopy.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use strata_replica::{CopyTarget, FileIntentLog, ReplicaSet};

use super::events::EventKind;
use super::snapcopy::Join;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;
use crate::storage::VolumeHandle;

/// One-copy volumes being moved, by volume id; replicated volumes growing by a member.
#[derive(Default)]
pub(super) struct Drains {
    moving: Mutex<HashMap<String, Move>>,
    pub(super) growing: Mutex<HashMap<String, Grow>>,
}

/// A copy of a replicated volume on its way to another device: its set holds one member
/// more (the new copy, last) until the new copy is in step; then the old member is retired
/// and the record names the new device in its slot (`grow.rs`).
pub(super) struct Grow {
    pub(super) set: Arc<ReplicaSet>,
    /// The record's slot that moves.
    pub(super) slot: usize,
    /// The new member's index in the set (the record's copy count).
    pub(super) index: usize,
    /// The new member's label (`DEVICE/VOLUME`): the index still names it.
    pub(super) label: String,
    pub(super) from: String,
    pub(super) to: String,
}

/// A one-copy volume on its way to another device.
struct Move {
    set: Arc<ReplicaSet>,
    to: String,
    log: std::path::PathBuf,
}

impl Controller {
    /// Marks `device` draining: the worker moves its copies, then removes it.
    pub(super) fn mark_draining(
        &self,
        pool: &str,
        device: &str,
    ) -> Result<PoolRecord, ControlError> {
        self.update_pool(pool, |rec| {
            if let Some(d) = rec.devices.iter_mut().find(|d| d.id == device) {
                d.state = DeviceState::Draining;
            }
            Ok(())
        })
        .map(|(rec, ())| rec)
    }

    /// One pass of draining: moves the next copy off each draining device, finishes moves
    /// whose new copy is in step, and removes devices that hold no copy any more.
    pub fn drain_pass(&self) {
        self.finish_moves();
        self.finish_grows();
        let Ok(pools) = self.local_pools() else {
            return;
        };
        // The common case costs one short listing: no device is draining.
        if !pools
            .iter()
            .any(|p| p.devices.iter().any(|d| d.state == DeviceState::Draining))
        {
            return;
        }
        let Ok(vols) = self.local_volumes() else {
            return;
        };
        for p in pools {
            for d in p
                .devices
                .iter()
                .filter(|d| d.state == DeviceState::Draining)
            {
                let on: Vec<&Volume> = vols
                    .iter()
                    .map(|(_, v)| v)
                    .filter(|v| v.copy_devices().contains(&d.id))
                    .collect();
                if on.is_empty() {
                    self.finish_drain(&p.name, &d.id);
                    continue;
                }
                for v in on {
                    if v.state != VolumeState::Available
                        || self.drains.moving.lock().contains_key(&v.id)
                        || self.drains.growing.lock().contains_key(&v.id)
                        || self.snapshot_copy_pending(&v.id)
                    {
                        continue;
                    }
                    let slot = v
                        .copy_devices()
                        .iter()
                        .position(|c| c == &d.id)
                        .unwrap_or(0);
                    let r = if v.copy_devices().len() > 1 {
                        self.move_replicated(v, slot)
                    } else {
                        self.start_move(v)
                    };
                    match r {
                        Ok(()) => {
                            self.audit_event(
                                Some(&v.tenant),
                                "volume.move",
                                &v.id,
                                &format!("copy {slot} off draining device {}", d.id),
                            );
                            self.volume_event(
                                EventKind::MoveStarted,
                                &v.id,
                                format!("copy {slot} moving off draining device {}", d.id),
                            );
                        }
                        Err(e) => tracing::warn!(volume = %v.id, device = %d.id, error = %e,
                            "drain: copy not moved yet"),
                    }
                }
            }
        }
    }

    /// The new copy takes the slot once it holds the volume's snapshots (`snapcopy.rs`: the
    /// slot is faulted, replaced, recorded; the old copy deleted).
    fn move_replicated(&self, v: &Volume, slot: usize) -> Result<(), ControlError> {
        let set = self.replica_set(v)?;
        let (dev, target) = self.new_copy(v, slot)?;
        self.give_new_copy(v, slot, &dev, target, Join::Move(set))
    }

    /// The new copy of a one-copy volume joins a temporary set once it holds the volume's
    /// snapshots (`snapcopy.rs`, then [`Controller::move_set`] and `move_started`).
    fn start_move(&self, v: &Volume) -> Result<(), ControlError> {
        let (to, target) = self.new_copy(v, 0)?;
        self.give_new_copy(v, 0, &to, target, Join::MoveSingle)
    }

    /// The device a volume is moving to: a one-copy volume while its temporary set carries
    /// it, a replicated one while its set holds the new member beside the old.
    pub(super) fn moving_to(&self, id: &str) -> Option<String> {
        if let Some(g) = self.drains.growing.lock().get(id) {
            return Some(g.to.clone());
        }
        self.drains.moving.lock().get(id).map(|m| m.to.clone())
    }

    /// The temporary two-copy set of a one-copy volume's move, over its copy and the new
    /// `target`, rebuilding the new one; registered among the open sets. Called under the
    /// volume's write gate, so no layer change sees the set half made.
    pub(super) fn move_set(
        &self,
        v: &Volume,
        target: Arc<dyn CopyTarget>,
    ) -> Result<(Arc<ReplicaSet>, std::path::PathBuf), ControlError> {
        let old = self.targets(v).remove(0);
        let log = self.intent_log(v)?.path().with_extension("move.intent");
        let _ = std::fs::remove_file(&log);
        let set = ReplicaSet::create(
            vec![old, target.clone() as Arc<dyn CopyTarget>],
            Box::new(FileIntentLog::new(&log)),
        )
        .and_then(|s| {
            s.fault(1)?;
            s.replace(1, target)?;
            Ok(s)
        })
        .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
        let set = Arc::new(set);
        self.sets.sets.lock().insert(v.id.clone(), set.clone());
        Ok((set, log))
    }

    /// Points a one-copy volume's exports at its temporary set (outside the write gate: the
    /// swap waits for requests in flight) and records the move, which `finish_moves` ends.
    pub(super) fn move_started(
        &self,
        v: &Volume,
        to: &str,
        set: Arc<ReplicaSet>,
        log: std::path::PathBuf,
    ) -> Result<(), ControlError> {
        let to = to.to_string();
        let c = self.primary(v)?;
        let meter = c
            .pool
            .io(c.volume)
            .map_err(|e| ControlError::internal(e.to_string()))?;
        let new_pool = self
            .device_engine(&to)
            .ok_or_else(|| ControlError::internal("the new copy's device went away"))?;
        let new_eid = new_pool.volume_id(&v.id)?;
        let h = VolumeHandle::Replicated {
            set: set.clone(),
            meter,
            copies: vec![(c.pool.clone(), c.volume), (new_pool, new_eid)],
            gate: self.write_gate(&v.id),
            name: v.id.clone(),
        };
        let cell = self
            .handle_cell(v)
            .map_err(|e| ControlError::internal(e.to_string()))?;
        *cell.write() = h;
        self.drains
            .moving
            .lock()
            .insert(v.id.clone(), Move { set, to, log });
        Ok(())
    }

    /// Moves whose new copy is in step: the record names it, the exports go to it alone, the
    /// old copy goes.
    fn finish_moves(&self) {
        let done: Vec<(String, Move)> = {
            let mut m = self.drains.moving.lock();
            let ids: Vec<String> = m
                .iter()
                .filter(|(_, mv)| {
                    !mv.set.degraded()
                        && mv
                            .set
                            .copies()
                            .iter()
                            .all(|c| c.state == strata_replica::CopyState::Healthy)
                })
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter()
                .filter_map(|k| m.remove(&k).map(|v| (k, v)))
                .collect()
        };
        for (id, mv) in done {
            let Some(v) = self.volume_record(&id) else {
                continue;
            };
            let gate = self.write_gate(&id);
            let _g = gate.write();
            if let Err(e) = mv.set.flush() {
                tracing::warn!(volume = %id, error = %e, "move not finished: flush failed");
                self.drains.moving.lock().insert(id, mv);
                continue;
            }
            let old = v.copy_devices()[0].clone();
            if let Err(e) = self.set_copy_device(&v, 0, &mv.to) {
                tracing::warn!(volume = %id, error = %e, "move not recorded");
                self.drains.moving.lock().insert(id, mv);
                continue;
            }
            self.sets.sets.lock().remove(&id);
            let mut nv = v.clone();
            nv.copies = vec![mv.to.clone()];
            drop(_g);
            let _ = self.refresh_handle(&nv);
            let _ = std::fs::remove_file(&mv.log);
            if let Some(p) = self.device_engine(&old) {
                if let Ok(e) = p.volume_id(&id) {
                    let _ = p.delete_volume(e, true);
                }
            }
            tracing::info!(volume = %id, from = %old, to = %mv.to, "volume moved");
            self.audit_event(
                Some(&v.tenant),
                "volume.moved",
                &id,
                &format!("from {old} to {}", mv.to),
            );
            self.volume_event(
                EventKind::Moved,
                &id,
                format!("moved from device {old} to {}", mv.to),
            );
        }
    }

    fn finish_drain(&self, pool: &str, device: &str) {
        let _g = self.pool_lock.lock();
        let removed = self.update_pool(pool, |rec| {
            rec.devices.retain(|d| d.id != device);
            Ok(())
        });
        if removed.is_ok() {
            if let Some(d) = self.storage.remove(device) {
                if let Some(e) = d.engine {
                    let _ = e.flush();
                }
            }
            tracing::info!(pool, device, "device drained and removed");
            self.audit_event(None, "device.removed", device, "drained");
            self.event(
                EventKind::DeviceRemoved,
                device,
                None,
                format!("device {device} drained and removed from pool {pool}"),
            );
        }
    }
}
