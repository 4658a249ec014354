//! Where a volume's new copies go: a deterministic rule in the spirit of CRUSH's straw2
//! buckets, written for Strata. Each eligible device draws a straw `ln(u) / weight`, where `u`
//! in (0, 1] comes from a hash of (volume, node, device, copy number) and the weight is the
//! device's capacity; the longest straw wins. Copy r is the winner among devices whose
//! failure domain holds none of copies 0..r.
//!
//! Why straw2: each device's straw depends only on its own name and weight, so adding a device
//! only moves copies *to* it (a volume's copy set is unchanged or now includes the new device),
//! and a device's share of copies follows its weight. No table to store: anyone with the
//! inventory computes the same answer.
//!
//! # Invariants
//! - Deterministic: the hash is ours (FNV-1a then a splitmix64 finalizer), no process seed.
//! - No two copies share a failure domain at the chosen level; devices of the wrong class,
//!   without room, or on cordoned nodes are never chosen. A node without the label a
//!   `Label` level names is not eligible (its domain is unknown).
//! - Fewer eligible domains than copies is an error, not a weaker placement.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::CopyError;
use crate::model::Node;

/// The failure domain copies must not share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Distinct devices (one machine today).
    Device,
    /// Distinct nodes.
    Node,
    /// Distinct values of a node label (rack, zone).
    Label(String),
}

/// A storage device, by node and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    /// The node.
    pub node: String,
    /// The device on it.
    pub device: String,
}

/// What to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRequest {
    /// The volume (its id: the hash input).
    pub volume: String,
    /// How many copies.
    pub copies: usize,
    /// Device class.
    pub class: String,
    /// Bytes each copy needs free.
    pub bytes: u64,
}

