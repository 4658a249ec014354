//! The `Store` contract, written once over `&dyn Store` and run on every backend: the redb
//! file and a real three-member etcd cluster (each test gets its own file, or its own
//! cluster and root prefix).
//!
//! Revisions are counted from the store's revision when a test begins (`base`): 0 for a new
//! redb file, at least 1 on etcd (an empty etcd is at revision 1). Everything else is the same
//! assertion on both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use strata_state::{EtcdStore, KeyValue, RedbStore, Store, StoreError, Txn};

use crate::etcd_cluster::EtcdCluster;

/// A place to open stores on the same data.
trait Backend {
    /// A new handle on the data (the old one dropped first is a reopen).
    fn open(&self) -> Box<dyn Store>;
    /// A handle that keeps at most `n` revisions of history once [`Backend::trim`] ran.
    fn open_with_history(&self, n: u64) -> Box<dyn Store>;
    /// Drops history so that only the last `n` revisions stay.
    fn trim(&self, n: u64);
}

/// A redb file in a temp dir.
struct Redb(tempfile::TempDir);

impl Redb {
    pub fn new() -> Self {
        Redb(tempfile::tempdir().unwrap())
    }
}

impl Backend for Redb {
    fn open(&self) -> Box<dyn Store> {
        Box::new(RedbStore::open(self.0.path().join("state.redb")).unwrap())
    }
    fn open_with_history(&self, n: u64) -> Box<dyn Store> {
        Box::new(RedbStore::open_with_history(self.0.path().join("state.redb"), n).unwrap())
    }
    fn trim(&self, _n: u64) {
        // The bound given at open applies at every commit.
    }
}

/// A three-member etcd cluster and a root prefix.
struct Etcd {
    pub cluster: EtcdCluster,
    pub root: String,
}

impl Etcd {
    /// None (after a loud SKIPPED line) when etcd is not installed.
    pub fn start() -> Option<Self> {
        Some(Etcd {
            cluster: EtcdCluster::start(3)?,
            root: "/strata-test/".into(),
        })
    }
    pub fn store(&self) -> EtcdStore {
        EtcdStore::connect(self.cluster.config(&self.root)).unwrap()
    }
}

impl Backend for Etcd {
    fn open(&self) -> Box<dyn Store> {
        Box::new(self.store())
    }
    fn open_with_history(&self, _n: u64) -> Box<dyn Store> {
        self.open()
    }
    fn trim(&self, n: u64) {
        let s = self.store();
        let rev = s.revision().unwrap();
        s.compact(rev + 1 - n).unwrap();
    }
}

#[derive(Debug, Clone)]
enum Act {
    Put(u8, u8),
    Delete(u8),
    /// Put `.1` under `.0` only if `.0` is at its current revision (`.2`: use a stale one).
    Cas(u8, u8, bool),
    CreateIfAbsent(u8, u8),
    Reopen,
}

fn key(k: u8) -> String {
    format!(
        "/v1/{}/{k:03}",
        if k.is_multiple_of(2) {
            "volumes"
        } else {
            "tenants"
        }
    )
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (0u8..20, any::<u8>()).prop_map(|(k, v)| Act::Put(k, v)),
        2 => (0u8..20).prop_map(Act::Delete),
        2 => (0u8..20, any::<u8>(), any::<bool>()).prop_map(|(k, v, s)| Act::Cas(k, v, s)),
        2 => (0u8..20, any::<u8>()).prop_map(|(k, v)| Act::CreateIfAbsent(k, v)),
        1 => Just(Act::Reopen),
    ]
}

