//! Readers, writers and flushes at once on the same blocks: writers rewrite current-epoch
//! blocks in place while readers read them without locks and commits cut epochs. No read may
//! fail and every block read must be whole (one writer's contents), never torn.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use strata_block::BLOCK_SIZE;
use strata_types::DeviceClass;

use crate::{mem_pool, new_volume, reopen_with, suite_key};

const BS: usize = BLOCK_SIZE as usize;

#[test]
fn concurrent_overwrites_reads_and_flushes() {
    overwrites_reads_and_flushes(false);
}

/// The same on an encrypted volume: a racing rewrite never shows as an authentication error.
#[test]
fn concurrent_overwrites_reads_and_flushes_encrypted() {
    overwrites_reads_and_flushes(true);
}

fn overwrites_reads_and_flushes(encrypted: bool) {
    let (pool, mems) = mem_pool(&[(32, DeviceClass::Ssd)]);
    let v = new_volume(&pool, "hot", 16 * BS as u64, encrypted);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..2u8 {
        let (pool, stop) = (pool.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let blk = (i * 7 + w as u64) % 16;
                let tag = (i as u8).wrapping_mul(2).wrapping_add(w) | 1;
                // Whole blocks, and sometimes two at once across a block boundary.
                let len = if i.is_multiple_of(3) && blk < 15 {
                    2 * BS
                } else {
                    BS
                };
                pool.write(v, blk * BS as u64, &vec![tag; len]).unwrap();
                i += 1;
            }
            i
        }));
    }
    {
        let (pool, stop) = (pool.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                pool.flush().unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            n
        }));
    }
    let mut reads = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut buf = vec![0u8; 16 * BS];
    while std::time::Instant::now() < deadline {
        pool.read(v, 0, &mut buf).unwrap();
        for (b, blk) in buf.chunks(BS).enumerate() {
            assert!(blk.iter().all(|&x| x == blk[0]), "block {b} torn");
        }
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        reads > 10 && counts.iter().all(|&c| c > 10),
        "{reads} {counts:?}"
    );
    pool.flush().unwrap();
    pool.check_consistency().unwrap();
    pool.read(v, 0, &mut buf).unwrap();
    drop(pool);
    // What was flushed last is what comes back.
    let pool = reopen_with(&mems, suite_key(encrypted));
    let mut after = vec![0u8; 16 * BS];
    pool.read(v, 0, &mut after).unwrap();
    assert!(after == buf);
    pool.check_consistency().unwrap();
}

/// Concurrent writers and flushes, and the power cut at a random sync: after reopening, no
/// block may fail its checksum (an in-place rewrite racing a commit would leave one) and every
/// block holds one writer's whole contents.
#[test]
fn power_cut_during_concurrent_overwrites_and_commits() {
    use rand::{Rng, SeedableRng};
    use strata_block::testing::PowerDomain;
    use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for round in 0..40u64 {
        let dom = PowerDomain::new(None, round);
        let dev = dom.device(12 << 20, "c0");
        let pool = Pool::create(vec![DeviceSpec {
            device: dev.clone(),
            class: DeviceClass::Ssd,
        }])
        .unwrap();
        let v = pool.create_volume("hot", 8 * BS as u64, None).unwrap();
        dom.arm(rng.gen_range(2..40));
        let mut threads = Vec::new();
        for w in 0..2u8 {
            let pool = pool.clone();
            threads.push(std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    let blk = (i * 5 + w as u64) % 8;
                    let tag = (i as u8).wrapping_mul(2).wrapping_add(w) | 1;
                    if pool.write(v, blk * BS as u64, &[tag; BS]).is_err() {
                        return;
                    }
                    i += 1;
                }
            }));
        }
        while pool.flush().is_ok() {}
        for t in threads {
            t.join().unwrap();
        }
        assert!(dom.is_dead());
        drop(pool);
        let m = MemDevice::from_image(dev.durable_image(), "after");
        let pool = Pool::open(vec![m as Arc<dyn BlockDevice>]).unwrap();
        let mut buf = vec![0u8; 8 * BS];
        pool.read(v, 0, &mut buf)
            .unwrap_or_else(|e| panic!("round {round}: read after power cut failed: {e}"));
        for (b, blk) in buf.chunks(BS).enumerate() {
            assert!(
                blk.iter().all(|&x| x == blk[0]),
                "round {round}: block {b} torn"
            );
        }
        pool.check_consistency().unwrap();
    }
}
