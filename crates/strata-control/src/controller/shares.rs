//! Fair shares of a pool between tenants: the pool's device capacity and each tenant's weight
//! and reservation, desired state in the store, applied to the engine's share scheduler
//! (`strata_block::share`) of every device.
//!
//! # Invariants
//! - A pool's share capacity is what *each* of its devices sustains: every device is its own
//!   engine pool and schedules its own requests (as each Ceph OSD runs its own mClock with its
//!   own capacity), so the figure is given to every device of the pool, a device added later
//!   included; a pool-wide total split between devices would throttle one busy device to a
//!   fraction of what it can do while the others idle.
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
use super::Controller;
use crate::error::ControlError;
use crate::model::*;

/// Most a tenant's weight may be.
pub const WEIGHT_MAX: u32 = 10_000;

/// The pool's capacity as stored (`/pool-share/{pool}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolShareRecord {
    /// Operations per second each of the pool's devices sustains (`None`: not set).
    pub iops_capacity: Option<u64>,
    /// Bytes per second each of the pool's devices sustains (`None`: not set).
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

impl Controller {
    fn check_share_pool(&self, pool: &str) -> Result<(), ControlError> {
        self.pool_record(pool).map(|_| ())
    }

    /// Gives every device of `pool` the pool's share capacity `r`.
    fn apply_pool_share(&self, pool: &str, r: PoolShareRecord) -> Result<(), ControlError> {
        for d in self.pool_record(pool)?.devices {
            if let Some(e) = self.storage.engine(&d.id) {
                e.share().set_capacity(Capacity {
                    iops: r.iops_capacity,
                    bandwidth: r.bandwidth_capacity,
                });
            }
        }
        Ok(())
    }

    /// The pool's capacity for sharing (admin).
    pub fn get_pool_share(
        &self,
        p: &Principal,
        pool: &str,
    ) -> Result<PoolShareRecord, ControlError> {
        Self::require(p, Role::Admin)?;
        self.check_share_pool(pool)?;
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
        self.check_share_pool(pool)?;
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
        self.apply_pool_share(pool, r)?;
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
            admitted: self
                .storage
                .all()
                .values()
                .filter_map(|d| d.engine.as_ref())
                .map(|e| e.share().admitted(class_of(name)))
                .sum(),
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

    /// A device just added learns its pool's capacity and every tenant's share.
    pub(super) fn reapply_tenant_shares(&self) -> Result<(), ControlError> {
        self.recover_pool_shares()?;
        for (key, s) in self.list::<TenantShareRecord>("/tenant-shares/", None, 0)? {
            let name = key.trim_start_matches("/tenant-shares/");
            self.apply_tenant_share(name, s);
        }
        Ok(())
    }

    /// Every pool's capacity onto its devices, from the store.
    fn recover_pool_shares(&self) -> Result<(), ControlError> {
        for (key, r) in self.list::<PoolShareRecord>("/pool-share/", None, 0)? {
            let pool = key.trim_start_matches("/pool-share/");
            match self.apply_pool_share(pool, r) {
                Ok(()) | Err(ControlError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Start: every pool's capacity and every tenant's share, from the store.
    pub(super) fn recover_shares(&self) -> Result<(), ControlError> {
        self.recover_pool_shares()?;
        for (key, s) in self.list::<TenantShareRecord>("/tenant-shares/", None, 0)? {
            let name = key.trim_start_matches("/tenant-shares/");
            self.apply_tenant_share(name, s);
        }
        Ok(())
    }
}
