//! The local node's inventory, as the daemon registers it at start: CPU cores
//! (`available_parallelism`), memory (`/proc/meminfo`), GPUs (`nvidia-smi --query-gpu` and
//! NVLink islands from `nvidia-smi topo -m`, when nvidia-smi exists), NIC bandwidth (the sum
//! of `/sys/class/net/*/speed` over physical interfaces) and the pool's devices.
//!
//! # Invariants
//! - Reading never fails the start: a source that is missing or unreadable contributes
//!   nothing (no GPUs, no NIC bandwidth), and the parsers below are pure functions of text.
//! - GPU indexes are nvidia-smi's, grouped by model in index order, so the engine's "GPU
//!   indexes number the groups' GPUs in order" holds when the models are contiguous; when
//!   they are not (mixed models interleaved), islands are dropped rather than misnumbered.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use strata_place::{GpuGroup, Node, StorageDevice};

/// One GPU as `nvidia-smi --query-gpu=index,name,memory.total` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// nvidia-smi's index.
    pub index: u32,
    /// Short model name (`H100`, `A100`, `L40S`).
    pub model: String,
    /// Memory, bytes.
    pub memory_bytes: u64,
}

/// The short model of an nvidia-smi product name: vendor and family words dropped, the first
/// remaining word cut at its first `-` (`NVIDIA H100 80GB HBM3` → `H100`,
/// `NVIDIA A100-SXM4-80GB` → `A100`, `NVIDIA GeForce RTX 4090` → `RTX4090`).
pub fn short_model(name: &str) -> String {
    let words: Vec<&str> = name
        .split_whitespace()
        .filter(|w| !matches!(*w, "NVIDIA" | "Tesla" | "GeForce" | "Quadro"))
        .collect();
    match words.as_slice() {
        ["RTX", next, ..] => format!("RTX{}", next.split('-').next().unwrap_or(next)),
        [first, ..] => first.split('-').next().unwrap_or(first).to_string(),
        [] => "GPU".to_string(),
    }
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`
/// (memory in MiB). Lines that do not parse are skipped.
pub fn parse_query_gpu(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(',').map(str::trim);
            let index = f.next()?.parse().ok()?;
            let model = short_model(f.next()?);
            let mib: u64 = f.next()?.parse().ok()?;
            Some(Gpu {
                index,
                model,
                memory_bytes: mib.saturating_mul(1 << 20),
            })
        })
        .collect()
}

/// Parses the GPU matrix of `nvidia-smi topo -m` into NVLink islands: GPUs joined by an
/// `NV#` entry (directly or through others) form one island. Only islands of two or more
/// GPUs are returned (a lone GPU is its own island in the engine), sorted.
pub fn parse_topo(text: &str) -> Vec<Vec<u32>> {
    let mut lines = text.lines().map(|l| l.trim_end());
    let Some(header) = lines.find(|l| l.split_whitespace().any(|w| w.starts_with("GPU"))) else {
        return vec![];
    };
    let columns: Vec<Option<u32>> = header
        .split_whitespace()
        .map(|w| w.strip_prefix("GPU").and_then(|n| n.parse().ok()))
        .collect();
    let gpus: Vec<u32> = columns.iter().flatten().copied().collect();
    let mut parent: BTreeMap<u32, u32> = gpus.iter().map(|&g| (g, g)).collect();
    fn root(p: &BTreeMap<u32, u32>, mut g: u32) -> u32 {
        while p[&g] != g {
            g = p[&g];
        }
        g
    }
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(row) = words
            .next()
            .and_then(|w| w.strip_prefix("GPU"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !parent.contains_key(&row) {
            continue;
        }
        for (col, cell) in columns.iter().zip(words) {
            let Some(col) = col else { break };
            if cell.starts_with("NV") && parent.contains_key(col) {
                let (a, b) = (root(&parent, row), root(&parent, *col));
                if a != b {
                    parent.insert(a.max(b), a.min(b));
                }
            }
        }
    }
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &g in &gpus {
        groups.entry(root(&parent, g)).or_default().push(g);
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// GPU groups and islands from the GPUs and the islands' nvidia-smi indexes.
pub fn gpu_groups(gpus: &[Gpu], islands: Vec<Vec<u32>>) -> (Vec<GpuGroup>, Vec<Vec<u32>>) {
    let mut sorted = gpus.to_vec();
    sorted.sort_by_key(|g| g.index);
    let mut groups: Vec<GpuGroup> = Vec::new();
    for g in &sorted {
        match groups.last_mut() {
            Some(last) if last.model == g.model => last.count += 1,
            _ => groups.push(GpuGroup {
                model: g.model.clone(),
                count: 1,
                memory_bytes: g.memory_bytes,
            }),
        }
    }
    let contiguous = {
        let mut seen = std::collections::BTreeSet::new();
        groups.iter().all(|g| seen.insert(g.model.clone()))
    };
    let dense = sorted.iter().enumerate().all(|(i, g)| g.index == i as u32);
    let islands = if contiguous && dense { islands } else { vec![] };
    (groups, islands)
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of the speeds of the physical NICs under `/sys/class/net`, bits per second.
fn nic_bps(root: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut total = 0u64;
    for entry in dir.flatten() {
        let path = entry.path();
        // Virtual interfaces (lo, veth, bridges, TAPs) have no `device`.
        if !path.join("device").exists() {
            continue;
        }
        let speed = std::fs::read_to_string(path.join("speed"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|&s| s > 0);
        if let Some(mbps) = speed {
            total = total.saturating_add((mbps as u64).saturating_mul(1_000_000));
        }
    }
    total
}

/// The host's name (`/proc/sys/kernel/hostname`), or `local`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// The local node named `name`, with the pool's devices.
pub fn local_node(name: &str, pool: &strata_block::Pool) -> Node {
    let cpu_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or(0);
    let (gpus, islands) = match run(
        "nvidia-smi",
        &[
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ],
    ) {
        Some(text) => {
            let gpus = parse_query_gpu(&text);
            let islands = run("nvidia-smi", &["topo", "-m"])
                .map(|t| parse_topo(&t))
                .unwrap_or_default();
            gpu_groups(&gpus, islands)
        }
        None => (vec![], vec![]),
    };
    let storage = pool
        .info()
        .devices
        .into_iter()
        .map(|d| StorageDevice {
            name: format!("dev{}", d.index),
            class: d.class.to_string(),
            capacity_bytes: d.capacity,
            free_bytes: d.capacity.saturating_sub(d.allocated),
            throughput_bps: 0,
        })
        .collect();
    Node {
        name: name.to_string(),
        cpu_cores,
        memory_bytes,
        gpus,
        islands,
        nic_bps: nic_bps(Path::new("/sys/class/net")),
        storage,
        labels: BTreeMap::new(),
        cordoned: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPO: &str = "\
\tGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tCPU Affinity\tNUMA Affinity
GPU0\t X \tNV12\tSYS\tSYS\tPHB\t0-31\t0
GPU1\tNV12\t X \tSYS\tSYS\tPHB\t0-31\t0
GPU2\tSYS\tSYS\t X \tNV12\tSYS\t32-63\t1
GPU3\tSYS\tSYS\tNV12\t X \tSYS\t32-63\t1
NIC0\tPHB\tPHB\tSYS\tSYS\t X

Legend:
  X    = Self
  NV#  = Connection traversing a bonded set of # NVLinks
";

    #[test]
    fn topo_matrix_gives_nvlink_islands() {
        assert_eq!(parse_topo(TOPO), vec![vec![0, 1], vec![2, 3]]);
        // No NVLink at all: every GPU is its own island (none returned).
        let pcie = TOPO.replace("NV12", "PIX");
        assert!(parse_topo(&pcie).is_empty());
        assert!(parse_topo("no matrix here").is_empty());
    }

    #[test]
    fn query_gpu_lines_and_models() {
        let text = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\nbad line\n";
        let g = parse_query_gpu(text);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].model, "H100");
        assert_eq!(g[0].memory_bytes, 81559 << 20);
        assert_eq!(short_model("NVIDIA A100-SXM4-80GB"), "A100");
        assert_eq!(short_model("NVIDIA GeForce RTX 4090"), "RTX4090");
        let (groups, islands) = gpu_groups(&g, vec![vec![0, 1]]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].count, 2);
        assert_eq!(islands, vec![vec![0, 1]]);
    }

    #[test]
    fn interleaved_models_drop_islands() {
        let g = vec![
            Gpu {
                index: 0,
                model: "A".into(),
                memory_bytes: 0,
            },
            Gpu {
                index: 1,
                model: "B".into(),
                memory_bytes: 0,
            },
            Gpu {
                index: 2,
                model: "A".into(),
                memory_bytes: 0,
            },
        ];
        let (groups, islands) = gpu_groups(&g, vec![vec![0, 2]]);
        assert_eq!(groups.len(), 3);
        assert!(islands.is_empty());
    }

    #[test]
    fn meminfo_total() {
        assert_eq!(
            parse_meminfo("MemTotal:       16318480 kB\nMemFree: 1 kB\n"),
            Some(16318480 * 1024)
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }
}
