//! Planning: pending jobs onto the pool, as a [`Plan`] the daemon can check and apply.
//!
//! Order of work: validate; sort the pending jobs (priority high first, then more GPUs, then
//! tenant and name); place spanning jobs ([`crate::span`]); build every single-node candidate
//! on the state that leaves; run the greedy; when the program is small enough, run the MILP
//! from the greedy's answer within the time limit; keep the better score (the greedy on a tie
//! or when the solver gives nothing usable); explain every job left out.
//!
//! # Invariants
//! - Planning reads the cluster and never changes it (it takes `&Cluster`; a dry run is a plan
//!   that is not applied).
//! - Every plan respects every capacity: its parts are taken from a free state that starts at
//!   the cluster's capacities minus the running jobs, and `take` refuses what does not fit.
//! - Same input, same plan: inputs are sorted before use, ties are broken by index and name,
//!   and the solver is deterministic. The one exception is a MILP stopped by its time limit,
//!   whose incumbent depends on how far it got; [`Plan::method`] says when that happened.
//! - The plan carries the revision of the snapshot it was made from.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::explain::{explain, Explanation};
use crate::free::FreeState;
use crate::greedy::{greedy, realize_one};
use crate::milp;
use crate::model::{Cluster, Job, JobKey, Placement};
use crate::slots::{candidates_for, empty_nodes, score, Candidate, Scale, SlotKind};
use crate::span;

/// Knobs of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Wall-clock budget of the whole plan (zero: greedy only): the MILP gets what the
    /// candidates, the greedy and the program's build left of it, less a reserve for turning
    /// its answer into placements ([`milp::RESERVE`]), so a plan returns within it.
    pub time_limit: Duration,
    /// Programs with more variables than this are not handed to the solver (greedy only).
    pub max_variables: usize,
    /// Also solve the linear relaxation, for the gap to the LP bound (costs a second solve).
    pub lp_bound: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            time_limit: Duration::from_secs(1),
            max_variables: 20_000,
            lp_bound: false,
        }
    }
}

/// How the single-node jobs of a plan were placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The MILP, proven optimal.
    Optimal,
    /// The MILP's best incumbent when its time limit fired (better than the greedy).
    TimeLimit,
    /// The greedy: the program was too large, the solver gave nothing better, or no MILP ran.
    Greedy,
}

/// One change a plan would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The job.
    pub job: JobKey,
    /// Nodes it leaves (empty for a pending job that starts).
    pub from: Vec<String>,
    /// Nodes it goes to.
    pub to: Vec<String>,
}

/// A job the plan leaves pending, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    /// The job.
    pub job: JobKey,
    /// Why it does not fit.
    pub explanation: Explanation,
}

/// The outcome of planning: what would run where, what would move, what stays pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The store revision of the cluster snapshot the plan was made from.
    pub revision: u64,
    /// New placements, in the order jobs were considered.
    pub placements: Vec<Placement>,
    /// What would move.
    pub moves: Vec<Move>,
    /// Jobs left pending, with the reason.
    pub unplaced: Vec<Unplaced>,
    /// How the single-node jobs were placed.
    pub method: Method,
    /// The MILP backend of this build ([`crate::SOLVER`]: `microlp`, or `highs` with the
    /// `highs` feature).
    #[serde(default)]
    pub solver: String,
    /// The plan's score (see `docs/placement.md`): Σ (1 + priority) over placed single-node
    /// jobs, less tie-breaks below 0.5 in total.
    pub score: f64,
    /// The greedy's score on the same jobs.
    pub greedy_score: f64,
    /// The linear relaxation's optimum, when asked for.
    pub lp_bound: Option<f64>,
    /// Variables of the program (candidates plus node-opened flags).
    pub variables: usize,
}

/// The order jobs are considered in.
pub(crate) fn job_order(a: &Job, b: &Job) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(b.gpus.cmp(&a.gpus))
        .then(a.tenant.cmp(&b.tenant))
        .then(a.name.cmp(&b.name))
}

/// Checks the cluster and that pending keys are unique and not running.
pub(crate) fn validate_pending(cluster: &Cluster, pending: &[Job]) -> Result<(), ModelError> {
    cluster.validate()?;
    let mut keys: BTreeSet<JobKey> = cluster.running.iter().map(|p| p.job.key()).collect();
    for job in pending {
        if !keys.insert(job.key()) {
            return Err(ModelError::DuplicateJob(job.key()));
        }
    }
    Ok(())
}

type CandKey<'a> = (usize, usize, SlotKind, &'a str);

fn key_of<'a>(c: &Candidate<'a>) -> CandKey<'a> {
    (c.job, c.node, c.kind, c.model)
}

