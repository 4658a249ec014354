//! Scrub: a pass over every allocated block of every copy of every volume of a pool, at a
//! bounded rate, that verifies each block (the engine checks its checksum, and its tag when
//! encrypted), rewrites a bad block of a replicated volume from a copy that reads it well, and
//! reports every block it cannot repair with its volume (or snapshot) and offset.
//!
//! # Invariants
//! - One scrub per pool at a time; starting one while one runs answers the running one.
//! - A repair holds the volume's write gate: no client write lands between reading the good
//!   copy and rewriting the bad one, so a repair never puts back older bytes.
//! - A snapshot's blocks are verified, not repaired (snapshots are read-only); a bad one is
//!   reported.
//! - Only healthy copies are scrubbed; a copy being resynced gets its bytes from the resync.
//! - A pool's last scrub is stored at `/scrubs/{pool}`: `running` when it starts, its full result
//!   once [`Controller::persist_scrubs`] sees it done (the daemon's schedule tick and its clean
//!   stop). A stored `running` scrub that is not running in this daemon reads `interrupted`.
//! - The schedule ([`Controller::scrub_schedule`]) starts a pool's scrub when its last one
//!   started (or, never scrubbed, the pool was created) at least the interval ago, at the
//!   schedule's rate; a scrub started by an admin counts the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_block::{IoError, Pool, Target, VolumeId, BLOCK_SIZE};

use super::auth::Principal;
use super::events::EventKind;
use super::Controller;
use crate::error::ControlError;
use crate::model::*;
use crate::storage::Storage;

/// Bytes read at once (a block at a time after a failure).
const PIECE: u64 = 1 << 20;

/// A block scrub could not repair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadBlock {
    /// The volume.
    pub volume: String,
    /// The snapshot, when the block is a snapshot's.
    pub snapshot: Option<String>,
    /// The device of the copy.
    pub device: String,
    /// Byte offset in the volume.
    pub offset: u64,
}

/// Where a pool's scrub stands (also its stored record, `/scrubs/{pool}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ScrubView {
    /// The pool.
    pub pool: String,
    /// `running`, `done`, or `interrupted` (stored as running by a daemon that stopped).
    pub state: String,
    /// Most bytes per second it reads (0: unlimited).
    pub rate: u64,
    /// Allocated bytes to read, over every copy (known at start).
    pub total_bytes: u64,
    /// Bytes read so far.
    pub done_bytes: u64,
    /// Blocks that failed verification.
    pub bad_blocks: u64,
    /// Of those, rewritten from a good copy.
    pub repaired: u64,
    /// Those it could not repair (at most [`MAX_REPORTED`] listed).
    pub unrepaired: Vec<BadBlock>,
    /// Seconds since the epoch when it started and ended.
    pub started: u64,
    /// When it ended.
    pub finished: Option<u64>,
}

/// Most unrepaired blocks a scrub lists (all are counted).
pub const MAX_REPORTED: usize = 1000;

/// The pools' scrubs: the last one of each pool.
#[derive(Default)]
pub(super) struct Scrubs {
    by_pool: Mutex<HashMap<String, Arc<Mutex<ScrubView>>>>,
    /// Per pool, the start time of the last scrub whose end is stored.
    stored: Mutex<HashMap<String, u64>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Scrubs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One copy's engine volume to scrub, with what it belongs to.
struct Work {
    volume: Volume,
    device: String,
    pool: Pool,
    target: Target,
    snapshot: Option<String>,
    runs: Vec<(u64, u64)>,
    /// The volume's other copies (where a repair reads from).
    others: Vec<(Pool, VolumeId)>,
    /// The volume's write gate.
    gate: Arc<parking_lot::RwLock<()>>,
}

impl Controller {
    /// Starts a scrub of `pool` reading at most `rate` bytes per second (0: unlimited), or
    /// answers the one running (admin).
    pub fn start_scrub(
        &self,
        p: &Principal,
        pool: &str,
        rate: u64,
    ) -> Result<ScrubView, ControlError> {
        Self::require(p, Role::Admin)?;
        self.pool_record(pool)?;
        self.run_scrub(pool, rate)
    }

    /// Starts a scrub of `pool` at `rate`, or answers the one running.
    fn run_scrub(&self, pool: &str, rate: u64) -> Result<ScrubView, ControlError> {
        let mut all = self.scrubs.by_pool.lock();
        if let Some(cur) = all.get(pool) {
            let v = cur.lock().clone();
            if v.state == "running" {
                return Ok(v);
            }
        }
        let work = self.scrub_work(pool)?;
        let view = ScrubView {
            pool: pool.to_string(),
            state: "running".into(),
            rate,
            total_bytes: work
                .iter()
                .map(|w| w.runs.iter().map(|r| r.1).sum::<u64>())
                .sum(),
            started: super::store::now(),
            ..ScrubView::default()
        };
        let cell = Arc::new(Mutex::new(view.clone()));
        all.insert(pool.to_string(), cell.clone());
        let storage = self.storage.clone();
        let stop = self.scrubs.stop.clone();
        std::thread::Builder::new()
            .name(format!("scrub-{pool}"))
            .spawn(move || {
                for w in work {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    scrub_one(&storage, &w, rate, &cell);
                }
                let mut v = cell.lock();
                v.state = "done".into();
                v.finished = Some(super::store::now());
                tracing::info!(pool = %v.pool, bad = v.bad_blocks, repaired = v.repaired,
                    unrepaired = v.bad_blocks - v.repaired, "scrub done");
            })
            .map_err(|e| ControlError::internal(format!("starting the scrub: {e}")))?;
        drop(all);
        // Stored as running: a daemon that stops before the end leaves it `interrupted`.
        if let Err(e) = self
            .store
            .txn(strata_state::Txn::new().put(self.scrub_key(pool), super::store::enc(&view)))
        {
            tracing::warn!(pool, error = %e, "scrub start not stored");
        }
        Ok(view)
    }

