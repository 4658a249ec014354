//! Replicated volumes at run time: one [`ReplicaSet`] per volume of two or more copies, made
//! when the volume is, opened from its write-intent log at the first I/O after a start, and
//! the I/O handle every volume is reached through ([`Controller::volume_handle`]). Bringing
//! copies back (resync passes, rebuilds onto another device, progress) is in `rebuild.rs`.
//!
//! # Invariants
//! - A replicated volume's intent log is `INTENT_DIR/VOLUME.intent` (mode 0600); it exists
//!   from the volume's create to its delete. A set is opened from it, never created over it.
//! - A copy whose device did not open, or is faulted, is given to the set as gone: the set
//!   starts it faulted and tracks what it misses; the volume serves from the others.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use strata_block::IoError;
use strata_replica::{CopyError, CopyTarget, FileIntentLog, LocalCopy, ReplicaSet};

use super::Controller;
use crate::error::ControlError;
use crate::model::*;
use crate::storage::{CountedCopy, VolumeHandle};

/// The open replica sets and where their logs live.
#[derive(Default)]
pub(super) struct Sets {
    pub(super) sets: Mutex<HashMap<String, Arc<ReplicaSet>>>,
    dir: RwLock<Option<PathBuf>>,
    /// Each served volume's handle, shared by its exports: replaced when its copies move.
    pub(super) cells: Mutex<HashMap<String, Arc<RwLock<VolumeHandle>>>>,
    /// What wakes the rebuild scan and the resync workers (`rebuild.rs`).
    pub(super) signals: Arc<super::rebuild::RebuildSignals>,
}

/// A copy whose device is not there: it answers nothing, so the set starts it faulted.
#[derive(Debug)]
struct AbsentCopy {
    label: String,
}

impl AbsentCopy {
    fn gone(&self) -> CopyError {
        CopyError::Gone {
            copy: self.label.clone(),
            detail: "its device is not usable".into(),
        }
    }
}

impl CopyTarget for AbsentCopy {
    fn size(&self) -> Result<u64, CopyError> {
        Err(self.gone())
    }
    fn read(&self, _: u64, _: &mut [u8]) -> Result<(), CopyError> {
        Err(self.gone())
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), CopyError> {
        Err(self.gone())
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> Result<(), CopyError> {
        Err(self.gone())
    }
    fn flush(&self) -> Result<(), CopyError> {
        Err(self.gone())
    }
    fn describe(&self) -> String {
        self.label.clone()
    }
}

impl Controller {
    /// Where replicated volumes keep their write-intent logs (a directory the caller made,
    /// mode 0700).
    pub fn set_intent_dir(&self, dir: PathBuf) {
        *self.sets.dir.write() = Some(dir);
    }

    pub(super) fn intent_log(&self, v: &Volume) -> Result<FileIntentLog, ControlError> {
        let dir = self.sets.dir.read().clone().ok_or_else(|| {
            ControlError::internal("replicated volumes need an intent directory (none was set)")
        })?;
        Ok(FileIntentLog::new(dir.join(format!("{}.intent", v.id))))
    }

    pub(super) fn targets(&self, v: &Volume) -> Vec<Arc<dyn CopyTarget>> {
        v.copy_devices()
            .iter()
            .map(|d| {
                let label = format!("{d}/{}", v.id);
                if super::cluster_copies::split_copy(d).is_some() {
                    return self
                        .remote_target(v, d)
                        .unwrap_or_else(|| Arc::new(AbsentCopy { label }));
                }
                let engine = self.storage.engine(d);
                match engine.and_then(|p| p.volume_id(&v.id).ok().map(|e| (p, e))) {
                    Some((p, e)) => Arc::new(CountedCopy::new(
                        LocalCopy::new(p, e, label),
                        d,
                        self.storage.clone(),
                    )) as Arc<dyn CopyTarget>,
                    None => Arc::new(AbsentCopy { label }),
                }
            })
            .collect()
    }

    /// Makes the set of a new replicated volume (its copies exist and read as zeros, or as
    /// the same snapshot for a clone).
    pub(super) fn create_replica_set(&self, v: &Volume) -> Result<(), ControlError> {
        if v.copy_devices().len() < 2 {
            return Ok(());
        }
        let log = self.set_log(v)?;
        let set = ReplicaSet::create(self.targets(v), log)
            .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
        self.sets.sets.lock().insert(v.id.clone(), Arc::new(set));
        Ok(())
    }

