//! The two caches in front of the pipeline: megaflows and the exact-match cache (EMC).
//!
//! A *megaflow* is (value, mask, translation): every key with `key & mask == value` is known to
//! produce the same translation, because `mask` holds every bit the slow path consulted (see
//! [`crate::classifier`]). Megaflows are stored tuple-space style, one hash table per distinct
//! megaflow mask. The EMC is a direct-mapped array indexed by the hash of the whole key, holding
//! (key, megaflow slot, generation); it saves the per-mask probing for the flows that are busy.
//!
//! Invalidation: a megaflow slot has a generation; removing a megaflow bumps it, so EMC entries
//! pointing at it stop matching without being touched. Which megaflows a rule change removes is
//! decided by [`crate::pipeline::Pipeline`] (see there).

use std::time::Duration;

use hashbrown::HashTable;

use crate::key::FlowKey;
use crate::types::Translation;

/// Reference to a megaflow: slot plus generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MegaflowRef {
    /// Slot index.
    pub slot: u32,
    /// Generation of the slot when the reference was taken.
    pub gen: u32,
}

/// A cached megaflow.
#[derive(Debug)]
pub struct Megaflow {
    /// `key & mask` of the packet that created it.
    pub value: FlowKey,
    /// The bits the slow path consulted.
    pub mask: FlowKey,
    /// What the pipeline decided.
    pub trans: Translation,
    /// Last time a packet used it.
    pub last_used: Duration,
    sub: usize,
}

#[derive(Debug)]
struct MfSub {
    mask: FlowKey,
    words: Vec<u8>,
    table: HashTable<u32>,
}

/// The megaflow cache.
#[derive(Debug, Default)]
pub struct MegaflowCache {
    slots: Vec<Option<Megaflow>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    subs: Vec<MfSub>,
    len: usize,
}

impl MegaflowCache {
    /// Number of live megaflows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct megaflow masks.
    pub fn n_masks(&self) -> usize {
        self.subs.len()
    }

    /// Finds a megaflow covering `key`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<MegaflowRef> {
        for sub in &self.subs {
            let h = key.hash_masked(&sub.mask, &sub.words);
            let slots = &self.slots;
            let found = sub.table.find(h, |&s| {
                slots
                    .get(s as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|m| key.matches_masked(&sub.mask, &m.value, &sub.words))
            });
            if let Some(&s) = found {
                return Some(MegaflowRef {
                    slot: s,
                    gen: self.gens[s as usize],
                });
            }
        }
        None
    }

    /// The megaflow behind a reference, if still alive.
    #[inline]
    pub fn get(&self, r: MegaflowRef) -> Option<&Megaflow> {
        if self.gens.get(r.slot as usize) != Some(&r.gen) {
            return None;
        }
        self.slots.get(r.slot as usize)?.as_ref()
    }

    /// Mutable access (to stamp `last_used`).
    #[inline]
    pub fn get_mut(&mut self, r: MegaflowRef) -> Option<&mut Megaflow> {
        if self.gens.get(r.slot as usize) != Some(&r.gen) {
            return None;
        }
        self.slots.get_mut(r.slot as usize)?.as_mut()
    }

    /// Inserts a megaflow for `key` with consulted-bits `mask`.
    pub fn insert(&mut self, key: &FlowKey, trans: Translation, now: Duration) -> MegaflowRef {
        let mask = trans.mask;
        let value = key.and(&mask);
        let sub = match self.subs.iter().position(|s| s.mask == mask) {
            Some(i) => i,
            None => {
                self.subs.push(MfSub {
                    mask,
                    words: mask.nonzero_words(),
                    table: HashTable::new(),
                });
                self.subs.len() - 1
            }
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[slot as usize] = Some(Megaflow {
            value,
            mask,
            trans,
            last_used: now,
            sub,
        });
        let st = &mut self.subs[sub];
        let h = value.hash_masked(&st.mask, &st.words);
        let slots = &self.slots;
        let (m, words) = (st.mask, &st.words);
        st.table.insert_unique(h, slot, |&s| {
            slots[s as usize]
                .as_ref()
                .map_or(0, |mf| mf.value.hash_masked(&m, words))
        });
        self.len += 1;
        MegaflowRef {
            slot,
            gen: self.gens[slot as usize],
        }
    }

    /// Removes the megaflow in `slot` (bumping its generation so EMC references die).
    pub fn remove_slot(&mut self, slot: u32) {
        let Some(mf) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        let st = &mut self.subs[mf.sub];
        let h = mf.value.hash_masked(&st.mask, &st.words);
        if let Ok(e) = st.table.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.len -= 1;
        if st.table.is_empty() {
            // Drop the empty mask; fix the sub index of megaflows behind it.
            let gone = mf.sub;
            self.subs.remove(gone);
            for m in self.slots.iter_mut().flatten() {
                if m.sub > gone {
                    m.sub -= 1;
                }
            }
        }
    }

    /// Removes every megaflow for which `f` says so; returns how many.
    pub fn remove_if(&mut self, mut f: impl FnMut(&Megaflow) -> bool) -> usize {
        let doomed: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().filter(|m| f(m)).map(|_| i as u32))
            .collect();
        for &s in &doomed {
            self.remove_slot(s);
        }
        doomed.len()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.remove_if(|_| true);
    }
}

#[derive(Debug, Clone, Copy)]
struct EmcEntry {
    key: FlowKey,
    mf: MegaflowRef,
    valid: bool,
}

/// Exact-match cache: direct-mapped, power-of-two sized.
#[derive(Debug)]
pub struct Emc {
    entries: Vec<EmcEntry>,
    mask: usize,
}

impl Emc {
    /// An EMC with `size` entries (rounded up to a power of two, at least 1).
    pub fn new(size: usize) -> Self {
        let n = size.max(1).next_power_of_two();
        Emc {
            entries: vec![
                EmcEntry {
                    key: FlowKey::ZERO,
                    mf: MegaflowRef { slot: 0, gen: 0 },
                    valid: false,
                };
                n
            ],
            mask: n - 1,
        }
    }

    /// The megaflow cached for exactly `key` (whose full hash is `h`); the caller checks it is
    /// still alive.
    #[inline]
    pub fn lookup(&self, h: u64, key: &FlowKey) -> Option<MegaflowRef> {
        let e = &self.entries[(h as usize) & self.mask];
        (e.valid && e.key == *key).then_some(e.mf)
    }

    /// Caches `key -> mf`, replacing whatever shared the index.
    #[inline]
    pub fn insert(&mut self, h: u64, key: &FlowKey, mf: MegaflowRef) {
        let e = &mut self.entries[(h as usize) & self.mask];
        e.key = *key;
        e.mf = mf;
        e.valid = true;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        for e in &mut self.entries {
            e.valid = false;
        }
    }
}
