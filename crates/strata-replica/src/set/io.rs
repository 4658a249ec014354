//! Client I/O: reads (one healthy copy, failover, read repair), writes and write-zeroes (every
//! healthy and resyncing copy, after the intent log marks the regions), flush (every copy that
//! takes writes; clears intent bits when all copies are healthy).

use std::sync::atomic::Ordering;

use smallvec::SmallVec;

use super::{fault_copy, ReplicaSet, SetState};
use crate::error::ReplicaError;
use crate::state::{Cause, CopyState};
use crate::target::{CopyError, CopyTarget};
use crate::types::{regions_of, MAX_COPIES, MAX_READ_ERRORS};

type Results = SmallVec<[(usize, Result<(), CopyError>); MAX_COPIES]>;

impl ReplicaSet {
    /// Reads `buf.len()` bytes at `offset` from one healthy copy (the least loaded). A copy
    /// that fails is skipped; once another served the range, the failed copies are rewritten
    /// with it (read repair). Fails only when every healthy copy failed.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReplicaError> {
        self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let _m = self.members.read();
        let mut tried = [false; MAX_COPIES];
        let mut failed: SmallVec<[usize; MAX_COPIES]> = SmallVec::new();
        let mut last = None;
        loop {
            let pick = {
                let st = self.st.lock();
                self.pick_healthy(&st, &tried)
            };
            let Some(i) = pick else {
                return Err(match last {
                    Some(last) => ReplicaError::NoHealthyCopy { op: "read", last },
                    None => ReplicaError::Unavailable,
                });
            };
            tried[i] = true;
            let t = self.target(i);
            self.load[i].fetch_add(1, Ordering::Relaxed);
            let r = t.read(offset, buf);
            self.load[i].fetch_sub(1, Ordering::Relaxed);
            match r {
                Ok(()) => {
                    {
                        let mut st = self.st.lock();
                        let c = &mut st.copies[i];
                        c.stats.reads += 1;
                        c.read_errors = 0;
                    }
                    if !failed.is_empty() {
                        self.repair(&failed, offset, buf.len() as u64);
                    }
                    return Ok(());
                }
                Err(e) => {
                    let mut il = self.intent.lock();
                    let mut st = self.st.lock();
                    let c = &mut st.copies[i];
                    c.stats.read_errors += 1;
                    c.read_errors += 1;
                    if let CopyError::Gone { .. } = e {
                        if self.others_healthy(&st, i) {
                            fault_copy(&mut il, &mut st, i, Cause::Gone(e.to_string()));
                            let upto = il.flag_change;
                            drop(st);
                            drop(il);
                            // Best effort: if the store fails the change stays unstored and
                            // the next write stores it before it is sent.
                            let _ = self.persist(upto);
                        }
                    } else {
                        failed.push(i);
                    }
                    last = Some(e);
                }
            }
        }
    }

    fn others_healthy(&self, st: &SetState, copy: usize) -> bool {
        st.copies
            .iter()
            .enumerate()
            .any(|(j, c)| j != copy && c.state == CopyState::Healthy)
    }

    /// Rewrites `[offset, offset + len)` on the copies that failed to read it, with the bytes
    /// of a healthy copy re-read under the exclusive region locks (so no write in flight is
    /// undone). A copy whose repair write fails, or that failed too many reads in a row, is
    /// faulted.
    fn repair(&self, failed: &[usize], offset: u64, len: u64) {
        let _g = self.lock_regions(regions_of(offset, len), true);
        let mut data = vec![0u8; len as usize];
        let mut tried = [false; MAX_COPIES];
        for &i in failed {
            tried[i] = true;
        }
        loop {
            let pick = {
                let st = self.st.lock();
                self.pick_healthy(&st, &tried)
            };
            // No healthy copy can give the bytes again: the failed copies keep their error
            // counts and are repaired by a later read.
            let Some(g) = pick else { return };
            tried[g] = true;
            if self.target(g).read(offset, &mut data).is_ok() {
                break;
            }
        }
        for &i in failed {
            if self.st.lock().copies[i].state != CopyState::Healthy {
                continue;
            }
            let r = self.target(i).write(offset, &data);
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            let c = &mut st.copies[i];
            let cause = match r {
                Ok(()) => {
                    c.stats.repairs += 1;
                    c.stats.repaired_bytes += len;
                    (c.read_errors >= MAX_READ_ERRORS).then(|| {
                        Cause::ReadErrors(format!("{} read errors in a row", c.read_errors))
                    })
                }
                Err(e) => {
                    c.stats.write_errors += 1;
                    Some(Cause::ReadErrors(format!("repair write failed: {e}")))
                }
            };
            if let Some(cause) = cause {
                if self.others_healthy(&st, i) {
                    fault_copy(&mut il, &mut st, i, cause);
                    let upto = il.flag_change;
                    drop(st);
                    drop(il);
                    let _ = self.persist(upto);
                }
            }
        }
    }

    /// Writes `data` at `offset` on every copy that takes writes. Acknowledged when every
    /// healthy copy has it; a copy that fails is faulted (and the write still succeeds while a
    /// healthy copy has it).
    ///
    /// A copy that writes behind ([`CopyTarget::writes_behind`]) is given the write that way
    /// while another healthy copy takes it plainly; if every such copy fails it, the write is
    /// answered only once a copy behind carried it out.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), ReplicaError> {
        self.write_with(offset, data.len() as u64, |t, behind| {
            if behind {
                t.write_behind(offset, data)
            } else {
                t.write(offset, data)
            }
        })
    }

    /// Makes `[offset, offset + len)` read as zeros on every copy (`unmap`: free the space).
    pub fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), ReplicaError> {
        self.write_with(offset, len, |t, _| t.write_zeroes(offset, len, unmap))
    }

    /// Discards `[offset, offset + len)`: it reads as zeros and the copies free the space.
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), ReplicaError> {
        self.write_zeroes(offset, len, true)
    }

    fn write_with(
        &self,
        offset: u64,
        len: u64,
        op: impl Fn(&dyn CopyTarget, bool) -> Result<(), CopyError>,
    ) -> Result<(), ReplicaError> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let regs = regions_of(offset, len);
        let _m = self.members.read();
        let _g = self.lock_regions(regs.clone(), false);
        let mut writers: SmallVec<[usize; MAX_COPIES]> = SmallVec::new();
        let mut healthy: SmallVec<[usize; MAX_COPIES]> = SmallVec::new();
        let upto = {
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            if !st.copies.iter().any(|c| c.state == CopyState::Healthy) {
                return Err(ReplicaError::Unavailable);
            }
            // Mark, and register the regions as in flight in the same critical section: no
            // flush clears the bits before this write is done.
            let need = il.mark(regs.clone());
            for r in regs.clone() {
                st.epoch.insert(r);
                *st.inflight.entry(r).or_default() += 1;
            }
            for (i, c) in st.copies.iter_mut().enumerate() {
                match c.state {
                    CopyState::Faulted => c.dirty.extend(regs.clone()),
                    CopyState::Healthy => {
                        healthy.push(i);
                        writers.push(i);
                    }
                    _ => writers.push(i),
                }
            }
            need
        };
        // Nothing is sent to a copy before the log holds its regions' marks and every copy
        // flag changed so far. Writers waiting here share one store; writers whose marks are
        // stored do not wait for others'.
        if let Err(e) = self.persist(upto) {
            self.unregister(regs);
            return Err(e);
        }
        let targets: SmallVec<[_; MAX_COPIES]> = writers.iter().map(|&i| self.target(i)).collect();
        // Writes behind are allowed only while a healthy copy takes the write plainly: an
        // answered write is then on a copy that answered it.
        let plain_healthy = writers
            .iter()
            .zip(&targets)
            .any(|(i, t)| healthy.contains(i) && !t.writes_behind());
        let mut results = Results::new();
        for (&i, t) in writers.iter().zip(&targets) {
            self.load[i].fetch_add(1, Ordering::Relaxed);
            let r = op(&**t, plain_healthy && t.writes_behind());
            self.load[i].fetch_sub(1, Ordering::Relaxed);
            results.push((i, r));
        }
        // The plain copies failed this write: it is answered only once a copy that took it
        // behind has carried it out (and made it durable), so an answered write is still on
        // a copy that answered it.
        let plain_ok = results
            .iter()
            .zip(&targets)
            .any(|((i, r), t)| r.is_ok() && healthy.contains(i) && !t.writes_behind());
        if plain_healthy && !plain_ok {
            for ((_, r), t) in results.iter_mut().zip(&targets) {
                if r.is_ok() && t.writes_behind() {
                    *r = t.flush();
                }
            }
        }
        let (r, upto) = {
            let mut il = self.intent.lock();
            let mut st = self.st.lock();
            unregister(&mut st, regs);
            let r = self.settle(&mut il, &mut st, &results, "write", Cause::WriteError);
            (r, il.flag_change)
        };
        // The faults are stored before the write is acknowledged.
        self.persist(upto)?;
        r
    }

    fn unregister(&self, regs: std::ops::Range<u64>) {
        unregister(&mut self.st.lock(), regs);
    }

    /// Applies the outcome of one operation on several copies: faults the copies that failed,
    /// unless no healthy copy succeeded, in which case the lowest-index failed healthy copy
    /// stays healthy and the error is returned.
    fn settle(
        &self,
        il: &mut super::IntentSide,
        st: &mut SetState,
        results: &Results,
        op: &'static str,
        cause: fn(String) -> Cause,
    ) -> Result<(), ReplicaError> {
        let healthy_ok = results
            .iter()
            .any(|(i, r)| r.is_ok() && st.copies[*i].state == CopyState::Healthy);
        let mut keep = None;
        let mut last = None;
        if !healthy_ok {
            keep = results
                .iter()
                .find(|(i, r)| r.is_err() && st.copies[*i].state == CopyState::Healthy)
                .map(|(i, _)| *i);
        }
        for (i, r) in results {
            if let Err(e) = r {
                st.copies[*i].stats.write_errors += 1;
                if Some(*i) != keep {
                    let c = match e {
                        CopyError::Gone { .. } => Cause::Gone(e.to_string()),
                        _ => cause(e.to_string()),
                    };
                    fault_copy(il, st, *i, c);
                }
                if keep == Some(*i) || last.is_none() {
                    last = Some(e.clone());
                }
            }
        }
        if healthy_ok {
            return Ok(());
        }
        Err(match last {
            Some(last) => ReplicaError::NoHealthyCopy { op, last },
            None => ReplicaError::Unavailable,
        })
    }

    /// Makes every write acknowledged before it durable on every copy that takes writes. When
    /// all copies were healthy throughout and all flushed, the intent bits of regions written
    /// neither since the previous flush began nor since this one began are cleared (in memory;
    /// stored lazily).
    pub fn flush(&self) -> Result<(), ReplicaError> {
        let _m = self.members.read();
        let _f = self.flush.lock();
        let mut writers: SmallVec<[usize; MAX_COPIES]> = SmallVec::new();
        let prev;
        let all_healthy = {
            let mut st = self.st.lock();
            // The cut: regions written from now on, or still being written, keep their bits;
            // so do those written since the previous cut (`prev`), see below.
            let inflight = st.inflight.keys().copied().collect();
            prev = std::mem::replace(&mut st.epoch, inflight);
            for (i, c) in st.copies.iter().enumerate() {
                if c.state != CopyState::Faulted {
                    writers.push(i);
                }
            }
            if !st.copies.iter().any(|c| c.state == CopyState::Healthy) {
                return Err(ReplicaError::Unavailable);
            }
            st.copies.iter().all(|c| c.state == CopyState::Healthy)
        };
        let mut results = Results::new();
        for &i in &writers {
            let t = self.target(i);
            self.load[i].fetch_add(1, Ordering::Relaxed);
            let r = t.flush();
            self.load[i].fetch_sub(1, Ordering::Relaxed);
            results.push((i, r));
        }
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        let r = self.settle(&mut il, &mut st, &results, "flush", Cause::FlushError);
        let clean = results.iter().all(|(_, r)| r.is_ok())
            && st.copies.iter().all(|c| c.state == CopyState::Healthy);
        if all_healthy && clean {
            let before = il.rec.dirty.len();
            // A bit is cleared only once its region went a whole flush interval unwritten:
            // a region rewritten between every two flushes keeps its bit, so its writes store
            // nothing (md delays its clears for the same reason). The cost: after a crash the
            // resync also covers regions written in the interval before the last flush.
            let epoch = &st.epoch;
            il.rec
                .dirty
                .retain(|r| epoch.contains(r) || prev.contains(r));
            if il.rec.dirty.len() != before {
                il.clear_pending = true;
            }
        }
        let upto = il.flag_change;
        drop(st);
        drop(il);
        self.persist(upto)?;
        r
    }
}

/// Ends a write's registration of its regions as in flight.
fn unregister(st: &mut SetState, regs: std::ops::Range<u64>) {
    for r in regs {
        let n = st.inflight.get_mut(&r).expect("registered by the write");
        *n -= 1;
        if *n == 0 {
            st.inflight.remove(&r);
        }
    }
}
