//! The expiry structure: a hashed timer wheel of one-second ticks with lazy refresh.
//!
//! Why this and not an ordered queue: every accepted packet pushes its connection's deadline
//! forward. With a heap or a B-tree that is an O(log n) re-insertion per packet; here a packet
//! only writes the new deadline into the entry (O(1), no wheel access). The wheel holds each
//! live entry exactly once, in the bucket of the deadline it had when it was filed. Sweeping a
//! bucket removes what is due and re-files what was refreshed meanwhile into the bucket of its
//! current deadline. An entry whose deadline is more than one turn away shares a bucket with
//! nearer ones and is passed over once per turn. So the cost is O(1) per packet, and a sweep
//! costs O(entries due + entries refreshed since they were filed + one look per turn at far
//! entries), amortized O(1) per entry per [`WHEEL_SLOTS`] seconds.
//!
//! Expiry does not depend on the sweep for correctness: a lookup that finds an entry past its
//! deadline treats it as gone. The sweep only reclaims memory, with one-second resolution.
//!
//! Invariants: each filed slot number appears in exactly one bucket, at the position its entry
//! records (`pos_of`), so removing an entry is an O(1) swap-remove.

/// Buckets in the wheel (one second each): 4096 s, a bit over an hour per turn.
pub const WHEEL_SLOTS: usize = 4096;

/// Where an entry sits in the wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WheelPos {
    /// Bucket index.
    pub bucket: u32,
    /// Index in the bucket.
    pub idx: u32,
}

/// The wheel. It stores table slot numbers; the table owns the entries and their positions.
#[derive(Debug)]
pub struct Wheel {
    buckets: Vec<Vec<u32>>,
    /// First tick (second) not yet swept completely.
    next_tick: u64,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel {
            buckets: vec![Vec::new(); WHEEL_SLOTS],
            next_tick: 0,
        }
    }
}

/// The bucket of a deadline in seconds.
#[inline]
pub fn bucket_of(deadline_secs: u64) -> u32 {
    (deadline_secs % WHEEL_SLOTS as u64) as u32
}

impl Wheel {
    /// Files `slot` for a deadline second; returns its position.
    pub fn insert(&mut self, slot: u32, deadline_secs: u64) -> WheelPos {
        let bucket = bucket_of(deadline_secs);
        let b = &mut self.buckets[bucket as usize];
        b.push(slot);
        WheelPos {
            bucket,
            idx: (b.len() - 1) as u32,
        }
    }

    /// Removes the slot at `pos`. If another slot moved into its place, returns that slot (its
    /// entry's position is now `pos`).
    pub fn remove(&mut self, pos: WheelPos) -> Option<u32> {
        let b = &mut self.buckets[pos.bucket as usize];
        let i = pos.idx as usize;
        b.swap_remove(i);
        b.get(i).copied()
    }

    /// The ticks whose buckets a sweep up to second `now_secs` must visit (at most one turn),
    /// and marks them visited. The current second's bucket is visited again by the next sweep
    /// (it may hold entries due later in that second).
    pub fn due_ticks(&mut self, now_secs: u64) -> std::ops::Range<u64> {
        let from = self.next_tick.min(now_secs);
        let n = (now_secs - from + 1).min(WHEEL_SLOTS as u64);
        self.next_tick = now_secs;
        from..from + n
    }

    /// The second the last sweep reached (its bucket is visited again by the next sweep).
    pub fn swept_up_to(&self) -> u64 {
        self.next_tick
    }

    /// The slot at `idx` of `bucket`, if any.
    pub fn get(&self, bucket: u32, idx: u32) -> Option<u32> {
        self.buckets[bucket as usize].get(idx as usize).copied()
    }

    /// Number of filed slots (equals the number of live entries).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }

    /// True if nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_reports_the_moved_slot() {
        let mut w = Wheel::default();
        let a = w.insert(1, 10);
        let _b = w.insert(2, 10);
        let c = w.insert(3, 10 + WHEEL_SLOTS as u64);
        assert_eq!(a.bucket, c.bucket);
        assert_eq!(w.remove(a), Some(3));
        assert_eq!(w.get(a.bucket, a.idx), Some(3));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn due_buckets_cover_the_gap_once_at_most() {
        let mut w = Wheel::default();
        assert_eq!(w.due_ticks(3), 0..4);
        assert_eq!(w.due_ticks(3), 3..4);
        assert_eq!(w.due_ticks(100_000).count(), WHEEL_SLOTS);
    }
}
