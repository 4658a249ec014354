//! The resync job, driven by the caller: each [`ReplicaSet::resync_step`] copies runs of
//! regions onto the lowest-index resyncing copy until a byte budget is spent, and reports
//! progress, so the caller throttles it (a token bucket, QoS shares) and shows it.
//!
//! Several callers may step the same set at once (the daemon runs a few resync workers): each
//! step claims a run of up to [`MAX_RUN`] contiguous regions that no other step is copying,
//! copies it with one read from a healthy copy (the least loaded) and one write per data run,
//! under the run's exclusive region locks, and releases the claim. So reads of one run overlap
//! writes of another, and one caller waiting in the target's commit does not stall the others.
//! The 4 KiB blocks that read as zeros become trims on the target (a rebuilt thin volume stays
//! thin). No step syncs anything: the target's page cache takes the writes.
//!
//! # Invariants
//! - A claimed region stays in the copy's dirty set until its copy succeeded, so a copy that
//!   faults mid-step still counts it as missing.
//! - The copy is flushed, and only then made healthy (its flag stored in sync), when its dirty
//!   set is empty and no step holds a claim on it; one caller does it (`finishing`), the others
//!   wait for it. A crash before that store leaves the copy flagged new or stale in the log, so
//!   it is never taken for a healthy copy after a restart.
//! - A step whose copy changed state meanwhile (its incarnation moved) records nothing: the
//!   transition reset the copy's dirty set and claims.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{fault_copy, push_event, ReplicaSet};
use crate::error::ReplicaError;
use crate::intent::CopyFlag;
use crate::state::{next, Cause, CopyState, Input, StateKind};
use crate::target::{CopyError, CopyTarget};
use crate::types::{region_range, RegionSet, MAX_COPIES, REGION_SIZE};

/// Granularity of zero detection when a region is written onto a copy (the engine's block).
const ZERO_GRAIN: usize = 4096;

/// Regions one claim covers at most: one read and one write of up to 4 MiB, and that many
/// regions' locks held exclusively while they are copied.
const MAX_RUN: u64 = 4;

/// How long a step with nothing left to claim waits for another step's claim to end before
/// it looks again (a claim normally ends well before; this only bounds a missed wake-up).
const CLAIM_WAIT: Duration = Duration::from_millis(50);

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

/// The first run of at most `want` consecutive regions of `dirty` that none of `claimed`
/// holds, or None when every dirty region is claimed.
fn unclaimed_run(dirty: &RegionSet, claimed: &RegionSet, want: u64) -> Option<Range<u64>> {
    let first = *dirty.iter().find(|r| !claimed.contains(r))?;
    let mut end = first + 1;
    while end - first < want && dirty.contains(&end) && !claimed.contains(&end) {
        end += 1;
    }
    Some(first..end)
}

/// Where a resync stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncProgress {
    /// The copy being resynced.
    pub copy: usize,
    /// Bytes copied onto it so far (by every step).
    pub done: u64,
    /// Bytes to copy in all.
    pub total: u64,
    /// Bytes this step copied (what a throttle charges).
    pub copied: u64,
    /// Whether the copy is healthy again.
    pub finished: bool,
    /// Whether the copy failed during the step (it is faulted; reattach or replace it).
    pub failed: bool,
}

/// What a step does next, decided under the state lock.
enum Next {
    /// Copy these regions of this copy (claimed), at this incarnation.
    Copy(usize, u64, Range<u64>),
    /// Every region is copied and no claim is held: flush and make it healthy.
    Finish(usize, u64),
    /// Every region left is claimed by other steps (or one is finishing): nothing to do now.
    Busy(usize),
}

