//! The resync job, driven by the caller: each [`ReplicaSet::resync_step`] copies regions onto
//! the lowest-index resyncing copy until a byte budget is spent, and reports progress, so the
//! caller throttles it (a token bucket, QoS shares) and shows it. A region is copied under its
//! exclusive region lock, from a healthy copy (the least loaded); the 4 KiB blocks that read as
//! zeros become trims on the target (a rebuilt thin volume stays thin). When no region is left the
//! target is flushed and only then healthy (its flag stored in sync).

use std::sync::atomic::Ordering;

use super::{fault_copy, push_event, ReplicaSet};
use crate::error::ReplicaError;
use crate::intent::CopyFlag;
use crate::state::{next, Cause, CopyState, Input, StateKind};
use crate::target::{CopyError, CopyTarget};
use crate::types::{region_range, MAX_COPIES};

/// Granularity of zero detection when a region is written onto a copy (the engine's block).
const ZERO_GRAIN: usize = 4096;

/// Writes `buf` at `start` of `t` as runs: runs of non-zero 4 KiB blocks are written, runs of
/// zero blocks are trimmed (so a rebuilt thin volume stays thin, and a stale copy's old data
/// there is discarded).
fn copy_runs(t: &dyn CopyTarget, start: u64, buf: &[u8]) -> Result<(), CopyError> {
    let zero = |i: usize| {
        buf[i * ZERO_GRAIN..((i + 1) * ZERO_GRAIN).min(buf.len())]
            .iter()
            .all(|&b| b == 0)
    };
    let blocks = buf.len().div_ceil(ZERO_GRAIN);
    let mut i = 0;
    while i < blocks {
        let z = zero(i);
        let mut j = i + 1;
        while j < blocks && zero(j) == z {
            j += 1;
        }
        let (s, e) = (i * ZERO_GRAIN, (j * ZERO_GRAIN).min(buf.len()));
        if z {
            t.write_zeroes(start + s as u64, (e - s) as u64, true)?;
        } else {
            t.write(start + s as u64, &buf[s..e])?;
        }
        i = j;
    }
    Ok(())
}

/// Where a resync stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncProgress {
    /// The copy being resynced.
    pub copy: usize,
    /// Bytes copied onto it so far.
    pub done: u64,
    /// Bytes to copy in all.
    pub total: u64,
    /// Whether the copy is healthy again.
    pub finished: bool,
    /// Whether the copy failed during the step (it is faulted; reattach or replace it).
    pub failed: bool,
}

impl ReplicaSet {
    /// Copies at least one region (and at most about `budget` bytes) onto the lowest-index
    /// resyncing copy. None when no copy is resyncing. Client I/O may run meanwhile.
    pub fn resync_step(&self, budget: u64) -> Result<Option<ResyncProgress>, ReplicaError> {
        let mut spent = 0u64;
        let mut buf = Vec::new();
        loop {
            let (copy, incarnation, region) = {
                let st = self.st.lock();
                let Some(i) = st
                    .copies
                    .iter()
                    .position(|c| matches!(c.state, CopyState::Resyncing { .. }))
                else {
                    return Ok(None);
                };
                let c = &st.copies[i];
                (i, c.incarnation, c.dirty.first().copied())
            };
            let Some(region) = region else {
                return self.finish(copy, incarnation).map(Some);
            };
            let (start, len) = region_range(region, self.size);
            buf.resize(len as usize, 0);
            let r = {
                let _g = self.lock_regions(region..region + 1, true);
                self.read_source(copy, start, &mut buf)?;
                copy_runs(&*self.target(copy), start, &buf)
            };
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            if st.copies[copy].incarnation != incarnation {
                // Faulted or replaced meanwhile: its dirty set was rebuilt by that transition.
                continue;
            }
            match r {
                Ok(()) => {
                    let c = &mut st.copies[copy];
                    c.dirty.remove(&region);
                    c.stats.resync_bytes += len;
                    if let CopyState::Resyncing { done, .. } = &mut c.state {
                        *done += len;
                    }
                }
                Err(e) => {
                    st.copies[copy].stats.write_errors += 1;
                    fault_copy(&mut il, &mut st, copy, Cause::ResyncError(e.to_string()));
                    let upto = il.flag_change;
                    drop(st);
                    drop(il);
                    self.persist(upto)?;
                    return Ok(Some(self.progress(copy, false, true)));
                }
            }
            drop(st);
            drop(il);
            spent += len;
            if spent >= budget {
                return Ok(Some(self.progress(copy, false, false)));
            }
        }
    }

    fn progress(&self, copy: usize, finished: bool, failed: bool) -> ResyncProgress {
        let st = self.st.lock();
        let (done, total) = match st.copies[copy].state {
            CopyState::Resyncing { done, total, .. } => (done, total),
            _ => (0, 0),
        };
        ResyncProgress {
            copy,
            done,
            total,
            finished,
            failed,
        }
    }

    /// Reads a region for copy `for_copy` from a healthy copy, trying each in turn.
    fn read_source(&self, for_copy: usize, start: u64, buf: &mut [u8]) -> Result<(), ReplicaError> {
        let mut tried = [false; MAX_COPIES];
        tried[for_copy] = true;
        let mut last: Option<CopyError> = None;
        loop {
            let pick = {
                let st = self.st.lock();
                self.pick_healthy(&st, &tried)
            };
            let Some(i) = pick else {
                return Err(match last {
                    Some(last) => ReplicaError::NoHealthyCopy { op: "resync", last },
                    None => ReplicaError::Unavailable,
                });
            };
            tried[i] = true;
            self.load[i].fetch_add(1, Ordering::Relaxed);
            let r = self.target(i).read(start, buf);
            self.load[i].fetch_sub(1, Ordering::Relaxed);
            match r {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let mut st = self.st.lock();
                    st.copies[i].stats.read_errors += 1;
                    st.copies[i].read_errors += 1;
                    last = Some(e);
                }
            }
        }
    }

    /// Flushes a copy whose regions are all copied and makes it healthy.
    fn finish(&self, copy: usize, incarnation: u64) -> Result<ResyncProgress, ReplicaError> {
        let r = self.target(copy).flush();
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        if st.copies[copy].incarnation != incarnation {
            drop(st);
            drop(il);
            return Ok(self.progress(copy, false, true));
        }
        if let Err(e) = r {
            st.copies[copy].stats.write_errors += 1;
            fault_copy(&mut il, &mut st, copy, Cause::ResyncError(e.to_string()));
            let upto = il.flag_change;
            drop(st);
            drop(il);
            self.persist(upto)?;
            return Ok(self.progress(copy, false, true));
        }
        let (done, total) = match st.copies[copy].state {
            CopyState::Resyncing { done, total, .. } => (done, total),
            _ => (0, 0),
        };
        next(copy, StateKind::Resyncing, Input::ResyncDone)?;
        let c = &mut st.copies[copy];
        c.state = CopyState::Healthy;
        c.incarnation += 1;
        c.read_errors = 0;
        push_event(
            &mut st,
            copy,
            StateKind::Resyncing,
            StateKind::Healthy,
            Cause::ResyncComplete,
        );
        il.rec.copies[copy] = CopyFlag::InSync;
        let upto = il.flag_changed();
        drop(st);
        drop(il);
        self.persist(upto)?;
        Ok(ResyncProgress {
            copy,
            done,
            total,
            finished: true,
            failed: false,
        })
    }
}
