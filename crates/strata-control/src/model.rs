//! The records the control plane stores (JSON values in the state store) and returns.

use serde::{Deserialize, Serialize};

/// A role, from most to least powerful. Admin is global; the others are scoped to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, across tenants.
    Admin,
    /// Everything within a tenant, including its tokens.
    TenantAdmin,
    /// Create and change a tenant's volumes and snapshots.
    Member,
    /// Read a tenant's resources.
    Reader,
}

impl Role {
    /// Parses the CLI/API name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "tenant-admin" => Some(Role::TenantAdmin),
            "member" => Some(Role::Member),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }
    /// The CLI/API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::TenantAdmin => "tenant-admin",
            Role::Member => "member",
            Role::Reader => "reader",
        }
    }
}

/// Limits on what a tenant may hold. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Sum of volume sizes, in bytes.
    pub capacity_bytes: Option<u64>,
    /// Number of volumes.
    pub volumes: Option<u64>,
    /// Number of snapshots.
    pub snapshots: Option<u64>,
    /// Sum of volume IOPS limits.
    pub iops: Option<u64>,
    /// GPUs of the tenant's jobs (pending and running).
    #[serde(default)]
    pub gpus: Option<u64>,
    /// Number of networks.
    #[serde(default)]
    pub networks: Option<u64>,
    /// Number of network ports.
    #[serde(default)]
    pub ports: Option<u64>,
    /// Number of snapshot schedules.
    #[serde(default)]
    pub snapshot_schedules: Option<u64>,
}

/// What a tenant uses, kept in its record and updated in the same transaction as the change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Sum of volume sizes.
    pub capacity_bytes: u64,
    /// Volumes.
    pub volumes: u64,
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of volume IOPS limits.
    #[serde(default)]
    pub iops: u64,
    /// GPUs of the tenant's jobs (pending and running).
    #[serde(default)]
    pub gpus: u64,
    /// Networks.
    #[serde(default)]
    pub networks: u64,
    /// Network ports.
    #[serde(default)]
    pub ports: u64,
    /// Snapshot schedules.
    #[serde(default)]
    pub snapshot_schedules: u64,
}

/// The overcommit ratio a pool has until an admin sets another: its volumes may provision four
/// times its data capacity. Thin volumes of datasets and checkpoints fill a good part of their
/// size, so much more than that is a promise the pool cannot keep; much less gives up most of
/// thin provisioning's benefit (room to grow without a resize).
pub const DEFAULT_OVERCOMMIT: f64 = 4.0;

/// A pool's settings, kept under `/pool-settings/{pool}` (absent: the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolSettings {
    /// Most the sum of the pool's volume sizes may reach, as a multiple of its data capacity;
    /// `None`: unlimited.
    pub overcommit: Option<f64>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            overcommit: Some(DEFAULT_OVERCOMMIT),
        }
    }
}

/// A volume's performance limits. `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qos {
    /// Operations per second.
    pub iops_limit: Option<u64>,
    /// Bytes per second.
    pub bandwidth_limit: Option<u64>,
    /// Operations allowed at once above the rate (default: one second's worth).
    pub burst_iops: Option<u64>,
    /// Bytes allowed at once above the rate (default: one second's worth).
    pub burst_bandwidth: Option<u64>,
}

impl Qos {
    /// The engine's form.
    pub fn limits(&self) -> strata_block::QosLimits {
        strata_block::QosLimits {
            iops: self.iops_limit,
            bandwidth: self.bandwidth_limit,
            burst_iops: self.burst_iops,
            burst_bandwidth: self.burst_bandwidth,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Unique name (also its id).
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Limits.
    pub quota: Quota,
    /// Current use.
    pub usage: Usage,
    /// Owner (uid, gid) of the tenant's NBD socket `DATA_DIR/sockets/NAME.sock`; `None`:
    /// the daemon's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<SocketOwner>,
}

/// Who owns a tenant's NBD socket file (mode 0600: only this user, and root, may connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketOwner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl SocketOwner {
    /// Parses `UID` or `UID:GID` (a missing group is the user id).
    pub fn parse(s: &str) -> Option<SocketOwner> {
        let (u, g) = s.split_once(':').unwrap_or((s, s));
        Some(SocketOwner {
            uid: u.trim().parse().ok()?,
            gid: g.trim().parse().ok()?,
        })
    }
}

/// A stored API token (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id of the token.
    pub id: String,
    /// Tenant it acts for (None for admin tokens).
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub created: u64,
    /// Expiry time, seconds since the epoch (`None`: never; admin tokens only).
    #[serde(default)]
    pub expires: Option<u64>,
    /// Last time the token authenticated a request, recorded at most once a minute.
    #[serde(default)]
    pub last_used: Option<u64>,
}

