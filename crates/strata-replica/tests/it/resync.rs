//! Resync after a copy returns (only the dirty regions), rebuild onto a new domain
//! (everything, thin stays thin), writes during a resync, progress.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use strata_replica::{Cause, CopyState, CopyTarget, ReplicaSet, StateKind, REGION_SIZE};

use crate::{image_of, pattern, resync_all, set_of, Domain, HookTarget};

const VOL: u64 = 16 * REGION_SIZE;
const R: u64 = REGION_SIZE;

fn fill(set: &ReplicaSet, seed: u64) {
    for r in 0..VOL / R {
        set.write(r * R, &pattern(seed, r * R, R as usize)).unwrap();
    }
    // Two flushes: the second ends a whole interval without writes, which clears the bits.
    set.flush().unwrap();
    set.flush().unwrap();
    assert!(set.intent_regions().is_empty());
}

#[test]
fn a_returning_copy_resyncs_only_the_regions_written_while_away() {
    let (set, doms, _log) = set_of(2, VOL);
    fill(&set, 1);
    doms[1].fault.set_fail_writes(true);
    set.write(3 * R + 5, &pattern(2, 0, 100)).unwrap();
    set.write(7 * R, &pattern(3, 0, 4096)).unwrap();
    set.write(7 * R + 8192, &pattern(4, 0, 4096)).unwrap();
    set.flush().unwrap();
    assert_eq!(set.copies()[1].state, CopyState::Faulted);
    assert_eq!(set.copies()[1].dirty_regions, 2);
    doms[1].heal();
    set.reattach(1, doms[1].copy()).unwrap();
    assert_eq!(
        set.copies()[1].state,
        CopyState::Resyncing {
            done: 0,
            total: 2 * R,
            full: false
        }
    );
    let p = set.resync_step(1).unwrap().unwrap();
    assert_eq!((p.copy, p.done, p.total, p.finished), (1, R, 2 * R, false));
    let p = set.resync_step(1).unwrap().unwrap();
    assert_eq!((p.done, p.finished), (2 * R, false));
    let p = set.resync_step(1).unwrap().unwrap();
    assert!(p.finished, "{p:?}");
    assert_eq!(set.resync_step(1).unwrap(), None);
    let c = set.copies();
    assert_eq!(c[1].state, CopyState::Healthy);
    // Exactly the two dirty regions were copied, not the volume.
    assert_eq!(c[1].stats.resync_bytes, 2 * R);
    assert_eq!(image_of(&*doms[0].copy()), image_of(&*doms[1].copy()));
    let kinds: Vec<_> = set.drain_events().iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        kinds,
        vec![
            (StateKind::Healthy, StateKind::Faulted),
            (StateKind::Faulted, StateKind::Resyncing),
            (StateKind::Resyncing, StateKind::Healthy),
        ]
    );
    assert!(!set.degraded());
}

#[test]
fn writes_during_a_resync_are_kept() {
    let (set, doms, _log) = set_of(2, VOL);
    fill(&set, 1);
    doms[1].fault.set_fail_writes(true);
    for r in 0..8 {
        set.write(r * R, &pattern(2, r * R, 4096)).unwrap();
    }
    doms[1].heal();
    set.reattach(1, doms[1].copy()).unwrap();
    let p = set.resync_step(1).unwrap().unwrap();
    assert_eq!(p.done, R); // region 0 copied, 1..8 not yet
                           // Into a copied region and into one not yet copied.
    set.write(0, &pattern(3, 0, 4096)).unwrap();
    set.write(5 * R, &pattern(4, 0, 4096)).unwrap();
    resync_all(&set);
    let img = image_of(&*doms[1].copy());
    assert_eq!(&img[..4096], &pattern(3, 0, 4096)[..]);
    assert_eq!(&img[5 * R as usize..][..4096], &pattern(4, 0, 4096)[..]);
    assert_eq!(img, image_of(&*doms[0].copy()));
}

