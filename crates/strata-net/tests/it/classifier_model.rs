//! Model test: the pipeline with its EMC and megaflow caches, across random rule insertions and
//! deletions, must decide exactly what a linear scan over the same rules decides.
//!
//! A failure prints the minimal case; proptest stores its seed under `proptest-regressions/`
//! and replays it first on the next run (set `PROPTEST_RNG_SEED` to pick a seed).

use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;
use strata_net::flow::{apply_to_key, Action, FlowRule, SetField};
use strata_net::key::{Field, FlowKey, Match, VLAN_PRESENT};
use strata_net::pipeline::{CacheConfig, Pipeline, RuleId};

#[derive(Debug, Clone)]
enum Op {
    Add(FlowRule),
    Remove(usize),
    Lookup(FlowKey),
}

const NW: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(10, 0, 1, 1),
    Ipv4Addr::new(10, 1, 0, 1),
    Ipv4Addr::new(11, 0, 0, 1),
];

fn key_strategy() -> impl Strategy<Value = FlowKey> {
    (
        1u32..4,
        prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806]),
        prop::sample::select(vec![6u8, 17]),
        0usize..4,
        prop::sample::select(vec![80u16, 443, 22]),
        prop::sample::select(vec![0u16, 10, 20]),
        0u32..3,
    )
        .prop_map(|(port, et, proto, nw, tp, vlan, reg)| {
            let mut k = FlowKey::ZERO;
            k.set(Field::InPort, port as u64);
            k.set(Field::EthType, et as u64);
            if vlan != 0 {
                k.set(Field::VlanTci, (VLAN_PRESENT | vlan) as u64);
            }
            if et != 0x0806 {
                k.set(Field::NwProto, proto as u64);
                k.set(Field::TpDst, tp as u64);
            }
            k.set(Field::NwDst, u32::from(NW[nw]) as u64);
            k.set(Field::Reg(0), reg as u64);
            k
        })
}

fn action_strategy(table: u8) -> impl Strategy<Value = Vec<Action>> {
    let simple = prop_oneof![
        (1u32..5).prop_map(Action::Output),
        Just(Action::Flood),
        (0u32..3).prop_map(|v| Action::SetField(SetField::Reg(0, v))),
        (0u64..4, prop::sample::select(vec![0x1u64, 0x3, u64::MAX])).prop_map(|(v, m)| {
            Action::WriteMetadata {
                value: v & m,
                mask: m,
            }
        }),
        prop::sample::select(vec![10u16, 20, 30]).prop_map(Action::ModVlanVid),
        Just(Action::PopVlan),
    ];
    (
        prop::collection::vec(simple, 0..3),
        prop::option::of(0u8..4),
    )
        .prop_map(move |(mut v, goto)| {
            if let Some(t) = goto.filter(|&t| t > table) {
                v.push(Action::GotoTable(t));
            }
            v
        })
}

