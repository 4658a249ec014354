//! Pool settings and the pool's provisioned figure: thin volumes may overcommit the pool, up to
//! its overcommit ratio (a setting, [`DEFAULT_OVERCOMMIT`] until an admin changes it).
//!
//! # Invariants
//! - The provisioned figure is the sum of the sizes of the pool's volume records (`creating`
//!   and `deleting` ones included), counted at start and changed only by [`Controller::provision`]
//!   together with the store transaction that records the change, under one lock: two
//!   concurrent creates cannot both pass the limit.
//! - A change that grows the figure past `capacity × overcommit` is refused with
//!   `pool_overcommitted`; a change that does not grow it never is (a delete or a shrink works
//!   also over a lowered ratio).
//! - Each upward pass of 80, 90 and 100 % of the limit is logged once and counted
//!   (`strata_pool_allocation_threshold_crossings_total`); falling back below re-arms it.

use strata_state::Txn;

use super::auth::Principal;
use super::store::enc;
use super::{Controller, DEFAULT_POOL};
use crate::error::{ControlError, Resource};
use crate::model::*;

/// The fractions of the allocation limit whose passing is logged and counted, in percent.
pub const THRESHOLDS: [u32; 3] = [80, 90, 100];

/// The pool's provisioned figure and what has been reported about it.
#[derive(Debug, Default)]
pub(super) struct Allocation {
    /// Sum of the sizes of the pool's volume records.
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
    /// Sum of the pool's volume sizes.
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

    fn check_pool(pool: &str) -> Result<(), ControlError> {
        if pool != DEFAULT_POOL {
            return Err(ControlError::not_found(Resource::Pool, pool));
        }
        Ok(())
    }

    /// A pool's settings and figures (admin).
    pub fn get_pool_settings(
        &self,
        p: &Principal,
        pool: &str,
    ) -> Result<PoolSettingsView, ControlError> {
        Self::require(p, Role::Admin)?;
        Self::check_pool(pool)?;
        let s = self.pool_settings(pool)?;
        let provisioned = self.allocation.lock().provisioned;
        let capacity = self.pool.info().capacity;
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
        Self::check_pool(pool)?;
        let s = PoolSettings { overcommit };
        {
            // Under the allocation lock, so no create checks against a ratio half-changed.
            let mut a = self.allocation.lock();
            self.store
                .txn(Txn::new().put(settings_key(pool), enc(&s)))?;
            self.observe_allocation(&mut a, &s);
        }
        self.get_pool_settings(p, pool)
    }

    /// Runs `record` (the store transaction that changes a volume size from `old` to `new`
    /// bytes: `0` for absent); when `check`, refuses growth past the overcommit limit (an
    /// undo is not checked); moves the figure when `record` says it recorded the change
    /// (`true`: a replayed request or a record already gone is not a change).
    ///
    /// Growth is reserved in the figure before `record` runs and given back if it records
    /// nothing, so concurrent changes are checked against each other without holding the lock
    /// across their durable commits; a shrink counts once it is recorded. The figure may so
    /// run ahead of the records for the length of a commit, never behind.
    pub(super) fn provision<T>(
        &self,
        old: u64,
        new: u64,
        check: bool,
        record: impl FnOnce() -> Result<(T, bool), ControlError>,
    ) -> Result<T, ControlError> {
        let growth = u128::from(new.saturating_sub(old));
        let shrink = u128::from(old.saturating_sub(new));
        {
            let mut a = self.allocation.lock();
            if check && growth > 0 {
                let s = self.pool_settings(DEFAULT_POOL)?;
                let capacity = self.pool.info().capacity;
                if let Some(l) = limit(capacity, &s) {
                    let after = a.provisioned.saturating_sub(old as u128) + new as u128;
                    if after > l {
                        return Err(ControlError::PoolOvercommitted(format!(
                            "pool {DEFAULT_POOL} allows {l} bytes of volumes ({capacity} bytes \
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
        let s = self.pool_settings(DEFAULT_POOL);
        let mut a = self.allocation.lock();
        match &result {
            Ok((_, true)) => a.provisioned = a.provisioned.saturating_sub(shrink),
            _ => a.provisioned = a.provisioned.saturating_sub(growth),
        }
        // Settings that cannot be read now only delay the threshold figures to the next
        // change: the change itself is decided and must be answered as it went.
        if let Ok(s) = &s {
            self.observe_allocation(&mut a, s);
        }
        drop(a);
        result.map(|(out, _)| out)
    }

    /// Sets the provisioned figure (start: counted from the records).
    pub(super) fn set_provisioned(&self, provisioned: u128) -> Result<(), ControlError> {
        let s = self.pool_settings(DEFAULT_POOL)?;
        let mut a = self.allocation.lock();
        a.provisioned = provisioned;
        self.observe_allocation(&mut a, &s);
        Ok(())
    }

    /// Logs and counts each threshold the figure passed upwards since it was last looked at.
    fn observe_allocation(&self, a: &mut Allocation, s: &PoolSettings) {
        let capacity = self.pool.info().capacity;
        let r = ratio(a.provisioned, capacity, s);
        let level = THRESHOLDS
            .iter()
            .filter(|t| r >= f64::from(**t) / 100.0)
            .count();
        for (i, t) in THRESHOLDS.iter().enumerate().take(level).skip(a.level) {
            a.crossings[i] += 1;
            tracing::warn!(
                pool = DEFAULT_POOL,
                threshold = t,
                ratio = r,
                provisioned = a.provisioned as u64,
                capacity,
                "pool passed {t}% of its allocation limit"
            );
        }
        a.level = level;
    }

    /// The pool's allocation figures for `/metrics`: ratio, overcommit (`None`: unlimited) and
    /// the crossings of each threshold.
    pub(super) fn allocation_figures(
        &self,
    ) -> Result<(f64, Option<f64>, [u64; THRESHOLDS.len()]), ControlError> {
        let s = self.pool_settings(DEFAULT_POOL)?;
        let a = self.allocation.lock();
        let r = ratio(a.provisioned, self.pool.info().capacity, &s);
        Ok((r, s.overcommit, a.crossings))
    }
}
