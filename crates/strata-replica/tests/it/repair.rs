//! Read repair: a corrupted block on one copy is served from another, rewritten and counted;
//! a copy that keeps failing reads is faulted.

use strata_replica::{Cause, CopyState, REGION_SIZE};

use crate::{image_of, pattern, set_of, MAX_READ_ERRORS_FOR_TEST};

/// Flips bits of the first device copy of `needle` in a memory device image.
fn corrupt(mem: &strata_block::MemDevice, needle: &[u8]) -> u64 {
    let img = mem.image();
    let pos = img
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("data is on the device") as u64;
    mem.poke(pos + 100, &[img[pos as usize + 100] ^ 0x5a]);
    pos
}

#[test]
fn a_corrupted_block_is_served_from_another_copy_repaired_and_counted() {
    let (set, doms, _log) = set_of(2, 4 * REGION_SIZE);
    let data = pattern(11, 0, 64 << 10);
    set.write(REGION_SIZE, &data).unwrap();
    set.flush().unwrap();
    // Copy 0 serves reads first (ties by index): corrupt its block.
    corrupt(&doms[0].mem, &data[..4096]);
    assert!(doms[0].copy().read(REGION_SIZE, &mut [0; 4096]).is_err());
    let mut b = vec![0; data.len()];
    set.read(REGION_SIZE, &mut b).unwrap();
    assert_eq!(b, data);
    let c = set.copies();
    assert_eq!(c[0].stats.read_errors, 1);
    assert_eq!(c[0].stats.repairs, 1);
    assert_eq!(c[0].stats.repaired_bytes, data.len() as u64);
    assert_eq!(c[1].stats.reads, 1);
    assert_eq!(c[0].state, CopyState::Healthy);
    // The copy itself reads right again, and the next read is served by it without an error.
    let img = image_of(&*doms[0].copy());
    assert_eq!(&img[REGION_SIZE as usize..][..data.len()], &data[..]);
    set.read(REGION_SIZE, &mut b).unwrap();
    let c = set.copies();
    assert_eq!((c[0].stats.reads, c[0].stats.read_errors), (1, 1));
}

#[test]
fn a_copy_that_keeps_failing_reads_is_faulted() {
    let (set, doms, _log) = set_of(2, 4 * REGION_SIZE);
    let data = pattern(12, 0, 8192);
    set.write(0, &data).unwrap();
    set.flush().unwrap();
    doms[0].fault.set_fail_reads(true);
    let mut b = vec![0; data.len()];
    for i in 0..MAX_READ_ERRORS_FOR_TEST {
        set.read(0, &mut b).unwrap();
        assert_eq!(b, data);
        let c = &set.copies()[0];
        assert_eq!(c.stats.repairs, i as u64 + 1);
        let expect = if i + 1 < MAX_READ_ERRORS_FOR_TEST {
            CopyState::Healthy
        } else {
            CopyState::Faulted
        };
        assert_eq!(c.state, expect, "after {} errors", i + 1);
    }
    let ev = set.drain_events();
    assert_eq!(ev.len(), 1);
    assert!(matches!(ev[0].cause, Cause::ReadErrors(_)));
    set.read(0, &mut b).unwrap();
    assert_eq!(
        set.copies()[0].stats.read_errors,
        MAX_READ_ERRORS_FOR_TEST as u64
    );
}
