//! Acknowledgement, failover, events, the intent log's marks and clears, refusals.

use std::sync::Arc;

use strata_replica::{
    Cause, CopyFlag, CopyState, CopyTarget, MemIntentLog, ReplicaError, ReplicaSet, StateKind,
    REGION_SIZE,
};
use strata_types::ErrorCode;

use crate::{image_of, pattern, set_of, Domain};

const VOL: u64 = 8 * REGION_SIZE;

#[test]
fn a_failed_write_faults_the_copy_and_is_still_acknowledged() {
    let (set, doms, log) = set_of(2, VOL);
    set.write(0, &pattern(1, 0, 8192)).unwrap();
    doms[1].fault.set_fail_writes(true);
    set.write(3 * REGION_SIZE, &pattern(2, 0, 4096)).unwrap();
    let copies = set.copies();
    assert_eq!(copies[0].state, CopyState::Healthy);
    assert_eq!(copies[1].state, CopyState::Faulted);
    assert_eq!(copies[1].stats.write_errors, 1);
    assert!(set.degraded());
    // The fault is in the stored record before the write returned.
    assert_eq!(
        log.peek().unwrap().copies,
        vec![CopyFlag::InSync, CopyFlag::Stale]
    );
    let ev = set.drain_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].copy, ev[0].from, ev[0].to),
        (1, StateKind::Healthy, StateKind::Faulted)
    );
    assert!(matches!(ev[0].cause, Cause::WriteError(_)));
    assert!(set.drain_events().is_empty());
    // Reads and writes go on without an error; reads come from the healthy copy.
    doms[1].fault.set_fail_reads(true);
    let mut b = vec![0; 4096];
    set.read(3 * REGION_SIZE, &mut b).unwrap();
    assert_eq!(b, pattern(2, 0, 4096));
    set.write(5 * REGION_SIZE, &pattern(3, 0, 4096)).unwrap();
    set.flush().unwrap();
    // Dirty: the first write's region (marked when the copy failed) and the later one.
    assert_eq!(set.copies()[1].dirty_regions, 3);
}

#[test]
fn when_every_copy_fails_the_error_is_returned_and_the_last_stays_healthy() {
    let (set, doms, _log) = set_of(2, VOL);
    doms[0].fault.set_fail_writes(true);
    doms[1].fault.set_fail_writes(true);
    let e = set.write(0, &[7; 4096]).unwrap_err();
    assert!(
        matches!(e, ReplicaError::NoHealthyCopy { op: "write", .. }),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::IoError);
    let s: Vec<_> = set.copies().iter().map(|c| c.state).collect();
    assert_eq!(s, vec![CopyState::Healthy, CopyState::Faulted]);
    // A single remaining copy that fails is not faulted either: the error goes back.
    assert!(set.write(0, &[7; 4096]).is_err());
    assert_eq!(set.copies()[0].state, CopyState::Healthy);
    doms[0].heal();
    set.write(0, &[8; 4096]).unwrap();
}

#[test]
fn a_gone_copy_is_faulted_at_its_first_error() {
    let (set, doms, _log) = set_of(3, VOL);
    set.write(0, &pattern(1, 0, 65536)).unwrap();
    set.flush().unwrap();
    // A deleted volume answers "gone" (its pool cannot serve it again).
    doms[0].pool.delete_volume(doms[0].vol, true).unwrap();
    let mut b = vec![0; 65536];
    set.read(0, &mut b).unwrap();
    assert_eq!(b, pattern(1, 0, 65536));
    let c = set.copies();
    assert_eq!(c[0].state, CopyState::Faulted);
    assert_eq!(c[0].stats.read_errors, 1);
    let ev = set.drain_events();
    assert!(matches!(ev[0].cause, Cause::Gone(_)), "{ev:?}");
}

#[test]
fn illegal_moves_are_refused_and_change_nothing() {
    let (set, doms, _log) = set_of(2, VOL);
    let e = set.reattach(0, doms[0].copy()).unwrap_err();
    assert!(matches!(e, ReplicaError::Illegal(_)));
    assert_eq!(e.code(), ErrorCode::Conflict);
    let e = set.replace(1, doms[1].copy()).unwrap_err();
    assert!(matches!(e, ReplicaError::Illegal(_)));
    assert!(matches!(
        set.reattach(5, doms[0].copy()),
        Err(ReplicaError::NoSuchCopy(5))
    ));
    set.fault(1).unwrap();
    // The last healthy copy cannot be taken out.
    assert!(matches!(set.fault(0), Err(ReplicaError::Unavailable)));
    // Faulting twice is refused too.
    assert!(matches!(set.fault(1), Err(ReplicaError::Illegal(_))));
    // A copy of another size cannot come back.
    let small = Domain::new("small", VOL / 2);
    assert!(matches!(
        set.replace(1, small.copy()),
        Err(ReplicaError::SizeMismatch { .. })
    ));
    // Nor one that does not answer.
    let gone = Domain::new("gone", VOL);
    gone.pool.delete_volume(gone.vol, true).unwrap();
    let e = set.reattach(1, gone.copy()).unwrap_err();
    assert!(
        matches!(e, ReplicaError::CopyUnreachable { copy: 1, .. }),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::IoError);
    assert_eq!(set.copies()[1].state, CopyState::Faulted);
    assert!(matches!(
        set.write(VOL, &[1]),
        Err(ReplicaError::OutOfRange { .. })
    ));
}

