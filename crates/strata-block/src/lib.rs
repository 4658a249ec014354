//! Strata's storage engine: pools of devices, thin volumes, O(1) copy-on-write snapshots and
//! clones, per-block checksums, and crash-safe metadata.
//!
//! The engine does no networking and reaches devices only through [`BlockDevice`], so tests
//! drive it over memory, fault-injecting and power-cut backends ([`testing`]). Its design and
//! byte layouts are in `docs/block-format.md`.
//!
//! ```
//! use strata_block::{MemDevice, Pool, DeviceSpec};
//! use strata_types::DeviceClass;
//! let dev = MemDevice::new(64 << 20, "mem0");
//! let pool = Pool::create(vec![DeviceSpec { device: dev, class: DeviceClass::Ssd }]).unwrap();
//! let vol = pool.create_volume("data", 1 << 30, None).unwrap();
//! pool.write(vol, 4096, b"hello").unwrap();
//! pool.flush().unwrap();
//! let mut buf = [0u8; 5];
//! pool.read(vol, 4096, &mut buf).unwrap();
//! assert_eq!(&buf, b"hello");
//! ```

pub mod alloc;
pub mod bucket;
pub mod codec;
pub mod crypt;
pub mod device;
pub mod error;
pub mod format;
pub mod map;
pub mod meta;
pub mod pool;
pub mod qos;
pub mod share;
pub mod testing;

pub use crypt::{EnvKey, KeyError, KeyFile, KeyWrapper, MasterKey};
pub use device::{BlockDevice, FileDevice, MemDevice};
pub use error::{AdminError, IoError, KeyAdminError, OpenError, PoolFailure};
pub use format::{BLOCK_SIZE, MAX_VOLUME_SIZE};
pub use meta::{SnapshotId, VolumeId};
pub use pool::{
    DeviceInfo, DeviceSpec, EncryptionInfo, KeyUnlock, Pool, PoolInfo, SnapshotInfo, Target,
    VolumeInfo,
};
pub use qos::{LiveStats, QosLimits, Totals, VolumeIo};
pub use share::{Capacity, ClassId, ClassShare, PoolShare};
