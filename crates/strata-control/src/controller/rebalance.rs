//! Rebalance rounds: `strata pool rebalance` (`POST /v1/pools/{id}/rebalance`) and the
//! daemon's timer run one round of `strata_place::rebalance` over a pool's devices and moves
//! the copies it chose (docs/placement.md, "Rebalance rounds in the daemon").
//!
//! A round reads the pool's active, usable devices (class, capacity and bytes used, from
//! their engine pools) and the copies that may move, asks the engine for at most `max_moves`
//! moves within a class, and, unless it is a dry run, starts each move: a one-copy volume with
//! the drain's temporary two-copy set over the old copy and a new one on the chosen device
//! (`drain.rs`), a copy of a replicated volume by growing its set to n + 1 members and
//! retiring the old one once the new one is in step (`grow.rs`); in both, the record switches
//! only once the new copy is in step.
//!
//! # Invariants
//! - A dry run reads only: no record, copy, set or event changes.
//! - A move never lowers a volume's redundancy: the old copy keeps serving (and is named by
//!   the record) until the new one holds everything. A replicated volume moves only while
//!   every copy is in step, one copy per round, and never onto a device that holds another of
//!   its copies (the engine's domain rule, checked again when the copy is made): copies on
//!   distinct failure domains stay on distinct ones.
//! - A move that fails to start leaves its volume where it was, served by its old copy, and
//!   is reported (`failed` with the error, an event); the other moves go on.
//! - One round at a time per controller (the API and the timer share the lock); a volume
//!   already moving (a drain, an earlier round) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use parking_lot::Mutex;
use strata_place::copies::{DeviceRef, Level};
use strata_place::rebalance::{rebalance, CopyAt, RebalanceOptions};
use strata_replica::CopyState;

use super::auth::Principal;
use super::events::EventKind;
use super::snapcopy::Join;
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::*;

/// The most moves one round may make (the API's bound on `max_moves`).
pub const REBALANCE_MAX_MOVES: u64 = 64;

/// Moves of a round whose request names none.
pub const REBALANCE_DEFAULT_MOVES: u64 = 8;

/// The engine's MILP budget per round (its greedy answer stands when the limit fires).
const ROUND_TIME_LIMIT: Duration = Duration::from_millis(500);

/// The one node the local pools' devices are on (the engine's domains are per device).
const LOCAL: &str = "local";

/// The rounds' lock.
#[derive(Default)]
pub(super) struct Rounds {
    lock: Mutex<()>,
}

/// What a round is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalanceRequest {
    /// At most this many moves (1 to [`REBALANCE_MAX_MOVES`]).
    pub max_moves: u64,
    /// Plan only: change nothing.
    pub dry_run: bool,
}

/// A move of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceMoveView {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// The copy (slot) that moves.
    pub copy: usize,
    /// From this device.
    pub from: String,
    /// To this device.
    pub to: String,
    /// Bytes it holds on its device (live data and snapshots).
    pub bytes: u64,
    /// `planned` (a dry run), `started` (the new copy is being filled; the record switches
    /// when it is in step) or `failed`.
    pub state: &'static str,
    /// Why it failed.
    pub error: Option<String>,
}

/// A volume of the pool a round did not consider moving, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceSkip {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: &'static str,
}

/// One round's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceView {
    /// The pool.
    pub pool: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The store's revision the round was planned at (a dry run writes nothing: two in a
    /// row on an idle daemon answer the same).
    pub revision: u64,
    /// How the engine chose: `optimal`, `time_limit` or `greedy`.
    pub method: String,
    /// The engine's MILP backend (`microlp`, or `highs` with the `highs` feature).
    pub solver: String,
    /// Σ |used − target| over the devices before the moves, bytes (target: capacity × the
    /// class's fill).
    pub imbalance_before: u64,
    /// The same once the moves are done.
    pub imbalance_after: u64,
    /// The largest difference between two devices' fill (used / capacity) within a class,
    /// before the moves (0 to 1).
    pub spread_before: f64,
    /// The same once the moves are done.
    pub spread_after: f64,
    /// The moves.
    pub moves: Vec<RebalanceMoveView>,
    /// Volumes left where they are.
    pub skipped: Vec<RebalanceSkip>,
}

