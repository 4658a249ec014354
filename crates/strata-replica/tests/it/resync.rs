//! Resync after a copy returns (only the dirty regions), rebuild onto a new domain
//! (everything, thin stays thin), writes during a resync, progress, several threads stepping
//! one rebuild.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// A target that counts the resync's writes in flight on it (those of threads named `step`),
/// remembers the most seen at once, and whether a flush began while one was in flight (a copy
/// flushed before its last region landed would be made healthy without it).
#[derive(Debug)]
struct InFlight {
    inner: Arc<dyn CopyTarget>,
    busy: AtomicU64,
    most: AtomicU64,
    flushed_busy: AtomicBool,
}

impl InFlight {
    fn around<T>(&self, f: impl FnOnce() -> T) -> T {
        if std::thread::current().name() != Some("step") {
            return f();
        }
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        // Long enough that several steps' writes overlap when they run in parallel.
        std::thread::sleep(Duration::from_millis(2));
        let r = f();
        self.busy.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

impl CopyTarget for InFlight {
    fn size(&self) -> Result<u64, strata_replica::CopyError> {
        self.inner.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), strata_replica::CopyError> {
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), strata_replica::CopyError> {
        self.around(|| self.inner.write(offset, data))
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
    ) -> Result<(), strata_replica::CopyError> {
        self.around(|| self.inner.write_zeroes(offset, len, unmap))
    }
    fn flush(&self) -> Result<(), strata_replica::CopyError> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            self.flushed_busy.store(true, Ordering::SeqCst);
        }
        self.inner.flush()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn a_rebuild_stepped_by_several_threads_copies_each_region_once_and_flushes_after_the_last() {
    let (set, doms, log) = set_of(2, VOL);
    fill(&set, 5);
    let fresh = Domain::new("dom2", VOL);
    let t = Arc::new(InFlight {
        inner: fresh.copy(),
        busy: AtomicU64::new(0),
        most: AtomicU64::new(0),
        flushed_busy: AtomicBool::new(false),
    });
    set.fault(1).unwrap();
    set.replace(1, t.clone()).unwrap();
    let stop = AtomicBool::new(false);
    let finished = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let step = std::thread::Builder::new().name("step".into());
            step.spawn_scoped(s, || loop {
                match set.resync_step(R).unwrap() {
                    None => break,
                    Some(p) => {
                        assert!(!p.failed, "{p:?}");
                        assert!(p.done <= p.total || p.finished, "{p:?}");
                        if p.finished {
                            finished.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            })
            .unwrap();
        }
        // A client writes meanwhile, into regions copied and not yet copied.
        s.spawn(|| {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) && k < 64 {
                let off = (k * 7 % (VOL / R)) * R + (k % 8) * 4096;
                set.write(off, &pattern(100 + k, off, 4096)).unwrap();
                k += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while set.degraded() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "one step made it healthy"
    );
    let c = &set.copies()[1];
    assert_eq!(c.state, CopyState::Healthy);
    // Each region copied once: claims keep two steps off the same region.
    assert_eq!(c.stats.resync_bytes, VOL);
    assert!(
        !t.flushed_busy.load(Ordering::SeqCst),
        "the copy was flushed while a region was still being written onto it"
    );
    assert!(
        t.most.load(Ordering::SeqCst) >= 2,
        "the steps did not overlap"
    );
    assert_eq!(image_of(&*fresh.copy()), image_of(&*doms[0].copy()));
    assert_eq!(
        log.peek().unwrap().copies[1],
        strata_replica::CopyFlag::InSync
    );
}
