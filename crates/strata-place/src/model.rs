//! The vocabulary of placement: nodes and what they offer, jobs and what they ask, and the
//! placements already made. Every type is plain data (serde-derivable, the daemon stores it);
//! nothing here decides anything.
//!
//! # Invariants (checked by [`Cluster::validate`] in `validate.rs`, which every entry point calls)
//! - Node names are unique; job keys (tenant, name) are unique across running and pending jobs.
//! - GPU indexes on a node number the GPUs of `gpus` in order (the first group's GPUs are
//!   `0..count`, the next group's follow). An island lists indexes that exist, all of one
//!   model, and no GPU is in two islands. A GPU in no island is an island of its own.
//! - A placement's parts name existing nodes and GPUs; no GPU is held by two placements, and no
//!   node's CPU, memory, bandwidth or storage throughput is exceeded by the parts on it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A group of identical GPUs on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGroup {
    /// The model name jobs ask for, e.g. `H200`.
    pub model: String,
    /// How many GPUs of this model the node has.
    pub count: u32,
    /// Memory per GPU in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
}

/// A storage device of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageDevice {
    /// Device name, unique on its node.
    pub name: String,
    /// Device class: `hdd`, `ssd`, `nvme` (free text; copies match it exactly).
    pub class: String,
    /// Capacity in bytes.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Sustained throughput in bytes per second (what jobs' storage throughput draws on).
    #[serde(default)]
    pub throughput_bps: u64,
}

/// A machine in the pool (real, or declared for what-if planning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name.
    pub name: String,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// GPUs, by model.
    #[serde(default)]
    pub gpus: Vec<GpuGroup>,
    /// NVLink/NVSwitch islands: sets of GPU indexes that talk at NVLink speed.
    #[serde(default)]
    pub islands: Vec<Vec<u32>>,
    /// NIC bandwidth in bits per second.
    #[serde(default)]
    pub nic_bps: u64,
    /// Storage devices.
    #[serde(default)]
    pub storage: Vec<StorageDevice>,
    /// Labels an admin declares: `rack`, `rail`, `zone`, ...
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A cordoned node takes no new work (what runs there stays).
    #[serde(default)]
    pub cordoned: bool,
}

impl Node {
    /// Total GPUs.
    pub fn gpu_count(&self) -> u32 {
        self.gpus.iter().map(|g| g.count).sum()
    }

    /// The model of GPU `index`, if it exists.
    pub fn gpu_model(&self, index: u32) -> Option<&str> {
        let mut first = 0;
        for group in &self.gpus {
            if index < first + group.count {
                return Some(&group.model);
            }
            first += group.count;
        }
        None
    }

    /// Storage throughput of all devices together, bytes per second.
    pub fn storage_bps(&self) -> u64 {
        self.storage.iter().map(|d| d.throughput_bps).sum()
    }

    /// The islands with every GPU in exactly one: declared islands first (each sorted), then a
    /// singleton for every GPU no island names, in index order.
    pub fn all_islands(&self) -> Vec<Vec<u32>> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<Vec<u32>> = Vec::new();
        for island in &self.islands {
            let mut island = island.clone();
            island.sort_unstable();
            seen.extend(island.iter().copied());
            out.push(island);
        }
        for index in 0..self.gpu_count() {
            if !seen.contains(&index) {
                out.push(vec![index]);
            }
        }
        out
    }
}

/// Identifies a job: names are unique within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobKey {
    /// Owning tenant.
    pub tenant: String,
    /// Job name.
    pub name: String,
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// What a job asks for. All of it or nothing (gang semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Owning tenant.
    pub tenant: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// Higher goes first.
    #[serde(default)]
    pub priority: u32,
    /// GPUs, all of one model.
    #[serde(default)]
    pub gpus: u32,
    /// The GPU model wanted; any one model when absent.
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// CPU cores.
    #[serde(default)]
    pub cpu_cores: u32,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Network bandwidth in bits per second.
    #[serde(default)]
    pub bandwidth_bps: u64,
    /// Storage throughput in bytes per second.
    #[serde(default)]
    pub storage_bps: u64,
    /// All GPUs of a part in one NVLink island.
    #[serde(default)]
    pub same_island: bool,
    /// When set, the job may span several nodes that all carry the same value of this label
    /// (e.g. `rack`); it spans only when no single node could ever hold it.
    #[serde(default)]
    pub same_label: Option<String>,
}

impl Job {
    /// The job's key.
    pub fn key(&self) -> JobKey {
        JobKey {
            tenant: self.tenant.clone(),
            name: self.name.clone(),
        }
    }
}

/// The share of a job held on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The node.
    pub node: String,
    /// GPU indexes on that node (sorted).
    pub gpus: Vec<u32>,
    /// CPU cores taken.
    pub cpu_cores: u32,
    /// Memory taken.
    pub memory_bytes: u64,
    /// Bandwidth taken.
    pub bandwidth_bps: u64,
    /// Storage throughput taken.
    pub storage_bps: u64,
}

/// A job and where it is (or would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The job.
    pub job: Job,
    /// One part per node it uses (one, unless it spans a label group), sorted by node.
    pub parts: Vec<Part>,
}

/// The state a plan is made from: the pool, the jobs running on it, and the store revision the
/// snapshot was read at (a plan applies only while that revision is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cluster {
    /// The store revision this snapshot was read at.
    pub revision: u64,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Jobs already placed.
    #[serde(default)]
    pub running: Vec<Placement>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node of `gpus` H200s, for the tests of this crate.
    pub(crate) fn node(name: &str, gpus: u32) -> Node {
        Node {
            name: name.into(),
            cpu_cores: 64,
            memory_bytes: 1 << 40,
            gpus: vec![GpuGroup {
                model: "H200".into(),
                count: gpus,
                memory_bytes: 141 << 30,
            }],
            islands: vec![],
            nic_bps: 400_000_000_000,
            storage: vec![],
            labels: BTreeMap::new(),
            cordoned: false,
        }
    }

    #[test]
    fn islands_cover_every_gpu_once() {
        let mut n = node("a", 6);
        n.islands = vec![vec![3, 1]];
        assert_eq!(
            n.all_islands(),
            vec![vec![1, 3], vec![0], vec![2], vec![4], vec![5]]
        );
    }
}
