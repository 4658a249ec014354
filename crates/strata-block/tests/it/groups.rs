//! Checkpoint groups: `Pool::create_snapshots` takes the snapshots of several volumes at one
//! instant, all or none, and keeps them across a reopen.

use std::sync::atomic::{AtomicBool, Ordering};

use strata_block::{AdminError, Target, BLOCK_SIZE};
use strata_types::DeviceClass;

use crate::{mem_pool, reopen};

const BS: usize = BLOCK_SIZE as usize;

fn counter(pool: &strata_block::Pool, t: Target) -> u64 {
    let mut b = vec![0u8; BS];
    pool.read(t, 0, &mut b).unwrap();
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// A writer stamps counter k into volumes a, b, c in that order, k = 1, 2, ...; a group
/// snapshot taken meanwhile must see one instant of that sequence: a >= b >= c and a <= c + 1.
/// Snapshots taken one after another would see c run ahead of a.
#[test]
fn a_group_snapshot_is_one_instant_across_its_volumes() {
    let (pool, mems) = mem_pool(&[(64, DeviceClass::Ssd)]);
    let vols: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| pool.create_volume(n, 1 << 20, None).unwrap())
        .collect();
    let stop = AtomicBool::new(false);
    let groups = std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let mut blk = vec![0u8; BS];
                blk[..8].copy_from_slice(&k.to_le_bytes());
                for &v in &vols {
                    pool.write(v, 0, &blk).unwrap();
                }
                k += 1;
            }
        });
        let mut groups = Vec::new();
        for g in 0..40 {
            let names: Vec<String> = (0..3).map(|i| format!("g{g}-{i}")).collect();
            let members: Vec<_> = vols
                .iter()
                .zip(&names)
                .map(|(&v, n)| (v, n.as_str()))
                .collect();
            groups.push(pool.create_snapshots(&members).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        groups
    });
    let check = |pool: &strata_block::Pool| {
        let mut moved = 0;
        for ids in &groups {
            let k: Vec<u64> = ids
                .iter()
                .map(|&s| counter(pool, Target::Snapshot(s)))
                .collect();
            assert!(
                k[0] >= k[1] && k[1] >= k[2] && k[0] <= k[2] + 1,
                "a group saw {k:?}"
            );
            moved += usize::from(k[0] > 0);
        }
        assert!(moved > 10, "the writer barely ran: {moved} groups saw data");
    };
    check(&pool);
    drop(pool);
    let pool = reopen(&mems);
    check(&pool);
}

#[test]
fn a_group_that_cannot_be_taken_whole_takes_nothing() {
    let (pool, _mems) = mem_pool(&[(32, DeviceClass::Ssd)]);
    let a = pool.create_volume("a", 1 << 20, None).unwrap();
    let b = pool.create_volume("b", 1 << 20, None).unwrap();
    pool.create_snapshot(b, "taken").unwrap();
    let before = (
        pool.snapshots(a).unwrap().len(),
        pool.snapshots(b).unwrap().len(),
    );
    // A name already taken on one member.
    let e = pool
        .create_snapshots(&[(a, "taken"), (b, "taken")])
        .unwrap_err();
    assert!(matches!(e, AdminError::AlreadyExists { .. }), "{e}");
    // One volume twice.
    let e = pool.create_snapshots(&[(a, "x"), (a, "y")]).unwrap_err();
    assert!(matches!(e, AdminError::DuplicateMember(_)), "{e}");
    // A bad name anywhere.
    let e = pool
        .create_snapshots(&[(a, "ok"), (b, "bad/name")])
        .unwrap_err();
    assert!(matches!(e, AdminError::InvalidName { .. }), "{e}");
    let after = (
        pool.snapshots(a).unwrap().len(),
        pool.snapshots(b).unwrap().len(),
    );
    assert_eq!(before, after, "a refused group left snapshots behind");
}
