//! Bringing replicated volumes back to their copy count: the background resync pass the
//! daemon's worker drives ([`Controller::resync_pass`]), rebuilds of copies whose device is
//! lost onto another device of the pool ([`Controller::start_rebuilds`]), and the progress the
//! API and `/metrics` show ([`Controller::resync_state`]).
//!
//! The daemon runs one scan thread (rebuilds, drains) and a few resync workers that call
//! [`Controller::resync_pass`] at once (the set hands each its own regions). They sleep on
//! [`RebuildSignals`] rather than polling: the scan wakes on a device fault, a device added, a
//! drain begun and a copy turned healthy; the workers wake after each scan. Both also wake on
//! a timeout, the fallback for what raises nothing (a set opened by a client's first I/O).
//!
//! # Invariants
//! - A rebuild records the slot as new in the set (a full rebuild) before the volume's record
//!   names the new device, so a crash in between leaves a slot rebuilt again at the next start.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use strata_replica::{CopyTarget, LocalCopy, ReplicaSet, ResyncProgress};

use super::copies::ResyncView;
use super::events::EventKind;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;
use crate::storage::CountedCopy;

/// Bytes one resync step copies at most.
pub const RESYNC_STEP: u64 = 4 << 20;

/// One wake-up signal: a generation that [`Signal::raise`] moves on, and the threads waiting
/// for it to move past the value they saw before their last pass (so a raise during a pass is
/// never lost).
#[derive(Debug, Default)]
struct Signal {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    fn raise(&self) {
        *self.generation.lock() += 1;
        self.cv.notify_all();
    }

    fn now(&self) -> u64 {
        *self.generation.lock()
    }

    /// Returns once the generation is past `seen`, or after `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.generation.lock();
        while *g == seen {
            if self.cv.wait_until(&mut g, deadline).timed_out() {
                return;
            }
        }
    }
}

/// What wakes the daemon's rebuild scan and its resync workers.
#[derive(Debug, Default)]
pub struct RebuildSignals {
    scan: Signal,
    work: Signal,
}

impl RebuildSignals {
    /// Something a scan acts on happened (a device faulted or added, a drain begun, a copy
    /// turned healthy).
    pub fn raise_scan(&self) {
        self.scan.raise();
    }
    /// The scan's generation now: read it before a scan, wait on it after.
    pub fn scan_seen(&self) -> u64 {
        self.scan.now()
    }
    /// Waits until a scan is asked for after generation `seen`, or `timeout`.
    pub fn wait_scan(&self, seen: u64, timeout: Duration) {
        self.scan.wait(seen, timeout)
    }
    /// There may be regions to copy (a scan started a rebuild, a move or a resync).
    pub fn raise_work(&self) {
        self.work.raise();
    }
    /// The workers' generation now: read it before a pass, wait on it after an idle one.
    pub fn work_seen(&self) -> u64 {
        self.work.now()
    }
    /// Waits until work is signalled after generation `seen`, or `timeout`.
    pub fn wait_work(&self, seen: u64, timeout: Duration) {
        self.work.wait(seen, timeout)
    }
}

impl Controller {
    /// What wakes the rebuild scan and the resync workers (shared with the daemon's threads).
    pub fn rebuild_signals(&self) -> Arc<RebuildSignals> {
        self.sets.signals.clone()
    }

    /// Asks the rebuild scan to run now (a device was added, a drain begun).
    pub(super) fn wake_rebuilds(&self) {
        self.sets.signals.raise_scan();
    }

    /// One pass of background resync: a step of at most [`RESYNC_STEP`] bytes on every set
    /// with a copy to bring back. Returns the bytes copied (0: nothing to do). Several threads
    /// may run passes at once: each step copies regions no other step is copying.
    pub fn resync_pass(&self) -> u64 {
        // New copies still being given their snapshots first (snapcopy.rs), in the same budget.
        let mut copied = self.snapshot_copy_pass(RESYNC_STEP);
        for (id, set) in self.open_sets() {
            match set.resync_step(RESYNC_STEP) {
                Ok(Some(p)) => {
                    copied += p.copied;
                    if p.finished || p.failed {
                        // A drain finishes a move, or a rebuild starts again, at the next scan.
                        self.sets.signals.raise_scan();
                    }
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
            self.event(
                EventKind::DeviceFaulted,
                &dev,
                None,
                format!("device {dev} faulted: {why}; its copies are lost until it is back"),
            );
        }
        // Replicated volumes live only in pools of two devices or more: without one, the
        // volumes are not listed at all (a daemon of many one-copy volumes pays nothing here).
        let multi = self
            .local_pools()
            .is_ok_and(|p| p.iter().any(|p| p.devices.len() > 1));
        if !multi && !self.node_port_open() {
            return 0;
        }
        let Ok(vols) = self.local_volumes() else {
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
                // A member past the record's copies is a move's new copy (`grow.rs`), whose
                // failure gives the move up: never rebuilt.
                let Some(dev) = v.copy_devices().get(i).cloned() else {
                    continue;
                };
                let dev = &dev;
                if super::cluster_copies::split_copy(dev).is_some() {
                    // A copy on another node: reached again once its node answers (it
                    // resyncs what it missed), or after a while rebuilt on a third node
                    // (`cluster_rebuild.rs`); never on one of this node's devices, which
                    // would put two copies in one failure domain.
                    if info.state == strata_replica::CopyState::Faulted {
                        started += usize::from(self.remote_copy_faulted(&v, &set, i, dev));
                    } else {
                        self.remote_copy_fine(&v, i);
                    }
                    continue;
                }
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
                        self.volume_event(
                            EventKind::RebuildStarted,
                            &v.id,
                            format!(
                                "copy {i} of volume {} rebuilding on {to} (device {dev} is lost)",
                                v.name
                            ),
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
        self.new_copy_on(v, i, None)
    }

    /// [`Controller::new_copy`] on device `on` when given (a rebalance's chosen destination),
    /// which must pass the same checks: active, usable, the slot's class, no copy of `v`.
    pub(super) fn new_copy_on(
        &self,
        v: &Volume,
        i: usize,
        on: Option<&str>,
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
            .filter(|d| on.is_none_or(|o| o == d.id))
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
                    device: devs
                        .get(c.index)
                        .cloned()
                        .or_else(|| self.growing_member(&v.id, c.index))
                        .unwrap_or_default(),
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
            let kind = if self.rebuild_open(id, p.copy) {
                EventKind::RebuildFinished
            } else {
                EventKind::ResyncFinished
            };
            self.volume_event(
                kind,
                id,
                format!(
                    "copy {} healthy again ({} copied)",
                    p.copy,
                    strata_types::format_size(p.total)
                ),
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
            self.volume_event(
                EventKind::ResyncFailed,
                id,
                format!("copy {} failed while catching up: it is faulted", p.copy),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::RebuildSignals;

    #[test]
    fn a_raise_before_the_wait_is_not_lost_and_an_idle_wait_times_out() {
        let s = RebuildSignals::default();
        let seen = s.scan_seen();
        s.raise_scan();
        let t = Instant::now();
        s.wait_scan(seen, Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(5));
        // Work is a separate signal: the raise of the scan does not wake it.
        let seen = s.work_seen();
        let t = Instant::now();
        s.wait_work(seen, Duration::from_millis(100));
        assert!(t.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_raise_from_another_thread_ends_the_wait_early() {
        let s = std::sync::Arc::new(RebuildSignals::default());
        let seen = s.work_seen();
        let s2 = s.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s2.raise_work();
        });
        let t = Instant::now();
        s.wait_work(seen, Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10));
        h.join().unwrap();
    }
}
