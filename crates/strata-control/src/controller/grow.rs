//! Moving a copy of a replicated volume without lowering its redundancy (a rebalance's move):
//! the volume's set grows by a member, the new copy on the destination device, which the
//! resync job copies whole while every client write reaches it too; once it is healthy the
//! old member is retired, the record names the new device in the old one's slot, and the old
//! engine volume is deleted (docs/placement.md, "Moving a copy of a replicated volume";
//! docs/replicas.md, "Growing and retiring members").
//!
//! # Invariants
//! - The record is the truth: until the switch it names the old devices only, so a failure or
//!   a crash before the switch leaves the volume on its old copies (the set's log names one
//!   member more; `ReplicaSet::open` drops it, and the new engine volume is an orphan swept at
//!   the next start, `orphans.rs`).
//! - Redundancy never drops: the old member keeps serving and counting for the acknowledgement
//!   until the new one is healthy, and it is retired only then.
//! - The switch (flush, retire, record) runs under the volume's write gate held exclusive: no
//!   client write is in flight or starts between the retire and the record. So at any crash
//!   the copies the record names hold every acknowledged write: before the retire the old
//!   member is in step; after it, in the slot the log names in sync, it still holds everything
//!   (nothing was written since the flush under the gate).
//! - A record that cannot be written after the retire puts the old copy back in its slot
//!   (added again, rebuilt whole, the new member retired), so the set never disagrees with
//!   the record.
//! - The destination holds no other copy of the volume (checked when the copy is made):
//!   failure domains stay distinct.

use std::sync::Arc;

use strata_replica::{CopyState, CopyTarget, ReplicaSet};

use super::drain::Grow;
use super::events::EventKind;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

impl Controller {
    /// Adds the new copy `target` (on `to`, for slot `slot`) to `set` as a new member and
    /// records the move, which [`Controller::finish_grows`] ends. Called under the volume's
    /// write gate (the snapshot join).
    pub(super) fn grow_started(
        &self,
        v: &Volume,
        set: &Arc<ReplicaSet>,
        slot: usize,
        to: &str,
        target: Arc<dyn CopyTarget>,
    ) -> Result<(), ControlError> {
        let from =
            v.copy_devices().get(slot).cloned().ok_or_else(|| {
                ControlError::internal(format!("volume {}: no slot {slot}", v.id))
            })?;
        let label = target.describe();
        let index = set
            .add(target)
            .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
        self.drains.growing.lock().insert(
            v.id.clone(),
            Grow {
                set: set.clone(),
                slot,
                index,
                label,
                from,
                to: to.to_string(),
            },
        );
        Ok(())
    }

    /// The device of member `index` of `v`'s set when it is a move's new member.
    pub(super) fn growing_member(&self, id: &str, index: usize) -> Option<String> {
        self.drains
            .growing
            .lock()
            .get(id)
            .filter(|g| g.index == index)
            .map(|g| g.to.clone())
    }

    /// Ends the moves whose new member is in step (switch), or whose new member failed or
    /// whose volume went away (given up: the volume stays on its old copies).
    pub(super) fn finish_grows(&self) {
        let ids: Vec<String> = self.drains.growing.lock().keys().cloned().collect();
        for id in ids {
            let Some((set, index, label)) = self
                .drains
                .growing
                .lock()
                .get(&id)
                .map(|g| (g.set.clone(), g.index, g.label.clone()))
            else {
                continue;
            };
            let member = set.copies().into_iter().find(|c| c.index == index);
            let v = self
                .volume_record(&id)
                .filter(|v| v.state == VolumeState::Available);
            let gone = match (&v, &member) {
                (None, _) => Some("the volume is no longer available".to_string()),
                (_, None) => Some("the new member left the set".to_string()),
                (_, Some(c)) if c.label != label => {
                    Some("the set's members changed under the move".to_string())
                }
                (_, Some(c)) if c.state == CopyState::Faulted => {
                    Some("the new copy failed while it was filled".to_string())
                }
                _ => None,
            };
            if let Some(why) = gone {
                self.give_up_grow(&id, v.as_ref(), &why);
                continue;
            }
            let (Some(v), Some(c)) = (v, member) else {
                continue;
            };
            if c.state != CopyState::Healthy {
                continue;
            }
            match self.switch_grow(&v) {
                Ok(true) => {}
                Ok(false) => {}
                Err(e) => self.give_up_grow(&id, Some(&v), &e.to_string()),
            }
        }
    }

