//! Rebalance rounds in the controller: a pool of file devices filled unevenly (a device added
//! after the volumes exist), a dry run that changes nothing, a real round whose moves the
//! resync and drain passes finish (driven here as the daemon's threads would), the bytes on
//! the new devices, the spread lower, and bad input refused with stable codes.

use std::path::Path;

use strata_control::controller::{NewDevice, RebalanceRequest};
use strata_control::{Controller, CreateVolume, Principal, Role, SizeArg};

use crate::fixture::*;

const MIB: u64 = 1 << 20;

fn device(dir: &Path, name: &str) -> NewDevice {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    NewDevice {
        path: path.to_str().unwrap().to_string(),
        class: None,
    }
}

/// Bytes of a seeded pattern: volume `k`'s data.
fn pattern(k: u64, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ k;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn copies(c: &Controller, admin: &Principal, id: &str) -> Vec<String> {
    c.get_volume(admin, id).unwrap().copies
}

fn read(c: &Controller, dev: &str, id: &str, len: usize) -> Vec<u8> {
    let e = c.storage().engine(dev).expect("device open");
    let v = e.volume_id(id).unwrap();
    let mut buf = vec![0; len];
    e.read(v, 0, &mut buf).unwrap();
    buf
}

fn round(max_moves: u64, dry_run: bool) -> RebalanceRequest {
    RebalanceRequest { max_moves, dry_run }
}

#[test]
fn a_round_moves_copies_to_an_added_device_and_a_dry_run_changes_nothing() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    f.c.storage()
        .set_device_dirs(vec![dir.path().to_path_buf()]);
    std::fs::create_dir(dir.path().join("replicas")).unwrap();
    f.c.set_intent_dir(dir.path().join("replicas"));
    f.c.create_pool(
        &f.admin,
        strata_control::controller::CreatePool {
            name: "p".into(),
            devices: vec![device(dir.path(), "a.img")],
            replicas: None,
            force: false,
        },
    )
    .unwrap();
    f.c.set_pool_settings(&f.admin, "p", None).unwrap();
    f.c.create_tenant(&f.admin, "acme", Default::default())
        .unwrap();
    // Four one-copy volumes with 16 MiB written each, all on the pool's one device.
    let len = (16 * MIB) as usize;
    let mut ids = vec![];
    for k in 0..4u64 {
        let v =
            f.c.create_volume(
                &f.admin,
                CreateVolume {
                    name: format!("v{k}"),
                    size: SizeArg::Text("32M".into()),
                    tenant: Some("acme".into()),
                    pool: Some("p".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let dev = &v.copies[0];
        let e = f.c.storage().engine(dev).unwrap();
        let eid = e.volume_id(&v.id).unwrap();
        e.write(eid, 0, &pattern(k, len)).unwrap();
        e.flush().unwrap();
        ids.push(v.id);
    }
    // A device added after the volumes exist holds nothing.
    let pool =
        f.c.add_device(&f.admin, "p", device(dir.path(), "b.img"), false)
            .unwrap();
    let new_dev = pool.devices[1].record.id.clone();
    let before: Vec<Vec<String>> = ids.iter().map(|id| copies(&f.c, &f.admin, id)).collect();

    // A dry run: the moves and spreads, nothing written, every copy where it was.
    let dry = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    assert!(dry.dry_run);
    assert!(!dry.moves.is_empty(), "{dry:?}");
    assert!(
        dry.moves
            .iter()
            .all(|m| m.state == "planned" && m.to == new_dev),
        "{dry:?}"
    );
    assert!(dry.spread_after < dry.spread_before, "{dry:?}");
    assert!(dry.imbalance_after < dry.imbalance_before, "{dry:?}");
    // Half the data would move: two of the four volumes.
    assert_eq!(dry.moves.len(), 2, "{dry:?}");
    let again = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    assert_eq!(again.revision, dry.revision, "a dry run writes nothing");
    assert_eq!(again.moves, dry.moves, "the same input, the same plan");
    let now: Vec<Vec<String>> = ids.iter().map(|id| copies(&f.c, &f.admin, id)).collect();
    assert_eq!(now, before);
    assert!(f.c.storage().engine(&new_dev).unwrap().volumes().is_empty());

    // One move at most: one.
    let one = f.c.rebalance_pool(&f.admin, "p", round(1, true)).unwrap();
    assert_eq!(one.moves.len(), 1, "{one:?}");

    // For real: the moves start; the daemon's passes finish them.
    let real = f.c.rebalance_pool(&f.admin, "p", round(8, false)).unwrap();
    assert!(!real.dry_run);
    assert_eq!(real.moves.len(), 2, "{real:?}");
    assert!(real.moves.iter().all(|m| m.state == "started"), "{real:?}");
    // The volumes being moved are left out of another round.
    let during = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    assert!(
        during
            .moves
            .iter()
            .all(|m| real.moves.iter().all(|r| r.volume != m.volume)),
        "{during:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        f.c.resync_pass();
        f.c.drain_pass();
        let done = real
            .moves
            .iter()
            .all(|m| copies(&f.c, &f.admin, &m.volume) == vec![m.to.clone()]);
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "moves not done");
    }
    // Every volume reads its bytes from where its record says it is; moved ones left nothing
    // behind on the old device.
    for (k, id) in ids.iter().enumerate() {
        let at = copies(&f.c, &f.admin, id);
        assert_eq!(at.len(), 1);
        assert_eq!(
            read(&f.c, &at[0], id, len),
            pattern(k as u64, len),
            "volume {k}"
        );
        for d in [&before[k][0], &new_dev] {
            let has = f.c.storage().engine(d).unwrap().volume_id(id).is_ok();
            assert_eq!(has, *d == at[0], "volume {k} on {d}");
        }
    }
    let after = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    assert!(
        after.spread_before < dry.spread_before / 2.0,
        "{after:?} vs {dry:?}"
    );
    assert!(after.moves.is_empty(), "balanced: {after:?}");
}

#[test]
fn bad_rounds_are_refused_with_stable_codes() {
    let f = Fixture::new();
    assert_eq!(
        code(f.c.rebalance_pool(&f.admin, "nope", round(1, true))),
        "pool_not_found"
    );
    for n in [0, 65, u64::MAX] {
        assert_eq!(
            code(f.c.rebalance_pool(&f.admin, "default", round(n, false))),
            "invalid_argument",
            "max_moves {n}"
        );
    }
    f.c.create_tenant(&f.admin, "acme", Default::default())
        .unwrap();
    for role in [Role::TenantAdmin, Role::Member, Role::Reader] {
        let p = f.token("acme", role);
        assert_eq!(
            code(f.c.rebalance_pool(&p, "default", round(1, true))),
            "forbidden",
            "{role:?}"
        );
    }
    // A one-device pool has nowhere to move anything.
    let r =
        f.c.rebalance_pool(&f.admin, "default", round(4, false))
            .unwrap();
    assert!(r.moves.is_empty(), "{r:?}");
}

/// A pool of file devices `a` and `b` with an intent directory, and tenant `acme`.
fn replicated_pool(f: &Fixture, dir: &Path) {
    f.c.storage().set_device_dirs(vec![dir.to_path_buf()]);
    std::fs::create_dir(dir.join("replicas")).unwrap();
    f.c.set_intent_dir(dir.join("replicas"));
    f.c.create_pool(
        &f.admin,
        strata_control::controller::CreatePool {
            name: "p".into(),
            devices: vec![device(dir, "a.img"), device(dir, "b.img")],
            replicas: None,
            force: false,
        },
    )
    .unwrap();
    f.c.set_pool_settings(&f.admin, "p", None).unwrap();
    f.c.create_tenant(&f.admin, "acme", Default::default())
        .unwrap();
}

#[test]
fn a_replicated_copy_moves_through_a_grown_set_and_never_runs_a_copy_short() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    replicated_pool(&f, dir.path());
    // Four two-copy volumes, 16 MiB written each through the set, on devices a and b.
    let len = (16 * MIB) as usize;
    let mut ids = vec![];
    let mut models = vec![];
    for k in 0..4u64 {
        let v =
            f.c.create_volume(
                &f.admin,
                CreateVolume {
                    name: format!("r{k}"),
                    size: SizeArg::Text("32M".into()),
                    tenant: Some("acme".into()),
                    pool: Some("p".into()),
                    replicas: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(v.copies.len(), 2);
        let h = f.c.volume_handle(&v).unwrap();
        let mut model = vec![0u8; 32 * MIB as usize];
        model[..len].copy_from_slice(&pattern(k, len));
        h.write(0, &model[..len]).unwrap();
        h.flush().unwrap();
        ids.push(v.id);
        models.push(model);
    }
    let pool =
        f.c.add_device(&f.admin, "p", device(dir.path(), "c.img"), false)
            .unwrap();
    let new_dev = pool.devices[2].record.id.clone();
    let before: Vec<Vec<String>> = ids.iter().map(|id| copies(&f.c, &f.admin, id)).collect();

    let dry = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    assert!(
        dry.skipped.iter().all(|s| !s.reason.contains("replicated")),
        "replicated volumes are planned: {dry:?}"
    );
    assert!(!dry.moves.is_empty(), "{dry:?}");
    let mut seen = std::collections::BTreeSet::new();
    for m in &dry.moves {
        assert_eq!(m.to, new_dev, "{m:?}");
        assert!(
            seen.insert(m.volume.clone()),
            "one move per volume: {dry:?}"
        );
        let k = ids.iter().position(|i| *i == m.volume).unwrap();
        assert_eq!(before[k][m.copy], m.from, "{m:?}");
    }

    let real = f.c.rebalance_pool(&f.admin, "p", round(8, false)).unwrap();
    assert!(!real.moves.is_empty(), "{real:?}");
    assert!(real.moves.iter().all(|m| m.state == "started"), "{real:?}");
    // While the moves go on: a moving volume is left out of another round, layers do not
    // change, and client writes land (on every copy: checked at the end).
    let during = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    for m in &real.moves {
        assert!(
            during.moves.iter().all(|d| d.volume != m.volume),
            "{during:?}"
        );
        assert!(
            during
                .skipped
                .iter()
                .any(|s| s.volume == m.volume && s.reason.contains("in progress")),
            "{during:?}"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut round_no = 0u64;
    loop {
        // A write into every volume at every pass, through the exports' path.
        for (k, id) in ids.iter().enumerate() {
            let v = f.c.get_volume(&f.admin, id).unwrap();
            let h = f.c.volume_handle(&v).unwrap();
            let off = ((round_no * 7 + k as u64) % 32) * MIB + 4096 * round_no % MIB;
            let data = pattern(1000 + round_no * 10 + k as u64, 8192);
            h.write(off, &data).unwrap();
            models[k][off as usize..off as usize + 8192].copy_from_slice(&data);
            // Redundancy: the record's two copies are in step throughout.
            let health = f.c.volume_health(&v);
            assert_eq!(health.copies, 2);
            assert_eq!(health.healthy, 2, "volume {k} ran a copy short");
        }
        round_no += 1;
        f.c.resync_pass();
        f.c.drain_pass();
        let done = real.moves.iter().all(|m| {
            let at = copies(&f.c, &f.admin, &m.volume);
            at[m.copy] == m.to
        });
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "moves not done");
    }
    // Every volume's copies are on distinct devices, each holding the model's bytes; a moved
    // copy left nothing on its old device.
    for (k, id) in ids.iter().enumerate() {
        let v = f.c.get_volume(&f.admin, id).unwrap();
        let h = f.c.volume_handle(&v).unwrap();
        h.flush().unwrap();
        let at = v.copies.clone();
        assert_eq!(at.len(), 2);
        assert_ne!(at[0], at[1], "volume {k}: two copies on one device");
        for d in &at {
            assert!(
                read(&f.c, d, id, models[k].len()) == models[k],
                "volume {k} on {d}"
            );
        }
        let mut b = vec![0; models[k].len()];
        h.read(0, &mut b).unwrap();
        assert!(b == models[k], "volume {k} read through its set");
        for d in &before[k] {
            let has = f.c.storage().engine(d).unwrap().volume_id(id).is_ok();
            assert_eq!(has, at.contains(d), "volume {k} on {d}");
        }
        assert_eq!(f.c.volume_health(&v).healthy, 2);
    }
    let after = f.c.rebalance_pool(&f.admin, "p", round(8, true)).unwrap();
    assert!(
        after.spread_before < dry.spread_before,
        "{after:?} vs {dry:?}"
    );
}

#[test]
fn a_replicated_move_given_up_leaves_the_volume_on_its_old_copies() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    replicated_pool(&f, dir.path());
    let len = (16 * MIB) as usize;
    let mut ids = vec![];
    for k in 0..2u64 {
        let v =
            f.c.create_volume(
                &f.admin,
                CreateVolume {
                    name: format!("r{k}"),
                    size: SizeArg::Text("32M".into()),
                    tenant: Some("acme".into()),
                    pool: Some("p".into()),
                    replicas: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        let h = f.c.volume_handle(&v).unwrap();
        h.write(0, &pattern(k, len)).unwrap();
        h.flush().unwrap();
        ids.push(v.id);
    }
    let pool =
        f.c.add_device(&f.admin, "p", device(dir.path(), "c.img"), false)
            .unwrap();
    let new_dev = pool.devices[2].record.id.clone();
    let real = f.c.rebalance_pool(&f.admin, "p", round(1, false)).unwrap();
    assert_eq!(real.moves.len(), 1, "{real:?}");
    let m = &real.moves[0];
    assert_eq!(m.state, "started");
    // The volume being moved is deleted before its new copy is in step: the move is given
    // up and the new copy goes too.
    f.c.delete_volume(&f.admin, &m.volume, true).unwrap();
    for _ in 0..3 {
        f.c.resync_pass();
        f.c.drain_pass();
    }
    let e = f.c.storage().engine(&new_dev).unwrap();
    assert!(
        e.volume_id(&m.volume).is_err(),
        "the new copy was left behind"
    );
    // The other volume is untouched and a later round can move it.
    let other = ids.iter().find(|i| **i != m.volume).unwrap();
    let v = f.c.get_volume(&f.admin, other).unwrap();
    assert_eq!(f.c.volume_health(&v).healthy, 2);
    let next = f.c.rebalance_pool(&f.admin, "p", round(1, true)).unwrap();
    assert!(next.moves.iter().all(|n| n.volume == *other), "{next:?}");
}
