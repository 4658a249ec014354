//! The mixed-integer program for single-node jobs, solved with good_lp's pure-Rust microlp
//! backend (see `docs/placement.md` for the formulation).
//!
//! Variables: `x[c]` ∈ {0,1} per candidate c = (job, node, slot); `u[n]` ∈ {0,1} per node on
//! which nothing runs yet ("opened by this plan").
//! Constraints: each job at most once; per node and non-GPU resource, demands ≤ free; per node
//! and GPU model, GPUs of the model's candidates (whole-model and island slots) ≤ free; per
//! island, same-island GPUs ≤ its free GPUs; on an empty node, any x ≤ u.
//! Objective: max Σ (weight − per_cost·cost)·x − per_open·Σ u (the [`crate::slots`] score).
//!
//! # Invariants
//! - Feasible points of the program are exactly the choices that can be realized as concrete
//!   GPUs: island jobs take their island's GPUs, the others take leftover GPUs of their model
//!   anywhere on the node (per-model and per-island sums both hold, so there are enough).
//! - A constraint whose left side can never exceed its right side is left out (it cannot bind,
//!   and dropping it keeps the program small).
//! - The greedy answer is handed in as the starting incumbent, so whatever the solver returns
//!   within its time limit scores at least as well (the caller checks anyway).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::solver::backend;
use good_lp::{
    variable, Expression, ProblemVariables, ResolutionError, Solution, SolutionStatus, SolverModel,
    Variable, WithTimeLimit,
};

use crate::free::{demand, FreeState};
use crate::model::Job;
use crate::slots::{weight, Candidate, Scale, SlotKind};

/// What the solver said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MilpOutcome {
    /// Chosen candidate indexes, in index order.
    pub chosen: Vec<usize>,
    /// Proven optimal (false: a time limit stopped the search with an incumbent).
    pub optimal: bool,
}

