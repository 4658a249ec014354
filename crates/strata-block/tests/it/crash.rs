//! Crash tests: cut the power at the N-th device sync of a random workload, reopen from what
//! reached the media, and check that every flushed write is intact, that every block reads as
//! one of the contents it held since the last flush (never an error, never foreign data), that
//! acknowledged snapshots exist with their exact contents, and that the pool stays usable.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_block::testing::{CrashDevice, PowerDomain};
use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool, SnapshotId, VolumeId, BLOCK_SIZE};
use strata_types::DeviceClass;

const BS: usize = BLOCK_SIZE as usize;

fn h(b: &[u8]) -> u64 {
    let mut s = DefaultHasher::new();
    b.hash(&mut s);
    s.finish()
}

struct MVol {
    id: VolumeId,
    name: String,
    data: Vec<u8>,
    /// Per block: hashes of every content it may hold after a crash.
    cands: Vec<HashSet<u64>>,
}

impl MVol {
    fn touch(&mut self, off: usize, len: usize) {
        for b in off / BS..(off + len).div_ceil(BS) {
            let c = h(&self.data[b * BS..(b + 1) * BS]);
            self.cands[b].insert(c);
        }
    }
    fn settle(&mut self) {
        for (b, c) in self.cands.iter_mut().enumerate() {
            c.clear();
            c.insert(h(&self.data[b * BS..(b + 1) * BS]));
        }
    }
}

struct MSnap {
    id: SnapshotId,
    vol: usize,
    name: String,
    data: Vec<u8>,
    /// Its deletion was acknowledged.
    deleted: bool,
    /// Its deletion failed in the power cut: it may or may not exist.
    unknown: bool,
}

/// Runs one workload; cuts the power at the `cut`-th sync after set-up (None: at the end).
/// With `encrypted`, the pool has a master key and volume `a` is encrypted (`b` stays plain,
/// so both kinds share the pool, its journal and its checkpoints), and some reads give way
/// to metadata compaction. Returns how many syncs
/// the workload issued before the cut.
fn run(seed: u64, cut: Option<u64>, ops: usize, encrypted: bool) -> u64 {
    let ctx = format!("seed {seed} cut {cut:?} ops {ops} encrypted {encrypted}");
    let key = encrypted.then(|| crate::test_key(3));
    let dom = PowerDomain::new(None, seed);
    let devs: Vec<Arc<CrashDevice>> = vec![dom.device(8 << 20, "c0"), dom.device(4 << 20, "c1")];
    let pool = Pool::create(vec![
        DeviceSpec {
            device: devs[0].clone(),
            class: DeviceClass::Ssd,
        },
        DeviceSpec {
            device: devs[1].clone(),
            class: DeviceClass::Hdd,
        },
    ])
    .unwrap();
    if let Some(k) = &key {
        pool.set_key_wrapper(k.clone());
    }
    let mut vols = Vec::new();
    for (name, blocks) in [("a", 96usize), ("b", 64)] {
        let size = (blocks * BS) as u64;
        let id = if encrypted && name == "a" {
            pool.create_encrypted_volume(name, size, None).unwrap()
        } else {
            pool.create_volume(name, size, None).unwrap()
        };
        vols.push(MVol {
            id,
            name: name.into(),
            data: vec![0; blocks * BS],
            cands: vec![[h(&[0u8; BS])].into_iter().collect(); blocks],
        });
    }
    let base = dom.syncs();
    if let Some(n) = cut {
        dom.arm(n);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut snaps: Vec<MSnap> = Vec::new();
    for i in 0..ops {
        let vi = rng.gen_range(0..vols.len());
        let size = vols[vi].data.len();
        let (off, len) = if rng.gen_bool(0.6) {
            let b = rng.gen_range(0..size / BS);
            (b * BS, rng.gen_range(1..=(size / BS - b).min(40)) * BS)
        } else {
            let off = rng.gen_range(0..size);
            (off, rng.gen_range(1..=(size - off).min(3 * BS)))
        };
        let p: u32 = rng.gen_range(0..100);
        let ok = if p < 45 {
            let tag: u8 = rng.gen();
            let m = &mut vols[vi];
            for (k, byte) in m.data[off..off + len].iter_mut().enumerate() {
                *byte = tag ^ (k as u8).wrapping_mul(29) ^ (i as u8);
            }
            m.touch(off, len);
            let data = m.data[off..off + len].to_vec();
            pool.write(m.id, off as u64, &data).is_ok()
        } else if p < 60 {
            let r = pool.flush().is_ok();
            if r {
                vols.iter_mut().for_each(MVol::settle);
            }
            r
        } else if p < 70 {
            let m = &mut vols[vi];
            m.data[off..off + len].fill(0);
            m.touch(off, len);
            pool.trim(m.id, off as u64, len as u64).is_ok()
        } else if p < 73 {
            let m = &mut vols[vi];
            m.data[off..off + len].fill(0);
            m.touch(off, len);
            pool.write_zeroes(m.id, off as u64, len as u64, false)
                .is_ok()
        } else if p < 76 {
            let name = format!("s{i}");
            match pool.create_snapshot(vols[vi].id, &name) {
                Ok(id) => {
                    // A snapshot commits everything before it.
                    vols.iter_mut().for_each(MVol::settle);
                    snaps.push(MSnap {
                        id,
                        vol: vi,
                        name,
                        data: vols[vi].data.clone(),
                        deleted: false,
                        unknown: false,
                    });
                    true
                }
                Err(_) => false,
            }
        } else if p < 80 || snaps.iter().filter(|s| !s.deleted).count() > 3 {
            // Small devices: keep few snapshots alive so the allocator wraps around often
            // and reuses freed blocks (what the durability rules are about).
            match snaps.iter_mut().find(|s| !s.deleted) {
                Some(s) => {
                    let r = pool.delete_snapshot(s.id).is_ok();
                    if r {
                        s.deleted = true;
                        vols.iter_mut().for_each(MVol::settle);
                    } else {
                        s.unknown = true;
                    }
                    r
                }
                None => true,
            }
        } else if encrypted && p >= 97 {
            // Compaction (checkpoints in both slots, journal cleared) commits everything.
            let r = pool.compact_metadata().is_ok();
            if r {
                vols.iter_mut().for_each(MVol::settle);
            }
            r
        } else {
            let m = &vols[vi];
            let mut buf = vec![0u8; len];
            match pool.read(m.id, off as u64, &mut buf) {
                Ok(()) => {
                    assert!(buf == m.data[off..off + len], "{ctx}: live read differs");
                    true
                }
                Err(_) => false,
            }
        };
        if !ok {
            assert!(dom.is_dead(), "{ctx}: op {i} failed without a power cut");
            break;
        }
    }
    let used = dom.syncs() - base;
    dom.cut_now();
    drop(pool);

    // Power back on: reopen from what reached the media.
    let mems: Vec<Arc<MemDevice>> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| MemDevice::from_image(d.durable_image(), format!("after{i}")))
        .collect();
    let pool = Pool::open_with_keys(
        mems.iter()
            .map(|m| m.clone() as Arc<dyn BlockDevice>)
            .collect(),
        key.clone(),
    )
    .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    pool.check_consistency()
        .unwrap_or_else(|e| panic!("{ctx}: inconsistent after crash: {e}"));
    for m in &vols {
        let id = pool.volume_id(&m.name).unwrap();
        let mut buf = vec![0u8; m.data.len()];
        pool.read(id, 0, &mut buf)
            .unwrap_or_else(|e| panic!("{ctx}: read of {} failed after crash: {e}", m.name));
        for (b, c) in m.cands.iter().enumerate() {
            assert!(
                c.contains(&h(&buf[b * BS..(b + 1) * BS])),
                "{ctx}: volume {} block {b} holds content it never had since the last flush",
                m.name
            );
        }
    }
    for s in snaps.iter().filter(|s| !s.unknown) {
        let vid = pool.volume_id(&vols[s.vol].name).unwrap();
        let found = pool.snapshot_id(vid, &s.name);
        if s.deleted {
            assert!(found.is_err(), "{ctx}: deleted snapshot {} is back", s.name);
            continue;
        }
        let sid = found.unwrap_or_else(|_| panic!("{ctx}: snapshot {} lost", s.name));
        let mut buf = vec![0u8; s.data.len()];
        pool.read(sid, 0, &mut buf).unwrap();
        assert!(buf == s.data, "{ctx}: snapshot {} differs", s.name);
    }
    // The pool is usable after the crash: write, flush, reopen, read.
    for m in &vols {
        let id = pool.volume_id(&m.name).unwrap();
        pool.write(id, 0, &[0x5a; 3 * BS]).unwrap();
    }
    pool.flush().unwrap();
    drop(pool);
    let pool = Pool::open_with_keys(
        mems.iter()
            .map(|m| m.clone() as Arc<dyn BlockDevice>)
            .collect(),
        key,
    )
    .unwrap();
    for m in &vols {
        let id = pool.volume_id(&m.name).unwrap();
        let mut buf = vec![0u8; 3 * BS];
        pool.read(id, 0, &mut buf).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0x5a),
            "{ctx}: post-crash write lost"
        );
    }
    pool.check_consistency().unwrap();
    used
}

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("STRATA_CRASH_SEED") {
        Ok(s) => vec![s.parse().expect("STRATA_CRASH_SEED is a number")],
        Err(_) => default.collect(),
    }
}

