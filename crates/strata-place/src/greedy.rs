//! The greedy placer: jobs in the order given, each onto the candidate that leaves the least
//! over in its slot right now (best fit), ties to the lower node index then slot. It is the
//! optimizer's fallback and warm start, and the admission path.
//!
//! # Invariants
//! - Every part it returns was taken from the free state (so capacities hold by construction).
//! - Deterministic: no hashing, no clock; the same state and order give the same parts.

use crate::free::{whole_part, FreeState};
use crate::model::{Job, Part};
use crate::slots::{candidates_for, Candidate, SlotKind};

/// Places `job` (index `j`) on `free` if it fits now; returns the candidate used and its part.
pub(crate) fn place_one<'a>(
    free: &mut FreeState<'a>,
    j: usize,
    job: &Job,
) -> Option<(Candidate<'a>, Part)> {
    let cands = candidates_for(free, j, job);
    let best = cands.into_iter().min_by(|a, b| {
        a.cost
            .total_cmp(&b.cost)
            .then(a.node.cmp(&b.node))
            .then(a.kind.cmp(&b.kind))
            .then(a.model.cmp(b.model))
    })?;
    let part = realize_one(free, job, &best)?;
    Some((best, part))
}

/// Builds and takes the part for `cand`; `None` (nothing taken) if it does not fit now.
pub(crate) fn realize_one(
    free: &mut FreeState<'_>,
    job: &Job,
    cand: &Candidate<'_>,
) -> Option<Part> {
    let gpus = match cand.kind {
        SlotKind::NoGpu => Vec::new(),
        SlotKind::Model => free.choose_gpus(cand.node, job.gpus, cand.model, None)?,
        SlotKind::Island(k) => free.choose_gpus(cand.node, job.gpus, cand.model, Some(k))?,
    };
    let part = whole_part(job, &free.cluster.nodes[cand.node].name, gpus);
    free.take(&part).then_some(part)
}

/// Greedy over `jobs` in order. Returns, per job, the candidate and part it got.
pub(crate) fn greedy<'a>(
    free: &mut FreeState<'a>,
    jobs: &[&Job],
) -> Vec<Option<(Candidate<'a>, Part)>> {
    jobs.iter()
        .enumerate()
        .map(|(j, job)| place_one(free, j, job))
        .collect()
}
