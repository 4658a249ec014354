//! Node-scoped records (`docs/cluster.md`, step 1): two controllers of two nodes on one store
//! keep to their own pools and volumes, and a one-node install's `/pools/` records move under
//! its node at start.

use std::sync::Arc;

use strata_block::{BlockDevice, MemDevice, Pool};
use strata_control::{api, ControlError, Controller, SizeArg};
use strata_state::{RedbStore, Store, Txn};

use crate::fixture::new_volume;
use crate::recovery::{admin, pool_device};

fn open_as(store: &Arc<RedbStore>, dev: &Arc<MemDevice>, node: &str) -> Controller {
    let pool = Pool::open(vec![dev.clone() as Arc<dyn BlockDevice>]).unwrap();
    let c = Controller::open_node(Box::new(store.clone()), pool, node).unwrap();
    c.set_pool_settings(&admin(), "default", None).unwrap();
    c
}

fn code<T>(r: Result<T, ControlError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => api::code_of(&e).as_str(),
    }
}

fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    store
        .range(prefix, None, 0)
        .unwrap()
        .0
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

#[test]
fn two_nodes_on_one_store_keep_to_their_own_pools_and_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let (da, db) = (pool_device(), pool_device());
    let a = open_as(&store, &da, "n1");
    a.create_tenant(&admin(), "t", Default::default()).unwrap();
    let b = open_as(&store, &db, "n2");
    let va = a
        .create_volume(&admin(), new_volume("t", "on-a", "8M"))
        .unwrap();
    let vb = b
        .create_volume(&admin(), new_volume("t", "on-b", "8M"))
        .unwrap();
    assert_eq!((va.node.as_str(), vb.node.as_str()), ("n1", "n2"));
    // Both default pools, each under its node; the node list has two nodes, not four.
    let ks = keys(store.as_ref(), "/nodes/");
    assert!(
        ks.contains(&"/nodes/n1/pools/default".to_string()),
        "{ks:?}"
    );
    assert!(
        ks.contains(&"/nodes/n2/pools/default".to_string()),
        "{ks:?}"
    );
    // Each engine holds its own node's volume only.
    let pa = a.pool().clone();
    let pb = b.pool().clone();
    assert!(pa.volume_id(&va.id).is_ok() && pa.volume_id(&vb.id).is_err());
    assert!(pb.volume_id(&vb.id).is_ok() && pb.volume_id(&va.id).is_err());
    // Volumes are cluster-wide records: each node sees both, changes only its own.
    assert_eq!(a.get_volume(&admin(), &vb.id).unwrap().name, "on-b");
    let before = store.revision().unwrap();
    for r in [
        a.delete_volume(&admin(), &vb.id, true).map(|_| ()),
        a.resize_volume(&admin(), &vb.id, SizeArg::Text("16M".into()))
            .map(|_| ()),
        a.create_snapshot(&admin(), &vb.id, "s").map(|_| ()),
        a.attach(&admin(), &vb.id).map(|_| ()),
    ] {
        assert_eq!(code(r), "volume_on_other_node");
    }
    assert_eq!(
        store.revision().unwrap(),
        before,
        "a refusal changes nothing"
    );
    // A restart of each node (its recovery, orphan sweep, scans) leaves the other's alone.
    drop((a, b));
    let a = open_as(&store, &da, "n1");
    let b = open_as(&store, &db, "n2");
    a.start_rebuilds();
    a.drain_pass();
    b.start_rebuilds();
    b.drain_pass();
    assert!(a.pool().volume_id(&va.id).is_ok());
    assert!(b.pool().volume_id(&vb.id).is_ok());
    assert_eq!(b.get_volume(&admin(), &va.id).unwrap().state, va.state);
    // Each node's pool listing is its own; its pool figures count its own volumes.
    let pools = a.list_pools(&admin()).unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].provisioned, 8 << 20);
    assert_eq!(pools[0].devices[0].copies, 1);
    // The owner deletes its own.
    b.delete_volume(&admin(), &vb.id, false).unwrap();
    assert!(b.pool().volume_id(&vb.id).is_err());
    assert!(a.pool().volume_id(&va.id).is_ok());
    assert_eq!(
        a.list_nodes(&admin()).unwrap().len(),
        0,
        "no daemon registered"
    );
}

