//! Quota arithmetic: sums of sizes, counts and IOPS limits never wrap. A regression test for the
//! IOPS quota bypass, and a property test of quota operations against a reference model in
//! `u128` (which cannot overflow) with values near `u64::MAX`.

use proptest::prelude::*;
use strata_control::{Qos, Quota, SizeArg, Usage};

use crate::fixture::*;

/// Under a 1,000 IOPS quota a limit of `u64::MAX - 1` used to be accepted: the sum wrapped.
#[test]
fn an_iops_limit_near_u64_max_does_not_wrap_the_quota() {
    let f = Fixture::new();
    let q = Quota {
        iops: Some(1000),
        ..Default::default()
    };
    f.c.create_tenant(&f.admin, "acme", q).unwrap();
    let mut req = new_volume("acme", "a", "1G");
    req.iops_limit = Some(10);
    let a = f.c.create_volume(&f.admin, req).unwrap();
    for limit in [5000, u64::MAX - 1, u64::MAX] {
        let mut req = new_volume("acme", "b", "1G");
        req.iops_limit = Some(limit);
        assert_eq!(code(f.c.create_volume(&f.admin, req)), "quota_exceeded");
        let qos = Qos {
            iops_limit: Some(limit),
            ..Default::default()
        };
        assert_eq!(code(f.c.set_qos(&f.admin, &a.id, qos)), "quota_exceeded");
    }
    let u = f.c.get_tenant(&f.admin, "acme").unwrap().usage;
    assert_eq!((u.iops, u.volumes), (10, 1));
    // Without a quota the sum may not pass u64::MAX either.
    f.c.create_tenant(&f.admin, "free", Quota::default())
        .unwrap();
    let mut req = new_volume("free", "a", "1G");
    req.iops_limit = Some(u64::MAX - 1);
    f.c.create_volume(&f.admin, req).unwrap();
    let mut req = new_volume("free", "b", "1G");
    req.iops_limit = Some(2);
    assert_eq!(code(f.c.create_volume(&f.admin, req)), "quota_exceeded");
    assert_eq!(
        f.c.get_tenant(&f.admin, "free").unwrap().usage.iops,
        u64::MAX - 1
    );
}

#[derive(Debug, Clone)]
enum Step {
    Create { size: u64, iops: Option<u64> },
    Resize { vol: usize, size: u64 },
    Delete { vol: usize },
    Snapshot { vol: usize },
    Clone { snap: usize },
    SetQos { vol: usize, iops: Option<u64> },
    SetQuota(Quota),
}

fn big() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..5000,
        (0u64..4).prop_map(|d| u64::MAX - d),
        (0u64..4).prop_map(|d| u64::MAX / 2 + d),
        (0u64..4).prop_map(|d| (u64::MAX - (1 << 50)) + d * 4096),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        (1u64..64).prop_map(|k| k << 20),
        (0u64..3).prop_map(|d| strata_block::MAX_VOLUME_SIZE - d * 4096),
        Just(0),
        Just(4097),
        (0u64..3).prop_map(|d| u64::MAX - d),
    ]
}

