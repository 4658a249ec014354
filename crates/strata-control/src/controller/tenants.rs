//! Tenants and quotas, and the quota transaction every change that uses capacity goes through.
//!
//! # Invariants
//! - A tenant's `usage` is changed in the same transaction as the change that uses it, with a
//!   comparison on the tenant record's revision (`with_tenant`, in `tenant_txn.rs`): this
//!   process's changes of one tenant are staged in order and never lose to each other, and one
//!   that lost to another process runs again on fresh figures, so quotas and usage never drift
//!   and local contention never answers `busy`.
//! - Usage arithmetic is checked ([`charge`]): a sum that would pass its quota, or `u64::MAX`
//!   without one, is refused; it never wraps.
//! - Only an empty tenant is deleted; its tokens, NBD socket and certificates go with it.

use strata_state::Txn;

use super::auth::Principal;
use super::store::*;
use super::Controller;
use crate::error::{ControlError, InUse, Resource};
use crate::model::*;

impl Controller {
    /// Creates a tenant (admin).
    pub fn create_tenant(
        &self,
        p: &Principal,
        name: &str,
        quota: Quota,
    ) -> Result<Tenant, ControlError> {
        Self::require(p, Role::Admin)?;
        validate_name("name", name)?;
        let t = Tenant {
            name: name.to_string(),
            created: now(),
            quota,
            usage: Usage::default(),
            socket_owner: None,
        };
        let r = self.store.txn(
            Txn::new()
                .when(tenant_key(name), 0)
                .put(tenant_key(name), enc(&t)),
        )?;
        if !r.succeeded {
            return Err(ControlError::exists(Resource::Tenant, name));
        }
        self.tenant_created(&t);
        Ok(t)
    }

    /// Lists the tenants the caller may see.
    pub fn list_tenants(&self, p: &Principal) -> Result<Vec<Tenant>, ControlError> {
        match (&p.role, &p.tenant) {
            (Role::Admin, _) => Ok(self
                .list::<Tenant>("/tenants/", None, 0)?
                .into_iter()
                .map(|(_, t)| t)
                .collect()),
            (_, Some(t)) => Ok(vec![self.visible_tenant(p, t)?.0]),
            _ => Ok(vec![]),
        }
    }

    /// One tenant.
    pub fn get_tenant(&self, p: &Principal, name: &str) -> Result<Tenant, ControlError> {
        Ok(self.visible_tenant(p, name)?.0)
    }

    /// Sets a tenant's whole quota (admin): every limit not given is removed. A quota below
    /// the current usage is accepted: it refuses growth, never takes anything away.
    pub fn set_quota(
        &self,
        p: &Principal,
        name: &str,
        quota: Quota,
    ) -> Result<Tenant, ControlError> {
        self.update_quota(p, name, |_| quota.clone())
    }

    /// Changes a tenant's quota with `f` (admin), applied to the fresh record inside the
    /// tenant's transaction, so a change of one limit never undoes a concurrent change of
    /// another (`PATCH`: only the limits named change).
    pub fn update_quota(
        &self,
        p: &Principal,
        name: &str,
        f: impl Fn(Quota) -> Quota,
    ) -> Result<Tenant, ControlError> {
        Self::require(p, Role::Admin)?;
        self.visible_tenant(p, name)?;
        self.with_tenant(name, |t| {
            t.quota = f(t.quota.clone());
            Ok((Txn::new(), t.clone()))
        })
    }

    /// Deletes an empty tenant (admin).
    pub fn delete_tenant(&self, p: &Principal, name: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Admin)?;
        self.visible_tenant(p, name)?;
        self.tenant_exclusive(name, || {
            let (t, rev) = self.visible_tenant(p, name)?;
            // Jobs count too, GPU or not: a CPU-only job uses no counted quota.
            let jobs = self.store.range(&format!("/jobs/{name}/"), None, 1)?.0;
            if t.usage.volumes > 0
                || t.usage.snapshots > 0
                || t.usage.gpus > 0
                || t.usage.networks > 0
                || t.usage.ports > 0
                || t.usage.snapshot_schedules > 0
                || !jobs.is_empty()
                || self.tenant_has_network_objects(name)
            {
                return Err(ControlError::InUse {
                    what: InUse::TenantNotEmpty,
                    message: format!(
                        "tenant {name} still has volumes, snapshots, snapshot schedules, jobs, networks, security groups or floating IPs"
                    ),
                });
            }
            let r = self.store.txn(
                Txn::new()
                    .when(tenant_key(name), rev)
                    .delete(tenant_key(name))
                    .delete(super::shares::tenant_share_key(name)),
            )?;
            if !r.succeeded {
                return Err(ControlError::Busy("tenant changed meanwhile, retry".into()));
            }
            Ok(())
        })?;
        // A tenant made again under the name starts from the default share.
        self.apply_tenant_share(name, Default::default());
        // Tokens of the tenant stop working.
        for (key, tok) in self.list::<TokenRecord>("/tokens/", None, 0)? {
            if tok.tenant.as_deref() == Some(name) {
                self.store.txn(Txn::new().delete(key))?;
            }
        }
        // Its NBD socket, sessions and certificates go with it.
        self.tenant_deleted(name)
    }
}