/// Turns node `node`'s records back into a one-node install's: pools and scrubs at
/// `/pools/{p}` and `/scrubs/{p}`, volumes naming no node.
fn make_legacy(store: &dyn Store, node: &str) {
    let mut txn = Txn::new();
    for (from, to) in [("pools", "/pools/"), ("scrubs", "/scrubs/")] {
        let prefix = format!("/nodes/{node}/{from}/");
        for kv in store.range(&prefix, None, 0).unwrap().0 {
            txn = txn
                .put(format!("{to}{}", &kv.key[prefix.len()..]), kv.value)
                .delete(kv.key);
        }
    }
    for kv in store.range("/volumes/", None, 0).unwrap().0 {
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        v.as_object_mut().unwrap().remove("node");
        txn = txn.put(kv.key, serde_json::to_vec(&v).unwrap());
    }
    assert!(store.txn(txn).unwrap().succeeded);
}

#[test]
fn a_one_node_install_moves_under_its_node_and_keeps_its_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let dev = pool_device();
    let a = open_as(&store, &dev, "n1");
    a.create_tenant(&admin(), "t", Default::default()).unwrap();
    let v = a
        .create_volume(&admin(), new_volume("t", "old", "8M"))
        .unwrap();
    drop(a);
    make_legacy(store.as_ref(), "n1");
    assert_eq!(keys(store.as_ref(), "/pools/"), vec!["/pools/default"]);
    let raw = store.get(&format!("/volumes/t/{}", v.id)).unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&raw.value).contains("\"node\""));

    // The start migrates: the pool record moves, the node becomes the legacy volumes' owner.
    let a = open_as(&store, &dev, "n1");
    assert!(keys(store.as_ref(), "/pools/").is_empty());
    assert!(store.get("/nodes/n1/pools/default").unwrap().is_some());
    let legacy = store.get("/cluster/legacy-node").unwrap().unwrap();
    assert_eq!(legacy.value, b"\"n1\"");
    let got = a.get_volume(&admin(), &v.id).unwrap();
    assert!(got.node.is_empty(), "the record is not rewritten");
    a.resize_volume(&admin(), &v.id, SizeArg::Text("16M".into()))
        .unwrap();
    assert_eq!(a.list_pools(&admin()).unwrap()[0].provisioned, 16 << 20);

    // A second start has nothing to move: the pool record is the migrated one.
    let moved = store.get("/nodes/n1/pools/default").unwrap().unwrap();
    drop(a);
    let a = open_as(&store, &dev, "n1");
    let again = store.get("/nodes/n1/pools/default").unwrap().unwrap();
    assert_eq!(again.create_revision, moved.create_revision);

    // Another node joining later sees the legacy volume as n1's, and leaves it alone.
    let other = pool_device();
    let b = open_as(&store, &other, "n2");
    assert_eq!(
        code(b.delete_volume(&admin(), &v.id, true)),
        "volume_on_other_node"
    );
    assert_eq!(a.get_volume(&admin(), &v.id).unwrap().size, 16 << 20);
    assert_eq!(b.list_pools(&admin()).unwrap()[0].provisioned, 0);
}

#[test]
fn a_migration_that_finds_the_pool_under_the_node_already_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let dev = pool_device();
    drop(open_as(&store, &dev, "n1"));
    // An old record beside the new one of the same name: neither is overwritten.
    let new = store.get("/nodes/n1/pools/default").unwrap().unwrap();
    assert!(
        store
            .txn(Txn::new().put("/pools/default", new.value.clone()))
            .unwrap()
            .succeeded
    );
    let pool = Pool::open(vec![dev.clone() as Arc<dyn BlockDevice>]).unwrap();
    let e = Controller::open_node(Box::new(store.clone()), pool, "n1").unwrap_err();
    assert!(e.to_string().contains("already has that pool"), "{e}");
    assert_eq!(keys(store.as_ref(), "/pools/"), vec!["/pools/default"]);
    assert_eq!(
        store
            .get("/nodes/n1/pools/default")
            .unwrap()
            .unwrap()
            .mod_revision,
        new.mod_revision
    );
}

#[test]
fn a_node_name_that_is_not_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    let dev = pool_device();
    let pool = Pool::open(vec![dev as Arc<dyn BlockDevice>]).unwrap();
    let e = Controller::open_node(Box::new(store.clone()), pool, "a/b").unwrap_err();
    assert_eq!(api::code_of(&e).as_str(), "invalid_argument");
    assert!(keys(store.as_ref(), "/").is_empty(), "nothing was written");
}
