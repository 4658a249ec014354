//! Rebalancing volume copies: a bounded number of moves per round that brings every device's
//! used bytes closest to its fair share (its capacity times the class's overall fill).
//!
//! Program (bytes in GiB): `z[c,d]` ∈ {0,1} moves copy c to device d; `t[d]` ≥ |used'(d) −
//! target(d)| where used'(d) = used(d) − Σ out + Σ in. Minimize Σ t + 0.001·Σ z, subject to
//! Σ z ≤ max_moves, each copy moves at most once, used'(d) ≤ capacity(d), and no two copies of
//! a volume in one failure domain (a destination domain already holding a copy of the volume
//! is not a candidate; two copies of one volume cannot both move into the same domain). The
//! greedy (the best single move, repeatedly) runs too; the better imbalance wins, the greedy
//! on a tie.
//!
//! # Invariants
//! - At most `max_moves` moves; capacities hold after all moves; failure domains stay distinct.
//! - Moves only within a device class. Reads the inputs, changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::solver::backend;
use good_lp::{
    variable, Expression, ProblemVariables, Solution, SolverModel, Variable, WithTimeLimit,
};
use serde::{Deserialize, Serialize};

use crate::copies::{domain, DeviceRef, Level};
use crate::model::Node;
use crate::plan::Method;

/// A copy where it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAt {
    /// The volume.
    pub volume: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Where it is.
    pub device: DeviceRef,
}

/// One copy move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyMove {
    /// The volume.
    pub volume: String,
    /// Bytes moved.
    pub bytes: u64,
    /// From.
    pub from: DeviceRef,
    /// To.
    pub to: DeviceRef,
}

/// A round of rebalancing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebalancePlan {
    /// The moves, in copy order.
    pub moves: Vec<CopyMove>,
    /// Σ |used − target| over devices before, bytes.
    pub imbalance_before: f64,
    /// The same after the moves.
    pub imbalance_after: f64,
    /// How the moves were chosen.
    pub method: Method,
    /// The MILP backend of this build ([`crate::SOLVER`]).
    #[serde(default)]
    pub solver: String,
}

/// Knobs of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceOptions {
    /// At most this many moves.
    pub max_moves: usize,
    /// Failure domain level.
    pub level: Level,
    /// Budget for the MILP (zero: greedy only).
    pub time_limit: Duration,
}

struct Dev {
    r: DeviceRef,
    class: String,
    domain: String,
    cap: f64,
    used: f64,
    target: f64,
}

const GIB: f64 = (1u64 << 30) as f64;

fn imbalance(devs: &[Dev], used: &[f64]) -> f64 {
    devs.iter()
        .zip(used)
        .map(|(d, u)| (u - d.target).abs())
        .sum::<f64>()
        * GIB
}

