//! Fair shares of a pool between tenants: the pool's capacity, a tenant's weight and
//! reservation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::controller::{PoolShareRecord, TenantShareRecord, TenantShareView, WEIGHT_MAX};
use crate::error::ControlError;

/// Most operations per second a capacity or reservation may name (10^12).
pub const IOPS_MAX: u64 = 1_000_000_000_000;
/// Most bytes per second a capacity may name (10^15: a petabyte per second).
pub const BANDWIDTH_MAX: u64 = 1_000_000_000_000_000;

/// `PUT /v1/pools/{id}/share` and its answer: what each of the pool's devices sustains. With either
/// set, tenants whose requests wait for the pool are served by weight (reservations first);
/// with neither, the pool admits every request at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolShare {
    /// Operations per second (null: not set).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 1000000000000u64)]
    pub iops_capacity: Option<u64>,
    /// Bytes per second (null: not set).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 1000000000000000u64)]
    pub bandwidth_capacity: Option<u64>,
}

impl super::Check for PoolShare {
    fn check(&self) -> Result<(), ControlError> {
        for (field, v, max) in [
            ("iops_capacity", self.iops_capacity, IOPS_MAX),
            ("bandwidth_capacity", self.bandwidth_capacity, BANDWIDTH_MAX),
        ] {
            if v.is_some_and(|v| v == 0 || v > max) {
                return Err(ControlError::invalid(field, format!("1 to {max}, or null")));
            }
        }
        Ok(())
    }
}

impl From<PoolShare> for PoolShareRecord {
    fn from(s: PoolShare) -> Self {
        PoolShareRecord {
            iops_capacity: s.iops_capacity,
            bandwidth_capacity: s.bandwidth_capacity,
        }
    }
}

impl From<PoolShareRecord> for PoolShare {
    fn from(s: PoolShareRecord) -> Self {
        PoolShare {
            iops_capacity: s.iops_capacity,
            bandwidth_capacity: s.bandwidth_capacity,
        }
    }
}

/// `PUT /v1/tenants/{name}/share`: the tenant's weight against the other tenants when the
/// pool is saturated, and the operations per second it gets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTenantShare {
    /// Relative weight (default 100).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 10000)]
    pub weight: Option<u32>,
    /// Operations per second reserved (null: none).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 1000000000000u64)]
    pub reservation_iops: Option<u64>,
}

impl super::Check for SetTenantShare {
    fn check(&self) -> Result<(), ControlError> {
        if self.weight.is_some_and(|w| !(1..=WEIGHT_MAX).contains(&w)) {
            return Err(ControlError::invalid(
                "weight",
                format!("1 to {WEIGHT_MAX}"),
            ));
        }
        if self
            .reservation_iops
            .is_some_and(|r| r == 0 || r > IOPS_MAX)
        {
            return Err(ControlError::invalid(
                "reservation_iops",
                format!("1 to {IOPS_MAX}, or null"),
            ));
        }
        Ok(())
    }
}

impl From<SetTenantShare> for TenantShareRecord {
    fn from(s: SetTenantShare) -> Self {
        TenantShareRecord {
            weight: s.weight.unwrap_or(strata_block::share::DEFAULT_WEIGHT),
            reservation_iops: s.reservation_iops,
        }
    }
}

/// A tenant's share and what it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantShare {
    /// The tenant.
    pub tenant: String,
    /// Relative weight.
    pub weight: u32,
    /// Operations per second reserved (null: none).
    pub reservation_iops: Option<u64>,
    /// Requests admitted through the pool's share since the daemon started (0 while the
    /// pool's capacity is not set: nothing waits then).
    pub admitted: u64,
}

impl From<TenantShareView> for TenantShare {
    fn from(v: TenantShareView) -> Self {
        TenantShare {
            tenant: v.tenant,
            weight: v.share.weight,
            reservation_iops: v.share.reservation_iops,
            admitted: v.admitted,
        }
    }
}
