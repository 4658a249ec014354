//! Fair shares: the pool's capacity and the tenants' weights are desired state, checked,
//! kept across a restart and applied to the engine; every volume is in its tenant's class.

use strata_control::{class_of, CreateVolume, PoolShareRecord, Role, SizeArg, TenantShareRecord};

use crate::fixture::code;
use crate::recovery::{admin, open, pool_device};

#[test]
fn shares_are_checked_kept_across_a_restart_and_applied_to_every_volume() {
    let dir = tempfile::tempdir().unwrap();
    let dev = pool_device();
    let c = open(dir.path(), &dev);
    let p = admin();
    c.create_tenant(&p, "a", Default::default()).unwrap();
    c.create_tenant(&p, "b", Default::default()).unwrap();
    let vol = |t: &str, n: &str| {
        c.create_volume(
            &p,
            CreateVolume {
                name: n.into(),
                size: SizeArg::Text("4M".into()),
                tenant: Some(t.into()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let va = vol("a", "va");
    // Bad input: refused, nothing changes.
    let bad = TenantShareRecord {
        weight: 0,
        reservation_iops: None,
    };
    assert_eq!(code(c.set_tenant_share(&p, "a", bad)), "invalid_argument");
    let bad = PoolShareRecord {
        iops_capacity: Some(0),
        bandwidth_capacity: None,
    };
    assert_eq!(
        code(c.set_pool_share(&p, "default", bad)),
        "invalid_argument"
    );
    assert_eq!(c.get_pool_share(&p, "default").unwrap(), Default::default());
    assert_eq!(
        code(c.set_pool_share(&p, "other", Default::default())),
        "pool_not_found"
    );
    assert_eq!(
        code(c.set_tenant_share(&p, "nosuch", Default::default())),
        "tenant_not_found"
    );
    // Only an admin sets them; a member reads its own tenant's.
    let (secret, _) = c.create_token(&p, Some("a"), Role::Member).unwrap();
    let member = c.authenticate(&secret).unwrap();
    assert_eq!(
        code(c.set_tenant_share(&member, "a", Default::default())),
        "forbidden"
    );
    assert_eq!(c.get_tenant_share(&member, "a").unwrap().share.weight, 100);
    assert_eq!(code(c.get_tenant_share(&member, "b")), "tenant_not_found");

    let share = TenantShareRecord {
        weight: 300,
        reservation_iops: Some(50),
    };
    c.set_tenant_share(&p, "a", share).unwrap();
    let cap = PoolShareRecord {
        iops_capacity: Some(5000),
        bandwidth_capacity: None,
    };
    c.set_pool_share(&p, "default", cap).unwrap();
    let vb = vol("b", "vb");
    let engine = |c: &strata_control::Controller, id: &str| {
        let eid = c.pool().volume_id(id).unwrap();
        c.pool().io(eid).unwrap().class()
    };
    assert_eq!(engine(&c, &va.id), Some(class_of("a")));
    assert_eq!(engine(&c, &vb.id), Some(class_of("b")));
    let clone = {
        let s = c.create_snapshot(&p, &va.id, "s").unwrap();
        c.clone_snapshot(&p, &s.id, "cl", None).unwrap()
    };
    assert_eq!(engine(&c, &clone.id), Some(class_of("a")), "a clone too");
    drop(c);

    let c = open(dir.path(), &dev);
    assert_eq!(c.get_pool_share(&p, "default").unwrap(), cap);
    assert_eq!(c.get_tenant_share(&p, "a").unwrap().share, share);
    let engine_cap = c.pool().share().capacity();
    assert_eq!(
        engine_cap.iops,
        Some(5000),
        "the engine learns the capacity again"
    );
    assert_eq!(c.pool().share().class_share(class_of("a")).weight, 300);
    for id in [&va.id, &vb.id, &clone.id] {
        assert!(
            engine(&c, id).is_some(),
            "volume {id} is in a class after a restart"
        );
    }
    assert_ne!(class_of("a"), class_of("b"));
}
