//! Volumes: create, list, show, resize, delete, rollback, QoS and live figures.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

use super::bounds::*;
use super::size::{Bandwidth, VolumeSize};
use super::Check;
use crate::error::ControlError;
use crate::model;

fn name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, false)
}
fn opt_name() -> Object {
    text(NAME_PATTERN, NAME_MAX_LEN, true)
}
fn request_id() -> Object {
    free_text(1, REQUEST_ID_MAX_LEN, true)
}
fn iops() -> Object {
    int(IOPS_MIN, IOPS_MAX, true)
}
fn class() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .enum_values(Some(["hdd", "ssd", "nvme"]))
        .build()
}

fn check_opt_name(field: &'static str, v: &Option<String>) -> Result<(), ControlError> {
    v.as_deref()
        .map_or(Ok(()), |v| check_text(field, v, NAME_PATTERN))
}

/// `POST /v1/volumes` (idempotent under `request_id` or the `Idempotency-Key` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateVolume {
    /// Name, unique within the tenant.
    #[schema(schema_with = name)]
    pub name: String,
    /// Size.
    pub size: VolumeSize,
    /// Tenant (admins name it; others create in their own).
    #[schema(schema_with = opt_name)]
    pub tenant: Option<String>,
    /// Pool (the default pool is `default`).
    #[schema(schema_with = opt_name)]
    pub pool: Option<String>,
    /// Device class the volume's blocks come from.
    #[schema(schema_with = class)]
    pub class: Option<String>,
    /// Client-chosen id making the create idempotent.
    #[schema(schema_with = request_id)]
    pub request_id: Option<String>,
    /// IOPS limit.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = iops)]
    pub iops_limit: Option<u64>,
    /// Bandwidth limit, bytes per second.
    pub bandwidth_limit: Option<Bandwidth>,
    /// Encrypt the volume at rest (AES-256-GCM-SIV per block under a data key of its own,
    /// wrapped by the daemon's master key: `strata serve --master-key-file`). Its snapshots
    /// and clones share the key.
    #[serde(default)]
    pub encrypted: bool,
    /// Copies, each on its own device (failure domain): 1 to 3, the pool's default when
    /// not given. A write is acknowledged when every healthy copy has it.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 3)]
    pub replicas: Option<u64>,
}

impl CreateVolume {
    /// The controller's request, sizes resolved and checked.
    pub fn into_request(self) -> Result<crate::CreateVolume, ControlError> {
        self.check()?;
        Ok(crate::CreateVolume {
            size: crate::SizeArg::Bytes(self.size.bytes("size")?),
            bandwidth_limit: self
                .bandwidth_limit
                .map(|b| b.bytes("bandwidth_limit").map(crate::SizeArg::Bytes))
                .transpose()?,
            name: self.name,
            tenant: self.tenant,
            pool: self.pool,
            class: self.class,
            request_id: self.request_id,
            iops_limit: self.iops_limit,
            encrypted: self.encrypted,
            // Checked to 1..=3 above.
            replicas: self.replicas.map(|r| r as u8),
        })
    }
}

impl Check for CreateVolume {
    fn check(&self) -> Result<(), ControlError> {
        check_text("name", &self.name, NAME_PATTERN)?;
        self.size.bytes("size")?;
        check_opt_name("tenant", &self.tenant)?;
        check_opt_name("pool", &self.pool)?;
        if let Some(r) = &self.request_id {
            if r.is_empty() {
                return Err(ControlError::invalid("request_id", "1 to 128 characters"));
            }
            check_len("request_id", r, REQUEST_ID_MAX_LEN)?;
        }
        if let Some(i) = self.iops_limit {
            check_int("iops_limit", i, IOPS_MIN, IOPS_MAX)?;
        }
        if let Some(b) = &self.bandwidth_limit {
            b.bytes("bandwidth_limit")?;
        }
        if let Some(r) = self.replicas {
            check_int("replicas", r, 1, u64::from(model::MAX_REPLICAS))?;
        }
        Ok(())
    }
}

/// Lifecycle of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// Being created.
    Creating,
    /// Usable.
    Available,
    /// Being removed.
    Deleting,
}

/// A volume's performance limits; null means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Qos {
    /// Operations per second.
    pub iops_limit: Option<u64>,
    /// Bytes per second.
    pub bandwidth_limit: Option<u64>,
    /// Operations allowed at once above the rate.
    pub burst_iops: Option<u64>,
    /// Bytes allowed at once above the rate.
    pub burst_bandwidth: Option<u64>,
}

