//! Load-balancer groups: backends with weights and health, and a Maglev lookup table that
//! maps a connection's hash to a backend (Eisenbud et al., "Maglev", NSDI 2016).
//!
//! The switch uses a group through `ct(commit,zone=N,lb(id=G),table=T)`: a *new* connection
//! picks a backend here and is DNATed to it through conntrack, so every later packet of the
//! connection follows the conntrack entry, not this table. Changing the group (weights,
//! backends, health) therefore moves only new connections.
//!
//! Table: its size `M` is a prime at least `100 ×` the number of backends `N` (up or down, so
//! marking one down does not resize the table): the smallest prime at least `100 ×` `N`
//! rounded up to a power of two, and a group that is replaced keeps its `M` while it is still
//! at least `100 × N` (and at most 4 times what it would get fresh). A changed `M` reshuffles
//! every key, so `M` changes only when `N` crosses a power of two, never for one backend
//! more or less within that. Each backend has a permutation of
//! `0..M` from a hash of its address and port (`offset + j × skip`, `skip` in `1..M`, so a
//! permutation visits every slot since `M` is prime). Backends take turns claiming their next
//! free slot; a backend of weight `w` takes a turn in `w` rounds out of every `w_max`, so slot
//! counts follow the weights. Down backends and weight 0 take no turns. Because permutations
//! depend only on the backend itself, removing one backend reassigns its own slots and only a
//! few others (about `1/N` of all keys move; the tests bound it).
//!
//! A connection's key is a seeded hash of its 5-tuple, or of its source address only when
//! the group has session affinity.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::l4::Tuple;

/// Slot value for "no backend" (an empty table: the group has no usable backend).
const NONE: u32 = u32::MAX;

/// One backend of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Address the VIP is translated to.
    pub ip: Ipv4Addr,
    /// Port (0: keep the VIP's port).
    pub port: u16,
    /// Relative weight (0: no new connections).
    pub weight: u32,
    /// Health: a backend marked down gets no new connections.
    pub up: bool,
}

/// A group and its lookup table.
#[derive(Debug, Clone, Default)]
pub struct LbGroup {
    backends: Vec<Backend>,
    table: Vec<u32>,
    size: u64,
    affinity: bool,
}

/// The table size for `n` backends, given the size `prev` the group had (0: new group).
pub fn table_size_for(n: usize, prev: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let fresh = prime_at_least(100 * n.next_power_of_two() as u64);
    if prev >= 100 * n as u64 && prev <= 4 * fresh {
        prev
    } else {
        fresh
    }
}

fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// The smallest prime `>= n`.
pub fn prime_at_least(n: u64) -> u64 {
    (n.max(2)..).find(|&m| is_prime(m)).unwrap_or(2)
}

impl LbGroup {
    /// A group over `backends` (all up).
    pub fn new(backends: Vec<Backend>) -> LbGroup {
        LbGroup::with_prev_size(backends, 0)
    }

    fn with_prev_size(backends: Vec<Backend>, prev: u64) -> LbGroup {
        let size = table_size_for(backends.len(), prev);
        let mut g = LbGroup {
            backends,
            table: Vec::new(),
            size,
            affinity: false,
        };
        g.rebuild();
        g
    }

    /// The backends.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Lookup table size (0 when there are no backends).
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// Index of the backend in slot `slot` of the table.
    pub fn slot(&self, slot: usize) -> Option<usize> {
        self.table
            .get(slot)
            .filter(|&&b| b != NONE)
            .map(|&b| b as usize)
    }

    /// Marks the backend at `ip:port` up or down; false if there is none.
    pub fn set_up(&mut self, ip: Ipv4Addr, port: u16, up: bool) -> bool {
        let Some(b) = self
            .backends
            .iter_mut()
            .find(|b| b.ip == ip && b.port == port)
        else {
            return false;
        };
        if b.up != up {
            b.up = up;
            self.rebuild();
        }
        true
    }

    /// Session affinity: choose by source address only.
    pub fn set_affinity(&mut self, on: bool) {
        self.affinity = on;
    }

