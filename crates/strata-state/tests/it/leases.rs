//! Leases (etcd only): a leased key lives while its lease is renewed and is deleted, with a
//! watch event, when the lease expires or is revoked; one of two candidates wins a leader key
//! and the other wins it once the first lease ends; the embedded store refuses leased writes
//! and changes nothing. These are what node liveness and the leader of `docs/cluster.md`
//! stand on.

use std::time::{Duration, Instant};

use strata_state::{EtcdStore, Leases, RedbStore, Store, StoreError, Txn};

use crate::etcd_cluster::EtcdCluster;

/// Waits up to `bound` for `key` to be absent; returns how long it took.
fn gone_within(s: &dyn Store, key: &str, bound: Duration) -> Duration {
    let t0 = Instant::now();
    while s.get(key).unwrap().is_some() {
        assert!(t0.elapsed() < bound, "{key} still there after {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

#[test]
fn a_leased_key_lives_while_renewed_and_goes_when_the_lease_expires() {
    let Some(c) = EtcdCluster::start(1) else {
        return;
    };
    let s = EtcdStore::connect(c.config("/leases-a/")).unwrap();
    let lease = s.grant(Duration::from_secs(2)).unwrap();
    let r = s
        .txn(Txn::new().put_leased("/alive/n1", b"up".to_vec(), lease))
        .unwrap();
    assert!(r.succeeded);
    let after = r.revision;
    // Renewed for twice its TTL: still there.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        let left = s.keep_alive(lease).unwrap().expect("lease alive");
        assert!(left >= Duration::from_secs(1), "{left:?}");
        assert!(s.get("/alive/n1").unwrap().is_some());
        std::thread::sleep(Duration::from_millis(500));
    }
    // No more renewals: etcd deletes it within the TTL (plus its own expiry check).
    let took = gone_within(&s, "/alive/n1", Duration::from_secs(6));
    eprintln!("leased key gone {took:?} after the last renewal");
    assert_eq!(
        s.keep_alive(lease).unwrap(),
        None,
        "an expired lease is gone"
    );
    // The deletion is a change a watcher sees, as a delete.
    let events = s.changes("/alive/", after, 0).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.key == "/alive/n1" && e.value.is_none()),
        "{events:?}"
    );
    // An unleased key under the same root is untouched by all of it.
    strata_state::put(&s, "/kept", b"1").unwrap();
    assert!(s.get("/kept").unwrap().is_some());
}

#[test]
fn revoking_deletes_the_keys_at_once_and_twice_is_not_an_error() {
    let Some(c) = EtcdCluster::start(1) else {
        return;
    };
    let s = EtcdStore::connect(c.config("/leases-b/")).unwrap();
    let lease = s.grant(Duration::from_secs(60)).unwrap();
    s.txn(
        Txn::new()
            .put_leased("/a", b"1".to_vec(), lease)
            .put_leased("/b", b"2".to_vec(), lease),
    )
    .unwrap();
    s.revoke(lease).unwrap();
    assert!(s.get("/a").unwrap().is_none() && s.get("/b").unwrap().is_none());
    s.revoke(lease).unwrap();
    assert_eq!(s.keep_alive(lease).unwrap(), None);
}

#[test]
fn one_candidate_holds_the_leader_key_until_its_lease_ends() {
    let Some(c) = EtcdCluster::start(1) else {
        return;
    };
    // Two daemons: two connections, each with its own lease.
    let (a, b) = (
        EtcdStore::connect(c.config("/leases-c/")).unwrap(),
        EtcdStore::connect(c.config("/leases-c/")).unwrap(),
    );
    let (la, lb) = (
        a.grant(Duration::from_secs(30)).unwrap(),
        b.grant(Duration::from_secs(30)).unwrap(),
    );
    let claim = |s: &EtcdStore, who: &str, l| {
        s.txn(
            Txn::new()
                .when("/leader", 0)
                .put_leased("/leader", who.as_bytes().to_vec(), l),
        )
        .unwrap()
        .succeeded
    };
    assert!(claim(&a, "a", la));
    assert!(!claim(&b, "b", lb), "the key is taken");
    assert_eq!(a.get("/leader").unwrap().unwrap().value, b"a");
    // a stops (its lease revoked as a clean stop does; an expiry is the test above): b wins.
    a.revoke(la).unwrap();
    assert!(claim(&b, "b", lb));
    assert_eq!(b.get("/leader").unwrap().unwrap().value, b"b");
}

#[test]
fn the_embedded_store_refuses_leased_writes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open(dir.path().join("s.redb")).unwrap();
    strata_state::put(&s, "/x", b"1").unwrap();
    let before = s.revision().unwrap();
    let r = s.txn(Txn::new().put("/y", b"2".to_vec()).put_leased(
        "/z",
        b"3".to_vec(),
        strata_state::LeaseId(7),
    ));
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    assert_eq!(s.revision().unwrap(), before);
    assert!(s.get("/y").unwrap().is_none() && s.get("/z").unwrap().is_none());
}

#[test]
fn renewals_go_on_when_a_member_dies() {
    let Some(mut c) = EtcdCluster::start(3) else {
        return;
    };
    let s = EtcdStore::connect(c.config("/leases-d/")).unwrap();
    let lease = s.grant(Duration::from_secs(5)).unwrap();
    s.txn(Txn::new().put_leased("/alive/n1", b"up".to_vec(), lease))
        .unwrap();
    // The member the store prefers (the first named) goes: renewals move to another one.
    c.kill(0);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(7) {
        assert!(s.keep_alive(lease).unwrap().is_some(), "lease lost");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(s.get("/alive/n1").unwrap().is_some());
    c.restart(0);
}
