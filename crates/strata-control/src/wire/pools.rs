//! Pools and their devices.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A device of a pool: a file or block device holding an engine pool of its own, and a
/// failure domain of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// Device id (`POOL-dN`).
    pub id: String,
    /// The file or block device.
    pub path: String,
    /// Device class.
    pub class: String,
    /// The failure domain (copies of one volume are on distinct domains).
    pub domain: String,
    /// `active` (takes new copies) or `draining`.
    pub state: String,
    /// `healthy`, `faulted` (its I/O failed) or `missing` (it did not open).
    pub health: String,
    /// Why it is not healthy.
    pub fault: Option<String>,
    /// Data capacity, bytes (0 when missing).
    pub capacity: u64,
    /// Bytes allocated.
    pub allocated: u64,
    /// Volume copies it holds.
    pub copies: u64,
    /// Reads that failed since the daemon started.
    pub read_errors: u64,
    /// Writes and flushes that failed since the daemon started.
    pub write_errors: u64,
    /// Blocks that failed their checksum since the daemon started.
    pub checksum_errors: u64,
    /// Blocks rewritten from another copy since the daemon started.
    pub repaired: u64,
}

impl From<crate::controller::DeviceView> for Device {
    fn from(d: crate::controller::DeviceView) -> Self {
        Device {
            id: d.record.id,
            path: d.record.path,
            class: d.record.class,
            domain: d.record.domain,
            state: match d.record.state {
                crate::model::DeviceState::Active => "active",
                crate::model::DeviceState::Draining => "draining",
            }
            .to_string(),
            health: d.health,
            fault: d.fault,
            capacity: d.capacity,
            allocated: d.allocated,
            copies: d.copies,
            read_errors: d.counters.read_errors,
            write_errors: d.counters.write_errors,
            checksum_errors: d.counters.checksum_errors,
            repaired: d.counters.repaired,
        }
    }
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Pool {
    /// Name.
    pub name: String,
    /// Copies a new volume gets when its create names none.
    pub replicas: u64,
    /// Sum of the devices' data capacities, bytes.
    pub capacity: u64,
    /// Bytes allocated on its devices.
    pub allocated: u64,
    /// Bytes free on its devices.
    pub free: u64,
    /// Sum of its volumes' sizes, once per copy.
    pub provisioned: u64,
    /// Devices.
    pub devices: Vec<Device>,
}

impl From<crate::controller::PoolView> for Pool {
    fn from(p: crate::controller::PoolView) -> Self {
        Pool {
            name: p.name,
            replicas: u64::from(p.replicas),
            capacity: p.capacity,
            allocated: p.allocated,
            free: p.free,
            provisioned: p.provisioned,
            devices: p.devices.into_iter().map(Into::into).collect(),
        }
    }
}

/// The pools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    /// Pools.
    pub items: Vec<Pool>,
}

fn pool_name() -> utoipa::openapi::schema::Object {
    super::bounds::text(
        super::bounds::NAME_PATTERN,
        super::bounds::NAME_MAX_LEN,
        false,
    )
}

fn device_path() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(2))
        .max_length(Some(super::bounds::PATH_MAX_LEN))
        .pattern(Some("^/"))
        .build()
}

fn device_class() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::String,
            utoipa::openapi::schema::Type::Null,
        ]))
        .enum_values(Some(["hdd", "ssd", "nvme"]))
        .build()
}

/// A device to add: a path and a class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// An absolute path to a regular file or a block device (its content is erased).
    #[schema(schema_with = device_path)]
    pub path: String,
    /// Device class (`ssd` when not given).
    #[serde(default)]
    #[schema(schema_with = device_class)]
    pub class: Option<String>,
}

impl NewDevice {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        if !self.path.starts_with('/') || self.path.len() > super::bounds::PATH_MAX_LEN {
            return Err(crate::error::ControlError::invalid(
                "path",
                "an absolute path to a file or block device",
            ));
        }
        if let Some(c) = &self.class {
            c.parse::<strata_types::DeviceClass>()
                .map_err(|e| crate::error::ControlError::invalid("class", e.to_string()))?;
        }
        Ok(())
    }

    /// The controller's form.
    pub fn into_new(self) -> crate::controller::NewDevice {
        crate::controller::NewDevice {
            path: self.path,
            class: self.class,
        }
    }
}

/// `POST /v1/pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    /// Name.
    #[schema(schema_with = pool_name)]
    pub name: String,
    /// Devices (1 to 64).
    #[schema(min_items = 1, max_items = 64)]
    pub devices: Vec<NewDevice>,
    /// Copies a new volume gets when its create names none (1 to 3; 1 when not given).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 3)]
    pub replicas: Option<u64>,
    /// Format devices that hold data that is not Strata's (their content is lost).
    #[serde(default)]
    pub force: bool,
}

impl super::Check for CreatePool {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        super::bounds::check_text("name", &self.name, super::bounds::NAME_PATTERN)?;
        if self.devices.is_empty() || self.devices.len() > 64 {
            return Err(crate::error::ControlError::invalid(
                "devices",
                "a pool has 1 to 64 devices",
            ));
        }
        for d in &self.devices {
            d.check()?;
        }
        if let Some(r) = self.replicas {
            super::bounds::check_int("replicas", r, 1, u64::from(crate::model::MAX_REPLICAS))?;
        }
        Ok(())
    }
}

