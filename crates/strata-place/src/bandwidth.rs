//! Bandwidth: the seed's share model, and its generalization to many jobs' flows on links.
//!
//! The seed: virtual networks i with reward Rᵢ per unit of share, demand Bᵢ, on one link of
//! capacity C; choose shares Pᵢ to maximize Σ Rᵢ·Pᵢ subject to Σ Pᵢ = 1 and 0 ≤ Pᵢ ≤ Bᵢ/C.
//!
//! The generalization: flows f (a job's traffic, on the links of its path) get a rate xᶠ with
//! guarantee ≤ xᶠ ≤ demand, links carry at most their capacity, and the allocation maximizes
//! Σ valueᶠ·xᶠ. The seed is the one-link case with guarantee 0 and demand Bᵢ (rates xᵢ = Pᵢ·C),
//! except that the seed also insists the shares add up to one (the link is used in full).
//!
//! # Invariants
//! - Every allocation meets every guarantee and no link's capacity is exceeded (beyond solver
//!   tolerance, which the result clamps away: rates are clamped into their bounds).
//! - Input is checked before solving; a bad model answers `Invalid` and solves nothing.

use crate::solver::backend;
use good_lp::{variable, Expression, ProblemVariables, Solution, SolverModel, Variable};
use serde::{Deserialize, Serialize};

use crate::error::BandwidthError;
use crate::model::{Cluster, JobKey, Placement};

/// The seed's answer: one share per virtual network, and the objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shares {
    /// Pᵢ, in input order.
    pub shares: Vec<f64>,
    /// Σ Rᵢ·Pᵢ.
    pub objective: f64,
}

fn finite_nonneg(what: &str, v: f64) -> Result<(), BandwidthError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(BandwidthError::Invalid(format!(
            "{what} must be finite and >= 0, got {v}"
        )))
    }
}

/// Solves the seed's model exactly as stated.
pub fn seed_shares(
    rewards: &[f64],
    demands: &[f64],
    capacity: f64,
) -> Result<Shares, BandwidthError> {
    if rewards.len() != demands.len() || rewards.is_empty() {
        return Err(BandwidthError::Invalid(
            "one reward and one demand per network".into(),
        ));
    }
    if !(capacity.is_finite() && capacity > 0.0) {
        return Err(BandwidthError::Invalid(
            "capacity must be finite and > 0".into(),
        ));
    }
    for (&r, &b) in rewards.iter().zip(demands) {
        finite_nonneg("reward", r)?;
        finite_nonneg("demand", b)?;
    }
    let caps: Vec<f64> = demands.iter().map(|b| (b / capacity).min(1.0)).collect();
    if caps.iter().sum::<f64>() < 1.0 - 1e-12 {
        return Err(BandwidthError::Infeasible(
            "the demands together are less than the link: shares cannot add up to one".into(),
        ));
    }
    let mut vars = ProblemVariables::new();
    let p: Vec<Variable> = caps
        .iter()
        .map(|&u| vars.add(variable().clamp(0.0, u)))
        .collect();
    let mut objective = Expression::with_capacity(p.len());
    let mut sum = Expression::with_capacity(p.len());
    for (i, &v) in p.iter().enumerate() {
        objective.add_mul(rewards[i], v);
        sum.add_mul(1.0, v);
    }
    let solution = vars
        .maximise(objective)
        .using(backend)
        .with(sum.eq(1.0))
        .solve()
        .map_err(|e| BandwidthError::Infeasible(e.to_string()))?;
    let shares: Vec<f64> = p
        .iter()
        .zip(&caps)
        .map(|(&v, &u)| solution.value(v).clamp(0.0, u))
        .collect();
    let objective = shares.iter().zip(rewards).map(|(p, r)| p * r).sum();
    Ok(Shares { shares, objective })
}

/// A network link (a NIC, an uplink, a slice of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Name, for messages.
    pub name: String,
    /// Capacity, bits per second.
    pub capacity_bps: f64,
}

