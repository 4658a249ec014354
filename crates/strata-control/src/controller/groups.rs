//! Checkpoint groups: the snapshots of several volumes (the shards of one training job's
//! checkpoint) taken at one crash-consistent instant, listed, cloned and deleted as one, with
//! retention by series.
//!
//! # Invariants
//! - A group's record and its members' snapshot records are written in one quota transaction
//!   (each member counts as a snapshot), as not `ready`; the engine then takes all the
//!   snapshots at one instant or none (`Pool::create_snapshots`); then the group is `ready`.
//!   If the engine refuses, the records go. A crash in between is settled at start
//!   ([`Controller::recover_groups`]): the engine has all of the group's snapshots or none, so
//!   the group becomes ready or its records go.
//! - Every member snapshot carries the group's name as its own name (so `VOLUME@GROUP` and
//!   `strata:changed-since:GROUP` open it) and the group's id; it is deleted only with its
//!   group (`snapshot_in_group`, 409).
//! - Group names are unique per tenant; all members are volumes of one tenant, each once.
//! - Retention: creating a group in a series with `keep = N` deletes that series' oldest ready
//!   groups beyond the newest N, after the new one is ready (never the new one).

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::tenants::{charge, Charge};
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::*;

/// Most volumes one group may hold.
pub const GROUP_MAX_MEMBERS: usize = 64;

/// What `create_snapshot_group` is asked.
#[derive(Debug, Clone)]
pub struct NewGroup {
    /// Group name (and each member snapshot's).
    pub name: String,
    /// Volume ids, each once.
    pub volumes: Vec<String>,
    /// The series retention counts the group in.
    pub series: Option<String>,
    /// Keep the newest this many groups of the series.
    pub keep: Option<u32>,
}

impl Controller {
    /// Takes a checkpoint group (see the module invariants).
    pub fn create_snapshot_group(
        &self,
        p: &Principal,
        req: NewGroup,
    ) -> Result<SnapshotGroup, ControlError> {
        self.take_snapshot_group(p, req, None)
    }

