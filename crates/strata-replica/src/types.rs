//! Vocabulary shared by every file of the crate: the region (the unit of dirty tracking, of the
//! write-intent log and of resync), sets of regions, and copy indexes. No I/O, no imports from
//! the rest of the crate.

use std::collections::BTreeSet;

/// Bytes per region: the unit the write-intent log marks, that a faulted copy's dirty set
/// counts and that resync copies. 1 MiB matches the engine's chunk (one stripe lock, one map
/// update, one device call), so a resync step is one engine read and one engine write; a 1 TiB
/// volume has 1 Mi regions, a 128 KiB intent bitmap.
pub const REGION_SIZE: u64 = 1 << 20;

/// Most copies a replicated volume may have.
pub const MAX_COPIES: usize = 3;

/// Read errors in a row (without a successful read in between) after which a copy is faulted
/// even though each error was repaired: a device that keeps failing reads is not trusted.
pub const MAX_READ_ERRORS: u32 = 4;

/// A set of region numbers (region `r` covers bytes `r * REGION_SIZE ..`).
pub type RegionSet = BTreeSet<u64>;

/// The regions `[offset, offset + len)` touches (empty for `len == 0`).
pub fn regions_of(offset: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return 0..0;
    }
    offset / REGION_SIZE..(offset + len).div_ceil(REGION_SIZE)
}

/// Number of regions of a volume of `size` bytes.
pub fn region_count(size: u64) -> u64 {
    size.div_ceil(REGION_SIZE)
}

/// The byte range of region `r` in a volume of `size` bytes (the last one may be short).
pub fn region_range(r: u64, size: u64) -> (u64, u64) {
    let start = r * REGION_SIZE;
    (start, (start + REGION_SIZE).min(size) - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_cover_exactly_the_bytes() {
        assert_eq!(regions_of(0, 0), 0..0);
        assert_eq!(regions_of(0, 1), 0..1);
        assert_eq!(regions_of(REGION_SIZE - 1, 2), 0..2);
        assert_eq!(regions_of(REGION_SIZE, REGION_SIZE), 1..2);
        assert_eq!(region_count(REGION_SIZE + 1), 2);
        assert_eq!(region_range(1, REGION_SIZE + 10), (REGION_SIZE, 10));
    }
}
