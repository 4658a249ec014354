//! Pool settings and each pool's provisioned figure: thin volumes may overcommit a pool, up to
//! its overcommit ratio (a setting, [`DEFAULT_OVERCOMMIT`] until an admin changes it).
//!
//! # Invariants
//! - A pool's provisioned figure is the sum over its volume records (`creating` and `deleting`
//!   ones included) of size × copies, counted at start and changed only by
//!   [`Controller::provision`] together with the store transaction that records the change,
//!   under one lock: two concurrent creates cannot both pass the limit. Each copy takes room
//!   on its own device, so a 2-copy volume counts twice against the devices' capacity.
//! - A pool's capacity is the sum of the data capacities of its devices that are open now
//!   (a device away gives no room; its copies count all the same).
//! - A change that grows the figure past `capacity × overcommit` is refused with
//!   `pool_overcommitted`; a change that does not grow it never is (a delete or a shrink works
//!   also over a lowered ratio).
//! - Each upward pass of 80, 90 and 100 % of the limit is logged once and counted
//!   (`strata_pool_allocation_threshold_crossings_total`); falling back below re-arms it.

use strata_state::Txn;

use super::auth::Principal;
use super::events::EventKind;
use super::store::enc;
use super::Controller;
use crate::error::{ControlError, Resource};
use crate::model::*;

/// The fractions of the allocation limit whose passing is logged and counted, in percent.
pub const THRESHOLDS: [u32; 3] = [80, 90, 100];

/// Every pool's provisioned figure, by pool name.
pub(super) type Allocations = std::collections::BTreeMap<String, Allocation>;

/// A pool's provisioned figure and what has been reported about it.
#[derive(Debug, Default)]
pub(super) struct Allocation {
    /// Sum over the pool's volume records of size × copies.
    pub provisioned: u128,
    /// How many of [`THRESHOLDS`] the figure is at or above.
    pub level: usize,
    /// Upward passes of each threshold since start.
    pub crossings: [u64; THRESHOLDS.len()],
}

/// The body of `PUT /v1/pools/{id}/settings`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPoolSettings {
    /// The new overcommit ratio: a positive number, or `0` / `"unlimited"` / `null` for none.
    pub overcommit: OvercommitArg,
}

/// An overcommit ratio as given: a number or a word.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum OvercommitArg {
    /// A ratio (`0`: unlimited).
    Ratio(f64),
    /// `"unlimited"` or a number in a string.
    Text(String),
    /// `null`: unlimited.
    None,
}

impl OvercommitArg {
    /// The ratio (`None`: unlimited).
    pub fn ratio(&self) -> Result<Option<f64>, ControlError> {
        let bad = || {
            ControlError::invalid(
                "overcommit",
                "a positive ratio such as 4 or 1.5, or 0 or \"unlimited\" for no limit",
            )
        };
        let r = match self {
            OvercommitArg::Ratio(r) => *r,
            OvercommitArg::None => return Ok(None),
            OvercommitArg::Text(t) if t.eq_ignore_ascii_case("unlimited") => return Ok(None),
            OvercommitArg::Text(t) => t.trim().parse::<f64>().map_err(|_| bad())?,
        };
        if !r.is_finite() || !(0.0..=1e6).contains(&r) {
            return Err(bad());
        }
        Ok((r != 0.0).then_some(r))
    }
}

/// A pool's settings and the figures they bound.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolSettingsView {
    /// The pool.
    pub pool: String,
    /// The overcommit ratio (`null`: unlimited).
    pub overcommit: Option<f64>,
    /// Data capacity of the pool.
    pub capacity_bytes: u64,
    /// Sum of the pool's volume sizes, each counted once per copy.
    pub provisioned_bytes: u128,
    /// `capacity × overcommit` (`null`: unlimited).
    pub limit_bytes: Option<u128>,
    /// Provisioned over the limit (over the capacity when unlimited).
    pub allocated_ratio: f64,
}

pub(super) fn settings_key(pool: &str) -> String {
    format!("/pool-settings/{pool}")
}

fn limit(capacity: u64, s: &PoolSettings) -> Option<u128> {
    // Ratios are bounded (at most 1e6), so the product fits a u128 with room to spare.
    s.overcommit.map(|r| (capacity as f64 * r) as u128)
}

fn ratio(provisioned: u128, capacity: u64, s: &PoolSettings) -> f64 {
    let of = limit(capacity, s).unwrap_or(capacity as u128);
    if of == 0 {
        return if provisioned == 0 { 0.0 } else { f64::INFINITY };
    }
    provisioned as f64 / of as f64
}