/// Plans one round of moves.
pub fn rebalance(nodes: &[Node], copies: &[CopyAt], opts: &RebalanceOptions) -> RebalancePlan {
    let mut devs: Vec<Dev> = Vec::new();
    for n in nodes {
        for d in &n.storage {
            if let Some(dom) = domain(n, &d.name, &opts.level) {
                let cap = d.capacity_bytes.max(d.free_bytes) as f64 / GIB;
                devs.push(Dev {
                    r: DeviceRef {
                        node: n.name.clone(),
                        device: d.name.clone(),
                    },
                    class: d.class.clone(),
                    domain: if n.cordoned {
                        format!("\u{0}cordoned:{dom}")
                    } else {
                        dom
                    },
                    cap,
                    used: cap - d.free_bytes as f64 / GIB,
                    target: 0.0,
                });
            }
        }
    }
    let mut by_class: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for d in &devs {
        let e = by_class.entry(d.class.as_str()).or_default();
        e.0 += d.used;
        e.1 += d.cap;
    }
    let fills: Vec<f64> = devs
        .iter()
        .map(|d| {
            let (u, c) = by_class[d.class.as_str()];
            if c > 0.0 {
                u / c
            } else {
                0.0
            }
        })
        .collect();
    for (d, f) in devs.iter_mut().zip(fills) {
        d.target = d.cap * f;
    }
    let index: BTreeMap<&DeviceRef, usize> =
        devs.iter().enumerate().map(|(i, d)| (&d.r, i)).collect();
    let cordoned: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.cordoned)
        .map(|n| n.name.as_str())
        .collect();
    let at: Vec<Option<usize>> = copies
        .iter()
        .map(|c| index.get(&c.device).copied())
        .collect();
    // Domains holding a copy of each volume.
    let mut held: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (c, copy) in copies.iter().enumerate() {
        if let Some(i) = at[c] {
            held.entry(copy.volume.as_str())
                .or_default()
                .insert(devs[i].domain.as_str());
        }
    }
    // Candidate moves: same class, a domain without a copy of the volume (or the copy's own).
    let mut cands: Vec<(usize, usize)> = Vec::new();
    for (c, copy) in copies.iter().enumerate() {
        let Some(src) = at[c] else { continue };
        for (dst, d) in devs.iter().enumerate() {
            if dst == src || d.class != devs[src].class || cordoned.contains(d.r.node.as_str()) {
                continue;
            }
            let own = d.domain == devs[src].domain;
            if !own && held[copy.volume.as_str()].contains(d.domain.as_str()) {
                continue;
            }
            if d.cap - d.used < copy.bytes as f64 / GIB {
                continue;
            }
            cands.push((c, dst));
        }
    }
    let used0: Vec<f64> = devs.iter().map(|d| d.used).collect();
    let before = imbalance(&devs, &used0);
    let size = |c: usize| copies[c].bytes as f64 / GIB;

    let apply = |chosen: &[usize]| -> Option<Vec<f64>> {
        let mut used = used0.clone();
        let mut moved = BTreeSet::new();
        let mut into: BTreeSet<(&str, &str)> = BTreeSet::new();
        for &k in chosen {
            let (c, dst) = cands[k];
            if !moved.insert(c) {
                return None;
            }
            if devs[dst].domain != devs[at[c]?].domain
                && !into.insert((copies[c].volume.as_str(), devs[dst].domain.as_str()))
            {
                return None;
            }
            used[at[c]?] -= size(c);
            used[dst] += size(c);
        }
        let fits = used.iter().zip(&devs).all(|(u, d)| *u <= d.cap + 1e-9);
        (chosen.len() <= opts.max_moves && fits).then_some(used)
    };

    // Greedy: the best single move, repeatedly.
    let mut greedy: Vec<usize> = Vec::new();
    let mut g_used = used0.clone();
    while greedy.len() < opts.max_moves {
        let current = imbalance(&devs, &g_used);
        let mut best: Option<(f64, usize)> = None;
        for k in 0..cands.len() {
            let mut trial = greedy.clone();
            trial.push(k);
            if let Some(u) = apply(&trial) {
                let v = imbalance(&devs, &u);
                if v < current - 1e-6 && best.is_none_or(|(b, _)| v < b) {
                    best = Some((v, k));
                }
            }
        }
        let Some((_, k)) = best else { break };
        greedy.push(k);
        g_used = apply(&greedy).expect("checked");
    }
    let mut chosen = greedy.clone();
    let mut after = imbalance(&devs, &g_used);
    let mut method = Method::Greedy;

    if !opts.time_limit.is_zero() && !cands.is_empty() && opts.max_moves > 0 {
        if let Some((milp, optimal)) = solve(&devs, copies, &at, &cands, &size, opts) {
            if let Some(u) = apply(&milp) {
                let v = imbalance(&devs, &u);
                if v < after - 1e-6 {
                    chosen = milp;
                    after = v;
                    method = if optimal {
                        Method::Optimal
                    } else {
                        Method::TimeLimit
                    };
                }
            }
        }
    }
    chosen.sort_by_key(|&k| cands[k]);
    let moves = chosen
        .iter()
        .map(|&k| {
            let (c, dst) = cands[k];
            CopyMove {
                volume: copies[c].volume.clone(),
                bytes: copies[c].bytes,
                from: copies[c].device.clone(),
                to: devs[dst].r.clone(),
            }
        })
        .collect();
    RebalancePlan {
        moves,
        imbalance_before: before,
        imbalance_after: after,
        method,
        solver: crate::SOLVER.to_string(),
    }
}

