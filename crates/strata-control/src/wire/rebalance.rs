//! A pool's rebalance round: `POST /v1/pools/{id}/rebalance`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::controller::{
    RebalanceMoveView, RebalanceRequest, RebalanceSkip, RebalanceView, REBALANCE_DEFAULT_MOVES,
    REBALANCE_MAX_MOVES,
};

/// `POST /v1/pools/{id}/rebalance`: one round of at most `max_moves` copy moves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebalancePool {
    /// At most this many moves (1 to 64; 8 when absent).
    #[serde(default, deserialize_with = "super::whole::opt")]
    #[schema(minimum = 1, maximum = 64)]
    pub max_moves: Option<u64>,
    /// Only plan: answer the moves and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl super::Check for RebalancePool {
    fn check(&self) -> Result<(), crate::error::ControlError> {
        if let Some(n) = self.max_moves {
            super::bounds::check_int("max_moves", n, 1, REBALANCE_MAX_MOVES)?;
        }
        Ok(())
    }
}

impl RebalancePool {
    /// The controller's form.
    pub fn request(&self) -> RebalanceRequest {
        RebalanceRequest {
            max_moves: self.max_moves.unwrap_or(REBALANCE_DEFAULT_MOVES),
            dry_run: self.dry_run,
        }
    }
}

/// One copy move of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RebalanceMove {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// The copy (slot) that moves.
    pub copy: u64,
    /// The device it leaves.
    pub from: String,
    /// The device it goes to.
    pub to: String,
    /// Bytes it holds (live data and snapshots).
    pub bytes: u64,
    /// `planned` (dry run), `started` (the new copy is being filled; the volume's `copies`
    /// name it once it is in step) or `failed` (the volume stays where it was).
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<RebalanceMoveView> for RebalanceMove {
    fn from(m: RebalanceMoveView) -> Self {
        RebalanceMove {
            volume: m.volume,
            name: m.name,
            tenant: m.tenant,
            copy: m.copy as u64,
            from: m.from,
            to: m.to,
            bytes: m.bytes,
            state: m.state.to_string(),
            error: m.error,
        }
    }
}

/// A volume a round leaves where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RebalanceSkipped {
    /// The volume's id.
    pub volume: String,
    /// Its name.
    pub name: String,
    /// Why it is not moved.
    pub reason: String,
}

impl From<RebalanceSkip> for RebalanceSkipped {
    fn from(s: RebalanceSkip) -> Self {
        RebalanceSkipped {
            volume: s.volume,
            name: s.name,
            reason: s.reason.to_string(),
        }
    }
}

/// A round's moves and what they do to the pool's balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rebalance {
    /// The pool.
    pub pool: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The store's revision the round was planned at (a dry run writes nothing).
    pub revision: u64,
    /// How the moves were chosen: `optimal`, `time_limit` or `greedy`.
    pub method: String,
    /// The daemon's MILP backend: `microlp`, or `highs` in a build with the `highs` feature.
    pub solver: String,
    /// Σ |used − target| over the devices before the moves, bytes (a device's target is its
    /// capacity times its class's fill).
    pub imbalance_before: u64,
    /// The same once the moves are done.
    pub imbalance_after: u64,
    /// The largest difference of fill (used / capacity) between two devices of a class,
    /// before the moves (0 to 1).
    pub spread_before: f64,
    /// The same once the moves are done.
    pub spread_after: f64,
    /// The moves.
    pub moves: Vec<RebalanceMove>,
    /// Volumes of the pool a round does not move, and why.
    pub skipped: Vec<RebalanceSkipped>,
}

impl From<RebalanceView> for Rebalance {
    fn from(v: RebalanceView) -> Self {
        Rebalance {
            pool: v.pool,
            dry_run: v.dry_run,
            revision: v.revision,
            method: v.method,
            solver: v.solver,
            imbalance_before: v.imbalance_before,
            imbalance_after: v.imbalance_after,
            spread_before: v.spread_before,
            spread_after: v.spread_after,
            moves: v.moves.into_iter().map(Into::into).collect(),
            skipped: v.skipped.into_iter().map(Into::into).collect(),
        }
    }
}