/// A token as `GET /v1/tokens` shows it: everything but the secret (and its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Tenant (None for admin tokens).
    pub tenant: Option<String>,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub created: u64,
    /// Expiry time (`None`: never).
    pub expires: Option<u64>,
    /// Last use (to the minute).
    pub last_used: Option<u64>,
    /// Whether it is past its expiry (it then answers `token_expired`).
    pub expired: bool,
    /// Whether it is the bootstrap admin token (never expires, not revocable by the API).
    pub bootstrap: bool,
}

/// A TLS client certificate the daemon's CA issued for a tenant (`attach --tcp`); the NBD
/// server admits a certificate only while its record exists and is not revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// Serial, lowercase hex (as the NBD server reports it).
    pub serial: String,
    /// The tenant it names (its Common Name).
    pub tenant: String,
    /// The volume whose attachment issued it.
    pub volume: String,
    /// Issue time.
    pub issued: u64,
    /// End of validity.
    pub not_after: u64,
    /// Revocation time, once revoked.
    #[serde(default)]
    pub revoked: Option<u64>,
}

/// Lifecycle of a volume record relative to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// Recorded; the engine volume may not exist yet (finished or undone at restart).
    Creating,
    /// In the engine and usable.
    Available,
    /// Being removed (finished at restart).
    Deleting,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Id (also the engine volume's name).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Pool.
    pub pool: String,
    /// Device class restriction.
    pub class: Option<String>,
    /// Source snapshot id if cloned.
    pub origin: Option<String>,
    /// State.
    pub state: VolumeState,
    /// Performance limits.
    #[serde(default)]
    pub qos: Qos,
    /// Creation time.
    pub created: u64,
    /// Encrypted at rest under a data key of its own lineage (clones share their origin's).
    #[serde(default)]
    pub encrypted: bool,
    /// The devices holding the volume's copies, copy 0 first (each an engine volume named
    /// [`Volume::id`] in that device's engine pool). Empty in records written before pools had
    /// devices: one copy on [`DEFAULT_DEVICE`].
    #[serde(default)]
    pub copies: Vec<String>,
    /// The node whose pool holds the copies (its devices are the `copies`). Empty in records
    /// written before nodes had their own pools: the node that migrated them
    /// (`controller/node_scope.rs`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl Volume {
    /// The devices of the volume's copies (see [`Volume::copies`]).
    pub fn copy_devices(&self) -> Vec<String> {
        if self.copies.is_empty() {
            vec![DEFAULT_DEVICE.to_string()]
        } else {
            self.copies.clone()
        }
    }
}

/// The device the first start makes: the data dir's `pool/device` file, first device of the
/// default pool.
pub const DEFAULT_DEVICE: &str = "default-d0";

/// Most copies a volume may have.
pub const MAX_REPLICAS: u8 = 3;

/// A pool: named devices, each its own engine pool (own metadata), so each device is a
/// failure domain. Kept under `/nodes/{node}/pools/{name}`, written by that node only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// Name.
    pub name: String,
    /// Copies a new volume gets when its create names none (1 to [`MAX_REPLICAS`]).
    pub replicas: u8,
    /// Devices, in the order they were added.
    pub devices: Vec<DeviceRecord>,
    /// The number the next device's id takes (ids are never reused).
    pub next_device: u32,
    /// Creation time.
    pub created: u64,
}

