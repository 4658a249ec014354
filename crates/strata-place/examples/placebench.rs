//! Placement benchmark: solve time and gaps at 1e3/1e4/1e5 variables, one admission decision
//! over 1,000 nodes and 1,000 pending jobs, and GPUs stranded by a random job mix beside a
//! first-fit baseline. Run with `bash bench/place.sh` (or
//! `cargo run --release -p strata-place --example placebench -- [--seed N] [--time-limit S]`).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_place::admit::{admit, Pending};
use strata_place::{plan, Cluster, GpuGroup, Job, Node, Part, Placement, PlanOptions};

const GIB: u64 = 1 << 30;

fn gpu_node(i: usize, rack: usize) -> Node {
    Node {
        name: format!("node-{i:04}"),
        cpu_cores: 128,
        memory_bytes: 2048 * GIB,
        gpus: vec![GpuGroup {
            model: "H200".into(),
            count: 8,
            memory_bytes: 141 * GIB,
        }],
        islands: vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]],
        nic_bps: 400_000_000_000,
        storage: vec![],
        labels: [("rack".to_string(), format!("r{rack}"))].into(),
        cordoned: false,
    }
}

fn random_job(rng: &mut StdRng, i: usize, tenants: usize) -> Job {
    let gpus = [1u32, 1, 2, 2, 4, 4, 8][rng.gen_range(0..7)];
    Job {
        tenant: format!("t{}", rng.gen_range(0..tenants)),
        name: format!("job-{i:05}"),
        priority: rng.gen_range(0..3),
        gpus,
        gpu_model: Some("H200".into()),
        cpu_cores: 8 * gpus,
        memory_bytes: u64::from(gpus) * 128 * GIB,
        bandwidth_bps: u64::from(gpus) * 25_000_000_000,
        storage_bps: 0,
        same_island: gpus == 4 || rng.gen_bool(0.3),
        same_label: None,
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let seed: u64 = arg("--seed").and_then(|s| s.parse().ok()).unwrap_or(1);
    let limit: f64 = arg("--time-limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    println!("# strata-place benchmark (seed {seed}, MILP time limit {limit} s)\n");
    solve_sizes(seed, limit);
    admission(seed);
    stranded(seed);
}

fn solve_sizes(seed: u64, limit: f64) {
    println!(
        "## Jobs onto nodes: MILP ({}) vs greedy, demand about 1.3x the GPUs",
        strata_place::SOLVER
    );
    println!("| variables | nodes | jobs | greedy ms | MILP ms | method | score | greedy | LP bound | gap to LP | gain over greedy |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (nodes, jobs) in [(20usize, 35usize), (70, 100), (230, 300)] {
        let mut rng = StdRng::seed_from_u64(seed);
        let cluster = Cluster {
            revision: 1,
            nodes: (0..nodes).map(|i| gpu_node(i, i / 16)).collect(),
            running: vec![],
        };
        let pending: Vec<Job> = (0..jobs).map(|i| random_job(&mut rng, i, 4)).collect();
        let greedy_opts = PlanOptions {
            time_limit: Duration::ZERO,
            ..PlanOptions::default()
        };
        let t = Instant::now();
        let g = plan(&cluster, &pending, &greedy_opts).expect("valid");
        let greedy_ms = t.elapsed().as_secs_f64() * 1e3;
        let opts = PlanOptions {
            time_limit: Duration::from_secs_f64(limit),
            max_variables: 200_000,
            lp_bound: false,
        };
        let t = Instant::now();
        let p = plan(&cluster, &pending, &opts).expect("valid");
        let milp_ms = t.elapsed().as_secs_f64() * 1e3;
        let lp = plan(
            &cluster,
            &pending,
            &PlanOptions {
                lp_bound: true,
                time_limit: Duration::from_secs(60),
                ..opts.clone()
            },
        )
        .expect("valid")
        .lp_bound;
        let (lp_s, gap) = match lp {
            Some(b) => (
                format!("{b:.3}"),
                format!("{:.2}%", 100.0 * (b - p.score) / b),
            ),
            None => ("n/a".into(), "n/a".into()),
        };
        println!(
            "| {} | {nodes} | {jobs} | {greedy_ms:.1} | {milp_ms:.1} | {:?} | {:.3} | {:.3} | {lp_s} | {gap} | {:+.2}% |",
            p.variables,
            p.method,
            p.score,
            g.score,
            100.0 * (p.score - g.score) / g.score
        );
    }
    println!();
}

fn admission(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xad);
    let nodes: Vec<Node> = (0..1000).map(|i| gpu_node(i, i / 32)).collect();
    // Half the pool already busy, so the decision has to look for room.
    let mut cluster = Cluster {
        revision: 1,
        nodes,
        running: vec![],
    };
    let warm: Vec<Pending> = (0..1000)
        .map(|i| Pending {
            job: random_job(&mut rng, 100_000 + i, 20),
            seq: i as u64,
        })
        .collect();
    cluster.running = admit(&cluster, &warm).expect("valid").admitted;
    let busy: usize = cluster.running.iter().map(|p| p.job.gpus as usize).sum();
    let pending: Vec<Pending> = (0..1000)
        .map(|i| Pending {
            job: random_job(&mut rng, i, 20),
            seq: 10_000 + i as u64,
        })
        .collect();
    let mut times = Vec::new();
    let mut admitted = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let a = admit(&cluster, &pending).expect("valid");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        admitted = a.admitted.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "## Admission: one decision, 1,000 nodes (8,000 GPUs, {busy} busy), 1,000 pending jobs"
    );
    println!("| runs | median ms | max ms | admitted | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| 5 | {:.1} | {:.1} | {admitted} | < 1000 ms |",
        times[2], times[4]
    );
    println!();
}