    /// Stores the result of every scrub that ended since it was last looked at, and records
    /// it in the audit log (actor `daemon`). Returns how many it stored.
    pub fn persist_scrubs(&self) -> usize {
        let done: Vec<ScrubView> = self
            .scrubs
            .by_pool
            .lock()
            .values()
            .map(|c| c.lock().clone())
            .filter(|v| v.state == "done")
            .collect();
        let mut n = 0;
        for v in done {
            if self.scrubs.stored.lock().get(&v.pool) == Some(&v.started) {
                continue;
            }
            if let Err(e) = self
                .store
                .txn(strata_state::Txn::new().put(self.scrub_key(&v.pool), super::store::enc(&v)))
            {
                tracing::warn!(pool = %v.pool, error = %e, "scrub result not stored");
                continue;
            }
            self.scrubs.stored.lock().insert(v.pool.clone(), v.started);
            self.audit_event(
                None,
                "pool.scrubbed",
                &v.pool,
                &format!(
                    "{} bytes read, {} bad blocks, {} repaired, {} not repaired",
                    v.done_bytes,
                    v.bad_blocks,
                    v.repaired,
                    v.bad_blocks - v.repaired
                ),
            );
            let unrepaired = v.bad_blocks - v.repaired;
            let severity = if unrepaired > 0 {
                super::events::Severity::Error
            } else if v.bad_blocks > 0 {
                super::events::Severity::Warning
            } else {
                super::events::Severity::Info
            };
            self.event_full(
                EventKind::ScrubFinished,
                severity,
                &v.pool,
                None,
                None,
                format!(
                    "scrub of pool {} done: {} read, {} bad blocks, {} repaired, {unrepaired} not repaired",
                    v.pool,
                    strata_types::format_size(v.done_bytes),
                    v.bad_blocks,
                    v.repaired
                ),
            );
            n += 1;
        }
        n
    }

    /// The schedule's tick: stores ended scrubs, then starts a scrub at `rate` of every pool
    /// whose last scrub started at least `interval` seconds ago (a pool never scrubbed:
    /// created that long ago). `interval` 0: no scrub is started. Returns the pools started.
    pub fn scrub_schedule(&self, interval: u64, rate: u64) -> Vec<String> {
        self.persist_scrubs();
        if interval == 0 {
            return vec![];
        }
        let Ok(pools) = self.local_pools() else {
            return vec![];
        };
        let now = super::store::now();
        let mut started = vec![];
        for rec in pools {
            let last = match self.last_scrub(&rec.name) {
                Ok(Some(v)) if v.state == "running" => continue,
                Ok(Some(v)) => v.started,
                Ok(None) => rec.created,
                Err(_) => continue,
            };
            if now < last.saturating_add(interval) {
                continue;
            }
            match self.run_scrub(&rec.name, rate) {
                Ok(_) => {
                    tracing::info!(pool = %rec.name, rate, "scheduled scrub started");
                    started.push(rec.name);
                }
                Err(e) => {
                    tracing::warn!(pool = %rec.name, error = %e, "scheduled scrub not started")
                }
            }
        }
        started
    }

    /// A pool's last scrub: this daemon's, else the stored one (`interrupted` when it was
    /// stored running).
    pub(super) fn last_scrub(&self, pool: &str) -> Result<Option<ScrubView>, ControlError> {
        if let Some(c) = self.scrubs.by_pool.lock().get(pool) {
            return Ok(Some(c.lock().clone()));
        }
        Ok(self
            .get::<ScrubView>(&self.scrub_key(pool))?
            .map(|(mut v, _)| {
                if v.state == "running" {
                    v.state = "interrupted".into();
                }
                v
            }))
    }

    /// The pool's last scrub (admin), this daemon's or the stored one; `None` if none ever
    /// ran.
    pub fn scrub_state(
        &self,
        p: &Principal,
        pool: &str,
    ) -> Result<Option<ScrubView>, ControlError> {
        Self::require(p, Role::Admin)?;
        self.pool_record(pool)?;
        self.last_scrub(pool)
    }

