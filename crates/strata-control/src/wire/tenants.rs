//! Tenants and their quotas.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::error::ControlError;
use crate::model;

fn capacity() -> Object {
    int(0, QUOTA_CAPACITY_MAX, true)
}
fn count() -> Object {
    int(0, QUOTA_COUNT_MAX, true)
}
fn iops() -> Object {
    int(0, QUOTA_IOPS_MAX, true)
}
pub(super) fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}

/// Limits on what a tenant may hold; absent or null means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// Sum of volume sizes, in bytes.
    #[schema(schema_with = capacity)]
    pub capacity_bytes: Option<u64>,
    /// Number of volumes.
    #[schema(schema_with = count)]
    pub volumes: Option<u64>,
    /// Number of snapshots.
    #[schema(schema_with = count)]
    pub snapshots: Option<u64>,
    /// Sum of volume IOPS limits.
    #[schema(schema_with = iops)]
    pub iops: Option<u64>,
}

impl Check for Quota {
    fn check(&self) -> Result<(), ControlError> {
        let opt = |f, v: Option<u64>, max| v.map_or(Ok(()), |v| check_int(f, v, 0, max));
        opt("capacity_bytes", self.capacity_bytes, QUOTA_CAPACITY_MAX)?;
        opt("volumes", self.volumes, QUOTA_COUNT_MAX)?;
        opt("snapshots", self.snapshots, QUOTA_COUNT_MAX)?;
        opt("iops", self.iops, QUOTA_IOPS_MAX)
    }
}

impl From<Quota> for model::Quota {
    fn from(q: Quota) -> Self {
        model::Quota {
            capacity_bytes: q.capacity_bytes,
            volumes: q.volumes,
            snapshots: q.snapshots,
            iops: q.iops,
        }
    }
}

impl From<model::Quota> for Quota {
    fn from(q: model::Quota) -> Self {
        Quota {
            capacity_bytes: q.capacity_bytes,
            volumes: q.volumes,
            snapshots: q.snapshots,
            iops: q.iops,
        }
    }
}

/// What a tenant uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Sum of volume sizes, in bytes.
    pub capacity_bytes: u64,
    /// Volumes.
    pub volumes: u64,
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of volume IOPS limits.
    pub iops: u64,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Unique name (also its id).
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Limits.
    pub quota: Quota,
    /// Current use.
    pub usage: Usage,
}

impl From<model::Tenant> for Tenant {
    fn from(t: model::Tenant) -> Self {
        Tenant {
            name: t.name,
            created: t.created,
            quota: t.quota.into(),
            usage: Usage {
                capacity_bytes: t.usage.capacity_bytes,
                volumes: t.usage.volumes,
                snapshots: t.usage.snapshots,
                iops: t.usage.iops,
            },
        }
    }
}

/// The tenants the caller may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// Tenants.
    pub items: Vec<Tenant>,
}

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateTenant {
    /// Name.
    #[schema(schema_with = name)]
    pub name: String,
    /// Limits (default: none).
    #[serde(default)]
    pub quota: Quota,
}

impl Check for CreateTenant {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        self.quota.check()
    }
}
