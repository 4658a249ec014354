//! What is free on each node: the cluster's capacities minus what running (and already chosen)
//! placements hold, and the choice of concrete GPUs for a job on a node.
//!
//! # Invariants
//! - `take` only accepts a part that fits (checked), so free amounts never go negative and a GPU
//!   is never handed out twice; `give` is its exact inverse.
//! - GPU choice is deterministic: for a same-island job the island with the fewest free GPUs
//!   that still holds it (ties: lowest first index); otherwise GPUs from the islands with the
//!   fewest free GPUs first, lowest index first. Both fill partly used islands before touching
//!   whole ones, which is what keeps whole islands free for the jobs that need them.

use std::collections::BTreeMap;

use crate::model::{Cluster, Job, Node, Part};

/// CPU cores, memory, bandwidth, storage throughput.
pub(crate) type Res = [u64; 4];

pub(crate) fn demand(job: &Job) -> Res {
    [
        u64::from(job.cpu_cores),
        job.memory_bytes,
        job.bandwidth_bps,
        job.storage_bps,
    ]
}

pub(crate) fn part_res(part: &Part) -> Res {
    [
        u64::from(part.cpu_cores),
        part.memory_bytes,
        part.bandwidth_bps,
        part.storage_bps,
    ]
}

pub(crate) fn capacity(node: &Node) -> Res {
    [
        u64::from(node.cpu_cores),
        node.memory_bytes,
        node.nic_bps,
        node.storage_bps(),
    ]
}

/// The names of the four non-GPU resources, in [`Res`] order.
pub(crate) const RES_NAMES: [&str; 4] = ["CPU cores", "memory", "bandwidth", "storage throughput"];

/// Free capacity of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeFree {
    pub res: Res,
    /// One flag per GPU index: free or not.
    pub gpu_free: Vec<bool>,
}

/// Free capacity of every node, in cluster order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FreeState<'a> {
    pub cluster: &'a Cluster,
    pub nodes: Vec<NodeFree>,
    index: BTreeMap<&'a str, usize>,
    /// Islands of each node (every GPU in one), computed once.
    pub islands: Vec<Vec<Vec<u32>>>,
}

impl<'a> FreeState<'a> {
    /// Capacities minus the running placements. The cluster must be valid.
    pub fn new(cluster: &'a Cluster) -> Self {
        let nodes = cluster
            .nodes
            .iter()
            .map(|n| NodeFree {
                res: capacity(n),
                gpu_free: vec![true; n.gpu_count() as usize],
            })
            .collect();
        let index = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let islands = cluster.nodes.iter().map(Node::all_islands).collect();
        let mut state = Self {
            cluster,
            nodes,
            index,
            islands,
        };
        for placement in &cluster.running {
            for part in &placement.parts {
                let taken = state.take(part);
                debug_assert!(taken, "a validated cluster's running parts fit");
            }
        }
        state
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Takes a part's resources; false (and nothing taken) when it does not fit.
    pub fn take(&mut self, part: &Part) -> bool {
        let Some(i) = self.node_index(&part.node) else {
            return false;
        };
        let free = &mut self.nodes[i];
        let need = part_res(part);
        if (0..4).any(|k| need[k] > free.res[k]) {
            return false;
        }
        if part
            .gpus
            .iter()
            .any(|&g| !free.gpu_free.get(g as usize).copied().unwrap_or(false))
        {
            return false;
        }
        for (have, n) in free.res.iter_mut().zip(need) {
            *have -= n;
        }
        for &g in &part.gpus {
            free.gpu_free[g as usize] = false;
        }
        true
    }

    /// Returns a part's resources (the inverse of a successful `take`).
    pub fn give(&mut self, part: &Part) {
        let i = self.node_index(&part.node).expect("part of a known node");
        let free = &mut self.nodes[i];
        let need = part_res(part);
        for (have, n) in free.res.iter_mut().zip(need) {
            *have += n;
        }
        for &g in &part.gpus {
            free.gpu_free[g as usize] = true;
        }
    }

    /// Free GPUs of node `i` of the given model (any model when `None`), counted per model.
    pub fn free_by_model(&self, i: usize) -> BTreeMap<&'a str, u32> {
        let node = &self.cluster.nodes[i];
        let mut out = BTreeMap::new();
        for (g, &free) in self.nodes[i].gpu_free.iter().enumerate() {
            if free {
                let model = node.gpu_model(g as u32).expect("index in range");
                *out.entry(model).or_insert(0) += 1;
            }
        }
        out
    }

    /// Free GPUs in each island of node `i`: (island index, model, free count, size).
    pub fn free_islands(&self, i: usize) -> Vec<(usize, &'a str, u32, u32)> {
        let node = &self.cluster.nodes[i];
        self.islands[i]
            .iter()
            .enumerate()
            .map(|(k, island)| {
                let free = island
                    .iter()
                    .filter(|&&g| self.nodes[i].gpu_free[g as usize])
                    .count() as u32;
                let model = node.gpu_model(island[0]).expect("index in range");
                (k, model, free, island.len() as u32)
            })
            .collect()
    }

    /// The GPUs job `job` would get on node `i` from model `model` (and island `island` for a
    /// same-island job), or `None` when they are not free. Follows the module's choice rule.
    pub fn choose_gpus(
        &self,
        i: usize,
        count: u32,
        model: &str,
        island: Option<usize>,
    ) -> Option<Vec<u32>> {
        let free = &self.nodes[i].gpu_free;
        let node = &self.cluster.nodes[i];
        if let Some(k) = island {
            let got: Vec<u32> = self.islands[i][k]
                .iter()
                .copied()
                .filter(|&g| free[g as usize])
                .take(count as usize)
                .collect();
            return (got.len() == count as usize).then_some(got);
        }
        let mut islands: Vec<(u32, &Vec<u32>)> = self.islands[i]
            .iter()
            .filter(|isl| node.gpu_model(isl[0]) == Some(model))
            .map(|isl| {
                let n = isl.iter().filter(|&&g| free[g as usize]).count() as u32;
                (n, isl)
            })
            .filter(|(n, _)| *n > 0)
            .collect();
        islands.sort_by_key(|(n, isl)| (*n, isl[0]));
        let mut got = Vec::with_capacity(count as usize);
        for (_, isl) in islands {
            for &g in isl {
                if got.len() == count as usize {
                    break;
                }
                if free[g as usize] {
                    got.push(g);
                }
            }
        }
        if got.len() != count as usize {
            return None;
        }
        got.sort_unstable();
        Some(got)
    }

    /// Whether node `i`'s free non-GPU resources cover `need`.
    pub fn res_fit(&self, i: usize, need: &Res) -> bool {
        (0..4).all(|k| need[k] <= self.nodes[i].res[k])
    }

    /// Free GPUs on node `i`.
    pub fn free_gpu_count(&self, i: usize) -> u32 {
        self.nodes[i].gpu_free.iter().filter(|&&f| f).count() as u32
    }
}

/// A whole job's part on one node with the given GPUs.
pub(crate) fn whole_part(job: &Job, node: &str, gpus: Vec<u32>) -> Part {
    Part {
        node: node.to_string(),
        gpus,
        cpu_cores: job.cpu_cores,
        memory_bytes: job.memory_bytes,
        bandwidth_bps: job.bandwidth_bps,
        storage_bps: job.storage_bps,
    }
}