/// A device of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Id: `POOL-dN`, unique among all pools, never reused.
    pub id: String,
    /// The file or block device.
    pub path: String,
    /// Device class.
    pub class: String,
    /// The failure domain its copies must not share with another copy of the same volume
    /// (the device itself today; the node once devices of several nodes share a pool).
    pub domain: String,
    /// Whether new copies may go there.
    pub state: DeviceState,
    /// When it was added.
    pub added: u64,
}

/// Whether a device takes new copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Takes new copies.
    Active,
    /// Being emptied before it leaves the pool: takes no new copies.
    Draining,
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Volume id.
    pub volume: String,
    /// Name, unique within the volume.
    pub name: String,
    /// Size of the volume when taken.
    pub size: u64,
    /// Creation time.
    pub created: u64,
    /// The checkpoint group it was taken in, if any (deleted only with the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The snapshot schedule that took it (its id), if any: only that schedule's retention
    /// deletes it. Absent in records written before schedules: taken by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// A checkpoint group: snapshots of several volumes taken at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotGroup {
    /// Id.
    pub id: String,
    /// Owning tenant (of every member volume).
    pub tenant: String,
    /// Name, unique within the tenant; also each member snapshot's name.
    pub name: String,
    /// The series retention counts groups in, if any.
    pub series: Option<String>,
    /// Creation time.
    pub created: u64,
    /// `false` while recorded and not yet taken in the engine (a crash then is undone at
    /// start).
    pub ready: bool,
    /// Its snapshots: (volume id, snapshot id), in the order the volumes were named.
    pub members: Vec<GroupMember>,
    /// The snapshot schedule that took it (its id), if any (see [`Snapshot::schedule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// A snapshot schedule: every `interval`, a snapshot of its one volume, or a checkpoint group
/// of its several volumes; the newest `keep` of those it took are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSchedule {
    /// Id.
    pub id: String,
    /// Owning tenant (of every volume).
    pub tenant: String,
    /// Name, unique within the tenant; its snapshots are named `NAME-YYYYMMDDTHHMMSSZ`.
    pub name: String,
    /// Volume ids, each once: one takes plain snapshots, several take checkpoint groups.
    pub volumes: Vec<String>,
    /// Seconds between two runs (at least 1).
    pub interval: u64,
    /// How many of the snapshots (or groups) it took are kept, newest first (at least 1).
    pub keep: u64,
    /// A paused schedule takes nothing (its cadence goes on: unpaused, it runs at most once
    /// for what it missed).
    #[serde(default)]
    pub paused: bool,
    /// Creation time.
    pub created: u64,
    /// When it runs next, seconds since the epoch (a slot of `created + k * interval`).
    pub next_run: u64,
    /// When it last ran, if ever.
    #[serde(default)]
    pub last_run: Option<u64>,
    /// Why its last run (or that run's retention) failed; `None` after a clean run.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Snapshots (or groups) it took, in all.
    #[serde(default)]
    pub taken: u64,
}

/// One volume's snapshot in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// Volume id.
    pub volume: String,
    /// Snapshot id.
    pub snapshot: String,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Time, seconds since the epoch.
    pub time: u64,
    /// Token id of the caller.
    pub actor: String,
    /// Tenant acted on, if any.
    pub tenant: Option<String>,
    /// What was done, e.g. `volume.create`.
    pub action: String,
    /// The resource, e.g. a volume id or name.
    pub resource: String,
    /// `ok` or the error code.
    pub outcome: String,
}

/// A volume exported to NBD clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Volume id.
    pub volume: String,
    /// Owning tenant.
    pub tenant: String,
    /// NBD export name.
    pub export: String,
    /// The URI a client opens (e.g. `nbd+unix:///EXPORT?socket=PATH`).
    pub uri: String,
    /// The URI over TCP with TLS (`nbds://HOST:PORT/EXPORT`), when the daemon listens on TCP;
    /// it opens only with a client certificate of the volume's tenant.
    #[serde(default)]
    pub tcp_uri: Option<String>,
    /// Creation time.
    pub created: u64,
}
