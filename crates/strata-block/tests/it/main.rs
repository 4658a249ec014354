//! Integration tests of the storage engine (one binary, modules per concern).

mod bad_input;
mod concurrency;
mod corruption;
mod crash;
mod encryption;
mod files;
mod full_pool;
mod groups;
mod model;
mod placement;

use std::sync::Arc;

use strata_block::{BlockDevice, DeviceSpec, KeyWrapper, MasterKey, MemDevice, Pool};
use strata_types::DeviceClass;

/// A pool on fresh memory devices of the given sizes (MiB) and classes.
pub fn mem_pool(devs: &[(u64, DeviceClass)]) -> (Pool, Vec<Arc<MemDevice>>) {
    let mems: Vec<Arc<MemDevice>> = devs
        .iter()
        .enumerate()
        .map(|(i, &(mib, _))| MemDevice::new(mib << 20, format!("mem{i}")))
        .collect();
    let pool = Pool::create(
        mems.iter()
            .zip(devs)
            .map(|(m, &(_, class))| DeviceSpec {
                device: m.clone(),
                class,
            })
            .collect(),
    )
    .unwrap();
    (pool, mems)
}

/// Reopens a pool from memory devices.
pub fn reopen(mems: &[Arc<MemDevice>]) -> Pool {
    Pool::open(
        mems.iter()
            .map(|m| m.clone() as Arc<dyn BlockDevice>)
            .collect(),
    )
    .unwrap()
}

/// A master key made from one repeated byte (tests only: distinct bytes, distinct keys).
pub fn test_key(b: u8) -> Arc<dyn KeyWrapper> {
    Arc::new(MasterKey::from_bytes(&[b; 32]))
}

/// The master key the suites parameterized over encryption use.
pub fn suite_key(encrypted: bool) -> Option<Arc<dyn KeyWrapper>> {
    encrypted.then(|| test_key(0x5e))
}

/// Creates a volume, encrypted (giving the pool the suite's master key) or plain.
pub fn new_volume(pool: &Pool, name: &str, size: u64, encrypted: bool) -> strata_block::VolumeId {
    match suite_key(encrypted) {
        Some(k) => {
            pool.set_key_wrapper(k);
            pool.create_encrypted_volume(name, size, None).unwrap()
        }
        None => pool.create_volume(name, size, None).unwrap(),
    }
}

/// Reopens a pool from memory devices with a master key (or none).
pub fn reopen_with(mems: &[Arc<MemDevice>], key: Option<Arc<dyn KeyWrapper>>) -> Pool {
    Pool::open_with_keys(
        mems.iter()
            .map(|m| m.clone() as Arc<dyn BlockDevice>)
            .collect(),
        key,
    )
    .unwrap()
}

/// Deterministic content for block-sized tests: the byte pattern of (tag, index).
pub fn pattern(tag: u8, index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag ^ (index as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8)
        .collect()
}
