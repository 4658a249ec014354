//! Property tests over random small instances: capacities, optimizer against greedy,
//! determinism, no mutation of the input.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use strata_place::admit::{admit, Pending};
use strata_place::{plan, Cluster, GpuGroup, Job, Node, Placement, PlanOptions};

use crate::build::GIB;

fn arb_node(i: usize) -> impl Strategy<Value = Node> {
    (
        prop_oneof![Just(0u32), Just(2), Just(4), Just(8)],
        any::<bool>(),
        8u32..64,
        prop_oneof![Just(64u64), Just(256), Just(512)],
        prop_oneof![Just("H200"), Just("A100")],
        0u8..3,
        any::<bool>(),
    )
        .prop_map(move |(gpus, split, cpu, mem, model, rack, cordoned)| {
            let islands = if split && gpus >= 4 {
                vec![(0..gpus / 2).collect(), (gpus / 2..gpus).collect()]
            } else if gpus > 0 {
                vec![(0..gpus).collect()]
            } else {
                vec![]
            };
            Node {
                name: format!("n{i}"),
                cpu_cores: cpu,
                memory_bytes: mem * GIB,
                gpus: if gpus > 0 {
                    vec![GpuGroup {
                        model: model.into(),
                        count: gpus,
                        memory_bytes: 0,
                    }]
                } else {
                    vec![]
                },
                islands,
                nic_bps: 100_000_000_000,
                storage: vec![],
                labels: [("rack".to_string(), format!("r{rack}"))].into(),
                cordoned: cordoned && i % 3 == 0,
            }
        })
}

fn arb_job(i: usize) -> impl Strategy<Value = Job> {
    (
        0u32..3,
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(2),
            Just(3),
            Just(4),
            Just(8),
            Just(12)
        ],
        prop_oneof![Just(None), Just(Some("H200")), Just(Some("A100"))],
        1u32..32,
        1u64..200,
        0u64..60,
        any::<bool>(),
        any::<bool>(),
        0u8..3,
    )
        .prop_map(
            move |(priority, gpus, model, cpu, mem, bw, island, span, tenant)| Job {
                tenant: format!("t{tenant}"),
                name: format!("j{i}"),
                priority,
                gpus,
                gpu_model: model.map(String::from),
                cpu_cores: cpu,
                memory_bytes: mem * GIB,
                bandwidth_bps: bw * 1_000_000_000,
                storage_bps: 0,
                same_island: island && gpus > 0,
                same_label: span.then(|| "rack".to_string()),
            },
        )
}

fn arb_instance() -> impl Strategy<Value = (Cluster, Vec<Job>)> {
    (1usize..5, 1usize..9).prop_flat_map(|(n, j)| {
        let nodes: Vec<_> = (0..n).map(arb_node).collect();
        let jobs: Vec<_> = (0..j).map(arb_job).collect();
        (nodes, jobs, 0u64..1000).prop_map(|(nodes, jobs, revision)| {
            (
                Cluster {
                    revision,
                    nodes,
                    running: vec![],
                },
                jobs,
            )
        })
    })
}

/// Every capacity holds: the placements, added as running jobs, pass the model's validation
/// (no GPU twice, no node's CPU/memory/bandwidth/storage exceeded), and each part honours the
/// job's model, island and label rules.
fn check_capacities(cluster: &Cluster, placed: &[Placement]) {
    let mut all = cluster.clone();
    all.running.extend(placed.iter().cloned());
    all.validate().expect("placements respect every capacity");
    for p in placed {
        let mut labels = BTreeSet::new();
        for part in &p.parts {
            let node = cluster.nodes.iter().find(|n| n.name == part.node).unwrap();
            assert!(!node.cordoned, "{} on cordoned {}", p.job.name, node.name);
            for &g in &part.gpus {
                let model = node.gpu_model(g).unwrap();
                if let Some(w) = &p.job.gpu_model {
                    assert_eq!(model, w);
                }
            }
            if p.job.same_island && !part.gpus.is_empty() {
                let islands = node.all_islands();
                assert!(
                    islands
                        .iter()
                        .any(|isl| part.gpus.iter().all(|g| isl.contains(g))),
                    "{:?} not in one island of {:?}",
                    part.gpus,
                    islands
                );
            }
            if p.parts.len() > 1 {
                labels.insert(node.labels.get(p.job.same_label.as_ref().unwrap()).cloned());
            }
        }
        assert!(
            labels.len() <= 1,
            "spanning job across label values {labels:?}"
        );
        let models: BTreeSet<&str> = p
            .parts
            .iter()
            .flat_map(|part| {
                let node = cluster.nodes.iter().find(|n| n.name == part.node).unwrap();
                part.gpus.iter().map(move |&g| node.gpu_model(g).unwrap())
            })
            .collect();
        assert!(models.len() <= 1, "mixed models {models:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plans_respect_capacities_beat_greedy_and_are_deterministic((cluster, jobs) in arb_instance()) {
        let before = cluster.clone();
        let opts = PlanOptions { time_limit: Duration::from_secs(20), ..PlanOptions::default() };
        let p = plan(&cluster, &jobs, &opts).unwrap();
        prop_assert_eq!(&cluster, &before, "a plan never mutates its input");
        check_capacities(&cluster, &p.placements);
        prop_assert_eq!(p.placements.len() + p.unplaced.len(), jobs.len());
        prop_assert_eq!(p.revision, cluster.revision);

        let greedy = plan(&cluster, &jobs, &PlanOptions { time_limit: Duration::ZERO, ..opts.clone() }).unwrap();
        check_capacities(&cluster, &greedy.placements);
        prop_assert!(p.score >= greedy.score - 1e-9, "optimizer {} < greedy {}", p.score, greedy.score);
        let weight = |ps: &[Placement]| ps.iter().map(|x| 1 + x.job.priority as u64).sum::<u64>();
        prop_assert!(weight(&p.placements) >= weight(&greedy.placements));

        let again = plan(&cluster, &jobs, &opts).unwrap();
        prop_assert_eq!(&p, &again, "same input, same plan");
    }

    #[test]
    fn admission_respects_capacities((cluster, jobs) in arb_instance()) {
        let before = cluster.clone();
        let pending: Vec<Pending> = jobs.iter().cloned().enumerate().map(|(i, job)| Pending { job, seq: i as u64 }).collect();
        let a = admit(&cluster, &pending).unwrap();
        prop_assert_eq!(&cluster, &before);
        check_capacities(&cluster, &a.admitted);
        prop_assert_eq!(a.admitted.len() + a.waiting.len(), jobs.len());
        prop_assert_eq!(a, admit(&cluster, &pending).unwrap());
    }
}
