//! Integration tests of the replication layer over real engine pools (one binary, modules per
//! concern). Each copy is its own pool on its own device: a fault device over memory, or a
//! power-cut device.

mod basics;
mod behind;
mod concurrency;
mod crash;
mod intent;
mod model;
mod repair;
mod resync;

use std::sync::Arc;

use parking_lot::Mutex;
use strata_block::testing::FaultDevice;
use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool, VolumeId};
use strata_replica::{CopyError, CopyTarget, LocalCopy, MemIntentLog, ReplicaSet, REGION_SIZE};
use strata_types::DeviceClass;

/// Size of each copy's device.
pub const DEV_SIZE: u64 = 48 << 20;

#[derive(Debug)]
/// One failure domain: a memory device behind a fault injector, its pool and the copy's volume.
pub struct Domain {
    pub mem: Arc<MemDevice>,
    pub fault: Arc<FaultDevice>,
    pub pool: Pool,
    pub vol: VolumeId,
    pub label: String,
}

impl Domain {
    /// A new domain holding a new volume of `vol_size` bytes.
    pub fn new(label: &str, vol_size: u64) -> Domain {
        let mem = MemDevice::new(DEV_SIZE, label);
        let fault = FaultDevice::new(mem.clone());
        let pool = Pool::create(vec![DeviceSpec {
            device: fault.clone(),
            class: DeviceClass::Ssd,
        }])
        .unwrap();
        let vol = pool.create_volume("copy", vol_size, None).unwrap();
        Domain {
            mem,
            fault,
            pool,
            vol,
            label: label.to_string(),
        }
    }

    /// The copy target.
    pub fn copy(&self) -> Arc<dyn CopyTarget> {
        Arc::new(LocalCopy::new(self.pool.clone(), self.vol, &self.label))
    }

    /// Clears every fault and reopens the pool from its device (a failed pool refuses writes
    /// until reopened; a reopened one has its last durable state).
    pub fn heal_and_reopen(&mut self) {
        self.heal();
        let dev: Arc<dyn BlockDevice> = self.fault.clone();
        self.pool = Pool::open(vec![dev]).unwrap();
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.fault.set_fail_reads(false);
        self.fault.set_fail_writes(false);
        self.fault.set_fail_syncs(false);
    }

    /// Makes the device vanish: every read, write and sync fails.
    pub fn vanish(&self) {
        self.fault.set_fail_reads(true);
        self.fault.set_fail_writes(true);
        self.fault.set_fail_syncs(true);
    }
}

/// `n` domains of `vol_size`-byte copies, and a set created over them with a memory log.
pub fn set_of(n: usize, vol_size: u64) -> (ReplicaSet, Vec<Domain>, MemIntentLog) {
    let doms: Vec<Domain> = (0..n)
        .map(|i| Domain::new(&format!("dom{i}"), vol_size))
        .collect();
    let log = MemIntentLog::new();
    let set = ReplicaSet::create(
        doms.iter().map(|d| d.copy()).collect(),
        Box::new(log.clone()),
    )
    .unwrap();
    (set, doms, log)
}

/// Reads a whole copy directly through its target.
pub fn image_of(t: &dyn CopyTarget) -> Vec<u8> {
    let mut v = vec![0u8; t.size().unwrap() as usize];
    t.read(0, &mut v).unwrap();
    v
}

/// A byte pattern that differs per offset and seed (so misplaced data is seen).
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            (x >> 56) as u8 | 1
        })
        .collect()
}

/// Runs resync steps until no copy resyncs (bounded).
pub fn resync_all(set: &ReplicaSet) {
    for _ in 0..100_000 {
        match set.resync_step(4 * REGION_SIZE).unwrap() {
            None => return,
            Some(_) => continue,
        }
    }
    panic!("resync did not finish");
}

type Hook = Box<dyn FnOnce() + Send>;

/// A target that runs a hook (once, when armed) after its next read or before its next write or flush: to cut the
/// power in the middle of a replicated write, or to race a client write against a resync.
#[derive(Debug)]
pub struct HookTarget {
    pub inner: Arc<dyn CopyTarget>,
    on_read: Mutex<Option<HookBox>>,
    on_write: Mutex<Option<HookBox>>,
    on_flush: Mutex<Option<HookBox>>,
}

pub struct HookBox(Hook);

impl std::fmt::Debug for HookBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hook")
    }
}

impl HookTarget {
    pub fn new(inner: Arc<dyn CopyTarget>) -> Arc<HookTarget> {
        Arc::new(HookTarget {
            inner,
            on_read: Mutex::new(None),
            on_write: Mutex::new(None),
            on_flush: Mutex::new(None),
        })
    }
    pub fn on_next_read(&self, f: impl FnOnce() + Send + 'static) {
        *self.on_read.lock() = Some(HookBox(Box::new(f)));
    }
    pub fn on_next_write(&self, f: impl FnOnce() + Send + 'static) {
        *self.on_write.lock() = Some(HookBox(Box::new(f)));
    }
    pub fn on_next_flush(&self, f: impl FnOnce() + Send + 'static) {
        *self.on_flush.lock() = Some(HookBox(Box::new(f)));
    }
}

impl CopyTarget for HookTarget {
    fn size(&self) -> Result<u64, CopyError> {
        self.inner.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        // After the read: a racing writer then changes what was just read.
        let r = self.inner.read(offset, buf);
        let hook = self.on_read.lock().take();
        if let Some(h) = hook {
            (h.0)();
        }
        r
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), CopyError> {
        let hook = self.on_write.lock().take();
        if let Some(h) = hook {
            (h.0)();
        }
        self.inner.write(offset, data)
    }
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), CopyError> {
        self.inner.write_zeroes(offset, len, unmap)
    }
    fn flush(&self) -> Result<(), CopyError> {
        let hook = self.on_flush.lock().take();
        if let Some(h) = hook {
            (h.0)();
        }
        self.inner.flush()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// The crate's threshold, as a loop bound.
pub const MAX_READ_ERRORS_FOR_TEST: u32 = strata_replica::MAX_READ_ERRORS;
