//! One flow table's classifier: tuple-space search with wildcard tracking.
//!
//! Rules are grouped by mask into *subtables*; each subtable is a hash table from masked key to
//! the rules with that exact masked value (best first). A lookup probes subtables in order of
//! their highest priority and stops as soon as the next subtable's highest priority is below
//! the best match found (the "early exit"). Cost is one hash probe per distinct mask examined,
//! independent of the number of rules.
//!
//! Invariants:
//! - Within a bucket, entries are sorted best first: higher priority, then lower `seq` (earlier
//!   installation wins ties; OpenFlow leaves ties undefined, we make them deterministic).
//! - `subtables` is sorted by `max_priority`, descending; empty subtables are removed.
//! - [`Classifier::lookup`] ORs into `wc` the mask of every subtable it probed and nothing else:
//!   any key agreeing with the looked-up key on those bits gets the same answer. This is what
//!   makes megaflows built from `wc` correct.

use std::collections::BTreeMap;

use hashbrown::HashTable;

use crate::key::{FlowKey, Match};
pub use crate::types::ClsEntry;
use crate::types::RuleId;

#[derive(Debug)]
struct Bucket {
    value: FlowKey,
    entries: Vec<ClsEntry>,
}

#[derive(Debug)]
struct Subtable {
    mask: FlowKey,
    words: Vec<u8>,
    max_priority: u16,
    priorities: BTreeMap<u16, u32>,
    table: HashTable<Bucket>,
}

/// A tuple-space-search classifier for one flow table.
#[derive(Debug, Default)]
pub struct Classifier {
    subtables: Vec<Subtable>,
    len: usize,
}

impl Classifier {
    /// An empty classifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct masks (subtables).
    pub fn n_subtables(&self) -> usize {
        self.subtables.len()
    }

    /// Inserts a rule. The caller guarantees `id` is not already present.
    pub fn insert(&mut self, m: &Match, e: ClsEntry) {
        let idx = match self.subtables.iter().position(|s| s.mask == m.mask) {
            Some(i) => i,
            None => {
                self.subtables.push(Subtable {
                    mask: m.mask,
                    words: m.mask.nonzero_words(),
                    max_priority: 0,
                    priorities: BTreeMap::new(),
                    table: HashTable::new(),
                });
                self.subtables.len() - 1
            }
        };
        let st = &mut self.subtables[idx];
        let value = m.value.and(&m.mask);
        let h = value.hash_masked(&st.mask, &st.words);
        let (mask, words) = (st.mask, &st.words);
        let eq = |b: &Bucket| value.matches_masked(&mask, &b.value, words);
        match st.table.find_mut(h, eq) {
            Some(b) => {
                let pos = b
                    .entries
                    .iter()
                    .position(|x| e.beats(x))
                    .unwrap_or(b.entries.len());
                b.entries.insert(pos, e);
            }
            None => {
                let hasher = |b: &Bucket| b.value.hash_masked(&mask, words);
                st.table.insert_unique(
                    h,
                    Bucket {
                        value,
                        entries: vec![e],
                    },
                    hasher,
                );
            }
        }
        *st.priorities.entry(e.priority).or_insert(0) += 1;
        st.max_priority = st.max_priority.max(e.priority);
        self.len += 1;
        self.resort();
    }

    /// Removes a rule; returns false if it was not present.
    pub fn remove(&mut self, m: &Match, id: RuleId) -> bool {
        let Some(idx) = self.subtables.iter().position(|s| s.mask == m.mask) else {
            return false;
        };
        let st = &mut self.subtables[idx];
        let value = m.value.and(&m.mask);
        let h = value.hash_masked(&st.mask, &st.words);
        let (mask, words) = (st.mask, st.words.clone());
        let Ok(mut occ) = st
            .table
            .find_entry(h, |b| value.matches_masked(&mask, &b.value, &words))
        else {
            return false;
        };
        let b = occ.get_mut();
        let Some(pos) = b.entries.iter().position(|x| x.id == id) else {
            return false;
        };
        let e = b.entries.remove(pos);
        if b.entries.is_empty() {
            occ.remove();
        }
        if let Some(c) = st.priorities.get_mut(&e.priority) {
            *c -= 1;
            if *c == 0 {
                st.priorities.remove(&e.priority);
            }
        }
        self.len -= 1;
        match st.priorities.keys().next_back() {
            Some(&p) => st.max_priority = p,
            None => {
                self.subtables.remove(idx);
            }
        }
        self.resort();
        true
    }

