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
use crate::error::{ControlError, InUse, Resource};
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
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, vol)?;
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
        let eid = self.engine_volume(&v)?;
        if let Err(e) = self.pool.create_snapshot(eid, &s.id) {
            self.forget_snapshot(&s)?;
            return Err(e.into());
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

    pub(super) fn engine_snapshot(
        &self,
        s: &Snapshot,
    ) -> Result<strata_block::SnapshotId, ControlError> {
        let vid = self
            .pool
            .volume_id(&s.volume)
            .map_err(|_| ControlError::internal("snapshot's volume missing from the pool"))?;
        self.pool
            .snapshot_id(vid, &s.id)
            .map_err(|_| ControlError::internal("snapshot missing from the pool"))
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
        if let Ok(sid) = self.engine_snapshot(&s) {
            self.pool.delete_snapshot(sid)?;
        }
        self.forget_snapshot(&s)
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
        let (qos, encrypted) = self
            .get::<Volume>(&volume_key(&s.tenant, &s.volume))?
            .map(|(o, _)| (o.qos, o.encrypted))
            .unwrap_or_default();
        let v = Volume {
            id: new_id(),
            tenant: s.tenant.clone(),
            name: name.to_string(),
            size: s.size,
            pool: DEFAULT_POOL.into(),
            class: None,
            origin: Some(s.id.clone()),
            state: VolumeState::Creating,
            created: now(),
            qos,
            encrypted,
        };
        if self.name_taken(&v.tenant, name) {
            return Err(ControlError::exists(Resource::Volume, name));
        }
        if let Some(id) = self.record_new_volume(&v, request_id.as_deref())? {
            return self.get_volume(p, &id);
        }
        let sid = self.engine_snapshot(&s)?;
        match self.pool.clone_snapshot(sid, &v.id, None) {
            Ok(eid) => self.apply_io(eid, &v)?,
            Err(e) => {
                self.forget_volume(&v)?;
                return Err(e.into());
            }
        }
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
        let (eid, sid) = (self.engine_volume(&v)?, self.engine_snapshot(&s)?);
        let nv = self.set_size(&v, s.size, true)?;
        if let Err(e) = self.pool.rollback(eid, sid) {
            self.set_size(&nv, v.size, false)?;
            return Err(e.into());
        }
        Ok(nv)
    }
}