/// What a change takes from or gives back to a tenant's usage, per dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Charge {
    /// Bytes of volume size.
    pub bytes: u64,
    /// Volumes.
    pub volumes: u64,
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of IOPS limits.
    pub iops: u64,
    /// GPUs of jobs.
    pub gpus: u64,
    /// Networks.
    pub networks: u64,
    /// Network ports.
    pub ports: u64,
    /// Snapshot schedules.
    pub schedules: u64,
}

impl Charge {
    /// One volume of `size` bytes with `qos`.
    pub fn volume(size: u64, qos: &Qos) -> Charge {
        Charge {
            bytes: size,
            volumes: 1,
            iops: qos.iops_limit.unwrap_or(0),
            ..Charge::default()
        }
    }
}

/// Replaces `release` by `take` in the tenant's usage, checking each dimension that grows
/// against its quota (an absent quota is `u64::MAX`: a sum that does not fit a `u64` is over
/// it). All or nothing: on a refusal the usage is untouched. A dimension that does not grow is
/// never refused, so a shrink or a delete works also over a lowered quota. Giving back more
/// than is used (a drifted record) stops at zero; the recount at start repairs it.
pub(super) fn charge(t: &mut Tenant, release: Charge, take: Charge) -> Result<(), ControlError> {
    let q = &t.quota;
    let u = &t.usage;
    let one = |what: &str, used: u64, rel: u64, add: u64, max: Option<u64>| {
        let base = used.saturating_sub(rel);
        let new = base
            .checked_add(add)
            .filter(|n| *n <= max.unwrap_or(u64::MAX));
        match new {
            Some(n) => Ok(n),
            None if add <= rel.min(used) => Ok(base + add),
            None => Err(ControlError::QuotaExceeded {
                tenant: t.name.clone(),
                message: match max {
                    Some(m) => format!(
                        "tenant {} {what} quota is {m}; {base} used, {add} more requested",
                        t.name
                    ),
                    None => format!(
                        "tenant {} {what} would pass {} ({base} used, {add} more requested)",
                        t.name,
                        u64::MAX
                    ),
                },
            }),
        }
    };
    let usage = Usage {
        capacity_bytes: one(
            "capacity",
            u.capacity_bytes,
            release.bytes,
            take.bytes,
            q.capacity_bytes,
        )?,
        volumes: one(
            "volume",
            u.volumes,
            release.volumes,
            take.volumes,
            q.volumes,
        )?,
        snapshots: one(
            "snapshot",
            u.snapshots,
            release.snapshots,
            take.snapshots,
            q.snapshots,
        )?,
        iops: one("IOPS", u.iops, release.iops, take.iops, q.iops)?,
        gpus: one("GPU", u.gpus, release.gpus, take.gpus, q.gpus)?,
        networks: one(
            "network",
            u.networks,
            release.networks,
            take.networks,
            q.networks,
        )?,
        ports: one("port", u.ports, release.ports, take.ports, q.ports)?,
        snapshot_schedules: one(
            "snapshot schedule",
            u.snapshot_schedules,
            release.schedules,
            take.schedules,
            q.snapshot_schedules,
        )?,
    };
    t.usage = usage;
    Ok(())
}

/// Under a tenant IOPS quota every volume needs an IOPS limit (the sum is checked by
/// [`charge`]). A volume without one would take unbounded IOPS, so it exceeds the quota: the
/// tenant's state refuses it, not the request's form (a 409, like every quota refusal).
pub(super) fn require_iops_limit(t: &Tenant, q: &Qos) -> Result<(), ControlError> {
    if t.quota.iops.is_some() && q.iops_limit.is_none() {
        return Err(ControlError::QuotaExceeded {
            tenant: t.name.clone(),
            message: format!(
                "tenant {} has an IOPS quota: every volume needs an iops_limit",
                t.name
            ),
        });
    }
    Ok(())
}
