//! The intent log under concurrent writers: a slow store does not hold up writes into regions
//! already marked, and writers waiting for marks share stores (group commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_replica::{IntentError, IntentLog, IntentRecord, MemIntentLog, ReplicaSet, REGION_SIZE};

use crate::Domain;

/// A log whose stores take `delay_ms` (0: immediate), and that counts them.
#[derive(Debug, Clone)]
struct SlowLog {
    inner: MemIntentLog,
    delay_ms: Arc<AtomicU64>,
}

impl IntentLog for SlowLog {
    fn load(&mut self) -> Result<Option<IntentRecord>, IntentError> {
        self.inner.load()
    }
    fn store(&mut self, record: &IntentRecord) -> Result<(), IntentError> {
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        self.inner.store(record)
    }
}

fn slow_set() -> (Arc<ReplicaSet>, SlowLog, Vec<Domain>) {
    let doms: Vec<Domain> = (0..2)
        .map(|i| Domain::new(&format!("dom{i}"), 16 * REGION_SIZE))
        .collect();
    let log = SlowLog {
        inner: MemIntentLog::new(),
        delay_ms: Arc::new(AtomicU64::new(0)),
    };
    let set = ReplicaSet::create(
        doms.iter().map(|d| d.copy()).collect(),
        Box::new(log.clone()),
    )
    .unwrap();
    (Arc::new(set), log, doms)
}

#[test]
fn a_slow_store_does_not_hold_up_writes_into_marked_regions() {
    let (set, log, _doms) = slow_set();
    set.write(0, &[1; 4096]).unwrap();
    log.delay_ms.store(400, Ordering::SeqCst);
    let s = set.clone();
    let marking = std::thread::spawn(move || s.write(5 * REGION_SIZE, &[2; 4096]));
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    set.write(4096, &[3; 4096]).unwrap();
    let waited = t.elapsed();
    marking.join().unwrap().unwrap();
    assert!(
        waited < Duration::from_millis(300),
        "a write into a marked region waited {waited:?} for another region's store"
    );
}

#[test]
fn writers_waiting_for_marks_share_stores() {
    let (set, log, _doms) = slow_set();
    let before = log.inner.stores();
    log.delay_ms.store(150, Ordering::SeqCst);
    let writers: Vec<_> = (0..8u64)
        .map(|r| {
            let s = set.clone();
            std::thread::spawn(move || s.write(r * REGION_SIZE, &[r as u8 + 1; 4096]))
        })
        .collect();
    for w in writers {
        w.join().unwrap().unwrap();
    }
    let stores = log.inner.stores() - before;
    assert!(stores < 8, "{stores} stores for 8 concurrent marks");
    assert_eq!(set.intent_regions(), (0..8).collect());
    assert_eq!(log.inner.peek().unwrap().dirty, (0..8).collect());
}