impl ReplicaSet {
    /// Copies at least one region (and at most about `budget` bytes) onto the lowest-index
    /// resyncing copy. None when no copy is resyncing. Client I/O may run meanwhile, and so may
    /// other calls (each copies regions the others do not).
    pub fn resync_step(&self, budget: u64) -> Result<Option<ResyncProgress>, ReplicaError> {
        let _m = self.members.read();
        let mut spent = 0u64;
        let mut buf = Vec::new();
        loop {
            let want = budget
                .saturating_sub(spent)
                .div_ceil(REGION_SIZE)
                .clamp(1, MAX_RUN);
            let step = {
                let mut st = self.st.lock();
                let Some(i) = st
                    .copies
                    .iter()
                    .position(|c| matches!(c.state, CopyState::Resyncing { .. }))
                else {
                    return Ok(None);
                };
                let c = &mut st.copies[i];
                if c.finishing {
                    Next::Busy(i)
                } else if let Some(run) = unclaimed_run(&c.dirty, &c.claimed, want) {
                    c.claimed.extend(run.clone());
                    Next::Copy(i, c.incarnation, run)
                } else if c.claimed.is_empty() {
                    c.finishing = true;
                    Next::Finish(i, c.incarnation)
                } else {
                    Next::Busy(i)
                }
            };
            let (copy, incarnation, run) = match step {
                Next::Copy(i, inc, run) => (i, inc, run),
                Next::Finish(i, inc) => return self.finish(i, inc, spent).map(Some),
                Next::Busy(i) => {
                    if spent > 0 {
                        return Ok(Some(self.progress(i, spent, false, false)));
                    }
                    // Wait for another step's claim (or the finish) to end, then look again.
                    let mut st = self.st.lock();
                    let c = &st.copies[i];
                    if c.finishing || !c.claimed.is_empty() {
                        self.resync_cv.wait_for(&mut st, CLAIM_WAIT);
                    }
                    continue;
                }
            };
            let start = region_range(run.start, self.size).0;
            let (last, last_len) = region_range(run.end - 1, self.size);
            let len = last + last_len - start;
            buf.resize(len as usize, 0);
            let r = {
                let _g = self.lock_regions(run.clone(), true);
                self.read_source(copy, start, &mut buf)
                    .map(|()| copy_runs(&*self.target(copy), start, &buf))
            };
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            if st.copies[copy].incarnation != incarnation {
                // Faulted or replaced meanwhile: that transition rebuilt its dirty set and
                // dropped every claim.
                drop(st);
                drop(il);
                if let Err(e) = r {
                    return Err(e);
                }
                continue;
            }
            let c = &mut st.copies[copy];
            for reg in run.clone() {
                c.claimed.remove(&reg);
            }
            self.resync_cv.notify_all();
            match r {
                Ok(Ok(())) => {
                    for reg in run {
                        c.dirty.remove(&reg);
                    }
                    c.stats.resync_bytes += len;
                    if let CopyState::Resyncing { done, .. } = &mut c.state {
                        *done += len;
                    }
                }
                Ok(Err(e)) => {
                    c.stats.write_errors += 1;
                    fault_copy(&mut il, &mut st, copy, Cause::ResyncError(e.to_string()));
                    let upto = il.flag_change;
                    drop(st);
                    drop(il);
                    self.persist(upto)?;
                    return Ok(Some(self.progress(copy, spent, false, true)));
                }
                Err(e) => return Err(e),
            }
            drop(st);
            drop(il);
            spent += len;
            if spent >= budget {
                return Ok(Some(self.progress(copy, spent, false, false)));
            }
        }
    }

    fn progress(&self, copy: usize, copied: u64, finished: bool, failed: bool) -> ResyncProgress {
        let st = self.st.lock();
        let (done, total) = match st.copies[copy].state {
            CopyState::Resyncing { done, total, .. } => (done, total),
            _ => (0, 0),
        };
        ResyncProgress {
            copy,
            done,
            total,
            copied,
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

    /// Flushes a copy whose regions are all copied and makes it healthy (the caller set its
    /// `finishing`; every way out of here clears it, by a transition or by hand).
    fn finish(
        &self,
        copy: usize,
        incarnation: u64,
        copied: u64,
    ) -> Result<ResyncProgress, ReplicaError> {
        let r = self.target(copy).flush();
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        self.resync_cv.notify_all();
        if st.copies[copy].incarnation != incarnation {
            drop(st);
            drop(il);
            return Ok(self.progress(copy, copied, false, true));
        }
        if let Err(e) = r {
            st.copies[copy].stats.write_errors += 1;
            fault_copy(&mut il, &mut st, copy, Cause::ResyncError(e.to_string()));
            let upto = il.flag_change;
            drop(st);
            drop(il);
            self.persist(upto)?;
            return Ok(self.progress(copy, copied, false, true));
        }
        let (done, total) = match st.copies[copy].state {
            CopyState::Resyncing { done, total, .. } => (done, total),
            _ => (0, 0),
        };
        next(copy, StateKind::Resyncing, Input::ResyncDone)?;
        let c = &mut st.copies[copy];
        c.state = CopyState::Healthy;
        c.new_incarnation();
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
            copied,
            finished: true,
            failed: false,
        })
    }
}