    /// Takes a checkpoint group, recording the schedule that takes it (on the group and on
    /// each member), if one does.
    pub(super) fn take_snapshot_group(
        &self,
        p: &Principal,
        req: NewGroup,
        schedule: Option<&str>,
    ) -> Result<SnapshotGroup, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("name", &req.name)?;
        if let Some(s) = &req.series {
            validate_name("series", s)?;
        }
        if req.keep.is_some() && req.series.is_none() {
            return Err(ControlError::invalid("keep", "keep needs a series"));
        }
        if req.keep == Some(0) {
            return Err(ControlError::invalid("keep", "keep at least 1"));
        }
        if req.volumes.is_empty() || req.volumes.len() > GROUP_MAX_MEMBERS {
            return Err(ControlError::invalid(
                "volumes",
                format!("1 to {GROUP_MAX_MEMBERS} volumes"),
            ));
        }
        let mut vols: Vec<Volume> = Vec::with_capacity(req.volumes.len());
        for id in &req.volumes {
            let v = self
                .get_volume(p, id)
                .map_err(ControlError::named_by("volumes"))?;
            if vols.iter().any(|o| o.id == v.id) {
                return Err(ControlError::invalid(
                    "volumes",
                    format!("volume {} is named twice", v.name),
                ));
            }
            if let Some(first) = vols.first() {
                if first.tenant != v.tenant {
                    return Err(ControlError::invalid(
                        "volumes",
                        "the volumes of a group belong to one tenant",
                    ));
                }
            }
            vols.push(v);
        }
        let tenant = vols[0].tenant.clone();
        let created = now();
        let gid = new_id();
        let snaps: Vec<Snapshot> = vols
            .iter()
            .map(|v| Snapshot {
                id: new_id(),
                tenant: tenant.clone(),
                volume: v.id.clone(),
                name: req.name.clone(),
                size: v.size,
                created,
                group: Some(gid.clone()),
                schedule: schedule.map(str::to_string),
            })
            .collect();
        let mut g = SnapshotGroup {
            id: gid,
            tenant: tenant.clone(),
            name: req.name.clone(),
            series: req.series.clone(),
            created,
            ready: false,
            members: snaps
                .iter()
                .map(|s| GroupMember {
                    volume: s.volume.clone(),
                    snapshot: s.id.clone(),
                })
                .collect(),
            schedule: schedule.map(str::to_string),
        };
        self.with_tenant(&tenant, |t| {
            if self.store.get(&group_name_key(&tenant, &g.name))?.is_some() {
                return Err(ControlError::exists(Resource::SnapshotGroup, &g.name));
            }
            for s in &snaps {
                if self
                    .store
                    .get(&snapshot_name_key(&s.volume, &s.name))?
                    .is_some()
                {
                    return Err(ControlError::exists(Resource::Snapshot, &s.name));
                }
            }
            let n = Charge {
                snapshots: snaps.len() as u64,
                ..Charge::default()
            };
            charge(t, Charge::default(), n)?;
            let mut txn = Txn::new()
                .when(group_name_key(&tenant, &g.name), 0)
                .put(group_name_key(&tenant, &g.name), enc(&g.id))
                .put(group_index(&g.id), enc(&tenant))
                .put(group_key(&tenant, &g.id), enc(&g));
            for s in &snaps {
                txn = txn
                    .when(snapshot_name_key(&s.volume, &s.name), 0)
                    .put(snapshot_name_key(&s.volume, &s.name), enc(&s.id))
                    .put(snapshot_index(&s.id), enc(&s.tenant))
                    .put(snapshot_key(&s.tenant, &s.id), enc(s));
            }
            Ok((txn, ()))
        })?;
        let taken = self.take_group(&vols, &snaps);
        if let Err(e) = taken {
            for s in &snaps {
                let _ = self.drop_snapshot_copies(s);
            }
            self.forget_group(&g)?;
            return Err(e);
        }
        g.ready = true;
        self.store
            .txn(Txn::new().put(group_key(&tenant, &g.id), enc(&g)))?;
        if let (Some(series), Some(keep)) = (&g.series, req.keep) {
            self.apply_retention(&tenant, series, keep as usize)?;
        }
        Ok(g)
    }

    /// Deletes the oldest ready groups of `series` beyond the newest `keep`.
    fn apply_retention(&self, tenant: &str, series: &str, keep: usize) -> Result<(), ControlError> {
        let mut in_series: Vec<SnapshotGroup> = self
            .tenant_groups(tenant)?
            .into_iter()
            .filter(|g| g.ready && g.series.as_deref() == Some(series))
            .collect();
        // Newest first; equal times by name, so the order is total and repeatable.
        in_series.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
        for g in in_series.into_iter().skip(keep) {
            self.delete_group_now(&g)?;
        }
        Ok(())
    }

    pub(super) fn tenant_groups(&self, tenant: &str) -> Result<Vec<SnapshotGroup>, ControlError> {
        Ok(self
            .list::<SnapshotGroup>(&format!("/snapshot-groups/{tenant}/"), None, 0)?
            .into_iter()
            .map(|(_, g)| g)
            .collect())
    }

    /// The groups the caller may see (an admin may name a tenant).
    pub fn list_snapshot_groups(
        &self,
        p: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<SnapshotGroup>, ControlError> {
        Self::require(p, Role::Reader)?;
        match (&p.role, &p.tenant, tenant) {
            (Role::Admin, _, None) => Ok(self
                .list::<SnapshotGroup>("/snapshot-groups/", None, 0)?
                .into_iter()
                .map(|(_, g)| g)
                .collect()),
            (_, _, Some(t)) => {
                self.visible_tenant(p, t)?;
                self.tenant_groups(t)
            }
            (_, Some(t), None) => self.tenant_groups(t),
            _ => Ok(Vec::new()),
        }
    }

    /// A group the caller may see, by id or (within the caller's tenant, or `tenant`) name.
    pub fn get_snapshot_group(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<SnapshotGroup, ControlError> {
        Self::require(p, Role::Reader)?;
        let nf = || ControlError::not_found(Resource::SnapshotGroup, id);
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Err(nf());
        }
        let (tenant, _) = self.get::<String>(&group_index(id))?.ok_or_else(nf)?;
        if p.role != Role::Admin && p.tenant.as_deref() != Some(tenant.as_str()) {
            return Err(nf());
        }
        Ok(self
            .get::<SnapshotGroup>(&group_key(&tenant, id))?
            .ok_or_else(nf)?
            .0)
    }

    /// Deletes a group and its snapshots.
    pub fn delete_snapshot_group(&self, p: &Principal, id: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let g = self.get_snapshot_group(p, id)?;
        self.delete_group_now(&g)
    }

    pub(super) fn delete_group_now(&self, g: &SnapshotGroup) -> Result<(), ControlError> {
        for m in &g.members {
            let Some((s, _)) = self.get::<Snapshot>(&snapshot_key(&g.tenant, &m.snapshot))? else {
                continue; // gone with a force-deleted volume
            };
            self.drop_snapshot_copies(&s)?;
            self.forget_snapshot(&s)?;
        }
        self.forget_group_record(g)
    }

    /// Takes the group's snapshots as one instant: every member's write gate is held (in id
    /// order, so two groups never wait on each other) while each device takes its members'
    /// snapshots in one engine operation (all or none on that device).
    fn take_group(&self, vols: &[Volume], snaps: &[Snapshot]) -> Result<(), ControlError> {
        let mut order: Vec<&Volume> = vols.iter().collect();
        order.sort_by(|a, b| a.id.cmp(&b.id));
        let gates: Vec<_> = order.iter().map(|v| self.write_gate(&v.id)).collect();
        let _held: Vec<_> = gates.iter().map(|g| g.write()).collect();
        let mut by_device: std::collections::BTreeMap<String, (strata_block::Pool, Vec<_>)> =
            Default::default();
        for (v, s) in vols.iter().zip(snaps) {
            for c in self.every_copy(v)? {
                by_device
                    .entry(c.device.clone())
                    .or_insert_with(|| (c.pool.clone(), vec![]))
                    .1
                    .push((c.volume, s.id.as_str()));
            }
        }
        for (pool, members) in by_device.values() {
            pool.create_snapshots(members)?;
        }
        Ok(())
    }

    /// Removes a group that was not taken: its members' records (giving their counts back)
    /// and its own.
    fn forget_group(&self, g: &SnapshotGroup) -> Result<(), ControlError> {
        for m in &g.members {
            if let Some((s, _)) = self.get::<Snapshot>(&snapshot_key(&g.tenant, &m.snapshot))? {
                self.forget_snapshot(&s)?;
            }
        }
        self.forget_group_record(g)
    }

    fn forget_group_record(&self, g: &SnapshotGroup) -> Result<(), ControlError> {
        self.store.txn(
            Txn::new()
                .delete(group_key(&g.tenant, &g.id))
                .delete(group_index(&g.id))
                .delete(group_name_key(&g.tenant, &g.name)),
        )?;
        Ok(())
    }

    /// Clones every member of a group into a new volume named `PREFIX-VOLUME`, in the
    /// group's tenant: all or none (clones made before a failure are deleted again).
    pub fn clone_snapshot_group(
        &self,
        p: &Principal,
        id: &str,
        prefix: &str,
    ) -> Result<Vec<Volume>, ControlError> {
        Self::require(p, Role::Member)?;
        validate_name("prefix", prefix)?;
        let g = self.get_snapshot_group(p, id)?;
        if !g.ready {
            return Err(ControlError::not_found(Resource::SnapshotGroup, id));
        }
        let mut made: Vec<Volume> = Vec::new();
        for m in &g.members {
            let r = self.get_volume(p, &m.volume).and_then(|v| {
                let name = format!("{prefix}-{}", v.name);
                self.clone_snapshot(p, &m.snapshot, &name, None)
            });
            match r {
                Ok(v) => made.push(v),
                Err(e) => {
                    for v in &made {
                        self.delete_volume(p, &v.id, true)?;
                    }
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// Settles groups a crash left not ready: ready if the engine has all of their snapshots
    /// (it takes them all or none), forgotten otherwise.
    pub(super) fn recover_groups(&self) -> Result<(), ControlError> {
        for (_, mut g) in self.list::<SnapshotGroup>("/snapshot-groups/", None, 0)? {
            if g.ready {
                continue;
            }
            // Taken when every copy of every member has its snapshot (each device takes its
            // members all or none; the devices one after the other).
            let taken = g.members.iter().all(|m| {
                let Ok(Some((s, _))) = self.get::<Snapshot>(&snapshot_key(&g.tenant, &m.snapshot))
                else {
                    return false;
                };
                self.snapshot_devices(&s).is_ok_and(|devs| {
                    devs.iter().all(|d| {
                        self.device_engine(d)
                            .is_some_and(|p| Self::engine_snapshot(&p, &s).is_ok())
                    })
                })
            });
            if taken {
                g.ready = true;
                self.store
                    .txn(Txn::new().put(group_key(&g.tenant, &g.id), enc(&g)))?;
            } else {
                tracing::warn!(group = %g.name, tenant = %g.tenant, "undoing a group a crash interrupted");
                // The devices that took their members' snapshots before the crash drop them.
                for m in &g.members {
                    if let Ok(Some((s, _))) =
                        self.get::<Snapshot>(&snapshot_key(&g.tenant, &m.snapshot))
                    {
                        let _ = self.drop_snapshot_copies(&s);
                    }
                }
                self.forget_group(&g)?;
            }
        }
        Ok(())
    }
}