impl CreatePool {
    /// The controller's request.
    pub fn into_request(self) -> crate::controller::CreatePool {
        crate::controller::CreatePool {
            name: self.name,
            devices: self.devices.into_iter().map(NewDevice::into_new).collect(),
            // Checked to 1..=3.
            replicas: self.replicas.map(|r| r as u8),
            force: self.force,
        }
    }
}

/// `POST /v1/pools/{id}/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    /// An absolute path to a regular file or a block device (its content is erased).
    #[schema(schema_with = device_path)]
    pub path: String,
    /// Device class (`ssd` when not given).
    #[serde(default)]
    #[schema(schema_with = device_class)]
    pub class: Option<String>,
    /// Format a device that holds data that is not Strata's (its content is lost).
    #[serde(default)]
    pub force: bool,
}

impl super::Check for AddDevice {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        NewDevice {
            path: self.path.clone(),
            class: self.class.clone(),
        }
        .check()
    }
}

/// `POST /v1/pools/{id}/scrub`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartScrub {
    /// Most bytes per second the scrub reads (0 or absent: as fast as the devices go).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 0, maximum = 1099511627776_u64)]
    pub rate: Option<u64>,
}

impl super::Check for StartScrub {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        if let Some(r) = self.rate {
            super::bounds::check_int("rate", r, 0, 1 << 40)?;
        }
        Ok(())
    }
}

/// A block a scrub could not repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BadBlock {
    /// The volume.
    pub volume: String,
    /// The snapshot, when the block is a snapshot's.
    pub snapshot: Option<String>,
    /// The device of the copy.
    pub device: String,
    /// Byte offset in the volume.
    pub offset: u64,
}

/// Where a pool's scrub stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Scrub {
    /// The pool.
    pub pool: String,
    /// `idle` (none ever ran), `running`, `done`, or `interrupted` (the daemon stopped during
    /// it).
    pub state: String,
    /// Most bytes per second it reads (0: unlimited).
    pub rate: u64,
    /// Allocated bytes to read over every copy.
    pub total_bytes: u64,
    /// Bytes read so far.
    pub done_bytes: u64,
    /// Blocks that failed verification.
    pub bad_blocks: u64,
    /// Of those, rewritten from a good copy.
    pub repaired: u64,
    /// Those it could not repair (the first 1000).
    pub unrepaired: Vec<BadBlock>,
    /// When it started, seconds since the epoch (0: idle).
    pub started: u64,
    /// When it ended.
    pub finished: Option<u64>,
}

impl Scrub {
    /// A pool's scrub state, `idle` when none ran.
    pub fn of(pool: &str, v: Option<crate::controller::ScrubView>) -> Self {
        let v = v.unwrap_or_else(|| crate::controller::ScrubView {
            pool: pool.to_string(),
            state: "idle".into(),
            ..Default::default()
        });
        Scrub {
            pool: v.pool,
            state: v.state,
            rate: v.rate,
            total_bytes: v.total_bytes,
            done_bytes: v.done_bytes,
            bad_blocks: v.bad_blocks,
            repaired: v.repaired,
            unrepaired: v
                .unrepaired
                .into_iter()
                .map(|b| BadBlock {
                    volume: b.volume,
                    snapshot: b.snapshot,
                    device: b.device,
                    offset: b.offset,
                })
                .collect(),
            started: v.started,
            finished: v.finished,
        }
    }
}

/// `POST /v1/master-key/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateMasterKey {
    /// The new master key: a file of 32 bytes outside the data dir (`strata master-key
    /// create PATH` makes one), read by the daemon.
    #[schema(schema_with = device_path)]
    pub key_file: String,
}

impl super::Check for RotateMasterKey {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        if !self.key_file.starts_with('/') || self.key_file.len() > super::bounds::PATH_MAX_LEN {
            return Err(crate::error::ControlError::invalid(
                "key_file",
                "an absolute path to a master key file",
            ));
        }
        Ok(())
    }
}

/// One device's rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRotation {
    /// The device.
    pub device: String,
    /// Its data keys are wrapped by the new master key.
    pub rotated: bool,
    /// Why not.
    pub error: Option<String>,
}

/// How a master key rotation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MasterKeyRotation {
    /// The new master key's id: start the daemon with its file from now on.
    pub master_key: String,
    /// Per device.
    pub devices: Vec<DeviceRotation>,
}

impl From<crate::controller::Rotation> for MasterKeyRotation {
    fn from(r: crate::controller::Rotation) -> Self {
        MasterKeyRotation {
            master_key: r.master_key,
            devices: r
                .devices
                .into_iter()
                .map(|(device, error)| DeviceRotation {
                    device,
                    rotated: error.is_none(),
                    error,
                })
                .collect(),
        }
    }
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
    /// Sum of the pool's volume sizes, each counted once per copy, bytes.
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