    /// Forgets a deleted volume's set and removes its log.
    pub(super) fn drop_replica_set(&self, v: &Volume) {
        self.sets.sets.lock().remove(&v.id);
        self.sets.cells.lock().remove(&v.id);
        if v.copy_devices().len() >= 2 {
            if let Ok(log) = self.intent_log(v) {
                let _ = std::fs::remove_file(log.path());
            }
            // A volume that spanned nodes has an owner record; a failure here leaves only a
            // record no volume names.
            let owner = super::cluster_fence::owner_key(&v.id);
            if let Err(e) = self.store.txn(strata_state::Txn::new().delete(owner)) {
                tracing::warn!(volume = %v.id, error = %e, "owner record not deleted");
            }
        }
    }

    /// The open set of a replicated volume, opened from its log on first use.
    pub(crate) fn replica_set(&self, v: &Volume) -> Result<Arc<ReplicaSet>, ControlError> {
        let mut sets = self.sets.sets.lock();
        if let Some(s) = sets.get(&v.id) {
            return Ok(s.clone());
        }
        let exists = self.intent_log(v)?.path().exists();
        let log = self.set_log(v)?;
        let set = if exists {
            ReplicaSet::open(self.targets(v), log)
                .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?
        } else {
            // No log (a crash between the copies' create and the log's, or a log lost): the
            // copies cannot be trusted to agree, so every copy but the first is copied whole
            // from it.
            tracing::warn!(volume = %v.id, "no intent log: copies after the first are resynced whole");
            let targets = self.targets(v);
            let set = ReplicaSet::create(targets.clone(), log)
                .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
            for (i, t) in targets.into_iter().enumerate().skip(1) {
                set.replace(i, t)
                    .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
            }
            set
        };
        for c in set.copies() {
            tracing::info!(volume = %v.id, copy = %c.label, state = ?c.state, "replica opened");
        }
        let set = Arc::new(set);
        sets.insert(v.id.clone(), set.clone());
        Ok(set)
    }

    /// The sets open now, by volume id.
    pub(crate) fn open_sets(&self) -> Vec<(String, Arc<ReplicaSet>)> {
        self.sets
            .sets
            .lock()
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    /// The shared handle of volume `v` that its exports go through.
    pub(crate) fn handle_cell(&self, v: &Volume) -> Result<Arc<RwLock<VolumeHandle>>, IoError> {
        let mut cells = self.sets.cells.lock();
        if let Some(c) = cells.get(&v.id) {
            return Ok(c.clone());
        }
        let c = Arc::new(RwLock::new(self.volume_handle(v)?));
        cells.insert(v.id.clone(), c.clone());
        Ok(c)
    }

    /// Points volume `v`'s exports at its copies as recorded now (after they moved), waiting
    /// for the requests in flight on the old ones.
    pub(super) fn refresh_handle(&self, v: &Volume) -> Result<(), IoError> {
        let cell = self.sets.cells.lock().get(&v.id).cloned();
        if let Some(cell) = cell {
            let h = self.volume_handle(v)?;
            *cell.write() = h;
        }
        Ok(())
    }

    /// The I/O handle of volume `v`.
    pub fn volume_handle(&self, v: &Volume) -> Result<VolumeHandle, IoError> {
        let unavailable = |why: String| IoError::Device {
            device: v.id.clone(),
            source: std::io::Error::other(why),
        };
        let gate = self.write_gate(&v.id);
        if v.copy_devices().len() < 2 {
            let c = self
                .reachable_copies(v)
                .into_iter()
                .next()
                .ok_or_else(|| unavailable("the volume's device is not usable".into()))?;
            let counters = self
                .storage
                .get(&c.device)
                .map(|d| d.counters)
                .unwrap_or_default();
            return Ok(VolumeHandle::Single {
                pool: c.pool,
                volume: c.volume,
                gate,
                counters,
            });
        }
        let set = self
            .replica_set(v)
            .map_err(|e| unavailable(e.to_string()))?;
        let copies: Vec<_> = self
            .reachable_copies(v)
            .into_iter()
            .map(|c| (c.pool, c.volume))
            .collect();
        let meter = copies
            .first()
            .and_then(|(p, e)| p.io(*e).ok())
            .ok_or_else(|| unavailable("no copy of the volume is reachable".into()))?;
        Ok(VolumeHandle::Replicated {
            set,
            meter,
            copies,
            gate,
            name: v.id.clone(),
        })
    }

    /// resyncs nothing that was in step; then every device's engine pool flushed.
    pub fn close_sets(&self) {
        for (id, set) in self.open_sets() {
            if let Err(e) = set.flush().and_then(|()| set.sync_intent()) {
                tracing::warn!(volume = %id, error = %e, "replica set not closed cleanly");
            }
        }
        for (id, d) in self.storage.all() {
            if let Some(p) = d.usable() {
                if let Err(e) = p.flush() {
                    tracing::warn!(device = %id, error = %e, "device not flushed at stop");
                }
            }
        }
    }
}