impl From<model::Qos> for Qos {
    fn from(q: model::Qos) -> Self {
        Qos {
            iops_limit: q.iops_limit,
            bandwidth_limit: q.bandwidth_limit,
            burst_iops: q.burst_iops,
            burst_bandwidth: q.burst_bandwidth,
        }
    }
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// Id (also the NBD export name).
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
    pub qos: Qos,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Encrypted at rest.
    pub encrypted: bool,
    /// How many copies it has.
    pub replicas: u64,
    /// The devices of its copies, copy 0 first (`NODE:DEVICE` for a copy on another node).
    pub copies: Vec<String>,
    /// The node that serves it (holds copy 0); absent in records of a one-node install that
    /// predate nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl From<model::Volume> for Volume {
    fn from(v: model::Volume) -> Self {
        let copies = v.copy_devices();
        Volume {
            id: v.id,
            tenant: v.tenant,
            name: v.name,
            size: v.size,
            pool: v.pool,
            class: v.class,
            origin: v.origin,
            state: match v.state {
                model::VolumeState::Creating => VolumeState::Creating,
                model::VolumeState::Available => VolumeState::Available,
                model::VolumeState::Deleting => VolumeState::Deleting,
            },
            qos: v.qos.into(),
            created: v.created,
            encrypted: v.encrypted,
            replicas: copies.len() as u64,
            copies,
            node: (!v.node.is_empty()).then_some(v.node),
        }
    }
}

/// A volume with its engine figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeDetail {
    /// The volume.
    #[serde(flatten)]
    pub volume: Volume,
    /// Bytes allocated in the pool.
    pub allocated: u64,
    /// Number of snapshots.
    pub snapshots: u64,
    /// `healthy`, or `degraded` while a copy is not usable (I/O goes on from the others).
    pub health: String,
    /// Copies reachable and in step.
    pub healthy_copies: u64,
    /// Copies being brought back: a device that returned (the regions it missed) or a new
    /// copy on another device (`rebuild`: everything).
    pub resync: Vec<Resync>,
}

/// A copy being brought back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resync {
    /// Its index among the volume's copies.
    pub copy: u64,
    /// Its device.
    pub device: String,
    /// Bytes copied so far.
    pub done_bytes: u64,
    /// Bytes to copy in all.
    pub total_bytes: u64,
    /// A whole new copy, not only the regions a returning copy missed.
    pub rebuild: bool,
}

impl From<crate::controller::ResyncView> for Resync {
    fn from(r: crate::controller::ResyncView) -> Self {
        Resync {
            copy: r.copy as u64,
            device: r.device,
            done_bytes: r.done,
            total_bytes: r.total,
            rebuild: r.rebuild,
        }
    }
}

/// A page of volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumePage {
    /// Volumes.
    pub items: Vec<Volume>,
    /// The token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// The query of `GET /v1/volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListVolumes {
    /// Only this tenant's (admins; others see their own).
    pub tenant: Option<String>,
    /// Only volumes of this name.
    pub name: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
    /// Where the page starts (from `next_page_token`).
    pub page_token: Option<String>,
}

impl Check for ListVolumes {
    fn check(&self) -> Result<(), ControlError> {
        check_opt_name("tenant", &self.tenant)?;
        check_opt_name("name", &self.name)?;
        if let Some(l) = self.limit {
            check_int("limit", l, 1, LIST_LIMIT_MAX)?;
        }
        if let Some(t) = &self.page_token {
            check_len("page_token", t, PAGE_TOKEN_MAX_LEN)?;
            check_text("page_token", t, PAGE_TOKEN_PATTERN)?;
        }
        Ok(())
    }
}

/// `PATCH /v1/volumes/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resize {
    /// The new size.
    pub size: VolumeSize,
}

impl Check for Resize {
    fn check(&self) -> Result<(), ControlError> {
        self.size.bytes("size").map(|_| ())
    }
}

/// The query of `DELETE /v1/volumes/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteVolume {
    /// Delete its snapshots and attachment too.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/volumes/{id}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rollback {
    /// The snapshot id to roll back to.
    pub snapshot: String,
}

/// `PUT /v1/volumes/{id}/qos`: the new limits (absent or null: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetQos {
    /// Operations per second.
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = iops)]
    pub iops_limit: Option<u64>,
    /// Bytes per second.
    pub bandwidth_limit: Option<Bandwidth>,
    /// Operations allowed at once above the rate (default: one second's worth).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(schema_with = iops)]
    pub burst_iops: Option<u64>,
    /// Bytes allowed at once above the rate (default: one second's worth).
    pub burst_bandwidth: Option<Bandwidth>,
}

impl SetQos {
    /// The limits, checked against the declared bounds.
    pub fn limits(&self) -> Result<model::Qos, ControlError> {
        let i = |f, v: Option<u64>| {
            v.map(|v| check_int(f, v, IOPS_MIN, IOPS_MAX).map(|_| v))
                .transpose()
        };
        let b = |f, v: &Option<Bandwidth>| v.as_ref().map(|v| v.bytes(f)).transpose();
        Ok(model::Qos {
            iops_limit: i("iops_limit", self.iops_limit)?,
            bandwidth_limit: b("bandwidth_limit", &self.bandwidth_limit)?,
            burst_iops: i("burst_iops", self.burst_iops)?,
            burst_bandwidth: b("burst_bandwidth", &self.burst_bandwidth)?,
        })
    }
}