fn every_sync(seeds: Vec<u64>, encrypted: bool) {
    let mut runs = 0;
    for seed in seeds {
        let total = run(seed, None, 80, encrypted);
        assert!(total > 5, "workload issued only {total} syncs");
        for n in 1..=total + 1 {
            run(seed, Some(n), 80, encrypted);
            runs += 1;
        }
    }
    assert!(runs > 30);
}

fn across_checkpoints(seeds: Vec<u64>, encrypted: bool) {
    for seed in seeds {
        let total = run(seed, None, 1500, encrypted);
        // 1 MiB journal / 4 KiB per record: past ~256 commits the journal must have wrapped.
        assert!(
            total > 300,
            "workload issued only {total} syncs: no checkpoint exercised"
        );
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..20 {
            run(seed, Some(rng.gen_range(1..=total)), 1500, encrypted);
        }
    }
}

/// Every cut point of short workloads. Replay one with STRATA_CRASH_SEED=<seed>.
#[test]
fn power_cut_at_every_sync() {
    every_sync(seeds(0..6), false);
}

/// The same on a pool with an encrypted volume beside a plain one: a block reads back old or
/// new after the crash, never as an authentication error.
#[test]
fn power_cut_at_every_sync_encrypted() {
    every_sync(seeds(0..6), true);
}

/// Long workloads whose journal wraps (checkpoints), with cut points sampled across them.
#[test]
fn power_cut_across_checkpoints() {
    across_checkpoints(seeds(100..103), false);
}

/// The same with an encrypted volume (its tags and wrapped key go through checkpoints).
#[test]
fn power_cut_across_checkpoints_encrypted() {
    across_checkpoints(seeds(100..103), true);
}
