//! [`VolumeHandle`]: the I/O of one volume, whatever its copies: one engine volume, or a
//! [`ReplicaSet`] over its copies on distinct devices. The NBD server reaches volumes only
//! through this (by way of the export source in `crate::controller`).
//!
//! # Invariants
//! - A request is metered once: a single copy's engine meters its own reads and writes; a
//!   replicated volume's reads are metered here on its first copy's figures, its writes by
//!   every copy alike (each has the same limits, so together they hold the limit once).
//! - Writes pass the volume's write gate shared; snapshots and other layer changes hold it
//!   exclusively, so no write lands on one copy and not another across a snapshot.
//! - Errors carry the engine's vocabulary ([`IoError`]), so the NBD errno and the registry
//!   code are the engine's for the same failure.

use std::sync::Arc;

use parking_lot::RwLock;
use strata_block::{IoError, Pool, SnapshotId, Target, VolumeId, VolumeIo};
use strata_replica::{CopyError, ReplicaError, ReplicaSet};

/// A volume's I/O.
#[derive(Debug, Clone)]
pub enum VolumeHandle {
    /// One copy: its engine pool and volume.
    Single {
        /// The engine pool.
        pool: Pool,
        /// The engine volume.
        volume: VolumeId,
        /// The volume's write gate.
        gate: Arc<RwLock<()>>,
        /// Its device's counters (a failed read is counted there).
        counters: Arc<super::DeviceCounters>,
    },
    /// Several copies kept in agreement.
    Replicated {
        /// The set.
        set: Arc<ReplicaSet>,
        /// Where reads are metered and figures kept: the first copy's engine volume.
        meter: Arc<VolumeIo>,
        /// The copies' engines (for block status and snapshots), copy order.
        copies: Vec<(Pool, VolumeId)>,
        /// The volume's write gate.
        gate: Arc<RwLock<()>>,
        /// The volume's name in errors.
        name: String,
    },
}

/// The engine's words for a replication failure.
pub fn io_error(name: &str, e: ReplicaError) -> IoError {
    match e {
        ReplicaError::OutOfRange { offset, len, size } => IoError::OutOfRange {
            target: name.to_string(),
            offset,
            len,
            size,
        },
        ReplicaError::NoHealthyCopy {
            last: CopyError::NoSpace { .. },
            ..
        } => IoError::OutOfSpace {
            target: name.to_string(),
        },
        e => IoError::Device {
            device: name.to_string(),
            source: std::io::Error::other(e.to_string()),
        },
    }
}

impl VolumeHandle {
    /// Size in bytes.
    pub fn size(&self) -> Result<u64, IoError> {
        match self {
            VolumeHandle::Single { pool, volume, .. } => pool.size_of(*volume),
            VolumeHandle::Replicated { set, .. } => Ok(set.size()),
        }
    }