/// Cumulative I/O counters of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IoTotals {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Time requests waited for QoS admission, microseconds.
    pub throttled_us: u64,
}

/// Live figures of a volume: rates over the last 1, 10 and 60 whole seconds (the second
/// under way is not counted; a volume younger than a window divides by its age), latency
/// percentiles over the last minute, from a request's arrival to its completion (so they
/// include the time it waited for QoS admission).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VolumeStats {
    /// Volume id.
    pub volume: String,
    /// Volume name.
    pub name: String,
    /// Seconds the latency percentiles cover (at most 60).
    pub window_seconds: u64,
    /// Operations per second over the last second (the same as `iops_1s`).
    pub iops: f64,
    /// Bytes per second over the last second (the same as `throughput_1s`).
    pub throughput_bytes: f64,
    /// Operations per second over the last second.
    pub iops_1s: f64,
    /// Operations per second over the last 10 seconds.
    pub iops_10s: f64,
    /// Operations per second over the last 60 seconds.
    pub iops_60s: f64,
    /// Bytes per second over the last second.
    pub throughput_1s: f64,
    /// Bytes per second over the last 10 seconds.
    pub throughput_10s: f64,
    /// Bytes per second over the last 60 seconds.
    pub throughput_60s: f64,
    /// Median latency, microseconds (upper bound of its power-of-two bucket).
    pub latency_p50_us: u64,
    /// 99th percentile latency, microseconds (upper bound of its power-of-two bucket).
    pub latency_p99_us: u64,
    /// Limits in force.
    pub qos: Qos,
    /// Counters since start.
    pub totals: IoTotals,
}

impl Check for Rollback {
    fn check(&self) -> Result<(), ControlError> {
        Ok(())
    }
}

impl Check for DeleteVolume {
    fn check(&self) -> Result<(), ControlError> {
        Ok(())
    }
}

impl Check for SetQos {
    fn check(&self) -> Result<(), ControlError> {
        self.limits().map(|_| ())
    }
}

/// `PATCH /v1/volumes/{id}/qos`: changes only the limits named (`wire::patch`): an absent
/// field keeps its limit, `null` removes it (unlimited), a value sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QosPatch {
    /// Operations per second.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = iops)]
    pub iops_limit: Option<Option<u64>>,
    /// Bytes per second.
    #[serde(
        default,
        deserialize_with = "super::patch::value",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Bandwidth>)]
    pub bandwidth_limit: Option<Option<Bandwidth>>,
    /// Operations allowed at once above the rate.
    #[serde(
        default,
        deserialize_with = "super::patch::int",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = iops)]
    pub burst_iops: Option<Option<u64>>,
    /// Bytes allowed at once above the rate.
    #[serde(
        default,
        deserialize_with = "super::patch::value",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Bandwidth>)]
    pub burst_bandwidth: Option<Option<Bandwidth>>,
}

/// A checked [`QosPatch`]: each field absent (`None`), removed (`Some(None)`) or set, in the
/// record's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosChange {
    /// Operations per second.
    pub iops_limit: Option<Option<u64>>,
    /// Bytes per second.
    pub bandwidth_limit: Option<Option<u64>>,
    /// IOPS burst.
    pub burst_iops: Option<Option<u64>>,
    /// Bandwidth burst.
    pub burst_bandwidth: Option<Option<u64>>,
}

impl QosPatch {
    /// The change, checked against the declared bounds.
    pub fn change(&self) -> Result<QosChange, ControlError> {
        let i = |f, v: Option<Option<u64>>| {
            v.map(|v| {
                v.map(|v| check_int(f, v, IOPS_MIN, IOPS_MAX).map(|_| v))
                    .transpose()
            })
            .transpose()
        };
        let b = |f, v: &Option<Option<Bandwidth>>| {
            v.as_ref()
                .map(|v| v.as_ref().map(|v| v.bytes(f)).transpose())
                .transpose()
        };
        Ok(QosChange {
            iops_limit: i("iops_limit", self.iops_limit)?,
            bandwidth_limit: b("bandwidth_limit", &self.bandwidth_limit)?,
            burst_iops: i("burst_iops", self.burst_iops)?,
            burst_bandwidth: b("burst_bandwidth", &self.burst_bandwidth)?,
        })
    }
}

impl QosChange {
    /// `q` with this change applied.
    pub fn apply(&self, mut q: model::Qos) -> model::Qos {
        use super::patch::apply;
        apply(&mut q.iops_limit, &self.iops_limit);
        apply(&mut q.bandwidth_limit, &self.bandwidth_limit);
        apply(&mut q.burst_iops, &self.burst_iops);
        apply(&mut q.burst_bandwidth, &self.burst_bandwidth);
        q
    }
}

impl Check for QosPatch {
    fn check(&self) -> Result<(), ControlError> {
        self.change().map(|_| ())
    }
}