/// The store against a trivial model: a map, a revision counter and a log.
fn store_matches_model(b: &dyn Backend, acts: Vec<Act>) -> Result<(), TestCaseError> {
    let mut s = b.open();
    // A case starts from an empty key space.
    let (old, _) = s.range("", None, 0).unwrap();
    let mut wipe = Txn::new();
    for kv in old {
        wipe = wipe.delete(kv.key);
    }
    s.txn(wipe).unwrap();
    let mut model: BTreeMap<String, KeyValue> = BTreeMap::new();
    let base = s.revision().unwrap();
    let mut rev = base;
    let mut log: Vec<(u64, String, Option<Vec<u8>>)> = Vec::new();
    for a in acts {
        let mut apply = |k: String, v: Option<Vec<u8>>, model: &mut BTreeMap<String, KeyValue>| {
            // Deleting an absent key is no change: no revision, no event.
            if v.is_none() && !model.contains_key(&k) {
                return;
            }
            rev += 1;
            match &v {
                Some(v) => {
                    let created = model.get(&k).map_or(rev, |o| o.create_revision);
                    model.insert(
                        k.clone(),
                        KeyValue {
                            key: k.clone(),
                            value: v.clone(),
                            create_revision: created,
                            mod_revision: rev,
                        },
                    );
                }
                None => {
                    model.remove(&k);
                }
            }
            log.push((rev, k, v));
        };
        match a {
            Act::Put(k, v) => {
                let r = s.txn(Txn::new().put(key(k), vec![v])).unwrap();
                apply(key(k), Some(vec![v]), &mut model);
                prop_assert!(r.succeeded);
                prop_assert_eq!(r.revision, rev);
            }
            Act::Delete(k) => {
                let r = s.txn(Txn::new().delete(key(k))).unwrap();
                apply(key(k), None, &mut model);
                prop_assert_eq!(r.revision, rev);
            }
            Act::Cas(k, v, stale) => {
                let cur = model.get(&key(k)).map_or(0, |kv| kv.mod_revision);
                let want = if stale { cur + 1 } else { cur };
                let r = s
                    .txn(Txn::new().when(key(k), want).put(key(k), vec![v]))
                    .unwrap();
                prop_assert_eq!(r.succeeded, !stale);
                if !stale {
                    apply(key(k), Some(vec![v]), &mut model);
                }
            }
            Act::CreateIfAbsent(k, v) => {
                let absent = !model.contains_key(&key(k));
                let r = s
                    .txn(Txn::new().when(key(k), 0).put(key(k), vec![v]))
                    .unwrap();
                prop_assert_eq!(r.succeeded, absent);
                if absent {
                    apply(key(k), Some(vec![v]), &mut model);
                }
            }
            Act::Reopen => {
                drop(s);
                s = b.open();
            }
        }
        prop_assert_eq!(s.revision().unwrap(), rev);
    }
    for prefix in ["/v1/volumes/", "/v1/tenants/", "/v1/"] {
        let (got, r) = s.range(prefix, None, 0).unwrap();
        prop_assert_eq!(r, rev);
        let want: Vec<KeyValue> = model
            .values()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect();
        prop_assert_eq!(got, want);
    }
    // The change log replays every write, from any revision.
    let from = base + (rev - base) / 2;
    let ev = s.changes("/v1/", from, 0).unwrap();
    let want: Vec<_> = log.iter().filter(|(r, _, _)| *r > from).cloned().collect();
    prop_assert_eq!(ev.len(), want.len());
    for (e, (r, k, v)) in ev.iter().zip(want) {
        prop_assert_eq!(e.revision, r);
        prop_assert_eq!(&e.key, &k);
        prop_assert_eq!(&e.value, &v);
    }
    Ok(())
}

fn pagination_walks_every_key_once(b: &dyn Backend) {
    let s = b.open();
    for i in 0..250 {
        s.txn(Txn::new().put(format!("/v1/volumes/{i:04}"), b"x".to_vec()))
            .unwrap();
    }
    s.txn(Txn::new().put("/v1/volumesX", b"not under the prefix".to_vec()))
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, rev) = s.range("/v1/volumes/", after.as_deref(), 100).unwrap();
        assert_eq!(rev, s.revision().unwrap(), "a page names its read revision");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        after = Some(page.last().unwrap().key.clone());
        seen.extend(page.into_iter().map(|kv| kv.key));
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // An `after` before the prefix starts at the prefix.
    let (page, _) = s.range("/v1/volumes/", Some("/a"), 3).unwrap();
    assert_eq!(page[0].key, "/v1/volumes/0000");
    assert_eq!(page.len(), 3);
}

fn multi_key_transaction_is_atomic_and_one_revision(b: &dyn Backend) {
    let s = b.open();
    let base = s.revision().unwrap();
    let r = s
        .txn(
            Txn::new()
                .when("/a", 0)
                .when("/b", 0)
                .put("/a", b"1".to_vec())
                .put("/b", b"2".to_vec()),
        )
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, base + 1);
    assert_eq!(s.get("/a").unwrap().unwrap().mod_revision, r.revision);
    assert_eq!(s.get("/b").unwrap().unwrap().mod_revision, r.revision);
    // One failing comparison: nothing is written, the revision does not move.
    let r2 = s
        .txn(
            Txn::new()
                .when("/a", r.revision)
                .when("/b", 0)
                .put("/a", b"x".to_vec()),
        )
        .unwrap();
    assert!(!r2.succeeded);
    assert_eq!(r2.revision, r.revision);
    assert_eq!(s.get("/a").unwrap().unwrap().value, b"1");
    let ev = s.changes("/", base, 1).unwrap();
    assert_eq!(ev.len(), 2, "a revision is never split");
}

