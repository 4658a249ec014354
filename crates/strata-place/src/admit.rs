//! The admission queue: which pending jobs start now, as capacity frees.
//!
//! Order: priority (high first); within a priority, the tenant with the smallest dominant
//! share first (dominant-resource fairness over GPUs, CPU and memory: a tenant's share is the
//! largest of its used fractions of the pool's GPUs, cores and memory, counting running jobs
//! and those admitted earlier in the same decision); then arrival sequence; then tenant and
//! name. Each job in that order is placed greedily (best fit, spanning jobs across a label
//! group) if it fits now; a job that does not fit stays waiting and does not block the ones
//! behind it (backfill).
//!
//! Admission is the fast path: one decision over 1,000 nodes and 1,000 pending jobs is one
//! greedy pass. The optimizer ([`crate::plan()`]) is the batch and what-if path.
//!
//! # Invariants
//! - The decision reads the cluster and never changes it; it carries the cluster's revision.
//! - Admitted parts fit: they come from the same free state the planner uses.
//! - Shares are recomputed after every admission, so a tenant that just got GPUs goes behind
//!   tenants with less, at the same priority.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::free::FreeState;
use crate::greedy::place_one;
use crate::model::{Cluster, Job, JobKey, Placement};
use crate::plan::validate_pending;
use crate::span;

/// A job waiting to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The job.
    pub job: Job,
    /// Arrival order (lower came first).
    pub seq: u64,
}

/// One admission decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// The revision of the snapshot decided on.
    pub revision: u64,
    /// Jobs that start, in the order they were admitted.
    pub admitted: Vec<Placement>,
    /// Jobs that keep waiting, in queue order at the end of the decision.
    pub waiting: Vec<JobKey>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    gpus: u64,
    cpu: u64,
    mem: u64,
}

fn share(u: &Usage, total: &Usage) -> f64 {
    let f = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    f(u.gpus, total.gpus)
        .max(f(u.cpu, total.cpu))
        .max(f(u.mem, total.mem))
}

fn add(u: &mut Usage, p: &Placement) {
    for part in &p.parts {
        u.gpus += part.gpus.len() as u64;
        u.cpu += u64::from(part.cpu_cores);
        u.mem += part.memory_bytes;
    }
}

