//! The metadata's vocabulary: ids, physical addresses, names and device-class codes. It
//! imports nothing from the rest of the metadata, so every other file can use it.

use strata_types::DeviceClass;

/// Identifies a volume inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(pub u64);
/// Identifies a snapshot inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId(pub u64);
/// Identifies a mapping layer.
pub type LayerId = u64;

/// Physical addresses keep the device index in the top 16 bits and the block in the rest.
pub const PBLOCK_SHIFT: u32 = 48;

/// Builds a physical address.
pub fn paddr(device: usize, block: u64) -> u64 {
    ((device as u64) << PBLOCK_SHIFT) | block
}
/// Splits a physical address into (device index, block number).
pub fn split_paddr(p: u64) -> (usize, u64) {
    ((p >> PBLOCK_SHIFT) as usize, p & ((1 << PBLOCK_SHIFT) - 1))
}

/// Identifies a data key (from the shared id sequence; 0 is "none" on disk).
pub type KeyId = u64;

/// Longest master key id recorded with a wrapped key.
pub const MAX_MASTER_ID: usize = 64;
/// Longest wrapped data key.
pub const MAX_WRAPPED: usize = 256;

/// A data key as the metadata holds it: wrapped by a master key, never in plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Id of the master key that wrapped it ([`crate::crypt::KeyWrapper::key_id`]).
    pub master: String,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
}

/// Longest volume or snapshot name.
pub const MAX_NAME: usize = 128;

/// The byte a volume's device class is encoded as (0: any class).
pub(crate) fn class_code(c: Option<DeviceClass>) -> u8 {
    c.map_or(0, |c| c.to_u8())
}

/// Decodes [`class_code`]; `None` for an unknown byte.
pub(crate) fn class_from_code(v: u8) -> Option<Option<DeviceClass>> {
    match v {
        0 => Some(None),
        v => DeviceClass::from_u8(v).map(Some),
    }
}
