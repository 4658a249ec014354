//! The replica set: N copies (1 to 3) of one volume, each a [`CopyTarget`] on its own failure
//! domain, kept in agreement above the engine.
//!
//! # Invariants
//! - A write or flush is acknowledged only when every copy that was healthy when it started
//!   and is still healthy has it; a copy that fails it is faulted first (its intent flag stored
//!   as stale). The last healthy copy is never faulted by an I/O error: the error is returned.
//! - Reads are served only by healthy copies, so two reads of an unchanged range agree.
//! - A faulted copy's `dirty` set holds every region it may lack: the intent bits when it
//!   failed (every region written since the last flush all copies completed) plus every
//!   region written since. A resyncing copy's `dirty` set is what the job has still to copy.
//! - A resyncing copy takes every client write, and the job copies a region under that
//!   region's exclusive lock (client writes hold it shared), so a write is never overwritten
//!   by an older copy of its region: either the job copied before the write (and the write
//!   then reached the copy) or after it (and copied the written data from a healthy copy).
//! - Read repair rewrites a range under its exclusive region lock with data re-read from a
//!   healthy copy, so a repair never undoes a concurrent write.
//!
//! # Concurrency
//! `members` is held shared by every read, write, flush and resync step, and exclusive by a
//! change of the member list (`add`, `retire`), so copy indexes held by an operation stay
//! valid. `stripes` are region locks (writes shared; resync and repair exclusive; always taken
//! in ascending stripe order). Lock order: members, flush, stripes, log, intent, st, targets. No lock is
//! held across copy I/O except the stripes and, for a flush, `flush` (flushes are serialized so
//! the epoch one flush cuts is the one it clears against); `log` is held across a store of the
//! intent record only. A write registers its regions as in flight in the same critical section
//! that marks them, so no flush clears a bit between a write's mark and its I/O, and it sends
//! nothing before a store carried its mark. The set spawns no thread: copies are
//! written one after another by the calling thread (a local copy's write is a copy into the
//! page cache; a remote target will pipeline behind the same trait).
//!
//! # Files
//! `mod.rs`: the type, create/open, copy management (fault, reattach, replace), figures and
//! events. `io.rs`: read (with repair), write, write-zeroes, flush. `resync.rs`: the resync job.
//! `members.rs`: growing the set by a member and retiring one (a copy moved without lowering
//! redundancy).

mod io;
mod members;
mod resync;

pub use resync::ResyncProgress;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use smallvec::SmallVec;

use crate::error::ReplicaError;
use crate::intent::{CopyFlag, IntentLog, IntentRecord};
use crate::state::{next, Cause, CopyState, Event, Input, StateKind};
use crate::target::CopyTarget;
use crate::types::{region_count, region_range, RegionSet, MAX_COPIES, REGION_SIZE};

/// Region locks (a region maps to stripe `r % STRIPES`, so a write's consecutive regions take
/// distinct locks).
const STRIPES: usize = 256;
/// Events kept until drained; older ones are dropped (the sequence numbers show the gap).
const MAX_EVENTS: usize = 1024;

/// Figures of one copy since the set was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Reads it served.
    pub reads: u64,
    /// Reads it failed (I/O or checksum error).
    pub read_errors: u64,
    /// Ranges rewritten on it by read repair.
    pub repairs: u64,
    /// Bytes rewritten on it by read repair.
    pub repaired_bytes: u64,
    /// Writes and flushes it failed.
    pub write_errors: u64,
    /// Bytes the resync job copied onto it.
    pub resync_bytes: u64,
}

/// One copy as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// Index in the set.
    pub index: usize,
    /// The target's label.
    pub label: String,
    /// Its state.
    pub state: CopyState,
    /// Regions it lacks (faulted: written since; resyncing: still to copy).
    pub dirty_regions: u64,
    /// Its figures.
    pub stats: CopyStats,
}

#[derive(Debug)]
struct CopyMeta {
    state: CopyState,
    /// Faulted: regions it may lack. Resyncing: regions still to copy. Healthy: empty.
    dirty: RegionSet,
    /// Read errors since its last successful read.
    read_errors: u32,
    /// Changes at every transition, so a resync step started before one does not apply.
    incarnation: u64,
    /// Resyncing: regions a resync step is copying now (still in `dirty` until copied).
    claimed: RegionSet,
    /// Resyncing: a step is flushing the copy to make it healthy.
    finishing: bool,
    stats: CopyStats,
}

impl CopyMeta {
    /// A transition: steps started before it record nothing, and its claims are void.
    fn new_incarnation(&mut self) {
        self.incarnation += 1;
        self.claimed.clear();
        self.finishing = false;
    }
}

