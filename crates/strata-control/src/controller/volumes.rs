//! Volumes: create (idempotent under a request id), look up, list in pages, resize, delete.
//!
//! # Invariants
//! - Validation happens before the first write; the quota transaction is the first write; an
//!   engine failure after it undoes the records.
//! - A volume is `creating` until the engine has it and `deleting` until the engine dropped it;
//!   `recovery.rs` finishes either after a crash.
//! - A resize records the new size and usage before the engine acts, and reverts both if the
//!   engine refuses.

use strata_state::Txn;
use strata_types::DeviceClass;

use super::auth::Principal;
use super::qos::validate_qos;
use super::store::*;
use super::tenants::{charge, require_iops_limit, Charge};
use super::{Controller, DEFAULT_POOL, DEFAULT_TENANT};
use crate::error::{ControlError, InUse, Resource};
use crate::model::*;

/// Request to create a volume.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CreateVolume {
    /// Name (unique within the tenant).
    pub name: String,
    /// Size in bytes, or a human size such as "10G".
    pub size: SizeArg,
    /// Tenant (admins only; others create in their own).
    pub tenant: Option<String>,
    /// Pool name.
    pub pool: Option<String>,
    /// Device class.
    pub class: Option<String>,
    /// Client-chosen id making the create idempotent.
    pub request_id: Option<String>,
    /// IOPS limit.
    pub iops_limit: Option<u64>,
    /// Bandwidth limit, bytes per second or a human size such as "200M".
    pub bandwidth_limit: Option<SizeArg>,
    /// Encrypted at rest (the daemon needs a master key).
    pub encrypted: bool,
    /// Copies, each on its own failure domain (the pool's default when not given).
    pub replicas: Option<u8>,
}

/// A size given as a number of bytes or a string like "10G".
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum SizeArg {
    /// Bytes.
    Bytes(u64),
    /// Human size.
    Text(String),
}

impl Default for SizeArg {
    fn default() -> Self {
        SizeArg::Bytes(0)
    }
}

impl SizeArg {
    /// The value in bytes.
    pub fn bytes(&self) -> Result<u64, ControlError> {
        match self {
            SizeArg::Bytes(b) => Ok(*b),
            SizeArg::Text(t) => {
                strata_types::parse_size(t).map_err(|e| ControlError::invalid("size", e))
            }
        }
    }
}

/// A volume size: a positive multiple of the block size, at most the engine's maximum.
pub(super) fn validate_size(size: u64) -> Result<(), ControlError> {
    if size == 0
        || !size.is_multiple_of(strata_block::BLOCK_SIZE)
        || size > strata_block::MAX_VOLUME_SIZE
    {
        return Err(ControlError::invalid(
            "size",
            format!("size {size} must be a positive multiple of 4096 bytes, at most 1 PiB"),
        ));
    }
    Ok(())
}