fn create_and_mod_revisions_follow_the_key(b: &dyn Backend) {
    let s = b.open();
    let base = s.revision().unwrap();
    let r1 = strata_state::put(&*s, "/k", b"1").unwrap();
    assert_eq!(r1, base + 1);
    let kv = s.get("/k").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));
    let r2 = strata_state::put(&*s, "/k", b"2").unwrap();
    assert!(r2 > r1, "revisions only grow");
    let kv = s.get("/k").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
    let r3 = s.txn(Txn::new().delete("/k")).unwrap().revision;
    assert!(s.get("/k").unwrap().is_none());
    let r4 = strata_state::put(&*s, "/k", b"3").unwrap();
    let kv = s.get("/k").unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (r4, r4),
        "a new life"
    );
    assert!(r1 < r2 && r2 < r3 && r3 < r4);
    // A compare-and-put against the current mod_revision holds, against an old one not.
    assert!(
        !s.txn(Txn::new().when("/k", r1).put("/k", b"x".to_vec()))
            .unwrap()
            .succeeded
    );
    assert!(
        s.txn(Txn::new().when("/k", r4).put("/k", b"y".to_vec()))
            .unwrap()
            .succeeded
    );
}

fn deleting_an_absent_key_changes_nothing(b: &dyn Backend) {
    let s = b.open();
    let base = s.revision().unwrap();
    let r = s.txn(Txn::new().delete("/nothing")).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, base);
    assert_eq!(s.revision().unwrap(), base);
    // Beside a real write, it adds no event.
    let r = s
        .txn(Txn::new().put("/x", b"1".to_vec()).delete("/nothing"))
        .unwrap();
    assert_eq!(r.revision, base + 1);
    let ev = s.changes("/", base, 0).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].key, "/x");
}

fn one_key_written_twice_in_a_txn_keeps_the_last_write(b: &dyn Backend) {
    let s = b.open();
    let base = s.revision().unwrap();
    let r = s
        .txn(
            Txn::new()
                .put("/k", b"1".to_vec())
                .put("/j", b"j".to_vec())
                .put("/k", b"2".to_vec()),
        )
        .unwrap();
    assert_eq!(r.revision, base + 1);
    assert_eq!(s.get("/k").unwrap().unwrap().value, b"2");
    let r = s
        .txn(Txn::new().put("/j", b"again".to_vec()).delete("/j"))
        .unwrap();
    assert_eq!(r.revision, base + 2);
    assert!(s.get("/j").unwrap().is_none());
}

fn bad_keys_and_values_change_nothing(b: &dyn Backend) {
    let s = b.open();
    let base = s.revision().unwrap();
    for txn in [
        Txn::new().put("", b"x".to_vec()),
        Txn::new().put("k".repeat(2000), b"x".to_vec()),
        Txn::new().put("/ok", vec![0u8; (1 << 20) + 1]),
        Txn::new().put("/ok", b"x".to_vec()).delete(""),
    ] {
        assert!(matches!(s.txn(txn), Err(StoreError::Invalid(_))));
    }
    assert_eq!(s.revision().unwrap(), base);
    assert!(s.get("/ok").unwrap().is_none());
    // The largest value accepted is stored whole.
    let big = vec![7u8; strata_state::MAX_VALUE];
    strata_state::put(&*s, "/big", &big).unwrap();
    assert_eq!(s.get("/big").unwrap().unwrap().value, big);
}

fn changes_stop_at_a_revision_boundary(b: &dyn Backend) {
    let s = b.open();
    let base = s.revision().unwrap();
    for i in 0..5 {
        strata_state::put(&*s, &format!("/c/{i}"), b"v").unwrap();
    }
    strata_state::put(&*s, "/other", b"v").unwrap();
    let ev = s.changes("/c/", base, 2).unwrap();
    assert_eq!(
        ev.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![base + 1, base + 2]
    );
    let ev = s.changes("/c/", base + 2, 0).unwrap();
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0].key, "/c/2");
    // Nothing under the prefix after the last write to it, though the revision moved on.
    assert!(s.changes("/c/", base + 5, 0).unwrap().is_empty());
    assert!(s.changes("/c/", base + 6, 0).unwrap().is_empty());
    // A delete is an event without a value.
    s.txn(Txn::new().delete("/c/0")).unwrap();
    let ev = s.changes("/c/", base + 6, 0).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].key.as_str(), ev[0].value.as_ref()), ("/c/0", None));
}

fn wait_wakes_on_a_write_from_another_thread(b: &dyn Backend) {
    let s: Arc<dyn Store> = Arc::from(b.open());
    let base = s.revision().unwrap();
    let w = s.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.txn(Txn::new().put("/x", b"1".to_vec())).unwrap();
    });
    let rev = s.wait(base, Duration::from_secs(10)).unwrap();
    assert_eq!(rev, base + 1);
    t.join().unwrap();
    let t0 = Instant::now();
    assert_eq!(
        s.wait(base + 1, Duration::from_millis(200)).unwrap(),
        base + 1
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "waited {waited:?} for a 200 ms timeout"
    );
    let ev = s.changes("/x", base, 0).unwrap();
    assert_eq!(ev[0].value.as_deref(), Some(&b"1"[..]));
}