#[test]
fn intent_bits_are_marked_before_writes_and_cleared_after_a_full_flush() {
    let (set, _doms, log) = set_of(2, VOL);
    let stores = log.stores();
    set.write(REGION_SIZE - 10, &[1; 20]).unwrap();
    assert_eq!(log.peek().unwrap().dirty, [0, 1].into_iter().collect());
    assert_eq!(log.stores(), stores + 1);
    // A second write into marked regions stores nothing.
    set.write(REGION_SIZE, &[2; 20]).unwrap();
    assert_eq!(log.stores(), stores + 1);
    set.flush().unwrap();
    // Written in the interval before this flush: kept one more interval (a hot region's
    // rewrites store nothing).
    assert_eq!(set.intent_regions(), [0, 1].into_iter().collect());
    set.write(0, &[3; 20]).unwrap();
    assert_eq!(log.stores(), stores + 1);
    set.flush().unwrap();
    // Region 1 went a whole interval unwritten: cleared; region 0 was rewritten: kept.
    assert_eq!(set.intent_regions(), [0].into_iter().collect());
    set.flush().unwrap();
    // Cleared in memory at once, in the stored record lazily.
    assert!(set.intent_regions().is_empty());
    assert_eq!(log.peek().unwrap().dirty.len(), 2);
    set.sync_intent().unwrap();
    assert!(log.peek().unwrap().dirty.is_empty());
    // A store that fails: the write is refused before any copy sees it.
    log.set_fail(true);
    let e = set.write(4 * REGION_SIZE, &[3; 10]).unwrap_err();
    assert!(matches!(e, ReplicaError::Intent(_)), "{e}");
    log.set_fail(false);
    let mut b = [9u8; 10];
    set.read(4 * REGION_SIZE, &mut b).unwrap();
    assert_eq!(b, [0; 10]);
}

#[test]
fn bits_stay_while_degraded() {
    let (set, doms, log) = set_of(2, VOL);
    doms[1].fault.set_fail_writes(true);
    set.write(0, &[1; 10]).unwrap();
    set.write(2 * REGION_SIZE, &[1; 10]).unwrap();
    set.flush().unwrap();
    set.sync_intent().unwrap();
    assert_eq!(log.peek().unwrap().dirty, [0, 2].into_iter().collect());
}

#[test]
fn create_refuses_a_used_log_and_open_an_empty_one() {
    let (_set, doms, log) = set_of(1, VOL);
    let e = ReplicaSet::create(vec![doms[0].copy()], Box::new(log.clone())).unwrap_err();
    assert!(matches!(e, ReplicaError::AlreadyCreated));
    let e = ReplicaSet::open(vec![doms[0].copy()], Box::new(MemIntentLog::new())).unwrap_err();
    assert!(matches!(e, ReplicaError::NotCreated));
    let e = ReplicaSet::open(vec![doms[0].copy(), doms[0].copy()], Box::new(log)).unwrap_err();
    assert!(matches!(e, ReplicaError::LogMismatch(_)));
    assert!(matches!(
        ReplicaSet::create(vec![], Box::new(MemIntentLog::new())),
        Err(ReplicaError::CopyCount(0))
    ));
}

#[test]
fn reads_balance_by_load_and_prefer_the_lowest_index() {
    let (set, doms, _log) = set_of(3, VOL);
    set.write(0, &pattern(5, 0, 4096)).unwrap();
    let mut b = vec![0; 4096];
    for _ in 0..3 {
        set.read(0, &mut b).unwrap();
    }
    let reads: Vec<u64> = set.copies().iter().map(|c| c.stats.reads).collect();
    // Serial reads see no load: ties go to copy 0.
    assert_eq!(reads, vec![3, 0, 0]);
    let t: Arc<dyn CopyTarget> = doms[2].copy();
    assert_eq!(image_of(&*t)[..4096], pattern(5, 0, 4096)[..]);
}
