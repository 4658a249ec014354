//! The pool's overcommit limit: thin volumes may provision up to `capacity × overcommit`
//! (4 by default), an admin changes or lifts it, and passing 80, 90 and 100 % of it is counted.

use strata_control::{OvercommitArg, Quota, Role, SizeArg};

use crate::fixture::*;

/// The fixture's pool: 256 MiB of devices, a little less of data capacity.
fn capacity(f: &Fixture) -> u64 {
    f.c.pool().info().capacity
}

#[test]
fn the_default_ratio_refuses_a_petabyte_on_a_small_pool() {
    let f = Fixture::new();
    // The fixture lifted the limit; the default is 4.
    f.c.set_pool_settings(
        &f.admin,
        "default",
        Some(strata_control::DEFAULT_OVERCOMMIT),
    )
    .unwrap();
    f.c.create_tenant(&f.admin, "acme", Quota::default())
        .unwrap();
    assert_eq!(code(f.volume("acme", "huge", "1P")), "pool_overcommitted");
    assert_eq!(
        status(&f.volume("acme", "huge", "1P"), 201),
        409,
        "the pool's state refuses it"
    );
    // Up to four times the capacity (in whole MiB) is accepted, one more MiB is not.
    let limit_mib = (capacity(&f) * 4) >> 20;
    let a = f
        .volume("acme", "a", &format!("{}M", limit_mib - 1))
        .unwrap();
    assert_eq!(code(f.volume("acme", "b", "2M")), "pool_overcommitted");
    // A resize and a clone are bounded too; a shrink and a delete never are.
    assert_eq!(
        code(f.c.resize_volume(&f.admin, &a, SizeArg::Text(format!("{}M", limit_mib + 1)))),
        "pool_overcommitted"
    );
    let s = f.c.create_snapshot(&f.admin, &a, "s").unwrap();
    assert_eq!(
        code(f.c.clone_snapshot(&f.admin, &s.id, "c", None)),
        "pool_overcommitted"
    );
    f.c.set_pool_settings(&f.admin, "default", Some(1.0))
        .unwrap();
    f.c.resize_volume(&f.admin, &a, SizeArg::Text(format!("{}M", limit_mib - 2)))
        .unwrap();
    let b = f.volume("acme", "b", "1M");
    assert_eq!(code(b), "pool_overcommitted", "over a lowered ratio");
    // Lifted: anything the engine takes.
    f.c.set_pool_settings(&f.admin, "default", None).unwrap();
    f.volume("acme", "huge", "1P").unwrap();
    let v = f.c.get_pool_settings(&f.admin, "default").unwrap();
    assert_eq!(v.overcommit, None);
    assert_eq!(v.limit_bytes, None);
    assert_eq!(
        v.provisioned_bytes,
        u128::from((limit_mib - 2) << 20) + (1 << 50)
    );
    f.c.delete_volume(&f.admin, &a, true).unwrap();
    assert_eq!(
        f.c.get_pool_settings(&f.admin, "default")
            .unwrap()
            .provisioned_bytes,
        1 << 50
    );
}

#[test]
fn only_admins_change_pool_settings_and_bad_ratios_are_refused() {
    let f = Fixture::new();
    f.c.create_tenant(&f.admin, "acme", Quota::default())
        .unwrap();
    let ta = f.token("acme", Role::TenantAdmin);
    assert_eq!(
        status(&f.c.set_pool_settings(&ta, "default", Some(10.0)), 200),
        403
    );
    assert_eq!(status(&f.c.get_pool_settings(&ta, "default"), 200), 403);
    assert_eq!(
        code(f.c.set_pool_settings(&f.admin, "other", Some(10.0))),
        "pool_not_found"
    );
    let ratio = |j: &str| serde_json::from_str::<OvercommitArg>(j).unwrap().ratio();
    assert_eq!(ratio("10").unwrap(), Some(10.0));
    assert_eq!(ratio("1.5").unwrap(), Some(1.5));
    assert_eq!(ratio("0").unwrap(), None);
    assert_eq!(ratio("\"unlimited\"").unwrap(), None);
    assert_eq!(ratio("null").unwrap(), None);
    for bad in ["-1", "\"lots\"", "1e300"] {
        assert_eq!(code(ratio(bad)), "invalid_argument", "{bad}");
    }
}

/// Crossing counts of the three thresholds, from `/metrics`.
fn crossings(f: &Fixture) -> Vec<u64> {
    let m = f.c.metrics(&f.admin).unwrap();
    ["80", "90", "100"]
        .iter()
        .map(|t| {
            let l = format!(
                "strata_pool_allocation_threshold_crossings_total{{pool=\"default\",threshold=\"{t}\"}} "
            );
            let line = m.lines().find(|x| x.starts_with(&l)).expect(&l);
            line[l.len()..].parse().unwrap()
        })
        .collect()
}

fn ratio(f: &Fixture) -> f64 {
    let m = f.c.metrics(&f.admin).unwrap();
    let l = "strata_pool_allocated_ratio{pool=\"default\"} ";
    m.lines().find(|x| x.starts_with(l)).unwrap()[l.len()..]
        .parse()
        .unwrap()
}

#[test]
fn passing_80_90_and_100_percent_is_counted_once_each() {
    let f = Fixture::new();
    f.c.set_pool_settings(&f.admin, "default", Some(1.0))
        .unwrap();
    f.c.create_tenant(&f.admin, "acme", Quota::default())
        .unwrap();
    let cap_mib = capacity(&f) >> 20;
    assert_eq!(crossings(&f), [0, 0, 0]);
    let a = f
        .volume("acme", "a", &format!("{}M", cap_mib * 85 / 100))
        .unwrap();
    assert_eq!(crossings(&f), [1, 0, 0]);
    assert!(ratio(&f) > 0.8 && ratio(&f) < 0.9, "{}", ratio(&f));
    // Staying above 80 % does not count again.
    f.volume("acme", "b", "1M").unwrap();
    assert_eq!(crossings(&f), [1, 0, 0]);
    f.volume("acme", "c", &format!("{}M", cap_mib * 7 / 100))
        .unwrap();
    assert_eq!(crossings(&f), [1, 1, 0]);
    // Exactly the limit is allowed and passes 100 %.
    let used: u64 =
        f.c.list_volumes(&f.admin, Some("acme"), None, 100, None)
            .unwrap()
            .0
            .iter()
            .map(|v| v.size)
            .sum();
    let rest = (capacity(&f) - used) / 4096 * 4096;
    f.volume("acme", "d", &format!("{rest}")).unwrap();
    assert_eq!(crossings(&f), [1, 1, 1]);
    // Falling below re-arms: passing again counts again.
    f.c.delete_volume(&f.admin, &a, false).unwrap();
    assert_eq!(crossings(&f), [1, 1, 1]);
    f.volume("acme", "a", "1M").unwrap();
    assert_eq!(crossings(&f), [1, 1, 1]);
    assert!(ratio(&f) < 0.8);
    f.c.set_pool_settings(&f.admin, "default", Some(0.1))
        .unwrap();
    assert_eq!(
        crossings(&f),
        [2, 2, 2],
        "a lower ratio passes all three at once"
    );
}
