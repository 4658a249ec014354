//! Classifier lookups per second at 100 / 10,000 / 100,000 rules with 1 / 16 / 64 distinct
//! masks, on three paths:
//! - `emc`: exact-match cache hit (the common case for busy flows);
//! - `megaflow`: EMC disabled, megaflow cache hit;
//! - `classifier`: the full tuple-space search of the table, no cache.
//!
//! Each iteration looks up a batch of 1024 keys that match installed rules; throughput is
//! reported in lookups per second. Run: `cargo bench -p strata-net --bench classifier`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata_net::flow::{Action, FlowRule};
use strata_net::key::{Field, FlowKey, Match};
use strata_net::pipeline::{CacheConfig, Pipeline};

const BATCH: usize = 1024;

/// Deterministic xorshift so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Up to 100 distinct masks: nw_dst prefix 8..=32 × in_port on/off × tp_dst on/off.
fn masks(n: usize) -> Vec<Match> {
    let mut out = Vec::new();
    for plen in 8..=32u32 {
        for port in [false, true] {
            for tp in [false, true] {
                let mut m = Match::ANY;
                m.set_exact(Field::EthType, 0x0800);
                m.set_exact(Field::NwProto, 6);
                m.set_masked(Field::NwDst, 0, (u32::MAX << (32 - plen)) as u64);
                if port {
                    m.set_exact(Field::InPort, 0);
                }
                if tp {
                    m.set_exact(Field::TpDst, 0);
                }
                out.push(m);
            }
        }
    }
    out.truncate(n);
    out
}

fn setup(n_rules: usize, n_masks: usize, cfg: CacheConfig) -> (Pipeline, Vec<FlowKey>) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let ms = masks(n_masks);
    let mut p = Pipeline::new(cfg);
    let mut rules = Vec::with_capacity(n_rules);
    for i in 0..n_rules {
        let mut key = FlowKey::ZERO;
        key.set(Field::EthType, 0x0800);
        key.set(Field::NwProto, 6);
        key.set(Field::InPort, rng.next() % 64 + 1);
        key.set(Field::NwDst, rng.next() & 0xffff_ffff);
        key.set(Field::NwSrc, rng.next() & 0xffff_ffff);
        key.set(Field::TpDst, rng.next() % 1024);
        key.set(Field::TpSrc, rng.next() & 0xffff);
        let mask = ms[i % ms.len()].mask;
        let r = FlowRule {
            priority: (rng.next() % 1000) as u16 + 1,
            matches: Match {
                value: key.and(&mask),
                mask,
            },
            actions: vec![Action::Output((i % 8) as u32 + 1)],
            ..Default::default()
        };
        p.add_rule(r, Duration::ZERO).unwrap();
        rules.push(key);
    }
    // Lookup keys: packets that match a random installed rule, other fields random.
    let keys = (0..BATCH)
        .map(|_| {
            let mut k = rules[(rng.next() as usize) % rules.len()];
            k.set(Field::TpSrc, rng.next() & 0xffff);
            k.set(Field::NwSrc, rng.next() & 0xffff_ffff);
            k
        })
        .collect();
    (p, keys)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("classifier");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    for &n in &[100usize, 10_000, 100_000] {
        for &m in &[1usize, 16, 64] {
            let id = format!("{n}rules/{m}masks");
            // EMC hits.
            let (mut p, keys) = setup(n, m, CacheConfig::default());
            for k in &keys {
                p.lookup_ref(k, Duration::ZERO);
            }
            g.bench_with_input(BenchmarkId::new("emc", &id), &keys, |b, keys| {
                b.iter(|| {
                    for k in keys {
                        black_box(p.lookup_ref(black_box(k), Duration::ZERO));
                    }
                })
            });
            // Megaflow hits (EMC off).
            let cfg = CacheConfig {
                emc: false,
                ..CacheConfig::default()
            };
            let (mut p, keys) = setup(n, m, cfg);
            for k in &keys {
                p.lookup_ref(k, Duration::ZERO);
            }
            g.bench_with_input(BenchmarkId::new("megaflow", &id), &keys, |b, keys| {
                b.iter(|| {
                    for k in keys {
                        black_box(p.lookup_ref(black_box(k), Duration::ZERO));
                    }
                })
            });
            // Full classifier, no caches.
            g.bench_with_input(BenchmarkId::new("classifier", &id), &keys, |b, keys| {
                let t = p.table(0);
                b.iter(|| {
                    for k in keys {
                        let mut wc = FlowKey::ZERO;
                        black_box(t.lookup(black_box(k), &mut wc));
                    }
                })
            });
            eprintln!(
                "{id}: {} subtables, {} megaflows over {} masks",
                p.table(0).n_subtables(),
                p.n_megaflows(),
                p.n_megaflow_masks()
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