#[derive(Debug)]
struct SetState {
    copies: Vec<CopyMeta>,
    /// Regions written since the last flush's cut (and those with writes in flight at it).
    epoch: RegionSet,
    /// Writes in flight per region.
    inflight: BTreeMap<u64, u32>,
    events: VecDeque<Event>,
    next_seq: u64,
}

#[derive(Debug)]
struct IntentSide {
    /// `dirty` here is the in-memory bit set: a subset of the stored one once `stored`
    /// reaches `change`.
    rec: IntentRecord,
    /// Counts the changes that must be stored (bits added, flags changed).
    change: u64,
    /// The highest `change` a successful store carried.
    stored: u64,
    /// Marks not yet stored: region -> the change that added it. A write into such a region
    /// waits for that change, not for every change.
    unstored: BTreeMap<u64, u64>,
    /// The last change that altered a copy flag: every write waits for it, so no write is
    /// acknowledged while the log could still name a copy that lacks it in sync.
    flag_change: u64,
    /// Bits were cleared in memory and not yet in the stored record (harmless; stored lazily).
    clear_pending: bool,
}

impl IntentSide {
    /// Notes a change that must be stored; returns the value `persist` must reach.
    fn changed(&mut self) -> u64 {
        self.change += 1;
        self.change
    }
    /// Notes a change of a copy flag.
    fn flag_changed(&mut self) -> u64 {
        self.flag_change = self.changed();
        self.flag_change
    }
    /// Marks `regions` (those not marked yet) and returns the change a write into them must
    /// see stored: its own marks, other writers' unstored marks of the same regions, and the
    /// last flag change.
    fn mark(&mut self, regions: Range<u64>) -> u64 {
        let mut need = self.flag_change;
        let mut added = None;
        for r in regions {
            if self.rec.dirty.insert(r) {
                let c = *added.get_or_insert_with(|| {
                    self.change += 1;
                    self.change
                });
                self.unstored.insert(r, c);
            }
            if let Some(&c) = self.unstored.get(&r) {
                need = need.max(c);
            }
        }
        need
    }
}
/// A replicated volume. Shared between threads by reference (`&self` everywhere).
#[derive(Debug)]
pub struct ReplicaSet {
    size: u64,
    targets: RwLock<Vec<Arc<dyn CopyTarget>>>,
    /// Operations in flight per copy (the read balancer's load figure), one per possible
    /// member ([`MAX_COPIES`]) so a member added later has its counter.
    load: Vec<AtomicU64>,
    /// Shared by every operation that holds copy indexes; exclusive while members change.
    members: RwLock<()>,
    st: Mutex<SetState>,
    intent: Mutex<IntentSide>,
    /// The log's storage. Held across a store (and only then), never while `intent` or `st`
    /// is held: writers whose marks are stored go on meanwhile, and writers waiting for a
    /// mark share the next store (group commit).
    log: Mutex<Box<dyn IntentLog>>,
    stripes: Box<[RwLock<()>]>,
    flush: Mutex<()>,
    /// Signalled (with `st`) when a resync step releases its claims or a finish ends, for
    /// steps that found every region left claimed.
    resync_cv: Condvar,
}

enum StripeGuard<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

type Guards<'a> = SmallVec<[StripeGuard<'a>; 8]>;

fn check_count(n: usize) -> Result<(), ReplicaError> {
    if n == 0 || n > MAX_COPIES {
        return Err(ReplicaError::CopyCount(n));
    }
    Ok(())
}

impl ReplicaSet {
    /// A new set over copies that hold the same bytes (new volumes: all zeros). The log must
    /// be empty; the record stored names every copy in sync.
    pub fn create(
        targets: Vec<Arc<dyn CopyTarget>>,
        mut log: Box<dyn IntentLog>,
    ) -> Result<Self, ReplicaError> {
        check_count(targets.len())?;
        let mut size = None;
        for (i, t) in targets.iter().enumerate() {
            let s = t
                .size()
                .map_err(|source| ReplicaError::CopyUnreachable { copy: i, source })?;
            match size {
                None => size = Some(s),
                Some(expected) if expected != s => {
                    return Err(ReplicaError::SizeMismatch {
                        copy: i,
                        size: s,
                        expected,
                    })
                }
                _ => {}
            }
        }
        let size = size.expect("at least one copy");
        if log.load()?.is_some() {
            return Err(ReplicaError::AlreadyCreated);
        }
        let rec = IntentRecord {
            generation: 0,
            region_size: REGION_SIZE,
            regions: region_count(size),
            copies: vec![CopyFlag::InSync; targets.len()],
            dirty: RegionSet::new(),
        };
        let states = vec![(CopyState::Healthy, RegionSet::new()); targets.len()];
        let set = Self::build(size, targets, log, rec, states);
        set.persist(1)?;
        Ok(set)
    }

