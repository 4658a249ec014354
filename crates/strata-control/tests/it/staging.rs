//! The quota transaction under concurrency (`controller/tenant_txn.rs`): a tenant's
//! concurrent changes share durable commits, a quota is checked against changes staged and not
//! yet committed, two changes of one key never share a batch, and a batch that loses to
//! another writer of the store applies nothing and runs again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
use strata_control::{Controller, Quota};
use strata_state::{Event, KeyValue, Op, RedbStore, Store, StoreError, Txn, TxnResult};
use strata_types::DeviceClass;

use crate::fixture::*;
use crate::recovery::admin;

/// A real redb store behind a slow disk (each transaction takes `delay` more), counting the
/// transactions that write the record of tenant `watch`; when `interfere` is set, the next
/// such transaction is preceded by a write of that record from "another process".
struct Instrumented {
    inner: RedbStore,
    delay: Duration,
    watch: String,
    tenant_commits: AtomicUsize,
    lost: AtomicUsize,
    interfere: AtomicBool,
}

impl Store for Instrumented {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key)
    }
    fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        self.inner.range(prefix, after, limit)
    }
    fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let key = format!("/tenants/{}", self.watch);
        let writes_tenant = txn
            .success
            .iter()
            .any(|op| matches!(op, Op::Put(k, _) if *k == key));
        if writes_tenant && self.interfere.swap(false, Ordering::SeqCst) {
            // The same bytes, a new revision: what another daemon's change looks like.
            let cur = self.inner.get(&key)?.expect("tenant exists");
            self.inner.txn(Txn::new().put(key.clone(), cur.value))?;
        }
        std::thread::sleep(self.delay);
        let r = self.inner.txn(txn)?;
        if writes_tenant {
            self.tenant_commits.fetch_add(1, Ordering::SeqCst);
            if !r.succeeded {
                self.lost.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(r)
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
    fn changes(&self, prefix: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.changes(prefix, after, limit)
    }
    fn wait(&self, after: u64, timeout: Duration) -> Result<u64, StoreError> {
        self.inner.wait(after, timeout)
    }
}

/// A controller over an instrumented store and a memory pool, with tenant `load` (`quota`).
fn setup(dir: &std::path::Path, delay: Duration, quota: Quota) -> (Controller, Arc<Instrumented>) {
    let dev = MemDevice::new(256 << 20, "m");
    drop(
        Pool::create(vec![DeviceSpec {
            device: dev.clone(),
            class: DeviceClass::Ssd,
        }])
        .unwrap(),
    );
    let pool = Pool::open(vec![dev as Arc<dyn BlockDevice>]).unwrap();
    let store = Arc::new(Instrumented {
        inner: RedbStore::open(dir.join("s.redb")).unwrap(),
        delay,
        watch: "load".into(),
        tenant_commits: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
        interfere: AtomicBool::new(false),
    });
    let c = Controller::open(Box::new(store.clone()), pool).unwrap();
    c.set_pool_settings(&admin(), "default", None).unwrap();
    c.create_tenant(&admin(), "load", quota).unwrap();
    store.tenant_commits.store(0, Ordering::SeqCst);
    (c, store)
}

/// `n` threads each run `f(i)` at once; their results in thread order.
fn at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let gate = Barrier::new(n);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (gate, f) = (&gate, &f);
                s.spawn(move || {
                    gate.wait();
                    f(i)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_tenants_concurrent_creates_share_durable_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = setup(dir.path(), Duration::from_millis(20), Quota::default());
    let n = 16;
    let r = at_once(n, |i| {
        c.create_volume(&admin(), new_volume("load", &format!("v{i}"), "1M"))
    });
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let commits = store.tenant_commits.load(Ordering::SeqCst);
    // One at a time, 16 creates are 16 commits of the tenant record; staged, the first
    // commits alone and the others, staged meanwhile, in one or a few batches.
    assert!(
        commits <= n / 2,
        "{commits} commits of the tenant for {n} creates"
    );
    let u = c.get_tenant(&admin(), "load").unwrap().usage;
    assert_eq!(
        (u.volumes, u.capacity_bytes),
        (n as u64, n as u64 * (1 << 20))
    );
    assert_eq!(c.pool().volumes().len(), n);
}

#[test]
fn a_quota_counts_changes_staged_and_not_yet_committed() {
    let dir = tempfile::tempdir().unwrap();
    let quota = Quota {
        volumes: Some(5),
        ..Default::default()
    };
    let (c, _) = setup(dir.path(), Duration::from_millis(20), quota);
    let r = at_once(16, |i| {
        c.create_volume(&admin(), new_volume("load", &format!("v{i}"), "1M"))
    });
    let ok = r.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 5, "{r:?}");
    for e in r.into_iter().filter_map(Result::err) {
        assert_eq!(code::<()>(Err(e)), "quota_exceeded");
    }
    let u = c.get_tenant(&admin(), "load").unwrap().usage;
    assert_eq!(u.volumes, 5);
    assert_eq!(c.pool().volumes().len(), 5);
}

#[test]
fn one_name_from_many_threads_makes_one_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = setup(dir.path(), Duration::from_millis(10), Quota::default());
    let r = at_once(12, |_| {
        c.create_volume(&admin(), new_volume("load", "same", "1M"))
    });
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 1, "{r:?}");
    for e in r.into_iter().filter_map(Result::err) {
        assert_eq!(code::<()>(Err(e)), "volume_exists");
    }
    let u = c.get_tenant(&admin(), "load").unwrap().usage;
    assert_eq!((u.volumes, u.capacity_bytes), (1, 1 << 20));
}

#[test]
fn a_batch_that_loses_to_another_writer_runs_again_and_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = setup(dir.path(), Duration::from_millis(20), Quota::default());
    // The first create commits alone; while it is in the store the others stage into one
    // batch, which loses its comparison to the outside write and must run again.
    let first = std::thread::scope(|s| {
        let h = s.spawn(|| c.create_volume(&admin(), new_volume("load", "first", "1M")));
        std::thread::sleep(Duration::from_millis(5));
        store.interfere.store(true, Ordering::SeqCst);
        let r = at_once(8, |i| {
            c.create_volume(&admin(), new_volume("load", &format!("v{i}"), "1M"))
        });
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        h.join().unwrap()
    });
    first.unwrap();
    assert!(
        store.lost.load(Ordering::SeqCst) >= 1,
        "the outside write made no batch lose"
    );
    let u = c.get_tenant(&admin(), "load").unwrap().usage;
    assert_eq!((u.volumes, u.capacity_bytes), (9, 9 << 20));
    let (vols, _) = c
        .list_volumes(&admin(), Some("load"), None, 100, None)
        .unwrap();
    assert_eq!(vols.len(), 9);
}

#[test]
fn concurrent_creates_never_pass_the_overcommit_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = setup(dir.path(), Duration::from_millis(20), Quota::default());
    c.set_pool_settings(&admin(), "default", Some(1.0)).unwrap();
    // Growth is reserved before it commits: of 16 creates of an eighth of the limit each,
    // made at once, exactly 8 fit.
    let eighth = c.pool().info().capacity / 8;
    let r = at_once(16, |i| {
        c.create_volume(
            &admin(),
            new_volume("load", &format!("v{i}"), &format!("{eighth}")),
        )
    });
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 8, "{r:?}");
    for e in r.into_iter().filter_map(Result::err) {
        assert_eq!(code::<()>(Err(e)), "pool_overcommitted");
    }
    let provisioned = c
        .get_pool_settings(&admin(), "default")
        .unwrap()
        .provisioned_bytes;
    assert_eq!(provisioned, u128::from(8 * eighth));
}
