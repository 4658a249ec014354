//! Crash consistency across copies: a power cut (strata-block's power-cut backend: both
//! copies' devices lose power together, unsynced writes torn per 512-byte sector) at a sync or
//! in the middle of a replicated write; reopen from the durable images; resync from the
//! intent log: the copies agree byte for byte, and every block not written since the last
//! acknowledged flush holds its flushed contents.

use std::collections::BTreeSet;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_block::testing::{CrashDevice, PowerDomain};
use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
use strata_replica::{
    CopyState, CopyTarget, FileIntentLog, LocalCopy, MemIntentLog, ReplicaSet, REGION_SIZE,
};
use strata_types::DeviceClass;

use crate::{image_of, pattern, resync_all, HookTarget, DEV_SIZE};

const VOL: u64 = 6 * REGION_SIZE;
const BS: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// At the k-th device sync from the start of the workload.
    AtSync(u64),
    /// Before copy 1 takes the w-th write (copy 0 already has it), and the process dies
    /// there: the intent log takes no more stores, so copy 1's failure is never recorded.
    MidWrite(u32),
    /// Before copy 1 takes the f-th flush (copy 0's is durable), and the process dies there.
    MidFlush(u32),
    /// After the w-th operation, with nothing in flight: no copy ever saw an error.
    Idle(u32),
}

fn new_pool(dev: Arc<CrashDevice>) -> (Pool, Arc<dyn CopyTarget>) {
    let label = dev.describe();
    let pool = Pool::create(vec![DeviceSpec {
        device: dev,
        class: DeviceClass::Ssd,
    }])
    .unwrap();
    let vol = pool.create_volume("copy", VOL, None).unwrap();
    let t = Arc::new(LocalCopy::new(pool.clone(), vol, label));
    (pool, t)
}

fn reopen(dev: &CrashDevice) -> Arc<dyn CopyTarget> {
    let mem: Arc<dyn BlockDevice> = MemDevice::from_image(dev.durable_image(), dev.describe());
    let pool = Pool::open(vec![mem]).unwrap();
    let vol = pool.volume_id("copy").unwrap();
    Arc::new(LocalCopy::new(pool, vol, dev.describe()))
}

fn crash_run(seed: u64, cut: Cut) {
    let dom = PowerDomain::new(None, seed);
    let devs: Vec<Arc<CrashDevice>> = (0..2)
        .map(|i| dom.device(DEV_SIZE as usize, &format!("c{i}")))
        .collect();
    let (_p0, t0) = new_pool(devs[0].clone());
    let (_p1, t1) = new_pool(devs[1].clone());
    let hook = HookTarget::new(t1);
    let log = MemIntentLog::new();
    let set = ReplicaSet::create(vec![t0, hook.clone()], Box::new(log.clone())).unwrap();
    if let Cut::AtSync(k) = cut {
        dom.arm(k);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = vec![0u8; VOL as usize];
    let mut durable = model.clone();
    let mut touched = BTreeSet::new();
    let mut writes = 0u32;
    let mut flushes = 0u32;
    for i in 0..60 {
        if matches!(cut, Cut::Idle(w) if w == i) {
            break;
        }
        if rng.gen_range(0..10) < 7 {
            let off = rng.gen_range(0..VOL - 1);
            let len = rng.gen_range(1..64 << 10).min(VOL - off);
            let data = pattern(rng.gen(), off, len as usize);
            touched.extend(off / BS as u64..(off + len).div_ceil(BS as u64));
            if let Cut::MidWrite(w) = cut {
                if w == writes {
                    let (d, l) = (dom.clone(), log.clone());
                    hook.on_next_write(move || {
                        d.cut_now();
                        l.set_fail(true);
                    });
                }
            }
            writes += 1;
            if set.write(off, &data).is_err() {
                break;
            }
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
        } else {
            if let Cut::MidFlush(f) = cut {
                if f == flushes {
                    let (d, l) = (dom.clone(), log.clone());
                    hook.on_next_flush(move || {
                        d.cut_now();
                        l.set_fail(true);
                    });
                }
            }
            flushes += 1;
            if set.flush().is_err() {
                break;
            }
            durable.clone_from(&model);
            touched.clear();
        }
    }
    dom.cut_now();
    log.set_fail(false);

    let set = ReplicaSet::open(vec![reopen(&devs[0]), reopen(&devs[1])], Box::new(log)).unwrap();
    resync_all(&set);
    assert!(!set.degraded(), "seed {seed} {cut:?}: {:?}", set.copies());
    for c in set.copies() {
        assert_eq!(c.state, CopyState::Healthy);
    }
    let targets: Vec<Arc<dyn CopyTarget>> = (0..2).map(|i| set.copy_target(i)).collect();
    let a = image_of(&*targets[0]);
    let b = image_of(&*targets[1]);
    assert!(a == b, "seed {seed} {cut:?}: the copies disagree");
    for blk in 0..VOL as usize / BS {
        if !touched.contains(&(blk as u64)) {
            assert!(
                a[blk * BS..(blk + 1) * BS] == durable[blk * BS..(blk + 1) * BS],
                "seed {seed} {cut:?}: flushed block {blk} lost"
            );
        }
    }
    let mut via_set = vec![0u8; VOL as usize];
    set.read(0, &mut via_set).unwrap();
    assert!(via_set == a);
}

#[test]
fn power_cut_at_a_sync_then_resync_makes_the_copies_agree() {
    for seed in 0..16u64 {
        crash_run(seed, Cut::AtSync(1 + seed % 9));
    }
}

#[test]
fn power_cut_in_the_middle_of_a_replicated_write_then_resync_makes_the_copies_agree() {
    for seed in 0..16u64 {
        crash_run(100 + seed, Cut::MidWrite((seed * 3 % 40) as u32));
    }
}

#[test]
fn power_cut_between_the_copies_flushes_then_resync_makes_the_copies_agree() {
    for seed in 0..16u64 {
        crash_run(300 + seed, Cut::MidFlush((seed % 8) as u32));
    }
}

#[test]
fn power_cut_between_writes_then_resync_makes_the_copies_agree() {
    for seed in 0..16u64 {
        crash_run(200 + seed, Cut::Idle(5 + (seed * 7 % 50) as u32));
    }
}

#[test]
fn a_file_log_makes_a_reopened_set_resync_the_regions_it_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vol.intent");
    let d0 = crate::Domain::new("dom0", VOL);
    let d1 = crate::Domain::new("dom1", VOL);
    let set = ReplicaSet::create(
        vec![d0.copy(), d1.copy()],
        Box::new(FileIntentLog::new(&path)),
    )
    .unwrap();
    set.write(0, &pattern(1, 0, 8192)).unwrap();
    set.flush().unwrap();
    set.flush().unwrap();
    set.write(2 * REGION_SIZE, &pattern(2, 0, 8192)).unwrap();
    drop(set);
    // As after a crash between the copies' writes: copy 1 holds other bytes in region 2.
    d1.copy()
        .write(2 * REGION_SIZE, &pattern(3, 0, 8192))
        .unwrap();
    let set = ReplicaSet::open(
        vec![d0.copy(), d1.copy()],
        Box::new(FileIntentLog::new(&path)),
    )
    .unwrap();
    assert_eq!(set.intent_regions(), [2].into_iter().collect());
    assert!(
        matches!(set.copies()[1].state, CopyState::Resyncing { total, .. } if total == REGION_SIZE)
    );
    resync_all(&set);
    assert_eq!(image_of(&*d0.copy()), image_of(&*d1.copy()));
    assert_eq!(set.copies()[1].stats.resync_bytes, REGION_SIZE);
}

