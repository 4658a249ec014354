//! The YAML inventory of nodes (real ones described by an admin, or hypothetical ones for
//! what-if planning). A pure function from text to nodes; the caller reads the file.
//!
//! ```yaml
//! nodes:
//!   - name: node-1
//!     cpu: 96
//!     memory: 1Ti             # bytes, or with K/M/G/T (powers of 1000) or Ki/Mi/Gi/Ti
//!     nic: 400G               # bits per second, same suffixes
//!     gpus: [{model: H200, count: 8, memory: 141Gi}]
//!     islands: [[0,1,2,3],[4,5,6,7]]
//!     storage: [{name: nvme0, class: nvme, capacity: 8T, free: 6T, throughput: 7G}]
//!     labels: {rack: r1, zone: z1}
//!     cordoned: false
//! ```
//!
//! # Invariants
//! - Unknown keys are errors (a typo must not silently drop a capacity).
//! - The nodes returned pass [`Cluster::validate`]; nothing is returned otherwise.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::LoadError;
use crate::model::{Cluster, GpuGroup, Node, StorageDevice};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inventory {
    nodes: Vec<NodeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    name: String,
    cpu: u32,
    memory: Quantity,
    #[serde(default)]
    nic: Option<Quantity>,
    #[serde(default)]
    gpus: Vec<GpuSpec>,
    #[serde(default)]
    islands: Vec<Vec<u32>>,
    #[serde(default)]
    storage: Vec<DeviceSpec>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    cordoned: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuSpec {
    model: String,
    count: u32,
    #[serde(default)]
    memory: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceSpec {
    name: String,
    class: String,
    #[serde(default)]
    capacity: Option<Quantity>,
    free: Quantity,
    #[serde(default)]
    throughput: Option<Quantity>,
}

/// A number, or a number with a unit suffix.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Quantity {
    Int(u64),
    Text(String),
}

impl Quantity {
    fn value(&self, field: &str) -> Result<u64, LoadError> {
        match self {
            Quantity::Int(v) => Ok(*v),
            Quantity::Text(s) => parse_quantity(s)
                .ok_or_else(|| LoadError::Syntax(format!("{field}: not a quantity: {s:?}"))),
        }
    }
}

/// `512G` = 512·10⁹, `512Gi` = 512·2³⁰; plain digits are taken as they are.
pub fn parse_quantity(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mul: u64 = match unit {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

fn opt(q: &Option<Quantity>, field: &str) -> Result<u64, LoadError> {
    q.as_ref().map_or(Ok(0), |q| q.value(field))
}

/// Parses an inventory document into nodes (checked against the model's invariants).
pub fn nodes_from_yaml(text: &str) -> Result<Vec<Node>, LoadError> {
    let inv: Inventory =
        serde_yaml::from_str(text).map_err(|e| LoadError::Syntax(e.to_string()))?;
    let mut nodes = Vec::with_capacity(inv.nodes.len());
    for spec in inv.nodes {
        let gpus = spec
            .gpus
            .iter()
            .map(|g| {
                Ok(GpuGroup {
                    model: g.model.clone(),
                    count: g.count,
                    memory_bytes: opt(&g.memory, "gpus.memory")?,
                })
            })
            .collect::<Result<_, LoadError>>()?;
        let storage = spec
            .storage
            .iter()
            .map(|d| {
                let free = d.free.value("storage.free")?;
                Ok(StorageDevice {
                    name: d.name.clone(),
                    class: d.class.clone(),
                    capacity_bytes: opt(&d.capacity, "storage.capacity")?.max(free),
                    free_bytes: free,
                    throughput_bps: opt(&d.throughput, "storage.throughput")?,
                })
            })
            .collect::<Result<_, LoadError>>()?;
        nodes.push(Node {
            name: spec.name,
            cpu_cores: spec.cpu,
            memory_bytes: spec.memory.value("memory")?,
            gpus,
            islands: spec.islands,
            nic_bps: opt(&spec.nic, "nic")?,
            storage,
            labels: spec.labels,
            cordoned: spec.cordoned,
        });
    }
    Cluster {
        nodes: nodes.clone(),
        ..Cluster::default()
    }
    .validate()?;
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ModelError;

    const DOC: &str = "
nodes:
  - name: node-1
    cpu: 96
    memory: 1Ti
    nic: 400G
    gpus: [{model: H200, count: 8, memory: 141Gi}]
    islands: [[0,1,2,3],[4,5,6,7]]
    storage: [{name: nvme0, class: nvme, capacity: 8T, free: 6T, throughput: 7G}]
    labels: {rack: r1}
  - name: node-2
    cpu: 32
    memory: 256Gi
    cordoned: true
";

    #[test]
    fn parses_an_inventory() {
        let nodes = nodes_from_yaml(DOC).unwrap();
        assert_eq!(nodes.len(), 2);
        let n = &nodes[0];
        assert_eq!(n.memory_bytes, 1 << 40);
        assert_eq!(n.nic_bps, 400_000_000_000);
        assert_eq!(n.gpus[0].memory_bytes, 141 << 30);
        assert_eq!(n.islands.len(), 2);
        assert_eq!(n.storage[0].free_bytes, 6_000_000_000_000);
        assert_eq!(n.storage_bps(), 7_000_000_000);
        assert_eq!(n.labels["rack"], "r1");
        assert!(nodes[1].cordoned && nodes[1].gpus.is_empty());
    }

    #[test]
    fn rejects_typos_bad_units_and_broken_nodes() {
        let typo = DOC.replace("cordoned: true", "cordonned: true");
        assert!(matches!(nodes_from_yaml(&typo), Err(LoadError::Syntax(_))));
        let unit = DOC.replace("memory: 256Gi", "memory: 256GB");
        assert!(matches!(nodes_from_yaml(&unit), Err(LoadError::Syntax(_))));
        let island = DOC.replace("[4,5,6,7]", "[4,5,6,8]");
        assert!(matches!(
            nodes_from_yaml(&island),
            Err(LoadError::Model(ModelError::BadNode(..)))
        ));
        let dup = DOC.replace("node-2", "node-1");
        assert!(matches!(
            nodes_from_yaml(&dup),
            Err(LoadError::Model(ModelError::DuplicateNode(_)))
        ));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("12"), Some(12));
        assert_eq!(parse_quantity("3Ki"), Some(3072));
        assert_eq!(parse_quantity("2T"), Some(2_000_000_000_000));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("99999999999999T"), None);
    }
}
