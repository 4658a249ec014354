//! [`CountedCopy`]: a copy on a device that counts what its I/O meets into the device's
//! counters, and faults the device when the device itself fails (a write or flush error, or
//! the device gone). A checksum mismatch is a bad block, not a bad device: counted and logged
//! (at most once a second per device), repaired by the set from another copy.

use std::sync::Arc;

use strata_replica::{CopyError, CopyTarget, LocalCopy};

use super::{DeviceCounters, Storage};

/// A copy of a volume on one device, counted.
#[derive(Debug)]
pub struct CountedCopy {
    inner: LocalCopy,
    device: String,
    storage: Arc<Storage>,
    counters: Arc<DeviceCounters>,
}

impl CountedCopy {
    /// Copy `inner` on device `device` of `storage`.
    pub fn new(inner: LocalCopy, device: &str, storage: Arc<Storage>) -> Self {
        let counters = storage.get(device).map(|d| d.counters).unwrap_or_default();
        CountedCopy {
            inner,
            device: device.to_string(),
            storage,
            counters,
        }
    }

    fn seen(&self, e: &CopyError, write: bool) {
        match e {
            CopyError::Checksum { offset, .. } => self.counters.checksum_failed(
                &format!("{} at offset {offset}", self.inner.describe()),
                "served and repaired from another copy",
            ),
            CopyError::NoSpace { .. } => {}
            CopyError::Io { detail, .. } | CopyError::Gone { detail, .. } => {
                if write {
                    DeviceCounters::bump(&self.counters.write_errors);
                    self.storage.fault(&self.device, detail);
                } else {
                    DeviceCounters::bump(&self.counters.read_errors);
                    if matches!(e, CopyError::Gone { .. }) {
                        self.storage.fault(&self.device, detail);
                    }
                }
            }
        }
    }

    fn check(&self) -> Result<(), CopyError> {
        // A device faulted by another copy's failure is gone for this one too.
        match self.storage.get(&self.device) {
            Some(d) if d.usable().is_some() => Ok(()),
            _ => Err(CopyError::Gone {
                copy: self.inner.describe(),
                detail: format!("device {} is faulted", self.device),
            }),
        }
    }
}

impl CopyTarget for CountedCopy {
    fn size(&self) -> Result<u64, CopyError> {
        self.inner.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), CopyError> {
        self.check()?;
        self.inner
            .read(offset, buf)
            .inspect_err(|e| self.seen(e, false))
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), CopyError> {
        self.check()?;
        self.inner
            .write(offset, data)
            .inspect_err(|e| self.seen(e, true))
    }
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), CopyError> {
        self.check()?;
        self.inner
            .write_zeroes(offset, len, unmap)
            .inspect_err(|e| self.seen(e, true))
    }
    fn flush(&self) -> Result<(), CopyError> {
        self.check()?;
        self.inner.flush().inspect_err(|e| self.seen(e, true))
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