/// One job's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// Name, for messages (a job key, a slice).
    pub name: String,
    /// Indexes of the links it crosses.
    pub links: Vec<usize>,
    /// Guaranteed rate, bits per second.
    pub guarantee_bps: f64,
    /// The most it can use, bits per second.
    pub demand_bps: f64,
    /// Value of one bit per second of it (the seed's Rᵢ per unit).
    pub value: f64,
}

/// Rates per flow, in input order, and Σ value·rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Rate of each flow, bits per second.
    pub rates: Vec<f64>,
    /// Σ valueᶠ·xᶠ.
    pub objective: f64,
}

/// Allocates rates to flows on links (the generalized seed model).
pub fn allocate(links: &[Link], flows: &[Flow]) -> Result<Allocation, BandwidthError> {
    for l in links {
        finite_nonneg("link capacity", l.capacity_bps)?;
    }
    let mut load = vec![0.0; links.len()];
    for f in flows {
        finite_nonneg("guarantee", f.guarantee_bps)?;
        finite_nonneg("demand", f.demand_bps)?;
        finite_nonneg("value", f.value)?;
        if f.guarantee_bps > f.demand_bps {
            return Err(BandwidthError::Invalid(format!(
                "flow {}: guarantee above demand",
                f.name
            )));
        }
        for &l in &f.links {
            if l >= links.len() {
                return Err(BandwidthError::Invalid(format!(
                    "flow {}: no link {l}",
                    f.name
                )));
            }
            load[l] += f.guarantee_bps;
        }
    }
    for (l, link) in links.iter().enumerate() {
        if load[l] > link.capacity_bps * (1.0 + 1e-12) {
            return Err(BandwidthError::Infeasible(format!(
                "link {}: guarantees {} exceed capacity {}",
                link.name, load[l], link.capacity_bps
            )));
        }
    }
    if flows.is_empty() {
        return Ok(Allocation {
            rates: vec![],
            objective: 0.0,
        });
    }
    // Rates in Gbit/s inside the program keep the coefficients near one.
    const SCALE: f64 = 1e9;
    let mut vars = ProblemVariables::new();
    let x: Vec<Variable> = flows
        .iter()
        .map(|f| vars.add(variable().clamp(f.guarantee_bps / SCALE, f.demand_bps / SCALE)))
        .collect();
    let mut objective = Expression::with_capacity(x.len());
    for (f, &v) in flows.iter().zip(&x) {
        objective.add_mul(f.value, v);
    }
    let mut model = vars.maximise(objective).using(backend);
    for (l, link) in links.iter().enumerate() {
        let mut e = Expression::default();
        let mut any = false;
        for (f, &v) in flows.iter().zip(&x) {
            if f.links.contains(&l) {
                e.add_mul(1.0, v);
                any = true;
            }
        }
        if any {
            model = model.with(e.leq(link.capacity_bps / SCALE));
        }
    }
    let solution = model
        .solve()
        .map_err(|e| BandwidthError::Infeasible(e.to_string()))?;
    let mut rates: Vec<f64> = flows
        .iter()
        .zip(&x)
        .map(|(f, &v)| (solution.value(v) * SCALE).clamp(f.guarantee_bps, f.demand_bps))
        .collect();
    // Clamp away solver tolerance on each link, taking it from above the guarantees.
    for (l, link) in links.iter().enumerate() {
        let used: f64 = flows
            .iter()
            .zip(&rates)
            .filter(|(f, _)| f.links.contains(&l))
            .map(|(_, r)| r)
            .sum();
        if used > link.capacity_bps {
            let over = used - link.capacity_bps;
            let room: f64 = flows
                .iter()
                .zip(&rates)
                .filter(|(f, _)| f.links.contains(&l))
                .map(|(f, r)| r - f.guarantee_bps)
                .sum();
            for (f, r) in flows.iter().zip(rates.iter_mut()) {
                if f.links.contains(&l) && room > 0.0 {
                    *r -= over * (*r - f.guarantee_bps) / room;
                }
            }
        }
    }
    let objective = flows.iter().zip(&rates).map(|(f, r)| f.value * r).sum();
    Ok(Allocation { rates, objective })
}