/// A rebuild stepped by three threads onto a new copy, the power cut at its `k`-th sync (the
/// new copy's commits, the final flush) or, for large `k`, after it ended; reopen from the
/// durable images and the log: the new copy is healthy (or resyncs only marked regions) after
/// the reopen only if the rebuild ended before the cut, and then holds every byte; otherwise it
/// is rebuilt whole again.
fn rebuild_cut(seed: u64, k: u64) {
    let dom = PowerDomain::new(None, seed);
    let devs: Vec<Arc<CrashDevice>> = (0..3)
        .map(|i| dom.device(DEV_SIZE as usize, &format!("c{i}")))
        .collect();
    let (_p0, t0) = new_pool(devs[0].clone());
    let (_p1, t1) = new_pool(devs[1].clone());
    let log = MemIntentLog::new();
    let set = ReplicaSet::create(vec![t0, t1], Box::new(log.clone())).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for r in 0..VOL / REGION_SIZE {
        // Some regions stay zero (trimmed on the new copy), the others are data.
        if rng.gen_range(0..4) > 0 {
            let off = r * REGION_SIZE;
            set.write(off, &pattern(seed + r, off, REGION_SIZE as usize))
                .unwrap();
        }
    }
    // Two flushes: the intent bits are cleared, so after the cut nothing but the copy's flag
    // says whether it holds the data.
    set.flush().unwrap();
    set.flush().unwrap();
    assert!(set.intent_regions().is_empty());
    let source = image_of(&*set.copy_target(0));
    set.fault(1).unwrap();
    let (_p2, t2) = new_pool(devs[2].clone());
    set.replace(1, t2).unwrap();
    dom.arm(k);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                match set.resync_step(REGION_SIZE) {
                    Ok(Some(p)) if !p.finished && !p.failed => continue,
                    _ => break,
                }
            });
        }
    });
    let ended = !set.degraded();
    dom.cut_now();
    let set = ReplicaSet::open(vec![reopen(&devs[0]), reopen(&devs[2])], Box::new(log)).unwrap();
    match set.copies()[1].state {
        CopyState::Healthy => {
            assert!(
                ended,
                "seed {seed} cut {k}: healthy after reopen, not before the cut"
            );
            assert!(
                image_of(&*set.copy_target(1)) == source,
                "seed {seed} cut {k}: the rebuilt copy is healthy without every byte"
            );
        }
        CopyState::Resyncing { full, total, .. } => {
            // Flagged new: rebuilt whole again. Flagged in sync (the rebuild ended before the
            // cut): only the regions the log marks, and the images below show it had the rest.
            assert!(
                full || ended,
                "seed {seed} cut {k}: a partial copy resyncs part"
            );
            assert!(
                !full || total == VOL,
                "seed {seed} cut {k}: not rebuilt whole"
            );
            resync_all(&set);
            assert!(
                image_of(&*set.copy_target(1)) == source,
                "seed {seed} cut {k}"
            );
        }
        s => panic!("seed {seed} cut {k}: copy 1 is {s:?} after reopen"),
    }
    assert!(image_of(&*set.copy_target(0)) == source);
}

#[test]
fn power_cut_during_a_rebuild_stepped_by_several_threads_never_leaves_a_partial_copy_healthy() {
    for seed in 0..12u64 {
        rebuild_cut(500 + seed, 1 + seed % 6);
    }
}