    /// Every healthy copy of every available volume of `pool`, and of its snapshots, with its
    /// allocated runs `(offset, len)`.
    fn scrub_work(&self, pool: &str) -> Result<Vec<Work>, ControlError> {
        let mut out = vec![];
        let snaps = self.list::<Snapshot>("/snapshots/", None, 0)?;
        for (_, v) in self.local_volumes()? {
            if v.pool != pool || v.state != VolumeState::Available {
                continue;
            }
            let healthy: Vec<bool> = match v.copy_devices().len() {
                1 => vec![true],
                _ => self
                    .replica_set(&v)?
                    .copies()
                    .iter()
                    .map(|c| c.state == strata_replica::CopyState::Healthy)
                    .collect(),
            };
            let reachable = self.reachable_copies_indexed(&v);
            for (copy, c) in &reachable {
                if !healthy.get(*copy).copied().unwrap_or(false) {
                    continue;
                }
                let others: Vec<(Pool, VolumeId)> = reachable
                    .iter()
                    .filter(|(i, _)| i != copy)
                    .map(|(_, o)| (o.pool.clone(), o.volume))
                    .collect();
                let mut targets = vec![(Target::Volume(c.volume), None)];
                for (_, s) in snaps.iter().filter(|(_, s)| s.volume == v.id) {
                    if let Ok(sid) = c.pool.snapshot_id(c.volume, &s.id) {
                        targets.push((Target::Snapshot(sid), Some(s.id.clone())));
                    }
                }
                for (target, snapshot) in targets {
                    let size = c.pool.size_of(target).unwrap_or(0);
                    let mut runs = vec![];
                    let mut at = 0;
                    for (len, alloc) in c.pool.block_status(target, 0, size).unwrap_or_default() {
                        if alloc {
                            runs.push((at, len));
                        }
                        at += len;
                    }
                    out.push(Work {
                        volume: v.clone(),
                        device: c.device.clone(),
                        pool: c.pool.clone(),
                        target,
                        snapshot,
                        runs,
                        others: others.clone(),
                        gate: self.write_gate(&v.id),
                    });
                }
            }
        }
        Ok(out)
    }
}

fn scrub_one(storage: &Storage, w: &Work, rate: u64, cell: &Mutex<ScrubView>) {
    let began = Instant::now();
    let mut read = 0u64;
    let mut buf = vec![0u8; PIECE as usize];
    for &(start, len) in &w.runs {
        let mut off = start;
        while off < start + len {
            let n = PIECE.min(start + len - off);
            let piece = &mut buf[..n as usize];
            if let Err(e) = w.pool.read_unmetered(w.target, off, piece) {
                // Find the bad blocks of the piece one by one.
                let _ = e;
                for b in (off..off + n).step_by(BLOCK_SIZE as usize) {
                    let blk = &mut buf[..BLOCK_SIZE as usize];
                    if let Err(e) = w.pool.read_unmetered(w.target, b, blk) {
                        scrub_bad(storage, w, b, &e, cell);
                    }
                }
            }
            off += n;
            read += n;
            cell.lock().done_bytes += n;
            if rate > 0 {
                let due = Duration::from_secs_f64(read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

/// A block of `w` at `offset` failed: rewrite it from another copy when it is a volume's
/// block and another copy reads it well, else report it.
fn scrub_bad(storage: &Storage, w: &Work, offset: u64, e: &IoError, cell: &Mutex<ScrubView>) {
    if let Some(d) = storage.get(&w.device) {
        if matches!(e, IoError::Checksum { .. } | IoError::Authentication { .. }) {
            crate::storage::DeviceCounters::bump(&d.counters.checksum_errors);
        } else {
            crate::storage::DeviceCounters::bump(&d.counters.read_errors);
        }
    }
    tracing::warn!(volume = %w.volume.id, snapshot = ?w.snapshot, device = %w.device, offset,
            error = %e, "scrub: a block failed verification");
    let repaired = w.snapshot.is_none() && scrub_repair(w, offset).is_ok();
    let mut v = cell.lock();
    v.bad_blocks += 1;
    if repaired {
        v.repaired += 1;
        if let Some(d) = storage.get(&w.device) {
            crate::storage::DeviceCounters::bump(&d.counters.repaired);
        }
    } else if v.unrepaired.len() < MAX_REPORTED {
        v.unrepaired.push(BadBlock {
            volume: w.volume.id.clone(),
            snapshot: w.snapshot.clone(),
            device: w.device.clone(),
            offset,
        });
    }
}

fn scrub_repair(w: &Work, offset: u64) -> Result<(), ()> {
    let Target::Volume(bad) = w.target else {
        return Err(());
    };
    let _g = w.gate.write();
    let mut good = vec![0u8; BLOCK_SIZE as usize];
    if !w
        .others
        .iter()
        .any(|(p, v)| p.read_unmetered(*v, offset, &mut good).is_ok())
    {
        return Err(());
    }
    write_back(&w.pool, bad, offset, &good).map_err(|_| ())?;
    w.pool.flush().map_err(|_| ())?;
    tracing::info!(volume = %w.volume.id, device = %w.device, offset, "scrub: block repaired");
    Ok(())
}

fn write_back(pool: &Pool, volume: VolumeId, offset: u64, data: &[u8]) -> Result<(), IoError> {
    pool.write(volume, offset, data)
}
