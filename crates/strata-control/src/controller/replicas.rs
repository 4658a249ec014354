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
    pub(super) sets: Mutex<HashMap<String, Arc<ReplicaSet>>>,
    dir: RwLock<Option<PathBuf>>,
    /// Each served volume's handle, shared by its exports: replaced when its copies move.
    pub(super) cells: Mutex<HashMap<String, Arc<RwLock<VolumeHandle>>>>,
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

/// A copy being brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncView {
    /// Its index in the set.
    pub copy: usize,
    /// Its device.
    pub device: String,
    /// Bytes copied onto it so far.
    pub done: u64,
    /// Bytes to copy in all.
    pub total: u64,
    /// A whole rebuild (a new copy), not the regions a returning copy missed.
    pub rebuild: bool,
}

/// Bytes one resync step copies at most.
pub const RESYNC_STEP: u64 = 4 << 20;

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
        self.sets.cells.lock().remove(&v.id);
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

    /// One pass of background resync: a step of at most [`RESYNC_STEP`] bytes on every set
    /// with a copy to bring back. Returns the bytes copied (0: nothing to do).
    pub fn resync_pass(&self) -> u64 {
        // New copies still being given their snapshots first (snapcopy.rs), in the same budget.
        let mut copied = self.snapshot_copy_pass(RESYNC_STEP);
        for (id, set) in self.open_sets() {
            match set.resync_step(RESYNC_STEP) {
                Ok(Some(p)) => {
                    copied += RESYNC_STEP.min(p.total);
                    self.note_progress(&id, &p);
                }
                Ok(None) => {
                    // Idle: store intent bits flushes cleared, so a copy that goes away now
                    // misses only what is written from now on.
                    if let Err(e) = set.sync_intent() {
                        tracing::warn!(volume = %id, error = %e, "intent log not stored");
                    }
                }
                Err(e) => tracing::warn!(volume = %id, error = %e, "resync step failed"),
            }
        }
        copied
    }

    /// Starts what brings every replicated volume back to its copy count: opens its set
    /// (copies that came back start resyncing the regions they missed), and gives each copy
    /// whose device is not usable a new copy on another device of the pool (another failure
    /// domain, same class, the most free space), rebuilt whole by the resync job. Returns how
    /// many rebuilds it started.
    pub fn start_rebuilds(&self) -> usize {
        for (dev, why) in self.storage.take_faulted() {
            self.audit_event(None, "device.faulted", &dev, &why);
        }
        // Replicated volumes live only in pools of two devices or more: without one, the
        // volumes are not listed at all (a daemon of many one-copy volumes pays nothing here).
        let multi = self
            .list::<PoolRecord>("/pools/", None, 0)
            .is_ok_and(|p| p.iter().any(|(_, p)| p.devices.len() > 1));
        if !multi {
            return 0;
        }
        let Ok(vols) = self.list::<Volume>("/volumes/", None, 0) else {
            return 0;
        };
        let mut started = 0;
        for (_, v) in vols {
            if v.state != VolumeState::Available || v.copy_devices().len() < 2 {
                continue;
            }
            let set = match self.replica_set(&v) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(volume = %v.id, error = %e, "replica set not opened");
                    continue;
                }
            };
            for (i, info) in set.copies().into_iter().enumerate() {
                let dev = &v.copy_devices()[i];
                if info.state != strata_replica::CopyState::Faulted
                    || self.storage.engine(dev).is_some()
                    || self.snapshot_copy_pending(&v.id)
                {
                    continue;
                }
                match self.rebuild_copy(&v, &set, i) {
                    Ok(to) => {
                        started += 1;
                        self.audit_event(
                            Some(&v.tenant),
                            "volume.rebuild",
                            &v.id,
                            &format!("copy {i} from {dev} to {to}"),
                        );
                        tracing::info!(volume = %v.id, copy = i, from = %dev, to = %to,
                            "rebuilding a copy on another device");
                    }
                    Err(e) => {
                        tracing::warn!(volume = %v.id, copy = i, device = %dev, error = %e,
                            "no rebuild: the volume stays degraded")
                    }
                }
            }
        }
        started
    }

    /// Puts a new copy of `v` in slot `i` of its set, on a device that holds none of its
    /// copies, once it holds the volume's snapshots (`snapcopy.rs`; at once without any).
    /// The set records the slot as new (a full rebuild) before the volume's record names the
    /// new device: a crash in between leaves a slot the next start rebuilds again, never a
    /// new empty copy taken for one that only missed some regions.
    fn rebuild_copy(
        &self,
        v: &Volume,
        set: &Arc<ReplicaSet>,
        i: usize,
    ) -> Result<String, ControlError> {
        let (dev, target) = self.new_copy(v, i)?;
        self.give_new_copy(
            v,
            i,
            &dev,
            target,
            super::snapcopy::Join::Rebuild(set.clone()),
        )?;
        Ok(dev)
    }

    /// A new, empty copy of `v` for slot `i`: an engine volume on the active, usable device
    /// of the slot's class that holds none of `v`'s copies and has the most free space, with
    /// the volume's limits and share class. Not recorded anywhere yet.
    pub(super) fn new_copy(
        &self,
        v: &Volume,
        i: usize,
    ) -> Result<(String, Arc<dyn CopyTarget>), ControlError> {
        let rec = self.pool_record(&v.pool)?;
        let copies = v.copy_devices();
        let class = rec
            .devices
            .iter()
            .find(|d| d.id == copies[i])
            .map(|d| d.class.clone());
        let (dev, pool) = rec
            .devices
            .iter()
            .filter(|d| d.state == DeviceState::Active && !copies.contains(&d.id))
            .filter(|d| class.as_ref().is_none_or(|c| *c == d.class))
            .filter_map(|d| self.storage.engine(&d.id).map(|p| (d.id.clone(), p)))
            .max_by_key(|(_, p)| {
                let i = p.info();
                i.free.saturating_sub(i.reserve)
            })
            .ok_or_else(|| {
                ControlError::device(
                    crate::error::DeviceProblem::NotEnoughDomains,
                    format!("pool {} has no other usable device for a new copy", v.pool),
                )
            })?;
        // A volume of this id there is what an interrupted rebuild or drain left: no record
        // names it.
        if let Ok(old) = pool.volume_id(&v.id) {
            pool.delete_volume(old, true)?;
        }
        let cls = class.as_deref().and_then(|c| c.parse().ok());
        let eid = if v.encrypted {
            pool.create_encrypted_volume(&v.id, v.size, cls)
                .map_err(ControlError::from)?
        } else {
            pool.create_volume(&v.id, v.size, cls)?
        };
        pool.set_qos(eid, v.qos.limits())?;
        pool.set_volume_class(eid, super::shares::class_of(&v.tenant))
            .map_err(|e| ControlError::internal(format!("volume {}: {e}", v.id)))?;
        let target: Arc<dyn CopyTarget> = Arc::new(CountedCopy::new(
            LocalCopy::new(pool, eid, format!("{dev}/{}", v.id)),
            &dev,
            self.storage.clone(),
        ));
        Ok((dev, target))
    }

    pub(super) fn set_copy_device(
        &self,
        v: &Volume,
        i: usize,
        dev: &str,
    ) -> Result<(), ControlError> {
        use strata_state::Txn;
        let key = super::store::volume_key(&v.tenant, &v.id);
        loop {
            let Some((mut cur, rev)) = self.get::<Volume>(&key)? else {
                return Ok(());
            };
            let mut copies = cur.copy_devices();
            copies[i] = dev.to_string();
            cur.copies = copies;
            if self
                .store
                .txn(
                    Txn::new()
                        .when(&key, rev)
                        .put(&key, super::store::enc(&cur)),
                )?
                .succeeded
            {
                return Ok(());
            }
        }
    }

    /// Where a replicated volume's resync stands: for each copy being brought back, its index,
    /// device, bytes copied and bytes in all, and whether it is a whole rebuild.
    pub fn resync_state(&self, v: &Volume) -> Vec<ResyncView> {
        let prefix = self.snapshot_copy_views(v);
        let Some(set) = self.sets.sets.lock().get(&v.id).cloned() else {
            return prefix;
        };
        let devs = v.copy_devices();
        set.copies()
            .into_iter()
            .filter_map(|c| match c.state {
                strata_replica::CopyState::Resyncing { done, total, full } => Some(ResyncView {
                    copy: c.index,
                    device: devs.get(c.index).cloned().unwrap_or_default(),
                    done,
                    total,
                    rebuild: full,
                }),
                _ => None,
            })
            .chain(prefix)
            .collect()
    }

    /// Before a clean stop: every set flushed and its intent log stored, so the next start
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

    fn note_progress(&self, id: &str, p: &ResyncProgress) {
        let tenant = self.volume_record(id).map(|v| v.tenant);
        if p.finished {
            tracing::info!(
                volume = id,
                copy = p.copy,
                bytes = p.total,
                "copy resynced: healthy"
            );
            self.audit_event(
                tenant.as_deref(),
                "volume.resynced",
                id,
                &format!("copy {} healthy ({} bytes copied)", p.copy, p.total),
            );
        } else if p.failed {
            tracing::warn!(
                volume = id,
                copy = p.copy,
                "resync failed: the copy is faulted"
            );
            self.audit_event(
                tenant.as_deref(),
                "volume.resync_failed",
                id,
                &format!("copy {} faulted", p.copy),
            );
        }
    }
}