fn watch_from_a_compacted_revision_is_an_error(b: &dyn Backend) {
    let s = b.open_with_history(10);
    let base = s.revision().unwrap();
    for i in 0..25 {
        s.txn(Txn::new().put(format!("/k{i}"), b"v".to_vec()))
            .unwrap();
    }
    b.trim(10);
    let err = s.changes("/", base + 3, 0).unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, oldest } if requested == base + 4 && oldest == base + 16),
        "{err:?}"
    );
    assert_eq!(s.changes("/", base + 15, 0).unwrap().len(), 10);
}

fn concurrent_compare_and_swap_counts_every_increment_once(s: Arc<dyn Store>) {
    // 32 threads increment one counter with compare-and-swap, retrying on conflict, while 32
    // others write keys of their own. Every increment must be counted once (a transaction in
    // a redb group commit checks its comparison against the writes queued before it), and
    // every revision must be handed out once.
    let base = s.revision().unwrap();
    s.txn(Txn::new().put("/n", b"0".to_vec())).unwrap();
    let mut hs = Vec::new();
    for t in 0..64u32 {
        let s = s.clone();
        hs.push(std::thread::spawn(move || {
            let mut revs = Vec::new();
            for i in 0..20u32 {
                if t % 2 == 0 {
                    loop {
                        let kv = s.get("/n").unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                        let r = s
                            .txn(
                                Txn::new()
                                    .when("/n", kv.mod_revision)
                                    .put("/n", (n + 1).to_string().into_bytes()),
                            )
                            .unwrap();
                        if r.succeeded {
                            revs.push(r.revision);
                            break;
                        }
                    }
                } else {
                    let r = s
                        .txn(Txn::new().put(format!("/k/{t}/{i}"), b"v".to_vec()))
                        .unwrap();
                    assert!(r.succeeded);
                    revs.push(r.revision);
                }
            }
            revs
        }));
    }
    let mut all: Vec<u64> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let n = s.get("/n").unwrap().unwrap();
    assert_eq!(n.value, b"640".to_vec());
    all.sort_unstable();
    let len = all.len();
    all.dedup();
    assert_eq!(all.len(), len, "a revision was handed out twice");
    assert_eq!(len, 64 * 20);
    assert_eq!(s.revision().unwrap(), base + 1 + 64 * 20);
    assert_eq!(s.range("/k/", None, 0).unwrap().0.len(), 32 * 20);
}

/// Each case as a test on redb and on etcd.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod redb {
            $(#[test] fn $case() { super::$case(&super::Redb::new()); })*
        }
        mod etcd {
            $(#[test] fn $case() {
                let Some(b) = super::Etcd::start() else { return };
                super::$case(&b);
            })*
        }
    };
}

on_both!(
    pagination_walks_every_key_once,
    multi_key_transaction_is_atomic_and_one_revision,
    create_and_mod_revisions_follow_the_key,
    deleting_an_absent_key_changes_nothing,
    one_key_written_twice_in_a_txn_keeps_the_last_write,
    bad_keys_and_values_change_nothing,
    changes_stop_at_a_revision_boundary,
    wait_wakes_on_a_write_from_another_thread,
    watch_from_a_compacted_revision_is_an_error,
);

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn redb_store_matches_model(acts in proptest::collection::vec(act(), 1..60)) {
        store_matches_model(&Redb::new(), acts)?;
    }
}

#[test]
fn etcd_store_matches_model() {
    // One cluster for every case (a case starts by emptying its root).
    let Some(b) = Etcd::start() else { return };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(act(), 1..60), |acts| {
            store_matches_model(&b, acts)
        })
        .unwrap();
}

#[test]
fn redb_concurrent_writers_share_commits_and_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(RedbStore::open(dir.path().join("state.redb")).unwrap());
    concurrent_compare_and_swap_counts_every_increment_once(s.clone());
    // The syncs were shared.
    let (batches, carried) = s.group_commits();
    assert!(carried >= 64 * 20);
    assert!(
        batches < carried,
        "no transactions shared a commit ({batches} commits for {carried})"
    );
    // What was acknowledged is in the file.
    drop(s);
    let s = RedbStore::open(dir.path().join("state.redb")).unwrap();
    assert_eq!(s.get("/n").unwrap().unwrap().value, b"640".to_vec());
    assert_eq!(s.range("/k/", None, 0).unwrap().0.len(), 32 * 20);
}

#[test]
fn etcd_concurrent_compare_and_swap_counts_every_increment_once() {
    let Some(b) = Etcd::start() else { return };
    concurrent_compare_and_swap_counts_every_increment_once(Arc::new(b.store()));
}
