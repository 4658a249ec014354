//! Jobs that span nodes: a job that asks for `same_label` and needs more GPUs than any single
//! node has (of its model) is split across nodes that share that label's value (one rack, one
//! rail). Spanning jobs are placed before the single-node jobs, greedily, by both the greedy
//! and the optimizer, so the two differ only in how they place single-node jobs.
//!
//! # Invariants
//! - A job spans only when no single node could ever hold its GPUs (a job that fits one node
//!   always gets one node: gang semantics at node level is the common, fast case).
//! - All parts of a spanning job are on nodes with the same value of the label, all of one GPU
//!   model; each part gets CPU, memory, bandwidth and storage throughput in proportion to its
//!   GPUs (rounded up), and every part fits its node, or the job is not placed at all.
//! - A same-island job never spans (an island is inside one node).
//! - The group chosen uses the fewest nodes; ties: the least left over, then the label value,
//!   then the model name. Within a group, nodes with the most free GPUs first, then by index.

use std::collections::BTreeMap;

use crate::free::{demand, FreeState};
use crate::model::{Cluster, Job, Part};

/// A spanning job's choice: the label value, (node index, GPUs) per part, the GPU model.
pub(crate) type SpanChoice = (String, Vec<(usize, u32)>, String);

/// Ranking of a group choice: nodes used, GPUs left over, label value, model.
type Rank<'a> = (usize, u32, &'a str, &'a str);

/// The most GPUs of a model (any model when `None`) any one node has, free or not.
pub(crate) fn largest_node(cluster: &Cluster, model: Option<&str>) -> u32 {
    cluster
        .nodes
        .iter()
        .flat_map(|n| n.gpus.iter())
        .filter(|g| model.is_none_or(|m| m == g.model))
        .map(|g| g.count)
        .max()
        .unwrap_or(0)
}

/// Whether `job` is placed as a spanning job.
pub(crate) fn spans(cluster: &Cluster, job: &Job) -> bool {
    job.same_label.is_some()
        && !job.same_island
        && job.gpus > largest_node(cluster, job.gpu_model.as_deref())
}

fn share(total: u64, part: u32, of: u32) -> u64 {
    (u128::from(total) * u128::from(part)).div_ceil(u128::from(of)) as u64
}

/// The resources a part of `count` GPUs of `job` takes.
pub(crate) fn part_demand(job: &Job, count: u32) -> [u64; 4] {
    let d = demand(job);
    [0, 1, 2, 3].map(|k| share(d[k], count, job.gpus))
}

/// Nodes and GPU counts a spanning job would use within one label group, or `None`.
/// `ignore_use` plans as if every node were empty (for "what would draining make room for").
pub(crate) fn choose(free: &FreeState<'_>, job: &Job, ignore_use: bool) -> Option<SpanChoice> {
    let label = job.same_label.as_deref()?;
    let cluster = free.cluster;
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, n) in cluster.nodes.iter().enumerate() {
        if let (false, Some(v)) = (n.cordoned, n.labels.get(label)) {
            groups.entry(v.as_str()).or_default().push(i);
        }
    }
    let mut models: Vec<&str> = cluster
        .nodes
        .iter()
        .flat_map(|n| n.gpus.iter().map(|g| g.model.as_str()))
        .filter(|m| job.gpu_model.as_deref().is_none_or(|w| w == *m))
        .collect();
    models.sort_unstable();
    models.dedup();
    let mut best: Option<(Rank<'_>, Vec<(usize, u32)>)> = None;
    for (value, nodes) in &groups {
        for &model in &models {
            let mut avail: Vec<(u32, usize)> = nodes
                .iter()
                .map(|&i| {
                    let n = if ignore_use {
                        cluster.nodes[i]
                            .gpus
                            .iter()
                            .filter(|g| g.model == model)
                            .map(|g| g.count)
                            .sum()
                    } else {
                        free.free_by_model(i).get(model).copied().unwrap_or(0)
                    };
                    (n, i)
                })
                .filter(|(n, _)| *n > 0)
                .collect();
            avail.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut left = job.gpus;
            let mut used = Vec::new();
            let mut spare = 0;
            for (n, i) in avail {
                if left == 0 {
                    break;
                }
                let take = n.min(left);
                let need = part_demand(job, take);
                let fits = if ignore_use {
                    let cap = crate::free::capacity(&cluster.nodes[i]);
                    (0..4).all(|k| need[k] <= cap[k])
                } else {
                    free.res_fit(i, &need)
                };
                if fits {
                    used.push((i, take));
                    spare += n - take;
                    left -= take;
                }
            }
            if left > 0 {
                continue;
            }
            let key = (used.len(), spare, *value, model);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, used));
            }
        }
    }
    best.map(|((_, _, value, model), used)| (value.to_string(), used, model.to_string()))
}

/// Places a spanning job on `free`; its parts, or `None` with nothing taken.
pub(crate) fn place(free: &mut FreeState<'_>, job: &Job) -> Option<Vec<Part>> {
    let (_, used, model) = choose(free, job, false)?;
    let mut parts = Vec::with_capacity(used.len());
    for (i, count) in used {
        let gpus = free.choose_gpus(i, count, &model, None);
        let need = part_demand(job, count);
        let part = gpus.map(|gpus| Part {
            node: free.cluster.nodes[i].name.clone(),
            gpus,
            cpu_cores: need[0] as u32,
            memory_bytes: need[1],
            bandwidth_bps: need[2],
            storage_bps: need[3],
        });
        match part {
            Some(p) if free.take(&p) => parts.push(p),
            _ => {
                for p in &parts {
                    free.give(p);
                }
                return None;
            }
        }
    }
    parts.sort_by(|a, b| a.node.cmp(&b.node));
    Some(parts)
}