    /// The switch of a move whose new member is healthy: under the write gate, flush, retire
    /// the old member, record the new device; then the exports, the old copy, the events.
    /// Ok(false) when it must wait (the record changed: given up by the caller on error).
    fn switch_grow(&self, v: &Volume) -> Result<bool, ControlError> {
        let internal = |e: strata_replica::ReplicaError| {
            ControlError::internal(format!("volume {}: {e}", v.id))
        };
        let gate = self.write_gate(&v.id);
        let g = gate.write();
        let Some(v) = self.volume_record(&v.id) else {
            return Ok(false);
        };
        let Some(mv) = self.drains.growing.lock().remove(&v.id) else {
            return Ok(false);
        };
        if v.copy_devices().get(mv.slot) != Some(&mv.from) || v.copy_devices().contains(&mv.to) {
            self.drains.growing.lock().insert(v.id.clone(), mv);
            return Err(ControlError::Busy(format!(
                "volume {} changed while its copy moved",
                v.name
            )));
        }
        let old_target = self.targets(&v).swap_remove(mv.slot);
        if let Err(e) = mv.set.flush().and_then(|()| mv.set.retire(mv.slot)) {
            // Nothing changed: the new member stays, the move is tried again next pass.
            tracing::warn!(volume = %v.id, error = %e, "move not switched yet");
            self.drains.growing.lock().insert(v.id.clone(), mv);
            return Ok(false);
        }
        if let Err(e) = self.set_copy_device(&v, mv.slot, &mv.to) {
            // The record still names the old device in the slot: put the old copy back
            // there (it holds everything up to the retire, and rebuilds whole to be sure),
            // and take the new member out again.
            let back = mv
                .set
                .add(old_target)
                .map_err(internal)
                .and_then(|_| mv.set.retire(mv.slot).map_err(internal));
            if let Err(b) = back {
                tracing::error!(volume = %v.id, error = %b,
                    "the old copy could not be put back after the record failed");
            }
            drop(g);
            self.delete_engine_copy(&mv.to, &v.id);
            return Err(e);
        }
        let mut nv = v.clone();
        nv.copies = v.copy_devices();
        nv.copies[mv.slot] = mv.to.clone();
        drop(g);
        if let Err(e) = self.refresh_handle(&nv) {
            tracing::warn!(volume = %v.id, error = %e, "exports not pointed at the new copy");
        }
        self.delete_engine_copy(&mv.from, &v.id);
        tracing::info!(volume = %v.id, copy = mv.slot, from = %mv.from, to = %mv.to,
            "replicated copy moved");
        self.audit_event(
            Some(&v.tenant),
            "volume.moved",
            &v.id,
            &format!("copy {} from {} to {}", mv.slot, mv.from, mv.to),
        );
        self.volume_event(
            EventKind::Moved,
            &v.id,
            format!(
                "copy {} moved from device {} to {} (the set held {} copies meanwhile)",
                mv.slot,
                mv.from,
                mv.to,
                nv.copies.len() + 1
            ),
        );
        Ok(true)
    }

    /// Gives a move up: the new member leaves the set (when it is still in it), its engine
    /// volume is deleted, the volume stays on its old copies.
    fn give_up_grow(&self, id: &str, v: Option<&Volume>, why: &str) {
        let Some(mv) = self.drains.growing.lock().remove(id) else {
            return;
        };
        {
            let gate = self.write_gate(id);
            let _g = gate.write();
            let still = mv
                .set
                .copies()
                .into_iter()
                .any(|c| c.index == mv.index && c.label == mv.label);
            if still {
                if let Err(e) = mv.set.retire(mv.index) {
                    tracing::warn!(volume = %id, error = %e,
                        "the new member could not leave the set: it is dropped at the next open");
                }
            }
        }
        // Not while a record names the device (a rebuild may have put a copy there since).
        if v.is_none_or(|v| !v.copy_devices().contains(&mv.to)) {
            self.delete_engine_copy(&mv.to, id);
        }
        tracing::warn!(volume = %id, from = %mv.from, to = %mv.to, reason = why,
            "copy not moved; it stays where it was");
        self.volume_event(
            EventKind::RebalanceMoveFailed,
            id,
            format!(
                "copy {} not moved from device {} to {}: {why}; it stays where it was",
                mv.slot, mv.from, mv.to
            ),
        );
    }

    /// Deletes volume `id`'s engine volume on device `dev`, if any.
    fn delete_engine_copy(&self, dev: &str, id: &str) {
        if let Some(p) = self.device_engine(dev) {
            if let Ok(e) = p.volume_id(id) {
                if let Err(err) = p.delete_volume(e, true) {
                    tracing::warn!(device = dev, volume = id, error = %err,
                        "copy not deleted: swept as an orphan at the next start");
                }
            }
        }
    }
}
