//! A full pool (issue 9): rewriting written data keeps working, new data fails with ENOSPC
//! and changes nothing, and a write that does not fit fails whole, also across a reopen.

use proptest::prelude::*;
use strata_block::{IoError, Pool, VolumeId, BLOCK_SIZE};
use strata_types::DeviceClass;

use crate::{mem_pool, new_volume, pattern, reopen, reopen_with, suite_key};

const BS: u64 = BLOCK_SIZE;
const CHUNK: u64 = 256 * BS;

fn is_enospc(r: Result<(), IoError>) -> bool {
    matches!(&r, Err(e @ IoError::OutOfSpace { .. }) if e.errno() == 28)
}

/// Writes new data into `v` from `from` (1 MiB, then 4 KiB requests) until the pool refuses
/// a single new block; returns the end of what was written.
fn fill(pool: &Pool, v: VolumeId, from: u64, tag: u8) -> u64 {
    let mut at = from;
    for step in [CHUNK, BS] {
        loop {
            match pool.write(v, at, &pattern(tag, at / BS, step as usize)) {
                Ok(()) => at += step,
                Err(e) => {
                    assert!(matches!(e, IoError::OutOfSpace { .. }), "{e}");
                    break;
                }
            }
        }
    }
    at
}

/// Rewrites `[from, to)` of `v` in requests of at most 1 MiB with content `tag`.
fn overwrite(pool: &Pool, v: VolumeId, from: u64, to: u64, tag: u8) {
    let mut at = from;
    while at < to {
        let n = CHUNK.min(to - at);
        pool.write(v, at, &pattern(tag, at / BS, n as usize))
            .unwrap_or_else(|e| panic!("overwrite at {at} on a full pool: {e}"));
        at += n;
    }
}

fn assert_content(pool: &Pool, v: VolumeId, from: u64, to: u64, tag: u8) {
    let mut at = from;
    let mut buf = vec![0u8; CHUNK as usize];
    while at < to {
        let n = CHUNK.min(to - at) as usize;
        pool.read(v, at, &mut buf[..n]).unwrap();
        assert!(buf[..n] == pattern(tag, at / BS, n), "content at {at}");
        at += n as u64;
    }
}

#[test]
fn overwrites_of_every_written_block_succeed_on_a_full_pool() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 30, None).unwrap();
    let end = fill(&pool, v, 0, 1);
    pool.flush().unwrap();
    let info = pool.info();
    assert_eq!(info.free, info.reserve, "only the reserve is left");
    assert_eq!(pool.volume(v).unwrap().allocated, end);
    // Every allocated block is rewritten (redirect-on-write: the old copies are durable).
    overwrite(&pool, v, 0, end, 2);
    pool.flush().unwrap();
    pool.check_consistency().unwrap();
    // The commit freed the old copies: the reserve is whole again, and it is rewritable again.
    let info = pool.info();
    assert_eq!(info.free, info.reserve);
    overwrite(&pool, v, 0, end, 3);
    pool.flush().unwrap();
    assert_content(&pool, v, 0, end, 3);
    drop(pool);
    let pool = reopen(&mems);
    pool.check_consistency().unwrap();
    assert_content(&pool, v, 0, end, 3);
}

#[test]
fn overwrites_redirect_on_a_full_pool_with_a_snapshot() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 30, None).unwrap();
    let base = 64 * BS;
    pool.write(v, 0, &pattern(1, 0, base as usize)).unwrap();
    let s = pool.create_snapshot(v, "s").unwrap();
    let end = fill(&pool, v, base, 2);
    pool.flush().unwrap();
    assert_eq!(pool.volume(v).unwrap().allocated, end - base);
    // The volume's own blocks are rewritten: each redirects, the snapshot keeps nothing of them.
    overwrite(&pool, v, base, end, 3);
    pool.flush().unwrap();
    // Blocks the snapshot holds are new space for the volume: refused on a full pool, unchanged.
    assert!(is_enospc(pool.write(v, 0, &vec![9; BS as usize])));
    pool.check_consistency().unwrap();
    drop(pool);
    let pool = reopen(&mems);
    pool.check_consistency().unwrap();
    assert_content(&pool, v, 0, base, 1);
    assert_content(&pool, v, base, end, 3);
    let mut buf = vec![0u8; base as usize];
    pool.read(s, 0, &mut buf).unwrap();
    assert!(buf == pattern(1, 0, base as usize), "snapshot changed");
    pool.read(s, base, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "snapshot shows later data");
}