/// One part's share of its node's NIC, as the planner assigns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicShare {
    /// The job.
    pub job: JobKey,
    /// The node whose NIC carries the part.
    pub node: String,
    /// The part's guaranteed rate (its share of the job's bandwidth), bits per second.
    pub guarantee_bps: u64,
    /// The rate [`allocate`] gives it when every flow on the NIC wants the whole link: its
    /// guarantee plus its share of what no guarantee holds (to the higher priorities first).
    pub rate_bps: u64,
    /// The NIC's capacity, bits per second.
    pub link_bps: u64,
    /// Guarantees on the NIC with this part, of running and newly placed parts.
    pub link_guaranteed_bps: u64,
}

/// The bandwidth assignment of newly placed jobs (`new`) on their nodes' NICs, beside the
/// parts of `cluster`'s running jobs: per node, one link of the NIC's capacity, one flow per
/// part with a bandwidth (guarantee = the part's bandwidth, demand = the link, value = 1 +
/// the job's priority), solved by [`allocate`]. One entry per new part with a bandwidth, in
/// the order of `new` and its parts. `Infeasible` when the guarantees on a NIC exceed it.
pub fn assign_nics(cluster: &Cluster, new: &[Placement]) -> Result<Vec<NicShare>, BandwidthError> {
    let mut nodes: Vec<&str> = new
        .iter()
        .flat_map(|pl| pl.parts.iter())
        .filter(|p| p.bandwidth_bps > 0)
        .map(|p| p.node.as_str())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    // Each new part's share, with its place in `new` for the order.
    let mut shares: Vec<((usize, usize), NicShare)> = Vec::new();
    for node in nodes {
        let Some(n) = cluster.nodes.iter().find(|n| n.name == node) else {
            return Err(BandwidthError::Invalid(format!("no node {node}")));
        };
        let links = [Link {
            name: format!("{node} NIC"),
            capacity_bps: n.nic_bps as f64,
        }];
        let mut flows = Vec::new();
        // Which flows are new parts: (index in new, index in parts).
        let mut mine: Vec<Option<(usize, usize)>> = Vec::new();
        let running = cluster.running.iter().map(|pl| (None, pl));
        let added = new.iter().enumerate().map(|(i, pl)| (Some(i), pl));
        for (i, pl) in running.chain(added) {
            for (k, part) in pl.parts.iter().enumerate() {
                if part.node != node || part.bandwidth_bps == 0 {
                    continue;
                }
                flows.push(Flow {
                    name: pl.job.key().to_string(),
                    links: vec![0],
                    guarantee_bps: part.bandwidth_bps as f64,
                    demand_bps: (n.nic_bps as f64).max(part.bandwidth_bps as f64),
                    value: 1.0 + f64::from(pl.job.priority),
                });
                mine.push(i.map(|i| (i, k)));
            }
        }
        let guaranteed: u64 = flows.iter().map(|f| f.guarantee_bps as u64).sum();
        let a = allocate(&links, &flows)?;
        for ((f, r), m) in flows.iter().zip(&a.rates).zip(&mine) {
            if let Some((i, k)) = *m {
                let g = f.guarantee_bps as u64;
                shares.push((
                    (i, k),
                    NicShare {
                        job: new[i].job.key(),
                        node: node.to_string(),
                        guarantee_bps: g,
                        // Whole bits, never below the guarantee nor above the link.
                        rate_bps: (r.floor() as u64).clamp(g, n.nic_bps.max(g)),
                        link_bps: n.nic_bps,
                        link_guaranteed_bps: guaranteed,
                    },
                ));
            }
        }
    }
    shares.sort_by_key(|s| s.0);
    Ok(shares.into_iter().map(|s| s.1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's worked example. The answer printed with it, P_A = 0.8 and P_B = 0.2, is
    /// feasible but reaches only 100·0.8 + 50·0.2 = 90: the optimum puts the whole link on the
    /// network with the higher reward, which its demand (B_A/C = 1) allows.
    #[test]
    fn seed_worked_example() {
        let s = seed_shares(&[100.0, 50.0], &[10.0, 5.0], 10.0).unwrap();
        assert!((s.shares[0] - 1.0).abs() < 1e-9, "{s:?}");
        assert!(s.shares[1].abs() < 1e-9, "{s:?}");
        assert!((s.objective - 100.0).abs() < 1e-9);
        let printed = 100.0 * 0.8 + 50.0 * 0.2;
        assert!(printed < s.objective);
    }

    #[test]
    fn seed_caps_bind_when_the_best_network_cannot_fill_the_link() {
        // B_A/C = 0.6: A gets 0.6, B the remaining 0.4.
        let s = seed_shares(&[100.0, 50.0], &[6.0, 10.0], 10.0).unwrap();
        assert!((s.shares[0] - 0.6).abs() < 1e-9 && (s.shares[1] - 0.4).abs() < 1e-9);
        assert!((s.objective - 80.0).abs() < 1e-9);
        assert!(matches!(
            seed_shares(&[1.0, 1.0], &[2.0, 3.0], 10.0),
            Err(BandwidthError::Infeasible(_))
        ));
    }

    #[test]
    fn general_model_reproduces_the_seed_on_one_link() {
        let links = [Link {
            name: "l".into(),
            capacity_bps: 10.0e9,
        }];
        let flow = |name: &str, demand: f64, value: f64| Flow {
            name: name.into(),
            links: vec![0],
            guarantee_bps: 0.0,
            demand_bps: demand,
            value,
        };
        // Value per bit/s is the seed's reward per unit share divided by C.
        let a = allocate(&links, &[flow("A", 10.0e9, 10.0), flow("B", 5.0e9, 5.0)]).unwrap();
        assert!(
            (a.rates[0] - 10.0e9).abs() < 1.0 && a.rates[1].abs() < 1.0,
            "{a:?}"
        );
    }

    #[test]
    fn guarantees_and_shared_links() {
        // Two links; flow 0 crosses both, 1 only the first, 2 only the second.
        let links = [
            Link {
                name: "a".into(),
                capacity_bps: 100.0,
            },
            Link {
                name: "b".into(),
                capacity_bps: 60.0,
            },
        ];
        let flows = [
            Flow {
                name: "x".into(),
                links: vec![0, 1],
                guarantee_bps: 20.0,
                demand_bps: 100.0,
                value: 3.0,
            },
            Flow {
                name: "y".into(),
                links: vec![0],
                guarantee_bps: 10.0,
                demand_bps: 100.0,
                value: 1.0,
            },
            Flow {
                name: "z".into(),
                links: vec![1],
                guarantee_bps: 30.0,
                demand_bps: 30.0,
                value: 1.0,
            },
        ];
        let a = allocate(&links, &flows).unwrap();
        // z is pinned at 30, so x gets the rest of b (30), y the rest of a (70).
        let want = [30.0, 70.0, 30.0];
        for (r, w) in a.rates.iter().zip(want) {
            assert!((r - w).abs() < 1e-6, "{a:?}");
        }
        let mut over = flows.clone();
        over[2].guarantee_bps = 50.0;
        over[2].demand_bps = 50.0;
        assert!(matches!(
            allocate(&links, &over),
            Err(BandwidthError::Infeasible(_))
        ));
        over[2].links = vec![7];
        assert!(matches!(
            allocate(&links, &over),
            Err(BandwidthError::Invalid(_))
        ));
    }

    fn placed(name: &str, priority: u32, parts: &[(&str, u64)]) -> Placement {
        Placement {
            job: crate::model::Job {
                tenant: "t".into(),
                name: name.into(),
                priority,
                gpus: 0,
                gpu_model: None,
                cpu_cores: 0,
                memory_bytes: 0,
                bandwidth_bps: parts.iter().map(|p| p.1).sum(),
                storage_bps: 0,
                same_island: false,
                same_label: None,
            },
            parts: parts
                .iter()
                .map(|&(node, bw)| crate::model::Part {
                    node: node.into(),
                    gpus: vec![],
                    cpu_cores: 0,
                    memory_bytes: 0,
                    bandwidth_bps: bw,
                    storage_bps: 0,
                })
                .collect(),
        }
    }

    fn cluster(nic: u64, running: Vec<Placement>) -> Cluster {
        let mut a = crate::model::tests::node("a", 8);
        a.nic_bps = nic;
        let mut b = crate::model::tests::node("b", 8);
        b.nic_bps = nic;
        Cluster {
            revision: 1,
            nodes: vec![a, b],
            running,
        }
    }

    #[test]
    fn nic_shares_count_running_guarantees_and_give_spare_to_priority() {
        const G: u64 = 1_000_000_000;
        let c = cluster(100 * G, vec![placed("old", 0, &[("a", 60 * G)])]);
        let new = [
            placed("hi", 5, &[("a", 30 * G), ("b", 10 * G)]),
            placed("none", 0, &[("b", 0)]),
        ];
        let s = assign_nics(&c, &new).unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].node.as_str(), s[0].guarantee_bps), ("a", 30 * G));
        assert_eq!((s[0].link_bps, s[0].link_guaranteed_bps), (100 * G, 90 * G));
        // The higher priority takes what no guarantee holds: 30 + 10.
        assert!(
            (s[0].rate_bps as i64 - (40 * G) as i64).abs() < 1000,
            "{s:?}"
        );
        assert_eq!(
            (s[1].node.as_str(), s[1].link_guaranteed_bps),
            ("b", 10 * G)
        );
        assert!(s[1].rate_bps.abs_diff(100 * G) < 1000, "{s:?}");
        // One more guarantee than the NIC holds: infeasible, in the NIC's name.
        let over = [placed("big", 0, &[("a", 41 * G)])];
        match assign_nics(&c, &over) {
            Err(BandwidthError::Infeasible(m)) => assert!(m.contains("a NIC"), "{m}"),
            x => panic!("{x:?}"),
        }
        // A part on a node the cluster does not have.
        assert!(matches!(
            assign_nics(&c, &[placed("x", 0, &[("zz", 1)])]),
            Err(BandwidthError::Invalid(_))
        ));
    }

    proptest::proptest! {
        /// Every share meets its guarantee, and the rates on a NIC, with the running jobs'
        /// guarantees, never exceed it; the same input gives the same shares.
        #[test]
        fn nic_shares_meet_guarantees_within_the_link(
            nic in 1u64..1_000_000_000_000,
            old in proptest::collection::vec((0u32..4, 0u64..1000), 0..4),
            new in proptest::collection::vec((0u32..4, 0u64..1000, 0u64..1000), 1..5),
        ) {
            // Guarantees in thousandths of the NIC, scaled so that they fit together.
            let total: u64 = old.iter().map(|o| o.1).sum::<u64>()
                + new.iter().map(|n| n.1 + n.2).sum::<u64>();
            let unit = nic / total.max(1000);
            let running: Vec<Placement> = old.iter().enumerate()
                .map(|(i, &(p, g))| placed(&format!("o{i}"), p, &[("a", g * unit)]))
                .collect();
            let c = cluster(nic, running);
            let new: Vec<Placement> = new.iter().enumerate()
                .map(|(i, &(p, ga, gb))| {
                    placed(&format!("n{i}"), p, &[("a", ga * unit), ("b", gb * unit)])
                })
                .collect();
            let s = assign_nics(&c, &new).unwrap();
            proptest::prop_assert_eq!(&s, &assign_nics(&c, &new).unwrap());
            let want: usize = new.iter().flat_map(|p| &p.parts)
                .filter(|p| p.bandwidth_bps > 0).count();
            proptest::prop_assert_eq!(s.len(), want);
            for node in ["a", "b"] {
                let old_g: u64 = c.running.iter().flat_map(|p| &p.parts)
                    .filter(|p| p.node == node).map(|p| p.bandwidth_bps).sum();
                let mine: Vec<&NicShare> = s.iter().filter(|x| x.node == node).collect();
                let rates: u64 = mine.iter().map(|x| x.rate_bps).sum();
                for x in &mine {
                    proptest::prop_assert!(x.rate_bps >= x.guarantee_bps);
                    proptest::prop_assert!(x.link_guaranteed_bps <= nic);
                }
                // Running parts keep at least their guarantees.
                proptest::prop_assert!(rates + old_g <= nic + mine.len() as u64,
                    "rates {} + running {} > nic {}", rates, old_g, nic);
            }
        }
    }
}
