//! Why a job does not fit, in the user's terms, and what draining would make room.
//!
//! Each constraint family is checked on its own against the free state the plan leaves (GPU
//! model, island size, GPU count, each of CPU, memory, bandwidth, storage throughput, the label
//! group of a spanning job, cordons). A family no usable node satisfies alone is *binding*;
//! when every family is satisfied by some node but no node satisfies all of them at once, the
//! binding family is `combination`. The drain search then looks for the smallest set of nodes
//! that, emptied of what runs there, would hold the job: one node for a single-node job (the
//! one with the fewest jobs to move, then the fewest GPUs in use, then by name), the fewest nodes
//! of one label group for a spanning job.
//!
//! # Invariants
//! - An explanation never claims room that is not there: the drain set is computed from node
//!   capacities, and is empty when even empty nodes could not hold the job (an island too small
//!   for it, a model nobody has) — then the message says so instead.
//! - Deterministic: nodes are scanned in cluster order, ties broken by name.

use serde::{Deserialize, Serialize};

use crate::free::{capacity, demand, FreeState, RES_NAMES};
use crate::model::{Job, JobKey};
use crate::span;

/// Why a job does not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// One sentence for people, e.g. "needs 16 H200 in one NVLink island; the largest free
    /// island has 8; draining node-3 would make room".
    pub message: String,
    /// The constraint families that bind: `gpu_model`, `cordoned`, `island`, `gpus`,
    /// `cpu`, `memory`, `bandwidth`, `storage_throughput`, `label_group`, `combination`.
    pub binding: Vec<String>,
    /// Nodes whose draining would make room (empty when none would).
    pub drain: Vec<String>,
}

const RES_CODES: [&str; 4] = ["cpu", "memory", "bandwidth", "storage_throughput"];

fn amount(k: usize, v: u64) -> String {
    match k {
        0 => format!("{v}"),
        1 => format!("{} GiB", v.div_ceil(1 << 30)),
        2 => format!("{} Gbit/s", v.div_ceil(1_000_000_000)),
        _ => format!("{} MB/s", v.div_ceil(1_000_000)),
    }
}

fn gpus_phrase(job: &Job) -> String {
    let model = job.gpu_model.as_deref().unwrap_or("GPUs");
    let mut s = format!("{} {model}", job.gpus);
    if job.same_island {
        s.push_str(" in one NVLink island");
    }
    s
}