/// First fit, the baseline: the first node (in name order) with enough free GPUs (in one
/// island when asked), lowest free indexes.
fn first_fit(
    cluster: &Cluster,
    used: &mut [Vec<bool>],
    res: &mut [[u64; 3]],
    job: &Job,
) -> Option<Placement> {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let need = [
            u64::from(job.cpu_cores),
            job.memory_bytes,
            job.bandwidth_bps,
        ];
        let cap = [u64::from(node.cpu_cores), node.memory_bytes, node.nic_bps];
        if (0..3).any(|k| res[i][k] + need[k] > cap[k]) {
            continue;
        }
        let pick: Option<Vec<u32>> = if job.same_island {
            node.all_islands().iter().find_map(|isl| {
                let free: Vec<u32> = isl
                    .iter()
                    .copied()
                    .filter(|&g| !used[i][g as usize])
                    .collect();
                (free.len() >= job.gpus as usize).then(|| free[..job.gpus as usize].to_vec())
            })
        } else {
            let free: Vec<u32> = (0..8).filter(|&g| !used[i][g as usize]).collect();
            (free.len() >= job.gpus as usize).then(|| free[..job.gpus as usize].to_vec())
        };
        if let Some(gpus) = pick {
            for &g in &gpus {
                used[i][g as usize] = true;
            }
            for k in 0..3 {
                res[i][k] += need[k];
            }
            return Some(Placement {
                job: job.clone(),
                parts: vec![Part {
                    node: node.name.clone(),
                    gpus,
                    cpu_cores: job.cpu_cores,
                    memory_bytes: job.memory_bytes,
                    bandwidth_bps: job.bandwidth_bps,
                    storage_bps: 0,
                }],
            });
        }
    }
    None
}