fn fnv(parts: &[&str], r: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes().iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= r;
    // splitmix64 finalizer: FNV's low bits are weak on their own.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The straw of one device for one copy: larger wins.
pub(crate) fn straw(volume: &str, node: &str, device: &str, r: u64, weight: f64) -> f64 {
    let h = fnv(&[volume, node, device], r);
    let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64; // (0, 1]
    u.ln() / weight
}

/// The domain of a device at `level`, or `None` if the node lacks the label.
pub(crate) fn domain(node: &Node, device: &str, level: &Level) -> Option<String> {
    match level {
        Level::Device => Some(format!("{}/{device}", node.name)),
        Level::Node => Some(node.name.clone()),
        Level::Label(k) => node.labels.get(k).cloned(),
    }
}

/// Chooses devices for a volume's copies (copy 0 first).
pub fn place_copies(
    nodes: &[Node],
    req: &CopyRequest,
    level: &Level,
) -> Result<Vec<DeviceRef>, CopyError> {
    let mut seen = BTreeSet::new();
    let mut eligible = Vec::new();
    for node in nodes {
        for d in &node.storage {
            if !seen.insert((node.name.as_str(), d.name.as_str())) {
                return Err(CopyError::DuplicateDevice(format!(
                    "{}/{}",
                    node.name, d.name
                )));
            }
            if node.cordoned || d.class != req.class || d.free_bytes < req.bytes {
                continue;
            }
            if let Some(dom) = domain(node, &d.name, level) {
                let weight =
                    (d.capacity_bytes.max(d.free_bytes).max(1)) as f64 / (1u64 << 30) as f64;
                eligible.push((node.name.as_str(), d.name.as_str(), dom, weight));
            }
        }
    }
    let domains: BTreeSet<&str> = eligible.iter().map(|e| e.2.as_str()).collect();
    if domains.len() < req.copies {
        return Err(CopyError::NotEnoughDomains {
            wanted: req.copies,
            found: domains.len(),
            class: req.class.clone(),
        });
    }
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(req.copies);
    for r in 0..req.copies as u64 {
        let best = eligible
            .iter()
            .filter(|e| !used.contains(e.2.as_str()))
            .map(|e| (straw(&req.volume, e.0, e.1, r, e.3), e))
            .max_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then((b.1 .0, b.1 .1).cmp(&(a.1 .0, a.1 .1)))
            })
            .map(|(_, e)| e)
            .expect("enough domains checked above");
        used.insert(best.2.as_str());
        out.push(DeviceRef {
            node: best.0.to_string(),
            device: best.1.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StorageDevice;

    pub(crate) fn storage_node(name: &str, rack: &str, devices: &[(&str, u64)]) -> Node {
        Node {
            name: name.into(),
            cpu_cores: 8,
            memory_bytes: 1 << 34,
            gpus: vec![],
            islands: vec![],
            nic_bps: 0,
            storage: devices
                .iter()
                .map(|(d, cap)| StorageDevice {
                    name: (*d).into(),
                    class: "nvme".into(),
                    capacity_bytes: *cap << 30,
                    free_bytes: *cap << 30,
                    throughput_bps: 0,
                })
                .collect(),
            labels: [("rack".to_string(), rack.to_string())].into(),
            cordoned: false,
        }
    }

    fn req(v: &str, copies: usize) -> CopyRequest {
        CopyRequest {
            volume: v.into(),
            copies,
            class: "nvme".into(),
            bytes: 1 << 30,
        }
    }

    fn cluster() -> Vec<Node> {
        vec![
            storage_node("n1", "r1", &[("d0", 1000), ("d1", 1000)]),
            storage_node("n2", "r1", &[("d0", 1000)]),
            storage_node("n3", "r2", &[("d0", 1000), ("d1", 1000)]),
            storage_node("n4", "r3", &[("d0", 1000)]),
        ]
    }

    #[test]
    fn copies_land_in_distinct_domains_deterministically() {
        let nodes = cluster();
        for level in [Level::Device, Level::Node, Level::Label("rack".into())] {
            for v in 0..200 {
                let r = req(&format!("vol-{v}"), 3);
                let a = place_copies(&nodes, &r, &level).unwrap();
                assert_eq!(a, place_copies(&nodes, &r, &level).unwrap());
                let doms: BTreeSet<String> = a
                    .iter()
                    .map(|d| {
                        let n = nodes.iter().find(|n| n.name == d.node).unwrap();
                        domain(n, &d.device, &level).unwrap()
                    })
                    .collect();
                assert_eq!(doms.len(), 3, "{level:?} {a:?}");
            }
        }
        let err = place_copies(&nodes, &req("v", 4), &Level::Label("rack".into()));
        assert!(matches!(
            err,
            Err(CopyError::NotEnoughDomains { found: 3, .. })
        ));
    }

    #[test]
    fn adding_a_device_only_moves_copies_to_it() {
        let before = cluster();
        let mut after = before.clone();
        after.push(storage_node("n5", "r4", &[("d0", 1000)]));
        let mut moved = 0;
        for v in 0..500 {
            let r = req(&format!("vol-{v}"), 2);
            let a = place_copies(&before, &r, &Level::Node).unwrap();
            let b = place_copies(&after, &r, &Level::Node).unwrap();
            if a != b {
                moved += 1;
                assert!(b.iter().any(|d| d.node == "n5"), "{a:?} -> {b:?}");
            }
        }
        // Some volumes take the new node, not all of them.
        assert!(moved > 50 && moved < 400, "{moved}");
    }

    #[test]
    fn weight_follows_capacity() {
        let nodes = vec![
            storage_node("big", "r1", &[("d0", 3000)]),
            storage_node("small", "r2", &[("d0", 1000)]),
        ];
        let big = (0..4000)
            .filter(|v| {
                place_copies(&nodes, &req(&format!("v{v}"), 1), &Level::Node).unwrap()[0].node
                    == "big"
            })
            .count();
        // Expect three quarters; allow sampling noise.
        assert!((2800..3200).contains(&big), "{big}");
    }
}