fn solve(
    devs: &[Dev],
    copies: &[CopyAt],
    at: &[Option<usize>],
    cands: &[(usize, usize)],
    size: &dyn Fn(usize) -> f64,
    opts: &RebalanceOptions,
) -> Option<(Vec<usize>, bool)> {
    let mut vars = ProblemVariables::new();
    let z: Vec<Variable> = cands
        .iter()
        .map(|_| vars.add(variable().binary()))
        .collect();
    let t: Vec<Variable> = devs.iter().map(|_| vars.add(variable().min(0.0))).collect();
    let mut objective = Expression::default();
    for &v in &t {
        objective.add_mul(1.0, v);
    }
    for &v in &z {
        objective.add_mul(0.001, v);
    }
    let mut model = vars
        .minimise(objective)
        .using(backend)
        .with_time_limit(opts.time_limit.as_secs_f64());
    let mut total = Expression::default();
    for &v in &z {
        total.add_mul(1.0, v);
    }
    model = model.with(total.leq(opts.max_moves as f64));
    let mut per_copy: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut per_dom: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    let mut flow: Vec<Expression> = devs.iter().map(|_| Expression::default()).collect();
    for (k, &(c, dst)) in cands.iter().enumerate() {
        per_copy.entry(c).or_default().push(k);
        let src = at[c]?;
        if devs[dst].domain != devs[src].domain {
            per_dom
                .entry((copies[c].volume.as_str(), devs[dst].domain.as_str()))
                .or_default()
                .push(k);
        }
        flow[src].add_mul(-size(c), z[k]);
        flow[dst].add_mul(size(c), z[k]);
    }
    for list in per_copy.values().chain(per_dom.values()) {
        if list.len() > 1 {
            let mut e = Expression::default();
            for &k in list {
                e.add_mul(1.0, z[k]);
            }
            model = model.with(e.leq(1.0));
        }
    }
    for (d, f) in flow.into_iter().enumerate() {
        let dev = &devs[d];
        model = model.with((f.clone() + dev.used).leq(dev.cap));
        model = model.with((f.clone() + dev.used - dev.target - t[d]).leq(0.0));
        model = model.with((dev.target - dev.used - f - t[d]).leq(0.0));
    }
    let solution = model.solve().ok()?;
    let optimal = matches!(solution.status(), good_lp::SolutionStatus::Optimal);
    Some((
        (0..cands.len())
            .filter(|&k| solution.value(z[k]) > 0.5)
            .collect(),
        optimal,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StorageDevice;

    fn node(name: &str, devices: &[(&str, u64, u64)]) -> Node {
        Node {
            name: name.into(),
            cpu_cores: 8,
            memory_bytes: 1 << 34,
            gpus: vec![],
            islands: vec![],
            nic_bps: 0,
            storage: devices
                .iter()
                .map(|(d, cap, used)| StorageDevice {
                    name: (*d).into(),
                    class: "ssd".into(),
                    capacity_bytes: cap << 30,
                    free_bytes: (cap - used) << 30,
                    throughput_bps: 0,
                })
                .collect(),
            labels: Default::default(),
            cordoned: false,
        }
    }

    fn at(v: &str, gib: u64, node: &str, device: &str) -> CopyAt {
        CopyAt {
            volume: v.into(),
            bytes: gib << 30,
            device: DeviceRef {
                node: node.into(),
                device: device.into(),
            },
        }
    }

    #[test]
    fn moves_toward_balance_within_the_bound_and_domains() {
        // n1 holds 60 GiB in six 10 GiB copies, n2 and n3 are empty; v0 also has a copy on n2.
        let nodes = vec![
            node("n1", &[("d0", 100, 60)]),
            node("n2", &[("d0", 100, 10)]),
            node("n3", &[("d0", 100, 0)]),
        ];
        let mut copies: Vec<CopyAt> = (0..6)
            .map(|i| at(&format!("v{i}"), 10, "n1", "d0"))
            .collect();
        copies.push(at("v0", 10, "n2", "d0"));
        let opts = RebalanceOptions {
            max_moves: 2,
            level: Level::Node,
            time_limit: Duration::from_secs(5),
        };
        let plan = rebalance(&nodes, &copies, &opts);
        assert_eq!(plan.moves.len(), 2);
        assert!(plan.imbalance_after < plan.imbalance_before);
        for m in &plan.moves {
            assert_eq!(m.from.node, "n1");
            // v0 may not join its other copy on n2.
            assert!(!(m.volume == "v0" && m.to.node == "n2"), "{m:?}");
        }
        let opts = RebalanceOptions {
            max_moves: 10,
            ..opts
        };
        let plan = rebalance(&nodes, &copies, &opts);
        // Target 70/3 GiB each: n1 to 30 (3 moves), n2 to 20, n3 to 20: imbalance 40/3 GiB.
        assert!(
            (plan.imbalance_after / GIB - 40.0 / 3.0).abs() < 1e-6,
            "{plan:?}"
        );
        assert_eq!(plan.moves.len(), 3);
        let greedy_only = rebalance(
            &nodes,
            &copies,
            &RebalanceOptions {
                time_limit: Duration::ZERO,
                ..opts
            },
        );
        assert!(plan.imbalance_after <= greedy_only.imbalance_after + 1e-6);
    }
}