#[test]
fn new_data_on_a_full_pool_fails_and_changes_nothing() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 30, None).unwrap();
    let end = fill(&pool, v, 0, 1);
    pool.flush().unwrap();
    overwrite(&pool, v, 0, CHUNK, 2);
    // New blocks: a write past the data, and one that covers written blocks and a new one.
    assert!(is_enospc(pool.write(v, end, &vec![7; BS as usize])));
    assert!(is_enospc(pool.write(
        v,
        end - 4 * BS,
        &vec![7; 5 * BS as usize]
    )));
    let check = |pool: &Pool| {
        assert_content(pool, v, 0, CHUNK, 2);
        assert_content(pool, v, CHUNK, end, 1);
        let mut buf = vec![0xEEu8; BS as usize];
        pool.read(v, end, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(pool.volume(v).unwrap().allocated, end);
    };
    check(&pool);
    pool.flush().unwrap();
    drop(pool);
    let pool = reopen(&mems);
    pool.check_consistency().unwrap();
    check(&pool);
}

#[test]
fn a_multi_chunk_write_that_cannot_fit_fails_whole() {
    let (pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 30, None).unwrap();
    let info = pool.info();
    let room = info.free - info.reserve;
    // Two chunks more than fits, starting mid-chunk: chunks before the shortfall would fit.
    let len = room + 2 * CHUNK;
    let at = CHUNK / 2;
    assert!(is_enospc(pool.write(v, at, &pattern(4, 0, len as usize))));
    let check = |pool: &Pool| {
        assert_eq!(pool.volume(v).unwrap().allocated, 0);
        assert_eq!(
            pool.block_status(v, 0, 1 << 30).unwrap(),
            vec![(1 << 30, false)]
        );
        let mut buf = vec![0xEEu8; len as usize];
        pool.read(v, at, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    };
    check(&pool);
    let after = pool.info();
    assert_eq!((after.free, after.allocated), (info.free, info.allocated));
    pool.flush().unwrap();
    drop(pool);
    let pool = reopen(&mems);
    check(&pool);
    // What does fit, fits: the same write one chunk shorter than the room.
    pool.write(v, at, &pattern(4, 0, (room - CHUNK) as usize))
        .unwrap();
}

#[derive(Debug, Clone)]
enum Act {
    Write { block: u64, blocks: u64, tag: u8 },
    Flush,
    Reopen,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => (0..VOL_BLOCKS, 1..=256u64, any::<u8>()).prop_map(|(block, blocks, tag)| Act::Write { block, blocks, tag }),
        1 => Just(Act::Flush),
        1 => Just(Act::Reopen),
    ]
}

/// Volume larger than the pool (16 MiB device, about 2,560 data blocks).
const VOL_BLOCKS: u64 = 4096;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    /// Against a `Vec<u8>` model of a volume larger than its pool: a write either applies
    /// whole or fails with ENOSPC and changes nothing; a write of blocks all already written
    /// (at most 1 MiB) never fails.
    #[test]
    fn writes_on_a_filling_pool_apply_whole_or_not_at_all(acts in proptest::collection::vec(act(), 1..80)) {
        filling_pool(acts, false)?;
    }

    /// The same on an encrypted volume (its entries, with tags, still fit the metadata of a
    /// full pool).
    #[test]
    fn writes_on_a_filling_pool_apply_whole_or_not_at_all_encrypted(acts in proptest::collection::vec(act(), 1..80)) {
        filling_pool(acts, true)?;
    }
}