fn rule_strategy() -> impl Strategy<Value = FlowRule> {
    (0u8..4).prop_flat_map(|table| {
        (
            Just(table),
            prop::sample::select(vec![1u16, 2, 3, 10]),
            prop::option::of(1u32..4),
            prop::option::of(prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806])),
            prop::option::of(prop::sample::select(vec![6u8, 17])),
            prop::option::of((0usize..4, prop::sample::select(vec![8u32, 16, 24, 32]))),
            prop::option::of((
                prop::sample::select(vec![80u16, 443, 22]),
                prop::sample::select(vec![0xffffu16, 0xff00]),
            )),
            prop::option::of(prop::sample::select(vec![0u16, 10, 20, 30, 0xffff])),
            prop::option::of((0u64..4, prop::sample::select(vec![0x1u64, 0x3]))),
            prop::option::of(0u32..3),
            action_strategy(table),
        )
            .prop_map(
                |(table, prio, port, et, proto, nw, tp, vlan, meta, reg, actions)| {
                    let mut m = Match::ANY;
                    if let Some(p) = port {
                        m.set_exact(Field::InPort, p as u64);
                    }
                    if let Some(et) = et {
                        m.set_exact(Field::EthType, et as u64);
                        let ip = et != 0x0806;
                        if ip {
                            if let Some(pr) = proto {
                                m.set_exact(Field::NwProto, pr as u64);
                                if let Some((tp, mask)) = tp {
                                    m.set_masked(Field::TpDst, tp as u64, mask as u64);
                                }
                            }
                        }
                        if et != 0x86dd {
                            if let Some((i, plen)) = nw {
                                let mask = u32::MAX << (32 - plen);
                                m.set_masked(Field::NwDst, u32::from(NW[i]) as u64, mask as u64);
                            }
                        }
                    }
                    match vlan {
                        Some(0xffff) => m.set_masked(Field::VlanTci, 0, 0xffff),
                        Some(v) => m.set_masked(Field::VlanTci, (VLAN_PRESENT | v) as u64, 0x1fff),
                        None => {}
                    }
                    if let Some((v, mask)) = meta {
                        m.set_masked(Field::Metadata, v, mask);
                    }
                    if let Some(r) = reg {
                        m.set_exact(Field::Reg(0), r as u64);
                    }
                    FlowRule {
                        table,
                        priority: prio,
                        matches: m,
                        actions,
                        ..Default::default()
                    }
                },
            )
    })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => rule_strategy().prop_map(Op::Add),
        1 => any::<usize>().prop_map(Op::Remove),
        6 => key_strategy().prop_map(Op::Lookup),
    ]
}

/// The reference: a linear scan, table by table.
fn linear(rules: &[(u64, FlowRule)], key: &FlowKey) -> Vec<Action> {
    let mut ops = Vec::new();
    let mut k = *key;
    let mut table = 0u8;
    loop {
        let best = rules
            .iter()
            .filter(|(_, r)| r.table == table && r.matches.matches(&k))
            .min_by_key(|(seq, r)| (std::cmp::Reverse(r.priority), *seq));
        let Some((_, r)) = best else { break };
        let mut next = None;
        for a in &r.actions {
            if let Action::GotoTable(t) = a {
                next = Some(*t);
            } else {
                apply_to_key(a, &mut k);
                ops.push(a.clone());
            }
        }
        match next {
            Some(t) => table = t,
            None => break,
        }
    }
    ops
}

fn run(ops: &[Op], cfg: CacheConfig) -> Result<(), TestCaseError> {
    let mut p = Pipeline::new(cfg);
    let mut model: Vec<(u64, FlowRule, RuleId)> = Vec::new();
    let mut seq = 0u64;
    let now = Duration::ZERO;
    for op in ops {
        match op {
            Op::Add(r) => {
                let id = p
                    .add_rule(r.clone(), now)
                    .expect("generated rules are valid");
                // add-flow replaces a rule with the same table, match and priority.
                model.retain(|(_, m, _)| {
                    !(m.table == r.table && m.priority == r.priority && m.matches == r.matches)
                });
                model.push((seq, r.clone(), id));
                seq += 1;
            }
            Op::Remove(i) => {
                if !model.is_empty() {
                    let (_, _, id) = model.remove(i % model.len());
                    prop_assert!(p.remove_rule(id).is_some());
                }
            }
            Op::Lookup(k) => {
                let plain: Vec<(u64, FlowRule)> =
                    model.iter().map(|(s, r, _)| (*s, r.clone())).collect();
                let want = linear(&plain, k);
                let got = p.classify(k, 64, now).ops.clone();
                prop_assert_eq!(&got, &want, "key {:?}", k);
                // The uncached slow path agrees too.
                prop_assert_eq!(&p.translate(k).ops, &want);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn cached_pipeline_matches_linear_scan(ops in prop::collection::vec(op_strategy(), 1..120)) {
        // A tiny EMC so that index collisions and replacements happen too.
        let cfg = CacheConfig { emc_entries: 16, ..CacheConfig::default() };
        run(&ops, cfg)?;
    }

    #[test]
    fn megaflow_only_matches_linear_scan(ops in prop::collection::vec(op_strategy(), 1..120)) {
        let cfg = CacheConfig { emc: false, ..CacheConfig::default() };
        run(&ops, cfg)?;
    }
}