    fn resort(&mut self) {
        // Stable: subtables with equal max priority keep creation order. Only the order of
        // probing changes, never a result (see lookup).
        self.subtables
            .sort_by_key(|s| std::cmp::Reverse(s.max_priority));
    }

    /// The rule with exactly this match and priority, if any (add-flow replaces it).
    pub fn find_exact(&self, m: &Match, priority: u16) -> Option<RuleId> {
        let st = self.subtables.iter().find(|s| s.mask == m.mask)?;
        let value = m.value.and(&m.mask);
        let h = value.hash_masked(&st.mask, &st.words);
        let b = st
            .table
            .find(h, |b| value.matches_masked(&st.mask, &b.value, &st.words))?;
        b.entries
            .iter()
            .find(|e| e.priority == priority)
            .map(|e| e.id)
    }

    /// Finds the best rule for `key`, OR-ing the bits consulted into `wc`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowKey) -> Option<ClsEntry> {
        let mut best: Option<ClsEntry> = None;
        for st in &self.subtables {
            if let Some(b) = best {
                // Equal max priority may still hold an earlier-installed tie: keep looking.
                if st.max_priority < b.priority {
                    break;
                }
            }
            for &i in &st.words {
                wc.w[i as usize] |= st.mask.w[i as usize];
            }
            let h = key.hash_masked(&st.mask, &st.words);
            let found = st
                .table
                .find(h, |b| key.matches_masked(&st.mask, &b.value, &st.words));
            if let Some(b) = found {
                let c = b.entries[0];
                if best.is_none_or(|x| c.beats(&x)) {
                    best = Some(c);
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Field;

    fn id(n: u32) -> RuleId {
        RuleId::new_for_test(n)
    }

    #[test]
    fn priority_and_ties() {
        let mut c = Classifier::new();
        let mut m1 = Match::ANY;
        m1.set_exact(Field::TpDst, 80);
        let mut m2 = Match::ANY;
        m2.set_exact(Field::NwProto, 6);
        c.insert(
            &m1,
            ClsEntry {
                id: id(1),
                priority: 10,
                seq: 2,
            },
        );
        c.insert(
            &m2,
            ClsEntry {
                id: id(2),
                priority: 10,
                seq: 1,
            },
        );
        let mut k = FlowKey::ZERO;
        k.set(Field::TpDst, 80);
        k.set(Field::NwProto, 6);
        let mut wc = FlowKey::ZERO;
        // Equal priority: the earlier installed (seq 1) wins.
        assert_eq!(c.lookup(&k, &mut wc).unwrap().id, id(2));
        assert!(c.remove(&m2, id(2)));
        assert_eq!(c.lookup(&k, &mut wc).unwrap().id, id(1));
        assert!(!c.remove(&m2, id(2)));
        assert_eq!(c.n_subtables(), 1);
    }

    #[test]
    fn early_exit_limits_wildcards() {
        let mut c = Classifier::new();
        let mut hi = Match::ANY;
        hi.set_exact(Field::InPort, 1);
        let mut lo = Match::ANY;
        lo.set_exact(Field::TpDst, 80);
        c.insert(
            &hi,
            ClsEntry {
                id: id(1),
                priority: 100,
                seq: 0,
            },
        );
        c.insert(
            &lo,
            ClsEntry {
                id: id(2),
                priority: 1,
                seq: 1,
            },
        );
        let mut k = FlowKey::ZERO;
        k.set(Field::InPort, 1);
        let mut wc = FlowKey::ZERO;
        assert_eq!(c.lookup(&k, &mut wc).unwrap().id, id(1));
        assert_eq!(wc.get(Field::InPort), 0xffff_ffff);
        assert_eq!(
            wc.get(Field::TpDst),
            0,
            "low-priority subtable was not probed"
        );
    }
}
