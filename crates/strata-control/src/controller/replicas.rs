//! Replicated volumes at run time: one [`ReplicaSet`] per volume of two or more copies, made
//! when the volume is, opened from its write-intent log at the first I/O after a start, and
//! the I/O handle every volume is reached through ([`Controller::volume_handle`]). A driven
//! resync runs in the background ([`Controller::resync_pass`], called by the daemon's
//! worker), throttled so that client I/O keeps its share.
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
use strata_replica::{CopyError, CopyTarget, FileIntentLog, LocalCopy, ReplicaSet, ResyncProgress};

use super::Controller;
use crate::error::ControlError;
use crate::model::*;
use crate::storage::{CountedCopy, VolumeHandle};

/// The open replica sets and where their logs live.
#[derive(Default)]
pub(super) struct Sets {
    sets: Mutex<HashMap<String, Arc<ReplicaSet>>>,
    dir: RwLock<Option<PathBuf>>,
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

/// Bytes one resync step copies at most.
pub const RESYNC_STEP: u64 = 4 << 20;

impl Controller {
    /// Where replicated volumes keep their write-intent logs (a directory the caller made,
    /// mode 0700).
    pub fn set_intent_dir(&self, dir: PathBuf) {
        *self.sets.dir.write() = Some(dir);
    }

    fn intent_log(&self, v: &Volume) -> Result<FileIntentLog, ControlError> {
        let dir = self.sets.dir.read().clone().ok_or_else(|| {
            ControlError::internal("replicated volumes need an intent directory (none was set)")
        })?;
        Ok(FileIntentLog::new(dir.join(format!("{}.intent", v.id))))
    }

    fn targets(&self, v: &Volume) -> Vec<Arc<dyn CopyTarget>> {
        v.copy_devices()
            .iter()
            .map(|d| {
                let label = format!("{d}/{}", v.id);
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
        let log = self.intent_log(v)?;
        let set = ReplicaSet::create(self.targets(v), Box::new(log))
            .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
        self.sets.sets.lock().insert(v.id.clone(), Arc::new(set));
        Ok(())
    }

    /// Forgets a deleted volume's set and removes its log.
    pub(super) fn drop_replica_set(&self, v: &Volume) {
        self.sets.sets.lock().remove(&v.id);
        if v.copy_devices().len() >= 2 {
            if let Ok(log) = self.intent_log(v) {
                let _ = std::fs::remove_file(log.path());
            }
        }
    }

    /// The open set of a replicated volume, opened from its log on first use.
    pub(crate) fn replica_set(&self, v: &Volume) -> Result<Arc<ReplicaSet>, ControlError> {
        let mut sets = self.sets.sets.lock();
        if let Some(s) = sets.get(&v.id) {
            return Ok(s.clone());
        }
        let log = self.intent_log(v)?;
        let set = if log.path().exists() {
            ReplicaSet::open(self.targets(v), Box::new(log))
                .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?
        } else {
            // No log (a crash between the copies' create and the log's, or a log lost): the
            // copies cannot be trusted to agree, so every copy but the first is copied whole
            // from it.
            tracing::warn!(volume = %v.id, "no intent log: copies after the first are resynced whole");
            let targets = self.targets(v);
            let set = ReplicaSet::create(targets.clone(), Box::new(log))
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
            return Ok(VolumeHandle::Single {
                pool: c.pool,
                volume: c.volume,
                gate,
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

    /// One pass of background resync: a step of at most [`RESYNC_STEP`] bytes on every set
    /// with a copy to bring back. Returns the bytes copied (0: nothing to do).
    pub fn resync_pass(&self) -> u64 {
        let mut copied = 0;
        for (id, set) in self.open_sets() {
            match set.resync_step(RESYNC_STEP) {
                Ok(Some(p)) => {
                    copied += RESYNC_STEP.min(p.total);
                    self.note_progress(&id, &p);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(volume = %id, error = %e, "resync step failed"),
            }
        }
        copied
    }

    fn note_progress(&self, id: &str, p: &ResyncProgress) {
        if p.finished {
            tracing::info!(
                volume = id,
                copy = p.copy,
                bytes = p.total,
                "copy resynced: healthy"
            );
        } else if p.failed {
            tracing::warn!(
                volume = id,
                copy = p.copy,
                "resync failed: the copy is faulted"
            );
        }
    }
}