    /// Opens a set from its intent log. Copies the log names beyond `targets` (members added
    /// by [`ReplicaSet::add`] and not retired) are dropped. The source is the lowest-index copy
    /// the log names in sync that answers; every other answering copy resyncs the marked regions from the set's
    /// healthy copies (a new copy, everything); a copy that does not answer starts faulted.
    /// The caller then drives [`ReplicaSet::resync_step`] until it returns None.
    pub fn open(
        targets: Vec<Arc<dyn CopyTarget>>,
        mut log: Box<dyn IntentLog>,
    ) -> Result<Self, ReplicaError> {
        check_count(targets.len())?;
        let mut rec = log.load()?.ok_or(ReplicaError::NotCreated)?;
        // Copies the log names beyond those given were members added by `add` (a move) that
        // were not retired when the set was last open: the caller's record does not name them,
        // so the move did not switch, and the set opens without them. The copies given kept
        // taking every write while the added one joined, so they lose nothing.
        if rec.copies.len() > targets.len() {
            rec.copies.truncate(targets.len());
        }
        if rec.copies.len() != targets.len() {
            return Err(ReplicaError::LogMismatch(format!(
                "the log names {} copies, {} were given",
                rec.copies.len(),
                targets.len()
            )));
        }
        if rec.region_size != REGION_SIZE {
            return Err(ReplicaError::LogMismatch(format!(
                "region size {} (this build uses {REGION_SIZE})",
                rec.region_size
            )));
        }
        let sizes: Vec<Option<u64>> = targets.iter().map(|t| t.size().ok()).collect();
        let source = (0..targets.len())
            .find(|&i| rec.copies[i] == CopyFlag::InSync && sizes[i].is_some())
            .ok_or(ReplicaError::Unavailable)?;
        let size = sizes[source].expect("answered");
        if region_count(size) != rec.regions {
            return Err(ReplicaError::LogMismatch(format!(
                "{} regions in the log, the copies have {size} bytes",
                rec.regions
            )));
        }
        let all: RegionSet = (0..rec.regions).collect();
        let mut states = Vec::new();
        let mut causes = Vec::new();
        for i in 0..targets.len() {
            let need = match rec.copies[i] {
                CopyFlag::New => all.clone(),
                _ => rec.dirty.clone(),
            };
            match sizes[i] {
                Some(s) if s != size => {
                    return Err(ReplicaError::SizeMismatch {
                        copy: i,
                        size: s,
                        expected: size,
                    })
                }
                Some(_) if i == source => {
                    states.push((CopyState::Healthy, RegionSet::new()));
                    causes.push(Cause::Recovery);
                }
                Some(_) if need.is_empty() && rec.copies[i] == CopyFlag::InSync => {
                    states.push((CopyState::Healthy, RegionSet::new()));
                    causes.push(Cause::Recovery);
                }
                Some(_) => {
                    let total = bytes_of(&need, size);
                    let full = rec.copies[i] == CopyFlag::New;
                    states.push((
                        CopyState::Resyncing {
                            done: 0,
                            total,
                            full,
                        },
                        need,
                    ));
                    causes.push(match rec.copies[i] {
                        CopyFlag::InSync => Cause::Recovery,
                        CopyFlag::Stale => Cause::Returned,
                        CopyFlag::New => Cause::Replaced,
                    });
                }
                None => {
                    if rec.copies[i] == CopyFlag::InSync {
                        rec.copies[i] = CopyFlag::Stale;
                    }
                    states.push((CopyState::Faulted, need));
                    causes.push(Cause::Unreachable(targets[i].describe()));
                }
            }
        }
        let set = Self::build(size, targets, log, rec, states);
        {
            let mut st = set.st.lock();
            for (i, cause) in causes.into_iter().enumerate() {
                let to = st.copies[i].state.kind();
                push_event(&mut st, i, to, to, cause);
            }
        }
        set.persist(1)?;
        Ok(set)
    }

