//! The connection table: a slab of entries, a hash index by normalized key, per-zone counts,
//! and the expiry wheel. No policy lives here (limits and states are the tracker's); this file
//! keeps the four structures consistent.
//!
//! Invariants: every live entry is in the index once under its key's hash, plus once under its
//! reply key's hash if it is NATed (the translated reply tuple differs from the original
//! tuple reversed, so replies need their own key), and in the wheel
//! once (at `entry.pos`); `len` and the zone counts equal the number of live entries (in each
//! zone); a freed slot's generation is bumped, so a [`CtId`] of a removed entry finds nothing.

use std::collections::HashMap;
use std::time::Duration;

use hashbrown::HashTable;

use crate::conntrack::key::CtKey;
use crate::conntrack::tcp::TcpConn;
use crate::conntrack::types::{CtId, CtMark, NatBinding};
use crate::conntrack::wheel::{bucket_of, Wheel, WheelPos};

/// Protocol state of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoState {
    /// TCP with its state machine.
    Tcp(TcpConn),
    /// UDP pseudo-connection.
    Udp,
    /// ICMP or ICMPv6 echo pseudo-connection (the echo id is in the tuple's ports).
    Echo,
    /// Another protocol, by addresses.
    Other,
}

/// One tracked connection.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Normalized key.
    pub key: CtKey,
    /// Its hash.
    pub hash: u64,
    /// The opening packet came from the key's lower endpoint (`key.tuple(orig_lo)` is its
    /// tuple).
    pub orig_lo: bool,
    /// Protocol state.
    pub proto: ProtoState,
    /// A packet was accepted in the reply direction.
    pub replied: bool,
    /// Set by commit.
    pub mark: CtMark,
    /// When it was committed.
    pub created: Duration,
    /// When a TCP handshake's SYN-ACK was accepted (`Duration::ZERO`: not yet): the start of
    /// the originator's half of the handshake round trip.
    pub answered: Duration,
    /// When it expires unless refreshed.
    pub deadline: Duration,
    /// Packets accepted per direction.
    pub packets: [u64; 2],
    /// IP bytes accepted per direction.
    pub bytes: [u64; 2],
    /// Translation, with the key of the translated reply tuple (boxed: most entries have none).
    pub nat: Option<Box<NatEntry>>,
    /// A port layer may be forwarding packets of this connection without the engine
    /// (`Conntrack::set_offloaded`): its removal counts in `Table::offload_changes`.
    pub offloaded: bool,
    /// Position in the wheel.
    pos: WheelPos,
}

/// The NAT part of an entry.
#[derive(Debug, Clone)]
pub struct NatEntry {
    /// The translation.
    pub binding: NatBinding,
    /// Key of the translated reply tuple (never equal to the entry's key).
    pub rkey: CtKey,
    /// Its hash.
    pub rhash: u64,
    /// A reply's source is `rkey`'s lower endpoint.
    pub reply_lo: bool,
}

