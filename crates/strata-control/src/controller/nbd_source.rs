//! What the NBD server serves: [`VolumeSource`], the export source over the daemon's volumes
//! wherever their copies are (one device's engine pool, or a replica set over several), and
//! the opened exports it hands out. Names are the engine's: a volume's id, a snapshot's id;
//! the server's catalog maps users' snapshot names and filters what is attached.
//!
//! # Invariants
//! - An export is resolved through the volume's record at open: a volume being created or
//!   deleted is not opened.
//! - The source holds the controller weakly: the server never keeps a stopped controller alive.

use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use strata_block::{IoError, VolumeIo};
use strata_nbd::{ExportIo, ExportSource, Runs, SinceToken};

use super::store::*;
use super::Controller;
use crate::model::*;
use crate::storage::VolumeHandle;

/// The daemon's volumes, for the NBD server.
#[derive(Debug)]
pub struct VolumeSource {
    ctl: Weak<Controller>,
    /// Snapshot names resolved for `changed-since`, shared by every export this source opens:
    /// a token is an index here, so one resolved while negotiating on one opened export still
    /// means the same snapshot on the export the session then opens.
    since: Arc<Mutex<Vec<String>>>,
}

impl VolumeSource {
    /// The source over `ctl`'s volumes.
    pub fn new(ctl: &Arc<Controller>) -> Self {
        VolumeSource {
            ctl: Arc::downgrade(ctl),
            since: Arc::default(),
        }
    }
}

impl Controller {
    /// The record of volume `id`, whoever owns it.
    pub(crate) fn volume_record(&self, id: &str) -> Option<Volume> {
        let (tenant, _) = self.get::<String>(&volume_index(id)).ok()??;
        Some(self.get::<Volume>(&volume_key(&tenant, id)).ok()??.0)
    }
}

impl ExportSource for VolumeSource {
    fn open(&self, volume: &str, snapshot: Option<&str>) -> Option<Arc<dyn ExportIo>> {
        let c = self.ctl.upgrade()?;
        if volume.is_empty() || volume.len() > 64 || volume.contains('/') {
            return None;
        }
        let v = c.volume_record(volume)?;
        // Only the serving node serves a volume (after a takeover, the new one).
        if v.state != VolumeState::Available || !c.is_local(&v) {
            return None;
        }
        let h = match c.handle_cell(&v) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(volume = %v.id, error = %e, "export not opened");
                return None;
            }
        };
        match snapshot {
            None => {
                let size = h.read().size().ok()?;
                Some(Arc::new(VolumeExport {
                    h,
                    size,
                    since: self.since.clone(),
                }))
            }
            Some(s) => {
                let size = h.read().snapshot_size(s).ok()?;
                Some(Arc::new(SnapshotExport {
                    h,
                    name: s.to_string(),
                    size,
                }))
            }
        }
    }

    fn list(&self) -> Vec<(String, Vec<String>)> {
        let Some(c) = self.ctl.upgrade() else {
            return vec![];
        };
        let Ok(vols) = c.local_volumes() else {
            return vec![];
        };
        let snaps = c
            .list::<Snapshot>("/snapshots/", None, 0)
            .unwrap_or_default();
        vols.into_iter()
            .filter(|(_, v)| v.state == VolumeState::Available)
            .map(|(_, v)| {
                let of: Vec<String> = snaps
                    .iter()
                    .filter(|(_, s)| s.volume == v.id)
                    .map(|(_, s)| s.id.clone())
                    .collect();
                (v.id, of)
            })
            .collect()
    }
}

/// An opened volume.
#[derive(Debug)]
struct VolumeExport {
    /// The volume's handle, shared with the controller: swapped when its copies move.
    h: Arc<RwLock<VolumeHandle>>,
    size: u64,
    /// Snapshot names resolved for `changed-since` (the source's): the token is the index.
    since: Arc<Mutex<Vec<String>>>,
}

impl ExportIo for VolumeExport {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.h.read().read(off, dst)
    }
    fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.h.read().read_unmetered(off, dst)
    }
    fn qos(&self) -> Result<Option<Arc<VolumeIo>>, IoError> {
        self.h.read().meter().map(Some)
    }
    fn write(&self, off: u64, data: &[u8]) -> Result<(), IoError> {
        self.h.read().write(off, data)
    }
    fn trim(&self, off: u64, len: u64) -> Result<(), IoError> {
        self.h.read().trim(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, unmap: bool) -> Result<(), IoError> {
        self.h.read().write_zeroes(off, len, unmap)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.h.read().flush()
    }
    fn allocation(&self, off: u64, len: u64) -> Result<Runs, IoError> {
        self.h.read().allocation(off, len)
    }
    fn since(&self, name: &str) -> Option<SinceToken> {
        if !self.h.read().has_snapshot(name) {
            return None;
        }
        let mut s = self.since.lock();
        let i = match s.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                s.push(name.to_string());
                s.len() - 1
            }
        };
        Some(SinceToken(i as u64))
    }
    fn since_all(&self) -> Vec<(String, SinceToken)> {
        let names: Vec<String> = self
            .h
            .read()
            .engines()
            .first()
            .and_then(|(p, v)| p.snapshots(*v).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect();
        names
            .into_iter()
            .filter_map(|n| self.since(&n).map(|t| (n, t)))
            .collect()
    }
    fn changed(&self, since: SinceToken, off: u64, len: u64) -> Result<Runs, IoError> {
        let name = self
            .since
            .lock()
            .get(since.0 as usize)
            .cloned()
            .ok_or_else(|| IoError::NotFound(format!("snapshot token {}", since.0)))?;
        self.h.read().changed(&name, off, len)
    }
}

/// An opened snapshot: read-only.
#[derive(Debug)]
struct SnapshotExport {
    h: Arc<RwLock<VolumeHandle>>,
    name: String,
    size: u64,
}

impl SnapshotExport {
    fn read_only(&self) -> IoError {
        IoError::ReadOnly(self.name.clone())
    }
}

impl ExportIo for SnapshotExport {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.h.read().read_snapshot(&self.name, off, dst)
    }
    fn read_unmetered(&self, off: u64, dst: &mut [u8]) -> Result<(), IoError> {
        self.h.read().read_snapshot(&self.name, off, dst)
    }
    fn qos(&self) -> Result<Option<Arc<VolumeIo>>, IoError> {
        Ok(None)
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), IoError> {
        Err(self.read_only())
    }
    fn trim(&self, _: u64, _: u64) -> Result<(), IoError> {
        Err(self.read_only())
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), IoError> {
        Err(self.read_only())
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn allocation(&self, off: u64, len: u64) -> Result<Runs, IoError> {
        self.h.read().snapshot_allocation(&self.name, off, len)
    }
    fn since(&self, _: &str) -> Option<SinceToken> {
        None
    }
    fn since_all(&self) -> Vec<(String, SinceToken)> {
        vec![]
    }
    fn changed(&self, _: SinceToken, _: u64, _: u64) -> Result<Runs, IoError> {
        Err(IoError::NotFound("changed-since on a snapshot".into()))
    }
}