/// Free GPUs outside wholly free islands: they can only serve jobs smaller than an island.
fn stranded_of(cluster: &Cluster, running: &[Placement]) -> (u32, u32) {
    let mut used = vec![vec![false; 8]; cluster.nodes.len()];
    let mut placed = 0;
    for p in running {
        for part in &p.parts {
            let i = cluster
                .nodes
                .iter()
                .position(|n| n.name == part.node)
                .unwrap();
            for &g in &part.gpus {
                used[i][g as usize] = true;
                placed += 1;
            }
        }
    }
    let mut stranded = 0;
    for (i, node) in cluster.nodes.iter().enumerate() {
        for isl in node.all_islands() {
            let free = isl.iter().filter(|&&g| !used[i][g as usize]).count() as u32;
            if (free as usize) < isl.len() {
                stranded += free;
            }
        }
    }
    (stranded, placed)
}

fn stranded(seed: u64) {
    println!("## GPUs stranded by a random job mix (100 nodes x 8 H200 in two 4-GPU islands, 400 jobs arrive one by one, half of the arrivals see an earlier job finish)");
    println!("| seed | Strata stranded | first-fit stranded | ratio | Strata GPUs placed | first-fit GPUs placed |");
    println!("|---|---|---|---|---|---|");
    let mut total = (0u32, 0u32);
    for s in seed..seed + 5 {
        let mut rng = StdRng::seed_from_u64(s);
        let base = Cluster {
            revision: 1,
            nodes: (0..100).map(|i| gpu_node(i, i / 16)).collect(),
            running: vec![],
        };
        let jobs: Vec<Job> = (0..400).map(|i| random_job(&mut rng, i, 4)).collect();
        // Draws for departures, the same for both runs.
        let finish: Vec<Vec<f64>> = (0..jobs.len())
            .map(|_| (0..4).map(|_| rng.gen::<f64>()).collect())
            .collect();

        let mut ours = base.clone();
        let mut ff = base.clone();
        let mut used = vec![vec![false; 8]; base.nodes.len()];
        let mut res = vec![[0u64; 3]; base.nodes.len()];
        for (i, job) in jobs.iter().enumerate() {
            let pending = [Pending {
                job: job.clone(),
                seq: i as u64,
            }];
            ours.running
                .extend(admit(&ours, &pending).expect("valid").admitted);
            if let Some(p) = first_fit(&ff, &mut used, &mut res, job) {
                ff.running.push(p);
            }
            // Departures: with probability 1/2 an earlier job (the same one in both runs)
            // finishes, if it is running there.
            if finish[i][0] < 0.5 {
                let gone = format!("job-{:05}", (finish[i][1] * (i + 1) as f64) as usize);
                ours.running.retain(|p| p.job.name != gone);
                ff.running.retain(|p| p.job.name != gone);
                // Rebuild first fit's bookkeeping from its running list.
                used = vec![vec![false; 8]; base.nodes.len()];
                res = vec![[0u64; 3]; base.nodes.len()];
                for p in &ff.running {
                    for part in &p.parts {
                        let n = base.nodes.iter().position(|x| x.name == part.node).unwrap();
                        for &g in &part.gpus {
                            used[n][g as usize] = true;
                        }
                        res[n][0] += u64::from(part.cpu_cores);
                        res[n][1] += part.memory_bytes;
                        res[n][2] += part.bandwidth_bps;
                    }
                }
            }
        }
        let (so, po) = stranded_of(&base, &ours.running);
        let (sf, pf) = stranded_of(&base, &ff.running);
        total.0 += so;
        total.1 += sf;
        let ratio = if sf == 0 {
            "n/a".to_string()
        } else {
            format!("{:.2}x", so as f64 / sf as f64)
        };
        println!("| {s} | {so} | {sf} | {ratio} | {po} | {pf} |");
    }
    println!(
        "| all | {} | {} | {:.2}x | | |",
        total.0,
        total.1,
        total.0 as f64 / total.1.max(1) as f64
    );
    println!("\nStranded: free GPUs in islands that are partly used (they cannot take a 4-GPU same-island job). Lower is better; goal: below first fit.");
}