    fn build(
        size: u64,
        targets: Vec<Arc<dyn CopyTarget>>,
        log: Box<dyn IntentLog>,
        rec: IntentRecord,
        states: Vec<(CopyState, RegionSet)>,
    ) -> Self {
        ReplicaSet {
            size,
            targets: RwLock::new(targets),
            load: (0..MAX_COPIES).map(|_| AtomicU64::new(0)).collect(),
            members: RwLock::new(()),
            st: Mutex::new(SetState {
                copies: states
                    .into_iter()
                    .map(|(state, dirty)| CopyMeta {
                        state,
                        dirty,
                        read_errors: 0,
                        incarnation: 0,
                        claimed: RegionSet::new(),
                        finishing: false,
                        stats: CopyStats::default(),
                    })
                    .collect(),
                epoch: RegionSet::new(),
                inflight: BTreeMap::new(),
                events: VecDeque::new(),
                next_seq: 0,
            }),
            intent: Mutex::new(IntentSide {
                rec,
                change: 1,
                stored: 0,
                unstored: BTreeMap::new(),
                flag_change: 1,
                clear_pending: false,
            }),
            log: Mutex::new(log),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            flush: Mutex::new(()),
            resync_cv: Condvar::new(),
        }
    }

    /// The volume's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of copies.
    pub fn copy_count(&self) -> usize {
        self.targets.read().len()
    }

    /// Every copy's state and figures.
    pub fn copies(&self) -> Vec<CopyInfo> {
        let st = self.st.lock();
        let targets = self.targets.read();
        st.copies
            .iter()
            .enumerate()
            .map(|(i, c)| CopyInfo {
                index: i,
                label: targets[i].describe(),
                state: c.state,
                dirty_regions: c.dirty.len() as u64,
                stats: c.stats,
            })
            .collect()
    }

    /// Whether any copy is not healthy (the volume is degraded).
    pub fn degraded(&self) -> bool {
        let st = self.st.lock();
        st.copies.iter().any(|c| c.state != CopyState::Healthy)
    }

    /// The state changes recorded since the last call, oldest first.
    pub fn drain_events(&self) -> Vec<Event> {
        self.st.lock().events.drain(..).collect()
    }

    /// The regions the intent log holds in memory (tests and figures).
    pub fn intent_regions(&self) -> RegionSet {
        self.intent.lock().rec.dirty.clone()
    }

    /// Stores the intent record if bits were cleared since the last store (call when idle and
    /// before a clean stop, so the next open resyncs less).
    pub fn sync_intent(&self) -> Result<(), ReplicaError> {
        let upto = {
            let mut il = self.intent.lock();
            if il.clear_pending {
                il.changed()
            } else {
                il.change
            }
        };
        self.persist(upto)
    }

    /// Returns once a store carried change `upto` (storing the record now if none did).
    /// Callers hold neither `intent` nor `st`.
    fn persist(&self, upto: u64) -> Result<(), ReplicaError> {
        if self.intent.lock().stored >= upto {
            return Ok(());
        }
        let mut log = self.log.lock();
        let (rec, carries) = {
            let mut il = self.intent.lock();
            if il.stored >= upto {
                // Another caller's store, taken while this one waited, carried it.
                return Ok(());
            }
            il.rec.generation += 1;
            il.clear_pending = false;
            (il.rec.clone(), il.change)
        };
        log.store(&rec)?;
        let mut il = self.intent.lock();
        il.stored = il.stored.max(carries);
        il.unstored.retain(|_, c| *c > carries);
        Ok(())
    }

    /// Takes a copy out of the set (operator action). Refused for the last healthy copy.
    pub fn fault(&self, copy: usize) -> Result<(), ReplicaError> {
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        let c = st.copies.get(copy).ok_or(ReplicaError::NoSuchCopy(copy))?;
        next(copy, c.state.kind(), Input::Fail)?;
        let healthy = st
            .copies
            .iter()
            .filter(|c| c.state == CopyState::Healthy)
            .count();
        if c.state == CopyState::Healthy && healthy == 1 {
            return Err(ReplicaError::Unavailable);
        }
        fault_copy(&mut il, &mut st, copy, Cause::Operator);
        let upto = il.flag_change;
        drop(st);
        drop(il);
        self.persist(upto)
    }

    /// A faulted copy came back with its old contents (its device returned, its pool was
    /// reopened: `target` is the handle to use from now). It resyncs the regions it missed.
    pub fn reattach(&self, copy: usize, target: Arc<dyn CopyTarget>) -> Result<(), ReplicaError> {
        self.bring_back(copy, target, Input::Return)
    }

    /// A new, empty copy (a volume on another failure domain) takes the slot of a faulted or
    /// resyncing copy: it is rebuilt with every region, read from the healthy copies. Every
    /// region rather than the engine's allocated blocks, because a target (a remote export)
    /// need not report allocation; regions that read as zeros are trimmed on the new copy, so
    /// a thin volume stays thin.
    pub fn replace(&self, copy: usize, target: Arc<dyn CopyTarget>) -> Result<(), ReplicaError> {
        self.bring_back(copy, target, Input::Replace)
    }

