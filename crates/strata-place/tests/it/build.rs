//! Small builders for nodes and jobs.

use strata_place::{GpuGroup, Job, Node};

pub const GIB: u64 = 1 << 30;

pub fn node(name: &str, gpus: u32, islands: &[&[u32]]) -> Node {
    Node {
        name: name.into(),
        cpu_cores: 64,
        memory_bytes: 512 * GIB,
        gpus: if gpus == 0 {
            vec![]
        } else {
            vec![GpuGroup {
                model: "H200".into(),
                count: gpus,
                memory_bytes: 141 * GIB,
            }]
        },
        islands: islands.iter().map(|i| i.to_vec()).collect(),
        nic_bps: 400_000_000_000,
        storage: vec![],
        labels: Default::default(),
        cordoned: false,
    }
}

pub fn with_label(mut n: Node, k: &str, v: &str) -> Node {
    n.labels.insert(k.into(), v.into());
    n
}

pub fn job(name: &str, priority: u32, gpus: u32) -> Job {
    Job {
        tenant: "t".into(),
        name: name.into(),
        priority,
        gpus,
        gpu_model: None,
        cpu_cores: 4,
        memory_bytes: 16 * GIB,
        bandwidth_bps: 0,
        storage_bps: 0,
        same_island: false,
        same_label: None,
    }
}
