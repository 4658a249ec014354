//! Pools and their devices.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A device of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// Index in the pool.
    pub index: u64,
    /// Device id.
    pub id: String,
    /// Path or label.
    pub path: String,
    /// Device class.
    pub class: String,
    /// Bytes.
    pub capacity: u64,
    /// Bytes allocated.
    pub allocated: u64,
    /// Holds the pool's metadata.
    pub metadata: bool,
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    /// Name.
    pub name: String,
    /// Pool id.
    pub id: String,
    /// Block size, bytes.
    pub block_size: u64,
    /// Bytes.
    pub capacity: u64,
    /// Bytes allocated.
    pub allocated: u64,
    /// Bytes free.
    pub free: u64,
    /// Bytes freed at the next commit.
    pub pending_free: u64,
    /// Sum of volume sizes.
    pub provisioned: u64,
    /// Devices.
    pub devices: Vec<Device>,
}

/// The pools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    /// Pools.
    pub items: Vec<Pool>,
}

/// Largest overcommit ratio a pool takes.
pub const OVERCOMMIT_MAX: f64 = 1e6;

/// `PUT /v1/pools/{id}/settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPoolSettings {
    /// The overcommit ratio: how many times its capacity the pool's volumes may provision;
    /// `0` or null lifts the limit.
    #[schema(minimum = 0, maximum = 1000000)]
    pub overcommit: Option<f64>,
}

impl super::Check for SetPoolSettings {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        match self.overcommit {
            Some(r) if !r.is_finite() || !(0.0..=OVERCOMMIT_MAX).contains(&r) => {
                Err(crate::error::ControlError::invalid(
                    "overcommit",
                    "a ratio from 0 (no limit) to 1000000, such as 4 or 1.5",
                ))
            }
            _ => Ok(()),
        }
    }
}

impl SetPoolSettings {
    /// The ratio to keep (`None`: unlimited).
    pub fn ratio(&self) -> Option<f64> {
        self.overcommit.filter(|r| *r != 0.0)
    }
}

/// A pool's settings and the figures they bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolSettings {
    /// The pool.
    pub pool: String,
    /// The overcommit ratio (null: unlimited).
    pub overcommit: Option<f64>,
    /// Data capacity of the pool, bytes.
    pub capacity_bytes: u64,
    /// Sum of the pool's volume sizes, bytes.
    pub provisioned_bytes: u64,
    /// `capacity × overcommit`, bytes (null: unlimited).
    pub limit_bytes: Option<u64>,
    /// Provisioned over the limit (over the capacity when unlimited).
    pub allocated_ratio: f64,
}

impl From<crate::controller::PoolSettingsView> for PoolSettings {
    fn from(v: crate::controller::PoolSettingsView) -> Self {
        let sat = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        PoolSettings {
            pool: v.pool,
            overcommit: v.overcommit,
            capacity_bytes: v.capacity_bytes,
            provisioned_bytes: sat(v.provisioned_bytes),
            limit_bytes: v.limit_bytes.map(sat),
            allocated_ratio: v.allocated_ratio,
        }
    }
}
