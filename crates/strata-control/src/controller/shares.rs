//! Fair shares of the pool between tenants: the pool's capacity and each tenant's weight and
//! reservation, desired state in the store, applied to the engine's share scheduler
//! (`strata_block::share`).
//!
//! # Invariants
//! - A pool with no capacity set shares nothing (the engine admits at once); with one, the
//!   tenants whose requests wait for it are served by weight, reservations first.
//! - Every tenant is one share class ([`class_of`]); every volume of the tenant is in it, from
//!   its creation (clones too) and again at every start (classes are runtime state in the
//!   engine, as QoS limits are).
//! - A tenant's share goes with the tenant: deleting it deletes the record.

use strata_block::{Capacity, ClassId, ClassShare};
use strata_state::Txn;

use super::auth::Principal;
use super::store::enc;
use super::{Controller, DEFAULT_POOL};
use crate::error::{ControlError, Resource};
use crate::model::*;

/// Most a tenant's weight may be.
pub const WEIGHT_MAX: u32 = 10_000;

/// The pool's capacity as stored (`/pool-share/{pool}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolShareRecord {
    /// Operations per second the pool's devices sustain (`None`: not set).
    pub iops_capacity: Option<u64>,
    /// Bytes per second the pool's devices sustain (`None`: not set).
    pub bandwidth_capacity: Option<u64>,
}

/// A tenant's share as stored (`/tenant-shares/{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantShareRecord {
    /// Relative weight, 1 to [`WEIGHT_MAX`].
    pub weight: u32,
    /// Operations per second the tenant gets first while it asks for them.
    pub reservation_iops: Option<u64>,
}

impl Default for TenantShareRecord {
    fn default() -> Self {
        TenantShareRecord {
            weight: strata_block::share::DEFAULT_WEIGHT,
            reservation_iops: None,
        }
    }
}

/// A tenant's share and what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantShareView {
    /// The tenant.
    pub tenant: String,
    /// The share.
    pub share: TenantShareRecord,
    /// Requests of the tenant admitted through the pool's share since start.
    pub admitted: u64,
}

fn pool_share_key(pool: &str) -> String {
    format!("/pool-share/{pool}")
}

pub(super) fn tenant_share_key(name: &str) -> String {
    format!("/tenant-shares/{name}")
}

/// The share class of a tenant: a stable hash of its name, below the classes the engine
/// keeps for its own traffic (rebuild, scrub).
pub fn class_of(tenant: &str) -> ClassId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h >> 1
}

fn check_pool(pool: &str) -> Result<(), ControlError> {
    if pool != DEFAULT_POOL {
        return Err(ControlError::not_found(Resource::Pool, pool));
    }
    Ok(())
}

impl Controller {
    /// The pool's capacity for sharing (admin).
    pub fn get_pool_share(
        &self,
        p: &Principal,
        pool: &str,
    ) -> Result<PoolShareRecord, ControlError> {
        Self::require(p, Role::Admin)?;
        check_pool(pool)?;
        Ok(self
            .get::<PoolShareRecord>(&pool_share_key(pool))?
            .map(|(r, _)| r)
            .unwrap_or_default())
    }

    /// Sets the pool's capacity (admin): both figures are replaced; none set turns sharing
    /// off. Takes effect on requests already waiting.
    pub fn set_pool_share(
        &self,
        p: &Principal,
        pool: &str,
        r: PoolShareRecord,
    ) -> Result<PoolShareRecord, ControlError> {
        Self::require(p, Role::Admin)?;
        check_pool(pool)?;
        for (field, v) in [
            ("iops_capacity", r.iops_capacity),
            ("bandwidth_capacity", r.bandwidth_capacity),
        ] {
            if v == Some(0) {
                return Err(ControlError::invalid(field, "a positive figure, or null"));
            }
        }
        self.store
            .txn(Txn::new().put(pool_share_key(pool), enc(&r)))?;
        self.pool.share().set_capacity(Capacity {
            iops: r.iops_capacity,
            bandwidth: r.bandwidth_capacity,
        });
        Ok(r)
    }

    /// A tenant's share (its own members and admins may look).
    pub fn get_tenant_share(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<TenantShareView, ControlError> {
        Self::require(p, Role::Reader)?;
        self.visible_tenant(p, name)?;
        let share = self.tenant_share(name)?;
        Ok(TenantShareView {
            tenant: name.to_string(),
            share,
            admitted: self.pool.share().admitted(class_of(name)),
        })
    }

    /// Sets a tenant's weight and reservation (admin): both are replaced.
    pub fn set_tenant_share(
        &self,
        p: &Principal,
        name: &str,
        share: TenantShareRecord,
    ) -> Result<TenantShareView, ControlError> {
        Self::require(p, Role::Admin)?;
        self.visible_tenant(p, name)?;
        if !(1..=WEIGHT_MAX).contains(&share.weight) {
            return Err(ControlError::invalid(
                "weight",
                format!("1 to {WEIGHT_MAX}"),
            ));
        }
        if share.reservation_iops == Some(0) {
            return Err(ControlError::invalid(
                "reservation_iops",
                "a positive figure, or null",
            ));
        }
        self.store
            .txn(Txn::new().put(tenant_share_key(name), enc(&share)))?;
        self.apply_tenant_share(name, share);
        self.get_tenant_share(p, name)
    }

    fn tenant_share(&self, name: &str) -> Result<TenantShareRecord, ControlError> {
        Ok(self
            .get::<TenantShareRecord>(&tenant_share_key(name))?
            .map(|(r, _)| r)
            .unwrap_or_default())
    }

    /// Gives every device's engine pool the tenant's share (each device is scheduled on its
    /// own: a tenant's weight holds on every device its volumes use).
    pub(super) fn apply_tenant_share(&self, name: &str, s: TenantShareRecord) {
        for d in self.storage.all().values() {
            if let Some(e) = &d.engine {
                e.share().set_class(
                    class_of(name),
                    ClassShare {
                        weight: s.weight,
                        reservation_iops: s.reservation_iops,
                    },
                );
            }
        }
    }

    /// A device just added learns every tenant's share.
    pub(super) fn reapply_tenant_shares(&self) -> Result<(), ControlError> {
        for (key, s) in self.list::<TenantShareRecord>("/tenant-shares/", None, 0)? {
            let name = key.trim_start_matches("/tenant-shares/");
            self.apply_tenant_share(name, s);
        }
        Ok(())
    }

    /// Start: the pool's capacity and every tenant's share, from the store.
    pub(super) fn recover_shares(&self) -> Result<(), ControlError> {
        let c = self
            .get::<PoolShareRecord>(&pool_share_key(DEFAULT_POOL))?
            .map(|(r, _)| r)
            .unwrap_or_default();
        self.pool.share().set_capacity(Capacity {
            iops: c.iops_capacity,
            bandwidth: c.bandwidth_capacity,
        });
        for (key, s) in self.list::<TenantShareRecord>("/tenant-shares/", None, 0)? {
            let name = key.trim_start_matches("/tenant-shares/");
            self.apply_tenant_share(name, s);
        }
        Ok(())
    }
}