#[test]
fn a_write_racing_a_region_copy_is_not_overwritten() {
    // The source copy runs a hook when the resync reads the region: another thread writes
    // that region meanwhile. Without the region lock the resync would then write the old
    // bytes it read over the new ones on the returning copy.
    let d0 = Domain::new("dom0", VOL);
    let d1 = Domain::new("dom1", VOL);
    let hook = HookTarget::new(d0.copy());
    let log = strata_replica::MemIntentLog::new();
    let set = Arc::new(
        ReplicaSet::create(
            vec![hook.clone() as Arc<dyn CopyTarget>, d1.copy()],
            Box::new(log),
        )
        .unwrap(),
    );
    fill(&set, 1);
    d1.fault.set_fail_writes(true);
    set.write(2 * R, &pattern(2, 0, 4096)).unwrap();
    d1.heal();
    set.reattach(1, d1.copy()).unwrap();
    let writer = Arc::new(Mutex::new(None));
    let (s2, w2) = (set.clone(), writer.clone());
    hook.on_next_read(move || {
        let h = std::thread::spawn(move || s2.write(2 * R + 4096, &pattern(3, 0, 4096)));
        *w2.lock() = Some(h);
        std::thread::sleep(Duration::from_millis(100));
    });
    resync_all(&set);
    writer.lock().take().unwrap().join().unwrap().unwrap();
    let img = image_of(&*d1.copy());
    assert_eq!(
        &img[(2 * R + 4096) as usize..][..4096],
        &pattern(3, 0, 4096)[..]
    );
    assert_eq!(img, image_of(&*d0.copy()));
}

#[test]
fn a_new_copy_is_rebuilt_whole_and_stays_thin() {
    let (set, doms, log) = set_of(2, VOL);
    set.write(R, &pattern(1, 0, R as usize)).unwrap();
    set.write(9 * R + 4096, &pattern(2, 0, 8192)).unwrap();
    set.flush().unwrap();
    doms[1].vanish();
    set.write(12 * R, &pattern(3, 0, 4096)).unwrap();
    assert_eq!(set.copies()[1].state, CopyState::Faulted);
    let fresh = Domain::new("dom2", VOL);
    set.replace(1, fresh.copy()).unwrap();
    assert_eq!(log.peek().unwrap().copies[1], strata_replica::CopyFlag::New);
    let mut last = 0;
    loop {
        match set.resync_step(3 * R).unwrap() {
            None => break,
            Some(p) => {
                assert_eq!(p.total, VOL);
                assert!(p.done >= last && p.done <= VOL);
                assert!(p.done - last <= 3 * R);
                last = p.done;
            }
        }
    }
    assert_eq!(last, VOL);
    assert_eq!(image_of(&*fresh.copy()), image_of(&*doms[0].copy()));
    // Regions that read as zeros were trimmed, not written: only the data is allocated.
    let v = fresh.pool.volume(fresh.vol).unwrap();
    assert_eq!(v.allocated, R + 8192 + 4096);
    assert_eq!(
        log.peek().unwrap().copies[1],
        strata_replica::CopyFlag::InSync
    );
    let ev = set.drain_events();
    assert!(ev.iter().any(|e| e.cause == Cause::Replaced));
    assert_eq!(ev.last().unwrap().cause, Cause::ResyncComplete);
}

#[test]
fn a_copy_failing_during_its_resync_is_faulted_again_and_keeps_its_regions() {
    let (set, doms, _log) = set_of(2, VOL);
    fill(&set, 1);
    doms[1].fault.set_fail_writes(true);
    for r in [1, 4, 6] {
        set.write(r * R, &pattern(2, 0, 4096)).unwrap();
    }
    doms[1].heal();
    set.reattach(1, doms[1].copy()).unwrap();
    set.resync_step(1).unwrap();
    doms[1].fault.set_fail_writes(true);
    let p = set.resync_step(1).unwrap().unwrap();
    assert!(p.failed);
    let c = &set.copies()[1];
    assert_eq!(c.state, CopyState::Faulted);
    // Region 1 was copied; 4 and 6 were not (the bits still name all three: kept while
    // degraded).
    assert!(c.dirty_regions >= 2);
    doms[1].heal();
    set.reattach(1, doms[1].copy()).unwrap();
    resync_all(&set);
    assert_eq!(image_of(&*doms[1].copy()), image_of(&*doms[0].copy()));
}
