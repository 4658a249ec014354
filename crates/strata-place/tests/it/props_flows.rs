//! Property tests of the other two plans the engine makes, over random small instances:
//! bandwidth rates on links (`bandwidth::allocate`) and a round of copy moves
//! (`rebalance::rebalance`). Every plan respects every capacity and bound, and the optimizer's
//! objective is never worse than a greedy's on the same instance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use strata_place::bandwidth::{allocate, Flow, Link};
use strata_place::copies::{DeviceRef, Level};
use strata_place::rebalance::{rebalance, CopyAt, RebalanceOptions};
use strata_place::{BandwidthError, Node, StorageDevice};

use crate::build::GIB;

const G: f64 = 1e9;

/// Links of 1 to 100 Gbit/s; flows on a non-empty set of them, each with a demand, a value and
/// a guarantee drawn as a fraction of the demand.
fn arb_rates() -> impl Strategy<Value = (Vec<Link>, Vec<Flow>)> {
    (1usize..4)
        .prop_flat_map(|nl| {
            let links = prop::collection::vec(1u32..100, nl);
            let flows = prop::collection::vec(
                (
                    prop::collection::btree_set(0..nl, 1..=nl),
                    1u32..60,
                    0u32..=100,
                    1u32..20,
                ),
                1..7,
            );
            (links, flows)
        })
        .prop_map(|(links, flows)| {
            let links = links
                .into_iter()
                .enumerate()
                .map(|(i, c)| Link {
                    name: format!("l{i}"),
                    capacity_bps: f64::from(c) * G,
                })
                .collect();
            let flows = flows
                .into_iter()
                .enumerate()
                .map(|(i, (on, demand, pct, value))| {
                    let demand_bps = f64::from(demand) * G;
                    Flow {
                        name: format!("f{i}"),
                        links: on.into_iter().collect(),
                        guarantee_bps: demand_bps * f64::from(pct) / 400.0,
                        demand_bps,
                        value: f64::from(value),
                    }
                })
                .collect();
            (links, flows)
        })
}

fn loads(links: &[Link], flows: &[Flow], rates: &[f64]) -> Vec<f64> {
    let mut load = vec![0.0; links.len()];
    for (f, r) in flows.iter().zip(rates) {
        for &l in &f.links {
            load[l] += r;
        }
    }
    load
}

/// The greedy the optimizer must not lose to: every flow at its guarantee, then the flows by
/// value (highest first, then input order) each raised as far as its links' room allows.
fn greedy_rates(links: &[Link], flows: &[Flow]) -> Vec<f64> {
    let mut rates: Vec<f64> = flows.iter().map(|f| f.guarantee_bps).collect();
    let mut order: Vec<usize> = (0..flows.len()).collect();
    order.sort_by(|&a, &b| flows[b].value.total_cmp(&flows[a].value).then(a.cmp(&b)));
    for i in order {
        let load = loads(links, flows, &rates);
        let room = flows[i]
            .links
            .iter()
            .map(|&l| links[l].capacity_bps - load[l])
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        rates[i] += room.min(flows[i].demand_bps - rates[i]);
    }
    rates
}

fn objective(flows: &[Flow], rates: &[f64]) -> f64 {
    flows.iter().zip(rates).map(|(f, r)| f.value * r).sum()
}