/// Decides which of `pending` start now on `cluster`.
pub fn admit(cluster: &Cluster, pending: &[Pending]) -> Result<Admission, ModelError> {
    let jobs: Vec<Job> = pending.iter().map(|p| p.job.clone()).collect();
    validate_pending(cluster, &jobs)?;
    let total = cluster.nodes.iter().fold(Usage::default(), |mut t, n| {
        t.gpus += u64::from(n.gpu_count());
        t.cpu += u64::from(n.cpu_cores);
        t.mem += n.memory_bytes;
        t
    });
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for p in &cluster.running {
        add(usage.entry(p.job.tenant.clone()).or_default(), p);
    }
    let mut free = FreeState::new(cluster);
    // Queue order within a priority changes only through shares, so keep one list per
    // priority, each in (seq, key) order, and pick the least-share tenant's first job.
    let mut queues: BTreeMap<std::cmp::Reverse<u32>, Vec<&Pending>> = BTreeMap::new();
    for p in pending {
        queues
            .entry(std::cmp::Reverse(p.job.priority))
            .or_default()
            .push(p);
    }
    let mut admitted = Vec::new();
    let mut waiting = Vec::new();
    for (_, mut queue) in queues {
        queue.sort_by(|a, b| {
            a.seq
                .cmp(&b.seq)
                .then(a.job.tenant.cmp(&b.job.tenant))
                .then(a.job.name.cmp(&b.job.name))
        });
        // Per tenant, its jobs in queue order; pick the tenant with the least share.
        let mut by_tenant: BTreeMap<&str, std::collections::VecDeque<&Pending>> = BTreeMap::new();
        for p in &queue {
            by_tenant
                .entry(p.job.tenant.as_str())
                .or_default()
                .push_back(p);
        }
        loop {
            let next = by_tenant
                .iter()
                .filter_map(|(t, q)| q.front().map(|p| (*t, p)))
                .min_by(|(ta, pa), (tb, pb)| {
                    let sa = share(usage.get(*ta).unwrap_or(&Usage::default()), &total);
                    let sb = share(usage.get(*tb).unwrap_or(&Usage::default()), &total);
                    sa.total_cmp(&sb).then(pa.seq.cmp(&pb.seq)).then(ta.cmp(tb))
                })
                .map(|(t, _)| t);
            let Some(tenant) = next else { break };
            let p = by_tenant
                .get_mut(tenant)
                .and_then(|q| q.pop_front())
                .expect("tenant picked has a job");
            let job = &p.job;
            let placed = if span::spans(cluster, job) {
                span::place(&mut free, job)
            } else {
                place_one(&mut free, 0, job).map(|(_, part)| vec![part])
            };
            match placed {
                Some(parts) => {
                    let placement = Placement {
                        job: job.clone(),
                        parts,
                    };
                    add(usage.entry(job.tenant.clone()).or_default(), &placement);
                    admitted.push(placement);
                }
                None => waiting.push(job.key()),
            }
        }
    }
    Ok(Admission {
        revision: cluster.revision,
        admitted,
        waiting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GpuGroup, Node};

    fn node(name: &str, gpus: u32) -> Node {
        Node {
            name: name.into(),
            cpu_cores: 64,
            memory_bytes: 1 << 40,
            gpus: vec![GpuGroup {
                model: "H200".into(),
                count: gpus,
                memory_bytes: 0,
            }],
            islands: vec![],
            nic_bps: 0,
            storage: vec![],
            labels: Default::default(),
            cordoned: false,
        }
    }

    fn job(tenant: &str, name: &str, priority: u32, gpus: u32) -> Job {
        Job {
            tenant: tenant.into(),
            name: name.into(),
            priority,
            gpus,
            gpu_model: None,
            cpu_cores: 1,
            memory_bytes: 0,
            bandwidth_bps: 0,
            storage_bps: 0,
            same_island: false,
            same_label: None,
        }
    }

    fn pend(jobs: Vec<Job>) -> Vec<Pending> {
        jobs.into_iter()
            .enumerate()
            .map(|(i, job)| Pending { job, seq: i as u64 })
            .collect()
    }

    #[test]
    fn priority_first_then_fair_share() {
        let cluster = Cluster {
            revision: 7,
            nodes: vec![node("n1", 4)],
            running: vec![],
        };
        // Tenant a arrived first with three jobs; b's single job still goes second, because
        // after a's first job a holds 1/4 of the GPUs and b none.
        let pending = pend(vec![
            job("a", "a1", 0, 1),
            job("a", "a2", 0, 1),
            job("a", "a3", 0, 1),
            job("b", "b1", 0, 1),
            job("c", "hi", 5, 1),
        ]);
        let adm = admit(&cluster, &pending).unwrap();
        let names: Vec<&str> = adm.admitted.iter().map(|p| p.job.name.as_str()).collect();
        assert_eq!(names, ["hi", "a1", "b1", "a2"]);
        assert_eq!(adm.waiting, vec![job("a", "a3", 0, 1).key()]);
        assert_eq!(adm.revision, 7);
    }

    #[test]
    fn a_job_that_does_not_fit_does_not_block_smaller_ones() {
        let cluster = Cluster {
            revision: 1,
            nodes: vec![node("n1", 4)],
            running: vec![],
        };
        let pending = pend(vec![job("a", "big", 1, 8), job("a", "small", 0, 2)]);
        let adm = admit(&cluster, &pending).unwrap();
        assert_eq!(adm.admitted.len(), 1);
        assert_eq!(adm.admitted[0].job.name, "small");
        assert_eq!(adm.waiting[0].name, "big");
    }
}
