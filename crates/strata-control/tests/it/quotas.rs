//! Quotas and idempotency on the controller: capacity, count and snapshot quotas hold, usage
//! follows every change, a repeated request id gives the same volume.

use strata_control::{Quota, Role};

use crate::fixture::*;

#[test]
fn creates_are_idempotent_and_quotas_hold() {
    let f = Fixture::new();
    let q = Quota {
        capacity_bytes: Some(3 << 30),
        volumes: Some(2),
        snapshots: Some(1),
        iops: None,
        gpus: None,
        networks: None,
        ports: None,
        snapshot_schedules: None,
    };
    f.c.create_tenant(&f.admin, "acme", q).unwrap();
    let mut req = new_volume("acme", "a", "1G");
    req.request_id = Some("r-1".into());
    let v1 = f.c.create_volume(&f.admin, req.clone()).unwrap();
    let v2 = f.c.create_volume(&f.admin, req).unwrap();
    assert_eq!(v1.id, v2.id, "same request id, same volume");
    assert_eq!(code(f.volume("acme", "a", "1G")), "volume_exists");
    assert_eq!(code(f.volume("acme", "b", "3G")), "quota_exceeded");
    f.volume("acme", "b", "1G").unwrap();
    assert_eq!(
        code(f.volume("acme", "c", "1G")),
        "quota_exceeded",
        "volume count quota"
    );
    f.c.create_snapshot(&f.admin, &v1.id, "s1").unwrap();
    assert_eq!(
        code(f.c.create_snapshot(&f.admin, &v1.id, "s2")),
        "quota_exceeded",
        "snapshot quota"
    );
    let u = f.c.get_tenant(&f.admin, "acme").unwrap().usage;
    assert_eq!(
        (u.capacity_bytes, u.volumes, u.snapshots, u.iops),
        (2 << 30, 2, 1, 0)
    );
    // Delete with snapshots is refused unless forced; usage is returned.
    assert_eq!(
        code(f.c.delete_volume(&f.admin, &v1.id, false)),
        "volume_has_snapshots"
    );
    f.c.delete_volume(&f.admin, &v1.id, true).unwrap();
    let u = f.c.get_tenant(&f.admin, "acme").unwrap().usage;
    assert_eq!(
        (u.capacity_bytes, u.volumes, u.snapshots, u.iops),
        (1 << 30, 1, 0, 0)
    );
}

/// The IOPS quota bounds the sum of the volumes' limits, and requires a limit on each.
#[test]
fn iops_quota_bounds_the_sum_of_limits() {
    let f = Fixture::new();
    let q = Quota {
        iops: Some(1000),
        ..Default::default()
    };
    f.c.create_tenant(&f.admin, "acme", q).unwrap();
    let member = f.token("acme", Role::Member);
    let mut req = new_volume("acme", "a", "1G");
    // No limit under an IOPS quota would be unbounded IOPS: over the quota.
    assert_eq!(
        code(f.c.create_volume(&member, req.clone())),
        "quota_exceeded"
    );
    req.iops_limit = Some(800);
    let a = f.c.create_volume(&member, req).unwrap();
    let mut req = new_volume("acme", "b", "1G");
    req.iops_limit = Some(300);
    assert_eq!(
        code(f.c.create_volume(&member, req.clone())),
        "quota_exceeded"
    );
    req.iops_limit = Some(200);
    f.c.create_volume(&member, req).unwrap();
    let lower = strata_control::Qos {
        iops_limit: Some(500),
        ..Default::default()
    };
    f.c.set_qos(&member, &a.id, lower).unwrap();
    assert_eq!(f.c.get_tenant(&member, "acme").unwrap().usage.iops, 700);
}
