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
