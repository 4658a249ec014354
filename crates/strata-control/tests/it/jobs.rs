//! Jobs through the controller under concurrency: the GPU quota is exact (never passed, usage
//! equal to the accepted jobs' GPUs) and admission never gives a GPU twice.

use std::collections::BTreeSet;

use strata_control::controller::{CreateJob, JobState};
use strata_control::{Quota, Role};

use crate::fixture::Fixture;

const NODE: &str =
    "nodes:\n  - {name: n1, cpu: 64, memory: 1Ti, gpus: [{model: H200, count: 8}]}\n";

fn job(name: &str, gpus: u32) -> CreateJob {
    CreateJob {
        name: name.into(),
        tenant: None,
        job: strata_place::Job {
            tenant: String::new(),
            name: name.into(),
            priority: 0,
            gpus,
            gpu_model: None,
            cpu_cores: 1,
            memory_bytes: 0,
            bandwidth_bps: 0,
            storage_bps: 0,
            same_island: false,
            same_label: None,
        },
        revision: None,
        slice: Default::default(),
    }
}

#[test]
fn concurrent_creates_keep_the_gpu_quota_and_never_share_a_gpu() {
    let f = Fixture::new();
    let quota = Quota {
        gpus: Some(12),
        ..Default::default()
    };
    f.c.create_tenant(&f.admin, "acme", quota).unwrap();
    f.c.declare_nodes(&f.admin, NODE).unwrap();
    let p = f.token("acme", Role::Member);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let (c, p) = (&f.c, &p);
                s.spawn(move || c.create_job(p, job(&format!("j{i}"), 1)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 12, "exactly the quota's GPUs are accepted");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(r, strata_control::ControlError::QuotaExceeded { .. }),
            "{r}"
        );
    }
    let t = f.c.get_tenant(&f.admin, "acme").unwrap();
    assert_eq!(t.usage.gpus, 12);
    let jobs = f.c.list_jobs(&f.admin, None).unwrap();
    let running: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    assert_eq!(running.len(), 8, "the node has 8 GPUs");
    let mut held = BTreeSet::new();
    for j in &running {
        for part in &j.parts {
            for g in &part.gpus {
                assert!(held.insert((part.node.clone(), *g)), "GPU {g} given twice");
            }
        }
    }
    // Deleting two running jobs admits two waiting ones and gives back their GPUs.
    for j in running.iter().take(2) {
        f.c.delete_job(&p, None, &j.job.name).unwrap();
    }
    let jobs = f.c.list_jobs(&f.admin, None).unwrap();
    assert_eq!(
        jobs.iter().filter(|j| j.state == JobState::Running).count(),
        8
    );
    assert_eq!(f.c.get_tenant(&f.admin, "acme").unwrap().usage.gpus, 10);
}