    /// Reads, metered.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        match self {
            VolumeHandle::Single {
                pool,
                volume,
                counters,
                ..
            } => pool
                .read(*volume, offset, buf)
                .inspect_err(|e| count_read_error(counters, e)),
            VolumeHandle::Replicated { meter, .. } => {
                let start = std::time::Instant::now();
                meter.admit(buf.len() as u64);
                let r = self.read_unmetered(offset, buf);
                meter.record(false, buf.len() as u64, start.elapsed());
                r
            }
        }
    }

    /// Reads without admission (the caller meters the request: [`VolumeHandle::meter`]).
    pub fn read_unmetered(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        match self {
            VolumeHandle::Single {
                pool,
                volume,
                counters,
                ..
            } => pool
                .read_unmetered(*volume, offset, buf)
                .inspect_err(|e| count_read_error(counters, e)),
            VolumeHandle::Replicated { set, name, .. } => {
                set.read(offset, buf).map_err(|e| io_error(name, e))
            }
        }
    }

    /// Where a request is admitted and counted.
    pub fn meter(&self) -> Result<Arc<VolumeIo>, IoError> {
        match self {
            VolumeHandle::Single { pool, volume, .. } => pool.io(*volume),
            VolumeHandle::Replicated { meter, .. } => Ok(meter.clone()),
        }
    }

    /// Writes (metered by the engine).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        match self {
            VolumeHandle::Single {
                pool, volume, gate, ..
            } => {
                let _g = gate.read();
                pool.write(*volume, offset, data)
            }
            VolumeHandle::Replicated {
                set, gate, name, ..
            } => {
                let _g = gate.read();
                set.write(offset, data).map_err(|e| io_error(name, e))
            }
        }
    }

    /// Zeroes a range; `unmap` frees its space.
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), IoError> {
        match self {
            VolumeHandle::Single {
                pool, volume, gate, ..
            } => {
                let _g = gate.read();
                pool.write_zeroes(*volume, offset, len, unmap)
            }
            VolumeHandle::Replicated {
                set, gate, name, ..
            } => {
                let _g = gate.read();
                set.write_zeroes(offset, len, unmap)
                    .map_err(|e| io_error(name, e))
            }
        }
    }

    /// Discards a range.
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), IoError> {
        match self {
            VolumeHandle::Single {
                pool, volume, gate, ..
            } => {
                let _g = gate.read();
                pool.trim(*volume, offset, len)
            }
            VolumeHandle::Replicated { .. } => self.write_zeroes(offset, len, true),
        }
    }

    /// Makes every acknowledged write durable (on every copy that takes writes).
    pub fn flush(&self) -> Result<(), IoError> {
        match self {
            VolumeHandle::Single { pool, .. } => pool.flush(),
            VolumeHandle::Replicated { set, name, .. } => {
                set.flush().map_err(|e| io_error(name, e))
            }
        }
    }

    /// Allocated runs of `[offset, offset+len)`: `(length, allocated)`, from the first copy
    /// that answers.
    pub fn allocation(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, IoError> {
        self.first_ok(|p, v| p.block_status(v, offset, len))
    }

    /// Blocks of `[offset, offset+len)` that may differ from snapshot `since` (the engine's
    /// snapshot name, the same on every copy).
    pub fn changed(&self, since: &str, offset: u64, len: u64) -> Result<Vec<(u64, bool)>, IoError> {
        self.first_ok(|p, v| p.changed_blocks(v, snapshot(p, v, since)?, offset, len))
    }

    /// Whether snapshot `name` (the engine's name) exists.
    pub fn has_snapshot(&self, name: &str) -> bool {
        self.first_ok(|p, v| snapshot(p, v, name)).is_ok()
    }

    /// The copies' engines, copy order (allocates: not for the data path).
    pub fn engines(&self) -> Vec<(Pool, VolumeId)> {
        match self {
            VolumeHandle::Single { pool, volume, .. } => vec![(pool.clone(), *volume)],
            VolumeHandle::Replicated { copies, .. } => copies.clone(),
        }
    }

    /// The first copy's answer that is not an error (copy order, failed engines skipped);
    /// the last error when none answers. No allocation: it runs per request.
    fn first_ok<T>(
        &self,
        mut f: impl FnMut(&Pool, VolumeId) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        let copies = match self {
            VolumeHandle::Single { pool, volume, .. } => return f(pool, *volume),
            VolumeHandle::Replicated { copies, .. } => copies,
        };
        let mut last = IoError::PoolFailed;
        for (p, v) in copies {
            if p.is_failed() {
                continue;
            }
            match f(p, *v) {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reads snapshot `name` (the engine's name) of this volume from the first copy that
    /// serves it.
    pub fn read_snapshot(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.first_ok(|p, v| p.read_unmetered(Target::Snapshot(snapshot(p, v, name)?), offset, buf))
    }

    /// Snapshot `name`'s size, from the first copy that has it.
    pub fn snapshot_size(&self, name: &str) -> Result<u64, IoError> {
        self.first_ok(|p, v| p.size_of(Target::Snapshot(snapshot(p, v, name)?)))
    }

    /// Snapshot `name`'s allocation, from the first copy that has it.
    pub fn snapshot_allocation(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, bool)>, IoError> {
        self.first_ok(|p, v| p.block_status(Target::Snapshot(snapshot(p, v, name)?), offset, len))
    }
}

/// Counts a failed read of a one-copy volume on its device (a checksum failure is also logged,
/// at most once a second per device).
fn count_read_error(c: &super::DeviceCounters, e: &IoError) {
    match e {
        IoError::Checksum { .. } | IoError::Authentication { .. } => {
            c.checksum_failed(&e.to_string(), "not repairable: the volume has one copy")
        }
        IoError::Device { .. } => super::DeviceCounters::bump(&c.read_errors),
        _ => {}
    }
}

fn snapshot(p: &Pool, v: VolumeId, name: &str) -> Result<SnapshotId, IoError> {
    p.snapshot_id(v, name)
        .map_err(|_| IoError::NotFound(name.to_string()))
}
