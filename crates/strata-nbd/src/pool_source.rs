//! The [`ExportSource`] over one engine [`Pool`]: its volumes read-write, their snapshots
//! read-only, by the engine's names. Behaviour is the engine's own: reads of a volume are
//! metered by its QoS ([`Pool::read`], [`Pool::io`]), snapshots are not; `base:allocation` is
//! [`Pool::block_status`], changed-since is [`Pool::changed_blocks`] against the snapshot's
//! id; a flush is a pool commit ([`Pool::flush`]), which covers every volume of the pool.
//!
//! An opened export keeps the engine's ids, not the names: a volume renamed or deleted under
//! a session is the engine's business (a deleted one answers `volume_not_found`, EIO).

use std::sync::Arc;

use strata_block::{IoError, Pool, SnapshotId, Target, VolumeId, VolumeIo};

use crate::backend::{ExportIo, ExportSource, Runs, SinceToken};

/// Exports every volume and snapshot of one pool.
#[derive(Debug, Clone)]
pub struct PoolSource {
    pool: Pool,
}

impl PoolSource {
    /// The source over `pool`.
    pub fn new(pool: Pool) -> Self {
        PoolSource { pool }
    }

    /// The pool behind the exports.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl ExportSource for PoolSource {
    fn open(&self, volume: &str, snapshot: Option<&str>) -> Option<Arc<dyn ExportIo>> {
        let v = self.pool.volume_id(volume).ok()?;
        let target = match snapshot {
            None => Target::Volume(v),
            Some(s) => Target::Snapshot(self.pool.snapshot_id(v, s).ok()?),
        };
        let size = self.pool.size_of(target).ok()?;
        Some(Arc::new(PoolExport {
            pool: self.pool.clone(),
            target,
            volume: v,
            size,
        }))
    }

    fn list(&self) -> Vec<(String, Vec<String>)> {
        self.pool
            .volumes()
            .into_iter()
            .map(|v| {
                let snaps = self.pool.snapshots(v.id).unwrap_or_default();
                (v.name, snaps.into_iter().map(|s| s.name).collect())
            })
            .collect()
    }
}

/// One opened volume or snapshot of a pool.
#[derive(Debug)]
struct PoolExport {
    pool: Pool,
    target: Target,
    /// The volume (of the snapshot, for a snapshot).
    volume: VolumeId,
    size: u64,
}

impl PoolExport {
    /// The volume, if this export is one (snapshots are read-only).
    fn writable(&self) -> Result<VolumeId, IoError> {
        match self.target {
            Target::Volume(v) => Ok(v),
            Target::Snapshot(s) => Err(IoError::ReadOnly(format!("snapshot {}", s.0))),
        }
    }
}

impl ExportIo for PoolExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.pool.read(self.target, off, dst)
    }

    fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.pool.read_unmetered(self.target, off, dst)
    }

    fn qos(&self) -> Result<Option<Arc<VolumeIo>>, IoError> {
        match self.target {
            Target::Volume(v) => self.pool.io(v).map(Some),
            Target::Snapshot(_) => Ok(None),
        }
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<(), IoError> {
        self.pool.write(self.writable()?, off, data)
    }

    fn trim(&self, off: u64, len: u64) -> Result<(), IoError> {
        self.pool.trim(self.writable()?, off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), IoError> {
        self.pool.write_zeroes(self.writable()?, off, len, unmap)
    }

    fn flush(&self) -> Result<(), IoError> {
        self.pool.flush()
    }

    fn allocation(&self, off: u64, len: u64) -> Result<Runs, IoError> {
        self.pool.block_status(self.target, off, len)
    }

    fn since(&self, name: &str) -> Option<SinceToken> {
        self.writable().ok()?;
        let id = self.pool.snapshot_id(self.volume, name).ok()?;
        Some(SinceToken(id.0))
    }

    fn since_all(&self) -> Vec<(String, SinceToken)> {
        if self.writable().is_err() {
            return Vec::new();
        }
        self.pool
            .snapshots(self.volume)
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.name, SinceToken(s.id.0)))
            .collect()
    }

    fn changed(&self, since: SinceToken, off: u64, len: u64) -> Result<Runs, IoError> {
        let v = self.writable()?;
        self.pool.changed_blocks(v, SnapshotId(since.0), off, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_block::{DeviceSpec, MemDevice};

    fn pool() -> Pool {
        Pool::create(vec![DeviceSpec {
            device: MemDevice::new(32 << 20, "m"),
            class: strata_types::DeviceClass::Ssd,
        }])
        .unwrap()
    }

    #[test]
    fn a_snapshot_opens_read_only_and_a_volume_reads_its_writes() {
        let pool = pool();
        let v = pool.create_volume("v", 1 << 20, None).unwrap();
        pool.write(v, 0, &[7u8; 4096]).unwrap();
        pool.create_snapshot(v, "s").unwrap();
        let src = PoolSource::new(pool.clone());
        let vol = src.open("v", None).unwrap();
        let snap = src.open("v", Some("s")).unwrap();
        assert!(src.open("v", Some("nope")).is_none() && src.open("w", None).is_none());
        assert_eq!((vol.size(), snap.size()), (1 << 20, 1 << 20));
        vol.write(0, &[9u8; 4096]).unwrap();
        let mut b = [0u8; 4096];
        snap.read(0, &mut b).unwrap();
        assert_eq!(b, [7u8; 4096]);
        vol.read(0, &mut b).unwrap();
        assert_eq!(b, [9u8; 4096]);
        let e = snap.write(0, &[1u8; 4096]).unwrap_err();
        assert!(matches!(e, IoError::ReadOnly(_)), "{e}");
        assert!(snap.qos().unwrap().is_none() && vol.qos().unwrap().is_some());
        // Changed-since: the volume's first block differs from the snapshot, the rest not.
        let t = vol.since("s").unwrap();
        assert_eq!(vol.since_all(), vec![("s".to_string(), t)]);
        assert!(snap.since("s").is_none() && snap.since_all().is_empty());
        assert_eq!(
            vol.changed(t, 0, 1 << 20).unwrap(),
            vec![(4096, true), ((1 << 20) - 4096, false)]
        );
        assert_eq!(src.list(), vec![("v".to_string(), vec!["s".to_string()])]);
    }

    #[test]
    fn reads_of_a_volume_are_metered_once_and_unmetered_reads_not() {
        let pool = pool();
        pool.create_volume("v", 1 << 20, None).unwrap();
        let vol = PoolSource::new(pool).open("v", None).unwrap();
        let io = vol.qos().unwrap().unwrap();
        let mut b = [0u8; 4096];
        let before = io.totals();
        vol.read(0, &mut b).unwrap();
        vol.read_unmetered(0, &mut b).unwrap();
        let after = io.totals();
        assert_eq!(after.reads - before.reads, 1);
    }
}