/// Plans `pending` onto `cluster`. Fails only on an invalid model (and then plans nothing).
pub fn plan(cluster: &Cluster, pending: &[Job], opts: &PlanOptions) -> Result<Plan, ModelError> {
    let started = Instant::now();
    validate_pending(cluster, pending)?;
    let mut jobs: Vec<&Job> = pending.iter().collect();
    jobs.sort_by(|a, b| job_order(a, b));

    let mut free = FreeState::new(cluster);
    let mut placements = Vec::new();
    let mut left_out: Vec<&Job> = Vec::new();
    let mut singles: Vec<&Job> = Vec::new();
    for job in &jobs {
        if span::spans(cluster, job) {
            match span::place(&mut free, job) {
                Some(parts) => placements.push(Placement {
                    job: (*job).clone(),
                    parts,
                }),
                None => left_out.push(job),
            }
        } else {
            singles.push(job);
        }
    }

    let base = free.clone();
    let cands: Vec<Candidate<'_>> = singles
        .iter()
        .enumerate()
        .flat_map(|(j, job)| candidates_for(&base, j, job))
        .collect();
    let index: BTreeMap<CandKey<'_>, usize> = cands
        .iter()
        .enumerate()
        .map(|(c, k)| (key_of(k), c))
        .collect();
    let empty = empty_nodes(&base);
    let scale = Scale::new(singles.len(), empty.iter().filter(|&&e| e).count());
    let variables = milp::variable_count(&cands, &empty);

    let mut greedy_free = base.clone();
    let greedy_parts = greedy(&mut greedy_free, &singles);
    let greedy_chosen: Vec<usize> = greedy_parts
        .iter()
        .flatten()
        .map(|(c, _)| index[&key_of(c)])
        .collect();
    let greedy_score = score(&singles, &cands, &greedy_chosen, &empty, scale);

    let mut method = Method::Greedy;
    let mut chosen_parts: Vec<Option<crate::model::Part>> = greedy_parts
        .into_iter()
        .map(|r| r.map(|(_, part)| part))
        .collect();
    let mut best_score = greedy_score;
    let mut final_free = greedy_free;
    let run_milp =
        !opts.time_limit.is_zero() && !cands.is_empty() && variables <= opts.max_variables;
    if run_milp {
        let outcome = milp::solve(
            &base,
            &singles,
            &cands,
            &empty,
            scale,
            &greedy_chosen,
            milp::deadline(started, opts.time_limit),
        );
        if let Some(outcome) = outcome {
            let s = score(&singles, &cands, &outcome.chosen, &empty, scale);
            if s > best_score + 1e-9 {
                if let Some((parts, after)) = realize(&base, &singles, &cands, &outcome.chosen) {
                    best_score = s;
                    chosen_parts = parts;
                    final_free = after;
                    method = if outcome.optimal {
                        Method::Optimal
                    } else {
                        Method::TimeLimit
                    };
                }
            }
        }
    }
    let lp_bound = if opts.lp_bound && !cands.is_empty() {
        milp::lp_bound(
            &base,
            &singles,
            &cands,
            &empty,
            scale,
            opts.time_limit.max(Duration::from_secs(60)),
        )
    } else {
        None
    };

    for (j, part) in chosen_parts.into_iter().enumerate() {
        match part {
            Some(part) => placements.push(Placement {
                job: singles[j].clone(),
                parts: vec![part],
            }),
            None => left_out.push(singles[j]),
        }
    }
    // Report placements in the order jobs were considered.
    let rank: BTreeMap<JobKey, usize> =
        jobs.iter().enumerate().map(|(r, j)| (j.key(), r)).collect();
    placements.sort_by_key(|p| rank[&p.job.key()]);
    left_out.sort_by_key(|j| rank[&j.key()]);

    let mut on_node: Vec<Vec<JobKey>> = vec![Vec::new(); cluster.nodes.len()];
    for p in cluster.running.iter().chain(placements.iter()) {
        for part in &p.parts {
            if let Some(i) = final_free.node_index(&part.node) {
                on_node[i].push(p.job.key());
            }
        }
    }
    let unplaced = left_out
        .iter()
        .map(|job| Unplaced {
            job: job.key(),
            explanation: explain(&final_free, &on_node, job),
        })
        .collect();
    let moves = placements
        .iter()
        .map(|p| Move {
            job: p.job.key(),
            from: vec![],
            to: p.parts.iter().map(|part| part.node.clone()).collect(),
        })
        .collect();
    Ok(Plan {
        revision: cluster.revision,
        placements,
        moves,
        unplaced,
        method,
        solver: crate::SOLVER.to_string(),
        score: best_score,
        greedy_score,
        lp_bound,
        variables,
    })
}

/// Concrete GPUs for a solver's choice: island candidates first (they need their island), then
/// the rest, each in job order. `None` if any does not fit (a numerical slip of the solver).
fn realize<'a>(
    base: &FreeState<'a>,
    jobs: &[&Job],
    cands: &[Candidate<'a>],
    chosen: &[usize],
) -> Option<(Vec<Option<crate::model::Part>>, FreeState<'a>)> {
    let mut free = base.clone();
    let mut parts = vec![None; jobs.len()];
    let mut order: Vec<usize> = chosen.to_vec();
    order.sort_by_key(|&c| (!matches!(cands[c].kind, SlotKind::Island(_)), cands[c].job));
    for c in order {
        let cand = &cands[c];
        if parts[cand.job].is_some() {
            return None;
        }
        parts[cand.job] = Some(realize_one(&mut free, jobs[cand.job], cand)?);
    }
    Some((parts, free))
}