fn quota() -> impl Strategy<Value = Quota> {
    let o = || proptest::option::of(big());
    (o(), o(), o(), o()).prop_map(|(c, v, s, i)| Quota {
        capacity_bytes: c,
        volumes: v,
        snapshots: s,
        iops: i,
        gpus: None,
        networks: None,
        ports: None,
        snapshot_schedules: None,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (size(), proptest::option::of(big())).prop_map(|(size, iops)| Step::Create { size, iops }),
        2 => (0usize..8, size()).prop_map(|(vol, size)| Step::Resize { vol, size }),
        1 => (0usize..8).prop_map(|vol| Step::Delete { vol }),
        2 => (0usize..8).prop_map(|vol| Step::Snapshot { vol }),
        1 => (0usize..8).prop_map(|snap| Step::Clone { snap }),
        2 => (0usize..8, proptest::option::of(big())).prop_map(|(vol, iops)| Step::SetQos { vol, iops }),
        1 => quota().prop_map(Step::SetQuota),
    ]
}

/// The reference: usage in `u128`, a change accepted when every dimension that grows stays
/// within its quota (an absent quota is `u64::MAX`).
#[derive(Debug, Default)]
struct Model {
    quota: Quota,
    /// (id, size, iops limit)
    vols: Vec<(String, u64, Option<u64>)>,
    /// (id, volume id, size)
    snaps: Vec<(String, String, u64)>,
}

impl Model {
    fn usage(&self) -> [u128; 4] {
        [
            self.vols.iter().map(|v| u128::from(v.1)).sum(),
            self.vols.len() as u128,
            self.snaps.len() as u128,
            self.vols.iter().map(|v| u128::from(v.2.unwrap_or(0))).sum(),
        ]
    }
    fn quotas(&self) -> [u128; 4] {
        let m = |q: Option<u64>| u128::from(q.unwrap_or(u64::MAX));
        let q = &self.quota;
        [m(q.capacity_bytes), m(q.volumes), m(q.snapshots), m(q.iops)]
    }
    /// Whether the usage `after` may follow the current one.
    fn allows(&self, after: [u128; 4]) -> bool {
        let (now, max) = (self.usage(), self.quotas());
        (0..4).all(|i| after[i] <= now[i] || after[i] <= max[i])
    }
}

fn valid_size(s: u64) -> bool {
    s > 0 && s.is_multiple_of(4096) && s <= strata_block::MAX_VOLUME_SIZE
}

fn as_u128(u: &Usage) -> [u128; 4] {
    [
        u.capacity_bytes.into(),
        u.volumes.into(),
        u.snapshots.into(),
        u.iops.into(),
    ]
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let f = Fixture::new();
    f.c.create_tenant(&f.admin, "t", Quota::default()).unwrap();
    let mut m = Model::default();
    let mut n = 0;
    for (i, st) in steps.into_iter().enumerate() {
        let before = m.usage();
        let (want, got): (&str, &str) = match st.clone() {
            Step::Create { size, iops } => {
                n += 1;
                let mut req = new_volume("t", &format!("v{n}"), "0");
                req.size = SizeArg::Bytes(size);
                req.iops_limit = iops;
                let mut after = before;
                after[0] += u128::from(size);
                after[1] += 1;
                after[3] += u128::from(iops.unwrap_or(0));
                let want = if !valid_size(size) || iops == Some(0) {
                    "invalid_argument"
                } else if (m.quota.iops.is_some() && iops.is_none()) || !m.allows(after) {
                    "quota_exceeded"
                } else {
                    "ok"
                };
                let r = f.c.create_volume(&f.admin, req);
                if let Ok(v) = &r {
                    m.vols.push((v.id.clone(), size, iops));
                }
                (want, outcome(r))
            }
            Step::Resize { vol, size } => {
                let Some(v) = m.vols.get(vol).cloned() else {
                    continue;
                };
                let mut after = before;
                after[0] = after[0] - u128::from(v.1) + u128::from(size);
                let want = if !valid_size(size) {
                    "invalid_argument"
                } else if !m.allows(after) {
                    "quota_exceeded"
                } else {
                    "ok"
                };
                let r = f.c.resize_volume(&f.admin, &v.0, SizeArg::Bytes(size));
                if r.is_ok() {
                    m.vols[vol].1 = size;
                }
                (want, outcome(r))
            }
            Step::Delete { vol } => {
                if vol >= m.vols.len() {
                    continue;
                }
                let v = m.vols.remove(vol);
                m.snaps.retain(|s| s.1 != v.0);
                ("ok", outcome(f.c.delete_volume(&f.admin, &v.0, true)))
            }
            Step::Snapshot { vol } => {
                let Some(v) = m.vols.get(vol).cloned() else {
                    continue;
                };
                n += 1;
                let mut after = before;
                after[2] += 1;
                let want = if m.allows(after) {
                    "ok"
                } else {
                    "quota_exceeded"
                };
                let r = f.c.create_snapshot(&f.admin, &v.0, &format!("s{n}"));
                if let Ok(s) = &r {
                    m.snaps.push((s.id.clone(), v.0.clone(), v.1));
                }
                (want, outcome(r))
            }
            Step::Clone { snap } => {
                let Some(s) = m.snaps.get(snap).cloned() else {
                    continue;
                };
                n += 1;
                // A clone keeps its origin volume's IOPS limit (none if the origin is gone).
                let iops = m.vols.iter().find(|x| x.0 == s.1).and_then(|x| x.2);
                let mut after = before;
                after[0] += u128::from(s.2);
                after[1] += 1;
                after[3] += u128::from(iops.unwrap_or(0));
                let want = if m.quota.iops.is_some() && iops.is_none() {
                    // Without a limit: unbounded IOPS are over an IOPS quota.
                    "quota_exceeded"
                } else if m.allows(after) {
                    "ok"
                } else {
                    "quota_exceeded"
                };
                let r = f.c.clone_snapshot(&f.admin, &s.0, &format!("c{n}"), None);
                if let Ok(v) = &r {
                    m.vols.push((v.id.clone(), s.2, iops));
                }
                (want, outcome(r))
            }
            Step::SetQos { vol, iops } => {
                let Some(v) = m.vols.get(vol).cloned() else {
                    continue;
                };
                let mut after = before;
                after[3] = after[3] - u128::from(v.2.unwrap_or(0)) + u128::from(iops.unwrap_or(0));
                let want = if iops == Some(0) {
                    "invalid_argument"
                } else if m.quota.iops.is_some() && iops.is_none() {
                    "quota_exceeded"
                } else if m.allows(after) {
                    "ok"
                } else {
                    "quota_exceeded"
                };
                let qos = Qos {
                    iops_limit: iops,
                    ..Default::default()
                };
                let r = f.c.set_qos(&f.admin, &v.0, qos);
                if r.is_ok() {
                    m.vols[vol].2 = iops;
                }
                (want, outcome(r))
            }
            Step::SetQuota(q) => {
                m.quota = q.clone();
                ("ok", outcome(f.c.set_quota(&f.admin, "t", q)))
            }
        };
        prop_assert_eq!(want, got, "step {}: {:?}", i, st);
        let u = f.c.get_tenant(&f.admin, "t").unwrap().usage;
        prop_assert_eq!(as_u128(&u), m.usage(), "usage after step {}: {:?}", i, st);
        let pool = f.c.get_pool_settings(&f.admin, "default").unwrap();
        prop_assert_eq!(
            pool.provisioned_bytes,
            m.usage()[0],
            "pool after step {}",
            i
        );
    }
    Ok(())
}

fn outcome<T>(r: Result<T, strata_control::ControlError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => strata_control::api::code_of(&e).as_str(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn quota_operations_match_a_model_that_cannot_overflow(
        steps in proptest::collection::vec(step(), 1..24)
    ) {
        run(steps)?;
    }
}
