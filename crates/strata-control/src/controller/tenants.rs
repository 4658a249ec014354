//! Tenants and quotas, and the quota transaction every change that uses capacity goes through.
//!
//! # Invariants
//! - A tenant's `usage` is changed in the same transaction as the change that uses it, with a
//!   comparison on the tenant record's revision ([`Controller::with_tenant`]); a transaction
//!   that lost a race is retried with fresh figures, so quotas and usage never drift.
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

    /// Sets a tenant's quota (admin).
    pub fn set_quota(
        &self,
        p: &Principal,
        name: &str,
        quota: Quota,
    ) -> Result<Tenant, ControlError> {
        Self::require(p, Role::Admin)?;
        for _ in 0..RETRIES {
            let (mut t, rev) = self.visible_tenant(p, name)?;
            t.quota = quota.clone();
            let r = self.store.txn(
                Txn::new()
                    .when(tenant_key(name), rev)
                    .put(tenant_key(name), enc(&t)),
            )?;
            if r.succeeded {
                return Ok(t);
            }
        }
        Err(ControlError::Busy("too much contention, retry".into()))
    }

    /// Deletes an empty tenant (admin).
    pub fn delete_tenant(&self, p: &Principal, name: &str) -> Result<(), ControlError> {
        Self::require(p, Role::Admin)?;
        let (t, rev) = self.visible_tenant(p, name)?;
        if t.usage.volumes > 0 || t.usage.snapshots > 0 {
            return Err(ControlError::InUse {
                what: InUse::TenantNotEmpty,
                message: format!("tenant {name} still has volumes or snapshots"),
            });
        }
        let r = self.store.txn(
            Txn::new()
                .when(tenant_key(name), rev)
                .delete(tenant_key(name)),
        )?;
        if !r.succeeded {
            return Err(ControlError::Busy("tenant changed meanwhile, retry".into()));
        }
        // Tokens of the tenant stop working.
        for (key, tok) in self.list::<TokenRecord>("/tokens/", None, 0)? {
            if tok.tenant.as_deref() == Some(name) {
                self.store.txn(Txn::new().delete(key))?;
            }
        }
        // Its NBD socket, sessions and certificates go with it.
        self.tenant_deleted(name)
    }

    /// Applies a change to a tenant's record and other keys in one transaction, retrying when
    /// another change to the tenant won the race. `f` checks quotas on the fresh record.
    pub(super) fn with_tenant<T>(
        &self,
        tenant: &str,
        mut f: impl FnMut(&mut Tenant) -> Result<(Txn, T), ControlError>,
    ) -> Result<T, ControlError> {
        for _ in 0..RETRIES {
            let (mut t, rev) = self
                .get::<Tenant>(&tenant_key(tenant))?
                .ok_or_else(|| ControlError::not_found(Resource::Tenant, tenant))?;
            let (mut txn, out) = f(&mut t)?;
            txn.compare
                .push(strata_state::Compare::ModRevision(tenant_key(tenant), rev));
            txn.success
                .push(strata_state::Op::Put(tenant_key(tenant), enc(&t)));
            if self.store.txn(txn)?.succeeded {
                return Ok(out);
            }
        }
        Err(ControlError::Busy("too much contention, retry".into()))
    }
}

/// The tenant's IOPS quota bounds the sum of its volumes' IOPS limits; under such a quota
/// every volume needs a limit.
pub(super) fn check_iops(t: &Tenant, old: u64, q: &Qos) -> Result<(), ControlError> {
    let Some(max) = t.quota.iops else {
        return Ok(());
    };
    let Some(new) = q.iops_limit else {
        return Err(ControlError::invalid(
            "iops_limit",
            format!(
                "tenant {} has an IOPS quota: every volume needs an iops_limit",
                t.name
            ),
        ));
    };
    let used = t.usage.iops.saturating_sub(old);
    if used + new > max {
        return Err(ControlError::QuotaExceeded(format!(
            "tenant {} IOPS quota is {max}; {used} used, {new} more requested",
            t.name
        )));
    }
    Ok(())
}

pub(super) fn check_quota(
    t: &Tenant,
    bytes: u64,
    volumes: u64,
    snapshots: u64,
) -> Result<(), ControlError> {
    let q = &t.quota;
    let over = |what: &str, used: u64, add: u64, max: Option<u64>| match max {
        Some(m) if used.saturating_add(add) > m => Err(ControlError::QuotaExceeded(format!(
            "tenant {} {what} quota is {m}; {used} used, {add} more requested",
            t.name
        ))),
        _ => Ok(()),
    };
    over("capacity", t.usage.capacity_bytes, bytes, q.capacity_bytes)?;
    over("volume", t.usage.volumes, volumes, q.volumes)?;
    over("snapshot", t.usage.snapshots, snapshots, q.snapshots)?;
    Ok(())
}