impl Entry {
    /// A new entry (its wheel position is set on insertion).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: CtKey,
        hash: u64,
        orig_lo: bool,
        proto: ProtoState,
        mark: CtMark,
        now: Duration,
        deadline: Duration,
        ip_len: u16,
    ) -> Entry {
        Entry {
            key,
            hash,
            orig_lo,
            proto,
            replied: false,
            mark,
            created: now,
            answered: Duration::ZERO,
            deadline,
            packets: [1, 0],
            bytes: [ip_len as u64, 0],
            nat: None,
            offloaded: false,
            pos: WheelPos::default(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    gen: u32,
    entry: Option<Entry>,
}

/// The table.
#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashTable<(u64, u32)>,
    zones: HashMap<u16, u32>,
    wheel: Wheel,
    len: u32,
    /// Removals of offloaded entries (for `Conntrack::offload_changes`).
    offload_changes: u64,
}

impl Table {
    /// Offloaded entries removed so far (by expiry, sweep, reopening, removal or flush).
    pub fn offload_changes(&self) -> u64 {
        self.offload_changes
    }

    /// Live entries.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries in `zone`.
    pub fn zone_len(&self, zone: u16) -> u32 {
        self.zones.get(&zone).copied().unwrap_or(0)
    }

    /// The slot holding `key` as its key or its NAT reply key, if any (expired or not).
    #[inline]
    pub fn find(&self, key: &CtKey, hash: u64) -> Option<u32> {
        self.index
            .find(hash, |&(h, s)| {
                h == hash
                    && self.slots[s as usize].entry.as_ref().is_some_and(|e| {
                        e.key == *key || e.nat.as_ref().is_some_and(|n| n.rkey == *key)
                    })
            })
            .map(|&(_, s)| s)
    }

    /// The id of the entry in `slot`.
    pub fn id_of(&self, slot: u32) -> CtId {
        CtId {
            slot,
            gen: self.slots[slot as usize].gen,
        }
    }

    /// The entry in a live slot.
    #[inline]
    pub fn at(&self, slot: u32) -> &Entry {
        self.slots[slot as usize]
            .entry
            .as_ref()
            .expect("slot from find or id is live")
    }

    /// The entry in a live slot, mutably. Changing `key` or `hash` is not allowed.
    #[inline]
    pub fn at_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots[slot as usize]
            .entry
            .as_mut()
            .expect("slot from find or id is live")
    }

    /// The live slot of `id`, if the entry still exists.
    pub fn slot_of(&self, id: CtId) -> Option<u32> {
        let s = self.slots.get(id.slot as usize)?;
        (s.gen == id.gen && s.entry.is_some()).then_some(id.slot)
    }

    /// Inserts an entry whose key is not in the table. The caller enforces limits.
    pub fn insert(&mut self, mut e: Entry, zone: u16) -> CtId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        e.pos = self.wheel.insert(slot, e.deadline.as_secs());
        let hash = e.hash;
        let rhash = e.nat.as_ref().map(|n| n.rhash);
        self.slots[slot as usize].entry = Some(e);
        self.index.insert_unique(hash, (hash, slot), |&(h, _)| h);
        if let Some(rh) = rhash {
            self.index.insert_unique(rh, (rh, slot), |&(h, _)| h);
        }
        *self.zones.entry(zone).or_insert(0) += 1;
        self.len += 1;
        self.id_of(slot)
    }

    /// Removes the entry in a live slot and returns it.
    pub fn remove(&mut self, slot: u32) -> Entry {
        let s = &mut self.slots[slot as usize];
        let e = s.entry.take().expect("slot from find or id is live");
        s.gen = s.gen.wrapping_add(1);
        if e.offloaded {
            self.offload_changes += 1;
        }
        self.free.push(slot);
        if let Ok(found) = self.index.find_entry(e.hash, |&(_, s)| s == slot) {
            found.remove();
        }
        if let Some(n) = &e.nat {
            if let Ok(found) = self.index.find_entry(n.rhash, |&(_, s)| s == slot) {
                found.remove();
            }
        }
        if let Some(moved) = self.wheel.remove(e.pos) {
            if let Some(m) = self.slots[moved as usize].entry.as_mut() {
                m.pos = e.pos;
            }
        }
        let zone = e.key.zone;
        if let Some(n) = self.zones.get_mut(&zone) {
            *n -= 1;
            if *n == 0 {
                self.zones.remove(&zone);
            }
        }
        self.len -= 1;
        e
    }

    /// Removes every entry whose deadline is at or before `now`, visiting only the wheel
    /// buckets that are due; re-files refreshed entries. Returns how many were removed.
    pub fn sweep(&mut self, now: Duration) -> u64 {
        let mut removed = 0;
        for tick in self.wheel.due_ticks(now.as_secs()) {
            let b = bucket_of(tick);
            let mut i = 0;
            while let Some(slot) = self.wheel.get(b, i) {
                let (deadline, pos) = {
                    let e = self.at(slot);
                    (e.deadline, e.pos)
                };
                if deadline <= now {
                    self.remove(slot);
                    removed += 1;
                } else if bucket_of(deadline.as_secs()) != b {
                    if let Some(moved) = self.wheel.remove(pos) {
                        self.at_mut(moved).pos = pos;
                    }
                    let np = self.wheel.insert(slot, deadline.as_secs());
                    self.at_mut(slot).pos = np;
                } else {
                    i += 1;
                }
            }
        }
        removed
    }

    /// True if a sweep at `now` has a second to visit that the last sweep did not.
    pub fn sweep_due(&self, now: Duration) -> bool {
        self.wheel.swept_up_to() < now.as_secs()
    }

    /// Live slots (for dumps and flushes; O(capacity)).
    pub fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, _)| i as u32)
    }

    /// Checks the invariants of the module doc (tests use it).
    pub fn check(&self) -> Result<(), String> {
        let live = self.live_slots().count() as u32;
        let natted = self
            .live_slots()
            .filter(|&s| self.at(s).nat.is_some())
            .count() as u32;
        if live != self.len || self.index.len() as u32 != self.len + natted {
            return Err(format!(
                "len {} live {} index {}",
                self.len,
                live,
                self.index.len()
            ));
        }
        if self.wheel.len() as u32 != self.len {
            return Err(format!("wheel {} len {}", self.wheel.len(), self.len));
        }
        let mut zones: HashMap<u16, u32> = HashMap::new();
        for s in self.live_slots() {
            let e = self.at(s);
            if self.wheel.get(e.pos.bucket, e.pos.idx) != Some(s) {
                return Err(format!("slot {s} not at its wheel position"));
            }
            if self.find(&e.key, e.hash) != Some(s) {
                return Err(format!("slot {s} not found by its key"));
            }
            if let Some(n) = &e.nat {
                if n.rkey == e.key || self.find(&n.rkey, n.rhash) != Some(s) {
                    return Err(format!("slot {s} not found by its reply key"));
                }
            }
            *zones.entry(e.key.zone).or_insert(0) += 1;
        }
        if zones != self.zones {
            return Err("zone counts differ".into());
        }
        Ok(())
    }
}