/// Explains why `job` does not fit `free`. `on_node[i]` lists the jobs holding node `i`.
pub(crate) fn explain(free: &FreeState<'_>, on_node: &[Vec<JobKey>], job: &Job) -> Explanation {
    let cluster = free.cluster;
    let usable: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| !cluster.nodes[i].cordoned)
        .collect();
    let wanted = |m: &str| job.gpu_model.as_deref().is_none_or(|w| w == m);
    let mut binding = Vec::new();
    let mut says = Vec::new();

    if job.gpus > 0 {
        let has = |i: &usize| cluster.nodes[*i].gpus.iter().any(|g| wanted(&g.model));
        if !usable.iter().any(has) {
            let any_node = (0..cluster.nodes.len()).any(|i| has(&i));
            let model = job.gpu_model.as_deref().unwrap_or("GPUs");
            let (code, why) = if any_node {
                ("cordoned", format!("every node with {model} is cordoned"))
            } else {
                ("gpu_model", format!("no node has {model}"))
            };
            return Explanation {
                message: format!("needs {}; {why}", gpus_phrase(job)),
                binding: vec![code.into()],
                drain: vec![],
            };
        }
    }

    if span::spans(cluster, job) {
        let label = job.same_label.as_deref().unwrap_or_default();
        let most = most_free_in_group(free, &usable, job, label);
        binding.push("label_group".to_string());
        says.push(format!("the most free in one {label} is {most}"));
        let drain = match span::choose(free, job, true) {
            Some((_, used, _)) => used
                .iter()
                .filter(|(i, _)| !on_node[*i].is_empty())
                .map(|(i, _)| cluster.nodes[*i].name.clone())
                .collect(),
            None => {
                says.push(format!("no {label} has that many even when empty"));
                vec![]
            }
        };
        return finish(
            format!("needs {} across nodes of one {label}", gpus_phrase(job)),
            binding,
            says,
            drain,
        );
    }

    // GPUs, counted the way the job needs them.
    let mut never = false;
    if job.gpus > 0 {
        let (largest, largest_free, what) = if job.same_island {
            let mut largest = 0;
            let mut largest_free = 0;
            for &i in &usable {
                for (_, model, n_free, size) in free.free_islands(i) {
                    if wanted(model) {
                        largest = largest.max(size);
                        largest_free = largest_free.max(n_free);
                    }
                }
            }
            (largest, largest_free, "island")
        } else {
            let mut largest = 0;
            let mut largest_free = 0;
            for &i in &usable {
                for g in cluster.nodes[i].gpus.iter().filter(|g| wanted(&g.model)) {
                    largest = largest.max(g.count);
                }
                for (model, n) in free.free_by_model(i) {
                    if wanted(model) {
                        largest_free = largest_free.max(n);
                    }
                }
            }
            (largest, largest_free, "node")
        };
        let code = if job.same_island { "island" } else { "gpus" };
        let model = job.gpu_model.as_deref().unwrap_or("GPUs");
        if largest < job.gpus {
            never = true;
            binding.push(code.to_string());
            if job.same_island {
                says.push(format!("the largest NVLink island has {largest}"));
            } else {
                says.push(format!(
                    "the largest node has {largest} {model} (set same_label to span nodes)"
                ));
            }
        } else if largest_free < job.gpus {
            binding.push(code.to_string());
            says.push(format!("the largest free {what} has {largest_free}"));
        }
    }
    let need = demand(job);
    for k in 0..4 {
        if need[k] == 0 {
            continue;
        }
        let cap = usable
            .iter()
            .map(|&i| capacity(&cluster.nodes[i])[k])
            .max()
            .unwrap_or(0);
        let most = usable
            .iter()
            .map(|&i| free.nodes[i].res[k])
            .max()
            .unwrap_or(0);
        if cap < need[k] {
            never = true;
            binding.push(RES_CODES[k].to_string());
            says.push(format!(
                "needs {} {} on one node; the largest node has {}",
                amount(k, need[k]),
                RES_NAMES[k],
                amount(k, cap)
            ));
        } else if most < need[k] {
            binding.push(RES_CODES[k].to_string());
            says.push(format!(
                "needs {} {}; the most free on one node is {}",
                amount(k, need[k]),
                RES_NAMES[k],
                amount(k, most)
            ));
        }
    }
    if binding.is_empty() {
        binding.push("combination".to_string());
        says.push("no node has all of it free at once".to_string());
    }
    let drain = if never {
        says.push("no node could hold it even when empty".to_string());
        vec![]
    } else {
        drain_one(free, on_node, &usable, job)
    };
    let head = if job.gpus > 0 {
        format!("needs {}", gpus_phrase(job))
    } else {
        format!(
            "needs {} CPU cores and {}",
            job.cpu_cores,
            amount(1, job.memory_bytes)
        )
    };
    finish(head, binding, says, drain)
}

fn finish(
    head: String,
    binding: Vec<String>,
    says: Vec<String>,
    drain: Vec<String>,
) -> Explanation {
    let mut message = head;
    for s in &says {
        message.push_str("; ");
        message.push_str(s);
    }
    if !drain.is_empty() {
        message.push_str(&format!("; draining {} would make room", join_and(&drain)));
    }
    Explanation {
        message,
        binding,
        drain,
    }
}

fn join_and(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn most_free_in_group(free: &FreeState<'_>, usable: &[usize], job: &Job, label: &str) -> u32 {
    let mut by: std::collections::BTreeMap<(&str, &str), u32> = Default::default();
    for &i in usable {
        if let Some(v) = free.cluster.nodes[i].labels.get(label) {
            for (model, n) in free.free_by_model(i) {
                if job.gpu_model.as_deref().is_none_or(|w| w == model) {
                    *by.entry((v.as_str(), model)).or_default() += n;
                }
            }
        }
    }
    by.values().copied().max().unwrap_or(0)
}

/// The one node that, drained, would hold a single-node job.
fn drain_one(
    free: &FreeState<'_>,
    on_node: &[Vec<JobKey>],
    usable: &[usize],
    job: &Job,
) -> Vec<String> {
    let need = demand(job);
    let cluster = free.cluster;
    let wanted = |m: &str| job.gpu_model.as_deref().is_none_or(|w| w == m);
    let mut best: Option<((usize, u32, &str), usize)> = None;
    for &i in usable {
        let node = &cluster.nodes[i];
        let cap = capacity(node);
        if (0..4).any(|k| need[k] > cap[k]) {
            continue;
        }
        let gpus_ok = job.gpus == 0
            || if job.same_island {
                free.islands[i].iter().any(|isl| {
                    isl.len() as u32 >= job.gpus && node.gpu_model(isl[0]).is_some_and(wanted)
                })
            } else {
                node.gpus
                    .iter()
                    .any(|g| wanted(&g.model) && g.count >= job.gpus)
            };
        if !gpus_ok || on_node[i].is_empty() {
            continue;
        }
        let in_use = node.gpu_count() - free.free_gpu_count(i);
        let key = (on_node[i].len(), in_use, node.name.as_str());
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, i));
        }
    }
    best.map(|(_, i)| vec![cluster.nodes[i].name.clone()])
        .unwrap_or_default()
}