/// Nodes of one or two `ssd` devices each (50 to 200 GiB), and volumes of 1 to 20 GiB with one
/// or two copies in distinct nodes, placed where they fit; free space follows the copies.
fn arb_copies() -> impl Strategy<Value = (Vec<Node>, Vec<CopyAt>)> {
    (
        prop::collection::vec(prop::collection::vec(50u64..200, 1..3), 2..5),
        prop::collection::vec((1u64..20, 1usize..3, any::<u64>()), 1..14),
    )
        .prop_map(|(caps, vols)| {
            let mut used: BTreeMap<(usize, usize), u64> = BTreeMap::new();
            let mut copies = Vec::new();
            for (v, (gib, n, seed)) in vols.into_iter().enumerate() {
                let mut nodes_taken = BTreeSet::new();
                for c in 0..n {
                    // The first device (from a seeded start) with room, on a node the volume
                    // is not on yet.
                    let devs: Vec<(usize, usize)> = caps
                        .iter()
                        .enumerate()
                        .flat_map(|(i, ds)| (0..ds.len()).map(move |d| (i, d)))
                        .collect();
                    let start = (seed as usize).wrapping_add(c * 7) % devs.len();
                    let found = (0..devs.len())
                        .map(|k| devs[(start + k) % devs.len()])
                        .find(|&(i, d)| {
                            !nodes_taken.contains(&i)
                                && used.get(&(i, d)).copied().unwrap_or(0) + gib <= caps[i][d]
                        });
                    let Some((i, d)) = found else { break };
                    nodes_taken.insert(i);
                    *used.entry((i, d)).or_default() += gib;
                    copies.push(CopyAt {
                        volume: format!("v{v}"),
                        bytes: gib * GIB,
                        device: DeviceRef {
                            node: format!("n{i}"),
                            device: format!("d{d}"),
                        },
                    });
                }
            }
            let nodes = caps
                .iter()
                .enumerate()
                .map(|(i, ds)| Node {
                    name: format!("n{i}"),
                    cpu_cores: 8,
                    memory_bytes: 16 * GIB,
                    gpus: vec![],
                    islands: vec![],
                    nic_bps: 0,
                    storage: ds
                        .iter()
                        .enumerate()
                        .map(|(d, &cap)| StorageDevice {
                            name: format!("d{d}"),
                            class: "ssd".into(),
                            capacity_bytes: cap * GIB,
                            free_bytes: (cap - used.get(&(i, d)).copied().unwrap_or(0)) * GIB,
                            throughput_bps: 0,
                        })
                        .collect(),
                    labels: Default::default(),
                    cordoned: false,
                })
                .collect();
            (nodes, copies)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rates_meet_every_bound_and_capacity_and_beat_greedy((links, flows) in arb_rates()) {
        let guaranteed = loads(&links, &flows, &flows.iter().map(|f| f.guarantee_bps).collect::<Vec<_>>());
        let feasible = guaranteed.iter().zip(&links).all(|(g, l)| *g <= l.capacity_bps);
        let a = allocate(&links, &flows);
        if !feasible {
            prop_assert!(matches!(a, Err(BandwidthError::Infeasible(_))), "{a:?}");
            return Ok(());
        }
        let a = a.unwrap();
        prop_assert_eq!(a.rates.len(), flows.len());
        for (f, r) in flows.iter().zip(&a.rates) {
            prop_assert!(*r >= f.guarantee_bps && *r <= f.demand_bps, "{}: {r} outside [{}, {}]", f.name, f.guarantee_bps, f.demand_bps);
        }
        for (l, load) in links.iter().zip(loads(&links, &flows, &a.rates)) {
            prop_assert!(load <= l.capacity_bps * (1.0 + 1e-9) + 1.0, "{}: {load} > {}", l.name, l.capacity_bps);
        }
        prop_assert!((a.objective - objective(&flows, &a.rates)).abs() <= 1e-6 * a.objective.max(1.0));
        let greedy = greedy_rates(&links, &flows);
        let g = objective(&flows, &greedy);
        prop_assert!(a.objective >= g * (1.0 - 1e-6), "optimizer {} < greedy {g}", a.objective);
    }

    #[test]
    fn copy_moves_keep_the_bound_capacities_and_domains_and_beat_greedy((nodes, copies) in arb_copies(), max_moves in 0usize..5) {
        let opts = RebalanceOptions { max_moves, level: Level::Node, time_limit: Duration::from_secs(5) };
        let p = rebalance(&nodes, &copies, &opts);
        prop_assert!(p.moves.len() <= max_moves);
        prop_assert!(p.imbalance_after <= p.imbalance_before + 1024.0, "{p:?}");
        // Apply the moves: each copy at most once, from where it is.
        let mut at: Vec<CopyAt> = copies.clone();
        let mut moved = BTreeSet::new();
        for m in &p.moves {
            let i = at.iter().position(|c| c.volume == m.volume && c.device == m.from);
            prop_assert!(i.is_some(), "a move from where no copy is: {m:?}");
            let i = i.unwrap();
            prop_assert!(moved.insert(i), "copy moved twice: {m:?}");
            prop_assert_eq!(at[i].bytes, m.bytes);
            at[i].device = m.to.clone();
        }
        for n in &nodes {
            for d in &n.storage {
                let r = DeviceRef { node: n.name.clone(), device: d.name.clone() };
                let before: u64 = copies.iter().filter(|c| c.device == r).map(|c| c.bytes).sum();
                let after: u64 = at.iter().filter(|c| c.device == r).map(|c| c.bytes).sum();
                let used = d.capacity_bytes - d.free_bytes - before + after;
                prop_assert!(used <= d.capacity_bytes, "{r:?}: {used} > {}", d.capacity_bytes);
            }
        }
        let mut domains = BTreeSet::new();
        for c in &at {
            prop_assert!(domains.insert((c.volume.clone(), c.device.node.clone())), "two copies of {} on {}", c.volume, c.device.node);
        }
        let greedy = rebalance(&nodes, &copies, &RebalanceOptions { time_limit: Duration::ZERO, ..opts });
        prop_assert!(p.imbalance_after <= greedy.imbalance_after + 1024.0, "optimizer {} > greedy {}", p.imbalance_after, greedy.imbalance_after);
    }
}
