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

/// Limits on what a tenant may hold; absent or null means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// Sum of volume sizes, in bytes.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = capacity)]
    pub capacity_bytes: Option<u64>,
    /// Number of volumes.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub volumes: Option<u64>,
    /// Number of snapshots.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub snapshots: Option<u64>,
    /// Sum of volume IOPS limits.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = iops)]
    pub iops: Option<u64>,
    /// GPUs of the tenant's jobs, pending and running.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub gpus: Option<u64>,
    /// Number of networks.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub networks: Option<u64>,
    /// Number of network ports.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub ports: Option<u64>,
    /// Number of snapshot schedules.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = count)]
    pub snapshot_schedules: Option<u64>,
}

impl Check for Quota {
    fn check(&self) -> Result<(), ControlError> {
        let opt = |f, v: Option<u64>, max| v.map_or(Ok(()), |v| check_int(f, v, 0, max));
        opt("capacity_bytes", self.capacity_bytes, QUOTA_CAPACITY_MAX)?;
        opt("volumes", self.volumes, QUOTA_COUNT_MAX)?;
        opt("snapshots", self.snapshots, QUOTA_COUNT_MAX)?;
        opt("iops", self.iops, QUOTA_IOPS_MAX)?;
        opt("gpus", self.gpus, QUOTA_COUNT_MAX)?;
        opt("networks", self.networks, QUOTA_COUNT_MAX)?;
        opt("ports", self.ports, QUOTA_COUNT_MAX)?;
        opt(
            "snapshot_schedules",
            self.snapshot_schedules,
            QUOTA_COUNT_MAX,
        )
    }
}

impl From<Quota> for model::Quota {
    fn from(q: Quota) -> Self {
        model::Quota {
            capacity_bytes: q.capacity_bytes,
            volumes: q.volumes,
            snapshots: q.snapshots,
            iops: q.iops,
            gpus: q.gpus,
            networks: q.networks,
            ports: q.ports,
            snapshot_schedules: q.snapshot_schedules,
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
            gpus: q.gpus,
            networks: q.networks,
            ports: q.ports,
            snapshot_schedules: q.snapshot_schedules,
        }
    }
}

/// `PATCH /v1/tenants/{name}/quota`: changes only the limits named (`wire::patch`): an
/// absent field keeps its limit, `null` removes it (unlimited), a value sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaPatch {
    /// Sum of volume sizes, in bytes.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = capacity)]
    pub capacity_bytes: Option<Option<u64>>,
    /// Number of volumes.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = count)]
    pub volumes: Option<Option<u64>>,
    /// Number of snapshots.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = count)]
    pub snapshots: Option<Option<u64>>,
    /// Sum of volume IOPS limits.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = iops)]
    pub iops: Option<Option<u64>>,
    /// GPUs of the tenant's jobs.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = count)]
    pub gpus: Option<Option<u64>>,
    /// Networks.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = count)]
    pub networks: Option<Option<u64>>,
    /// Network ports.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = count)]
    pub ports: Option<Option<u64>>,
    /// Snapshot schedules.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = count)]
    pub snapshot_schedules: Option<Option<u64>>,
}

impl Check for QuotaPatch {
    fn check(&self) -> Result<(), ControlError> {
        let opt = |f, v: Option<Option<u64>>, max| {
            v.flatten().map_or(Ok(()), |v| check_int(f, v, 0, max))
        };
        opt("capacity_bytes", self.capacity_bytes, QUOTA_CAPACITY_MAX)?;
        opt("volumes", self.volumes, QUOTA_COUNT_MAX)?;
        opt("snapshots", self.snapshots, QUOTA_COUNT_MAX)?;
        opt("iops", self.iops, QUOTA_IOPS_MAX)?;
        opt("gpus", self.gpus, QUOTA_COUNT_MAX)?;
        opt("networks", self.networks, QUOTA_COUNT_MAX)?;
        opt("ports", self.ports, QUOTA_COUNT_MAX)?;
        opt(
            "snapshot_schedules",
            self.snapshot_schedules,
            QUOTA_COUNT_MAX,
        )
    }
}