fn filling_pool(acts: Vec<Act>, encrypted: bool) -> Result<(), TestCaseError> {
    {
        let (mut pool, mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
        let v = new_volume(&pool, "v", VOL_BLOCKS * BS, encrypted);
        let mut model = vec![0u8; (VOL_BLOCKS * BS) as usize];
        let mut written = vec![false; VOL_BLOCKS as usize];
        for a in acts {
            match a {
                Act::Write { block, blocks, tag } => {
                    let blocks = blocks.min(VOL_BLOCKS - block);
                    let (s, e) = (block as usize, (block + blocks) as usize);
                    let data = pattern(tag, block, (blocks * BS) as usize);
                    let rewrite = written[s..e].iter().all(|&w| w);
                    match pool.write(v, block * BS, &data) {
                        Ok(()) => {
                            model[s * BS as usize..e * BS as usize].copy_from_slice(&data);
                            written[s..e].fill(true);
                        }
                        Err(err) => {
                            prop_assert!(matches!(err, IoError::OutOfSpace { .. }), "{}", err);
                            prop_assert!(!rewrite, "a rewrite of written blocks failed: {}", err);
                        }
                    }
                    let mut buf = vec![0u8; (e - s) * BS as usize];
                    pool.read(v, block * BS, &mut buf).unwrap();
                    prop_assert!(
                        buf == model[s * BS as usize..e * BS as usize],
                        "blocks {}..{}",
                        s,
                        e
                    );
                }
                Act::Flush => pool.flush().unwrap(),
                Act::Reopen => {
                    pool.flush().unwrap();
                    drop(pool);
                    pool = reopen_with(&mems, suite_key(encrypted));
                }
            }
            pool.check_consistency().map_err(TestCaseError::fail)?;
            let mapped = written.iter().filter(|&&w| w).count() as u64;
            prop_assert_eq!(pool.volume(v).unwrap().allocated, mapped * BS);
        }
        let mut all = vec![0u8; model.len()];
        pool.read(v, 0, &mut all).unwrap();
        prop_assert!(all == model);
    }
    Ok(())
}

/// A full pool, four writers rewriting their own ranges across a chunk boundary (so one
/// request is two chunks) while a third thread flushes without pause: a flush between a
/// request's reservation and one of its chunks must not turn that chunk into an allocation
/// the reservation did not cover. Every write applies whole or fails with ENOSPC and changes
/// nothing: a range reads as the last tag a write of it returned `Ok` for, never a mix.
#[test]
fn rewrites_apply_whole_under_concurrent_flushes_on_a_full_pool() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (pool, _mems) = mem_pool(&[(16, DeviceClass::Ssd)]);
    let v = pool.create_volume("v", 1 << 30, None).unwrap();
    let end = fill(&pool, v, 0, 1);
    // Each writer's range: half a chunk across a chunk boundary, inside what was written;
    // together they need twice the reserve when every block is a redirect.
    let len = CHUNK / 2;
    let ranges: Vec<u64> = (0..4).map(|i| CHUNK * 3 / 4 + i * 2 * CHUNK).collect();
    assert!(ranges.iter().all(|&r| r + len <= end));
    for (i, &at) in ranges.iter().enumerate() {
        pool.write(v, at, &pattern(100 + i as u8, 0, len as usize))
            .unwrap();
    }
    pool.flush().unwrap();
    let stop = AtomicBool::new(false);
    let (oks, fails) = std::thread::scope(|s| {
        let flusher = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                pool.flush().unwrap();
                std::thread::yield_now();
            }
        });
        let writers: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, &at)| {
                let pool = &pool;
                s.spawn(move || {
                    let mut last = 100 + i as u8;
                    let (mut oks, mut fails) = (0u32, 0u32);
                    let mut buf = vec![0u8; len as usize];
                    for round in 0..600u32 {
                        let tag = (round % 90) as u8;
                        match pool.write(v, at, &pattern(tag, 0, len as usize)) {
                            Ok(()) => {
                                last = tag;
                                oks += 1;
                            }
                            Err(e) => {
                                assert!(matches!(e, IoError::OutOfSpace { .. }), "{e}");
                                fails += 1;
                            }
                        }
                        pool.read(v, at, &mut buf).unwrap();
                        assert!(
                            buf == pattern(last, 0, len as usize),
                            "round {round}: the range at {at} is not the last write's (tag \
                             {last}) whole"
                        );
                    }
                    (oks, fails)
                })
            })
            .collect();
        let r: Vec<(u32, u32)> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        flusher.join().unwrap();
        r.iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    eprintln!("{oks} rewrites applied, {fails} refused for space");
    assert!(oks > 0, "no rewrite ever fit");
    pool.check_consistency().unwrap();
}