impl Controller {
    /// A pool's settings as stored (the defaults when none are).
    pub(super) fn pool_settings(&self, pool: &str) -> Result<PoolSettings, ControlError> {
        Ok(self
            .get::<PoolSettings>(&settings_key(pool))?
            .map(|(s, _)| s)
            .unwrap_or_default())
    }

    fn check_pool(&self, pool: &str) -> Result<(), ControlError> {
        if self.get::<PoolRecord>(&self.pool_key(pool))?.is_none() {
            return Err(ControlError::not_found(Resource::Pool, pool));
        }
        Ok(())
    }

    /// A pool's capacity: the data capacities of its devices open now (0 for a pool not
    /// recorded).
    pub(super) fn pool_capacity(&self, pool: &str) -> u64 {
        let Ok(Some((rec, _))) = self.get::<PoolRecord>(&self.pool_key(pool)) else {
            return 0;
        };
        rec.devices
            .iter()
            .filter_map(|d| self.storage.engine(&d.id))
            .map(|e| e.info().capacity)
            .fold(0u64, u64::saturating_add)
    }

    /// A pool's settings and figures (admin).
    pub fn get_pool_settings(
        &self,
        p: &Principal,
        pool: &str,
    ) -> Result<PoolSettingsView, ControlError> {
        Self::require(p, Role::Admin)?;
        self.check_pool(pool)?;
        let s = self.pool_settings(pool)?;
        let provisioned = self
            .allocation
            .lock()
            .get(pool)
            .map_or(0, |a| a.provisioned);
        let capacity = self.pool_capacity(pool);
        Ok(PoolSettingsView {
            pool: pool.to_string(),
            overcommit: s.overcommit,
            capacity_bytes: capacity,
            provisioned_bytes: provisioned,
            limit_bytes: limit(capacity, &s),
            allocated_ratio: ratio(provisioned, capacity, &s),
        })
    }

    /// Changes a pool's settings (admin). Lowering the ratio below what is provisioned is
    /// accepted: it refuses growth, it takes nothing away.
    pub fn set_pool_settings(
        &self,
        p: &Principal,
        pool: &str,
        overcommit: Option<f64>,
    ) -> Result<PoolSettingsView, ControlError> {
        Self::require(p, Role::Admin)?;
        self.check_pool(pool)?;
        let s = PoolSettings { overcommit };
        {
            // Under the allocation lock, so no create checks against a ratio half-changed.
            let mut all = self.allocation.lock();
            self.store
                .txn(Txn::new().put(settings_key(pool), enc(&s)))?;
            let capacity = self.pool_capacity(pool);
            observe_allocation(pool, all.entry(pool.to_string()).or_default(), capacity, &s);
        }
        self.get_pool_settings(p, pool)
    }

    /// Runs `record` (the store transaction that changes what a volume of `pool` provisions,
    /// its size × copies, from `old` to `new` bytes: `0` for absent); when `check`, refuses
    /// growth past the pool's overcommit limit (an
    /// undo is not checked); moves the figure when `record` says it recorded the change
    /// (`true`: a replayed request or a record already gone is not a change).
    ///
    /// Growth is reserved in the figure before `record` runs and given back if it records
    /// nothing, so concurrent changes are checked against each other without holding the lock
    /// across their durable commits; a shrink counts once it is recorded. The figure may so
    /// run ahead of the records for the length of a commit, never behind.
    pub(super) fn provision<T>(
        &self,
        pool: &str,
        old: u64,
        new: u64,
        check: bool,
        record: impl FnOnce() -> Result<(T, bool), ControlError>,
    ) -> Result<T, ControlError> {
        let growth = u128::from(new.saturating_sub(old));
        let shrink = u128::from(old.saturating_sub(new));
        {
            let mut all = self.allocation.lock();
            let a = all.entry(pool.to_string()).or_default();
            if check && growth > 0 {
                let s = self.pool_settings(pool)?;
                let capacity = self.pool_capacity(pool);
                if let Some(l) = limit(capacity, &s) {
                    let after = a.provisioned.saturating_sub(old as u128) + new as u128;
                    if after > l {
                        return Err(ControlError::PoolOvercommitted(format!(
                            "pool {pool} allows {l} bytes of volume copies ({capacity} bytes \
                             × overcommit {}); {} provisioned, {} more requested",
                            s.overcommit.unwrap_or_default(),
                            a.provisioned,
                            new - old
                        )));
                    }
                }
            }
            a.provisioned += growth;
        }
        let result = record();
        let s = self.pool_settings(pool);
        let capacity = self.pool_capacity(pool);
        let mut all = self.allocation.lock();
        let a = all.entry(pool.to_string()).or_default();
        match &result {
            Ok((_, true)) => a.provisioned = a.provisioned.saturating_sub(shrink),
            _ => a.provisioned = a.provisioned.saturating_sub(growth),
        }
        // Settings that cannot be read now only delay the threshold figures to the next
        // change: the change itself is decided and must be answered as it went.
        let crossed = match &s {
            Ok(s) => observe_allocation(pool, a, capacity, s),
            Err(_) => Vec::new(),
        };
        drop(all);
        self.threshold_events(pool, &crossed);
        result.map(|(out, _)| out)
    }

