//! Snapshots of a new copy: before a new copy of a volume (a rebuild after a lost device, a
//! move off a draining device) joins the volume, it is given the volume's snapshots, oldest
//! first, each as the blocks that differ from the one before, read from a healthy copy's
//! snapshot and sealed by an engine snapshot of the same name. Only then does it join, as a
//! full rebuild of the live layer by the resync job (docs/replicas.md, "Snapshots of a new
//! copy").
//!
//! # Invariants
//! - A new copy joins (its set, the volume's record) only under the volume's write gate held
//!   exclusive, after the source copy's snapshot list, read under that gate, is exactly the
//!   list the new copy holds. Snapshot creations, rollbacks and checkpoint groups hold the gate
//!   exclusive and read the copies from the record under it; deletions hold it shared. So no
//!   snapshot is made or deleted between that comparison and the record naming the new copy:
//!   a new copy never joins with a snapshot missing or extra.
//! - Until it joins, the new copy is in no record and no set: the volume serves from its other
//!   copies. A crash leaves an engine volume that no record names (swept at the next start,
//!   `orphans.rs`; a new copy on that device before then deletes it first).
//! - Between two snapshots the new copy's live layer holds its newest snapshot plus the blocks
//!   it wrote since (which `changed_blocks` on the new copy finds). Each difference copied is
//!   the union of what the source changed between the two snapshots and what the new copy
//!   changed since its own newest: so a copy cut short (its snapshot deleted under it) leaves
//!   no wrong block in the next snapshot.
//! - The copy is a driven job (a bounded step per call of the resync pass): it is throttled by
//!   `--resync-rate` with the resync, and shows in the volume's resync state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use strata_block::{IoError, Pool, SnapshotInfo, Target, VolumeId, BLOCK_SIZE};
use strata_replica::{CopyState, CopyTarget, ReplicaSet};

use super::copies::{EngineCopy, ResyncView};
use super::Controller;
use crate::error::{ControlError, DeviceProblem};
use crate::model::*;

/// The most bytes one read of a source snapshot covers (the engine's chunk).
const PIECE: u64 = 1 << 20;

/// New copies being given their volume's snapshots, by volume id (one per volume at a time).
#[derive(Default)]
pub(super) struct SnapCopies {
    jobs: Mutex<HashMap<String, Arc<Mutex<Job>>>>,
}

/// What a new copy becomes once it holds the volume's snapshots.
pub(super) enum Join {
    /// The slot's device was lost: the new copy replaces it in the set (a full rebuild).
    Rebuild(Arc<ReplicaSet>),
    /// The slot is on a draining device: the slot is faulted and replaced by the new copy,
    /// then the old copy is deleted.
    Move(Arc<ReplicaSet>),
    /// A one-copy volume off a draining device: the new copy is the second of a temporary
    /// two-copy set (`drain.rs`).
    MoveSingle,
    /// A copy of a replicated volume moves (a rebalance): the new copy joins the set as a
    /// member more, the old one leaves once it is in step (`grow.rs`).
    Grow(Arc<ReplicaSet>),
}

struct Job {
    slot: usize,
    join: Join,
    dev: String,
    target: Arc<dyn CopyTarget>,
    pool: Pool,
    eid: VolumeId,
    /// The engine snapshots the new copy holds, oldest first (names as on the source).
    copied: Vec<String>,
    /// The snapshot being copied and the runs `(offset, length)` still to copy.
    current: Option<(String, Vec<(u64, u64)>)>,
    done: u64,
    total: u64,
    /// The join began: an error after this leaves the new copy where the join put it.
    joining: bool,
}

/// What runs after the gate is released (re-pointing exports waits for requests in flight,
/// which may wait for the gate).
enum After {
    Refresh(Volume),
    RefreshAndDrop(Volume, String),
    MoveStarted(Arc<ReplicaSet>, std::path::PathBuf),
    /// The set holds the new member; `grow.rs` finishes the move.
    Grown,
}

/// `(offset, length)` of the runs flagged true in `runs` (lengths from offset 0).
fn flagged(runs: &[(u64, bool)]) -> Vec<(u64, u64)> {
    let mut at = 0;
    let mut out = vec![];
    for &(len, on) in runs {
        if on {
            out.push((at, len));
        }
        at += len;
    }
    out
}