    fn bring_back(
        &self,
        copy: usize,
        target: Arc<dyn CopyTarget>,
        input: Input,
    ) -> Result<(), ReplicaError> {
        if copy >= self.copy_count() {
            return Err(ReplicaError::NoSuchCopy(copy));
        }
        {
            let st = self.st.lock();
            next(copy, st.copies[copy].state.kind(), input)?;
        }
        let size = target
            .size()
            .map_err(|source| ReplicaError::CopyUnreachable { copy, source })?;
        if size != self.size {
            return Err(ReplicaError::SizeMismatch {
                copy,
                size,
                expected: self.size,
            });
        }
        let mut il = self.intent.lock();
        let mut st = self.st.lock();
        // Checked again: the state may have moved while the size was asked.
        let from = st.copies[copy].state.kind();
        next(copy, from, input)?;
        let (pending, full, cause) = match input {
            Input::Replace => {
                il.rec.copies[copy] = CopyFlag::New;
                (
                    (0..region_count(self.size)).collect(),
                    true,
                    Cause::Replaced,
                )
            }
            _ => {
                let full = il.rec.copies[copy] == CopyFlag::New;
                (
                    std::mem::take(&mut st.copies[copy].dirty),
                    full,
                    Cause::Returned,
                )
            }
        };
        let total = bytes_of(&pending, self.size);
        let c = &mut st.copies[copy];
        c.dirty = pending;
        c.state = CopyState::Resyncing {
            done: 0,
            total,
            full,
        };
        c.read_errors = 0;
        c.new_incarnation();
        self.targets.write()[copy] = target;
        push_event(&mut st, copy, from, StateKind::Resyncing, cause);
        let upto = il.flag_changed();
        drop(st);
        drop(il);
        self.persist(upto)
    }

    /// The target a copy is held by now (to read a copy directly: scrub, tests).
    pub fn copy_target(&self, copy: usize) -> Arc<dyn CopyTarget> {
        self.target(copy)
    }

    fn target(&self, copy: usize) -> Arc<dyn CopyTarget> {
        self.targets.read()[copy].clone()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), ReplicaError> {
        if offset.checked_add(len).is_none_or(|e| e > self.size) {
            return Err(ReplicaError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Locks the stripes of `regions` in ascending order (each once).
    fn lock_regions(&self, regions: Range<u64>, exclusive: bool) -> Guards<'_> {
        let mut idx: SmallVec<[usize; 8]> = if regions.end - regions.start >= STRIPES as u64 {
            (0..STRIPES).collect()
        } else {
            regions.map(|r| (r % STRIPES as u64) as usize).collect()
        };
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| {
                if exclusive {
                    StripeGuard::Exclusive(self.stripes[i].write())
                } else {
                    StripeGuard::Shared(self.stripes[i].read())
                }
            })
            .collect()
    }

    /// The healthy copy with the least I/O in flight (ties: lowest index), skipping `tried`.
    fn pick_healthy(&self, st: &SetState, tried: &[bool]) -> Option<usize> {
        (0..st.copies.len())
            .filter(|&i| st.copies[i].state == CopyState::Healthy && !tried[i])
            .min_by_key(|&i| (self.load[i].load(Ordering::Relaxed), i))
    }
}

fn bytes_of(regions: &RegionSet, size: u64) -> u64 {
    regions.iter().map(|&r| region_range(r, size).1).sum()
}

fn push_event(st: &mut SetState, copy: usize, from: StateKind, to: StateKind, cause: Cause) {
    if st.events.len() == MAX_EVENTS {
        st.events.pop_front();
    }
    let seq = st.next_seq;
    st.next_seq += 1;
    st.events.push_back(Event {
        seq,
        copy,
        from,
        to,
        cause,
    });
}

/// Faults `copy` (no-op if it is faulted already): its dirty set becomes every region it may
/// lack, its flag stale (a new copy stays new). The caller then persists `il.flag_change`.
fn fault_copy(il: &mut IntentSide, st: &mut SetState, copy: usize, cause: Cause) {
    let from = st.copies[copy].state.kind();
    if next(copy, from, Input::Fail).is_err() {
        return;
    }
    let bits = il.rec.dirty.clone();
    let c = &mut st.copies[copy];
    c.dirty.extend(bits);
    c.state = CopyState::Faulted;
    c.new_incarnation();
    if il.rec.copies[copy] == CopyFlag::InSync {
        il.rec.copies[copy] = CopyFlag::Stale;
        il.flag_changed();
    }
    push_event(st, copy, from, StateKind::Faulted, cause);
}
