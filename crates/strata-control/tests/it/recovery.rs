//! The controller over a real store and pool, without HTTP: what `Controller::open` repairs
//! after a crash between a store transaction and the engine change it records.

use std::sync::Arc;

use strata_block::{BlockDevice, DeviceSpec, MemDevice, Pool};
use strata_control::{Controller, CreateVolume, Principal, Role, SizeArg, Tenant, Volume};
use strata_state::{RedbStore, Store, Txn};
use strata_types::DeviceClass;

/// An admin principal, as the bootstrap token authenticates.
pub(crate) fn admin() -> Principal {
    Principal {
        token_id: "t".into(),
        tenant: None,
        role: Role::Admin,
    }
}

/// A controller over the pool on `dev` and a redb store in `dir` (reopened as after a crash).
pub(crate) fn open(dir: &std::path::Path, dev: &Arc<MemDevice>) -> Controller {
    let pool = Pool::open(vec![dev.clone() as Arc<dyn BlockDevice>]).unwrap();
    Controller::open(Box::new(RedbStore::open(dir.join("s.redb")).unwrap()), pool).unwrap()
}

/// A 64 MiB memory device holding a new pool.
pub(crate) fn pool_device() -> Arc<MemDevice> {
    let dev = MemDevice::new(64 << 20, "m");
    drop(
        Pool::create(vec![DeviceSpec {
            device: dev.clone(),
            class: DeviceClass::Ssd,
        }])
        .unwrap(),
    );
    dev
}

#[test]
fn open_recounts_usage_and_carries_out_recorded_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = pool_device();
    let c = open(dir.path(), &dev);
    let p = admin();
    c.create_tenant(&p, "acme", Default::default()).unwrap();
    let v = c
        .create_volume(
            &p,
            CreateVolume {
                name: "v".into(),
                size: SizeArg::Text("8M".into()),
                tenant: Some("acme".into()),
                ..Default::default()
            },
        )
        .unwrap();
    c.create_snapshot(&p, &v.id, "s").unwrap();
    drop(c);

    // Simulate a crash after a resize was recorded but before the engine saw it, and usage
    // that drifted: edit the store directly.
    let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
    let key = format!("/volumes/acme/{}", v.id);
    let mut rec: Volume = serde_json::from_slice(&store.get(&key).unwrap().unwrap().value).unwrap();
    rec.size = 16 << 20;
    let mut t: Tenant =
        serde_json::from_slice(&store.get("/tenants/acme").unwrap().unwrap().value).unwrap();
    t.usage.volumes = 7;
    t.usage.capacity_bytes = 1;
    store
        .txn(
            Txn::new()
                .put(key, serde_json::to_vec(&rec).unwrap())
                .put("/tenants/acme", serde_json::to_vec(&t).unwrap()),
        )
        .unwrap();
    drop(store);

    let c = open(dir.path(), &dev);
    let t = c.get_tenant(&p, "acme").unwrap();
    assert_eq!(t.usage.volumes, 1);
    assert_eq!(t.usage.snapshots, 1);
    assert_eq!(t.usage.capacity_bytes, 16 << 20);
    let eid = c.pool().volume_id(&v.id).unwrap();
    assert_eq!(c.pool().volume(eid).unwrap().size, 16 << 20);
    // A resize the engine refuses is undone in the store, usage included.
    c.pool().write(eid, (12 << 20) as u64, &[1; 4096]).unwrap();
    let e = c
        .resize_volume(&p, &v.id, SizeArg::Text("4M".into()))
        .unwrap_err();
    assert_eq!(
        strata_control::api::code_of(&e).as_str(),
        "shrink_over_data"
    );
    assert_eq!(c.get_volume(&p, &v.id).unwrap().size, 16 << 20);
    assert_eq!(
        c.get_tenant(&p, "acme").unwrap().usage.capacity_bytes,
        16 << 20
    );
}

/// A checkpoint group a crash left not ready: ready again at start if the engine took its
/// snapshots (it takes all or none), its records gone (and the counts given back) if not.
#[test]
fn open_settles_checkpoint_groups_a_crash_interrupted() {
    use strata_control::{NewGroup, SnapshotGroup};
    let dir = tempfile::tempdir().unwrap();
    let dev = pool_device();
    let c = open(dir.path(), &dev);
    let p = admin();
    c.create_tenant(&p, "acme", Default::default()).unwrap();
    let mut ids = Vec::new();
    for n in ["a", "b"] {
        let v = c
            .create_volume(
                &p,
                CreateVolume {
                    name: n.into(),
                    size: SizeArg::Text("8M".into()),
                    tenant: Some("acme".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        ids.push(v.id);
    }
    let taken = c
        .create_snapshot_group(
            &p,
            NewGroup {
                name: "taken".into(),
                volumes: ids.clone(),
                series: None,
                keep: None,
            },
        )
        .unwrap();
    drop(c);
    // Crash after the engine step (taken, not marked ready), and a crash before it: a group
    // recorded with member records the engine never took.
    let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
    let key = format!("/snapshot-groups/acme/{}", taken.id);
    let mut g: SnapshotGroup =
        serde_json::from_slice(&store.get(&key).unwrap().unwrap().value).unwrap();
    g.ready = false;
    let mut txn = Txn::new().put(key.clone(), serde_json::to_vec(&g).unwrap());
    let mut lost = g.clone();
    lost.id = "lostgroup".into();
    lost.name = "lost".into();
    for (m, vol) in lost.members.iter_mut().zip(&ids) {
        m.snapshot = format!("lost{vol}");
        let s = strata_control::Snapshot {
            id: m.snapshot.clone(),
            tenant: "acme".into(),
            volume: vol.clone(),
            name: "lost".into(),
            size: 8 << 20,
            created: 0,
            group: Some("lostgroup".into()),
            schedule: None,
        };
        txn = txn
            .put(
                format!("/snapshots/acme/{}", s.id),
                serde_json::to_vec(&s).unwrap(),
            )
            .put(
                format!("/snapshot-ids/{}", s.id),
                serde_json::to_vec("acme").unwrap(),
            )
            .put(
                format!("/snapshot-names/{vol}/lost"),
                serde_json::to_vec(&s.id).unwrap(),
            );
    }
    txn = txn
        .put(
            "/snapshot-groups/acme/lostgroup".to_string(),
            serde_json::to_vec(&lost).unwrap(),
        )
        .put(
            "/snapshot-group-ids/lostgroup".to_string(),
            serde_json::to_vec("acme").unwrap(),
        )
        .put(
            "/snapshot-group-names/acme/lost".to_string(),
            serde_json::to_vec("lostgroup").unwrap(),
        );
    assert!(store.txn(txn).unwrap().succeeded);
    drop(store);

    let c = open(dir.path(), &dev);
    let groups = c.list_snapshot_groups(&p, Some("acme")).unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(groups[0].ready && groups[0].name == "taken");
    assert_eq!(c.get_tenant(&p, "acme").unwrap().usage.snapshots, 2);
    for v in &ids {
        let names: Vec<String> = c
            .list_snapshots(&p, v)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["taken"]);
    }
}
