//! Integration tests of the storage engine (one binary, modules per concern).

mod bad_input;
mod concurrency;
mod corruption;
mod crash;
mod files;
mod full_pool;
mod groups;
mod model;
mod placement;

use std::sync::Arc;

use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
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

/// Deterministic content for block-sized tests: the byte pattern of (tag, index).
pub fn pattern(tag: u8, index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag ^ (index as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ (i >> 8) as u8)
        .collect()
}