/// A device as a round sees it.
struct Dev {
    class: String,
    capacity: u64,
    used: u64,
}

fn method_name(m: strata_place::Method) -> &'static str {
    match m {
        strata_place::Method::Optimal => "optimal",
        strata_place::Method::TimeLimit => "time_limit",
        strata_place::Method::Greedy => "greedy",
    }
}

/// Σ |used − target| over the devices, bytes (target: capacity × the class's fill), as the
/// engine counts it.
fn imbalance(devs: &BTreeMap<String, Dev>, used: &BTreeMap<String, u64>) -> u64 {
    let mut fill: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (id, d) in devs {
        let e = fill.entry(&d.class).or_insert((0.0, 0.0));
        e.0 += used[id] as f64;
        e.1 += d.capacity as f64;
    }
    devs.iter()
        .map(|(id, d)| {
            let (u, c) = fill[d.class.as_str()];
            (used[id] as f64 - d.capacity as f64 * u / c.max(1.0)).abs()
        })
        .sum::<f64>()
        .round() as u64
}

/// The largest fill difference within a class.
fn spread(devs: &BTreeMap<String, Dev>, used: &BTreeMap<String, u64>) -> f64 {
    let mut by_class: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (id, d) in devs {
        let fill = used[id] as f64 / d.capacity.max(1) as f64;
        let e = by_class.entry(&d.class).or_insert((f64::MAX, f64::MIN));
        e.0 = e.0.min(fill);
        e.1 = e.1.max(fill);
    }
    by_class
        .values()
        .map(|(lo, hi)| (hi - lo).max(0.0))
        .fold(0.0, f64::max)
}

impl Controller {
    /// One rebalance round of `pool` (admin): the moves, the spread before and after, and
    /// (unless a dry run) each move started.
    pub fn rebalance_pool(
        &self,
        p: &Principal,
        pool: &str,
        req: RebalanceRequest,
    ) -> Result<RebalanceView, ControlError> {
        Self::require(p, Role::Admin)?;
        if !(1..=REBALANCE_MAX_MOVES).contains(&req.max_moves) {
            return Err(ControlError::invalid(
                "max_moves",
                format!(
                    "{} is out of range (1 to {REBALANCE_MAX_MOVES})",
                    req.max_moves
                ),
            ));
        }
        self.pool_record(pool)?;
        let r = self.rebalance_round(pool, req);
        // The API does not audit this route (a dry run writes nothing): a real round is
        // audited here, with its caller.
        if !req.dry_run {
            let outcome = match &r {
                Ok(v) => format!(
                    "ok: {} started, {} failed",
                    v.moves.iter().filter(|m| m.state == "started").count(),
                    v.moves.iter().filter(|m| m.state == "failed").count()
                ),
                Err(e) => crate::api::code_of(e).as_str().to_string(),
            };
            self.audit(p, None, "pool.rebalance", pool, &outcome);
        }
        r
    }

