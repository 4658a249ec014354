//! What only the etcd backend does: failover between members, a bound on the time of every
//! call when the cluster is gone, roots that keep clusters apart, and calls from inside a
//! tokio runtime (the daemon's controller calls the store from its worker threads).

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_state::{EtcdConfig, EtcdStore, Store, StoreError, Txn};

use crate::etcd_cluster::EtcdCluster;

fn assert_backend_error_within<T: std::fmt::Debug>(
    what: &str,
    bound: Duration,
    f: impl FnOnce() -> Result<T, StoreError>,
) {
    let t0 = Instant::now();
    let r = f();
    let took = t0.elapsed();
    assert!(
        matches!(r, Err(StoreError::Backend(_))),
        "{what}: {r:?} (want a Backend error)"
    );
    assert!(
        took < bound,
        "{what} failed after {took:?}, bound {bound:?}"
    );
}

#[test]
fn a_killed_member_does_not_stop_reads_and_writes() {
    let Some(mut c) = EtcdCluster::start(3) else {
        return;
    };
    let s = EtcdStore::connect(c.config("/failover/")).unwrap();
    strata_state::put(&s, "/before", b"1").unwrap();
    // The store prefers the member that answered last: member 0, the first named. Kill it,
    // then each of the others in turn once it is back.
    for victim in 0..3 {
        c.kill(victim);
        let t0 = Instant::now();
        for i in 0..20 {
            let k = format!("/during/{victim}/{i}");
            let r = s
                .txn(Txn::new().when(&k, 0).put(&k, b"v".to_vec()))
                .unwrap();
            assert!(r.succeeded);
            assert_eq!(s.get(&k).unwrap().unwrap().mod_revision, r.revision);
        }
        let (keys, _) = s.range(&format!("/during/{victim}/"), None, 0).unwrap();
        assert_eq!(keys.len(), 20);
        eprintln!(
            "member {victim} killed: 20 compare-and-puts and reads took {:?}",
            t0.elapsed()
        );
        c.restart(victim);
    }
    // A restarted member has caught up: a store that only knows it sees every write.
    let only0 =
        EtcdStore::connect(EtcdConfig::new([c.endpoints()[0].clone()]).root("/failover/")).unwrap();
    assert_eq!(only0.range("/during/", None, 0).unwrap().0.len(), 60);
    assert_eq!(only0.get("/before").unwrap().unwrap().value, b"1");
}

#[test]
fn a_dead_cluster_fails_within_the_timeout() {
    let Some(mut c) = EtcdCluster::start(3) else {
        return;
    };
    let timeout = Duration::from_secs(2);
    let cfg = c.config("/dead/").timeout(timeout);
    let s = EtcdStore::connect(cfg.clone()).unwrap();
    strata_state::put(&s, "/k", b"v").unwrap();
    for i in 0..3 {
        c.kill(i);
    }
    // The bound is the timeout plus scheduling slack; `changes` and `wait` take two steps.
    let bound = timeout + Duration::from_millis(1500);
    assert_backend_error_within("get", bound, || s.get("/k"));
    assert_backend_error_within("range", bound, || s.range("/", None, 0));
    assert_backend_error_within("txn", bound, || s.txn(Txn::new().put("/k", b"w".to_vec())));
    assert_backend_error_within("revision", bound, || s.revision());
    assert_backend_error_within("changes", bound * 2, || s.changes("/", 0, 0));
    assert_backend_error_within("wait", bound * 2, || {
        s.wait(1 << 40, Duration::from_millis(100))
    });
    assert_backend_error_within("connect", bound, || EtcdStore::connect(cfg));
    // The message names the members.
    let Err(StoreError::Backend(msg)) = s.get("/k") else {
        panic!("want a Backend error")
    };
    assert!(msg.contains(&c.endpoints()[0]), "{msg}");
}

#[test]
fn roots_keep_clusters_apart_on_one_etcd() {
    let Some(c) = EtcdCluster::start(1) else {
        return;
    };
    let a = EtcdStore::connect(c.config("/a")).unwrap();
    let b = EtcdStore::connect(c.config("/ab/")).unwrap();
    assert_eq!(a.root(), "/a/");
    strata_state::put(&a, "/v1/x", b"from a").unwrap();
    strata_state::put(&b, "/v1/x", b"from b").unwrap();
    assert_eq!(a.get("/v1/x").unwrap().unwrap().value, b"from a");
    assert_eq!(b.get("/v1/x").unwrap().unwrap().value, b"from b");
    let (keys, _) = a.range("", None, 0).unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].key, "/v1/x", "the root is stripped");
    let ev = a.changes("", 0, 0).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].value.as_deref(), Some(&b"from a"[..]));
    // The revision is etcd's, shared by both roots.
    assert_eq!(a.revision().unwrap(), b.revision().unwrap());
}

#[test]
fn the_store_works_from_inside_a_tokio_runtime() {
    let Some(c) = EtcdCluster::start(1) else {
        return;
    };
    let s = Arc::new(EtcdStore::connect(c.config("/rt/")).unwrap());
    // A current-thread runtime: a client that ran its futures on the caller's runtime would
    // deadlock or panic here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s2 = s.clone();
    let rev = rt.block_on(async move {
        let r = strata_state::put(&*s2, "/k", b"v").unwrap();
        assert_eq!(s2.get("/k").unwrap().unwrap().mod_revision, r);
        assert_eq!(s2.wait(r - 1, Duration::from_secs(5)).unwrap(), r);
        r
    });
    // Dropping the last handle inside a runtime must not panic either.
    let s3 = s.clone();
    drop(s);
    rt.block_on(async move {
        assert_eq!(s3.revision().unwrap(), rev);
        drop(s3);
    });
}
