//! Free-space tracking: one bitmap per device, rebuilt from the metadata at open (the bitmap is
//! derived state and never stored, so it cannot disagree with the maps).
//!
//! Placement: a request goes to the device (of the requested class, if any) with the most free
//! blocks, which spreads data by free space, and takes a contiguous run from a rotating cursor
//! so that sequential writes stay sequential on the device; a request of 64 blocks or more
//! takes a span of wholly free bitmap words before it fills holes (`DevBitmap::take_run`).
//!
//! Reserve: every device holds back [`reserve_blocks`] free blocks from allocations of new
//! data ([`Take::AboveReserve`]); only a redirect of a block a volume already holds
//! ([`Take::IncludingReserve`]) may take them. Invariant: an allocation with `AboveReserve`
//! never leaves a device with fewer free blocks than its reserve.

use smallvec::SmallVec;
use strata_types::DeviceClass;

use crate::meta::paddr;

#[derive(Debug, Clone)]
struct DevBitmap {
    class: DeviceClass,
    bits: Vec<u64>,
    blocks: u64,
    free: u64,
    cursor: u64,
    reserve: u64,
}

/// Most blocks one allocation takes from a device before it chooses the device again (one
/// 1 MiB chunk): a large allocation (a whole write request) spreads over the devices by free
/// space chunk by chunk, as one allocation per chunk would.
const SPREAD_RUN: u64 = 256;

/// Smallest allocation that looks for a span of wholly free bitmap words first (64 blocks,
/// 256 KiB): see `DevBitmap::take_run`.
const SPAN_MIN: u64 = 64;

/// Which free blocks an allocation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Only blocks above each device's reserve: space for new (thin) data.
    AboveReserve,
    /// Any free block, the reserve included: redirect-on-write of a block already held, whose
    /// old copy the next commit frees.
    IncludingReserve,
}

/// The reserve of a device with `blocks` data blocks: 1/64 of it, at least one chunk (1 MiB)
/// and at most 32 MiB (the largest NBD request), but never more than 1/8 of the device.
/// See `docs/block-format.md` ("Full pool") for why.
pub fn reserve_blocks(blocks: u64) -> u64 {
    const MIN: u64 = 256;
    const MAX: u64 = 8192;
    (blocks / 64).clamp(MIN, MAX).min(blocks / 8)
}

