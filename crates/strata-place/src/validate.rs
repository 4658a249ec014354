//! The invariants of a [`Cluster`] (listed in the `model` module doc), checked before any
//! engine reads it. Kept apart from the plain data of `model.rs` so that the data depends on
//! nothing and the errors (`error.rs`) may name its types.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ModelError;
use crate::model::{Cluster, Node};

impl Cluster {
    /// Checks the invariants in the module doc.
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut names = BTreeSet::new();
        for node in &self.nodes {
            validate_node(node)?;
            if !names.insert(node.name.as_str()) {
                return Err(ModelError::DuplicateNode(node.name.clone()));
            }
        }
        let mut jobs = BTreeSet::new();
        let mut held: BTreeSet<(&str, u32)> = BTreeSet::new();
        let mut load: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for placement in &self.running {
            let key = placement.job.key();
            if !jobs.insert(key.clone()) {
                return Err(ModelError::DuplicateJob(key));
            }
            let gpus: u32 = placement.parts.iter().map(|p| p.gpus.len() as u32).sum();
            if gpus != placement.job.gpus {
                return Err(ModelError::BadPlacement(
                    key,
                    "GPU count differs from the job",
                ));
            }
            for part in &placement.parts {
                let Some(node) = self.nodes.iter().find(|n| n.name == part.node) else {
                    return Err(ModelError::UnknownNode(part.node.clone()));
                };
                for &gpu in &part.gpus {
                    if node.gpu_model(gpu).is_none() {
                        return Err(ModelError::BadPlacement(key, "names a GPU the node lacks"));
                    }
                    if !held.insert((node.name.as_str(), gpu)) {
                        return Err(ModelError::BadPlacement(key, "GPU held twice"));
                    }
                }
                let l = load.entry(node.name.as_str()).or_default();
                l[0] += u64::from(part.cpu_cores);
                l[1] += part.memory_bytes;
                l[2] += part.bandwidth_bps;
                l[3] += part.storage_bps;
                if l[0] > u64::from(node.cpu_cores)
                    || l[1] > node.memory_bytes
                    || l[2] > node.nic_bps
                    || l[3] > node.storage_bps()
                {
                    return Err(ModelError::Overcommitted(node.name.clone()));
                }
            }
        }
        Ok(())
    }
}

fn validate_node(node: &Node) -> Result<(), ModelError> {
    let bad = |why: &'static str| ModelError::BadNode(node.name.clone(), why);
    if node.name.is_empty() {
        return Err(bad("empty name"));
    }
    let total = node.gpu_count();
    let mut seen = BTreeSet::new();
    for island in &node.islands {
        if island.is_empty() {
            return Err(bad("empty island"));
        }
        let model = node.gpu_model(island[0]);
        for &gpu in island {
            if gpu >= total {
                return Err(bad("island names a GPU the node lacks"));
            }
            if node.gpu_model(gpu) != model {
                return Err(bad("island mixes GPU models"));
            }
            if !seen.insert(gpu) {
                return Err(bad("GPU in two islands"));
            }
        }
    }
    let mut devices = BTreeSet::new();
    for device in &node.storage {
        if !devices.insert(device.name.as_str()) {
            return Err(bad("duplicate storage device"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::node;

    #[test]
    fn validate_rejects_bad_islands_and_duplicates() {
        let mut n = node("a", 4);
        n.islands = vec![vec![0, 4]];
        let c = Cluster {
            nodes: vec![n],
            ..Cluster::default()
        };
        assert!(matches!(c.validate(), Err(ModelError::BadNode(_, _))));
        let c = Cluster {
            nodes: vec![node("a", 1), node("a", 2)],
            ..Cluster::default()
        };
        assert!(matches!(c.validate(), Err(ModelError::DuplicateNode(_))));
        let mut n = node("a", 4);
        n.islands = vec![vec![0, 1], vec![1, 2]];
        let c = Cluster {
            nodes: vec![n],
            ..Cluster::default()
        };
        assert!(matches!(c.validate(), Err(ModelError::BadNode(_, _))));
    }
}