    fn rebuild(&mut self) {
        let m = self.size;
        if m == 0 {
            self.table.clear();
            return;
        }
        let mut table = vec![NONE; m as usize];
        let live: Vec<(usize, u64, u64, u32)> = self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.up && b.weight > 0)
            .map(|(i, b)| {
                let h = mix(((u32::from(b.ip) as u64) << 16) | b.port as u64);
                let h2 = mix(h ^ 0x5bd1_e995);
                (i, h % m, h2 % (m - 1) + 1, b.weight)
            })
            .collect();
        self.table.clear();
        if live.is_empty() {
            return;
        }
        let wmax = live.iter().map(|l| l.3 as u64).max().unwrap_or(1);
        let mut next = vec![0u64; live.len()];
        let mut filled = 0u64;
        let mut round = 0u64;
        while filled < m {
            for (j, &(i, offset, skip, w)) in live.iter().enumerate() {
                let w = w as u64;
                if (round + 1) * w / wmax == round * w / wmax {
                    continue;
                }
                loop {
                    let c = ((offset + next[j] * skip) % m) as usize;
                    next[j] += 1;
                    if table[c] == NONE {
                        table[c] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break;
                }
            }
            round += 1;
        }
        self.table = table;
    }

    /// The backend for a connection with tuple `t` (`seed` keys the hash).
    pub fn pick(&self, t: &Tuple, seed: u64) -> Option<Backend> {
        if self.table.is_empty() {
            return None;
        }
        let a = |x: IpAddr| match x {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64)
            }
        };
        let mut h = mix(seed ^ a(t.src));
        if !self.affinity {
            h = mix(h ^ (a(t.dst) << 1));
            h = mix(h ^ ((t.sport as u64) << 32 | (t.dport as u64) << 8 | t.proto as u64));
        }
        let b = self.table[(h % self.table.len() as u64) as usize];
        self.backends.get(b as usize).copied()
    }
}

/// The switch's groups by id.
#[derive(Debug, Clone, Default)]
pub struct LbGroups {
    groups: HashMap<u32, LbGroup>,
}