/// How large the program is.
pub(crate) fn variable_count(cands: &[Candidate<'_>], empty: &[bool]) -> usize {
    let mut nodes: Vec<bool> = vec![false; empty.len()];
    for c in cands {
        nodes[c.node] = true;
    }
    cands.len() + (0..empty.len()).filter(|&n| nodes[n] && empty[n]).count()
}

struct Program {
    vars: ProblemVariables,
    x: Vec<Variable>,
    objective: Expression,
    constraints: Vec<good_lp::Constraint>,
}

fn build(
    free: &FreeState<'_>,
    jobs: &[&Job],
    cands: &[Candidate<'_>],
    empty: &[bool],
    scale: Scale,
    start: Option<&[usize]>,
    relaxed: bool,
) -> Program {
    let mut vars = ProblemVariables::new();
    let mut started = vec![false; cands.len()];
    for &c in start.unwrap_or(&[]) {
        started[c] = true;
    }
    let def = |on: bool| {
        let v = if relaxed {
            variable().clamp(0, 1)
        } else {
            variable().binary()
        };
        if start.is_some() {
            v.initial(if on { 1.0 } else { 0.0 })
        } else {
            v
        }
    };
    let x: Vec<Variable> = (0..cands.len())
        .map(|c| vars.add(def(started[c])))
        .collect();
    let mut objective = Expression::with_capacity(cands.len() + empty.len());
    for (c, cand) in cands.iter().enumerate() {
        objective.add_mul(weight(jobs[cand.job]) - scale.per_cost * cand.cost, x[c]);
    }
    let mut constraints = Vec::new();
    let mut by_job: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (c, cand) in cands.iter().enumerate() {
        by_job.entry(cand.job).or_default().push(c);
        by_node.entry(cand.node).or_default().push(c);
    }
    for list in by_job.values() {
        if list.len() > 1 {
            let mut e = Expression::with_capacity(list.len());
            for &c in list {
                e.add_mul(1.0, x[c]);
            }
            constraints.push(e.leq(1.0));
        }
    }
    for (&n, list) in &by_node {
        // Non-GPU resources.
        for k in 0..4 {
            let total: u64 = list.iter().map(|&c| demand(jobs[cands[c].job])[k]).sum();
            let have = free.nodes[n].res[k];
            if total > have {
                let mut e = Expression::with_capacity(list.len());
                for &c in list {
                    let d = demand(jobs[cands[c].job])[k];
                    if d > 0 {
                        e.add_mul(d as f64, x[c]);
                    }
                }
                constraints.push(e.leq(have as f64));
            }
        }
        // GPUs per model, and per island.
        let free_models = free.free_by_model(n);
        let mut per_model: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut per_island: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &c in list {
            match cands[c].kind {
                SlotKind::NoGpu => {}
                SlotKind::Model => per_model.entry(cands[c].model).or_default().push(c),
                SlotKind::Island(k) => {
                    per_model.entry(cands[c].model).or_default().push(c);
                    per_island.entry(k).or_default().push(c);
                }
            }
        }
        for (model, list) in &per_model {
            let have = free_models.get(model).copied().unwrap_or(0);
            push_gpu_sum(&mut constraints, jobs, cands, &x, list, have);
        }
        for list in per_island.values() {
            let have = cands[list[0]].slot_free;
            push_gpu_sum(&mut constraints, jobs, cands, &x, list, have);
        }
    }
    let mut opened = vec![false; empty.len()];
    for c in start.unwrap_or(&[]) {
        opened[cands[*c].node] = true;
    }
    for (&n, list) in &by_node {
        if !empty[n] {
            continue;
        }
        let u = vars.add(if relaxed {
            variable().clamp(0, 1)
        } else if start.is_some() {
            variable()
                .binary()
                .initial(if opened[n] { 1.0 } else { 0.0 })
        } else {
            variable().binary()
        });
        objective.add_mul(-scale.per_open, u);
        // Σ x ≤ |list|·u: weaker than one x ≤ u per candidate, but one row per node.
        let mut e = Expression::with_capacity(list.len() + 1);
        for &c in list {
            e.add_mul(1.0, x[c]);
        }
        e.add_mul(-(list.len() as f64), u);
        constraints.push(e.leq(0.0));
    }
    Program {
        vars,
        x,
        objective,
        constraints,
    }
}

fn push_gpu_sum(
    constraints: &mut Vec<good_lp::Constraint>,
    jobs: &[&Job],
    cands: &[Candidate<'_>],
    x: &[Variable],
    list: &[usize],
    have: u32,
) {
    let total: u64 = list
        .iter()
        .map(|&c| u64::from(jobs[cands[c].job].gpus))
        .sum();
    if total <= u64::from(have) {
        return;
    }
    let mut e = Expression::with_capacity(list.len());
    for &c in list {
        e.add_mul(f64::from(jobs[cands[c].job].gpus), x[c]);
    }
    constraints.push(e.leq(f64::from(have)));
}

/// What a plan keeps of its budget for after the solver: checking and realizing its answer.
pub(crate) const RESERVE: Duration = Duration::from_millis(50);

/// When the solver of a plan started at `started` with budget `budget` must be done: the
/// budget less [`RESERVE`] (at most a tenth of it).
pub(crate) fn deadline(started: Instant, budget: Duration) -> Instant {
    started + budget - RESERVE.min(budget / 10)
}

/// Solves the program, starting from `start` (the greedy's candidates), until `deadline`.
/// `None` when the solver gave no usable answer (error, the limit fired before any
/// incumbent, or no time was left once the program was built).
pub(crate) fn solve(
    free: &FreeState<'_>,
    jobs: &[&Job],
    cands: &[Candidate<'_>],
    empty: &[bool],
    scale: Scale,
    start: &[usize],
    deadline: Instant,
) -> Option<MilpOutcome> {
    let p = build(free, jobs, cands, empty, scale, Some(start), false);
    let mut model = p.vars.maximise(p.objective).using(backend);
    for c in p.constraints {
        model.add_constraint(c);
    }
    // The solver's limit is what the build left.
    let time_limit = deadline.saturating_duration_since(Instant::now());
    if time_limit.is_zero() {
        return None;
    }
    let model = model.with_time_limit(time_limit.as_secs_f64());
    let solution = match model.solve() {
        Ok(s) => s,
        Err(ResolutionError::Infeasible) | Err(_) => return None,
    };
    let chosen = (0..cands.len())
        .filter(|&c| solution.value(p.x[c]) > 0.5)
        .collect();
    Some(MilpOutcome {
        chosen,
        optimal: matches!(solution.status(), SolutionStatus::Optimal),
    })
}

/// The linear relaxation's optimum: an upper bound on any plan's score.
pub(crate) fn lp_bound(
    free: &FreeState<'_>,
    jobs: &[&Job],
    cands: &[Candidate<'_>],
    empty: &[bool],
    scale: Scale,
    time_limit: Duration,
) -> Option<f64> {
    let p = build(free, jobs, cands, empty, scale, None, true);
    let objective = p.objective.clone();
    let mut model = p
        .vars
        .maximise(p.objective)
        .using(backend)
        .with_time_limit(time_limit.as_secs_f64());
    for c in p.constraints {
        model.add_constraint(c);
    }
    let solution = model.solve().ok()?;
    (matches!(solution.status(), SolutionStatus::Optimal)).then(|| objective.eval_with(&solution))
}