    /// Sets every pool's provisioned figure (start: counted from the records). Every recorded
    /// pool gets a figure, 0 when it has no volume.
    pub(super) fn set_provisioned(
        &self,
        mut provisioned: std::collections::BTreeMap<String, u128>,
    ) -> Result<(), ControlError> {
        for p in self.local_pools()? {
            provisioned.entry(p.name).or_default();
        }
        let mut all = self.allocation.lock();
        // At start the level is found again, not crossed: no event for what the journal
        // already holds from before the restart.
        for (pool, n) in provisioned {
            let s = self.pool_settings(&pool)?;
            let capacity = self.pool_capacity(&pool);
            let a = all.entry(pool.clone()).or_default();
            a.provisioned = n;
            observe_allocation(&pool, a, capacity, &s);
        }
        Ok(())
    }

    /// One `pool.allocation_threshold` event per threshold `pool` passed upwards, as
    /// (threshold percent, ratio).
    fn threshold_events(&self, pool: &str, crossed: &[(u32, f64)]) {
        for (t, r) in crossed {
            self.event(
                EventKind::AllocationThreshold,
                pool,
                None,
                format!(
                    "pool {pool} passed {t}% of its allocation limit ({:.0}% provisioned)",
                    r * 100.0
                ),
            );
        }
    }

    /// Every pool's allocation figures for `/metrics`, by pool name: ratio, overcommit
    /// (`None`: unlimited) and the crossings of each threshold.
    pub(super) fn allocation_figures(&self) -> Result<Vec<AllocationFigures>, ControlError> {
        let pools: Vec<String> = self.allocation.lock().keys().cloned().collect();
        let mut out = Vec::with_capacity(pools.len());
        for pool in pools {
            let s = self.pool_settings(&pool)?;
            let capacity = self.pool_capacity(&pool);
            let all = self.allocation.lock();
            let Some(a) = all.get(&pool) else { continue };
            out.push(AllocationFigures {
                ratio: ratio(a.provisioned, capacity, &s),
                overcommit: s.overcommit,
                crossings: a.crossings,
                pool,
            });
        }
        Ok(out)
    }
}

/// One pool's allocation figures, as `/metrics` shows them.
pub(super) struct AllocationFigures {
    /// The pool.
    pub pool: String,
    /// Provisioned over the limit (over the capacity when unlimited).
    pub ratio: f64,
    /// The overcommit ratio (`None`: unlimited).
    pub overcommit: Option<f64>,
    /// Upward passes of each of [`THRESHOLDS`] since start.
    pub crossings: [u64; THRESHOLDS.len()],
}

/// Logs and counts each threshold a pool's figure passed upwards since it was last looked at;
/// returns them (percent) with the ratio.
fn observe_allocation(
    pool: &str,
    a: &mut Allocation,
    capacity: u64,
    s: &PoolSettings,
) -> Vec<(u32, f64)> {
    let mut crossed = Vec::new();
    {
        let r = ratio(a.provisioned, capacity, s);
        let level = THRESHOLDS
            .iter()
            .filter(|t| r >= f64::from(**t) / 100.0)
            .count();
        for (i, t) in THRESHOLDS.iter().enumerate().take(level).skip(a.level) {
            a.crossings[i] += 1;
            crossed.push((*t, r));
            tracing::warn!(
                pool,
                threshold = t,
                ratio = r,
                provisioned = a.provisioned as u64,
                capacity,
                "pool passed {t}% of its allocation limit"
            );
        }
        a.level = level;
    }
    crossed
}
