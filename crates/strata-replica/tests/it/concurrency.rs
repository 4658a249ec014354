//! Client threads writing and reading while the main thread faults a copy, brings it back,
//! drives its resync and flushes: no error, no wrong byte, no deadlock, and the copies equal
//! the model at the end.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_replica::{CopyState, REGION_SIZE};

use crate::{image_of, pattern, resync_all, set_of};

const THREADS: u64 = 3;
const VOL: u64 = 12 * REGION_SIZE;

#[test]
fn client_io_beside_faults_returns_and_resyncs() {
    let (set, mut doms, _log) = set_of(2, VOL);
    let set = Arc::new(set);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let set = set.clone();
            std::thread::spawn(move || {
                // Thread t owns regions t, t + THREADS, ...: its model is exact.
                let mut rng = StdRng::seed_from_u64(t);
                let mut model = vec![0u8; VOL as usize];
                for i in 0..3000u64 {
                    let r = rng.gen_range(0..VOL / REGION_SIZE / THREADS) * THREADS + t;
                    let off = r * REGION_SIZE + rng.gen_range(0..REGION_SIZE - 65536);
                    let len = rng.gen_range(1..65536);
                    if rng.gen_bool(0.6) {
                        let data = pattern(t * 1000 + i, off, len as usize);
                        set.write(off, &data).unwrap();
                        model[off as usize..(off + len) as usize].copy_from_slice(&data);
                    } else {
                        let mut b = vec![0; len as usize];
                        set.read(off, &mut b).unwrap();
                        assert!(b[..] == model[off as usize..(off + len) as usize]);
                    }
                }
                model
            })
        })
        .collect();
    // Cycles: the copy's writes fail for a moment (the next client write faults it), it
    // returns, its resync is driven to the end under client load, a flush follows.
    let mut events = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        doms[1].fault.set_fail_writes(true);
        std::thread::sleep(std::time::Duration::from_millis(2));
        doms[1].fault.set_fail_writes(false);
        if set.copies()[1].state == CopyState::Faulted {
            set.reattach(1, doms[1].copy()).unwrap();
        }
        for _ in 0..64 {
            match set.resync_step(REGION_SIZE).unwrap() {
                Some(p) if !p.finished => continue,
                _ => break,
            }
        }
        set.flush().unwrap();
        assert_eq!(set.copies()[0].state, CopyState::Healthy);
        events.extend(set.drain_events());
    }
    // The copy really went out and came back under load.
    use strata_replica::Cause;
    assert!(events
        .iter()
        .any(|e| matches!(e.cause, Cause::WriteError(_))));
    assert!(events.iter().any(|e| e.cause == Cause::ResyncComplete));
    let models: Vec<Vec<u8>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut model = vec![0u8; VOL as usize];
    for r in 0..VOL / REGION_SIZE {
        let m = &models[(r % THREADS) as usize];
        let s = (r * REGION_SIZE) as usize..((r + 1) * REGION_SIZE) as usize;
        model[s.clone()].copy_from_slice(&m[s]);
    }
    doms[1].heal();
    if set.copies()[1].state == CopyState::Faulted {
        doms[1].heal_and_reopen();
        set.reattach(1, doms[1].copy()).unwrap();
    }
    resync_all(&set);
    set.flush().unwrap();
    assert!(!set.degraded());
    for d in &doms {
        assert!(image_of(&*d.copy()) == model);
    }
}
