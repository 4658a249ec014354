//! The engine pools behind the daemon's pools. Every device of every pool is an engine pool of
//! its own — superblock, journal, checkpoint and data on that one device — so a device that
//! fails takes with it only the copies it holds, never another device's metadata
//! (docs/pools.md). The control plane's records say which devices a pool has and which
//! devices hold a volume's copies; this module holds what is open.
//!
//! # Invariants
//! - A device id opens at most one engine pool in this process; a path is a device of at most
//!   one pool (checked when a device is added, by path and by the engine pool's id).
//! - A device that could not be opened, or whose engine pool failed, stays listed with its
//!   fault: the volumes with a copy there see that copy gone, nothing else changes.
//! - The master key, once given, is given to every engine pool open now and opened later.

mod counters;
mod counting;
mod device;
mod handle;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use strata_block::{KeyWrapper, Pool};

pub use counters::{CounterValues, DeviceCounters};
pub use counting::CountedCopy;
pub use device::{format_device, open_device, DeviceOpenError};
pub use handle::{io_error, VolumeHandle};

/// An open (or faulted) device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its engine pool, when it opened.
    pub engine: Option<Pool>,
    /// Why it is not usable, when it is not.
    pub fault: Option<String>,
    /// Errors its I/O met since start.
    pub counters: Arc<DeviceCounters>,
}

impl Device {
    /// The health word the API shows: `healthy`, `faulted` (the engine failed or errors were
    /// met and it was faulted) or `missing` (it did not open).
    pub fn health(&self) -> &'static str {
        match (&self.engine, &self.fault) {
            (None, _) => "missing",
            (Some(_), Some(_)) => "faulted",
            (Some(p), None) if p.is_failed() => "faulted",
            (Some(_), None) => "healthy",
        }
    }

    /// Whether copies may be read from and written to it.
    pub fn usable(&self) -> Option<&Pool> {
        match (&self.engine, &self.fault) {
            (Some(p), None) if !p.is_failed() => Some(p),
            _ => None,
        }
    }
}

/// The open devices, by id.
#[derive(Default)]
pub struct Storage {
    devices: RwLock<BTreeMap<String, Device>>,
    wrapper: RwLock<Option<Arc<dyn KeyWrapper>>>,
    dirs: RwLock<Vec<std::path::PathBuf>>,
    /// Devices faulted since the controller last looked (`(device, why)`), for its audit log.
    faulted: parking_lot::Mutex<Vec<(String, String)>>,
    /// Exclusive claims on the block devices in use (`device::claim`), by device id.
    claims: parking_lot::Mutex<BTreeMap<String, std::fs::File>>,
    /// Called after a device is faulted (the daemon wakes its rebuild scan).
    on_fault: RwLock<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("devices", &self.devices.read().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Storage {
    /// Keeps `engine` (or the reason it did not open) as device `id`.
    pub fn insert(&self, id: &str, engine: Result<Pool, String>) {
        let (engine, fault) = match engine {
            Ok(p) => {
                if let Some(w) = self.wrapper.read().clone() {
                    p.set_key_wrapper(w);
                }
                (Some(p), None)
            }
            Err(why) => (None, Some(why)),
        };
        let counters = self
            .devices
            .read()
            .get(id)
            .map(|d| d.counters.clone())
            .unwrap_or_default();
        self.devices.write().insert(
            id.to_string(),
            Device {
                engine,
                fault,
                counters,
            },
        );
    }

    /// Claims the block device at `path` for device `id` while it is in use.
    pub fn claim(&self, id: &str, path: &std::path::Path) {
        if let Some(f) = device::claim(path) {
            self.claims.lock().insert(id.to_string(), f);
        }
    }

    /// Forgets device `id` (it left its pool).
    pub fn remove(&self, id: &str) -> Option<Device> {
        self.claims.lock().remove(id);
        self.devices.write().remove(id)
    }

    /// Device `id`, if this process knows it.
    pub fn get(&self, id: &str) -> Option<Device> {
        self.devices.read().get(id).cloned()
    }

    /// Device `id`'s engine pool when it is usable.
    pub fn engine(&self, id: &str) -> Option<Pool> {
        self.devices.read().get(id)?.usable().cloned()
    }

    /// Marks device `id` faulted (its I/O failed): its copies are no longer used.
    pub fn fault(&self, id: &str, why: &str) {
        let mut newly = false;
        if let Some(d) = self.devices.write().get_mut(id) {
            if d.fault.is_none() {
                tracing::error!(device = id, reason = why, "device faulted");
                d.fault = Some(why.to_string());
                self.faulted.lock().push((id.to_string(), why.to_string()));
                newly = true;
            }
        }
        if newly {
            if let Some(f) = self.on_fault.read().clone() {
                f();
            }
        }
    }

    /// Calls `f` after each device fault, outside the storage's locks.
    pub fn on_fault(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *self.on_fault.write() = Some(f);
    }

    /// The devices faulted since the last call, with why.
    pub fn take_faulted(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.faulted.lock())
    }

    /// Every known device, by id.
    pub fn all(&self) -> BTreeMap<String, Device> {
        self.devices.read().clone()
    }

    /// Gives every engine pool (open now and later) the master key.
    pub fn set_key_wrapper(&self, w: Arc<dyn KeyWrapper>) -> strata_block::KeyUnlock {
        *self.wrapper.write() = Some(w.clone());
        let mut all = strata_block::KeyUnlock::default();
        for d in self.devices.read().values() {
            if let Some(p) = &d.engine {
                let u = p.set_key_wrapper(w.clone());
                all.unlocked.extend(u.unlocked);
                all.locked.extend(u.locked);
            }
        }
        all
    }

    /// Where regular files may be made devices (see `device::format_device`).
    pub fn set_device_dirs(&self, dirs: Vec<std::path::PathBuf>) {
        *self.dirs.write() = dirs;
    }

    /// The directories regular-file devices may lie under.
    pub fn device_dirs(&self) -> Vec<std::path::PathBuf> {
        self.dirs.read().clone()
    }

    /// Makes `w` the key given to devices opened from now on (the open ones were rotated
    /// to it by the caller).
    pub fn replace_key_wrapper(&self, w: Arc<dyn KeyWrapper>) {
        *self.wrapper.write() = Some(w);
    }

    /// The master key, once given.
    pub fn key_wrapper(&self) -> Option<Arc<dyn KeyWrapper>> {
        self.wrapper.read().clone()
    }
}