/// The union of two sorted lists of runs, merged where they touch.
fn union(a: Vec<(u64, u64)>, b: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut all = a;
    all.extend(b);
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (off, len) in all {
        match out.last_mut() {
            Some((o, l)) if off <= *o + *l => *l = (*l).max(off + len - *o),
            _ => out.push((off, len)),
        }
    }
    out
}

/// Writes `data` at `off` of engine volume `eid`: runs of zero blocks as unmapped zeros (the
/// new copy stays thin), the rest as data.
fn write_piece(pool: &Pool, eid: VolumeId, off: u64, data: &[u8]) -> Result<(), IoError> {
    let bs = BLOCK_SIZE as usize;
    let zero = |i: usize| data[i..(i + bs).min(data.len())].iter().all(|&b| b == 0);
    let mut i = 0;
    while i < data.len() {
        let z = zero(i);
        let mut j = i + bs;
        while j < data.len() && zero(j) == z {
            j += bs;
        }
        let j = j.min(data.len());
        if z {
            pool.write_zeroes(eid, off + i as u64, (j - i) as u64, true)?;
        } else {
            pool.write(eid, off + i as u64, &data[i..j])?;
        }
        i = j;
    }
    Ok(())
}

/// An engine I/O error met while copying: it only reaches the log (the job is given up).
fn io(e: IoError) -> ControlError {
    ControlError::internal(format!("snapshot copy: {e}"))
}

fn names(snaps: &[SnapshotInfo]) -> Vec<String> {
    snaps.iter().map(|s| s.name.clone()).collect()
}