impl DevBitmap {
    fn is_set(&self, b: u64) -> bool {
        self.bits[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
    fn set(&mut self, b: u64) {
        self.bits[(b / 64) as usize] |= 1 << (b % 64);
    }
    fn clear(&mut self, b: u64) {
        self.bits[(b / 64) as usize] &= !(1 << (b % 64));
    }

    /// First free block at or after `from`, scanning a word at a time.
    fn next_free(&self, from: u64) -> Option<u64> {
        let mut b = from;
        while b < self.blocks {
            let w = self.bits[(b / 64) as usize] | ((1u64 << (b % 64)) - 1);
            if w != u64::MAX {
                let f = (b / 64) * 64 + (!w).trailing_zeros() as u64;
                return (f < self.blocks).then_some(f);
            }
            b = (b / 64 + 1) * 64;
        }
        None
    }

    /// Free blocks `take` may use.
    fn usable(&self, take: Take) -> u64 {
        match take {
            Take::AboveReserve => self.free.saturating_sub(self.reserve),
            Take::IncludingReserve => self.free,
        }
    }

    /// First block of `words` consecutive wholly free bitmap words (64 blocks each) at or
    /// after `from`, if any.
    fn next_free_words(&self, from: u64, words: usize) -> Option<u64> {
        let mut run = 0;
        for w in (from.div_ceil(64) as usize)..self.bits.len() {
            // A last partial word counts only for the blocks that exist.
            let whole = (w as u64 + 1) * 64 <= self.blocks;
            if self.bits[w] == 0 && whole {
                run += 1;
                if run == words {
                    return Some((w + 1 - words) as u64 * 64);
                }
            } else {
                run = 0;
            }
        }
        None
    }

    /// Takes up to `want` contiguous free blocks. A request of at least [`SPAN_MIN`] blocks
    /// starts at the first span of wholly free bitmap words that holds it, from the cursor
    /// (then from the start): free space left in holes by small frees would otherwise split a
    /// large write into many short runs, one device write each, and a later rewrite of that
    /// range would move it again (`place` moves current-epoch blocks that are not
    /// consecutive). Without such a span, or for small requests, it starts at the first free
    /// block from the cursor.
    fn take_run(&mut self, want: u64) -> Option<(u64, u64)> {
        let span = if want >= SPAN_MIN {
            let words = want.div_ceil(64) as usize;
            self.next_free_words(self.cursor, words)
                .or_else(|| self.next_free_words(0, words))
        } else {
            None
        };
        let start = span
            .or_else(|| self.next_free(self.cursor))
            .or_else(|| self.next_free(0))?;
        let mut len = 0;
        while len < want && start + len < self.blocks && !self.is_set(start + len) {
            self.set(start + len);
            len += 1;
        }
        self.free -= len;
        self.cursor = start + len;
        Some((start, len))
    }
}

/// The pool's free-space map.
#[derive(Debug, Clone)]
pub struct Allocator {
    devs: Vec<DevBitmap>,
}

/// A run of consecutive physical blocks on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Device index.
    pub device: usize,
    /// First block on the device.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

impl Run {
    /// Physical address of the run's first block.
    pub fn paddr(&self) -> u64 {
        paddr(self.device, self.start)
    }
}

impl Allocator {
    /// All blocks free; `devices` gives (class, data blocks) per device index.
    pub fn new(devices: &[(DeviceClass, u64)]) -> Self {
        Allocator {
            devs: devices
                .iter()
                .map(|&(class, blocks)| DevBitmap {
                    class,
                    bits: vec![0; blocks.div_ceil(64) as usize],
                    blocks,
                    free: blocks,
                    cursor: 0,
                    reserve: reserve_blocks(blocks),
                })
                .collect(),
        }
    }

    /// Marks a block used (rebuild at open). Returns false if it already was.
    pub fn mark_used(&mut self, device: usize, block: u64) -> bool {
        let d = &mut self.devs[device];
        if d.is_set(block) {
            return false;
        }
        d.set(block);
        d.free -= 1;
        true
    }

    /// Free blocks available to `class` (None: any device).
    pub fn free_blocks(&self, class: Option<DeviceClass>) -> u64 {
        self.devs
            .iter()
            .filter(|d| class.is_none_or(|c| c == d.class))
            .map(|d| d.free)
            .sum()
    }

    /// Free blocks `take` may allocate to `class` (None: any device).
    pub fn available(&self, class: Option<DeviceClass>, take: Take) -> u64 {
        self.devs
            .iter()
            .filter(|d| class.is_none_or(|c| c == d.class))
            .map(|d| d.usable(take))
            .sum()
    }

    /// Blocks held back from new data, over all devices.
    pub fn reserve(&self) -> u64 {
        self.devs.iter().map(|d| d.reserve).sum()
    }

    /// Free blocks on one device.
    pub fn device_free(&self, device: usize) -> u64 {
        self.devs[device].free
    }

    /// Allocates exactly `n` blocks as one or more runs, all or nothing, from the free blocks
    /// `take` may use. Runs are appended to `out`; returns false (and allocates nothing) if
    /// the class lacks space.
    pub fn alloc(
        &mut self,
        n: u64,
        class: Option<DeviceClass>,
        take: Take,
        out: &mut SmallVec<[Run; 4]>,
    ) -> bool {
        if self.available(class, take) < n {
            return false;
        }
        let mut left = n;
        while left > 0 {
            let dev = (0..self.devs.len())
                .filter(|&i| {
                    class.is_none_or(|c| c == self.devs[i].class) && self.devs[i].usable(take) > 0
                })
                .max_by_key(|&i| (self.devs[i].usable(take), std::cmp::Reverse(i)))
                .expect("free space was counted");
            let want = left.min(self.devs[dev].usable(take)).min(SPREAD_RUN);
            let (start, len) = self.devs[dev]
                .take_run(want)
                .expect("device has free blocks");
            left -= len;
            match out.last_mut() {
                Some(r) if r.device == dev && r.start + r.len == start => r.len += len,
                _ => out.push(Run {
                    device: dev,
                    start,
                    len,
                }),
            }
        }
        true
    }

    /// Returns a block to the free map.
    pub fn free(&mut self, device: usize, block: u64) {
        let d = &mut self.devs[device];
        debug_assert!(d.is_set(block), "double free of {device}:{block}");
        if d.is_set(block) {
            d.clear(block);
            d.free += 1;
        }
    }

    /// Returns a run to the free map.
    pub fn free_run(&mut self, r: Run) {
        for b in r.start..r.start + r.len {
            self.free(r.device, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spreads_by_free_space_and_class() {
        let mut a = Allocator::new(&[(DeviceClass::Hdd, 100), (DeviceClass::Ssd, 50)]);
        let mut out = SmallVec::new();
        assert!(a.alloc(60, None, Take::IncludingReserve, &mut out));
        assert_eq!(out[0].device, 0);
        let mut out = SmallVec::new();
        assert!(a.alloc(10, Some(DeviceClass::Ssd), Take::IncludingReserve, &mut out));
        assert!(out.iter().all(|r| r.device == 1));
        assert!(!a.alloc(
            41,
            Some(DeviceClass::Ssd),
            Take::IncludingReserve,
            &mut SmallVec::new()
        ));
        assert!(!a.alloc(81, None, Take::IncludingReserve, &mut SmallVec::new()));
        assert!(a.alloc(80, None, Take::IncludingReserve, &mut SmallVec::new()));
        assert_eq!(a.free_blocks(None), 0);
    }

    #[test]
    fn new_data_stops_at_the_reserve_redirects_may_take_it() {
        let mut a = Allocator::new(&[(DeviceClass::Ssd, 4096)]);
        let r = reserve_blocks(4096);
        assert_eq!((r, a.reserve()), (256, 256));
        assert_eq!(reserve_blocks(1 << 30), 8192);
        assert_eq!(reserve_blocks(1000), 125);
        let mut out = SmallVec::new();
        assert!(a.alloc(4096 - r, None, Take::AboveReserve, &mut out));
        assert!(!a.alloc(1, None, Take::AboveReserve, &mut out));
        assert_eq!(a.available(None, Take::AboveReserve), 0);
        assert_eq!(a.available(None, Take::IncludingReserve), r);
        assert!(a.alloc(r, None, Take::IncludingReserve, &mut out));
        assert_eq!(a.free_blocks(None), 0);
    }

    #[test]
    fn a_large_allocation_skips_holes_for_a_free_span() {
        let mut a = Allocator::new(&[(DeviceClass::Ssd, 4096)]);
        let mut out = SmallVec::new();
        assert!(a.alloc(1024, None, Take::IncludingReserve, &mut out));
        // Free every other block of the first 1024: holes, 512 free blocks in all.
        for b in (0..1024).step_by(2) {
            a.free(0, b);
        }
        a.devs[0].cursor = 0;
        let mut out = SmallVec::new();
        assert!(a.alloc(256, None, Take::IncludingReserve, &mut out));
        assert_eq!(out.len(), 1, "one run, not 256 holes: {out:?}");
        assert_eq!((out[0].start, out[0].len), (1024, 256));
        // Small allocations still fill holes (from the cursor).
        a.devs[0].cursor = 0;
        let mut out = SmallVec::new();
        assert!(a.alloc(2, None, Take::IncludingReserve, &mut out));
        assert!(out.iter().all(|r| r.start < 1024), "{out:?}");
        // With no span left, a large allocation takes holes.
        let mut out = SmallVec::new();
        let left = a.free_blocks(None);
        assert!(a.alloc(left, None, Take::IncludingReserve, &mut out));
        assert_eq!(a.free_blocks(None), 0);
    }

    proptest! {
        /// The allocator against a plain set of used blocks.
        #[test]
        fn matches_a_bitmap_model(ops in proptest::collection::vec((any::<bool>(), 1u64..20), 1..200)) {
            let mut a = Allocator::new(&[(DeviceClass::Ssd, 70), (DeviceClass::Ssd, 33)]);
            let mut used: std::collections::BTreeSet<(usize, u64)> = Default::default();
            for (alloc, n) in ops {
                if alloc {
                    let mut out = SmallVec::new();
                    let ok = a.alloc(n, None, Take::IncludingReserve, &mut out);
                    prop_assert_eq!(ok, 103 - used.len() as u64 >= n);
                    let mut got = 0;
                    for r in out {
                        for b in r.start..r.start + r.len {
                            prop_assert!(used.insert((r.device, b)), "handed out twice");
                            got += 1;
                        }
                    }
                    prop_assert_eq!(got, if ok { n } else { 0 });
                } else {
                    let victims: Vec<_> = used.iter().copied().take(n as usize).collect();
                    for (d, b) in victims {
                        used.remove(&(d, b));
                        a.free(d, b);
                    }
                }
                prop_assert_eq!(a.free_blocks(None), 103 - used.len() as u64);
            }
        }
    }
}