    /// The daemon's timer: a round of every pool whose spread is above `threshold` (a
    /// fraction of capacity) and that has no move of an earlier round still going.
    pub fn rebalance_schedule(&self, threshold: f64, max_moves: u64) {
        // This node's pools (their records are node-scoped: `/nodes/NAME/pools/`).
        let Ok(pools) = self.local_pools() else {
            return;
        };
        for rec in pools {
            if rec.devices.len() < 2 {
                continue;
            }
            let plan = match self.rebalance_round(
                &rec.name,
                RebalanceRequest {
                    max_moves,
                    dry_run: true,
                },
            ) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(pool = %rec.name, error = %e, "rebalance not planned");
                    continue;
                }
            };
            let busy = plan.skipped.iter().any(|s| s.reason == MOVING);
            if plan.spread_before <= threshold || plan.moves.is_empty() || busy {
                continue;
            }
            if let Err(e) = self.rebalance_round(
                &rec.name,
                RebalanceRequest {
                    max_moves,
                    dry_run: false,
                },
            ) {
                tracing::warn!(pool = %rec.name, error = %e, "rebalance round failed");
            }
        }
    }

    fn rebalance_round(
        &self,
        pool: &str,
        req: RebalanceRequest,
    ) -> Result<RebalanceView, ControlError> {
        let _round = self.rounds.lock.lock();
        let revision = self.store.revision()?;
        let rec = self.pool_record(pool)?;
        let mut devs: BTreeMap<String, Dev> = BTreeMap::new();
        let mut storage = Vec::new();
        for d in &rec.devices {
            if d.state != DeviceState::Active {
                continue;
            }
            let Some(engine) = self.storage.engine(&d.id) else {
                continue;
            };
            let i = engine.info();
            let capacity = i.capacity.saturating_sub(i.reserve);
            let free = i.free.saturating_sub(i.reserve).min(capacity);
            storage.push(strata_place::StorageDevice {
                name: d.id.clone(),
                class: d.class.clone(),
                capacity_bytes: capacity,
                free_bytes: free,
                throughput_bps: 0,
            });
            devs.insert(
                d.id.clone(),
                Dev {
                    class: d.class.clone(),
                    capacity,
                    used: capacity - free,
                },
            );
        }
        let (copies, skipped, vols) = self.movable_copies(pool, &devs)?;
        let node = strata_place::Node {
            name: LOCAL.into(),
            cpu_cores: 0,
            memory_bytes: 0,
            gpus: vec![],
            islands: vec![],
            nic_bps: 0,
            storage,
            labels: Default::default(),
            cordoned: false,
        };
        let mut plan = rebalance(
            &[node],
            &copies,
            &RebalanceOptions {
                max_moves: req.max_moves as usize,
                level: Level::Device,
                time_limit: ROUND_TIME_LIMIT,
            },
        );
        // One move per volume a round: a set grows by one member at a time (a second copy
        // of the volume moves in a later round).
        let mut seen = BTreeSet::new();
        let planned = plan.moves.len();
        plan.moves.retain(|m| seen.insert(m.volume.clone()));
        let dropped = planned != plan.moves.len();
        let mut used: BTreeMap<String, u64> =
            devs.iter().map(|(k, d)| (k.clone(), d.used)).collect();
        let before = spread(&devs, &used);
        for m in &plan.moves {
            if let Some(u) = used.get_mut(&m.from.device) {
                *u = u.saturating_sub(m.bytes);
            }
            if let Some(u) = used.get_mut(&m.to.device) {
                *u += m.bytes;
            }
        }
        let after = spread(&devs, &used);
        if dropped {
            plan.imbalance_after = imbalance(&devs, &used) as f64;
        }
        let mut moves: Vec<RebalanceMoveView> = plan
            .moves
            .iter()
            .map(|m| {
                let v = &vols[&m.volume];
                RebalanceMoveView {
                    volume: v.id.clone(),
                    name: v.name.clone(),
                    tenant: v.tenant.clone(),
                    copy: v
                        .copy_devices()
                        .iter()
                        .position(|d| *d == m.from.device)
                        .unwrap_or(0),
                    from: m.from.device.clone(),
                    to: m.to.device.clone(),
                    bytes: m.bytes,
                    state: "planned",
                    error: None,
                }
            })
            .collect();
        if !req.dry_run {
            self.carry_out(pool, &mut moves);
        }
        Ok(RebalanceView {
            pool: pool.to_string(),
            dry_run: req.dry_run,
            revision,
            method: method_name(plan.method).to_string(),
            solver: plan.solver,
            imbalance_before: plan.imbalance_before.round() as u64,
            imbalance_after: plan.imbalance_after.round() as u64,
            spread_before: before,
            spread_after: after,
            moves,
            skipped,
        })
    }

    /// The copies of `pool` a round may move (of volumes available, not moving, every copy in
    /// step and on an active device, neither a clone nor a clone's origin), the volumes left
    /// out, and the records by id.
    #[allow(clippy::type_complexity)]
    fn movable_copies(
        &self,
        pool: &str,
        devs: &BTreeMap<String, Dev>,
    ) -> Result<(Vec<CopyAt>, Vec<RebalanceSkip>, BTreeMap<String, Volume>), ControlError> {
        let vols: BTreeMap<String, Volume> = self
            .list::<Volume>("/volumes/", None, 0)?
            .into_iter()
            .map(|(_, v)| v)
            .filter(|v| v.pool == pool)
            .map(|v| (v.id.clone(), v))
            .collect();
        // Per device, the snapshots clones are made of: their volumes share blocks with the
        // clones there and cannot leave without them.
        let mut origins: BTreeMap<&str, BTreeSet<strata_block::SnapshotId>> = BTreeMap::new();
        for id in devs.keys() {
            if let Some(e) = self.device_engine(id) {
                origins.insert(
                    id,
                    e.volumes().into_iter().filter_map(|i| i.origin).collect(),
                );
            }
        }
        let mut copies = Vec::new();
        let mut skipped = Vec::new();
        for v in vols.values() {
            let reason = self.why_not_movable(v, devs, &origins);
            match reason {
                Err(reason) => skipped.push(RebalanceSkip {
                    volume: v.id.clone(),
                    name: v.name.clone(),
                    reason,
                }),
                Ok(at) => copies.extend(at.into_iter().map(|(device, bytes)| CopyAt {
                    volume: v.id.clone(),
                    bytes,
                    device: DeviceRef {
                        node: LOCAL.into(),
                        device,
                    },
                })),
            }
        }
        Ok((copies, skipped, vols))
    }

    /// Each copy of `v` (its device and the bytes it holds there) when a round may move
    /// them, else why not.
    fn why_not_movable(
        &self,
        v: &Volume,
        devs: &BTreeMap<String, Dev>,
        origins: &BTreeMap<&str, BTreeSet<strata_block::SnapshotId>>,
    ) -> Result<Vec<(String, u64)>, &'static str> {
        if v.state != VolumeState::Available {
            return Err("not available");
        }
        let at = v.copy_devices();
        if self.moving_to(&v.id).is_some()
            || self.snapshot_copy_pending(&v.id)
            || (at.len() == 1 && self.sets.sets.lock().contains_key(&v.id))
        {
            return Err(MOVING);
        }
        if v.origin.is_some() {
            return Err("a clone: it shares its origin's blocks on its device");
        }
        if at
            .iter()
            .any(|c| super::cluster_copies::split_copy(c).is_some())
        {
            // A round balances one node's devices; the node is a copy's failure domain.
            return Err("a copy is on another node");
        }
        if at.len() > 1 {
            let set = self
                .replica_set(v)
                .map_err(|_| "its replica set is not open")?;
            let copies = set.copies();
            if copies.len() != at.len()
                || copies
                    .iter()
                    .any(|c| c.state != strata_replica::CopyState::Healthy)
            {
                return Err(DEGRADED);
            }
        }
        let mut out = vec![];
        for d in &at {
            if !devs.contains_key(d) {
                return Err(if at.len() > 1 {
                    "a copy's device is not active and usable"
                } else {
                    "its device is not active and usable"
                });
            }
            let engine = self.device_engine(d).ok_or("its device is not open")?;
            let eid = engine.volume_id(&v.id).map_err(|_| "no engine volume")?;
            let info = engine.volume(eid).map_err(|_| "no engine volume")?;
            let snaps = engine.snapshots(eid).map_err(|_| "no engine volume")?;
            let cloned = origins.get(d.as_str());
            if snaps
                .iter()
                .any(|s| cloned.is_some_and(|o| o.contains(&s.id)))
            {
                return Err("the origin of clones on its device");
            }
            out.push((
                d.clone(),
                info.allocated + snaps.iter().map(|s| s.allocated).sum::<u64>(),
            ));
        }
        Ok(out)
    }

    /// Starts each move (a one-copy volume: the drain's temporary set; a replicated one: its
    /// set grown by the new copy), marking it `started` or `failed`.
    fn carry_out(&self, pool: &str, moves: &mut [RebalanceMoveView]) {
        let mut started = 0;
        for m in moves.iter_mut() {
            match self.start_rebalance_move(m) {
                Ok(()) => {
                    started += 1;
                    m.state = "started";
                    self.audit_event(
                        Some(&m.tenant),
                        "volume.move",
                        &m.volume,
                        &format!("copy {} from {} to {} (rebalance)", m.copy, m.from, m.to),
                    );
                    self.volume_event(
                        EventKind::MoveStarted,
                        &m.volume,
                        format!(
                            "copy {} moving from device {} to {} to rebalance pool {pool}",
                            m.copy, m.from, m.to
                        ),
                    );
                }
                Err(e) => {
                    tracing::warn!(volume = %m.volume, from = %m.from, to = %m.to, error = %e,
                        "rebalance: copy not moved; it stays where it was");
                    m.state = "failed";
                    m.error = Some(e.to_string());
                    self.volume_event(
                        EventKind::RebalanceMoveFailed,
                        &m.volume,
                        format!(
                            "copy {} not moved from device {} to {}: {e}; it stays where it was",
                            m.copy, m.from, m.to
                        ),
                    );
                }
            }
        }
        let failed = moves.len() - started;
        if !moves.is_empty() {
            self.event(
                EventKind::PoolRebalanced,
                pool,
                None,
                format!(
                    "rebalance round of pool {pool}: {started} move(s) started, {failed} failed"
                ),
            );
        }
        if started > 0 {
            self.sets.signals.raise_work();
            self.wake_rebuilds();
        }
    }

    fn start_rebalance_move(&self, m: &RebalanceMoveView) -> Result<(), ControlError> {
        if let Some(e) = fault_hit() {
            return Err(e);
        }
        // The record as it is now: the plan was made from a listing a moment ago.
        let v = self
            .volume_record(&m.volume)
            .ok_or_else(|| ControlError::not_found(Resource::Volume, &m.volume))?;
        let at = v.copy_devices();
        if v.state != VolumeState::Available
            || at.get(m.copy) != Some(&m.from)
            || at.contains(&m.to)
        {
            return Err(ControlError::Busy(format!(
                "volume {} changed since the round was planned",
                v.name
            )));
        }
        if self.moving_to(&v.id).is_some() || self.snapshot_copy_pending(&v.id) {
            return Err(ControlError::Busy(format!(
                "volume {} is already moving",
                v.name
            )));
        }
        if at.len() == 1 {
            let (to, target) = self.new_copy_on(&v, 0, Some(&m.to))?;
            return self.give_new_copy(&v, 0, &to, target, Join::MoveSingle);
        }
        let set = self.replica_set(&v)?;
        let copies = set.copies();
        if copies.len() != at.len() || copies.iter().any(|c| c.state != CopyState::Healthy) {
            return Err(ControlError::Busy(format!(
                "volume {} has a copy out of step: it moves once every copy is",
                v.name
            )));
        }
        let (to, target) = self.new_copy_on(&v, m.copy, Some(&m.to))?;
        self.give_new_copy(&v, m.copy, &to, target, Join::Grow(set))
    }
}

/// Why a replicated volume with a copy out of step stays (a move would lean on its healthy
/// copies alone; the rebuild comes first).
const DEGRADED: &str = "degraded: a copy is not in step";

/// Why a volume that is moving stays.
const MOVING: &str = "a move of it is in progress";

/// The test-only fault point: `STRATA_TEST_REBALANCE_FAIL=N` in the daemon's environment
/// fails the N-th move this process starts, before its work (a failed move's report and its
/// volume left whole are then testable with a real daemon). Only tests set it.
pub const REBALANCE_FAULT_ENV: &str = "STRATA_TEST_REBALANCE_FAIL";

static FAULT: std::sync::LazyLock<Option<u64>> = std::sync::LazyLock::new(|| {
    let n = std::env::var(REBALANCE_FAULT_ENV).ok()?.parse().ok()?;
    tracing::warn!(
        nth = n,
        "{REBALANCE_FAULT_ENV} is set: a rebalance move fails on purpose (tests only)"
    );
    Some(n)
});

static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fault_hit() -> Option<ControlError> {
    let nth = (*FAULT)?;
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    (n == nth).then(|| {
        ControlError::internal(format!("{REBALANCE_FAULT_ENV}: move {n} fails on purpose"))
    })
}
