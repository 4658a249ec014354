//! Typed errors per operation family, each mapped to a stable [`ErrorCode`].

use std::io;

use strata_types::ErrorCode;
use thiserror::Error;
use uuid::Uuid;

/// Creating or opening a pool.
#[derive(Debug, Error)]
pub enum OpenError {
    /// No devices were given.
    #[error("no devices given")]
    NoDevices,
    /// More devices than a pool can address.
    #[error("too many devices: {0} (at most {max})", max = crate::format::MAX_DEVICES)]
    TooManyDevices(usize),
    /// A device failed an I/O.
    #[error("device {device}: {source}")]
    Io {
        /// Device label.
        device: String,
        /// Cause.
        source: io::Error,
    },
    /// A device is too small to format.
    #[error("device {device} is too small: {size} bytes, need at least {min}")]
    DeviceTooSmall {
        /// Device label.
        device: String,
        /// Its size.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// The device has no Strata superblock.
    #[error("device {device} is not a Strata pool device (no superblock)")]
    NotStrata {
        /// Device label.
        device: String,
    },
    /// The superblock's checksum does not match.
    #[error("device {device}: superblock is damaged (checksum mismatch)")]
    SuperblockCorrupt {
        /// Device label.
        device: String,
    },
    /// The superblock is of a format version this build does not read.
    #[error("device {device}: superblock format version {version} is not supported (this build reads {supported})", supported = crate::format::SB_VERSION)]
    UnsupportedVersion {
        /// Device label.
        device: String,
        /// Version found.
        version: u32,
    },
    /// A superblock field is out of range.
    #[error("device {device}: superblock is invalid ({what})")]
    SuperblockInvalid {
        /// Device label.
        device: String,
        /// The field.
        what: &'static str,
    },
    /// The device belongs to another pool.
    #[error("device {device} belongs to pool {found}, not to pool {expected}")]
    ForeignDevice {
        /// Device label.
        device: String,
        /// Its pool.
        found: Uuid,
        /// The pool being opened.
        expected: Uuid,
    },
    /// The same device was given twice.
    #[error("device {device} was given twice (device id {id})")]
    DuplicateDevice {
        /// Device label.
        device: String,
        /// Its id.
        id: Uuid,
    },
    /// A member device was not given.
    #[error("pool {pool} is missing its device #{index}")]
    MissingDevice {
        /// The pool.
        pool: Uuid,
        /// The device's index.
        index: u32,
    },
    /// The device is shorter than when it was formatted.
    #[error("device {device} is truncated: {actual} bytes, formatted as {expected}")]
    Truncated {
        /// Device label.
        device: String,
        /// Size recorded in its superblock.
        expected: u64,
        /// Size now.
        actual: u64,
    },
    /// The pool's metadata is damaged.
    #[error("pool metadata is damaged: {0}")]
    CorruptMetadata(String),
}

impl OpenError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpenError::NoDevices
            | OpenError::TooManyDevices(_)
            | OpenError::DeviceTooSmall { .. } => ErrorCode::InvalidArgument,
            OpenError::Io { .. } => ErrorCode::IoError,
            OpenError::CorruptMetadata(_) => ErrorCode::CorruptMetadata,
            _ => ErrorCode::DeviceError,
        }
    }
}

/// Managing volumes and snapshots.
#[derive(Debug, Error)]
pub enum AdminError {
    /// No such volume.
    #[error("volume {0} not found")]
    VolumeNotFound(String),
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// The name is taken.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// "volume" or "snapshot".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The name is not acceptable.
    #[error("invalid name {name:?}: {why}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The size is not acceptable.
    #[error("invalid size {size}: {why}")]
    InvalidSize {
        /// The size.
        size: u64,
        /// What is wrong.
        why: String,
    },
    /// Shrinking would discard data.
    #[error("volume {volume}: cannot shrink to {size} bytes, data lies beyond it")]
    ShrinkOverData {
        /// Volume name.
        volume: String,
        /// Requested size.
        size: u64,
    },
    /// The volume has snapshots and deletion was not forced.
    #[error("volume {volume} has {count} snapshot(s); delete them first or force")]
    HasSnapshots {
        /// Volume name.
        volume: String,
        /// How many.
        count: usize,
    },
    /// The pool has no device of the requested class.
    #[error("the pool has no {0} device")]
    ClassUnavailable(strata_types::DeviceClass),
    /// The snapshot does not belong to the volume.
    #[error("snapshot {snapshot} is not a snapshot of volume {volume}")]
    NotOfVolume {
        /// Snapshot name.
        snapshot: String,
        /// Volume name.
        volume: String,
    },
    /// A snapshot group names one volume twice.
    #[error("volume {0} is named twice in one snapshot group")]
    DuplicateMember(String),
    /// The pool's metadata area is full.
    #[error("pool metadata area is full")]
    MetadataFull,
    /// Making the change durable failed; the pool stopped accepting changes.
    #[error("pool failed: {0}")]
    Failed(#[source] PoolFailure),
}

impl AdminError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AdminError::VolumeNotFound(_) => ErrorCode::VolumeNotFound,
            AdminError::SnapshotNotFound(_) => ErrorCode::SnapshotNotFound,
            AdminError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            AdminError::InvalidName { .. }
            | AdminError::InvalidSize { .. }
            | AdminError::DuplicateMember(_) => ErrorCode::InvalidArgument,
            AdminError::ShrinkOverData { .. }
            | AdminError::HasSnapshots { .. }
            | AdminError::NotOfVolume { .. } => ErrorCode::Conflict,
            AdminError::ClassUnavailable(_) => ErrorCode::InvalidArgument,
            AdminError::MetadataFull => ErrorCode::OutOfSpace,
            AdminError::Failed(_) => ErrorCode::IoError,
        }
    }
}

