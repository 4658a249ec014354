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

use good_lp::solvers::microlp::microlp;
use good_lp::{variable, Expression, ProblemVariables, Solution, SolverModel, Variable};
use serde::{Deserialize, Serialize};

use crate::error::BandwidthError;

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
        .using(microlp)
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
    let mut model = vars.maximise(objective).using(microlp);
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
}