impl QuotaPatch {
    /// `q` with this patch applied.
    pub fn apply(&self, mut q: model::Quota) -> model::Quota {
        use super::patch::apply;
        apply(&mut q.capacity_bytes, &self.capacity_bytes);
        apply(&mut q.volumes, &self.volumes);
        apply(&mut q.snapshots, &self.snapshots);
        apply(&mut q.iops, &self.iops);
        apply(&mut q.gpus, &self.gpus);
        apply(&mut q.networks, &self.networks);
        apply(&mut q.ports, &self.ports);
        apply(&mut q.snapshot_schedules, &self.snapshot_schedules);
        q
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
    /// GPUs of jobs.
    pub gpus: u64,
    /// Networks.
    pub networks: u64,
    /// Network ports.
    pub ports: u64,
    /// Snapshot schedules.
    pub snapshot_schedules: u64,
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
    /// Owner of the tenant's NBD socket (`UID:GID`); null: the daemon's user.
    pub socket_owner: Option<String>,
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
                gpus: t.usage.gpus,
                networks: t.usage.networks,
                ports: t.usage.ports,
                snapshot_schedules: t.usage.snapshot_schedules,
            },
            socket_owner: t.socket_owner.map(|o| format!("{}:{}", o.uid, o.gid)),
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
    /// Name (at most 32 bytes: its NBD socket's path must fit).
    #[schema(schema_with = tenant_name)]
    pub name: String,
    /// Limits (default: none).
    #[serde(default, deserialize_with = "super::object")]
    pub quota: Quota,
    /// Owner of the tenant's NBD socket, `UID` or `UID:GID` (default: the daemon's user).
    #[serde(default)]
    #[schema(schema_with = socket_owner)]
    pub socket_owner: Option<String>,
}

fn tenant_name() -> Object {
    text(TENANT_NAME_PATTERN, TENANT_NAME_MAX_LEN, false)
}

fn socket_owner() -> Object {
    text(SOCKET_OWNER_PATTERN, 21, true)
}

/// Parses a checked `UID[:GID]`.
pub fn parse_socket_owner(s: Option<&str>) -> Result<Option<model::SocketOwner>, ControlError> {
    s.map(|s| {
        digits_pair(s)
            .then(|| model::SocketOwner::parse(s))
            .flatten()
            .ok_or_else(|| {
                ControlError::invalid("socket_owner", "a socket owner is UID or UID:GID (numbers)")
            })
    })
    .transpose()
}

/// [`SOCKET_OWNER_PATTERN`] by hand: 1 to 9 digits, optionally `:` and 1 to 9 more.
fn digits_pair(s: &str) -> bool {
    let digits = |p: &str| (1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once(':') {
        Some((u, g)) => digits(u) && digits(g),
        None => digits(s),
    }
}

impl Check for CreateTenant {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, TENANT_NAME_PATTERN)?;
        parse_socket_owner(self.socket_owner.as_deref())?;
        self.quota.check()
    }
}

/// `PUT /v1/tenants/{name}/socket-owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetSocketOwner {
    /// `UID` or `UID:GID`; null: the daemon's user.
    #[schema(schema_with = socket_owner)]
    pub socket_owner: Option<String>,
}

impl Check for SetSocketOwner {
    fn check(&self) -> Result<(), ControlError> {
        parse_socket_owner(self.socket_owner.as_deref()).map(drop)
    }
}

/// A TLS client certificate issued for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The tenant it names.
    pub tenant: String,
    /// The volume whose attachment issued it.
    pub volume: String,
    /// Issue time, seconds since the epoch.
    pub issued: u64,
    /// End of validity, seconds since the epoch.
    pub not_after: u64,
    /// Revocation time, once revoked.
    pub revoked: Option<u64>,
}

impl From<model::CertRecord> for Certificate {
    fn from(c: model::CertRecord) -> Self {
        Certificate {
            serial: c.serial,
            tenant: c.tenant,
            volume: c.volume,
            issued: c.issued,
            not_after: c.not_after,
            revoked: c.revoked,
        }
    }
}

/// A tenant's certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateList {
    /// Certificates.
    pub items: Vec<Certificate>,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    /// Certificates newly revoked.
    pub revoked: u64,
    /// Open TLS sessions closed.
    pub sessions_closed: u64,
}
