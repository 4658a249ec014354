//! Concurrent changes on one tenant: no call gets an error for a change that was applied, and
//! nothing is left half-done; a delete interrupted after the engine step is completed at start.

use strata_block::{DeviceSpec, MemDevice, Pool};
use strata_control::{Quota, Tenant, Volume, VolumeState};
use strata_state::{RedbStore, Store, Txn};
use strata_types::DeviceClass;

use crate::fixture::*;
use crate::recovery::{admin, open};

#[test]
fn thirty_two_threads_creating_and_deleting_get_no_error_and_leave_nothing() {
    let f = Fixture::new();
    let q = Quota {
        volumes: Some(1000),
        capacity_bytes: Some(1 << 40),
        ..Default::default()
    };
    f.c.create_tenant(&f.admin, "load", q).unwrap();
    let errors = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..32 {
            let (f, errors) = (&f, &errors);
            s.spawn(move || {
                for i in 0..30 {
                    let r =
                        f.c.create_volume(&f.admin, new_volume("load", &format!("t{t}-{i}"), "1M"));
                    let v = match r {
                        Ok(v) => v,
                        Err(e) => {
                            eprintln!("create: {e}");
                            errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            continue;
                        }
                    };
                    if let Err(e) = f.c.delete_volume(&f.admin, &v.id, false) {
                        eprintln!("delete: {e}");
                        errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(errors.into_inner(), 0);
    let (left, _) =
        f.c.list_volumes(&f.admin, Some("load"), None, 10_000, None)
            .unwrap();
    assert!(left.is_empty(), "{} volumes left", left.len());
    let u = f.c.get_tenant(&f.admin, "load").unwrap().usage;
    assert_eq!(
        (u.capacity_bytes, u.volumes, u.snapshots, u.iops),
        (0, 0, 0, 0)
    );
    assert_eq!(
        f.c.pool().info().provisioned,
        0,
        "the engine has none either"
    );
    assert_eq!(
        f.c.get_pool_settings(&f.admin, "default")
            .unwrap()
            .provisioned_bytes,
        0
    );
}

#[test]
fn a_delete_interrupted_after_the_engine_step_is_completed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let dev = MemDevice::new(64 << 20, "m");
    drop(
        Pool::create(vec![DeviceSpec {
            device: dev.clone(),
            class: DeviceClass::Ssd,
        }])
        .unwrap(),
    );
    let c = open(dir.path(), &dev);
    let p = admin();
    c.create_tenant(&p, "acme", Default::default()).unwrap();
    let gone = c
        .create_volume(&p, new_volume("acme", "gone", "8M"))
        .unwrap();
    let kept = c
        .create_volume(&p, new_volume("acme", "kept", "8M"))
        .unwrap();
    c.create_snapshot(&p, &gone.id, "s").unwrap();
    // The crash: the engine deleted the volume (and its snapshot), the store still says
    // `deleting` with the usage counted.
    let eid = c.pool().volume_id(&gone.id).unwrap();
    c.pool().delete_volume(eid, true).unwrap();
    drop(c);
    let store = RedbStore::open(dir.path().join("s.redb")).unwrap();
    let key = format!("/volumes/acme/{}", gone.id);
    let mut rec: Volume = serde_json::from_slice(&store.get(&key).unwrap().unwrap().value).unwrap();
    rec.state = VolumeState::Deleting;
    store
        .txn(Txn::new().put(key, serde_json::to_vec(&rec).unwrap()))
        .unwrap();
    let t: Tenant =
        serde_json::from_slice(&store.get("/tenants/acme").unwrap().unwrap().value).unwrap();
    assert_eq!((t.usage.volumes, t.usage.snapshots), (2, 1));
    drop(store);

    let c = open(dir.path(), &dev);
    assert_eq!(
        code(c.get_volume(&p, &gone.id)),
        "volume_not_found",
        "the delete was completed"
    );
    c.get_volume(&p, &kept.id).unwrap();
    let u = c.get_tenant(&p, "acme").unwrap().usage;
    assert_eq!((u.capacity_bytes, u.volumes, u.snapshots), (8 << 20, 1, 0));
    assert_eq!(
        c.get_pool_settings(&p, "default")
            .unwrap()
            .provisioned_bytes,
        8 << 20
    );
}
