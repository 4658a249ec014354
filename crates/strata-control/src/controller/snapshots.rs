//! Snapshots: take, list, delete, clone into a new volume, roll a volume back.
//!
//! # Invariants
//! - Snapshot names are unique per volume; the count quota is checked in the quota transaction.
//! - A clone is a volume like any other (`creating` first, in the snapshot's tenant).
//! - A rollback records the snapshot's size and the usage before the engine acts, and reverts
//!   both if the engine refuses.

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::tenants::{charge, Charge};
use super::{Controller, DEFAULT_POOL};
use crate::error::{ControlError, DeviceProblem, InUse, Resource};
use crate::model::*;

impl Controller {
    pub(super) fn volume_snapshots(&self, v: &Volume) -> Result<Vec<Snapshot>, ControlError> {
        Ok(self
            .list::<Snapshot>(&format!("/snapshots/{}/", v.tenant), None, 0)?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.volume == v.id)
            .collect())
    }

    /// Takes a snapshot of a volume.
    pub fn create_snapshot(
        &self,
        p: &Principal,
        vol: &str,
        name: &str,
    ) -> Result<Snapshot, ControlError> {
        self.take_snapshot(p, vol, name, None)
    }

    /// Takes a snapshot of a volume, recording the schedule that takes it, if one does.
    pub(super) fn take_snapshot(
        &self,
        p: &Principal,
        vol: &str,
        name: &str,
        schedule: Option<&str>,
    ) -> Result<Snapshot, ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, vol)?;
        self.require_local(&v)?;
        self.require_one_node(&v)?;
        validate_name("name", name)?;
        if self.store.get(&snapshot_name_key(&v.id, name))?.is_some() {
            return Err(ControlError::exists(Resource::Snapshot, name));
        }
        let s = Snapshot {
            id: new_id(),
            tenant: v.tenant.clone(),
            volume: v.id.clone(),
            name: name.to_string(),
            size: v.size,
            created: now(),
            group: None,
            schedule: schedule.map(str::to_string),
        };
        self.with_tenant(&v.tenant, |t| {
            if self.store.get(&snapshot_name_key(&v.id, name))?.is_some() {
                return Err(ControlError::exists(Resource::Snapshot, name));
            }
            let one = Charge {
                snapshots: 1,
                ..Charge::default()
            };
            charge(t, Charge::default(), one)?;
            Ok((
                Txn::new()
                    .when(snapshot_name_key(&v.id, name), 0)
                    .put(snapshot_name_key(&v.id, name), enc(&s.id))
                    .put(snapshot_index(&s.id), enc(&s.tenant))
                    .put(snapshot_key(&s.tenant, &s.id), enc(&s)),
                (),
            ))
        })?;
        // One instant on every copy: no write passes the gate while the copies snapshot.
        let gate = self.write_gate(&v.id);
        let _g = gate.write();
        let made = self.every_copy(&v).and_then(|copies| {
            for (i, c) in copies.iter().enumerate() {
                if let Err(e) = c.pool.create_snapshot(c.volume, &s.id) {
                    for d in &copies[..i] {
                        if let Ok(sid) = d.pool.snapshot_id(d.volume, &s.id) {
                            let _ = d.pool.delete_snapshot(sid);
                        }
                    }
                    return Err(e.into());
                }
            }
            Ok(())
        });
        if let Err(e) = made {
            self.forget_snapshot(&s)?;
            return Err(e);
        }
        Ok(s)
    }

    /// Removes a snapshot's records and gives back its count, once (a second call finds no
    /// record and changes nothing).
    pub(super) fn forget_snapshot(&self, s: &Snapshot) -> Result<(), ControlError> {
        let key = snapshot_key(&s.tenant, &s.id);
        self.with_tenant(&s.tenant, |t| {
            let Some((_, rev)) = self.get::<Snapshot>(&key)? else {
                return Ok((Txn::new(), ()));
            };
            let one = Charge {
                snapshots: 1,
                ..Charge::default()
            };
            charge(t, one, Charge::default())?;
            Ok((
                Txn::new()
                    .when(&key, rev)
                    .delete(key.clone())
                    .delete(snapshot_index(&s.id))
                    .delete(snapshot_name_key(&s.volume, &s.name)),
                (),
            ))
        })
    }

    /// Snapshots of a volume.
    pub fn list_snapshots(&self, p: &Principal, vol: &str) -> Result<Vec<Snapshot>, ControlError> {
        let v = self.get_volume(p, vol)?;
        self.volume_snapshots(&v)
    }

    /// A snapshot the caller may see.
    pub fn get_snapshot(&self, p: &Principal, id: &str) -> Result<Snapshot, ControlError> {
        let nf = || ControlError::not_found(Resource::Snapshot, id);
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Err(nf());
        }
        let (tenant, _) = self.get::<String>(&snapshot_index(id))?.ok_or_else(nf)?;
        if p.role != Role::Admin && p.tenant.as_deref() != Some(tenant.as_str()) {
            return Err(nf());
        }
        Ok(self
            .get::<Snapshot>(&snapshot_key(&tenant, id))?
            .ok_or_else(nf)?
            .0)
    }

    /// The engine id of snapshot `s` in the engine pool `pool` (one copy's).
    pub(super) fn engine_snapshot(
        pool: &strata_block::Pool,
        s: &Snapshot,
    ) -> Result<strata_block::SnapshotId, ControlError> {
        let vid = pool
            .volume_id(&s.volume)
            .map_err(|_| ControlError::internal("snapshot's volume missing from the pool"))?;
        pool.snapshot_id(vid, &s.id)
            .map_err(|_| ControlError::internal("snapshot missing from the pool"))
    }

    /// The devices of the copies of snapshot `s`'s volume (the volume may be gone: a
    /// snapshot outlives it only with its records, so this asks the record first).
    pub(super) fn snapshot_devices(&self, s: &Snapshot) -> Result<Vec<String>, ControlError> {
        Ok(self
            .get::<Volume>(&volume_key(&s.tenant, &s.volume))?
            .map(|(v, _)| v.copy_devices())
            .unwrap_or_else(|| vec![DEFAULT_DEVICE.to_string()]))
    }

    /// Deletes a snapshot.
    pub fn delete_snapshot(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let s = self.get_snapshot(p, id)?;
        if let Some(g) = &s.group {
            return Err(ControlError::InUse {
                what: InUse::SnapshotInGroup,
                message: format!(
                    "snapshot {} belongs to checkpoint group {g}: delete the group",
                    s.name
                ),
            });
        }
        if let Some((v, _)) = self.get::<Volume>(&volume_key(&s.tenant, &s.volume))? {
            self.require_local(&v)?;
            self.require_one_node(&v)?;
        }
        self.drop_snapshot_copies(&s)?;
        self.forget_snapshot(&s)
    }

    /// Deletes snapshot `s` from every copy it reaches (a copy on a device that is away is
    /// left there, and logged).
    /// Holds the volume's gate shared (no I/O waits; a new copy's join, which holds it
    /// exclusive, does: `snapcopy.rs`), and also reaches the new copy of a one-copy volume
    /// being moved.
    pub(super) fn drop_snapshot_copies(&self, s: &Snapshot) -> Result<(), ControlError> {
        let gate = self.write_gate(&s.volume);
        let _g = gate.read();
        let mut devices = self.snapshot_devices(s)?;
        devices.extend(self.moving_to(&s.volume));
        for d in devices {
            let Some(pool) = self.device_engine(&d) else {
                tracing::warn!(snapshot = %s.id, device = %d,
                    "a snapshot copy on a device that is away is left there");
                continue;
            };
            if let Ok(sid) = Self::engine_snapshot(&pool, s) {
                pool.delete_snapshot(sid)?;
            }
        }
        Ok(())
    }

    /// A new volume from a snapshot, in the snapshot's tenant.
    pub fn clone_snapshot(
        &self,
        p: &Principal,
        id: &str,
        name: &str,
        request_id: Option<String>,
    ) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        let s = self.get_snapshot(p, id)?;
        if let Some(rid) = &request_id {
            if let Some((vid, _)) = self.get::<String>(&request_key(&s.tenant, rid))? {
                return self.get_volume(p, &vid);
            }
        }
        validate_name("name", name)?;
        // A clone keeps its origin volume's limits (so it fits an IOPS quota as the origin
        // does, and a job cloned from a checkpoint runs under the same limits); `set-qos`
        // changes them afterwards. An origin deleted meanwhile leaves none.
        // It also shares the origin's data key: encrypted if the origin is.
        let origin = self
            .get::<Volume>(&volume_key(&s.tenant, &s.volume))?
            .map(|(o, _)| o);
        let (qos, encrypted) = origin
            .as_ref()
            .map(|o| (o.qos, o.encrypted))
            .unwrap_or_default();
        // The clone shares its origin's blocks, so its copies are where the origin's are.
        if let Some(o) = &origin {
            self.require_local(o)?;
            self.require_one_node(o)?;
        }
        let (pool, copies, node) = origin
            .as_ref()
            .map(|o| (o.pool.clone(), o.copies.clone(), self.volume_node(o)))
            .unwrap_or_else(|| (DEFAULT_POOL.to_string(), vec![], self.node.clone()));
        let v = Volume {
            id: new_id(),
            tenant: s.tenant.clone(),
            name: name.to_string(),
            size: s.size,
            pool,
            class: None,
            origin: Some(s.id.clone()),
            state: VolumeState::Creating,
            created: now(),
            qos,
            encrypted,
            copies,
            node,
        };
        if self.name_taken(&v.tenant, name) {
            return Err(ControlError::exists(Resource::Volume, name));
        }
        if let Some(id) = self.record_new_volume(&v, request_id.as_deref())? {
            return self.get_volume(p, &id);
        }
        let made = (|| {
            for d in v.copy_devices() {
                let pool = self.device_engine(&d).ok_or_else(|| {
                    ControlError::device(
                        DeviceProblem::Degraded,
                        format!("snapshot {}'s copy on device {d} is not usable", s.name),
                    )
                })?;
                let sid = Self::engine_snapshot(&pool, &s)?;
                pool.clone_snapshot(sid, &v.id, None)?;
            }
            Ok::<(), ControlError>(())
        })();
        if let Err(e) = made.and_then(|()| self.create_replica_set(&v)) {
            self.drop_copies(&v);
            self.forget_volume(&v)?;
            return Err(e);
        }
        self.apply_io(&v)?;
        self.set_state(&v, VolumeState::Available)
    }

    /// Rolls a volume back to one of its snapshots.
    pub fn rollback(
        &self,
        p: &Principal,
        vol: &str,
        snapshot: &str,
    ) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, vol)?;
        let s = self.get_snapshot(p, snapshot)?;
        if s.volume != v.id {
            return Err(ControlError::invalid(
                "snapshot",
                format!("snapshot {} is not a snapshot of volume {}", s.name, v.name),
            ));
        }
        let gate = self.write_gate(&v.id);
        let _g = gate.write();
        let copies = self.every_copy(&v)?;
        let sids = copies
            .iter()
            .map(|c| Self::engine_snapshot(&c.pool, &s))
            .collect::<Result<Vec<_>, _>>()?;
        let nv = self.set_size(&v, s.size, true)?;
        for (c, sid) in copies.iter().zip(sids) {
            // A rollback cannot be undone: a copy that fails it is out of step, and the
            // volume is degraded until that copy is rebuilt.
            if let Err(e) = c.pool.rollback(c.volume, sid) {
                if c.device == copies[0].device {
                    self.set_size(&nv, v.size, false)?;
                    return Err(e.into());
                }
                self.storage
                    .fault(&c.device, &format!("rollback failed: {e}"));
            }
        }
        Ok(nv)
    }
}
