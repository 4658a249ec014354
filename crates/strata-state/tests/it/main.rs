//! The redb store against a trivial model, plus persistence, transactions, pagination and
//! watching.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use strata_state::{KeyValue, RedbStore, Store, StoreError, Txn};

fn open(dir: &tempfile::TempDir) -> RedbStore {
    RedbStore::open(dir.path().join("state.redb")).unwrap()
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(acts in proptest::collection::vec(act(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(&dir);
        let mut model: BTreeMap<String, KeyValue> = BTreeMap::new();
        let mut rev = 0u64;
        let mut log: Vec<(u64, String, Option<Vec<u8>>)> = Vec::new();
        for a in acts {
            let mut apply = |k: String, v: Option<Vec<u8>>, model: &mut BTreeMap<String, KeyValue>| {
                rev += 1;
                match &v {
                    Some(v) => {
                        let created = model.get(&k).map_or(rev, |o| o.create_revision);
                        model.insert(k.clone(), KeyValue { key: k.clone(), value: v.clone(), create_revision: created, mod_revision: rev });
                    }
                    None => { model.remove(&k); }
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
                    s.txn(Txn::new().delete(key(k))).unwrap();
                    apply(key(k), None, &mut model);
                }
                Act::Cas(k, v, stale) => {
                    let cur = model.get(&key(k)).map_or(0, |kv| kv.mod_revision);
                    let want = if stale { cur + 1 } else { cur };
                    let r = s.txn(Txn::new().when(key(k), want).put(key(k), vec![v])).unwrap();
                    prop_assert_eq!(r.succeeded, !stale);
                    if !stale { apply(key(k), Some(vec![v]), &mut model); }
                }
                Act::CreateIfAbsent(k, v) => {
                    let absent = !model.contains_key(&key(k));
                    let r = s.txn(Txn::new().when(key(k), 0).put(key(k), vec![v])).unwrap();
                    prop_assert_eq!(r.succeeded, absent);
                    if absent { apply(key(k), Some(vec![v]), &mut model); }
                }
                Act::Reopen => {
                    drop(s);
                    s = open(&dir);
                }
            }
            prop_assert_eq!(s.revision().unwrap(), rev);
        }
        for prefix in ["/v1/volumes/", "/v1/tenants/", "/v1/"] {
            let (got, r) = s.range(prefix, None, 0).unwrap();
            prop_assert_eq!(r, rev);
            let want: Vec<KeyValue> = model.values().filter(|kv| kv.key.starts_with(prefix)).cloned().collect();
            prop_assert_eq!(got, want);
        }
        // The change log replays every write, from any revision.
        let from = rev / 2;
        let ev = s.changes("/v1/", from, 0).unwrap();
        let want: Vec<_> = log.iter().filter(|(r, _, _)| *r > from).cloned().collect();
        prop_assert_eq!(ev.len(), want.len());
        for (e, (r, k, v)) in ev.iter().zip(want) {
            prop_assert_eq!(e.revision, r);
            prop_assert_eq!(&e.key, &k);
            prop_assert_eq!(&e.value, &v);
        }
    }
}

#[test]
fn pagination_walks_every_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for i in 0..250 {
        s.txn(Txn::new().put(format!("/v1/volumes/{i:04}"), b"x".to_vec()))
            .unwrap();
    }
    s.txn(Txn::new().put("/v1/volumesX", b"not under the prefix".to_vec()))
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, _) = s.range("/v1/volumes/", after.as_deref(), 100).unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().key.clone());
        seen.extend(page.into_iter().map(|kv| kv.key));
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn multi_key_transaction_is_atomic_and_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
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
    let ev = s.changes("/", 0, 1).unwrap();
    assert_eq!(ev.len(), 2, "a revision is never split");
}

#[test]
fn bad_keys_and_values_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    for txn in [
        Txn::new().put("", b"x".to_vec()),
        Txn::new().put("k".repeat(2000), b"x".to_vec()),
        Txn::new().put("/ok", vec![0u8; (1 << 20) + 1]),
        Txn::new().put("/ok", b"x".to_vec()).delete(""),
    ] {
        assert!(matches!(s.txn(txn), Err(StoreError::Invalid(_))));
    }
    assert_eq!(s.revision().unwrap(), 0);
    assert!(s.get("/ok").unwrap().is_none());
}

#[test]
fn wait_wakes_on_a_write_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
    let w = s.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.txn(Txn::new().put("/x", b"1".to_vec())).unwrap();
    });
    let rev = s.wait(0, Duration::from_secs(10)).unwrap();
    assert_eq!(rev, 1);
    t.join().unwrap();
    assert_eq!(s.wait(1, Duration::from_millis(20)).unwrap(), 1);
    let ev = s.changes("/x", 0, 0).unwrap();
    assert_eq!(ev[0].value.as_deref(), Some(&b"1"[..]));
}

#[test]
fn watch_from_a_compacted_revision_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open_with_history(dir.path().join("s.redb"), 10).unwrap();
    for i in 0..25 {
        s.txn(Txn::new().put(format!("/k{i}"), b"v".to_vec()))
            .unwrap();
    }
    assert!(matches!(
        s.changes("/", 3, 0),
        Err(StoreError::Compacted { oldest: 16, .. })
    ));
    assert_eq!(s.changes("/", 15, 0).unwrap().len(), 10);
}

#[test]
fn concurrent_writers_share_commits_and_see_each_others_writes() {
    // 32 threads increment one counter with compare-and-swap, retrying on conflict, while 32
    // others write keys of their own. Every increment must be counted once (a transaction in
    // a group commit checks its comparison against the writes queued before it), every
    // revision must be handed out once, and the syncs must have been shared.
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(&dir));
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
    assert_eq!(s.revision().unwrap(), 1 + 64 * 20);
    let (batches, carried) = s.group_commits();
    assert!(carried >= 64 * 20);
    assert!(
        batches < carried,
        "no transactions shared a commit ({batches} commits for {carried})"
    );
    // What was acknowledged is in the file.
    drop(s);
    let s = open(&dir);
    assert_eq!(s.get("/n").unwrap().unwrap().value, b"640".to_vec());
    assert_eq!(s.range("/k/", None, 0).unwrap().0.len(), 32 * 20);
}

#[test]
fn history_is_bounded_in_bytes_and_the_file_stays_small() {
    // 2,000 rewrites of one 64 KiB value (125 MiB of history if it were all kept) under a
    // 1 MiB history bound: the log keeps about 16 revisions and the file stays a few MiB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = RedbStore::open_with_limits(&path, 100_000, 1 << 20).unwrap();
    let value = vec![7u8; 64 << 10];
    for _ in 0..2000 {
        s.txn(Txn::new().put("/big", value.clone())).unwrap();
    }
    let rev = s.revision().unwrap();
    assert_eq!(rev, 2000);
    let kept = s.changes("/", rev - 10, 0).unwrap();
    assert_eq!(kept.len(), 10);
    assert!(matches!(
        s.changes("/", rev - 100, 0),
        Err(StoreError::Compacted { .. })
    ));
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 16 << 20, "store file is {size} bytes");
    // Reopening with a smaller bound trims at once.
    drop(s);
    let s = RedbStore::open_with_limits(&path, 3, 1 << 20).unwrap();
    assert_eq!(s.changes("/", rev - 3, 0).unwrap().len(), 3);
    assert!(s.changes("/", rev - 4, 0).is_err());
}

#[test]
fn the_store_file_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let s = RedbStore::open(&path);
    rustix::process::umask(old);
    drop(s.unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A file left world-readable by an older version is tightened on open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(RedbStore::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