impl Controller {
    /// Gives the new copy `target` (engine volume `v.id` on device `dev`, for slot `slot`)
    /// the volume's snapshots, then joins it as `join` says: at once when the volume has
    /// none, otherwise from a job the resync pass drives ([`Controller::snapshot_copy_pass`]).
    pub(super) fn give_new_copy(
        &self,
        v: &Volume,
        slot: usize,
        dev: &str,
        target: Arc<dyn CopyTarget>,
        join: Join,
    ) -> Result<(), ControlError> {
        let pool = self
            .device_engine(dev)
            .ok_or_else(|| ControlError::internal(format!("device {dev} went away")))?;
        let eid = pool.volume_id(&v.id)?;
        let mut job = Job {
            slot,
            join,
            dev: dev.to_string(),
            target,
            pool,
            eid,
            copied: vec![],
            current: None,
            done: 0,
            total: 0,
            joining: false,
        };
        let src = self.snapshot_source(v, &job)?;
        let snaps = src.pool.snapshots(src.volume)?;
        if snaps.is_empty() {
            match self.try_join(v, &mut job) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.abandon(v, &job);
                    return Err(e);
                }
            }
        }
        job.total = Self::estimate(&src, &snaps)?;
        tracing::info!(volume = %v.id, device = %dev, snapshots = snaps.len(), bytes = job.total,
            "a new copy gets the volume's snapshots before it joins");
        self.snapcopies
            .jobs
            .lock()
            .insert(v.id.clone(), Arc::new(Mutex::new(job)));
        Ok(())
    }

    /// Whether a new copy of volume `id` is being given its snapshots.
    pub(super) fn snapshot_copy_pending(&self, id: &str) -> bool {
        self.snapcopies.jobs.lock().contains_key(id)
    }

    /// The snapshot copy of volume `v`'s new copy, as resync progress (a whole rebuild).
    pub(super) fn snapshot_copy_views(&self, v: &Volume) -> Vec<ResyncView> {
        let Some(job) = self.snapcopies.jobs.lock().get(&v.id).cloned() else {
            return vec![];
        };
        let j = job.lock();
        vec![ResyncView {
            copy: match j.join {
                Join::MoveSingle => 1,
                Join::Grow(_) => v.copy_devices().len(),
                _ => j.slot,
            },
            device: j.dev.clone(),
            done: j.done,
            total: j.total.max(j.done),
            rebuild: true,
        }]
    }

    /// One step of every snapshot copy: at most `budget` bytes each. Returns the bytes
    /// copied. A copy that fails is given up (its engine volume deleted): the rebuild or the
    /// drain starts over.
    pub(super) fn snapshot_copy_pass(&self, budget: u64) -> u64 {
        let jobs: Vec<(String, Arc<Mutex<Job>>)> = self
            .snapcopies
            .jobs
            .lock()
            .iter()
            .map(|(k, j)| (k.clone(), j.clone()))
            .collect();
        let mut copied = 0;
        for (id, job) in jobs {
            let mut j = job.lock();
            let Some(v) = self
                .volume_record(&id)
                .filter(|v| v.state == VolumeState::Available)
            else {
                if let Ok(e) = j.pool.volume_id(&id) {
                    let _ = j.pool.delete_volume(e, true);
                }
                self.snapcopies.jobs.lock().remove(&id);
                continue;
            };
            match self.snapshot_copy_step(&v, &mut j, budget) {
                Ok((n, joined)) => {
                    copied += n;
                    if joined {
                        self.snapcopies.jobs.lock().remove(&id);
                        tracing::info!(volume = %id, device = %j.dev, snapshots = j.copied.len(),
                            "the new copy holds the volume's snapshots and joined");
                    }
                }
                Err(e) => {
                    tracing::warn!(volume = %id, device = %j.dev, error = %e,
                        "snapshots not copied onto the new copy: given up, started over later");
                    self.abandon(&v, &j);
                    self.snapcopies.jobs.lock().remove(&id);
                }
            }
        }
        copied
    }

    /// Deletes a new copy that will not join (unless its join began).
    fn abandon(&self, v: &Volume, j: &Job) {
        if !j.joining {
            if let Ok(e) = j.pool.volume_id(&v.id) {
                let _ = j.pool.delete_volume(e, true);
            }
        }
    }

    /// The copy the new copy's snapshots are read from: for a replicated volume the
    /// lowest-index copy its set holds healthy (never the new copy's own slot when that is
    /// being rebuilt); for a one-copy volume its copy.
    fn snapshot_source(&self, v: &Volume, job: &Job) -> Result<EngineCopy, ControlError> {
        if v.copy_devices().len() < 2 {
            return self.primary(v);
        }
        let set = self.replica_set(v)?;
        let reach = self.reachable_copies_indexed(v);
        set.copies()
            .into_iter()
            .filter(|c| c.state == CopyState::Healthy)
            .filter(|c| !(matches!(job.join, Join::Rebuild(_)) && c.index == job.slot))
            .find_map(|c| {
                reach
                    .iter()
                    .find(|(i, _)| *i == c.index)
                    .map(|(_, e)| e.clone())
            })
            .ok_or_else(|| {
                ControlError::internal(format!("volume {}: no healthy copy to read", v.id))
            })
    }

    /// Bytes the snapshots differ by, one from the next (the first: its allocated bytes).
    fn estimate(src: &EngineCopy, snaps: &[SnapshotInfo]) -> Result<u64, ControlError> {
        let mut total = 0;
        let mut prev = None;
        for s in snaps {
            let runs = match prev {
                None => src
                    .pool
                    .block_status(Target::Snapshot(s.id), 0, s.size)
                    .map_err(io)?,
                Some(p) => src
                    .pool
                    .changed_blocks(Target::Snapshot(s.id), p, 0, s.size)
                    .map_err(io)?,
            };
            total += flagged(&runs).iter().map(|r| r.1).sum::<u64>();
            prev = Some(s.id);
        }
        Ok(total)
    }

    /// Gives the new copy's live layer `size` (its tail trimmed first when it shrinks).
    fn fit_size(j: &Job, size: u64) -> Result<(), ControlError> {
        let cur = j.pool.size_of(j.eid).map_err(io)?;
        if cur != size {
            if size < cur {
                j.pool.trim(j.eid, size, cur - size).map_err(io)?;
            }
            j.pool.resize_volume(j.eid, size)?;
        }
        Ok(())
    }

    /// One step: drops the snapshots the source no longer has, plans the next snapshot or
    /// copies up to `budget` bytes of it, or, when the new copy holds every snapshot, tries
    /// to join. Returns the bytes copied and whether the copy joined.
    fn snapshot_copy_step(
        &self,
        v: &Volume,
        j: &mut Job,
        budget: u64,
    ) -> Result<(u64, bool), ControlError> {
        let src = self.snapshot_source(v, j)?;
        if j.current.is_none() {
            let snaps = src.pool.snapshots(src.volume)?;
            let have = names(&snaps);
            for n in j.copied.iter().filter(|n| !have.contains(n)) {
                if let Ok(sid) = j.pool.snapshot_id(j.eid, n) {
                    j.pool.delete_snapshot(sid)?;
                }
            }
            j.copied.retain(|n| have.contains(n));
            let Some(next) = snaps.iter().find(|s| !j.copied.contains(&s.name)) else {
                return Ok((0, self.try_join(v, j)?));
            };
            Self::fit_size(j, next.size)?;
            let (from_src, from_dst) = match j.copied.last() {
                Some(base) => {
                    let sb = src.pool.snapshot_id(src.volume, base)?;
                    let db = j.pool.snapshot_id(j.eid, base)?;
                    (
                        src.pool
                            .changed_blocks(Target::Snapshot(next.id), sb, 0, next.size)
                            .map_err(io)?,
                        j.pool.changed_blocks(j.eid, db, 0, next.size).map_err(io)?,
                    )
                }
                None => (
                    src.pool
                        .block_status(Target::Snapshot(next.id), 0, next.size)
                        .map_err(io)?,
                    j.pool.block_status(j.eid, 0, next.size).map_err(io)?,
                ),
            };
            let runs = union(flagged(&from_src), flagged(&from_dst));
            let left: u64 = runs.iter().map(|r| r.1).sum();
            j.total = j.total.max(j.done + left);
            j.current = Some((next.name.clone(), runs));
            return Ok((0, false));
        }
        let Job {
            current,
            pool,
            eid,
            done,
            copied,
            ..
        } = j;
        let Some((name, runs)) = current.as_mut() else {
            return Ok((0, false));
        };
        let Ok(sid) = src.pool.snapshot_id(src.volume, name) else {
            // Deleted meanwhile: the next plan covers what was written of it.
            *current = None;
            return Ok((0, false));
        };
        let mut buf = vec![0u8; PIECE as usize];
        let mut spent = 0;
        while spent < budget {
            let Some(&(off, len)) = runs.first() else {
                break;
            };
            let n = len.min(PIECE - off % PIECE);
            let b = &mut buf[..n as usize];
            match src.pool.read_unmetered(Target::Snapshot(sid), off, b) {
                Ok(()) => {}
                Err(IoError::NotFound(_)) => {
                    *current = None;
                    return Ok((spent, false));
                }
                Err(e) => return Err(io(e)),
            }
            write_piece(pool, *eid, off, b).map_err(io)?;
            spent += n;
            *done += n;
            if n == len {
                runs.remove(0);
            } else {
                runs[0] = (off + n, len - n);
            }
        }
        if runs.is_empty() {
            pool.create_snapshot(*eid, name)?;
            copied.push(name.clone());
            *current = None;
        }
        Ok((spent, false))
    }

    /// Joins the new copy when it holds exactly the source's snapshots, checked again under
    /// the volume's write gate (see the module invariants). Returns whether it joined.
    fn try_join(&self, v: &Volume, j: &mut Job) -> Result<bool, ControlError> {
        let src = self.snapshot_source(v, j)?;
        if names(&src.pool.snapshots(src.volume)?) != j.copied {
            return Ok(false);
        }
        let gate = self.write_gate(&v.id);
        let g = gate.write();
        let v = self
            .volume_record(&v.id)
            .ok_or_else(|| ControlError::internal(format!("volume {} went away", v.id)))?;
        let src = self.snapshot_source(&v, j)?;
        if names(&src.pool.snapshots(src.volume)?) != j.copied {
            return Ok(false);
        }
        // The live layer is rebuilt whole once joined; it only needs the source's size.
        Self::fit_size(j, src.pool.size_of(src.volume).map_err(io)?)?;
        let slot = j.slot;
        let internal = |e: strata_replica::ReplicaError| {
            ControlError::internal(format!("volume {}: {e}", v.id))
        };
        let after = match &j.join {
            Join::Rebuild(set) => {
                // A copy that came back meanwhile resyncs what it missed: it keeps its slot.
                if set.copies().get(slot).map(|c| c.state) != Some(CopyState::Faulted) {
                    return Err(ControlError::internal(format!(
                        "volume {}: copy {slot} is no longer faulted",
                        v.id
                    )));
                }
                j.joining = true;
                set.replace(slot, j.target.clone()).map_err(internal)?;
                self.set_copy_device(&v, slot, &j.dev)?;
                let mut nv = v.clone();
                nv.copies = v.copy_devices();
                nv.copies[slot] = j.dev.clone();
                After::Refresh(nv)
            }
            Join::Move(set) => {
                set.fault(slot).map_err(internal)?;
                j.joining = true;
                set.replace(slot, j.target.clone()).map_err(internal)?;
                let old = v.copy_devices()[slot].clone();
                self.set_copy_device(&v, slot, &j.dev)?;
                let mut nv = v.clone();
                nv.copies = v.copy_devices();
                nv.copies[slot] = j.dev.clone();
                After::RefreshAndDrop(nv, old)
            }
            Join::MoveSingle => {
                let (set, log) = self.move_set(&v, j.target.clone())?;
                j.joining = true;
                After::MoveStarted(set, log)
            }
            Join::Grow(set) => {
                if v.copy_devices().get(slot).is_none() || v.copy_devices().contains(&j.dev) {
                    return Err(ControlError::Busy(format!(
                        "volume {} changed while its new copy was made",
                        v.name
                    )));
                }
                self.grow_started(&v, set, slot, &j.dev, j.target.clone())?;
                j.joining = true;
                After::Grown
            }
        };
        drop(g);
        match after {
            After::Refresh(nv) => {
                if let Err(e) = self.refresh_handle(&nv) {
                    tracing::warn!(volume = %v.id, error = %e,
                        "exports not pointed at the new copy");
                }
            }
            After::RefreshAndDrop(nv, old) => {
                let _ = self.refresh_handle(&nv);
                if let Some(p) = self.device_engine(&old) {
                    if let Ok(e) = p.volume_id(&v.id) {
                        let _ = p.delete_volume(e, true);
                    }
                }
            }
            After::Grown => {}
            After::MoveStarted(set, log) => {
                if let Err(e) = self.move_started(&v, &j.dev, set, log) {
                    // The volume stays on its copy alone; the drain starts over.
                    self.sets.sets.lock().remove(&v.id);
                    j.joining = false;
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// Refuses a change to `v`'s layers while one of its copies is not in step (resyncing, or
    /// a one-copy volume mid-move): a snapshot taken then would lack what the copy has not
    /// been given yet.
    pub(super) fn layers_steady(&self, v: &Volume) -> Result<(), ControlError> {
        let set = if v.copy_devices().len() > 1 {
            Some(self.replica_set(v)?)
        } else {
            self.sets.sets.lock().get(&v.id).cloned()
        };
        let Some(set) = set else {
            return Ok(());
        };
        let copies = set.copies();
        if copies.len() != v.copy_devices().len()
            || copies.iter().any(|c| c.state != CopyState::Healthy)
        {
            return Err(ControlError::device(
                DeviceProblem::Degraded,
                format!(
                    "volume {} has a copy being brought back (resynced, rebuilt or moved): its \
                     layers cannot change until every copy is in step",
                    v.name
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_flagged_and_merged() {
        let r = [(2, false), (3, true), (1, false), (2, true)];
        assert_eq!(flagged(&r), vec![(2, 3), (6, 2)]);
        assert_eq!(
            union(vec![(0, 2), (10, 5)], vec![(1, 3), (15, 1), (20, 1)]),
            vec![(0, 4), (10, 6), (20, 1)]
        );
        assert_eq!(union(vec![], vec![(4, 4)]), vec![(4, 4)]);
    }
}
