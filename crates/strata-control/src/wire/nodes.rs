//! Nodes of the placement pool: inventory, declared (hypothetical) nodes, cordons.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

use super::bounds::*;
use super::Check;
use crate::controller::NodeView;
use crate::error::ControlError;

/// Longest inventory document a declaration takes, in bytes.
pub const INVENTORY_MAX_LEN: usize = 1 << 20;

fn inventory() -> Object {
    free_text(1, INVENTORY_MAX_LEN, false)
}

/// A group of identical GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeGpus {
    /// Model, e.g. `H200`.
    pub model: String,
    /// How many.
    pub count: u32,
    /// Memory per GPU, bytes.
    pub memory_bytes: u64,
}

/// A storage device of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeDevice {
    /// Name.
    pub name: String,
    /// Class: hdd, ssd, nvme.
    pub class: String,
    /// Capacity, bytes.
    pub capacity_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Sustained throughput, bytes per second.
    pub throughput_bps: u64,
}

/// A node and what runs on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Declared for planning (no daemon runs there).
    pub hypothetical: bool,
    /// Takes no new work.
    pub cordoned: bool,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// GPUs by model.
    pub gpus: Vec<NodeGpus>,
    /// Total GPUs.
    pub gpu_count: u32,
    /// NVLink/NVSwitch islands (GPU indexes).
    pub islands: Vec<Vec<u32>>,
    /// NIC bandwidth, bits per second.
    pub nic_bps: u64,
    /// Storage devices.
    pub storage: Vec<NodeDevice>,
    /// Labels (rack, rail, zone, ...).
    pub labels: BTreeMap<String, String>,
    /// GPUs held by running jobs.
    pub used_gpus: u32,
    /// CPU cores held.
    pub used_cpu_cores: u32,
    /// Memory held, bytes.
    pub used_memory_bytes: u64,
    /// Running jobs with a part here.
    pub jobs: u32,
    /// Last registration or declaration, seconds since the epoch.
    pub updated: u64,
    /// `up` when its daemon holds its liveness lease (on the embedded store: the local node),
    /// `down` otherwise (a declared node is always `down`).
    pub state: String,
    /// It is the cluster's leader (holds `/leader`).
    pub leader: bool,
}

impl From<NodeView> for NodeInfo {
    fn from(v: NodeView) -> Self {
        let n = v.record.node;
        NodeInfo {
            gpu_count: n.gpu_count(),
            name: n.name,
            hypothetical: v.record.hypothetical,
            cordoned: n.cordoned,
            cpu_cores: n.cpu_cores,
            memory_bytes: n.memory_bytes,
            gpus: n
                .gpus
                .into_iter()
                .map(|g| NodeGpus {
                    model: g.model,
                    count: g.count,
                    memory_bytes: g.memory_bytes,
                })
                .collect(),
            islands: n.islands,
            nic_bps: n.nic_bps,
            storage: n
                .storage
                .into_iter()
                .map(|d| NodeDevice {
                    name: d.name,
                    class: d.class,
                    capacity_bytes: d.capacity_bytes,
                    free_bytes: d.free_bytes,
                    throughput_bps: d.throughput_bps,
                })
                .collect(),
            labels: n.labels,
            used_gpus: v.used_gpus,
            used_cpu_cores: v.used_cpu,
            used_memory_bytes: v.used_memory,
            jobs: v.jobs,
            updated: v.record.updated,
            state: if v.up { "up" } else { "down" }.to_string(),
            leader: v.leader,
        }
    }
}

/// Nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Nodes, by name.
    pub items: Vec<NodeInfo>,
}

/// `POST /v1/nodes`: hypothetical nodes for planning, as a YAML inventory (the format of
/// `docs/placement.md`: `nodes: [{name, cpu, memory, gpus, islands, nic, storage, labels}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeclareNodes {
    /// The YAML inventory.
    #[schema(schema_with = inventory)]
    pub inventory: String,
}

impl Check for DeclareNodes {
    fn check(&self) -> Result<(), ControlError> {
        if self.inventory.is_empty() {
            return Err(ControlError::invalid(
                "inventory",
                "an inventory is required",
            ));
        }
        check_len("inventory", &self.inventory, INVENTORY_MAX_LEN)
    }
}
