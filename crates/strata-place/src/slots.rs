//! Where a single-node job could go: candidates (job, node, GPU model or island) and the one
//! objective both the greedy and the optimizer are scored by.
//!
//! # Invariants
//! - A candidate exists only where the job fits the free state it was built from on its own:
//!   the node is not cordoned, its free CPU, memory, bandwidth and storage throughput cover the
//!   job, and the slot (a GPU model group, or an island for a same-island job) has enough free
//!   GPUs of the model asked for. Candidates are listed in (job, node, slot) order.
//! - The objective is Σ weight(job) over placed jobs minus two tie-breaks, scaled so that
//!   together they stay below 0.5: the weight of one job, the smallest there is, is 1. So no
//!   amount of packing is ever worth one placed job less.

use crate::free::{demand, FreeState, Res};
use crate::model::Job;

/// What a candidate draws GPUs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SlotKind {
    /// A CPU-only job: no GPUs.
    NoGpu,
    /// Any free GPUs of one model (the index of the model in the node's free-by-model map
    /// order is not kept: the model name is).
    Model,
    /// One island (index into the node's islands).
    Island(usize),
}

/// One way to place one job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate<'a> {
    pub job: usize,
    pub node: usize,
    pub model: &'a str,
    pub kind: SlotKind,
    /// Free GPUs in the slot before anything of this plan is placed.
    pub slot_free: u32,
    /// The static best-fit cost in [0, 1]: how much of the slot would be left over.
    pub cost: f64,
}

/// The weight a placed job adds to the objective.
pub(crate) fn weight(job: &Job) -> f64 {
    1.0 + f64::from(job.priority)
}

/// Candidates for `job` (index `j`) on the free state `free`, in node then slot order.
pub(crate) fn candidates_for<'a>(free: &FreeState<'a>, j: usize, job: &Job) -> Vec<Candidate<'a>> {
    let need: Res = demand(job);
    let mut out = Vec::new();
    for (i, node) in free.cluster.nodes.iter().enumerate() {
        if node.cordoned || !free.res_fit(i, &need) {
            continue;
        }
        let total = node.gpu_count().max(1);
        if job.gpus == 0 {
            let cap = u64::from(node.cpu_cores).max(1) as f64;
            let left = (free.nodes[i].res[0] - need[0]) as f64 / cap;
            // CPU-only work goes to GPU-less nodes first: it would strand a GPU node's GPUs.
            let gpu_node = if node.gpu_count() > 0 { 1.0 } else { 0.0 };
            out.push(Candidate {
                job: j,
                node: i,
                model: "",
                kind: SlotKind::NoGpu,
                slot_free: 0,
                cost: 0.5 * left + 0.5 * gpu_node,
            });
            continue;
        }
        let wanted = |m: &str| job.gpu_model.as_deref().is_none_or(|w| w == m);
        if job.same_island {
            for (k, model, n_free, _size) in free.free_islands(i) {
                if wanted(model) && n_free >= job.gpus {
                    out.push(Candidate {
                        job: j,
                        node: i,
                        model,
                        kind: SlotKind::Island(k),
                        slot_free: n_free,
                        cost: f64::from(n_free - job.gpus) / f64::from(total),
                    });
                }
            }
        } else {
            for (model, n_free) in free.free_by_model(i) {
                if wanted(model) && n_free >= job.gpus {
                    out.push(Candidate {
                        job: j,
                        node: i,
                        model,
                        kind: SlotKind::Model,
                        slot_free: n_free,
                        cost: f64::from(n_free - job.gpus) / f64::from(total),
                    });
                }
            }
        }
    }
    out
}

/// The scaled tie-breaks: per job's best-fit cost, and per node newly opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub per_cost: f64,
    pub per_open: f64,
}

impl Scale {
    pub fn new(jobs: usize, empty_nodes: usize) -> Self {
        Self {
            per_cost: 0.25 / jobs.max(1) as f64,
            per_open: 0.25 / empty_nodes.max(1) as f64,
        }
    }
}

/// Nodes on which nothing runs (no GPU, CPU or memory taken) in `free`.
pub(crate) fn empty_nodes(free: &FreeState<'_>) -> Vec<bool> {
    free.cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            free.nodes[i].gpu_free.iter().all(|&f| f) && free.nodes[i].res[0] == n.cpu_cores as u64
        })
        .collect()
}

/// The objective of a choice of candidates (at most one per job).
pub(crate) fn score(
    jobs: &[&Job],
    cands: &[Candidate<'_>],
    chosen: &[usize],
    empty: &[bool],
    scale: Scale,
) -> f64 {
    let mut value = 0.0;
    let mut opened = vec![false; empty.len()];
    for &c in chosen {
        let cand = &cands[c];
        value += weight(jobs[cand.job]) - scale.per_cost * cand.cost;
        if empty[cand.node] {
            opened[cand.node] = true;
        }
    }
    value - scale.per_open * opened.iter().filter(|&&o| o).count() as f64
}