/// Creating encrypted volumes and rotating the master key: the management errors, and those
/// of keys (a type of its own, so callers that match every [`AdminError`] keep compiling).
#[derive(Debug, Error)]
pub enum KeyAdminError {
    /// A management error (name, size, class, durability).
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// An encrypted volume was asked for, or keys rotated, on a pool given no master key.
    #[error("the pool has no master key: give one to create encrypted volumes")]
    NoMasterKey,
    /// A data key the operation needs is locked (the pool was opened without its master key
    /// or with another one).
    #[error(
        "data key {key} is wrapped by master key {master_key_id}, which the pool was not given"
    )]
    KeyUnavailable {
        /// The data key.
        key: u64,
        /// The master key that wraps it.
        master_key_id: String,
    },
    /// The master key failed to wrap a data key.
    #[error("master key: {0}")]
    Key(#[source] crate::crypt::KeyError),
}

impl KeyAdminError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            KeyAdminError::Admin(e) => e.code(),
            KeyAdminError::NoMasterKey => ErrorCode::MasterKeyMissing,
            KeyAdminError::KeyUnavailable { .. } => ErrorCode::VolumeKeyUnavailable,
            KeyAdminError::Key(_) => ErrorCode::IoError,
        }
    }
}

/// Why a metadata op cannot apply. Live, the pool checks first so this does not happen; in
/// replay it means the metadata is damaged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("metadata op cannot apply: {0}")]
pub struct ApplyError(pub String);

/// Why a management operation found or left the pool failed ([`AdminError::Failed`]).
#[derive(Debug, Error)]
pub enum PoolFailure {
    /// An earlier commit failed; the pool accepts no changes until it is reopened.
    #[error("an earlier commit failed; reopen the pool")]
    EarlierFailure,
    /// Making this operation durable failed (the pool is now failed).
    #[error("commit failed: {0}")]
    Commit(#[source] IoError),
    /// A planned op did not apply to the state it was planned against (a bug).
    #[error("internal: {0}")]
    Apply(#[source] ApplyError),
}

/// Reading, writing, trimming, flushing.
#[derive(Debug, Error)]
pub enum IoError {
    /// No such volume or snapshot.
    #[error("{0} not found")]
    NotFound(String),
    /// The range is outside the volume.
    #[error("{target}: range {offset}+{len} is outside its {size} bytes")]
    OutOfRange {
        /// Volume or snapshot name.
        target: String,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Size.
        size: u64,
    },
    /// Snapshots are read-only.
    #[error("snapshot {0} is read-only")]
    ReadOnly(String),
    /// The pool (or the volume's device class) has no room for the write.
    #[error("out of space writing {target}")]
    OutOfSpace {
        /// Volume name.
        target: String,
    },
    /// A block failed its checksum: the data is not returned.
    #[error(
        "checksum mismatch in {target} at offset {offset} (device {device}, byte {device_offset})"
    )]
    Checksum {
        /// Volume or snapshot name.
        target: String,
        /// Byte offset of the block in the volume.
        offset: u64,
        /// Device label.
        device: String,
        /// Byte offset on the device.
        device_offset: u64,
    },
    /// A block's checksum matched but it did not authenticate under its key (its bytes and
    /// checksum were both changed): the data is not returned.
    #[error("{target}: block at offset {offset} failed authentication")]
    Authentication {
        /// Volume or snapshot name.
        target: String,
        /// Byte offset of the block in the volume.
        offset: u64,
    },
    /// The volume is encrypted and its data key is locked: no byte of it is served.
    #[error("{target} is encrypted and its key is unavailable (wrapped by master key {master_key_id}; the pool was opened without it)")]
    KeyUnavailable {
        /// Volume or snapshot name.
        target: String,
        /// The master key that wraps its data key.
        master_key_id: String,
    },
    /// A device failed.
    #[error("device {device}: {source}")]
    Device {
        /// Device label.
        device: String,
        /// Cause.
        source: io::Error,
    },
    /// An earlier failure to make metadata durable stopped the pool accepting writes.
    #[error("pool failed earlier and accepts no more writes; reopen it")]
    PoolFailed,
    /// The session's owner generation is older than the volume's: another node took the
    /// volume over, and this session may no longer touch the copy.
    #[error("{0}")]
    Fenced(String),
}

impl IoError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            IoError::NotFound(_) => ErrorCode::VolumeNotFound,
            IoError::OutOfRange { .. } => ErrorCode::InvalidArgument,
            IoError::ReadOnly(_) => ErrorCode::ReadOnly,
            IoError::OutOfSpace { .. } => ErrorCode::OutOfSpace,
            IoError::Checksum { .. } | IoError::Authentication { .. } => {
                ErrorCode::ChecksumMismatch
            }
            IoError::KeyUnavailable { .. } => ErrorCode::VolumeKeyUnavailable,
            IoError::Device { .. } | IoError::PoolFailed => ErrorCode::IoError,
            IoError::Fenced(_) => ErrorCode::VolumeFenced,
        }
    }

    /// The errno an NBD reply carries: the registry's for [`IoError::code`] (one map for the
    /// engine and the server; a volume deleted under a connection is EIO, as the registry says).
    pub fn errno(&self) -> i32 {
        self.code()
            .nbd_errno()
            .unwrap_or(strata_types::nbd_errno::EIO) as i32
    }
}