impl Controller {
    /// Creates a volume. Idempotent under `request_id`.
    pub fn create_volume(&self, p: &Principal, req: CreateVolume) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        // An admin belongs to no tenant: naming none, it creates in the default tenant the
        // first start made.
        let requested = match (p.role, req.tenant.as_deref()) {
            (Role::Admin, None) => Some(DEFAULT_TENANT),
            (_, t) => t,
        };
        let tenant = self.acting_tenant(p, requested)?;
        self.visible_tenant(p, &tenant)?;
        if let Some(rid) = &req.request_id {
            if rid.is_empty() || rid.len() > 128 {
                return Err(ControlError::invalid("request_id", "1 to 128 characters"));
            }
            if let Some((id, _)) = self.get::<String>(&request_key(&tenant, rid))? {
                return self.same_request(self.get_volume(p, &id)?, &req.name, rid);
            }
        }
        validate_name("name", &req.name)?;
        let size = req.size.bytes()?;
        validate_size(size)?;
        let pool = req.pool.clone().unwrap_or_else(|| DEFAULT_POOL.to_string());
        let pool_rec = self
            .pool_record(&pool)
            .map_err(ControlError::named_by("pool"))?;
        let replicas = req.replicas.unwrap_or(pool_rec.replicas);
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(ControlError::invalid(
                "replicas",
                format!("{replicas} copies: a volume has 1 to {MAX_REPLICAS}"),
            ));
        }
        let class = match &req.class {
            Some(c) => Some(
                c.parse::<DeviceClass>()
                    .map_err(|e| ControlError::invalid("class", e.to_string()))?,
            ),
            None => None,
        };
        if let Some(c) = class {
            if !pool_rec.devices.iter().any(|d| d.class == c.to_string()) {
                // The pool's state, not the request's form: `class_unavailable` (409).
                return Err(ControlError::Engine(
                    strata_block::AdminError::ClassUnavailable(c),
                ));
            }
        }
        let id = new_id();
        // With other nodes that can hold copies, the failure domain is the node: one copy
        // here, the others on distinct nodes; else every copy on a distinct local device.
        let copies =
            match self.place_across_nodes(&pool, &id, replicas, class, size, req.encrypted)? {
                Some(across) => across,
                None => self.place_copies(&pool, &id, replicas, class, size)?,
            };
        let v = Volume {
            id,
            tenant: tenant.clone(),
            name: req.name.clone(),
            size,
            pool,
            class: class.map(|c| c.to_string()),
            origin: None,
            state: VolumeState::Creating,
            created: now(),
            qos: Qos {
                iops_limit: req.iops_limit,
                bandwidth_limit: req
                    .bandwidth_limit
                    .as_ref()
                    .map(SizeArg::bytes)
                    .transpose()
                    .map_err(|e| e.in_field("bandwidth_limit"))?,
                ..Qos::default()
            },
            encrypted: req.encrypted,
            copies,
            node: self.node.clone(),
        };
        validate_qos(&v.qos)?;
        if v.encrypted && self.storage.key_wrapper().is_none() {
            // Refused before anything is recorded.
            return Err(ControlError::Key(strata_block::KeyAdminError::NoMasterKey));
        }
        // Fast answer for the common conflict; the transaction's comparison catches races.
        if self.name_taken(&tenant, &v.name) {
            return Err(ControlError::exists(Resource::Volume, &v.name));
        }
        if let Some(id) = self.record_new_volume(&v, req.request_id.as_deref())? {
            // The same request id won a race with this call: answer what it created.
            let rid = req.request_id.as_deref().unwrap_or_default();
            return self.same_request(self.get_volume(p, &id)?, &req.name, rid);
        }
        if let Err(e) = self
            .create_copies(&v, class)
            .and_then(|()| self.wait_remote_copies(&v))
            .and_then(|()| self.create_replica_set(&v))
        {
            self.drop_copies(&v);
            self.forget_volume(&v)?;
            return Err(e);
        }
        self.apply_io(&v)?;
        self.set_state(&v, VolumeState::Available)
    }

    /// Makes the engine volume of every copy of a new volume.
    fn create_copies(&self, v: &Volume, class: Option<DeviceClass>) -> Result<(), ControlError> {
        for d in v.copy_devices() {
            if super::cluster_copies::split_copy(&d).is_some() {
                // Made by that node's agent (`cluster_copies.rs`).
                continue;
            }
            let pool = self.device_engine(&d).ok_or_else(|| {
                ControlError::internal(format!("device {d} went away during the create"))
            })?;
            if v.encrypted {
                pool.create_encrypted_volume(&v.id, v.size, class)
                    .map_err(ControlError::from)?;
            } else {
                pool.create_volume(&v.id, v.size, class)?;
            }
        }
        Ok(())
    }

    /// Drops the engine volumes a failed create made.
    pub(super) fn drop_copies(&self, v: &Volume) {
        for c in self.reachable_copies(v) {
            let _ = c.pool.delete_volume(c.volume, true);
        }
    }

    /// The volume an earlier create with request id `rid` made, when it is the one asked for
    /// again (same name); another name is a conflict, not a silent answer with the earlier one.
    pub(super) fn same_request(
        &self,
        earlier: Volume,
        name: &str,
        rid: &str,
    ) -> Result<Volume, ControlError> {
        if earlier.name != name {
            return Err(ControlError::InUse {
                what: InUse::RequestIdReused,
                message: format!(
                    "request id {:?} created volume {} before; a create of {} needs another \
                     request id",
                    crate::error::clip(rid),
                    earlier.name,
                    crate::error::clip(name)
                ),
            });
        }
        Ok(earlier)
    }

    pub(super) fn name_taken(&self, tenant: &str, name: &str) -> bool {
        matches!(self.store.get(&volume_name_key(tenant, name)), Ok(Some(_)))
    }

    /// Records a new volume as `creating` (a create or a clone), charging its tenant and the
    /// pool in the one transaction that also reserves its name and request id. Returns the id
    /// an earlier call with the same request id created, if one did (nothing is recorded then).
    pub(super) fn record_new_volume(
        &self,
        v: &Volume,
        request_id: Option<&str>,
    ) -> Result<Option<String>, ControlError> {
        let tenant = &v.tenant;
        self.provision(&v.pool, 0, provisioned(v), true, || {
            self.with_tenant(tenant, |t| {
                // Preconditions are checked here, on fresh state under the tenant's lock;
                // the comparisons below only guard against other processes.
                if let Some(rid) = request_id {
                    if let Some((id, _)) = self.get::<String>(&request_key(tenant, rid))? {
                        return Ok((Txn::new(), (Some(id), false)));
                    }
                }
                if self.name_taken(tenant, &v.name) {
                    return Err(ControlError::exists(Resource::Volume, &v.name));
                }
                require_iops_limit(t, &v.qos)?;
                charge(t, Charge::default(), Charge::volume(v.size, &v.qos))?;
                let mut txn = Txn::new()
                    .when(volume_name_key(tenant, &v.name), 0)
                    .put(volume_name_key(tenant, &v.name), enc(&v.id))
                    .put(volume_index(&v.id), enc(tenant))
                    .put(volume_key(tenant, &v.id), enc(v));
                if let Some(rid) = request_id {
                    txn = txn
                        .when(request_key(tenant, rid), 0)
                        .put(request_key(tenant, rid), enc(&v.id));
                }
                Ok((txn, (None, true)))
            })
        })
    }

    /// Moves a volume record to `state`, keeping whatever else changed in it meanwhile.
    pub(super) fn set_state(&self, v: &Volume, state: VolumeState) -> Result<Volume, ControlError> {
        let key = volume_key(&v.tenant, &v.id);
        loop {
            let (mut cur, rev) = self
                .get::<Volume>(&key)?
                .ok_or_else(|| ControlError::not_found(Resource::Volume, &v.id))?;
            cur.state = state;
            if self
                .store
                .txn(Txn::new().when(&key, rev).put(&key, enc(&cur)))?
                .succeeded
            {
                return Ok(cur);
            }
        }
    }

    /// Removes a volume's records and gives back its usage, once: a second call (a concurrent
    /// delete, a retry) finds no record and changes nothing.
    pub(super) fn forget_volume(&self, v: &Volume) -> Result<(), ControlError> {
        let key = volume_key(&v.tenant, &v.id);
        let Some((cur, _)) = self.get::<Volume>(&key)? else {
            return Ok(());
        };
        self.provision(&cur.pool, provisioned(&cur), 0, false, || {
            self.with_tenant(&v.tenant, |t| {
                let Some((cur, rev)) = self.get::<Volume>(&key)? else {
                    return Ok((Txn::new(), ((), false)));
                };
                charge(t, Charge::volume(cur.size, &cur.qos), Charge::default())?;
                Ok((
                    Txn::new()
                        .when(&key, rev)
                        .delete(key.clone())
                        .delete(volume_index(&v.id))
                        .delete(volume_name_key(&v.tenant, &v.name)),
                    ((), true),
                ))
            })
        })
    }

    /// A volume the caller may see.
    pub fn get_volume(&self, p: &Principal, id: &str) -> Result<Volume, ControlError> {
        let nf = || ControlError::not_found(Resource::Volume, id);
        if id.is_empty() || id.len() > 64 || id.contains('/') {
            return Err(nf());
        }
        let (tenant, _) = self.get::<String>(&volume_index(id))?.ok_or_else(nf)?;
        if p.role != Role::Admin && p.tenant.as_deref() != Some(tenant.as_str()) {
            return Err(nf());
        }
        Ok(self
            .get::<Volume>(&volume_key(&tenant, id))?
            .ok_or_else(nf)?
            .0)
    }

    /// Lists volumes: the caller's tenant (an admin: all, or `tenant`), optionally one name,
    /// in pages of `limit` after `page_token` (`TENANT/ID` of the last volume of the previous
    /// page).
    pub fn list_volumes(
        &self,
        p: &Principal,
        tenant: Option<&str>,
        name: Option<&str>,
        limit: usize,
        page_token: Option<&str>,
    ) -> Result<(Vec<Volume>, Option<String>), ControlError> {
        Self::require(p, Role::Reader)?;
        // A tenant named is one that exists and the caller sees: else not found, never an
        // empty list that reads like "no volumes there".
        if let Some(t) = tenant {
            self.visible_tenant(p, t)?;
        }
        let prefix = match (p.role, tenant, &p.tenant) {
            (Role::Admin, Some(t), _) => format!("/volumes/{t}/"),
            (Role::Admin, None, _) => "/volumes/".to_string(),
            (_, Some(t), Some(own)) if t != own => return Ok((vec![], None)),
            (_, _, Some(own)) => format!("/volumes/{own}/"),
            _ => return Ok((vec![], None)),
        };
        if let Some(n) = name {
            // Names are indexed per tenant: a direct look-up, not a scan.
            let tenants: Vec<String> = match (p.role, tenant, &p.tenant) {
                (Role::Admin, None, _) => self
                    .list::<Tenant>("/tenants/", None, 0)?
                    .into_iter()
                    .map(|(_, t)| t.name)
                    .collect(),
                (Role::Admin, Some(t), _) => vec![t.to_string()],
                (_, _, Some(own)) => vec![own.clone()],
                _ => vec![],
            };
            let mut out = Vec::new();
            for t in tenants {
                if let Some((id, _)) = self.get::<String>(&volume_name_key(&t, n))? {
                    if let Some((v, _)) = self.get::<Volume>(&volume_key(&t, &id))? {
                        out.push(v);
                    }
                }
            }
            return Ok((out, None));
        }
        let limit = limit.clamp(1, 10_000);
        // A page token is `TENANT/ID` of the last volume of the previous page: the page goes
        // on after that key, whether or not the volume still exists (a volume deleted between
        // two pages does not end the listing), and the prefix keeps it within what the caller
        // may see.
        let after = page_token.map(|tok| format!("/volumes/{tok}"));
        let items = self.list::<Volume>(&prefix, after.as_deref(), limit + 1)?;
        let mut vols: Vec<Volume> = items.into_iter().map(|(_, v)| v).collect();
        let next = if vols.len() > limit {
            vols.truncate(limit);
            vols.last().map(|v| format!("{}/{}", v.tenant, v.id))
        } else {
            None
        };
        Ok((vols, next))
    }

    /// Grows or shrinks a volume (shrinking over data is refused).
    pub fn resize_volume(
        &self,
        p: &Principal,
        id: &str,
        size: SizeArg,
    ) -> Result<Volume, ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        self.require_local(&v)?;
        self.require_one_node(&v)?;
        let size = size.bytes()?;
        validate_size(size)?;
        if v.copy_devices().len() > 1 && size != v.size {
            // The replica set's regions are fixed at its create (docs/pools.md).
            return Err(ControlError::invalid(
                "size",
                "a replicated volume keeps its size: resizing one is not supported yet",
            ));
        }
        let gate = self.write_gate(&v.id);
        let _g = gate.write();
        let copies = self.every_copy(&v)?;
        let nv = self.set_size(&v, size, true)?;
        for (i, c) in copies.iter().enumerate() {
            if let Err(e) = c.pool.resize_volume(c.volume, size) {
                // The copies resized so far go back: the copies keep one size.
                for d in &copies[..i] {
                    let _ = d.pool.resize_volume(d.volume, v.size);
                }
                self.set_size(&nv, v.size, false)?;
                return Err(e.into());
            }
        }
        Ok(nv)
    }

    /// Records a new size for a volume and its tenant's usage in one transaction (checking the
    /// quota and the pool's overcommit limit when `check`). Done before the engine changes; a
    /// crash in between is reconciled at start (`recover`).
    pub(super) fn set_size(
        &self,
        v: &Volume,
        size: u64,
        check: bool,
    ) -> Result<Volume, ControlError> {
        let key = volume_key(&v.tenant, &v.id);
        loop {
            let (cur, _) = self
                .get::<Volume>(&key)?
                .ok_or_else(|| ControlError::not_found(Resource::Volume, &v.id))?;
            let old = cur.size;
            let n = cur.copy_devices().len() as u64;
            // Unchecked (an undo, or the engine's size kept at start): never refused.
            let done = self.provision(&cur.pool, old * n, size * n, check, || {
                self.with_tenant(&v.tenant, |t| {
                    let (mut nv, rev) = self
                        .get::<Volume>(&key)?
                        .ok_or_else(|| ControlError::not_found(Resource::Volume, &v.id))?;
                    if nv.size != old {
                        // Resized meanwhile: the pool's figure was checked for another size.
                        return Ok((Txn::new(), (None, false)));
                    }
                    let take = Charge {
                        bytes: size,
                        ..Charge::default()
                    };
                    let release = Charge {
                        bytes: old,
                        ..Charge::default()
                    };
                    if check {
                        charge(t, release, take)?;
                    } else {
                        // An undo gives back what the change took: no quota applies.
                        t.usage.capacity_bytes = t
                            .usage
                            .capacity_bytes
                            .saturating_sub(old)
                            .saturating_add(size);
                    }
                    nv.size = size;
                    let txn = Txn::new().when(&key, rev).put(&key, enc(&nv));
                    Ok((txn, (Some(nv), true)))
                })
            })?;
            if let Some(nv) = done {
                return Ok(nv);
            }
        }
    }

    /// Deletes a volume; with snapshots only when `force` (which deletes them too).
    pub fn delete_volume(&self, p: &Principal, id: &str, force: bool) -> Result<(), ControlError> {
        Self::require(p, Role::Member)?;
        let v = self.get_volume(p, id)?;
        self.require_local(&v)?;
        let attached = self.store.get(&attachment_key(&v.id))?.is_some();
        if attached && !force {
            return Err(ControlError::InUse {
                what: InUse::VolumeAttached,
                message: format!("volume {} is attached; detach it first or force", v.name),
            });
        }
        let snaps = self.volume_snapshots(&v)?;
        if !snaps.is_empty() && !force {
            return Err(ControlError::InUse {
                what: InUse::VolumeHasSnapshots,
                message: format!(
                    "volume {} has {} snapshot(s); delete them first or force",
                    v.name,
                    snaps.len()
                ),
            });
        }
        let v = self.set_state(&v, VolumeState::Deleting)?;
        self.finish_delete(&v)
    }

    /// Carries a delete through from `deleting`: the export and attachment, the engine, the
    /// snapshots' and the volume's records. If the engine refuses, the volume is `available`
    /// again (rolled back in the same call); a failure after the engine step leaves it
    /// `deleting`, which a retry of the delete or the next start completes.
    pub(super) fn finish_delete(&self, v: &Volume) -> Result<(), ControlError> {
        self.exports.write().remove(&v.id);
        self.close_volume_sessions(&v.id);
        if self.store.get(&attachment_key(&v.id))?.is_some() {
            self.store.txn(Txn::new().delete(attachment_key(&v.id)))?;
        }
        for d in v.copy_devices() {
            let Some(pool) = self.device_engine(&d) else {
                tracing::warn!(volume = %v.id, device = %d,
                    "a copy on a device that is away is left there");
                continue;
            };
            if let Ok(eid) = pool.volume_id(&v.id) {
                if let Err(e) = pool.delete_volume(eid, true) {
                    if pool.volume_id(&v.id).is_ok() {
                        self.set_state(v, VolumeState::Available)?;
                    }
                    return Err(e.into());
                }
            }
        }
        self.drop_replica_set(v);
        for s in self.volume_snapshots(v)? {
            self.forget_snapshot(&s)?;
        }
        self.forget_volume(v)
    }
}

/// What a volume provisions of its pool: its size once per copy (each copy takes room on its
/// own device).
pub(super) fn provisioned(v: &Volume) -> u64 {
    // A copy on another node counts in that node's pool, by its agent
    // (`cluster_copies.rs`): each node's figure is checked against its own devices.
    let here = v
        .copy_devices()
        .iter()
        .filter(|c| super::cluster_copies::split_copy(c).is_none())
        .count();
    v.size.saturating_mul(here as u64)
}