impl LbGroups {
    /// Sets (or replaces) group `id`.
    pub fn set(&mut self, id: u32, backends: Vec<Backend>) {
        let old = self.groups.get(&id);
        let affinity = old.is_some_and(|g| g.affinity);
        let mut g = LbGroup::with_prev_size(backends, old.map_or(0, |g| g.size));
        g.affinity = affinity;
        self.groups.insert(id, g);
    }
    /// Removes group `id`; false if it did not exist.
    pub fn remove(&mut self, id: u32) -> bool {
        self.groups.remove(&id).is_some()
    }
    /// Group `id`.
    pub fn get(&self, id: u32) -> Option<&LbGroup> {
        self.groups.get(&id)
    }
    /// Group `id`, mutably.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut LbGroup> {
        self.groups.get_mut(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(i: u8, w: u32) -> Backend {
        Backend {
            ip: Ipv4Addr::new(10, 1, 0, i),
            port: 8080,
            weight: w,
            up: true,
        }
    }

    fn tuples(n: usize, seed: u64) -> Vec<Tuple> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = mix(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
                Tuple {
                    src: IpAddr::V4(Ipv4Addr::from(x as u32)),
                    dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                    sport: (x >> 32) as u16,
                    dport: 80,
                    proto: 6,
                }
            })
            .collect()
    }

    #[test]
    fn table_size_is_a_prime_at_least_100_per_backend() {
        for n in [1usize, 2, 3, 7, 10, 33] {
            let g = LbGroup::new((0..n as u8).map(|i| be(i, 1)).collect());
            let m = g.table_size() as u64;
            assert!(m >= 100 * n as u64 && is_prime(m), "n={n} m={m}");
            assert_eq!(m, prime_at_least(100 * n.next_power_of_two() as u64));
            assert!((0..g.table_size()).all(|s| g.slot(s).is_some()), "full");
        }
        assert_eq!(prime_at_least(100), 101);
        assert_eq!(LbGroup::new(vec![]).table_size(), 0);
    }

    #[test]
    fn spread_follows_weights_within_ten_percent() {
        let weights = [1u32, 2, 3, 4];
        let g = LbGroup::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| be(i as u8, w))
                .collect(),
        );
        let mut count = [0usize; 4];
        let ts = tuples(10_000, 7);
        for t in &ts {
            let b = g.pick(t, 42).unwrap();
            count[b.ip.octets()[3] as usize] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let want = 10_000.0 * w as f64 / total as f64;
            let got = count[i] as f64;
            assert!(
                (got - want).abs() <= 0.1 * want,
                "backend {i} weight {w}: {got} vs {want} ({count:?})"
            );
        }
    }

    #[test]
    fn removing_or_downing_one_backend_moves_about_one_nth() {
        let n = 10u8;
        let all: Vec<Backend> = (0..n).map(|i| be(i, 1)).collect();
        let g = LbGroup::new(all.clone());
        let mut down = g.clone();
        assert!(down.set_up(all[3].ip, 8080, false));
        // Removal as the switch does it: the group is replaced, keeping its table size.
        let mut groups = LbGroups::default();
        groups.set(1, all.clone());
        groups.set(
            1,
            all.iter().copied().filter(|b| b.ip != all[3].ip).collect(),
        );
        let removed = groups.get(1).unwrap().clone();
        assert_eq!(removed.table_size(), g.table_size());
        let ts = tuples(10_000, 11);
        for other in [&down, &removed] {
            let mut moved = 0;
            let mut was_victim = 0;
            for t in &ts {
                let (a, b) = (g.pick(t, 1).unwrap(), other.pick(t, 1).unwrap());
                assert_ne!(b.ip, all[3].ip, "the removed backend gets nothing");
                if a.ip == all[3].ip {
                    was_victim += 1;
                } else if a.ip != b.ip {
                    moved += 1;
                }
            }
            // Keys of the removed backend must move (about 1/N); of the others, only a few.
            let frac = (moved + was_victim) as f64 / ts.len() as f64;
            assert!(frac < 1.5 / n as f64, "moved {frac}");
            assert!(
                moved as f64 / (ts.len() as f64) < 0.05,
                "others moved {moved}"
            );
        }
        // Down does not resize the table: same as removal only in which keys move, not size.
        assert_eq!(down.table_size(), g.table_size());
        assert!(down.set_up(all[3].ip, 8080, true));
        for t in &ts {
            assert_eq!(down.pick(t, 1), g.pick(t, 1), "back up restores the table");
        }
    }

    #[test]
    fn table_size_keeps_within_a_power_of_two() {
        assert_eq!(table_size_for(10, 0), 1601);
        assert_eq!(table_size_for(9, 1601), 1601, "one backend less keeps M");
        assert_eq!(table_size_for(16, 1601), 1601);
        assert_eq!(
            table_size_for(17, 1601),
            prime_at_least(3200),
            "too small grows"
        );
        assert_eq!(
            table_size_for(4, 1601),
            1601,
            "within 4x of fresh (401) keeps M"
        );
        assert_eq!(table_size_for(1, 1601), 101, "beyond 4x of fresh shrinks");
        assert_eq!(table_size_for(0, 1601), 0);
    }

    #[test]
    fn affinity_hashes_the_source_only() {
        let mut g = LbGroup::new((0..5).map(|i| be(i, 1)).collect());
        g.set_affinity(true);
        let ts = tuples(200, 3);
        for t in &ts {
            let other_port = Tuple {
                sport: t.sport.wrapping_add(1),
                dport: 443,
                ..*t
            };
            assert_eq!(g.pick(t, 9), g.pick(&other_port, 9));
        }
        g.set_affinity(false);
        let differs = ts
            .iter()
            .filter(|t| {
                let o = Tuple {
                    sport: t.sport.wrapping_add(1),
                    ..**t
                };
                g.pick(t, 9) != g.pick(&o, 9)
            })
            .count();
        assert!(
            differs > 100,
            "without affinity the port matters ({differs})"
        );
    }

    #[test]
    fn all_down_or_zero_weight_picks_nothing() {
        let mut g = LbGroup::new(vec![be(1, 1), be(2, 0)]);
        assert!(g.pick(&tuples(1, 1)[0], 0).is_some());
        g.set_up(Ipv4Addr::new(10, 1, 0, 1), 8080, false);
        assert!(g.pick(&tuples(1, 1)[0], 0).is_none());
        assert!(!g.set_up(Ipv4Addr::new(10, 9, 9, 9), 1, false));
    }
}
